//! Each way of altering the log is caught by `tooling::verify`, naming the first bad record.

use std::path::PathBuf;

use tollbu_audit::segment::{FrameRead, FrameReader, frame, list_segments};
use tollbu_audit::tooling::{self, Report};
use tollbu_audit::{AuditLog, record};

use crate::support::{Keys, assert_fails_saying, closed_log, record as make_record};

const N: u64 = 600;

/// A finished log of `N` records with checkpoints every 50, plus copies of every checkpoint as an
/// auditor would keep them outside the log directory.
struct Fixture {
    keys: Keys,
    dir: tempfile::TempDir,
    kept: Vec<PathBuf>,
    vkey: String,
}

impl Fixture {
    fn new() -> Self {
        let keys = Keys::new();
        let dir = tempfile::tempdir().unwrap();
        let ps = keys.pseudonymiser();
        let mut cfg = keys.config(dir.path());
        cfg.checkpoint_every = 1_000_000;
        let (log, _) = AuditLog::open(cfg).unwrap();
        let mut kept = Vec::new();
        for i in 0..N {
            log.append_blocking(make_record(i, &ps)).unwrap();
            if (i + 1) % 50 == 0 {
                log.checkpoint_now().unwrap();
                let p = keys.dir().join(format!("cp-{}", i + 1));
                std::fs::write(&p, log.latest_checkpoint().unwrap()).unwrap();
                kept.push(p);
            }
        }
        let vkey = log.verifier_key();
        log.shutdown().unwrap();
        let f = Self {
            keys,
            dir,
            kept,
            vkey,
        };
        assert!(f.verify().ok, "{}", f.verify().text);
        f
    }

    fn segment(&self) -> PathBuf {
        list_segments(&self.dir.path().join("segments")).unwrap()[0]
            .path
            .clone()
    }

    /// (offset, total frame length) of every frame in the only segment.
    fn frames(&self) -> Vec<(usize, usize)> {
        let mut r = FrameReader::open(&self.segment()).unwrap();
        let mut out = Vec::new();
        while let FrameRead::Frame { offset, payload } = r.next_frame().unwrap() {
            out.push((offset as usize, payload.len() + 8));
        }
        out
    }

    fn verify(&self) -> Report {
        tooling::verify(self.dir.path(), &self.kept, Some(&self.vkey))
    }

