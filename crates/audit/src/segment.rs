//! Append-only segment files and their framing; the storage seam used to inject failures.
//!
//! A segment is named by the sequence number of its first record, 20 zero-padded digits plus
//! `.seg`. Each entry is `len: u32 LE ‖ crc32(payload): u32 LE ‖ payload` (CRC-32/ISO-HDLC, as
//! zlib). A frame whose header or payload is short, or whose checksum fails, ends the readable log.
//!
//! The active segment may end in a *zero tail*: zeros written ahead of the appends (see
//! [`Storage::prepare_zeroed`]). Eight zero bytes where a frame header is due, followed by nothing
//! but zeros to the end of the file, end the segment cleanly; any other byte after them is damage.
//! No record is empty, so a real frame never starts with eight zero bytes.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::AuditError;

pub const FRAME_HEADER: usize = 8;
const SEGMENT_EXT: &str = "seg";

/// An open, append-only segment file.
pub trait SegmentFile: Send {
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable.
    fn sync(&mut self) -> io::Result<()>;
    /// Cuts the file back (used to undo a failed batch and to drop a torn tail).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Sets aside disk blocks up to `len` bytes without changing the file's size, so that an
    /// append does not allocate them at commit time (on ext4 this shortens each batch's
    /// `fdatasync`; figures in docs/BENCHMARKS.md). Best effort: where the file system cannot
    /// do it, or has too little room, nothing is set aside (and nothing a failed attempt
    /// allocated is kept) and appends go on as before.
    fn reserve(&mut self, _len: u64) {}
}

/// Where segment files live. The real implementation is [`FsStorage`]; tests wrap it to fail on demand.
pub trait Storage: Send + Sync {
    /// Opens (or creates) the segment at `path` to append after its frames, which end at
    /// `frames_end`; what follows is a zero tail that the appends write over.
    fn open_segment(&self, path: &Path, frames_end: u64) -> io::Result<Box<dyn SegmentFile>>;
    /// Makes a directory entry (a newly created file) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Writes `len` zero bytes to a new file at `path` and makes them durable, for a future segment
    /// to be renamed from. Appends that overwrite blocks already written need no metadata update,
    /// so their `fdatasync` is shorter than on blocks merely set aside (figures in
    /// docs/BENCHMARKS.md). Called on a thread of its own, never on the writer's; stops early,
    /// with an error, once `cancel` is set. By default not supported: every segment then starts
    /// empty, as before.
    fn prepare_zeroed(&self, _path: &Path, _len: u64, _cancel: &AtomicBool) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Plain files.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

struct FsSegment(File);

impl SegmentFile for FsSegment {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.0.set_len(len)?;
        self.0.seek(SeekFrom::End(0))?;
        self.0.sync_all()
    }
    #[cfg(target_os = "linux")]
    fn reserve(&mut self, len: u64) {
        use rustix::fs::{FallocateFlags, fallocate, fstatvfs};
        // Already allocated ranges are left as they are; the file's size does not move, so the
        // segment format and every reader are unaffected. A reservation that is not made is not
        // an error (see the trait): a full disk shows on the next append instead, where it is
        // handled.
        reserve_blocks(
            &self.0,
            len,
            |f| {
                let st = fstatvfs(f)?;
                Ok(st.f_bavail.saturating_mul(st.f_frsize))
            },
            |f, len| Ok(fallocate(f, FallocateFlags::KEEP_SIZE, 0, len)?),
        );
    }
}

/// Free space a segment's reservation leaves on its file system, for the appends themselves and
/// the tiles, checkpoints, index and spare segment that follow them: with less free than the
/// blocks still to set aside plus this, nothing is set aside.
#[cfg(target_os = "linux")]
pub const RESERVE_HEADROOM: u64 = 64 << 20;

/// Sets aside blocks of `file` up to `len` bytes with `allocate` (a `fallocate` that keeps the
/// size), if the file system has room for them and [`RESERVE_HEADROOM`] besides (`free_space`).
/// A failed `allocate` may keep the blocks it did allocate (ext4 does when it runs out of space,
/// leaving the disk full); they are given back by truncating the file to its own size, which
/// frees every block past its end. Returns whether the blocks are set aside.
#[cfg(target_os = "linux")]
fn reserve_blocks(
    file: &File,
    len: u64,
    free_space: impl FnOnce(&File) -> io::Result<u64>,
    allocate: impl FnOnce(&File, u64) -> io::Result<()>,
) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = file.metadata() else {
        return false;
    };
    let allocated = meta.blocks().saturating_mul(512);
    if allocated >= len {
        return true;
    }
    // Only the writer thread changes the file, so its size is still `meta.len()`. Should this
    // fail too, the blocks go back at the next rotation's truncate.
    let give_back = || {
        let _ = file.set_len(meta.len());
    };
    match free_space(file) {
        Ok(free) if free >= (len - allocated).saturating_add(RESERVE_HEADROOM) => {}
        _ => {
            // Too little room: nothing stays set aside, not even what an earlier reservation (or
            // a failed one, before this check existed) left past the end.
            if allocated > meta.len() {
                give_back();
            }
            return false;
        }
    }
    if allocate(file, len).is_ok() {
        return true;
    }
    give_back();
    false
}

