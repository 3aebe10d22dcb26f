//! Structured, paginated reads for the security officer console: newest-first pages of records
//! with filters, one record by index (with its stored bytes, for proofs), and per-bucket counts for
//! charts. Read-only; safe beside a live writer (a partial frame at the very end is where the writer
//! is appending, and ends a scan instead of failing it).
//!
//! Subject and consumer filters go through the index ([`crate::index::lookup`]) plus the records
//! after the index watermark, so they read only the matching records. Other filters scan segments
//! from the newest backwards and stop once a page is full, or once a scan budget is spent (the
//! caller then gets a cursor to continue from); with a time window they skip the segments that
//! cannot hold it, as `tollbu audit query` does. Records are matched on a borrowed, partial decode;
//! only records that are returned are fully decoded.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use serde::Deserialize;
use time::OffsetDateTime;

use crate::error::AuditError;
use crate::index::{IndexKind, lookup, watermark};
use crate::record::{Decision, StoredRecord, decode, parse_time};
use crate::segment::{FrameFetcher, FrameRead, FrameReader, SegmentInfo, list_segments};

use super::query::segments_in_window;

/// Filters; every one given must match. Times are compared as instants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Subject PSEUDONYM (the caller hashes a national id with the log's key first).
    pub subject: Option<String>,
    pub consumer: Option<String>,
    pub service: Option<String>,
    pub decision: Option<Decision>,
    /// A reason code, or a family of them: `invalid_token` matches `invalid_token` and every
    /// `invalid_token.<token_error>`.
    pub reason: Option<String>,
    /// Inclusive.
    pub from: Option<OffsetDateTime>,
    /// Exclusive.
    pub to: Option<OffsetDateTime>,
}

/// One page of records, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub records: Vec<StoredRecord>,
    /// Pass as `before` to get the next (older) page; `None` when nothing older matches.
    pub next_before: Option<u64>,
    /// Records read to answer.
    pub scanned: u64,
    /// True when the scan budget ran out before the page filled: `next_before` continues the scan.
    pub partial: bool,
    /// Index hits that pointed at records removed by retention.
    pub pruned: u64,
    /// Records in the range read that could not be read (altered, damaged or missing below the
    /// signed checkpoint) and are therefore not on the page; `verify` names them.
    pub unreadable: u64,
}

/// Counts of one time bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bucket {
    pub total: u64,
    pub allowed: u64,
    pub denied: u64,
    pub errors: u64,
    /// Requests per consumer (`-` for an unidentified caller).
    pub by_consumer: BTreeMap<String, u64>,
    /// Denied and failed requests per reason code.
    pub by_reason: BTreeMap<String, u64>,
}

/// Counts per fixed-width time bucket over `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    pub from: OffsetDateTime,
    pub bucket_secs: i64,
    pub buckets: Vec<Bucket>,
    pub scanned: u64,
    /// True when the scan budget ran out: older buckets may be undercounted.
    pub partial: bool,
}

/// The fields filters and charts need, borrowed from the stored bytes.
#[derive(Deserialize)]
struct Slim<'a> {
    seq: u64,
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow)]
    consumer: Option<Cow<'a, str>>,
    #[serde(borrow)]
    service: Cow<'a, str>,
    #[serde(borrow)]
    subject: Option<Cow<'a, str>>,
    decision: Decision,
    #[serde(borrow)]
    reason: Option<Cow<'a, str>>,
}

impl Filter {
    /// True when no filter is set (every record matches).
    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    fn matches(&self, r: &Slim<'_>) -> bool {
        let eq = |want: &Option<String>, have: &Option<Cow<'_, str>>| match want {
            None => true,
            Some(w) => have.as_deref() == Some(w.as_str()),
        };
        if !eq(&self.subject, &r.subject) || !eq(&self.consumer, &r.consumer) {
            return false;
        }
        if let Some(want) = &self.reason
            && !r
                .reason
                .as_deref()
                .is_some_and(|have| in_family(have, want))
        {
            return false;
        }
        if self.service.as_deref().is_some_and(|s| s != r.service) {
            return false;
        }
        if self.decision.is_some_and(|d| d != r.decision) {
            return false;
        }
        if self.from.is_some() || self.to.is_some() {
            let Ok(t) = parse_time(&r.time) else {
                return false;
            };
            if self.from.is_some_and(|f| t < f) || self.to.is_some_and(|to| t >= to) {
                return false;
            }
        }
        true
    }
}

