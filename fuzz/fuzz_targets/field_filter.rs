//! The JSON field filter (data minimisation) over arbitrary registry answers,
//! with the filters the example policies compile to.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
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

fuzz_target!(|data: &[u8]| {
    if let Ok(out) = filter().filter_json(data) {
        // Whatever passes must be JSON again and must not grow.
        assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
    }
});