/// Zeros are written in small steps, each made durable before the next, with [`ZERO_PAUSE`]
/// between them, so that a segment's `fdatasync` never waits long behind them: 64 MiB written in
/// one go held this disk for ≈ 80 ms, and 1 MiB steps still raised the gateway's p99 at 50
/// connections by a quarter, where 128 KiB steps did not measurably (docs/BENCHMARKS.md).
const ZERO_STEP: usize = 128 << 10;
const ZERO_PAUSE: Duration = Duration::from_millis(1);

impl Storage for FsStorage {
    fn open_segment(&self, path: &Path, frames_end: u64) -> io::Result<Box<dyn SegmentFile>> {
        let mut f = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)?;
        f.seek(SeekFrom::Start(frames_end))?;
        Ok(Box::new(FsSegment(f)))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        sync_dir(dir)
    }
    fn prepare_zeroed(&self, path: &Path, len: u64, cancel: &AtomicBool) -> io::Result<()> {
        let mut f = File::create(path)?;
        let zeros = vec![0u8; ZERO_STEP];
        let mut written = 0u64;
        while written < len {
            if cancel.load(Ordering::Relaxed) {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "cancelled"));
            }
            let step = (len - written).min(ZERO_STEP as u64) as usize;
            f.write_all(&zeros[..step])?;
            f.sync_data()?;
            written += step as u64;
            if written < len {
                std::thread::sleep(ZERO_PAUSE);
            }
        }
        f.sync_all()
    }
}

/// fsync on a directory, so a created or renamed file survives power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Appends one frame to `out`.
pub fn frame(payload: &[u8], out: &mut Vec<u8>) {
    frame_with(out, |out| out.extend_from_slice(payload));
}

/// [`frame`] for a payload that `write` appends to `out` itself, so it is not built elsewhere
/// and copied: the header is reserved first and filled in afterwards.
pub fn frame_with(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    write(out);
    let payload = &out[start + FRAME_HEADER..];
    let len = (payload.len() as u32).to_le_bytes();
    let crc = crc32fast::hash(payload).to_le_bytes();
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + FRAME_HEADER].copy_from_slice(&crc);
}

/// The payloads of well-formed frames in `buf`, in order (stops at the first incomplete one).
/// For buffers this process just framed; files are read with [`FrameReader`], which checks.
pub(crate) fn frames(mut buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
        let payload = buf.get(8..8 + len)?;
        buf = &buf[8 + len..];
        Some(payload)
    })
}

pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.{SEGMENT_EXT}")
}

/// A segment file on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub first_seq: u64,
    pub path: PathBuf,
}

