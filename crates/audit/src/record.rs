//! The audit record and its canonical byte encoding (the bytes that are hashed into the tree).
//!
//! Encoding: one JSON object, no whitespace, keys in the fixed order of [`StoredRecord`] (`seq` first,
//! then the [`Record`] fields in declaration order), absent values written as `null`. serde_json's
//! compact writer is deterministic for this shape, and the verifier re-encodes every record and
//! rejects any that are not byte-identical, so a second spelling of the same record cannot exist.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::AuditError;
use crate::hash::Hash;
use crate::index::key16;

/// Largest encoded record: tlog-tiles entry bundles prefix each entry with a big-endian u16 length.
pub const MAX_RECORD_BYTES: usize = u16::MAX as usize;

/// What the gateway decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
    /// The request was allowed but failed (upstream error, timeout); also the default so an
    /// unfilled record never claims to be an allow.
    #[default]
    Error,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Error => "error",
        }
    }
}

impl std::str::FromStr for Decision {
    type Err = AuditError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Decision::Allow),
            "deny" => Ok(Decision::Deny),
            "error" => Ok(Decision::Error),
            other => Err(AuditError::BadRequest(format!(
                "decision `{other}` is not allow, deny or error"
            ))),
        }
    }
}

/// One decided request. The log assigns `seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// RFC 3339 UTC with milliseconds, e.g. `2026-01-02T03:04:05.678Z` (see [`Record::timestamp`]).
    pub time: String,
    pub request_id: String,
    pub trace_id: Option<String>,
    /// Legal consumer, `0192:<orgno>`; absent when the token could not be verified.
    pub consumer: Option<String>,
    pub supplier: Option<String>,
    pub client_id: Option<String>,
    pub service: String,
    pub operation: String,
    /// The matched route template (`/persons/{id}`), never the raw path, which may hold identifiers.
    pub path_template: Option<String>,
    /// Subject PSEUDONYM (64 hex chars, see [`crate::Pseudonymiser`]); clear identifiers are refused.
    pub subject: Option<String>,
    pub purpose: Option<String>,
    pub legal_basis: Option<String>,
    pub grant_id: Option<String>,
    pub consent_id: Option<String>,
    pub decision: Decision,
    /// Stable reason code (`deny.no_grant`, `upstream.timeout`, …).
    pub reason: Option<String>,
    pub policy_version: Option<String>,
    pub upstream_status: Option<u16>,
    pub latency_us: u64,
    /// SHA-256 of the request body as received (written as 64 lowercase hex digits).
    #[serde(default, with = "crate::hash::opt_hex_hash")]
    pub request_sha256: Option<Hash>,
    /// SHA-256 of the response body as sent to the client, after minimisation (written as hex).
    #[serde(default, with = "crate::hash::opt_hex_hash")]
    pub response_sha256: Option<Hash>,
    pub fields_released: Vec<String>,
}

/// The stored form: `seq` first, then the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub seq: u64,
    #[serde(flatten)]
    pub record: Record,
}

impl Record {
    /// Current time in the record's format.
    pub fn timestamp(now: OffsetDateTime) -> String {
        let t = now.to_offset(time::UtcOffset::UTC);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }

