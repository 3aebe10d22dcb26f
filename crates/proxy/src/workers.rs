//! Request workers: one single-threaded tokio runtime per core, each serving
//! the connections dealt to it.
//!
//! Why: on tokio's work-stealing runtime one request hops between threads
//! (connection task, request task, registry connection, audit
//! acknowledgement), and idle workers are woken to steal. The load profiles of
//! issue 7 had a quarter of the gateway's CPU in the kernel scheduler. A
//! connection pinned to one worker, which also drives its own registry
//! connections (`Upstream` keeps a pool per worker), keeps a request on one
//! thread. Figures in docs/BENCHMARKS.md.
//!
//! The acceptor deals connections out in turn, so workers hold equal numbers of
//! them. HTTP/2 carries many requests over one connection (an ingress in front
//! of the gateway may send everything over a few), so an HTTP/2 request moves
//! to another worker when its connection's worker has clearly more requests in
//! flight ([`Dealer::worker_for_request`]). It stays home otherwise: moving costs
//! wake-ups across threads, and dealing every HTTP/2 request out in turn cost a
//! fifth of the throughput at 50 connections (docs/BENCHMARKS.md).

use std::cell::Cell;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static WORKER_INDEX: Cell<Option<usize>> = const { Cell::new(None) };
    /// When this worker last went idle (its runtime parked), while it is parked.
    static PARKED_SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Time this worker has spent parked since it started.
    static IDLE: Cell<Duration> = const { Cell::new(Duration::ZERO) };
}

/// Time the worker running the caller has spent idle (nothing to run) since
/// it started; zero off the workers. Read on the worker's own thread, so it
/// costs no synchronisation: the registry limits (`registry_limit`) tell from
/// it whether a worker has time to spare.
pub fn idle_time() -> Duration {
    IDLE.with(Cell::get)
}

fn note_parked() {
    PARKED_SINCE.with(|since| since.set(Some(Instant::now())));
}

fn note_unparked() {
    if let Some(since) = PARKED_SINCE.with(Cell::take) {
        IDLE.with(|idle| idle.set(idle.get().saturating_add(since.elapsed())));
    }
}

/// The index of the worker running the caller, or `None` off the workers
/// (tests, tools, the admin listener).
pub fn current_index() -> Option<usize> {
    WORKER_INDEX.with(Cell::get)
}

