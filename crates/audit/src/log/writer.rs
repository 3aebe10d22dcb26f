//! The single writer thread: group commit, tree and index upkeep, checkpoints, rotation, retention.
//!
//! Batching: the thread blocks for one command, then drains whatever else is queued (up to
//! [`MAX_BATCH`]) and commits all of it with one write and one fsync. Under load the batch grows by
//! itself, so throughput scales with concurrency without a timer adding latency when idle.
//!
//! Failure policy: a failed `write` is undone by truncating back to the batch start, and only that
//! batch fails. A failed fsync (the kernel may already have dropped the dirty pages, so a retry
//! cannot be trusted) or any failure after the records became durable poisons the log: every later
//! append fails until a restart re-reads the disk.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::indexer::Indexer;
use super::notary::{NewTiles, Notary, Signing};
use super::recover::Opened;
use super::retention::{prunable_limit, select_removable, state_and_mark_pruned};
use super::spare::Spare;
use super::{AuditConfig, Durability, MAX_SEGMENTS_PER_PRUNE, PruneReport, Shared, Trouble};
use crate::checkpoint::CheckpointSigner;
use crate::error::AuditError;
use crate::hash::leaf_hash;
use crate::index::{IndexKind, IndexWriter, Location, Watermark, compacted_below};
use crate::record::Prepared;
use crate::segment::{SegmentFile, Storage, frame_with, list_segments, segment_name};
use crate::tree;

/// Most commands, and most records, one commit takes; bounds the memory of one write.
pub const MAX_BATCH: usize = 4_096;
const MAX_BATCH_RECORDS: usize = 65_536;
/// Full tiles (8 KiB and 256 records each) kept in memory between checkpoints before the notary is
/// given them to write anyway: 512 KiB.
const TILES_PER_HANDOVER: usize = 64;
/// Make the index durable (fsync its buckets, move the watermark) after this many records…
const INDEX_FLUSH_RECORDS: u64 = 65_536;
/// …or this long (checked when a checkpoint is signed), whichever comes first.
const INDEX_FLUSH_INTERVAL: Duration = Duration::from_secs(30);
/// In between, write buffered index entries out (without fsync) once this many bytes are held,
/// so that 65,536 records' entries (5 MiB and their buffers' slack) do not sit in memory: at
/// 20,000 records/s that is ≈ 13,000 records, about two writes per bucket file a second.
const INDEX_STAGE_BYTES: usize = 1 << 20;
/// A segment with no zeros ahead of its end (a new log's first, or one started while no spare was
/// ready) asks for a spare once it holds this much, and gives way to the spare as soon as it is
/// ready: its appends grow the file, and each `fdatasync` then writes metadata too. A log that
/// never holds this much (tests, the demo) never writes a spare.
const GROWING_SEGMENT_SPARE_AFTER: u64 = 1 << 20;

pub(crate) enum Command {
    Append {
        record: Box<Prepared>,
        tx: oneshot::Sender<Result<u64, AuditError>>,
    },
    AppendBatch {
        records: Vec<Prepared>,
        tx: oneshot::Sender<Result<Range<u64>, AuditError>>,
    },
    Checkpoint(mpsc::Sender<Result<(), AuditError>>),
    Prune {
        first_kept: u64,
        cutoff: time::OffsetDateTime,
        tx: mpsc::Sender<Result<Pruning, AuditError>>,
    },
    Shutdown(mpsc::Sender<Result<(), AuditError>>),
}

/// Appends waiting in the current batch, each with whoever waits for it.
enum Waiter {
    One(Box<Prepared>, oneshot::Sender<Result<u64, AuditError>>),
    Many(
        Vec<Prepared>,
        oneshot::Sender<Result<Range<u64>, AuditError>>,
    ),
}

impl Waiter {
    fn from_command(cmd: Command) -> Result<Self, Command> {
        match cmd {
            Command::Append { record, tx } => Ok(Waiter::One(record, tx)),
            Command::AppendBatch { records, tx } => Ok(Waiter::Many(records, tx)),
            other => Err(other),
        }
    }

