//! Random identifiers: request ids, and trace and span ids for requests that arrive without a
//! trace.
//!
//! They come from the thread's CSPRNG (`rand::thread_rng`: ChaCha, seeded from the operating
//! system and reseeded as it goes), not from a `getrandom(2)` call each: a request that brings no
//! ids needs three, and those system calls were 2.5 % of the gateway's CPU under load
//! (docs/BENCHMARKS.md).

use rand::RngCore;

/// A new request id: a random (version 4) UUID in its hyphenated form.
pub fn request_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// `N` random bytes as lower-case hex (W3C trace ids are 16 bytes, span ids 8).
pub fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn request_ids_are_version_4_uuids_and_differ() {
        let a = request_id();
        let b = request_id();
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 4);
        assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
        assert_eq!(a.len(), 36);
    }

    #[test]
    fn random_hex_has_the_asked_length_and_differs() {
        let a = random_hex::<16>();
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_ne!(a, random_hex::<16>());
        assert_eq!(random_hex::<8>().len(), 16);
    }
}
