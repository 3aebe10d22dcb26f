//! Open, append, prove, checkpoint, restart, rotate, prune, query.

use std::sync::Arc;

use tollbu_audit::tooling::{self, Query};
use tollbu_audit::tree::{verify_consistency, verify_inclusion};
use tollbu_audit::{
    AuditConfig, AuditError, AuditLog, Decision, Durability, MAX_BATCH_RECORDS,
    MAX_SEGMENTS_PER_PRUNE, NoteVerifier, Pseudonymiser, Record, open_checkpoint,
};

use crate::support::{
    Keys, ORIGIN, assert_fails_saying, closed_log, copy_tree, person, record, runtime,
};

#[test]
fn appends_are_proven_and_a_restart_continues_the_same_log() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let ps = keys.pseudonymiser();
    let mut cfg = keys.config(dir.path());
    cfg.checkpoint_every = 100;
    let (log, report) = AuditLog::open(cfg.clone()).unwrap();
    assert_eq!(report.records, 0);

    // Concurrent appends get distinct indexes 0..300.
    let rt = runtime();
    let mut seqs: Vec<u64> = rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..30u64 {
            let log = log.clone();
            let ps = ps.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                for k in 0..10 {
                    out.push(log.append(record(t * 10 + k, &ps)).await.unwrap());
                }
                out
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    seqs.sort_unstable();
    assert_eq!(seqs, (0..300).collect::<Vec<_>>());
    assert_eq!(log.stats().records, 300);

    log.checkpoint_now().unwrap();
    let note = log.latest_checkpoint().unwrap();
    let verifier = NoteVerifier::parse(&log.verifier_key()).unwrap();
    let cp = open_checkpoint(&note, &verifier).unwrap();
    assert_eq!((cp.origin.as_str(), cp.size), (ORIGIN, 300));
    for i in [0u64, 1, 150, 255, 256, 299] {
        let p = log.inclusion_proof(i, 300).unwrap();
        assert!(
            verify_inclusion(&p.leaf_hash, i, 300, &p.path, &cp.root),
            "leaf {i}"
        );
    }
    assert!(log.inclusion_proof(300, 300).is_err());
    assert!(log.inclusion_proof(0, 301).is_err());
    let old_note_path = keys.dir().join("kept-300.note");
    std::fs::write(&old_note_path, &note).unwrap();
    log.shutdown().unwrap();
    log.shutdown().unwrap();
    assert!(
        log.append_blocking(record(0, &ps)).is_err(),
        "closed log must refuse appends"
    );

    // Restart: same origin and key, the tree grows, the new checkpoint extends the old one.
    let (log, report) = AuditLog::open(cfg.clone()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!((report.records, report.checkpoint_size), (300, Some(300)));
    for i in 300..350 {
        assert_eq!(log.append_blocking(record(i, &ps)).unwrap(), i);
    }
    log.shutdown().unwrap();
    let new_cp = open_checkpoint(
        &std::fs::read_to_string(dir.path().join("checkpoint")).unwrap(),
        &verifier,
    )
    .unwrap();
    assert_eq!(new_cp.size, 350);
    let (log, _) = AuditLog::open(cfg.clone()).unwrap();
    let c = log.consistency_proof(300, 350).unwrap();
    assert!(verify_consistency(
        300,
        350,
        &cp.root,
        &new_cp.root,
        &c.path
    ));
    log.shutdown().unwrap();

    let r = tooling::verify(dir.path(), &[old_note_path], Some(&log.verifier_key()));
    assert!(r.ok, "{}", r.text);
    // The offline tools produce the same proofs from tiles on disk.
    let proof: tollbu_audit::InclusionProof =
        serde_json::from_str(&tooling::prove(dir.path(), 123, None).text).unwrap();
    assert!(verify_inclusion(
        &proof.leaf_hash,
        123,
        350,
        &proof.path,
        &new_cp.root
    ));
    let cons: tollbu_audit::ConsistencyProof =
        serde_json::from_str(&tooling::consistency(dir.path(), 300, 350).text).unwrap();
    assert!(verify_consistency(
        300,
        350,
        &cp.root,
        &new_cp.root,
        &cons.path
    ));
    // A tree beyond the last signed checkpoint has no tiles on disk: said as such, not as a
    // corrupt log.
    for report in [
        tooling::prove(dir.path(), 1, Some(351)),
        tooling::consistency(dir.path(), 300, 351),
    ] {
        assert!(!report.ok);
        assert!(
            report.text.contains(
                "tree size 351 is larger than the latest signed checkpoint (350 records)"
            ),
            "{}",
            report.text
        );
    }

    // Another origin for the same directory is refused.
    let mut other = cfg.clone();
    other.origin = "tollbu.example/other".into();
    assert!(AuditLog::open(other).is_err());
}

#[test]
fn rotation_queries_citizen_report_and_retention() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let ps = keys.pseudonymiser();
    let mut cfg = keys.config(dir.path());
    cfg.segment_max_bytes = 16 * 1024;
    cfg.checkpoint_every = 200;
    let (log, _) = AuditLog::open(cfg.clone()).unwrap();
    for i in 0..1_000 {
        log.append_blocking(record(i, &ps)).unwrap();
    }
    // 1,000 records: indexed up to the checkpoint at 1,000; append 10 more that only a tail scan finds.
    for i in 1_000..1_010 {
        log.append_blocking(record(i, &ps)).unwrap();
    }
    let segments = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .count();
    assert!(segments > 10, "expected rotation, got {segments} segments");

    let q = Query {
        subject: Some(person(3)),
        ..Query::default()
    };
    let r = tooling::query(dir.path(), &q, Some(&keys.pseudonym()), true);
    assert!(r.ok, "{}", r.text);
    let lines: Vec<&str> = r.text.lines().collect();
    let want: Vec<u64> = (0..1_010).filter(|i| i % 7 == 3).collect();
    assert_eq!(lines.len(), want.len());
    for (line, i) in lines.iter().zip(&want) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["seq"].as_u64(), Some(*i));
    }
    assert!(
        !r.text.contains(&person(3)),
        "clear subject ids never appear in output"
    );

    let q = Query {
        consumer: Some("0192:910000001".into()),
        decision: Some(Decision::Deny),
        from: Some("2026-03-01T10:00:00.000Z".into()),
        ..Query::default()
    };
    let r = tooling::query(dir.path(), &q, None, true);
    let want = (0..1_010).filter(|i| i % 3 == 1 && i % 5 == 0).count();
    assert_eq!(r.text.lines().count(), want, "{}", r.text);
    // By decision alone (a scan that decodes only records whose bytes hold the decision), and as
    // a table, whose last line counts them.
    for (decision, want) in [(Decision::Deny, 202), (Decision::Allow, 808)] {
        let q = Query {
            decision: Some(decision),
            ..Query::default()
        };
        let r = tooling::query(dir.path(), &q, None, false);
        assert!(r.ok, "{}", r.text);
        let seqs: Vec<u64> = r
            .text
            .lines()
            .filter(|l| l.contains(" consumer="))
            .filter_map(|l| l.split(' ').next()?.parse().ok())
            .collect();
        let expected: Vec<u64> = (0..1_010)
            .filter(|i| (i % 5 == 0) == (decision == Decision::Deny))
            .collect();
        assert_eq!(seqs, expected);
        assert!(
            r.text.contains(&format!("\n{want} records\n")),
            "{}",
            r.text
        );
    }

    let c = tooling::citizen(
        dir.path(),
        &person(3),
        &keys.pseudonym(),
        tooling::Lookup::Index,
    );
    assert!(c.ok);
    assert!(c.text.starts_with(&format!(
        "Requests concerning this person: {}",
        (0..1_010).filter(|i| i % 7 == 3).count()
    )));
    assert!(
        c.text.contains("legal basis:  consent")
            && c.text.contains("why:          loan-application")
    );
    // The command it names for a proof is one that runs (it said `tollbu audit prove 3`).
    assert!(
        c.text.contains(&format!(
            "(provable with `tollbu audit prove {} --index 3`)",
            dir.path().display()
        )),
        "{}",
        c.text
    );

    // Retention drops old segments but keeps their hashes: proofs and verification still work.
    let before = log.inclusion_proof(5, 1_010).unwrap();
    // Retention takes what the latest published checkpoint covers.
    log.checkpoint_now().unwrap();
    let pruned = log.prune_before(600, std::time::SystemTime::now()).unwrap();
    assert!(
        pruned.segments_removed > 0 && pruned.first_retained <= 600,
        "{pruned:?}"
    );
    assert_eq!(log.inclusion_proof(5, 1_010).unwrap(), before);
    log.shutdown().unwrap();
    let v = tooling::verify(dir.path(), &[], None);
    assert!(v.ok, "{}", v.text);
    assert!(v.text.contains("pruned: records 0.."), "{}", v.text);
    let c = tooling::citizen(
        dir.path(),
        &person(3),
        &keys.pseudonym(),
        tooling::Lookup::Index,
    );
    assert!(
        c.text.contains("removed under the retention policy"),
        "{}",
        c.text
    );
    let (log, report) = AuditLog::open(cfg).unwrap();
    assert_eq!(report.records, 1_010);
    log.append_blocking(record(1_010, &ps)).unwrap();
    log.shutdown().unwrap();
    assert!(tooling::verify(dir.path(), &[], None).ok);
    // After a clean shutdown the index covers everything: the indexed answer equals the scan's.
    let watermark = tollbu_audit::index::watermark(dir.path());
    assert_eq!(watermark.seq, 1_011);
    let got = seqs_about(dir.path(), &person(3), &keys);
    let want: Vec<u64> = (pruned.first_retained..1_011)
        .filter(|i| i % 7 == 3)
        .collect();
    assert_eq!(got, want);
}

