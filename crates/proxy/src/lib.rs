//! The Tollbu gateway: a reverse proxy in front of a public registry that
//! verifies Maskinporten-style tokens, decides each request against the
//! registry's data-sharing policies, forwards it, strips every field the
//! caller may not see, and records it in a tamper-evident audit log before
//! the answer is released.
//!
//! It does not hold policy logic (`tollbu-policy`) or log storage
//! (`tollbu-audit`); it wires them to HTTP. `start` is what the binary and the
//! end-to-end tests both call.
#![forbid(unsafe_code)]

pub mod admin;
pub mod authn;
pub mod body;
pub mod config;
pub mod console;
pub mod error;
pub mod gateway;
pub mod headers;
pub mod http_client;
pub mod http_version;
pub mod ids;
pub mod live;
pub mod metrics;
pub mod minimise;
pub mod operator_problem;
pub mod rate_limit;
pub mod registry_limit;
pub mod retention;
pub mod route;
pub mod server;
pub mod stack;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

pub use config::Config;
pub use gateway::{BuildError, GatewayState};
pub use live::Live;

/// A gateway that is serving; drop-safe, but call [`RunningGateway::shutdown`] to drain.
pub struct RunningGateway {
    pub plain_addr: Option<SocketAddr>,
    pub tls_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub live: Arc<Live>,
    stop: watch::Sender<bool>,
    graceful: Arc<hyper_util::server::graceful::GracefulShutdown>,
    /// The listeners and the admin port: each ends as soon as `stop` flips.
    tasks: Vec<JoinHandle<()>>,
    /// Reloads on renewed TLS files. Aborted at shutdown: a reload swaps
    /// nothing in until it has finished, and one waiting on an issuer's keys
    /// must not hold the drain.
    tls_watcher: JoinHandle<()>,
    /// The audit retention sweeps. Let finish within the grace (it stops
    /// between its prune calls), then aborted: each prune call is crash-safe.
    retention: JoinHandle<()>,
    grace: Duration,
    telemetry: telemetry::Telemetry,
    /// Serve the connections; dropped (so stopped) with the gateway.
    workers: workers::Workers,
}

/// Builds the state, fetches issuer keys once, binds every listener and serves.
pub async fn start(config: Config) -> Result<RunningGateway, BuildError> {
    start_with(config, None).await
}

/// As [`start`]; with `config_path`, a reload re-reads that file.
pub async fn start_with(
    config: Config,
    config_path: Option<std::path::PathBuf>,
) -> Result<RunningGateway, BuildError> {
    start_parts(config, config_path, None).await
}

/// As [`start`], with an audit log the caller opened (tests inject storage faults this way).
pub async fn start_with_audit(
    config: Config,
    audit: tollbu_audit::AuditLog,
) -> Result<RunningGateway, BuildError> {
    start_parts(config, None, Some(audit)).await
}

async fn start_parts(
    config: Config,
    config_path: Option<std::path::PathBuf>,
    audit: Option<tollbu_audit::AuditLog>,
) -> Result<RunningGateway, BuildError> {
    let telemetry = telemetry::Telemetry::init(&config.telemetry)?;
    let state = GatewayState::build(&config, telemetry.tracer(), audit)?;
    state.verifier.start_refresh().await;
    let tls_config = match &config.gateway.tls {
        Some(tls) => Some(tls::server_config(&tls::ServerTlsFiles {
            cert: config.resolve(&tls.cert),
            key: config.resolve(&tls.key),
            client_ca: tls.client_ca.as_ref().map(|p| config.resolve(p)),
        })?),
        None => None,
    };
    let workers = workers::Workers::start(state.worker_count()).map_err(BuildError::Workers)?;
    let live = Arc::new(Live::new(
        state,
        tls_config,
        config.clone(),
        config_path,
        workers.dealer(),
    ));
    let (stop, stop_rx) = watch::channel(false);
    let graceful = Arc::new(hyper_util::server::graceful::GracefulShutdown::new());
    let connections = Arc::new(Semaphore::new(config.limits.max_connections.max(1)));
    let mut tasks = Vec::new();

    let mut plain_addr = None;
    if let Some(addr) = config.gateway.listen {
        let listener = server::bind(addr).await?;
        plain_addr = listener.local_addr().ok();
        tasks.push(tokio::spawn(server::accept_loop(
            listener,
            false,
            Arc::clone(&live),
            Arc::clone(&connections),
            Arc::clone(&graceful),
            workers.dealer(),
            stop_rx.clone(),
        )));
    }
    let mut tls_addr = None;
    if let Some(tls) = &config.gateway.tls {
        let listener = server::bind(tls.listen).await?;
        tls_addr = listener.local_addr().ok();
        tasks.push(tokio::spawn(server::accept_loop(
            listener,
            true,
            Arc::clone(&live),
            Arc::clone(&connections),
            Arc::clone(&graceful),
            workers.dealer(),
            stop_rx.clone(),
        )));
    }
    let tls_watcher = tokio::spawn(Arc::clone(&live).watch_tls_files(stop_rx.clone()));
    let retention = tokio::spawn(retention::sweep_audit_log(
        Arc::clone(&live),
        stop_rx.clone(),
    ));
    let admin_listener = server::bind(config.admin.listen).await?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|e| BuildError::Listen(config.admin.listen, e))?;
    tasks.push(tokio::spawn(admin::serve(
        admin_listener,
        Arc::clone(&live),
        Arc::clone(&graceful),
        stop_rx,
    )));

    Ok(RunningGateway {
        plain_addr,
        tls_addr,
        admin_addr,
        live,
        stop,
        graceful,
        tasks,
        tls_watcher,
        retention,
        grace: Duration::from_millis(config.limits.shutdown_grace_ms),
        telemetry,
        workers,
    })
}

