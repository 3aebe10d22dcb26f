//! Tollbu's tamper-evident, privacy-preserving audit log.
//!
//! Every request the gateway decides leaves one [`Record`]. Records are appended by a single
//! group-commit writer to checksummed segment files, hashed into an RFC 9162 Merkle tree whose
//! hashes are kept as C2SP tlog tiles, and covered by Ed25519-signed C2SP checkpoints, so a verifier
//! can prove that nothing was altered, removed, reordered or inserted. Subjects are stored only as
//! keyed pseudonyms (HMAC-SHA-256). [`tooling`] holds what `tollbu audit …` runs: verify, query,
//! proofs, and the citizen's "who read my data" report.
//!
//! It deliberately does not speak HTTP, know about policies, encrypt records at rest, or replicate:
//! the proxy serves checkpoints, proofs and tiles from the functions here, and each gateway replica
//! keeps its own log under its own origin.
#![forbid(unsafe_code)]

pub mod checkpoint;
mod error;
pub mod hash;
pub mod index;
mod log;
mod pseudonym;
pub mod record;
pub mod retention_statement;
pub mod segment;
pub mod tile;
pub mod tooling;
pub mod tree;

pub use checkpoint::{Checkpoint, CheckpointSigner, NoteVerifier, open_checkpoint};
pub use error::AuditError;
pub use hash::Hash;
pub use log::{
    AuditConfig, AuditLog, AuditStats, DEFAULT_CHECKPOINT_EVERY, DEFAULT_CHECKPOINT_INTERVAL,
    Durability, FSYNC_BUCKETS_MICROS, FsyncHistogram, MAX_BATCH_RECORDS, MAX_SEGMENTS_PER_PRUNE,
    PruneReport, QUEUE_CAPACITY, RecoveryReport, ReindexReport, prune_closed_log,
    prune_closed_log_in_steps, reindex_closed_log,
};
pub use pseudonym::{KEY_CHECK_FILE, Pseudonymiser, ensure_key_matches_log};
pub use record::{Decision, Record};
pub use retention_statement::RetentionStatement;
pub use segment::{FsStorage, SegmentFile, Storage};
pub use tree::{ConsistencyProof, InclusionProof};
