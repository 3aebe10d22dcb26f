//! Offline verification of a whole log directory in one streaming pass (O(log n) memory).
//!
//! Checks, in order of the records: frame checksums, canonical encoding, sequence numbers against
//! position (a removed, reordered or inserted record shows up at the first position it disturbs),
//! recomputed leaf hashes against the stored tiles, higher tiles against the lower ones, and finally
//! every signed checkpoint (latest, history, and any kept by the caller) against the recomputed
//! roots. A checkpoint larger than the log is a rollback; one whose root disagrees is a fork, and
//! the checkpoints around it bound where the first altered record lies.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{Report, checkpoint_history};
use crate::checkpoint::{Checkpoint, NoteVerifier, open_checkpoint};
use crate::error::AuditError;
use crate::hash::{Hash, leaf_hash, node_hash};
use crate::record::decode;
use crate::segment::{FrameRead, FrameReader, list_segments};
use crate::tile::{TILE_WIDTH, leaves_below_tile_end, read_tile, tile_index_path, tile_path};
use crate::tree::CompactRange;

struct Problem {
    /// The record index the problem points at.
    index: Option<u64>,
    /// False when `index` is only a lower bound (a checkpoint or upper tile disagrees somewhere above it).
    exact: bool,
    text: String,
}

struct Stream<'a> {
    dir: &'a Path,
    range: CompactRange,
    /// Hashes of the current (incomplete) tile per level.
    levels: Vec<Vec<Hash>>,
    /// Tile counts per level so far.
    tiles_done: Vec<u64>,
    wanted: BTreeMap<u64, Option<Hash>>,
    problems: Vec<Problem>,
    missing_tiles: u64,
}

impl Stream<'_> {
    fn problem(&mut self, index: Option<u64>, text: String) {
        self.problems.push(Problem {
            index,
            exact: true,
            text,
        });
    }

    fn bound(&mut self, index: u64, text: String) {
        self.problems.push(Problem {
            index: Some(index),
            exact: false,
            text,
        });
    }

    fn push(&mut self, leaf: Hash) {
        self.range.push(leaf);
        let size = self.range.size();
        if let Some(slot) = self.wanted.get_mut(&size) {
            *slot = Some(self.range.root());
        }
        let mut carry = leaf;
        let mut level = 0usize;
        loop {
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
                self.tiles_done.push(0);
            }
            self.levels[level].push(carry);
            if self.levels[level].len() as u64 != TILE_WIDTH {
                break;
            }
            let n = self.tiles_done[level];
            let hashes = std::mem::take(&mut self.levels[level]);
            self.compare(level as u8, n, &hashes, true);
            self.tiles_done[level] += 1;
            carry = fold(&hashes);
            level += 1;
        }
    }

    /// Size of the largest signed checkpoint found.
    fn latest_signed(&self) -> u64 {
        self.wanted.keys().next_back().copied().unwrap_or(0)
    }

    /// First leaf index under stored hash `i` of `level`.
    fn first_leaf(level: u8, i: u64) -> u64 {
        i << (8 * u32::from(level))
    }

    fn compare(&mut self, level: u8, n: u64, hashes: &[Hash], full: bool) {
        if full {
            match read_tile(self.dir, level, n, TILE_WIDTH) {
                Ok(stored) => self.diff(level, n, hashes, &stored, "tile"),
                // A live log may hold full tiles no checkpoint covers yet in memory only.
                Err(_) if leaves_below_tile_end(level, n) > self.latest_signed() => {}
                Err(_) => self.missing_tiles += 1,
            }
        }
        // Partial tiles kept from checkpoints must be prefixes of what the records give.
        let pdir = self
            .dir
            .join(format!("tile/{level}/{}.p", tile_index_path(n)));
        if let Ok(rd) = std::fs::read_dir(&pdir) {
            let mut widths: Vec<u64> = rd
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect();
            widths.sort_unstable();
            for w in widths {
                let Ok(stored) = read_tile(self.dir, level, n, w) else {
                    continue;
                };
                if w as usize > hashes.len() {
                    let first_missing =
                        Self::first_leaf(level, n * TILE_WIDTH + hashes.len() as u64);
                    let text = format!(
                        "partial tile `{}` holds {w} hashes but the records give {}: records from index {first_missing} on were removed",
                        tile_path(level, n, w),
                        hashes.len()
                    );
                    if level == 0 {
                        self.problem(Some(first_missing), text);
                    } else {
                        self.bound(first_missing, text);
                    }
                    self.diff(level, n, hashes, &stored[..hashes.len()], "partial tile");
                } else {
                    self.diff(level, n, &hashes[..w as usize], &stored, "partial tile");
                }
            }
        }
    }

    fn diff(&mut self, level: u8, n: u64, computed: &[Hash], stored: &[Hash], what: &str) {
        if let Some(j) = computed.iter().zip(stored).position(|(a, b)| a != b) {
            let i = n * TILE_WIDTH + j as u64;
            let first = Self::first_leaf(level, i);
            let text = if level == 0 {
                format!(
                    "record {i} does not match the leaf hash stored in {what} `{}`",
                    tile_path(0, n, stored.len() as u64)
                )
            } else {
                format!(
                    "{what} `{}` disagrees with the records (subtree from record {first})",
                    tile_path(level, n, stored.len() as u64)
                )
            };
            if level == 0 {
                self.problem(Some(first), text);
            } else {
                self.bound(first, text);
            }
        }
    }
}