    /// What an officer holding only the published key gets: nothing kept outside the log.
    fn verify_with_key_only(&self) -> Report {
        tooling::verify(self.dir.path(), &[], Some(&self.vkey))
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// Deletes a file or a whole directory of the log, as an attacker would.
    fn remove(&self, relative: &str) {
        let path = self.path(relative);
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
    }

    /// Changes record `i` in place and recomputes its frame checksum, so only hashes can tell.
    fn alter_keeping_the_checksum(&self, i: usize) {
        self.rewrite(|b, frames| {
            let (off, len) = frames[i];
            let payload = &mut b[off + 8..off + len];
            let s = String::from_utf8(payload.to_vec()).unwrap().replace(
                &format!("\"latency_us\":{}", 1000 + i),
                &format!("\"latency_us\":{}", 1001 + i),
            );
            payload.copy_from_slice(s.as_bytes());
            let crc = crc32fast::hash(&b[off + 8..off + len]);
            b[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
        });
    }

    fn rewrite(&self, f: impl FnOnce(&mut Vec<u8>, &[(usize, usize)])) {
        let frames = self.frames();
        let mut bytes = std::fs::read(self.segment()).unwrap();
        f(&mut bytes, &frames);
        std::fs::write(self.segment(), bytes).unwrap();
    }
}

fn forged(seq: u64, keys: &Keys) -> Vec<u8> {
    let mut r = make_record(seq, &keys.pseudonymiser());
    r.purpose = Some("covering-tracks".into());
    let mut out = Vec::new();
    frame(&record::encode(seq, &r).unwrap(), &mut out);
    out
}

fn assert_first_bad(r: &Report, index: u64) {
    assert!(!r.ok, "tampering went unnoticed:\n{}", r.text);
    assert!(
        r.text
            .contains(&format!("FIRST bad record index: {index}\n")),
        "expected first bad index {index}:\n{}",
        r.text
    );
}

#[test]
fn a_flipped_byte_is_found() {
    let f = Fixture::new();
    f.rewrite(|b, frames| {
        let (off, _) = frames[300];
        b[off + 8 + 20] ^= 0x01;
    });
    assert_first_bad(&f.verify(), 300);
}

#[test]
fn a_flipped_byte_with_a_recomputed_checksum_is_found() {
    let f = Fixture::new();
    f.alter_keeping_the_checksum(300);
    assert_first_bad(&f.verify(), 300);
}

#[test]
fn a_deleted_record_is_found() {
    let f = Fixture::new();
    f.rewrite(|b, frames| {
        let (off, len) = frames[300];
        b.drain(off..off + len);
    });
    assert_first_bad(&f.verify(), 300);
}

/// Records 300 and 301 swapped, each frame moved whole (so every checksum holds).
fn swap_300_and_301(f: &Fixture) {
    f.rewrite(|b, frames| {
        let (a, alen) = frames[300];
        let (_, blen) = frames[301];
        let first = b[a..a + alen].to_vec();
        let second = b[a + alen..a + alen + blen].to_vec();
        b.splice(a..a + alen + blen, second.into_iter().chain(first));
    });
}

#[test]
fn reordered_records_are_found() {
    let f = Fixture::new();
    swap_300_and_301(&f);
    assert_first_bad(&f.verify(), 300);
}

#[test]
fn an_inserted_record_is_found() {
    let f = Fixture::new();
    let fake = forged(300, &f.keys);
    f.rewrite(|b, frames| {
        let (off, _) = frames[300];
        b.splice(off..off, fake);
    });
    assert_first_bad(&f.verify(), 300);
}

#[test]
fn truncate_and_reappend_is_found_and_the_log_refuses_to_continue() {
    let f = Fixture::new();
    let mut cfg = f.keys.config(f.dir.path());
    cfg.checkpoint_every = 50;
    // Plain truncation: the log will not extend a tree shorter than what it signed.
    f.rewrite(|b, frames| b.truncate(frames[300].0));
    assert!(matches!(
        AuditLog::open(cfg.clone()),
        Err(tollbu_audit::AuditError::Rollback { .. })
    ));
    let r = f.verify();
    assert_first_bad(&r, 300);
    assert!(r.text.contains("rollback"), "{}", r.text);
    // Re-append forged records with valid sequence numbers and checksums.
    let mut tail = Vec::new();
    for seq in 300..N {
        tail.extend(forged(seq, &f.keys));
    }
    f.rewrite(|b, _| b.extend(tail));
    let r = f.verify();
    assert_first_bad(&r, 300);
    assert!(r.text.contains("fork"), "{}", r.text);
    assert!(matches!(
        AuditLog::open(cfg),
        Err(tollbu_audit::AuditError::Fork { .. })
    ));
}

#[test]
fn rewriting_records_and_tiles_together_is_still_caught_by_kept_checkpoints() {
    let f = Fixture::new();
    let fake = forged(420, &f.keys);
    f.rewrite(|b, frames| {
        let (off, len) = frames[420];
        b.splice(off..off + len, fake);
    });
    // The attacker also deletes every derived file that would give the change away.
    for p in ["tile", "checkpoint", "checkpoints.log"] {
        f.remove(p);
    }
    let r = f.verify();
    assert!(!r.ok);
    // Kept checkpoints at 400 match, 450 does not: the change is bounded to 400..450.
    assert!(
        r.text.contains("first altered record is in 400..450"),
        "{}",
        r.text
    );
}

#[test]
fn a_forged_checkpoint_is_rejected() {
    let f = Fixture::new();
    let note = std::fs::read_to_string(f.dir.path().join("checkpoint")).unwrap();
    let forged_path = f.keys.dir().join("forged");
    std::fs::write(&forged_path, note.replacen("\n600\n", "\n601\n", 1)).unwrap();
    let r = tooling::verify(f.dir.path(), &[forged_path], Some(&f.vkey));
    assert!(!r.ok && r.text.contains("rejected"), "{}", r.text);
    let r = tooling::verify(f.dir.path(), &[], Some("tollbu.example/x+00000000+AQ=="));
    assert!(!r.ok);
}

/// The active segment may end in zeros written ahead of the appends; they hold nothing, and a
/// record blanked to zeros in the middle, or bytes hidden in the tail, do not pass for them.
#[test]
fn a_zero_tail_verifies_but_a_blanked_record_or_a_byte_hidden_in_it_is_found() {
    let f = Fixture::new();
    f.rewrite(|b, _| b.resize(b.len() + 64 * 1024, 0));
    let r = f.verify();
    assert!(r.ok, "{}", r.text);
    assert!(r.text.contains(&format!("records: {N}\n")), "{}", r.text);

    let end = std::fs::metadata(f.segment()).unwrap().len() as usize;
    f.rewrite(|b, _| b[end - 1000] = 1);
    let r = f.verify();
    assert_first_bad(&r, N);
    assert!(r.text.contains("non-zero byte"), "{}", r.text);

    let f = Fixture::new();
    f.rewrite(|b, frames| {
        let (off, len) = frames[300];
        b[off..off + len].fill(0);
    });
    assert_first_bad(&f.verify(), 300);
}

/// The officer's other tools meet a damaged record too. None may answer as if the records after it
/// did not exist: `query` (and so `citizen`) fails naming the record, and a console page counts
/// what it could not read. The fixture's only segment is the active one, where a bad frame beyond
/// the signed checkpoint would be a writer mid-append; record 300 is well below it.
#[test]
fn queries_and_pages_do_not_stop_quietly_at_a_damaged_record() {
    use tollbu_audit::tooling::Query;
    use tollbu_audit::tooling::browse::{self, Filter};
    let all = Query::default();
    let flipped = Fixture::new();
    flipped.rewrite(|b, frames| {
        let (off, _) = frames[300];
        b[off + 8 + 20] ^= 0x01;
    });
    let blanked = Fixture::new();
    blanked.rewrite(|b, frames| {
        let (off, len) = frames[300];
        b[off..off + len].fill(0);
    });
    // Two records swapped: a query writing records as it finds them would have to leave 300 out
    // or misplace it.
    let swapped = Fixture::new();
    swap_300_and_301(&swapped);
    for (f, why) in [
        (&flipped, "record 300 ("),
        (
            &blanked,
            "the log ends at record 300 but a signed checkpoint covers 600",
        ),
        (&swapped, "record 300 is stored after record 301"),
    ] {
        let r = tooling::query(f.dir.path(), &all, None, false);
        assert!(!r.ok, "{}", r.text);
        assert!(r.text.contains(why), "{}", r.text);
    }
    // The console's pages keep the records around an altered one readable, and say how many
    // they left out.
    let page = browse::page(
        flipped.dir.path(),
        &Filter::default(),
        None,
        1_000,
        1_000_000,
    )
    .unwrap();
    assert_eq!((page.records.len(), page.unreadable), (599, 1));
    let page = browse::page(
        blanked.dir.path(),
        &Filter::default(),
        None,
        1_000,
        1_000_000,
    )
    .unwrap();
    assert_eq!((page.records.len(), page.unreadable), (300, 300));
    // The healthy log reads whole, with nothing unreadable.
    let healthy = Fixture::new();
    assert!(
        tooling::query(healthy.dir.path(), &all, None, false)
            .text
            .contains("600 records")
    );
    let page = browse::page(
        healthy.dir.path(),
        &Filter::default(),
        None,
        1_000,
        1_000_000,
    )
    .unwrap();
    assert_eq!((page.records.len(), page.unreadable), (600, 0));
}

/// The reviewer's case: a record altered (checksum fixed), the tiles, `checkpoint` and
/// `checkpoints.log` deleted. Records and tiles are consistent with each other and the published
/// key checks nothing, so nothing proves the records are the ones signed: verify must fail.
#[test]
fn with_every_checkpoint_deleted_the_published_key_alone_does_not_pass_the_log() {
    let f = Fixture::new();
    f.alter_keeping_the_checksum(300);
    for p in ["tile", "checkpoint", "checkpoints.log"] {
        f.remove(p);
    }
    let r = f.verify_with_key_only();
    assert!(!r.ok, "a log no checkpoint covers passed:\n{}", r.text);
    for says in [
        "checkpoints checked: 0\n",
        "no signed checkpoint covers the 600 records, so nothing proves they were not rewritten",
        "`checkpoint` and `checkpoints.log` are missing",
        "only a log younger than that may rightly have none yet",
    ] {
        assert!(r.text.contains(says), "expected `{says}`:\n{}", r.text);
    }

    // A brand-new log has neither records nor a checkpoint, and is sound.
    let empty = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(f.keys.config(empty.path())).unwrap();
    log.shutdown().unwrap();
    let empty_tree_note = std::fs::read_to_string(empty.path().join("checkpoint")).unwrap();
    for p in ["checkpoint", "checkpoints.log"] {
        std::fs::remove_file(empty.path().join(p)).unwrap();
    }
    let r = tooling::verify(empty.path(), &[], Some(&f.vkey));
    assert!(r.ok, "{}", r.text);
    assert!(r.text.contains("records: 0\n"), "{}", r.text);

    // A genuine checkpoint of an empty tree, signed with the same key, covers no record either.
    std::fs::write(f.path("checkpoint"), empty_tree_note).unwrap();
    let r = f.verify_with_key_only();
    assert_fails_saying(
        &r,
        "`checkpoints.log` is missing and `checkpoint` holds no valid checkpoint of a non-empty tree",
    );
}

/// The reviewer's case: every segment, `checkpoint` and `checkpoints.log` deleted, one partial
/// tile left. The tile shows that 600 records existed.
#[test]
fn a_partial_tile_left_behind_by_deleted_records_is_found() {
    let f = Fixture::new();
    for seg in list_segments(&f.path("segments")).unwrap() {
        std::fs::remove_file(seg.path).unwrap();
    }
    f.remove("checkpoint");
    f.remove("checkpoints.log");
    let kept = f.path("kept-tile");
    std::fs::rename(f.path("tile/0/002.p/88"), &kept).unwrap();
    f.remove("tile");
    std::fs::create_dir_all(f.path("tile/0/002.p")).unwrap();
    std::fs::rename(&kept, f.path("tile/0/002.p/88")).unwrap();

    let r = f.verify_with_key_only();
    assert_first_bad(&r, 0);
    assert!(
        r.text
            .contains("tile `tile/0/002.p/88` covers 600 records but the log holds 0"),
        "{}",
        r.text
    );
}

/// Records 100..600 cut off, the checkpoints that covered them deleted, and the tiles at the new
/// end removed: the tiles further on, of any level, still show what was there.
#[test]
fn tiles_beyond_a_truncated_log_are_found_at_every_level() {
    let f = Fixture::new();
    f.rewrite(|b, frames| b.truncate(frames[100].0));
    f.remove("checkpoint");
    f.remove("checkpoints.log");
    f.remove("tile/0/000");
    f.remove("tile/0/000.p");
    // An auditor's checkpoints up to 100 still verify: only the tiles give the removal away.
    let r = tooling::verify(f.dir.path(), &f.kept[..2], Some(&f.vkey));
    assert_first_bad(&r, 100);
    for tile in ["tile/0/002.p/88` covers 600", "tile/1/000.p/2` covers 512"] {
        assert!(r.text.contains(tile), "expected `{tile}`:\n{}", r.text);
    }
}

/// Tiles are derived from the records: without them the log still verifies, and the report says
/// what is missing and when it comes back, which reopening the log then confirms.
#[test]
fn missing_tiles_are_noted_and_come_back_as_the_note_says() {
    let f = Fixture::new();
    f.remove("tile");
    let r = f.verify();
    assert!(r.ok, "{}", r.text);
    for says in [
        "note: 2 full tiles are missing; the records they hash verify, but proofs for those records cannot be served until the gateway rebuilds the tiles from them at its next start",
        "note: 2 partial tiles are missing at the right edge of the latest checkpoint",
    ] {
        assert!(r.text.contains(says), "expected `{says}`:\n{}", r.text);
    }
    assert!(!r.text.contains("lie before"), "{}", r.text);

    // The next start rebuilds the full tiles; the partial ones wait for a new checkpoint.
    let (log, opened) = AuditLog::open(f.keys.config(f.dir.path())).unwrap();
    assert_eq!(opened.tiles_rebuilt, 2, "{opened:?}");
    log.shutdown().unwrap();
    let r = f.verify();
    assert!(r.ok, "{}", r.text);
    assert!(!r.text.contains("full tiles"), "{}", r.text);
    assert!(r.text.contains("2 partial tiles"), "{}", r.text);

    let (log, _) = AuditLog::open(f.keys.config(f.dir.path())).unwrap();
    log.append_blocking(make_record(N, &f.keys.pseudonymiser()))
        .unwrap();
    log.shutdown().unwrap();
    let r = f.verify();
    assert!(r.ok && !r.text.contains("missing"), "{}", r.text);
}

/// The reviewer's case: a log too small for a full tile has only partial ones; `rm -r tile` must
/// not pass without a word.
#[test]
fn missing_partial_tiles_of_a_small_log_are_noted() {
    let (dir, vkey) = closed_log(&Keys::new(), 46);
    std::fs::remove_dir_all(dir.path().join("tile")).unwrap();
    let r = tooling::verify(dir.path(), &[], Some(&vkey));
    assert!(r.ok, "{}", r.text);
    assert!(
        r.text
            .contains("note: 1 partial tile is missing at the right edge of the latest checkpoint"),
        "{}",
        r.text
    );
}

/// A tile missing before one that is present (removed by hand, say) is rebuilt from the records
/// at the next start, like the missing tiles at the end of a level: the levels above are computed
/// from it, and the log opened only once it is back.
#[test]
fn a_missing_tile_before_a_present_one_is_rebuilt_at_the_next_start() {
    let f = Fixture::new();
    let tile = std::fs::read(f.path("tile/0/000")).unwrap();
    f.remove("tile/0/000");
    let r = f.verify();
    assert!(r.ok, "{}", r.text);
    assert!(
        r.text.contains("note: 1 full tile is missing"),
        "{}",
        r.text
    );
    let (log, report) = AuditLog::open(f.keys.config(f.dir.path())).unwrap();
    assert_eq!(report.tiles_rebuilt, 1);
    log.shutdown().unwrap();
    assert_eq!(std::fs::read(f.path("tile/0/000")).unwrap(), tile);
    let r = f.verify();
    assert!(r.ok && !r.text.contains("note:"), "{}", r.text);
}

/// A tile whose file is there but cut short was altered, not lost: it is no "missing" tile.
#[test]
fn a_cut_short_tile_is_reported_as_damaged() {
    let f = Fixture::new();
    let tile = f.path("tile/0/001");
    let bytes = std::fs::read(&tile).unwrap();
    std::fs::write(&tile, &bytes[..100]).unwrap();
    let r = f.verify();
    assert_fails_saying(&r, "tile `tile/0/001` is damaged");
}

/// `checkpoint` and `checkpoints.log` rolled back to an early checkpoint: the records after it still
/// verify (they were never altered), but the report must say no signed checkpoint covers them, so
/// that the officer compares with a checkpoint kept elsewhere, which catches the rollback.
#[test]
fn records_beyond_the_latest_checkpoint_found_are_named() {
    let f = Fixture::new();
    let early = std::fs::read_to_string(&f.kept[5]).unwrap();
    f.remove("checkpoints.log");
    std::fs::write(f.path("checkpoint"), &early).unwrap();
    let r = tooling::verify(f.dir.path(), &[], Some(&f.vkey));
    assert!(r.ok, "{}", r.text);
    assert!(
        r.text
            .contains("note: records 300..600 are covered by no signed checkpoint found"),
        "{}",
        r.text
    );
    assert!(!f.verify().text.contains("covered by no signed checkpoint"));
}

/// Every file of the log directory and its bytes.
fn snapshot(dir: &std::path::Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path, bytes);
            }
        }
    }
    out
}