/// A log is pinned to the pseudonym key its subjects were written with: the writer refuses another
/// key (it would split every person's records in two), and a subject search with another key is an
/// error, never "no requests concerning this person".
#[test]
fn a_log_is_searched_and_continued_only_with_its_own_pseudonym_key() {
    let keys = Keys::new();
    let (dir, _) = closed_log(&keys, 4);
    let other_key = keys.dir().join("other-pseudonym.key");
    std::fs::write(&other_key, format!("{}\n", "6b".repeat(32))).unwrap();

    let mut cfg = keys.config(dir.path());
    cfg.pseudonym_key = other_key.clone();
    let refused = AuditLog::open(cfg).map(|_| ()).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("pseudonymised with another key"),
        "{refused}"
    );
    let c = tooling::citizen(dir.path(), &person(3), &other_key, tooling::Lookup::Index);
    assert!(!c.ok);
    assert!(c.text.contains("not the one"), "{}", c.text);
    let q = Query {
        subject: Some(person(3)),
        ..Query::default()
    };
    assert!(!tooling::query(dir.path(), &q, Some(&other_key), true).ok);
    // With its own key the person's request is found, and the log continues.
    let c = tooling::citizen(
        dir.path(),
        &person(3),
        &keys.pseudonym(),
        tooling::Lookup::Index,
    );
    assert!(
        c.ok && c.text.starts_with("Requests concerning this person: 1"),
        "{}",
        c.text
    );
    let (log, _) = AuditLog::open(keys.config(dir.path())).unwrap();
    log.shutdown().unwrap();
}

/// With `verifier-key` deleted, another signing key under the same origin is refused by the
/// checkpoint it cannot have signed, and the refusal pins nothing: `verifier-key` is not
/// rewritten with a key that matches none of the log's checkpoints. The right key pins it again.
#[test]
fn a_refused_open_does_not_pin_the_new_key() {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let keys = Keys::new();
    let (dir, vkey) = closed_log(&keys, 4);
    let pin = dir.path().join("verifier-key");
    std::fs::remove_file(&pin).unwrap();
    let other = keys.dir().join("other-signing.pem");
    let pem = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .unwrap();
    std::fs::write(&other, pem.as_bytes()).unwrap();
    let mut cfg = keys.config(dir.path());
    cfg.signing_key_pem = other;
    let refused = AuditLog::open(cfg).map(|_| ()).unwrap_err();
    assert!(refused.to_string().contains("no signature"), "{refused}");
    assert!(!pin.exists(), "a refused open pinned the new key");

    let (log, _) = AuditLog::open(keys.config(dir.path())).unwrap();
    log.shutdown().unwrap();
    assert_eq!(std::fs::read_to_string(&pin).unwrap(), format!("{vkey}\n"));
}

/// A filter that could only match nothing is refused rather than answered with "no records": a
/// subject that is not an identity or organisation number, a consumer without its scheme, a time
/// that is not RFC 3339, a `from` after `to`. Spaces in an identity number are allowed.
#[test]
fn queries_refuse_filters_that_could_only_match_nothing() {
    let keys = Keys::new();
    let (dir, _) = closed_log(&keys, 10);
    let id = person(3);
    let spaced = format!("{} {}", &id[..6], &id[6..]);
    let plain = tooling::citizen(dir.path(), &id, &keys.pseudonym(), tooling::Lookup::Index);
    let with_space = tooling::citizen(
        dir.path(),
        &spaced,
        &keys.pseudonym(),
        tooling::Lookup::Index,
    );
    assert!(
        plain.ok && plain.text.starts_with("Requests concerning this person: 1"),
        "{}",
        plain.text
    );
    assert_eq!(with_space.text, plain.text);
    let refused = |q: Query, why: &str| {
        let r = tooling::query(dir.path(), &q, Some(&keys.pseudonym()), false);
        assert!(!r.ok, "{q:?} was answered: {}", r.text);
        assert!(r.text.contains(why), "{q:?}: {}", r.text);
    };
    refused(
        Query {
            subject: Some(id[..10].to_owned()),
            ..Query::default()
        },
        "is not a national identity number (11 digits) or an organisation number (9 digits)",
    );
    refused(
        Query {
            consumer: Some("910000001".into()),
            ..Query::default()
        },
        "names no scheme",
    );
    refused(
        Query {
            from: Some("yesterday".into()),
            ..Query::default()
        },
        "from `yesterday` is not an RFC 3339 time",
    );
    refused(
        Query {
            from: Some("2026-03-02T00:00:00Z".into()),
            to: Some("2026-03-01T00:00:00Z".into()),
            ..Query::default()
        },
        "`from` must be before `to`",
    );
}

