//! The live log: configuration, the cheap cloneable handle the gateway holds, and its read side
//! (proofs, checkpoints, stats). Appends go to one writer thread ([`writer`]); opening and crash
//! recovery live in [`recover`].

mod indexer;
mod notary;
mod recover;
mod reindex;
pub(crate) mod retention;
mod spare;
mod writer;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

pub use recover::RecoveryReport;
pub use reindex::{ReindexReport, reindex_closed_log};
pub use retention::{prune_closed_log, prune_closed_log_in_steps};
use writer::Command;

use crate::error::AuditError;
use crate::pseudonym::Pseudonymiser;
use crate::record::{Prepared, Record};
use crate::segment::{FsStorage, Storage};
use crate::tile::TileStore;
use crate::tree::{self, ConsistencyProof, InclusionProof};

/// Records waiting for the writer beyond this are refused (the gateway answers 503) rather than
/// letting memory grow without bound under overload.
pub const QUEUE_CAPACITY: usize = 65_536;

/// Most records one [`AuditLog::append_batch`] call may carry.
pub const MAX_BATCH_RECORDS: usize = 16_384;

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge after the batch is fsynced. Nothing acknowledged is lost on power failure.
    Fsync,
    /// Acknowledge after `write(2)`; fsync every `fsync_interval`. A process crash loses nothing
    /// (the page cache survives), a power failure can lose up to `fsync_interval` of records.
    /// Checkpoints are still only signed over fsynced records.
    Relaxed { fsync_interval: Duration },
}

/// Where the log lives and how it behaves.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub dir: PathBuf,
    /// Log identity and checkpoint key name, e.g. `tollbu.example/registry-a/replica-0`.
    pub origin: String,
    /// PKCS#8 PEM Ed25519 private key that signs checkpoints.
    pub signing_key_pem: PathBuf,
    /// 64-hex-char HMAC key for subject pseudonyms; keep it out of `dir`.
    pub pseudonym_key: PathBuf,
    pub durability: Durability,
    /// Sign a checkpoint after this many records…
    pub checkpoint_every: u64,
    /// …or after this long, whichever comes first (only when the tree grew).
    pub checkpoint_interval: Duration,
    /// Start a new segment file once the current one reaches this size.
    pub segment_max_bytes: u64,
}

impl AuditConfig {
    /// Safe defaults: fsync before acknowledging, a checkpoint every
    /// [`DEFAULT_CHECKPOINT_EVERY`] records or [`DEFAULT_CHECKPOINT_INTERVAL`], 64 MiB segments.
    pub fn new(
        dir: impl Into<PathBuf>,
        origin: impl Into<String>,
        signing_key_pem: impl Into<PathBuf>,
        pseudonym_key: impl Into<PathBuf>,
    ) -> Self {
        Self {
            dir: dir.into(),
            origin: origin.into(),
            signing_key_pem: signing_key_pem.into(),
            pseudonym_key: pseudonym_key.into(),
            durability: Durability::Fsync,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            segment_max_bytes: 64 << 20,
        }
    }
}

/// Default checkpoint cadence, mainly time-bound: records newer than the latest signed checkpoint
/// are the ones an intruder could still rewrite unseen, and a second bounds that window at any
/// rate. The count only matters above 10,000 appends/s. (A count of 1,000 meant 20 checkpoints a
/// second at 20,000 appends/s, each a burst of file creations and fsyncs that the appends' own
/// fsyncs queued behind; docs/BENCHMARKS.md.)
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 10_000;
/// See [`DEFAULT_CHECKPOINT_EVERY`].
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Upper bounds (µs) of the segment-fsync histogram in [`AuditStats::fsync`].
pub const FSYNC_BUCKETS_MICROS: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// How long segment fsyncs took since the log was opened. With durable acknowledgement every
/// request waits for one or two of these, so this is where a slow or stalling disk shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsyncHistogram {
    /// Cumulative counts: `(upper bound in µs, fsyncs that took at most that long)`.
    pub buckets: Vec<(u64, u64)>,
    pub count: u64,
    pub sum_micros: u64,
}

