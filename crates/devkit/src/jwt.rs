//! Compact JWS (RFC 7515) with RS256, just enough for the issuer and the
//! token client: sign, parse, verify, and publish RSA keys as JWKs.
//!
//! Written against aws-lc-rs directly rather than a JWT library so that tests
//! can forge any header (wrong `alg`, `jku`, missing `kid`) with a real key:
//! a JWT library refuses to produce exactly the tokens a gateway must refuse.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::error::DevkitError;

/// Encodes bytes as unpadded base64url, the JOSE encoding.
pub(crate) fn b64url(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An RSA private key that signs RS256 JWS, with its JWK and key id.
pub(crate) struct RsaSigningKey {
    key: aws_lc_rs::rsa::KeyPair,
    kid: String,
    jwk: Value,
}

impl RsaSigningKey {
    /// A fresh RSA-2048 key; its kid is the RFC 7638 thumbprint.
    pub(crate) fn generate() -> Result<Self, DevkitError> {
        let key = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| DevkitError::Crypto("rsa key generation failed".into()))?;
        Ok(Self::with_thumbprint_kid(key))
    }

    /// Reads a PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`) PEM. The
    /// kid is the RFC 7638 thumbprint unless one is given, so the same key
    /// always gets the same kid across restarts.
    pub(crate) fn from_pem(pem: &str, kid: Option<&str>) -> Result<Self, DevkitError> {
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| DevkitError::Key(format!("no private key in pem: {e}")))?;
        let key = match &der {
            PrivateKeyDer::Pkcs8(k) => aws_lc_rs::rsa::KeyPair::from_pkcs8(k.secret_pkcs8_der()),
            PrivateKeyDer::Pkcs1(k) => aws_lc_rs::rsa::KeyPair::from_der(k.secret_pkcs1_der()),
            _ => return Err(DevkitError::Key("expected an rsa private key".into())),
        }
        .map_err(|e| DevkitError::Key(format!("rsa private key rejected: {e}")))?;
        let mut this = Self::with_thumbprint_kid(key);
        if let Some(kid) = kid {
            kid.clone_into(&mut this.kid);
            this.jwk["kid"] = Value::String(kid.to_owned());
        }
        Ok(this)
    }

    fn with_thumbprint_kid(key: aws_lc_rs::rsa::KeyPair) -> Self {
        let public = key.public_key();
        let n = b64url(public.modulus().big_endian_without_leading_zero());
        let e = b64url(public.exponent().big_endian_without_leading_zero());
        let kid = rsa_thumbprint(&n, &e);
        let jwk = json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e});
        Self { key, kid, jwk }
    }

    /// The private key as PKCS#8 DER, for writing key files.
    pub(crate) fn pkcs8_der(&self) -> Result<Vec<u8>, DevkitError> {
        use aws_lc_rs::encoding::AsDer as _;
        let der: aws_lc_rs::encoding::Pkcs8V1Der<'_> = self
            .key
            .as_der()
            .map_err(|_| DevkitError::Crypto("pkcs8 encoding failed".into()))?;
        Ok(der.as_ref().to_vec())
    }

    /// The public key as SubjectPublicKeyInfo DER.
    pub(crate) fn spki_der(&self) -> Result<Vec<u8>, DevkitError> {
        use aws_lc_rs::encoding::AsDer as _;
        let der: aws_lc_rs::encoding::PublicKeyX509Der<'_> = self
            .key
            .public_key()
            .as_der()
            .map_err(|_| DevkitError::Crypto("spki encoding failed".into()))?;
        Ok(der.as_ref().to_vec())
    }

    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half as a JWK (`kty`, `use`, `alg`, `kid`, `n`, `e`).
    pub(crate) fn public_jwk(&self) -> &Value {
        &self.jwk
    }

    /// Signs `claims` under `header` exactly as given: the caller decides what
    /// the header says, the signature is always RS256 by this key.
    pub(crate) fn sign(&self, header: &Value, claims: &Value) -> Result<String, DevkitError> {
        let header = serde_json::to_vec(header)
            .map_err(|e| DevkitError::Crypto(format!("header not serialisable: {e}")))?;
        let claims = serde_json::to_vec(claims)
            .map_err(|e| DevkitError::Crypto(format!("claims not serialisable: {e}")))?;
        let signing_input = format!("{}.{}", b64url(header), b64url(claims));
        let mut sig = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| DevkitError::Crypto("rsa signing failed".into()))?;
        Ok(format!("{signing_input}.{}", b64url(sig)))
    }

    /// The default header for this key: `{"alg":"RS256","kid":…}`, as
    /// Maskinporten's access tokens have it.
    pub(crate) fn header(&self) -> Value {
        json!({"alg": "RS256", "kid": self.kid})
    }
}