/// The index is derived from the records, so it can be rebuilt: by `reindex_closed_log` after
/// buckets were lost (queries by subject then missed records, with nothing to say so), and by the
/// writer on open when the whole index is gone.
#[test]
fn a_lost_index_is_rebuilt_and_queries_find_every_record_again() {
    let keys = Keys::new();
    let (dir, _) = closed_log(&keys, 1_010);
    let want: Vec<u64> = (0..1_010).filter(|i| i % 7 == 3).collect();
    assert_eq!(seqs_about(dir.path(), &person(3), &keys), want);

    assert!(tooling::verify(dir.path(), &[], None).ok);

    std::fs::remove_dir_all(dir.path().join("index").join("subject")).unwrap();
    // The query refuses to answer from what is left rather than miss records.
    let q = Query {
        subject: Some(person(3)),
        ..Query::default()
    };
    assert_fails_saying(
        &tooling::query(dir.path(), &q, Some(&keys.pseudonym()), true),
        "the audit log index is damaged",
    );
    // The tree says nothing about the index; verify compares it with the records.
    let v = tooling::verify(dir.path(), &[], None);
    // (The subjects of these records fall into 7 of the 256 subject buckets.)
    assert_fails_saying(
        &v,
        "the index does not match the records in 7 of its buckets (first `index/subject/",
    );
    let rebuilt = tollbu_audit::reindex_closed_log(dir.path()).unwrap();
    assert_eq!(rebuilt.records, 1_010);
    assert_eq!(seqs_about(dir.path(), &person(3), &keys), want);
    assert!(tooling::verify(dir.path(), &[], None).ok);

    // An entry rewritten in place (same length, another record number) is found too.
    let bucket = std::fs::read_dir(dir.path().join("index").join("consumer"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::metadata(p).unwrap().len() > 0)
        .unwrap();
    let mut bytes = std::fs::read(&bucket).unwrap();
    bytes[16] ^= 0x01;
    std::fs::write(&bucket, &bytes).unwrap();
    let v = tooling::verify(dir.path(), &[], None);
    assert!(
        !v.ok
            && v.text
                .contains("the index does not match the records in 1 of its buckets"),
        "{}",
        v.text
    );
    tollbu_audit::reindex_closed_log(dir.path()).unwrap();
    assert_eq!(tollbu_audit::index::watermark(dir.path()).seq, 1_010);

    // A watermark ahead of the log (another log's index, say) must not make records count twice,
    // and verify says the index does not belong to these records.
    let watermark = dir.path().join("index").join("watermark");
    let kept = std::fs::read(&watermark).unwrap();
    std::fs::write(&watermark, "999999 0 0\n").unwrap();
    assert_eq!(seqs_about(dir.path(), &person(3), &keys), want);
    let v = tooling::verify(dir.path(), &[], None);
    assert!(
        !v.ok
            && v.text.contains(
                "`index/watermark` says 999999 records are indexed but the log holds 1010"
            ),
        "{}",
        v.text
    );
    std::fs::write(&watermark, kept).unwrap();

    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    let (log, report) = AuditLog::open(keys.config(dir.path())).unwrap();
    assert_eq!(report.reindexed, 1_010);
    log.shutdown().unwrap();
    assert_eq!(seqs_about(dir.path(), &person(3), &keys), want);
}

/// The minute after the start at which record `i` of [`four_days_a_record_a_minute`] is timed:
/// every 97th five hours early (a request that started long before it was committed, as far as
/// the reading allows), the others in order.
fn minute_of(i: u64) -> i64 {
    if i % 97 == 50 {
        i as i64 - 300
    } else {
        i as i64
    }
}

/// A closed log of 6,000 records in small segments, one a minute (see [`minute_of`]) over about
/// four days from the returned start; and how many records it holds.
fn four_days_a_record_a_minute() -> (SegmentedLog, time::OffsetDateTime, u64) {
    let (t, log) = SegmentedLog::open(16 * 1024);
    let start = time::macros::datetime!(2026-03-01 00:00:00 UTC);
    let n = 6_000u64;
    t.append_timed(&log, n, |i| {
        Record::timestamp(start + time::Duration::minutes(minute_of(i)))
    });
    log.shutdown().unwrap();
    (t, start, n)
}

/// A query for a time window over the whole log reads only the segments that can hold it, and
/// still finds every record timed inside it, also ones committed hours out of order: the answer
/// equals a filter over all records, and damage in a segment the window cannot reach no longer
/// stops it (while a query over everything still reports that damage).
#[test]
fn a_time_window_query_reads_only_the_segments_that_can_hold_it() {
    let (t, start, n) = four_days_a_record_a_minute();
    let at = |m: i64| Record::timestamp(start + time::Duration::minutes(m));
    let segments = t.segments();
    assert!(segments.len() > 40, "{} segments", segments.len());

    let window = |from: i64, to: i64| {
        let q = Query {
            from: Some(at(from)),
            to: Some(at(to)),
            ..Query::default()
        };
        let r = tooling::query(t.dir.path(), &q, None, true);
        assert!(r.ok, "{}", r.text);
        let want = (0..n)
            .filter(|&i| (from..to).contains(&minute_of(i)))
            .count();
        assert_eq!(r.text.lines().count(), want, "{from}..{to}");
    };
    for (from, to) in [
        (0, 60),
        (1_000, 1_100),
        (2_980, 3_020),
        (4_000, 4_500),
        (5_900, 7_000),
    ] {
        window(from, to);
    }
    // The widest bounds there are: everything, and no panic at the edges of the calendar; a
    // bound whose UTC form lies past year 9999 is refused.
    let all_time = Query {
        from: Some("0000-01-01T00:00:00Z".into()),
        to: Some("9999-12-31T23:59:59.999Z".into()),
        ..Query::default()
    };
    let r = tooling::query(t.dir.path(), &all_time, None, true);
    assert_eq!(r.text.lines().count(), n as usize);
    let beyond = Query {
        to: Some("9999-12-31T23:59:59-23:59".into()),
        ..Query::default()
    };
    assert_fails_saying(
        &tooling::query(t.dir.path(), &beyond, None, true),
        "is not an RFC 3339 time",
    );

    // Damage a record in the first segment: a query over everything reports it; one for the last
    // day never reads that segment.
    let first = &segments[0];
    let mut bytes = std::fs::read(first).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(first, bytes).unwrap();
    let all = tooling::query(t.dir.path(), &Query::default(), None, true);
    assert_fails_saying(&all, "cannot be read");
    window(4_560, 6_000);
}

/// The console's record pages and charts of an earlier time window skip the segments written after
/// it (as `tollbu audit query` does), and still show every record timed inside it, also ones
/// committed hours out of order.
#[test]
fn console_pages_and_charts_of_an_earlier_window_skip_the_later_segments() {
    use tollbu_audit::tooling::browse::{self, Filter};
    let (t, start, n) = four_days_a_record_a_minute();
    let minute = |m: i64| start + time::Duration::minutes(m);
    for (from, to) in [(1_000, 1_100), (2_000, 2_500), (5_900, 6_000)] {
        let want: Vec<u64> = (0..n)
            .rev()
            .filter(|&i| (from..to).contains(&minute_of(i)))
            .collect();
        let filter = Filter {
            from: Some(minute(from)),
            to: Some(minute(to)),
            ..Filter::default()
        };
        let page = browse::page(t.dir.path(), &filter, None, 10_000, u64::MAX).unwrap();
        let seqs: Vec<u64> = page.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, want, "{from}..{to}");
        let chart =
            browse::histogram(t.dir.path(), minute(from), minute(to), 60, u64::MAX).unwrap();
        assert_eq!(
            chart.buckets.iter().map(|b| b.total).sum::<u64>(),
            want.len() as u64,
            "{from}..{to}"
        );
        // Read: the window's segments and a day's slack either side, not the four days.
        if from < 3_000 {
            let reach = (to + 24 * 60 + 200 - (from - 24 * 60).max(0)) as u64;
            assert!(page.scanned < reach, "{from}..{to}: {} read", page.scanned);
            assert!(
                chart.scanned < reach,
                "{from}..{to}: {} read",
                chart.scanned
            );
        }
    }
}

