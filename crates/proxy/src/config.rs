//! `tollbu.toml`: the gateway's only configuration file, and the only module
//! that reads it. Parse errors name file, line and column; semantic errors
//! name file, line and the setting. Relative paths are resolved against the
//! directory of the config file. Every setting and default is documented in
//! `docs/configuration.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;
use toml::Spanned;

/// A config file that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The cause is part of the message, not a `source`: an error chain would print it twice.
    #[error("cannot read `{path}`: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: GatewaySection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default, rename = "issuer")]
    pub issuers: Vec<IssuerSection>,
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceSection>,
    pub policies: PoliciesSection,
    pub audit: AuditSection,
    #[serde(default)]
    pub telemetry: TelemetrySection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub console: ConsoleSection,
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Plaintext listener (HTTP/1.1 and h2c); absent means none.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// Request workers (threads serving connections); absent means one per
    /// CPU the process may use. See `workers`. Read at start only.
    #[serde(default)]
    pub workers: Option<std::num::NonZeroUsize>,
}

impl GatewaySection {
    /// `workers`, or one per CPU the process may use.
    pub fn worker_count(&self) -> std::num::NonZeroUsize {
        self.workers.unwrap_or_else(crate::workers::default_count)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub listen: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate from this CA bundle (mTLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// How often the certificate, key and CA files are checked for changes
    /// (a change triggers a reload, as SIGHUP does); 0 turns the check off.
    #[serde(default = "default_tls_reload_check")]
    pub reload_check_secs: u64,
}

fn default_tls_reload_check() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: default_admin_listen(),
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}

/// Sizes and timeouts; safe defaults for a registry gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub max_request_body_bytes: usize,
    pub max_response_body_bytes: usize,
    pub max_token_bytes: usize,
    pub header_read_timeout_ms: u64,
    pub upstream_connect_timeout_ms: u64,
    pub upstream_timeout_ms: u64,
    pub max_header_count: usize,
    pub max_header_bytes: usize,
    pub max_connections: usize,
    pub max_h2_streams: u32,
    pub shutdown_grace_ms: u64,
    /// On SIGTERM/SIGINT, how long `/readyz` answers 503 while the listeners keep accepting and
    /// serving, before the drain: load balancers (Kubernetes endpoints) take a few seconds to
    /// stop sending new connections, and a closed listener refuses each of them.
    pub shutdown_delay_ms: u64,
    /// After the drain, how long the audit log's final checkpoint and index flush may take before
    /// the process exits anyway: a stalled volume must not keep it past the orchestrator's kill
    /// (every record answered is already durable; the next open recovers the rest).
    pub shutdown_flush_ms: u64,
    /// Concurrent exchanges per registry (bounds upstream connections).
    pub upstream_max_connections: usize,
    /// Rate limit for grants that set none: requests per period.
    pub default_rate_requests: u32,
    pub default_rate_per_seconds: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_request_body_bytes: 1 << 20,
            max_response_body_bytes: 8 << 20,
            max_token_bytes: 16 << 10,
            header_read_timeout_ms: 10_000,
            upstream_connect_timeout_ms: 2_000,
            upstream_timeout_ms: 15_000,
            max_header_count: 100,
            max_header_bytes: 32 << 10,
            max_connections: 10_000,
            max_h2_streams: 100,
            shutdown_grace_ms: 10_000,
            shutdown_delay_ms: 0,
            shutdown_flush_ms: 4_000,
            upstream_max_connections: crate::upstream::DEFAULT_MAX_CONNECTIONS,
            default_rate_requests: 6_000,
            default_rate_per_seconds: 60,
        }
    }
}

impl LimitsSection {
    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_connect_timeout_ms)
    }
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSection {
    /// Exact `iss`, trailing slash included.
    pub issuer: Spanned<String>,
    pub jwks_url: Spanned<String>,
    #[serde(default = "default_algorithms")]
    pub algorithms: Spanned<Vec<String>>,
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default = "default_leeway")]
    pub leeway_secs: Spanned<i64>,
    #[serde(default = "default_max_token_age")]
    pub max_token_age_secs: i64,
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_secs: u64,
    #[serde(default = "default_jwks_min_refetch")]
    pub jwks_min_refetch_secs: u64,
    /// CA bundle for an issuer served over https with a private CA.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

fn default_algorithms() -> Spanned<Vec<String>> {
    Spanned::new(0..0, vec!["RS256".into(), "RS384".into(), "RS512".into()])
}
fn default_leeway() -> Spanned<i64> {
    Spanned::new(0..0, 10)
}
fn default_max_token_age() -> i64 {
    3600
}
fn default_jwks_refresh() -> u64 {
    300
}
fn default_jwks_min_refetch() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// First path segment, and the `service.id` of its policy.
    pub id: Spanned<String>,
    /// Base URL the rest of the path is appended to.
    pub upstream: Spanned<String>,
    /// Issuers whose tokens this service accepts; absent means every trusted issuer.
    #[serde(default)]
    pub issuers: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub upstream_ca: Option<PathBuf>,
    #[serde(default)]
    pub upstream_client_cert: Option<PathBuf>,
    #[serde(default)]
    pub upstream_client_key: Option<PathBuf>,
}

