//! The signed retention statement: why a log's oldest records exist only as hashes.
//!
//! Retention removes record bodies and keeps their leaf hashes, so the tree, its checkpoints and
//! proofs still verify; the `pruned` marker says where the kept records start. A marker alone would
//! fit a prefix deleted by hand just as well. So before retention removes anything it signs a
//! statement naming the log, how far the removal reaches and the cutoff it applied, and `verify`
//! fails a pruned prefix that no statement signed by a trusted key covers. The gateway signs with
//! its checkpoint key: the log's own for the log it writes, its current one for a log a key
//! rotation retired (whose key it may no longer hold); `tollbu audit prune` signs with the key
//! it is given. Body (a C2SP signed note, `<dir>/retention`):
//!
//! ```text
//! tollbu audit retention statement v1
//! log <origin of the log whose records were removed>
//! removed-below <first record whose body is kept>
//! cutoff <RFC 3339; the sweep that signed it removed only records older than this>
//! signed-at <RFC 3339>
//! ```
//!
//! One file, replaced by each sweep that removes something: a later statement covers everything
//! an earlier one did.

use std::path::Path;

use time::OffsetDateTime;

use crate::checkpoint::{CheckpointSigner, NoteVerifier, note_signers, verify_note};
use crate::error::AuditError;
use crate::record::{Record, parse_time_utc};
use crate::segment::write_atomic;

/// The statement's file in the log directory.
pub const STATEMENT_FILE: &str = "retention";

const HEADER: &str = "tollbu audit retention statement v1";

/// What a retention sweep signs before it removes record bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionStatement {
    /// Origin of the log whose records were removed.
    pub log: String,
    /// Records below this exist only as hashes.
    pub removed_below: u64,
    /// The removing sweep's cutoff: only records older than this went.
    pub cutoff: OffsetDateTime,
    pub signed_at: OffsetDateTime,
}

impl RetentionStatement {
    /// A statement signed now.
    pub fn new(log: &str, removed_below: u64, cutoff: OffsetDateTime) -> Self {
        Self {
            log: log.to_string(),
            removed_below,
            cutoff,
            signed_at: OffsetDateTime::now_utc(),
        }
    }

    fn body(&self) -> String {
        format!(
            "{HEADER}\nlog {}\nremoved-below {}\ncutoff {}\nsigned-at {}\n",
            self.log,
            self.removed_below,
            Record::timestamp(self.cutoff),
            Record::timestamp(self.signed_at)
        )
    }

    /// The signed note.
    pub fn sign(&self, signer: &CheckpointSigner) -> String {
        signer.sign_note(&self.body())
    }

    /// Parses a statement's body (unchecked; use [`open`] for a note).
    pub fn parse_body(body: &str) -> Result<Self, AuditError> {
        let bad = |m: String| AuditError::Note(format!("retention statement: {m}"));
        let text = body
            .strip_suffix('\n')
            .ok_or_else(|| bad("the body must end in a newline".into()))?;
        let lines: Vec<&str> = text.split('\n').collect();
        let [header, log, below, cutoff, signed_at] = lines[..] else {
            return Err(bad(format!("{} lines, expected 5", lines.len())));
        };
        if header != HEADER {
            return Err(bad(format!("first line `{header}` is not `{HEADER}`")));
        }
        let field = |line: &'_ str, key: &str| -> Result<String, AuditError> {
            line.strip_prefix(key)
                .and_then(|v| v.strip_prefix(' '))
                .filter(|v| !v.is_empty() && !v.contains(' '))
                .map(str::to_string)
                .ok_or_else(|| bad(format!("expected `{key} <value>`, found `{line}`")))
        };
        let below = field(below, "removed-below")?;
        let canonical = below.bytes().all(|b| b.is_ascii_digit())
            && (below.len() == 1 || !below.starts_with('0'));
        let removed_below = below.parse().ok().filter(|_| canonical).ok_or_else(|| {
            bad(format!(
                "removed-below `{below}` is not a canonical decimal"
            ))
        })?;
        // In UTC, as they are written; one whose UTC form is out of range is refused.
        let time = |line: &str, key: &str| -> Result<OffsetDateTime, AuditError> {
            let text = field(line, key)?;
            parse_time_utc(&text)
                .ok_or_else(|| bad(format!("{key} `{text}` is not an RFC 3339 time in range")))
        };
        Ok(Self {
            log: field(log, "log")?,
            removed_below,
            cutoff: time(cutoff, "cutoff")?,
            signed_at: time(signed_at, "signed-at")?,
        })
    }
}

/// Checks a statement note against the keys trusted here and parses it; returns the statement and
/// the name of the key that signed it. A note no trusted key signed fails naming who did sign it.
pub fn open(
    note: &str,
    trusted: &[NoteVerifier],
) -> Result<(RetentionStatement, String), AuditError> {
    // Why a trusted key's own signature failed (an altered statement), beyond "not signed by it".
    let mut broken = Vec::new();
    for verifier in trusted {
        match verify_note(note, verifier) {
            Ok(body) => {
                return Ok((
                    RetentionStatement::parse_body(body)?,
                    verifier.name().to_string(),
                ));
            }
            Err(AuditError::Note(why)) if why.starts_with("no signature by") => {}
            Err(e) => broken.push(e.to_string()),
        }
    }
    let signers = note_signers(note);
    let signed_by = if signers.is_empty() {
        "bears no readable signature".to_string()
    } else {
        format!("is signed by {}", signers.join(", "))
    };
    let trusted_names: Vec<String> = trusted.iter().map(|v| format!("`{}`", v.name())).collect();
    let broken = if broken.is_empty() {
        String::new()
    } else {
        format!(" ({})", broken.join("; "))
    };
    Err(AuditError::Note(format!(
        "the retention statement {signed_by}, not validly by a key trusted for it here ({}){broken}",
        trusted_names.join(", ")
    )))
}

