//! `[[grant]]` and `[[denial]]` tables.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use crate::filter::{FieldFilter, path_covers};
use crate::ids::is_valid_orgno;
use crate::model::{
    ConsentRequirement, Consumers, Denial, Grant, MetaValue, Operation, RateLimit, Service,
};
use crate::syntax::{ConsumerDecl, DenialDecl, GrantDecl, S};

use super::service::is_lower_ident;
use super::{Diags, Loc, Registry, Src, list, to_unix};

const ANY_WITH_CONSENT: &str = "any-with-consent";
const ORGNO_HELP: &str = "organisation numbers are nine digits whose last is a mod-11 check digit (weights 3,2,7,6,5,4,3,2)";

/// Grants and denials compiled so far, with where each was declared.
#[derive(Default)]
pub(crate) struct Rules {
    pub grants: Vec<(Grant, Loc)>,
    pub denials: Vec<(Denial, Loc)>,
    /// Grant and denial ids share one namespace: both appear in the audit log.
    ids: HashMap<String, Loc>,
}

pub(super) fn compile_grant(
    src: Src<'_>,
    decl: &S<GrantDecl>,
    default_service: Option<&str>,
    registry: &Registry,
    rules: &mut Rules,
    diags: &mut Diags,
) {
    let d = decl.get_ref();
    let id = d.id.get_ref();
    let loc = Loc::at(src, &d.id.span());
    let mut ok = check_id(src, &d.id, "grant", rules, diags);
    let Some(service) = resolve_service(
        src,
        &d.id,
        d.service.as_ref(),
        default_service,
        registry,
        diags,
    ) else {
        return;
    };

    let consumers = match d.consumer.get_ref() {
        ConsumerDecl::Keyword(k) if k == ANY_WITH_CONSENT => Some(Consumers::AnyWithConsent),
        ConsumerDecl::Keyword(k) => {
            diags.error(
                src,
                &d.consumer.span(),
                format!("unknown consumer keyword `{k}`"),
                Some(format!(
                    "write a list of organisation numbers, or \"{ANY_WITH_CONSENT}\""
                )),
            );
            None
        }
        ConsumerDecl::List(items) => {
            orgnos(src, items, &d.consumer.span(), "consumer", diags).map(Consumers::Listed)
        }
    };
    ok &= consumers.is_some();
    let suppliers = match &d.supplier_allowed {
        Some(s) => orgnos(src, s.get_ref(), &s.span(), "supplier_allowed", diags),
        None => Some(Vec::new()),
    };
    ok &= suppliers.is_some();

    let scopes = strings(src, &d.scopes, "scope", diags, |s| {
        !s.is_empty() && !s.chars().any(char::is_whitespace)
    });
    let purposes = strings(src, &d.purposes, "purpose", diags, is_lower_ident);
    let operations = strings(src, &d.operations, "operation", diags, |_| true);
    let known_ops: Vec<&Operation> = d
        .operations
        .get_ref()
        .iter()
        .filter_map(|o| {
            let found = service.operations.iter().find(|x| x.id == *o.get_ref());
            if found.is_none() {
                diags.error(
                    src,
                    &o.span(),
                    format!(
                        "unknown operation `{}` for service `{}`",
                        o.get_ref(),
                        service.id
                    ),
                    Some(format!(
                        "operations of `{}`: {}",
                        service.id,
                        list(service.operations.iter().map(|x| &x.id))
                    )),
                );
            }
            found
        })
        .collect();
    ok &= scopes.is_some() && purposes.is_some() && operations.is_some();
    ok &= known_ops.len() == d.operations.get_ref().len();

    let legal_basis = d.legal_basis.as_ref().and_then(|l| {
        let text = l.get_ref().trim();
        if text.is_empty() {
            diags.error(
                src,
                &l.span(),
                "`legal_basis` is empty",
                Some("cite the statute and section".into()),
            );
        }
        (!text.is_empty()).then(|| text.to_string())
    });
    let consent = d
        .consent
        .as_ref()
        .and_then(|c| compile_consent(src, c, &known_ops, diags));
    ok &= d.consent.is_none() || consent.is_some();
    if d.legal_basis.is_none() && d.consent.is_none() {
        diags.error(
            src,
            &d.id.span(),
            format!("grant `{id}` has neither a legal basis nor a consent requirement"),
            Some("add `legal_basis = \"<statute and section>\"`, or `consent = { resource = \"…\" }`".into()),
        );
        ok = false;
    }
    if matches!(consumers, Some(Consumers::AnyWithConsent)) && d.consent.is_none() {
        diags.error(
            src,
            &d.consumer.span(),
            format!("grant `{id}` admits any consumer but requires no consent"),
            Some("`any-with-consent` grants must say which consent they require: `consent = { resource = \"…\" }`".into()),
        );
        ok = false;
    }

    let fields = compile_grant_fields(src, &d.fields, service, diags);
    ok &= fields.is_some();
    let valid_from = datetime(src, &d.valid_from, "valid_from", diags);
    let valid_to = datetime(src, &d.valid_to, "valid_to", diags);
    if let (Some(from), Some(to)) = (valid_from, valid_to) {
        if to <= from {
            diags.error(
                src,
                &d.valid_to.span(),
                "`valid_to` is not after `valid_from`",
                None,
            );
            ok = false;
        }
    }
    let rate_limit = match &d.rate_limit {
        None => Some(None),
        Some(r) => {
            let r = r.get_ref();
            let requests = positive(src, &r.requests, "requests", u32::MAX.into(), diags);
            let per_seconds = positive(src, &r.per_seconds, "per_seconds", 86_400, diags);
            requests.zip(per_seconds).map(|(requests, per_seconds)| {
                Some(RateLimit {
                    requests,
                    per_seconds,
                })
            })
        }
    };

    let (
        true,
        Some(consumers),
        Some(suppliers),
        Some(scopes),
        Some(operations),
        Some(purposes),
        Some(fields),
        Some(valid_from),
        Some(valid_to),
        Some(rate_limit),
    ) = (
        ok, consumers, suppliers, scopes, operations, purposes, fields, valid_from, valid_to,
        rate_limit,
    )
    else {
        return;
    };
    let grant = Grant {
        id: id.clone(),
        title: d.title.as_ref().map(|t| t.get_ref().clone()),
        agreement: d.agreement.as_ref().map(|t| t.get_ref().clone()),
        service: service.id.clone(),
        consumers,
        suppliers,
        scopes,
        operations,
        purposes,
        legal_basis,
        consent,
        fields: Arc::new(fields),
        valid_from,
        valid_to,
        rate_limit,
    };
    rules.grants.push((grant, loc));
}

