//! Secondary indexes by subject pseudonym and by consumer, so queries avoid a full scan.
//!
//! Layout: `index/<kind>/<hh>.idx`, 256 buckets per kind chosen by the first byte of the key digest.
//! An entry is 40 bytes: `SHA-256(key)[..16] ‖ seq u64 LE ‖ segment first seq u64 LE ‖ frame offset
//! u64 LE`. Entries are appended to their buckets whenever enough are buffered, without fsync, and
//! every so often the written buckets are fsynced and `index/watermark` records how many records
//! are durably indexed (see the writer). On open the records after the watermark are indexed
//! again, after a bucket's torn last entry (a crash during an append) is cut so the entries stay
//! aligned. Entries are hints: a query re-reads and re-checks every record it returns, and
//! duplicates are removed, so entries written ahead of the watermark and written again after a
//! crash are harmless.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::AuditError;
use crate::segment::{append_unsynced, replace_file, sync_dir, write_atomic};

pub const ENTRY_BYTES: usize = 40;

/// What an index is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IndexKind {
    Subject,
    Consumer,
}

/// Every index kind, each in its own directory under `index/`.
const INDEX_KINDS: [IndexKind; 2] = [IndexKind::Subject, IndexKind::Consumer];

impl IndexKind {
    fn dir(self) -> &'static str {
        match self {
            IndexKind::Subject => "subject",
            IndexKind::Consumer => "consumer",
        }
    }
}

/// Where an indexed record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub seq: u64,
    pub segment: u64,
    pub offset: u64,
}

/// The index key of `key`: the first 16 bytes of its SHA-256.
pub(crate) fn key16(key: &str) -> [u8; 16] {
    let d = Sha256::digest(key.as_bytes());
    let mut k = [0u8; 16];
    k.copy_from_slice(&d[..16]);
    k
}

fn bucket_path(dir: &Path, (kind, first_byte): Bucket) -> PathBuf {
    dir.join("index")
        .join(kind.dir())
        .join(format!("{first_byte:02x}.idx"))
}

/// A bucket file: the index kind and the first byte of the key digests it holds.
pub(crate) type Bucket = (IndexKind, u8);

/// Buffers entries until they are written to their buckets (owned by the writer thread).
#[derive(Default)]
pub struct IndexWriter {
    pending: BTreeMap<Bucket, Vec<u8>>,
    pending_bytes: usize,
}

impl IndexWriter {
    pub fn add(&mut self, kind: IndexKind, key: &str, loc: Location) {
        self.add_key(kind, &key16(key), loc);
    }

    /// [`IndexWriter::add`] with the key already reduced by `key16` (done on the caller's thread).
    pub(crate) fn add_key(&mut self, kind: IndexKind, k: &[u8; 16], loc: Location) {
        let buf = self.pending.entry((kind, k[0])).or_default();
        buf.extend_from_slice(&encode_entry(k, loc));
        self.pending_bytes += ENTRY_BYTES;
    }

    /// Bytes of entries buffered and not yet written to their buckets.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Appends every buffered entry to its bucket without fsync, adding the buckets written to
    /// `unsynced`. A crash may lose or tear these entries; that is harmless while the watermark
    /// stays behind them, since the records after it are indexed again on open.
    pub(crate) fn write_out(
        &mut self,
        dir: &Path,
        unsynced: &mut BTreeSet<Bucket>,
    ) -> Result<(), AuditError> {
        self.pending_bytes = 0;
        for (bucket, buf) in std::mem::take(&mut self.pending) {
            append_unsynced(&bucket_path(dir, bucket), &buf)?;
            unsynced.insert(bucket);
        }
        Ok(())
    }

