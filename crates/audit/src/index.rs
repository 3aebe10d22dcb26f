//! Secondary indexes by subject pseudonym and by consumer, so queries avoid a full scan.
//!
//! Layout: `index/<kind>/<hh>.idx`, 256 buckets per kind chosen by the first byte of the key digest.
//! An entry is 40 bytes: `SHA-256(key)[..16] ‖ seq u64 LE ‖ segment first seq u64 LE ‖ frame offset
//! u64 LE`. Entries are appended to their buckets whenever enough are buffered, without fsync, and
//! every so often the written buckets are fsynced and `index/watermark` records how many records
//! are durably indexed (see the writer), and how many entries each bucket held then. On open the
//! records after the watermark are indexed again, after a bucket's torn last entry (a crash during
//! an append) is cut so the entries stay aligned. Entries are hints: a query re-reads and
//! re-checks every record it returns, and duplicates are removed, so entries written ahead of the
//! watermark and written again after a crash are harmless.
//!
//! A missing entry is not harmless: the answer would silently leave that request out. Buckets
//! only grow, except when retention compaction rewrites them, and compaction lowers the recorded
//! count before it shrinks the file. So a bucket holding fewer entries than `index/watermark`
//! records lost some (truncated, deleted, an entry cut out), and [`lookup`] refuses to answer from
//! it rather than answer short. Entries rewritten in place, or removed and replaced by as many
//! others, keep the count; `verify` compares the entries with the records and finds those.

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

    /// Appends every buffered entry to its bucket without fsync, noting the buckets written and
    /// their entries in `files`. A crash may lose or tear these entries; that is harmless while
    /// the watermark stays behind them, since the records after it are indexed again on open.
    pub(crate) fn write_out(
        &mut self,
        dir: &Path,
        files: &mut BucketFiles,
    ) -> Result<(), AuditError> {
        self.pending_bytes = 0;
        for (bucket, buf) in std::mem::take(&mut self.pending) {
            append_unsynced(&bucket_path(dir, bucket), &buf)?;
            files.unsynced.insert(bucket);
            files.entries[bucket_number(bucket)] += (buf.len() / ENTRY_BYTES) as u64;
        }
        Ok(())
    }

    /// Writes every buffered entry, fsyncs every bucket written since the last durable flush
    /// (`files.unsynced`, emptied), then moves the watermark, recording every bucket's entries.
    pub(crate) fn flush_durably(
        &mut self,
        dir: &Path,
        files: &mut BucketFiles,
        mark: Watermark,
    ) -> Result<(), AuditError> {
        self.write_out(dir, files)?;
        let unsynced = &mut files.unsynced;
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
        write_watermark(dir, mark, &files.entries)
    }
}

/// The bucket files as the index writer left them: the buckets written since the last durable
/// flush, and how many entries each bucket holds by the writer's own count. The count is kept
/// here, not read back from the files, so that a bucket damaged meanwhile is not recorded as if
/// it were whole.
#[derive(Debug, Clone)]
pub(crate) struct BucketFiles {
    unsynced: BTreeSet<Bucket>,
    /// Entries per bucket, by [`bucket_number`].
    entries: Vec<u64>,
}

impl BucketFiles {
    /// An index with no buckets yet (a rebuild after [`remove_index`]).
    pub(crate) fn empty() -> Self {
        Self {
            unsynced: BTreeSet::new(),
            entries: vec![0; BUCKET_COUNT],
        }
    }

