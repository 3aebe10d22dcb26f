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

/// The fixture plus `extra` agreements, with the warnings.
fn with(extra: &str) -> LoadedPolicies {
    let src = sources(&[("s.toml", SERVICE), ("g.toml", &(GRANTS.concat() + extra))]);
    PolicySet::from_sources_at(&src, NOW).unwrap()
}

const VENDOR_DENIED: &str = r#"[[denial]]
id = "vendor"
service = "population"
supplier = ["310000043"]
reason = "Vendor suspended"
"#;

const WELFARE_STATS_DENIED: &str = r#"[[denial]]
id = "no-stats"
service = "population"
consumer = ["310000019"]
operations = ["stats"]
reason = "Statistics withdrawn"
"#;

/// Only for an operation the suspended agency's grant does not cover.
const SEARCH_DENIED: &str = r#"[[denial]]
id = "no-search"
service = "population"
consumer = ["310000078"]
operations = ["search"]
reason = "Search withdrawn"
"#;

fn who(set: &PolicySet, field: &str, grant: &str) -> WhoCan {
    set.who_can("population", Some(field))
        .into_iter()
        .find(|w| w.grant_id == grant)
        .unwrap()
}

#[test]
fn who_can_matches_denials_by_supplier_and_operation_as_the_gateway_does() {
    let loaded = with(&[VENDOR_DENIED, WELFARE_STATS_DENIED, SEARCH_DENIED].concat());
    let set = &loaded.set;

    // The gateway refuses the welfare agency's vendor…
    let via_vendor = Req {
        supplier: Some("310000043"),
        ..welfare("/persons/01819010001")
    };
    assert_eq!(
        run(set, &via_vendor).reason(),
        Some(DenyReason::ExplicitlyDenied)
    );
    // …and the agency's statistics, but not its reading of persons.
    assert_eq!(
        run(set, &welfare("/stats")).reason(),
        Some(DenyReason::ExplicitlyDenied)
    );
    assert!(run(set, &welfare("/persons/01819010001")).is_allow());

    let w = who(set, "name", "welfare");
    assert_eq!(w.overridden_by, ["no-stats", "vendor"]);
    assert_eq!(
        w.overrides,
        [
            WhoCanOverride {
                denial_id: "no-stats".into(),
                consumers: vec!["310000019".into()],
                suppliers: vec![],
                operations: vec!["stats".into()],
                all_consumers: true,
                all_operations: false,
            },
            WhoCanOverride {
                denial_id: "vendor".into(),
                consumers: vec![],
                suppliers: vec!["310000043".into()],
                operations: vec!["get-person".into(), "search".into(), "stats".into()],
                all_consumers: false,
                all_operations: true,
            },
        ]
    );
    assert!(!w.overridden_for_all);

    // A denial of an operation the grant does not cover takes nothing from it;
    // the suspension takes everything.
    let w = who(set, "pid", "suspended-grant");
    assert_eq!(w.overridden_by, ["suspended"]);
    assert!(w.overrides[0].all_consumers && w.overrides[0].all_operations);
    assert!(w.overridden_for_all);

    // A grant open to any consumer with consent is overridden for the
    // consumers denials name, never for all.
    let w = who(set, "address.city", "kyc");
    assert_eq!(w.overridden_by, ["suspended"]);
    assert!(!w.overridden_for_all);
}

#[test]
fn who_can_marks_a_grant_shadowed_where_an_earlier_grant_is_used_instead() {
    // A second agreement for the welfare agency that would release `pid`
    // for the same operation and purpose: the gateway uses `welfare`, the
    // first by id, and releases only its fields.
    let extra = r#"[[grant]]
id = "welfare-pid"
service = "population"
consumer = ["310000019", "310000035"]
scopes = ["demo:population"]
operations = ["get-person", "search"]
purposes = ["benefit-assessment", "case-handling"]
legal_basis = "Folketrygdloven § 21-4"
fields = ["pid", "name"]
valid_from = 2025-01-01T00:00:00Z
valid_to = 2031-01-01T00:00:00Z
"#;
    let set = with(extra).set;
    let Decision::Allow(a) = run(&set, &welfare("/persons/01819010001")) else {
        panic!("expected allow");
    };
    assert_eq!(a.grant_id, "welfare");
    assert_eq!(a.fields.released(), ["name.family", "name.given"]);

    let w = who(&set, "pid", "welfare-pid");
    assert_eq!(
        w.shadowed_by,
        [WhoCanShadow {
            grant_id: "welfare".into(),
            consumers: WhoCanConsumers::Listed(vec!["310000019".into()]),
            operations: vec!["get-person".into(), "search".into()],
            purposes: vec!["benefit-assessment".into()],
            valid_from: 1_735_689_600, // 2025-01-01
            valid_to: 1_893_456_000,   // 2030-01-01
        }]
    );
    assert_eq!(who(&set, "name", "welfare").shadowed_by, []);
    assert_eq!(who(&set, "pid", "suspended-grant").shadowed_by, []);
}

#[test]
fn check_warns_of_denials_by_supplier_and_operation_and_says_when_for_all() {
    let loaded = with(&[VENDOR_DENIED, WELFARE_STATS_DENIED, SEARCH_DENIED].concat());
    let warnings: Vec<&str> = loaded.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(
        warnings,
        [
            "denial `vendor` overrides grant `welfare` for requests through supplier `310000043`",
            "denial `no-stats` overrides grant `welfare` for all its consumers (`310000019`) on operation `stats`",
            "denial `suspended` overrides grant `suspended-grant` for all its consumers (`310000078`)",
        ]
    );
}

#[test]
fn explaining_a_denied_request_lists_every_denial_and_the_grants_not_reached() {
    let set = with(&[VENDOR_DENIED, SEARCH_DENIED].concat()).set;
    let caller = Caller {
        consumer: "310000078".into(),
        supplier: Some("310000043".into()),
        scopes: vec!["demo:population".into()],
        ..Caller::default()
    };
    let params = vec![("pid".to_string(), KARI.to_string())];
    let req = DecisionRequest {
        caller: &caller,
        service: "population",
        operation: "get-person",
        params: &params,
        subject: Some(KARI),
        purpose: Some("case-handling"),
        now: NOW,
    };
    let e = set.explain(&req);
    assert_eq!(e.decision, set.decide(&req));
    assert_eq!(e.decision.reason(), Some(DenyReason::ExplicitlyDenied));
    let lines: Vec<String> = e.to_string().lines().skip(1).map(String::from).collect();
    assert_eq!(
        lines,
        [
            "  denial `suspended` [DECISIVE]: names the consumer or supplier; a denial beats every grant",
            "  denial `vendor` [also denies]: names the consumer or supplier too, but `suspended` comes first",
            "  denial `no-search` [n/a]: does not cover operation `get-person`",
            "  grant `kyc` [n/a (denied)]: not reached: denial `suspended` refuses the request before any grant",
            "  grant `suspended-grant` [n/a (denied)]: not reached: denial `suspended` refuses the request before any grant",
            "  grant `welfare` [n/a]: does not name consumer `310000078`",
            "decision: deny (explicitly_denied): access denied by `suspended`: Suspended pending audit",
        ]
    );
}
