//! Each trusted issuer's signing keys: fetched from its JWKS URL, cached,
//! refreshed in the background, and refetched on an unknown `kid` at most
//! once per `min_refetch` (single flight), so a flood of made-up kids cannot
//! turn the gateway into a load generator against the issuer.
//!
//! A failed or empty fetch never replaces keys we already hold: an issuer
//! that is down or serving garbage does not stop tokens signed by known keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use sha2::Digest;
use tokio::sync::Mutex;

use crate::http_client::HttpClient;

/// Largest JWKS document we will read.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// At most this many keys are kept from one document.
const MAX_KEYS: usize = 64;

/// One usable verification key.
pub struct VerificationKey {
    pub key: DecodingKey,
    /// `alg` the JWK pins the key to, if it says.
    pub pinned_alg: Option<Algorithm>,
    family: KeyFamily,
    /// SHA-256 of the JWK as parsed (key material, `alg`, `use`, `kid`): the same key under the
    /// same kid has the same fingerprint across refetches; a key replaced under its kid does not.
    pub fingerprint: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    EcP256,
}

impl VerificationKey {
    /// Whether this key may verify a token signed with `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        let family_fits = match self.family {
            KeyFamily::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            KeyFamily::EcP256 => alg == Algorithm::ES256,
        };
        family_fits && self.pinned_alg.is_none_or(|pinned| pinned == alg)
    }
}

/// Why keys could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    #[error("fetching `{0}` failed: {1}")]
    Fetch(String, String),
    #[error("`{0}` answered HTTP {1}")]
    Status(String, u16),
    #[error("`{0}` did not answer within the timeout")]
    Timeout(String),
    #[error("`{0}` is not a JWKS document")]
    NotJwks(String),
    #[error("`{0}` holds no usable signing key")]
    NoUsableKey(String),
}

/// The keys of one issuer plus the refresh bookkeeping.
pub struct IssuerKeys {
    jwks_url: http::Uri,
    keys: RwLock<Arc<HashMap<String, Arc<VerificationKey>>>>,
    /// Held while fetching; records when the last fetch started.
    refresh_gate: Mutex<Option<Instant>>,
    min_refetch: Duration,
    fetch_timeout: Duration,
    /// Counters for readiness and metrics.
    pub fetches: AtomicU64,
    pub failures: AtomicU64,
    last_error: RwLock<Option<String>>,
}

/// Why a refresh was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshReason {
    Scheduled,
    UnknownKid,
}

impl IssuerKeys {
    pub fn new(jwks_url: http::Uri, min_refetch: Duration, fetch_timeout: Duration) -> Self {
        IssuerKeys {
            jwks_url,
            keys: RwLock::new(Arc::new(HashMap::new())),
            refresh_gate: Mutex::new(None),
            min_refetch,
            fetch_timeout,
            fetches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: RwLock::new(None),
        }
    }

    /// The key for `kid`, if held.
    pub fn get(&self, kid: &str) -> Option<Arc<VerificationKey>> {
        self.keys
            .read()
            .ok()
            .and_then(|keys| keys.get(kid).cloned())
    }

    /// Number of keys held; zero means tokens from this issuer cannot verify.
    pub fn key_count(&self) -> usize {
        self.keys.read().map(|keys| keys.len()).unwrap_or(0)
    }

    /// The last fetch error, for readiness reporting.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().ok().and_then(|e| e.clone())
    }

    /// How long until a token naming a kid not held may make the gateway fetch the key set again
    /// (zero once `min_refetch` has passed since the last fetch began, or while one is running):
    /// what a client refused for want of keys is told to wait.
    pub fn refetch_wait(&self) -> Duration {
        match self.refresh_gate.try_lock() {
            Ok(gate) => gate.map_or(Duration::ZERO, |started| {
                self.min_refetch.saturating_sub(started.elapsed())
            }),
            Err(_) => Duration::ZERO,
        }
    }

    /// Fetches the JWKS unless an unknown-kid refresh ran too recently.
    /// Concurrent callers wait for the one fetch in flight instead of starting their own.
    pub async fn refresh(
        &self,
        client: &HttpClient,
        reason: RefreshReason,
    ) -> Result<(), JwksError> {
        let mut gate = self.refresh_gate.lock().await;
        if reason == RefreshReason::UnknownKid
            && let Some(started) = *gate
            && started.elapsed() < self.min_refetch
        {
            return Ok(());
        }
        *gate = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let outcome = self.fetch(client).await;
        match &outcome {
            Ok(keys) => {
                if let Ok(mut held) = self.keys.write() {
                    *held = Arc::new(keys.clone());
                }
                if let Ok(mut last) = self.last_error.write() {
                    *last = None;
                }
            }
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(jwks_url = %self.jwks_url, %error, "JWKS refresh failed; keeping cached keys");
                if let Ok(mut last) = self.last_error.write() {
                    *last = Some(error.to_string());
                }
            }
        }
        outcome.map(|_| ())
    }

    async fn fetch(
        &self,
        client: &HttpClient,
    ) -> Result<HashMap<String, Arc<VerificationKey>>, JwksError> {
        let url = self.jwks_url.to_string();
        let request = http::Request::get(self.jwks_url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(
                Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .map_err(|e| JwksError::Fetch(url.clone(), e.to_string()))?;
        let exchange = async {
            let response = client
                .request(request)
                .await
                .map_err(|e| JwksError::Fetch(url.clone(), e.to_string()))?;
            if !response.status().is_success() {
                return Err(JwksError::Status(url.clone(), response.status().as_u16()));
            }
            Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map(|collected| collected.to_bytes())
                .map_err(|e| JwksError::Fetch(url.clone(), e.to_string()))
        };
        let body = tokio::time::timeout(self.fetch_timeout, exchange)
            .await
            .map_err(|_| JwksError::Timeout(url.clone()))??;
        let keys = parse_jwks(&body).ok_or_else(|| JwksError::NotJwks(url.clone()))?;
        if keys.is_empty() {
            return Err(JwksError::NoUsableKey(url));
        }
        Ok(keys)
    }
}

/// Parses a JWKS document, keeping only RSA and P-256 signature keys that
/// carry a `kid`. Symmetric (`oct`) keys are never accepted.
pub fn parse_jwks(body: &[u8]) -> Option<HashMap<String, Arc<VerificationKey>>> {
    let document: Value = serde_json::from_slice(body).ok()?;
    let entries = document.get("keys")?.as_array()?;
    let mut keys = HashMap::new();
    for entry in entries.iter().take(MAX_KEYS) {
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            continue;
        };
        if let Some(key) = usable_key(&jwk)
            && let Some(kid) = jwk.common.key_id.clone()
        {
            keys.insert(kid, Arc::new(key));
        }
    }
    Some(keys)
}

