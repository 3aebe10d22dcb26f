//! Offline verification of a whole log directory in one streaming pass (memory: O(log n) for the
//! tree, plus the leaf hashes of the few segments read ahead).
//!
//! Checks, in order of the records: frame checksums, canonical encoding, sequence numbers against
//! position (a removed, reordered or inserted record shows up at the first position it disturbs),
//! recomputed leaf hashes against the stored tiles, higher tiles against the lower ones, and finally
//! every signed checkpoint (latest, history, and any kept by the caller) against the recomputed
//! roots. A checkpoint larger than the log is a rollback; one whose root disagrees is a fork, and
//! the checkpoints around it bound where the first altered record lies. Records no signed checkpoint
//! covers fail too (they could have been rewritten wholesale), and so does any tile reaching past
//! the last record (records were removed). Missing tiles are derived data: noted, not failed. A
//! pruned prefix (retention keeps only its leaf hashes) needs a retention statement signed by the
//! log's key or one the caller trusts for that, covering it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::index_check::IndexCheck;
use super::{Report, checkpoint_history};
use crate::checkpoint::{Checkpoint, NoteVerifier, open_checkpoint};
use crate::error::AuditError;
use crate::hash::{Hash, node_hash};
use crate::segment::list_segments;
use crate::tile::{
    MAX_X_DEPTH, TILE_HEIGHT, TILE_WIDTH, find_tile, index_group, leaves_below_tile_end, read_tile,
    stored_count, tile_index_path, tile_path,
};
use crate::tree::CompactRange;

mod scan;

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
    /// Full tiles a signed checkpoint covers that have no file.
    missing_full_tiles: u64,
    /// Records read so far, for the caller's progress display.
    progress: Option<&'a std::sync::atomic::AtomicU64>,
}

/// Where the stream stood before a segment was read, to go back to should retention remove
/// the segment meanwhile. O(log n): the compact range and one partial tile per level.
struct StreamMark {
    range: CompactRange,
    levels: Vec<Vec<Hash>>,
    tiles_done: Vec<u64>,
    problems: usize,
    missing_full_tiles: u64,
}

