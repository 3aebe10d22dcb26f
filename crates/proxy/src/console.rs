//! The security officer console: `/console` on the admin listener (never the gateway port).
//!
//! Server-rendered HTML with no scripts (tables work without JavaScript), plus a JSON API under
//! `/console/api/`. Everything but the login form and the stylesheet needs a session from
//! [`auth`]; every read is itself appended to the audit log (service `console`, consumer
//! `console:<user>`, the subject only as its pseudonym) before anything is shown, and a read that
//! cannot be recorded is refused (503). POSTs carry the session's CSRF token; cookies are
//! `HttpOnly; SameSite=Strict; Path=/console`.
//!
//! It does not let anyone change anything: it reads the log directory, the running log's
//! checkpoint and proofs, and the policy set.

pub mod auth;
mod chart;
mod html;
pub mod lockout;
mod pages;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use tollbu_audit::{Decision, Record};

use crate::config::ConsoleSection;
use crate::gateway::GatewayState;
use crate::live::Live;
use crate::operator_problem;
use auth::{Gate, Lifetimes, PasswordHash, Session};

/// Largest form body accepted.
const MAX_FORM_BYTES: usize = 16 * 1024;
/// PBKDF2 runs at once; further logins get 429 rather than queueing CPU work.
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

type Body = Full<Bytes>;

/// What a console handler gets: the state in force and the officer.
struct Ctx {
    state: Arc<GatewayState>,
    /// Earlier logs on the volume (`[audit] retired_dirs`, resolved): the citizen view reads them too.
    retired_logs: Vec<std::path::PathBuf>,
    session: Session,
    started: Instant,
    /// Under `/console/api/`: errors are problem+json rather than pages or text.
    api: bool,
}

/// Handles any request under `/console` from the client at `client` (the connection's peer:
/// failed logins are counted per name and address, see [`lockout`]).
pub async fn handle<B>(live: &Live, request: Request<B>, client: IpAddr) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let config = live.config().console;
    let mut response = if !config.enabled {
        not_found()
    } else {
        route(live, &config, request, client).await
    };
    secure_headers(response.headers_mut());
    response
}

async fn route<B>(
    live: &Live,
    config: &ConsoleSection,
    request: Request<B>,
    client: IpAddr,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let state = live.state();
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/console/static/console.css") => {
            return with_type(
                Response::new(Full::new(Bytes::from_static(include_bytes!(
                    "console/console.css"
                )))),
                "text/css; charset=utf-8",
            );
        }
        (&Method::GET, "/console/login") => {
            return html_response(StatusCode::OK, pages::login(None));
        }
        (&Method::POST, "/console/login") => {
            return login(config, &state, request, client).await;
        }
        _ => {}
    }
    let users: Vec<(&str, [u8; 32])> = config
        .users
        .iter()
        .map(|u| {
            (
                u.name.get_ref().as_str(),
                auth::credential_id(u.password_hash.get_ref()),
            )
        })
        .collect();
    let life = lifetimes(config);
    let gate = auth::with_sessions(|s| {
        auth::gate(
            s,
            request.headers(),
            &path,
            life,
            &users,
            state.audit.dir(),
            Instant::now(),
        )
    });
    let session = match gate {
        Gate::Pass(session) => session,
        Gate::Login => return redirect("/console/login", None),
        Gate::Unauthorized => {
            return operator_problem::response(
                StatusCode::UNAUTHORIZED,
                "login_required",
                "log in at /console/login first",
            );
        }
    };
    let api = path.starts_with("/console/api");
    let query = parse_form(request.uri().query().unwrap_or_default());
    let gateway_config = live.config();
    let ctx = Ctx {
        state,
        retired_logs: gateway_config
            .audit
            .retired_dirs
            .iter()
            .map(|d| gateway_config.resolve(d.get_ref()))
            .collect(),
        session,
        started: Instant::now(),
        api,
    };
    if method == Method::POST {
        let token = auth::cookie(request.headers(), auth::COOKIE).map(str::to_owned);
        let header_csrf = request
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Some(form) = read_form(request).await else {
            return refusal(
                api,
                StatusCode::PAYLOAD_TOO_LARGE,
                "form_too_large",
                "form too large",
            );
        };
        let sent = header_csrf.or_else(|| form.get("csrf").cloned());
        if !sent.is_some_and(|t| auth::ct_eq(t.as_bytes(), ctx.session.csrf.as_bytes())) {
            return refusal(
                api,
                StatusCode::FORBIDDEN,
                "csrf_token_wrong",
                "missing or wrong CSRF token; reload the page",
            );
        }
        return match path.as_str() {
            "/console/logout" => {
                if let Some(token) = token {
                    auth::with_sessions(|s| s.remove(&token));
                }
                redirect(
                    "/console/login",
                    Some(auth::clear_cookie(config.cookie_secure)),
                )
            }
            "/console/records" => pages::records_post(&ctx, &form),
            "/console/citizen" => pages::citizen_post(&ctx, &form),
            "/console/api/citizen" => pages::citizen(&ctx, &form, true, true).await,
            _ => refusal(api, StatusCode::NOT_FOUND, "not_found", "not found"),
        };
    }
    if method != Method::GET {
        return refusal(
            api,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed",
        );
    }
    let rest = match path.strip_prefix("/console/api") {
        Some(rest) => rest,
        None => path.strip_prefix("/console").unwrap_or_default(),
    };
    match rest {
        "" | "/" if !api => redirect("/console/records", None),
        "/records" => pages::records(&ctx, &query, api).await,
        "/verify" => pages::verify(&ctx, api).await,
        "/citizen" => pages::citizen(&ctx, &query, api, false).await,
        "/who-can" => pages::who_can(&ctx, &query, api).await,
        "/charts" => pages::charts(&ctx, &query, api).await,
        other => match other.strip_prefix("/records/").map(str::parse::<u64>) {
            Some(Ok(seq)) => pages::record(&ctx, seq, api).await,
            _ => refusal(api, StatusCode::NOT_FOUND, "not_found", "not found"),
        },
    }
}

