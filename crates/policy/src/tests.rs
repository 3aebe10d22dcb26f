//! Engine tests over a small fixture: every reason code, determinism,
//! denials, routing, explanations, analysis. Diagnostics tests live in
//! `tests/diagnostics.rs` of this module tree.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod diagnostics;

use std::collections::BTreeSet;

use proptest::prelude::*;

use crate::*;

pub(crate) const SERVICE: &str = r#"[service]
id = "population"
title = "Population registry"
subject = { param = "pid", kind = "national-identity-number" }
fields = ["pid", "name.given", "name.family", "address.city", "citizenships[].country"]

[[service.operation]]
id = "get-person"
method = "GET"
path = "/persons/{pid}"

[[service.operation]]
id = "search"
method = "GET"
path = "/persons/search"
query = ["pid"]

[[service.operation]]
id = "stats"
method = "GET"
path = "/stats"
"#;

const GRANTS: &[&str] = &[
    r#"[[grant]]
id = "welfare"
service = "population"
consumer = ["310000019"]
supplier_allowed = ["310000043"]
scopes = ["demo:population"]
operations = ["get-person", "search", "stats"]
purposes = ["benefit-assessment"]
legal_basis = "Folketrygdloven § 21-4"
fields = ["name"]
valid_from = 2024-01-01T00:00:00Z
valid_to = 2030-01-01T00:00:00Z
rate_limit = { requests = 10, per_seconds = 1 }
"#,
    r#"[[grant]]
id = "kyc"
service = "population"
consumer = "any-with-consent"
scopes = ["demo:population"]
operations = ["get-person"]
purposes = ["kyc"]
consent = { resource = "kyc-res" }
fields = ["name", "address.city"]
valid_from = 2024-01-01T00:00:00Z
valid_to = 2030-01-01T00:00:00Z
"#,
    r#"[[grant]]
id = "suspended-grant"
service = "population"
consumer = ["310000078"]
scopes = ["demo:population"]
operations = ["get-person"]
purposes = ["case-handling"]
legal_basis = "Forvaltningsloven § 17"
fields = ["pid"]
valid_from = 2024-01-01T00:00:00Z
valid_to = 2030-01-01T00:00:00Z
"#,
    r#"[[denial]]
id = "suspended"
service = "population"
consumer = ["310000078"]
reason = "Suspended pending audit"
"#,
];

const KARI: &str = "01819010001";
const OLA: &str = "15898510015";
/// 2026-06-01T12:00:00Z
const NOW: i64 = 1_780_315_200;
const DAY: i64 = 86_400;

pub(crate) fn sources(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files
        .iter()
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect()
}

fn fixture() -> PolicySet {
    let mut files = vec![("service.toml", SERVICE.to_string())];
    files.push(("agreements.toml", GRANTS.concat()));
    let src: Vec<(String, String)> = files.into_iter().map(|(n, t)| (n.to_string(), t)).collect();
    PolicySet::from_sources_at(&src, NOW).unwrap().set
}

/// A request as the test table describes it.
#[derive(Debug, Clone)]
struct Req {
    consumer: &'static str,
    supplier: Option<&'static str>,
    scopes: Vec<&'static str>,
    consents: Vec<Consent>,
    path: &'static str,
    query: Option<&'static str>,
    purpose: Option<&'static str>,
    now: i64,
}

fn welfare(path: &'static str) -> Req {
    Req {
        consumer: "310000019",
        supplier: None,
        scopes: vec!["demo:population"],
        consents: Vec::new(),
        path,
        query: None,
        purpose: Some("benefit-assessment"),
        now: NOW,
    }
}

fn bank(consents: Vec<Consent>) -> Req {
    Req {
        consumer: "310000027",
        purpose: Some("kyc"),
        consents,
        ..welfare("/persons/01819010001")
    }
}

