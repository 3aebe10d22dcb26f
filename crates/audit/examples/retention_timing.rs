//! What a retention sweep costs the appends running beside it:
//! `cargo run --release -p tollbu-audit --example retention_timing -- [segments] [rate/s] [dir]`
//! (default 16 segments of backlog, 10,000 appends/s, in a temp dir).
//!
//! Writes a backlog of records a year old until `segments` full 64 MiB segments hold them, plus a
//! day's worth of recent ones, then reopens the log and runs the gateway's open-loop load
//! ([`open_loop`]) for 12 s; 3 s in, another thread runs the sweep the gateway runs
//! (`prune_older_than(now − 30 days)`). Prints the sweep's duration and what it removed, and the
//! acknowledgement latency of the appends due before, during and after it. `NO_SWEEP=1` runs the
//! same load without the sweep, for comparison.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/open_loop.rs"]
mod open_loop;

use std::time::{Duration, Instant, SystemTime};

use tollbu_audit::AuditLog;

const LOAD_SECONDS: u64 = 12;
const SWEEP_AFTER: Duration = Duration::from_secs(3);

fn main() {
    let mut args = std::env::args().skip(1);
    let segments: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let tmp = tempfile::tempdir().unwrap();
    let base = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let cfg = common::config_in(&base, "retention.example/log");
    let seg_dir = cfg.dir.join("segments");
    let sealed = || {
        std::fs::read_dir(&seg_dir)
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "seg"))
                })
                .count()
                .saturating_sub(1)
            })
            .unwrap_or(0)
    };

    let (log, _) = AuditLog::open(cfg.clone()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let year_ago = tollbu_audit::Record::timestamp(now - time::Duration::days(365));
    let today = tollbu_audit::Record::timestamp(now - time::Duration::hours(1));
    let built = Instant::now();
    let mut k = 0u64;
    while sealed() < segments {
        let batch = (k..k + 1_000)
            .map(|i| open_loop::gateway_record(&log, i, &year_ago))
            .collect();
        log.append_batch_blocking(batch).unwrap();
        k += 1_000;
    }
    for _ in 0..20 {
        let batch = (k..k + 1_000)
            .map(|i| open_loop::gateway_record(&log, i, &today))
            .collect();
        log.append_batch_blocking(batch).unwrap();
        k += 1_000;
    }
    log.shutdown().unwrap();
    println!(
        "backlog: {k} records in {} sealed segments, written in {:.1?}",
        sealed(),
        built.elapsed()
    );

    let (log, _) = AuditLog::open(cfg).unwrap();
    let sweep = (std::env::var_os("NO_SWEEP").is_none()).then(|| {
        let log = log.clone();
        std::thread::spawn(move || {
            std::thread::sleep(SWEEP_AFTER);
            let cutoff = SystemTime::now() - Duration::from_secs(30 * 86_400);
            let started = Instant::now();
            let report = log.prune_older_than(cutoff).unwrap();
            (SWEEP_AFTER, started.elapsed(), report)
        })
    });
    let load = open_loop::run(&log, rate, LOAD_SECONDS, &today);
    log.shutdown().unwrap();
    println!(
        "{} durable appends in {:.2?} (target {rate}/s), {} failed",
        load.samples.len(),
        load.took,
        load.failed
    );
    let (from, until) = match sweep.map(|s| s.join().unwrap()) {
        Some((from, took, report)) => {
            println!(
                "sweep: {took:.2?}, removed {} segments, records below {} now hashes only",
                report.segments_removed, report.first_retained
            );
            (from, from + took)
        }
        None => {
            println!("sweep: none (NO_SWEEP)");
            (SWEEP_AFTER, SWEEP_AFTER)
        }
    };
    for (what, keep) in [
        (
            "before the sweep",
            Box::new(|d: Duration| d < from) as Box<dyn Fn(Duration) -> bool>,
        ),
        (
            "during the sweep",
            Box::new(move |d| d >= from && d < until),
        ),
        ("after the sweep", Box::new(move |d| d >= until)),
    ] {
        let window: Vec<&open_loop::Sample> =
            load.samples.iter().filter(|s| keep(s.due_at)).collect();
        println!(
            "ack latency {what} ({} appends), from scheduled start: {}; from the call: {}",
            window.len(),
            open_loop::percentiles(window.iter().map(|s| s.from_due_us).collect()),
            open_loop::percentiles(window.iter().map(|s| s.from_call_us).collect())
        );
    }
}