impl Stream<'_> {
    fn mark(&self) -> StreamMark {
        StreamMark {
            range: self.range.clone(),
            levels: self.levels.clone(),
            tiles_done: self.tiles_done.clone(),
            problems: self.problems.len(),
            missing_full_tiles: self.missing_full_tiles,
        }
    }

    /// Goes back to `mark`, taken at record `from`; forgets the roots of the sizes up to `to`
    /// that the records read since gave.
    fn restore(&mut self, mark: StreamMark, from: u64, to: u64) {
        self.range = mark.range;
        self.levels = mark.levels;
        self.tiles_done = mark.tiles_done;
        self.problems.truncate(mark.problems);
        self.missing_full_tiles = mark.missing_full_tiles;
        if from < to {
            for (_, root) in self.wanted.range_mut(from + 1..=to) {
                *root = None;
            }
        }
    }

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
            let covers_up_to = leaves_below_tile_end(level, n);
            match find_tile(self.dir, level, n, TILE_WIDTH) {
                Ok(Some(stored)) => self.diff(level, n, hashes, &stored, "tile"),
                // A live log may hold full tiles no checkpoint covers yet in memory only.
                Ok(None) if covers_up_to > self.latest_signed() => {}
                Ok(None) => self.missing_full_tiles += 1,
                Err(e) => self.problem(
                    None,
                    format!("tile `{}` is damaged: {e}", tile_path(level, n, TILE_WIDTH)),
                ),
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
                // Only the common prefix: a partial wider than the records is reported from the
                // tiles listed before the records were read (`furthest_tiles`), since a live
                // writer may add a wider one meanwhile.
                self.diff(level, n, hashes, &stored, "partial tile");
            }
        }
    }

    /// Partial tiles of the tree at `size` that no file holds (a wider partial or the full tile
    /// serves as well). `size` is the latest signed checkpoint: the notary wrote its tiles before
    /// signing it, and later ones may still be in a live writer's memory.
    fn missing_partial_tiles(&mut self, size: u64) -> u64 {
        let mut missing = 0;
        let mut level = 0u8;
        while stored_count(level, size) > 0 {
            let count = stored_count(level, size);
            let width = count % TILE_WIDTH;
            let n = count / TILE_WIDTH;
            if width > 0 {
                match find_tile(self.dir, level, n, width) {
                    Ok(Some(_)) => {}
                    Ok(None) => missing += 1,
                    Err(e) => self.problem(
                        None,
                        format!("tile `{}` is damaged: {e}", tile_path(level, n, width)),
                    ),
                }
            }
            level += 1;
        }
        missing
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

/// A tile file found under `tile/`.
struct TileName {
    level: u8,
    index: u64,
    /// Hashes it holds: [`TILE_WIDTH`] for a full tile.
    width: u64,
}

impl TileName {
    fn path(&self) -> String {
        tile_path(self.level, self.index, self.width)
    }

    /// Records the tree held when this tile was written (saturating: a name too large for any
    /// tree counts as beyond every log).
    fn records_covered(&self) -> u64 {
        let hashes = u128::from(self.index) * u128::from(TILE_WIDTH) + u128::from(self.width);
        1u128
            .checked_shl(u32::from(self.level) * u32::from(TILE_HEIGHT))
            .and_then(|records_per_hash| hashes.checked_mul(records_per_hash))
            .and_then(|records| u64::try_from(records).ok())
            .unwrap_or(u64::MAX)
    }
}

/// The tile reaching furthest at each level under `tile/` (by index, then width), full or
/// partial, wherever the log ends.
fn furthest_tiles(dir: &Path) -> Vec<TileName> {
    let Ok(levels) = std::fs::read_dir(dir.join("tile")) else {
        return Vec::new();
    };
    levels
        .flatten()
        .filter_map(|entry| {
            let level = entry.file_name().to_str()?.parse().ok()?;
            let (index, width) = furthest_in_group(&entry.path(), 0, 0)?;
            Some(TileName {
                level,
                index,
                width,
            })
        })
        .collect()
}

/// The furthest (index, width) in a directory of `tile/<L>/` whose `x` groups so far spell
/// `prefix`. A name with more groups has the larger index, so `x` directories are searched first,
/// highest first, stopping at the first that holds a tile: a few directories are read, not every
/// tile of a large log.
fn furthest_in_group(group_dir: &Path, prefix: u64, depth: usize) -> Option<(u64, u64)> {
    let entries = std::fs::read_dir(group_dir).ok()?;
    let index = |digits: &str| prefix.checked_mul(1000)?.checked_add(index_group(digits)?);
    let mut subgroups: Vec<(u64, PathBuf)> = Vec::new();
    let mut furthest: Option<(u64, u64)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if let Some(sub) = name.strip_prefix('x').and_then(index) {
            subgroups.push((sub, entry.path()));
        } else if let Some(i) = name.strip_suffix(".p").and_then(index) {
            if let Some(width) = widest_partial(&entry.path()) {
                furthest = furthest.max(Some((i, width)));
            }
        } else if let Some(i) = index(name) {
            furthest = furthest.max(Some((i, TILE_WIDTH)));
        }
    }
    if depth < MAX_X_DEPTH {
        subgroups.sort_unstable_by_key(|(sub, _)| std::cmp::Reverse(*sub));
        for (sub, sub_dir) in subgroups {
            if let Some(found) = furthest_in_group(&sub_dir, sub, depth + 1) {
                return furthest.max(Some(found));
            }
        }
    }
    furthest
}

/// Widest partial tile in a `<N>.p` directory.
fn widest_partial(partial_dir: &Path) -> Option<u64> {
    std::fs::read_dir(partial_dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|width| (1..TILE_WIDTH).contains(width))
        .max()
}