/// `reason` is `family` itself or one of its sub-codes (`family.sub`), as the gateway records a
/// refused token's `token_error` (`invalid_token.expired`).
fn in_family(reason: &str, family: &str) -> bool {
    reason
        .strip_prefix(family)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

fn slim(bytes: &[u8]) -> Result<Slim<'_>, AuditError> {
    serde_json::from_slice(bytes)
        .map_err(|e| AuditError::Corrupt(format!("record is not valid json: {e}")))
}

/// Reads every readable frame of one segment in order, calling `f(seq, payload)`, and returns how
/// many records it could not read. A complete frame whose checksum fails is an altered record: it
/// is skipped (verification names it) and counted, and the records around it stay readable. At the
/// end of the active segment, a bad or missing frame beyond the `signed` checkpoint's records is a
/// writer mid-append and ends the read; below it, the records up to `signed` are counted as
/// unreadable. Elsewhere a short frame is an error.
fn read_segment(
    seg: &SegmentInfo,
    last: bool,
    signed: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), AuditError>,
) -> Result<u64, AuditError> {
    let mut r = FrameReader::open(&seg.path)?;
    if last {
        // The active segment's zero tail is not read through on every page.
        r = r.zero_tail_unchecked();
    }
    let mut seq = seg.first_seq;
    let mut unreadable = 0;
    let missing_below_signed = |seq: u64| if last { signed.saturating_sub(seq) } else { 0 };
    loop {
        match r.next_frame().map_err(AuditError::io(&seg.path))? {
            FrameRead::Frame { payload, .. } => {
                f(seq, &payload)?;
                seq += 1;
            }
            FrameRead::End => return Ok(unreadable + missing_below_signed(seq)),
            FrameRead::Bad { .. } if last && seq >= signed => return Ok(unreadable),
            FrameRead::Bad {
                payload: Some(_), ..
            } => {
                unreadable += 1;
                seq += 1;
            }
            FrameRead::Bad { .. } if last => return Ok(unreadable + missing_below_signed(seq)),
            FrameRead::Bad { offset, reason, .. } => {
                return Err(AuditError::Corrupt(format!(
                    "`{}` at offset {offset}: {reason}",
                    seg.path.display()
                )));
            }
        }
    }
}

/// Newest-first page of records matching `filter` with `seq < before` (all when `None`), at most
/// `limit` of them. A scan without subject or consumer stops at a segment boundary once
/// `scan_budget` records were read.
pub fn page(
    dir: &Path,
    filter: &Filter,
    before: Option<u64>,
    limit: usize,
    scan_budget: u64,
) -> Result<Page, AuditError> {
    let limit = limit.max(1);
    let segments = list_segments(&dir.join("segments"))?;
    let signed = super::checkpoint_size(dir).unwrap_or(0);
    if filter.subject.is_some() || filter.consumer.is_some() {
        indexed_page(dir, &segments, signed, filter, before, limit)
    } else {
        scanned_page(&segments, signed, filter, before, limit, scan_budget)
    }
}

fn indexed_page(
    dir: &Path,
    segments: &[SegmentInfo],
    signed: u64,
    filter: &Filter,
    before: Option<u64>,
    limit: usize,
) -> Result<Page, AuditError> {
    let before = before.unwrap_or(u64::MAX);
    let (kind, key) = match (&filter.subject, &filter.consumer) {
        (Some(s), _) => (IndexKind::Subject, s),
        (None, Some(c)) => (IndexKind::Consumer, c),
        (None, None) => return Ok(Page::default()),
    };
    let mark = watermark(dir);
    let mut page = Page::default();
    // Records after the watermark are not indexed yet: scan them (at most one checkpoint interval).
    let mut tail: Vec<(u64, Vec<u8>)> = Vec::new();
    let start = segments
        .partition_point(|s| s.first_seq <= mark.seq)
        .saturating_sub(1);
    for (i, seg) in segments.iter().enumerate().skip(start) {
        let last = i + 1 == segments.len();
        page.unreadable += read_segment(seg, last, signed, |seq, bytes| {
            if seq >= mark.seq && seq < before {
                page.scanned += 1;
                match slim(bytes) {
                    Ok(r) if filter.matches(&r) => tail.push((seq, bytes.to_vec())),
                    Ok(_) => {}
                    Err(_) => page.unreadable += 1,
                }
            }
            Ok(())
        })?;
    }
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut more = false;
    for (seq, bytes) in tail.into_iter().rev() {
        if out.len() == limit {
            more = true;
            break;
        }
        out.push((seq, bytes));
    }
    if !more {
        let seg_dir = dir.join("segments");
        let locs = lookup(dir, kind, key)?;
        let mut fetcher = FrameFetcher::default();
        for loc in locs
            .into_iter()
            .rev()
            .filter(|l| l.seq < mark.seq && l.seq < before)
        {
            let Some(bytes) = fetcher.read(&seg_dir, loc.segment, loc.offset)? else {
                page.pruned += 1;
                continue;
            };
            page.scanned += 1;
            let Ok(rec) = slim(&bytes) else {
                page.unreadable += 1;
                continue;
            };
            if rec.seq != loc.seq || !filter.matches(&rec) {
                continue;
            }
            if out.len() == limit {
                more = true;
                break;
            }
            out.push((loc.seq, bytes));
        }
    }
    page.next_before = if more {
        out.last().map(|(s, _)| *s)
    } else {
        None
    };
    keep_decodable(&mut page, &out);
    Ok(page)
}

