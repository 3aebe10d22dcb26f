//! Retention by age: which record is the first one whose body must be kept when everything older
//! than a cutoff time may go. Segments are removed whole, so this finds the first segment holding
//! a record at or after the cutoff; [`super::AuditLog::prune_before`] then removes the ones before
//! it (and still keeps anything not yet covered by a full tile and a signed checkpoint).
//!
//! Runs on the caller's thread, never the writer's: it reads sealed segments, which no longer
//! change, and decodes only each record's time; and it deletes the segments the writer gave up,
//! gently, since a file system's delete can hold up the writer's fsyncs.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;

use super::PruneReport;
use crate::checkpoint::CheckpointSigner;
use crate::error::AuditError;
use crate::index::{BUCKET_COUNT, compacted_below, drop_bucket_entries_below, write_compacted};
use crate::record::parse_time;
use crate::retention_statement::RetentionStatement;
use crate::segment::{FrameRead, FrameReader, SegmentInfo, list_segments, sync_dir, write_atomic};
use crate::tile::{TILE_WIDTH, read_tile, stored_count};

/// How far a record's time can trail the records committed before it: a record is timed when its
/// request starts and committed when it ends, and requests last seconds, never a day.
pub(crate) const DISORDER_SLACK: time::Duration = time::Duration::days(1);

/// First sequence number whose segment must stay for records at or after `cutoff` to be kept.
///
/// A segment goes only if its newest record is older than `cutoff`. Record times follow the
/// sequence only roughly, so near the cutoff the whole segment is read; a segment whose successor
/// starts more than [`DISORDER_SLACK`] before the cutoff is older throughout, which spares reading
/// a long backlog when retention is first turned on. The last segment is the active one and is
/// never a candidate.
pub(crate) fn first_record_to_keep(
    seg_dir: &Path,
    cutoff: OffsetDateTime,
) -> Result<u64, AuditError> {
    let segments = list_segments(seg_dir)?;
    let Some(active) = segments.last() else {
        return Ok(0);
    };
    for pair in segments.windows(2) {
        let (seg, next) = (&pair[0], &pair[1]);
        let next_starts = RecordTimes::open(next)?.next_time()?;
        if next_starts.is_some_and(|first| first < cutoff - DISORDER_SLACK) {
            continue;
        }
        let mut times = RecordTimes::open(seg)?;
        let mut newest: Option<OffsetDateTime> = None;
        while let Some(t) = times.next_time()? {
            newest = Some(newest.map_or(t, |n| n.max(t)));
        }
        match newest {
            Some(newest) if newest < cutoff => continue,
            // An empty sealed segment cannot happen (rotation follows an append); keep it and
            // everything after it rather than guess.
            _ => return Ok(seg.first_seq),
        }
    }
    Ok(active.first_seq)
}

/// The time of a segment's first record (`None` for an empty segment), read without the rest.
pub(crate) fn first_record_time(seg: &SegmentInfo) -> Result<Option<OffsetDateTime>, AuditError> {
    RecordTimes::open(seg)?.next_time()
}

/// The time field of a stored record; the rest is skipped by the parser, not built.
#[derive(Deserialize)]
struct RecordTime<'a> {
    #[serde(borrow)]
    time: &'a str,
}

/// The times of a segment's records, in order.
struct RecordTimes<'a> {
    seg: &'a SegmentInfo,
    reader: FrameReader,
}

impl<'a> RecordTimes<'a> {
    fn open(seg: &'a SegmentInfo) -> Result<Self, AuditError> {
        // A sealed segment may end in the zeros of the spare it was written over.
        let reader = FrameReader::open(&seg.path)?.zero_tail_unchecked();
        Ok(Self { seg, reader })
    }

    /// The next record's time, or `None` at the segment's end.
    fn next_time(&mut self) -> Result<Option<OffsetDateTime>, AuditError> {
        let path = &self.seg.path;
        let corrupt = |what: String| AuditError::Corrupt(format!("`{}`: {what}", path.display()));
        match self.reader.next_frame().map_err(AuditError::io(path))? {
            FrameRead::Frame { offset, payload } => {
                let stored: RecordTime<'_> = serde_json::from_slice(&payload)
                    .map_err(|e| corrupt(format!("record at offset {offset}: {e}")))?;
                parse_time(stored.time).map(Some)
            }
            FrameRead::End => Ok(None),
            FrameRead::Bad { offset, reason, .. } => {
                Err(corrupt(format!("offset {offset}: {reason}")))
            }
        }
    }
}

