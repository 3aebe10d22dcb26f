//! Shared harness for the end-to-end tests: starts the devkit issuer, the
//! example registries and a gateway on OS-chosen ports of 127.0.0.1, with a
//! fresh audit directory, and offers a small HTTP client.
//!
//! Everything is real: sockets, RSA signatures, TLS, fsynced audit files.
#![forbid(unsafe_code)]
#![allow(clippy::panic, reason = "a test harness fails by panicking")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tollbu_devkit::demo_material;
use tollbu_devkit::registries::{self, RegistryHandle};
use tollbu_devkit::{IssuerHandle, start_issuer};
use tollbu_proxy::{Config, RunningGateway};

pub use tollbu_devkit::people::example_pid;

pub mod attacks;
pub mod h2raw;

/// Absolute path of `certs-example/`.
pub fn certs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../certs-example")
}

/// Absolute path of `policies/`.
pub fn policies_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// Knobs for one test's environment.
#[derive(Clone)]
pub struct Options {
    /// Upstream for `population` instead of the example registry.
    pub population_upstream: Option<String>,
    pub upstream_timeout_ms: u64,
    pub tls: bool,
    pub extra_config: String,
    /// Policies to load instead of the repository's `policies/`.
    pub policies: Option<PathBuf>,
    /// Extra `key = value` lines inside `[limits]`.
    pub limits: String,
    /// JWKS URL for the devkit issuer instead of `<issuer>jwk` (a stub that can fail).
    pub jwks_url: Option<String>,
    /// `issuers = [...]` of the `population` service; `None` = all trusted
    /// issuers. `$ISSUER` stands for the devkit issuer's URL.
    pub population_issuers: Option<Vec<String>>,
    /// Directory holding `gateway.pem`, `gateway.key.pem`, `ca.pem` (default `certs-example/`).
    pub tls_dir: Option<PathBuf>,
    /// `[gateway.tls] reload_check_secs`.
    pub tls_reload_check_secs: u64,
    /// Extra `key = value` lines in the `population` service (upstream TLS, …).
    pub population_extra: String,
    /// `[gateway] workers`; `None` = the default (one per CPU).
    pub workers: Option<usize>,
    /// Start the gateway from a config file ([`Env::config_path`]), so that a reload re-reads
    /// it, as `tollbu serve` does; otherwise from the text, and a reload keeps the config.
    pub config_file: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            population_upstream: None,
            upstream_timeout_ms: 5_000,
            tls: false,
            extra_config: String::new(),
            policies: None,
            limits: String::new(),
            jwks_url: None,
            population_issuers: None,
            tls_dir: None,
            tls_reload_check_secs: 30,
            population_extra: String::new(),
            workers: None,
            config_file: false,
        }
    }
}

/// Name of the config file under the state directory ([`Options::config_file`]).
const CONFIG_FILE: &str = "tollbu.toml";

/// One running environment.
pub struct Env {
    pub issuer: Option<IssuerHandle>,
    pub population: Option<RegistryHandle>,
    pub income: Option<RegistryHandle>,
    pub gateway: Option<RunningGateway>,
    pub state_dir: tempfile::TempDir,
    pub issuer_url: String,
    config_text: String,
    /// Where the config was written ([`Options::config_file`]).
    config_file: Option<PathBuf>,
}

async fn listener() -> tokio::net::TcpListener {
    match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("cannot bind 127.0.0.1:0: {e}"),
    }
}

fn ok<T, E: std::fmt::Debug>(result: Result<T, E>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e:?}"),
    }
}

impl Env {
    /// Starts issuer, registries and gateway.
    pub async fn start(options: Options) -> Env {
        Self::start_inner(options, None).await
    }

    /// As [`Env::start`], with an audit log the test opened itself (for
    /// injected storage faults); the config's `[audit]` section is then unused.
    pub async fn start_with_audit(options: Options, audit: tollbu_audit::AuditLog) -> Env {
        Self::start_inner(options, Some(audit)).await
    }

