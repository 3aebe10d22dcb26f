//! The configuration in force, and its reload.
//!
//! A reload (SIGHUP, `POST /admin/reload` or a change of the TLS files)
//! re-reads the config file (when the gateway was started from one), the
//! policies and the TLS certificate files, validates everything, and only
//! then swaps the new state in. A broken file is refused with a log line, a
//! metric and a `/readyz` note, and the previous set keeps serving. Reloads
//! run one at a time, in the order they were asked for, so the last one asked
//! for is the one left in force. Listener addresses, limits that shape
//! connections, and the audit section need a restart; a reload that changes
//! them says so.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::Config;
use crate::gateway::{BuildError, GatewayState};
use crate::tls;

/// The state and TLS configuration currently serving.
pub struct Live {
    state: RwLock<Arc<GatewayState>>,
    tls: Option<RwLock<Arc<rustls::ServerConfig>>>,
    config: RwLock<Config>,
    /// The configuration the process started with: what its listeners, workers and audit log
    /// were made from, so what a reload's restart-only settings are compared with.
    started: Config,
    config_path: Option<PathBuf>,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    /// Audit retention sweeps that failed (each is retried at the next sweep).
    pub retention_failures: AtomicU64,
    last_reload_error: RwLock<Option<String>>,
    /// Held across a whole reload. Without it a reload waiting on a new issuer's keys finished
    /// after a later one and swapped in the files as they were when it started (a policy set
    /// and an issuer since removed from disk). Tokio's mutex is fair: waiters go in order.
    reload_serial: tokio::sync::Mutex<()>,
    /// Set when shutdown begins: `/readyz` then answers 503 (see `limits.shutdown_delay_ms`).
    pub shutting_down: std::sync::atomic::AtomicBool,
    /// Client connections currently open on the gateway listeners.
    pub open_connections: AtomicU64,
    /// The request workers' runtimes and request counts (metrics read the counts).
    pub workers: crate::workers::Dealer,
    /// The per-request tasks still running. A request whose client hung up
    /// outlives its connection, so shutdown waits on these as well as on
    /// the connections before it closes the audit log: its record is due.
    pub requests: tokio_util::task::TaskTracker,
}

/// What a successful reload changed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    pub policy_version: String,
    pub keys_refetched: bool,
    pub tls_reloaded: bool,
    /// Settings that changed but only take effect after a restart.
    pub needs_restart: Vec<String>,
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    match lock.read() {
        Ok(guard) => guard.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn write<T>(lock: &RwLock<T>, value: T) {
    match lock.write() {
        Ok(mut guard) => *guard = value,
        Err(poisoned) => *poisoned.into_inner() = value,
    }
}

impl Live {
    pub fn new(
        state: GatewayState,
        tls: Option<Arc<rustls::ServerConfig>>,
        config: Config,
        config_path: Option<PathBuf>,
        workers: crate::workers::Dealer,
    ) -> Live {
        Live {
            state: RwLock::new(Arc::new(state)),
            tls: tls.map(RwLock::new),
            config: RwLock::new(config.clone()),
            started: config,
            config_path,
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            retention_failures: AtomicU64::new(0),
            last_reload_error: RwLock::new(None),
            reload_serial: tokio::sync::Mutex::new(()),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            open_connections: AtomicU64::new(0),
            workers,
            requests: tokio_util::task::TaskTracker::new(),
        }
    }

    /// The state serving now (one `Arc` clone).
    pub fn state(&self) -> Arc<GatewayState> {
        read(&self.state)
    }

    /// The configuration in force (a clone; the console reads its section per request).
    pub fn config(&self) -> Config {
        read(&self.config)
    }

    /// The TLS configuration new connections get.
    pub fn tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        self.tls.as_ref().map(read)
    }

    /// Why the last reload was refused, if it was.
    pub fn last_reload_error(&self) -> Option<String> {
        read(&self.last_reload_error)
    }

    /// Validates everything, then swaps it in; on any error nothing changes.
    ///
    /// Waits for a reload already running, then reads the files as they are
    /// by then. A reload that changes the issuers fetches every issuer's keys
    /// before it swaps in (one after another, each cut off by the 5 s fetch
    /// timeout), and a reload asked for meanwhile waits that long too.
    pub async fn reload(&self) -> Result<ReloadReport, BuildError> {
        let _one_at_a_time = self.reload_serial.lock().await;
        match self.try_reload().await {
            Ok(report) => {
                self.reloads.fetch_add(1, Ordering::Relaxed);
                write(&self.last_reload_error, None);
                tracing::info!(
                    policy_version = %report.policy_version,
                    keys_refetched = report.keys_refetched,
                    tls_reloaded = report.tls_reloaded,
                    needs_restart = report.needs_restart.join(", "),
                    "reloaded"
                );
                Ok(report)
            }
            Err(error) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                write(&self.last_reload_error, Some(error.to_string()));
                tracing::error!(%error, "reload refused; the previous configuration keeps serving");
                Err(error)
            }
        }
    }

    async fn try_reload(&self) -> Result<ReloadReport, BuildError> {
        let old_config = read(&self.config);
        let config_path = self.config_path.clone();
        let serves_tls = self.tls.is_some();
        let previous = self.state();
        // Reading files and compiling policies takes seconds for a large policy set: on a
        // blocking thread, so the runtime that accepts connections (and the admin port) is
        // not held meanwhile. (It was: every request waited for the whole reload.)
        let (new_config, tls, state, previous) = tokio::task::spawn_blocking(move || {
            let new_config = match &config_path {
                Some(path) => Config::load(path).map_err(|e| BuildError::Config(e.to_string()))?,
                None => old_config,
            };
            let tls = match (serves_tls, &new_config.gateway.tls) {
                (true, Some(section)) => Some(tls::server_config(&tls::ServerTlsFiles {
                    cert: new_config.resolve(&section.cert),
                    key: new_config.resolve(&section.key),
                    client_ca: section.client_ca.as_ref().map(|p| new_config.resolve(p)),
                })?),
                _ => None,
            };
            let state = GatewayState::rebuild(&new_config, &previous)?;
            Ok::<_, BuildError>((new_config, tls, state, previous))
        })
        .await
        .map_err(|e| BuildError::Config(format!("the reload stopped: {e}")))??;
        // Against the start, not the last reload: a setting changed twice still needs a restart
        // (and one changed back no longer does).
        let needs_restart = restart_only_changes(&self.started, &new_config);
        let keys_refetched = !state.shares_verifier(&previous);
        if keys_refetched {
            state.verifier.start_refresh().await;
        }
        let report = ReloadReport {
            policy_version: state.policies.version().to_owned(),
            keys_refetched,
            tls_reloaded: tls.is_some(),
            needs_restart,
        };
        write(&self.state, Arc::new(state));
        if let (Some(lock), Some(config)) = (&self.tls, tls) {
            write(lock, config);
        }
        write(&self.config, new_config);
        Ok(report)
    }
}

