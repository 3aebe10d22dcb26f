//! Crash safety: a child process appends under load and is SIGKILLed at random moments; after each
//! kill the log reopens, verifies, and holds every record the child saw acknowledged.
//!
//! The child is this test binary re-executed with `CHILD_ENV` set (see `child_process`). In the
//! retention variant it also prunes all the while, so kills land between the retention statement,
//! the `pruned` marker and the deletes too.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rand::Rng;
use tollbu_audit::segment::{FrameRead, FrameReader, list_segments};
use tollbu_audit::tooling::{self, Query};
use tollbu_audit::{AuditLog, Durability, RecoveryReport};

use crate::support::{Keys, record, runtime};

const CHILD_ENV: &str = "TOLLBU_AUDIT_CRASH_CHILD";
const ROUNDS: usize = 20;

/// Runs only as the child of `sigkill_at_random_moments_loses_no_acknowledged_record`.
#[test]
#[ignore = "helper process for the crash test"]
fn child_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (log_dir, key_dir, round, prune) = {
        let mut p = spec.split('|');
        (
            p.next().unwrap().to_string(),
            p.next().unwrap().to_string(),
            p.next().unwrap().parse::<u64>().unwrap(),
            p.next() == Some("prune"),
        )
    };
    let keys = Keys::at(key_dir.as_ref());
    let mut cfg = keys.config(log_dir.as_ref());
    cfg.checkpoint_every = 64;
    cfg.segment_max_bytes = 32 * 1024;
    if round % 4 == 3 {
        cfg.durability = Durability::Relaxed {
            fsync_interval: Duration::from_millis(2),
        };
    }
    let (log, _) = AuditLog::open(cfg).unwrap();
    if prune {
        // Everything the latest checkpoint's full tiles cover, again and again.
        let sweeper = log.clone();
        std::thread::spawn(move || {
            loop {
                let _ = sweeper.prune_before(u64::MAX, std::time::SystemTime::now());
                std::thread::sleep(Duration::from_millis(2));
            }
        });
    }
    let ps = keys.pseudonymiser();
    let rt = runtime();
    rt.block_on(async move {
        let mut tasks = Vec::new();
        for t in 0..16u64 {
            let log = log.clone();
            let ps = ps.clone();
            tasks.push(tokio::spawn(async move {
                for k in 0.. {
                    // Two of the writers append batches, whose records become durable together.
                    let batch = if t < 2 { 1 + (k % 40) } else { 1 };
                    let records: Vec<_> = (0..batch)
                        .map(|b| {
                            let mut r = record(k * 100 + b, &ps);
                            r.request_id = format!("r{round}-t{t}-k{k}-b{b}");
                            r
                        })
                        .collect();
                    let seqs = if t < 2 {
                        log.append_batch(records.clone()).await.unwrap()
                    } else {
                        let seq = log.append(records[0].clone()).await.unwrap();
                        seq..seq + 1
                    };
                    let mut out = std::io::stdout().lock();
                    for (seq, r) in seqs.zip(&records) {
                        writeln!(out, "ACK {seq} {}", r.request_id).unwrap();
                    }
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_record() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut rng = rand::thread_rng();
    let mut torn_rounds = 0;
    let mut zero_tail_rounds = 0;
    for round in 0..ROUNDS {
        let wait = Duration::from_millis(rng.gen_range(0..40));
        acked.extend(run_child_until_killed(
            dir.path(),
            &keys,
            round,
            false,
            wait,
        ));

        let max_acked = *acked.keys().next_back().unwrap();
        let (report, _) = reopen_and_verify(dir.path(), &keys, round, max_acked);
        if report.truncated_bytes > 0 {
            torn_rounds += 1;
        }
        if has_zero_tail(&dir.path().join("segments")) {
            zero_tail_rounds += 1;
        }
    }
    // Every acknowledged record is there, at the index it was acknowledged with.
    let r = tooling::query(dir.path(), &Query::default(), None, true);
    let stored: BTreeMap<u64, String> = r
        .text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["seq"].as_u64().unwrap(),
                v["request_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (seq, id) in &acked {
        assert_eq!(
            stored.get(seq),
            Some(id),
            "acknowledged record {seq} missing or different"
        );
    }
    assert!(
        acked.len() > ROUNDS,
        "the child should acknowledge many records"
    );
    eprintln!(
        "crash test: {} acknowledged records, {torn_rounds} of {ROUNDS} kills left a torn tail, \
         {zero_tail_rounds} reopened an active segment with a zero tail",
        acked.len()
    );
}

/// Retention beside the appends, killed at random moments: whatever the kill interrupted (the
/// statement, the marker, the deletes), the log reopens with every acknowledged record that
/// retention did not remove, and verifies: the `pruned` marker never reaches past the signed
/// retention statement.
#[test]
fn sigkill_during_retention_sweeps_leaves_a_log_that_verifies() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let mut max_acked = 0;
    let mut pruned_rounds = 0;
    for round in 0..ROUNDS {
        let wait = Duration::from_millis(rng.gen_range(0..80));
        let acks = run_child_until_killed(dir.path(), &keys, round, true, wait);
        max_acked = acks.iter().map(|(seq, _)| *seq).fold(max_acked, u64::max);

        let (_, v) = reopen_and_verify(dir.path(), &keys, round, max_acked);
        if v.text.contains("retention statement: records below") {
            pruned_rounds += 1;
        }
    }
    assert!(
        pruned_rounds > ROUNDS / 2,
        "retention removed records in only {pruned_rounds} of {ROUNDS} rounds"
    );
}

/// Runs the child on `dir` (pruning beside its appends with `prune`) until it has acknowledged a
/// record, lets it go on for `wait`, kills it with SIGKILL, and returns every acknowledgement it
/// printed: (record number, request id).
fn run_child_until_killed(
    dir: &std::path::Path,
    keys: &Keys,
    round: usize,
    prune: bool,
    wait: Duration,
) -> Vec<(u64, String)> {
    let mode = if prune { "prune" } else { "append" };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "crash::child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            format!("{}|{}|{round}|{mode}", dir.display(), keys.dir().display()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("ACK ") {
                let (seq, id) = rest.split_once(' ').unwrap();
                if tx
                    .send((seq.parse::<u64>().unwrap(), id.to_string()))
                    .is_err()
                {
                    break;
                }
            }
        }
    });
    // Let it get going, then kill at a random moment while appends are in flight.
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("child acknowledged nothing");
    std::thread::sleep(wait);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    std::iter::once(first).chain(rx.try_iter()).collect()
}

/// Reopens the log after a kill: it holds records up to the last one acknowledged, and verifies
/// once closed again.
fn reopen_and_verify(
    dir: &std::path::Path,
    keys: &Keys,
    round: usize,
    max_acked: u64,
) -> (RecoveryReport, tooling::Report) {
    let mut cfg = keys.config(dir);
    cfg.checkpoint_every = 64;
    let (log, report) = AuditLog::open(cfg).unwrap();
    assert!(
        report.records > max_acked,
        "round {round}: acked {max_acked} but only {} records: {report:?}",
        report.records
    );
    log.shutdown().unwrap();
    let v = tooling::verify(dir, &[], None);
    assert!(v.ok, "round {round}: {}", v.text);
    (report, v)
}

/// Whether the active segment was a prepared spare: zeros after its last frame.
fn has_zero_tail(seg_dir: &std::path::Path) -> bool {
    let Some(last) = list_segments(seg_dir).unwrap().pop() else {
        return false;
    };
    let mut r = FrameReader::open(&last.path).unwrap();
    while let FrameRead::Frame { .. } = r.next_frame().unwrap() {}
    r.offset() < std::fs::metadata(&last.path).unwrap().len()
}
