//! The issuer's signing keys: the current one signs, the previous one stays
//! published in the JWKS after a rotation so tokens it signed still verify.

use std::sync::{Arc, RwLock, RwLockReadGuard};

use bytes::Bytes;
use serde_json::json;

use crate::error::DevkitError;
use crate::jwt::RsaSigningKey;

pub(crate) struct KeySet {
    inner: RwLock<Keys>,
}

struct Keys {
    current: Arc<RsaSigningKey>,
    /// The JWKS document, rebuilt on rotation rather than per request.
    jwks: Bytes,
}

impl Keys {
    fn new(current: Arc<RsaSigningKey>, previous: Option<&RsaSigningKey>) -> Self {
        let keys: Vec<_> = std::iter::once(&current)
            .map(|k| &**k)
            .chain(previous)
            .map(|k| k.public_jwk().clone())
            .collect();
        let jwks = Bytes::from(serde_json::to_vec(&json!({ "keys": keys })).unwrap_or_default());
        Self { current, jwks }
    }
}

impl KeySet {
    pub(crate) fn new(initial: RsaSigningKey) -> Self {
        Self {
            inner: RwLock::new(Keys::new(Arc::new(initial), None)),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Keys> {
        // A panic while holding the lock cannot leave Keys half-updated: it is
        // replaced whole. So a poisoned lock is safe to keep using.
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn current(&self) -> Arc<RsaSigningKey> {
        self.read().current.clone()
    }

    pub(crate) fn jwks(&self) -> Bytes {
        self.read().jwks.clone()
    }

    /// Generates a new key, makes it current and keeps the old one published.
    /// The key before the old one is dropped from the JWKS.
    pub(crate) fn rotate(&self) -> Result<String, DevkitError> {
        let fresh = Arc::new(RsaSigningKey::generate()?);
        let kid = fresh.kid().to_owned();
        let mut keys = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let old = keys.current.clone();
        *keys = Keys::new(fresh, Some(&old));
        Ok(kid)
    }
}