    fn records(&self) -> usize {
        match self {
            Waiter::One(..) => 1,
            Waiter::Many(r, _) => r.len(),
        }
    }

    /// Who to answer, for a batch refused before anything was written.
    fn into_ack(self) -> Ack {
        match self {
            Waiter::One(_, tx) => Ack::One(tx),
            Waiter::Many(_, tx) => Ack::Many(tx),
        }
    }
}

/// Who to answer once a commit is decided.
enum Ack {
    One(oneshot::Sender<Result<u64, AuditError>>),
    Many(oneshot::Sender<Result<Range<u64>, AuditError>>),
}

impl Ack {
    // A waiter that gave up (its request was cancelled) is not an error for the log.
    fn succeed(self, first: u64, count: u64) {
        match self {
            Ack::One(tx) => {
                let _ = tx.send(Ok(first));
            }
            Ack::Many(tx) => {
                let _ = tx.send(Ok(first..first + count));
            }
        }
    }

    fn fail(self, err: AuditError) {
        match self {
            Ack::One(tx) => {
                let _ = tx.send(Err(err));
            }
            Ack::Many(tx) => {
                let _ = tx.send(Err(err));
            }
        }
    }
}

pub(crate) struct Writer {
    dir: PathBuf,
    seg_dir: PathBuf,
    durability: Durability,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    segment_max_bytes: u64,
    shared: Arc<Shared>,
    /// Signs the retention statement before a prune marks anything (the notary signs checkpoints).
    signer: Arc<CheckpointSigner>,
    notary: Notary,
    storage: Arc<dyn Storage>,
    segment: Box<dyn SegmentFile>,
    seg_first: u64,
    seg_len: u64,
    /// The next segment, zeroed ahead of time; asked for once per segment, at half full (or
    /// early, see [`GROWING_SEGMENT_SPARE_AFTER`]).
    spare: Spare,
    spare_requested: bool,
    /// The active segment has no zeros ahead of its end, so its appends grow the file.
    seg_grows: bool,
    next_seq: u64,
    index: IndexWriter,
    indexer: Indexer,
    /// A compaction pass dropping index entries below this record is to be handed to the index
    /// thread (their records were pruned); cleared once it has taken the job.
    compact_index_below: Option<u64>,
    /// The last compaction pass asked for (or, after a restart, finished) dropped entries below
    /// this record.
    index_compacted_below: u64,
    /// Position of the last index flush handed to the indexer.
    index_mark: Watermark,
    index_mark_at: Instant,
    last_checkpoint: Option<u64>,
    last_checkpoint_at: Instant,
    /// When a failing storage was last tried without a batch (see [`Writer::retry_troubles`]).
    last_retry_at: Instant,
    /// Written but not yet fsynced (relaxed mode only).
    dirty: bool,
    last_sync_at: Instant,
    poisoned: Option<String>,
}

impl Writer {
    pub fn new(cfg: &AuditConfig, o: Opened) -> Result<Self, AuditError> {
        let next_seq = o.report.records;
        let notary = Notary::start(cfg.dir.clone(), o.signer.clone(), o.shared.clone())?;
        let mut segment = o.segment;
        segment.reserve(cfg.segment_max_bytes);
        let seg_dir = cfg.dir.join("segments");
        let spare = Spare::new(&seg_dir, cfg.segment_max_bytes, o.storage.clone());
        // A segment made from a spare keeps a zero tail past its records across restarts.
        let seg_grows = std::fs::metadata(seg_dir.join(segment_name(o.seg_first)))
            .is_ok_and(|m| m.len() <= o.seg_len);
        Ok(Self {
            dir: cfg.dir.clone(),
            seg_dir,
            durability: cfg.durability,
            checkpoint_every: cfg.checkpoint_every.max(1),
            checkpoint_interval: cfg.checkpoint_interval,
            segment_max_bytes: cfg.segment_max_bytes,
            shared: o.shared,
            signer: o.signer,
            notary,
            storage: o.storage,
            segment,
            seg_first: o.seg_first,
            seg_len: o.seg_len,
            spare,
            spare_requested: false,
            seg_grows,
            next_seq,
            index: o.index,
            indexer: Indexer::start(o.index_files),
            compact_index_below: None,
            index_compacted_below: compacted_below(&cfg.dir),
            // Records re-indexed on open are pending too, so count from the durable watermark.
            index_mark: Watermark {
                seq: o.report.records - o.report.reindexed,
                segment: o.seg_first,
                offset: o.seg_len,
            },
            index_mark_at: Instant::now(),
            last_checkpoint: o.last_checkpoint,
            last_checkpoint_at: Instant::now(),
            last_retry_at: Instant::now(),
            dirty: false,
            last_sync_at: Instant::now(),
            poisoned: None,
        })
    }

