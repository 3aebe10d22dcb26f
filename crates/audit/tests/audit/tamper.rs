//! Each way of altering the log is caught by `tooling::verify`, naming the first bad record.

use std::path::PathBuf;

use tollbu_audit::segment::{FrameRead, FrameReader, frame, list_segments};
use tollbu_audit::tooling::{self, Report};
use tollbu_audit::{AuditLog, record};

use crate::support::{Keys, record as make_record};

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
    f.rewrite(|b, frames| {
        let (off, len) = frames[300];
        let payload = &mut b[off + 8..off + len];
        let s = String::from_utf8(payload.to_vec())
            .unwrap()
            .replace("\"latency_us\":1300", "\"latency_us\":1301");
        payload.copy_from_slice(s.as_bytes());
        let crc = crc32fast::hash(&b[off + 8..off + len]);
        b[off + 4..off + 8].copy_from_slice(&crc.to_le_bytes());
    });
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

#[test]
fn reordered_records_are_found() {
    let f = Fixture::new();
    f.rewrite(|b, frames| {
        let (a, alen) = frames[300];
        let (_, blen) = frames[301];
        let first = b[a..a + alen].to_vec();
        let second = b[a + alen..a + alen + blen].to_vec();
        b.splice(a..a + alen + blen, second.into_iter().chain(first));
    });
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
        let path = f.dir.path().join(p);
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else {
            std::fs::remove_file(path).unwrap();
        }
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
    for (f, why) in [
        (&flipped, "record 300 ("),
        (
            &blanked,
            "the log ends at record 300 but a signed checkpoint covers 600",
        ),
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