/// Suffix of a segment being deleted; [`list_segments`] no longer sees it.
const DELETING: &str = "deleting";

/// A deleted segment is shrunk by this much at a time…
const SHRINK_STEP: u64 = 4 << 20;

/// … with this pause after each step.
const SHRINK_PAUSE: Duration = Duration::from_millis(5);

/// Deletes `segments` (already below the `pruned` marker) and any left by an interrupted sweep.
///
/// Freeing a 64 MiB segment at once took 21–25 ms on a file system mounted with online discard,
/// and the writer's `fdatasync` waited behind it (acknowledgement p99 13–17 ms during a sweep,
/// 2.7–4.2 ms without the deletes). So each segment is first renamed out of the log (durably: a
/// crash must not leave a shortened segment where recovery reads records), then shrunk in small
/// steps with pauses, then unlinked.
pub(crate) fn delete_segments(seg_dir: &Path, segments: &[PathBuf]) -> Result<(), AuditError> {
    let mut doomed = Vec::new();
    for seg in segments {
        let to = seg.with_extension(format!("seg.{DELETING}"));
        match std::fs::rename(seg, &to) {
            Ok(()) => doomed.push(to),
            // Another sweep got there first.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(AuditError::io(seg)(e)),
        }
    }
    for entry in std::fs::read_dir(seg_dir).map_err(AuditError::io(seg_dir))? {
        let path = entry.map_err(AuditError::io(seg_dir))?.path();
        if path.extension().is_some_and(|e| e == DELETING) && !doomed.contains(&path) {
            doomed.push(path);
        }
    }
    if doomed.is_empty() {
        return Ok(());
    }
    sync_dir(seg_dir).map_err(AuditError::io(seg_dir))?;
    for path in &doomed {
        shrink_and_unlink(path).map_err(AuditError::io(path))?;
    }
    sync_dir(seg_dir).map_err(AuditError::io(seg_dir))
}