    pub fn run(mut self, rx: Receiver<Command>) {
        let mut batch: Vec<Waiter> = Vec::new();
        loop {
            let mut control = None;
            let mut records = 0;
            match rx.recv_timeout(self.next_wakeup()) {
                Ok(cmd) => match Waiter::from_command(cmd) {
                    Ok(w) => {
                        records += w.records();
                        batch.push(w);
                    }
                    Err(other) => control = Some(other),
                },
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // Every handle is gone without a shutdown call: still leave a signed, flushed log.
                    let _ = self.finish();
                    return;
                }
            }
            while control.is_none()
                && !batch.is_empty()
                && batch.len() < MAX_BATCH
                && records < MAX_BATCH_RECORDS
            {
                match rx.try_recv() {
                    Ok(cmd) => match Waiter::from_command(cmd) {
                        Ok(w) => {
                            records += w.records();
                            batch.push(w);
                        }
                        Err(other) => control = Some(other),
                    },
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.shared
                    .queue_depth
                    .fetch_sub(records, Ordering::Relaxed);
                self.commit(std::mem::take(&mut batch));
            }
            // At shutdown nothing periodic starts (a checkpoint or an index compaction pass that
            // `finish` would then wait for): the final checkpoint comes first.
            if !matches!(control, Some(Command::Shutdown(_))) {
                self.periodic();
            }
            match control {
                None => {}
                Some(Command::Append { .. } | Command::AppendBatch { .. }) => {}
                Some(Command::Checkpoint(tx)) => {
                    let r = self.checkpoint(true);
                    let _ = tx.send(r);
                }
                Some(Command::Prune {
                    first_kept,
                    cutoff,
                    tx,
                }) => {
                    let r = self.prune(first_kept, cutoff);
                    let _ = tx.send(r);
                }
                Some(Command::Shutdown(tx)) => {
                    // Appends that raced with shutdown are answered, never dropped silently.
                    while let Ok(cmd) = rx.try_recv() {
                        if let Ok(w) = Waiter::from_command(cmd) {
                            self.shared
                                .queue_depth
                                .fetch_sub(w.records(), Ordering::Relaxed);
                            batch.push(w);
                        }
                    }
                    if !batch.is_empty() {
                        self.commit(std::mem::take(&mut batch));
                    }
                    let r = self.finish();
                    self.shared.writable.store(false, Ordering::Release);
                    if let Ok(mut f) = self.shared.failure.lock() {
                        f.get_or_insert_with(|| "the log was shut down".into());
                    }
                    let _ = tx.send(r);
                    return;
                }
            }
        }
    }

    fn next_wakeup(&self) -> Duration {
        let mut wait = self
            .checkpoint_interval
            .saturating_sub(self.last_checkpoint_at.elapsed());
        if let Durability::Relaxed { fsync_interval } = self.durability
            && self.dirty
        {
            wait = wait.min(fsync_interval.saturating_sub(self.last_sync_at.elapsed()));
        }
        wait.clamp(Duration::from_millis(1), Duration::from_secs(1))
    }

