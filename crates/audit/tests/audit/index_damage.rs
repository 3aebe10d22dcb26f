//! Queries answered from the subject and consumer index refuse a damaged index: a truncated or
//! deleted bucket, or one with an entry cut out, would otherwise make `query` and the citizen
//! report silently leave requests out. What a crash or retention leaves is not damage.

use std::path::{Path, PathBuf};

use sha2::Digest;
use tollbu_audit::AuditLog;
use tollbu_audit::tooling::{self, Lookup, Query, Report};

use crate::support::{Keys, assert_fails_saying, closed_log, copy_tree, person, record};

/// The bucket file holding the entries of `key` (a pseudonym or a consumer) in `kind`.
fn bucket_of(dir: &Path, kind: &str, key: &str) -> PathBuf {
    let first = sha2::Sha256::digest(key.as_bytes())[0];
    dir.join("index")
        .join(kind)
        .join(format!("{first:02x}.idx"))
}

fn subject_bucket(dir: &Path, keys: &Keys, p: u64) -> PathBuf {
    bucket_of(dir, "subject", &keys.pseudonymiser().pseudonym(&person(p)))
}

/// `tollbu audit query DIR --subject <person p>`.
fn query_about(dir: &Path, keys: &Keys, p: u64) -> Report {
    query_with(dir, keys, p, Lookup::Index)
}

/// The same, `--scan` with [`Lookup::Scan`].
fn query_with(dir: &Path, keys: &Keys, p: u64, lookup: Lookup) -> Report {
    let q = Query {
        subject: Some(person(p)),
        lookup,
        ..Query::default()
    };
    tooling::query(dir, &q, Some(&keys.pseudonym()), false)
}

fn citizen(dir: &Path, keys: &Keys, p: u64) -> Report {
    tooling::citizen(dir, &person(p), &keys.pseudonym(), Lookup::Index)
}

/// Asserts a complete answer about person `p` of a log holding records `0..n` (every 7th record
/// is about each person).
fn assert_complete_about(dir: &Path, keys: &Keys, p: u64, n: u64) {
    assert_complete_with(dir, keys, p, n, Lookup::Index);
}

fn assert_complete_with(dir: &Path, keys: &Keys, p: u64, n: u64, lookup: Lookup) {
    let want = (0..n).filter(|i| i % 7 == p).count();
    let r = query_with(dir, keys, p, lookup);
    assert!(r.ok, "{}", r.text);
    assert!(
        r.text.ends_with(&format!("\n{want} records\n")),
        "{}",
        r.text
    );
    let c = tooling::citizen(dir, &person(p), &keys.pseudonym(), lookup);
    assert!(c.ok, "{}", c.text);
    assert!(
        c.text
            .starts_with(&format!("Requests concerning this person: {want}\n")),
        "{}",
        c.text
    );
}

/// The refusal an officer gets: the damaged file, and what to run.
fn assert_refused_naming(r: &Report, bucket: &Path) {
    assert_fails_saying(
        r,
        &format!("the audit log index is damaged: `{}`", bucket.display()),
    );
    assert_fails_saying(r, "run `tollbu audit verify");
    assert_fails_saying(r, "tollbu audit reindex");
    assert_fails_saying(r, "--scan");
}

/// Cuts entry number `entry` (40 bytes each) out of `bucket`.
fn cut_entry(bucket: &Path, entry: usize) {
    let mut bytes = std::fs::read(bucket).unwrap();
    assert!(bytes.len() >= (entry + 2) * 40, "{} bytes", bytes.len());
    bytes.drain(entry * 40..(entry + 1) * 40);
    std::fs::write(bucket, bytes).unwrap();
}

#[test]
fn a_truncated_bucket_fails_the_query_and_the_citizen_report_until_it_is_rebuilt() {
    let keys = Keys::new();
    let (dir, _) = closed_log(&keys, 700);
    assert_complete_about(dir.path(), &keys, 3, 700);
    let bucket = subject_bucket(dir.path(), &keys, 3);
    let len = std::fs::metadata(&bucket).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&bucket)
        .unwrap()
        .set_len(len / 80 * 40)
        .unwrap();

    assert_refused_naming(&query_about(dir.path(), &keys, 3), &bucket);
    assert_refused_naming(&citizen(dir.path(), &keys, 3), &bucket);
    // Meanwhile `--scan` answers in full from the records alone.
    assert_complete_with(dir.path(), &keys, 3, 700, Lookup::Scan);
    // What the refusal points to: verify names the bucket, a rebuild makes the answer whole.
    assert_fails_saying(
        &tooling::verify(dir.path(), &[], None),
        "the index does not match the records in 1 of its buckets",
    );
    tollbu_audit::reindex_closed_log(dir.path()).unwrap();
    assert_complete_about(dir.path(), &keys, 3, 700);
}

