//! One token bucket per (consumer, grant), sized by the grant's rate limit
//! (or the configured default). Buckets live in a bounded cache, so a flood
//! of distinct consumers evicts idle buckets instead of exhausting memory.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use moka::sync::Cache;

/// Most buckets held at once.
const MAX_BUCKETS: u64 = 100_000;
/// A bucket idle this long is dropped (it would be full again anyway).
const BUCKET_IDLE: Duration = Duration::from_secs(3600);

/// A limit: `requests` per `per_seconds`, bursting up to `requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    pub requests: u32,
    pub per_seconds: u32,
}

/// The verdict, with what the IETF RateLimit headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Limited { retry_after_secs: u64 },
}

/// Buckets keyed by the policy's rate key (grant and consumer) and the limit.
pub struct RateLimits {
    buckets: Cache<(String, Limit), Arc<DefaultDirectRateLimiter>>,
    clock: DefaultClock,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            buckets: Cache::builder()
                .max_capacity(MAX_BUCKETS)
                .time_to_idle(BUCKET_IDLE)
                .build(),
            clock: DefaultClock::default(),
        }
    }
}

impl RateLimits {
    /// Takes one request from the bucket of `key` (one per consumer and grant).
    pub fn check(&self, key: &str, limit: Limit) -> Verdict {
        let Some(quota) = quota(limit) else {
            return Verdict::Allowed;
        };
        let key = (key.to_owned(), limit);
        let bucket = self
            .buckets
            .get_with(key, || Arc::new(RateLimiter::direct(quota)));
        match bucket.check() {
            Ok(()) => Verdict::Allowed,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Verdict::Limited {
                    retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                }
            }
        }
    }

    /// Buckets currently held (for metrics and the bounded-memory test).
    pub fn bucket_count(&self) -> u64 {
        self.buckets.run_pending_tasks();
        self.buckets.entry_count()
    }
}

fn quota(limit: Limit) -> Option<Quota> {
    let burst = NonZeroU32::new(limit.requests)?;
    let period =
        Duration::from_secs_f64(f64::from(limit.per_seconds.max(1)) / f64::from(limit.requests));
    Quota::with_period(period).map(|q| q.allow_burst(burst))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;

    #[test]
    fn bucket_allows_burst_then_limits_per_key() {
        let limits = RateLimits::default();
        let limit = Limit {
            requests: 3,
            per_seconds: 60,
        };
        for _ in 0..3 {
            assert_eq!(limits.check("g1/310000019", limit), Verdict::Allowed);
        }
        match limits.check("g1/310000019", limit) {
            Verdict::Limited { retry_after_secs } => assert!((1..=20).contains(&retry_after_secs)),
            Verdict::Allowed => panic!("fourth request in the window must be limited"),
        }
        assert_eq!(
            limits.check("g1/310000027", limit),
            Verdict::Allowed,
            "other consumer, own bucket"
        );
        assert_eq!(
            limits.check("g2/310000019", limit),
            Verdict::Allowed,
            "other grant, own bucket"
        );
    }

    #[test]
    fn store_is_bounded() {
        let limits = RateLimits {
            buckets: Cache::builder().max_capacity(100).build(),
            clock: DefaultClock::default(),
        };
        for i in 0..5_000 {
            limits.check(
                &format!("g/{i:09}"),
                Limit {
                    requests: 10,
                    per_seconds: 1,
                },
            );
        }
        assert!(limits.bucket_count() <= 100, "{}", limits.bucket_count());
    }
}