/// A damaged frame below what the log vouched for (a full leaf tile, or the signed checkpoint)
/// makes opening refuse, and the refusal cuts nothing: the intact signed records after the
/// damage, and everything else in the directory, stay byte for byte, and `verify` still names
/// the damaged record.
#[test]
fn a_refused_open_leaves_every_file_as_it_was() {
    for (damaged, covered) in [(300usize, "covers 512"), (590, "covers 600")] {
        let f = Fixture::new();
        f.rewrite(|b, frames| {
            let (off, _) = frames[damaged];
            b[off + 8 + 20] ^= 0x01;
            // The zero tail an active segment may end in.
            b.resize(b.len() + 64 * 1024, 0);
        });
        let before = snapshot(f.dir.path());
        match AuditLog::open(f.keys.config(f.dir.path())) {
            Err(e @ tollbu_audit::AuditError::Rollback { .. }) => {
                assert!(e.to_string().contains(covered), "{e}");
            }
            Err(e) => panic!("record {damaged}: expected a rollback, got {e}"),
            Ok(_) => panic!("record {damaged}: opened a log with signed records cut"),
        }
        assert!(
            snapshot(f.dir.path()) == before,
            "record {damaged}: a refused open changed the directory"
        );
        assert_first_bad(&f.verify(), damaged as u64);
    }
}