    /// Checks what the log depends on: a parseable time (queries filter on it) and no clear-text
    /// subject slipping into a permanent, signed record. (The body digests are 32 bytes by type.)
    pub fn validate(&self) -> Result<(), AuditError> {
        parse_time(&self.time)?;
        if let Some(s) = &self.subject
            && !is_hex64(s)
        {
            return Err(AuditError::InvalidRecord(
                "`subject` must be a pseudonym (64 lowercase hex chars), never a clear identifier"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Parses an RFC 3339 time.
pub fn parse_time(s: &str) -> Result<OffsetDateTime, AuditError> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map_err(|e| AuditError::InvalidRecord(format!("time `{s}`: {e}")))
}

/// An RFC 3339 time moved to UTC, as records and signed notes write times; `None` when it does not
/// parse or its UTC form lies outside years 0–9999 (a bound that would later overflow).
pub fn parse_time_utc(s: &str) -> Option<OffsetDateTime> {
    parse_time(s).ok()?.checked_to_offset(time::UtcOffset::UTC)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Canonical bytes of a record at `seq`.
pub fn encode(seq: u64, record: &Record) -> Result<Vec<u8>, AuditError> {
    let json = record_json(record)?;
    let mut bytes = Vec::with_capacity(json.len() + SEQ_PREFIX_MAX);
    write_canonical(seq, &json, &mut bytes);
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(AuditError::RecordTooLarge(bytes.len()));
    }
    Ok(bytes)
}

/// The record's own JSON object, `{"time":…}`.
fn record_json(record: &Record) -> Result<Vec<u8>, AuditError> {
    let json = serde_json::to_vec(record)
        .map_err(|e| AuditError::InvalidRecord(format!("cannot encode: {e}")))?;
    // A struct always serialises as `{…}` with at least one field.
    match json.as_slice() {
        [b'{', _, ..] => Ok(json),
        _ => Err(AuditError::InvalidRecord("record is not an object".into())),
    }
}

/// Appends `{"seq":<seq>,` and the fields of `json` (a record's own object) to `out`.
fn write_canonical(seq: u64, json: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(itoa(seq, &mut [0u8; 20]));
    out.push(b',');
    out.extend_from_slice(json.get(1..).unwrap_or_default());
}

/// A validated record already serialised except for its sequence number, which only the writer
/// knows. Preparing on the caller's thread keeps JSON encoding off the single writer thread, whose
/// per-record work is then a copy, a checksum and one SHA-256.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The [`Record`]'s own JSON object, `{"time":…}`; its `{` gives way to `{"seq":N,`.
    json: Vec<u8>,
    /// Index keys (see [`crate::index`]) of the subject pseudonym and the consumer, when present.
    pub(crate) subject_key: Option<[u8; 16]>,
    pub(crate) consumer_key: Option<[u8; 16]>,
}

/// `{"seq":` plus at most 20 digits and a comma.
const SEQ_PREFIX_MAX: usize = 28;

impl Prepared {
    /// Validates and serialises `record`; fails if even the largest sequence number would make it
    /// longer than [`MAX_RECORD_BYTES`].
    pub fn new(record: &Record) -> Result<Self, AuditError> {
        record.validate()?;
        let json = record_json(record)?;
        let longest = json.len() - 1 + SEQ_PREFIX_MAX;
        if longest > MAX_RECORD_BYTES {
            return Err(AuditError::RecordTooLarge(longest));
        }
        Ok(Self {
            json,
            subject_key: record.subject.as_deref().map(key16),
            consumer_key: record.consumer.as_deref().map(key16),
        })
    }

    /// The canonical bytes at `seq`: `{"seq":<seq>,` followed by the record's fields.
    pub fn bytes(&self, seq: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.json.len() + SEQ_PREFIX_MAX);
        self.write(seq, &mut out);
        out
    }

    /// Appends the canonical bytes at `seq` to `out`.
    pub fn write(&self, seq: u64, out: &mut Vec<u8>) {
        write_canonical(seq, &self.json, out);
    }
}

/// Decimal digits of `n`, as serde_json writes a `u64`.
fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Parses stored bytes and insists they are in canonical form.
///
/// The canonical form starts `{"seq":<digits>,`, so the number is read directly and the object is
/// parsed as a plain [`Record`], which has no `seq` field for serde to fill (going through
/// [`StoredRecord`]'s `flatten` would make serde buffer every field first, which doubles the cost
/// of a query that reads thousands of records). The canonical check then serialises the record
/// against the stored bytes as it goes, allocating nothing (`verify` and scans decode every record).
pub fn decode(bytes: &[u8]) -> Result<StoredRecord, AuditError> {
    let not_json = |why: &str| AuditError::Corrupt(format!("record is not valid json: {why}"));
    let rest = bytes
        .strip_prefix(b"{\"seq\":")
        .ok_or_else(|| not_json("it does not start with `{\"seq\":`"))?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let (number, tail) = rest.split_at(digits);
    let seq = std::str::from_utf8(number)
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| not_json("`seq` is not an unsigned integer"))?;
    if !tail.starts_with(b",") {
        return Err(not_json("`seq` is not followed by the record's fields"));
    }
    let record: Record = serde_json::from_slice(bytes).map_err(|e| not_json(&e.to_string()))?;
    if !encodes_to(seq, &record, bytes)? {
        return Err(AuditError::Corrupt(format!(
            "record `{seq}` is not in canonical form"
        )));
    }
    Ok(StoredRecord { seq, record })
}

/// Whether `encode(seq, record)` would give exactly `bytes`, found without building it.
fn encodes_to(seq: u64, record: &Record, bytes: &[u8]) -> Result<bool, AuditError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(AuditError::RecordTooLarge(bytes.len()));
    }
    let mut digits = [0u8; 20];
    let mut expected = bytes;
    for part in [b"{\"seq\":".as_slice(), itoa(seq, &mut digits), b","] {
        match expected.strip_prefix(part) {
            Some(rest) => expected = rest,
            None => return Ok(false),
        }
    }
    // The record's own object is `{…}`: its `{` is where the `seq` prefix stands in the bytes.
    let mut against = Comparer {
        brace_pending: true,
        expected,
        same: true,
    };
    serde_json::to_writer(&mut against, record)
        .map_err(|e| AuditError::InvalidRecord(format!("cannot encode: {e}")))?;
    Ok(against.same && !against.brace_pending && against.expected.is_empty())
}