    fn poison(&mut self, why: String) -> AuditError {
        self.shared.poison(&why);
        self.poisoned.get_or_insert(why.clone());
        AuditError::Unwritable(why)
    }

    fn fail_all(acks: Vec<(Ack, u64, u64)>, err: impl Fn() -> AuditError) {
        for (ack, _, _) in acks {
            ack.fail(err());
        }
    }

    fn commit(&mut self, batch: Vec<Waiter>) {
        self.adopt_failure();
        if let Some(p) = self.poisoned.clone() {
            for w in batch {
                w.into_ack().fail(AuditError::Unwritable(p.clone()));
            }
            return;
        }
        let full = self.seg_len >= self.segment_max_bytes;
        let replaceable = self.seg_grows && self.spare.is_ready();
        if (full || replaceable)
            && self.seg_len > 0
            && let Err(e) = self.rotate()
        {
            let msg = self
                .poison(format!("segment rotation failed: {e}"))
                .to_string();
            for w in batch {
                w.into_ack().fail(AuditError::Unwritable(msg.clone()));
            }
            return;
        }
        let records: usize = batch.iter().map(Waiter::records).sum();
        let mut buf = Vec::with_capacity(records * 640);
        // (who to answer, first seq, how many)
        let mut acks = Vec::with_capacity(batch.len());
        // (seq, frame start in `buf`, index keys)
        let mut entries = Vec::with_capacity(records);
        let mut seq = self.next_seq;
        let mut add = |p: &Prepared, seq: u64| {
            entries.push((seq, buf.len(), p.subject_key, p.consumer_key));
            frame_with(&mut buf, |out| p.write(seq, out));
        };
        for w in batch {
            let first = seq;
            let ack = match w {
                Waiter::One(p, tx) => {
                    add(&p, seq);
                    seq += 1;
                    Ack::One(tx)
                }
                Waiter::Many(ps, tx) => {
                    for p in &ps {
                        add(p, seq);
                        seq += 1;
                    }
                    Ack::Many(tx)
                }
            };
            acks.push((ack, first, seq - first));
        }
        let leaves = leaf_hashes(&buf);
        if leaves.len() != entries.len() {
            // Cannot happen (the buffer was framed just above); refuse rather than grow a short tree.
            Self::fail_all(acks, || {
                AuditError::InvalidRecord("a framed batch did not read back".into())
            });
            return;
        }
        if acks.is_empty() {
            return;
        }
        if let Err(e) = self.segment.append(&buf) {
            let msg = format!("write failed: {e}");
            if let Err(e2) = self.segment.truncate(self.seg_len) {
                let err = self.poison(format!("{msg}; undoing the partial write failed too: {e2}"));
                let text = err.to_string();
                Self::fail_all(acks, || AuditError::Unwritable(text.clone()));
            } else {
                // Cutting the file back also gave up the blocks set aside past its end.
                self.segment.reserve(self.segment_max_bytes);
                let path = self.seg_dir.join(segment_name(self.seg_first));
                self.shared.report_trouble(Trouble::Appends, &msg);
                let kind = e.kind();
                Self::fail_all(acks, || AuditError::Io {
                    path: path.clone(),
                    source: std::io::Error::new(kind, msg.clone()),
                });
            }
            return;
        }
        match self.durability {
            Durability::Fsync => {
                let t = Instant::now();
                if let Err(e) = self.segment.sync() {
                    let text = self.poison(format!("fsync failed: {e}")).to_string();
                    Self::fail_all(acks, || AuditError::Unwritable(text.clone()));
                    return;
                }
                self.synced(t.elapsed());
            }
            Durability::Relaxed { .. } => self.dirty = true,
        }
        self.seg_len += buf.len() as u64;
        self.shared.clear_trouble(Trouble::Appends);
        // The records are on disk now; from here on a failure poisons rather than undoes.
        if let Err(e) = self.grow_tree(&leaves) {
            let text = self
                .poison(format!("storing tree hashes failed: {e}"))
                .to_string();
            Self::fail_all(acks, || AuditError::Unwritable(text.clone()));
            return;
        }
        for (seq, at, subject, consumer) in entries {
            let loc = Location {
                seq,
                segment: self.seg_first,
                offset: self.seg_len - buf.len() as u64 + at as u64,
            };
            if let Some(k) = subject {
                self.index.add_key(IndexKind::Subject, &k, loc);
            }
            if let Some(k) = consumer {
                self.index.add_key(IndexKind::Consumer, &k, loc);
            }
        }
        self.next_seq = seq;
        self.shared.records.store(self.next_seq, Ordering::Release);
        self.shared.last_batch.store(records, Ordering::Relaxed);
        for (ack, first, count) in acks {
            ack.succeed(first, count);
        }
        let since = self.next_seq - self.last_checkpoint.unwrap_or(0);
        if since >= self.checkpoint_every {
            let _ = self.checkpoint(false);
        }
        self.stage_index();
        self.hand_over_tiles();
        let spare_due = if self.seg_grows {
            (self.segment_max_bytes / 2).min(GROWING_SEGMENT_SPARE_AFTER)
        } else {
            self.segment_max_bytes / 2
        };
        if !self.spare_requested && self.seg_len >= spare_due {
            self.spare.request();
            self.spare_requested = true;
        }
    }

