//! The checkpoint thread: writes the full tiles the writer completed (with each checkpoint, and in
//! between once enough pile up) and the partial tiles durably, signs the checkpoint and publishes
//! it. A checkpoint costs dozens of file creations and fsyncs; done on the writer thread they would
//! hold every waiting append, so the writer only hands over what to write and sign.
//!
//! Order is what keeps this safe: the writer hands over a size only after those records are
//! durable, jobs run one at a time in the order given, and tiles are synced before the note is
//! signed, so recovery may trust every tile below the last signed size.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::{Shared, Trouble};
use crate::checkpoint::CheckpointSigner;
use crate::error::AuditError;
use crate::hash::Hash;
use crate::segment::{append_durably, frame, write_atomic};
use crate::tile::{FullTile, PartialTiles, write_full_tiles};

/// What to sign: the tree at `size` and the partial tiles that must be on disk before the note may
/// exist.
pub(crate) struct Signing {
    pub size: u64,
    pub root: Hash,
    pub partials: PartialTiles,
}

/// Full tiles to write, all those of a tree of `upto` leaves not handed over before.
pub(crate) struct NewTiles {
    pub tiles: Vec<FullTile>,
    pub upto: u64,
}

struct Job {
    /// Written before `signing` is signed.
    tiles: NewTiles,
    signing: Option<Signing>,
    /// Answered once this job (and so every earlier one) is done.
    reply: Option<mpsc::Sender<Result<(), AuditError>>>,
}

pub(crate) struct Notary {
    tx: Option<mpsc::Sender<Job>>,
    join: Option<JoinHandle<()>>,
    /// Jobs handed over and not yet finished.
    pending: Arc<AtomicUsize>,
}