/// Retention by age keeps every record at or after the cutoff, including one timed late inside an
/// otherwise old segment, and never the active segment or records no checkpoint covers yet.
#[test]
fn retention_by_age_keeps_every_record_at_or_after_the_cutoff() {
    let (t, log) = SegmentedLog::open(16 * 1024);
    let dir = &t.dir;
    let start = time::macros::datetime!(2026-03-01 00:00:00 UTC);
    let at = |seconds: i64| Record::timestamp(start + time::Duration::seconds(seconds));
    // Record i is timed `i` seconds after `start`, except record 300, timed after every other.
    let time_of = |i: u64| if i == 300 { 5_000 } else { i as i64 };
    t.append_timed(&log, 1_200, |i| at(time_of(i)));
    let segments_before = t.segments().len();
    assert!(segments_before > 10, "{segments_before} segments");

    log.checkpoint_now().unwrap();
    let cutoff = std::time::SystemTime::from(start + time::Duration::seconds(600));
    let report = log.prune_older_than(cutoff).unwrap();
    assert!(report.segments_removed > 0, "{report:?}");
    // The segment holding record 300 stays whole, and with it everything after.
    assert!(report.first_retained <= 300, "{report:?}");
    assert_eq!(
        t.segments().len(),
        segments_before - report.segments_removed
    );
    // Every record timed at or after the cutoff is still there to read.
    let q = Query {
        from: Some(at(600)),
        ..Query::default()
    };
    let r = tooling::query(dir.path(), &q, None, true);
    assert!(r.ok, "{}", r.text);
    let want = (0..1_200u64).filter(|&i| time_of(i) >= 600).count();
    assert_eq!(r.text.lines().count(), want, "{}", r.text);
    // A second sweep with the same cutoff removes nothing more.
    let again = log.prune_older_than(cutoff).unwrap();
    assert_eq!(
        (again.segments_removed, again.first_retained),
        (0, report.first_retained)
    );

    // A cutoff after every record: the active segment and the records after the last full
    // level-0 tile (1,200 = 4 × 256 + 176) stay.
    let late = std::time::SystemTime::from(start + time::Duration::days(1));
    let all = log.prune_older_than(late).unwrap();
    assert!(all.first_retained <= 1_024, "{all:?}");
    assert!(!t.segments().is_empty());
    // The index thread compacts the buckets one by one between its other jobs and records a
    // finished pass in `index/compacted`.
    let compacted = dir.path().join("index").join("compacted");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&compacted)
        .map_or(true, |t| t.trim() != all.first_retained.to_string())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no compaction pass finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    log.shutdown().unwrap();
    // The index no longer holds entries of removed records, yet still finds the kept ones.
    let lowest = t.indexed_seqs().into_iter().min();
    assert!(lowest >= Some(all.first_retained), "{lowest:?}");
    let q = Query {
        subject: Some(person(3)),
        ..Query::default()
    };
    let about = tooling::query(dir.path(), &q, Some(&t.keys.pseudonym()), false);
    assert!(about.ok, "{}", about.text);
    let want = (all.first_retained..1_200).filter(|i| i % 7 == 3).count();
    assert!(
        about.text.contains(&format!("\n{want} records\n")),
        "{}",
        about.text
    );
    assert!(
        about.text.contains(&format!(
            "Records 0..{} (before {}) were removed under the retention policy",
            all.first_retained,
            at(time_of(all.first_retained))
        )),
        "{}",
        about.text
    );
    let v = tooling::verify(dir.path(), &[], None);
    assert!(v.ok, "{}", v.text);
    // With the date of the oldest record kept, and the signed statement's cutoff.
    let first = all.first_retained;
    let dated = format!(
        "pruned: records 0..{first} kept as hashes only; the oldest record kept, #{first}, is from {}\n",
        at(time_of(first))
    );
    assert!(v.text.contains(&dated), "{}", v.text);
    let vouched = format!(
        "retention statement: records below {first} removed by retention (the latest sweep removed records older than {}), signed at ",
        Record::timestamp(start + time::Duration::days(1))
    );
    assert!(v.text.contains(&vouched), "{}", v.text);
    assert!(v.text.contains(&format!("by `{ORIGIN}`\n")), "{}", v.text);
}

/// Retention keeps a removed prefix's leaf hashes, so the tree verifies without the records; what
/// tells retention apart from a prefix deleted by hand (with a `pruned` marker written to match)
/// is the retention statement the sweep signs first. Without one, with one that covers less than
/// the marker, or one signed by a key nobody trusts for it, `verify` fails at the first record it
/// does not vouch for; a key passed as trusted (a retired log swept by its successor) is accepted.
#[test]
fn a_pruned_prefix_verifies_only_with_a_signed_retention_statement_covering_it() {
    use ed25519_dalek::SigningKey;
    use tollbu_audit::{CheckpointSigner, RetentionStatement};

    let (t, log) = SegmentedLog::open(16 * 1024);
    let dir = t.dir.path();
    let start = time::macros::datetime!(2026-03-01 00:00:00 UTC);
    t.append_timed(&log, 1_200, |i| {
        Record::timestamp(start + time::Duration::seconds(i as i64))
    });
    log.checkpoint_now().unwrap();
    let cutoff = start + time::Duration::seconds(500);
    let report = log
        .prune_older_than(std::time::SystemTime::from(cutoff))
        .unwrap();
    log.shutdown().unwrap();
    let first = report.first_retained;
    assert!(first > 0 && first <= 500, "{report:?}");
    let statement_file = dir.join("retention");
    let genuine = std::fs::read_to_string(&statement_file).unwrap();
    t.assert_verifies(1_200);
    // The progress counter a terminal display reads ends at every record, pruned ones included.
    let read = std::sync::atomic::AtomicU64::new(0);
    let v = tooling::verify_with_options(
        dir,
        &tooling::VerifyOptions {
            progress: Some(&read),
            ..tooling::VerifyOptions::default()
        },
    );
    assert!(v.ok, "{}", v.text);
    assert_eq!(read.into_inner(), 1_200);

    // The statement deleted: the marker alone vouches for nothing.
    std::fs::remove_file(&statement_file).unwrap();
    let v = tooling::verify(dir, &[], None);
    assert_fails_saying(&v, "FIRST bad record index: 0\n");
    assert_fails_saying(&v, "no signed retention statement");

    // More records deleted by hand, the marker moved past what the statement covers.
    std::fs::write(&statement_file, &genuine).unwrap();
    let next = t
        .segments()
        .into_iter()
        .nth(1)
        .map(|p| {
            p.file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .unwrap();
    std::fs::remove_file(t.segment(first)).unwrap();
    std::fs::write(dir.join("pruned"), format!("{next}\n")).unwrap();
    let v = tooling::verify(dir, &[], None);
    assert_fails_saying(&v, &format!("FIRST bad record index: {first}\n"));
    assert_fails_saying(
        &v,
        &format!(
            "records {first}..{next} are gone beyond what the signed retention statement covers"
        ),
    );

    // A statement covering that far, signed by a key of another name: refused naming it, accepted
    // once the caller trusts that key for retention statements.
    let other = CheckpointSigner::from_key(
        SigningKey::from_bytes(&[9u8; 32]),
        "tollbu.example/test/successor",
    )
    .unwrap();
    let widened = RetentionStatement::new(ORIGIN, next, cutoff).sign(&other);
    std::fs::write(&statement_file, &widened).unwrap();
    let v = tooling::verify(dir, &[], None);
    assert_fails_saying(&v, "FIRST bad record index: 0\n");
    assert_fails_saying(&v, "is signed by `tollbu.example/test/successor` (key id");
    assert_fails_saying(&v, "--retention-key");
    let v = tooling::verify_with_options(
        dir,
        &tooling::VerifyOptions {
            retention_keys: &[other.verifier_key()],
            ..tooling::VerifyOptions::default()
        },
    );
    assert!(v.ok, "{}", v.text);
    assert!(
        v.text.contains("by `tollbu.example/test/successor`\n"),
        "{}",
        v.text
    );

    // A trusted key's statement about another log vouches for nothing here.
    let elsewhere = RetentionStatement::new("tollbu.example/test/replica-9", next, cutoff);
    std::fs::write(&statement_file, elsewhere.sign(&other)).unwrap();
    let v = tooling::verify_with_options(
        dir,
        &tooling::VerifyOptions {
            retention_keys: &[other.verifier_key()],
            ..tooling::VerifyOptions::default()
        },
    );
    assert_fails_saying(&v, "is about the log `tollbu.example/test/replica-9`");
}

/// A backlog far older than the cutoff (retention turned on for a long-kept log) is judged by the
/// first record of each following segment, not read through: a damaged frame inside an old segment
/// does not stop its removal. The segments are deleted off the writer thread, and what an
/// interrupted sweep left behind is deleted too.
#[test]
fn retention_of_an_old_backlog_reads_only_where_each_segment_starts() {
    let (t, log) = SegmentedLog::open(16 * 1024);
    let dir = &t.dir;
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    t.append_timed(&log, 1_100, |i| {
        Record::timestamp(long_ago + time::Duration::seconds(i as i64))
    });
    let segments = t.segments();
    // Damage a record in the middle of an early segment: reading it through would fail, while
    // where it starts (all the backlog shortcut reads) stays readable. Segments differ in length
    // (a growing first segment gives way to a spare as soon as one is ready), so the segment is
    // chosen by its frames, not by its place or its size.
    let (damaged, middle) = segments[1..segments.len() / 2]
        .iter()
        .find_map(|path| {
            let mut reader = tollbu_audit::segment::FrameReader::open(path).unwrap();
            let mut offsets = Vec::new();
            while let tollbu_audit::segment::FrameRead::Frame { offset, .. } =
                reader.next_frame().unwrap()
            {
                offsets.push(offset);
            }
            (offsets.len() >= 3).then(|| (path.clone(), offsets[offsets.len() / 2] + 20))
        })
        .expect("an early segment of three records or more");
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[middle as usize] ^= 0x20;
    std::fs::write(&damaged, &bytes).unwrap();
    // What a sweep interrupted by a crash leaves: a segment renamed out of the log, half shrunk.
    let leftover = dir
        .path()
        .join("segments")
        .join("00000000000000000000.seg.deleting");
    std::fs::write(&leftover, vec![7u8; 5 << 20]).unwrap();
    log.checkpoint_now().unwrap();

    // One call removes at most MAX_SEGMENTS_PER_PRUNE segments and says when more are due.
    let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
    let first = log.prune_older_than(cutoff).unwrap();
    assert_eq!(
        (first.segments_removed, first.more_due),
        (MAX_SEGMENTS_PER_PRUNE, true),
        "{first:?}"
    );
    let report = log.prune_older_than(cutoff).unwrap();
    assert!(
        report.segments_removed > 0 && !report.more_due,
        "{report:?}"
    );
    assert!(report.first_retained > first.first_retained, "{report:?}");
    assert!(!damaged.exists(), "the damaged old segment is removed too");
    assert!(
        !leftover.exists(),
        "an interrupted sweep's leftover is finished"
    );
    let names: Vec<String> = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.ends_with(".deleting")), "{names:?}");
    // Up to the last full tile the checkpoint covers (1,100 = 4 × 256 + 76).
    assert!(report.first_retained <= 1_024, "{report:?}");
    log.shutdown().unwrap();
}