    /// Hands completed full tiles to the notary between checkpoints once enough have piled up, so
    /// that a long checkpoint cadence does not keep them all in memory. Only while every record is
    /// fsynced (in relaxed mode: right after the periodic fsync), so that a tile file never
    /// reaches the disk before the records it hashes.
    fn hand_over_tiles(&mut self) {
        if self.dirty {
            return;
        }
        let due = self
            .shared
            .tiles
            .read()
            .is_ok_and(|t| t.unwritten_len() >= TILES_PER_HANDOVER);
        if !due || self.notary.busy() {
            return;
        }
        let Ok(mut tiles) = self.shared.tiles.write() else {
            return;
        };
        let new_tiles = NewTiles {
            tiles: tiles.take_unwritten(),
            upto: self.next_seq,
        };
        drop(tiles);
        let _ = self.notary.submit(new_tiles, None, false);
    }

    fn grow_tree(&mut self, leaves: &[crate::hash::Hash]) -> Result<(), AuditError> {
        let mut tiles = self
            .shared
            .tiles
            .write()
            .map_err(|_| AuditError::Unwritable("tree state lock poisoned".into()))?;
        // Tiles the notary has written are read from disk from now on; the rest stay in memory.
        tiles.forget_written(self.shared.tiles_on_disk.load(Ordering::Acquire));
        for l in leaves {
            tiles.push(*l);
        }
        Ok(())
    }

    fn sync_if_dirty(&mut self) -> Result<(), AuditError> {
        if self.dirty {
            let t = Instant::now();
            if let Err(e) = self.segment.sync() {
                return Err(self.poison(format!("fsync failed: {e}")));
            }
            self.dirty = false;
            self.synced(t.elapsed());
        }
        Ok(())
    }

    /// Notes a successful segment fsync that took `took`, for relaxed mode's timer and `/metrics`.
    fn synced(&mut self, took: Duration) {
        self.last_sync_at = Instant::now();
        self.shared
            .last_fsync_us
            .store(took.as_micros() as u64, Ordering::Relaxed);
        self.shared.fsyncs.record(took);
    }

    fn periodic(&mut self) {
        if self.poisoned.is_some() {
            return;
        }
        if let Durability::Relaxed { fsync_interval } = self.durability
            && self.dirty
            && self.last_sync_at.elapsed() >= fsync_interval
            && self.sync_if_dirty().is_ok()
        {
            self.hand_over_tiles();
        }
        if self.last_checkpoint_at.elapsed() >= self.checkpoint_interval {
            let _ = self.checkpoint(false);
        }
        self.retry_troubles();
        self.submit_index_compaction();
    }