fn consent(from: &str, to: &str, resource: &str, consented: i64, valid_to: i64) -> Consent {
    Consent {
        id: "c-1".into(),
        from: from.into(),
        to: to.into(),
        consented,
        valid_to,
        rights: vec![ConsentRight {
            actions: vec!["consent".into()],
            resources: vec![resource.into()],
            metadata: Default::default(),
        }],
    }
}

fn good_consent() -> Consent {
    consent(KARI, "310000027", "kyc-res", NOW - DAY, NOW + DAY)
}

fn run(set: &PolicySet, r: &Req) -> Decision {
    let OperationMatch::Matched(m) = set.match_operation("population", "GET", r.path, r.query)
    else {
        panic!("no route for {}", r.path);
    };
    let caller = Caller {
        consumer: r.consumer.into(),
        supplier: r.supplier.map(Into::into),
        scopes: r.scopes.iter().map(|s| s.to_string()).collect(),
        consents: r.consents.clone(),
    };
    set.decide(&DecisionRequest {
        caller: &caller,
        service: "population",
        operation: &m.operation_id,
        params: &m.params,
        subject: m.subject.as_deref(),
        purpose: r.purpose,
        now: r.now,
    })
}

/// One request per reason code, plus allows.
fn table() -> Vec<(&'static str, Req, Option<DenyReason>)> {
    use DenyReason::*;
    vec![
        ("allow", welfare("/persons/01819010001"), None),
        (
            "allow via supplier",
            Req {
                supplier: Some("310000043"),
                ..welfare("/persons/01819010001")
            },
            None,
        ),
        (
            "supplier same as consumer is no delegation",
            Req {
                supplier: Some("310000019"),
                ..welfare("/persons/01819010001")
            },
            None,
        ),
        ("allow without subject", welfare("/stats"), None),
        ("allow with consent", bank(vec![good_consent()]), None),
        (
            "no grant",
            Req {
                consumer: "310000035",
                ..welfare("/stats")
            },
            Some(NoGrant),
        ),
        (
            "denied",
            Req {
                consumer: "310000078",
                purpose: Some("case-handling"),
                ..welfare("/persons/01819010001")
            },
            Some(ExplicitlyDenied),
        ),
        (
            "denied even without any grant for the purpose",
            Req {
                consumer: "310000078",
                purpose: None,
                ..welfare("/stats")
            },
            Some(ExplicitlyDenied),
        ),
        (
            "supplier",
            Req {
                supplier: Some("310000027"),
                ..welfare("/persons/01819010001")
            },
            Some(SupplierNotAllowed),
        ),
        (
            "not yet",
            Req {
                now: 1_600_000_000,
                ..welfare("/persons/01819010001")
            },
            Some(GrantNotYetValid),
        ),
        (
            "expired",
            Req {
                now: 1_900_000_000,
                ..welfare("/persons/01819010001")
            },
            Some(GrantExpired),
        ),
        (
            "scope",
            Req {
                scopes: vec!["demo:income"],
                ..welfare("/persons/01819010001")
            },
            Some(ScopeMissing),
        ),
        (
            "no purpose",
            Req {
                purpose: None,
                ..welfare("/persons/01819010001")
            },
            Some(PurposeMissing),
        ),
        (
            "empty purpose",
            Req {
                purpose: Some(""),
                ..welfare("/persons/01819010001")
            },
            Some(PurposeMissing),
        ),
        (
            "purpose",
            Req {
                purpose: Some("marketing"),
                ..welfare("/persons/01819010001")
            },
            Some(PurposeNotAllowed),
        ),
        (
            "subject missing",
            welfare("/persons/search"),
            Some(SubjectMissing),
        ),
        (
            "subject via query",
            Req {
                query: Some("pid=01819010001"),
                ..welfare("/persons/search")
            },
            None,
        ),
        (
            "subject twice",
            Req {
                query: Some("pid=01819010001&pid=15898510015"),
                ..welfare("/persons/search")
            },
            Some(SubjectInvalid),
        ),
        (
            "subject path and query",
            Req {
                query: Some("pid=15898510015"),
                ..welfare("/persons/01819010001")
            },
            Some(SubjectInvalid),
        ),
        (
            "subject check digits",
            welfare("/persons/01819010002"),
            Some(SubjectInvalid),
        ),
        ("consent missing", bank(vec![]), Some(ConsentMissing)),
        (
            "consent subject",
            bank(vec![consent(
                OLA,
                "310000027",
                "kyc-res",
                NOW - DAY,
                NOW + DAY,
            )]),
            Some(ConsentWrongSubject),
        ),
        (
            "consent consumer",
            bank(vec![consent(
                KARI,
                "310000019",
                "kyc-res",
                NOW - DAY,
                NOW + DAY,
            )]),
            Some(ConsentWrongConsumer),
        ),
        (
            "consent resource",
            bank(vec![consent(
                KARI,
                "310000027",
                "other",
                NOW - DAY,
                NOW + DAY,
            )]),
            Some(ConsentNotCovering),
        ),
        (
            "consent expired",
            bank(vec![consent(
                KARI,
                "310000027",
                "kyc-res",
                NOW - 2 * DAY,
                NOW,
            )]),
            Some(ConsentExpired),
        ),
        (
            "consent future",
            bank(vec![consent(
                KARI,
                "310000027",
                "kyc-res",
                NOW + 1,
                NOW + DAY,
            )]),
            Some(ConsentNotYetValid),
        ),
        (
            "the most specific consent failure wins, and a good consent anywhere allows",
            bank(vec![
                consent(OLA, "310000027", "kyc-res", NOW - DAY, NOW + DAY),
                good_consent(),
            ]),
            None,
        ),
    ]
}