fn scanned_page(
    segments: &[SegmentInfo],
    signed: u64,
    filter: &Filter,
    before: Option<u64>,
    limit: usize,
    scan_budget: u64,
) -> Result<Page, AuditError> {
    let before = before.unwrap_or(u64::MAX);
    let mut page = Page::default();
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut more = false;
    let last_index = segments.len().saturating_sub(1);
    let from_stop = filter.from.map(|f| f - time::Duration::minutes(5));
    // A page of an earlier window does not read the segments written after it.
    let window = segments_in_window(segments, filter.from, filter.to);
    for (i, seg) in segments.iter().enumerate().rev() {
        if i < window.start {
            break;
        }
        if seg.first_seq >= before || i >= window.end {
            continue;
        }
        // Keep only the newest `want` matches of this segment (plus one to know if more exist).
        let want = limit + 1 - out.len();
        let mut ring: VecDeque<(u64, Vec<u8>)> = VecDeque::with_capacity(want.min(4096));
        let mut newest_time: Option<String> = None;
        let mut unreadable_json = 0;
        page.unreadable += read_segment(seg, i == last_index, signed, |seq, bytes| {
            if seq >= before {
                return Ok(());
            }
            page.scanned += 1;
            let keep = if filter.is_empty() {
                true
            } else {
                let Ok(rec) = slim(bytes) else {
                    unreadable_json += 1;
                    return Ok(());
                };
                if from_stop.is_some() && newest_time.as_deref() < Some(&*rec.time) {
                    newest_time = Some(rec.time.to_string());
                }
                filter.matches(&rec)
            };
            if keep {
                if ring.len() == want {
                    ring.pop_front();
                }
                ring.push_back((seq, bytes.to_vec()));
            }
            Ok(())
        })?;
        page.unreadable += unreadable_json;
        for item in ring.into_iter().rev() {
            if out.len() == limit {
                more = true;
                break;
            }
            out.push(item);
        }
        if more {
            break;
        }
        // Records are appended in (nearly) time order: a whole segment older than `from`, with a
        // margin for requests that took long to record, means every earlier one is too.
        if let (Some(stop), Some(newest)) = (from_stop, &newest_time)
            && parse_time(newest).is_ok_and(|t| t < stop)
        {
            break;
        }
        if page.scanned >= scan_budget && i > 0 {
            page.partial = true;
            page.next_before = Some(seg.first_seq);
            break;
        }
    }
    if more {
        page.next_before = out.last().map(|(s, _)| *s);
    }
    keep_decodable(&mut page, &out);
    Ok(page)
}

/// Records that do not decode canonically are left out of the page and counted; verification
/// reports them.
fn keep_decodable(page: &mut Page, found: &[(u64, Vec<u8>)]) {
    for (_, bytes) in found {
        match decode(bytes) {
            Ok(record) => page.records.push(record),
            Err(_) => page.unreadable += 1,
        }
    }
}

/// Record `seq` and its stored bytes (the leaf of the Merkle tree), or `None` when the log does not
/// hold it (beyond the end, or removed by retention).
pub fn record_at(dir: &Path, seq: u64) -> Result<Option<(StoredRecord, Vec<u8>)>, AuditError> {
    let segments = list_segments(&dir.join("segments"))?;
    let i = segments.partition_point(|s| s.first_seq <= seq);
    let Some(index) = i.checked_sub(1) else {
        return Ok(None);
    };
    let seg = &segments[index];
    let mut found = None;
    let signed = super::checkpoint_size(dir).unwrap_or(0);
    read_segment(seg, i == segments.len(), signed, |at, bytes| {
        if at == seq && found.is_none() {
            found = Some(bytes.to_vec());
        }
        Ok(())
    })?;
    match found {
        Some(bytes) => Ok(Some((decode(&bytes)?, bytes))),
        None => Ok(None),
    }
}