#[test]
fn a_deleted_bucket_fails_the_query_and_the_citizen_report() {
    let keys = Keys::new();
    let (dir, _) = closed_log(&keys, 700);
    let bucket = subject_bucket(dir.path(), &keys, 5);
    std::fs::remove_file(&bucket).unwrap();
    assert_refused_naming(&query_about(dir.path(), &keys, 5), &bucket);
    assert_refused_naming(&citizen(dir.path(), &keys, 5), &bucket);
    // Other buckets still answer.
    assert_complete_about(dir.path(), &keys, 2, 700);
}

#[test]
fn an_entry_cut_from_the_middle_of_a_bucket_fails_subject_and_consumer_queries() {
    let keys = Keys::new();
    let (dir, _) = closed_log(&keys, 700);
    let bucket = subject_bucket(dir.path(), &keys, 4);
    cut_entry(&bucket, 50);
    assert_refused_naming(&query_about(dir.path(), &keys, 4), &bucket);
    assert_refused_naming(&citizen(dir.path(), &keys, 4), &bucket);

    let consumer = "0192:910000001";
    let bucket = bucket_of(dir.path(), "consumer", consumer);
    let q = Query {
        consumer: Some(consumer.into()),
        ..Query::default()
    };
    let whole = tooling::query(dir.path(), &q, None, false);
    assert!(whole.text.ends_with("\n233 records\n"), "{}", whole.text);
    cut_entry(&bucket, 100);
    assert_refused_naming(&tooling::query(dir.path(), &q, None, false), &bucket);
}

/// A gateway started on a damaged index says so, and does not take the short bucket as the new
/// normal: its later entries do not hide the ones missing.
#[test]
fn a_bucket_damaged_while_the_log_was_closed_stays_refused_after_a_restart() {
    let keys = Keys::new();
    let (dir, _) = closed_log(&keys, 700);
    let bucket = subject_bucket(dir.path(), &keys, 3);
    cut_entry(&bucket, 10);
    let (log, report) = AuditLog::open(keys.config(dir.path())).unwrap();
    assert!(
        report.notes.iter().any(|n| n.contains(&format!(
            "index bucket `{}` holds 99 entries but 100 were recorded",
            bucket.display()
        ))),
        "{report:?}"
    );
    let ps = keys.pseudonymiser();
    for i in 700..800 {
        log.append_blocking(record(i, &ps)).unwrap();
    }
    log.shutdown().unwrap();
    assert_refused_naming(&query_about(dir.path(), &keys, 3), &bucket);
    tollbu_audit::reindex_closed_log(dir.path()).unwrap();
    assert_complete_about(dir.path(), &keys, 3, 800);
}

