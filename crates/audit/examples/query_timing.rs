//! Times indexed queries on an existing log (for example the one `verify_timing` keeps):
//! `cargo run --release -p tollbu-audit --example query_timing -- DIR [runs]`
//! where `DIR` holds `log/` and `p.key` as `verify_timing <records> DIR` leaves them.
//!
//! Runs a subject query and a consumer query `runs` times each (default 7) and prints every
//! timing and the median. The first run may read from disk; later ones from the page cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tollbu_audit::tooling::{self, Query};

fn main() {
    let mut args = std::env::args().skip(1);
    let base = PathBuf::from(args.next().expect("DIR"));
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(7);
    let log = base.join("log");
    let segments = std::fs::read_dir(log.join("segments")).unwrap().count();
    println!("log {} ({segments} segment files)", log.display());
    // The same subject and consumer `verify_timing` asks about (for a 10M log).
    let subject = Query {
        subject: Some(format!("{:011}", (4_242u64 * 7_919) % 1_000_000)),
        ..Query::default()
    };
    let consumer = Query {
        consumer: Some(format!("0192:91{:07}", 3)),
        ..Query::default()
    };
    for (name, q, key) in [
        ("subject", &subject, Some(base.join("p.key"))),
        ("consumer", &consumer, None),
    ] {
        let mut times: Vec<Duration> = Vec::new();
        let mut hits = 0;
        for _ in 0..runs {
            let start = Instant::now();
            let r = tooling::query(&log, q, key.as_deref(), true);
            times.push(start.elapsed());
            assert!(r.ok, "{}", r.text);
            hits = r.text.lines().count();
        }
        let all: Vec<String> = times.iter().map(|t| format!("{t:.2?}")).collect();
        times.sort_unstable();
        println!(
            "{name} query: {hits} records, median {:.2?} (runs: {})",
            times[times.len() / 2],
            all.join(", ")
        );
    }
}