    /// The buckets of the index in `dir` after a restart (and after [`cut_torn_entries`]), with
    /// notes on any bucket that holds fewer entries than `index/watermark` records. Entries beyond
    /// the recorded ones were written out before a crash and not fsynced: they are counted, and
    /// fsynced at the next durable flush. A short bucket keeps its recorded count, so queries go
    /// on refusing it until the index is rebuilt. An index written before the counts were
    /// recorded (or whose watermark is damaged) is taken as it is, and fsynced at the next flush,
    /// which records it.
    pub(crate) fn open(dir: &Path) -> Result<(Self, Vec<String>), AuditError> {
        let recorded = read_watermark_file(dir).entries;
        let mut files = Self::empty();
        let mut notes = Vec::new();
        if let Recorded::Damaged(problem) = &recorded {
            notes.push(format!(
                "`{}` {problem}: the index buckets are taken as they are",
                dir.join("index").join("watermark").display()
            ));
        }
        for n in 0..BUCKET_COUNT {
            let Some(bucket) = numbered_bucket(n) else {
                continue;
            };
            let path = bucket_path(dir, bucket);
            let held = match std::fs::metadata(&path) {
                Ok(m) => m.len() / ENTRY_BYTES as u64,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => return Err(AuditError::io(&path)(e)),
            };
            let want = match &recorded {
                Recorded::Entries(entries) => entries.get(n).copied().unwrap_or(0),
                Recorded::Unknown | Recorded::Damaged(_) => 0,
            };
            if held < want {
                notes.push(format!(
                    "index bucket `{}` holds {held} entries but {want} were recorded: entries were \
                     removed, and queries it answers fail until the index is rebuilt \
                     (`tollbu audit reindex`, or remove the `index` directory before a start)",
                    path.display()
                ));
            }
            if held > want || (held > 0 && !matches!(recorded, Recorded::Entries(_))) {
                files.unsynced.insert(bucket);
            }
            files.entries[n] = held.max(want);
        }
        Ok((files, notes))
    }

