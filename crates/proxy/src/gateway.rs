//! The gateway's shared state, built from a validated [`Config`]: token
//! verifier, policy set (swapped atomically on reload), upstream clients,
//! rate-limit buckets, audit log and metrics.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tollbu_audit::{AuditConfig, AuditLog, Durability};
use tollbu_policy::PolicySet;

use crate::authn::{IssuerSettings, TokenVerifier};
use crate::config::{Config, LimitsSection, parse_algorithms};
use crate::http_client::{ClientTls, build_client, build_clients};
use crate::metrics::Metrics;
use crate::rate_limit::{Limit, RateLimits};
use crate::upstream::{Upstream, UpstreamCutoff};

/// Why the gateway could not be built. A cause is printed in the message and never also
/// returned as `source`, so an error chain (`{:#}`) names it once.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error("issuer `{0}`: {1}")]
    Issuer(String, String),
    #[error("service `{0}`: {1}")]
    Service(String, String),
    #[error("policies in `{dir}` are not valid:\n{errors}")]
    Policies { dir: String, errors: String },
    #[error("audit log: {0}")]
    Audit(String),
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    #[error("config: {0}")]
    Config(String),
    #[error("TLS: {0}")]
    Tls(crate::tls::TlsError),
    #[error("cannot listen on {0}: {1}")]
    Listen(std::net::SocketAddr, std::io::Error),
    #[error("cannot start the request workers: {0}")]
    Workers(std::io::Error),
}

impl From<crate::tls::TlsError> for BuildError {
    fn from(error: crate::tls::TlsError) -> Self {
        BuildError::Tls(error)
    }
}

/// Everything a request handler needs. Built from one config; a reload
/// builds a new one (sharing the audit log, metrics and rate buckets) and
/// swaps it in whole, so a request never sees half of two configs.
pub struct GatewayState {
    pub verifier: Arc<TokenVerifier>,
    issuer_settings: Vec<IssuerSettings>,
    pub policies: Arc<PolicySet>,
    pub policies_dir: PathBuf,
    pub upstreams: HashMap<String, Upstream>,
    pub rate_limits: Arc<RateLimits>,
    pub default_rate_limit: Limit,
    pub audit: AuditLog,
    pub metrics: Arc<Metrics>,
    pub limits: LimitsSection,
    /// Request spans are exported through this when telemetry is on.
    pub tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
    /// The request workers the registry pools are made for. Fixed at start: a
    /// reload keeps it, since the workers themselves do not change.
    workers: NonZeroUsize,
    /// Ends the registry exchanges a shutdown would otherwise cut without a
    /// record; kept by a reload, so requests on an older state end too.
    pub upstream_cutoff: UpstreamCutoff,
}

impl GatewayState {
    /// Builds the state; opens (and recovers) the audit log unless one is given.
    pub fn build(
        config: &Config,
        tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
        audit: Option<AuditLog>,
    ) -> Result<GatewayState, BuildError> {
        let audit = match audit {
            Some(log) => log,
            None => open_audit(config)?,
        };
        let mut state = Self::assemble(config, audit, None, Arc::default(), Arc::default())?;
        state.tracer = tracer;
        Ok(state)
    }

    /// Builds the state for a reloaded config, keeping what outlives a
    /// config: the audit log, metrics, rate buckets, and — when the issuer
    /// settings did not change — the verifier with its cached keys.
    pub fn rebuild(config: &Config, previous: &GatewayState) -> Result<GatewayState, BuildError> {
        let mut state = Self::assemble(
            config,
            previous.audit.clone(),
            Some(previous),
            Arc::clone(&previous.metrics),
            Arc::clone(&previous.rate_limits),
        )?;
        state.tracer = previous.tracer.clone();
        state.upstream_cutoff = previous.upstream_cutoff.clone();
        Ok(state)
    }

