//! Keyed pseudonyms for subject identifiers.
//!
//! HMAC-SHA-256 under a key stored apart from the log: whoever holds the key can find a person's
//! records; a leaked log alone does not reveal national identity numbers (which a plain hash of an
//! 11-digit number would, by brute force).

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::AuditError;

/// File in a log directory holding the [`Pseudonymiser::key_check`] of the key its subjects were
/// pseudonymised with.
pub const KEY_CHECK_FILE: &str = "pseudonym-key-check";

const KEY_CHECK_LABEL: &str = "tollbu-audit pseudonym key check v1";

/// Refuses a subject search of the log in `dir` with a key (given by its
/// [`Pseudonymiser::key_check`]) other than the one it was written with, which would find nothing.
/// A log from before the check was recorded has none and passes.
pub fn ensure_key_matches_log(dir: &Path, key_check: &str) -> Result<(), AuditError> {
    let path = dir.join(KEY_CHECK_FILE);
    match std::fs::read_to_string(&path) {
        Ok(recorded) if recorded.trim_end() == key_check => Ok(()),
        Ok(_) => Err(AuditError::PseudonymKeyMismatch(dir.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AuditError::io(&path)(e)),
    }
}

/// Computes subject pseudonyms. Cloning shares nothing mutable.
#[derive(Clone)]
pub struct Pseudonymiser {
    key: [u8; 32],
}

impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymiser(..)")
    }
}

impl Pseudonymiser {
    /// Reads a key file: exactly 64 hex characters (32 bytes), optionally followed by one newline.
    pub fn from_key_file(path: &Path) -> Result<Self, AuditError> {
        let text = std::fs::read_to_string(path).map_err(AuditError::io(path))?;
        let bad = |reason: &str| AuditError::Key {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let hex_part = text.strip_suffix('\n').unwrap_or(&text);
        let hex_part = hex_part.strip_suffix('\r').unwrap_or(hex_part);
        if hex_part.len() != 64 {
            return Err(bad("expected 64 hex characters (32 bytes)"));
        }
        let mut key = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut key).map_err(|_| bad("not hexadecimal"))?;
        if key == [0u8; 32] {
            return Err(bad("the all-zero key is refused"));
        }
        Ok(Self { key })
    }

    pub fn from_key(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// Identifies the key without revealing it or any subject's pseudonym: the pseudonym of a fixed
    /// label that no identity number equals. A log records it, so that a search with another key
    /// is refused instead of answering "nobody read this person's data".
    pub fn key_check(&self) -> String {
        self.pseudonym(KEY_CHECK_LABEL)
    }

    /// Lowercase hex HMAC-SHA-256 of the subject identifier.
    pub fn pseudonym(&self, subject: &str) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            // HMAC accepts keys of any length; this branch cannot be reached.
            return String::new();
        };
        mac.update(subject.as_bytes());
        crate::hash::HashHex::new(&mac.finalize().into_bytes().into())
            .as_str()
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn a_log_refuses_searches_with_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let written_with = Pseudonymiser::from_key([7; 32]);
        let other = Pseudonymiser::from_key([8; 32]);
        // No check recorded (a log from before it existed): any key passes.
        assert!(ensure_key_matches_log(dir.path(), &other.key_check()).is_ok());
        std::fs::write(
            dir.path().join(KEY_CHECK_FILE),
            format!("{}\n", written_with.key_check()),
        )
        .unwrap();
        assert!(ensure_key_matches_log(dir.path(), &written_with.key_check()).is_ok());
        assert!(matches!(
            ensure_key_matches_log(dir.path(), &other.key_check()),
            Err(AuditError::PseudonymKeyMismatch(_))
        ));
        // The check is not any subject's pseudonym.
        assert_ne!(
            written_with.key_check(),
            written_with.pseudonym("01017012345")
        );
    }

    #[test]
    fn key_file_format() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, format!("{}\n", "0f".repeat(32))).unwrap();
        let a = Pseudonymiser::from_key_file(&p).unwrap();
        std::fs::write(&p, "0f".repeat(32)).unwrap();
        let b = Pseudonymiser::from_key_file(&p).unwrap();
        assert_eq!(a.pseudonym("01017012345"), b.pseudonym("01017012345"));
        assert_ne!(a.pseudonym("01017012345"), a.pseudonym("01017012346"));
        assert_eq!(a.pseudonym("x").len(), 64);
        for bad in [
            "0f".repeat(31),
            "zz".repeat(32),
            format!("{}\n\n", "0f".repeat(32)),
            "00".repeat(32),
        ] {
            std::fs::write(&p, bad).unwrap();
            assert!(Pseudonymiser::from_key_file(&p).is_err());
        }
    }

    #[test]
    fn hmac_matches_an_independent_computation() {
        // Expected value from Python's hmac module: HMAC-SHA256(key=0x0b*32, "Hi There").
        let p = Pseudonymiser::from_key([0x0b; 32]);
        assert_eq!(
            p.pseudonym("Hi There"),
            "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"
        );
    }
}