/// Counts behind [`FsyncHistogram`], updated by the writer thread.
#[derive(Default)]
pub(crate) struct FsyncCounts {
    per_bucket: [AtomicU64; FSYNC_BUCKETS_MICROS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl FsyncCounts {
    pub fn record(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = FSYNC_BUCKETS_MICROS.iter().position(|&b| micros <= b) {
            self.per_bucket[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn snapshot(&self) -> FsyncHistogram {
        let mut below = 0;
        let buckets = FSYNC_BUCKETS_MICROS
            .iter()
            .zip(&self.per_bucket)
            .map(|(&bound, n)| {
                below += n.load(Ordering::Relaxed);
                (bound, below)
            })
            .collect();
        FsyncHistogram {
            buckets,
            count: self.count.load(Ordering::Relaxed),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of the writer's health, for `/metrics` and `/readyz`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditStats {
    pub queue_depth: usize,
    pub last_batch_size: usize,
    pub last_fsync_micros: u64,
    pub fsync: FsyncHistogram,
    /// Durable records (the tree size).
    pub records: u64,
    pub checkpoint_size: u64,
    /// False after a storage failure; every append then fails until the process restarts.
    pub writable: bool,
    /// Why the last batch of appends failed and was undone (a full disk, say), while no later
    /// one has succeeded: requests are refused until space returns.
    pub appends_failing: Option<String>,
    /// Why tiles or a checkpoint could not be written, while they are being retried: records are
    /// still durable, but the published checkpoint falls behind.
    pub checkpoints_failing: Option<String>,
    /// Records below this were removed by retention (their hashes stay); 0 if none were.
    pub first_retained: u64,
}

/// What [`AuditLog::prune_before`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub segments_removed: usize,
    /// Records below this index now exist only as leaf hashes in the tiles.
    pub first_retained: u64,
    /// One call removes at most [`MAX_SEGMENTS_PER_PRUNE`] segments; when it stopped there with
    /// more due, call again.
    pub more_due: bool,
}

/// Most segments one prune call deletes (2 GiB at the default size, a few seconds of gentle
/// deletes), so that a sweep over a long backlog comes back often, e.g. to let a shutdown through.
pub const MAX_SEGMENTS_PER_PRUNE: usize = 32;

/// State the writer publishes and readers consult.
pub(crate) struct Shared {
    pub tiles: RwLock<TileStore>,
    pub checkpoint: Mutex<Option<String>>,
    pub queue_depth: AtomicUsize,
    pub last_batch: AtomicUsize,
    pub last_fsync_us: AtomicU64,
    pub fsyncs: FsyncCounts,
    pub records: AtomicU64,
    pub checkpoint_size: AtomicU64,
    /// Every full tile of a tree this many leaves large is on disk; the writer drops its in-memory
    /// copies of those.
    pub tiles_on_disk: AtomicU64,
    pub writable: AtomicBool,
    pub failure: Mutex<Option<String>>,
    /// Failures the log rides out rather than stopping for, by [`Trouble`]: set while they last.
    pub troubles: [TroubleState; 2],
    /// The `pruned` marker: records below it exist only as hashes.
    pub first_retained: AtomicU64,
}

/// A storage failure that stops nothing for good: a batch of appends undone, or tiles and a
/// checkpoint left for the next try. Both end once space returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trouble {
    Appends = 0,
    Checkpoints = 1,
}

#[derive(Default)]
pub(crate) struct TroubleState {
    active: AtomicBool,
    why: Mutex<Option<String>>,
}

impl Shared {
    /// Marks the log unwritable after a storage failure; the first reason given is kept.
    pub fn poison(&self, why: &str) {
        let was_writable = self.writable.swap(false, Ordering::AcqRel);
        if was_writable {
            tracing::error!(
                reason = why,
                "the audit log stopped after a storage failure: every request now fails until \
                 the process is restarted"
            );
        }
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert_with(|| why.to_string());
        }
    }

    /// Records a failure being ridden out; logged when it starts.
    pub fn report_trouble(&self, kind: Trouble, why: &str) {
        let state = &self.troubles[kind as usize];
        if let Ok(mut w) = state.why.lock() {
            *w = Some(why.to_string());
        }
        if !state.active.swap(true, Ordering::AcqRel) {
            tracing::error!(part = ?kind, reason = why, "audit log storage is failing; retrying");
        }
    }

    /// Ends a failure being ridden out; cheap when there is none.
    pub fn clear_trouble(&self, kind: Trouble) {
        let state = &self.troubles[kind as usize];
        if state.active.load(Ordering::Acquire) && state.active.swap(false, Ordering::AcqRel) {
            if let Ok(mut w) = state.why.lock() {
                *w = None;
            }
            tracing::info!(part = ?kind, "audit log storage works again");
        }
    }

    /// Whether a failure of this kind is being ridden out (one atomic load).
    pub fn has_trouble(&self, kind: Trouble) -> bool {
        self.troubles[kind as usize].active.load(Ordering::Acquire)
    }

    fn trouble(&self, kind: Trouble) -> Option<String> {
        let state = &self.troubles[kind as usize];
        if !state.active.load(Ordering::Acquire) {
            return None;
        }
        state.why.lock().ok().and_then(|w| w.clone())
    }
}

struct Inner {
    tx: Sender<Command>,
    shared: Arc<Shared>,
    pseudonymiser: Pseudonymiser,
    verifier_key: String,
    /// The log's key, for the retention statements of retired logs this gateway sweeps.
    signer: Arc<crate::checkpoint::CheckpointSigner>,
    dir: PathBuf,
    join: Mutex<Option<JoinHandle<()>>>,
    /// Exclusive lock on `<dir>/LOCK`: two writers would fork the log.
    lock: Mutex<Option<std::fs::File>>,
}

/// Refuses a directory that holds no log, for the tools that read or prune an existing one: a
/// mistyped path must be an error, not "0 records" or a new, empty log.
pub(crate) fn require_log(dir: &Path) -> Result<(), AuditError> {
    if dir.join("segments").is_dir() {
        Ok(())
    } else {
        Err(AuditError::NoLog(dir.to_path_buf()))
    }
}

/// Takes the directory's writer lock, creating the directory if needed.
pub(crate) fn lock_dir(dir: &Path) -> Result<std::fs::File, AuditError> {
    std::fs::create_dir_all(dir).map_err(AuditError::io(dir))?;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(AuditError::io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(AuditError::Locked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(AuditError::io(&path)(e)),
    }
}

/// Handle to an open audit log. Clones share one writer thread.
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (or creates) the log in `cfg.dir`, recovers from a crash, and starts the writer thread.
    pub fn open(cfg: AuditConfig) -> Result<(AuditLog, RecoveryReport), AuditError> {
        Self::open_with_storage(cfg, Arc::new(FsStorage))
    }

    /// [`AuditLog::open`] with segment I/O going through `storage` (tests inject failures here).
    pub fn open_with_storage(
        cfg: AuditConfig,
        storage: Arc<dyn Storage>,
    ) -> Result<(AuditLog, RecoveryReport), AuditError> {
        let lock = lock_dir(&cfg.dir)?;
        let opened = recover::open(&cfg, storage)?;
        let shared = opened.shared.clone();
        let verifier_key = opened.signer.verifier_key();
        let signer = opened.signer.clone();
        let pseudonymiser = opened.pseudonymiser.clone();
        // Unbounded on its own: `enqueue` holds it to QUEUE_CAPACITY records. A bounded channel
        // would allocate and touch all its slots up front (2.5 MiB, most of an idle gateway's
        // heap); this one allocates small blocks as commands arrive and frees them as they leave.
        let (tx, rx) = mpsc::channel();
        let report = opened.report.clone();
        let writer = writer::Writer::new(&cfg, opened)?;
        let join = std::thread::Builder::new()
            .name("tollbu-audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(AuditError::io(&cfg.dir))?;
        let log = AuditLog {
            inner: Arc::new(Inner {
                tx,
                shared,
                pseudonymiser,
                verifier_key,
                signer,
                dir: cfg.dir.clone(),
                join: Mutex::new(Some(join)),
                lock: Mutex::new(Some(lock)),
            }),
        };
        Ok((log, report))
    }

    fn submit(
        &self,
        record: &Record,
    ) -> Result<oneshot::Receiver<Result<u64, AuditError>>, AuditError> {
        let prepared = Prepared::new(record)?;
        let (tx, rx) = oneshot::channel();
        self.enqueue(
            1,
            Command::Append {
                record: Box::new(prepared),
                tx,
            },
        )?;
        Ok(rx)
    }

    fn submit_batch(
        &self,
        records: &[Record],
    ) -> Result<oneshot::Receiver<Result<Range<u64>, AuditError>>, AuditError> {
        if records.len() > MAX_BATCH_RECORDS {
            return Err(AuditError::BadRequest(format!(
                "a batch holds at most {MAX_BATCH_RECORDS} records, not {}",
                records.len()
            )));
        }
        let prepared = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Prepared::new(r).map_err(|e| AuditError::InvalidRecord(format!("record {i}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = oneshot::channel();
        self.enqueue(
            prepared.len(),
            Command::AppendBatch {
                records: prepared,
                tx,
            },
        )?;
        Ok(rx)
    }

    /// Queues `cmd` carrying `records` records, unless the log failed or the queue is full.
    fn enqueue(&self, records: usize, cmd: Command) -> Result<(), AuditError> {
        let shared = &self.inner.shared;
        if !shared.writable.load(Ordering::Acquire) {
            return Err(AuditError::Unwritable(self.failure()));
        }
        let queued = shared.queue_depth.fetch_add(records, Ordering::Relaxed);
        // An empty queue takes anything, so a batch is never refused for its size alone.
        if queued > 0 && queued + records > QUEUE_CAPACITY {
            shared.queue_depth.fetch_sub(records, Ordering::Relaxed);
            return Err(AuditError::Overloaded(QUEUE_CAPACITY));
        }
        self.inner.tx.send(cmd).map_err(|_| {
            shared.queue_depth.fetch_sub(records, Ordering::Relaxed);
            AuditError::Closed
        })
    }

    fn failure(&self) -> String {
        self.inner
            .shared
            .failure
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .unwrap_or_else(|| "storage failure".into())
    }

    /// Appends a record; resolves once it is durable (per [`Durability`]) with its leaf index.
    /// Works on any async runtime; the writer is a plain thread.
    pub fn append(
        &self,
        record: Record,
    ) -> impl Future<Output = Result<u64, AuditError>> + Send + use<> {
        self.append_ref(&record)
    }

    /// [`AuditLog::append`] for a record the caller keeps: it is validated and encoded before this
    /// returns, so the future holds only the acknowledgement, not the record (a gateway keeps
    /// thousands of these waiting on fsync at once).
    pub fn append_ref(
        &self,
        record: &Record,
    ) -> impl Future<Output = Result<u64, AuditError>> + Send + use<> {
        let queued = self.submit(record);
        async move { queued?.await.map_err(|_| AuditError::Closed)? }
    }

    /// Blocking [`AuditLog::append`] for non-async callers. Must not be called from inside an async task.
    pub fn append_blocking(&self, record: Record) -> Result<u64, AuditError> {
        let rx = self.submit(&record)?;
        rx.blocking_recv().map_err(|_| AuditError::Closed)?
    }

    /// Appends up to [`MAX_BATCH_RECORDS`] records as one unit: they get consecutive indexes and
    /// become durable together, or none is written (one invalid record refuses the whole batch).
    /// For importers and relays that hold many records at once; one wake-up acknowledges them all.
    pub async fn append_batch(&self, records: Vec<Record>) -> Result<Range<u64>, AuditError> {
        let rx = self.submit_batch(&records)?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Blocking [`AuditLog::append_batch`]. Must not be called from inside an async task.
    pub fn append_batch_blocking(&self, records: Vec<Record>) -> Result<Range<u64>, AuditError> {
        let rx = self.submit_batch(&records)?;
        rx.blocking_recv().map_err(|_| AuditError::Closed)?
    }

    /// Hex HMAC-SHA-256 pseudonym of a subject identifier, for [`Record::subject`].
    pub fn pseudonymise(&self, subject: &str) -> String {
        self.inner.pseudonymiser.pseudonym(subject)
    }

    /// The latest signed checkpoint (C2SP signed note), if one was signed.
    pub fn latest_checkpoint(&self) -> Option<String> {
        self.inner
            .shared
            .checkpoint
            .lock()
            .ok()
            .and_then(|c| c.clone())
    }

    /// The [`Pseudonymiser::key_check`] of this log's key, to tell whether another log on the
    /// volume can be searched with it.
    pub fn pseudonym_key_check(&self) -> String {
        self.inner.pseudonymiser.key_check()
    }

    /// `<origin>+<key id>+<base64 key>`: give this to whoever verifies checkpoints.
    pub fn verifier_key(&self) -> String {
        self.inner.verifier_key.clone()
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<InclusionProof, AuditError> {
        let tiles = self.tiles()?;
        if size > tiles.size() {
            return Err(AuditError::SizeBeyond {
                size,
                available: tiles.size(),
                of: "the log's tree",
            });
        }
        tree::inclusion_proof(&*tiles, index, size)
    }

    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<ConsistencyProof, AuditError> {
        let tiles = self.tiles()?;
        if new > tiles.size() {
            return Err(AuditError::SizeBeyond {
                size: new,
                available: tiles.size(),
                of: "the log's tree",
            });
        }
        tree::consistency_proof(&*tiles, old, new)
    }

    /// Bytes of tile `tile/<level>/<n>` (or its partial `.p/<width>`) of the current tree, for serving.
    pub fn tile(&self, level: u8, n: u64, width: u64) -> Result<Vec<u8>, AuditError> {
        self.tiles()?.tile_bytes(level, n, width)
    }

    fn tiles(&self) -> Result<std::sync::RwLockReadGuard<'_, TileStore>, AuditError> {
        self.inner
            .shared
            .tiles
            .read()
            .map_err(|_| AuditError::Unwritable("tree state lock poisoned".into()))
    }

    pub fn stats(&self) -> AuditStats {
        let s = &self.inner.shared;
        AuditStats {
            queue_depth: s.queue_depth.load(Ordering::Relaxed),
            last_batch_size: s.last_batch.load(Ordering::Relaxed),
            last_fsync_micros: s.last_fsync_us.load(Ordering::Relaxed),
            fsync: s.fsyncs.snapshot(),
            records: s.records.load(Ordering::Acquire),
            checkpoint_size: s.checkpoint_size.load(Ordering::Acquire),
            writable: s.writable.load(Ordering::Acquire),
            appends_failing: s.trouble(Trouble::Appends),
            checkpoints_failing: s.trouble(Trouble::Checkpoints),
            first_retained: s.first_retained.load(Ordering::Acquire),
        }
    }

    /// Signs a checkpoint now (if the tree grew) and waits for it.
    pub fn checkpoint_now(&self) -> Result<(), AuditError> {
        let (tx, rx) = mpsc::channel();
        self.inner
            .tx
            .send(Command::Checkpoint(tx))
            .map_err(|_| AuditError::Closed)?;
        rx.recv().map_err(|_| AuditError::Closed)?
    }

    /// Retention: deletes whole segments whose records all lie below `first_kept`, keeping their
    /// leaf hashes in the tiles so every proof and checkpoint still verifies. The active segment and
    /// records not yet covered by a full level-0 tile are always kept. The writer only decides and
    /// marks; the files are deleted on the calling thread, so call it where blocking is fine.
    /// `cutoff` goes into the signed retention statement: the caller vouches that the records
    /// below `first_kept` are older than it ([`AuditLog::prune_older_than`] finds such a record).
    pub fn prune_before(
        &self,
        first_kept: u64,
        cutoff: std::time::SystemTime,
    ) -> Result<PruneReport, AuditError> {
        let (tx, rx) = mpsc::channel();
        let cutoff = time::OffsetDateTime::from(cutoff);
        self.inner
            .tx
            .send(Command::Prune {
                first_kept,
                cutoff,
                tx,
            })
            .map_err(|_| AuditError::Closed)?;
        rx.recv().map_err(|_| AuditError::Closed)??.remove()
    }

    /// Retention by age: removes the bodies of records older than `cutoff`, whole segments at a
    /// time (a segment goes once its newest record is older), as [`AuditLog::prune_before`] does.
    /// Reads the oldest sealed segments on the calling thread, so call it where blocking is
    /// fine; the writer only does the removal.
    pub fn prune_older_than(
        &self,
        cutoff: std::time::SystemTime,
    ) -> Result<PruneReport, AuditError> {
        let first_kept = retention::first_record_to_keep(
            &self.inner.dir.join("segments"),
            time::OffsetDateTime::from(cutoff),
        )?;
        self.prune_before(first_kept, cutoff)
    }

    /// Retention on a log this gateway no longer writes (one a signing-key rotation retired):
    /// [`prune_closed_log_in_steps`] with the retention statement signed by this log's key, since
    /// the retired log's own may be gone. Whoever verifies the retired log trusts this log's
    /// verifier key for its retention statement (`verify --retention-key`).
    pub fn prune_retired_log(
        &self,
        dir: &Path,
        cutoff: std::time::SystemTime,
        max_segments: usize,
    ) -> Result<PruneReport, AuditError> {
        prune_closed_log_in_steps(dir, cutoff, max_segments, &self.inner.signer)
    }

    /// Flushes, signs a final checkpoint and stops the writer. Later appends fail with `Closed`.
    /// Blocking; call it once at exit (calling it again is harmless).
    pub fn shutdown(&self) -> Result<(), AuditError> {
        let Some(join) = self.inner.join.lock().ok().and_then(|mut j| j.take()) else {
            return Ok(());
        };
        let (tx, rx) = mpsc::channel();
        let result = match self.inner.tx.send(Command::Shutdown(tx)) {
            Ok(()) => rx.recv().unwrap_or(Err(AuditError::Closed)),
            Err(_) => Err(AuditError::Closed),
        };
        let joined = join.join();
        // The writer is gone: another process may now take the directory.
        if let Ok(mut lock) = self.inner.lock.lock() {
            lock.take();
        }
        if joined.is_err() {
            return Err(AuditError::Unwritable("the writer thread panicked".into()));
        }
        result
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn the_fsync_histogram_is_cumulative_and_counts_what_no_bucket_holds() {
        let counts = FsyncCounts::default();
        for micros in [50, 300, 300, 2_000_000] {
            counts.record(Duration::from_micros(micros));
        }
        let h = counts.snapshot();
        assert_eq!((h.count, h.sum_micros), (4, 2_000_650));
        let at = |bound: u64| h.buckets.iter().find(|b| b.0 == bound).unwrap().1;
        assert_eq!((at(100), at(250), at(500), at(1_000_000)), (1, 1, 3, 3));
        assert_eq!(h.buckets.len(), FSYNC_BUCKETS_MICROS.len());
    }
}
