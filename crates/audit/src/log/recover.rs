//! Opening a log directory: identity checks, torn-tail repair, tree and index catch-up, and the
//! refusal to continue a log that is shorter than, or disagrees with, what it already signed.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, RwLock};

use super::reindex::index_records;
use super::{AuditConfig, Durability, Shared};
use crate::checkpoint::{CheckpointSigner, NoteVerifier, open_checkpoint};
use crate::error::AuditError;
use crate::hash::{Hash, leaf_hash};
use crate::index::{BucketFiles, IndexWriter, Watermark, cut_torn_entries, watermark};
use crate::pseudonym::Pseudonymiser;
use crate::record::{MAX_RECORD_BYTES, decode};
use crate::segment::{
    FRAME_HEADER, FrameRead, FrameReader, RecordCursor, SegmentFile, SegmentInfo, Storage,
    list_segments, segment_name, write_atomic,
};
use crate::tile::{TILE_WIDTH, TileStore, read_tile, stored_count, tile_path, write_full_tiles};
use crate::tree;

/// What opening the log found and repaired. Nothing is repaired silently: a non-clean report
/// should be logged loudly by the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Records in the log after recovery (the next record gets this index).
    pub records: u64,
    /// Bytes of data cut from the end of the last segment (a torn or corrupt tail), up to its last
    /// non-zero byte: the zeros written ahead of the appends, cut with it, held nothing.
    pub truncated_bytes: u64,
    /// Where the cut was made, and why.
    pub truncated_at: Option<(PathBuf, u64, String)>,
    /// Full tiles recomputed from records (lost between the records' fsync and the tile write).
    pub tiles_rebuilt: u64,
    /// Records indexed again because the index lagged behind the log.
    pub reindexed: u64,
    /// Size of the latest signed checkpoint found (and checked against the records).
    pub checkpoint_size: Option<u64>,
    pub notes: Vec<String>,
}

impl RecoveryReport {
    /// True when nothing had to be cut or rebuilt.
    pub fn is_clean(&self) -> bool {
        self.truncated_bytes == 0
            && self.truncated_at.is_none()
            && self.tiles_rebuilt == 0
            && self.notes.is_empty()
    }
}

pub(crate) struct Opened {
    pub shared: Arc<Shared>,
    /// Signs checkpoints (the notary) and retention statements (the writer).
    pub signer: Arc<CheckpointSigner>,
    pub pseudonymiser: Pseudonymiser,
    pub report: RecoveryReport,
    pub storage: Arc<dyn Storage>,
    pub segment: Box<dyn SegmentFile>,
    pub seg_first: u64,
    pub seg_len: u64,
    pub index: IndexWriter,
    /// The index buckets as recovery left them, for the index thread to keep count of.
    pub index_files: BucketFiles,
    pub last_checkpoint: Option<u64>,
}

