//! The index thread: writes the entries the writer hands over, makes them durable up to a
//! watermark, and, after retention, compacts the buckets one at a time between those jobs.
//!
//! Index writes run on their own thread: durable flushes fsync up to 512 bucket files, which must
//! not stall appends. The index is derived data (rebuilt from the watermark on open), so a failed
//! write only stops the watermark from moving; it never fails an append. At most one job waits
//! while another runs, so a slow disk makes jobs larger, not more numerous.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, TryRecvError, TrySendError};

use crate::error::AuditError;
use crate::index::{
    BUCKET_COUNT, BucketFiles, IndexWriter, Watermark, drop_bucket_entries_below, write_compacted,
};

pub(crate) struct Indexer {
    tx: Option<mpsc::SyncSender<IndexJob>>,
    join: Option<std::thread::JoinHandle<()>>,
    /// The bucket files, when no thread could be started (or it is gone).
    inline_files: BucketFiles,
}

/// Entries for the index thread to write; with a watermark, also to make durable up to it; with
/// `compact_below` (after retention), also to start a compaction pass dropping the entries of
/// records below it.
struct IndexJob {
    entries: IndexWriter,
    mark: Option<Watermark>,
    compact_below: Option<u64>,
    dir: PathBuf,
}

impl IndexJob {
    /// Writes the entries; with a watermark, fsyncs every bucket written since the last one and
    /// moves it.
    fn write(&mut self, files: &mut BucketFiles) -> Result<(), AuditError> {
        match self.mark {
            Some(mark) => self.entries.flush_durably(&self.dir, files, mark),
            None => self.entries.write_out(&self.dir, files),
        }
    }
}

/// A compaction pass under way: buckets below `next` are done.
struct Compaction {
    dir: PathBuf,
    below: u64,
    next: usize,
}

impl Compaction {
    /// Compacts one bucket; true once every bucket is done (then recorded in `index/compacted`).
    /// Best effort: a bucket that cannot be rewritten keeps entries that queries skip, and the
    /// pass goes on; only a finished pass is recorded.
    fn step(&mut self, files: &mut BucketFiles) -> bool {
        let _ = drop_bucket_entries_below(&self.dir, self.next, self.below, Some(files));
        self.next += 1;
        if self.next < BUCKET_COUNT {
            return false;
        }
        let _ = write_compacted(&self.dir, self.below);
        true
    }
}

impl Indexer {
    /// Starts the thread, which keeps `files` (the buckets as recovery left them) up to date.
    pub fn start(files: BucketFiles) -> Self {
        let (tx, rx) = mpsc::sync_channel::<IndexJob>(1);
        let thread_files = files.clone();
        let join = std::thread::Builder::new()
            .name("tollbu-audit-index".into())
            .spawn(move || run(&rx, thread_files));
        match join {
            // The inline copy is only written through without a watermark (the thread is
            // gone), which records no counts.
            Ok(join) => Self {
                tx: Some(tx),
                join: Some(join),
                inline_files: files,
            },
            Err(_) => Self {
                tx: None,
                join: None,
                inline_files: files,
            },
        }
    }

    /// Hands `entries` to the index thread (to be made durable up to `mark`, if given, and then to
    /// compact below `compact_below`, if given); gives them back when a job is already waiting,
    /// unless `wait` (shutdown), which blocks until there is room.
    pub fn submit(
        &mut self,
        dir: &Path,
        entries: IndexWriter,
        mark: Option<Watermark>,
        compact_below: Option<u64>,
        wait: bool,
    ) -> Result<(), IndexWriter> {
        let job = IndexJob {
            entries,
            mark,
            compact_below,
            dir: dir.to_path_buf(),
        };
        let Some(tx) = &self.tx else {
            // No thread could be started: write inline rather than not at all (and leave
            // compaction to a later start).
            let mut job = job;
            let _ = job.write(&mut self.inline_files);
            return Ok(());
        };
        let refused = if wait {
            tx.send(job).map_err(|mpsc::SendError(job)| job)
        } else {
            match tx.try_send(job) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(job)) => return Err(job.entries),
                Err(TrySendError::Disconnected(job)) => Err(job),
            }
        };
        // The thread is gone, and with it its list of buckets written but not fsynced: write
        // inline, and leave the watermark where it is rather than move it past entries that may
        // not be durable (the next open indexes those records again).
        if let Err(mut job) = refused {
            job.mark = None;
            let _ = job.write(&mut self.inline_files);
        }
        Ok(())
    }

    /// Waits for the jobs handed over (an unfinished compaction pass is left; the next start's
    /// retention begins another), then stops the thread.
    pub fn finish(&mut self) {
        self.tx = None;
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// The thread: jobs first; while a compaction pass is under way and no job waits, one bucket at a
/// time, so a pass over a large index never holds up the entries piling up behind it.
fn run(rx: &mpsc::Receiver<IndexJob>, mut files: BucketFiles) {
    let mut failed = false;
    let mut compaction: Option<Compaction> = None;
    loop {
        let job = match compaction {
            Some(_) => match rx.try_recv() {
                Ok(job) => Some(job),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => return,
            },
            None => match rx.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            },
        };
        let Some(mut job) = job else {
            if compaction.as_mut().is_some_and(|c| c.step(&mut files)) {
                compaction = None;
            }
            continue;
        };
        // After one failure the watermark must stay put: moving it past entries that were never
        // written would hide those records from indexed queries for good.
        if !failed && job.write(&mut files).is_err() {
            failed = true;
        }
        if let Some(below) = job.compact_below {
            // A new pass replaces one under way: it drops more, and starts from the first bucket.
            compaction = Some(Compaction {
                dir: job.dir,
                below,
                next: 0,
            });
        }
    }
}