    /// While storage is failing, tries it again once a second without waiting for a batch: a
    /// replica out of service (readiness 503 while appends fail) gets no request whose append
    /// would show that space has returned, and an idle log makes no checkpoint job that would
    /// retry the tiles and the checkpoint the notary holds.
    fn retry_troubles(&mut self) {
        let appends = self.shared.has_trouble(Trouble::Appends);
        let checkpoints = self.shared.has_trouble(Trouble::Checkpoints);
        if !(appends || checkpoints) || self.last_retry_at.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_retry_at = Instant::now();
        if appends {
            self.probe_segment();
        }
        if checkpoints && !self.notary.busy() {
            let nothing_new = NewTiles {
                tiles: Vec::new(),
                upto: 0,
            };
            let _ = self.notary.submit(nothing_new, None, false);
        }
    }

    /// Writes a block of zeros after the last frame and cuts it off again: if that works, appends
    /// can go on. (Zeros past the frames are a clean tail, should the process die in between.)
    fn probe_segment(&mut self) {
        const PROBE: [u8; 4096] = [0; 4096];
        let written = self.segment.append(&PROBE);
        if let Err(e) = self.segment.truncate(self.seg_len) {
            self.poison(format!("cutting off a storage probe failed: {e}"));
            return;
        }
        self.segment.reserve(self.segment_max_bytes);
        if written.is_ok() {
            self.shared.clear_trouble(Trouble::Appends);
        }
    }

    /// Hands a pending compaction pass to the index thread, with the entries buffered so far (so
    /// none is written back behind it). While that thread is busy the request waits here and is
    /// retried on the next pass; appends never wait for it.
    fn submit_index_compaction(&mut self) {
        let Some(below) = self.compact_index_below else {
            return;
        };
        let pending = std::mem::take(&mut self.index);
        match self
            .indexer
            .submit(&self.dir, pending, None, Some(below), false)
        {
            Ok(()) => self.compact_index_below = None,
            Err(pending) => self.index = pending,
        }
    }

    fn rotate(&mut self) -> Result<(), AuditError> {
        self.sync_if_dirty()?;
        self.seal();
        let path = self.seg_dir.join(segment_name(self.next_seq));
        // A spare renamed into place, or else a new empty file: either way the appends start at 0.
        self.seg_grows = !self.spare.take_as(&path);
        let seg = self
            .storage
            .open_segment(&path, 0)
            .map_err(AuditError::io(&path))?;
        self.storage
            .sync_dir(&self.seg_dir)
            .map_err(AuditError::io(&self.seg_dir))?;
        self.segment = seg;
        self.segment.reserve(self.segment_max_bytes);
        self.seg_first = self.next_seq;
        self.seg_len = 0;
        self.spare_requested = false;
        Ok(())
    }

    /// Cuts the zero tail off a segment that is about to stop being the active one, so that only
    /// the active segment ever has one, and gives back the blocks set aside past its end. The
    /// rotation point is past the spare's length, so there is a tail only when
    /// `segment_max_bytes` was lowered since the segment began; blocks are left past the end when
    /// a growing segment gives way to a spare before it is full (ext4 frees them on a truncate to
    /// the same size). Best effort: a zero tail is still a clean end for every reader, and the
    /// blocks are only disk space.
    fn seal(&mut self) {
        let path = self.seg_dir.join(segment_name(self.seg_first));
        let zero_tail = std::fs::metadata(&path).is_ok_and(|m| m.len() > self.seg_len);
        let set_aside = self.seg_grows && self.seg_len < self.segment_max_bytes;
        if zero_tail || set_aside {
            let _ = self.segment.truncate(self.seg_len);
        }
    }