/// Segments in `dir`, ordered by first sequence number. Unknown files are ignored.
pub fn list_segments(dir: &Path) -> Result<Vec<SegmentInfo>, AuditError> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(AuditError::Io {
                path: dir.into(),
                source: e,
            });
        }
    };
    for entry in rd {
        let entry = entry.map_err(AuditError::io(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(first_seq) = stem.parse() {
            out.push(SegmentInfo {
                first_seq,
                path: entry.path(),
            });
        }
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// What reading a frame produced.
#[derive(Debug)]
pub enum FrameRead {
    Frame {
        offset: u64,
        payload: Vec<u8>,
    },
    /// Clean end of file.
    End,
    /// Short header, short payload or checksum mismatch at `offset`; `payload` is what could be read.
    Bad {
        offset: u64,
        reason: String,
        payload: Option<Vec<u8>>,
    },
}

/// Sequential frame reader.
pub struct FrameReader {
    r: BufReader<File>,
    offset: u64,
    /// Whether a zero header is a clean end only after the zeros behind it were read and found
    /// to be zeros (the default; see [`FrameReader::zero_tail_unchecked`]).
    check_zero_tail: bool,
}

impl FrameReader {
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let f = File::open(path).map_err(AuditError::io(path))?;
        Ok(Self {
            r: BufReader::with_capacity(1 << 16, f),
            offset: 0,
            check_zero_tail: true,
        })
    }

    pub fn open_at(path: &Path, offset: u64) -> Result<Self, AuditError> {
        let mut f = File::open(path).map_err(AuditError::io(path))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(AuditError::io(path))?;
        Ok(Self {
            r: BufReader::with_capacity(1 << 12, f),
            offset,
            check_zero_tail: true,
        })
    }

    /// Ends the read at a zero header without reading the zeros behind it, which can be a whole
    /// segment's worth. For queries and browsing of the active segment, which end at the log's
    /// end anyway; verification and recovery keep the check, which finds bytes hidden behind it.
    pub fn zero_tail_unchecked(mut self) -> Self {
        self.check_zero_tail = false;
        self
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn next_frame(&mut self) -> io::Result<FrameRead> {
        let start = self.offset;
        let mut header = [0u8; FRAME_HEADER];
        let got = read_full(&mut self.r, &mut header)?;
        if got == 0 {
            return Ok(FrameRead::End);
        }
        if header[..got].iter().all(|&b| b == 0) {
            if !self.check_zero_tail {
                return Ok(FrameRead::End);
            }
            return self.zero_tail(start, got);
        }
        if got < FRAME_HEADER {
            return Ok(FrameRead::Bad {
                offset: start,
                reason: format!("short frame header ({got} bytes)"),
                payload: None,
            });
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > crate::record::MAX_RECORD_BYTES {
            return Ok(FrameRead::Bad {
                offset: start,
                reason: format!("frame length {len} exceeds the record limit"),
                payload: None,
            });
        }
        let mut payload = vec![0u8; len];
        let got = read_full(&mut self.r, &mut payload)?;
        if got < len {
            return Ok(FrameRead::Bad {
                offset: start,
                reason: format!("short frame payload ({got} of {len} bytes)"),
                payload: None,
            });
        }
        self.offset += (FRAME_HEADER + len) as u64;
        if crc32fast::hash(&payload) != crc {
            return Ok(FrameRead::Bad {
                offset: start,
                reason: "checksum mismatch".into(),
                payload: Some(payload),
            });
        }
        Ok(FrameRead::Frame {
            offset: start,
            payload,
        })
    }

    /// At `start` the bytes read so far (`read` of them) are zeros: a clean end if only zeros
    /// follow (the active segment's zero tail), damage otherwise. A live log may be appended to
    /// while this reads: if the header at `start` is no longer zero, the non-zero bytes are that
    /// append, and the log as read ends at `start`.
    fn zero_tail(&mut self, start: u64, read: usize) -> io::Result<FrameRead> {
        let mut at = start + read as u64;
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            let got = read_full(&mut self.r, &mut chunk)?;
            if let Some(i) = chunk[..got].iter().position(|&b| b != 0) {
                let mut header = [0u8; FRAME_HEADER];
                let now = read_at(self.r.get_mut(), &mut header, start)?;
                if header[..now].iter().any(|&b| b != 0) {
                    return Ok(FrameRead::End);
                }
                return Ok(FrameRead::Bad {
                    offset: start,
                    reason: format!(
                        "a zero frame header, but a non-zero byte at offset {} after it",
                        at + i as u64
                    ),
                    payload: None,
                });
            }
            at += got as u64;
            if got < chunk.len() {
                return Ok(FrameRead::End);
            }
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads into `buf` from `offset` until it is full or the file ends; returns how much was read.
fn read_at(file: &mut File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }
    #[cfg(not(unix))]
    {
        file.seek(SeekFrom::Start(offset))?;
        read_full(file, buf)
    }
}

/// Reads single frames at known offsets (index lookups), keeping each segment open: a query that
/// jumps to thousands of records costs two small reads per record, not an open and a buffer fill.
#[derive(Default)]
pub struct FrameFetcher {
    /// Open segments by first sequence number; `None` for a segment that no longer exists (pruned).
    open: std::collections::HashMap<u64, Option<File>>,
}

impl FrameFetcher {
    /// The payload of the frame at `offset` in segment `first_seq` of `seg_dir`, checksum-checked;
    /// `None` when that segment was pruned.
    pub fn read(
        &mut self,
        seg_dir: &Path,
        first_seq: u64,
        offset: u64,
    ) -> Result<Option<Vec<u8>>, AuditError> {
        let path = || seg_dir.join(segment_name(first_seq));
        let file = match self.open.entry(first_seq) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(match File::open(path()) {
                Ok(f) => Some(f),
                Err(err) if err.kind() == io::ErrorKind::NotFound => None,
                Err(err) => return Err(AuditError::io(path())(err)),
            }),
        };
        let Some(file) = file else {
            return Ok(None);
        };
        let bad = |reason: String| {
            AuditError::Corrupt(format!(
                "frame at offset {offset} of `{}`: {reason}",
                path().display()
            ))
        };
        // Most records are under 1 KiB: one read usually brings the header and the whole payload.
        let mut buf = vec![0u8; 1024];
        let got = read_at(file, &mut buf, offset).map_err(|e| bad(format!("read: {e}")))?;
        if got < FRAME_HEADER {
            return Err(bad(format!("short frame header ({got} bytes)")));
        }
        let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if len > crate::record::MAX_RECORD_BYTES {
            return Err(bad(format!("frame length {len} exceeds the record limit")));
        }
        let end = FRAME_HEADER + len;
        if got < end {
            buf.resize(end, 0);
            let more = read_at(file, &mut buf[got..], offset + got as u64)
                .map_err(|e| bad(format!("read: {e}")))?;
            if got + more < end {
                return Err(bad(format!(
                    "short frame payload ({} of {len} bytes)",
                    got + more - FRAME_HEADER
                )));
            }
        }
        buf.truncate(end);
        buf.drain(..FRAME_HEADER);
        if crc32fast::hash(&buf) != crc {
            return Err(bad("checksum mismatch".into()));
        }
        Ok(Some(buf))
    }
}

/// Visits payloads of records `[from, to)` across segments (records must be in sequence).
pub fn for_each_in_range(
    segments: &[SegmentInfo],
    from: u64,
    to: u64,
    f: impl FnMut(u64, u64, &SegmentInfo, &[u8]) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    RecordCursor::new(segments).for_each(from, to, f)
}

/// Reads records across segments for [`for_each_in_range`], and stays where it stopped: a caller
/// asking for consecutive ranges (a tile rebuild asks for 256 records at a time) reads each record
/// once, where starting each range from its segment's first frame read a 64 MiB segment's
/// first half again for every tile (10M records' tiles took 306 s to rebuild).
pub struct RecordCursor<'a> {
    segments: &'a [SegmentInfo],
    /// The segment being read (an index into `segments`), its reader, and the sequence number of
    /// the reader's next frame.
    at: Option<(usize, FrameReader, u64)>,
}

impl<'a> RecordCursor<'a> {
    pub fn new(segments: &'a [SegmentInfo]) -> Self {
        Self { segments, at: None }
    }

    /// Visits records `[from, to)`, continuing from the last call when `from` is where it stopped.
    /// A segment's records are numbered from the sequence number its name gives.
    pub fn for_each(
        &mut self,
        from: u64,
        to: u64,
        mut f: impl FnMut(u64, u64, &SegmentInfo, &[u8]) -> Result<(), AuditError>,
    ) -> Result<(), AuditError> {
        if from >= to {
            return Ok(());
        }
        let (mut idx, mut reader, mut seq) = match self.at.take() {
            Some((idx, reader, seq)) if seq == from => (idx, reader, seq),
            _ => {
                let idx = self
                    .segments
                    .partition_point(|s| s.first_seq <= from)
                    .saturating_sub(1);
                let Some(seg) = self.segments.get(idx) else {
                    return Ok(());
                };
                (idx, FrameReader::open(&seg.path)?, seg.first_seq)
            }
        };
        loop {
            let seg = &self.segments[idx];
            if seq >= to {
                self.at = Some((idx, reader, seq));
                return Ok(());
            }
            match reader.next_frame().map_err(AuditError::io(&seg.path))? {
                FrameRead::Frame { offset, payload } => {
                    if seq >= from {
                        f(seq, offset, seg, &payload)?;
                    }
                    seq += 1;
                }
                FrameRead::End => {
                    let Some(next) = self.segments.get(idx + 1) else {
                        return Ok(());
                    };
                    if next.first_seq >= to {
                        return Ok(());
                    }
                    idx += 1;
                    reader = FrameReader::open(&next.path)?;
                    seq = next.first_seq;
                }
                FrameRead::Bad { offset, reason, .. } => {
                    return Err(AuditError::Corrupt(format!(
                        "`{}` at offset {offset}: {reason}",
                        seg.path.display()
                    )));
                }
            }
        }
    }
}

/// Appends `data` to `path` and fsyncs it; a file created by this call (and its directory, if
/// missing) also has its directory entry made durable.
pub fn append_durably(path: &Path, data: &[u8]) -> Result<(), AuditError> {
    let (file, created) = append(path, data)?;
    file.sync_data().map_err(AuditError::io(path))?;
    if created {
        let parent = path.parent().unwrap_or(Path::new("."));
        sync_dir(parent).map_err(AuditError::io(parent))?;
    }
    Ok(())
}

/// Appends `data` to `path` (created with its directory if missing) and leaves it in the page
/// cache: the caller fsyncs the file and its directory later, or can afford to lose it.
pub fn append_unsynced(path: &Path, data: &[u8]) -> Result<(), AuditError> {
    append(path, data).map(drop)
}

/// Appends `data` to `path`; returns the file and whether this call created it.
fn append(path: &Path, data: &[u8]) -> Result<(File, bool), AuditError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let created = !path.exists();
    if created {
        std::fs::create_dir_all(parent).map_err(AuditError::io(parent))?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(AuditError::io(path))?;
    f.write_all(data).map_err(AuditError::io(path))?;
    Ok((f, created))
}

/// Writes `data` to `path` atomically (temp file, fsync, rename, fsync directory).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), AuditError> {
    replace_file(path, data)?;
    let parent = path.parent().unwrap_or(Path::new("."));
    sync_dir(parent).map_err(AuditError::io(parent))
}

/// [`write_atomic`] without the directory fsync, for callers that write many files into the same
/// directories and sync each directory once afterwards.
pub fn replace_file(path: &Path, data: &[u8]) -> Result<(), AuditError> {
    let mut batch = FileBatch::default();
    batch.add(path, data)?;
    batch.commit()
}

/// New contents for several files, each written to a temporary name, made durable and renamed
/// over its file, as [`replace_file`] does for one. Made durable together: each file's writeback
/// is started before the first fsync, so that the journal commit that fsync forces carries every
/// file's block allocation and the later fsyncs have little left to do. Rebuilding the 39,000
/// tiles of a 10M-record log on open takes 19–21 s instead of 24–32 s this way; beside a busy
/// writer the gain is nil, since its own commits carry the tiles anyway (docs/BENCHMARKS.md,
/// "tile files made durable together"). Temporary files not yet renamed are removed when the
/// batch is dropped, so a full disk gets its space back and recovery finds no stray file.
#[derive(Default)]
pub struct FileBatch {
    /// (temporary path, final path, the open temporary file), in the order added.
    written: Vec<(PathBuf, PathBuf, File)>,
}

impl FileBatch {
    /// Files added before [`FileBatch::commit`] are held open: callers with many files commit
    /// every this many, well under a process's default limit of 1,024 open files.
    pub const MAX_OPEN: usize = 64;

    pub fn len(&self) -> usize {
        self.written.len()
    }

    pub fn is_empty(&self) -> bool {
        self.written.is_empty()
    }

    /// Writes `data` to `path`'s temporary name (creating the directory if need be); nothing is
    /// durable or renamed until [`FileBatch::commit`].
    pub fn add(&mut self, path: &Path, data: &[u8]) -> Result<(), AuditError> {
        // The same file twice: the later contents win, as they would one file after another.
        if let Some(i) = self.written.iter().position(|(_, p, _)| p == path) {
            self.written.remove(i);
        }
        let tmp = path.with_extension("tmp");
        // The directory usually exists (256 tiles share one): create it only when the file cannot
        // be, rather than pay a failing `mkdir` and a `stat` for every tile.
        let mut f = match File::create(&tmp) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let parent = path.parent().unwrap_or(Path::new("."));
                std::fs::create_dir_all(parent).map_err(AuditError::io(parent))?;
                File::create(&tmp)
            }
            created => created,
        }
        .map_err(AuditError::io(&tmp))?;
        let written = f.write_all(data);
        // Pushed before the error is returned, so that the drop removes the file.
        self.written.push((tmp.clone(), path.to_path_buf(), f));
        written.map_err(AuditError::io(&tmp))
    }

    /// Makes every file added durable, then renames each over its final path.
    pub fn commit(mut self) -> Result<(), AuditError> {
        if self.written.len() > 1 {
            for (_, _, f) in &self.written {
                start_writeback(f);
            }
        }
        for (tmp, _, f) in &self.written {
            f.sync_all().map_err(AuditError::io(tmp))?;
        }
        while !self.written.is_empty() {
            let (tmp, path, f) = self.written.remove(0);
            drop(f);
            if let Err(e) = std::fs::rename(&tmp, &path) {
                let _ = std::fs::remove_file(&tmp);
                return Err(AuditError::io(&path)(e));
            }
        }
        Ok(())
    }
}