/// Why no signed checkpoint covers the `records` of the log in `dir`, naming the files that
/// should hold one.
fn uncovered_records(dir: &Path, records: u64, no_kept_checkpoints: bool) -> String {
    let none_valid = "no valid checkpoint of a non-empty tree";
    let files = match (
        dir.join("checkpoint").exists(),
        dir.join("checkpoints.log").exists(),
    ) {
        (false, false) => "`checkpoint` and `checkpoints.log` are missing".to_string(),
        (false, true) => {
            format!("`checkpoint` is missing and `checkpoints.log` holds {none_valid}")
        }
        (true, false) => {
            format!("`checkpoints.log` is missing and `checkpoint` holds {none_valid}")
        }
        (true, true) => format!("`checkpoint` and `checkpoints.log` hold {none_valid}"),
    };
    let kept = if no_kept_checkpoints {
        "no kept checkpoint was given (--checkpoint)"
    } else {
        "no kept checkpoint covers a record"
    };
    format!(
        "no signed checkpoint covers the {records} records, so nothing proves they were not rewritten: {files}, and {kept}. A gateway signs one at most its checkpoint interval (`checkpoint_interval_secs`, 1 s by default) after its first records arrive, so only a log younger than that may rightly have none yet"
    )
}

/// How an officer or operator gets an index that matches the records again.
fn rebuild_index_advice(dir: &Path) -> String {
    format!(
        "rebuild it with `tollbu audit reindex {}` while no gateway serves the log, or remove its `index` directory and restart the gateway",
        dir.display()
    )
}

/// Verifies the log in `dir`. `checkpoints` are notes kept elsewhere (by auditors, witnesses, other
/// systems); they matter most, because an attacker with write access to `dir` can rewrite what is in
/// it. `verifier_key` should come from outside `dir` too; without it the key stored in the log is used.
pub fn verify(dir: &Path, checkpoints: &[PathBuf], verifier_key: Option<&str>) -> Report {
    verify_with_options(
        dir,
        &VerifyOptions {
            checkpoints,
            verifier_key,
            ..VerifyOptions::default()
        },
    )
}

/// What [`verify_with_options`] takes beyond the directory.
#[derive(Debug, Default, Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// Checkpoints kept elsewhere (see [`verify`]).
    pub checkpoints: &'a [PathBuf],
    /// The published verifier key; without it, the one stored in the log.
    pub verifier_key: Option<&'a str>,
    /// Further verifier keys trusted to sign the retention statement: the gateway that sweeps a
    /// log a signing-key rotation retired signs with its current key.
    pub retention_keys: &'a [String],
    /// Set to the number of records read so far after each segment, for a progress display on a
    /// log that takes minutes.
    pub progress: Option<&'a std::sync::atomic::AtomicU64>,
    /// Threads that read, decode and hash segments ahead of the calling thread; `None`: one per
    /// core. `Some(0)` does all of it on the calling thread, for a process with other work (a
    /// serving gateway's console).
    pub readers: Option<usize>,
}

/// [`verify`] with every option.
pub fn verify_with_options(dir: &Path, options: &VerifyOptions<'_>) -> Report {
    match run(dir, options) {
        Ok(r) => r,
        Err(e) => Report::fail(e),
    }
}