/// Size and modification time of each TLS file, to notice renewals.
pub fn tls_fingerprint(config: &Config) -> Vec<(PathBuf, Option<std::time::SystemTime>, u64)> {
    let Some(tls) = &config.gateway.tls else {
        return Vec::new();
    };
    [Some(&tls.cert), Some(&tls.key), tls.client_ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|path| {
            let path = config.resolve(path);
            let meta = std::fs::metadata(&path).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            (path, modified, meta.map(|m| m.len()).unwrap_or(0))
        })
        .collect()
}

impl Live {
    /// Reloads whenever the TLS files change; returns when `stop` flips.
    pub async fn watch_tls_files(
        self: std::sync::Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let every = read(&self.config)
            .gateway
            .tls
            .as_ref()
            .map(|t| t.reload_check_secs)
            .unwrap_or(0);
        if every == 0 {
            return;
        }
        let mut seen = tls_fingerprint(&read(&self.config));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(every)) => {}
                _ = stop.changed() => return,
            }
            let now = tls_fingerprint(&read(&self.config));
            if now != seen {
                tracing::info!("TLS files changed; reloading");
                // A half-written renewal fails validation and is retried on the next change.
                let _ = self.reload().await;
                seen = now;
            }
        }
    }
}

fn restart_only_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    if old.gateway.listen != new.gateway.listen
        || old.gateway.tls.as_ref().map(|t| t.listen) != new.gateway.tls.as_ref().map(|t| t.listen)
    {
        changed.push("gateway listen addresses".to_owned());
    }
    if old.gateway.workers != new.gateway.workers {
        changed.push("gateway.workers".to_owned());
    }
    if old.admin.listen != new.admin.listen {
        changed.push("admin.listen".to_owned());
    }
    // Retention is read at each sweep: a reload applies it.
    let opened_with = |audit: &crate::config::AuditSection| crate::config::AuditSection {
        retention_days: None,
        retired_dirs: Vec::new(),
        ..audit.clone()
    };
    if opened_with(&old.audit) != opened_with(&new.audit) {
        changed.push("audit".to_owned());
    }
    let (a, b) = (&old.limits, &new.limits);
    if (
        a.header_read_timeout_ms,
        a.max_header_count,
        a.max_header_bytes,
        a.max_connections,
        a.max_h2_streams,
    ) != (
        b.header_read_timeout_ms,
        b.max_header_count,
        b.max_header_bytes,
        b.max_connections,
        b.max_h2_streams,
    ) {
        changed.push("connection limits".to_owned());
    }
    for item in &changed {
        tracing::warn!(setting = %item, "changed on reload; takes effect after a restart");
    }
    changed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use std::path::Path;

    use super::*;
    use crate::config::tests::MINIMAL as CONFIG;

    fn parse(text: &str) -> Config {
        Config::parse(text, "t.toml", Path::new(".")).unwrap()
    }

    #[test]
    fn a_reload_that_changes_the_worker_count_says_it_needs_a_restart() {
        let old = parse(CONFIG);
        assert!(restart_only_changes(&old, &parse(CONFIG)).is_empty());
        let more = CONFIG.replace("8080\"", "8080\"\nworkers = 5");
        assert_eq!(
            restart_only_changes(&old, &parse(&more)),
            ["gateway.workers"]
        );
    }

    #[test]
    fn retention_settings_apply_on_reload_and_other_audit_settings_need_a_restart() {
        let old = parse(CONFIG);
        let retention = CONFIG.replace(
            "[audit]\n",
            "[audit]\nretention_days = 30\nretired_dirs = [\"old-audit\"]\n",
        );
        assert_ne!(retention, CONFIG);
        assert!(restart_only_changes(&old, &parse(&retention)).is_empty());
        let relaxed = CONFIG.replace("[audit]\n", "[audit]\ndurability = \"relaxed\"\n");
        assert_eq!(restart_only_changes(&old, &parse(&relaxed)), ["audit"]);
    }
}