/// Every segment deleted (the log rolled back to nothing): opening refuses, and creates no empty
/// segment in their place first, so the directory stays exactly as the deletion left it.
#[test]
fn a_log_with_every_segment_deleted_is_refused_and_left_as_it_was() {
    let f = Fixture::new();
    let seg_dir = f.path("segments");
    for seg in list_segments(&seg_dir).unwrap() {
        std::fs::remove_file(&seg.path).unwrap();
    }
    let before = snapshot(f.dir.path());
    assert!(
        !before.keys().any(|p| p.starts_with(&seg_dir)),
        "{before:?}"
    );
    match AuditLog::open(f.keys.config(f.dir.path())) {
        Err(tollbu_audit::AuditError::Rollback { records: 0, .. }) => {}
        Err(e) => panic!("expected a rollback to 0 records, got {e}"),
        Ok(_) => panic!("opened a log whose signed records are all gone"),
    }
    let after = snapshot(f.dir.path());
    let changed: Vec<_> = before
        .keys()
        .chain(after.keys())
        .filter(|p| before.get(*p) != after.get(*p))
        .collect();
    assert!(changed.is_empty(), "a refused open changed {changed:?}");
    assert_first_bad(&f.verify(), 0);

    // The `segments` directory itself removed: refused, and not made again.
    std::fs::remove_dir(&seg_dir).unwrap();
    assert!(matches!(
        AuditLog::open(f.keys.config(f.dir.path())),
        Err(tollbu_audit::AuditError::Rollback { records: 0, .. })
    ));
    assert!(!seg_dir.exists(), "a refused open made `segments/` again");
    assert!(snapshot(f.dir.path()) == before);
}