pub(super) fn compile_denial(
    src: Src<'_>,
    decl: &S<DenialDecl>,
    default_service: Option<&str>,
    registry: &Registry,
    rules: &mut Rules,
    diags: &mut Diags,
) {
    let d = decl.get_ref();
    let loc = Loc::at(src, &d.id.span());
    let mut ok = check_id(src, &d.id, "denial", rules, diags);
    let Some(service) = resolve_service(
        src,
        &d.id,
        d.service.as_ref(),
        default_service,
        registry,
        diags,
    ) else {
        return;
    };
    let empty = Vec::new();
    let consumers = d.consumer.as_ref().map_or(Some(Vec::new()), |c| {
        orgnos(src, c.get_ref(), &c.span(), "consumer", diags)
    });
    let suppliers = d.supplier.as_ref().map_or(Some(Vec::new()), |c| {
        orgnos(src, c.get_ref(), &c.span(), "supplier", diags)
    });
    if d.consumer
        .as_ref()
        .map_or(&empty, |c| c.get_ref())
        .is_empty()
        && d.supplier
            .as_ref()
            .map_or(&empty, |c| c.get_ref())
            .is_empty()
    {
        diags.error(
            src,
            &d.id.span(),
            format!(
                "denial `{}` names no consumer and no supplier",
                d.id.get_ref()
            ),
            Some("add `consumer = [\"<orgno>\"]` or `supplier = [\"<orgno>\"]`".into()),
        );
        ok = false;
    }
    let operations = match &d.operations {
        None => Some(None),
        Some(ops) => {
            let mut out = Vec::new();
            for o in ops.get_ref() {
                if service.operations.iter().any(|x| x.id == *o.get_ref()) {
                    out.push(o.get_ref().clone());
                } else {
                    diags.error(
                        src,
                        &o.span(),
                        format!(
                            "unknown operation `{}` for service `{}`",
                            o.get_ref(),
                            service.id
                        ),
                        Some(format!(
                            "operations of `{}`: {}",
                            service.id,
                            list(service.operations.iter().map(|x| &x.id))
                        )),
                    );
                    ok = false;
                }
            }
            out.sort();
            out.dedup();
            Some(Some(out))
        }
    };
    let reason = d.reason.get_ref().trim();
    if reason.is_empty() {
        diags.error(
            src,
            &d.reason.span(),
            "`reason` is empty",
            Some("say why, for the caller and the audit log".into()),
        );
        ok = false;
    }
    let (true, Some(consumers), Some(suppliers), Some(operations)) =
        (ok, consumers, suppliers, operations)
    else {
        return;
    };
    rules.denials.push((
        Denial {
            id: d.id.get_ref().clone(),
            service: service.id.clone(),
            consumers,
            suppliers,
            operations,
            reason: reason.to_string(),
        },
        loc,
    ));
}