/// The RFC 7638 JWK thumbprint of an RSA key given its base64url `n` and `e`.
fn rsa_thumbprint(n: &str, e: &str) -> String {
    // Required members in lexicographic order, no whitespace.
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    b64url(Sha256::digest(canonical.as_bytes()))
}

/// An RSA public key that verifies RS256 signatures.
#[derive(Clone)]
pub(crate) struct RsaVerifyingKey {
    der: Vec<u8>,
}

impl RsaVerifyingKey {
    /// Reads a `PUBLIC KEY` (SubjectPublicKeyInfo) PEM and checks that it
    /// holds an RSA key of an acceptable size, so bad keys fail at load time.
    pub(crate) fn from_pem(pem: &str) -> Result<Self, DevkitError> {
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| DevkitError::Key(format!("no public key in pem: {e}")))?;
        let parsed = aws_lc_rs::rsa::PublicKey::from_der(spki.as_ref())
            .map_err(|e| DevkitError::Key(format!("not an rsa public key: {e}")))?;
        if parsed.modulus_len() < 256 {
            return Err(DevkitError::Key(
                "rsa keys below 2048 bits are refused".into(),
            ));
        }
        Ok(Self {
            der: spki.as_ref().to_vec(),
        })
    }

    pub(crate) fn verify(&self, jws: &CompactJws) -> bool {
        UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, &self.der)
            .verify(jws.signing_input.as_bytes(), &jws.signature)
            .is_ok()
    }
}

/// A compact JWS split and decoded, not yet verified.
#[derive(Debug)]
pub(crate) struct CompactJws {
    pub(crate) header: Map<String, Value>,
    pub(crate) claims: Map<String, Value>,
    signing_input: String,
    signature: Vec<u8>,
}

impl CompactJws {
    /// Splits `token` into its three parts; the header and claims must be
    /// JSON objects. Returns a short reason on failure.
    pub(crate) fn parse(token: &str) -> Result<Self, &'static str> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a compact jws (expected three dot-separated parts)");
        };
        let header = decode_object(h).ok_or("jws header is not base64url json object")?;
        let claims = decode_object(c).ok_or("jws payload is not base64url json object")?;
        let signature = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| "jws signature is not base64url")?;
        Ok(Self {
            header,
            claims,
            signing_input: format!("{h}.{c}"),
            signature,
        })
    }
}

fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn signed_token_verifies_and_tampering_is_detected() {
        let key = RsaSigningKey::generate().unwrap();
        let public_pem = crate::certs::pem_encode("PUBLIC KEY", &key.spki_der().unwrap());
        let verifier = RsaVerifyingKey::from_pem(&public_pem).unwrap();
        let token = key.sign(&key.header(), &json!({"sub": "a"})).unwrap();
        let jws = CompactJws::parse(&token).unwrap();
        assert!(verifier.verify(&jws));
        assert_eq!(jws.header["kid"], key.kid());

        let mut parts: Vec<&str> = token.split('.').collect();
        let other = b64url(br#"{"sub":"b"}"#);
        parts[1] = &other;
        let forged = CompactJws::parse(&parts.join(".")).unwrap();
        assert!(!verifier.verify(&forged));
    }

    #[test]
    fn pem_round_trip_keeps_the_key_and_its_kid() {
        let key = RsaSigningKey::generate().unwrap();
        let pem = crate::certs::pem_encode("PRIVATE KEY", &key.pkcs8_der().unwrap());
        let again = RsaSigningKey::from_pem(&pem, None).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert_eq!(again.public_jwk(), key.public_jwk());
        let named = RsaSigningKey::from_pem(&pem, Some("k1")).unwrap();
        assert_eq!(named.public_jwk()["kid"], "k1");
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 section 3.1 example key and its published thumbprint.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(
            rsa_thumbprint(n, "AQAB"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn malformed_tokens_are_errors_not_panics() {
        for bad in [
            "",
            "a",
            "a.b",
            "a.b.c.d",
            "!!.e30.AA",
            "e30.!!.AA",
            "W10.e30.AA",
            "e30.e30.*",
        ] {
            assert!(CompactJws::parse(bad).is_err(), "{bad}");
        }
        assert!(CompactJws::parse("e30.e30.").is_ok());
    }
}
