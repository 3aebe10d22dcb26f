//! Rebuilding the subject and consumer index from the records, in bounded memory: on open for the
//! records after the watermark (all of them when the index was removed), and for a log no gateway
//! has open (`tollbu audit reindex`) when `verify` found the index does not match the records.

use std::path::Path;

use super::recover::scan_tail;
use crate::error::AuditError;
use crate::index::{BucketFiles, IndexKind, IndexWriter, Location, Watermark, remove_index};
use crate::record::decode;
use crate::segment::{SegmentInfo, for_each_in_range, list_segments};

/// Entries buffered before they are written out to their buckets: a rebuild of ten million
/// records would otherwise hold 800 MB of entries at once.
const REINDEX_BUFFER_BYTES: usize = 16 << 20;

/// Adds the entries of records `from..to` to `index`, writing them out (unsynced, noted in
/// `files`) whenever [`REINDEX_BUFFER_BYTES`] are pending.
pub(crate) fn index_records(
    dir: &Path,
    segments: &[SegmentInfo],
    from: u64,
    to: u64,
    index: &mut IndexWriter,
    files: &mut BucketFiles,
) -> Result<(), AuditError> {
    index_records_buffered(dir, segments, from..to, index, files, REINDEX_BUFFER_BYTES)
}

fn index_records_buffered(
    dir: &Path,
    segments: &[SegmentInfo],
    range: std::ops::Range<u64>,
    index: &mut IndexWriter,
    files: &mut BucketFiles,
    buffer_bytes: usize,
) -> Result<(), AuditError> {
    let (from, to) = (range.start, range.end);
    for_each_in_range(segments, from, to, |seq, offset, seg, bytes| {
        let rec = decode(bytes)?.record;
        let loc = Location {
            seq,
            segment: seg.first_seq,
            offset,
        };
        if let Some(s) = &rec.subject {
            index.add(IndexKind::Subject, s, loc);
        }
        if let Some(c) = &rec.consumer {
            index.add(IndexKind::Consumer, c, loc);
        }
        if index.pending_bytes() >= buffer_bytes {
            index.write_out(dir, files)?;
        }
        Ok(())
    })
}

/// What a rebuild did, for the officer who ran it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReindexReport {
    /// Records whose entries were written (those still stored: retention removed the others).
    pub records: u64,
}

/// Rebuilds the index of a log no gateway has open from its records: removes the old buckets and
/// watermark, indexes every stored record and makes the result durable. Takes the directory's
/// writer lock. Needs no key: entries hold pseudonyms and consumers as the records do.
pub fn reindex_closed_log(dir: &Path) -> Result<ReindexReport, AuditError> {
    super::require_log(dir)?;
    let _lock = super::lock_dir(dir)?;
    let segments = list_segments(&dir.join("segments"))?;
    let (Some(first), Some(last)) = (segments.first(), segments.last()) else {
        return Ok(ReindexReport { records: 0 });
    };
    // Up to the last whole frame; a torn tail stays for the writer's recovery to judge.
    let (count, good_len, _, _) = scan_tail(last)?;
    let end = last.first_seq + count;
    remove_index(dir)?;
    let mut index = IndexWriter::default();
    let mut files = BucketFiles::empty();
    index_records(dir, &segments, first.first_seq, end, &mut index, &mut files)?;
    index.flush_durably(
        dir,
        &mut files,
        Watermark {
            seq: end,
            segment: last.first_seq,
            offset: good_len,
        },
    )?;
    Ok(ReindexReport {
        records: end - first.first_seq,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::Record;
    use crate::index::lookup;
    use crate::segment::{frame, segment_name};

    #[test]
    fn a_rebuild_writes_out_as_it_goes_and_finds_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let seg_dir = dir.path().join("segments");
        std::fs::create_dir_all(&seg_dir).unwrap();
        let subject = |i: u64| format!("{:064x}", i % 5);
        let mut bytes = Vec::new();
        for i in 0..200u64 {
            let record = Record {
                time: "2026-03-01T10:00:00.000Z".into(),
                service: "population".into(),
                operation: "get-person".into(),
                subject: Some(subject(i)),
                consumer: Some("0192:910000001".into()),
                ..Record::default()
            };
            frame(&crate::record::encode(i, &record).unwrap(), &mut bytes);
        }
        std::fs::write(seg_dir.join(segment_name(0)), &bytes).unwrap();
        let segments = list_segments(&seg_dir).unwrap();
        let mut index = IndexWriter::default();
        let mut files = BucketFiles::empty();
        // 400 bytes: written out every five records rather than held to the end.
        index_records_buffered(dir.path(), &segments, 0..200, &mut index, &mut files, 400).unwrap();
        assert!(index.pending_bytes() < 400 && files.has_unsynced());
        index
            .flush_durably(dir.path(), &mut files, Watermark::default())
            .unwrap();
        let about_2: Vec<u64> = lookup(dir.path(), IndexKind::Subject, &subject(2))
            .unwrap()
            .iter()
            .map(|l| l.seq)
            .collect();
        assert_eq!(about_2, (0..200).filter(|i| i % 5 == 2).collect::<Vec<_>>());
        let by_consumer = lookup(dir.path(), IndexKind::Consumer, "0192:910000001").unwrap();
        assert_eq!(by_consumer.len(), 200);
    }
}
