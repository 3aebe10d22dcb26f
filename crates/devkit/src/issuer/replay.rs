//! The replay cache: each grant `jti` is accepted once per client.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::issuer::grant::MAX_IAT_SKEW_SECS;

/// Above this many remembered jtis, expired ones are swept on insert.
const JTI_SWEEP_THRESHOLD: usize = 1024;

/// Remembers used `jti`s until the grant carrying them has expired, so each
/// grant is accepted at most once.
#[derive(Default)]
pub(crate) struct JtiCache {
    seen: Mutex<HashMap<(String, String), i64>>,
}

impl JtiCache {
    /// Records `(client, jti)`; false when it was already used.
    pub(crate) fn claim(&self, client_id: &str, jti: &str, exp: i64, now: i64) -> bool {
        let mut seen = match self.seen.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if seen.len() >= JTI_SWEEP_THRESHOLD {
            // Keep entries a little past exp so iat skew cannot revive them.
            seen.retain(|_, until| *until + MAX_IAT_SKEW_SECS >= now);
        }
        let key = (client_id.to_owned(), jti.to_owned());
        match seen.get(&key) {
            Some(until) if *until + MAX_IAT_SKEW_SECS >= now => false,
            _ => {
                seen.insert(key, exp);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn a_jti_is_accepted_once_then_forgotten_after_expiry() {
        let cache = JtiCache::default();
        assert!(cache.claim("c", "j1", 1_100, 1_000));
        assert!(!cache.claim("c", "j1", 1_100, 1_050));
        // Another client may use the same jti.
        assert!(cache.claim("d", "j1", 1_100, 1_050));
        // Long after expiry the entry no longer blocks (the grant itself would
        // be refused as expired anyway).
        assert!(cache.claim("c", "j1", 2_100, 2_000));
    }

    #[test]
    fn sweep_keeps_live_entries() {
        let cache = JtiCache::default();
        for i in 0..JTI_SWEEP_THRESHOLD {
            assert!(cache.claim("c", &format!("old{i}"), 100, 50));
        }
        assert!(cache.claim("c", "live", 10_000, 9_990));
        assert!(cache.claim("c", "trigger", 10_000, 9_990));
        assert!(!cache.claim("c", "live", 10_000, 9_995));
        assert!(cache.seen.lock().unwrap().len() <= 3);
    }
}
