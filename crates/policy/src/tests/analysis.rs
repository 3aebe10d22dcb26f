//! Routing, explanations, who-can, the catalogue and the test runner.

use super::*;

#[test]
fn routing_prefers_literals_decodes_params_and_refuses_unknowns() {
    let set = fixture();
    let OperationMatch::Matched(m) = set.match_operation(
        "population",
        "GET",
        "/persons/search",
        Some("pid=0181901000%31"),
    ) else {
        panic!()
    };
    assert_eq!(m.operation_id, "search");
    assert_eq!(m.path_template, "/persons/search");
    assert_eq!(m.subject.as_deref(), Some(KARI));
    assert_eq!(m.params, vec![("pid".into(), KARI.into())]);

    // A parameter the operation does not declare was never decided on.
    assert_eq!(
        set.match_operation(
            "population",
            "GET",
            "/persons/search",
            Some("pid=0181901000%31&ss%6E=15898510015"),
        ),
        OperationMatch::UndeclaredQueryParameter {
            operation_id: "search".into(),
            parameter: "ssn".into(),
        }
    );
    // An operation not about a person never checks the subject parameter:
    // a registry acting on it would serve a person nobody decided on.
    assert_eq!(
        set.match_operation("population", "GET", "/stats", Some("pid=15898510015")),
        OperationMatch::UndeclaredQueryParameter {
            operation_id: "stats".into(),
            parameter: "pid".into(),
        }
    );
    // The subject parameter is left to the subject check (a second person).
    let OperationMatch::Matched(m) = set.match_operation(
        "population",
        "GET",
        "/persons/0181901000%31",
        Some("pid=15898510015"),
    ) else {
        panic!()
    };
    assert_eq!(m.operation_id, "get-person");

    let OperationMatch::Matched(m) =
        set.match_operation("population", "GET", "/persons/0181901000%31", None)
    else {
        panic!()
    };
    assert_eq!(m.operation_id, "get-person");
    assert_eq!(m.subject.as_deref(), Some(KARI));

    let OperationMatch::Matched(m) =
        set.match_operation("population", "GET", "/persons/search", Some("pid=1&pid=2"))
    else {
        panic!()
    };
    assert_eq!(m.subject, None);

    assert_eq!(
        set.match_operation("vehicles", "GET", "/x", None),
        OperationMatch::UnknownService
    );
    assert_eq!(
        set.match_operation("population", "DELETE", "/persons/1", None),
        OperationMatch::UnknownOperation
    );
    assert_eq!(
        set.match_operation("population", "GET", "/persons/a%2Fb", None),
        OperationMatch::UnknownOperation
    );
    assert_eq!(set.service_ids().collect::<Vec<_>>(), ["population"]);
}

#[test]
fn explanation_lists_every_grant_and_the_decision() {
    let set = fixture();
    let caller = Caller {
        consumer: "310000027".into(),
        scopes: vec!["demo:population".into()],
        ..Caller::default()
    };
    let params = vec![("pid".to_string(), KARI.to_string())];
    let e = set.explain(&DecisionRequest {
        caller: &caller,
        service: "population",
        operation: "get-person",
        params: &params,
        subject: Some(KARI),
        purpose: Some("kyc"),
        now: NOW,
    });
    let text = e.to_string();
    assert!(text.contains("denial `suspended` [n/a]"), "{text}");
    assert!(
        text.contains(
            "grant `kyc` [fails]: consent_missing: grant `kyc` requires the citizen's consent"
        ),
        "{text}"
    );
    assert!(
        text.contains("grant `welfare` [n/a]: does not name consumer `310000027`"),
        "{text}"
    );
    assert!(text.contains("grant `suspended-grant` [n/a]"), "{text}");
    assert!(text.ends_with("decision: deny (consent_missing): grant `kyc` requires the citizen's consent to resource `kyc-res` (action `consent`) and the token carries none"), "{text}");
    assert!(!text.contains(KARI));
    assert_eq!(
        e.decision,
        set.decide(&DecisionRequest {
            caller: &caller,
            service: "population",
            operation: "get-person",
            params: &params,
            subject: Some(KARI),
            purpose: Some("kyc"),
            now: NOW,
        })
    );
}

#[test]
fn who_can_answers_by_field_prefix_and_names_overriding_denials() {
    let set = fixture();
    let ids = |field| {
        set.who_can("population", field)
            .into_iter()
            .map(|w| w.grant_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(Some("address.city")), ["kyc"]);
    assert_eq!(ids(Some("name")), ["kyc", "welfare"]);
    assert_eq!(ids(Some("pid")), ["suspended-grant"]);
    assert_eq!(ids(Some("citizenships")), Vec::<String>::new());
    assert_eq!(ids(None), ["kyc", "suspended-grant", "welfare"]);
    let w = set.who_can("population", Some("pid")).remove(0);
    assert_eq!(w.overridden_by, ["suspended"]);
    assert_eq!(
        w.consumers,
        WhoCanConsumers::Listed(vec!["310000078".into()])
    );
    assert!(set.who_can("vehicles", None).is_empty());
}

#[test]
fn catalog_names_every_grant_and_denial() {
    let md = fixture().catalog_markdown();
    for needle in [
        "## Service `population` — Population registry",
        "### Grant `welfare`",
        "- **Legal basis:** Folketrygdloven § 21-4",
        "- **Consent required:** resource `kyc-res`, action `consent`",
        "- **Who:** any organisation holding the citizen's consent",
        "### Denial `suspended`",
        "| `get-person` | GET | `/persons/{pid}` |",
    ] {
        assert!(md.contains(needle), "missing {needle}\n{md}");
    }
}

#[test]
fn a_failing_expectation_in_a_test_file_is_reported_with_both_sides() {
    let set = fixture();
    let case = r#"now = 2026-06-01T12:00:00Z
[[case]]
name = "wrong on purpose"
service = "population"
path = "/persons/01819010001"
purpose = "benefit-assessment"
caller = { consumer = "310000019", scopes = ["demo:population"] }
expect = { decision = "deny", reason = "scope_missing" }
"#;
    let mut out = String::new();
    assert_eq!(
        crate::tooling::cases_run_source(&set, "t.test.toml", case, &mut out),
        (0, 1)
    );
    assert_eq!(
        out,
        "FAIL  t.test.toml:2:1: wrong on purpose\n    expected: deny (scope_missing)\n    actual:   allow by grant `welfare` releasing [name.family, name.given]\n"
    );
    let bad_code = case.replace("scope_missing", "scope_gone");
    let mut out = String::new();
    assert_eq!(
        crate::tooling::cases_run_source(&set, "t.test.toml", &bad_code, &mut out),
        (0, 1)
    );
    assert!(out.contains("unknown reason code `scope_gone`"), "{out}");
}
