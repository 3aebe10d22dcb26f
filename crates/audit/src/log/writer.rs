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

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::recover::Opened;
use super::{AuditConfig, Durability, PruneReport, Shared};
use crate::checkpoint::CheckpointSigner;
use crate::error::AuditError;
use crate::hash::leaf_hash;
use crate::index::{IndexKind, IndexWriter, Location, Watermark};
use crate::record::{Record, encode};
use crate::segment::{SegmentFile, Storage, frame, list_segments, segment_name, write_atomic};
use crate::tile::{TILE_WIDTH, stored_count};
use crate::tree;

pub const MAX_BATCH: usize = 4_096;
/// Flush the index after this many records…
const INDEX_FLUSH_RECORDS: u64 = 65_536;
/// …or this long (checked when a checkpoint is signed), whichever comes first.
const INDEX_FLUSH_INTERVAL: Duration = Duration::from_secs(30);

pub(crate) enum Command {
    Append {
        record: Box<Record>,
        tx: oneshot::Sender<Result<u64, AuditError>>,
    },
    Checkpoint(mpsc::Sender<Result<(), AuditError>>),
    Prune {
        first_kept: u64,
        tx: mpsc::Sender<Result<PruneReport, AuditError>>,
    },
    Shutdown(mpsc::Sender<Result<(), AuditError>>),
}

type Waiter = (Box<Record>, oneshot::Sender<Result<u64, AuditError>>);

pub(crate) struct Writer {
    dir: PathBuf,
    seg_dir: PathBuf,
    durability: Durability,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    segment_max_bytes: u64,
    shared: Arc<Shared>,
    signer: CheckpointSigner,
    storage: Arc<dyn Storage>,
    segment: Box<dyn SegmentFile>,
    seg_first: u64,
    seg_len: u64,
    next_seq: u64,
    index: IndexWriter,
    indexer: Indexer,
    /// Position of the last index flush handed to the indexer.
    index_mark: Watermark,
    index_mark_at: Instant,
    last_checkpoint: Option<u64>,
    last_checkpoint_at: Instant,
    /// Written but not yet fsynced (relaxed mode only).
    dirty: bool,
    last_sync_at: Instant,
    poisoned: Option<String>,
}

impl Writer {
    pub fn new(cfg: &AuditConfig, o: Opened) -> Self {
        let next_seq = o.report.records;
        Self {
            dir: cfg.dir.clone(),
            seg_dir: cfg.dir.join("segments"),
            durability: cfg.durability,
            checkpoint_every: cfg.checkpoint_every.max(1),
            checkpoint_interval: cfg.checkpoint_interval,
            segment_max_bytes: cfg.segment_max_bytes,
            shared: o.shared,
            signer: o.signer,
            storage: o.storage,
            segment: o.segment,
            seg_first: o.seg_first,
            seg_len: o.seg_len,
            next_seq,
            index: o.index,
            indexer: Indexer::start(),
            // Records re-indexed on open are pending too, so count from the durable watermark.
            index_mark: Watermark {
                seq: o.report.records - o.report.reindexed,
                segment: o.seg_first,
                offset: o.seg_len,
            },
            index_mark_at: Instant::now(),
            last_checkpoint: o.last_checkpoint,
            last_checkpoint_at: Instant::now(),
            dirty: false,
            last_sync_at: Instant::now(),
            poisoned: None,
        }
    }