impl Drop for FileBatch {
    fn drop(&mut self) {
        for (tmp, _, _) in self.written.drain(..) {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// Asks the kernel to start writing `f`'s dirty pages out now, without waiting (rustix has no
/// `sync_file_range`; `POSIX_FADV_DONTNEED` starts the same writeback, and leaves the pages it
/// cannot drop yet, those being written, in the cache). Only a hint: errors surface at the fsync.
fn start_writeback(f: &File) {
    #[cfg(target_os = "linux")]
    {
        let _ = rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::DontNeed);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = f;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// A temp dir, the path of segment 0 in it (not yet written), and two framed payloads.
    fn hello_world() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(segment_name(0));
        let mut buf = Vec::new();
        frame(b"hello", &mut buf);
        frame(b"world", &mut buf);
        (dir, p, buf)
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_reserved_segment_has_its_blocks_but_keeps_its_size() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(segment_name(0));
        let mut seg = FsStorage.open_segment(&path, 0).unwrap();
        seg.reserve(1 << 20);
        let mut buf = Vec::new();
        frame(b"first record", &mut buf);
        seg.append(&buf).unwrap();
        seg.sync().unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            meta.len(),
            buf.len() as u64,
            "the size is what was appended"
        );
        assert!(
            meta.blocks() * 512 >= 1 << 20,
            "1 MiB set aside, {} bytes allocated",
            meta.blocks() * 512
        );
        // Readers see the frames and nothing of the reserved space.
        let mut reader = FrameReader::open(&path).unwrap();
        assert!(matches!(
            reader.next_frame().unwrap(),
            FrameRead::Frame { offset: 0, payload } if payload == b"first record"
        ));
        assert!(matches!(reader.next_frame().unwrap(), FrameRead::End));
    }

    /// Allocated bytes of `path`.
    /// Segment 0 holding two frames (the bytes), open for reading and writing (the directory
    /// lives as long as the first value).
    #[cfg(target_os = "linux")]
    fn written_segment() -> (tempfile::TempDir, PathBuf, Vec<u8>, File) {
        let (dir, path, buf) = hello_world();
        std::fs::write(&path, &buf).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (dir, path, buf, file)
    }

    #[cfg(target_os = "linux")]
    fn allocated(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().blocks() * 512
    }

    /// A `fallocate` that runs out of space may keep what it allocated (ext4 does): the blocks
    /// are given back, so a failed reservation never leaves a volume fuller than it was.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_failed_reservation_gives_back_what_it_allocated() {
        use rustix::fs::{FallocateFlags, fallocate};
        let (_dir, path, buf, file) = written_segment();
        let before = allocated(&path);
        let reserved = reserve_blocks(
            &file,
            64 << 20,
            |_| Ok(u64::MAX),
            |f, _| {
                // Allocates 8 MiB, then runs out of space.
                fallocate(f, FallocateFlags::KEEP_SIZE, 0, 8 << 20).unwrap();
                assert!(allocated(&path) >= 8 << 20);
                Err(io::Error::from_raw_os_error(28))
            },
        );
        assert!(!reserved);
        assert_eq!(
            allocated(&path),
            before,
            "blocks kept by a failed fallocate"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            buf,
            "the frames are untouched"
        );
    }