/// Checks that `path` holds exactly `content`; when it is missing, returns the write that pins it,
/// to be made once the open's checks have passed (a refused open pins nothing).
fn check_pin(
    path: &Path,
    content: &str,
    what: impl Fn(String) -> AuditError,
) -> Result<Option<(PathBuf, String)>, AuditError> {
    match std::fs::read_to_string(path) {
        Ok(found) if found.trim_end() == content => Ok(None),
        Ok(found) => Err(what(found.trim_end().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(Some((path.to_path_buf(), format!("{content}\n"))))
        }
        Err(e) => Err(AuditError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

pub(crate) fn open(cfg: &AuditConfig, storage: Arc<dyn Storage>) -> Result<Opened, AuditError> {
    let dir = &cfg.dir;
    let seg_dir = dir.join("segments");
    let signer = CheckpointSigner::from_pem_file(&cfg.signing_key_pem, &cfg.origin)?;
    let pseudonymiser = Pseudonymiser::from_key_file(&cfg.pseudonym_key)?;
    let mut pins = Vec::new();
    pins.extend(check_pin(&dir.join("origin"), &cfg.origin, |found| {
        AuditError::OriginMismatch {
            dir: dir.clone(),
            found,
            configured: cfg.origin.clone(),
        }
    })?);
    // A new key under the same origin would make old checkpoints unverifiable with the published key:
    // rotating the key means starting a new log (new origin).
    let vkey = signer.verifier_key();
    pins.extend(check_pin(&dir.join("verifier-key"), &vkey, |found| {
        AuditError::Key {
            path: cfg.signing_key_pem.clone(),
            reason: format!("this log was signed by `{found}`; a new key needs a new log origin"),
        }
    })?);

    // Subject searches need the key the subjects were pseudonymised with; a new key in the middle of
    // a log would split every person's records in two.
    pins.extend(check_pin(
        &dir.join(crate::pseudonym::KEY_CHECK_FILE),
        &pseudonymiser.key_check(),
        |_| {
            AuditError::Key {
            path: cfg.pseudonym_key.clone(),
            reason: "this log's subjects were pseudonymised with another key; a new pseudonym key needs a new log".into(),
        }
        },
    )?);

    let mut report = RecoveryReport::default();
    let mut segments = list_segments(&seg_dir)?;
    let pruned = crate::tooling::first_retained(dir);
    // No segment: a new log, a closed one retention emptied (it goes on after the records the
    // `pruned` marker says were removed), or one whose segments were deleted otherwise (a
    // rollback the checks below refuse). Its first segment is created only once they pass.
    let first_segment = segments.is_empty().then(|| SegmentInfo {
        first_seq: pruned,
        path: seg_dir.join(segment_name(pruned)),
    });
    let last = match &first_segment {
        Some(first) => first.clone(),
        None => segments[segments.len() - 1].clone(),
    };
    // Only read here: a cut of the tail is made once the checks below have found that it removes
    // nothing the log already vouched for. A refused open leaves every file as it was.
    let (count, good_len, file_len, cut_reason) = match &first_segment {
        Some(_) => (0, 0, 0, None),
        None => scan_tail(&last)?,
    };
    // Without a reason, what follows the frames is the zero tail written ahead of the appends:
    // kept, and written over by the next ones.
    let cut = cut_reason.filter(|_| good_len < file_len);
    let size = last.first_seq + count;
    report.records = size;

    // A full leaf tile beyond the end means records that were once durable are gone.
    let next_full = stored_count(0, size) / TILE_WIDTH;
    let beyond = dir.join(tile_path(0, next_full, TILE_WIDTH));
    let mut remove_beyond = false;
    if beyond.exists() {
        match cfg.durability {
            Durability::Fsync => {
                return Err(AuditError::Rollback {
                    records: size,
                    checkpoint: (next_full + 1) * TILE_WIDTH,
                });
            }
            // Removed once the checkpoint checks below pass.
            Durability::Relaxed { .. } => remove_beyond = true,
        }
    }

    // Never continue a log that cannot extend what it already signed.
    let mut checkpoint = None;
    let cp_path = dir.join("checkpoint");
    match std::fs::read_to_string(&cp_path) {
        Ok(note) => {
            let verifier = NoteVerifier::parse(&vkey)?;
            let cp = open_checkpoint(&note, &verifier)?;
            if cp.size > size {
                return Err(AuditError::Rollback {
                    records: size,
                    checkpoint: cp.size,
                });
            }
            checkpoint = Some((cp, note));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if size > 0 {
                report
                    .notes
                    .push("records exist but no signed checkpoint was found".into());
            }
        }
        Err(e) => {
            return Err(AuditError::Io {
                path: cp_path,
                source: e,
            });
        }
    }

    // Damage in the middle of the signed history refuses the open; a torn last entry is cut below.
    let history_tail = torn_history(dir)?;

    // Tiles are synced before each checkpoint is signed, so only those after it need checking.
    let trusted = checkpoint.as_ref().map_or(0, |(cp, _)| cp.size);
    let mut records = RecordCursor::new(&segments);
    let (mut tiles, rebuilt) = TileStore::rebuild(dir, size, trusted, |from, to| {
        leaf_hashes(dir, &mut records, pruned, from, to)
    })?;
    report.tiles_rebuilt = rebuilt;

    let mut last_checkpoint = None;
    let mut checkpoint_note = None;
    if let Some((cp, note)) = checkpoint {
        if tree::root(&tiles, cp.size)? != cp.root {
            return Err(AuditError::Fork { size: cp.size });
        }
        report.checkpoint_size = Some(cp.size);
        last_checkpoint = Some(cp.size);
        checkpoint_note = Some(note);
    }

    // Every check passed: the pins of a new log (or of one written before a pin existed), then
    // the repairs.
    for (path, content) in pins {
        write_atomic(&path, content.as_bytes())?;
    }
    // Tiles recomputed above whose files disagree with the records are written only now: a
    // refused open (a fork) leaves those files as they were, for the investigation. (Missing
    // ones were written as they were recomputed.)
    write_full_tiles(dir, &tiles.take_unwritten())?;
    tiles.forget_written(size);
    // A new log's (or a rolled-back one's, refused above) `segments` directory is made only now.
    std::fs::create_dir_all(&seg_dir).map_err(AuditError::io(&seg_dir))?;
    let mut segment = storage
        .open_segment(&last.path, good_len)
        .map_err(AuditError::io(&last.path))?;
    if let Some(first) = first_segment {
        storage
            .sync_dir(&seg_dir)
            .map_err(AuditError::io(&seg_dir))?;
        segments.push(first);
    }
    if let Some(reason) = cut {
        let data_end = data_end(&last.path, good_len, file_len)?;
        segment
            .truncate(good_len)
            .map_err(AuditError::io(&last.path))?;
        report.truncated_bytes = data_end - good_len;
        report.truncated_at = Some((last.path.clone(), good_len, reason));
    }
    if remove_beyond {
        std::fs::remove_file(&beyond).map_err(AuditError::io(&beyond))?;
        report.notes.push(format!(
            "removed leaf tile `{}` beyond the log end ({size} records): unsynced records were lost",
            beyond.display()
        ));
    }

    report.notes.extend(cut_torn_entries(dir)?);
    let (mut index_files, index_notes) = BucketFiles::open(dir)?;
    report.notes.extend(index_notes);
    let mut index = IndexWriter::default();
    let from = watermark(dir).seq.min(size);
    index_records(dir, &segments, from, size, &mut index, &mut index_files)?;
    if index_files.has_unsynced() {
        // A long rebuild (the index was removed) wrote buckets, or a crash left entries beyond
        // the recorded counts (or an earlier version recorded none): make them, the counts and
        // the watermark durable here, before the writer moves it on.
        index.flush_durably(
            dir,
            &mut index_files,
            Watermark {
                seq: size,
                segment: last.first_seq,
                offset: good_len,
            },
        )?;
    }
    report.reindexed = size - from;
    if let Some(torn) = history_tail {
        cut_torn_history(dir, torn, &mut report)?;
    }

    let shared = Arc::new(Shared {
        tiles: RwLock::new(tiles),
        checkpoint: Mutex::new(checkpoint_note),
        queue_depth: AtomicUsize::new(0),
        last_batch: AtomicUsize::new(0),
        last_fsync_us: AtomicU64::new(0),
        fsyncs: Default::default(),
        records: AtomicU64::new(size),
        checkpoint_size: AtomicU64::new(last_checkpoint.unwrap_or(0)),
        // `rebuild` just checked or wrote every full tile up to `size`.
        tiles_on_disk: AtomicU64::new(size),
        writable: AtomicBool::new(true),
        failure: Mutex::new(None),
        troubles: Default::default(),
        first_retained: AtomicU64::new(crate::tooling::first_retained(dir)),
    });
    Ok(Opened {
        shared,
        signer: Arc::new(signer),
        pseudonymiser,
        report,
        storage,
        segment,
        seg_first: last.first_seq,
        seg_len: good_len,
        index,
        index_files,
        last_checkpoint,
    })
}

/// Counts the good frames of the last segment: returns (records, good length, file length, why cut).
/// A frame is good when it is whole, its checksum holds, and it is the canonical record with the
/// expected sequence number; the first frame that is not ends the log. A clean end before the
/// file's end (no reason given) is a zero tail.
pub(super) fn scan_tail(seg: &SegmentInfo) -> Result<(u64, u64, u64, Option<String>), AuditError> {
    let file_len = std::fs::metadata(&seg.path)
        .map_err(AuditError::io(&seg.path))?
        .len();
    let mut r = FrameReader::open(&seg.path)?;
    let mut count = 0u64;
    loop {
        let at = r.offset();
        match r.next_frame().map_err(AuditError::io(&seg.path))? {
            FrameRead::Frame { payload, .. } => match decode(&payload) {
                Ok(rec) if rec.seq == seg.first_seq + count => count += 1,
                Ok(rec) => {
                    return Ok((
                        count,
                        at,
                        file_len,
                        Some(format!("record `{}` out of sequence", rec.seq)),
                    ));
                }
                Err(e) => return Ok((count, at, file_len, Some(e.to_string()))),
            },
            FrameRead::End => return Ok((count, at, file_len, None)),
            FrameRead::Bad { reason, .. } => return Ok((count, at, file_len, Some(reason))),
        }
    }
}

/// The end of the data in `path` between `from` and `to`: one past its last non-zero byte there,
/// or `from` if all are zeros. Read backwards, so a long zero tail after a short torn frame costs
/// one pass over the zeros at most.
fn data_end(path: &Path, from: u64, to: u64) -> Result<u64, AuditError> {
    const CHUNK: u64 = 1 << 16;
    let mut f = std::fs::File::open(path).map_err(AuditError::io(path))?;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut end = to;
    while end > from {
        let start = end.saturating_sub(CHUNK).max(from);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))
            .map_err(AuditError::io(path))?;
        f.read_exact(chunk).map_err(AuditError::io(path))?;
        if let Some(i) = chunk.iter().rposition(|&b| b != 0) {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(from)
}

/// Leaf hashes of records `from..to`: of those below `pruned` (removed by retention), from the
/// level-0 tiles, which a closed log emptied by retention may hold only in a partial tile; of the
/// others, from the records.
fn leaf_hashes(
    dir: &Path,
    records: &mut RecordCursor<'_>,
    pruned: u64,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, AuditError> {
    let mut out = Vec::with_capacity((to - from) as usize);
    let mut pos = from;
    while pos < to.min(pruned) {
        let skip = pos % TILE_WIDTH;
        let take = (to.min(pruned) - pos).min(TILE_WIDTH - skip);
        let hashes = read_tile(dir, 0, pos / TILE_WIDTH, skip + take)?;
        out.extend_from_slice(&hashes[skip as usize..]);
        pos += take;
    }
    records.for_each(pos, to, |_, _, _, bytes| {
        out.push(leaf_hash(bytes));
        Ok(())
    })?;
    if out.len() as u64 != to - from {
        return Err(AuditError::Corrupt(format!(
            "records {from}..{to} are needed to rebuild the tree but only {} were found",
            out.len()
        )));
    }
    Ok(out)
}

/// A torn tail of `checkpoints.log` to cut: where it starts, and what was found there.
///
/// The notary appends one note at a time, fsyncing each before the next, so a crash can tear only
/// the last append: a short last frame, a last frame whose checksum fails, or (where a file
/// system exposes blocks not yet written) zeros in it. Anything else that cannot be read (damage
/// with readable entries after it, or more bytes after the bad frame than one entry can hold) is
/// not a torn append, and cutting there would erase signed history: it is refused, naming the
/// file and the offset.
fn torn_history(dir: &Path) -> Result<Option<(u64, String)>, AuditError> {
    let path = dir.join("checkpoints.log");
    let file_len = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(AuditError::io(&path)(e)),
    };
    let mut r = FrameReader::open(&path)?;
    loop {
        match r.next_frame().map_err(AuditError::io(&path))? {
            FrameRead::Frame { .. } => {}
            // Zeros after the last entry: an append that never reached the disk. The next one
            // must not follow them.
            FrameRead::End => {
                let end = r.offset();
                return Ok((end < file_len)
                    .then(|| (end, format!("{} zero bytes at the end", file_len - end))));
            }
            FrameRead::Bad { offset, reason, .. } => {
                if is_torn_tail(&path, offset, file_len)? {
                    return Ok(Some((offset, reason)));
                }
                return Err(AuditError::Corrupt(format!(
                    "`{}` at offset {offset}: {reason}, with {} bytes after it that a torn last \
                     entry cannot explain: the checkpoint history is damaged; refusing to cut \
                     signed history (investigate with `tollbu audit verify`)",
                    path.display(),
                    file_len - offset
                )));
            }
        }
    }
}

/// Whether the bad frame at `offset` is all that follows in the file: no more than one entry can
/// hold, and no whole frame with a valid checksum starting after it.
fn is_torn_tail(path: &Path, offset: u64, file_len: u64) -> Result<bool, AuditError> {
    let rest = file_len - offset;
    if rest > (FRAME_HEADER + MAX_RECORD_BYTES) as u64 {
        return Ok(false);
    }
    let mut f = std::fs::File::open(path).map_err(AuditError::io(path))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(AuditError::io(path))?;
    let mut bytes = Vec::with_capacity(rest as usize);
    f.read_to_end(&mut bytes).map_err(AuditError::io(path))?;
    Ok(!holds_a_frame(bytes.get(1..).unwrap_or_default()))
}

/// Whether a whole, non-empty frame with a valid checksum starts anywhere in `bytes`.
fn holds_a_frame(bytes: &[u8]) -> bool {
    (0..bytes.len().saturating_sub(FRAME_HEADER)).any(|p| {
        let header = &bytes[p..p + FRAME_HEADER];
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        len > 0
            && len <= MAX_RECORD_BYTES
            && bytes
                .get(p + FRAME_HEADER..p + FRAME_HEADER + len)
                .is_some_and(|payload| crc32fast::hash(payload) == crc)
    })
}

/// Cuts the torn tail [`torn_history`] found, so that later notes stay readable. The note itself
/// was also written to `checkpoint` only after the history, so nothing that was published is lost.
fn cut_torn_history(
    dir: &Path,
    (offset, reason): (u64, String),
    report: &mut RecoveryReport,
) -> Result<(), AuditError> {
    let path = dir.join("checkpoints.log");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(AuditError::io(&path))?;
    f.set_len(offset).map_err(AuditError::io(&path))?;
    f.sync_all().map_err(AuditError::io(&path))?;
    report.notes.push(format!(
        "cut a torn checkpoint history entry at offset {offset} ({reason})"
    ));
    Ok(())
}
