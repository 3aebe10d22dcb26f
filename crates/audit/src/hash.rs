//! RFC 9162 hashing primitives: SHA-256 with domain-separation prefixes.

use sha2::{Digest, Sha256};

/// A SHA-256 tree hash.
pub type Hash = [u8; 32];

/// `SHA-256(0x00 ‖ entry)`: the leaf prefix keeps a leaf from ever being mistaken for an inner node.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// A hash spelled as 64 lowercase hex digits in a stack buffer: records carry two body digests and
/// proofs many hashes, and spelling each into its own `String` cost an allocation apiece.
pub struct HashHex([u8; 64]);

impl HashHex {
    pub fn new(h: &Hash) -> Self {
        let mut digits = [0u8; 64];
        // Fails only when the output is not twice the input's length, and it is.
        let _ = hex::encode_to_slice(h, &mut digits);
        Self(digits)
    }

    pub fn as_str(&self) -> &str {
        // Hex digits are ASCII, so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Serde helpers writing hashes as lowercase hex.
pub(crate) mod hex_hash {
    use super::Hash;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(super::HashHex::new(h).as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        super::parse_field(&String::deserialize(d)?)
    }
}

pub(crate) mod hex_hashes {
    use super::Hash;
    use serde::{Deserialize, Deserializer, Serializer, ser::SerializeSeq};

    pub fn serialize<S: Serializer>(hs: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(hs.len()))?;
        for h in hs {
            seq.serialize_element(super::HashHex::new(h).as_str())?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter().map(|s| super::parse_field(s)).collect()
    }
}

/// Serde helpers for an optional hash written as lowercase hex or `null` (the record's body digests).
pub(crate) mod opt_hex_hash {
    use super::Hash;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &Option<Hash>, s: S) -> Result<S::Ok, S::Error> {
        match h {
            Some(h) => s.serialize_some(super::HashHex::new(h).as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Hash>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::parse_field(&s))
            .transpose()
    }
}

/// [`parse_hex_hash`] for the serde helpers above, with the error a reader of a bad file sees.
fn parse_field<E: serde::de::Error>(s: &str) -> Result<Hash, E> {
    parse_hex_hash(s).ok_or_else(|| E::custom(format!("not a 32-byte hex hash: `{s}`")))
}

/// Parses 64 hex characters into a hash.
pub fn parse_hex_hash(s: &str) -> Option<Hash> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}