/// The running workers. Dropping it stops them (dropping whatever still runs
/// on them); [`Workers::stop`] also waits for their threads.
pub struct Workers {
    dealer: Dealer,
    stops: Mutex<Vec<oneshot::Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Hands out worker runtimes in turn. Cheap to clone; holding one does not
/// keep the workers running.
#[derive(Clone)]
pub struct Dealer {
    handles: Arc<[Handle]>,
    next: Arc<AtomicUsize>,
    loads: Arc<[WorkerLoad]>,
}

/// One worker's requests, each counter on its own cache line: every worker
/// writes its own and reads the others'.
#[derive(Default)]
#[repr(align(64))]
struct WorkerLoad {
    in_flight: AtomicUsize,
    served: AtomicU64,
}

/// A request counted as running on a worker until dropped.
pub struct RequestSlot {
    loads: Arc<[WorkerLoad]>,
    worker: usize,
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        if let Some(load) = self.loads.get(self.worker) {
            load.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The worker an HTTP/2 request should run on, given each worker's requests in
/// flight: its connection's worker `home`, unless the least busy worker has
/// clearly fewer (its count plus a quarter plus two still under home's), so
/// that balanced workers keep their requests and a lone busy connection still
/// spreads.
fn least_busy_unless_home_is_close(home: usize, in_flight: impl Iterator<Item = usize>) -> usize {
    let mut home_load = None;
    let mut least = None;
    for (worker, load) in in_flight.enumerate() {
        if worker == home {
            home_load = Some(load);
        }
        if least.is_none_or(|(_, least_load)| load < least_load) {
            least = Some((worker, load));
        }
    }
    match (home_load, least) {
        (Some(home_load), Some((least, least_load)))
            if least_load + least_load / 4 + 2 < home_load =>
        {
            least
        }
        _ => home,
    }
}

impl Dealer {
    /// The worker for an HTTP/2 request arriving on a connection served by
    /// worker `home` (see the module notes).
    pub fn worker_for_request(&self, home: usize) -> usize {
        let in_flight = self
            .loads
            .iter()
            .map(|load| load.in_flight.load(Ordering::Relaxed));
        least_busy_unless_home_is_close(home, in_flight)
    }

    /// Counts a request as running on `worker` until the slot is dropped.
    pub fn begin_request(&self, worker: usize) -> RequestSlot {
        if let Some(load) = self.loads.get(worker) {
            load.in_flight.fetch_add(1, Ordering::Relaxed);
            load.served.fetch_add(1, Ordering::Relaxed);
        }
        RequestSlot {
            loads: Arc::clone(&self.loads),
            worker,
        }
    }

    /// Requests each worker has run since start, by worker index.
    pub fn requests_served(&self) -> Vec<u64> {
        self.loads
            .iter()
            .map(|load| load.served.load(Ordering::Relaxed))
            .collect()
    }

    /// Requests running on each worker now, by worker index.
    pub fn requests_in_flight(&self) -> Vec<usize> {
        self.loads
            .iter()
            .map(|load| load.in_flight.load(Ordering::Relaxed))
            .collect()
    }

    /// Worker `index`'s runtime, if there is such a worker.
    pub fn handle(&self, index: usize) -> Option<&Handle> {
        self.handles.get(index)
    }

    /// The next worker's runtime.
    pub fn next(&self) -> &Handle {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        // `handles` is never empty: `Workers::start` takes a non-zero count.
        &self.handles[turn % self.handles.len()]
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Never true; present because `len` is.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }
}

impl Workers {
    /// Starts `count` threads named `tollbu-worker-N`, each running a
    /// single-threaded runtime until stopped.
    pub fn start(count: NonZeroUsize) -> std::io::Result<Workers> {
        let mut handles = Vec::with_capacity(count.get());
        let mut stops = Vec::with_capacity(count.get());
        let mut threads = Vec::with_capacity(count.get());
        for index in 0..count.get() {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("tollbu-worker-{index}"))
                .spawn(move || {
                    WORKER_INDEX.with(|slot| slot.set(Some(index)));
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .on_thread_park(note_parked)
                        .on_thread_unpark(note_unparked)
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(runtime.handle().clone()));
                    // Runs the connections and requests spawned onto this
                    // runtime until told to stop (or the sender is dropped);
                    // dropping the runtime then drops whatever is left.
                    runtime.block_on(async {
                        let _ = stop_rx.await;
                    });
                })?;
            let handle = ready_rx
                .recv()
                .map_err(|_| std::io::Error::other("worker thread ended before it started"))??;
            handles.push(handle);
            stops.push(stop_tx);
            threads.push(thread);
        }
        Ok(Workers {
            dealer: Dealer {
                loads: handles.iter().map(|_| WorkerLoad::default()).collect(),
                handles: handles.into(),
                next: Arc::new(AtomicUsize::new(0)),
            },
            stops: Mutex::new(stops),
            threads: Mutex::new(threads),
        })
    }

    /// Deals out this pool's runtimes.
    pub fn dealer(&self) -> Dealer {
        self.dealer.clone()
    }