    /// Hands the current tree to the notary to sign, if it grew. Records are fsynced first, so a
    /// checkpoint never covers anything that could vanish; the tree only grows and the notary signs
    /// in order, so two checkpoints are always consistent. Without `wait`, a checkpoint still being
    /// written makes this a no-op: the records wait for the next one (retried after every commit).
    /// With `wait`, returns once the note is published.
    fn checkpoint(&mut self, wait: bool) -> Result<(), AuditError> {
        self.adopt_failure();
        if let Some(p) = &self.poisoned {
            return Err(AuditError::Unwritable(p.clone()));
        }
        if !wait && self.notary.busy() {
            return Ok(());
        }
        self.last_checkpoint_at = Instant::now();
        let size = self.next_seq;
        let (new_tiles, signing) = if self.last_checkpoint == Some(size) {
            (Vec::new(), None)
        } else {
            self.sync_if_dirty()?;
            let mut tiles = self
                .shared
                .tiles
                .write()
                .map_err(|_| AuditError::Unwritable("tree state lock poisoned".into()))?;
            let root = tree::root(&*tiles, size)?;
            let signing = Signing {
                size,
                root,
                partials: tiles.partials(),
            };
            (tiles.take_unwritten(), Some(signing))
        };
        if signing.is_none() && !wait {
            return Ok(());
        }
        if signing.is_some() {
            self.last_checkpoint = Some(size);
        }
        let new_tiles = NewTiles {
            tiles: new_tiles,
            upto: size,
        };
        let handed = self.notary.submit(new_tiles, signing, wait);
        self.flush_index(false);
        handed
    }

    /// Takes over a failure another thread (the notary) recorded, so commits stop too.
    fn adopt_failure(&mut self) {
        if self.poisoned.is_none() && !self.shared.writable.load(Ordering::Acquire) {
            let why = self
                .shared
                .failure
                .lock()
                .ok()
                .and_then(|f| f.clone())
                .unwrap_or_else(|| "storage failure".into());
            self.poisoned = Some(why);
        }
    }

    /// Hands buffered index entries to the index thread to be made durable when enough records
    /// have piled up (or `force`). Durable flushes fsync up to 512 bucket files, so they are
    /// batched well beyond checkpoints; queries scan the unindexed tail, so this trades a little
    /// query time for append throughput.
    fn flush_index(&mut self, force: bool) {
        let pending = self.next_seq - self.index_mark.seq;
        let due =
            pending >= INDEX_FLUSH_RECORDS || self.index_mark_at.elapsed() >= INDEX_FLUSH_INTERVAL;
        if pending == 0 || !(force || due) {
            return;
        }
        let mark = Watermark {
            seq: self.next_seq,
            segment: self.seg_first,
            offset: self.seg_len,
        };
        let pending = std::mem::take(&mut self.index);
        match self
            .indexer
            .submit(&self.dir, pending, Some(mark), None, force)
        {
            Ok(()) => {
                self.index_mark = mark;
                self.index_mark_at = Instant::now();
            }
            // The index thread is still busy with the previous flush: keep collecting, and hand
            // over a larger set next time rather than queueing flushes without bound.
            Err(pending) => self.index = pending,
        }
    }

    /// Hands buffered index entries to the index thread to be written out (not fsynced) once
    /// [`INDEX_STAGE_BYTES`] have piled up, bounding what the index holds in memory.
    fn stage_index(&mut self) {
        if self.index.pending_bytes() < INDEX_STAGE_BYTES {
            return;
        }
        let pending = std::mem::take(&mut self.index);
        if let Err(pending) = self.indexer.submit(&self.dir, pending, None, None, false) {
            self.index = pending;
        }
    }

    fn finish(&mut self) -> Result<(), AuditError> {
        // What matters most goes first, as the process may be stopped at any point of this (the
        // gateway bounds its wait, `limits.shutdown_flush_ms`): the final checkpoint, then the
        // index (which the next open rebuilds from the records if it is cut short). A spare
        // being zeroed would only compete with them for the disk; the next open makes another.
        self.spare.cancel();
        // `checkpoint` refuses on a poisoned log, so this only signs when it is safe to.
        let signed = self.checkpoint(true);
        if signed.is_ok() {
            self.flush_index(true);
        }
        // Wait for the last index flush so a clean shutdown leaves no re-indexing for the next open.
        self.indexer.finish();
        self.notary.finish();
        self.spare.finish();
        signed?;
        self.sync_if_dirty()
    }

