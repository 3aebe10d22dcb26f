//! How many exchanges one request worker runs at once with one registry:
//! adaptive, between a floor and the worker's share of
//! `[limits] upstream_max_connections`.
//!
//! Why: an HTTP/1 exchange holds a registry connection, and each costs ≈ 40
//! KiB in the gateway (hyper's buffers, its dispatch channel, the connection
//! task) and a socket and a worker at the registry. The cap has to be large
//! for a slow registry: at 50 ms an answer, 128 exchanges serve 2,560 requests
//! a second. But when the gateway's own CPU is what limits throughput, as
//! with a fast registry under heavy load, exchanges beyond a handful only
//! wait in the worker's run queue, and a fixed cap still opens every
//! connection it allows (256 at 1,000 client connections: ≈ 10 MiB).
//!
//! So the limit starts at the floor and, once every [`WINDOW`] in which
//! requests waited for it, moves:
//! - up by half when the worker had time to spare (idle at least half the
//!   window), or when the registry's own time dominates the exchanges (the
//!   fastest took at least 10 ms and four times the worker's run-queue delay,
//!   or none finished): more exchanges then mean more answers;
//! - down by an eighth when the worker was busy throughout (idle < 0.5 %) and
//!   the exchanges were mostly time spent in the worker's queue: fewer of them
//!   lose no throughput, and the requests wait for a slot instead, holding no
//!   registry connection.
//!
//! The bars for growing are high on purpose: on a machine whose cores are
//! shared a worker also idles, and a fast registry's answers also take a few
//! milliseconds, while the other processes run; a first version that grew at
//! 2 % idle rose to the cap at 1,000 connections and saved nothing.
//!
//! What that leaves: a registry answering in 10 ms or more gets its whole
//! share even while another registry's traffic keeps the worker busy. One
//! answering in 1–10 ms keeps the limit it has (at least the floor: 1,600
//! answers a second per worker at 10 ms) while other traffic keeps the worker
//! busy more than half the time; on its own, its traffic cannot (at 5 ms,
//! 3,200 answers a second cost a worker ≈ 13 % of a core), so the worker idles
//! and the limit grows. The cap still bounds what any registry sees. Figures
//! in docs/BENCHMARKS.md.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{AcquireError, Semaphore, SemaphorePermit, TryAcquireError};

/// How often the limit may move.
pub const WINDOW: Duration = Duration::from_millis(50);

/// The lowest limit (or the share, if smaller). Enough for a worker at full
/// load: 16 cost 11–18 % of the throughput at 1,000 connections in two of
/// three pairs of the load benchmark (fewer requests reached each audit group
/// commit), 32 nothing measurable (docs/BENCHMARKS.md).
pub const FLOOR: usize = 32;

/// A worker idle at least this fraction of a window had time for more exchanges. High, because
/// on a machine whose cores are shared (the registry, the audit writer, other processes) a worker
/// also idles while the others run: 5–20 % of each window at 1,000 connections in the load
/// benchmark, where more exchanges only queued (docs/BENCHMARKS.md).
const IDLE_TO_GROW: f64 = 0.5;

/// A worker idle less than this fraction of a window had none to spare.
const IDLE_WHEN_BUSY: f64 = 0.005;

/// The fastest exchange taking this many run-queue delays or more is mostly the registry's time…
const REGISTRY_BOUND_FACTOR: u32 = 4;

/// …if it also took at least this long: a registry that slow needs many exchanges at once for
/// any throughput, while a few milliseconds also come from the registry being descheduled on a
/// busy machine, which more exchanges would not help.
const REGISTRY_BOUND_AT_LEAST: Duration = Duration::from_millis(10);

/// One worker's limit for one registry. Used only on that worker's thread
/// (the lock is never contended), and from nowhere else.
pub struct AdaptiveLimit {
    permits: Semaphore,
    floor: usize,
    cap: usize,
    window: Mutex<Window>,
}

/// What one window saw, and the limit it runs under.
struct Window {
    limit: usize,
    /// Permits to retire as they come back: a cut larger than what was free.
    owed: usize,
    started: Instant,
    /// The worker's idle time when the window started; `None` until the limit is first used on
    /// its worker (it is built on whichever thread loads the config, where idle time reads zero).
    idle_at_start: Option<Duration>,
    waits: u32,
    /// Requests waiting for a slot now (they count in every window they wait through).
    waiting: u32,
    fastest_exchange: Option<Duration>,
}

