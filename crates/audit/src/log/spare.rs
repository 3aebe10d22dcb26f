//! The spare segment: a file of zeros prepared off the writer's thread while the active segment
//! fills, so that the next segment's appends write over blocks that are already written.
//!
//! On ext4 an `fdatasync` after appending to a growing file, or into blocks only set aside, also
//! writes the metadata that the append changed; over blocks already written it flushes the data
//! alone. At 20,000 appends/s the acknowledgement's p50 fell by 40 % and its p99 by 46 %
//! (figures in docs/BENCHMARKS.md). The spare is asked for once the active segment is half full and renamed
//! into place at rotation; when it is not ready in time, or the storage cannot make one, the next
//! segment starts empty, as before.
//!
//! On disk the spare is `segments/spare.zeroing` while it is written and `segments/spare.zeroed`
//! once its zeros are durable. Neither is a segment (readers only list `*.seg`), and both are
//! removed when the log opens, since a crash may have left either half written.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::{self, Sender};
use std::thread::JoinHandle;

use crate::segment::Storage;

const IDLE: u8 = 0;
const PREPARING: u8 = 1;
const READY: u8 = 2;

/// The writer's handle on the thread that prepares spares.
pub(crate) struct Spare {
    zeroing: PathBuf,
    zeroed: PathBuf,
    len: u64,
    storage: Arc<dyn Storage>,
    state: Arc<AtomicU8>,
    cancel: Arc<AtomicBool>,
    /// Started on the first request, so logs that never fill half a segment (tests, the demo)
    /// never write one.
    thread: Option<(Sender<()>, JoinHandle<()>)>,
}

impl Spare {
    /// Removes spares a previous run left behind; prepares none yet.
    pub fn new(seg_dir: &Path, len: u64, storage: Arc<dyn Storage>) -> Self {
        let spare = Self {
            zeroing: seg_dir.join("spare.zeroing"),
            zeroed: seg_dir.join("spare.zeroed"),
            len,
            storage,
            state: Arc::new(AtomicU8::new(IDLE)),
            cancel: Arc::new(AtomicBool::new(false)),
            thread: None,
        };
        spare.remove_files();
        spare
    }

    /// Asks for a spare unless one is ready or being prepared.
    pub fn request(&mut self) {
        if self
            .state
            .compare_exchange(IDLE, PREPARING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        if self.thread.is_none() {
            self.thread = self.spawn();
        }
        let sent = self
            .thread
            .as_ref()
            .is_some_and(|(tx, _)| tx.send(()).is_ok());
        if !sent {
            // No thread: no spares; segments start empty as before.
            self.state.store(IDLE, Ordering::Release);
        }
    }

    /// Whether a spare is ready to be taken.
    pub fn is_ready(&self) -> bool {
        self.state.load(Ordering::Acquire) == READY
    }

    /// Moves a ready spare to `path`, which the caller then opens (or creates, when no spare was
    /// ready or the rename failed) as the new segment, and makes its directory entry durable.
    /// Returns whether a spare is now at `path`.
    pub fn take_as(&mut self, path: &Path) -> bool {
        if !self.is_ready() {
            return false;
        }
        self.state.store(IDLE, Ordering::Release);
        if std::fs::rename(&self.zeroed, path).is_err() {
            let _ = std::fs::remove_file(&self.zeroed);
            return false;
        }
        true
    }

    /// Tells a preparation in progress to stop, without waiting for it ([`Spare::finish`] waits).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Stops a preparation in progress and removes what it left: a spare is cheap to make again.
    pub fn finish(&mut self) {
        self.cancel();
        if let Some((tx, join)) = self.thread.take() {
            drop(tx);
            let _ = join.join();
        }
        self.remove_files();
    }

    /// Best effort: a spare left behind is only disk space, and the next open tries again.
    fn remove_files(&self) {
        for path in [&self.zeroing, &self.zeroed] {
            let _ = std::fs::remove_file(path);
        }
    }

    fn spawn(&self) -> Option<(Sender<()>, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel::<()>();
        let (zeroing, zeroed, len) = (self.zeroing.clone(), self.zeroed.clone(), self.len);
        let (storage, state, cancel) = (
            self.storage.clone(),
            self.state.clone(),
            self.cancel.clone(),
        );
        let join = std::thread::Builder::new()
            .name("tollbu-audit-spare".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    let made = storage
                        .prepare_zeroed(&zeroing, len, &cancel)
                        .and_then(|()| std::fs::rename(&zeroing, &zeroed));
                    if made.is_ok() {
                        state.store(READY, Ordering::Release);
                    } else {
                        // Unsupported, cancelled or out of space: the next segment starts empty,
                        // and a full disk shows where it matters, on an append.
                        let _ = std::fs::remove_file(&zeroing);
                        state.store(IDLE, Ordering::Release);
                    }
                }
            })
            .ok()?;
        Some((tx, join))
    }
}
