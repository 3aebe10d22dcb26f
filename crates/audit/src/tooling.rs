//! What `tollbu audit …` runs, against a log directory on disk (read-only; safe beside a live writer).
//! Each function returns text and a verdict; the binary only prints and picks the exit code.

pub mod browse;
mod index_check;
mod query;
mod verify;

use std::path::Path;

pub use query::{Lookup, Query, citizen, query, query_to};
pub use verify::{VerifyOptions, verify, verify_with_options};

use crate::checkpoint::parse_checkpoint_body;
use crate::error::AuditError;
use crate::segment::{FrameRead, FrameReader};
use crate::tile::TileStore;
use crate::tree;

/// Outcome of a tool: `ok` decides the exit code, `text` is printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ok: bool,
    pub text: String,
}

impl Report {
    fn ok(text: String) -> Self {
        Self { ok: true, text }
    }
    fn fail(e: impl std::fmt::Display) -> Self {
        Self {
            ok: false,
            text: format!("error: {e}\n"),
        }
    }
}

/// Size of the latest checkpoint in `dir` (the tree the tiles on disk describe completely),
/// unchecked: for sizing work and progress displays, never as evidence.
pub fn checkpoint_size(dir: &Path) -> Result<u64, AuditError> {
    let note = std::fs::read_to_string(dir.join("checkpoint"))
        .map_err(AuditError::io(dir.join("checkpoint")))?;
    let body_end = note.find("\n\n").map_or(note.len(), |i| i + 1);
    Ok(parse_checkpoint_body(&note[..body_end])?.size)
}

/// Records below this number were removed by retention (0: none); from the `pruned` marker.
pub(crate) fn first_retained(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("pruned"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// What retention removed, for the people reading query answers: the records before the first
/// one kept and, when it can be read, that record's time. Retention also removes the index entries
/// of those records, so which of them concerned a given subject or consumer is no longer known.
pub fn retention_boundary(dir: &Path) -> Option<(u64, Option<String>)> {
    let first = first_retained(dir);
    if first == 0 {
        return None;
    }
    let segments = crate::segment::list_segments(&dir.join("segments")).ok()?;
    let time = segments
        .iter()
        .find(|s| s.first_seq == first)
        .and_then(|s| FrameReader::open(&s.path).ok())
        .and_then(|mut r| match r.next_frame() {
            Ok(FrameRead::Frame { payload, .. }) => crate::record::decode(&payload).ok(),
            _ => None,
        })
        .map(|r| r.record.time);
    Some((first, time))
}

/// Signed notes kept in `checkpoints.log`, oldest first, and every entry that could not be read
/// there, named with its offset: damaged, torn (a crash in the middle of an append, cut at the
/// gateway's next start) or not text. After an entry whose length cannot be read the rest of the
/// file cannot be framed, and the problem says so.
pub fn checkpoint_history(dir: &Path) -> (Vec<String>, Vec<String>) {
    let path = dir.join("checkpoints.log");
    let mut notes = Vec::new();
    let mut problems = Vec::new();
    if !path.exists() {
        return (notes, problems);
    }
    let mut r = match FrameReader::open(&path) {
        Ok(r) => r,
        Err(e) => {
            problems.push(format!("`checkpoints.log` cannot be read: {e}"));
            return (notes, problems);
        }
    };
    loop {
        match r.next_frame() {
            Ok(FrameRead::Frame { offset, payload }) => match String::from_utf8(payload) {
                Ok(s) => notes.push(s),
                Err(_) => problems.push(format!(
                    "`checkpoints.log` entry at offset {offset} is not text: not a signed note"
                )),
            },
            Ok(FrameRead::End) => break,
            Ok(FrameRead::Bad {
                offset,
                reason,
                payload: Some(_),
            }) => problems.push(format!(
                "`checkpoints.log` entry at offset {offset} is unreadable ({reason})"
            )),
            Ok(FrameRead::Bad {
                offset,
                reason,
                payload: None,
            }) => {
                problems.push(format!(
                    "`checkpoints.log` entry at offset {offset} is unreadable ({reason}); the rest of the file is skipped"
                ));
                break;
            }
            Err(e) => {
                problems.push(format!(
                    "`checkpoints.log` cannot be read after offset {}: {e}",
                    r.offset()
                ));
                break;
            }
        }
    }
    (notes, problems)
}

/// The tiles of the tree of `size` on disk. The tiles of a tree beyond the latest signed checkpoint
/// may not have been written yet: that is said as such, not as a missing (corrupt) tile.
fn open_tiles_at(dir: &Path, size: u64) -> Result<TileStore, AuditError> {
    TileStore::open_at(dir, size).map_err(|error| match checkpoint_size(dir) {
        Ok(signed) if size > signed => AuditError::SizeBeyond {
            size,
            available: signed,
            of: "the latest signed checkpoint",
        },
        _ => error,
    })
}

/// Inclusion proof of record `index` in the tree of `size` (default: the latest checkpoint), as JSON.
pub fn prove(dir: &Path, index: u64, size: Option<u64>) -> Report {
    let run = || -> Result<String, AuditError> {
        crate::log::require_log(dir)?;
        let size = match size {
            Some(s) => s,
            None => checkpoint_size(dir)?,
        };
        let tiles = open_tiles_at(dir, size)?;
        let p = tree::inclusion_proof(&tiles, index, size)?;
        serde_json::to_string_pretty(&p).map_err(|e| AuditError::Corrupt(e.to_string()))
    };
    match run() {
        Ok(t) => Report::ok(t + "\n"),
        Err(e) => Report::fail(e),
    }
}

/// Consistency proof between two tree sizes, as JSON.
pub fn consistency(dir: &Path, from: u64, to: u64) -> Report {
    let run = || -> Result<String, AuditError> {
        crate::log::require_log(dir)?;
        let tiles = open_tiles_at(dir, to)?;
        let p = tree::consistency_proof(&tiles, from, to)?;
        serde_json::to_string_pretty(&p).map_err(|e| AuditError::Corrupt(e.to_string()))
    };
    match run() {
        Ok(t) => Report::ok(t + "\n"),
        Err(e) => Report::fail(e),
    }
}