#[test]
fn every_reason_code_is_reachable_and_each_case_decides_as_documented() {
    let set = fixture();
    let mut reached = BTreeSet::new();
    for (name, req, want) in table() {
        let got = run(&set, &req);
        assert_eq!(got.reason(), want, "{name}: {got:?}");
        if let Some(r) = want {
            reached.insert(r);
        }
    }
    let all: BTreeSet<DenyReason> = DenyReason::ALL.iter().copied().collect();
    assert_eq!(reached, all);
}

#[test]
fn deny_messages_never_contain_the_subject_or_the_purpose_text() {
    let set = fixture();
    for (name, mut req, _) in table() {
        if req.purpose.is_some() {
            req.purpose = Some("x01819010001");
        }
        if let Decision::Deny(d) = run(&set, &req) {
            for secret in [KARI, OLA, "x01819010001"] {
                assert!(!d.message.contains(secret), "{name}: {}", d.message);
            }
            assert!(!d.message.is_empty());
        }
    }
}

#[test]
fn allow_carries_grant_basis_consent_fields_and_rate_key() {
    let set = fixture();
    let Decision::Allow(a) = run(&set, &welfare("/persons/01819010001")) else {
        panic!("expected allow");
    };
    assert_eq!(a.grant_id, "welfare");
    assert_eq!(a.purpose, "benefit-assessment");
    assert_eq!(a.legal_basis.as_deref(), Some("Folketrygdloven § 21-4"));
    assert_eq!(a.consent_id, None);
    assert_eq!(a.fields.released(), ["name.family", "name.given"]);
    assert_eq!(
        a.rate_limit,
        Some(RateLimit {
            requests: 10,
            per_seconds: 1
        })
    );
    assert_eq!(a.rate_key, "welfare/310000019");

    let Decision::Allow(a) = run(&set, &bank(vec![good_consent()])) else {
        panic!("expected allow");
    };
    assert_eq!(a.grant_id, "kyc");
    assert_eq!(a.consent_id.as_deref(), Some("c-1"));
    assert_eq!(a.legal_basis, None);
    assert_eq!(
        a.fields.released(),
        ["address.city", "name.family", "name.given"]
    );
}