    /// True when buckets were written (or found) that the next durable flush must fsync.
    pub(crate) fn has_unsynced(&self) -> bool {
        !self.unsynced.is_empty()
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
/// and a bucket not yet compacted only holds entries that queries skip anyway. The count
/// `index/watermark` records for the bucket is lowered first: a crash between the two leaves a
/// bucket holding more than recorded, which is normal, never less, which is damage. `files`, the
/// index writer's own counts when it runs this, are lowered by what was dropped (not set to what
/// the file holds, which may be short). Returns how many entries were dropped. Must run where
/// appends to the buckets run (the index thread).
pub(crate) fn drop_bucket_entries_below(
    dir: &Path,
    n: usize,
    below: u64,
    files: Option<&mut BucketFiles>,
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
    let dropped = ((bytes.len() / ENTRY_BYTES) - kept.len() / ENTRY_BYTES) as u64;
    let file = read_watermark_file(dir);
    if let Recorded::Entries(mut recorded) = file.entries
        && let Some(want) = recorded.get_mut(n)
    {
        let dropped_of_recorded = bytes
            .chunks_exact(ENTRY_BYTES)
            .take(usize::try_from(*want).unwrap_or(usize::MAX))
            .filter(|entry| entry_seq(entry) < below)
            .count() as u64;
        if dropped_of_recorded > 0 {
            *want -= dropped_of_recorded;
            write_watermark(dir, file.mark, &recorded)?;
        }
    }
    replace_file(&path, &kept)?;
    let kind_dir = dir.join("index").join(bucket.0.dir());
    sync_dir(&kind_dir).map_err(AuditError::io(&kind_dir))?;
    if let Some(files) = files {
        files.entries[n] = files.entries[n].saturating_sub(dropped);
    }
    Ok(dropped)
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
    read_watermark_file(dir).mark
}

/// What `index/watermark` holds: `<seq> <segment> <offset>` and, on a second line,
/// `entries <n₀> … <n₅₁₁>`, the entries each bucket (by [`bucket_number`]) held at that durable
/// flush. Versions before the counts wrote the first line only; they read past the second.
struct WatermarkFile {
    mark: Watermark,
    entries: Recorded,
}

/// The per-bucket entry counts of `index/watermark`.
enum Recorded {
    /// No watermark, or one written before the counts were: nothing to check against.
    Unknown,
    /// A second line that is not 512 counts (the file was altered or damaged).
    Damaged(String),
    Entries(Vec<u64>),
}

fn read_watermark_file(dir: &Path) -> WatermarkFile {
    let text = std::fs::read_to_string(dir.join("index").join("watermark")).unwrap_or_default();
    let mut lines = text.lines();
    let mut parts = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(|p| p.parse::<u64>().ok());
    let mark = match (
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
    };
    let entries = match lines.next() {
        None => Recorded::Unknown,
        Some(line) => {
            let mut words = line.split_whitespace();
            let counts: Option<Vec<u64>> = match words.next() {
                Some("entries") => words.map(|w| w.parse().ok()).collect(),
                _ => None,
            };
            match counts {
                Some(counts) if counts.len() == BUCKET_COUNT => Recorded::Entries(counts),
                _ => Recorded::Damaged(format!(
                    "has a second line that is not `entries` and {BUCKET_COUNT} counts"
                )),
            }
        }
    };
    WatermarkFile { mark, entries }
}

/// Writes `index/watermark` atomically: `mark`, and the entries each bucket holds.
fn write_watermark(dir: &Path, mark: Watermark, entries: &[u64]) -> Result<(), AuditError> {
    let mut text = format!("{} {} {}\nentries", mark.seq, mark.segment, mark.offset);
    for count in entries {
        text.push(' ');
        text.push_str(&count.to_string());
    }
    text.push('\n');
    write_atomic(&dir.join("index").join("watermark"), text.as_bytes())
}

/// Locations of records whose `kind` key equals `key`, sorted and without duplicates. Fails when
/// the bucket holds fewer entries than `index/watermark` records for it: entries were removed,
/// and an answer from what is left would silently leave requests out.
pub fn lookup(dir: &Path, kind: IndexKind, key: &str) -> Result<Vec<Location>, AuditError> {
    let k = key16(key);
    let bytes = read_checked_bucket(dir, (kind, k[0]))?;
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

/// Attempts at reading a bucket that looks short before calling it damaged.
const CHECKED_READ_ATTEMPTS: usize = 3;

/// A bucket's bytes, checked against the count `index/watermark` records for it. The count is read
/// before the bucket: a durable flush in between only adds entries. A compaction in between may
/// shrink the bucket below the count read, but it lowers the count first, so the next attempt
/// reads the lowered count; a bucket still short is damaged.
fn read_checked_bucket(dir: &Path, bucket: Bucket) -> Result<Vec<u8>, AuditError> {
    let path = bucket_path(dir, bucket);
    let mut attempt = 1;
    loop {
        let want = match read_watermark_file(dir).entries {
            Recorded::Unknown => None,
            Recorded::Damaged(problem) => {
                return Err(AuditError::IndexDamaged {
                    dir: dir.to_path_buf(),
                    path: dir.join("index").join("watermark"),
                    problem,
                });
            }
            Recorded::Entries(entries) => entries.get(bucket_number(bucket)).copied(),
        };
        let bytes = read_bucket(path.clone())?;
        let held = (bytes.len() / ENTRY_BYTES) as u64;
        match want {
            Some(want) if held < want => {
                if attempt == CHECKED_READ_ATTEMPTS {
                    return Err(AuditError::IndexDamaged {
                        dir: dir.to_path_buf(),
                        path,
                        problem: format!(
                            "holds {held} entries but {want} were recorded at its last durable flush"
                        ),
                    });
                }
                attempt += 1;
            }
            _ => return Ok(bytes),
        }
    }
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
            &mut BucketFiles::empty(),
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
        w.write_out(dir.path(), &mut BucketFiles::empty()).unwrap();
        let all_bytes = || -> u64 {
            INDEX_KINDS
                .iter()
                .flat_map(|k| std::fs::read_dir(dir.path().join("index").join(k.dir())).unwrap())
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum()
        };
        let pass = |below| -> u64 {
            (0..BUCKET_COUNT)
                .map(|n| drop_bucket_entries_below(dir.path(), n, below, None).unwrap())
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
