//! C2SP signed notes and tlog checkpoints with Ed25519 keys.
//!
//! Format (c2sp.org/signed-note, c2sp.org/tlog-checkpoint): the body is `<origin>\n<size>\n<base64 root>\n`
//! (plus optional extension lines), then a blank line, then one line per signature:
//! `— <key name> <base64(4-byte key id ‖ 64-byte signature)>\n`. The signature covers the body bytes.
//! Key id = first 4 bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key). The key name equals the origin.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::AuditError;
use crate::hash::Hash;

/// Ed25519 signature type byte used in key ids and verifier keys.
const ALG_ED25519: u8 = 0x01;

/// A parsed, signature-checked checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub extensions: Vec<String>,
}

/// Holds the log's private key; only the writer thread signs.
pub struct CheckpointSigner {
    name: String,
    key: SigningKey,
    key_id: [u8; 4],
}

/// A public key that checks notes by one named signer.
#[derive(Debug, Clone)]
pub struct NoteVerifier {
    name: String,
    key_id: [u8; 4],
    key: VerifyingKey,
}

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([0x0a, ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('+')
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl CheckpointSigner {
    /// Loads a PKCS#8 PEM Ed25519 private key; the key name is the log origin.
    pub fn from_pem_file(path: &Path, origin: &str) -> Result<Self, AuditError> {
        let pem = std::fs::read_to_string(path).map_err(AuditError::io(path))?;
        // The parser's own words name the algorithm it expected as the unsupported one.
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|_| AuditError::Key {
            path: path.to_path_buf(),
            reason: "expected an Ed25519 private key (PKCS#8 PEM)".into(),
        })?;
        Self::from_key(key, origin)
    }

    pub fn from_key(key: SigningKey, origin: &str) -> Result<Self, AuditError> {
        if !valid_key_name(origin) {
            return Err(AuditError::Checkpoint(format!(
                "origin `{origin}` must be non-empty without spaces or `+`"
            )));
        }
        let key_id = key_id(origin, key.verifying_key().as_bytes());
        Ok(Self {
            name: origin.to_string(),
            key,
            key_id,
        })
    }

    /// `<name>+<8 hex key id>+<base64(0x01 ‖ public key)>`, the usual verifier-key string.
    pub fn verifier_key(&self) -> String {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.verifying_key().as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id),
            B64.encode(raw)
        )
    }

    /// The key's name in its notes' signature lines: the origin of the log it was made for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Signed checkpoint note for a tree.
    pub fn sign(&self, size: u64, root: &Hash) -> String {
        self.sign_note(&format!("{}\n{}\n{}\n", self.name, size, B64.encode(root)))
    }

    /// A signed note over `body` (which ends in a newline). Checkpoints and retention statements
    /// share the key; their bodies cannot be taken for one another (a statement's first line has
    /// spaces, which no origin has, and its second is no tree size).
    pub fn sign_note(&self, body: &str) -> String {
        let sig = self.key.sign(body.as_bytes());
        let mut blob = self.key_id.to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        format!("{body}\n\u{2014} {} {}\n", self.name, B64.encode(blob))
    }
}

/// Who signed a note, as `<key name> (key id <8 hex>)` per signature line, unchecked: for telling
/// an officer which key a note bears when none they trust signed it.
pub fn note_signers(note: &str) -> Vec<String> {
    let Some(split) = note.rfind("\n\n") else {
        return Vec::new();
    };
    note[split + 2..]
        .lines()
        .filter_map(|line| signature_line(line).ok())
        .map(|(name, blob)| format!("`{name}` (key id {})", hex::encode(&blob[..4])))
        .collect()
}

/// A signature line's key name and its decoded `key id ‖ signature` (at least 5 bytes).
fn signature_line(line: &str) -> Result<(&str, Vec<u8>), &'static str> {
    let rest = line
        .strip_prefix("\u{2014} ")
        .ok_or("signature line must start with an em dash and a space")?;
    let (name, b64) = rest.rsplit_once(' ').ok_or("malformed signature line")?;
    let blob = B64.decode(b64).map_err(|_| "signature is not base64")?;
    if blob.len() < 5 {
        return Err("signature too short");
    }
    Ok((name, blob))
}

