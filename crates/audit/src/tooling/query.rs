//! Queries by subject, consumer, service, decision and time; the citizen's report.
//!
//! Subject and consumer queries read one index bucket (see [`crate::index`]) and then only the
//! matching records; records newer than the index watermark (at most 65,536 records, or about
//! 30 s worth) are scanned. Other queries scan the log: with a time window, only the segments that
//! can hold it, and decoding only records that contain the strings the query compares.

use std::fmt::Write as _;
use std::path::Path;

use time::OffsetDateTime;

use super::Report;
use crate::error::AuditError;
use crate::index::{IndexKind, Watermark, lookup, watermark};
use crate::log::retention::{DISORDER_SLACK, first_record_time};
use crate::pseudonym::Pseudonymiser;
use crate::record::{Decision, StoredRecord, decode, parse_time, parse_time_utc};
use crate::segment::{FrameFetcher, FrameRead, FrameReader, SegmentInfo, list_segments};

/// Filters; all given ones must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// National identity number in clear; hashed with the pseudonym key before use, never stored.
    pub subject: Option<String>,
    pub consumer: Option<String>,
    pub service: Option<String>,
    pub decision: Option<Decision>,
    /// RFC 3339, inclusive.
    pub from: Option<String>,
    /// RFC 3339, exclusive.
    pub to: Option<String>,
    /// How subject and consumer queries find their records.
    pub lookup: Lookup,
}

/// How a subject or consumer query finds its records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Lookup {
    /// The index bucket, then the records after its watermark; refuses a damaged bucket.
    #[default]
    Index,
    /// Every record, without the index: a complete answer while the index is damaged (before
    /// `tollbu audit reindex` can run, which needs the gateway stopped), at the cost of a pass
    /// over the whole log.
    Scan,
}

#[derive(Default)]
struct Filter {
    pseudonym: Option<String>,
    consumer: Option<String>,
    service: Option<String>,
    decision: Option<Decision>,
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
}

impl Filter {
    /// What a record's stored bytes must contain to match, for a scan to skip decoding the rest:
    /// each string the filter compares, as the record's JSON writes it (`"value"`), where that is
    /// the value verbatim (nothing JSON escapes; an escaped value is left to [`Filter::matches`]).
    /// The decision is written as `"decision":"deny"`, and no other field is written that way.
    fn needles(&self) -> Vec<memchr::memmem::Finder<'static>> {
        let values = [&self.pseudonym, &self.consumer, &self.service]
            .into_iter()
            .flatten()
            .filter(|v| !v.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20))
            .map(|v| format!("\"{v}\""));
        let decision = self
            .decision
            .map(|d| format!("\"decision\":\"{}\"", d.as_str()));
        values
            .chain(decision)
            .map(|n| memchr::memmem::Finder::new(n.as_bytes()).into_owned())
            .collect()
    }

    /// The time window as stored times are written, for [`StoredWindow::plainly_outside`].
    fn stored_window(&self) -> StoredWindow {
        let cut = |t: &Option<OffsetDateTime>| t.map(crate::record::Record::timestamp);
        StoredWindow {
            from: cut(&self.from),
            to: cut(&self.to),
        }
    }

    fn matches(&self, r: &StoredRecord) -> bool {
        let rec = &r.record;
        let eq = |want: &Option<String>, have: &Option<String>| want.is_none() || want == have;
        if !eq(&self.pseudonym, &rec.subject) || !eq(&self.consumer, &rec.consumer) {
            return false;
        }
        if self.service.as_ref().is_some_and(|s| *s != rec.service)
            || self.decision.is_some_and(|d| d != rec.decision)
        {
            return false;
        }
        if self.from.is_some() || self.to.is_some() {
            let Ok(t) = parse_time(&rec.time) else {
                return false;
            };
            if self.from.is_some_and(|f| t < f) || self.to.is_some_and(|to| t >= to) {
                return false;
            }
        }
        true
    }
}

/// Matching records with their stored bytes, oldest first.
type Found = Vec<(StoredRecord, Vec<u8>)>;

