//! The gateway's shared state, built from a validated [`Config`]: token
//! verifier, policy set (swapped atomically on reload), upstream clients,
//! rate-limit buckets, audit log and metrics.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tollbu_audit::{AuditConfig, AuditLog, Durability};
use tollbu_policy::PolicySet;

use crate::authn::{IssuerSettings, TokenVerifier};
use crate::config::{Config, LimitsSection, parse_algorithms};
use crate::http_client::{ClientTls, build_client};
use crate::metrics::Metrics;
use crate::rate_limit::{Limit, RateLimits};
use crate::upstream::Upstream;

/// Why the gateway could not be built.
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
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen on {0}: {1}")]
    Listen(std::net::SocketAddr, std::io::Error),
}

/// Everything a request handler needs.
pub struct GatewayState {
    pub verifier: Arc<TokenVerifier>,
    policies: RwLock<Arc<PolicySet>>,
    pub policies_dir: PathBuf,
    pub upstreams: HashMap<String, Upstream>,
    pub rate_limits: RateLimits,
    pub default_rate_limit: Limit,
    pub audit: AuditLog,
    pub metrics: Metrics,
    pub limits: LimitsSection,
    pub policy_reload_failures: std::sync::atomic::AtomicU64,
}

impl GatewayState {
    /// Builds the state; opens (and recovers) the audit log.
    pub fn build(config: &Config) -> Result<GatewayState, BuildError> {
        let limits = config.limits.clone();
        let mut issuers = Vec::new();
        let mut jwks_client = None;
        for section in &config.issuers {
            let name = section.issuer.get_ref().clone();
            let algorithms = parse_algorithms(section.algorithms.get_ref())
                .map_err(|e| BuildError::Issuer(name.clone(), e))?;
            let jwks_url = section
                .jwks_url
                .get_ref()
                .parse()
                .map_err(|_| BuildError::Issuer(name.clone(), "bad jwks_url".into()))?;
            if section.ca.is_some() || jwks_client.is_none() {
                let ca = section.ca.as_ref().map(|p| config.resolve(p));
                jwks_client = Some(build_client(
                    &ClientTls {
                        ca: ca.as_deref(),
                        client_cert: None,
                    },
                    limits.connect_timeout(),
                )?);
            }
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
        let jwks_client = match jwks_client {
            Some(client) => client,
            None => build_client(&ClientTls::default(), limits.connect_timeout())?,
        };
        let verifier = Arc::new(TokenVerifier::new(
            issuers,
            jwks_client,
            limits.max_token_bytes,
        ));

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
            let client = build_client(
                &ClientTls {
                    ca: ca.as_deref(),
                    client_cert,
                },
                limits.connect_timeout(),
            )?;
            let upstream = Upstream::new(
                service.upstream.get_ref(),
                client,
                service.issuers.as_ref().map(|i| i.get_ref().clone()),
            )
            .map_err(|e| BuildError::Service(id.clone(), e.to_string()))?;
            upstreams.insert(id, upstream);
        }

        let policies_dir = config.resolve(&config.policies.dir);
        let policies = load_policies(&policies_dir)?;

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
        audit_config.checkpoint_interval =
            Duration::from_secs(audit.checkpoint_interval_secs.max(1));
        let (audit, recovery) =
            AuditLog::open(audit_config).map_err(|e| BuildError::Audit(e.to_string()))?;
        tracing::info!(?recovery, "audit log opened");

        Ok(GatewayState {
            verifier,
            policies: RwLock::new(Arc::new(policies)),
            policies_dir,
            upstreams,
            rate_limits: RateLimits::default(),
            default_rate_limit: Limit {
                requests: limits.default_rate_requests,
                per_seconds: limits.default_rate_per_seconds,
            },
            audit,
            metrics: Metrics::default(),
            limits,
            policy_reload_failures: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The policy set in force; cheap (one `Arc` clone).
    pub fn policies(&self) -> Arc<PolicySet> {
        match self.policies.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Loads the policy directory again and swaps it in if it validates;
    /// otherwise the set in force keeps serving. Returns the new version.
    pub fn reload_policies(&self) -> Result<String, BuildError> {
        match load_policies(&self.policies_dir) {
            Ok(set) => {
                let version = set.version().to_owned();
                match self.policies.write() {
                    Ok(mut guard) => *guard = Arc::new(set),
                    Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
                }
                tracing::info!(%version, "policies reloaded");
                Ok(version)
            }
            Err(error) => {
                self.policy_reload_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(%error, "policy reload refused; the previous set keeps serving");
                Err(error)
            }
        }
    }
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