fn shrink_and_unlink(path: &Path) -> io::Result<()> {
    let file = match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut len = file.metadata()?.len();
    while len > SHRINK_STEP {
        len -= SHRINK_STEP;
        file.set_len(len)?;
        std::thread::sleep(SHRINK_PAUSE);
    }
    drop(file);
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Segments retention may remove when records below `limit` may go: whole segments from the
/// oldest on, never the one starting at `active_first`, at most `max`. Returns them with the first
/// record kept and whether `max` stopped the selection with more due.
pub(crate) fn select_removable(
    segments: &[SegmentInfo],
    limit: u64,
    active_first: u64,
    max: usize,
) -> (Vec<PathBuf>, u64, bool) {
    let mut removable = Vec::new();
    let mut first_retained = segments.first().map_or(0, |s| s.first_seq);
    for pair in segments.windows(2) {
        let (seg, next) = (&pair[0], &pair[1]);
        if next.first_seq > limit || seg.first_seq == active_first {
            break;
        }
        if removable.len() == max {
            return (removable, first_retained, true);
        }
        removable.push(seg.path.clone());
        first_retained = next.first_seq;
    }
    (removable, first_retained, false)
}

/// The end of a closed log (one past its last record) if every record of its `last` segment is
/// older than `cutoff` and the latest checkpoint (`published` records) covers exactly those, with
/// its level-0 partial tile on disk: the hashes that stand in for the records once they are gone.
/// `None` keeps the segment: a record not yet due, records no checkpoint covers, no records (an
/// empty segment holds nothing to remove), or a tail that does not read cleanly (a crash's, for
/// the writer's recovery to judge should the log be opened again).
fn all_due_end(
    dir: &Path,
    last: &SegmentInfo,
    cutoff: OffsetDateTime,
    published: u64,
) -> Result<Option<u64>, AuditError> {
    let mut times = RecordTimes::open(last)?;
    let mut count = 0u64;
    loop {
        match times.next_time() {
            Ok(Some(t)) if t < cutoff => count += 1,
            Ok(Some(_)) | Err(AuditError::Corrupt(_)) => return Ok(None),
            Ok(None) => break,
            Err(e) => return Err(e),
        }
    }
    let end = last.first_seq + count;
    if count == 0 || end != published {
        return Ok(None);
    }
    let width = end % TILE_WIDTH;
    if width > 0 && read_tile(dir, 0, end / TILE_WIDTH, width).is_err() {
        return Ok(None);
    }
    Ok(Some(end))
}

/// Signs the retention statement for the log `origin` and then writes the `pruned` marker: records
/// below `first_retained` exist only as hashes, removed as older than `cutoff`. Both go before any
/// segment is deleted, the statement first, so a crash midway leaves extra segments or a statement
/// reaching past the marker, never a marker no statement covers.
pub(crate) fn state_and_mark_pruned(
    dir: &Path,
    signer: &CheckpointSigner,
    origin: &str,
    first_retained: u64,
    cutoff: OffsetDateTime,
) -> Result<(), AuditError> {
    let statement = RetentionStatement::new(origin, first_retained, cutoff);
    crate::retention_statement::write(dir, &statement.sign(signer))?;
    write_atomic(
        &dir.join("pruned"),
        format!("{first_retained}\n").as_bytes(),
    )
}

/// Highest record count retention may prune below in a tree whose latest published checkpoint
/// has `published` records: only leaves in full level-0 tiles that checkpoint covers.
pub(crate) fn prunable_limit(published: u64) -> u64 {
    stored_count(0, published) / TILE_WIDTH * TILE_WIDTH
}

/// Retention on a log no gateway has open (e.g. the kept volume of a replica scaled away): removes
/// the bodies of records older than `cutoff` as a sweep would, then compacts the whole index. No
/// writer appends to it, so once all its records are due its last segment goes too (see
/// `all_due_end`); the `pruned` marker then holds the record count, and a later open goes on
/// from there. Takes
/// the directory's writer lock, so it refuses a log that is open. Prunes only below the latest
/// signed checkpoint, and signs the retention statement with `signer` before it removes anything:
/// the log's own key, or (for a log a key rotation retired) the key of whoever prunes it now,
/// which whoever verifies the log then passes as a trusted retention key.
pub fn prune_closed_log(
    dir: &Path,
    cutoff: std::time::SystemTime,
    signer: &CheckpointSigner,
) -> Result<PruneReport, AuditError> {
    prune_closed_log_in_steps(dir, cutoff, usize::MAX, signer)
}

/// [`prune_closed_log`] removing at most `max_segments` per call (`more_due` says when more are),
/// for a gateway sweeping a retired log beside the one it writes: a long backlog must not hold its
/// shutdown for minutes. The index is compacted once nothing more is due (and again by a later
/// call if a shutdown cut that short).
pub fn prune_closed_log_in_steps(
    dir: &Path,
    cutoff: std::time::SystemTime,
    max_segments: usize,
    signer: &CheckpointSigner,
) -> Result<PruneReport, AuditError> {
    // Before the lock, which would create the directory.
    super::require_log(dir)?;
    let origin_file = dir.join("origin");
    let origin = std::fs::read_to_string(&origin_file).map_err(AuditError::io(&origin_file))?;
    let seg_dir = dir.join("segments");
    let _lock = super::lock_dir(dir)?;
    let cutoff = OffsetDateTime::from(cutoff);
    let first_kept = first_record_to_keep(&seg_dir, cutoff)?;
    let published = crate::tooling::checkpoint_size(dir).unwrap_or(0);
    let segments = list_segments(&seg_dir)?;
    let last = segments.last();
    // No writer appends to a closed log: its last segment goes too once all its records are due
    // and the latest checkpoint covers them, whose partial tiles then hold the tree's right edge.
    let end_if_all_due = match last {
        Some(last) if first_kept == last.first_seq => all_due_end(dir, last, cutoff, published)?,
        _ => None,
    };
    let limit = end_if_all_due.unwrap_or_else(|| first_kept.min(prunable_limit(published)));
    let active_first = last.map_or(0, |s| s.first_seq);
    let (mut removable, mut first_retained, mut more_due) =
        select_removable(&segments, limit, active_first, max_segments);
    if let (Some(end), Some(last)) = (end_if_all_due, last)
        && !more_due
        && first_retained == last.first_seq
    {
        if removable.len() < max_segments {
            removable.push(last.path.clone());
            first_retained = end;
        } else {
            more_due = true;
        }
    }
    // With every segment gone, the marker alone says where the records end.
    first_retained = first_retained.max(crate::tooling::first_retained(dir));
    if !removable.is_empty() {
        state_and_mark_pruned(dir, signer, origin.trim(), first_retained, cutoff)?;
    }
    delete_segments(&seg_dir, &removable)?;
    if !more_due && compacted_below(dir) < first_retained {
        for n in 0..BUCKET_COUNT {
            drop_bucket_entries_below(dir, n, first_retained, None)?;
        }
        write_compacted(dir, first_retained)?;
    }
    Ok(PruneReport {
        segments_removed: removable.len(),
        first_retained,
        more_due,
    })
}