/// A subject as the gateway pseudonymised it: a national identity (or D-) number of 11 digits or
/// an organisation number of 9, spaces allowed. Anything else would be hashed into a pseudonym that
/// matches nothing, and the answer would be "no requests".
fn subject_id(given: &str) -> Result<String, AuditError> {
    let digits: String = given.chars().filter(|c| !c.is_whitespace()).collect();
    if matches!(digits.len(), 9 | 11) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(digits)
    } else {
        Err(AuditError::BadRequest(format!(
            "subject `{given}` is not a national identity number (11 digits) or an organisation number (9 digits)"
        )))
    }
}

/// Matching records, and how many index hits pointed at pruned records.
fn find(dir: &Path, q: &Query, pseudonym_key: Option<&Path>) -> Result<(Found, u64), AuditError> {
    let mut found = Vec::new();
    let pruned = find_each(dir, q, pseudonym_key, |rec, bytes| {
        found.push((rec.clone(), bytes.to_vec()));
        Ok(())
    })?;
    Ok((found, pruned))
}

/// Hands each matching record to `emit`, oldest first, as it is found (a query matching millions
/// of records is never held whole), and returns how many index hits pointed at pruned records.
fn find_each(
    dir: &Path,
    q: &Query,
    pseudonym_key: Option<&Path>,
    mut emit: impl FnMut(&StoredRecord, &[u8]) -> Result<(), AuditError>,
) -> Result<u64, AuditError> {
    crate::log::require_log(dir)?;
    let pseudonym = match &q.subject {
        Some(s) => {
            let key = pseudonym_key.ok_or_else(|| {
                AuditError::BadRequest("a subject query needs the pseudonym key file".into())
            })?;
            let subject = subject_id(s)?;
            let pseudonymiser = Pseudonymiser::from_key_file(key)?;
            crate::pseudonym::ensure_key_matches_log(dir, &pseudonymiser.key_check())?;
            Some(pseudonymiser.pseudonym(&subject))
        }
        None => None,
    };
    if let Some(consumer) = &q.consumer
        && !consumer.contains(':')
    {
        return Err(AuditError::BadRequest(format!(
            "consumer `{consumer}` names no scheme: organisations are recorded as `0192:<organisation number>`, officers as `console:<name>`"
        )));
    }
    // In UTC, as records store times; a time whose UTC form lies beyond year 9999 is refused.
    let parse = |t: &Option<String>, what: &str| {
        t.as_deref()
            .map(|t| {
                parse_time_utc(t).ok_or_else(|| {
                    AuditError::BadRequest(format!(
                        "{what} `{t}` is not an RFC 3339 time such as 2026-06-01T00:00:00Z"
                    ))
                })
            })
            .transpose()
    };
    let (from, to) = (parse(&q.from, "from")?, parse(&q.to, "to")?);
    if let (Some(from), Some(to)) = (from, to)
        && from >= to
    {
        return Err(AuditError::BadRequest("`from` must be before `to`".into()));
    }
    let filter = Filter {
        pseudonym,
        consumer: q.consumer.clone(),
        service: q.service.clone(),
        decision: q.decision,
        from,
        to,
    };
    let seg_dir = dir.join("segments");
    let segments = list_segments(&seg_dir)?;
    let mut pruned = 0u64;
    // The watermark is read before the buckets: a flush finishing in between then only adds
    // entries the tail scan also covers, instead of moving the watermark past entries not yet seen.
    let wm = watermark(dir);
    let indexed = match (q.lookup, &filter.pseudonym, &filter.consumer) {
        (Lookup::Scan, _, _) => None,
        (Lookup::Index, Some(p), _) => Some(lookup(dir, IndexKind::Subject, p)?),
        (Lookup::Index, None, Some(c)) => Some(lookup(dir, IndexKind::Consumer, c)?),
        (Lookup::Index, None, None) => None,
    };
    // Records go out in sequence order as found, so none can be placed later: the index's hits
    // come sorted, and the tail scan after its watermark follows. A record the scan finds below
    // one already written is skipped when the index listed it (a watermark behind the log lists
    // records twice); any other would be left out or misplaced, so the query fails instead.
    let mut next_seq = 0u64;
    let mut emit_in_order = |rec: &StoredRecord, bytes: &[u8]| {
        if rec.seq < next_seq {
            let listed = indexed
                .as_ref()
                .is_some_and(|locs| locs.binary_search_by_key(&rec.seq, |l| l.seq).is_ok());
            if listed {
                return Ok(());
            }
            return Err(AuditError::Corrupt(format!(
                "record {} is stored after record {} (`tollbu audit verify` names what was changed; \
                 if it passes, the index watermark does not match the log: `tollbu audit reindex`)",
                rec.seq,
                next_seq - 1
            )));
        }
        next_seq = rec.seq + 1;
        emit(rec, bytes)
    };
    let scan_from = match &indexed {
        Some(locs) => {
            let mut fetcher = FrameFetcher::default();
            for loc in locs.iter().filter(|l| l.seq < wm.seq) {
                let Some(bytes) = fetcher.read(&seg_dir, loc.segment, loc.offset)? else {
                    pruned += 1;
                    continue;
                };
                let rec = decode(&bytes)?;
                if rec.seq == loc.seq && filter.matches(&rec) {
                    emit_in_order(&rec, &bytes)?;
                }
            }
            Some(wm)
        }
        None => None,
    };
    let signed = super::checkpoint_size(dir).unwrap_or(0);
    // A whole-log scan for a time window reads only the segments that can hold it.
    let window = match scan_from {
        None => segments_in_window(&segments, from, to),
        Some(_) => 0..segments.len(),
    };
    // Decoding is most of a scan's time (≈ 0.7M records/s); most records lack a needle.
    let needles = filter.needles();
    let stored_window = filter.stored_window();
    scan_tail(&segments, scan_from, window, signed, |bytes| {
        if !needles.iter().all(|n| n.find(bytes).is_some()) || stored_window.plainly_outside(bytes)
        {
            return Ok(());
        }
        let rec = decode(bytes)?;
        if filter.matches(&rec) {
            emit_in_order(&rec, bytes)?;
        }
        Ok(())
    })?;
    Ok(pruned)
}

