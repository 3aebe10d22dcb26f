//! Durable tree hashes in the C2SP tlog-tiles layout, and a [`HashReader`] over them.
//!
//! `tile/<L>/<N>` holds 256 hashes (8,192 bytes) of tile level `L` (tree level 8·L); level 0 holds
//! leaf hashes. Full tiles are written once, durably, off the append path (by the checkpoint thread,
//! with the checkpoint that first covers them or once enough pile up); until then they are served
//! from memory. Partial tiles `tile/<L>/<N>.p/<W>` are
//! written at each checkpoint so the tile set for the checkpointed tree is complete on disk (what a
//! tlog-tiles client fetches); between checkpoints the right edge lives in memory and is rebuilt
//! from the records on open.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::AuditError;
use crate::hash::{Hash, node_hash};
use crate::segment::{FileBatch, sync_dir, write_atomic};
use crate::tree::HashReader;

pub const TILE_HEIGHT: u8 = 8;
pub const TILE_WIDTH: u64 = 256;
/// Missing tiles a rebuild holds (8 KiB each) before it writes them out.
const TILES_WRITTEN_TOGETHER: usize = 64;

/// `N` in 3-digit groups, all but the last prefixed `x`: 1234067 → `x001/x234/067`.
pub fn tile_index_path(n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    let mut rest = n / 1000;
    while rest > 0 {
        groups.push(format!("x{:03}", rest % 1000));
        rest /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

/// One 3-digit group of a tile index (`067`); anything else, such as a temporary file, is no tile.
pub(crate) fn index_group(name: &str) -> Option<u64> {
    if name.len() == 3 && name.bytes().all(|b| b.is_ascii_digit()) {
        name.parse().ok()
    } else {
        None
    }
}

/// Deepest nesting of `x` directories searched: a 64-bit tile index needs 6 (`x018/x446/…/615`).
pub(crate) const MAX_X_DEPTH: usize = 6;

/// Relative path of a hash tile: `tile/<L>/<N>` or, when `width < 256`, `tile/<L>/<N>.p/<W>`.
pub fn tile_path(level: u8, n: u64, width: u64) -> String {
    if width >= TILE_WIDTH {
        format!("tile/{level}/{}", tile_index_path(n))
    } else {
        format!("tile/{level}/{}.p/{width}", tile_index_path(n))
    }
}

/// Which full tiles of one level have a file, read from directory listings. An open looks for
/// gaps among every full tile below its checkpoint, and tiles are kept when their records are
/// pruned, so one `stat` per tile (40,552 for 10M records, most of a 175 ms open) would grow with
/// the log for ever: a gateway writing 300 records a second passes 10B records in a year, and its
/// starts would outlast a startup probe. A listing reads about a thousand names per call.
struct FullTilesPresent {
    /// Bit `n` set: tile `n` has a file (names below the count asked for only).
    bits: Vec<u64>,
}

impl FullTilesPresent {
    /// Tiles `0..count` of `level`. A directory that cannot be read holds none (they are then
    /// recomputed, and writing them reports the error).
    fn list(root: &Path, level: u8, count: u64) -> Self {
        let words = usize::try_from(count.div_ceil(64)).unwrap_or(usize::MAX);
        let mut set = Self {
            bits: vec![0; words],
        };
        set.walk(&root.join("tile").join(level.to_string()), 0, 0, count);
        set
    }

    /// Names in `dir`, whose `x` groups so far spell `prefix` (`tile_index_path` in reverse).
    fn walk(&mut self, dir: &Path, prefix: u64, depth: usize, count: u64) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                continue;
            };
            let index = |digits: &str| prefix.checked_mul(1000)?.checked_add(index_group(digits)?);
            if let Some(sub) = name.strip_prefix('x').and_then(index) {
                if depth < MAX_X_DEPTH && sub > 0 {
                    self.walk(&entry.path(), sub, depth + 1, count);
                }
            } else if let Some(n) = index(name).filter(|&n| n < count)
                && let Some(word) = self.bits.get_mut((n / 64) as usize)
            {
                *word |= 1 << (n % 64);
            }
        }
    }

    fn contains(&self, n: u64) -> bool {
        self.bits
            .get((n / 64) as usize)
            .is_some_and(|word| word & (1 << (n % 64)) != 0)
    }
}

