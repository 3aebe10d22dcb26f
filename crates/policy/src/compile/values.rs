//! Checks shared by grants and denials: ids, service references,
//! organisation numbers, word lists, date-times, positive numbers.

use std::ops::Range;

use crate::ids::is_valid_orgno;
use crate::model::Service;
use crate::syntax::S;

use super::grant::Rules;
use super::service::is_lower_ident;
use super::{Diags, Loc, Registry, Src, list, to_unix};

const ORGNO_HELP: &str = "organisation numbers are nine digits whose last is a mod-11 check digit (weights 3,2,7,6,5,4,3,2)";

pub(super) fn check_id(
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

pub(super) fn resolve_service<'r>(
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

pub(super) fn orgnos(
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

pub(super) fn strings(
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

pub(super) fn sorted(items: &[S<String>]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|i| i.get_ref().clone()).collect();
    v.sort();
    v.dedup();
    v
}

pub(super) fn datetime(
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

pub(super) fn positive(
    src: Src<'_>,
    value: &S<i64>,
    key: &str,
    max: i64,
    diags: &mut Diags,
) -> Option<u32> {
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