/// A query's time window written as records store times (UTC, cut to the millisecond).
struct StoredWindow {
    from: Option<String>,
    to: Option<String>,
}

impl StoredWindow {
    /// Whether a record's stored time lies outside the window for sure, read from its bytes
    /// without decoding them: the canonical encoding starts `{"seq":N,"time":"<24 chars>"`, and
    /// those times, all UTC to the millisecond, sort as strings. The bounds are cut to the
    /// millisecond, so only records plainly outside go; the rest [`Filter::matches`] decides.
    fn plainly_outside(&self, bytes: &[u8]) -> bool {
        let Some(time) = stored_time(bytes) else {
            return false;
        };
        self.from
            .as_ref()
            .is_some_and(|from| time < from.as_bytes())
            || self.to.as_ref().is_some_and(|to| time > to.as_bytes())
    }
}

/// The `time` of a canonically encoded record, as stored (24 bytes, `2026-03-01T10:00:00.000Z`).
fn stored_time(bytes: &[u8]) -> Option<&[u8]> {
    let rest = bytes.strip_prefix(b"{\"seq\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let time = rest.get(digits..)?.strip_prefix(b",\"time\":\"")?;
    let (time, after) = (time.get(..24)?, time.get(24)?);
    (*after == b'"' && time.last() == Some(&b'Z')).then_some(time)
}

/// The indexes of the segments that can hold records timed in `from..to`. Record times follow the
/// sequence only roughly (a record is timed when its request starts and committed when it ends,
/// seconds later, never a day), so a segment is skipped only when the next one starts more than
/// [`DISORDER_SLACK`] before `from`, or when it starts that much after `to` (and every later one
/// with it). A segment whose first record cannot be read is kept, for the scan to report.
pub(super) fn segments_in_window(
    segments: &[SegmentInfo],
    from: Option<OffsetDateTime>,
    to: Option<OffsetDateTime>,
) -> std::ops::Range<usize> {
    let starts = |seg: &SegmentInfo| first_record_time(seg).ok().flatten();
    let mut start = 0;
    if let Some(before) = from.and_then(|from| from.checked_sub(DISORDER_SLACK)) {
        while segments
            .get(start + 1)
            .and_then(starts)
            .is_some_and(|t| t < before)
        {
            start += 1;
        }
    }
    let end = match to.and_then(|to| to.checked_add(DISORDER_SLACK)) {
        Some(after) => (start..segments.len())
            .find(|&i| starts(&segments[i]).is_some_and(|t| t >= after))
            .unwrap_or(segments.len()),
        None => segments.len(),
    };
    start..end
}