    pub fn run(mut self, rx: Receiver<Command>) {
        let mut batch: Vec<Waiter> = Vec::new();
        loop {
            let mut control = None;
            match rx.recv_timeout(self.next_wakeup()) {
                Ok(Command::Append { record, tx }) => batch.push((record, tx)),
                Ok(other) => control = Some(other),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    // Every handle is gone without a shutdown call: still leave a signed, flushed log.
                    let _ = self.finish();
                    return;
                }
            }
            while control.is_none() && !batch.is_empty() && batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(Command::Append { record, tx }) => batch.push((record, tx)),
                    Ok(other) => control = Some(other),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.shared
                    .queue_depth
                    .fetch_sub(batch.len(), Ordering::Relaxed);
                self.commit(std::mem::take(&mut batch));
            }
            self.periodic();
            match control {
                None => {}
                Some(Command::Append { .. }) => {}
                Some(Command::Checkpoint(tx)) => {
                    let r = self.checkpoint();
                    let _ = tx.send(r);
                }
                Some(Command::Prune { first_kept, tx }) => {
                    let r = self.prune(first_kept);
                    let _ = tx.send(r);
                }
                Some(Command::Shutdown(tx)) => {
                    // Appends that raced with shutdown are answered, never dropped silently.
                    while let Ok(cmd) = rx.try_recv() {
                        if let Command::Append { record, tx } = cmd {
                            self.shared.queue_depth.fetch_sub(1, Ordering::Relaxed);
                            batch.push((record, tx));
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
        self.shared.writable.store(false, Ordering::Release);
        if let Ok(mut f) = self.shared.failure.lock() {
            f.get_or_insert_with(|| why.clone());
        }
        self.poisoned.get_or_insert(why.clone());
        AuditError::Unwritable(why)
    }

    fn fail_all(
        waiters: Vec<(u64, oneshot::Sender<Result<u64, AuditError>>)>,
        err: impl Fn() -> AuditError,
    ) {
        for (_, tx) in waiters {
            let _ = tx.send(Err(err()));
        }
    }

    fn commit(&mut self, batch: Vec<Waiter>) {
        if let Some(p) = self.poisoned.clone() {
            for (_, tx) in batch {
                let _ = tx.send(Err(AuditError::Unwritable(p.clone())));
            }
            return;
        }
        if self.seg_len >= self.segment_max_bytes
            && self.seg_len > 0
            && let Err(e) = self.rotate()
        {
            let msg = self
                .poison(format!("segment rotation failed: {e}"))
                .to_string();
            for (_, tx) in batch {
                let _ = tx.send(Err(AuditError::Unwritable(msg.clone())));
            }
            return;
        }
        let mut buf = Vec::with_capacity(batch.len() * 640);
        let mut waiters = Vec::with_capacity(batch.len());
        let mut leaves = Vec::with_capacity(batch.len());
        let mut keys = Vec::with_capacity(batch.len());
        for (record, tx) in batch {
            let seq = self.next_seq + waiters.len() as u64;
            let record = *record;
            match encode(seq, &record) {
                Ok(bytes) => {
                    let offset = self.seg_len + buf.len() as u64;
                    frame(&bytes, &mut buf);
                    leaves.push(leaf_hash(&bytes));
                    keys.push((offset, record.subject, record.consumer));
                    waiters.push((seq, tx));
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        }
        if waiters.is_empty() {
            return;
        }
        if let Err(e) = self.segment.append(&buf) {
            let msg = format!("write failed: {e}");
            if let Err(e2) = self.segment.truncate(self.seg_len) {
                let err = self.poison(format!("{msg}; undoing the partial write failed too: {e2}"));
                let text = err.to_string();
                Self::fail_all(waiters, || AuditError::Unwritable(text.clone()));
            } else {
                let path = self.seg_dir.join(segment_name(self.seg_first));
                let kind = e.kind();
                Self::fail_all(waiters, || AuditError::Io {
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
                    Self::fail_all(waiters, || AuditError::Unwritable(text.clone()));
                    return;
                }
                self.last_sync_at = Instant::now();
                self.shared
                    .last_fsync_us
                    .store(t.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            Durability::Relaxed { .. } => self.dirty = true,
        }
        self.seg_len += buf.len() as u64;
        // The records are on disk now; from here on a failure poisons rather than undoes.
        if let Err(e) = self.grow_tree(&leaves) {
            let text = self
                .poison(format!("storing tree hashes failed: {e}"))
                .to_string();
            Self::fail_all(waiters, || AuditError::Unwritable(text.clone()));
            return;
        }
        for ((seq, _), (offset, subject, consumer)) in waiters.iter().zip(keys) {
            let loc = Location {
                seq: *seq,
                segment: self.seg_first,
                offset,
            };
            if let Some(s) = subject {
                self.index.add(IndexKind::Subject, &s, loc);
            }
            if let Some(c) = consumer {
                self.index.add(IndexKind::Consumer, &c, loc);
            }
        }
        let n = waiters.len();
        self.next_seq += n as u64;
        self.shared.records.store(self.next_seq, Ordering::Release);
        self.shared.last_batch.store(n, Ordering::Relaxed);
        for (seq, tx) in waiters {
            let _ = tx.send(Ok(seq));
        }
        let since = self.next_seq - self.last_checkpoint.unwrap_or(0);
        if since >= self.checkpoint_every {
            let _ = self.checkpoint();
        }
    }

    fn grow_tree(&mut self, leaves: &[crate::hash::Hash]) -> Result<(), AuditError> {
        let mut tiles = self
            .shared
            .tiles
            .write()
            .map_err(|_| AuditError::Unwritable("tree state lock poisoned".into()))?;
        for l in leaves {
            tiles.push(*l)?;
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
            self.last_sync_at = Instant::now();
            self.shared
                .last_fsync_us
                .store(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    fn periodic(&mut self) {
        if self.poisoned.is_some() {
            return;
        }
        if let Durability::Relaxed { fsync_interval } = self.durability
            && self.dirty
            && self.last_sync_at.elapsed() >= fsync_interval
        {
            let _ = self.sync_if_dirty();
        }
        if self.last_checkpoint_at.elapsed() >= self.checkpoint_interval {
            let _ = self.checkpoint();
        }
    }

    fn rotate(&mut self) -> Result<(), AuditError> {
        self.sync_if_dirty()?;
        let path = self.seg_dir.join(segment_name(self.next_seq));
        let seg = self
            .storage
            .open_segment(&path)
            .map_err(AuditError::io(&path))?;
        self.storage
            .sync_dir(&self.seg_dir)
            .map_err(AuditError::io(&self.seg_dir))?;
        self.segment = seg;
        self.seg_first = self.next_seq;
        self.seg_len = 0;
        Ok(())
    }

    /// Signs the current tree if it grew. Records are fsynced first, so a checkpoint never covers
    /// anything that could vanish; the tree only grows, so two checkpoints are always consistent.
    fn checkpoint(&mut self) -> Result<(), AuditError> {
        self.last_checkpoint_at = Instant::now();
        if let Some(p) = &self.poisoned {
            return Err(AuditError::Unwritable(p.clone()));
        }
        let size = self.next_seq;
        if self.last_checkpoint == Some(size) {
            return Ok(());
        }
        self.sync_if_dirty()?;
        match self.sign_and_store(size) {
            Ok(note) => {
                self.last_checkpoint = Some(size);
                self.shared.checkpoint_size.store(size, Ordering::Release);
                if let Ok(mut c) = self.shared.checkpoint.lock() {
                    *c = Some(note);
                }
                Ok(())
            }
            Err(e) => Err(self.poison(format!("writing the checkpoint failed: {e}"))),
        }
    }

    fn sign_and_store(&mut self, size: u64) -> Result<String, AuditError> {
        let note = {
            let tiles = self
                .shared
                .tiles
                .read()
                .map_err(|_| AuditError::Unwritable("tree state lock poisoned".into()))?;
            tiles.write_partials()?;
            self.signer.sign(size, &tree::root(&*tiles, size)?)
        };
        append_history(&self.dir, &note)?;
        write_atomic(&self.dir.join("checkpoint"), note.as_bytes())?;
        self.flush_index(false);
        Ok(note)
    }

    /// Hands buffered index entries to the index thread when enough have piled up (or `force`).
    /// Index flushes fsync up to 512 bucket files, so they are batched well beyond checkpoints;
    /// queries scan the unindexed tail, so this trades a little query time for append throughput.
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
        self.indexer
            .flush(&self.dir, std::mem::take(&mut self.index), mark);
        self.index_mark = mark;
        self.index_mark_at = Instant::now();
    }

    fn finish(&mut self) -> Result<(), AuditError> {
        // `checkpoint` refuses on a poisoned log, so this only signs when it is safe to.
        let signed = self.checkpoint();
        if signed.is_ok() {
            self.flush_index(true);
        }
        // Wait for the last index flush so a clean shutdown leaves no re-indexing for the next open.
        self.indexer.finish();
        signed?;
        self.sync_if_dirty()
    }

    fn prune(&mut self, first_kept: u64) -> Result<PruneReport, AuditError> {
        // Only records whose leaf hashes sit in full, durable level-0 tiles may lose their bodies,
        // and only after a checkpoint covers them (so `verify` can still prove the tree).
        self.checkpoint()?;
        let covered = stored_count(0, self.next_seq) / TILE_WIDTH * TILE_WIDTH;
        let limit = first_kept
            .min(covered)
            .min(self.last_checkpoint.unwrap_or(0));
        let segments = list_segments(&self.seg_dir)?;
        let mut removable = Vec::new();
        let mut first_retained = segments.first().map_or(0, |s| s.first_seq);
        for pair in segments.windows(2) {
            let (seg, next) = (&pair[0], &pair[1]);
            if next.first_seq <= limit && seg.first_seq != self.seg_first {
                removable.push(seg.path.clone());
                first_retained = next.first_seq;
            } else {
                break;
            }
        }
        if removable.is_empty() {
            return Ok(PruneReport {
                segments_removed: 0,
                first_retained,
            });
        }
        // The marker goes first: a crash midway leaves extra segments, never a missing marker.
        write_atomic(
            &self.dir.join("pruned"),
            format!("{first_retained}\n").as_bytes(),
        )?;
        for p in &removable {
            std::fs::remove_file(p).map_err(AuditError::io(p))?;
        }
        crate::segment::sync_dir(&self.seg_dir).map_err(AuditError::io(&self.seg_dir))?;
        Ok(PruneReport {
            segments_removed: removable.len(),
            first_retained,
        })
    }
}

/// Appends a signed note to `checkpoints.log` (framed like records) and fsyncs it.
fn append_history(dir: &std::path::Path, note: &str) -> Result<(), AuditError> {
    use std::io::Write;
    let path = dir.join("checkpoints.log");
    let mut buf = Vec::with_capacity(note.len() + 8);
    frame(note.as_bytes(), &mut buf);
    let created = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(AuditError::io(&path))?;
    f.write_all(&buf).map_err(AuditError::io(&path))?;
    f.sync_data().map_err(AuditError::io(&path))?;
    if created {
        crate::segment::sync_dir(dir).map_err(AuditError::io(dir))?;
    }
    Ok(())
}

/// Index flushes run on their own thread: they fsync up to 512 bucket files, which must not stall
/// appends. The index is derived data (rebuilt from the watermark on open), so a failed flush only
/// stops the watermark from moving; it never fails an append.
struct Indexer {
    tx: Option<mpsc::Sender<(IndexWriter, Watermark, PathBuf)>>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl Indexer {
    fn start() -> Self {
        let (tx, rx) = mpsc::channel::<(IndexWriter, Watermark, PathBuf)>();
        let join = std::thread::Builder::new()
            .name("tollbu-audit-index".into())
            .spawn(move || {
                let mut failed = false;
                for (mut pending, mark, dir) in rx {
                    // After one failure the watermark must stay put: moving it past entries that were
                    // never written would hide those records from indexed queries for good.
                    if !failed && pending.flush(&dir, mark).is_err() {
                        failed = true;
                    }
                }
            });
        match join {
            Ok(join) => Self {
                tx: Some(tx),
                join: Some(join),
            },
            Err(_) => Self {
                tx: None,
                join: None,
            },
        }
    }

    fn flush(&mut self, dir: &std::path::Path, mut pending: IndexWriter, mark: Watermark) {
        match &self.tx {
            Some(tx) => {
                if let Err(mpsc::SendError((mut p, m, d))) =
                    tx.send((pending, mark, dir.to_path_buf()))
                {
                    let _ = p.flush(&d, m);
                }
            }
            // No thread could be started: flush inline rather than not at all.
            None => {
                let _ = pending.flush(dir, mark);
            }
        }
    }

    fn finish(&mut self) {
        self.tx = None;
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}
