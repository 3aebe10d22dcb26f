//! Times `tooling::verify` (and a subject query) over a large log:
//! `cargo run --release -p tollbu-audit --example verify_timing -- [records]` (default 1,000,000).
//! Builds the log in a temp dir (batched appends, relaxed durability, since only verification and
//! queries are timed), then times `verify`, a subject query (from the index, then with `--scan`),
//! a consumer query and a query for one day's records (record `k` is timed `k` seconds after
//! 2026-03-01, so 10M records span 116 days), and last a rebuild of the index from the records.
//! A second argument names a directory to build the log in instead, which is then kept (used to
//! cross-check the files with independent tools).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use tollbu_audit::tooling::{self, Lookup, Query};
use tollbu_audit::{AuditLog, Decision, Durability, Record};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let tmp = tempfile::tempdir().unwrap();
    let keep = std::env::args().nth(2).map(std::path::PathBuf::from);
    let base = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let mut cfg = common::config_in(&base, "timing.example/log");
    cfg.durability = Durability::Relaxed {
        fsync_interval: Duration::from_millis(100),
    };
    cfg.checkpoint_every = 100_000;
    let (log, _) = AuditLog::open(cfg).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let start = Instant::now();
    // Batches of 1,000 from 4 producers. One subject per 10 records on average (1M people in a
    // 10M log) and 1,000 consumer organisations, so an indexed query returns a realistic share.
    let producers = 4u64;
    rt.block_on(async {
        let tasks: Vec<_> = (0..producers)
            .map(|w| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut k = w * 1_000;
                    while k < n {
                        let batch: Vec<Record> = (k..(k + 1_000).min(n))
                            .map(|k| Record {
                                time: Record::timestamp(
                                    time::macros::datetime!(2026-03-01 00:00:00 UTC)
                                        + time::Duration::seconds(k as i64),
                                ),
                                request_id: format!("t-{k}"),
                                consumer: Some(format!("0192:91{:07}", k % 1_000)),
                                service: "folkeregister".into(),
                                operation: "read".into(),
                                subject: Some(log.pseudonymise(&format!(
                                    "{:011}",
                                    (k * 7_919) % (n / 10).max(1)
                                ))),
                                decision: Decision::Allow,
                                fields_released: vec!["name".into()],
                                ..Record::default()
                            })
                            .collect();
                        log.append_batch(batch).await.unwrap();
                        k += producers * 1_000;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let built = start.elapsed();
    log.shutdown().unwrap();
    println!(
        "appended {n} records in {built:?} ({:.0}/s, relaxed durability)",
        n as f64 / built.as_secs_f64()
    );
    let start = Instant::now();
    let r = tooling::verify(&base.join("log"), &[], None);
    let took = start.elapsed();
    assert!(r.ok, "{}", r.text);
    println!(
        "verify of {n} records: {took:?} ({:.0} records/s)",
        n as f64 / took.as_secs_f64()
    );
    let q = Query {
        subject: Some(format!("{:011}", (4_242 * 7_919) % (n / 10).max(1))),
        ..Query::default()
    };
    let q_subject = q.clone();
    let start = Instant::now();
    let r = tooling::query(&base.join("log"), &q, Some(&base.join("p.key")), true);
    let subject_answer = r.text.clone();
    println!(
        "subject query: {} records in {:?}",
        r.text.lines().count(),
        start.elapsed()
    );
    // The same with `--scan` (every record read, no index): what an officer waits while the
    // index is damaged.
    let scan = Query {
        lookup: Lookup::Scan,
        ..q
    };
    let start = Instant::now();
    let scanned = tooling::query(&base.join("log"), &scan, Some(&base.join("p.key")), true);
    assert_eq!(scanned.text, r.text, "the scan finds what the index does");
    println!(
        "subject query with --scan: {} records in {:?}",
        scanned.text.lines().count(),
        start.elapsed()
    );
    let q = Query {
        consumer: Some(format!("0192:91{:07}", 3)),
        ..Query::default()
    };
    let start = Instant::now();
    let r = tooling::query(&base.join("log"), &q, None, true);
    println!(
        "consumer query: {} records in {:?}",
        r.text.lines().count(),
        start.elapsed()
    );
    // One day, the last full one (a scan: no index on time).
    let day_end = (n / 86_400).max(1) * 86_400;
    let day = |s: u64| {
        Record::timestamp(
            time::macros::datetime!(2026-03-01 00:00:00 UTC) + time::Duration::seconds(s as i64),
        )
    };
    let q = Query {
        from: Some(day(day_end.saturating_sub(86_400))),
        to: Some(day(day_end)),
        decision: Some(Decision::Allow),
        ..Query::default()
    };
    let start = Instant::now();
    let r = tooling::query(&base.join("log"), &q, None, true);
    assert!(r.ok, "{}", r.text);
    println!(
        "one day's records: {} records in {:?}",
        r.text.lines().count(),
        start.elapsed()
    );
    // What `tollbu audit reindex` takes (every record read again); a gateway opening a log whose
    // index was removed rebuilds it the same way.
    let start = Instant::now();
    let report = tollbu_audit::reindex_closed_log(&base.join("log")).unwrap();
    let took = start.elapsed();
    assert_eq!(report.records, n);
    let r = tooling::query(
        &base.join("log"),
        &q_subject,
        Some(&base.join("p.key")),
        true,
    );
    assert_eq!(
        r.text, subject_answer,
        "the rebuilt index answers as the first did"
    );
    println!(
        "reindex of {n} records: {took:?} ({:.0} records/s)",
        n as f64 / took.as_secs_f64()
    );
}