/// Retention on a closed log (`tollbu audit prune`): refused while the log is open; afterwards
/// the old segments go, the whole index is compacted at once, and the log verifies and reopens.
/// (The last records are recent, so the last segment stays: see
/// `a_retired_log_whose_records_are_all_due_keeps_no_segment` for a log whose records all go.)
#[test]
fn retention_on_a_closed_log_prunes_and_compacts_the_index() {
    let (t, log) = SegmentedLog::open(16 * 1024);
    let dir = &t.dir;
    let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(400);
    let yesterday = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    t.append_timed(&log, 800, |i| {
        Record::timestamp(if i < 795 {
            long_ago + time::Duration::seconds(i as i64)
        } else {
            yesterday
        })
    });
    let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 86_400);
    assert!(matches!(
        tollbu_audit::prune_closed_log(dir.path(), cutoff, &t.keys.signer()),
        Err(AuditError::Locked(_))
    ));
    log.shutdown().unwrap();

    // In steps of two segments, as a gateway sweeps a retired log: the index is compacted once
    // nothing more is due, and a step with nothing to remove changes nothing.
    let mut steps = 0;
    let report = loop {
        let step = tollbu_audit::prune_closed_log_in_steps(dir.path(), cutoff, 2, &t.keys.signer())
            .unwrap();
        steps += 1;
        assert!(step.segments_removed <= 2, "{step:?}");
        let compacted = dir.path().join("index").join("compacted").exists();
        assert_eq!(compacted, !step.more_due, "{step:?}");
        if !step.more_due {
            break step;
        }
    };
    assert!(steps > 2, "{steps} steps");
    let again = tollbu_audit::prune_closed_log(dir.path(), cutoff, &t.keys.signer()).unwrap();
    assert_eq!(
        (again.segments_removed, again.first_retained),
        (0, report.first_retained)
    );
    // Everything the final checkpoint (800) covers in full tiles: 3 × 256 = 768.
    assert!(
        report.first_retained <= 768 && report.first_retained > 600,
        "{report:?}"
    );
    let compacted = std::fs::read_to_string(dir.path().join("index").join("compacted")).unwrap();
    assert_eq!(compacted.trim(), report.first_retained.to_string());
    let lowest = t.indexed_seqs().into_iter().min();
    assert!(lowest >= Some(report.first_retained), "{lowest:?}");
    let v = tooling::verify(dir.path(), &[], None);
    assert!(v.ok, "{}", v.text);
    let (log, opened) = AuditLog::open(t.cfg.clone()).unwrap();
    assert_eq!(opened.records, 800);
    log.append_blocking(record(800, &t.ps)).unwrap();
    log.shutdown().unwrap();
    assert!(tooling::verify(dir.path(), &[], None).ok);
}

/// A retired log (closed for good after a key rotation) whose records are all older than the
/// cutoff keeps no segment: its last one is nobody's to write, so it goes too, and every record
/// outlives its retention period by no more than a sweep interval. The tiles and checkpoints
/// stay, so the log still verifies (naming the pruned records), proofs are still served, queries
/// and the citizen report answer that the records were removed, and the log reopens where it
/// ended. While any record in it is not yet due, the last segment stays whole.
#[test]
fn a_retired_log_whose_records_are_all_due_keeps_no_segment() {
    // One segment (300 records, not a multiple of a tile), and many (16 KiB segments, 800).
    for (n, segment_max_bytes) in [(300u64, 64u64 << 20), (800, 16 * 1024)] {
        let (t, log) = SegmentedLog::open(segment_max_bytes);
        let dir = t.dir.path();
        let long_ago = time::OffsetDateTime::now_utc() - time::Duration::days(400);
        t.append_timed(&log, n, |i| {
            Record::timestamp(long_ago + time::Duration::seconds(i as i64))
        });
        log.shutdown().unwrap();
        let segments = t.segments().len();
        let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 86_400);

        // The newest record not yet due (stored times are cut to the millisecond): nothing of
        // the last segment goes.
        let not_yet = std::time::SystemTime::from(
            long_ago + time::Duration::milliseconds(n as i64 * 1_000 - 1_500),
        );
        let report = tollbu_audit::prune_closed_log(dir, not_yet, &t.keys.signer()).unwrap();
        assert!(!t.segments().is_empty(), "{n}: {report:?}");
        assert!(report.first_retained < n, "{n}: {report:?}");

        let report =
            tollbu_audit::prune_closed_log_in_steps(dir, cutoff, 64, &t.keys.signer()).unwrap();
        assert_eq!(
            (report.first_retained, report.more_due),
            (n, false),
            "{n} records in {segments} segments: {report:?}"
        );
        assert!(t.segments().is_empty(), "{n}: {:?}", t.segments());
        assert_eq!(t.indexed_seqs(), Vec::<u64>::new(), "{n}");
        let again = tollbu_audit::prune_closed_log(dir, cutoff, &t.keys.signer()).unwrap();
        assert_eq!((again.segments_removed, again.first_retained), (0, n));

        let v = tooling::verify(dir, &[], None);
        assert!(v.ok, "{n}: {}", v.text);
        assert!(
            v.text
                .contains(&format!("pruned: records 0..{n} kept as hashes only")),
            "{}",
            v.text
        );
        assert!(v.text.contains(&format!("records: {n}\n")), "{}", v.text);
        let proof = tooling::prove(dir, n - 1, None);
        assert!(proof.ok, "{}", proof.text);
        let q = Query {
            subject: Some(person(3)),
            ..Query::default()
        };
        let about = tooling::query(dir, &q, Some(&t.keys.pseudonym()), false);
        assert!(about.ok, "{}", about.text);
        assert!(
            about.text.contains(&format!(
                "Records 0..{n} were removed under the retention policy"
            )),
            "{}",
            about.text
        );
        let citizen =
            tooling::citizen(dir, &person(3), &t.keys.pseudonym(), tooling::Lookup::Index);
        assert!(citizen.ok, "{}", citizen.text);
        assert!(
            citizen.text.contains("Requests concerning this person: 0"),
            "{}",
            citizen.text
        );

        // Opened again, the log goes on where it ended.
        let (log, opened) = AuditLog::open(t.cfg.clone()).unwrap();
        assert_eq!(opened.records, n);
        assert_eq!(log.append_blocking(record(n, &t.ps)).unwrap(), n);
        log.shutdown().unwrap();
        let v = tooling::verify(dir, &[], None);
        assert!(v.ok, "{}", v.text);
        assert!(
            v.text.contains(&format!("records: {}\n", n + 1)),
            "{}",
            v.text
        );
    }
}