    /// A reservation that would leave less than the headroom free is not attempted, and blocks
    /// left past the end by an earlier one are given back; with room, the blocks are set aside.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_reservation_leaves_headroom_or_sets_nothing_aside() {
        use rustix::fs::{FallocateFlags, fallocate};
        let (_dir, path, buf, file) = written_segment();
        let before = allocated(&path);
        let len = 4 << 20;
        let tight = len - before + RESERVE_HEADROOM - 1;
        let reserved = reserve_blocks(
            &file,
            len,
            |_| Ok(tight),
            |_, _| panic!("reserved with too little room"),
        );
        assert!(!reserved);
        assert_eq!(allocated(&path), before);

        // Blocks past the end from an earlier reservation go back when there is no room now.
        fallocate(&file, FallocateFlags::KEEP_SIZE, 0, 1 << 20).unwrap();
        assert!(allocated(&path) >= 1 << 20);
        assert!(!reserve_blocks(&file, len, |_| Ok(0), |_, _| panic!()));
        assert_eq!(allocated(&path), before);
        assert_eq!(std::fs::read(&path).unwrap(), buf);

        let fallocate_keep_size =
            |f: &File, len| Ok(fallocate(f, FallocateFlags::KEEP_SIZE, 0, len)?);
        assert!(reserve_blocks(
            &file,
            len,
            |_| Ok(tight + 1),
            fallocate_keep_size
        ));
        assert!(allocated(&path) >= len);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), buf.len() as u64);
    }

    #[test]
    fn a_zero_tail_ends_a_segment_cleanly_and_any_other_byte_after_it_is_damage() {
        let (_dir, p, buf) = hello_world();
        let frames_end = buf.len() as u64;
        let read_all = |bytes: &[u8]| {
            std::fs::write(&p, bytes).unwrap();
            let mut r = FrameReader::open(&p).unwrap();
            let mut out = Vec::new();
            loop {
                match r.next_frame().unwrap() {
                    FrameRead::Frame { payload, .. } => out.push(payload),
                    end => return (out, end),
                }
            }
        };
        // A stray byte well behind a zero header.
        let mut stray = buf.clone();
        stray.resize(buf.len() + 70_000, 0);
        stray[buf.len() + 69_000] = 7;
        // Unchecked, a zero header simply ends the read.
        std::fs::write(&p, &stray).unwrap();
        let mut r = FrameReader::open(&p).unwrap().zero_tail_unchecked();
        assert!(matches!(r.next_frame().unwrap(), FrameRead::Frame { .. }));
        assert!(matches!(r.next_frame().unwrap(), FrameRead::Frame { .. }));
        assert!(matches!(r.next_frame().unwrap(), FrameRead::End));
        // Zeros of any length after the frames, even fewer than a header's worth.
        for zeros in [3usize, 8, 100_000] {
            let mut bytes = buf.clone();
            bytes.resize(buf.len() + zeros, 0);
            let (frames, end) = read_all(&bytes);
            assert_eq!(
                frames,
                [b"hello".to_vec(), b"world".to_vec()],
                "{zeros} zeros"
            );
            assert!(matches!(end, FrameRead::End), "{zeros} zeros: {end:?}");
        }
        // Checked, the stray byte behind the zero header is not a clean end.
        let (frames, end) = read_all(&stray);
        assert_eq!(frames.len(), 2);
        assert!(
            matches!(&end, FrameRead::Bad { offset, reason, .. }
                if *offset == frames_end && reason.contains(&format!("offset {}", frames_end + 69_000))),
            "{end:?}"
        );
    }

    /// A reader of a live log that met the zero header just before an append landed sees the
    /// log end there, not damage.
    #[test]
    fn an_append_that_lands_while_the_zero_tail_is_read_is_not_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(segment_name(0));
        let mut first = Vec::new();
        frame(b"hello", &mut first);
        let mut bytes = first.clone();
        bytes.resize(first.len() + 300_000, 0);
        std::fs::write(&p, &bytes).unwrap();
        let mut r = FrameReader::open(&p).unwrap();
        assert!(matches!(r.next_frame().unwrap(), FrameRead::Frame { .. }));
        // The reader's buffer now holds the zeros where the next header is due; a large batch is
        // written there, reaching past the buffer.
        let mut batch = Vec::new();
        while batch.len() < 100_000 {
            frame(&[b'x'; 1_000], &mut batch);
        }
        let mut f = OpenOptions::new().write(true).open(&p).unwrap();
        f.seek(SeekFrom::Start(first.len() as u64)).unwrap();
        f.write_all(&batch).unwrap();
        assert!(matches!(r.next_frame().unwrap(), FrameRead::End));
        // Read again, the batch is there.
        let mut r = FrameReader::open(&p).unwrap();
        let mut n = 0;
        while let FrameRead::Frame { .. } = r.next_frame().unwrap() {
            n += 1;
        }
        assert_eq!(n, 1 + batch.len() / 1_008);
    }

    #[cfg(unix)]
    #[test]
    fn prepared_zeros_are_written_over_from_the_start_and_preparing_stops_when_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spare.zeroing");
        let len = 2 * ZERO_STEP as u64 + 100;
        let cancel = AtomicBool::new(false);
        FsStorage.prepare_zeroed(&path, len, &cancel).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, len);
        assert!(bytes.iter().all(|&b| b == 0));

        let mut seg = FsStorage.open_segment(&path, 0).unwrap();
        let mut buf = Vec::new();
        frame(b"first record", &mut buf);
        seg.append(&buf).unwrap();
        seg.sync().unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            len,
            "written over, not appended"
        );
        // Reopened after its frames, it goes on where they end.
        let mut seg = FsStorage.open_segment(&path, buf.len() as u64).unwrap();
        let mut second = Vec::new();
        frame(b"second record", &mut second);
        seg.append(&second).unwrap();
        seg.sync().unwrap();
        let mut r = FrameReader::open(&path).unwrap();
        assert!(
            matches!(r.next_frame().unwrap(), FrameRead::Frame { payload, .. } if payload == b"first record")
        );
        assert!(
            matches!(r.next_frame().unwrap(), FrameRead::Frame { payload, .. } if payload == b"second record")
        );
        assert!(matches!(r.next_frame().unwrap(), FrameRead::End));

        cancel.store(true, Ordering::Relaxed);
        let other = dir.path().join("other");
        let err = FsStorage.prepare_zeroed(&other, len, &cancel).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Interrupted);
        assert!(std::fs::metadata(&other).unwrap().len() < len);
    }

    #[test]
    fn the_fetcher_reads_checked_frames_and_reports_pruned_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        frame(b"hello", &mut buf);
        frame(b"world", &mut buf);
        std::fs::write(dir.path().join(segment_name(10)), &buf).unwrap();
        let mut f = FrameFetcher::default();
        assert_eq!(f.read(dir.path(), 10, 13).unwrap().unwrap(), b"world");
        assert_eq!(f.read(dir.path(), 10, 0).unwrap().unwrap(), b"hello");
        assert!(f.read(dir.path(), 0, 0).unwrap().is_none());
        // A wrong offset or a changed byte is an error, never a wrong record.
        assert!(f.read(dir.path(), 10, 1).is_err());
        buf[10] ^= 1;
        std::fs::write(dir.path().join(segment_name(20)), &buf).unwrap();
        assert!(f.read(dir.path(), 20, 0).is_err());
    }

    #[test]
    fn frames_round_trip_and_torn_tails_are_detected() {
        let (_dir, p, mut buf) = hello_world();
        std::fs::write(&p, &buf[..buf.len() - 2]).unwrap();
        let mut r = FrameReader::open(&p).unwrap();
        assert!(
            matches!(r.next_frame().unwrap(), FrameRead::Frame { offset: 0, ref payload } if payload == b"hello")
        );
        assert!(matches!(
            r.next_frame().unwrap(),
            FrameRead::Bad { offset: 13, .. }
        ));
        buf[FRAME_HEADER] ^= 1;
        std::fs::write(&p, &buf).unwrap();
        let mut r = FrameReader::open(&p).unwrap();
        assert!(
            matches!(r.next_frame().unwrap(), FrameRead::Bad { offset: 0, ref reason, .. } if reason == "checksum mismatch")
        );
    }

    #[test]
    fn segments_are_listed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for s in [300u64, 0, 20] {
            std::fs::write(dir.path().join(segment_name(s)), b"").unwrap();
        }
        std::fs::write(dir.path().join("junk.seg"), b"").unwrap();
        let l = list_segments(dir.path()).unwrap();
        assert_eq!(
            l.iter().map(|s| s.first_seq).collect::<Vec<_>>(),
            vec![0, 20, 300]
        );
    }

    /// Segments 0 (records 0..30), 30 (30..40) and 40 (40..100), each payload its record's
    /// sequence number as text.
    fn three_segments(dir: &Path) -> Vec<SegmentInfo> {
        for (first, end) in [(0u64, 30u64), (30, 40), (40, 100)] {
            let mut bytes = Vec::new();
            for seq in first..end {
                frame(seq.to_string().as_bytes(), &mut bytes);
            }
            std::fs::write(dir.join(segment_name(first)), &bytes).unwrap();
        }
        list_segments(dir).unwrap()
    }

    fn read(cursor: &mut RecordCursor<'_>, from: u64, to: u64) -> Vec<u64> {
        let mut seen = Vec::new();
        cursor
            .for_each(from, to, |seq, _, _, payload| {
                assert_eq!(std::str::from_utf8(payload).unwrap(), seq.to_string());
                seen.push(seq);
                Ok(())
            })
            .unwrap();
        seen
    }

    #[test]
    fn a_record_cursor_reads_on_from_where_it_stopped_and_finds_any_other_start() {
        let dir = tempfile::tempdir().unwrap();
        let segments = three_segments(dir.path());
        let mut cursor = RecordCursor::new(&segments);
        assert_eq!(read(&mut cursor, 0, 25), (0..25).collect::<Vec<_>>());
        // Across two segment boundaries, on from record 25.
        assert_eq!(read(&mut cursor, 25, 45), (25..45).collect::<Vec<_>>());
        // Reading on needs no new open: segment 40's file is already open (a tile rebuild reads
        // each record once; opening the segment again would read its first records again).
        std::fs::remove_file(&segments[2].path).unwrap();
        assert_eq!(read(&mut cursor, 45, 60), (45..60).collect::<Vec<_>>());
        // Backwards or ahead: found from the segment that holds the record.
        assert_eq!(read(&mut cursor, 10, 12), [10, 11]);
        assert_eq!(read(&mut cursor, 33, 35), [33, 34]);
        // Beyond the last record: what there is.
        three_segments(dir.path());
        assert_eq!(read(&mut cursor, 95, 120), (95..100).collect::<Vec<_>>());
        assert!(read(&mut cursor, 7, 7).is_empty());
        assert_eq!(
            read(&mut RecordCursor::new(&segments), 0, 100),
            (0..100).collect::<Vec<_>>()
        );
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_file_batch_replaces_every_file_on_commit_and_nothing_before() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"old a").unwrap();
        let mut batch = FileBatch::default();
        batch.add(&dir.path().join("a"), b"new a").unwrap();
        batch.add(&dir.path().join("sub/b"), b"first b").unwrap();
        batch.add(&dir.path().join("sub/b"), b"second b").unwrap();
        assert_eq!(batch.len(), 2);
        // Not yet committed: the old contents are still what a reader sees.
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"old a");
        assert!(!dir.path().join("sub/b").exists());
        batch.commit().unwrap();
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"new a");
        assert_eq!(
            std::fs::read(dir.path().join("sub/b")).unwrap(),
            b"second b"
        );
        assert_eq!(names_in(dir.path()), ["a", "sub"]);
        assert_eq!(names_in(&dir.path().join("sub")), ["b"]);
    }

    #[test]
    fn a_file_batch_that_fails_or_is_dropped_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("plain"), b"a file, not a directory").unwrap();
        let mut batch = FileBatch::default();
        batch.add(&dir.path().join("a"), b"a").unwrap();
        assert!(batch.add(&dir.path().join("plain/b"), b"b").is_err());
        drop(batch);
        assert_eq!(names_in(dir.path()), ["plain"]);

        let mut batch = FileBatch::default();
        batch.add(&dir.path().join("c"), b"c").unwrap();
        // The rename fails (a directory stands where the file goes): the rest is cleaned up.
        std::fs::create_dir_all(dir.path().join("d/inside")).unwrap();
        batch.add(&dir.path().join("d"), b"d").unwrap();
        batch.add(&dir.path().join("e"), b"e").unwrap();
        assert!(batch.commit().is_err());
        assert_eq!(names_in(dir.path()), ["c", "d", "plain"]);
        assert!(dir.path().join("d").is_dir());
    }
}
