//! The JSON field filter (data minimisation) over arbitrary registry answers,
//! with the filters the example policies compile to.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use tollbu_policy::{Caller, Decision, DecisionRequest, FieldFilter, PolicySet};

const POLICY: &str = r#"
[service]
id = "population"
subject = { param = "pid", kind = "national-identity-number" }
fields = ["pid", "name.given", "name.family", "address.city", "citizenships[].country", "citizenships[].since"]

[[service.operation]]
id = "get-person"
method = "GET"
path = "/persons/{pid}"

[[grant]]
id = "g"
consumer = ["310000019"]
scopes = ["s"]
operations = ["get-person"]
purposes = ["p"]
legal_basis = "fuzz"
fields = ["name.given", "address", "citizenships[].country"]
valid_from = 2024-01-01T00:00:00Z
valid_to = 2030-12-31T23:59:59Z
"#;

fn filter() -> &'static FieldFilter {
    static FILTER: OnceLock<FieldFilter> = OnceLock::new();
    FILTER.get_or_init(|| {
        let sources = vec![("population.toml".to_owned(), POLICY.to_owned())];
        let set = match PolicySet::from_sources_at(&sources, 1_750_000_000) {
            Ok(loaded) => loaded.set,
            Err(error) => panic!("fuzz policy does not compile: {error}"),
        };
        let caller = Caller {
            consumer: "310000019".into(),
            supplier: None,
            scopes: vec!["s".into()],
            consents: Vec::new(),
            person: None,
        };
        let tollbu_policy::OperationMatch::Matched(matched) =
            set.match_operation("population", "GET", "/persons/05885624741", None)
        else {
            panic!("operation does not match");
        };
        match set.decide(&DecisionRequest {
            caller: &caller,
            service: "population",
            operation: &matched.operation_id,
            params: &matched.params,
            subject: matched.subject.as_deref(),
            purpose: Some("p"),
            now: 1_750_000_000,
        }) {
            Decision::Allow(allow) => FieldFilter::clone(&allow.fields),
            Decision::Deny(deny) => panic!("fuzz grant denied: {}", deny.message),
        }
    })
}

/// Every leaf path of the JSON text `raw` in `a.b[].c` form (arrays add
/// `[]`). Walks `RawValue`s rather than a `Value`: the filter copies released
/// numbers as written, and a `Value` refuses numbers beyond f64's range
/// (`1e400`) that are still JSON.
fn leaf_paths(raw: &str, prefix: &str, out: &mut Vec<String>) {
    match raw.as_bytes().first() {
        Some(b'{') => {
            let members: BTreeMap<String, &RawValue> = match serde_json::from_str(raw) {
                Ok(members) => members,
                Err(error) => panic!("filtered object unreadable: {error}"),
            };
            for (key, member) in members {
                let path = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                leaf_paths(member.get(), &path, out);
            }
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = match serde_json::from_str(raw) {
                Ok(items) => items,
                Err(error) => panic!("filtered array unreadable: {error}"),
            };
            for item in items {
                leaf_paths(item.get(), &format!("{prefix}[]"), out);
            }
        }
        _ => out.push(prefix.to_owned()),
    }
}

fuzz_target!(|data: &[u8]| {
    let filter = filter();
    let Ok(out) = filter.filter_json(data) else {
        return;
    };
    // Whatever passes is JSON again, no longer than what came in, and
    // holds no leaf the grant does not release.
    assert!(out.len() <= data.len(), "the filtered body grew");
    let text = match std::str::from_utf8(&out) {
        Ok(text) => text,
        Err(error) => panic!("filtered body is not UTF-8: {error}"),
    };
    if let Err(error) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
        panic!("filtered body is not json: {error}");
    }
    let records: Result<Vec<&RawValue>, _> = if text.starts_with('[') {
        serde_json::from_str(text)
    } else {
        serde_json::from_str(text).map(|record| vec![record])
    };
    let records = match records {
        Ok(records) => records,
        Err(error) => panic!("filtered body unreadable: {error}"),
    };
    let released: Vec<&str> = filter
        .released()
        .iter()
        .map(|path| path.trim_end_matches("[]"))
        .collect();
    for record in records {
        let mut leaves = Vec::new();
        leaf_paths(record.get(), "", &mut leaves);
        for leaf in leaves {
            // Empty objects and arrays have no leaves; a scalar inside an
            // array of scalars shows as `path[]`.
            let base = leaf.trim_end_matches("[]");
            assert!(released.contains(&base), "leaked {leaf}");
        }
    }
});