#[test]
fn relaxed_durability_still_signs_only_synced_records() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let ps = keys.pseudonymiser();
    let mut cfg = keys.config(dir.path());
    cfg.durability = Durability::Relaxed {
        fsync_interval: std::time::Duration::from_millis(5),
    };
    let (log, _) = AuditLog::open(cfg).unwrap();
    let log = Arc::new(log);
    for i in 0..500 {
        assert_eq!(log.append_blocking(record(i, &ps)).unwrap(), i);
    }
    log.shutdown().unwrap();
    let r = tooling::verify(dir.path(), &[], None);
    assert!(r.ok, "{}", r.text);
    assert!(r.text.contains("records: 500"));
}

#[test]
fn clear_text_subjects_are_refused() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(keys.config(dir.path())).unwrap();
    let mut r = record(0, &keys.pseudonymiser());
    r.subject = Some(person(1));
    assert!(matches!(
        log.append_blocking(r),
        Err(tollbu_audit::AuditError::InvalidRecord(_))
    ));
    assert_eq!(
        log.pseudonymise(&person(1)),
        keys.pseudonymiser().pseudonym(&person(1))
    );
    assert_eq!(log.stats().records, 0);
    log.shutdown().unwrap();
}

#[test]
fn a_torn_tail_is_cut_and_reported() {
    use std::io::Write;
    let (keys, dir, ps) = closed_log_with(10);
    // Half of a frame, as a crash in the middle of a write leaves it; and a torn history entry.
    let mut half = Vec::new();
    tollbu_audit::segment::frame(
        &tollbu_audit::record::encode(10, &record(10, &ps)).unwrap(),
        &mut half,
    );
    half.truncate(half.len() / 2);
    let seg = dir
        .path()
        .join("segments")
        .join(tollbu_audit::segment::segment_name(0));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&half)
        .unwrap();
    let history = dir.path().join("checkpoints.log");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&history)
        .unwrap()
        .write_all(&[9, 0, 0])
        .unwrap();

    let (log, report) = AuditLog::open(keys.config(dir.path())).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.records, 10);
    assert_eq!(report.truncated_bytes, half.len() as u64);
    assert!(
        report
            .truncated_at
            .as_ref()
            .unwrap()
            .2
            .contains("short frame"),
        "{report:?}"
    );
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("torn checkpoint history")),
        "{report:?}"
    );
    assert_eq!(log.append_blocking(record(10, &ps)).unwrap(), 10);
    log.shutdown().unwrap();
    let r = tooling::verify(dir.path(), &[], None);
    assert!(r.ok, "{}", r.text);
}

/// A torn frame in an active segment that ends in zeros (written ahead of the appends): the
/// report counts the bytes that held data, not the zeros cut with them, and is not clean.
#[test]
fn a_cut_reports_the_bytes_that_held_data_not_the_zero_tail() {
    let (keys, dir, ps) = closed_log_with(10);
    let seg = seg_of(&dir);
    let frames_end = std::fs::metadata(&seg).unwrap().len();
    let mut torn = Vec::new();
    tollbu_audit::segment::frame(
        &tollbu_audit::record::encode(10, &record(10, &ps)).unwrap(),
        &mut torn,
    );
    torn.truncate(35);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.extend_from_slice(&torn);
    bytes.resize(bytes.len() + 3 * 65_536 + 123, 0);
    std::fs::write(&seg, &bytes).unwrap();

    let (log, report) = AuditLog::open(keys.config(dir.path())).unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.truncated_bytes, 35, "{report:?}");
    assert_eq!(report.truncated_at.as_ref().unwrap().1, frames_end);
    log.shutdown().unwrap();

    // A zero header with a stray byte deep in the zeros behind it: counted up to that byte.
    let (keys, dir, _) = closed_log_with(10);
    let mut bytes = std::fs::read(seg_of(&dir)).unwrap();
    let frames_end = bytes.len() as u64;
    bytes.resize(bytes.len() + 200_000, 0);
    bytes[frames_end as usize + 100_000] = 7;
    bytes.resize(bytes.len() + 200_000, 0);
    std::fs::write(seg_of(&dir), &bytes).unwrap();
    let (log, report) = AuditLog::open(keys.config(dir.path())).unwrap();
    assert_eq!(report.truncated_bytes, 100_001, "{report:?}");
    log.shutdown().unwrap();
}

fn seg_of(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path()
        .join("segments")
        .join(tollbu_audit::segment::segment_name(0))
}

#[test]
fn a_second_writer_on_the_same_directory_is_refused_until_the_first_shuts_down() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = || keys.config(dir.path());
    let (first, _) = AuditLog::open(cfg()).unwrap();
    match AuditLog::open(cfg()) {
        Err(tollbu_audit::AuditError::Locked(_)) => {}
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("two writers on one log directory"),
    }
    first.shutdown().unwrap();
    let (second, _) = AuditLog::open(cfg()).unwrap();
    second.shutdown().unwrap();
}

#[test]
fn a_batch_gets_consecutive_indexes_and_is_written_whole_or_not_at_all() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let ps = keys.pseudonymiser();
    let cfg = keys.config(dir.path());
    let (log, _) = AuditLog::open(cfg.clone()).unwrap();
    assert_eq!(log.append_blocking(record(0, &ps)).unwrap(), 0);
    let batch: Vec<_> = (1..=1_000).map(|i| record(i, &ps)).collect();
    assert_eq!(log.append_batch_blocking(batch.clone()).unwrap(), 1..1_001);
    assert_eq!(log.append_blocking(record(1_001, &ps)).unwrap(), 1_001);

    // One bad record refuses the whole batch, naming it; nothing of it is written.
    let mut bad = batch.clone();
    bad[500].subject = Some("01017012345".into());
    let err = log.append_batch_blocking(bad).unwrap_err();
    assert!(err.to_string().contains("record 500"), "{err}");
    let too_many: Vec<_> = (0..=MAX_BATCH_RECORDS as u64)
        .map(|i| record(i, &ps))
        .collect();
    assert!(matches!(
        log.append_batch_blocking(too_many),
        Err(AuditError::BadRequest(_))
    ));
    assert_eq!(log.append_batch_blocking(Vec::new()).unwrap(), 1_002..1_002);
    assert_eq!(log.stats().records, 1_002);
    log.shutdown().unwrap();

    let report = tooling::verify(dir.path(), &[], None);
    assert!(report.ok, "{}", report.text);
    let all = tooling::query(dir.path(), &Query::default(), None, true);
    let ids: Vec<String> = all
        .text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"].to_string())
        .collect();
    assert_eq!(ids.len(), 1_002);
    assert_eq!(ids[1], "\"req-1\"");
    assert_eq!(ids[1_000], "\"req-1000\"");
    assert_eq!(ids[1_001], "\"req-1001\"");
    // The batch's records are indexed like single appends.
    let by_subject = tooling::query(
        dir.path(),
        &Query {
            subject: Some(person(3)),
            ..Query::default()
        },
        Some(&keys.pseudonym()),
        true,
    );
    assert_eq!(
        by_subject.text.lines().count(),
        (0..1_002).filter(|i| i % 7 == 3).count()
    );
}