    /// Writes every buffered entry, fsyncs every bucket written since the last durable flush
    /// (`unsynced`, emptied), then moves the watermark.
    pub(crate) fn flush_durably(
        &mut self,
        dir: &Path,
        unsynced: &mut BTreeSet<Bucket>,
        mark: Watermark,
    ) -> Result<(), AuditError> {
        self.write_out(dir, unsynced)?;
        for &bucket in unsynced.iter() {
            let path = bucket_path(dir, bucket);
            std::fs::File::open(&path)
                .and_then(|f| f.sync_data())
                .map_err(AuditError::io(&path))?;
        }
        if !unsynced.is_empty() {
            // New buckets (and a new index directory) are durable only with their directories.
            let index_dir = dir.join("index");
            let kind_dirs = INDEX_KINDS.map(|kind| index_dir.join(kind.dir()));
            for d in kind_dirs.iter().chain([&index_dir]) {
                if d.exists() {
                    sync_dir(d).map_err(AuditError::io(d))?;
                }
            }
        }
        unsynced.clear();
        write_atomic(
            &dir.join("index").join("watermark"),
            format!("{} {} {}\n", mark.seq, mark.segment, mark.offset).as_bytes(),
        )
    }
}

/// Cuts the partial entry a crash during an append can leave at a bucket's end. Appends after it
/// would otherwise start mid-entry, and every later entry of the bucket would be misread. Returns
/// what was cut, for the recovery report.
pub(crate) fn cut_torn_entries(dir: &Path) -> Result<Vec<String>, AuditError> {
    let mut notes = Vec::new();
    for kind in INDEX_KINDS {
        let kind_dir = dir.join("index").join(kind.dir());
        let buckets = match std::fs::read_dir(&kind_dir) {
            Ok(buckets) => buckets,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(AuditError::Io {
                    path: kind_dir,
                    source: e,
                });
            }
        };
        for bucket in buckets {
            let path = bucket.map_err(AuditError::io(&kind_dir))?.path();
            if path.extension().is_none_or(|e| e != "idx") {
                continue;
            }
            let len = std::fs::metadata(&path)
                .map_err(AuditError::io(&path))?
                .len();
            let torn = len % ENTRY_BYTES as u64;
            if torn == 0 {
                continue;
            }
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(AuditError::io(&path))?;
            file.set_len(len - torn).map_err(AuditError::io(&path))?;
            file.sync_all().map_err(AuditError::io(&path))?;
            notes.push(format!(
                "cut {torn} bytes of a torn entry from the end of {}",
                path.display()
            ));
        }
    }
    Ok(notes)
}

/// The 40 bytes of an entry.
fn encode_entry(k: &[u8; 16], loc: Location) -> [u8; ENTRY_BYTES] {
    let mut entry = [0u8; ENTRY_BYTES];
    entry[..16].copy_from_slice(k);
    entry[16..24].copy_from_slice(&loc.seq.to_le_bytes());
    entry[24..32].copy_from_slice(&loc.segment.to_le_bytes());
    entry[32..].copy_from_slice(&loc.offset.to_le_bytes());
    entry
}

/// The number of the bucket (of [`BUCKET_COUNT`]) and the entry a record at `seq` (at `offset` in
/// the segment starting at `segment`) has for `key`, exactly as the writer stores it.
pub(crate) fn entry_bytes(
    kind: IndexKind,
    key: &str,
    seq: u64,
    segment: u64,
    offset: u64,
) -> (usize, [u8; ENTRY_BYTES]) {
    let k = key16(key);
    let entry = encode_entry(
        &k,
        Location {
            seq,
            segment,
            offset,
        },
    );
    (bucket_number((kind, k[0])), entry)
}

/// A bucket's number, of [`BUCKET_COUNT`] (the order compaction and `verify` walk them in).
fn bucket_number((kind, first_byte): Bucket) -> usize {
    let kind_number = INDEX_KINDS.iter().position(|k| *k == kind).unwrap_or(0);
    kind_number * 256 + usize::from(first_byte)
}

/// The bucket numbered `n` by [`bucket_number`], if there is one.
fn numbered_bucket(n: usize) -> Option<Bucket> {
    let kind = INDEX_KINDS.get(n / 256)?;
    Some((*kind, (n % 256) as u8))
}

/// A bucket's bytes; a bucket never written holds none.
fn read_bucket(path: PathBuf) -> Result<Vec<u8>, AuditError> {
    match std::fs::read(&path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(AuditError::Io { path, source: e }),
    }
}

/// An entry's record number and its 40 bytes.
pub(crate) type NumberedEntry = (u64, [u8; ENTRY_BYTES]);