/// What decides the next limit.
#[derive(Debug, Clone, Copy)]
pub struct WindowSummary {
    /// Requests that found no free slot, or were still waiting for one at its end.
    pub waits: u32,
    /// Share of the window the worker spent idle.
    pub idle_fraction: f64,
    /// The fastest exchange that finished in the window; `None` if none did.
    pub fastest_exchange: Option<Duration>,
    /// The worker's run-queue delay, measured when it was busy.
    pub run_queue_delay: Option<Duration>,
}

/// An exchange slot; it goes back (or is retired, after a cut) when dropped.
pub struct Slot<'a> {
    permit: Option<SemaphorePermit<'a>>,
    limit: &'a AdaptiveLimit,
    acquired: Instant,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let took = self.acquired.elapsed();
        let mut window = self.limit.window();
        window.fastest_exchange = Some(window.fastest_exchange.map_or(took, |f| f.min(took)));
        if window.owed > 0 {
            window.owed -= 1;
            if let Some(permit) = self.permit.take() {
                permit.forget();
            }
        }
    }
}

/// The next limit, from the current one and what its window saw.
pub fn next_limit(limit: usize, floor: usize, cap: usize, seen: &WindowSummary) -> usize {
    if seen.waits == 0 {
        // The limit did not bind: nothing says whether more or fewer would do.
        return limit;
    }
    let registry_bound = match (seen.fastest_exchange, seen.run_queue_delay) {
        (None, _) => true,
        (Some(fastest), Some(delay)) => {
            fastest >= REGISTRY_BOUND_AT_LEAST
                && fastest >= delay.saturating_mul(REGISTRY_BOUND_FACTOR)
        }
        (Some(_), None) => false,
    };
    if seen.idle_fraction >= IDLE_TO_GROW || registry_bound {
        limit.saturating_add((limit / 2).max(1)).min(cap)
    } else if seen.idle_fraction < IDLE_WHEN_BUSY {
        limit.saturating_sub((limit / 8).max(1)).max(floor)
    } else {
        limit
    }
}

impl AdaptiveLimit {
    /// A limit that never exceeds `cap` (at least 1), starting at the floor.
    pub fn new(cap: usize) -> AdaptiveLimit {
        let cap = cap.max(1);
        let floor = FLOOR.min(cap);
        AdaptiveLimit {
            permits: Semaphore::new(floor),
            floor,
            cap,
            window: Mutex::new(Window {
                limit: floor,
                owed: 0,
                started: Instant::now(),
                idle_at_start: None,
                waits: 0,
                waiting: 0,
                fastest_exchange: None,
            }),
        }
    }

    /// The exchanges allowed at once now.
    pub fn current(&self) -> usize {
        self.window().limit
    }

    fn window(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a slot, then moves the limit if its window is over.
    pub async fn acquire(&self) -> Result<Slot<'_>, AcquireError> {
        let permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => {
                let _waiting = Waiting::new(self);
                self.permits.acquire().await?
            }
            Err(TryAcquireError::Closed) => self.permits.acquire().await?,
        };
        if let Some(mut seen) = self.window_over() {
            // Only a window in which requests waited can move the limit (`next_limit`), and only a
            // busy one with finished exchanges needs the queue's delay to tell why.
            if seen.waits > 0
                && seen.idle_fraction < IDLE_TO_GROW
                && seen.fastest_exchange.is_some()
            {
                seen.run_queue_delay = Some(run_queue_delay().await);
            }
            self.apply(&seen);
        }
        Ok(Slot {
            permit: Some(permit),
            limit: self,
            acquired: Instant::now(),
        })
    }

    /// Ends the window if it has lasted [`WINDOW`], and says what it saw; the first call on the
    /// worker only starts the first window.
    fn window_over(&self) -> Option<WindowSummary> {
        let now = Instant::now();
        let mut window = self.window();
        let lasted = now.saturating_duration_since(window.started);
        if lasted < WINDOW && window.idle_at_start.is_some() {
            return None;
        }
        let idle = crate::workers::idle_time();
        let seen = window.idle_at_start.map(|idle_at_start| WindowSummary {
            waits: window.waits.saturating_add(window.waiting),
            idle_fraction: idle.saturating_sub(idle_at_start).as_secs_f64() / lasted.as_secs_f64(),
            fastest_exchange: window.fastest_exchange,
            run_queue_delay: None,
        });
        window.started = now;
        window.idle_at_start = Some(idle);
        window.waits = 0;
        window.fastest_exchange = None;
        seen
    }

    fn apply(&self, seen: &WindowSummary) {
        let mut window = self.window();
        let next = next_limit(window.limit, self.floor, self.cap, seen);
        if next != window.limit {
            tracing::debug!(
                from = window.limit,
                to = next,
                waits = seen.waits,
                idle = seen.idle_fraction,
                fastest_us = seen.fastest_exchange.map(|d| d.as_micros() as u64),
                queue_us = seen.run_queue_delay.map(|d| d.as_micros() as u64),
                "registry exchange limit moved"
            );
        }
        if next > window.limit {
            let mut more = next - window.limit;
            let repaid = more.min(window.owed);
            window.owed -= repaid;
            more -= repaid;
            self.permits.add_permits(more);
        } else if next < window.limit {
            let fewer = window.limit - next;
            let retired = self.permits.forget_permits(fewer);
            window.owed += fewer - retired;
        }
        window.limit = next;
    }
}