    /// Decides which segments retention removes, signs the retention statement and writes the
    /// `pruned` marker; the caller deletes the files ([`Pruning::remove`]), so the writer never
    /// waits for a file system's deletes (tens of milliseconds per 64 MiB segment with online
    /// discard).
    fn prune(
        &mut self,
        first_kept: u64,
        cutoff: time::OffsetDateTime,
    ) -> Result<Pruning, AuditError> {
        // Only records whose leaf hashes sit in full, durable level-0 tiles may lose their bodies,
        // and only once a published checkpoint covers them (so `verify` can still prove the tree).
        // The notary publishes a checkpoint only after its tiles are on disk. No checkpoint is
        // forced here: waiting for the notary would hold every append for its fsyncs, and the
        // next sweep takes what the latest checkpoint did not yet cover.
        let published = self.shared.checkpoint_size.load(Ordering::Acquire);
        let limit = first_kept.min(prunable_limit(published));
        let segments = list_segments(&self.seg_dir)?;
        let (removable, first_retained, more_due) =
            select_removable(&segments, limit, self.seg_first, MAX_SEGMENTS_PER_PRUNE);
        if !removable.is_empty() {
            state_and_mark_pruned(
                &self.dir,
                &self.signer,
                self.signer.name(),
                first_retained,
                cutoff,
            )?;
            self.shared
                .first_retained
                .store(first_retained, Ordering::Release);
            // A pass reads and rewrites every bucket, so one starts only once the entries it would
            // drop are a tenth of those indexed since the last pass: the removed records' entries
            // then outlive them by about a tenth of the retention period.
            let droppable = first_retained.saturating_sub(self.index_compacted_below);
            let indexed = self.next_seq.saturating_sub(self.index_compacted_below);
            if droppable.saturating_mul(INDEX_COMPACT_SHARE) >= indexed {
                self.index_compacted_below = first_retained;
                self.compact_index_below = Some(first_retained);
                self.submit_index_compaction();
            }
        }
        Ok(Pruning {
            report: PruneReport {
                segments_removed: removable.len(),
                first_retained,
                more_due,
            },
            seg_dir: self.seg_dir.clone(),
            removable,
        })
    }
}

/// Segments the writer gave up to retention, for the caller to delete.
pub(crate) struct Pruning {
    pub report: PruneReport,
    seg_dir: PathBuf,
    removable: Vec<PathBuf>,
}

impl Pruning {
    /// Deletes the segments gently ([`super::retention::delete_segments`]) and returns the report.
    pub fn remove(self) -> Result<PruneReport, AuditError> {
        super::retention::delete_segments(&self.seg_dir, &self.removable)?;
        Ok(self.report)
    }
}

/// An index compaction pass starts once the entries it would drop are one in this many.
const INDEX_COMPACT_SHARE: u64 = 10;

/// Batches at least this large hash their leaves on two threads.
const PARALLEL_LEAVES: usize = 2_048;

/// Leaf hashes of the framed records in `buf`. Hashing is most of the writer's work per record
/// (one SHA-256 over ~500 bytes), so a large batch is split in two and hashed on a second thread.
fn leaf_hashes(buf: &[u8]) -> Vec<crate::hash::Hash> {
    let payloads: Vec<&[u8]> = crate::segment::frames(buf).collect();
    if payloads.len() < PARALLEL_LEAVES {
        return payloads.iter().map(|p| leaf_hash(p)).collect();
    }
    let (left, right) = payloads.split_at(payloads.len() / 2);
    std::thread::scope(|scope| {
        let other = scope.spawn(|| right.iter().map(|p| leaf_hash(p)).collect::<Vec<_>>());
        let mut out: Vec<_> = left.iter().map(|p| leaf_hash(p)).collect();
        match other.join() {
            Ok(rest) => out.extend(rest),
            // Not reachable (hashing does not panic), but never lose leaves: redo them here.
            Err(_) => out.extend(right.iter().map(|p| leaf_hash(p))),
        }
        out
    })
}
