//! Storage failures: nothing is acknowledged that is not durable, and a failed fsync stops the log.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tollbu_audit::tooling;
use tollbu_audit::{
    AuditError, AuditLog, FsStorage, Pseudonymiser, QUEUE_CAPACITY, SegmentFile, Storage,
};

use crate::support::{Keys, record};

#[derive(Default)]
struct Flags {
    disk_full: AtomicBool,
    fsync_fails: AtomicBool,
    /// A disk that stops answering: fsync waits while this is set.
    fsync_stalls: AtomicBool,
}

struct FailingStorage(Arc<Flags>);
struct FailingSegment(Box<dyn SegmentFile>, Arc<Flags>);

impl Storage for FailingStorage {
    fn open_segment(&self, path: &Path, frames_end: u64) -> io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(FailingSegment(
            FsStorage.open_segment(path, frames_end)?,
            self.0.clone(),
        )))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        FsStorage.sync_dir(dir)
    }
}

impl SegmentFile for FailingSegment {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.1.disk_full.load(Ordering::SeqCst) {
            // Like a real ENOSPC: part of the batch reached the file before the error.
            self.0.append(&buf[..buf.len() / 2])?;
            return Err(io::Error::from_raw_os_error(28));
        }
        self.0.append(buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        while self.1.fsync_stalls.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if self.1.fsync_fails.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5));
        }
        self.0.sync()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.truncate(len)
    }
}

/// A fresh log on storage that fails when its flags say so.
struct FailingLog {
    keys: Keys,
    dir: tempfile::TempDir,
    ps: Pseudonymiser,
    flags: Arc<Flags>,
    log: AuditLog,
}

fn open_failing_log() -> FailingLog {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let ps = keys.pseudonymiser();
    let flags = Arc::new(Flags::default());
    let (log, _) = AuditLog::open_with_storage(
        keys.config(dir.path()),
        Arc::new(FailingStorage(flags.clone())),
    )
    .unwrap();
    FailingLog {
        keys,
        dir,
        ps,
        flags,
        log,
    }
}

#[test]
fn disk_full_fails_the_batch_and_the_log_recovers_when_space_returns() {
    let FailingLog {
        keys: _keys,
        dir,
        ps,
        flags,
        log,
    } = open_failing_log();
    for i in 0..10 {
        assert_eq!(log.append_blocking(record(i, &ps)).unwrap(), i);
    }
    flags.disk_full.store(true, Ordering::SeqCst);
    for i in 10..15 {
        assert!(matches!(
            log.append_blocking(record(i, &ps)),
            Err(AuditError::Io { .. })
        ));
    }
    assert_eq!(log.stats().records, 10);
    let stats = log.stats();
    assert!(stats.writable, "a full disk does not stop the log for good");
    assert!(
        stats
            .appends_failing
            .as_deref()
            .is_some_and(|why| why.contains("os error 28")),
        "readiness can tell that appends fail: {stats:?}"
    );
    flags.disk_full.store(false, Ordering::SeqCst);
    // Space is back, and without any append the log says so: a replica that readiness took out
    // of service gets no request that would show it.
    wait_until("appends work again", || {
        log.stats().appends_failing.is_none()
    });
    // The half-written batch was cut away: the next record gets index 10 and the log verifies.
    assert_eq!(log.append_blocking(record(10, &ps)).unwrap(), 10);
    log.shutdown().unwrap();
    let r = tooling::verify(dir.path(), &[], None);
    assert!(r.ok, "{}", r.text);
    assert!(r.text.contains("records: 11"), "{}", r.text);
}