/// A request counted as waiting for a slot until dropped (served or given up).
struct Waiting<'a>(&'a AdaptiveLimit);

impl<'a> Waiting<'a> {
    fn new(limit: &'a AdaptiveLimit) -> Waiting<'a> {
        let mut window = limit.window();
        window.waits = window.waits.saturating_add(1);
        window.waiting = window.waiting.saturating_add(1);
        Waiting(limit)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut window = self.0.window();
        window.waiting = window.waiting.saturating_sub(1);
    }
}

/// How long a task that is ready to run waits for its turn on this worker.
async fn run_queue_delay() -> Duration {
    let asked = Instant::now();
    tokio::task::yield_now().await;
    asked.elapsed()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn seen(
        waits: u32,
        idle: f64,
        fastest: Option<Duration>,
        delay: Option<Duration>,
    ) -> WindowSummary {
        WindowSummary {
            waits,
            idle_fraction: idle,
            fastest_exchange: fastest,
            run_queue_delay: delay,
        }
    }

    #[test]
    fn a_limit_nobody_waited_for_stays() {
        assert_eq!(
            next_limit(20, 8, 128, &seen(0, 0.0, Some(MS), Some(MS))),
            20
        );
        assert_eq!(next_limit(20, 8, 128, &seen(0, 0.9, None, None)), 20);
    }

    #[test]
    fn a_worker_with_time_to_spare_gets_more_exchanges_up_to_the_cap() {
        assert_eq!(
            next_limit(8, 8, 128, &seen(3, 0.6, Some(MS / 10), None)),
            12
        );
        assert_eq!(
            next_limit(100, 8, 128, &seen(3, 0.6, Some(MS / 10), None)),
            128
        );
        assert_eq!(next_limit(128, 8, 128, &seen(3, 0.6, None, None)), 128);
        assert_eq!(next_limit(1, 1, 4, &seen(1, 0.6, None, None)), 2);
        // Idle a fifth of the time, answers of a few milliseconds: a busy shared machine, not a
        // worker with time to spare nor a slow registry.
        let shared_machine = seen(300, 0.2, Some(3 * MS), Some(MS / 2));
        assert_eq!(next_limit(40, 8, 128, &shared_machine), 40);
    }

    #[test]
    fn a_slow_registry_grows_its_limit_while_another_keeps_the_worker_busy() {
        // 50 ms answers, a worker never idle with a 1 ms queue: the registry is the wait.
        assert_eq!(
            next_limit(8, 8, 128, &seen(40, 0.0, Some(50 * MS), Some(MS))),
            12
        );
        // Nothing finished within the window at all.
        assert_eq!(next_limit(8, 8, 128, &seen(40, 0.0, None, None)), 12);
    }

    #[test]
    fn a_busy_worker_whose_exchanges_are_its_own_queue_gives_slots_back_down_to_the_floor() {
        let queue_bound = seen(400, 0.001, Some(2 * MS), Some(MS));
        assert_eq!(next_limit(64, 8, 128, &queue_bound), 56);
        assert_eq!(next_limit(9, 8, 128, &queue_bound), 8);
        assert_eq!(next_limit(8, 8, 128, &queue_bound), 8);
        // Idle between the two bounds: left alone.
        assert_eq!(
            next_limit(64, 8, 128, &seen(400, 0.01, Some(2 * MS), Some(MS))),
            64
        );
    }

    /// Runs `f` on a one-worker pool and returns what it returned.
    fn on_a_worker<T: Send + 'static>(
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let workers = crate::workers::Workers::start(std::num::NonZeroUsize::MIN).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        workers.dealer().next().spawn(async move {
            let _ = tx.send(f.await);
        });
        let out = rx.recv().unwrap();
        workers.stop();
        out
    }