/// Visits records from the watermark (or the start) to the end of the log, in the segments of
/// `window` (indexes into `segments`; the other segments hold nothing the caller wants). A bad or missing frame
/// at the end of the active segment beyond the `signed` checkpoint's records is where a live writer
/// is appending (or a crash left it), so it ends the scan; anywhere else, and below `signed`, it is
/// damage, and an answer that silently stopped there would leave out every record after it.
fn scan_tail(
    segments: &[SegmentInfo],
    from: Option<Watermark>,
    window: std::ops::Range<usize>,
    signed: u64,
    mut f: impl FnMut(&[u8]) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let damaged = |seq: u64, seg: &SegmentInfo, offset: u64, reason: &str| {
        AuditError::Corrupt(format!(
            "record {seq} (`{}` at offset {offset}) cannot be read: {reason}; the answer would leave \
             it and what follows out (`tollbu audit verify` names what was changed)",
            seg.path.display()
        ))
    };
    let from_seq = from.map_or(0, |w| w.seq);
    // Jump to the watermark's byte position when its segment is still there; otherwise count
    // frames from the start of the segment holding record `from_seq`.
    let positioned = from.and_then(|w| {
        segments
            .iter()
            .position(|s| s.first_seq == w.segment && w.segment <= w.seq)
            .map(|i| (i, w.offset, w.seq))
    });
    let start = match positioned {
        Some((i, _, _)) => i,
        None => segments
            .partition_point(|s| s.first_seq <= from_seq)
            .saturating_sub(1),
    };
    for (i, seg) in segments
        .iter()
        .enumerate()
        .take(window.end)
        .skip(start.max(window.start))
    {
        let last = i + 1 == segments.len();
        let (mut r, mut seq) = match positioned {
            Some((p, offset, seq)) if p == i => (FrameReader::open_at(&seg.path, offset)?, seq),
            _ => (FrameReader::open(&seg.path)?, seg.first_seq),
        };
        if last {
            // The active segment's zero tail is not read through on every query.
            r = r.zero_tail_unchecked();
        }
        loop {
            match r.next_frame().map_err(AuditError::io(&seg.path))? {
                FrameRead::Frame { payload, .. } => {
                    if seq >= from_seq {
                        f(&payload)?;
                    }
                    seq += 1;
                }
                FrameRead::End if last && seq < signed => {
                    return Err(AuditError::Corrupt(format!(
                        "the log ends at record {seq} but a signed checkpoint covers {signed} \
                         (`tollbu audit verify` names what was removed)"
                    )));
                }
                FrameRead::End => {
                    // A sealed segment holds exactly the records up to where the next one starts.
                    if let Some(next) = segments.get(i + 1)
                        && next.first_seq != seq
                    {
                        return Err(AuditError::Corrupt(format!(
                            "`{}` ends at record {seq} but the next segment starts at {} \
                             (`tollbu audit verify` names what was changed)",
                            seg.path.display(),
                            next.first_seq
                        )));
                    }
                    break;
                }
                FrameRead::Bad { .. } if last && seq >= signed => break,
                FrameRead::Bad { offset, reason, .. } => {
                    return Err(damaged(seq, seg, offset, &reason));
                }
            }
        }
    }
    Ok(())
}

/// Runs a query. `json_lines` prints each stored record as it is in the log, one per line.
pub fn query(dir: &Path, q: &Query, pseudonym_key: Option<&Path>, json_lines: bool) -> Report {
    let mut out = Vec::new();
    match query_to(dir, q, pseudonym_key, json_lines, &mut out) {
        Ok(()) => Report::ok(String::from_utf8_lossy(&out).into_owned()),
        Err(e) => Report::fail(e),
    }
}