/// Writes the note durably (temporary file, fsync, rename), replacing an earlier statement.
pub(crate) fn write(dir: &Path, note: &str) -> Result<(), AuditError> {
    write_atomic(&dir.join(STATEMENT_FILE), note.as_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::checkpoint::open_checkpoint;
    use crate::record::parse_time;
    use ed25519_dalek::SigningKey;

    fn signer(seed: u8, name: &str) -> CheckpointSigner {
        CheckpointSigner::from_key(SigningKey::from_bytes(&[seed; 32]), name).unwrap()
    }

    fn verifier(s: &CheckpointSigner) -> NoteVerifier {
        NoteVerifier::parse(&s.verifier_key()).unwrap()
    }

    fn statement() -> RetentionStatement {
        RetentionStatement {
            log: "tollbu.example/gw/replica-0".into(),
            removed_below: 1_024,
            cutoff: parse_time("2026-03-01T00:00:00.000Z").unwrap(),
            signed_at: parse_time("2026-03-31T01:02:03.004Z").unwrap(),
        }
    }

    #[test]
    fn a_signed_statement_opens_with_the_signers_key_and_reads_back() {
        let key = signer(7, "tollbu.example/gw/replica-0");
        let note = statement().sign(&key);
        assert!(note.starts_with(
            "tollbu audit retention statement v1\nlog tollbu.example/gw/replica-0\nremoved-below 1024\ncutoff 2026-03-01T00:00:00.000Z\nsigned-at 2026-03-31T01:02:03.004Z\n\n\u{2014} tollbu.example/gw/replica-0 "
        ));
        let other = signer(9, "tollbu.example/gw2/replica-0");
        let (opened, by) = open(&note, &[verifier(&other), verifier(&key)]).unwrap();
        assert_eq!(opened, statement());
        assert_eq!(by, "tollbu.example/gw/replica-0");
    }

    #[test]
    fn an_untrusted_or_altered_statement_is_refused_naming_its_signer() {
        let key = signer(7, "tollbu.example/gw/replica-0");
        let other = signer(9, "tollbu.example/gw2/replica-0");
        let note = statement().sign(&other);
        let e = open(&note, &[verifier(&key)]).unwrap_err().to_string();
        assert!(
            e.contains("is signed by `tollbu.example/gw2/replica-0` (key id"),
            "{e}"
        );
        let note = statement().sign(&key);
        let widened = note.replacen("removed-below 1024", "removed-below 2048", 1);
        let e = open(&widened, &[verifier(&key)]).unwrap_err().to_string();
        assert!(e.contains("signature does not verify"), "{e}");
        assert!(open("", &[verifier(&key)]).is_err());
    }

    #[test]
    fn a_statement_is_never_a_checkpoint() {
        let key = signer(7, "tollbu.example/gw/replica-0");
        let note = statement().sign(&key);
        assert!(open_checkpoint(&note, &verifier(&key)).is_err());
        let checkpoint = key.sign(1_024, &[1u8; 32]);
        assert!(open(&checkpoint, &[verifier(&key)]).is_err());
    }

    #[test]
    fn bodies_are_parsed_strictly() {
        let good = statement().body();
        assert!(RetentionStatement::parse_body(&good).is_ok());
        for bad in [
            good.replacen("removed-below 1024", "removed-below 01024", 1),
            good.replacen("removed-below 1024", "removed-below -1", 1),
            good.replacen("cutoff 2026-03-01T00:00:00.000Z", "cutoff yesterday", 1),
            good.replacen(
                "cutoff 2026-03-01T00:00:00.000Z",
                "cutoff 9999-12-31T23:59:59-23:59",
                1,
            ),
            good.replacen("log tollbu", "log  tollbu", 1),
            good.replacen("v1\n", "v2\n", 1),
            good.trim_end().to_string(),
            format!("{good}extra\n"),
        ] {
            assert!(RetentionStatement::parse_body(&bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// Whatever sits in `<dir>/retention`, `verify` gets an answer, never a panic, and a
        /// genuine statement with a byte changed never opens.
        #[test]
        fn arbitrary_statements_never_panic(text in "\\PC*", at in 0usize..200, flip in 1u8..0x7f) {
            let key = signer(7, "tollbu.example/gw/replica-0");
            let trusted = [verifier(&key)];
            let _ = open(&text, &trusted);
            let _ = RetentionStatement::parse_body(&text);
            let note = statement().sign(&key);
            let mut bytes = note.clone().into_bytes();
            let at = at % bytes.len();
            bytes[at] ^= flip;
            if let Ok(altered) = String::from_utf8(bytes)
                && altered != note
            {
                proptest::prop_assert!(open(&altered, &trusted).is_err());
            }
        }
    }
}