fn usable_key(jwk: &Jwk) -> Option<VerificationKey> {
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != jsonwebtoken::jwk::PublicKeyUse::Signature
    {
        return None;
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
        AlgorithmParameters::EllipticCurve(params)
            if params.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
        {
            KeyFamily::EcP256
        }
        _ => return None,
    };
    let pinned_alg = match jwk.common.key_algorithm {
        None => None,
        Some(alg) => Some(signature_algorithm(alg)?),
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    let fingerprint = sha2::Sha256::digest(serde_json::to_vec(jwk).ok()?).into();
    Some(VerificationKey {
        key,
        pinned_alg,
        family,
        fingerprint,
    })
}

fn signature_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keeps_rsa_keys_and_drops_symmetric_ones() {
        let doc = br#"{"keys":[
            {"kty":"RSA","kid":"r1","use":"sig","alg":"RS256","n":"6AC8_CTZPYifrHrwXFmamiFx9qUrKVrJoTE9QJIIgDJKHyrR8u-0P49jBSmpauuVobLYI5OfGHIeKj742BuMFVV16Bs-GDHaCMtMarr-doaSds2sdXqdC-nIMrBfhLqs75KHepCiMey3phlmrulRh7Z_8qeOS-cYo73jtKN56yICb9qpp_Af0GCl5O8qoXhJtQa9ISlPvDwOiAqBEtp22e3WupkVj0GfGg-K1rSUbwK2nh9-OQA1u5arRoFX3veqXaRS0cCtB42b0nT45f2c03pff76uwUCWYla3212T7szf4Cnh3-Udk1d3cj3enTIPW6opX2uxGRpg8PY2sq7EjQ","e":"AQAB"},
            {"kty":"oct","kid":"h1","k":"c2VjcmV0"},
            {"kty":"RSA","n":"AQAB","e":"AQAB"},
            {"kty":"RSA","kid":"enc","use":"enc","n":"AQAB","e":"AQAB"},
            {"garbage":true}
        ]}"#;
        let keys = parse_jwks(doc).unwrap();
        assert_eq!(keys.len(), 1);
        let key = keys.get("r1").unwrap();
        assert!(key.accepts(Algorithm::RS256));
        assert!(!key.accepts(Algorithm::RS512), "pinned to RS256");
        assert!(!key.accepts(Algorithm::HS256));
        assert!(!key.accepts(Algorithm::ES256));
    }

    #[test]
    fn a_key_replaced_under_its_kid_has_another_fingerprint() {
        let doc = |n: &str| {
            format!(
                r#"{{"keys":[{{"kty":"RSA","kid":"r1","use":"sig","alg":"RS256","n":"{n}","e":"AQAB"}}]}}"#
            )
        };
        let n1 = "6AC8_CTZPYifrHrwXFmamiFx9qUrKVrJoTE9QJIIgDJKHyrR8u-0P49jBSmpauuVobLYI5OfGHIeKj742BuMFVV16Bs-GDHaCMtMarr-doaSds2sdXqdC-nIMrBfhLqs75KHepCiMey3phlmrulRh7Z_8qeOS-cYo73jtKN56yICb9qpp_Af0GCl5O8qoXhJtQa9ISlPvDwOiAqBEtp22e3WupkVj0GfGg-K1rSUbwK2nh9-OQA1u5arRoFX3veqXaRS0cCtB42b0nT45f2c03pff76uwUCWYla3212T7szf4Cnh3-Udk1d3cj3enTIPW6opX2uxGRpg8PY2sq7EjQ";
        let n2 = n1.replace("6AC8", "7AC8");
        let fingerprint = |n: &str| parse_jwks(doc(n).as_bytes()).unwrap()["r1"].fingerprint;
        assert_eq!(fingerprint(n1), fingerprint(n1), "stable across fetches");
        assert_ne!(fingerprint(n1), fingerprint(&n2));
    }

    #[test]
    fn garbage_is_not_a_jwks() {
        assert!(parse_jwks(b"<html>").is_none());
        assert!(parse_jwks(br#"{"nokeys":1}"#).is_none());
        assert!(parse_jwks(br#"{"keys":[]}"#).unwrap().is_empty());
    }
}
