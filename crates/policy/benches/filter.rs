//! Response minimisation on 1 KiB and 1 MiB JSON bodies.

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

fn filter() -> FieldFilter {
    let set = PolicySet::from_sources_at(&[("i.toml".into(), POLICY.into())], 1_780_315_200)
        .unwrap()
        .set;
    let caller = Caller {
        consumer: "310000035".into(),
        supplier: None,
        scopes: vec!["s".into()],
        consents: vec![],
    };
    let params = vec![("pid".to_string(), "01819010001".to_string())];
    let d = set.decide(&DecisionRequest {
        caller: &caller,
        service: "income",
        operation: "get",
        params: &params,
        subject: Some("01819010001"),
        purpose: Some("p"),
        now: 1_780_315_200,
    });
    let Decision::Allow(a) = d else {
        panic!("{d:?}")
    };
    (*a.fields).clone()
}

fn bench(c: &mut Criterion) {
    let f = filter();
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
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