fn lifetimes(config: &ConsoleSection) -> Lifetimes {
    Lifetimes {
        ttl: Duration::from_secs(config.session_ttl_secs),
        idle: Duration::from_secs(config.idle_timeout_secs),
    }
}

async fn login<B>(
    config: &ConsoleSection,
    state: &GatewayState,
    request: Request<B>,
    client: IpAddr,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // Cross-site login attempts are refused (SameSite does not cover a login form).
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let host = request.headers().get(header::HOST);
        let same = match (origin.to_str(), host.and_then(|h| h.to_str().ok())) {
            (Ok(o), Some(h)) => {
                o.strip_prefix("http://")
                    .or_else(|| o.strip_prefix("https://"))
                    == Some(h)
            }
            _ => false,
        };
        if !same {
            return text(StatusCode::FORBIDDEN, "cross-origin login refused");
        }
    }
    let Some(form) = read_form(request).await else {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "form too large");
    };
    let name = form.get("user").cloned().unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let now = Instant::now();
    if lockout::with_throttle(|t| t.locked(&name, client, now)) {
        // Attempts on a locked name are recorded too: an officer reviewing logins sees the attack
        // go on, not stop at the fifth try.
        let mut record = console_record(
            &login_consumer(config, &name),
            "login",
            "/console/login",
            None,
            now,
        );
        record.decision = Decision::Deny;
        record.reason = Some("locked_out".into());
        let _ = state.audit.append(record).await;
        return html_response(
            StatusCode::TOO_MANY_REQUESTS,
            pages::login(Some(
                "Too many failed attempts; try again in a few minutes.",
            )),
        );
    }
    let user = config.users.iter().find(|u| u.name.get_ref() == &name);
    let hash = user.and_then(|u| PasswordHash::parse(u.password_hash.get_ref()).ok());
    let credential = user.map(|u| auth::credential_id(u.password_hash.get_ref()));
    // Every attempt costs what the dearest configured hash does (see `spend_iterations`).
    let dearest = config
        .users
        .iter()
        .filter_map(|u| PasswordHash::parse(u.password_hash.get_ref()).ok())
        .map(|h| h.iterations)
        .max()
        .unwrap_or(auth::DEFAULT_ITERATIONS);
    let Ok(_permit) = HASHING.try_acquire() else {
        return html_response(
            StatusCode::TOO_MANY_REQUESTS,
            pages::login(Some(
                "The console is busy checking other logins; try again.",
            )),
        );
    };
    let checked = tokio::task::spawn_blocking(move || {
        let (matches, spent) = match hash {
            Some(hash) => (hash.verify(&password), hash.iterations),
            None => (false, 0),
        };
        auth::spend_iterations(dearest.saturating_sub(spent));
        matches
    })
    .await
    .unwrap_or(false);
    let consumer = login_consumer(config, &name);
    if !checked {
        lockout::with_throttle(|t| t.failed(&name, client, now));
        let mut record = console_record(&consumer, "login", "/console/login", None, now);
        record.decision = Decision::Deny;
        record.reason = Some("bad_credentials".into());
        let _ = state.audit.append(record).await;
        return html_response(
            StatusCode::UNAUTHORIZED,
            pages::login(Some("Wrong user name or password.")),
        );
    }
    let record = console_record(&consumer, "login", "/console/login", None, now);
    if state.audit.append(record).await.is_err() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit log is not accepting records; the console is closed until it does",
        );
    }
    let Some((token, _)) = credential.and_then(|credential| {
        auth::with_sessions(|s| s.create(&name, credential, state.audit.dir().to_path_buf(), now))
    }) else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "no randomness available");
    };
    lockout::with_throttle(|t| t.succeeded(&name, client));
    let cookie = auth::session_cookie(
        &token,
        Duration::from_secs(config.session_ttl_secs),
        config.cookie_secure,
    );
    redirect("/console/records", Some(cookie))
}

