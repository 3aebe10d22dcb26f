//! Engine tests over a small fixture: every reason code, determinism,
//! denials, routing, explanations, analysis. Diagnostics tests live in
//! `tests/diagnostics.rs`, properties in `tests/properties.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod analysis;
mod diagnostics;
mod properties;

use std::collections::BTreeSet;

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
    /// `pid` of an end-user-restricted token.
    person: Option<&'static str>,
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
        person: None,
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
        person: r.person.map(Into::into),
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
        (
            "a token restricted to one person (pid) reads that person",
            Req {
                person: Some(KARI),
                ..welfare("/persons/01819010001")
            },
            None,
        ),
        (
            "a token restricted to one person (pid) reads no other, whatever the grants allow",
            Req {
                person: Some(OLA),
                ..welfare("/persons/01819010001")
            },
            Some(TokenPersonMismatch),
        ),
        (
            "a token restricted to one person (pid) on a person operation naming none",
            Req {
                person: Some(KARI),
                ..welfare("/persons/search")
            },
            Some(TokenPersonMismatch),
        ),
        (
            "a token restricted to one person (pid) on an operation about no person",
            Req {
                person: Some(KARI),
                ..welfare("/stats")
            },
            Some(TokenPersonMismatch),
        ),
    ]
}

#[test]
fn a_purpose_is_known_when_a_grant_of_the_service_lists_it() {
    let set = fixture();
    assert!(set.names_purpose("population", "benefit-assessment"));
    assert!(set.names_purpose("population", "kyc"));
    assert!(!set.names_purpose("population", "marketing"));
    assert!(!set.names_purpose("population", "01819010001"));
    assert!(!set.names_purpose("vehicles", "benefit-assessment"));
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