    async fn start_inner(options: Options, audit: Option<tollbu_audit::AuditLog>) -> Env {
        let issuer_config = ok(demo_material::issuer_config(), "demo issuer config");
        let issuer = ok(
            start_issuer(
                listener().await,
                issuer_config,
                demo_material::ISSUER_SIGNING_KEY_PEM,
            )
            .await,
            "issuer",
        );
        let population = ok(
            registries::start_population(listener().await, None).await,
            "population registry",
        );
        let income = ok(
            registries::start_income(listener().await, None).await,
            "income registry",
        );
        let state_dir = ok(tempfile::tempdir(), "tempdir");
        let issuer_url = issuer.issuer_url();
        let population_url = options
            .population_upstream
            .clone()
            .unwrap_or_else(|| population.base_url());
        let config_text = gateway_config(
            &issuer_url,
            &population_url,
            &income.base_url(),
            &options,
            state_dir.path(),
        );
        let config = ok(
            Config::parse(&config_text, "test.toml", state_dir.path()),
            "gateway config",
        );
        let config_path = options.config_file.then(|| {
            let path = state_dir.path().join(CONFIG_FILE);
            ok(std::fs::write(&path, &config_text), "config file");
            path
        });
        let gateway = match (audit, config_path.clone()) {
            (Some(log), _) => ok(
                tollbu_proxy::start_with_audit(config, log).await,
                "gateway start",
            ),
            (None, Some(path)) => ok(
                tollbu_proxy::start_with(config, Some(path)).await,
                "gateway start",
            ),
            (None, None) => ok(tollbu_proxy::start(config).await, "gateway start"),
        };
        Env {
            issuer: Some(issuer),
            population: Some(population),
            income: Some(income),
            gateway: Some(gateway),
            state_dir,
            issuer_url,
            config_text,
            config_file: config_path,
        }
    }

    /// Stops the gateway and starts a new one on the same config and audit
    /// directory (new ports).
    pub async fn restart_gateway(&mut self) {
        self.stop_gateway().await;
        let started = self.try_start_gateway().await;
        ok(started, "gateway restart");
    }

    /// Starts the gateway again on the same config and state directory, or says why it cannot
    /// (yet): e.g. the audit log is still held by a previous run's thread.
    pub async fn try_start_gateway(&mut self) -> Result<(), tollbu_proxy::BuildError> {
        let config = ok(
            Config::parse(&self.config_text, "test.toml", self.state_dir.path()),
            "gateway config",
        );
        let gateway = tollbu_proxy::start_with(config, self.config_file.clone()).await?;
        self.gateway = Some(gateway);
        Ok(())
    }

    pub fn gateway(&self) -> &RunningGateway {
        match &self.gateway {
            Some(g) => g,
            None => panic!("gateway already stopped"),
        }
    }

    pub fn issuer(&self) -> &IssuerHandle {
        match &self.issuer {
            Some(i) => i,
            None => panic!("issuer already stopped"),
        }
    }

    /// `http://127.0.0.1:PORT` of the plaintext listener.
    pub fn base(&self) -> String {
        match self.gateway().plain_addr {
            Some(addr) => format!("http://{addr}"),
            None => panic!("no plaintext listener"),
        }
    }

    pub fn tls_addr(&self) -> SocketAddr {
        match self.gateway().tls_addr {
            Some(addr) => addr,
            None => panic!("no TLS listener"),
        }
    }

    pub fn admin(&self) -> String {
        format!("http://{}", self.gateway().admin_addr)
    }

    /// The config file a gateway started with [`Options::config_file`] reloads from.
    pub fn config_path(&self) -> PathBuf {
        match &self.config_file {
            Some(path) => path.clone(),
            None => panic!("the gateway was started without a config file"),
        }
    }

    /// The config the gateway started with.
    pub fn config_text(&self) -> &str {
        &self.config_text
    }

    pub fn audit_dir(&self) -> PathBuf {
        self.state_dir.path().join("audit")
    }