fn fold(hashes: &[Hash]) -> Hash {
    let mut cur = hashes.to_vec();
    while cur.len() > 1 {
        cur = cur
            .chunks(2)
            .map(|c| {
                if c.len() == 2 {
                    node_hash(&c[0], &c[1])
                } else {
                    c[0]
                }
            })
            .collect();
    }
    cur[0]
}

/// Verifies the log in `dir`. `checkpoints` are notes kept elsewhere (by auditors, witnesses, other
/// systems); they matter most, because an attacker with write access to `dir` can rewrite what is in
/// it. `verifier_key` should come from outside `dir` too; without it the key stored in the log is used.
pub fn verify(dir: &Path, checkpoints: &[PathBuf], verifier_key: Option<&str>) -> Report {
    match run(dir, checkpoints, verifier_key) {
        Ok(r) => r,
        Err(e) => Report::fail(e),
    }
}

fn run(dir: &Path, kept: &[PathBuf], verifier_key: Option<&str>) -> Result<Report, AuditError> {
    // With `--key`, nothing else would be read before the segments: a mistyped directory would
    // verify as an empty log.
    crate::log::require_log(dir)?;
    let mut out = String::new();
    let (vkey, key_note) = match verifier_key {
        Some(k) => (k.to_string(), ""),
        None => (
            std::fs::read_to_string(dir.join("verifier-key"))
                .map_err(AuditError::io(dir.join("verifier-key")))?,
            " (taken from the log directory; pass the published key for an independent check)",
        ),
    };
    let verifier = NoteVerifier::parse(vkey.trim())?;
    let _ = writeln!(
        out,
        "log: {}\nverifier key: {}{key_note}",
        dir.display(),
        vkey.trim()
    );

    let mut s = Stream {
        dir,
        range: CompactRange::new(),
        levels: Vec::new(),
        tiles_done: Vec::new(),
        wanted: BTreeMap::new(),
        problems: Vec::new(),
        missing_tiles: 0,
    };

    // Gather checkpoints: the latest, the history, and the caller's.
    let mut notes: Vec<(String, String)> = Vec::new();
    if let Ok(n) = std::fs::read_to_string(dir.join("checkpoint")) {
        notes.push(("checkpoint".into(), n));
    }
    for (i, n) in checkpoint_history(dir).into_iter().enumerate() {
        notes.push((format!("checkpoints.log #{i}"), n));
    }
    for p in kept {
        match std::fs::read_to_string(p) {
            Ok(n) => notes.push((p.display().to_string(), n)),
            Err(e) => s.problem(
                None,
                format!("kept checkpoint `{}` cannot be read: {e}", p.display()),
            ),
        }
    }
    let mut cps: Vec<(String, Checkpoint)> = Vec::new();
    for (label, note) in notes {
        match open_checkpoint(&note, &verifier) {
            Ok(cp) => {
                s.wanted.insert(cp.size, None);
                cps.push((label, cp));
            }
            Err(e) => s.problem(None, format!("checkpoint `{label}` rejected: {e}")),
        }
    }
    let mut by_size: BTreeMap<u64, Hash> = BTreeMap::new();
    for (label, cp) in &cps {
        if let Some(other) = by_size.insert(cp.size, cp.root)
            && other != cp.root
        {
            s.problem(
                None,
                format!(
                    "two signed checkpoints disagree at size {} (`{label}`): the log forked",
                    cp.size
                ),
            );
        }
    }
    if s.wanted.contains_key(&0) {
        s.wanted.insert(0, Some(crate::hash::empty_root()));
    }

    // Pruned prefix: only leaf hashes remain, taken from the level-0 tiles.
    let pruned = super::first_retained(dir);
    let mut pos = 0u64;
    // Difference between stored sequence numbers and positions; reported only when it changes, so a
    // removed record yields one finding rather than one per later record.
    let mut seq_shift: i128 = 0;
    while pos < pruned {
        let n = pos / TILE_WIDTH;
        match read_tile(dir, 0, n, TILE_WIDTH) {
            Ok(hashes) => {
                let take = (pruned - pos).min(TILE_WIDTH) as usize;
                for h in &hashes[..take] {
                    s.push(*h);
                }
                pos += take as u64;
            }
            Err(e) => {
                s.problem(
                    Some(pos),
                    format!("records below {pruned} were pruned but their hashes are gone: {e}"),
                );
                break;
            }
        }
    }
    if pruned > 0 {
        let _ = writeln!(out, "pruned: records 0..{pruned} kept as hashes only");
    }

    for seg in list_segments(&dir.join("segments"))? {
        if seg.first_seq < pruned {
            continue;
        }
        if seg.first_seq != pos {
            let at = pos.min(seg.first_seq);
            s.problem(
                Some(at),
                format!(
                    "segment `{}` starts at record {} but {} records precede it: records removed or inserted",
                    seg.path.display(),
                    seg.first_seq,
                    pos
                ),
            );
        }
        let mut r = FrameReader::open(&seg.path)?;
        loop {
            match r.next_frame().map_err(AuditError::io(&seg.path))? {
                FrameRead::End => break,
                FrameRead::Frame { payload, .. } => {
                    match decode(&payload) {
                        Ok(rec) => {
                            let shift = i128::from(rec.seq) - i128::from(pos);
                            if shift != seq_shift && shift != 0 {
                                s.problem(
                                    Some(pos),
                                    format!("record {pos} carries sequence number {}: a record was removed, reordered or inserted", rec.seq),
                                );
                            }
                            seq_shift = shift;
                        }
                        Err(e) => s.problem(Some(pos), format!("record {pos} is altered: {e}")),
                    }
                    s.push(leaf_hash(&payload));
                    pos += 1;
                }
                FrameRead::Bad {
                    offset,
                    reason,
                    payload,
                } => {
                    let where_ = format!("`{}` offset {offset}", seg.path.display());
                    match payload {
                        Some(p) => {
                            s.problem(
                                Some(pos),
                                format!("record {pos} is altered ({reason} at {where_})"),
                            );
                            s.push(leaf_hash(&p));
                            pos += 1;
                        }
                        None => {
                            s.problem(Some(pos), format!("record {pos} is unreadable ({reason} at {where_}); the rest of the segment is skipped"));
                            break;
                        }
                    }
                }
            }
        }
    }
    let n = pos;

    // The right edge: partial tiles may not extend past the records, no full tile may exist beyond.
    for level in 0..s.levels.len() {
        let hashes = s.levels[level].clone();
        let idx = s.tiles_done[level];
        s.compare(level as u8, idx, &hashes, false);
        if dir.join(tile_path(level as u8, idx, TILE_WIDTH)).exists() {
            s.problem(
                Some(n),
                format!(
                    "tile `{}` exists beyond the last record: records from index {n} were removed",
                    tile_path(level as u8, idx, TILE_WIDTH)
                ),
            );
        }
    }
    if s.levels.is_empty() && dir.join(tile_path(0, 0, TILE_WIDTH)).exists() {
        s.problem(
            Some(0),
            "tiles exist but no records do: records were removed".into(),
        );
    }

    // Checkpoints against recomputed roots.
    let mut verdicts: BTreeMap<u64, bool> = BTreeMap::new();
    for (label, cp) in &cps {
        if cp.size > n {
            s.problem(
                Some(n),
                format!(
                    "rollback: checkpoint `{label}` covers {} records but the log has {n}",
                    cp.size
                ),
            );
            verdicts.insert(cp.size, false);
            continue;
        }
        let ok = s.wanted.get(&cp.size).copied().flatten() == Some(cp.root);
        verdicts.insert(cp.size, *verdicts.get(&cp.size).unwrap_or(&true) && ok);
        if !ok {
            let good_below = verdicts_good_below(&cps, &s.wanted, cp.size);
            s.bound(
                good_below,
                format!(
                    "fork: checkpoint `{label}` (size {}) does not match the records; the first altered record is in {good_below}..{}",
                    cp.size, cp.size
                ),
            );
        }
    }
    if s.missing_tiles > 0 {
        let _ = writeln!(
            out,
            "note: {} full tiles are missing (derived data; the log rebuilds trailing ones on open)",
            s.missing_tiles
        );
    }
    let root = s.range.root();
    let _ = writeln!(out, "records: {n}\nroot: {}", hex::encode(root));
    let _ = writeln!(out, "checkpoints checked: {}", cps.len());
    let mut problems = s.problems;
    problems.sort_by_key(|p| p.index.unwrap_or(u64::MAX));
    if problems.is_empty() {
        let _ = writeln!(out, "OK: every record, tile and checkpoint is consistent");
        return Ok(Report::ok(out));
    }
    let exact = problems
        .iter()
        .filter(|p| p.exact)
        .filter_map(|p| p.index)
        .min();
    let bound = problems
        .iter()
        .filter(|p| !p.exact)
        .filter_map(|p| p.index)
        .min();
    match (exact, bound) {
        (Some(first), _) => {
            let _ = writeln!(out, "FIRST bad record index: {first}");
        }
        (None, Some(b)) => {
            let _ = writeln!(
                out,
                "FIRST bad record index: at or after {b} (no stored hash pins it exactly)"
            );
        }
        (None, None) => {}
    }
    for p in &problems {
        let _ = writeln!(out, "FAIL: {}", p.text);
    }
    Ok(Report {
        ok: false,
        text: out,
    })
}

/// Largest checkpoint size below `size` whose root matches the records (0 if none).
fn verdicts_good_below(
    cps: &[(String, Checkpoint)],
    roots: &BTreeMap<u64, Option<Hash>>,
    size: u64,
) -> u64 {
    cps.iter()
        .filter(|(_, c)| c.size < size && roots.get(&c.size).copied().flatten() == Some(c.root))
        .map(|(_, c)| c.size)
        .max()
        .unwrap_or(0)
}