/// Bucket number `n`'s path relative to the log and its whole entries with their record numbers
/// (a missing bucket holds none).
pub(crate) fn bucket_entries(
    dir: &Path,
    n: usize,
) -> Result<(String, Vec<NumberedEntry>), AuditError> {
    let Some(bucket) = numbered_bucket(n) else {
        return Ok((format!("bucket {n}"), Vec::new()));
    };
    let path = bucket_path(dir, bucket);
    let name = path
        .strip_prefix(dir)
        .unwrap_or(&path)
        .display()
        .to_string();
    let entries = read_bucket(path)?
        .chunks_exact(ENTRY_BYTES)
        .map(|c| {
            let mut entry = [0u8; ENTRY_BYTES];
            entry.copy_from_slice(c);
            (entry_seq(c), entry)
        })
        .collect();
    Ok((name, entries))
}

/// Removes the whole index (buckets, watermark, compaction record) before a rebuild.
pub(crate) fn remove_index(dir: &Path) -> Result<(), AuditError> {
    let index_dir = dir.join("index");
    match std::fs::remove_dir_all(&index_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AuditError::io(&index_dir)(e)),
        _ => sync_dir(dir).map_err(AuditError::io(dir)),
    }
}

/// Buckets across both index kinds; compaction walks them by number, one at a time.
pub(crate) const BUCKET_COUNT: usize = INDEX_KINDS.len() * 256;

/// Retention: rewrites bucket number `n` (of [`BUCKET_COUNT`]) without the entries of records below
/// `below`, whose bodies were removed, so the index neither keeps growing with them nor keeps
/// saying which key a removed record had. A changed bucket is replaced atomically (temporary
/// file, fsync, rename, directory fsync), so a reader or a crash sees the old or the new bucket,
/// and a bucket not yet compacted only holds entries that queries skip anyway. Returns how many
/// entries were dropped. Must run where appends to the buckets run (the index thread).
pub(crate) fn drop_bucket_entries_below(
    dir: &Path,
    n: usize,
    below: u64,
) -> Result<u64, AuditError> {
    let Some(bucket) = numbered_bucket(n) else {
        return Ok(0);
    };
    let path = bucket_path(dir, bucket);
    let bytes = read_bucket(path.clone())?;
    let kept: Vec<u8> = bytes
        .chunks_exact(ENTRY_BYTES)
        .filter(|entry| entry_seq(entry) >= below)
        .flatten()
        .copied()
        .collect();
    if kept.len() == bytes.len() {
        return Ok(0);
    }
    replace_file(&path, &kept)?;
    let kind_dir = dir.join("index").join(bucket.0.dir());
    sync_dir(&kind_dir).map_err(AuditError::io(&kind_dir))?;
    Ok(((bytes.len() - kept.len()) / ENTRY_BYTES) as u64)
}

/// Records every bucket's entries below `below` as dropped (`index/compacted`), once a compaction
/// pass has been through all of them.
pub(crate) fn write_compacted(dir: &Path, below: u64) -> Result<(), AuditError> {
    write_atomic(
        &dir.join("index").join("compacted"),
        format!("{below}\n").as_bytes(),
    )
}

/// No bucket holds entries below this record (0 when no compaction pass has finished).
pub(crate) fn compacted_below(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("index").join("compacted"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// The record number of a 40-byte entry.
fn entry_seq(entry: &[u8]) -> u64 {
    u64_at(entry, 16)
}

/// The little-endian u64 at `i` in an entry.
fn u64_at(entry: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&entry[i..i + 8]);
    u64::from_le_bytes(b)
}

/// How far the index is durable: records below `seq` are indexed, and record `seq` (the first
/// unindexed one) starts at `offset` in the segment whose first record is `segment`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Watermark {
    pub seq: u64,
    pub segment: u64,
    pub offset: u64,
}

/// The durable watermark (zero when there is none).
pub fn watermark(dir: &Path) -> Watermark {
    let text = std::fs::read_to_string(dir.join("index").join("watermark")).unwrap_or_default();
    let mut parts = text.split_whitespace().map(|p| p.parse::<u64>().ok());
    match (
        parts.next().flatten(),
        parts.next().flatten(),
        parts.next().flatten(),
    ) {
        (Some(seq), Some(segment), Some(offset)) => Watermark {
            seq,
            segment,
            offset,
        },
        _ => Watermark::default(),
    }
}