/// Tiles and checkpoints are written by their own thread, straight to the file system: when
/// that fails (a full disk, here a directory in the way of a tile's temporary file), nothing
/// is half written, so the log keeps taking records and writes the tiles and the checkpoint
/// once it can. It used to stop for good, and only a restart brought it back.
#[test]
fn a_failed_tile_or_checkpoint_write_is_retried_and_the_log_keeps_serving() {
    let FailingLog {
        keys: _keys,
        dir,
        ps,
        flags: _flags,
        log,
    } = open_failing_log();
    // The first full tile (256 records) cannot be written while this is in the way.
    let blocker = dir.path().join("tile/0/000.tmp");
    std::fs::create_dir_all(&blocker).unwrap();
    for i in 0..300 {
        assert_eq!(log.append_blocking(record(i, &ps)).unwrap(), i);
    }
    assert!(log.checkpoint_now().is_err(), "the tile write failed");
    let stats = log.stats();
    assert!(stats.writable, "{stats:?}");
    assert!(stats.checkpoints_failing.is_some(), "{stats:?}");
    assert!(stats.checkpoint_size < 300, "{stats:?}");
    for i in 300..310 {
        assert_eq!(log.append_blocking(record(i, &ps)).unwrap(), i);
    }
    assert!(log.checkpoint_now().is_err(), "still in the way");
    std::fs::remove_dir(&blocker).unwrap();
    // With no append (no new checkpoint job), what the notary holds is retried.
    wait_until("the checkpoint of 310 records is published", || {
        let stats = log.stats();
        stats.checkpoints_failing.is_none() && stats.checkpoint_size == 310
    });
    assert!(dir.path().join("tile/0/000").is_file());
    log.shutdown().unwrap();
    let r = tooling::verify(dir.path(), &[], None);
    assert!(r.ok, "{}", r.text);
    assert!(r.text.contains("records: 310"), "{}", r.text);
}

/// Polls `done` for up to 30 s (the writer retries once a second).
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_failed_fsync_poisons_the_log_until_restart() {
    let FailingLog {
        keys,
        dir,
        ps,
        flags,
        log,
    } = open_failing_log();
    for i in 0..5 {
        log.append_blocking(record(i, &ps)).unwrap();
    }
    flags.fsync_fails.store(true, Ordering::SeqCst);
    assert!(matches!(
        log.append_blocking(record(5, &ps)),
        Err(AuditError::Unwritable(_))
    ));
    flags.fsync_fails.store(false, Ordering::SeqCst);
    // Even with the disk healthy again, nothing more is accepted: the kernel may have dropped the
    // unsynced pages, so only a restart (which re-reads the disk) may continue.
    assert!(matches!(
        log.append_blocking(record(6, &ps)),
        Err(AuditError::Unwritable(_))
    ));
    assert!(!log.stats().writable);
    assert!(log.shutdown().is_err(), "shutdown reports the failure");
    let (log, report) = AuditLog::open(keys.config(dir.path())).unwrap();
    // Record 5 was written but never acknowledged; it may or may not be there, 0..5 must be.
    assert!(report.records >= 5, "{report:?}");
    log.shutdown().unwrap();
    assert!(tooling::verify(dir.path(), &[], None).ok);
}

#[test]
fn a_full_queue_refuses_appends_as_overloaded_and_keeps_every_one_it_took() {
    // The directories live as long as these bindings.
    let FailingLog {
        keys: _keys,
        dir: _dir,
        ps,
        flags,
        log,
    } = open_failing_log();
    flags.fsync_stalls.store(true, Ordering::SeqCst);
    // The writer takes the first record and hangs in fsync; the queue behind it fills.
    let mut waiting = vec![log.append_ref(&record(0, &ps))];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while log.stats().queue_depth > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer took the first record"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let queued = u64::try_from(QUEUE_CAPACITY).unwrap();
    waiting.extend((1..=queued).map(|i| log.append_ref(&record(i, &ps))));
    assert_eq!(log.stats().queue_depth, QUEUE_CAPACITY);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    // Refused at once; a taken record would wait for the stalled fsync instead.
    let refused = runtime
        .block_on(async {
            let append = log.append_ref(&record(queued + 1, &ps));
            tokio::time::timeout(std::time::Duration::from_secs(1), append).await
        })
        .expect("refused at once rather than queued");
    assert!(
        matches!(refused, Err(AuditError::Overloaded(n)) if n == QUEUE_CAPACITY),
        "{refused:?}"
    );
    flags.fsync_stalls.store(false, Ordering::SeqCst);
    let mut indexes = runtime.block_on(async {
        let mut indexes = Vec::with_capacity(waiting.len());
        for append in waiting {
            indexes.push(append.await.unwrap());
        }
        indexes
    });
    indexes.sort_unstable();
    assert_eq!(indexes, (0..=queued).collect::<Vec<_>>());
    assert_eq!(log.stats().records, queued + 1);
    log.shutdown().unwrap();
}
