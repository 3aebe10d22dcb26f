//! Failed-login throttling for the console, by user name and client address.
//!
//! A name locked after a few failures from anywhere let whoever can reach the admin port lock the
//! security officers out of the audit trail at will (five wrong passwords every five minutes).
//! So failures count per name *and client address*: guessing from one address locks that
//! address out of that name, while officers connecting from elsewhere (a port-forward, the
//! internal ingress) still log in. Guessing spread over many addresses is bounded by a far
//! higher count per name over all addresses, and every attempt costs a full password hash either
//! way.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Failed logins for one name from one address before that address is locked out of the name.
pub const MAX_FAILURES: u32 = 5;
/// Failed logins for one name from all addresses together before the name is locked for all.
pub const MAX_FAILURES_ALL_ADDRESSES: u32 = 50;
/// How long a lockout lasts after the last failure; failures older than this are forgotten.
pub const LOCKOUT: Duration = Duration::from_secs(300);
/// Entries tracked at most; beyond it, expired entries go first, then those locking nothing.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl Failures {
    fn live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) < LOCKOUT
    }
}

/// Failed logins by (name, address) and by name.
#[derive(Default)]
pub struct LoginThrottle {
    by_address: HashMap<(String, IpAddr), Failures>,
    by_name: HashMap<String, Failures>,
}

impl LoginThrottle {
    /// True while `user` may not be tried from `addr`: too many failures from there, or from
    /// everywhere together.
    pub fn locked(&mut self, user: &str, addr: IpAddr, now: Instant) -> bool {
        let key = (user.to_owned(), client_key(addr));
        let from_here = over(&mut self.by_address, &key, MAX_FAILURES, now);
        let everywhere = over(&mut self.by_name, user, MAX_FAILURES_ALL_ADDRESSES, now);
        from_here || everywhere
    }

    pub fn failed(&mut self, user: &str, addr: IpAddr, now: Instant) {
        if self.by_address.len() >= MAX_TRACKED {
            prune(&mut self.by_address, MAX_FAILURES, now);
        }
        if self.by_name.len() >= MAX_TRACKED {
            prune(&mut self.by_name, MAX_FAILURES_ALL_ADDRESSES, now);
        }
        bump(
            &mut self.by_address,
            (user.to_owned(), client_key(addr)),
            now,
        );
        bump(&mut self.by_name, user.to_owned(), now);
    }

    /// A successful login clears that address's failures for the name (not the count over all
    /// addresses, which someone else may be driving).
    pub fn succeeded(&mut self, user: &str, addr: IpAddr) {
        self.by_address.remove(&(user.to_owned(), client_key(addr)));
    }
}

/// The address failures are counted under: an IPv4 address as itself (also when it arrives
/// IPv4-mapped on an IPv6 socket), an IPv6 one by its /64, which one host can fill with addresses.
fn client_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// Whether `key` has `max` or more live failures; forgets expired ones.
fn over<K, Q>(map: &mut HashMap<K, Failures>, key: &Q, max: u32, now: Instant) -> bool
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    match map.get(key) {
        Some(f) if !f.live(now) => {
            map.remove(key);
            false
        }
        Some(f) => f.count >= max,
        None => false,
    }
}

fn bump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Failures>, key: K, now: Instant) {
    let entry = map.entry(key).or_insert(Failures {
        count: 0,
        last: now,
    });
    if !entry.live(now) {
        entry.count = 0;
    }
    entry.count = entry.count.saturating_add(1);
    entry.last = now;
}

/// Makes room: expired entries go, and if that is not enough, those that lock nothing yet.
/// Live lockouts are never dropped, so flooding the table with names cannot lift one.
fn prune<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Failures>, max: u32, now: Instant) {
    map.retain(|_, f| f.live(now));
    if map.len() >= MAX_TRACKED {
        map.retain(|_, f| f.count >= max);
    }
}

/// The process's throttle.
static THROTTLE: LazyLock<Mutex<LoginThrottle>> = LazyLock::new(Mutex::default);

/// Runs `f` on the throttle, even if a panic poisoned it.
pub fn with_throttle<T>(f: impl FnOnce(&mut LoginThrottle) -> T) -> T {
    match THROTTLE.lock() {
        Ok(mut guard) => f(&mut guard),
        Err(poisoned) => f(&mut poisoned.into_inner()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn failures_from_one_address_lock_that_address_out_of_that_name_only() {
        let mut t = LoginThrottle::default();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(!t.locked("so", ip(1), t0));
            t.failed("so", ip(1), t0);
        }
        assert!(t.locked("so", ip(1), t0 + Duration::from_secs(10)));
        assert!(!t.locked("so", ip(2), t0), "another address still logs in");
        assert!(!t.locked("other", ip(1), t0), "another name from there too");
        assert!(!t.locked("so", ip(1), t0 + LOCKOUT + Duration::from_secs(1)));
    }

    #[test]
    fn an_ipv6_host_counts_as_its_64_and_a_mapped_ipv4_as_itself() {
        let mut t = LoginThrottle::default();
        let t0 = Instant::now();
        for n in 0..MAX_FAILURES {
            let rotating: IpAddr = format!("2001:db8:1:2::{:x}", n + 1).parse().unwrap();
            t.failed("so", rotating, t0);
        }
        assert!(t.locked("so", "2001:db8:1:2::ffff".parse().unwrap(), t0));
        assert!(!t.locked("so", "2001:db8:1:3::1".parse().unwrap(), t0));
        for _ in 0..MAX_FAILURES {
            t.failed("so", "::ffff:10.0.0.7".parse().unwrap(), t0);
        }
        assert!(t.locked("so", ip(7), t0));
    }

    #[test]
    fn guessing_spread_over_addresses_locks_the_name_for_all() {
        let mut t = LoginThrottle::default();
        let t0 = Instant::now();
        for n in 0..MAX_FAILURES_ALL_ADDRESSES {
            // Fewer than the per-address limit from each.
            t.failed("so", ip((n % 20) as u8), t0);
        }
        assert!(t.locked("so", ip(200), t0));
        assert!(!t.locked("other", ip(200), t0));
        assert!(!t.locked("so", ip(200), t0 + LOCKOUT + Duration::from_secs(1)));
    }

    #[test]
    fn a_success_clears_its_own_address_only_and_old_failures_are_forgotten() {
        let mut t = LoginThrottle::default();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            t.failed("so", ip(1), t0);
        }
        t.succeeded("so", ip(1));
        t.failed("so", ip(1), t0);
        assert!(!t.locked("so", ip(1), t0));
        // Failures older than the lockout start the count again.
        for _ in 0..MAX_FAILURES - 1 {
            t.failed("so", ip(3), t0);
        }
        let later = t0 + LOCKOUT + Duration::from_secs(1);
        t.failed("so", ip(3), later);
        assert!(!t.locked("so", ip(3), later));
    }

    /// Filling the table with other names (each attempt a full password hash) never lifts a live
    /// lockout, as clearing the table did.
    #[test]
    fn flooding_the_table_does_not_lift_a_lockout() {
        let mut t = LoginThrottle::default();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            t.failed("so", ip(1), t0);
        }
        for n in 0..MAX_TRACKED + 10 {
            t.failed(&format!("name-{n}"), ip(9), t0);
        }
        assert!(t.locked("so", ip(1), t0));
        assert!(t.by_address.len() <= MAX_TRACKED + 1);
        assert!(t.by_name.len() <= MAX_TRACKED + 1);
    }
}
