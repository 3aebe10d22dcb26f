//! `decide` over 1,000 grants spread across 100 services (target: p50 ≤ 1 µs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tollbu_policy::ids::complete_orgno;
use tollbu_policy::{Caller, Consent, ConsentRight, DecisionRequest, PolicySet};

const SERVICES: usize = 100;
const GRANTS_PER_SERVICE: usize = 10;
const NOW: i64 = 1_780_315_200;
const PID: &str = "01819010001";

fn orgno(i: usize) -> String {
    (0..)
        .find_map(|k| complete_orgno(&format!("{:08}", 31_000_000 + i * 10 + k)))
        .unwrap()
}

fn policy_sources() -> Vec<(String, String)> {
    (0..SERVICES)
        .map(|s| {
            let mut text = format!(
                "[service]\nid = \"svc-{s:03}\"\nsubject = {{ param = \"pid\", kind = \"national-identity-number\" }}\n\
                 fields = [\"pid\", \"name.given\", \"name.family\", \"address.city\"]\n\n\
                 [[service.operation]]\nid = \"get\"\nmethod = \"GET\"\npath = \"/persons/{{pid}}\"\n"
            );
            for g in 0..GRANTS_PER_SERVICE {
                let consumer = if g == 0 {
                    "\"any-with-consent\"".to_string()
                } else {
                    format!("[\"{}\"]", orgno(g))
                };
                let basis = if g == 0 {
                    "consent = { resource = \"res\" }".to_string()
                } else {
                    "legal_basis = \"Law § 1\"".to_string()
                };
                let _ = write!(
                    text,
                    "\n[[grant]]\nid = \"svc-{s:03}-g{g}\"\nconsumer = {consumer}\nscopes = [\"demo:s{s}\"]\n\
                     operations = [\"get\"]\npurposes = [\"p{g}\"]\n{basis}\nfields = [\"name\"]\n\
                     valid_from = 2024-01-01T00:00:00Z\nvalid_to = 2030-01-01T00:00:00Z\n"
                );
            }
            (format!("svc-{s:03}.toml"), text)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let set = PolicySet::from_sources_at(&policy_sources(), NOW)
        .unwrap()
        .set;
    let params = vec![("pid".to_string(), PID.to_string())];
    let named = Caller {
        consumer: orgno(7),
        supplier: None,
        scopes: vec!["demo:s42".into()],
        consents: Vec::new(),
        person: None,
    };
    let with_consent = Caller {
        consumer: orgno(999),
        supplier: None,
        scopes: vec!["demo:s42".into()],
        consents: vec![Consent {
            id: "c".into(),
            from: PID.into(),
            to: orgno(999),
            consented: NOW - 10,
            valid_to: NOW + 10,
            rights: vec![ConsentRight {
                actions: vec!["consent".into()],
                resources: vec!["res".into()],
                metadata: Default::default(),
            }],
        }],
        person: None,
    };
    let req = |caller, purpose| DecisionRequest {
        caller,
        service: "svc-042",
        operation: "get",
        params: &params,
        subject: Some(PID),
        purpose: Some(purpose),
        now: NOW,
    };
    assert!(set.decide(&req(&named, "p7")).is_allow());
    assert!(set.decide(&req(&with_consent, "p0")).is_allow());
    assert!(!set.decide(&req(&named, "p3")).is_allow());

    let mut group = c.benchmark_group("decide_1000_grants_100_services");
    group.bench_function("allow_named_consumer", |b| {
        b.iter(|| set.decide(black_box(&req(&named, "p7"))))
    });
    group.bench_function("allow_with_consent", |b| {
        b.iter(|| set.decide(black_box(&req(&with_consent, "p0"))))
    });
    group.bench_function("deny_purpose_not_allowed", |b| {
        b.iter(|| set.decide(black_box(&req(&named, "p3"))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