/// Counts records with `from <= time < to` in buckets of `bucket_secs`, scanning from the newest
/// segment backwards until the records are older than `from` or `scan_budget` is spent.
pub fn histogram(
    dir: &Path,
    from: OffsetDateTime,
    to: OffsetDateTime,
    bucket_secs: i64,
    scan_budget: u64,
) -> Result<Histogram, AuditError> {
    let bucket_secs = bucket_secs.max(1);
    let span = (to - from).whole_seconds().max(0);
    let n = usize::try_from((span + bucket_secs - 1) / bucket_secs).unwrap_or(0);
    let mut hist = Histogram {
        from,
        bucket_secs,
        buckets: vec![Bucket::default(); n.min(10_000)],
        scanned: 0,
        partial: false,
    };
    let stop = from - time::Duration::minutes(5);
    let segments = list_segments(&dir.join("segments"))?;
    let signed = super::checkpoint_size(dir).unwrap_or(0);
    let last_index = segments.len().saturating_sub(1);
    let window = segments_in_window(&segments, Some(from), Some(to));
    for (i, seg) in segments.iter().enumerate().rev() {
        if i < window.start {
            break;
        }
        if i >= window.end {
            continue;
        }
        let mut newest: Option<OffsetDateTime> = None;
        read_segment(seg, i == last_index, signed, |_, bytes| {
            hist.scanned += 1;
            let Ok(rec) = slim(bytes) else {
                return Ok(());
            };
            let Ok(t) = parse_time(&rec.time) else {
                return Ok(());
            };
            if newest.is_none_or(|n| t > n) {
                newest = Some(t);
            }
            if t < from || t >= to {
                return Ok(());
            }
            let b = usize::try_from((t - from).whole_seconds() / bucket_secs).unwrap_or(usize::MAX);
            let Some(bucket) = hist.buckets.get_mut(b) else {
                return Ok(());
            };
            bucket.total += 1;
            match rec.decision {
                Decision::Allow => bucket.allowed += 1,
                Decision::Deny => bucket.denied += 1,
                Decision::Error => bucket.errors += 1,
            }
            *bucket
                .by_consumer
                .entry(rec.consumer.as_deref().unwrap_or("-").to_owned())
                .or_default() += 1;
            if rec.decision != Decision::Allow {
                *bucket
                    .by_reason
                    .entry(rec.reason.as_deref().unwrap_or("-").to_owned())
                    .or_default() += 1;
            }
            Ok(())
        })?;
        if newest.is_some_and(|t| t < stop) {
            break;
        }
        if hist.scanned >= scan_budget && i > 0 {
            hist.partial = true;
            break;
        }
    }
    Ok(hist)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::record::{Record, encode};
    use crate::segment::{frame, segment_name};

    fn rec(i: u64, minute: u64) -> Record {
        Record {
            time: format!("2026-01-02T03:{minute:02}:00.000Z"),
            request_id: format!("r{i}"),
            consumer: Some(format!("0192:31000000{}", i % 3)),
            service: if i.is_multiple_of(2) {
                "population"
            } else {
                "income"
            }
            .into(),
            operation: "read".into(),
            subject: Some(format!("{:064x}", i % 5)),
            decision: if i.is_multiple_of(4) {
                Decision::Deny
            } else {
                Decision::Allow
            },
            reason: i.is_multiple_of(4).then(|| "no_grant".to_owned()),
            ..Record::default()
        }
    }

    /// Writes `n` records into two segments (no index: every query scans the tail).
    fn log(n: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let seg = dir.path().join("segments");
        std::fs::create_dir_all(&seg).unwrap();
        let split = n / 2;
        for (first, range) in [(0, 0..split), (split, split..n)] {
            let mut buf = Vec::new();
            for i in range {
                frame(&encode(i, &rec(i, i % 60)).unwrap(), &mut buf);
            }
            std::fs::write(seg.join(segment_name(first)), buf).unwrap();
        }
        dir
    }

    #[test]
    fn pages_are_newest_first_and_continue_across_segments() {
        let dir = log(100);
        let p = page(dir.path(), &Filter::default(), None, 30, u64::MAX).unwrap();
        let seqs: Vec<u64> = p.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (70..100).rev().collect::<Vec<_>>());
        assert_eq!(p.next_before, Some(70));
        let mut all = seqs;
        let mut cursor = p.next_before;
        while let Some(before) = cursor {
            let p = page(dir.path(), &Filter::default(), Some(before), 30, u64::MAX).unwrap();
            all.extend(p.records.iter().map(|r| r.seq));
            cursor = p.next_before;
        }
        assert_eq!(all, (0..100).rev().collect::<Vec<_>>());
    }

    #[test]
    fn filters_match_every_field_given() {
        let dir = log(100);
        let f = Filter {
            service: Some("population".into()),
            decision: Some(Decision::Deny),
            reason: Some("no_grant".into()),
            ..Filter::default()
        };
        let p = page(dir.path(), &f, None, 1000, u64::MAX).unwrap();
        assert_eq!(p.records.len(), 25);
        assert!(p.records.iter().all(|r| r.seq % 4 == 0));
        assert_eq!(p.next_before, None);
        let subject = Filter {
            subject: Some(format!("{:064x}", 3)),
            ..Filter::default()
        };
        let p = page(dir.path(), &subject, None, 5, u64::MAX).unwrap();
        let seqs: Vec<u64> = p.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![98, 93, 88, 83, 78]);
        assert_eq!(p.next_before, Some(78));
        let timed = Filter {
            from: Some(parse_time("2026-01-02T03:10:00Z").unwrap()),
            to: Some(parse_time("2026-01-02T03:12:00Z").unwrap()),
            ..Filter::default()
        };
        let p = page(dir.path(), &timed, None, 100, u64::MAX).unwrap();
        let seqs: Vec<u64> = p.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![71, 70, 11, 10]);
    }

    /// An officer filtering on `invalid_token` sees every refused token whatever its
    /// `token_error`; on `invalid_token.expired` only the expired ones.
    #[test]
    fn a_reason_filter_matches_the_code_and_its_sub_codes() {
        let dir = tempfile::tempdir().unwrap();
        let seg = dir.path().join("segments");
        std::fs::create_dir_all(&seg).unwrap();
        let reasons = [
            "invalid_token.expired",
            "invalid_token.certificate_mismatch",
            "invalid_tokens",
            "no_grant",
            "invalid_token.expired",
        ];
        let mut buf = Vec::new();
        for (i, reason) in (0u64..).zip(reasons) {
            let record = Record {
                reason: Some(reason.to_owned()),
                decision: Decision::Deny,
                ..rec(i, 0)
            };
            frame(&encode(i, &record).unwrap(), &mut buf);
        }
        std::fs::write(seg.join(segment_name(0)), buf).unwrap();
        let seqs = |reason: &str| -> Vec<u64> {
            let f = Filter {
                reason: Some(reason.into()),
                ..Filter::default()
            };
            let p = page(dir.path(), &f, None, 100, u64::MAX).unwrap();
            p.records.iter().map(|r| r.seq).collect()
        };
        assert_eq!(seqs("invalid_token"), vec![4, 1, 0]);
        assert_eq!(seqs("invalid_token.expired"), vec![4, 0]);
        assert_eq!(seqs("invalid_token.exp"), Vec::<u64>::new());
        assert_eq!(seqs("no_grant"), vec![3]);
        assert_eq!(seqs("invalid"), Vec::<u64>::new());
    }

    #[test]
    fn a_spent_budget_returns_a_cursor() {
        let dir = log(100);
        let f = Filter {
            consumer: None,
            reason: Some("nothing-has-this".into()),
            ..Filter::default()
        };
        let p = page(dir.path(), &f, None, 10, 10).unwrap();
        assert!(p.partial);
        assert_eq!(p.next_before, Some(50));
        assert!(p.records.is_empty());
    }

    #[test]
    fn record_at_finds_records_in_any_segment() {
        let dir = log(10);
        for seq in [0, 4, 5, 9] {
            let (r, bytes) = record_at(dir.path(), seq).unwrap().unwrap();
            assert_eq!(r.seq, seq);
            assert_eq!(bytes, encode(seq, &rec(seq, seq % 60)).unwrap());
        }
        assert!(record_at(dir.path(), 10).unwrap().is_none());
    }

    #[test]
    fn histogram_counts_by_bucket_consumer_and_reason() {
        let dir = log(120);
        let from = parse_time("2026-01-02T03:00:00Z").unwrap();
        let to = parse_time("2026-01-02T04:00:00Z").unwrap();
        let h = histogram(dir.path(), from, to, 600, u64::MAX).unwrap();
        assert_eq!(h.buckets.len(), 6);
        assert_eq!(h.buckets.iter().map(|b| b.total).sum::<u64>(), 120);
        assert_eq!(h.buckets[0].total, 20);
        let denied: u64 = h.buckets.iter().map(|b| b.denied).sum();
        assert_eq!(denied, 30);
        let no_grant: u64 = h
            .buckets
            .iter()
            .map(|b| b.by_reason.get("no_grant").copied().unwrap_or(0))
            .sum();
        assert_eq!(no_grant, 30);
        assert_eq!(h.buckets[0].by_consumer.len(), 3);
    }
}
