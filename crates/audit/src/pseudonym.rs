//! Keyed pseudonyms for subject identifiers.
//!
//! HMAC-SHA-256 under a key stored apart from the log: whoever holds the key can find a person's
//! records; a leaked log alone does not reveal national identity numbers (which a plain hash of an
//! 11-digit number would, by brute force).

use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::AuditError;

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