/// Who a login attempt is recorded as: the officer named, or `console:unknown` for a name that is
/// not configured (a mistyped or guessed name is not written into the log).
fn login_consumer(config: &ConsoleSection, name: &str) -> String {
    if config.users.iter().any(|u| u.name.get_ref() == name) {
        format!("console:{name}")
    } else {
        "console:unknown".to_owned()
    }
}

/// A record of a console action.
fn console_record(
    consumer: &str,
    operation: &str,
    path_template: &str,
    subject: Option<String>,
    started: Instant,
) -> Record {
    Record {
        time: Record::timestamp(time::OffsetDateTime::now_utc()),
        request_id: crate::ids::request_id(),
        consumer: Some(consumer.to_owned()),
        service: "console".into(),
        operation: operation.into(),
        path_template: Some(path_template.into()),
        subject,
        purpose: Some("audit-review".into()),
        decision: Decision::Allow,
        latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        ..Record::default()
    }
}

impl Ctx {
    /// Appends "this officer looked at this" before the answer is built; `Err` is the 503 to send.
    async fn record_read(
        &self,
        operation: &str,
        path_template: &str,
        subject: Option<String>,
    ) -> Result<(), Response<Body>> {
        let record = console_record(
            &format!("console:{}", self.session.user),
            operation,
            path_template,
            subject,
            self.started,
        );
        match self.state.audit.append(record).await {
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::error!(%error, "console read not recorded; refused");
                Err(refusal(
                    self.api,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "audit_unavailable",
                    "the audit log is not accepting records; the console shows nothing it cannot record",
                ))
            }
        }
    }

    fn viewer(&self) -> html::Viewer<'_> {
        html::Viewer {
            user: &self.session.user,
            csrf: &self.session.csrf,
        }
    }
}

/// Reads an `application/x-www-form-urlencoded` body of at most [`MAX_FORM_BYTES`].
/// Longest a form's body may take to arrive.
const FORM_READ_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

async fn read_form<B>(request: Request<B>) -> Option<HashMap<String, String>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // The header timeout does not cover the body: a form trickled byte by byte must not hold the
    // connection for minutes.
    let body = tokio::time::timeout(
        FORM_READ_DEADLINE,
        Limited::new(request.into_body(), MAX_FORM_BYTES).collect(),
    )
    .await
    .ok()?
    .ok()?
    .to_bytes();
    Some(parse_form(std::str::from_utf8(&body).ok()?))
}

/// Parses `a=1&b=x+y` (first value wins).
fn parse_form(text: &str) -> HashMap<String, String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut out = HashMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(decode(k)).or_insert_with(|| decode(v));
    }
    out
}

fn secure_headers(headers: &mut http::HeaderMap) {
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("x-frame-options", "DENY"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

fn with_type(mut response: Response<Body>, content_type: &'static str) -> Response<Body> {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn html_response(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    with_type(response, "text/html; charset=utf-8")
}

fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Body> {
    let bytes = serde_json::to_vec_pretty(body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    with_type(response, "application/json")
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    with_type(response, "text/plain; charset=utf-8")
}

/// An error answer: problem+json under `/console/api/` (a script reads `code`), plain text on
/// the pages' paths (a browser shows it).
fn refusal(
    api: bool,
    status: StatusCode,
    code: &'static str,
    message: &'static str,
) -> Response<Body> {
    if api {
        operator_problem::response(status, code, message)
    } else {
        text(status, message)
    }
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "not found")
}

fn redirect(location: &str, cookie: Option<String>) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn forms_decode_plus_and_percent() {
        let f = parse_form("user=so&password=a+b%26c%3D&x&user=second");
        assert_eq!(f["user"], "so");
        assert_eq!(f["password"], "a b&c=");
        assert_eq!(f["x"], "");
    }

    #[test]
    fn responses_carry_a_strict_security_policy() {
        let mut r = not_found();
        secure_headers(r.headers_mut());
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && !csp.contains("script-src"));
        assert_eq!(r.headers()["cache-control"], "no-store");
        let r = redirect("/console/login", None);
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[header::LOCATION], "/console/login");
    }
}