/// [`query`] written to `out` record by record as they are found, for the command line: an answer
/// of millions of records (a whole log's, say) holds one record at a time, where collecting it
/// took 21 GiB for 10M records. An error after some records were written ends the output; the
/// caller reports it. A failed write is an [`AuditError::Io`] on the path `<output>`.
pub fn query_to(
    dir: &Path,
    q: &Query,
    pseudonym_key: Option<&Path>,
    json_lines: bool,
    out: &mut dyn std::io::Write,
) -> Result<(), AuditError> {
    let written = |e: std::io::Error| AuditError::Io {
        path: "<output>".into(),
        source: e,
    };
    let mut count = 0u64;
    let pruned = find_each(dir, q, pseudonym_key, |rec, bytes| {
        count += 1;
        write_record(out, rec, bytes, json_lines).map_err(written)
    })?;
    if !json_lines {
        let mut tail = format!("{count} records\n");
        if pruned > 0 {
            let _ = writeln!(
                tail,
                "{pruned} older matching records were removed by retention (hashes kept)"
            );
        }
        if let Some(line) = retention_note(dir) {
            let _ = writeln!(tail, "{line}");
        }
        out.write_all(tail.as_bytes()).map_err(written)?;
    }
    Ok(())
}

/// One record of a query's answer: its stored bytes (JSON lines), or a line of the table.
fn write_record(
    out: &mut dyn std::io::Write,
    rec: &StoredRecord,
    bytes: &[u8],
    json_lines: bool,
) -> std::io::Result<()> {
    if json_lines {
        out.write_all(bytes)?;
        return out.write_all(b"\n");
    }
    let r = &rec.record;
    writeln!(
        out,
        "{} {} {:5} consumer={} service={} op={} purpose={} basis={} reason={} fields={}",
        rec.seq,
        r.time,
        r.decision.as_str(),
        r.consumer.as_deref().unwrap_or("-"),
        r.service,
        r.operation,
        r.purpose.as_deref().unwrap_or("-"),
        r.legal_basis.as_deref().unwrap_or("-"),
        r.reason.as_deref().unwrap_or("-"),
        r.fields_released.join(",")
    )
}

/// "Who looked at my data": every request about this person — who, what, when, why, on what basis.
pub fn citizen(dir: &Path, subject: &str, pseudonym_key: &Path, lookup: Lookup) -> Report {
    let q = Query {
        subject: Some(subject.to_string()),
        lookup,
        ..Query::default()
    };
    let (found, pruned) = match find(dir, &q, Some(pseudonym_key)) {
        Ok(f) => f,
        Err(e) => return Report::fail(e),
    };
    let mut out = String::new();
    let _ = writeln!(out, "Requests concerning this person: {}", found.len());
    for (rec, _) in &found {
        let r = &rec.record;
        let outcome = match r.decision {
            Decision::Allow => "data released",
            Decision::Deny => "refused",
            Decision::Error => "failed",
        };
        let _ = writeln!(out, "\n{} — {}", r.time, outcome);
        let _ = writeln!(
            out,
            "  who:          {}",
            r.consumer.as_deref().unwrap_or("unidentified caller")
        );
        if let Some(s) = &r.supplier {
            let _ = writeln!(out, "  on behalf by: {s}");
        }
        let _ = writeln!(
            out,
            "  what:         {} {} ({})",
            r.service,
            r.operation,
            r.path_template.as_deref().unwrap_or("-")
        );
        if !r.fields_released.is_empty() {
            let _ = writeln!(out, "  fields:       {}", r.fields_released.join(", "));
        }
        let _ = writeln!(
            out,
            "  why:          {}",
            r.purpose.as_deref().unwrap_or("not stated")
        );
        let _ = writeln!(
            out,
            "  legal basis:  {}",
            r.legal_basis.as_deref().unwrap_or("none")
        );
        if let Some(c) = &r.consent_id {
            let _ = writeln!(out, "  your consent: {c}");
        }
        if let Some(reason) = &r.reason {
            let _ = writeln!(out, "  reason:       {reason}");
        }
        let _ = writeln!(
            out,
            "  record:       #{} (provable with `tollbu audit prove {} --index {}`)",
            rec.seq,
            dir.display(),
            rec.seq
        );
    }
    if pruned > 0 {
        let _ = writeln!(
            out,
            "\n{pruned} older requests were removed under the retention policy."
        );
    }
    if let Some(line) = retention_note(dir) {
        let _ = writeln!(out, "\n{line}");
    }
    Report::ok(out)
}