/// A writer that compares what is written with `expected` (after an opening brace) instead of
/// keeping it.
struct Comparer<'a> {
    brace_pending: bool,
    expected: &'a [u8],
    same: bool,
}

impl std::io::Write for Comparer<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        if self.brace_pending && !rest.is_empty() {
            match rest.strip_prefix(b"{") {
                Some(after) => {
                    rest = after;
                    self.brace_pending = false;
                }
                None => self.same = false,
            }
        }
        if self.same {
            match self.expected.strip_prefix(rest) {
                Some(after) => self.expected = after,
                None => self.same = false,
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn sample() -> Record {
        Record {
            time: "2026-01-02T03:04:05.678Z".into(),
            request_id: "r1".into(),
            service: "folkeregister".into(),
            operation: "read".into(),
            decision: Decision::Allow,
            subject: Some("ab".repeat(32)),
            fields_released: vec!["name".into()],
            ..Record::default()
        }
    }

    #[test]
    fn encoding_is_fixed_order_compact_json() {
        let b = encode(7, &sample()).unwrap();
        let s = String::from_utf8(b.clone()).unwrap();
        assert!(s.starts_with(
            r#"{"seq":7,"time":"2026-01-02T03:04:05.678Z","request_id":"r1","trace_id":null,"#
        ));
        assert!(s.ends_with(r#""fields_released":["name"]}"#));
        assert!(!s.contains(' '));
        assert_eq!(decode(&b).unwrap().record, sample());
    }

    #[test]
    fn body_digests_are_stored_as_lowercase_hex_and_read_back() {
        let mut r = sample();
        r.request_sha256 = Some([0xab; 32]);
        r.response_sha256 = Some(crate::hash::empty_root());
        let s = String::from_utf8(encode(3, &r).unwrap()).unwrap();
        assert!(s.contains(&format!(r#""request_sha256":"{}""#, "ab".repeat(32))));
        // SHA-256 of the empty string, a known answer.
        assert!(s.contains(
            r#""response_sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855""#
        ));
        assert_eq!(decode(s.as_bytes()).unwrap().record, r);
        let bad = s.replace(&"ab".repeat(32), &"ab".repeat(31));
        assert!(decode(bad.as_bytes()).is_err());
    }

    #[test]
    fn prepared_bytes_equal_the_derived_encoding_at_any_seq() {
        #[derive(Serialize)]
        struct Derived<'a> {
            seq: u64,
            #[serde(flatten)]
            record: &'a Record,
        }
        let p = Prepared::new(&sample()).unwrap();
        for seq in [0, 7, 10, 99, 1_000_000, u64::MAX] {
            let want = serde_json::to_vec(&Derived {
                seq,
                record: &sample(),
            })
            .unwrap();
            assert_eq!(p.bytes(seq), want);
        }
    }

    #[test]
    fn a_record_that_could_outgrow_the_limit_is_refused() {
        // Fits at seq 0, but would not at a 20-digit seq: refused up front, not in the writer.
        let mut r = sample();
        let base = encode(0, &r).unwrap().len();
        r.request_id
            .push_str(&"x".repeat(MAX_RECORD_BYTES - 5 - base));
        assert_eq!(encode(0, &r).unwrap().len(), MAX_RECORD_BYTES - 5);
        assert!(matches!(
            Prepared::new(&r),
            Err(AuditError::RecordTooLarge(_))
        ));
    }

    #[test]
    fn non_canonical_bytes_are_rejected() {
        let b = encode(7, &sample()).unwrap();
        let text = String::from_utf8(b).unwrap();
        assert_eq!(decode(text.as_bytes()).unwrap().seq, 7);
        for bad in [
            text.replacen(",", ", ", 1),
            text.replacen(r#""seq":7"#, r#""seq":07"#, 1),
            text.replacen(r#""seq":7"#, r#""seq":7.0"#, 1),
            text.replacen(r#""seq":7"#, r#""seq":-7"#, 1),
            text.replacen(r#""seq":7"#, r#""seq":"7""#, 1),
            text.replacen(r#"{"seq":7,"#, r#"{"time":"x","seq":7,"#, 1),
            text.replacen(r#""request_id":"r1""#, r#""request_id":"r1","seq":8"#, 1),
            text.replacen(r#""request_id":"r1""#, r#""request_id":"r1","extra":1"#, 1),
            text.replacen(r#""seq":7"#, r#""seq":99999999999999999999"#, 1),
            format!("{text} "),
        ] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(decode(b"{not json").is_err());
        assert!(decode(b"").is_err());
    }

    #[test]
    fn clear_subjects_and_bad_times_are_refused() {
        let mut r = sample();
        r.subject = Some("01017012345".into());
        assert!(r.validate().is_err());
        let mut r = sample();
        r.time = "yesterday".into();
        assert!(r.validate().is_err());
        assert!(sample().validate().is_ok());
    }

    #[test]
    fn timestamp_format() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(Record::timestamp(t), "2023-11-14T22:13:20.123Z");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = decode(&raw);
        }

        /// `decode` accepts exactly the canonical encodings: a record reads back as itself, and
        /// bytes with any byte changed either fail or are the canonical encoding of what they
        /// decode to (strings with quotes, backslashes, control characters and non-ASCII included).
        #[test]
        fn decode_accepts_exactly_the_canonical_encodings(
            seq in proptest::prelude::any::<u64>(),
            request_id in "\\PC{0,12}",
            purpose in proptest::option::of("[a-z\"\\\\\t\u{1}æ€ ]{0,12}"),
            latency_us in proptest::prelude::any::<u64>(),
            at in proptest::prelude::any::<usize>(),
            flip in 1u8..=255,
        ) {
            let record = Record { request_id, purpose, latency_us, ..sample() };
            let bytes = encode(seq, &record).unwrap();
            let back = decode(&bytes).unwrap();
            proptest::prop_assert_eq!((back.seq, &back.record), (seq, &record));
            let mut changed = bytes.clone();
            let at = at % changed.len();
            changed[at] ^= flip;
            if let Ok(other) = decode(&changed) {
                proptest::prop_assert_eq!(encode(other.seq, &other.record).unwrap(), changed);
            }
        }
    }
}
