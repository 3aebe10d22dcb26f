//! `verify` reads segments on reader threads ahead of the thread building the tree. On a log of
//! many segments, every kind of damage, including those that move later records to other
//! positions (which the readers cannot know), gets the very report one thread alone gives.

use std::path::{Path, PathBuf};

use tollbu_audit::segment::{FrameRead, FrameReader, frame, list_segments};
use tollbu_audit::tooling::{self, Report, VerifyOptions};
use tollbu_audit::{AuditLog, record};

use crate::support::{Keys, copy_tree, record as make_record};

const N: u64 = 600;

/// A finished log of `N` records in segments of 16 KiB (about 30 records each), signed every 50
/// records, reopened once so that its index covers every record; and its verifier key.
fn many_segments(keys: &Keys) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = keys.config(dir.path());
    cfg.segment_max_bytes = 16 * 1024;
    cfg.checkpoint_every = 1_000_000;
    let ps = keys.pseudonymiser();
    let (log, _) = AuditLog::open(cfg.clone()).unwrap();
    for i in 0..N {
        log.append_blocking(make_record(i, &ps)).unwrap();
        if (i + 1) % 50 == 0 {
            log.checkpoint_now().unwrap();
        }
    }
    let vkey = log.verifier_key();
    log.shutdown().unwrap();
    let (log, _) = AuditLog::open(cfg).unwrap();
    log.shutdown().unwrap();
    (dir, vkey)
}

fn verify(dir: &Path, vkey: &str, readers: usize) -> Report {
    tooling::verify_with_options(
        dir,
        &VerifyOptions {
            verifier_key: Some(vkey),
            readers: Some(readers),
            ..VerifyOptions::default()
        },
    )
}

fn segment(dir: &Path, n: usize) -> PathBuf {
    list_segments(&dir.join("segments")).unwrap()[n]
        .path
        .clone()
}

/// Rewrites segment `n`'s bytes, given its frames as (offset, length with header).
fn rewrite(dir: &Path, n: usize, f: impl FnOnce(&mut Vec<u8>, &[(usize, usize)])) {
    let path = segment(dir, n);
    let mut frames = Vec::new();
    let mut r = FrameReader::open(&path).unwrap();
    while let FrameRead::Frame { offset, payload } = r.next_frame().unwrap() {
        frames.push((offset as usize, payload.len() + 8));
    }
    let mut bytes = std::fs::read(&path).unwrap();
    f(&mut bytes, &frames);
    std::fs::write(&path, bytes).unwrap();
}

type Damage = fn(&Path, &Keys);

const DAMAGES: &[(&str, Damage)] = &[
    ("nothing", |_, _| {}),
    ("a byte flipped in segment 4", |dir, _| {
        rewrite(dir, 4, |b, frames| b[frames[3].0 + 40] ^= 1);
    }),
    ("a record deleted from segment 2", |dir, _| {
        rewrite(dir, 2, |b, frames| {
            let (off, len) = frames[5];
            b.drain(off..off + len);
        });
    }),
    (
        "a forged record put before segment 6's first",
        |dir, keys| {
            let first = list_segments(&dir.join("segments")).unwrap()[6].first_seq;
            let mut forged = make_record(first, &keys.pseudonymiser());
            forged.purpose = Some("covering-tracks".into());
            let mut bytes = Vec::new();
            frame(&record::encode(first, &forged).unwrap(), &mut bytes);
            rewrite(dir, 6, |b, _| {
                b.splice(0..0, bytes);
            });
        },
    ),
    ("two records swapped in segment 3", |dir, _| {
        rewrite(dir, 3, |b, frames| {
            let (a, alen) = frames[1];
            let (_, blen) = frames[2];
            let first = b[a..a + alen].to_vec();
            let second = b[a + alen..a + alen + blen].to_vec();
            b.splice(a..a + alen + blen, second.into_iter().chain(first));
        });
    }),
    ("segment 8 deleted", |dir, _| {
        std::fs::remove_file(segment(dir, 8)).unwrap();
    }),
    ("segment 5 cut in the middle of a record", |dir, _| {
        rewrite(dir, 5, |b, frames| b.truncate(frames[7].0 + 20));
    }),
];

#[test]
fn readers_ahead_report_every_damage_exactly_as_one_thread_does() {
    let keys = Keys::new();
    let (original, vkey) = many_segments(&keys);
    let segments = list_segments(&original.path().join("segments"))
        .unwrap()
        .len();
    assert!(segments >= 15, "{segments} segments");
    for (what, damage) in DAMAGES {
        let dir = tempfile::tempdir().unwrap();
        copy_tree(original.path(), dir.path());
        damage(dir.path(), &keys);
        let alone = verify(dir.path(), &vkey, 0);
        assert_eq!(alone.ok, *what == "nothing", "{what}:\n{}", alone.text);
        for readers in [1, 3] {
            let ahead = verify(dir.path(), &vkey, readers);
            assert_eq!(
                (ahead.ok, &ahead.text),
                (alone.ok, &alone.text),
                "{what}, {readers} readers"
            );
        }
    }
}
