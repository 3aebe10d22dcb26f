//! `verify`'s reading of segments, spread over the machine's cores. Reading a record, decoding it
//! with the canonical check and hashing its leaf are two thirds of `verify`'s work and depend on
//! nothing before the record, so reader threads take whole segments; the calling thread takes
//! their results in segment order for what does depend on order (sequence numbers against
//! positions, the tree, the tiles). Each segment's records are decoded and freed on the reader
//! that read them; only leaf hashes, findings and the index tally cross threads.
//!
//! A reader assumes the segment's first record sits at the position the segment's name gives. When
//! the calling thread finds it elsewhere (records missing or added before it), it reads that
//! segment again itself from the true position, so every finding is what one sequential pass
//! reports.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};

use super::super::index_check::SegmentTally;
use crate::error::AuditError;
use crate::hash::{Hash, leaf_hash};
use crate::record::decode;
use crate::segment::{FrameRead, FrameReader, SegmentInfo};

/// At most this many records per scan (8 MiB of leaf hashes). A 64 MiB segment of gateway records
/// holds far fewer; one of tiny frames, or a file grown far beyond a segment's size, is read on
/// in further scans by the calling thread, so that memory stays bounded whatever the files hold.
#[cfg(not(test))]
pub(super) const SCAN_RECORDS: usize = 1 << 18;
/// Small in unit tests, so that their segments (about 30 records) are read in several scans.
#[cfg(test)]
pub(super) const SCAN_RECORDS: usize = 8;

/// One segment's records (or its first [`SCAN_RECORDS`] from an offset) as a reader found them.
pub(super) struct SegmentScan {
    /// Position assumed for the segment's first record.
    pub start: u64,
    /// False when the file was gone by the time it was opened.
    pub found: bool,
    /// Leaf hashes in record order (also of records that failed to decode).
    pub leaves: Vec<Hash>,
    /// In record order; `at` is a position, `start` plus the record's place in the segment.
    pub findings: Vec<Finding>,
    pub tally: SegmentTally,
    /// Where the rest of the segment starts, when the scan stopped at [`SCAN_RECORDS`].
    pub rest: Option<u64>,
}

pub(super) enum Finding {
    /// Record `at` carries sequence number `seq`: given for the first record decoded and wherever
    /// the difference between sequence number and position changes, which is all a check of
    /// sequence numbers against positions needs.
    Seq {
        at: u64,
        seq: u64,
    },
    Problem {
        at: u64,
        text: String,
    },
}

impl Finding {
    pub(super) fn at(&self) -> u64 {
        match self {
            Finding::Seq { at, .. } | Finding::Problem { at, .. } => *at,
        }
    }
}

/// Reads `seg` from byte `from` (up to [`SCAN_RECORDS`] records), the first record read taken to
/// be at position `start`.
pub(super) fn scan_segment(
    seg: &SegmentInfo,
    from: u64,
    start: u64,
    tally: SegmentTally,
) -> Result<SegmentScan, AuditError> {
    #[cfg(test)]
    if from == 0 {
        super::tests::before_segment(seg);
    }
    let mut scan = SegmentScan {
        start,
        found: true,
        leaves: Vec::new(),
        findings: Vec::new(),
        tally,
        rest: None,
    };
    let opened = match from {
        0 => FrameReader::open(&seg.path),
        _ => FrameReader::open_at(&seg.path, from),
    };
    let mut r = match opened {
        Ok(r) => r,
        Err(AuditError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            scan.found = false;
            return Ok(scan);
        }
        Err(e) => return Err(e),
    };
    let mut pos = start;
    let mut last_shift = None;
    loop {
        if scan.leaves.len() == SCAN_RECORDS {
            scan.rest = Some(r.offset());
            break;
        }
        match r.next_frame().map_err(AuditError::io(&seg.path))? {
            FrameRead::End => break,
            FrameRead::Frame { offset, payload } => {
                match decode(&payload) {
                    Ok(rec) => {
                        scan.tally
                            .note_record(pos, seg.first_seq, offset, &rec.record);
                        let shift = i128::from(rec.seq) - i128::from(pos);
                        if last_shift != Some(shift) {
                            scan.findings.push(Finding::Seq {
                                at: pos,
                                seq: rec.seq,
                            });
                            last_shift = Some(shift);
                        }
                    }
                    Err(e) => scan.findings.push(Finding::Problem {
                        at: pos,
                        text: format!("record {pos} is altered: {e}"),
                    }),
                }
                scan.leaves.push(leaf_hash(&payload));
                pos += 1;
            }
            FrameRead::Bad {
                offset,
                reason,
                payload,
            } => {
                let where_ = format!("`{}` offset {offset}", seg.path.display());
                match payload {
                    Some(p) => {
                        scan.findings.push(Finding::Problem {
                            at: pos,
                            text: format!("record {pos} is altered ({reason} at {where_})"),
                        });
                        scan.leaves.push(leaf_hash(&p));
                        pos += 1;
                    }
                    None => {
                        scan.findings.push(Finding::Problem {
                            at: pos,
                            text: format!("record {pos} is unreadable ({reason} at {where_}); the rest of the segment is skipped"),
                        });
                        break;
                    }
                }
            }
        }
    }
    Ok(scan)
}