/// Locations of records whose `kind` key equals `key`, sorted and without duplicates.
pub fn lookup(dir: &Path, kind: IndexKind, key: &str) -> Result<Vec<Location>, AuditError> {
    let k = key16(key);
    let bytes = read_bucket(bucket_path(dir, (kind, k[0])))?;
    let mut out: Vec<Location> = bytes
        .chunks_exact(ENTRY_BYTES)
        .filter(|c| c[..16] == k)
        .map(|c| Location {
            seq: entry_seq(c),
            segment: u64_at(c, 24),
            offset: u64_at(c, 32),
        })
        .collect();
    out.sort();
    out.dedup_by_key(|l| l.seq);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn entries_are_found_deduplicated_and_watermarked() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = IndexWriter::default();
        for seq in 0..100u64 {
            let loc = Location {
                seq,
                segment: 0,
                offset: seq * 10,
            };
            w.add(
                IndexKind::Subject,
                if seq % 2 == 0 { "even" } else { "odd" },
                loc,
            );
            w.add(IndexKind::Consumer, "0192:1", loc);
        }
        w.add(
            IndexKind::Subject,
            "even",
            Location {
                seq: 0,
                segment: 0,
                offset: 0,
            },
        );
        w.flush_durably(
            dir.path(),
            &mut BTreeSet::new(),
            Watermark {
                seq: 100,
                segment: 0,
                offset: 4000,
            },
        )
        .unwrap();
        let even = lookup(dir.path(), IndexKind::Subject, "even").unwrap();
        assert_eq!(even.len(), 50);
        assert!(even.iter().all(|l| l.seq % 2 == 0));
        assert_eq!(
            lookup(dir.path(), IndexKind::Consumer, "0192:1")
                .unwrap()
                .len(),
            100
        );
        assert!(
            lookup(dir.path(), IndexKind::Consumer, "even")
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            watermark(dir.path()),
            Watermark {
                seq: 100,
                segment: 0,
                offset: 4000
            }
        );
    }

    #[test]
    fn retention_drops_the_entries_of_removed_records_from_every_bucket() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = IndexWriter::default();
        for seq in 0..300u64 {
            let loc = Location {
                seq,
                segment: seq / 100 * 100,
                offset: seq % 100 * 40,
            };
            w.add(IndexKind::Subject, &format!("person-{}", seq % 13), loc);
            w.add(IndexKind::Consumer, "0192:1", loc);
        }
        w.write_out(dir.path(), &mut BTreeSet::new()).unwrap();
        let all_bytes = || -> u64 {
            INDEX_KINDS
                .iter()
                .flat_map(|k| std::fs::read_dir(dir.path().join("index").join(k.dir())).unwrap())
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum()
        };
        let pass = |below| -> u64 {
            (0..BUCKET_COUNT)
                .map(|n| drop_bucket_entries_below(dir.path(), n, below).unwrap())
                .sum()
        };
        assert_eq!(all_bytes(), 600 * ENTRY_BYTES as u64);
        assert_eq!(pass(120), 240);
        assert_eq!(all_bytes(), 360 * ENTRY_BYTES as u64);
        let consumer = lookup(dir.path(), IndexKind::Consumer, "0192:1").unwrap();
        assert_eq!(
            consumer.iter().map(|l| l.seq).collect::<Vec<_>>(),
            (120..300).collect::<Vec<_>>()
        );
        // Locations survive the rewrite unchanged.
        assert_eq!(
            consumer[0],
            Location {
                seq: 120,
                segment: 100,
                offset: 20 * 40
            }
        );
        let person = lookup(dir.path(), IndexKind::Subject, "person-5").unwrap();
        assert!(!person.is_empty() && person.iter().all(|l| l.seq >= 120 && l.seq % 13 == 5));
        // Nothing left to drop: no bucket is rewritten, and no temporary file is left behind.
        assert_eq!(pass(120), 0);
        assert!(
            INDEX_KINDS
                .iter()
                .flat_map(|k| std::fs::read_dir(dir.path().join("index").join(k.dir())).unwrap())
                .all(|e| e.unwrap().path().extension().is_some_and(|x| x == "idx"))
        );
        assert_eq!(compacted_below(dir.path()), 0);
        write_compacted(dir.path(), 120).unwrap();
        assert_eq!(compacted_below(dir.path()), 120);
    }
}
