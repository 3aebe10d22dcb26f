//! Response minimisation on 1 KiB and 1 MiB JSON bodies that are mostly
//! released, and on the load benchmark's 1 KiB person record, of which the
//! bench grant releases 145 bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tollbu_policy::{Caller, Decision, DecisionRequest, FieldFilter, PolicySet};

const POLICY: &str = r#"[service]
id = "income"
subject = { param = "pid", kind = "national-identity-number" }
fields = ["pid", "year", "total", "note", "items[].kind", "items[].amount", "items[].payer"]

[[service.operation]]
id = "get"
method = "GET"
path = "/persons/{pid}"

[[grant]]
id = "g"
consumer = ["310000035"]
scopes = ["s"]
operations = ["get"]
purposes = ["p"]
legal_basis = "Law § 1"
fields = ["year", "total", "items[].kind", "items[].amount"]
valid_from = 2024-01-01T00:00:00Z
valid_to = 2030-01-01T00:00:00Z
"#;

fn body(target: usize) -> Vec<u8> {
    let item =
        r#"{"kind":"salary","amount":580000,"payer":"Demo Employer AS","extra":"not released"}"#;
    let mut s =
        String::from(r#"{"pid":"01819010001","year":2022,"total":612000,"note":"n","items":["#);
    let mut first = true;
    while s.len() + item.len() + 2 < target {
        if !first {
            s.push(',');
        }
        s.push_str(item);
        first = false;
    }
    s.push_str("]}");
    s.into_bytes()
}

/// The demo population policy, whose welfare grant the load benchmark uses.
const POPULATION_POLICY: &str = include_str!("../../../policies/population.toml");

/// Who asks for what: enough to reach one grant's decision.
struct Ask<'a> {
    service: &'a str,
    operation: &'a str,
    consumer: &'a str,
    scope: &'a str,
    purpose: &'a str,
    pid: &'a str,
}

/// The body `bench_upstream` serves (1,027 bytes).
fn person_body() -> Vec<u8> {
    let citizenship = r#"{"country":"NOR","since":"1956-08-05"}"#;
    let citizenships = vec![citizenship; 21].join(",");
    format!(
        r#"{{"address":{{"city":"Oslo","postal_code":"0150","street":"Lindeveien 111"}},"birth_date":"1956-08-05","citizenships":[{citizenships}],"marital_status":"ugift","name":{{"family":"Halvorsen","given":"Jakob"}},"pid":"05885624741"}}"#
    )
    .into_bytes()
}

fn filter(policy: &str, ask: &Ask<'_>) -> FieldFilter {
    let set = PolicySet::from_sources_at(&[("p.toml".into(), policy.into())], 1_780_315_200)
        .unwrap()
        .set;
    let caller = Caller {
        consumer: ask.consumer.into(),
        supplier: None,
        scopes: vec![ask.scope.into()],
        consents: vec![],
        person: None,
    };
    let params = vec![("pid".to_string(), ask.pid.to_string())];
    let d = set.decide(&DecisionRequest {
        caller: &caller,
        service: ask.service,
        operation: ask.operation,
        params: &params,
        subject: Some(ask.pid),
        purpose: Some(ask.purpose),
        now: 1_780_315_200,
    });
    let Decision::Allow(a) = d else {
        panic!("{d:?}")
    };
    (*a.fields).clone()
}

fn bench(c: &mut Criterion) {
    let f = filter(
        POLICY,
        &Ask {
            service: "income",
            operation: "get",
            consumer: "310000035",
            scope: "s",
            purpose: "p",
            pid: "01819010001",
        },
    );
    let mut group = c.benchmark_group("filter_json");
    for (name, size) in [("1KiB", 1024), ("1MiB", 1024 * 1024)] {
        let input = body(size);
        let out = f.filter_json(&input).unwrap();
        assert!(out.len() < input.len());
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| f.filter_json(black_box(&input)).unwrap())
        });
    }
    let person = person_body();
    let f = filter(
        POPULATION_POLICY,
        &Ask {
            service: "population",
            operation: "get-person",
            consumer: "310000019",
            scope: "demo:population",
            purpose: "benefit-assessment",
            pid: "05885624741",
        },
    );
    let out = f.filter_json(&person).unwrap();
    assert_eq!((person.len(), out.len()), (1027, 145));
    group.throughput(Throughput::Bytes(person.len() as u64));
    group.bench_function("person-1KiB", |b| {
        b.iter(|| f.filter_json(black_box(&person)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