type ScanResult = Result<SegmentScan, AuditError>;

struct Job {
    seg: SegmentInfo,
    tally: SegmentTally,
    reply: mpsc::Sender<ScanResult>,
}

/// Segments handed to reader threads ahead of the calling thread, answered in the order asked.
pub(super) struct ReadAhead<'a> {
    /// `None` without readers. Dropped with this: each reader finishes the segment in hand and
    /// stops, so the scope that started them can end.
    jobs: Option<mpsc::Sender<Job>>,
    /// Segment numbers (in the caller's list) handed out, with where their answer comes.
    asked: VecDeque<(usize, mpsc::Receiver<ScanResult>)>,
    /// How many segments may be read ahead at once.
    depth: usize,
    next: usize,
    segs: &'a [SegmentInfo],
}

impl<'a> ReadAhead<'a> {
    /// Starts `readers` threads in `scope`; with none, every segment is read when it is taken.
    pub(super) fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        readers: usize,
        segs: &'a [SegmentInfo],
    ) -> ReadAhead<'a> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = std::sync::Arc::new(Mutex::new(queue));
        let mut started = 0;
        for n in 0..readers {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tollbu-verify-{n}"))
                .spawn_scoped(scope, move || read_jobs(&queue));
            if spawned.is_ok() {
                started += 1;
            }
        }
        ReadAhead {
            jobs: (started > 0).then_some(jobs),
            asked: VecDeque::new(),
            // Enough to keep every reader busy while the calling thread takes one segment.
            depth: 2 * started,
            next: 0,
            segs,
        }
    }

    /// The scan of segment `i` of the list (whose records start at or above `skip_below`), its
    /// first record at `start`; `tally` is an empty one for it. Segments below `i` are no longer
    /// wanted; later ones whose records start below `skip_below` will not be asked for.
    pub(super) fn take(
        &mut self,
        i: usize,
        start: u64,
        skip_below: u64,
        tally: impl Fn() -> SegmentTally,
    ) -> ScanResult {
        while self.asked.front().is_some_and(|(asked, _)| *asked < i) {
            self.asked.pop_front();
        }
        self.next = self.next.max(i);
        if let Some(jobs) = &self.jobs {
            while self.asked.len() < self.depth && self.next < self.segs.len() {
                let seg = &self.segs[self.next];
                if seg.first_seq >= skip_below {
                    let (reply, answer) = mpsc::channel();
                    let job = Job {
                        seg: seg.clone(),
                        tally: tally(),
                        reply,
                    };
                    if jobs.send(job).is_err() {
                        break;
                    }
                    self.asked.push_back((self.next, answer));
                }
                self.next += 1;
            }
        }
        let seg = &self.segs[i];
        let read = match self.asked.front() {
            Some((asked, _)) if *asked == i => self
                .asked
                .pop_front()
                .and_then(|(_, answer)| answer.recv().ok()),
            _ => None,
        };
        match read {
            Some(Ok(scan)) if scan.start == start => Ok(scan),
            // Read from another position, lost with its reader, or never handed out.
            Some(Ok(_)) | None => scan_segment(seg, 0, start, tally()),
            Some(Err(e)) => Err(e),
        }
    }
}

fn read_jobs(queue: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = {
            let queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.recv()
        };
        let Ok(job) = job else {
            return;
        };
        let _ = job
            .reply
            .send(scan_segment(&job.seg, 0, job.seg.first_seq, job.tally));
    }
}