    /// Counts the exchanges running at once and the most seen.
    #[derive(Default)]
    struct AtOnce {
        running: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
    }

    impl AtOnce {
        async fn during<T>(&self, exchange: impl std::future::Future<Output = T>) -> T {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.running.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            let out = exchange.await;
            self.running.fetch_sub(1, SeqCst);
            out
        }

        fn most(&self) -> usize {
            self.most.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[test]
    fn exchanges_waiting_on_a_slow_registry_raise_the_limit_to_the_cap() {
        let (limit, most_at_once) = on_a_worker(async {
            let limit = std::sync::Arc::new(AdaptiveLimit::new(64));
            let at_once = std::sync::Arc::new(AtOnce::default());
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..100 {
                let (limit, at_once) = (limit.clone(), at_once.clone());
                tasks.spawn(async move {
                    for _ in 0..12 {
                        let _slot = limit.acquire().await.unwrap();
                        // A registry taking 20 ms an answer; the worker is idle meanwhile.
                        at_once
                            .during(tokio::time::sleep(Duration::from_millis(20)))
                            .await;
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
            (limit.current(), at_once.most())
        });
        assert_eq!(limit, 64, "the limit after 1,200 waits on a slow registry");
        assert_eq!(most_at_once, 64, "never more than the cap at once");
    }

    #[test]
    fn a_worker_kept_busy_by_fast_exchanges_gives_its_slots_back_to_the_floor() {
        let (limits, most_at_once) = on_a_worker(async {
            let limit = std::sync::Arc::new(AdaptiveLimit::new(64));
            // As if a slow spell had raised it to the cap: 32 → 48 → 64.
            for _ in 0..2 {
                limit.apply(&seen(1, 0.6, None, None));
            }
            let start = limit.current();
            let at_once = std::sync::Arc::new(AtOnce::default());
            let until = Instant::now() + Duration::from_millis(1500);
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..100 {
                let (limit, at_once) = (limit.clone(), at_once.clone());
                tasks.spawn(async move {
                    while Instant::now() < until {
                        {
                            let _slot = limit.acquire().await.unwrap();
                            // A registry that answers at once: the exchange is the worker's queue.
                            at_once.during(tokio::task::yield_now()).await;
                        }
                        // The rest of the request: CPU, so the worker never idles.
                        let spin = Instant::now();
                        while spin.elapsed() < Duration::from_micros(100) {
                            std::hint::spin_loop();
                        }
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
            ((start, limit.current()), at_once.most())
        });
        assert_eq!(
            limits,
            (64, FLOOR),
            "limit before and after 1.5 s of a busy worker"
        );
        assert!(most_at_once <= 64, "{most_at_once} at once");
    }

    #[test]
    fn a_limit_built_off_its_worker_does_not_read_the_worker_s_past_idle_time_as_its_own() {
        // Built here (where idle time reads zero), used on a worker that has slept (idle) first.
        let limit = std::sync::Arc::new(AdaptiveLimit::new(128));
        let on_worker = limit.clone();
        let (first, busy) = on_a_worker(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let first = on_worker.window_over().map(|seen| seen.idle_fraction);
            let spin = Instant::now();
            while spin.elapsed() < WINDOW + Duration::from_millis(10) {
                std::hint::spin_loop();
            }
            (
                first,
                on_worker.window_over().map(|seen| seen.idle_fraction),
            )
        });
        assert_eq!(first, None, "the first use only starts a window");
        let busy = busy.unwrap();
        assert!(busy < 0.01, "a window of spinning read as {busy} idle");
    }

    #[test]
    fn a_cut_beyond_the_free_slots_retires_slots_as_they_come_back() {
        let (after_cut, after_return) = on_a_worker(async {
            let limit = AdaptiveLimit::new(64);
            limit.apply(&seen(1, 0.6, None, None)); // 32 → 48
            let held: Vec<Slot<'_>> = {
                let mut held = Vec::new();
                for _ in 0..48 {
                    held.push(limit.acquire().await.unwrap());
                }
                held
            };
            // Busy, queue-bound: 48 → 42, though every slot is taken.
            limit.apply(&seen(5, 0.0, Some(2 * MS), Some(MS)));
            let after_cut = (limit.current(), limit.permits.available_permits());
            drop(held);
            (after_cut, limit.permits.available_permits())
        });
        assert_eq!(after_cut, (42, 0));
        assert_eq!(after_return, 42, "six returned slots retired");
    }
}
