//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the audit log.
///
/// The gateway treats any error from [`crate::AuditLog::append`] as "not recorded" and fails the request
/// closed (503); the variants exist so operators and tests can tell the causes apart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("i/o error on `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    #[error("record is {0} bytes; the limit is 65535")]
    RecordTooLarge(usize),
    #[error("the audit log is not writable after an earlier storage failure: {0}")]
    Unwritable(String),
    #[error("the audit log is closed")]
    Closed,
    #[error("the audit queue is full ({0} pending appends)")]
    Overloaded(usize),
    #[error("invalid key file `{path}`: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("invalid verifier key `{0}`")]
    VerifierKey(String),
    #[error("invalid signed note: {0}")]
    Note(String),
    #[error("invalid checkpoint: {0}")]
    Checkpoint(String),
    #[error(
        "the log on disk has {records} records but a signed checkpoint covers {checkpoint}: refusing to fork"
    )]
    Rollback { records: u64, checkpoint: u64 },
    #[error(
        "the log on disk disagrees with its signed checkpoint at size {size}: refusing to fork"
    )]
    Fork { size: u64 },
    #[error("the log in `{dir}` has origin `{found}`, configuration says `{configured}`")]
    OriginMismatch {
        dir: PathBuf,
        found: String,
        configured: String,
    },
    #[error("corrupt log data: {0}")]
    Corrupt(String),
    #[error(
        "the log in `{0}` is already open in another process (or handle); one writer per log directory"
    )]
    Locked(PathBuf),
    /// A reading or pruning tool was pointed at a directory without a log (a mistyped path).
    #[error("`{0}` holds no audit log (no `segments` directory)")]
    NoLog(PathBuf),
    /// A subject search with a pseudonym key other than the log's would find nothing.
    #[error(
        "the pseudonym key given is not the one `{0}` was written with: a subject search with it would find nothing"
    )]
    PseudonymKeyMismatch(PathBuf),
    /// A proof asked for a tree larger than what is there to prove it from.
    #[error("tree size {size} is larger than {of} ({available} records)")]
    SizeBeyond {
        size: u64,
        available: u64,
        of: &'static str,
    },
    #[error("index {index} is out of range for tree size {size}")]
    OutOfRange { index: u64, size: u64 },
    /// The subject and consumer index lost entries (a bucket truncated, deleted or with entries
    /// cut out): an answer from it would silently leave requests out, so none is given.
    #[error(
        "the audit log index is damaged: `{path}` {problem}, so an answer from it would leave requests out; \
         run `tollbu audit verify {dir}`, then rebuild the index with `tollbu audit reindex {dir}` \
         while no gateway has the log open (or remove `{dir}/index` and restart the gateway, which rebuilds it); \
         until then `tollbu audit query` and `tollbu audit citizen` answer in full with `--scan`, which reads every record",
        path = path.display(),
        dir = dir.display()
    )]
    IndexDamaged {
        dir: PathBuf,
        path: PathBuf,
        problem: String,
    },
    /// A caller's request the log cannot answer as asked (a bad filter, proof range or batch).
    #[error("invalid request: {0}")]
    BadRequest(String),
}

impl AuditError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AuditError {
        let path = path.into();
        move |source| AuditError::Io { path, source }
    }
}
