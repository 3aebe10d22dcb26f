//! Times opening an existing log (`cargo run --release -p tollbu-audit --example open_timing --
//! DIR`, DIR as kept by `verify_timing N DIR`): what a gateway's start waits for, including any
//! tiles or index it has to rebuild, which the recovery report counts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Instant;

use tollbu_audit::AuditLog;

fn main() {
    let base = std::path::PathBuf::from(std::env::args().nth(1).expect("DIR"));
    let cfg = common::config_in(&base, "timing.example/log");
    let start = Instant::now();
    let (log, report) = AuditLog::open(cfg).unwrap();
    let took = start.elapsed();
    println!(
        "opened {} records in {took:?}: {} tiles rebuilt, {} records reindexed",
        report.records, report.tiles_rebuilt, report.reindexed
    );
    log.shutdown().unwrap();
}