#[test]
fn named_consumer_grants_win_over_consent_grants() {
    // The welfare agency holds a consent *and* its own grant for a purpose
    // both grants list: its own grant is chosen.
    let extra = r#"[[grant]]
id = "a-open"
service = "population"
consumer = "any-with-consent"
scopes = ["demo:population"]
operations = ["get-person"]
purposes = ["benefit-assessment"]
consent = { resource = "kyc-res" }
fields = ["pid"]
valid_from = 2024-01-01T00:00:00Z
valid_to = 2030-01-01T00:00:00Z
"#;
    let src = sources(&[
        ("s.toml", SERVICE),
        ("g.toml", &GRANTS.concat()),
        ("x.toml", extra),
    ]);
    let loaded = PolicySet::from_sources_at(&src, NOW).unwrap();
    let req = Req {
        consents: vec![consent(KARI, "310000019", "kyc-res", NOW - DAY, NOW + DAY)],
        ..welfare("/persons/01819010001")
    };
    let Decision::Allow(a) = run(&loaded.set, &req) else {
        panic!("expected allow");
    };
    assert_eq!(a.grant_id, "welfare");
    assert!(
        loaded.warnings.iter().any(|w| w.message
            == "grant `a-open` overlaps grant `welfare` (consumer `310000019`, operation `get-person`, purpose `benefit-assessment`); `welfare` is chosen where both apply"),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn routing_prefers_literals_decodes_params_and_refuses_unknowns() {
    let set = fixture();
    let OperationMatch::Matched(m) = set.match_operation(
        "population",
        "GET",
        "/persons/search",
        Some("pid=0181901000%31&x=a+b"),
    ) else {
        panic!()
    };
    assert_eq!(m.operation_id, "search");
    assert_eq!(m.path_template, "/persons/search");
    assert_eq!(m.subject.as_deref(), Some(KARI));
    assert_eq!(
        m.params,
        vec![("pid".into(), KARI.into()), ("x".into(), "a b".into())]
    );

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
fn unknown_service_or_operation_in_a_decision_is_no_grant() {
    let set = fixture();
    let caller = Caller {
        consumer: "310000019".into(),
        ..Caller::default()
    };
    for (service, operation) in [("vehicles", "get-person"), ("population", "delete-person")] {
        let d = set.decide(&DecisionRequest {
            caller: &caller,
            service,
            operation,
            params: &[],
            subject: None,
            purpose: Some("benefit-assessment"),
            now: NOW,
        });
        assert_eq!(d.reason(), Some(DenyReason::NoGrant));
    }
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
fn version_ignores_file_names_and_layout_but_not_content() {
    let a = fixture();
    let split: Vec<(String, String)> = std::iter::once(("z.toml".to_string(), SERVICE.to_string()))
        .chain(
            GRANTS
                .iter()
                .enumerate()
                .map(|(i, g)| (format!("{i}.toml"), g.to_string())),
        )
        .collect();
    let b = PolicySet::from_sources_at(&split, NOW).unwrap().set;
    assert_eq!(a.version(), b.version());
    assert!(a.version().starts_with("sha256:") && a.version().len() == 7 + 64);
    let changed = GRANTS
        .concat()
        .replace("purposes = [\"kyc\"]", "purposes = [\"kyc\", \"aml\"]");
    let c = PolicySet::from_sources_at(&sources(&[("s.toml", SERVICE), ("g.toml", &changed)]), NOW)
        .unwrap()
        .set;
    assert_ne!(a.version(), c.version());
}

#[test]
fn policy_set_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicySet>();
    assert_send_sync::<std::sync::Arc<PolicySet>>();
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

fn arb_request() -> impl Strategy<Value = Req> {
    let consumers = prop::sample::select(vec!["310000019", "310000027", "310000035", "310000078"]);
    let suppliers = prop::option::of(prop::sample::select(vec!["310000043", "310000027"]));
    let paths = prop::sample::select(vec![
        "/persons/01819010001",
        "/persons/15898510015",
        "/persons/search",
        "/stats",
        "/persons/01819010002",
    ]);
    let purposes = prop::option::of(prop::sample::select(vec![
        "benefit-assessment",
        "kyc",
        "case-handling",
        "x",
    ]));
    let scopes = prop::sample::subsequence(vec!["demo:population", "demo:income"], 0..=2);
    let consents = prop::collection::vec(
        (
            prop::sample::select(vec![KARI, OLA]),
            prop::sample::select(vec!["310000019", "310000027"]),
            prop::sample::select(vec!["kyc-res", "other"]),
            -2i64..2,
        )
            .prop_map(|(from, to, res, shift)| {
                consent(from, to, res, NOW + shift * DAY, NOW + (shift + 2) * DAY)
            }),
        0..3,
    )
    .prop_map(|mut cs| {
        for (i, c) in cs.iter_mut().enumerate() {
            c.id = format!("c-{i}");
        }
        cs
    });
    (
        consumers,
        suppliers,
        paths,
        purposes,
        scopes,
        consents,
        -3000i64..3000,
    )
        .prop_map(
            |(consumer, supplier, path, purpose, scopes, consents, days)| Req {
                consumer,
                supplier,
                scopes,
                consents,
                path,
                query: None,
                purpose,
                now: NOW + days * DAY,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn decisions_and_version_do_not_depend_on_file_order_or_names(
        order in Just((0..=GRANTS.len()).collect::<Vec<usize>>()).prop_shuffle(),
        salt in "[a-z]{1,6}",
        reqs in prop::collection::vec(arb_request(), 1..16),
    ) {
        let base = fixture();
        let files: Vec<(String, String)> = order
            .iter()
            .map(|&i| {
                let text = if i == GRANTS.len() { SERVICE } else { GRANTS[i] };
                (format!("{salt}-{}.toml", GRANTS.len() - i), text.to_string())
            })
            .collect();
        let shuffled = PolicySet::from_sources_at(&files, NOW).unwrap().set;
        prop_assert_eq!(base.version(), shuffled.version());
        for r in &reqs {
            prop_assert_eq!(run(&base, r), run(&shuffled, r));
        }
    }

    #[test]
    fn a_denial_beats_any_grant(r in arb_request()) {
        let set = fixture();
        let r = Req { consumer: "310000078", ..r };
        prop_assert_eq!(run(&set, &r).reason(), Some(DenyReason::ExplicitlyDenied));
        // A denial naming a supplier blocks every consumer that uses it.
        let by_supplier = GRANTS.concat() + "[[denial]]\nid = \"vendor\"\nservice = \"population\"\nsupplier = [\"310000043\"]\nreason = \"Vendor suspended\"\n";
        let set = PolicySet::from_sources_at(&sources(&[("s.toml", SERVICE), ("g.toml", &by_supplier)]), NOW).unwrap().set;
        let r = Req { consumer: "310000019", supplier: Some("310000043"), ..r };
        prop_assert_eq!(run(&set, &r).reason(), Some(DenyReason::ExplicitlyDenied));
    }

    #[test]
    fn an_allow_always_satisfies_its_grant(r in arb_request()) {
        let set = fixture();
        if let Decision::Allow(a) = run(&set, &r) {
            let g = set.grants.iter().find(|g| g.id == a.grant_id).unwrap();
            prop_assert!(g.valid_from <= r.now && r.now < g.valid_to);
            prop_assert!(g.purposes.iter().any(|p| Some(p.as_str()) == r.purpose));
            prop_assert!(g.scopes.iter().all(|s| r.scopes.contains(&s.as_str())));
            prop_assert!(g.names_consumer(r.consumer));
            prop_assert!(r.consumer != "310000078");
            if g.consent.is_some() {
                let c = r.consents.iter().find(|c| Some(c.id.as_str()) == a.consent_id.as_deref()).unwrap();
                prop_assert!(c.to == r.consumer && c.consented <= r.now && r.now < c.valid_to);
                prop_assert!(r.path.ends_with(&c.from));
            }
        }
    }
}