impl NoteVerifier {
    /// Parses `<name>+<hex key id>+<base64(0x01 ‖ key)>`, checking that the id matches the key.
    pub fn parse(vkey: &str) -> Result<Self, AuditError> {
        let bad = || AuditError::VerifierKey(vkey.to_string());
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if !valid_key_name(name) {
            return Err(bad());
        }
        let mut id = [0u8; 4];
        hex::decode_to_slice(id_hex, &mut id).map_err(|_| bad())?;
        let raw = B64.decode(key_b64).map_err(|_| bad())?;
        let (Some(&ALG_ED25519), Ok(public)) = (
            raw.first(),
            <[u8; 32]>::try_from(raw.get(1..).unwrap_or(&[])),
        ) else {
            return Err(bad());
        };
        if key_id(name, &public) != id {
            return Err(bad());
        }
        let key = VerifyingKey::from_bytes(&public).map_err(|_| bad())?;
        Ok(Self {
            name: name.to_string(),
            key_id: id,
            key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Splits a signed note and checks that `verifier` signed it; signatures by other keys are ignored.
/// Returns the body text.
pub fn verify_note<'a>(note: &'a str, verifier: &NoteVerifier) -> Result<&'a str, AuditError> {
    let bad = |m: &str| AuditError::Note(m.to_string());
    if note.chars().any(|c| c.is_control() && c != '\n') {
        return Err(bad("control characters are not allowed"));
    }
    let split = note
        .rfind("\n\n")
        .ok_or_else(|| bad("no blank line before the signatures"))?;
    let body = &note[..split + 1];
    let sigs = &note[split + 2..];
    if sigs.is_empty() || !sigs.ends_with('\n') {
        return Err(bad(
            "signature block must be non-empty and end in a newline",
        ));
    }
    let mut verified = false;
    for line in sigs.lines() {
        let (name, blob) = signature_line(line).map_err(bad)?;
        if name != verifier.name || blob[..4] != verifier.key_id {
            continue;
        }
        let sig =
            Signature::from_slice(&blob[4..]).map_err(|_| bad("malformed ed25519 signature"))?;
        verifier
            .key
            .verify_strict(body.as_bytes(), &sig)
            .map_err(|_| bad("signature does not verify"))?;
        verified = true;
    }
    if !verified {
        return Err(bad(&format!("no signature by `{}`", verifier.name)));
    }
    Ok(body)
}

/// Parses and fully verifies a checkpoint note in one call.
pub fn open_checkpoint(note: &str, verifier: &NoteVerifier) -> Result<Checkpoint, AuditError> {
    let body = verify_note(note, verifier)?;
    let cp = parse_checkpoint_body(body)?;
    if cp.origin != verifier.name {
        return Err(AuditError::Checkpoint(format!(
            "origin `{}` is not the key name `{}`",
            cp.origin, verifier.name
        )));
    }
    Ok(cp)
}

/// Parses a checkpoint body without checking signatures (use [`open_checkpoint`] for untrusted input).
pub fn parse_checkpoint_body(body: &str) -> Result<Checkpoint, AuditError> {
    let bad = |m: String| AuditError::Checkpoint(m);
    let mut lines = body
        .strip_suffix('\n')
        .ok_or_else(|| bad("body must end in a newline".into()))?
        .split('\n');
    let origin = lines
        .next()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| bad("missing origin".into()))?;
    let size_s = lines
        .next()
        .ok_or_else(|| bad("missing tree size".into()))?;
    if size_s.is_empty()
        || (size_s.len() > 1 && size_s.starts_with('0'))
        || !size_s.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad(format!(
            "tree size `{size_s}` is not a canonical decimal"
        )));
    }
    let size: u64 = size_s
        .parse()
        .map_err(|_| bad(format!("tree size `{size_s}` out of range")))?;
    let root_s = lines
        .next()
        .ok_or_else(|| bad("missing root hash".into()))?;
    let root: Hash = B64
        .decode(root_s)
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| bad(format!("root `{root_s}` is not a base64 32-byte hash")))?;
    let extensions: Vec<String> = lines.map(str::to_string).collect();
    if extensions.iter().any(String::is_empty) {
        return Err(bad("empty extension line".into()));
    }
    Ok(Checkpoint {
        origin: origin.to_string(),
        size,
        root,
        extensions,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn signer(name: &str) -> CheckpointSigner {
        CheckpointSigner::from_key(SigningKey::from_bytes(&[7u8; 32]), name).unwrap()
    }

    #[test]
    fn sign_and_open_round_trip() {
        let s = signer("tollbu.example/a");
        let note = s.sign(8, &[1u8; 32]);
        assert!(note.starts_with("tollbu.example/a\n8\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n\n\u{2014} tollbu.example/a "));
        let v = NoteVerifier::parse(&s.verifier_key()).unwrap();
        let cp = open_checkpoint(&note, &v).unwrap();
        assert_eq!((cp.size, cp.root), (8, [1u8; 32]));
    }

    #[test]
    fn tampered_or_foreign_notes_fail() {
        let s = signer("tollbu.example/a");
        let v = NoteVerifier::parse(&s.verifier_key()).unwrap();
        let note = s.sign(8, &[1u8; 32]);
        assert!(open_checkpoint(&note.replacen("\n8\n", "\n9\n", 1), &v).is_err());
        let other =
            CheckpointSigner::from_key(SigningKey::from_bytes(&[9u8; 32]), "tollbu.example/a")
                .unwrap();
        assert!(open_checkpoint(&other.sign(8, &[1u8; 32]), &v).is_err());
        // A second signature by an unknown key is ignored, not fatal.
        let extra = format!("{}\u{2014} someone AAAAAAAAAA==\n", note);
        assert!(open_checkpoint(&extra, &v).is_ok());
        assert!(open_checkpoint("garbage", &v).is_err());
        assert!(open_checkpoint("", &v).is_err());
    }

    #[test]
    fn key_id_follows_c2sp() {
        // Key id = SHA-256("name" ‖ 0x0A ‖ 0x01 ‖ pub)[..4], recomputed by hand here.
        let s = signer("n");
        let public = SigningKey::from_bytes(&[7u8; 32])
            .verifying_key()
            .to_bytes();
        let mut pre = b"n\n\x01".to_vec();
        pre.extend_from_slice(&public);
        let want = &Sha256::digest(&pre)[..4];
        assert!(
            s.verifier_key()
                .starts_with(&format!("n+{}+", hex::encode(want)))
        );
        assert!(NoteVerifier::parse("n+00000000+AQ==").is_err());
    }

    #[test]
    fn body_parsing_is_strict() {
        assert!(
            parse_checkpoint_body("o\n08\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n").is_err()
        );
        assert!(parse_checkpoint_body("o\n8\nAQ==\n").is_err());
        assert!(
            parse_checkpoint_body("o\n8\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=").is_err()
        );
        let cp = parse_checkpoint_body("o\n8\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\next\n")
            .unwrap();
        assert_eq!(cp.extensions, vec!["ext".to_string()]);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_input_never_panics(text in "\\PC*", raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let s = signer("tollbu.example/a");
            let v = NoteVerifier::parse(&s.verifier_key()).unwrap();
            let _ = open_checkpoint(&text, &v);
            let _ = NoteVerifier::parse(&text);
            let lossy = String::from_utf8_lossy(&raw);
            let _ = open_checkpoint(&lossy, &v);
            // A real note with its body bytes mutated never verifies.
            let note = s.sign(8, &[1u8; 32]);
            if let Some(&b) = raw.first() {
                let mut bytes = note.clone().into_bytes();
                let at = usize::from(b) % 40;
                bytes[at] ^= 0x20;
                if let Ok(m) = String::from_utf8(bytes)
                    && m != note {
                        proptest::prop_assert!(open_checkpoint(&m, &v).is_err());
                    }
            }
        }
    }
}