fn check_id(
    src: Src<'_>,
    id: &S<String>,
    what: &str,
    rules: &mut Rules,
    diags: &mut Diags,
) -> bool {
    let text = id.get_ref();
    if !is_lower_ident(text) {
        diags.error(
            src,
            &id.span(),
            format!("malformed {what} id `{text}`"),
            Some("use lowercase letters, digits and `-`".into()),
        );
        return false;
    }
    if let Some(first) = rules.ids.get(text) {
        diags.error(
            src,
            &id.span(),
            format!("duplicate id `{text}`"),
            Some(format!(
                "first declared at {first}; grant and denial ids are unique across all files"
            )),
        );
        return false;
    }
    rules.ids.insert(text.clone(), Loc::at(src, &id.span()));
    true
}

fn resolve_service<'r>(
    src: Src<'_>,
    id: &S<String>,
    explicit: Option<&S<String>>,
    default_service: Option<&str>,
    registry: &'r Registry,
    diags: &mut Diags,
) -> Option<&'r Service> {
    let (name, span) = match (explicit, default_service) {
        (Some(s), _) => (s.get_ref().as_str(), s.span()),
        (None, Some(d)) => (d, id.span()),
        (None, None) => {
            diags.error(
                src,
                &id.span(),
                format!("`{}` does not say which service it covers", id.get_ref()),
                Some(
                    "add `service = \"<id>\"`, or place it in the file that declares `[service]`"
                        .into(),
                ),
            );
            return None;
        }
    };
    let found = registry.get(name).map(|(s, _)| s);
    if found.is_none() && explicit.is_some() {
        let mut known: Vec<&String> = registry.keys().collect();
        known.sort();
        diags.error(
            src,
            &span,
            format!("unknown service `{name}`"),
            Some(format!("services: {}", list(known))),
        );
    }
    found
}

fn orgnos(
    src: Src<'_>,
    items: &[S<String>],
    span: &Range<usize>,
    key: &str,
    diags: &mut Diags,
) -> Option<Vec<String>> {
    let mut ok = true;
    if items.is_empty() {
        diags.error(src, span, format!("`{key}` is an empty list"), None);
        ok = false;
    }
    for item in items {
        if !is_valid_orgno(item.get_ref()) {
            diags.error(
                src,
                &item.span(),
                format!("malformed organisation number `{}`", item.get_ref()),
                Some(ORGNO_HELP.into()),
            );
            ok = false;
        }
    }
    ok.then(|| sorted(items))
}

fn strings(
    src: Src<'_>,
    items: &S<Vec<S<String>>>,
    what: &str,
    diags: &mut Diags,
    valid: impl Fn(&str) -> bool,
) -> Option<Vec<String>> {
    let mut ok = true;
    if items.get_ref().is_empty() {
        diags.error(
            src,
            &items.span(),
            format!("at least one {what} is required"),
            None,
        );
        ok = false;
    }
    for item in items.get_ref() {
        if !valid(item.get_ref()) {
            diags.error(
                src,
                &item.span(),
                format!("malformed {what} `{}`", item.get_ref()),
                Some(match what {
                    "purpose" => {
                        "purposes are lowercase words joined by `-`, e.g. `benefit-assessment`"
                            .to_string()
                    }
                    _ => format!("a {what} is one word without spaces"),
                }),
            );
            ok = false;
        }
    }
    ok.then(|| sorted(items.get_ref()))
}