/// Number of hashes stored at tile level `level` for a tree of `size` leaves.
pub fn stored_count(level: u8, size: u64) -> u64 {
    let shift = u32::from(level) * u32::from(TILE_HEIGHT);
    if shift >= 64 { 0 } else { size >> shift }
}

/// Hash of 2^k consecutive hashes (a perfect subtree).
fn fold_perfect(hashes: &[Hash]) -> Hash {
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
    cur.first().copied().unwrap_or_else(crate::hash::empty_root)
}

fn decode_tile(bytes: &[u8]) -> Vec<Hash> {
    bytes
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        })
        .collect()
}

fn encode_tile(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.iter().copied()).collect()
}

/// Reads a tile of `width` hashes: the exact file, else a prefix of the full tile or of a wider partial.
pub fn read_tile(root: &Path, level: u8, n: u64, width: u64) -> Result<Vec<Hash>, AuditError> {
    find_tile(root, level, n, width)?.ok_or_else(|| {
        AuditError::Corrupt(format!("tile `{}` is missing", tile_path(level, n, width)))
    })
}

/// [`read_tile`], with `Ok(None)` when no file holds the tile: `verify` reports a missing tile
/// (derived data, rebuilt from the records) apart from a damaged one (someone altered it).
pub fn find_tile(
    root: &Path,
    level: u8,
    n: u64,
    width: u64,
) -> Result<Option<Vec<Hash>>, AuditError> {
    let full = root.join(tile_path(level, n, TILE_WIDTH));
    let mut candidates = vec![root.join(tile_path(level, n, width)), full];
    if width < TILE_WIDTH {
        let pdir = root.join(format!("tile/{level}/{}.p", tile_index_path(n)));
        if let Ok(rd) = std::fs::read_dir(&pdir) {
            let mut wider: Vec<u64> = rd
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|w| *w > width)
                .collect();
            wider.sort_unstable();
            candidates.extend(wider.into_iter().map(|w| pdir.join(w.to_string())));
        }
    }
    for c in candidates {
        match std::fs::read(&c) {
            Ok(bytes) if bytes.len() as u64 >= width * 32 && bytes.len() % 32 == 0 => {
                let mut h = decode_tile(&bytes);
                h.truncate(width as usize);
                return Ok(Some(h));
            }
            Ok(_) => {
                return Err(AuditError::Corrupt(format!(
                    "tile `{}` has the wrong length",
                    c.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AuditError::Io { path: c, source: e }),
        }
    }
    Ok(None)
}

type TileCache = Mutex<HashMap<(u8, u64), Arc<Vec<Hash>>>>;

/// A full tile completed in memory and not yet handed over to be written.
pub struct FullTile {
    pub level: u8,
    pub n: u64,
    pub hashes: Arc<Vec<Hash>>,
}

/// Tree hashes: full tiles on disk plus the in-memory right edge (one partial tile per level).
pub struct TileStore {
    root: PathBuf,
    size: u64,
    /// `partial[L]` holds the hashes of the incomplete tile at level L.
    partial: Vec<Vec<Hash>>,
    cache: TileCache,
    /// Full tiles completed since the last [`TileStore::take_unwritten`].
    unwritten: Vec<FullTile>,
    /// Full tiles that may not be on disk yet, served from here until they are known to be
    /// written (see [`TileStore::forget_written`]).
    pending: HashMap<(u8, u64), Arc<Vec<Hash>>>,
}

const CACHE_TILES: usize = 512;

impl TileStore {
    /// A store for a tree of `size` leaves whose full tiles are on disk under `root` and whose right
    /// edge is given (usually rebuilt by [`TileStore::rebuild`] or loaded with [`TileStore::open_at`]).
    fn with_partials(root: PathBuf, size: u64, partial: Vec<Vec<Hash>>) -> Self {
        Self {
            root,
            size,
            partial,
            cache: Mutex::new(HashMap::new()),
            unwritten: Vec::new(),
            pending: HashMap::new(),
        }
    }

    /// Read-only view of the tree at `size`, entirely from tiles on disk (full + partial files).
    pub fn open_at(root: &Path, size: u64) -> Result<Self, AuditError> {
        let mut partial = Vec::new();
        let mut level = 0u8;
        while stored_count(level, size) > 0 {
            let count = stored_count(level, size);
            let width = count % TILE_WIDTH;
            partial.push(if width > 0 {
                read_tile(root, level, count / TILE_WIDTH, width)?
            } else {
                Vec::new()
            });
            level += 1;
        }
        Ok(Self::with_partials(root.to_path_buf(), size, partial))
    }

    /// Rebuilds the right edge for `size` leaves. Full tiles are only trusted up to `trusted`
    /// leaves (the last signed checkpoint, before which every tile was synced); later ones may be
    /// missing or torn by a crash, so they are recomputed from the records (`leaves(from, to)`).
    /// Those whose file differs are kept in memory and returned by
    /// [`TileStore::take_unwritten`], not written: the caller writes them once it has checked
    /// the tree against the signed checkpoint, so an open that refuses (a fork) leaves the tile
    /// files as evidence. Those whose file is missing destroy no evidence and are written as they
    /// are computed, [`TILES_WRITTEN_TOGETHER`] at a time: a log that lost its tiles (10M records
    /// hold 39,000) is rebuilt in bounded memory, and an open killed part way (by a startup probe)
    /// resumes from the tiles written, which are then present and, below `trusted`, trusted; the
    /// root is checked against the signed checkpoint at every open, so a tile computed from forged
    /// records is refused there as before. Returns how many tiles were recomputed.
    pub fn rebuild(
        root: &Path,
        size: u64,
        trusted: u64,
        mut leaves: impl FnMut(u64, u64) -> Result<Vec<Hash>, AuditError>,
    ) -> Result<(Self, u64), AuditError> {
        let mut rebuilt: HashMap<(u8, u64), Arc<Vec<Hash>>> = HashMap::new();
        let mut unwritten = Vec::new();
        let mut missing = Vec::new();
        let mut recomputed = 0u64;
        let mut partial = Vec::new();
        let mut level = 0u8;
        let trusted = trusted.min(size);
        while stored_count(level, size) > 0 {
            let count = stored_count(level, size);
            let full = count / TILE_WIDTH;
            // Trailing full tiles that are missing: find the first present one going backwards.
            let mut first_missing = full.min(stored_count(level, trusted) / TILE_WIDTH);
            let on_disk = FullTilesPresent::list(root, level, full);
            let present = |n: u64| on_disk.contains(n);
            while first_missing > 0 && !present(first_missing - 1) {
                first_missing -= 1;
            }
            // A tile missing before a present one (lost, or removed by hand) is rebuilt too: the
            // levels above are computed from it. Its records must still be stored; the root is
            // checked against the latest checkpoint afterwards.
            let gaps: Vec<u64> = (0..first_missing).filter(|n| !present(*n)).collect();
            for n in gaps.into_iter().chain(first_missing..full) {
                let hashes = Self::hashes_from_below(
                    root,
                    &rebuilt,
                    level,
                    n * TILE_WIDTH,
                    (n + 1) * TILE_WIDTH,
                    &mut leaves,
                )?;
                let path = root.join(tile_path(level, n, TILE_WIDTH));
                let on_disk = std::fs::read(&path);
                match on_disk {
                    Ok(bytes) if bytes == encode_tile(&hashes) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        missing.push(FullTile {
                            level,
                            n,
                            hashes: Arc::new(hashes),
                        });
                        if missing.len() == TILES_WRITTEN_TOGETHER {
                            write_full_tiles(root, &missing)?;
                            missing.clear();
                        }
                    }
                    _ => {
                        let hashes = Arc::new(hashes);
                        rebuilt.insert((level, n), Arc::clone(&hashes));
                        unwritten.push(FullTile { level, n, hashes });
                    }
                }
                recomputed += 1;
            }
            // The level above is computed from these.
            write_full_tiles(root, &missing)?;
            missing.clear();
            partial.push(Self::hashes_from_below(
                root,
                &rebuilt,
                level,
                full * TILE_WIDTH,
                count,
                &mut leaves,
            )?);
            level += 1;
        }
        let mut store = Self::with_partials(root.to_path_buf(), size, partial);
        store.pending = rebuilt;
        store.unwritten = unwritten;
        Ok((store, recomputed))
    }

    /// Stored hashes `[from, to)` of `level`, computed from the level below (or records for level 0).
    /// (Tiles rebuilt in this pass, not yet written, are read from `rebuilt`.)
    fn hashes_from_below(
        root: &Path,
        rebuilt: &HashMap<(u8, u64), Arc<Vec<Hash>>>,
        level: u8,
        from: u64,
        to: u64,
        leaves: &mut impl FnMut(u64, u64) -> Result<Vec<Hash>, AuditError>,
    ) -> Result<Vec<Hash>, AuditError> {
        if level == 0 {
            return leaves(from, to);
        }
        (from..to)
            .map(|i| match rebuilt.get(&(level - 1, i)) {
                Some(tile) => Ok(fold_perfect(tile)),
                None => Ok(fold_perfect(&read_tile(root, level - 1, i, TILE_WIDTH)?)),
            })
            .collect()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// Adds a leaf hash, completing tiles in memory as they fill (no I/O: this runs on the append
    /// path). Returns the number of tiles completed.
    pub fn push(&mut self, leaf: Hash) -> usize {
        let mut completed = 0;
        let mut carry = leaf;
        let mut level = 0usize;
        loop {
            if self.partial.len() <= level {
                self.partial.push(Vec::new());
            }
            self.partial[level].push(carry);
            if self.partial[level].len() as u64 != TILE_WIDTH {
                break;
            }
            let n = stored_count(level as u8, self.size + 1) / TILE_WIDTH - 1;
            carry = fold_perfect(&self.partial[level]);
            let hashes = Arc::new(std::mem::take(&mut self.partial[level]));
            self.pending.insert((level as u8, n), hashes.clone());
            self.unwritten.push(FullTile {
                level: level as u8,
                n,
                hashes,
            });
            completed += 1;
            level += 1;
        }
        self.size += 1;
        completed
    }

    /// Full tiles completed since the last call, for [`write_full_tiles`] on another thread. They
    /// stay readable from memory until [`TileStore::forget_written`] learns they are on disk.
    pub fn take_unwritten(&mut self) -> Vec<FullTile> {
        std::mem::take(&mut self.unwritten)
    }

    /// Full tiles completed and not yet handed over.
    pub fn unwritten_len(&self) -> usize {
        self.unwritten.len()
    }

    /// Drops the in-memory copies of the full tiles of a tree of `size` leaves, once their files
    /// have been written.
    pub fn forget_written(&mut self, size: u64) {
        if !self.pending.is_empty() {
            self.pending
                .retain(|&(level, n), _| leaves_below_tile_end(level, n) > size);
        }
    }

    /// Writes every full tile completed so far durably (what the checkpoint thread does).
    #[cfg(test)]
    fn flush(&mut self) -> Result<(), AuditError> {
        let tiles = self.take_unwritten();
        write_full_tiles(&self.root, &tiles)?;
        self.forget_written(self.size);
        Ok(())
    }

    /// The right edge of the current tree, to be written as partial tiles when a checkpoint is
    /// signed (possibly on another thread, while this store keeps growing).
    pub fn partials(&self) -> PartialTiles {
        PartialTiles {
            root: self.root.clone(),
            size: self.size,
            partial: self.partial.clone(),
        }
    }

    /// Writes the partial tiles of the current tree (see [`PartialTiles::write`]).
    pub fn write_partials(&self) -> Result<(), AuditError> {
        self.partials().write()
    }

    /// The stored hashes `[start, start + count)` of tile level `level`, all within one tile.
    fn stored(&self, level: u8, start: u64, count: u64) -> Result<Vec<Hash>, AuditError> {
        let n = start / TILE_WIDTH;
        let off = (start % TILE_WIDTH) as usize;
        let full = stored_count(level, self.size) / TILE_WIDTH;
        let tile: Arc<Vec<Hash>> = if n < full {
            self.full_tile(level, n)?
        } else {
            Arc::new(
                self.partial
                    .get(level as usize)
                    .cloned()
                    .unwrap_or_default(),
            )
        };
        tile.get(off..off + count as usize)
            .map(<[Hash]>::to_vec)
            .ok_or(AuditError::OutOfRange {
                index: start + count,
                size: self.size,
            })
    }

    fn full_tile(&self, level: u8, n: u64) -> Result<Arc<Vec<Hash>>, AuditError> {
        if let Some(t) = self.pending.get(&(level, n)) {
            return Ok(t.clone());
        }
        if let Ok(c) = self.cache.lock()
            && let Some(t) = c.get(&(level, n))
        {
            return Ok(t.clone());
        }
        let t = Arc::new(read_tile(&self.root, level, n, TILE_WIDTH)?);
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHE_TILES {
                c.clear();
            }
            c.insert((level, n), t.clone());
        }
        Ok(t)
    }

    /// A tile's bytes for serving (`tile/<L>/<N>[.p/<W>]`), for any tile of the current tree.
    pub fn tile_bytes(&self, level: u8, n: u64, width: u64) -> Result<Vec<u8>, AuditError> {
        let count = stored_count(level, self.size);
        // `n` comes from a request path: an index near u64::MAX must be out of range, not wrap
        // around to tile 0.
        let start = n.checked_mul(TILE_WIDTH);
        let end = start.and_then(|start| start.checked_add(width));
        match (start, end) {
            (Some(start), Some(end)) if width > 0 && width <= TILE_WIDTH && end <= count => {
                Ok(encode_tile(&self.stored(level, start, width)?))
            }
            _ => Err(AuditError::OutOfRange {
                index: end.unwrap_or(u64::MAX),
                size: count,
            }),
        }
    }
}

impl HashReader for TileStore {
    fn node(&self, level: u8, index: u64) -> Result<Hash, AuditError> {
        let tl = level / TILE_HEIGHT;
        let r = level % TILE_HEIGHT;
        let width = 1u64 << r;
        let last_leaf = ((index + 1) << level) - 1;
        if last_leaf >= self.size {
            return Err(AuditError::OutOfRange {
                index: last_leaf,
                size: self.size,
            });
        }
        Ok(fold_perfect(&self.stored(tl, index * width, width)?))
    }
}

/// Number of leaves up to the end of full tile `n` of `level`: the tile is on disk once the tiles
/// of a tree that large are (or once a checkpoint of that size is signed).
pub(crate) fn leaves_below_tile_end(level: u8, n: u64) -> u64 {
    let shift = u32::from(level) * u32::from(TILE_HEIGHT);
    1u128
        .checked_shl(shift)
        .and_then(|per_hash| (u128::from(n) + 1).checked_mul(u128::from(TILE_WIDTH) * per_hash))
        .and_then(|leaves| u64::try_from(leaves).ok())
        .unwrap_or(u64::MAX)
}

/// Writes `tiles` durably (each whole, through a temporary file and a rename, so a reader never
/// sees half a tile; up to [`FileBatch::MAX_OPEN`] made durable together), then syncs every
/// directory on the way up to `root` once.
pub fn write_full_tiles(root: &Path, tiles: &[FullTile]) -> Result<(), AuditError> {
    let mut dirs = std::collections::BTreeSet::new();
    let mut batch = FileBatch::default();
    for t in tiles {
        if batch.len() == FileBatch::MAX_OPEN {
            std::mem::take(&mut batch).commit()?;
        }
        let path = root.join(tile_path(t.level, t.n, TILE_WIDTH));
        batch.add(&path, &encode_tile(&t.hashes))?;
        // New directories and renames live in their parents, all the way up to `root`.
        let mut dir = path.parent();
        while let Some(d) = dir {
            dirs.insert(d.to_path_buf());
            if d == root {
                break;
            }
            dir = d.parent();
        }
    }
    batch.commit()?;
    for d in &dirs {
        sync_dir(d).map_err(AuditError::io(d))?;
    }
    Ok(())
}

/// The incomplete right-most tile of each level at one tree size.
pub struct PartialTiles {
    root: PathBuf,
    size: u64,
    partial: Vec<Vec<Hash>>,
}

impl PartialTiles {
    /// Writes each level's partial tile (done before signing a checkpoint, so the tiles of every
    /// signed size can be served) and removes narrower partials of the same tile, which it supersedes.
    pub fn write(&self) -> Result<(), AuditError> {
        for (level, hashes) in self.partial.iter().enumerate() {
            let width = hashes.len() as u64;
            if width == 0 {
                continue;
            }
            let n = stored_count(level as u8, self.size) / TILE_WIDTH;
            let path = self.root.join(tile_path(level as u8, n, width));
            if !path.exists() {
                write_atomic(&path, &encode_tile(hashes))?;
            }
            if let Some(pdir) = path.parent()
                && let Ok(rd) = std::fs::read_dir(pdir)
            {
                for e in rd.flatten() {
                    let narrower = e
                        .file_name()
                        .to_str()
                        .and_then(|s| s.parse::<u64>().ok())
                        .is_some_and(|w| w < width);
                    if narrower {
                        // Best effort: a leftover narrower partial is still a correct prefix.
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::hash::leaf_hash;
    use crate::tree;

    #[test]
    fn tile_paths_follow_c2sp() {
        assert_eq!(tile_index_path(1_234_067), "x001/x234/067");
        assert_eq!(tile_index_path(5), "005");
        assert_eq!(tile_index_path(1000), "x001/000");
        assert_eq!(tile_path(0, 1_234_067, 256), "tile/0/x001/x234/067");
        assert_eq!(tile_path(1, 2, 7), "tile/1/002.p/7");
    }

    #[test]
    fn store_answers_like_the_in_memory_tree_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let leaves: Vec<Hash> = (0..70_000u64)
            .map(|i| leaf_hash(&i.to_le_bytes()))
            .collect();
        let (mut s, _) = TileStore::rebuild(dir.path(), 0, 0, |_, _| Ok(vec![])).unwrap();
        for l in &leaves {
            s.push(*l);
        }
        for size in [1u64, 255, 256, 257, 65_536, 65_537, 70_000] {
            assert_eq!(
                tree::root(&s, size).unwrap(),
                tree::root(&leaves[..], size).unwrap(),
                "size {size}"
            );
        }
        let p = tree::inclusion_proof(&s, 65_600, 70_000).unwrap();
        assert_eq!(
            p,
            tree::inclusion_proof(&leaves[..], 65_600, 70_000).unwrap()
        );
        s.flush().unwrap();
        s.write_partials().unwrap();
        let ro = TileStore::open_at(dir.path(), 70_000).unwrap();
        assert_eq!(
            tree::root(&ro, 70_000).unwrap(),
            tree::root(&leaves[..], 70_000).unwrap()
        );
        // Older sizes are served from prefixes of wider tiles.
        let ro = TileStore::open_at(dir.path(), 300).unwrap();
        assert_eq!(
            tree::root(&ro, 300).unwrap(),
            tree::root(&leaves[..], 300).unwrap()
        );
        // Rebuild after losing the last full tile.
        std::fs::remove_file(dir.path().join(tile_path(0, 272, 256))).unwrap();
        let (mut re, rebuilt) = TileStore::rebuild(dir.path(), 70_000, 0, |a, b| {
            Ok(leaves[a as usize..b as usize].to_vec())
        })
        .unwrap();
        assert_eq!(rebuilt, 1);
        assert_eq!(
            tree::root(&re, 70_000).unwrap(),
            tree::root(&leaves[..], 70_000).unwrap()
        );
        // A missing tile destroys no evidence when it is written: it was, by the rebuild.
        assert_eq!(
            std::fs::read(dir.path().join(tile_path(0, 272, 256))).unwrap(),
            encode_tile(&leaves[272 * 256..273 * 256])
        );
        assert!(re.take_unwritten().is_empty());
        // Tiles after the last checkpoint may be torn or missing anywhere (unsynced when the
        // machine died); those are recomputed, the ones a checkpoint covers are trusted.
        std::fs::write(dir.path().join(tile_path(0, 200, 256)), b"").unwrap();
        let mut bad = std::fs::read(dir.path().join(tile_path(0, 240, 256))).unwrap();
        bad[5] ^= 1;
        std::fs::write(dir.path().join(tile_path(0, 240, 256)), bad).unwrap();
        std::fs::remove_file(dir.path().join(tile_path(0, 250, 256))).unwrap();
        let (mut re, rebuilt) = TileStore::rebuild(dir.path(), 70_000, 150 * 256, |a, b| {
            assert!(a >= 150 * 256, "a trusted tile was recomputed");
            Ok(leaves[a as usize..b as usize].to_vec())
        })
        .unwrap();
        assert_eq!(rebuilt, 3);
        assert_eq!(
            tree::root(&re, 70_000).unwrap(),
            tree::root(&leaves[..], 70_000).unwrap()
        );
        // The missing one is written; the two that differ stay as they were, in memory until
        // the caller has checked the tree against the signed checkpoint.
        assert!(dir.path().join(tile_path(0, 250, 256)).exists());
        assert!(
            std::fs::read(dir.path().join(tile_path(0, 200, 256)))
                .unwrap()
                .is_empty()
        );
        let kept: Vec<u64> = re.take_unwritten().iter().map(|t| t.n).collect();
        assert_eq!(kept, [200, 240]);
    }

    #[test]
    fn full_tiles_present_are_read_from_listings_at_every_depth() {
        let dir = tempfile::tempdir().unwrap();
        let have = [0u64, 5, 999, 1_000, 1_234, 999_999, 1_000_067, 2_000_000];
        for n in have {
            let path = dir.path().join(tile_path(0, n, 256));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
        // Neither a partial, nor a temporary file, nor another level, nor a stray `x000` is a
        // full tile of level 0.
        for other in [
            tile_path(0, 7, 3),
            format!("{}.tmp", tile_path(0, 8, 256)),
            tile_path(1, 9, 256),
            "tile/0/x000/010".into(),
        ] {
            let path = dir.path().join(other);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
        let present = FullTilesPresent::list(dir.path(), 0, 1_500_000);
        let found: Vec<u64> = (0..1_500_000).filter(|&n| present.contains(n)).collect();
        assert_eq!(found, [0, 5, 999, 1_000, 1_234, 999_999, 1_000_067]);
        assert!(!FullTilesPresent::list(dir.path(), 3, 10).contains(0));
    }

    /// A log that lost every tile (say its `tile` directory was removed) is rebuilt tile by tile
    /// on open; an open stopped part way (a startup probe's kill looks the same to the next one)
    /// leaves the tiles it wrote, and the next resumes after them instead of from record 0.
    #[test]
    fn a_rebuild_of_lost_tiles_stopped_part_way_resumes_after_the_tiles_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let size: u64 = 300 * 256;
        let leaves: Vec<Hash> = (0..size).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let stopped = TileStore::rebuild(dir.path(), size, size, |a, b| {
            if a >= 200 * 256 {
                return Err(AuditError::Corrupt("stopped".into()));
            }
            Ok(leaves[a as usize..b as usize].to_vec())
        });
        assert!(stopped.is_err());
        // Written 64 at a time: tiles 0..192 are on disk, whole; the 8 held after them are lost.
        for n in 0..192 {
            assert_eq!(
                std::fs::read(dir.path().join(tile_path(0, n, 256))).unwrap(),
                encode_tile(&leaves[(n * 256) as usize..((n + 1) * 256) as usize])
            );
        }
        assert!(!dir.path().join(tile_path(0, 192, 256)).exists());
        let mut first_asked = u64::MAX;
        let (re, rebuilt) = TileStore::rebuild(dir.path(), size, size, |a, b| {
            first_asked = first_asked.min(a);
            Ok(leaves[a as usize..b as usize].to_vec())
        })
        .unwrap();
        assert_eq!(first_asked, 192 * 256);
        // Level 0's last 108 tiles and level 1's one full tile.
        assert_eq!(rebuilt, 109);
        assert_eq!(
            tree::root(&re, size).unwrap(),
            tree::root(&leaves[..], size).unwrap()
        );
    }

    #[test]
    fn completed_tiles_are_served_from_memory_until_written_then_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let leaves: Vec<Hash> = (0..600u64).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        let (mut s, _) = TileStore::rebuild(dir.path(), 0, 0, |_, _| Ok(vec![])).unwrap();
        for l in &leaves {
            s.push(*l);
        }
        // Nothing touched the disk while appending, yet every tile and proof is there.
        assert!(!dir.path().join("tile").exists());
        assert_eq!(
            s.tile_bytes(0, 1, 256).unwrap(),
            encode_tile(&leaves[256..512])
        );
        assert_eq!(
            tree::inclusion_proof(&s, 300, 600).unwrap(),
            tree::inclusion_proof(&leaves[..], 300, 600).unwrap()
        );
        let tiles = s.take_unwritten();
        assert_eq!(
            tiles.iter().map(|t| (t.level, t.n)).collect::<Vec<_>>(),
            [(0, 0), (0, 1)]
        );
        write_full_tiles(dir.path(), &tiles).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join(tile_path(0, 1, 256))).unwrap(),
            encode_tile(&leaves[256..512])
        );
        // A checkpoint of 511 leaves does not cover tile 1 yet; one of 512 does.
        s.forget_written(511);
        assert_eq!(s.pending.len(), 1);
        s.forget_written(512);
        assert!(s.pending.is_empty());
        assert_eq!(
            s.tile_bytes(0, 1, 256).unwrap(),
            encode_tile(&leaves[256..512])
        );
        assert!(s.take_unwritten().is_empty());
        // An index from a request path that would overflow is out of range, never tile 0 again.
        for (n, width) in [(u64::MAX, 5), (u64::MAX / TILE_WIDTH + 1, 256), (3, 1)] {
            assert!(
                matches!(
                    s.tile_bytes(0, n, width),
                    Err(AuditError::OutOfRange { .. })
                ),
                "tile {n} width {width}"
            );
        }
    }

    #[test]
    fn a_tile_ends_where_its_last_leaf_does() {
        assert_eq!(leaves_below_tile_end(0, 0), 256);
        assert_eq!(leaves_below_tile_end(0, 1), 512);
        assert_eq!(leaves_below_tile_end(1, 0), 65_536);
        assert_eq!(leaves_below_tile_end(2, 3), 4 << 24);
        assert_eq!(leaves_below_tile_end(7, 1), u64::MAX);
        assert_eq!(leaves_below_tile_end(0, u64::MAX), u64::MAX);
    }
}