/// (offset, total frame length) of every entry of `checkpoints.log`.
fn history_frames(f: &Fixture) -> Vec<(usize, usize)> {
    let mut r = FrameReader::open(&f.path("checkpoints.log")).unwrap();
    let mut out = Vec::new();
    while let FrameRead::Frame { offset, payload } = r.next_frame().unwrap() {
        out.push((offset as usize, payload.len() + 8));
    }
    out
}

/// Damage in the middle of `checkpoints.log` is not a torn append: opening refuses, naming the
/// file and the offset, and cuts nothing; `verify` fails naming the entry, and an entry that is
/// not text as well. A torn or damaged *last* entry, or zeros after the last one, are cut.
#[test]
fn damage_in_the_middle_of_the_checkpoint_history_is_refused_not_cut() {
    let f = Fixture::new();
    let history = f.path("checkpoints.log");
    let frames = history_frames(&f);
    assert!(frames.len() >= 12, "{frames:?}");
    let (off, _) = frames[3];
    let mut bytes = std::fs::read(&history).unwrap();
    bytes[off + 8 + 10] ^= 0x01;
    std::fs::write(&history, &bytes).unwrap();

    let r = f.verify();
    assert_fails_saying(
        &r,
        &format!("`checkpoints.log` entry at offset {off} is unreadable (checksum mismatch)"),
    );
    let before = snapshot(f.dir.path());
    match AuditLog::open(f.keys.config(f.dir.path())) {
        Err(tollbu_audit::AuditError::Corrupt(why)) => {
            assert!(
                why.contains("checkpoints.log") && why.contains(&format!("offset {off}")),
                "{why}"
            );
        }
        Err(e) => panic!("expected the damage to be refused, got {e}"),
        Ok(_) => panic!("opened a log whose signed history is damaged"),
    }
    assert!(
        snapshot(f.dir.path()) == before,
        "a refused open changed the directory"
    );

    // An entry that is not text, with a valid checksum, is named too.
    let mut not_text = Vec::new();
    frame(&[0xff, 0xfe, 0x00, 0x41], &mut not_text);
    bytes[off + 8 + 10] ^= 0x01;
    let (second, _) = frames[1];
    bytes.splice(second..second, not_text);
    std::fs::write(&history, &bytes).unwrap();
    assert_fails_saying(
        &f.verify(),
        &format!("`checkpoints.log` entry at offset {second} is not text"),
    );
}