/// A log whose checkpoints only come when asked for (or at shutdown).
fn log_without_due_checkpoints(
    keys: &Keys,
    dir: &std::path::Path,
    durability: Durability,
) -> AuditLog {
    let mut cfg = keys.config(dir);
    cfg.checkpoint_every = u64::MAX;
    cfg.checkpoint_interval = std::time::Duration::from_secs(3600);
    cfg.durability = durability;
    AuditLog::open(cfg).unwrap().0
}

#[test]
fn full_tiles_reach_the_disk_with_the_checkpoint_and_a_live_log_verifies_between_checkpoints() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let ps = keys.pseudonymiser();
    let log = log_without_due_checkpoints(&keys, dir.path(), Durability::Fsync);
    let batch: Vec<_> = (0..600).map(|i| record(i, &ps)).collect();
    assert_eq!(log.append_batch_blocking(batch).unwrap(), 0..600);
    log.checkpoint_now().unwrap();
    let batch: Vec<_> = (600..1_100).map(|i| record(i, &ps)).collect();
    assert_eq!(log.append_batch_blocking(batch).unwrap(), 600..1_100);

    // Tiles 0 and 1 were written with the checkpoint of 600; tiles 2 and 3 (complete at 1,024)
    // wait in memory for the next one, and are served from there meanwhile.
    let tile = |n: u64| dir.path().join(tollbu_audit::tile::tile_path(0, n, 256));
    assert!(tile(1).exists());
    assert!(!tile(3).exists());
    assert_eq!(log.tile(0, 3, 256).unwrap().len(), 256 * 32);
    let p = log.inclusion_proof(900, 1_100).unwrap();
    assert!(verify_inclusion(&p.leaf_hash, 900, 1_100, &p.path, &p.root));

    // An officer verifying the live log now sees a sound log, not "missing tiles".
    let report = tooling::verify(dir.path(), &[], None);
    assert!(report.ok, "{}", report.text);
    assert!(!report.text.contains("missing"), "{}", report.text);

    log.checkpoint_now().unwrap();
    assert!(tile(3).exists());
    log.shutdown().unwrap();
    let report = tooling::verify(dir.path(), &[], None);
    assert!(
        report.ok && !report.text.contains("missing"),
        "{}",
        report.text
    );
}

#[test]
fn with_a_long_checkpoint_cadence_full_tiles_still_reach_the_disk_in_bounded_steps() {
    full_tiles_reach_the_disk_without_checkpoints(Durability::Fsync);
}

#[test]
fn in_relaxed_mode_full_tiles_reach_the_disk_after_the_periodic_fsync() {
    full_tiles_reach_the_disk_without_checkpoints(Durability::Relaxed {
        fsync_interval: std::time::Duration::from_millis(20),
    });
}

fn full_tiles_reach_the_disk_without_checkpoints(durability: Durability) {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let ps = keys.pseudonymiser();
    let log = log_without_due_checkpoints(&keys, dir.path(), durability);
    // 40,000 records make 156 full tiles; no checkpoint is due, yet the writer may hold at most
    // 64 of them (plus one hand-over in flight) in memory.
    for start in (0..40_000u64).step_by(4_000) {
        let batch: Vec<_> = (start..start + 4_000).map(|i| record(i, &ps)).collect();
        log.append_batch_blocking(batch).unwrap();
    }
    assert_eq!(log.stats().checkpoint_size, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let written = || {
        (0..156u64)
            .filter(|&n| {
                dir.path()
                    .join(tollbu_audit::tile::tile_path(0, n, 256))
                    .exists()
            })
            .count()
    };
    while written() < 156 - 2 * 64 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        written() >= 156 - 2 * 64,
        "only {} tiles on disk",
        written()
    );
    log.shutdown().unwrap();
    assert_eq!(written(), 156);
    let report = tooling::verify(dir.path(), &[], None);
    assert!(
        report.ok && !report.text.contains("missing"),
        "{}",
        report.text
    );
}

/// A new log whose segments rotate at `segment_max_bytes`, for the spare-segment and retention
/// tests.
struct SegmentedLog {
    keys: Keys,
    dir: tempfile::TempDir,
    ps: Pseudonymiser,
    cfg: AuditConfig,
    seg_dir: std::path::PathBuf,
}

impl SegmentedLog {
    fn open(segment_max_bytes: u64) -> (Self, AuditLog) {
        let keys = Keys::new();
        let dir = tempfile::tempdir().unwrap();
        let ps = keys.pseudonymiser();
        let seg_dir = dir.path().join("segments");
        let mut cfg = keys.config(dir.path());
        cfg.segment_max_bytes = segment_max_bytes;
        let (log, _) = AuditLog::open(cfg.clone()).unwrap();
        let this = Self {
            keys,
            dir,
            ps,
            cfg,
            seg_dir,
        };
        (this, log)
    }

    /// Appends records `0..n`, record `i` timed `time_of(i)` (RFC 3339).
    fn append_timed(&self, log: &AuditLog, n: u64, time_of: impl Fn(u64) -> String) {
        for i in 0..n {
            let mut r = record(i, &self.ps);
            r.time = time_of(i);
            log.append_blocking(r).unwrap();
        }
    }

    /// The record number of every entry in every index bucket (40 bytes: key, seq, segment, offset).
    fn indexed_seqs(&self) -> Vec<u64> {
        let mut seqs = Vec::new();
        for kind in ["subject", "consumer"] {
            for bucket in std::fs::read_dir(self.dir.path().join("index").join(kind)).unwrap() {
                let bytes = std::fs::read(bucket.unwrap().path()).unwrap();
                seqs.extend(
                    bytes
                        .chunks_exact(40)
                        .map(|e| u64::from_le_bytes(e[16..24].try_into().unwrap())),
                );
            }
        }
        seqs
    }