    /// `GET` of example person 0 from the population registry, for benefit assessment (the
    /// welfare grant's purpose), with `request_id` as `x-request-id` when given.
    pub async fn read_person(&self, token: &str, request_id: Option<&str>) -> Answer {
        let mut scratch = String::new();
        let mut headers = auth(token, Some("benefit-assessment"), &mut scratch);
        if let Some(id) = request_id {
            headers.push(("x-request-id", id));
        }
        get(
            &format!("{}/population/persons/{}", self.base(), example_pid(0)),
            &headers,
        )
        .await
    }

    /// A token from the issuer's real `/token` endpoint (RFC 7523 grant).
    pub async fn token(&self, client_id: &str, scope: &str, consents: &[&str]) -> String {
        self.token_for(client_id, scope, consents, None).await
    }

    /// As [`Env::token`], optionally acting for `consumer_org` (delegation).
    pub async fn token_for(
        &self,
        client_id: &str,
        scope: &str,
        consents: &[&str],
        consumer_org: Option<&str>,
    ) -> String {
        let Some((kid, key)) = demo_material::client_key(client_id) else {
            panic!("no demo key for {client_id}");
        };
        let request = tollbu_devkit::token_client::TokenRequest {
            issuer_url: self.issuer_url.clone(),
            client_id: client_id.to_owned(),
            key_pem: key.to_owned(),
            kid: kid.to_owned(),
            scope: scope.to_owned(),
            consumer_org: consumer_org.map(str::to_owned),
            consent: consents.iter().map(|c| ((*c).to_owned(), None)).collect(),
            resource: None,
        };
        ok(
            tollbu_devkit::token_client::request_token(&request).await,
            "token request",
        )
        .access_token
    }

    /// Stops the gateway gracefully (flushes the audit log).
    pub async fn stop_gateway(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown().await;
        }
    }
}

