//! Rebuilding the subject and consumer index from the records, in bounded memory: on open for the
//! records after the watermark (all of them when the index was removed), and for a log no gateway
//! has open (`tollbu audit reindex`) when `verify` found the index does not match the records.

use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, Instant};

use super::recover::scan_tail;
use crate::error::AuditError;
use crate::index::{BucketFiles, IndexKind, IndexWriter, Location, Watermark, remove_index};
use crate::segment::{FRAME_HEADER, SegmentInfo, for_each_in_range, list_segments};

/// Entries buffered before they are written out to their buckets: a rebuild of ten million
/// records would otherwise hold 800 MB of entries at once.
const REINDEX_BUFFER_BYTES: usize = 16 << 20;

/// How often a long rebuild makes what it wrote durable, with a watermark just after it. A rebuild
/// takes about 1.5 s per million records on the bench machine, so a gateway rebuilding a large log
/// on open can be killed before it finishes (by its startup probe, say); it then resumes from the
/// last durable watermark instead of from the start, and so finishes however often that happens.
const REINDEX_DURABLE_EVERY: Duration = Duration::from_secs(10);

/// Adds the entries of records `from..to` to `index`, writing them out (unsynced, noted in
/// `files`) whenever [`REINDEX_BUFFER_BYTES`] are pending, durably with a watermark every
/// [`REINDEX_DURABLE_EVERY`].
pub(crate) fn index_records(
    dir: &Path,
    segments: &[SegmentInfo],
    from: u64,
    to: u64,
    index: &mut IndexWriter,
    files: &mut BucketFiles,
) -> Result<(), AuditError> {
    let pace = Pace {
        buffer_bytes: REINDEX_BUFFER_BYTES,
        durable_every: REINDEX_DURABLE_EVERY,
    };
    index_records_paced(dir, segments, from..to, index, files, pace)
}

/// The two fields a record is indexed by, borrowed from its bytes; the parser checks the rest is
/// JSON without building it. A rebuild reads every record, and building each whole and checking
/// its canonical form (what `verify` does) cost most of its time; a record altered in a way the
/// index cannot see is `verify`'s to name, and every query re-reads and checks the records the
/// index points at.
#[derive(serde::Deserialize)]
struct IndexedKeys<'a> {
    #[serde(borrow)]
    subject: Option<Cow<'a, str>>,
    #[serde(borrow)]
    consumer: Option<Cow<'a, str>>,
}

/// When a rebuild writes out and when it makes its progress durable.
#[derive(Debug, Clone, Copy)]
struct Pace {
    buffer_bytes: usize,
    durable_every: Duration,
}