    fn assemble(
        config: &Config,
        audit: AuditLog,
        previous: Option<&GatewayState>,
        metrics: Arc<Metrics>,
        rate_limits: Arc<RateLimits>,
    ) -> Result<GatewayState, BuildError> {
        let limits = config.limits.clone();
        let workers = previous.map_or_else(|| config.gateway.worker_count(), |old| old.workers);
        let issuer_settings = issuer_settings(config)?;
        let verifier = match previous {
            Some(old) if old.issuer_settings == issuer_settings => Arc::clone(&old.verifier),
            _ => {
                let client = jwks_client(config)?;
                Arc::new(TokenVerifier::new(
                    issuer_settings.clone(),
                    client,
                    limits.max_token_bytes,
                ))
            }
        };
        let policies_dir = config.resolve(&config.policies.dir);
        let policies = Arc::new(load_policies(&policies_dir)?);
        Ok(GatewayState {
            verifier,
            issuer_settings,
            policies,
            policies_dir,
            upstreams: upstreams(config, workers)?,
            rate_limits,
            default_rate_limit: Limit {
                requests: limits.default_rate_requests,
                per_seconds: limits.default_rate_per_seconds,
            },
            audit,
            metrics,
            limits,
            tracer: None,
            workers,
            upstream_cutoff: UpstreamCutoff::default(),
        })
    }

    /// How many request workers to start (see the `workers` field).
    pub fn worker_count(&self) -> NonZeroUsize {
        self.workers
    }

    /// True when this state reuses `other`'s verifier (no key refetch needed).
    pub fn shares_verifier(&self, other: &GatewayState) -> bool {
        Arc::ptr_eq(&self.verifier, &other.verifier)
    }
}

fn issuer_settings(config: &Config) -> Result<Vec<IssuerSettings>, BuildError> {
    let mut issuers = Vec::new();
    for section in &config.issuers {
        let name = section.issuer.get_ref().clone();
        let algorithms = parse_algorithms(section.algorithms.get_ref())
            .map_err(|e| BuildError::Issuer(name.clone(), e))?;
        let jwks_url = section
            .jwks_url
            .get_ref()
            .parse()
            .map_err(|_| BuildError::Issuer(name.clone(), "bad jwks_url".into()))?;
        issuers.push(IssuerSettings {
            issuer: name,
            jwks_url,
            algorithms,
            audience: section.audience.clone(),
            leeway_secs: *section.leeway_secs.get_ref(),
            max_token_age_secs: section.max_token_age_secs,
            refresh_every: Duration::from_secs(section.jwks_refresh_secs.max(1)),
            min_refetch: Duration::from_secs(section.jwks_min_refetch_secs),
            fetch_timeout: Duration::from_secs(5),
        });
    }
    Ok(issuers)
}

/// One client for every JWKS fetch; a private CA named by any issuer is trusted.
fn jwks_client(config: &Config) -> Result<crate::http_client::HttpClient, BuildError> {
    let ca = config
        .issuers
        .iter()
        .find_map(|i| i.ca.as_ref())
        .map(|p| config.resolve(p));
    Ok(build_client(
        &ClientTls {
            ca: ca.as_deref(),
            client_cert: None,
        },
        config.limits.connect_timeout(),
    )?)
}

fn upstreams(
    config: &Config,
    workers: NonZeroUsize,
) -> Result<HashMap<String, Upstream>, BuildError> {
    let mut upstreams = HashMap::new();
    for service in &config.services {
        let id = service.id.get_ref().clone();
        let ca = service.upstream_ca.as_ref().map(|p| config.resolve(p));
        let cert = service
            .upstream_client_cert
            .as_ref()
            .map(|p| config.resolve(p));
        let key = service
            .upstream_client_key
            .as_ref()
            .map(|p| config.resolve(p));
        let client_cert = cert.as_deref().zip(key.as_deref());
        let tls = ClientTls {
            ca: ca.as_deref(),
            client_cert,
        };
        let connect_timeout = config.limits.connect_timeout();
        let client = build_client(&tls, connect_timeout)?;
        let cap = config.limits.upstream_max_connections;
        let per_worker = build_clients(
            &tls,
            connect_timeout,
            workers.get(),
            crate::upstream::worker_share(cap, workers.get()),
        )?;
        let upstream = Upstream::new(
            service.upstream.get_ref(),
            client,
            service.issuers.as_ref().map(|i| i.get_ref().clone()),
        )
        .map_err(|e| BuildError::Service(id.clone(), e.to_string()))?
        .with_max_connections(cap)
        .with_worker_clients(per_worker);
        upstreams.insert(id, upstream);
    }
    Ok(upstreams)
}