#[test]
fn a_torn_or_damaged_last_history_entry_or_zeros_after_it_are_cut() {
    let f = Fixture::new();
    let history = f.path("checkpoints.log");
    let frames = history_frames(&f);
    let good = std::fs::read(&history).unwrap();
    let (last, _) = frames[frames.len() - 1];
    let mut flipped = good.clone();
    flipped[last + 8 + 10] ^= 0x01;
    let mut zeros = good.clone();
    zeros.resize(good.len() + 300, 0);
    let mut short = good.clone();
    short.truncate(good.len() - 5);
    for (bytes, cut_at, why) in [
        (flipped, last, "checksum mismatch"),
        (zeros, good.len(), "300 zero bytes"),
        (short, last, "short frame payload"),
    ] {
        std::fs::write(&history, &bytes).unwrap();
        let (log, report) = AuditLog::open(f.keys.config(f.dir.path())).unwrap();
        log.shutdown().unwrap();
        assert!(
            report.notes.iter().any(|n| n.contains(&format!(
                "cut a torn checkpoint history entry at offset {cut_at} ({why}"
            ))),
            "{report:?}"
        );
        let r = f.verify();
        assert!(r.ok, "{}", r.text);
    }
}

/// A fork (signed records rewritten with valid checksums) is refused without the open first
/// recomputing the full tiles after the checkpoint from the forged records and writing them over
/// the true ones: those tile files are evidence of what was signed.
#[test]
fn a_refused_fork_leaves_the_tile_files_as_they_were() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let ps = keys.pseudonymiser();
    let mut cfg = keys.config(dir.path());
    cfg.checkpoint_every = 1_000_000;
    let (log, _) = AuditLog::open(cfg.clone()).unwrap();
    let mut signed_at_600 = None;
    for i in 0..800 {
        log.append_blocking(make_record(i, &ps)).unwrap();
        if i + 1 == 600 {
            log.checkpoint_now().unwrap();
            signed_at_600 = log.latest_checkpoint();
        }
    }
    log.shutdown().unwrap();
    // The latest checkpoint is the one at 600 (as after a crash before the next), so the full
    // tile of records 512..768 is recomputed from the records at the next open.
    std::fs::write(dir.path().join("checkpoint"), signed_at_600.unwrap()).unwrap();
    let segment = list_segments(&dir.path().join("segments")).unwrap()[0]
        .path
        .clone();
    let mut frames = Vec::new();
    let mut reader = FrameReader::open(&segment).unwrap();
    while let FrameRead::Frame { offset, payload } = reader.next_frame().unwrap() {
        frames.push((offset as usize, payload.len() + 8));
    }
    let mut bytes = std::fs::read(&segment).unwrap();
    let (off, len) = frames[550];
    bytes.splice(off..off + len, forged(550, &keys));
    std::fs::write(&segment, bytes).unwrap();

    let before = snapshot(dir.path());
    assert!(matches!(
        AuditLog::open(cfg),
        Err(tollbu_audit::AuditError::Fork { size: 600 })
    ));
    assert!(
        snapshot(dir.path()) == before,
        "a refused open rewrote a file (the tile of records 512..768)"
    );
}