fn index_records_paced(
    dir: &Path,
    segments: &[SegmentInfo],
    range: std::ops::Range<u64>,
    index: &mut IndexWriter,
    files: &mut BucketFiles,
    pace: Pace,
) -> Result<(), AuditError> {
    let (from, to) = (range.start, range.end);
    let mut durable_at = Instant::now();
    for_each_in_range(segments, from, to, |seq, offset, seg, bytes| {
        let keys: IndexedKeys<'_> = serde_json::from_slice(bytes).map_err(|e| {
            AuditError::Corrupt(format!(
                "record `{seq}` in `{}` at offset {offset} is not valid json: {e}",
                seg.path.display()
            ))
        })?;
        let loc = Location {
            seq,
            segment: seg.first_seq,
            offset,
        };
        if let Some(s) = &keys.subject {
            index.add(IndexKind::Subject, s, loc);
        }
        if let Some(c) = &keys.consumer {
            index.add(IndexKind::Consumer, c, loc);
        }
        if index.pending_bytes() >= pace.buffer_bytes {
            if durable_at.elapsed() >= pace.durable_every {
                // Every record up to this one is indexed; the next starts right after its frame.
                let next = Watermark {
                    seq: seq + 1,
                    segment: seg.first_seq,
                    offset: offset + (FRAME_HEADER + bytes.len()) as u64,
                };
                index.flush_durably(dir, files, next)?;
                durable_at = Instant::now();
            } else {
                index.write_out(dir, files)?;
            }
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
    use crate::record::decode;
    use crate::segment::{frame, segment_name};

    fn subject(i: u64) -> String {
        format!("{:064x}", i % 5)
    }

    /// One segment of records 0..200 (subjects by [`subject`], one consumer), with record
    /// `unreadable` (if any) replaced by a frame that holds no record.
    fn two_hundred_records(dir: &Path, unreadable: Option<u64>) -> Vec<SegmentInfo> {
        let seg_dir = dir.join("segments");
        std::fs::create_dir_all(&seg_dir).unwrap();
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
            let payload = match unreadable {
                Some(n) if n == i => b"not a record".to_vec(),
                _ => crate::record::encode(i, &record).unwrap(),
            };
            frame(&payload, &mut bytes);
        }
        std::fs::write(seg_dir.join(segment_name(0)), &bytes).unwrap();
        list_segments(&seg_dir).unwrap()
    }

    fn seqs_about(dir: &Path, person: u64) -> Vec<u64> {
        lookup(dir, IndexKind::Subject, &subject(person))
            .unwrap()
            .iter()
            .map(|l| l.seq)
            .collect()
    }

    #[test]
    fn a_rebuild_writes_out_as_it_goes_and_finds_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let segments = two_hundred_records(dir.path(), None);
        let mut index = IndexWriter::default();
        let mut files = BucketFiles::empty();
        // 400 bytes: written out every five records rather than held to the end.
        let pace = Pace {
            buffer_bytes: 400,
            durable_every: Duration::MAX,
        };
        index_records_paced(dir.path(), &segments, 0..200, &mut index, &mut files, pace).unwrap();
        assert!(index.pending_bytes() < 400 && files.has_unsynced());
        index
            .flush_durably(dir.path(), &mut files, Watermark::default())
            .unwrap();
        assert_eq!(
            seqs_about(dir.path(), 2),
            (0..200).filter(|i| i % 5 == 2).collect::<Vec<_>>()
        );
        let by_consumer = lookup(dir.path(), IndexKind::Consumer, "0192:910000001").unwrap();
        assert_eq!(by_consumer.len(), 200);
    }

    /// A rebuild stopped part way (here by a record it cannot read; a killed process stops the
    /// same way) leaves a durable watermark at the last point it made durable, pointing at the
    /// next record's frame; a new start from the files and that watermark completes the index
    /// with every record once.
    #[test]
    fn a_rebuild_stopped_part_way_resumes_from_its_last_durable_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let segments = two_hundred_records(dir.path(), Some(150));
        // Written out every five records, each time durably.
        let pace = Pace {
            buffer_bytes: 400,
            durable_every: Duration::ZERO,
        };
        let mut index = IndexWriter::default();
        let mut files = BucketFiles::empty();
        let stopped =
            index_records_paced(dir.path(), &segments, 0..200, &mut index, &mut files, pace);
        assert!(stopped.is_err());
        let mark = crate::index::watermark(dir.path());
        assert!(mark.seq > 100 && mark.seq <= 150, "{mark:?}");
        // Repaired, and a new process starts from what is on disk.
        let segments = two_hundred_records(dir.path(), None);
        let mut at_mark =
            crate::segment::FrameReader::open_at(&segments[0].path, mark.offset).unwrap();
        let crate::segment::FrameRead::Frame { payload, .. } = at_mark.next_frame().unwrap() else {
            panic!("no frame at the watermark's offset {}", mark.offset);
        };
        assert_eq!(decode(&payload).unwrap().seq, mark.seq);
        let (mut files, _) = BucketFiles::open(dir.path()).unwrap();
        let mut index = IndexWriter::default();
        index_records_paced(
            dir.path(),
            &segments,
            mark.seq..200,
            &mut index,
            &mut files,
            pace,
        )
        .unwrap();
        let end = Watermark {
            seq: 200,
            segment: 0,
            offset: std::fs::metadata(&segments[0].path).unwrap().len(),
        };
        index.flush_durably(dir.path(), &mut files, end).unwrap();
        for person in 0..5 {
            assert_eq!(
                seqs_about(dir.path(), person),
                (0..200).filter(|i| i % 5 == person).collect::<Vec<_>>()
            );
        }
    }
}