    /// Stops every worker and waits for its thread: blocking, so call it off
    /// the async threads (`spawn_blocking`).
    pub fn stop(&self) {
        self.stops
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// The default worker count: the CPUs this process may use (the standard
/// library counts the cgroup CPU quota, so a Kubernetes CPU limit is honoured).
pub fn default_count() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn workers(n: usize) -> Workers {
        Workers::start(NonZeroUsize::new(n).unwrap()).unwrap()
    }

    fn pick(home: usize, in_flight: &[usize]) -> usize {
        least_busy_unless_home_is_close(home, in_flight.iter().copied())
    }

    #[test]
    fn an_http2_request_stays_home_unless_another_worker_is_clearly_less_busy() {
        assert_eq!(pick(0, &[0, 0]), 0, "idle workers: stay");
        assert_eq!(pick(0, &[2, 0]), 0, "a small lead: stay");
        assert_eq!(pick(0, &[3, 0]), 1);
        assert_eq!(pick(1, &[0, 5, 1]), 0, "the least busy one");
        // Balanced but busy workers keep their requests (50 connections × 10 streams).
        assert_eq!(pick(0, &[260, 240]), 0);
        assert_eq!(pick(0, &[310, 240]), 1);
        assert_eq!(pick(7, &[0, 9]), 7, "an unknown worker is left alone");
    }

    #[test]
    fn a_lone_busy_connection_spreads_its_requests_over_every_worker() {
        let workers = workers(3);
        let dealer = workers.dealer();
        // Ten requests arrive at once on one connection served by worker 0.
        let slots: Vec<RequestSlot> = (0..10)
            .map(|_| dealer.begin_request(dealer.worker_for_request(0)))
            .collect();
        let served = dealer.requests_served();
        assert_eq!(served.iter().sum::<u64>(), 10);
        assert!(served.iter().all(|&n| n >= 2), "{served:?}");
        drop(slots);
        assert!(
            dealer
                .loads
                .iter()
                .all(|l| l.in_flight.load(Ordering::Relaxed) == 0)
        );
        // Once they are done, the next one stays home again.
        assert_eq!(dealer.worker_for_request(0), 0);
        workers.stop();
    }

    #[test]
    fn connections_are_dealt_to_each_worker_in_turn_and_each_knows_its_index() {
        let workers = workers(3);
        let dealer = workers.dealer();
        assert_eq!(dealer.len(), 3);
        let seen: Vec<(Option<usize>, String)> = (0..6)
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::channel();
                dealer.next().spawn(async move {
                    let name = std::thread::current().name().unwrap_or("").to_owned();
                    tx.send((current_index(), name)).unwrap();
                });
                rx.recv().unwrap()
            })
            .collect();
        let expected: Vec<(Option<usize>, String)> = [0, 1, 2, 0, 1, 2]
            .iter()
            .map(|&i| (Some(i), format!("tollbu-worker-{i}")))
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(current_index(), None, "the test thread is not a worker");
        workers.stop();
    }

    #[test]
    fn a_worker_counts_the_time_it_spends_with_nothing_to_run() {
        let workers = workers(1);
        let dealer = workers.dealer();
        let (tx, rx) = std::sync::mpsc::channel();
        dealer.next().spawn(async move {
            let before = idle_time();
            // Parks the worker: nothing else runs on it.
            tokio::time::sleep(Duration::from_millis(30)).await;
            let slept = idle_time() - before;
            // Keeps it busy: spinning never parks.
            let spin = Instant::now();
            let before_spin = idle_time();
            while spin.elapsed() < Duration::from_millis(30) {
                std::hint::spin_loop();
            }
            tx.send((slept, idle_time() - before_spin)).unwrap();
        });
        let (slept, spinning) = rx.recv().unwrap();
        assert!(
            slept >= Duration::from_millis(20),
            "idle while asleep: {slept:?}"
        );
        assert_eq!(
            spinning,
            Duration::ZERO,
            "idle while spinning: {spinning:?}"
        );
        assert_eq!(
            idle_time(),
            Duration::ZERO,
            "the test thread is not a worker"
        );
        workers.stop();
    }

    /// Spawns a task that never finishes on the next worker; the receiver
    /// reports (with a disconnect) when the task has been dropped.
    fn spawn_endless_task(workers: &Workers) -> std::sync::mpsc::Receiver<()> {
        let (dropped_tx, dropped_rx) = std::sync::mpsc::channel::<()>();
        workers.dealer().next().spawn(async move {
            let _dropped_when_this_goes = dropped_tx;
            std::future::pending::<()>().await;
        });
        dropped_rx
    }

    #[test]
    fn stop_ends_the_threads_and_drops_what_still_runs_on_them() {
        let workers = workers(2);
        // Stopping must drop the endless task, not wait for it.
        let dropped = spawn_endless_task(&workers);
        workers.stop();
        assert_eq!(
            dropped.recv_timeout(std::time::Duration::from_secs(10)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected),
            "the pending task was dropped with its runtime"
        );
        assert!(workers.threads.lock().unwrap().is_empty());
    }

    #[test]
    fn dropping_the_pool_stops_its_workers() {
        let workers = workers(1);
        let dropped = spawn_endless_task(&workers);
        drop(workers);
        assert_eq!(
            dropped.recv_timeout(std::time::Duration::from_secs(10)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
    }
}
