//! Retention by age: which record is the first one whose body must be kept when everything older
//! than a cutoff time may go. Segments are removed whole, so this finds the first segment holding
//! a record at or after the cutoff; [`super::AuditLog::prune_before`] then removes the ones before
//! it (and still keeps anything not yet covered by a full tile and a signed checkpoint).
//!
//! Runs on the caller's thread, never the writer's: it reads sealed segments, which no longer
//! change, and decodes only each record's time.

use std::path::Path;

use serde::Deserialize;
use time::OffsetDateTime;

use crate::error::AuditError;
use crate::record::parse_time;
use crate::segment::{FrameRead, FrameReader, SegmentInfo, list_segments};

/// The time field of a stored record; the rest is skipped by the parser, not built.
#[derive(Deserialize)]
struct RecordTime<'a> {
    #[serde(borrow)]
    time: &'a str,
}

/// First sequence number whose segment must stay for records at or after `cutoff` to be kept.
///
/// A segment goes only if its newest record is older than `cutoff`: record times follow the
/// sequence only roughly (a record is timed before it waits for its commit), so the whole segment
/// is read rather than trusting the next segment's first time. The last segment is the active one
/// and is never a candidate.
pub(crate) fn first_record_to_keep(
    seg_dir: &Path,
    cutoff: OffsetDateTime,
) -> Result<u64, AuditError> {
    let segments = list_segments(seg_dir)?;
    let Some((active, sealed)) = segments.split_last() else {
        return Ok(0);
    };
    for seg in sealed {
        match newest_time(seg)? {
            Some(newest) if newest < cutoff => continue,
            // An empty sealed segment cannot happen (rotation follows an append); keep it and
            // everything after it rather than guess.
            _ => return Ok(seg.first_seq),
        }
    }
    Ok(active.first_seq)
}

/// Newest record time in `seg`, or `None` if it holds no record.
fn newest_time(seg: &SegmentInfo) -> Result<Option<OffsetDateTime>, AuditError> {
    let corrupt = |what: String| AuditError::Corrupt(format!("`{}`: {what}", seg.path.display()));
    // A sealed segment may end in the zeros of the spare it was written over.
    let mut reader = FrameReader::open(&seg.path)?.zero_tail_unchecked();
    let mut newest: Option<OffsetDateTime> = None;
    loop {
        match reader.next_frame().map_err(AuditError::io(&seg.path))? {
            FrameRead::Frame { offset, payload } => {
                let stored: RecordTime<'_> = serde_json::from_slice(&payload)
                    .map_err(|e| corrupt(format!("record at offset {offset}: {e}")))?;
                let time = parse_time(stored.time)?;
                newest = Some(newest.map_or(time, |n| n.max(time)));
            }
            FrameRead::End => return Ok(newest),
            FrameRead::Bad { offset, reason, .. } => {
                return Err(corrupt(format!("offset {offset}: {reason}")));
            }
        }
    }
}