impl Notary {
    pub fn start(
        dir: PathBuf,
        signer: Arc<CheckpointSigner>,
        shared: Arc<Shared>,
    ) -> Result<Self, AuditError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let pending = Arc::new(AtomicUsize::new(0));
        let left = pending.clone();
        let join = std::thread::Builder::new()
            .name("tollbu-audit-notary".into())
            .spawn(move || run(&rx, &dir, &signer, &shared, &left))
            .map_err(AuditError::io(PathBuf::from("tollbu-audit-notary")))?;
        Ok(Self {
            tx: Some(tx),
            join: Some(join),
            pending,
        })
    }

    /// True while an earlier checkpoint is still being written; the writer then lets records
    /// accumulate into the next one instead of queueing another.
    pub fn busy(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
    }

    /// Hands over `tiles` and `signing` (if any); with `wait`, returns once this and every earlier
    /// job is done.
    pub fn submit(
        &self,
        tiles: NewTiles,
        signing: Option<Signing>,
        wait: bool,
    ) -> Result<(), AuditError> {
        let Some(tx) = &self.tx else {
            return Err(AuditError::Closed);
        };
        let (reply, done) = if wait {
            let (t, r) = mpsc::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        self.pending.fetch_add(1, Ordering::AcqRel);
        if tx
            .send(Job {
                tiles,
                signing,
                reply,
            })
            .is_err()
        {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(AuditError::Closed);
        }
        match done {
            Some(r) => r.recv().map_err(|_| AuditError::Closed)?,
            None => Ok(()),
        }
    }

    /// Waits for every job handed over, then stops the thread.
    pub fn finish(&mut self) {
        self.tx = None;
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

fn run(
    rx: &mpsc::Receiver<Job>,
    dir: &std::path::Path,
    signer: &CheckpointSigner,
    shared: &Shared,
    pending: &AtomicUsize,
) {
    let mut failed: Option<String> = None;
    // What a job could not write for lack of space (or another failure that left nothing half
    // written): retried with the next job, so that service resumes once space returns.
    let mut unwritten = NewTiles {
        tiles: Vec::new(),
        upto: 0,
    };
    let mut unsigned: Option<Signing> = None;
    for job in rx {
        unwritten.tiles.extend(job.tiles.tiles);
        unwritten.upto = unwritten.upto.max(job.tiles.upto);
        // A later checkpoint covers an earlier one that could not be published.
        unsigned = match (job.signing, unsigned.take()) {
            (Some(new), Some(old)) if old.size > new.size => Some(old),
            (Some(new), _) => Some(new),
            (None, old) => old,
        };
        let result = match &failed {
            Some(why) => Err(AuditError::Unwritable(why.clone())),
            None => match run_job(dir, signer, shared, &mut unwritten, &mut unsigned) {
                Ok(()) => {
                    shared.clear_trouble(Trouble::Checkpoints);
                    Ok(())
                }
                Err(JobFailure::Retry(e)) => {
                    let why = format!("writing tiles or the checkpoint failed (retried): {e}");
                    shared.report_trouble(Trouble::Checkpoints, &why);
                    Err(e)
                }
                Err(JobFailure::Fatal(e)) => {
                    // The history of signed notes could not be restored after a failed append:
                    // stop the log, as for a failed fsync; a restart re-reads what is really there.
                    let why = format!("writing the checkpoint history failed: {e}");
                    shared.poison(&why);
                    failed = Some(why.clone());
                    Err(AuditError::Unwritable(why))
                }
            },
        };
        pending.fetch_sub(1, Ordering::AcqRel);
        if let Some(reply) = job.reply {
            let _ = reply.send(result);
        }
    }
}

/// Why a job stopped: `Retry` left nothing half written (temporary files are removed, a partly
/// appended note is cut off again), so what is left of it can be tried again.
enum JobFailure {
    Retry(AuditError),
    Fatal(AuditError),
}

/// Writes `unwritten` tiles and publishes `unsigned`, taking each once it is done.
fn run_job(
    dir: &std::path::Path,
    signer: &CheckpointSigner,
    shared: &Shared,
    unwritten: &mut NewTiles,
    unsigned: &mut Option<Signing>,
) -> Result<(), JobFailure> {
    if !unwritten.tiles.is_empty() {
        write_full_tiles(dir, &unwritten.tiles).map_err(JobFailure::Retry)?;
        shared
            .tiles_on_disk
            .fetch_max(unwritten.upto, Ordering::AcqRel);
        unwritten.tiles.clear();
    }
    if let Some(s) = unsigned {
        publish(dir, signer, shared, s)?;
        *unsigned = None;
    }
    Ok(())
}

fn publish(
    dir: &std::path::Path,
    signer: &CheckpointSigner,
    shared: &Shared,
    s: &Signing,
) -> Result<(), JobFailure> {
    s.partials.write().map_err(JobFailure::Retry)?;
    let note = signer.sign(s.size, &s.root);
    append_history(dir, &note).map_err(|failure| match failure {
        HistoryFailure::Undone(e) => JobFailure::Retry(e),
        HistoryFailure::Stuck(e) => JobFailure::Fatal(e),
    })?;
    // The history already holds the note; publishing it again later repeats the same statement.
    write_atomic(&dir.join("checkpoint"), note.as_bytes()).map_err(JobFailure::Retry)?;
    shared.checkpoint_size.store(s.size, Ordering::Release);
    if let Ok(mut c) = shared.checkpoint.lock() {
        *c = Some(note);
    }
    Ok(())
}

enum HistoryFailure {
    /// The file is as it was before the append.
    Undone(AuditError),
    /// A partial note may remain in it.
    Stuck(AuditError),
}

/// Appends a signed note to `checkpoints.log` (framed like records) and fsyncs it; a failed
/// append is cut off again, so a later one never follows a torn frame.
fn append_history(dir: &std::path::Path, note: &str) -> Result<(), HistoryFailure> {
    let path = dir.join("checkpoints.log");
    let before = match std::fs::metadata(&path) {
        Ok(m) => Some(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(HistoryFailure::Undone(AuditError::io(&path)(e))),
    };
    let mut buf = Vec::with_capacity(note.len() + 8);
    frame(note.as_bytes(), &mut buf);
    let Err(e) = append_durably(&path, &buf) else {
        return Ok(());
    };
    let undone = match before {
        Some(len) => std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| {
                f.set_len(len)?;
                f.sync_all()
            }),
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    };
    match undone {
        Ok(()) => Err(HistoryFailure::Undone(e)),
        Err(_) => Err(HistoryFailure::Stuck(e)),
    }
}