/// One line on what retention removed, or `None` if it removed nothing.
fn retention_note(dir: &Path) -> Option<String> {
    let (first, time) = super::retention_boundary(dir)?;
    let since = time.map_or_else(String::new, |t| format!(" (before {t})"));
    Some(format!(
        "Records 0..{first}{since} were removed under the retention policy; which of them matched is no longer recorded."
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::record::{Record, encode};

    fn stored(consumer: &str, service: &str) -> (Vec<u8>, StoredRecord) {
        let record = Record {
            time: "2026-03-01T00:00:00.000Z".into(),
            consumer: Some(consumer.into()),
            service: service.into(),
            subject: Some("ab".repeat(32)),
            ..Record::default()
        };
        let bytes = encode(7, &record).unwrap();
        let decoded = decode(&bytes).unwrap();
        (bytes, decoded)
    }

    fn filter(consumer: &str, service: &str) -> Filter {
        Filter {
            pseudonym: Some("ab".repeat(32)),
            consumer: Some(consumer.into()),
            service: Some(service.into()),
            ..Filter::default()
        }
    }

    fn passes_needles(f: &Filter, bytes: &[u8]) -> bool {
        f.needles().iter().all(|n| n.find(bytes).is_some())
    }

    /// The scan's shortcut never drops a record the filter matches, values JSON escapes included,
    /// and does drop records lacking a value.
    #[test]
    fn needles_keep_every_matching_record() {
        for (consumer, service) in [
            ("0192:910000001", "population"),
            ("console:o\"brien", "tax\\returns"),
            ("console:tab\there", "line\nbreak"),
            ("console:ærlig", "folkeregister/v1"),
        ] {
            let (bytes, rec) = stored(consumer, service);
            let f = filter(consumer, service);
            assert!(f.matches(&rec), "{consumer} {service}");
            assert!(passes_needles(&f, &bytes), "{consumer} {service}");
        }
        let (bytes, _) = stored("0192:910000001", "population");
        assert!(!passes_needles(
            &filter("0192:910000002", "population"),
            &bytes
        ));
        assert!(!passes_needles(&filter("0192:910000001", "tax"), &bytes));
    }

    /// The scan reads a record's time from its bytes and skips only records plainly outside the
    /// window; at a bound cut to the millisecond, or in bytes not laid out canonically, it leaves
    /// the decision to the exact filter.
    #[test]
    fn only_records_plainly_outside_the_window_are_skipped_undecoded() {
        let (bytes, rec) = stored("0192:910000001", "population");
        assert_eq!(stored_time(&bytes), Some(&b"2026-03-01T00:00:00.000Z"[..]));
        let window = |from: &str, to: &str| Filter {
            from: Some(parse_time(from).unwrap()),
            to: Some(parse_time(to).unwrap()),
            ..Filter::default()
        };
        for (from, to, inside) in [
            ("2026-03-01T00:00:00Z", "2026-03-01T00:00:01Z", true),
            ("2026-02-28T00:00:00Z", "2026-03-01T00:00:00.0005Z", true),
            (
                "2026-03-01T01:00:00+01:00",
                "2026-03-01T01:00:00.001+01:00",
                true,
            ),
            ("2026-03-01T00:00:00.0005Z", "2026-03-02T00:00:00Z", false),
        ] {
            let f = window(from, to);
            assert!(!f.stored_window().plainly_outside(&bytes), "{from}..{to}");
            assert_eq!(f.matches(&rec), inside, "{from}..{to}");
        }
        for (from, to) in [
            ("2026-03-01T00:00:00.001Z", "2026-03-02T00:00:00Z"),
            ("2026-02-01T00:00:00Z", "2026-02-28T23:59:59.999Z"),
        ] {
            let f = window(from, to);
            assert!(f.stored_window().plainly_outside(&bytes), "{from}..{to}");
            assert!(!f.matches(&rec), "{from}..{to}");
        }
        // Extreme bounds neither panic nor skip wrongly.
        for (from, to) in [
            ("0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z"),
            ("0000-01-01T00:00:00+23:59", "9999-12-31T23:59:59-00:00"),
        ] {
            let f = window(from, to);
            assert!(!f.stored_window().plainly_outside(&bytes), "{from}..{to}");
            assert!(f.matches(&rec), "{from}..{to}");
        }
        assert_eq!(stored_time(br#"{"time":"2026-03-01T00:00:00.000Z"}"#), None);
        assert_eq!(
            stored_time(br#"{"seq":1,"time":"2026-03-01T00:00:00Z"}"#),
            None
        );
    }
}