    /// The log's segment files, oldest first.
    fn segments(&self) -> Vec<std::path::PathBuf> {
        let mut segments: Vec<_> = std::fs::read_dir(&self.seg_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segments.sort();
        segments
    }

    fn segment(&self, first_seq: u64) -> std::path::PathBuf {
        self.seg_dir.join(format!("{first_seq:020}.seg"))
    }

    /// `verify` passes and counts `records`.
    fn assert_verifies(&self, records: u64) {
        let v = tooling::verify(self.dir.path(), &[], None);
        assert!(v.ok, "{}", v.text);
        assert!(
            v.text.contains(&format!("records: {records}\n")),
            "{}",
            v.text
        );
    }

    /// Waits for the spare the log asked for to be ready, and returns where it is.
    fn wait_for_spare(&self) -> std::path::PathBuf {
        let spare = self.seg_dir.join("spare.zeroed");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !spare.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "no spare was prepared"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        spare
    }
}

/// Segments after the first start as a spare of zeros prepared while the previous one filled; the
/// appends write over the zeros, a restart keeps the zero tail and goes on after the last frame,
/// and nothing of it is reported as damage or seen by readers.
#[test]
fn later_segments_are_written_over_prepared_zeros_and_a_restart_continues_after_the_frames() {
    let (t, log) = SegmentedLog::open(64 * 1024);
    let (dir, ps, cfg, seg_dir) = (&t.dir, &t.ps, &t.cfg, &t.seg_dir);
    let first = t.segment(0);
    let mut appended = 0u64;
    // Half a segment: the spare is asked for.
    while std::fs::metadata(&first).unwrap().len() < cfg.segment_max_bytes / 2 {
        log.append_blocking(record(appended, ps)).unwrap();
        appended += 1;
    }
    let spare = t.wait_for_spare();
    assert_eq!(
        std::fs::metadata(&spare).unwrap().len(),
        cfg.segment_max_bytes
    );
    // Past the end of the first segment: the next one is the spare, renamed.
    let segments = || {
        let mut s: Vec<_> = std::fs::read_dir(seg_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        s.sort();
        s
    };
    while segments().len() < 2 {
        log.append_blocking(record(appended, ps)).unwrap();
        appended += 1;
    }
    assert!(!spare.exists(), "the spare became the new segment");
    let second = segments()[1].clone();
    assert_eq!(
        std::fs::metadata(&second).unwrap().len(),
        cfg.segment_max_bytes,
        "the new segment keeps its zero tail"
    );
    let bytes = std::fs::read(&second).unwrap();
    assert!(
        bytes[..16].iter().any(|&b| b != 0),
        "the records start at 0"
    );
    assert!(bytes[bytes.len() - 16..].iter().all(|&b| b == 0));
    log.shutdown().unwrap();

    // Reopened: the zero tail is not damage, and the appends go on after the last frame.
    let (log, report) = AuditLog::open(cfg.clone()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.records, appended);
    for i in appended..appended + 5 {
        assert_eq!(log.append_blocking(record(i, ps)).unwrap(), i);
    }
    appended += 5;
    log.shutdown().unwrap();
    assert_eq!(
        std::fs::metadata(&second).unwrap().len(),
        cfg.segment_max_bytes,
        "still written over, not appended after"
    );
    t.assert_verifies(appended);
    let r = tooling::query(dir.path(), &Query::default(), None, true);
    assert_eq!(r.text.lines().count() as u64, appended, "{}", r.text);
}

/// A new log's first segment has no zeros to write over, so its appends grow the file. Once it
/// holds 1 MiB it asks for a spare and gives way to it as soon as the spare is ready, long before
/// it is full; the blocks set aside past its end go back to the file system, and nothing of it
/// shows to readers or to `verify`.
#[test]
fn a_new_logs_first_segment_gives_way_to_a_spare_once_one_is_ready() {
    use std::os::unix::fs::MetadataExt;
    let (t, log) = SegmentedLog::open(16 << 20);
    let cfg = &t.cfg;
    let first = t.segment(0);
    let mut appended = 0u64;
    let append_batch = |log: &AuditLog, appended: &mut u64| {
        let batch: Vec<_> = (*appended..*appended + 200)
            .map(|i| record(i, &t.ps))
            .collect();
        log.append_batch_blocking(batch).unwrap();
        *appended += 200;
    };
    while std::fs::metadata(&first).unwrap().len() < 1 << 20 {
        append_batch(&log, &mut appended);
    }
    // One more commit: the spare is asked for after the commit that crosses 1 MiB.
    append_batch(&log, &mut appended);
    let spare = t.wait_for_spare();
    let first_len = std::fs::metadata(&first).unwrap().len();
    // The next commit starts the new segment: the spare, renamed.
    append_batch(&log, &mut appended);
    assert!(!spare.exists(), "the spare became the new segment");
    let second = t.segment(appended - 200);
    assert!(second.exists(), "no segment begins at the last batch");
    assert_eq!(
        std::fs::metadata(&second).unwrap().len(),
        cfg.segment_max_bytes,
        "the new segment is the spare, with its zero tail"
    );
    let meta = std::fs::metadata(&first).unwrap();
    assert_eq!(meta.len(), first_len, "the first segment ends where it did");
    assert!(
        meta.len() < cfg.segment_max_bytes / 4,
        "the first segment gave way early, at {} bytes",
        meta.len()
    );
    assert!(
        meta.blocks() * 512 <= meta.len().next_multiple_of(4096) + 4096,
        "{} bytes of blocks kept past a {}-byte segment",
        meta.blocks() * 512,
        meta.len()
    );
    log.shutdown().unwrap();

    let (log, report) = AuditLog::open(cfg.clone()).unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.records, appended);
    log.shutdown().unwrap();
    t.assert_verifies(appended);
}

#[test]
fn an_index_entry_torn_by_a_crash_is_cut_on_open_and_later_entries_are_found() {
    use std::io::Write;
    let (keys, dir, ps) = closed_log_with(50);

    // A crash during the next index flush: part of an entry reached every bucket, and the
    // watermark did not move.
    let mut torn_buckets = 0;
    for kind in ["subject", "consumer"] {
        for bucket in std::fs::read_dir(dir.path().join("index").join(kind)).unwrap() {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(bucket.unwrap().path())
                .unwrap();
            file.write_all(&[0xAB; 17]).unwrap();
            torn_buckets += 1;
        }
    }
    assert!(torn_buckets > 0);

    let (log, report) = AuditLog::open(keys.config(dir.path())).unwrap();
    let cuts = report
        .notes
        .iter()
        .filter(|n| n.contains("torn entry"))
        .count();
    assert_eq!(cuts, torn_buckets, "{report:?}");
    for i in 50..100 {
        log.append_blocking(record(i, &ps)).unwrap();
    }
    log.shutdown().unwrap();
    assert_eq!(tollbu_audit::index::watermark(dir.path()).seq, 100);

    // Every record of the person is found through the index, the ones indexed after the cut too.
    let want: Vec<u64> = (0..100).filter(|i| i % 7 == 3).collect();
    assert_eq!(seqs_about(dir.path(), &person(3), &keys), want);
}

#[test]
fn index_entries_are_written_out_before_the_watermark_moves_and_a_crash_then_loses_none() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let ps = keys.pseudonymiser();
    let (log, _) = AuditLog::open(keys.config(dir.path())).unwrap();
    // 20,000 records: 1.6 MB of index entries, more than the writer holds before writing them
    // out, far fewer records than a durable index flush waits for.
    for batch in 0..20u64 {
        let records = (batch * 1000..(batch + 1) * 1000)
            .map(|i| record(i, &ps))
            .collect();
        log.append_batch_blocking(records).unwrap();
    }
    let bucket_bytes = || -> u64 {
        ["subject", "consumer"]
            .iter()
            .filter_map(|kind| std::fs::read_dir(dir.path().join("index").join(kind)).ok())
            .flatten()
            .map(|b| b.unwrap().metadata().unwrap().len())
            .sum()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while bucket_bytes() < 1 << 20 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        bucket_bytes() >= 1 << 20,
        "entries still held in memory: {} bytes written",
        bucket_bytes()
    );
    assert_eq!(tollbu_audit::index::watermark(dir.path()).seq, 0);
    // Tiles and checkpoint published, so that no file is renamed while it is copied.
    log.checkpoint_now().unwrap();
    assert_eq!(tollbu_audit::index::watermark(dir.path()).seq, 0);

    // What a crash leaves now: entries ahead of the watermark. The copy opens, indexes every
    // record after the watermark again, and a query lists each record once.
    let copy = tempfile::tempdir().unwrap();
    copy_tree(dir.path(), copy.path());
    let (reopened, report) = AuditLog::open(keys.config(copy.path())).unwrap();
    assert_eq!(report.reindexed, 20_000, "{report:?}");
    reopened.shutdown().unwrap();
    let want: Vec<u64> = (0..20_000).filter(|i| i % 7 == 3).collect();
    assert_eq!(seqs_about(copy.path(), &person(3), &keys), want);
    log.shutdown().unwrap();
}

/// A log with `records` records, shut down cleanly: the state a crash test then damages.
fn closed_log_with(records: u64) -> (Keys, tempfile::TempDir, tollbu_audit::Pseudonymiser) {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let ps = keys.pseudonymiser();
    let (log, _) = AuditLog::open(keys.config(dir.path())).unwrap();
    for i in 0..records {
        log.append_blocking(record(i, &ps)).unwrap();
    }
    log.shutdown().unwrap();
    (keys, dir, ps)
}

/// The sequence numbers `tollbu audit query --subject` lists for `subject`.
fn seqs_about(dir: &std::path::Path, subject: &str, keys: &Keys) -> Vec<u64> {
    let q = Query {
        subject: Some(subject.to_owned()),
        ..Query::default()
    };
    let r = tooling::query(dir, &q, Some(&keys.pseudonym()), true);
    r.text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect()
}