fn gateway_config(
    issuer: &str,
    population: &str,
    income: &str,
    options: &Options,
    state: &Path,
) -> String {
    let certs = certs_dir();
    let c = |name: &str| certs.join(name).display().to_string();
    let tls_dir = options.tls_dir.clone().unwrap_or_else(certs_dir);
    let t = |name: &str| tls_dir.join(name).display().to_string();
    let tls = if options.tls {
        format!(
            "[gateway.tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nreload_check_secs = {}\n",
            t("gateway.pem"),
            t("gateway.key.pem"),
            t("ca.pem"),
            options.tls_reload_check_secs
        )
    } else {
        String::new()
    };
    let workers = options
        .workers
        .map(|n| format!("workers = {n}\n"))
        .unwrap_or_default();
    format!(
        r#"[gateway]
listen = "127.0.0.1:0"
{workers}{tls}
[admin]
listen = "127.0.0.1:0"

[limits]
upstream_timeout_ms = {timeout}
upstream_connect_timeout_ms = 1000
{limits}
[[issuer]]
issuer = "{issuer}"
jwks_url = "{jwks_url}"
jwks_min_refetch_secs = 0

[[service]]
id = "population"
upstream = "{population}"
{population_issuers}
{population_extra}

[[service]]
id = "income"
upstream = "{income}"

[policies]
dir = "{policies}"

[audit]
dir = "{audit}"
origin = "tollbu.example/test/gateway-0"
signing_key = "{signing}"
pseudonym_key = "{pseudonym}"
{extra}
"#,
        timeout = options.upstream_timeout_ms,
        limits = options.limits,
        jwks_url = options
            .jwks_url
            .clone()
            .unwrap_or_else(|| format!("{issuer}jwk")),
        population_issuers = options
            .population_issuers
            .as_ref()
            .map(|list| format!(
                "issuers = [{}]",
                list.iter()
                    .map(|i| format!("\"{}\"", i.replace("$ISSUER", issuer)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .unwrap_or_default(),
        policies = options
            .policies
            .clone()
            .unwrap_or_else(policies_dir)
            .display(),
        audit = state.join("audit").display(),
        signing = c("audit-signing.key.pem"),
        pseudonym = c("audit-pseudonym.key"),
        extra = options.extra_config,
        population_extra = options.population_extra,
    )
}

/// A parsed answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The problem `code`, for refusals.
    pub fn code(&self) -> String {
        self.json()
            .get("code")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    }

    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

/// A plain HTTP/1.1 client (or HTTP/2 prior knowledge with `http2`).
pub fn client(http2: bool) -> Client<HttpConnector, Empty<Bytes>> {
    let mut builder = Client::builder(TokioExecutor::new());
    builder.http2_only(http2);
    builder.build(HttpConnector::new())
}

/// GET `url` with the given headers.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    get_with(&client(false), url, headers).await
}

pub async fn get_with(
    client: &Client<HttpConnector, Empty<Bytes>>,
    url: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut builder = Request::get(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = ok(builder.body(Empty::new()), "request");
    let response = ok(client.request(request).await, "HTTP request");
    let (parts, body) = response.into_parts();
    let body = ok(body.collect().await, "body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// POST with an empty body (admin actions).
pub async fn post(url: &str) -> Answer {
    send(http::Method::POST, url).await
}

/// `method` on `url` with an empty body and no headers.
pub async fn send(method: http::Method, url: &str) -> Answer {
    let request = ok(
        Request::builder()
            .method(method)
            .uri(url)
            .body(Empty::new()),
        "request",
    );
    let response = ok(client(false).request(request).await, "HTTP request");
    let (parts, body) = response.into_parts();
    let body = ok(body.collect().await, "body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// `Authorization` and purpose headers.
pub fn auth<'a>(
    token: &'a str,
    purpose: Option<&'a str>,
    scratch: &'a mut String,
) -> Vec<(&'a str, &'a str)> {
    *scratch = format!("Bearer {token}");
    let mut headers = vec![("authorization", scratch.as_str())];
    if let Some(p) = purpose {
        headers.push(("tollbu-purpose", p));
    }
    headers
}

/// Every file under `dir`, read whole.
pub fn all_bytes_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.push((path, bytes));
            }
        }
    }
    out
}

/// A TCP server that accepts and then never answers (a hung registry).
pub async fn silent_upstream() -> (String, tokio::task::JoinHandle<()>) {
    let l = listener().await;
    let addr = ok(l.local_addr(), "addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = l.accept().await {
            held.push(stream);
        }
    });
    (format!("http://{addr}"), task)
}

/// A URL where nothing listens.
pub async fn closed_upstream() -> String {
    let l = listener().await;
    let addr = ok(l.local_addr(), "addr");
    drop(l);
    format!("http://{addr}")
}

/// rustls client config trusting the demo CA, with an optional client certificate.
pub fn tls_client_config(client_cert: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(demo_material::CA_PEM.as_bytes()).flatten() {
        ok(roots.add(cert), "CA");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ok(
        rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions(),
        "versions",
    )
    .with_root_certificates(roots);
    let config = match client_cert {
        Some((cert, key)) => {
            let certs: Vec<_> = CertificateDer::pem_slice_iter(cert.as_bytes())
                .flatten()
                .collect();
            let key = ok(PrivateKeyDer::from_pem_slice(key.as_bytes()), "client key");
            ok(builder.with_client_auth_cert(certs, key), "client auth")
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

// ---------------------------------------------------------------------------
// Helpers for the security suites (adversarial tokens, HTTP abuse, faults).
// ---------------------------------------------------------------------------

/// What a raw TCP exchange produced.
#[derive(Debug, Default)]
pub struct RawOutcome {
    /// Every byte the server sent.
    pub bytes: Vec<u8>,
    /// The server closed (or reset) the connection before `wait` ran out.
    pub closed: bool,
}

impl RawOutcome {
    /// Status codes of every HTTP/1.x response head in the bytes, in order.
    pub fn statuses(&self) -> Vec<u16> {
        let text = String::from_utf8_lossy(&self.bytes);
        let mut out = Vec::new();
        let mut rest = text.as_ref();
        while let Some(at) = rest.find("HTTP/1.") {
            let head = &rest[at..];
            if let Some(code) = head.get(9..12).and_then(|c| c.parse().ok()) {
                out.push(code);
            }
            rest = &rest[at + 7..];
        }
        out
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Writes `bytes` on a fresh connection to `addr` (write errors are
/// tolerated: the server may close early), then reads until the server
/// closes or `wait` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: std::time::Duration) -> RawOutcome {
    use tokio::io::AsyncWriteExt;
    let mut stream = ok(tokio::net::TcpStream::connect(addr).await, "connect");
    let _ = stream.write_all(bytes).await;
    read_until_close(&mut stream, wait).await
}

/// [`raw_exchange`] from a client socket bound to `from`: any 127.x.y.z address reaches a
/// listener on 127.0.0.1 over the loopback interface, so the server sees another client address.
pub async fn raw_exchange_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
    bytes: &[u8],
    wait: std::time::Duration,
) -> RawOutcome {
    use tokio::io::AsyncWriteExt;
    let socket = ok(tokio::net::TcpSocket::new_v4(), "socket");
    ok(
        socket.bind(SocketAddr::new(from, 0)),
        "bind the client address",
    );
    let mut stream = ok(socket.connect(addr).await, "connect");
    let _ = stream.write_all(bytes).await;
    read_until_close(&mut stream, wait).await
}

/// Reads from `stream` until EOF, a reset, or `wait` passes.
pub async fn read_until_close(
    stream: &mut tokio::net::TcpStream,
    wait: std::time::Duration,
) -> RawOutcome {
    use tokio::io::AsyncReadExt;
    let mut outcome = RawOutcome::default();
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = vec![0u8; 16384];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return outcome,
            Ok(Ok(0)) | Ok(Err(_)) => {
                outcome.closed = true;
                return outcome;
            }
            Ok(Ok(n)) => outcome.bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// The `host:port` of an `http://host:port` base URL.
pub fn addr_of(base: &str) -> SocketAddr {
    let hostport = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    ok(hostport.parse(), "socket address")
}

/// The `population` service block of a test policy (operation `get-person`,
/// every field the example registry returns); append `[[grant]]` blocks.
pub const POPULATION_SERVICE_TOML: &str = r#"
[service]
id = "population"
subject = { param = "pid", kind = "national-identity-number" }
fields = ["pid", "name.given", "name.family", "birth_date", "address.street", "address.postal_code",
          "address.city", "marital_status", "citizenships[].country", "citizenships[].since"]

[[service.operation]]
id = "get-person"
method = "GET"
path = "/persons/{pid}"
"#;

/// An operation that takes a body (`POST /persons/{pid}/notes`) and the welfare agency's grant
/// for it; append to [`POPULATION_SERVICE_TOML`]. (`GET` and `HEAD` requests carry no body.)
pub const NOTES_GRANT: &str = r#"
[[service.operation]]
id = "add-note"
method = "POST"
path = "/persons/{pid}/notes"

[[grant]]
id = "notes"
consumer = ["310000019"]
scopes = ["demo:population"]
operations = ["add-note"]
purposes = ["benefit-assessment"]
legal_basis = "Test basis"
fields = ["name"]
valid_from = 2024-01-01T00:00:00Z
valid_to = 2030-12-31T23:59:59Z
"#;

/// A fresh policy directory holding `population.toml` = `text`.
pub fn policy_dir(text: &str) -> tempfile::TempDir {
    let dir = ok(tempfile::tempdir(), "tempdir");
    ok(
        std::fs::write(dir.path().join("population.toml"), text),
        "write policy",
    );
    dir
}

/// One request a stub upstream received.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// The gateway's end of the connection the request came over.
    pub peer: std::net::SocketAddr,
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How a [`RecordingUpstream`] answers.
#[derive(Debug, Clone)]
pub enum UpstreamBehaviour {
    /// A small person record, at once.
    Person,
    /// The person record after holding the request this long.
    Hold(std::time::Duration),
    /// A JSON body of about `bytes` bytes, with or without Content-Length.
    Large { bytes: usize, chunked: bool },
    /// This body with this `Content-Type`.
    Body {
        content_type: &'static str,
        body: &'static str,
    },
    /// The person record as soon as the head is in, leaving the request body unread
    /// (RFC 9112 allows a server to answer before reading it).
    PersonBodyUnread,
    /// This status, these headers and this body.
    Answer {
        status: u16,
        headers: &'static [(&'static str, &'static str)],
        body: &'static str,
    },
}

/// A registry that holds each request for `hold` before answering, and an environment started
/// with `options` whose `population` service forwards to it: requests that stay in flight.
pub async fn env_behind_holding_registry(
    hold: std::time::Duration,
    options: Options,
) -> (RecordingUpstream, Env) {
    let registry = RecordingUpstream::start(UpstreamBehaviour::Hold(hold)).await;
    let env = Env::start(Options {
        population_upstream: Some(registry.url.clone()),
        ..options
    })
    .await;
    (registry, env)
}

/// A registry stand-in that records every request it parses (hyper, HTTP/1.1
/// and HTTP/2) and the peak number of requests in flight at once.
#[derive(Clone)]
pub struct RecordingUpstream {
    pub url: String,
    seen: Arc<std::sync::Mutex<Vec<SeenRequest>>>,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    peak: Arc<std::sync::atomic::AtomicUsize>,
}

/// The JSON body [`UpstreamBehaviour::Person`] serves.
pub const STUB_PERSON: &str = r#"{"pid":"x","name":{"given":"Ada","family":"Stub"},"address":{"city":"Oslo"},"marital_status":"single"}"#;

impl RecordingUpstream {
    pub async fn start(behaviour: UpstreamBehaviour) -> RecordingUpstream {
        use std::sync::atomic::Ordering;
        let l = listener().await;
        let addr = ok(l.local_addr(), "addr");
        let me = RecordingUpstream {
            url: format!("http://{addr}"),
            seen: Arc::default(),
            in_flight: Arc::default(),
            peak: Arc::default(),
        };
        let shared = me.clone();
        tokio::spawn(async move {
            while let Ok((stream, peer)) = l.accept().await {
                let shared = shared.clone();
                let behaviour = behaviour.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let shared = shared.clone();
                            let behaviour = behaviour.clone();
                            async move {
                                let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                                shared.peak.fetch_max(now, Ordering::SeqCst);
                                let (parts, body) = req.into_parts();
                                let body =
                                    if matches!(behaviour, UpstreamBehaviour::PersonBodyUnread) {
                                        Bytes::new()
                                    } else {
                                        body.collect()
                                            .await
                                            .map(|c| c.to_bytes())
                                            .unwrap_or_default()
                                    };
                                if let Ok(mut seen) = shared.seen.lock() {
                                    seen.push(SeenRequest {
                                        peer,
                                        method: parts.method.to_string(),
                                        uri: parts.uri.to_string(),
                                        headers: parts.headers.clone(),
                                        body,
                                    });
                                }
                                let response = match behaviour {
                                    UpstreamBehaviour::Person
                                    | UpstreamBehaviour::PersonBodyUnread => {
                                        stub_json(Bytes::from_static(STUB_PERSON.as_bytes()), false)
                                    }
                                    UpstreamBehaviour::Hold(d) => {
                                        tokio::time::sleep(d).await;
                                        stub_json(Bytes::from_static(STUB_PERSON.as_bytes()), false)
                                    }
                                    UpstreamBehaviour::Large { bytes, chunked } => {
                                        let filler = "x".repeat(bytes);
                                        stub_json(
                                            Bytes::from(format!(
                                                r#"{{"name":{{"given":"{filler}"}}}}"#
                                            )),
                                            chunked,
                                        )
                                    }
                                    UpstreamBehaviour::Body { content_type, body } => {
                                        let mut response =
                                            stub_json(Bytes::from_static(body.as_bytes()), false);
                                        response.headers_mut().insert(
                                            http::header::CONTENT_TYPE,
                                            http::HeaderValue::from_static(content_type),
                                        );
                                        response
                                    }
                                    UpstreamBehaviour::Answer {
                                        status,
                                        headers,
                                        body,
                                    } => {
                                        let mut response =
                                            stub_json(Bytes::from_static(body.as_bytes()), false);
                                        *response.status_mut() = StatusCode::from_u16(status)
                                            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                                        for (name, value) in headers {
                                            response.headers_mut().append(
                                                http::HeaderName::from_static(name),
                                                http::HeaderValue::from_static(value),
                                            );
                                        }
                                        response
                                    }
                                };
                                shared.in_flight.fetch_sub(1, Ordering::SeqCst);
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        me
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The most requests that were in flight at once.
    pub fn peak_in_flight(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn stub_json(
    body: Bytes,
    chunked: bool,
) -> http::Response<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>> {
    use http_body_util::{BodyExt as _, Full};
    let boxed = if chunked {
        // Two frames and no length: hyper sends it chunked.
        let half = body.len() / 2;
        Chunks(vec![body.slice(..half), body.slice(half..)].into()).boxed()
    } else {
        Full::new(body).boxed()
    };
    let mut response = http::Response::new(boxed);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// A body of several frames whose length is not announced (sent chunked).
struct Chunks(std::collections::VecDeque<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

/// Misbehaviours of a raw-TCP registry stand-in (see [`scripted_upstream`]).
#[derive(Debug, Clone, Copy)]
pub enum UpstreamFault {
    /// Announces 4096 body bytes, sends 100, then resets the connection.
    ResetMidBody,
    /// Sends the response head at once and the body one byte every 200 ms.
    SlowBody,
    /// Sends the status line, then one header byte every 200 ms.
    SlowHeaders,
}

/// A registry stand-in over raw TCP that reads a request head and then
/// misbehaves as told. Returns its base URL.
pub async fn scripted_upstream(fault: UpstreamFault) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = listener().await;
    let addr = ok(l.local_addr(), "addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let pause = std::time::Duration::from_millis(200);
                match fault {
                    UpstreamFault::ResetMidBody => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n\r\n{\"name\":\"")
                            .await;
                        let _ = stream.write_all(&[b'a'; 100]).await;
                        let _ = stream.flush().await;
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        let _ = stream.set_zero_linger();
                        drop(stream);
                    }
                    UpstreamFault::SlowBody => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n")
                            .await;
                        for _ in 0..1000 {
                            if stream.write_all(b" ").await.is_err() {
                                return;
                            }
                            tokio::time::sleep(pause).await;
                        }
                    }
                    UpstreamFault::SlowHeaders => {
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n").await;
                        for byte in b"content-type: application/json\r\n"
                            .iter()
                            .cycle()
                            .take(1000)
                        {
                            if stream.write_all(&[*byte]).await.is_err() {
                                return;
                            }
                            tokio::time::sleep(pause).await;
                        }
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// What a [`JwksStub`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum JwksMode {
    /// The issuer's real JWKS, fetched at each request.
    Real = 0,
    /// `<html>` with status 200.
    Garbage = 1,
    /// `{"keys":[]}`.
    Empty = 2,
    /// HTTP 500.
    Error = 3,
    /// Accepts, never answers.
    Hang = 4,
    /// Closes the connection without answering.
    Close = 5,
    /// Status 200 and the document last given to [`JwksStub::set_body`].
    Body = 6,
    /// As [`JwksMode::Real`], two seconds late (within the gateway's fetch timeout).
    Slow = 7,
}

/// A gateway whose key set comes through a [`JwksStub`] serving the devkit issuer's keys, so
/// that a test can make it fail or change later.
pub async fn env_behind_jwks_stub() -> (JwksStub, Env) {
    let stub = JwksStub::start(JwksMode::Real).await;
    let env = Env::start(Options {
        jwks_url: Some(stub.url.clone()),
        ..Options::default()
    })
    .await;
    stub.set_real(&env.issuer().jwks_url());
    (stub, env)
}

/// A JWKS endpoint in front of the devkit issuer's that can be switched to
/// fail in various ways; counts the fetches it saw.
#[derive(Clone)]
pub struct JwksStub {
    pub url: String,
    mode: Arc<std::sync::atomic::AtomicU8>,
    real: Arc<std::sync::Mutex<String>>,
    body: Arc<std::sync::Mutex<Bytes>>,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
}

impl JwksStub {
    pub async fn start(mode: JwksMode) -> JwksStub {
        use std::sync::atomic::Ordering;
        let l = listener().await;
        let addr = ok(l.local_addr(), "addr");
        let stub = JwksStub {
            url: format!("http://{addr}/jwk"),
            mode: Arc::new(std::sync::atomic::AtomicU8::new(mode as u8)),
            real: Arc::default(),
            body: Arc::default(),
            fetches: Arc::default(),
        };
        let shared = stub.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = l.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    match shared.mode.load(Ordering::SeqCst) {
                        4 => {
                            shared.fetches.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                            drop(stream);
                            return;
                        }
                        5 => {
                            shared.fetches.fetch_add(1, Ordering::SeqCst);
                            drop(stream);
                            return;
                        }
                        _ => {}
                    }
                    let service =
                        hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                            let shared = shared.clone();
                            async move {
                                shared.fetches.fetch_add(1, Ordering::SeqCst);
                                let mut mode = shared.mode.load(Ordering::SeqCst);
                                if mode == JwksMode::Slow as u8 {
                                    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                                    mode = JwksMode::Real as u8;
                                }
                                let real_url =
                                    shared.real.lock().map(|u| u.clone()).unwrap_or_default();
                                let (status, body) = match mode {
                                    0 if real_url.is_empty() => {
                                        (StatusCode::SERVICE_UNAVAILABLE, Bytes::new())
                                    }
                                    0 => {
                                        let answer = get(&real_url, &[]).await;
                                        (answer.status, answer.body)
                                    }
                                    1 => (StatusCode::OK, Bytes::from_static(b"<html>")),
                                    2 => (StatusCode::OK, Bytes::from_static(br#"{"keys":[]}"#)),
                                    6 => (
                                        StatusCode::OK,
                                        shared.body.lock().map(|b| b.clone()).unwrap_or_default(),
                                    ),
                                    _ => (StatusCode::INTERNAL_SERVER_ERROR, Bytes::new()),
                                };
                                let mut response =
                                    http::Response::new(http_body_util::Full::new(body));
                                *response.status_mut() = status;
                                // No pooling: every fetch is a new connection,
                                // so the hang and close modes apply to each.
                                response.headers_mut().insert(
                                    http::header::CONNECTION,
                                    http::HeaderValue::from_static("close"),
                                );
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        stub
    }

    /// Where [`JwksMode::Real`] fetches from (the issuer's `jwks_url()`).
    pub fn set_real(&self, url: &str) {
        if let Ok(mut real) = self.real.lock() {
            *real = url.to_owned();
        }
    }

    /// What [`JwksMode::Body`] serves.
    pub fn set_body(&self, body: impl Into<Bytes>) {
        if let Ok(mut held) = self.body.lock() {
            *held = body.into();
        }
    }

    pub fn set_mode(&self, mode: JwksMode) {
        self.mode
            .store(mode as u8, std::sync::atomic::Ordering::SeqCst);
    }

    /// Connections (fetch attempts) seen so far.
    pub fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Lowercase hex SHA-256, as the audit record spells body digests.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Every record of the audit log under `dir`, as the JSON lines of
/// `tollbu audit query --json`.
pub fn audit_records(dir: &Path) -> Vec<Value> {
    let report =
        tollbu_audit::tooling::query(dir, &tollbu_audit::tooling::Query::default(), None, true);
    assert!(report.ok, "audit query failed: {}", report.text);
    report
        .text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A second devkit issuer (same clients, its own freshly generated key).
pub async fn start_second_issuer() -> IssuerHandle {
    let config = ok(demo_material::issuer_config(), "demo issuer config");
    let issuer = ok(
        start_issuer(
            listener().await,
            config,
            demo_material::ISSUER_SIGNING_KEY_PEM,
        )
        .await,
        "second issuer",
    );
    // Twice, so the demo key it started with is no longer published.
    ok(issuer.rotate_signing_key(), "second issuer key");
    ok(issuer.rotate_signing_key(), "second issuer key");
    issuer
}