fn sorted(items: &[S<String>]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|i| i.get_ref().clone()).collect();
    v.sort();
    v.dedup();
    v
}

fn compile_consent(
    src: Src<'_>,
    decl: &S<crate::syntax::ConsentDecl>,
    ops: &[&Operation],
    diags: &mut Diags,
) -> Option<ConsentRequirement> {
    let c = decl.get_ref();
    let mut ok = true;
    if c.resource.get_ref().trim().is_empty() {
        diags.error(src, &c.resource.span(), "consent `resource` is empty", None);
        ok = false;
    }
    for op in ops.iter().filter(|o| !o.has_subject) {
        diags.error(
            src,
            &decl.span(),
            format!("consent is required, but operation `{}` does not identify a person", op.id),
            Some("declare `subject` on the service and use its parameter in the operation's path or query".into()),
        );
        ok = false;
    }
    let mut metadata = Vec::new();
    for (key, value) in &c.metadata {
        let text = value.get_ref();
        let expected = if let Some(name) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}'))
        {
            for op in ops.iter().filter(|o| !o.has_param(name)) {
                diags.error(
                    src,
                    &value.span(),
                    format!("metadata `{key}` refers to parameter `{name}`, which operation `{}` does not have", op.id),
                    Some(format!(
                        "parameters of `{}`: {}",
                        op.id,
                        list(op.template.params().chain(op.query.iter().map(String::as_str)))
                    )),
                );
                ok = false;
            }
            MetaValue::Param(name.to_string())
        } else if text.contains(['{', '}']) {
            diags.error(
                src,
                &value.span(),
                format!("malformed metadata value `{text}`"),
                Some("write a literal value, or exactly `{param}` to require the request parameter's value".into()),
            );
            ok = false;
            continue;
        } else {
            MetaValue::Literal(text.clone())
        };
        metadata.push((key.clone(), expected));
    }
    ok.then(|| ConsentRequirement {
        resource: c.resource.get_ref().trim().to_string(),
        action: c
            .action
            .as_ref()
            .map_or_else(|| "consent".to_string(), |a| a.get_ref().clone()),
        metadata,
    })
}

fn compile_grant_fields(
    src: Src<'_>,
    decl: &S<Vec<S<String>>>,
    service: &Service,
    diags: &mut Diags,
) -> Option<FieldFilter> {
    let mut ok = true;
    if decl.get_ref().is_empty() {
        diags.error(
            src,
            &decl.span(),
            "a grant must release at least one field",
            None,
        );
        ok = false;
    }
    let mut leaves: Vec<&str> = Vec::new();
    for field in decl.get_ref() {
        let covered: Vec<&str> = service
            .fields
            .iter()
            .filter(|leaf| path_covers(field.get_ref(), leaf))
            .map(String::as_str)
            .collect();
        if covered.is_empty() {
            diags.error(
                src,
                &field.span(),
                format!(
                    "unknown field `{}` for service `{}`",
                    field.get_ref(),
                    service.id
                ),
                Some(format!("declared fields: {}", list(&service.fields))),
            );
            ok = false;
        }
        leaves.extend(covered);
    }
    if !ok {
        return None;
    }
    FieldFilter::from_paths(leaves).ok()
}

fn datetime(
    src: Src<'_>,
    value: &S<toml::value::Datetime>,
    key: &str,
    diags: &mut Diags,
) -> Option<i64> {
    let out = to_unix(value.get_ref());
    if out.is_none() {
        diags.error(
            src,
            &value.span(),
            format!("`{key}` must be a date, time and UTC offset"),
            Some("write e.g. `2024-01-01T00:00:00Z`; local times would depend on the server's time zone".into()),
        );
    }
    out
}

fn positive(src: Src<'_>, value: &S<i64>, key: &str, max: i64, diags: &mut Diags) -> Option<u32> {
    let v = *value.get_ref();
    match u32::try_from(v) {
        Ok(n) if n > 0 && v <= max => Some(n),
        _ => {
            diags.error(
                src,
                &value.span(),
                format!("`{key}` must be between 1 and {max}"),
                None,
            );
            None
        }
    }
}
