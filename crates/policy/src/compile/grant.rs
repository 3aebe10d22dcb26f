//! `[[grant]]` tables: one data-sharing agreement each.

use std::collections::HashMap;
use std::sync::Arc;

use crate::filter::{FieldFilter, path_covers};
use crate::model::{
    ConsentRequirement, Consumers, Denial, Grant, MetaValue, Operation, RateLimit, Service,
};
use crate::syntax::{ConsumerDecl, GrantDecl, S};

use super::service::is_lower_ident;
use super::values::{check_id, datetime, orgnos, positive, resolve_service, strings};
use super::{Diags, Loc, Registry, Src, list};

const ANY_WITH_CONSENT: &str = "any-with-consent";

/// Grants and denials compiled so far, with where each was declared.
#[derive(Default)]
pub(crate) struct Rules {
    pub grants: Vec<(Grant, Loc)>,
    pub denials: Vec<(Denial, Loc)>,
    /// Grant and denial ids share one namespace: both appear in the audit log.
    pub(super) ids: HashMap<String, Loc>,
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
                diags.unknown_operation(src, o, service);
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
    if let (Some(from), Some(to)) = (valid_from, valid_to)
        && to <= from
    {
        diags.error(
            src,
            &d.valid_to.span(),
            "`valid_to` is not after `valid_from`",
            None,
        );
        ok = false;
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
        title: diags.plain_text(src, d.title.as_ref(), "title"),
        agreement: diags.plain_text(src, d.agreement.as_ref(), "agreement"),
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
    if let Some(action) = &c.action
        && action.get_ref().trim().is_empty()
    {
        diags.error(
            src,
            &action.span(),
            "consent `action` is empty",
            Some(
                "leave it out for Altinn's `consent`, or name the action the consent must grant"
                    .into(),
            ),
        );
        ok = false;
    }
    let mut metadata = Vec::new();
    for (key, value) in &c.metadata {
        let text = value.get_ref();
        if text.trim().is_empty() {
            diags.error(
                src,
                &value.span(),
                format!("metadata `{key}` is empty"),
                Some("write the value the consent must carry, or `{param}` for the request parameter's".into()),
            );
            ok = false;
            continue;
        }
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
