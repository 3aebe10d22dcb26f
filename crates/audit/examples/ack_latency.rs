//! Durable acknowledgement latency under a fixed request rate, as the gateway sees it:
//! `cargo run --release -p tollbu-audit --example ack_latency -- [rate/s] [seconds] [dir]`
//! (default 20,000/s for 10 s in a temp dir).
//!
//! Open loop ([`open_loop`]): appends start on schedule whether or not earlier ones finished, and
//! latency counts from the scheduled start. Durability is the default: fsync before acknowledging.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/open_loop.rs"]
mod open_loop;

use tollbu_audit::AuditLog;

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
    let load = open_loop::run(&log, rate, seconds, "2026-03-01T10:00:00.000Z");
    let took = load.took;
    let stats = log.stats();
    log.shutdown().unwrap();
    let all = load.samples;
    println!(
        "{} durable appends in {took:.2?} (target {rate}/s, achieved {:.0}/s), {} failed",
        all.len(),
        all.len() as f64 / took.as_secs_f64(),
        load.failed
    );
    // The scheduled start includes the load generator's own lateness (tokio's timer has 1 ms
    // granularity, and a busy runtime starts tasks late); the second figure is the append alone.
    println!(
        "ack latency from scheduled start: {}",
        open_loop::percentiles(all.iter().map(|s| s.from_due_us).collect())
    );
    println!(
        "ack latency from the append call: {}",
        open_loop::percentiles(all.iter().map(|s| s.from_call_us).collect())
    );
    println!(
        "last batch {} records, last fsync {} µs",
        stats.last_batch_size, stats.last_fsync_micros
    );
}