impl RunningGateway {
    /// Requests each request worker has run since start, by worker index: how
    /// evenly the load spreads over the cores.
    pub fn requests_per_worker(&self) -> Vec<u64> {
        self.live.workers.requests_served()
    }

    /// First step of shutdown: `/readyz` answers 503 while the listeners go on accepting and
    /// serving for `limits.shutdown_delay_ms` (as in force now; a reload changes it). Kubernetes
    /// takes the pod out of its endpoints as it sends SIGTERM, but kube-proxy and ingresses
    /// learn of it seconds later and meanwhile still send new connections here: a closed
    /// listener would refuse each one. The drain and its grace period start after the delay.
    async fn announce_shutdown(&self) {
        self.live
            .shutting_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let delay_ms = self.live.config().limits.shutdown_delay_ms;
        if delay_ms > 0 {
            tracing::info!(
                delay_ms,
                "shutting down: /readyz answers 503; serving on until the delay ends"
            );
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
    }

    /// Stops accepting, lets in-flight requests finish within the grace
    /// period, then flushes the audit log and writes a final checkpoint.
    /// Requests whose client already hung up count as in flight too: the
    /// registry may have answered them, so their records are still due.
    /// Registry exchanges still running shortly before the grace ends are
    /// ended as timeouts (see [`upstream::UpstreamCutoff`]), so that they are
    /// answered and recorded too.
    pub async fn shutdown(self) {
        self.announce_shutdown().await;
        let deadline = tokio::time::Instant::now() + self.grace;
        let _ = self.stop.send(true);
        // The drain starts at once: a reload or a retention sweep that happens
        // to run must not take the grace from the requests in flight.
        self.tls_watcher.abort();
        for task in self.tasks {
            let _ = task.await;
        }
        let cutoff = self.live.state().upstream_cutoff.clone();
        let cut_at = deadline - cutoff_margin(self.grace);
        let cutting = tokio::spawn(async move {
            tokio::time::sleep_until(cut_at).await;
            tracing::warn!(
                "shutdown grace period nearly over; ending registry exchanges still waiting as timeouts"
            );
            cutoff.cut();
        });
        match Arc::try_unwrap(self.graceful) {
            Ok(graceful) => {
                if tokio::time::timeout_at(deadline, graceful.shutdown())
                    .await
                    .is_err()
                {
                    tracing::warn!("shutdown grace period over; closing remaining connections");
                }
            }
            Err(_) => tracing::warn!("connections still referenced; not draining"),
        }
        let requests = &self.live.requests;
        requests.close();
        if tokio::time::timeout_at(deadline, requests.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                still_running = requests.len(),
                "shutdown grace period over; requests still running will fail closed without a record"
            );
        }
        cutting.abort();
        let mut retention = self.retention;
        if tokio::time::timeout_at(deadline, &mut retention)
            .await
            .is_err()
        {
            retention.abort();
        }
        // Bounded: a stalled audit volume must not hold the exit past the orchestrator's kill.
        // The final checkpoint is written first, the index after it (see `AuditLog::shutdown`).
        let flush_ms = self.live.config().limits.shutdown_flush_ms;
        let flush_deadline = tokio::time::Instant::now() + Duration::from_millis(flush_ms);
        let audit = self.live.state().audit.clone();
        match finish_by(flush_deadline, "tollbu-audit-flush", move || {
            audit.shutdown()
        })
        .await
        {
            Some(Ok(())) => tracing::info!("audit log flushed; final checkpoint written"),
            Some(Err(error)) => tracing::error!(%error, "audit log flush failed"),
            None => tracing::error!(
                flush_ms,
                "audit log flush did not finish within limits.shutdown_flush_ms; exiting without \
                 it: every answered request's record is already durable, and the next start \
                 checks what the last checkpoint does not cover and rebuilds the index"
            ),
        }
        let telemetry = self.telemetry;
        if finish_by(flush_deadline, "tollbu-telemetry-flush", move || {
            telemetry.shutdown()
        })
        .await
        .is_none()
        {
            tracing::warn!("telemetry export did not finish within limits.shutdown_flush_ms");
        }
        // Last: whatever still runs on a worker now (past the grace period) is
        // dropped, and its request fails closed as the log is already shut.
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
    }
}

/// Runs `job` on a thread of its own and waits for it until `deadline`; `None` if it has not
/// returned by then (or could not run). A thread still running is left behind and ends with the
/// process, where a runtime's blocking pool would hold the exit until it returns.
async fn finish_by<T: Send + 'static>(
    deadline: tokio::time::Instant,
    thread_name: &str,
    job: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(thread_name.to_owned())
        .spawn(move || {
            let _ = done.send(job());
        })
        .ok()?;
    tokio::time::timeout_at(deadline, finished).await.ok()?.ok()
}

/// How long before the grace ends the registry exchanges still running are
/// ended: time left to record and answer them. A second, or half a short grace.
fn cutoff_margin(grace: Duration) -> Duration {
    Duration::from_secs(1).min(grace / 2)
}