/// A crash leaves entries written out ahead of the watermark (beyond the recorded counts), some
/// of them lost or torn: queries answer whole before and after the next open.
#[test]
fn entries_a_crash_left_or_lost_beyond_the_recorded_counts_are_not_damage() {
    let keys = Keys::new();
    let (dir, _) = closed_log(&keys, 700);
    let recorded = std::fs::read_to_string(dir.path().join("index").join("watermark")).unwrap();
    let ps = keys.pseudonymiser();
    let (log, _) = AuditLog::open(keys.config(dir.path())).unwrap();
    // 20,000 more: their entries are written out (1 MiB) long before a durable flush is due.
    for batch in 0..20u64 {
        let records = (700 + batch * 1000..700 + (batch + 1) * 1000)
            .map(|i| record(i, &ps))
            .collect();
        log.append_batch_blocking(records).unwrap();
    }
    let bucket = subject_bucket(dir.path(), &keys, 3);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::metadata(&bucket).unwrap().len() <= 100 * 40 {
        assert!(std::time::Instant::now() < deadline, "nothing written out");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    log.checkpoint_now().unwrap();
    let copy = tempfile::tempdir().unwrap();
    copy_tree(dir.path(), copy.path());
    log.shutdown().unwrap();
    assert_eq!(
        std::fs::read_to_string(copy.path().join("index").join("watermark")).unwrap(),
        recorded,
        "a durable flush happened: the test no longer copies a log mid-way"
    );
    let n = 20_700;
    assert_complete_about(copy.path(), &keys, 3, n);
    // The crash lost the later part of what was written out, and tore the last entry.
    for kind in ["subject", "consumer"] {
        for b in std::fs::read_dir(copy.path().join("index").join(kind)).unwrap() {
            let path = b.unwrap().path();
            let len = std::fs::metadata(&path).unwrap().len();
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(len - len / 40 / 4 * 40 - 17).unwrap();
        }
    }
    assert_complete_about(copy.path(), &keys, 3, n);
    let (reopened, report) = AuditLog::open(keys.config(copy.path())).unwrap();
    assert!(
        !report.notes.iter().any(|n| n.contains("were recorded")),
        "{report:?}"
    );
    reopened.shutdown().unwrap();
    assert_complete_about(copy.path(), &keys, 3, n);
    assert!(tooling::verify(copy.path(), &[], None).ok);
}

/// Retention compaction shrinks buckets legitimately: it lowers the recorded counts with them, so
/// the compacted index answers, and damage after it is still found.
#[test]
fn a_compacted_index_answers_and_later_damage_is_still_found() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let ps = keys.pseudonymiser();
    let mut cfg = keys.config(dir.path());
    cfg.segment_max_bytes = 16 * 1024;
    let (log, _) = AuditLog::open(cfg).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let long_ago = now - time::Duration::days(400);
    for i in 0..800u64 {
        let mut r = record(i, &ps);
        // The last records are recent: a closed log whose records are all due loses every
        // segment, and this test wants a partly compacted index.
        let at = if i < 700 {
            long_ago + time::Duration::seconds(i as i64)
        } else {
            now
        };
        r.time = tollbu_audit::Record::timestamp(at);
        log.append_blocking(r).unwrap();
    }
    log.shutdown().unwrap();
    let bucket = subject_bucket(dir.path(), &keys, 3);
    let before = std::fs::metadata(&bucket).unwrap().len();
    let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 86_400);
    let pruned = tollbu_audit::prune_closed_log(dir.path(), cutoff, &keys.signer()).unwrap();
    assert!(pruned.first_retained > 600, "{pruned:?}");
    assert!(std::fs::metadata(&bucket).unwrap().len() < before);

    let kept = (pruned.first_retained..800).filter(|i| i % 7 == 3).count();
    let r = query_about(dir.path(), &keys, 3);
    assert!(r.ok, "{}", r.text);
    assert!(
        r.text.contains(&format!("\n{kept} records\n")),
        "{}",
        r.text
    );

    cut_entry(&bucket, 5);
    assert_refused_naming(&query_about(dir.path(), &keys, 3), &bucket);
}

/// An index written before the counts were recorded (its watermark holds one line) is answered
/// from as before, and counted at the next open, after which damage is found.
#[test]
fn an_index_from_before_the_counts_is_counted_at_its_next_open() {
    let keys = Keys::new();
    let (dir, _) = closed_log(&keys, 700);
    let watermark = dir.path().join("index").join("watermark");
    let text = std::fs::read_to_string(&watermark).unwrap();
    let first_line = text.lines().next().unwrap().to_owned();
    std::fs::write(&watermark, format!("{first_line}\n")).unwrap();
    assert_complete_about(dir.path(), &keys, 3, 700);

    let (log, report) = AuditLog::open(keys.config(dir.path())).unwrap();
    assert!(report.is_clean(), "{report:?}");
    log.shutdown().unwrap();
    assert_eq!(std::fs::read_to_string(&watermark).unwrap(), text);
    assert_complete_about(dir.path(), &keys, 3, 700);
    let bucket = subject_bucket(dir.path(), &keys, 3);
    cut_entry(&bucket, 0);
    assert_refused_naming(&query_about(dir.path(), &keys, 3), &bucket);
}