/// Loads everything `serve` loads from files, without binding a socket or opening the audit log:
/// issuer CAs, registry certificates and keys, the policies, the listener's TLS certificate and
/// key, and the audit log's keys. `tollbu config check` runs it.
pub fn check_files(config: &Config) -> Result<(), BuildError> {
    issuer_settings(config)?;
    jwks_client(config)?;
    load_policies(&config.resolve(&config.policies.dir))?;
    upstreams(config, NonZeroUsize::MIN)?;
    if let Some(tls) = &config.gateway.tls {
        crate::tls::server_config(&crate::tls::ServerTlsFiles {
            cert: config.resolve(&tls.cert),
            key: config.resolve(&tls.key),
            client_ca: tls.client_ca.as_ref().map(|p| config.resolve(p)),
        })?;
    }
    check_audit_keys(config)
}

/// The audit log's signing and pseudonymisation keys, read as the log reads them.
fn check_audit_keys(config: &Config) -> Result<(), BuildError> {
    let audit = &config.audit;
    let signing = config.resolve(&audit.signing_key);
    tollbu_audit::CheckpointSigner::from_pem_file(&signing, audit.origin.get_ref())
        .map_err(|e| BuildError::Audit(e.to_string()))?;
    tollbu_audit::Pseudonymiser::from_key_file(&config.resolve(&audit.pseudonym_key))
        .map_err(|e| BuildError::Audit(e.to_string()))?;
    Ok(())
}

fn open_audit(config: &Config) -> Result<AuditLog, BuildError> {
    check_audit_keys(config)?;
    let audit = &config.audit;
    let mut audit_config = AuditConfig::new(
        config.resolve(&audit.dir),
        audit.origin.get_ref().clone(),
        config.resolve(&audit.signing_key),
        config.resolve(&audit.pseudonym_key),
    );
    audit_config.durability = match audit.durability.as_str() {
        "relaxed" => Durability::Relaxed {
            fsync_interval: Duration::from_millis(100),
        },
        _ => Durability::Fsync,
    };
    audit_config.checkpoint_every = audit.checkpoint_every.max(1);
    audit_config.checkpoint_interval = Duration::from_secs(audit.checkpoint_interval_secs.max(1));
    let (log, recovery) =
        AuditLog::open(audit_config).map_err(|e| BuildError::Audit(e.to_string()))?;
    let truncated_at = recovery
        .truncated_at
        .as_ref()
        .map(|(path, offset, why)| format!("{}:{offset}: {why}", path.display()));
    let notes = recovery.notes.join("; ");
    // The same fields either way; a report that cut or rebuilt something is a warning.
    macro_rules! opened {
        ($level:ident, $message:literal) => {
            tracing::$level!(
                records = recovery.records,
                clean = recovery.is_clean(),
                truncated_bytes = recovery.truncated_bytes,
                truncated_at,
                tiles_rebuilt = recovery.tiles_rebuilt,
                reindexed = recovery.reindexed,
                checkpoint_size = recovery.checkpoint_size,
                notes,
                $message
            )
        };
    }
    if recovery.is_clean() {
        opened!(info, "audit log opened");
    } else {
        opened!(
            warn,
            "audit log opened after cutting or rebuilding part of it"
        );
    }
    Ok(log)
}

fn load_policies(dir: &std::path::Path) -> Result<PolicySet, BuildError> {
    match PolicySet::load_dir(dir) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                tracing::warn!(%warning, "policy warning");
            }
            Ok(loaded.set)
        }
        Err(error) => Err(BuildError::Policies {
            dir: dir.display().to_string(),
            errors: error.to_string(),
        }),
    }
}