/// Log verbosity for `serve` (JSON lines on stderr).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// An `EnvFilter` directive such as `info` or `info,tollbu_proxy=debug`; `RUST_LOG` overrides it.
    pub level: Spanned<String>,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: Spanned::new(0..0, "info".into()),
        }
    }
}

/// Trace export; off unless an endpoint is given here or in `OTEL_*`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// OTLP/HTTP base URL, e.g. `http://otel-collector:4318`; `/v1/traces` is appended.
    pub otlp_endpoint: Option<String>,
    /// `service.name` unless `OTEL_SERVICE_NAME` is set.
    pub service_name: String,
    /// How often buffered spans are sent.
    pub export_interval_ms: u64,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            otlp_endpoint: None,
            service_name: "tollbu".into(),
            export_interval_ms: 5000,
        }
    }
}

/// The security officer console on the admin listener (`/console`); off by default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    pub enabled: bool,
    /// Who may log in; passwords are stored only as salted PBKDF2 hashes.
    pub users: Vec<ConsoleUser>,
    /// A session ends this long after login, whatever happens.
    pub session_ttl_secs: u64,
    /// … or after this long without a request.
    pub idle_timeout_secs: u64,
    /// Mark the session cookie `Secure` (when a TLS-terminating proxy fronts the admin port).
    pub cookie_secure: bool,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        ConsoleSection {
            enabled: false,
            users: Vec::new(),
            session_ttl_secs: 8 * 3600,
            idle_timeout_secs: 1800,
            cookie_secure: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleUser {
    pub name: Spanned<String>,
    /// `$pbkdf2-sha256$i=<iterations>,l=32$<base64 salt>$<base64 hash>` (PHC string format).
    pub password_hash: Spanned<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesSection {
    pub dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    pub dir: PathBuf,
    /// Unique log name; also the checkpoint key name. `${VAR}` is replaced
    /// from the environment (e.g. `${POD_NAME}`), so each replica of a
    /// StatefulSet gets its own log identity from one config file.
    pub origin: Spanned<String>,
    pub signing_key: PathBuf,
    pub pseudonym_key: PathBuf,
    /// `fsync` (default: ack after fsync) or `relaxed` (ack after write).
    #[serde(default = "default_durability")]
    pub durability: String,
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_secs: u64,
    /// Record bodies older than this many days are deleted, a whole segment at a time; their
    /// hashes stay, so the log still verifies. Absent: kept for ever.
    #[serde(default)]
    pub retention_days: Option<Spanned<u64>>,
    /// Earlier logs on the same volume that nothing writes any more, such as the previous
    /// generation's after a signing-key rotation. Their records are personal data with the same
    /// retention period, so `retention_days` applies to them too.
    #[serde(default)]
    pub retired_dirs: Vec<Spanned<PathBuf>>,
}

/// Longest retention accepted, a century: a larger figure is a typo, not a policy.
pub const MAX_RETENTION_DAYS: u64 = 36_500;

fn default_durability() -> String {
    "fsync".into()
}
/// The audit crate's defaults (see there for why).
fn default_checkpoint_every() -> u64 {
    tollbu_audit::DEFAULT_CHECKPOINT_EVERY
}
fn default_checkpoint_interval() -> u64 {
    tollbu_audit::DEFAULT_CHECKPOINT_INTERVAL.as_secs()
}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|error| ConfigError::Read {
            path: path.display().to_string(),
            error,
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid =
                String::from_utf8_lossy(&e.as_bytes()[..e.utf8_error().valid_up_to()]).into_owned();
            let (line, column) = line_col(&valid, valid.len());
            ConfigError::Invalid {
                path: path.display().to_string(),
                line,
                column,
                message: "the file is not UTF-8 text".into(),
            }
        })?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, &path.display().to_string(), &base_dir)
    }

    /// Parses and validates `text`; `name` is used in error messages.
    pub fn parse(text: &str, name: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
            ConfigError::Invalid {
                path: name.into(),
                line,
                column,
                message: e.message().trim().to_owned(),
            }
        })?;
        config.base_dir = base_dir.to_path_buf();
        config.validate(text, name)?;
        let origin = &config.audit.origin;
        let expanded =
            expand_env(origin.get_ref(), |var| std::env::var(var).ok()).map_err(|message| {
                let (line, column) = line_col(text, origin.span().start);
                ConfigError::Invalid {
                    path: name.into(),
                    line,
                    column,
                    message,
                }
            })?;
        config.audit.origin = Spanned::new(origin.span(), expanded);
        Ok(config)
    }

    fn validate(&self, text: &str, name: &str) -> Result<(), ConfigError> {
        let at = |span: std::ops::Range<usize>, message: String| {
            let (line, column) = line_col(text, span.start);
            ConfigError::Invalid {
                path: name.into(),
                line,
                column,
                message,
            }
        };
        if self.gateway.listen.is_none() && self.gateway.tls.is_none() {
            return Err(at(0..0, "`gateway` needs `listen`, `tls`, or both".into()));
        }
        let mut issuers_seen = std::collections::HashSet::new();
        for issuer in &self.issuers {
            let jwks_url =
                parse_uri(&issuer.jwks_url).map_err(|m| at(issuer.jwks_url.span(), m))?;
            if issuer.ca.is_some() && jwks_url.scheme_str() != Some("https") {
                return Err(at(
                    issuer.jwks_url.span(),
                    format!(
                        "`ca` is set but `{}` is not https: the CA would be ignored and the keys fetched in the clear",
                        issuer.jwks_url.get_ref()
                    ),
                ));
            }
            let name = issuer.issuer.get_ref();
            if name.is_empty() {
                return Err(at(
                    issuer.issuer.span(),
                    "`issuer` must not be empty".into(),
                ));
            }
            // Tokens are matched to an issuer by `iss`: a second entry would silently replace the
            // first one's key set and algorithms.
            if !issuers_seen.insert(name.clone()) {
                return Err(at(
                    issuer.issuer.span(),
                    format!("issuer `{name}` is defined twice"),
                ));
            }
            let in_issuer =
                |what: &str| at(issuer.issuer.span(), format!("issuer `{name}`: {what}"));
            if issuer.max_token_age_secs <= 0 {
                return Err(in_issuer("`max_token_age_secs` must be positive"));
            }
            if issuer.jwks_refresh_secs == 0 {
                return Err(in_issuer("`jwks_refresh_secs` must be at least 1"));
            }
            if issuer.audience.as_deref().is_some_and(str::is_empty) {
                return Err(in_issuer(
                    "`audience` must not be empty (leave it out to accept tokens without `aud`)",
                ));
            }
            parse_algorithms(issuer.algorithms.get_ref())
                .map_err(|m| at(issuer.algorithms.span(), m))?;
            if !(0..=60).contains(issuer.leeway_secs.get_ref()) {
                return Err(at(
                    issuer.leeway_secs.span(),
                    "`leeway_secs` must be between 0 and 60".into(),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for service in &self.services {
            // The first path segment names the service: an id no path can spell is never routed.
            if !crate::route::is_service_id(service.id.get_ref()) {
                return Err(at(
                    service.id.span(),
                    format!(
                        "service id `{}` must be 1-64 lowercase letters, digits, `-` or `_` (it is the first path segment)",
                        service.id.get_ref()
                    ),
                ));
            }
            if !seen.insert(service.id.get_ref().clone()) {
                return Err(at(
                    service.id.span(),
                    format!("service `{}` is defined twice", service.id.get_ref()),
                ));
            }
            let upstream =
                parse_uri(&service.upstream).map_err(|m| at(service.upstream.span(), m))?;
            // TLS settings on an `http` URL are a contradiction, most often a typo of the scheme:
            // followed silently, identity numbers and verified identities go out in the clear.
            let tls_settings = [
                ("upstream_ca", service.upstream_ca.is_some()),
                (
                    "upstream_client_cert",
                    service.upstream_client_cert.is_some(),
                ),
                ("upstream_client_key", service.upstream_client_key.is_some()),
            ];
            if let Some((key, _)) = tls_settings.iter().find(|(_, set)| *set)
                && upstream.scheme_str() != Some("https")
            {
                return Err(at(
                    service.upstream.span(),
                    format!(
                        "`{key}` is set but `{}` is not https: TLS settings would be ignored and requests sent in the clear",
                        service.upstream.get_ref()
                    ),
                ));
            }
            if let Some(issuers) = &service.issuers {
                for wanted in issuers.get_ref() {
                    if !self.issuers.iter().any(|i| i.issuer.get_ref() == wanted) {
                        return Err(at(
                            issuers.span(),
                            format!("`{wanted}` is not a configured issuer"),
                        ));
                    }
                }
            }
            if service.upstream_client_cert.is_some() != service.upstream_client_key.is_some() {
                return Err(at(
                    service.id.span(),
                    "`upstream_client_cert` and `upstream_client_key` go together".into(),
                ));
            }
        }
        self.validate_console(text, &at)?;
        if let Some(days) = &self.audit.retention_days
            && !(1..=MAX_RETENTION_DAYS).contains(days.get_ref())
        {
            return Err(at(
                days.span(),
                format!(
                    "`audit.retention_days` must be between 1 and {MAX_RETENTION_DAYS} (leave it out to keep every record)"
                ),
            ));
        }
        // A limit of 0 would read as "unlimited" to the rate limiter; a policy's own `requests = 0`
        // is refused too.
        // A timeout of 0 would end every exchange (or handshake) before it began.
        for (key, value) in [
            ("header_read_timeout_ms", self.limits.header_read_timeout_ms),
            (
                "upstream_connect_timeout_ms",
                self.limits.upstream_connect_timeout_ms,
            ),
            ("upstream_timeout_ms", self.limits.upstream_timeout_ms),
        ] {
            if value == 0 {
                let start = key_offset_in(text, "limits", key);
                return Err(at(
                    start..start,
                    format!("`limits.{key}` must be at least 1 (every request would time out)"),
                ));
            }
        }
        if self.limits.shutdown_flush_ms == 0 {
            let start = key_offset_in(text, "limits", "shutdown_flush_ms");
            return Err(at(
                start..start,
                "`limits.shutdown_flush_ms` must be at least 1 (at 0 no final audit checkpoint \
                 would ever be written)"
                    .to_owned(),
            ));
        }
        for (key, value) in [
            ("default_rate_requests", self.limits.default_rate_requests),
            (
                "default_rate_per_seconds",
                self.limits.default_rate_per_seconds,
            ),
        ] {
            if value == 0 {
                let start = key_offset_in(text, "limits", key);
                return Err(at(
                    start..start,
                    format!("`limits.{key}` must be at least 1"),
                ));
            }
        }
        // As a grant's `per_seconds`: a bucket is kept, idle, for the longest window only.
        if self.limits.default_rate_per_seconds > crate::rate_limit::MAX_WINDOW_SECS {
            let start = key_offset_in(text, "limits", "default_rate_per_seconds");
            return Err(at(
                start..start,
                format!(
                    "`limits.default_rate_per_seconds` must be at most {} (a day)",
                    crate::rate_limit::MAX_WINDOW_SECS
                ),
            ));
        }
        self.validate_retired_dirs(&at)?;
        if !matches!(self.audit.durability.as_str(), "fsync" | "relaxed") {
            let start = key_offset_in(text, "audit", "durability");
            return Err(at(
                start..start,
                format!(
                    "`audit.durability` must be `fsync` or `relaxed`, not `{}`",
                    self.audit.durability
                ),
            ));
        }
        // `serve` would print "ignoring" on stderr and run with less logging than asked for.
        let level = &self.log.level;
        tracing_subscriber::EnvFilter::builder()
            .parse(level.get_ref())
            .map_err(|e| {
                at(
                    level.span(),
                    format!(
                        "`log.level` `{}` is not a log filter ({e}); use e.g. `info` or `info,tollbu_proxy=debug`",
                        level.get_ref()
                    ),
                )
            })?;
        Ok(())
    }

    /// A retired log must be neither the log this gateway writes nor listed twice: the sweep takes
    /// each one's writer lock, and the active log's is held by its writer.
    fn validate_retired_dirs(
        &self,
        at: &impl Fn(std::ops::Range<usize>, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let active = self.resolve(&self.audit.dir);
        let mut seen = std::collections::HashSet::new();
        for retired in &self.audit.retired_dirs {
            let path = self.resolve(retired.get_ref());
            if path == active {
                return Err(at(
                    retired.span(),
                    format!(
                        "`audit.retired_dirs` names `{}`, the log this gateway writes (`audit.dir`)",
                        retired.get_ref().display()
                    ),
                ));
            }
            if !seen.insert(path) {
                return Err(at(
                    retired.span(),
                    format!(
                        "`audit.retired_dirs` names `{}` twice",
                        retired.get_ref().display()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_console(
        &self,
        text: &str,
        at: &impl Fn(std::ops::Range<usize>, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let console = &self.console;
        let key = |key: &str| {
            let start = key_offset_in(text, "console", key);
            start..start
        };
        if console.enabled && console.users.is_empty() {
            return Err(at(
                key("enabled"),
                "`console.enabled` needs at least one entry in `console.users`".into(),
            ));
        }
        for (name, value) in [
            ("session_ttl_secs", console.session_ttl_secs),
            ("idle_timeout_secs", console.idle_timeout_secs),
        ] {
            if value == 0 {
                return Err(at(key(name), format!("`console.{name}` must be above 0")));
            }
        }
        let mut names = std::collections::HashSet::new();
        for user in &console.users {
            let name = user.name.get_ref();
            let valid = (1..=64).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
            if !valid {
                return Err(at(
                    user.name.span(),
                    format!("console user `{name}`: use 1-64 letters, digits, `.`, `_`, `@`, `-`"),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(at(
                    user.name.span(),
                    format!("console user `{name}` is defined twice"),
                ));
            }
            crate::console::auth::PasswordHash::parse(user.password_hash.get_ref())
                .map_err(|m| at(user.password_hash.span(), m))?;
        }
        Ok(())
    }

    /// A path from the file, resolved against the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// Byte offset of `key = …` at the start of a line of `text` in table `[section]` (or written
/// `section.key = …` elsewhere), for errors about values that carry no position of their own; 0
/// (the file's start) when the key is not written out.
fn key_offset_in(text: &str, section: &str, key: &str) -> usize {
    let dotted = format!("{section}.{key}");
    let mut offset = 0;
    let mut table = String::new();
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(header) = trimmed.strip_prefix('[') {
            table = header
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
        }
        let assigns = |name: &str| {
            trimmed
                .strip_prefix(name)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        };
        if (table == section && assigns(key)) || (table.is_empty() && assigns(&dotted)) {
            return offset + line.len() - trimmed.len();
        }
        offset += line.len();
    }
    0
}

/// Replaces each `${NAME}` in `text` with `lookup(NAME)`; an unset variable
/// is an error, never an empty string (two replicas must not share a log name).
pub fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `${{` in `{text}`"))?;
        let var = &after[..end];
        let valid = !var.is_empty() && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!("`${{{var}}}` is not a variable name"));
        }
        let value = lookup(var)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("environment variable `{var}` is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses an allow-list of JWS algorithms; `none` and HMAC are never allowed.
pub fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, String> {
    let mut out = Vec::new();
    for name in names {
        let alg = match name.as_str() {
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "ES256" => Algorithm::ES256,
            other => {
                return Err(format!(
                    "algorithm `{other}` is not allowed (use RS256, RS384, RS512, PS256 or ES256)"
                ));
            }
        };
        out.push(alg);
    }
    if out.is_empty() {
        return Err("`algorithms` must name at least one algorithm".into());
    }
    Ok(out)
}

fn parse_uri(url: &Spanned<String>) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .get_ref()
        .parse()
        .map_err(|_| format!("`{}` is not a URL", url.get_ref()))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(format!(
            "`{}` must be an http or https URL with a host",
            url.get_ref()
        )),
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    /// The smallest valid config (tests elsewhere in the crate start from it too).
    pub(crate) const MINIMAL: &str = r#"
[gateway]
listen = "127.0.0.1:8080"

[[issuer]]
issuer = "https://test.maskinporten.no/"
jwks_url = "https://test.maskinporten.no/jwk"

[[service]]
id = "population"
upstream = "http://127.0.0.1:8101"

[policies]
dir = "policies"

[audit]
dir = "audit"
origin = "tollbu.example/population/0"
signing_key = "k.pem"
pseudonym_key = "p.key"
"#;

    #[test]
    fn minimal_config_parses_with_defaults() {
        let config = Config::parse(MINIMAL, "t.toml", Path::new("/etc/tollbu")).unwrap();
        assert_eq!(config.admin.listen.port(), 9090);
        assert_eq!(config.issuers[0].leeway_secs.get_ref(), &10);
        assert_eq!(
            config.resolve(Path::new("policies")),
            PathBuf::from("/etc/tollbu/policies")
        );
    }

    #[test]
    fn documented_complete_example_parses_and_states_the_defaults() {
        let doc = include_str!("../../../docs/configuration.md");
        let example = doc.split("## Complete example").nth(1).unwrap();
        let toml_block = example
            .split("```toml\n")
            .nth(1)
            .unwrap()
            .split("```")
            .next()
            .unwrap();
        let config = Config::parse(
            toml_block,
            "docs/configuration.md",
            Path::new("/etc/tollbu"),
        )
        .unwrap();
        let defaults = LimitsSection::default();
        let documented = &config.limits;
        assert_eq!(
            (
                documented.max_request_body_bytes,
                documented.max_response_body_bytes,
                documented.max_token_bytes
            ),
            (
                defaults.max_request_body_bytes,
                defaults.max_response_body_bytes,
                defaults.max_token_bytes
            )
        );
        assert_eq!(
            (
                documented.header_read_timeout_ms,
                documented.upstream_connect_timeout_ms,
                documented.upstream_timeout_ms
            ),
            (
                defaults.header_read_timeout_ms,
                defaults.upstream_connect_timeout_ms,
                defaults.upstream_timeout_ms
            )
        );
        assert_eq!(
            (
                documented.max_header_count,
                documented.max_header_bytes,
                documented.max_connections,
                documented.max_h2_streams
            ),
            (
                defaults.max_header_count,
                defaults.max_header_bytes,
                defaults.max_connections,
                defaults.max_h2_streams
            )
        );
        assert_eq!(
            (
                documented.shutdown_grace_ms,
                documented.shutdown_delay_ms,
                documented.shutdown_flush_ms,
                documented.default_rate_requests,
                documented.default_rate_per_seconds
            ),
            (
                defaults.shutdown_grace_ms,
                defaults.shutdown_delay_ms,
                defaults.shutdown_flush_ms,
                defaults.default_rate_requests,
                defaults.default_rate_per_seconds
            )
        );
        let issuer = &config.issuers[0];
        assert_eq!(issuer.algorithms.get_ref(), default_algorithms().get_ref());
        assert_eq!(issuer.leeway_secs.get_ref(), default_leeway().get_ref());
        assert_eq!(issuer.max_token_age_secs, default_max_token_age());
        assert_eq!(issuer.jwks_refresh_secs, default_jwks_refresh());
        assert_eq!(issuer.jwks_min_refetch_secs, default_jwks_min_refetch());
        assert_eq!(config.admin.listen, default_admin_listen());
        assert_eq!(config.audit.durability, default_durability());
        let telemetry = TelemetrySection::default();
        assert_eq!(
            (
                &config.telemetry.service_name,
                config.telemetry.export_interval_ms
            ),
            (&telemetry.service_name, telemetry.export_interval_ms)
        );
        assert_eq!(config.log, LogSection::default());
        assert_eq!(config.audit.checkpoint_every, default_checkpoint_every());
        assert_eq!(
            config.audit.checkpoint_interval_secs,
            default_checkpoint_interval()
        );
    }

    #[test]
    fn audit_retention_is_optional_and_named_with_its_line_when_wrong() {
        let config = Config::parse(MINIMAL, "t.toml", Path::new(".")).unwrap();
        assert_eq!(config.audit.retention_days, None);
        let kept = format!("{MINIMAL}retention_days = 400\n");
        let config = Config::parse(&kept, "t.toml", Path::new(".")).unwrap();
        assert_eq!(config.audit.retention_days.map(|d| *d.get_ref()), Some(400));
        let line = MINIMAL.lines().count() + 1;
        for wrong in ["0", "36501"] {
            let text = format!("{MINIMAL}retention_days = {wrong}\n");
            let error = Config::parse(&text, "t.toml", Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with(&format!("t.toml:{line}:"))
                    && error.contains("`audit.retention_days` must be between 1 and 36500"),
                "{error}"
            );
        }
        let negative = format!("{MINIMAL}retention_days = -1\n");
        let error = Config::parse(&negative, "t.toml", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with(&format!("t.toml:{line}:")), "{error}");
    }

    #[test]
    fn retired_audit_logs_must_differ_from_the_active_one_and_each_other() {
        let config = Config::parse(MINIMAL, "t.toml", Path::new("/etc/tollbu")).unwrap();
        assert!(config.audit.retired_dirs.is_empty());
        let active = config.resolve(&config.audit.dir);
        let line = MINIMAL.lines().count() + 1;
        let listed =
            format!("{MINIMAL}retired_dirs = [\"old/g0\", \"/var/lib/tollbu/audit/g1\"]\n");
        let config = Config::parse(&listed, "t.toml", Path::new("/etc/tollbu")).unwrap();
        let retired: Vec<PathBuf> = config
            .audit
            .retired_dirs
            .iter()
            .map(|d| config.resolve(d.get_ref()))
            .collect();
        assert_eq!(
            retired,
            [
                PathBuf::from("/etc/tollbu/old/g0"),
                PathBuf::from("/var/lib/tollbu/audit/g1")
            ]
        );
        let cases = [
            (
                format!("retired_dirs = [{:?}]\n", active.display().to_string()),
                "the log this gateway writes",
            ),
            (
                "retired_dirs = [\"g0\", \"/etc/tollbu/g0\"]\n".to_owned(),
                "names `/etc/tollbu/g0` twice",
            ),
        ];
        for (wrong, why) in cases {
            let error = Config::parse(
                &format!("{MINIMAL}{wrong}"),
                "t.toml",
                Path::new("/etc/tollbu"),
            )
            .unwrap_err()
            .to_string();
            assert!(
                error.starts_with(&format!("t.toml:{line}:")) && error.contains(why),
                "{error}"
            );
        }
    }

    /// A zero timeout (every request would time out), a log filter `serve` would half ignore, and
    /// the settings whose errors used to point at 1:1 are refused at the line that sets them.
    #[test]
    fn timeouts_log_filter_durability_and_console_errors_name_their_line() {
        let cases = [
            (
                MINIMAL.replace("[audit]", "[limits]\nupstream_timeout_ms = 0\n\n[audit]"),
                "`limits.upstream_timeout_ms` must be at least 1",
                "upstream_timeout_ms = 0",
                1,
            ),
            (
                MINIMAL.replace(
                    "[audit]",
                    "[limits]\nmax_connections = 5\nupstream_connect_timeout_ms = 0\n\n[audit]",
                ),
                "`limits.upstream_connect_timeout_ms` must be at least 1",
                "upstream_connect_timeout_ms = 0",
                1,
            ),
            (
                MINIMAL.replace("[audit]", "[limits]\nheader_read_timeout_ms = 0\n\n[audit]"),
                "`limits.header_read_timeout_ms` must be at least 1",
                "header_read_timeout_ms = 0",
                1,
            ),
            (
                format!("{MINIMAL}\n[log]\nlevel = \"info,tollbu_proxy=loud\"\n"),
                "`log.level` `info,tollbu_proxy=loud` is not a log filter",
                "level = ",
                9,
            ),
            (
                MINIMAL.replace(
                    "pseudonym_key = \"p.key\"",
                    "pseudonym_key = \"p.key\"\n  durability = \"sometimes\"",
                ),
                "`audit.durability` must be `fsync` or `relaxed`, not `sometimes`",
                "durability = ",
                3,
            ),
            (
                format!("{MINIMAL}\n[console]\ncookie_secure = true\nenabled = true\n"),
                "`console.enabled` needs at least one entry in `console.users`",
                "enabled = true",
                1,
            ),
            (
                format!("{MINIMAL}\n[console]\nidle_timeout_secs = 0\n"),
                "`console.idle_timeout_secs` must be above 0",
                "idle_timeout_secs = 0",
                1,
            ),
        ];
        for (text, why, at, column) in cases {
            let line = text.lines().position(|l| l.contains(at)).unwrap() + 1;
            let error = Config::parse(&text, "t.toml", Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with(&format!("t.toml:{line}:{column}: ")) && error.contains(why),
                "{why} at {line}:{column}: {error}"
            );
        }
    }

    /// Settings that parse but would run unsafely are refused, naming the line: a second issuer
    /// with the same `iss` (it replaced the first silently), a rate of 0 (read as unlimited), a
    /// service id no path can spell, an issuer's nonsense lifetimes or empty audience.
    #[test]
    fn unsafe_settings_are_refused_with_their_line() {
        let line_of = |text: &str, needle: &str| {
            text.lines()
                .position(|l| l.contains(needle))
                .map(|i| i + 1)
                .unwrap()
        };
        let issuer_block = "\n[[issuer]]\nissuer = \"https://test.maskinporten.no/\"\njwks_url = \"https://other.example/jwk\"\n";
        let cases = [
            (
                format!("{MINIMAL}{issuer_block}"),
                "issuer `https://test.maskinporten.no/` is defined twice",
                "jwks_url = \"https://other.example/jwk\"",
            ),
            (
                MINIMAL.replace("[audit]", "[limits]\ndefault_rate_requests = 0\n\n[audit]"),
                "`limits.default_rate_requests` must be at least 1",
                "default_rate_requests = 0",
            ),
            (
                MINIMAL.replace(
                    "[audit]",
                    "[limits]\ndefault_rate_per_seconds = 86401\n\n[audit]",
                ),
                "`limits.default_rate_per_seconds` must be at most 86400 (a day)",
                "default_rate_per_seconds = 86401",
            ),
            (
                MINIMAL.replace("id = \"population\"", "id = \"Pop/ulation\""),
                "service id `Pop/ulation` must be",
                "id = \"Pop/ulation\"",
            ),
            (
                MINIMAL.replace(
                    "jwks_url = \"https://test.maskinporten.no/jwk\"",
                    "jwks_url = \"https://test.maskinporten.no/jwk\"\nmax_token_age_secs = -5",
                ),
                "`max_token_age_secs` must be positive",
                "issuer = \"https://test.maskinporten.no/\"",
            ),
            (
                MINIMAL.replace(
                    "jwks_url = \"https://test.maskinporten.no/jwk\"",
                    "jwks_url = \"https://test.maskinporten.no/jwk\"\naudience = \"\"",
                ),
                "`audience` must not be empty",
                "issuer = \"https://test.maskinporten.no/\"",
            ),
            (
                MINIMAL.replace(
                    "upstream = \"http://127.0.0.1:8101\"",
                    "upstream = \"http://127.0.0.1:8101\"\nupstream_ca = \"ca.pem\"",
                ),
                "`upstream_ca` is set but `http://127.0.0.1:8101` is not https",
                "upstream = \"http://127.0.0.1:8101\"",
            ),
            (
                MINIMAL.replace(
                    "upstream = \"http://127.0.0.1:8101\"",
                    "upstream = \"http://127.0.0.1:8101\"\nupstream_client_cert = \"c.pem\"\nupstream_client_key = \"c.key\"",
                ),
                "`upstream_client_cert` is set but `http://127.0.0.1:8101` is not https",
                "upstream = \"http://127.0.0.1:8101\"",
            ),
            (
                MINIMAL.replace(
                    "jwks_url = \"https://test.maskinporten.no/jwk\"",
                    "jwks_url = \"http://test.maskinporten.no/jwk\"\nca = \"ca.pem\"",
                ),
                "`ca` is set but `http://test.maskinporten.no/jwk` is not https",
                "jwks_url = \"http://test.maskinporten.no/jwk\"",
            ),
        ];
        for (text, why, at) in cases {
            let error = Config::parse(&text, "t.toml", Path::new("."))
                .unwrap_err()
                .to_string();
            // The duplicate issuer is named at its own `issuer` line, the one before `at`.
            let line = if why.contains("defined twice") {
                line_of(&text, at) - 1
            } else {
                line_of(&text, at)
            };
            assert!(
                error.starts_with(&format!("t.toml:{line}:")) && error.contains(why),
                "{error}"
            );
        }
    }

    #[test]
    fn a_config_file_that_is_not_utf8_is_named_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        let mut bytes = MINIMAL.replace("[audit]", "[audit]\n# \u{0}").into_bytes();
        let at = bytes.iter().position(|b| *b == 0).unwrap();
        bytes[at] = 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let error = Config::load(&path).unwrap_err().to_string();
        let line = MINIMAL.lines().position(|l| l == "[audit]").unwrap() + 2;
        assert!(
            error.contains(&format!("t.toml:{line}:3:")) && error.contains("not UTF-8"),
            "{error}"
        );
    }

    #[test]
    fn console_section_is_off_by_default_and_validated() {
        let config = Config::parse(MINIMAL, "t.toml", Path::new(".")).unwrap();
        assert_eq!(config.console, ConsoleSection::default());
        assert!(!config.console.enabled);
        let no_users = format!("{MINIMAL}\n[console]\nenabled = true\n");
        let error = Config::parse(&no_users, "t.toml", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(error.contains("needs at least one entry"), "{error}");
        let plain = format!(
            "{MINIMAL}\n[console]\nenabled = true\nusers = [{{ name = \"so\", password_hash = \"hunter2\" }}]\n"
        );
        let error = Config::parse(&plain, "t.toml", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("t.toml:24:") && error.contains("$pbkdf2-sha256$"),
            "{error}"
        );
        let doc = include_str!("../../../docs/configuration.md");
        let example = doc.split("## Complete example").nth(1).unwrap();
        let config = Config::parse(
            example
                .split("```toml\n")
                .nth(1)
                .unwrap()
                .split("```")
                .next()
                .unwrap(),
            "docs/configuration.md",
            Path::new("/etc/tollbu"),
        )
        .unwrap();
        let defaults = ConsoleSection::default();
        assert_eq!(
            (
                config.console.session_ttl_secs,
                config.console.idle_timeout_secs,
                config.console.cookie_secure
            ),
            (
                defaults.session_ttl_secs,
                defaults.idle_timeout_secs,
                defaults.cookie_secure
            )
        );
    }

    #[test]
    fn origin_expands_environment_variables() {
        let lookup = |v: &str| (v == "POD_NAME").then(|| "tollbu-2".to_owned());
        assert_eq!(
            expand_env("reg.example/pop/${POD_NAME}", lookup).unwrap(),
            "reg.example/pop/tollbu-2"
        );
        assert_eq!(expand_env("plain", lookup).unwrap(), "plain");
        assert!(
            expand_env("x/${MISSING}", lookup)
                .unwrap_err()
                .contains("`MISSING` is not set")
        );
        assert!(expand_env("x/${POD_NAME", lookup).is_err());
        assert!(expand_env("x/${a-b}", lookup).is_err());
    }

    #[test]
    fn workers_default_to_the_cpus_and_zero_is_refused_with_its_line() {
        let config = Config::parse(MINIMAL, "t.toml", Path::new(".")).unwrap();
        assert_eq!(
            config.gateway.worker_count(),
            std::thread::available_parallelism().unwrap()
        );
        let three = MINIMAL.replace("8080\"", "8080\"\nworkers = 3");
        let config = Config::parse(&three, "t.toml", Path::new(".")).unwrap();
        assert_eq!(config.gateway.worker_count().get(), 3);
        let zero = MINIMAL.replace("8080\"", "8080\"\nworkers = 0");
        let error = Config::parse(&zero, "t.toml", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("t.toml:4:11: "), "{error}");
        assert!(error.contains("nonzero"), "{error}");
    }

    #[test]
    fn errors_name_line_and_column() {
        let bad = MINIMAL.replace(
            "upstream = \"http://127.0.0.1:8101\"",
            "upstream = \"ftp://x\"",
        );
        match Config::parse(&bad, "t.toml", Path::new(".")) {
            Err(ConfigError::Invalid {
                line,
                column,
                message,
                ..
            }) => {
                assert_eq!((line, column), (11, 12));
                assert!(message.contains("ftp://x"), "{message}");
            }
            other => panic!("expected an error, got {other:?}"),
        }
        let unknown = MINIMAL.replace("[policies]", "[policies]\ndirr = 1");
        let error = Config::parse(&unknown, "t.toml", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("t.toml:14:1: unknown field `dirr`"),
            "{error}"
        );
        let hmac = MINIMAL.replace(
            "jwks_url = \"https://test.maskinporten.no/jwk\"",
            "jwks_url = \"https://t/jwk\"\nalgorithms = [\"HS256\"]",
        );
        let error = Config::parse(&hmac, "t.toml", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("t.toml:8:14: algorithm `HS256` is not allowed"),
            "{error}"
        );
    }
}
