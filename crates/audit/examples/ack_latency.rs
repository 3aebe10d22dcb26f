//! Durable acknowledgement latency under a fixed request rate, as the gateway sees it:
//! `cargo run --release -p tollbu-audit --example ack_latency -- [rate/s] [seconds] [dir]`
//! (default 20,000/s for 10 s in a temp dir).
//!
//! Open loop: a pacing thread starts one append every `1/rate` seconds, each on its own task like
//! a gateway request, whether or not earlier ones finished. Latency is measured from each append's scheduled
//! start, so a stalled writer shows up in the figures instead of slowing the load down
//! (no coordinated omission). Durability is the default: fsync before acknowledging.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tollbu_audit::{AuditLog, Decision, Record};

fn main() {
    let mut args = std::env::args().skip(1);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let tmp = tempfile::tempdir().unwrap();
    let base = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    // The gateway's defaults: fsync before acknowledging, a checkpoint every 10,000 records or 1 s.
    let mut cfg = common::config_in(&base, "latency.example/log");
    // Diagnostics only: `CHECKPOINT_EVERY=100000` shows what checkpoint signing adds to the tail.
    if let Some(n) = std::env::var("CHECKPOINT_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.checkpoint_every = n;
    }
    let (log, _) = AuditLog::open(cfg).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let total = rate * seconds;
    let gap = Duration::from_secs(1) / rate.max(1) as u32;
    // (from the scheduled start, from the moment the append was called)
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let failures = Arc::new(Mutex::new(0u64));
    let start = Instant::now();
    // A plain thread paces the requests (tokio's timer has 1 ms granularity, which would bunch
    // them into bursts); each append then runs on the runtime like a gateway request.
    let handle = rt.handle().clone();
    let pacer = {
        let log = log.clone();
        let latencies = latencies.clone();
        let failures = failures.clone();
        std::thread::spawn(move || {
            let mut tasks = Vec::with_capacity(total as usize);
            for k in 0..total {
                let due = start + gap * k as u32;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let log = log.clone();
                let latencies = latencies.clone();
                let failures = failures.clone();
                tasks.push(handle.spawn(async move {
                    let record = Record {
                        time: "2026-03-01T10:00:00.000Z".into(),
                        request_id: format!("lat-{k}"),
                        consumer: Some(format!("0192:91{:07}", k % 1_000)),
                        service: "folkeregister".into(),
                        operation: "read".into(),
                        path_template: Some("/persons/{id}".into()),
                        subject: Some(log.pseudonymise(&format!("{:011}", k % 100_000))),
                        purpose: Some("benchmark".into()),
                        legal_basis: Some("law".into()),
                        decision: Decision::Allow,
                        upstream_status: Some(200),
                        request_sha256: Some([0x00; 32]),
                        response_sha256: Some([0x11; 32]),
                        fields_released: vec!["name".into(), "address".into()],
                        ..Record::default()
                    };
                    let called = Instant::now();
                    match log.append(record).await {
                        Ok(_) => latencies.lock().unwrap().push((
                            due.elapsed().as_micros() as u64,
                            called.elapsed().as_micros() as u64,
                        )),
                        Err(_) => *failures.lock().unwrap() += 1,
                    }
                }));
            }
            tasks
        })
    };
    let tasks = pacer.join().unwrap();
    rt.block_on(async {
        for t in tasks {
            t.await.unwrap();
        }
    });
    let took = start.elapsed();
    let stats = log.stats();
    log.shutdown().unwrap();
    let all = std::mem::take(&mut *latencies.lock().unwrap());
    let failed = *failures.lock().unwrap();
    println!(
        "{} durable appends in {took:.2?} (target {rate}/s, achieved {:.0}/s), {failed} failed",
        all.len(),
        all.len() as f64 / took.as_secs_f64()
    );
    // The scheduled start includes the load generator's own lateness (tokio's timer has 1 ms
    // granularity, and a busy runtime starts tasks late); the second figure is the append alone.
    for (what, mut l) in [
        (
            "from scheduled start",
            all.iter().map(|l| l.0).collect::<Vec<_>>(),
        ),
        ("from the append call", all.iter().map(|l| l.1).collect()),
    ] {
        l.sort_unstable();
        let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)];
        println!(
            "ack latency {what}: p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            pct(0.50),
            pct(0.99),
            pct(0.999),
            l[l.len() - 1]
        );
    }
    println!(
        "last batch {} records, last fsync {} µs",
        stats.last_batch_size, stats.last_fsync_micros
    );
}
