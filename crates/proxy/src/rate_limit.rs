//! One token bucket per (consumer, grant), sized by the grant's rate limit
//! (or the configured default). Buckets live in a bounded cache, so a flood
//! of distinct consumers evicts idle buckets instead of exhausting memory.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use moka::sync::Cache;

/// Most buckets held at once.
const MAX_BUCKETS: u64 = 100_000;

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

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// A consumer's bucket under one grant, with the limit it was sized for: a reload that changes
/// the limit carries what was used over into a bucket of the new size.
struct Bucket {
    limit: Limit,
    limiter: Limiter,
}

/// The longest window a limit may have (a policy's `per_seconds`, `[limits]
/// default_rate_per_seconds`).
pub const MAX_WINDOW_SECS: u32 = 86_400;

/// A bucket idle for its whole window is full again, so it may go then, and not before: one idle
/// time for all, the longest window's (an hour handed a consumer of a daily limit a full bucket
/// after an idle hour). Memory stays bounded by [`MAX_BUCKETS`]: moka evicts the least useful
/// buckets first.
const BUCKET_IDLE: Duration = Duration::from_secs(MAX_WINDOW_SECS as u64 + 1);

/// Buckets keyed by the policy's rate key (grant and consumer).
pub struct RateLimits {
    buckets: Cache<String, Arc<Bucket>>,
    clock: DefaultClock,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits::with_capacity(MAX_BUCKETS)
    }
}

impl RateLimits {
    fn with_capacity(max_buckets: u64) -> Self {
        RateLimits {
            buckets: Cache::builder()
                .max_capacity(max_buckets)
                .time_to_idle(BUCKET_IDLE)
                .build(),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request from the bucket of `key` (one per consumer and grant).
    pub fn check(&self, key: &str, limit: Limit) -> Verdict {
        let Some(quota) = quota(limit) else {
            return Verdict::Allowed;
        };
        let mut bucket = self.buckets.get_with_by_ref(key, || {
            Arc::new(Bucket {
                limit,
                limiter: RateLimiter::direct(quota).with_middleware(),
            })
        });
        if bucket.limit != limit {
            bucket = Arc::new(resized(&bucket, limit, quota));
            self.buckets.insert(key.to_owned(), Arc::clone(&bucket));
        }
        match bucket.limiter.check() {
            Ok(_) => Verdict::Allowed,
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

/// A bucket for `limit` that starts with what `old` had used: an operator who lowers a limit
/// during abuse must not hand the abuser a full new burst, and one who raises it adds the
/// difference. (Reading `old`'s state takes one of its tokens; it is dropped right after.)
fn resized(old: &Bucket, limit: Limit, quota: Quota) -> Bucket {
    let old_left = match old.limiter.check() {
        Ok(snapshot) => snapshot.remaining_burst_capacity().saturating_add(1),
        Err(_) => 0,
    };
    let used = old.limit.requests.saturating_sub(old_left);
    let limiter = RateLimiter::direct(quota).with_middleware();
    if let Some(used) = NonZeroU32::new(used.min(limit.requests)) {
        // Within the burst by construction, so this cannot be refused for capacity.
        let _ = limiter.check_n(used);
    }
    Bucket { limit, limiter }
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
        let limits = RateLimits::with_capacity(100);
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

    #[test]
    fn a_changed_limit_starts_from_what_was_used() {
        let limits = RateLimits::default();
        let three = Limit {
            requests: 3,
            per_seconds: 600,
        };
        for key in ["g/310000019", "g/310000027"] {
            for _ in 0..3 {
                assert_eq!(limits.check(key, three), Verdict::Allowed);
            }
        }
        let two = Limit {
            requests: 2,
            ..three
        };
        assert!(
            matches!(limits.check("g/310000019", two), Verdict::Limited { .. }),
            "tightened while at the limit: still limited"
        );
        let ten = Limit {
            requests: 10,
            ..three
        };
        let allowed = (0..10)
            .filter(|_| limits.check("g/310000027", ten) == Verdict::Allowed)
            .count();
        assert_eq!(allowed, 7, "raised: the seven more the new limit gives");
        assert_eq!(
            limits.bucket_count(),
            2,
            "one bucket per consumer and grant"
        );
    }
}