fn run(dir: &Path, options: &VerifyOptions<'_>) -> Result<Report, AuditError> {
    let VerifyOptions {
        checkpoints: kept,
        verifier_key,
        retention_keys,
        progress,
        readers,
    } = *options;
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
    let mut retention_signers = vec![verifier.clone()];
    for key in retention_keys {
        retention_signers.push(NoteVerifier::parse(key)?);
    }
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
        missing_full_tiles: 0,
        progress,
    };

    // Gather checkpoints: the latest, the history, and the caller's.
    let mut notes: Vec<(String, String)> = Vec::new();
    if let Ok(n) = std::fs::read_to_string(dir.join("checkpoint")) {
        notes.push(("checkpoint".into(), n));
    }
    let (history, unreadable) = checkpoint_history(dir);
    for (i, n) in history.into_iter().enumerate() {
        notes.push((format!("checkpoints.log #{i}"), n));
    }
    for problem in unreadable {
        s.problem(None, problem);
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

    // Listed before the records are read: every tile listed now hashes records already durable.
    let furthest = furthest_tiles(dir);

    // Pruned prefix: only leaf hashes remain, taken from the level-0 tiles. A sweep beside a
    // live log can move the marker while this runs; `pruned` follows it (see `read_records`).
    let pruned_at_start = super::first_retained(dir);
    let mut index_check = IndexCheck::new(dir, pruned_at_start);
    let readers = readers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let (n, pruned) = read_records(&mut s, &mut index_check, pruned_at_start, readers)?;
    if pruned > 0 {
        let oldest_kept = super::retention_boundary(dir)
            .filter(|(first, _)| *first == pruned)
            .and_then(|(_, time)| time)
            .map(|time| format!("; the oldest record kept, #{pruned}, is from {time}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "pruned: records 0..{pruned} kept as hashes only{oldest_kept}"
        );
        // Read after the records: a sweep signs its statement before it moves the marker.
        match retention_vouched(dir, pruned, verifier.name(), &retention_signers) {
            Ok(line) => {
                let _ = writeln!(out, "{line}");
            }
            Err((first_unvouched, why)) => s.problem(Some(first_unvouched), why),
        }
    }
    if pruned > pruned_at_start {
        let _ = writeln!(
            out,
            "note: a retention sweep removed records {pruned_at_start}..{pruned} while this check ran; they were verified through their kept hashes"
        );
    }

    // The right edge: partial tiles must be prefixes of what the records give.
    for level in 0..s.levels.len() {
        let hashes = s.levels[level].clone();
        let idx = s.tiles_done[level];
        s.compare(level as u8, idx, &hashes, false);
    }
    // Tiles are written only after the records they hash are durable: one reaching past the last
    // record (at any level, full or partial) is left over from records that were removed.
    for tile in furthest {
        let covers = tile.records_covered();
        if covers > n {
            s.problem(
                Some(n),
                format!(
                    "tile `{}` covers {covers} records but the log holds {n}: records from index {n} on were removed",
                    tile.path()
                ),
            );
        }
    }
    let missing_partial_tiles = s.missing_partial_tiles(s.latest_signed());

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
    // Records no checkpoint covers could have been rewritten wholesale, tiles and all: checking
    // against the published key proves nothing until one does.
    if n > 0 && cps.iter().all(|(_, cp)| cp.size == 0) {
        s.problem(None, uncovered_records(dir, n, kept.is_empty()));
    }
    // Queries, the citizen report and the console answer from the index, which the tree does not
    // cover: entries lost or rewritten there would leave requests out of those answers.
    let claimed = crate::index::watermark(dir).seq;
    if claimed > n {
        s.problem(
            None,
            format!(
                "`index/watermark` says {claimed} records are indexed but the log holds {n}: the index does not belong to these records; {}",
                rebuild_index_advice(dir)
            ),
        );
    }
    let mismatched = index_check.mismatched_buckets(dir)?;
    if let Some(first) = mismatched.first() {
        s.problem(
            None,
            format!(
                "the index does not match the records in {} of its buckets (first `{first}`): entries are missing, altered or added, so subject and consumer queries and the citizen report can leave requests out; {}",
                mismatched.len(),
                rebuild_index_advice(dir)
            ),
        );
    }
    // Tiles are derived from the records, so missing ones do not fail the check; but proofs need them.
    if s.missing_full_tiles > 0 {
        let _ = writeln!(
            out,
            "note: {} missing; the records they hash verify, but proofs for those records cannot be served until the gateway rebuilds the tiles from them at its next start",
            tiles_are(s.missing_full_tiles, "full")
        );
    }
    if missing_partial_tiles > 0 {
        let _ = writeln!(
            out,
            "note: {} missing at the right edge of the latest checkpoint; a running gateway serves that edge from memory and writes it again with the next checkpoint it signs, until then proofs from the files (`tollbu audit prove`) fail",
            tiles_are(missing_partial_tiles, "partial")
        );
    }
    let signed = s.latest_signed();
    if n > signed && signed > 0 {
        // Only a checkpoint kept elsewhere shows whether these were once covered and the log's
        // own checkpoint files were rolled back.
        let _ = writeln!(
            out,
            "note: records {signed}..{n} are covered by no signed checkpoint found; on a live log these are the newest (one is signed within `checkpoint_interval_secs`), otherwise compare with a checkpoint kept elsewhere (`--checkpoint`)"
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

/// The report's line on the signed retention statement that covers records `0..pruned` of the log
/// `origin`, or the first record no statement vouches for and why. Without one, a prefix deleted
/// by hand with a `pruned` marker to match would verify like retention.
fn retention_vouched(
    dir: &Path,
    pruned: u64,
    origin: &str,
    trusted: &[NoteVerifier],
) -> Result<String, (u64, String)> {
    let path = dir.join(crate::retention_statement::STATEMENT_FILE);
    let note = match std::fs::read_to_string(&path) {
        Ok(note) => note,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err((
                0,
                format!(
                    "records 0..{pruned} are gone (the `pruned` marker says so) but no signed retention statement (`{}`) vouches for their removal: retention signs one before it removes anything, so they were deleted some other way (or by a version of the gateway that did not sign retention yet)",
                    path.display()
                ),
            ));
        }
        Err(e) => {
            return Err((
                0,
                format!(
                    "records 0..{pruned} are gone and the retention statement `{}` cannot be read: {e}",
                    path.display()
                ),
            ));
        }
    };
    let (statement, signed_by) =
        crate::retention_statement::open(&note, trusted).map_err(|e| {
            (
                0,
                format!(
                    "records 0..{pruned} are gone and `{}` does not vouch for it: {e}. If that key is the one of the gateway that swept this log after a signing-key rotation, pass its verifier key with `--retention-key`",
                    path.display()
                ),
            )
        })?;
    if statement.log != origin {
        return Err((
            0,
            format!(
                "records 0..{pruned} are gone and the retention statement `{}` is about the log `{}`, not this one (`{origin}`)",
                path.display(),
                statement.log
            ),
        ));
    }
    let below = statement.removed_below;
    if below < pruned {
        return Err((
            below,
            format!(
                "records {below}..{pruned} are gone beyond what the signed retention statement covers (records 0..{below})"
            ),
        ));
    }
    Ok(format!(
        "retention statement: records below {below} removed by retention (the latest sweep removed records older than {}), signed at {} by `{signed_by}`",
        crate::record::Record::timestamp(statement.cutoff),
        crate::record::Record::timestamp(statement.signed_at)
    ))
}

/// Pushes the leaf hashes of records `pos..to`, which retention removed, from the level-0 tiles;
/// returns how far it got (`to`, unless their hashes are gone, which is reported).
fn push_pruned(s: &mut Stream<'_>, mut pos: u64, to: u64) -> u64 {
    while pos < to {
        let n = pos / TILE_WIDTH;
        let skip = pos % TILE_WIDTH;
        let take = (to - pos).min(TILE_WIDTH - skip);
        // The last records of a closed log's tree may sit in a partial tile.
        match read_tile(s.dir, 0, n, skip + take) {
            Ok(hashes) => {
                for h in &hashes[skip as usize..] {
                    s.push(*h);
                }
                pos += take;
            }
            Err(e) => {
                s.problem(
                    Some(pos),
                    format!("records below {to} were pruned but their hashes are gone: {e}"),
                );
                break;
            }
        }
    }
    pos
}

/// Feeds every record into the stream, in order: the pruned ones as their kept hashes, the rest
/// read from the segments (by `readers` threads ahead of this one, [`scan`]). Returns the number
/// of records and the `pruned` marker it ended with.
///
/// A retention sweep beside a live log (or a retired one the gateway sweeps) may remove segments
/// after they were listed, even while one is being read (it is shrunk before it is unlinked).
/// Retention writes the marker durably before it renames the first segment away, so after each
/// segment the marker is read again: if it now lies above the segment's first record, the
/// segment was given up to retention, whatever the read found, and its records are taken from
/// the tiles, exactly as if they had been pruned before the check began. A segment that went
/// missing or changed while the marker stayed below it was not removed by retention: reported.
fn read_records(
    s: &mut Stream<'_>,
    index_check: &mut IndexCheck,
    pruned_at_start: u64,
    readers: usize,
) -> Result<(u64, u64), AuditError> {
    let dir = s.dir;
    let segs = list_segments(&dir.join("segments"))?;
    std::thread::scope(|scope| {
        let mut ahead = scan::ReadAhead::start(scope, readers, &segs);
        let mut pruned = pruned_at_start;
        let mut pos = push_pruned(s, 0, pruned);
        // Difference between stored sequence numbers and positions; reported only when it changes, so a
        // removed record yields one finding rather than one per later record.
        let mut seq_shift: i128 = 0;
        // Records from here on were found missing already: the gap they leave is not reported again.
        let mut missing_from = None;
        for (i, seg) in segs.iter().enumerate() {
            if seg.first_seq < pruned {
                continue;
            }
            if seg.first_seq != pos {
                // Segments removed by a sweep since the marker was last read are not listed at all.
                let marker = super::first_retained(dir);
                if marker > pos {
                    pos = push_pruned(s, pos, marker);
                    pruned = marker;
                    index_check.mark(pos);
                    missing_from = None;
                    if seg.first_seq < pruned {
                        continue;
                    }
                }
            }
            if seg.first_seq != pos && missing_from != Some(pos) {
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
            missing_from = None;
            let before = s.mark();
            let (pos_before, shift_before) = (pos, seq_shift);
            index_check.mark(pos);
            let mut scan = ahead.take(i, pos, pruned, || index_check.segment_tally())?;
            let found = loop {
                let rest = scan.rest;
                let found = take_scan(s, index_check, scan, &mut pos, &mut seq_shift);
                let Some(from) = rest else {
                    break found;
                };
                scan = scan::scan_segment(seg, from, pos, index_check.segment_tally())?;
            };
            if let Some(progress) = s.progress {
                progress.store(pos, std::sync::atomic::Ordering::Relaxed);
            }
            let marker = super::first_retained(dir);
            if marker > seg.first_seq {
                s.restore(before, pos_before, pos);
                index_check.undo_to(pos_before);
                seq_shift = shift_before;
                pos = push_pruned(s, pos_before, marker);
                pruned = marker;
                index_check.mark(pos);
                continue;
            }
            if !found {
                s.problem(
                    Some(pos),
                    format!(
                        "segment `{}` was listed but is gone, and retention did not remove it (the `pruned` marker is at record {marker}): records from {} on were deleted",
                        seg.path.display(),
                        seg.first_seq
                    ),
                );
                missing_from = Some(pos);
            }
        }
        // A sweep that removed the last segments listed (all of a retired log's, say).
        let marker = super::first_retained(dir);
        if marker > pos {
            pos = push_pruned(s, pos, marker);
            pruned = marker;
        }
        Ok((pos, pruned))
    })
}

/// Takes one segment's scan into the stream and the index check, in record order; false if the
/// file was gone.
fn take_scan(
    s: &mut Stream<'_>,
    index_check: &mut IndexCheck,
    scan: scan::SegmentScan,
    pos: &mut u64,
    seq_shift: &mut i128,
) -> bool {
    index_check.add(&scan.tally);
    let mut findings = scan.findings.into_iter().peekable();
    let mut note = |s: &mut Stream<'_>, finding: scan::Finding| match finding {
        scan::Finding::Seq { at, seq } => {
            let shift = i128::from(seq) - i128::from(at);
            if shift != *seq_shift && shift != 0 {
                s.problem(
                    Some(at),
                    format!("record {at} carries sequence number {seq}: a record was removed, reordered or inserted"),
                );
            }
            *seq_shift = shift;
        }
        scan::Finding::Problem { at, text } => s.problem(Some(at), text),
    };
    for leaf in scan.leaves {
        while let Some(finding) = findings.next_if(|f| f.at() == *pos) {
            note(s, finding);
        }
        s.push(leaf);
        *pos += 1;
    }
    // An unreadable frame that ended the segment.
    for finding in findings {
        note(s, finding);
    }
    scan.found
}

/// "1 full tile is", "2 full tiles are".
fn tiles_are(count: u64, kind: &str) -> String {
    if count == 1 {
        format!("1 {kind} tile is")
    } else {
        format!("{count} {kind} tiles are")
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::sync::Mutex;

    use ed25519_dalek::pkcs8::EncodePrivateKey;
    use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;

    use super::*;
    use crate::segment::SegmentInfo;
    use crate::{AuditConfig, AuditLog, Decision, Record};

    type Hook = Box<dyn FnMut(&SegmentInfo) + Send>;

    /// Hooks run just before `verify` opens each segment it listed (after the listing), on
    /// whichever thread reads it: the moment a retention sweep beside a live log can remove it.
    /// Keyed by the log's directory, since tests in one process run side by side.
    static BEFORE_SEGMENT: Mutex<Vec<(PathBuf, Hook)>> = Mutex::new(Vec::new());

    pub(super) fn before_segment(seg: &SegmentInfo) {
        let mut hooks = BEFORE_SEGMENT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (dir, hook) in hooks.iter_mut() {
            if seg.path.starts_with(dir.as_path()) {
                hook(seg);
            }
        }
    }

    /// `verify` of `dir` with `hook` run before each segment is opened.
    fn verify_with(dir: &Path, hook: impl FnMut(&SegmentInfo) + Send + 'static) -> Report {
        let hooks = || BEFORE_SEGMENT.lock().unwrap();
        hooks().push((dir.to_path_buf(), Box::new(hook)));
        let report = verify(dir, &[], None);
        hooks().retain(|(d, _)| d != dir);
        report
    }

    /// A live log of `n` records in segments of 16 KiB (about 30 records each), all covered by
    /// a signed checkpoint and indexed; the key directory lives as long as the first value.
    fn live_log(n: u64) -> (tempfile::TempDir, tempfile::TempDir, AuditLog) {
        let keys = tempfile::tempdir().unwrap();
        let pem = ed25519_dalek::SigningKey::from_bytes(&[42u8; 32])
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap();
        std::fs::write(keys.path().join("signing.pem"), pem.as_bytes()).unwrap();
        std::fs::write(keys.path().join("pseudonym.key"), "5a".repeat(32)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = AuditConfig::new(
            dir.path(),
            "tollbu.example/test/replica-0",
            keys.path().join("signing.pem"),
            keys.path().join("pseudonym.key"),
        );
        cfg.segment_max_bytes = 16 * 1024;
        let (log, _) = AuditLog::open(cfg.clone()).unwrap();
        for i in 0..n {
            let record = Record {
                time: Record::timestamp(time::OffsetDateTime::now_utc()),
                request_id: format!("req-{i}"),
                consumer: Some(format!("0192:91000000{}", i % 3)),
                service: "folkeregister".into(),
                operation: "read".into(),
                subject: Some(log.pseudonymise(&format!("person-{}", i % 7))),
                purpose: Some("loan-application".repeat(8)),
                decision: Decision::Allow,
                ..Record::default()
            };
            log.append_blocking(record).unwrap();
        }
        // Reopened, so that the index covers every record and `verify` checks it throughout.
        log.shutdown().unwrap();
        let (log, _) = AuditLog::open(cfg).unwrap();
        assert_eq!(crate::index::watermark(dir.path()).seq, n);
        (keys, dir, log)
    }

    /// Prunes below `first_kept` and waits for the writer's index compaction of what it removed,
    /// so that the buckets `verify` reads afterwards no longer hold those records' entries.
    fn prune_and_compact(log: &AuditLog, first_kept: u64) -> u64 {
        let report = log
            .prune_before(first_kept, std::time::SystemTime::now())
            .unwrap();
        assert!(report.segments_removed > 0, "{report:?}");
        let compacted = log.dir().join("index").join("compacted");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while crate::index::compacted_below(log.dir()) < report.first_retained {
            assert!(
                std::time::Instant::now() < deadline,
                "no compaction of `{}`",
                compacted.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        report.first_retained
    }

    /// A sweep that removes segments after `verify` listed them (some already read, the next
    /// one about to be opened) is told apart from tampering by the `pruned` marker retention
    /// writes before it deletes anything: those records verify through their kept hashes, as
    /// if they had been pruned before the check started.
    #[test]
    fn segments_retention_removes_while_verify_runs_verify_through_their_hashes() {
        let (_keys, dir, log) = live_log(1_500);
        // Two segments read, then a sweep removes them and the one about to be opened.
        let sweeper = log.clone();
        let mut visits = 0;
        let pruned = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let pruned_by_hook = pruned.clone();
        let report = verify_with(dir.path(), move |_| {
            visits += 1;
            if visits == 3 {
                let first_kept = prune_and_compact(&sweeper, 512);
                pruned_by_hook.store(first_kept, std::sync::atomic::Ordering::SeqCst);
            }
        });
        assert!(report.ok, "{}", report.text);
        assert!(
            report.text.contains(&format!(
                "pruned: records 0..{} kept as hashes only",
                pruned.load(std::sync::atomic::Ordering::SeqCst)
            )),
            "{}",
            report.text
        );
        assert!(report.text.contains("records: 1500"), "{}", report.text);

        // Again, the first segment still there removed just before it is opened.
        let sweeper = log.clone();
        let mut swept = false;
        let report = verify_with(dir.path(), move |_| {
            if !std::mem::replace(&mut swept, true) {
                prune_and_compact(&sweeper, 1_024);
            }
        });
        assert!(report.ok, "{}", report.text);
        assert!(report.text.contains("records: 1500"), "{}", report.text);
        log.shutdown().unwrap();
    }

    /// A segment longer than one scan (`scan::SCAN_RECORDS`, 8 in unit tests) is read on from
    /// where the scan stopped, at the right positions: a record altered deep inside one is named.
    #[test]
    fn segments_longer_than_one_scan_are_read_on_at_the_right_positions() {
        let (_keys, dir, log) = live_log(1_500);
        log.shutdown().unwrap();
        let intact = verify(dir.path(), &[], None);
        assert!(intact.ok, "{}", intact.text);
        assert!(intact.text.contains("records: 1500"), "{}", intact.text);
        // A segment after the first with room for more than two scans (how many records a segment
        // holds depends on timing: the first gives way to a spare once one is ready).
        let altered = 2 * scan::SCAN_RECORDS + 3;
        let offsets = |seg: &SegmentInfo| {
            let mut offsets = Vec::new();
            let mut r = crate::segment::FrameReader::open(&seg.path).unwrap();
            while let crate::segment::FrameRead::Frame { offset, .. } = r.next_frame().unwrap() {
                offsets.push(offset);
            }
            offsets
        };
        let (seg, frames) = list_segments(&dir.path().join("segments"))
            .unwrap()
            .into_iter()
            .skip(1)
            .map(|seg| {
                let frames = offsets(&seg);
                (seg, frames)
            })
            .find(|(_, frames)| frames.len() > altered)
            .expect("a segment of more than two scans");
        let seg = &seg;
        let mut bytes = std::fs::read(&seg.path).unwrap();
        bytes[frames[altered] as usize + 30] ^= 1;
        std::fs::write(&seg.path, bytes).unwrap();
        for readers in [0, 2] {
            let report = verify_with_options(
                dir.path(),
                &VerifyOptions {
                    readers: Some(readers),
                    ..VerifyOptions::default()
                },
            );
            assert!(!report.ok, "{}", report.text);
            let first_bad = seg.first_seq + altered as u64;
            assert!(
                report
                    .text
                    .contains(&format!("FIRST bad record index: {first_bad}\n")),
                "{readers} readers: {}",
                report.text
            );
            assert!(report.text.contains("records: 1500"), "{}", report.text);
        }
    }

    /// A segment that disappears during the check while the `pruned` marker does not cover it
    /// was not removed by retention: it fails, even right after a sweep moved the marker.
    #[test]
    fn a_segment_that_vanishes_during_verify_without_retention_fails() {
        let (_keys, dir, log) = live_log(1_500);
        let sweeper = log.clone();
        let mut done = false;
        let gone = std::sync::Arc::new(Mutex::new(None));
        let gone_in_hook = gone.clone();
        let report = verify_with(dir.path(), move |seg| {
            if seg.first_seq > 600 && !std::mem::replace(&mut done, true) {
                prune_and_compact(&sweeper, 512);
                std::fs::remove_file(&seg.path).unwrap();
                *gone_in_hook.lock().unwrap() = Some(seg.clone());
            }
        });
        let gone = gone.lock().unwrap().clone().unwrap();
        assert!(!report.ok, "{}", report.text);
        assert!(
            report
                .text
                .contains(&format!("FIRST bad record index: {}", gone.first_seq)),
            "{}",
            report.text
        );
        assert!(
            report.text.contains(&gone.path.display().to_string()),
            "{}",
            report.text
        );
        log.shutdown().unwrap();
    }
}
