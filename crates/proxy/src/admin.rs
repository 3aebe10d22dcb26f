//! The admin listener (its own port, localhost by default): health,
//! readiness, metrics, the audit log's checkpoint and proofs, policy reload.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::gateway::GatewayState;
use crate::live::Live;
use crate::operator_problem;

/// Connections the admin listener serves at once; more wait in the backlog. Probes, scrapes and a
/// few officers need far fewer, and every connection holds a file descriptor the gateway's own
/// listener needs too.
const ADMIN_MAX_CONNECTIONS: usize = 256;

/// Pause after a failed accept (out of file descriptors, say) rather than spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the admin endpoints until `stop` flips. Connections are bounded in number and, like the
/// gateway's, in how long a request head may take, so a client that opens many and sends little
/// can neither starve the gateway of file descriptors nor hold the listener.
pub async fn serve(
    listener: TcpListener,
    live: Arc<Live>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "admin listener: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let live = Arc::clone(&live);
        let watcher = graceful.watcher();
        let builder = admin_connection_builder(&live.config().limits);
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request: Request<Incoming>| {
                let live = Arc::clone(&live);
                async move {
                    if request.uri().path().starts_with("/console") {
                        return Ok(crate::console::handle(&live, request, peer.ip()).await);
                    }
                    Ok::<_, Infallible>(route(&live, &request).await)
                }
            });
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let _ = watcher.watch(connection.into_owned()).await;
        });
    }
}

/// The gateway's header timeout and head limits, and few HTTP/2 streams per connection.
fn admin_connection_builder(
    limits: &crate::config::LimitsSection,
) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout())
        .max_headers(limits.max_header_count)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(16);
    builder
}

async fn route(live: &Live, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let state = live.state();
    let query = request.uri().query().unwrap_or_default();
    // HEAD is GET without the body (RFC 9110 §9.3.2): monitors and caches ask whether a tile or
    // a new checkpoint is there. hyper sends the headers of the GET answer and no body.
    let method = if request.method() == Method::HEAD {
        &Method::GET
    } else {
        request.method()
    };
    match (method, request.uri().path()) {
        (&Method::GET, "/healthz") => liveness(&state),
        (&Method::GET, "/readyz") => readiness(live, &state),
        (&Method::GET, "/metrics") => metrics(live, &state),
        (&Method::GET, "/audit/verifier-key") => text_response(
            StatusCode::OK,
            format!("{}\n", state.audit.verifier_key()),
            "text/plain; charset=utf-8",
        ),
        // A monitor must see each new checkpoint: a cache may keep it only to revalidate.
        (&Method::GET, "/audit/checkpoint") => match state.audit.latest_checkpoint() {
            Some(note) => text_response(StatusCode::OK, note, "text/plain; charset=utf-8"),
            None => operator_problem::response(
                StatusCode::NOT_FOUND,
                "no_checkpoint",
                "the log has signed no checkpoint yet",
            ),
        },
        (&Method::GET, "/audit/proof/inclusion") => {
            proof_response(query, ("index", "size"), |index, size| {
                state.audit.inclusion_proof(index, size)
            })
        }
        (&Method::GET, "/audit/proof/consistency") => {
            proof_response(query, ("from", "to"), |from, to| {
                state.audit.consistency_proof(from, to)
            })
        }
        // Operators reload with curl or a probe, which send no `Origin`; a browser always does on a
        // POST, so a page an officer happens to open cannot make the gateway reload.
        (&Method::POST, "/admin/reload") if request.headers().contains_key(header::ORIGIN) => {
            let mut refused = operator_problem::body(
                StatusCode::FORBIDDEN,
                "reload_from_browser",
                "reload is not accepted from a browser page (it sent `Origin`)",
            );
            refused["reloaded"] = json!(false);
            operator_problem::with_body(StatusCode::FORBIDDEN, &refused)
        }
        (&Method::POST, "/admin/reload") => match live.reload().await {
            Ok(report) => {
                json_response(StatusCode::OK, &json!({"reloaded": true, "report": report}))
            }
            // The operator is told what is wrong and where (file and line): it is their config.
            Err(error) => {
                let mut refused = operator_problem::body(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "reload_refused",
                    &error.to_string(),
                );
                refused["reloaded"] = json!(false);
                operator_problem::with_body(StatusCode::UNPROCESSABLE_ENTITY, &refused)
            }
        },
        (&Method::GET, path) if path.starts_with("/audit/tile/") => {
            match parse_tile_path(&path["/audit/tile/".len()..]) {
                Some((level, n, width)) => match state.audit.tile(level, n, width) {
                    Ok(bytes) => {
                        let mut response = Response::new(Full::new(Bytes::from(bytes)));
                        let headers = response.headers_mut();
                        headers.insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/octet-stream"),
                        );
                        // A tile's URL names its contents for good, a partial one by its width
                        // (C2SP tlog-tiles): caches may keep it. A log that ever served other
                        // bytes at the same URL has forked, which a kept copy helps show.
                        headers.insert(
                            header::CACHE_CONTROL,
                            HeaderValue::from_static("public, max-age=31536000, immutable"),
                        );
                        response
                    }
                    Err(error) => log_read_failure(error, StatusCode::NOT_FOUND, "tile_not_found"),
                },
                None => operator_problem::response(
                    StatusCode::BAD_REQUEST,
                    "bad_tile_path",
                    "not a tlog-tiles path (tile/<L>/<N>[.p/<W>])",
                ),
            }
        }
        (_, path) => match allowed_methods(path) {
            Some(allowed) => {
                let mut response = operator_problem::response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    &format!("use {allowed}"),
                );
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allowed));
                response
            }
            None => operator_problem::response(
                StatusCode::NOT_FOUND,
                "not_found",
                "the admin port serves no such path",
            ),
        },
    }
}

/// The methods a known admin path answers (for 405's `Allow`, RFC 9110 §15.5.6); `None` for a
/// path the admin port does not serve.
fn allowed_methods(path: &str) -> Option<&'static str> {
    match path {
        "/admin/reload" => Some("POST"),
        "/healthz"
        | "/readyz"
        | "/metrics"
        | "/audit/verifier-key"
        | "/audit/checkpoint"
        | "/audit/proof/inclusion"
        | "/audit/proof/consistency" => Some("GET, HEAD"),
        tile if tile.starts_with("/audit/tile/") => Some("GET, HEAD"),
        _ => None,
    }
}

/// Live unless the audit log has stopped for good after a storage failure: only a restart,
/// which re-reads the disk, brings it back, so the orchestrator should restart the process.
fn liveness(state: &GatewayState) -> Response<Full<Bytes>> {
    let audit = state.audit.stats();
    if audit.writable {
        json_response(StatusCode::OK, &json!({"status": "ok"}))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({
                "status": "audit_log_stopped",
                "detail": "the audit log stopped after a storage failure; a restart recovers it",
            }),
        )
    }
}

fn readiness(live: &Live, state: &GatewayState) -> Response<Full<Bytes>> {
    let issuers = state.verifier.status();
    let mut not_ready = Vec::new();
    for issuer in &issuers {
        if issuer.keys == 0 {
            not_ready.push(format!("issuer `{}` has no usable keys", issuer.issuer));
        }
    }
    let audit = state.audit.stats();
    if !audit.writable {
        not_ready.push("audit log is not writable".to_owned());
    }
    if audit.appends_failing.is_some() {
        // Every request is refused (503) until a batch of records is written again.
        not_ready.push("audit records cannot be written (retrying)".to_owned());
    }
    let shutting_down = live.shutting_down.load(Ordering::Relaxed);
    if shutting_down {
        not_ready.push("shutting down: send new requests to another replica".to_owned());
    }
    let body = json!({
        "ready": not_ready.is_empty(),
        "not_ready": not_ready,
        "shutting_down": shutting_down,
        "policy_version": state.policies.version(),
        "last_reload_error": live.last_reload_error(),
        "reload_failures": live.reload_failures.load(Ordering::Relaxed),
        "issuers": issuers,
        "audit": {
            "writable": audit.writable,
            "appends_failing": audit.appends_failing,
            "checkpoints_failing": audit.checkpoints_failing,
            "records": audit.records,
            "checkpoint_size": audit.checkpoint_size,
            "queue_depth": audit.queue_depth,
        },
    });
    let status = if not_ready.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &body)
}

fn metrics(live: &Live, state: &GatewayState) -> Response<Full<Bytes>> {
    let mut out = String::new();
    state.metrics.render(&mut out);
    out.push_str("# HELP tollbu_jwks_fetches_total JWKS fetches per issuer.\n# TYPE tollbu_jwks_fetches_total counter\n");
    for issuer in state.verifier.status() {
        let _ = writeln!(
            out,
            "tollbu_jwks_fetches_total{{issuer=\"{}\"}} {}",
            issuer.issuer, issuer.fetches
        );
    }
    out.push_str("# HELP tollbu_jwks_fetch_failures_total Failed JWKS fetches per issuer.\n# TYPE tollbu_jwks_fetch_failures_total counter\n");
    for issuer in state.verifier.status() {
        let _ = writeln!(
            out,
            "tollbu_jwks_fetch_failures_total{{issuer=\"{}\"}} {}",
            issuer.issuer, issuer.failures
        );
    }
    out.push_str(
        "# HELP tollbu_reloads_total Reloads applied.\n# TYPE tollbu_reloads_total counter\n",
    );
    let _ = writeln!(
        out,
        "tollbu_reloads_total {}",
        live.reloads.load(Ordering::Relaxed)
    );
    out.push_str("# HELP tollbu_reload_failures_total Reloads refused (broken config, policy or certificate).\n# TYPE tollbu_reload_failures_total counter\n");
    let _ = writeln!(
        out,
        "tollbu_reload_failures_total {}",
        live.reload_failures.load(Ordering::Relaxed)
    );
    out.push_str("# HELP tollbu_rate_limit_buckets Rate-limit buckets held.\n# TYPE tollbu_rate_limit_buckets gauge\n");
    let _ = writeln!(
        out,
        "tollbu_rate_limit_buckets {}",
        state.rate_limits.bucket_count()
    );
    render_exchange_limits(&mut out, state);
    let audit = state.audit.stats();
    for (name, kind, help, value) in [
        (
            "tollbu_audit_records",
            "gauge",
            "Durable audit records (tree size).",
            audit.records as f64,
        ),
        (
            "tollbu_audit_checkpoint_size",
            "gauge",
            "Tree size of the latest signed checkpoint.",
            audit.checkpoint_size as f64,
        ),
        (
            "tollbu_audit_queue_depth",
            "gauge",
            "Audit records waiting for the writer.",
            audit.queue_depth as f64,
        ),
        (
            "tollbu_audit_last_batch_size",
            "gauge",
            "Records in the last group commit.",
            audit.last_batch_size as f64,
        ),
        (
            "tollbu_audit_last_fsync_seconds",
            "gauge",
            "Duration of the last audit fsync.",
            audit.last_fsync_micros as f64 / 1e6,
        ),
        (
            "tollbu_audit_writable",
            "gauge",
            "1 while the audit log accepts records.",
            if audit.writable { 1.0 } else { 0.0 },
        ),
        (
            "tollbu_audit_appends_failing",
            "gauge",
            "1 while the last batch of audit records could not be written (a full disk, say); requests are refused until one is.",
            if audit.appends_failing.is_some() {
                1.0
            } else {
                0.0
            },
        ),
        (
            "tollbu_audit_checkpoints_failing",
            "gauge",
            "1 while tiles or the signed checkpoint could not be written and are being retried.",
            if audit.checkpoints_failing.is_some() {
                1.0
            } else {
                0.0
            },
        ),
        (
            "tollbu_audit_first_retained_record",
            "gauge",
            "Audit records below this were removed by retention (their hashes stay).",
            audit.first_retained as f64,
        ),
        (
            "tollbu_audit_retention_failures_total",
            "counter",
            "Audit retention sweeps that failed; each is retried at the next sweep.",
            live.retention_failures.load(Ordering::Relaxed) as f64,
        ),
        (
            "tollbu_open_connections",
            "gauge",
            "Client connections open on the gateway listeners.",
            live.open_connections.load(Ordering::Relaxed) as f64,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    render_fsync_histogram(&mut out, &audit.fsync);
    render_worker_requests(&mut out, &live.workers);
    text_response(
        StatusCode::OK,
        out,
        "text/plain; version=0.0.4; charset=utf-8",
    )
}

/// Each worker's current limit on exchanges with each registry (`registry_limit`): how many
/// registry connections the gateway may hold, and whether a slow registry has been given room.
fn render_exchange_limits(out: &mut String, state: &GatewayState) {
    out.push_str("# HELP tollbu_upstream_exchange_limit Exchanges a request worker may run at once with a registry (adaptive, up to its share of upstream_max_connections).\n# TYPE tollbu_upstream_exchange_limit gauge\n");
    let mut services: Vec<_> = state.upstreams.iter().collect();
    services.sort_by(|a, b| a.0.cmp(b.0));
    for (service, upstream) in services {
        for (worker, limit) in upstream.worker_limits().iter().enumerate() {
            let _ = writeln!(
                out,
                "tollbu_upstream_exchange_limit{{service=\"{service}\",worker=\"{worker}\"}} {limit}"
            );
        }
    }
}

/// Requests per request worker: a platform team sees whether the cores share the load (HTTP/1
/// connections stay on the worker they were dealt to; see `workers`).
fn render_worker_requests(out: &mut String, workers: &crate::workers::Dealer) {
    out.push_str("# HELP tollbu_worker_requests_total Requests run by each request worker.\n# TYPE tollbu_worker_requests_total counter\n");
    for (worker, served) in workers.requests_served().iter().enumerate() {
        let _ = writeln!(
            out,
            "tollbu_worker_requests_total{{worker=\"{worker}\"}} {served}"
        );
    }
    out.push_str("# HELP tollbu_worker_requests_in_flight Requests running on each request worker.\n# TYPE tollbu_worker_requests_in_flight gauge\n");
    for (worker, running) in workers.requests_in_flight().iter().enumerate() {
        let _ = writeln!(
            out,
            "tollbu_worker_requests_in_flight{{worker=\"{worker}\"}} {running}"
        );
    }
}

/// `tollbu_audit_fsync_seconds`: every durable answer waits for one or two segment fsyncs, so this
/// is where a slow or stalling disk shows (a last-value gauge sampled every scrape hides the tail).
fn render_fsync_histogram(out: &mut String, fsync: &tollbu_audit::FsyncHistogram) {
    crate::metrics::render_histogram(
        out,
        "tollbu_audit_fsync_seconds",
        "Duration of audit segment fsyncs (group commits).",
        fsync
            .buckets
            .iter()
            .map(|&(micros, n)| (micros as f64 / 1e6, n)),
        fsync.sum_micros as f64 / 1e6,
        fsync.count,
    );
}

/// Width of a full tile (C2SP tlog-tiles).
const TILE_WIDTH: u64 = 256;

/// Parses `<L>/<N>[.p/<W>]` where `N` is written in 3-digit groups, all but
/// the last prefixed `x` (C2SP tlog-tiles), into (level, index, width).
fn parse_tile_path(path: &str) -> Option<(u8, u64, u64)> {
    let original = path;
    let (path, width) = match path.split_once(".p/") {
        Some((head, w)) => {
            let width: u64 = w.parse().ok().filter(|w| (1..TILE_WIDTH).contains(w))?;
            (head, width)
        }
        None => (path, TILE_WIDTH),
    };
    let mut segments = path.split('/');
    let level: u8 = segments.next()?.parse().ok().filter(|l| *l <= 63)?;
    let groups: Vec<&str> = segments.collect();
    let (last, leading) = groups.split_last()?;
    let three_digits = |g: &str| g.len() == 3 && g.bytes().all(|b| b.is_ascii_digit());
    let mut n: u64 = 0;
    for group in leading {
        let digits = group.strip_prefix('x').filter(|g| three_digits(g))?;
        n = n.checked_mul(1000)?.checked_add(digits.parse().ok()?)?;
    }
    if !three_digits(last) {
        return None;
    }
    n = n.checked_mul(1000)?.checked_add(last.parse().ok()?)?;
    // One spelling per tile (`x000/005`, `00/005`, `+0/005` or `.p/017` would be second URLs
    // for a tile): the path must be the one the tile's own name renders to.
    let canonical = tollbu_audit::tile::tile_path(level, n, width);
    if canonical.strip_prefix("tile/") != Some(original) {
        return None;
    }
    Some((level, n, width))
}

/// A proof named by two numeric query parameters, as JSON.
fn proof_response<P: serde::Serialize>(
    query: &str,
    (first, second): (&str, &str),
    prove: impl FnOnce(u64, u64) -> Result<P, tollbu_audit::AuditError>,
) -> Response<Full<Bytes>> {
    match (param(query, first), param(query, second)) {
        (Some(a), Some(b)) => match prove(a, b) {
            Ok(proof) => json_response(StatusCode::OK, &proof),
            Err(error) => log_read_failure(error, StatusCode::BAD_REQUEST, "bad_proof_request"),
        },
        _ => operator_problem::response(
            StatusCode::BAD_REQUEST,
            "bad_proof_request",
            &format!("give `{first}` and `{second}`, each once, as plain decimal numbers"),
        ),
    }
}

/// A proof or tile the log cannot give: a range beyond the log (the caller's, with `code`) is
/// told as it is; a failure to read the log is logged and answered 500 without its internals.
fn log_read_failure(
    error: tollbu_audit::AuditError,
    status: StatusCode,
    code: &'static str,
) -> Response<Full<Bytes>> {
    use tollbu_audit::AuditError;
    match error {
        AuditError::OutOfRange { .. }
        | AuditError::SizeBeyond { .. }
        | AuditError::BadRequest(_) => operator_problem::response(status, code, &error.to_string()),
        other => {
            tracing::error!(error = %other, "admin port: the audit log's hashes could not be read");
            operator_problem::response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "audit_unreadable",
                "the audit log could not be read; the gateway's log names the cause",
            )
        }
    }
}

/// A decimal number given once, in its one spelling (no sign, no leading zero): the proof the
/// JSON answers is for exactly the numbers the URL names.
fn param(query: &str, name: &str) -> Option<u64> {
    let mut values = form_urlencoded_pairs(query).filter(|(k, _)| *k == name);
    let (_, value) = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let number: u64 = value.parse().ok()?;
    (number.to_string() == value).then_some(number)
}

fn form_urlencoded_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query.split('&').filter_map(|pair| pair.split_once('='))
}

/// Health, metrics, proofs and errors describe this moment: no cache keeps them.
fn json_response<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    crate::error::no_store_json(status, body, "application/json")
}

/// The checkpoint, the verifier key and metrics: a cache may keep them only to revalidate.
fn text_response(
    status: StatusCode,
    body: String,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::parse_tile_path;

    #[test]
    fn tile_paths_follow_c2sp_tlog_tiles() {
        assert_eq!(parse_tile_path("0/000"), Some((0, 0, 256)));
        assert_eq!(
            parse_tile_path("0/x001/x234/067"),
            Some((0, 1_234_067, 256))
        );
        assert_eq!(parse_tile_path("1/005.p/17"), Some((1, 5, 17)));
        assert_eq!(parse_tile_path("0/5"), None);
        assert_eq!(parse_tile_path("0/x001"), None);
        assert_eq!(parse_tile_path("0/001/002"), None);
        assert_eq!(parse_tile_path("0/x000/005"), None);
        assert_eq!(parse_tile_path("0/x000/000.p/5"), None);
        assert_eq!(
            parse_tile_path("0/x018/x446/x744/x073/x709/x551/615"),
            Some((0, u64::MAX, 256))
        );
        assert_eq!(parse_tile_path("0/000.p/256"), None);
        assert_eq!(parse_tile_path("0/000.p/0"), None);
        assert_eq!(parse_tile_path("64/000"), None);
        assert_eq!(parse_tile_path("../000"), None);
        for second_spelling in [
            "00/000",
            "+0/000",
            "01/000",
            "0/269.p/0137",
            "0/269.p/+137",
            "1/000.p/011",
        ] {
            assert_eq!(parse_tile_path(second_spelling), None, "{second_spelling}");
        }
        assert_eq!(parse_tile_path("0/269.p/137"), Some((0, 269, 137)));
    }

    #[test]
    fn a_proof_parameter_is_one_number_in_its_one_spelling() {
        assert_eq!(super::param("index=1&size=5", "index"), Some(1));
        assert_eq!(super::param("index=0&size=5", "index"), Some(0));
        for bad in [
            "index=01",
            "index=+1",
            "index=1&index=2",
            "index=",
            "index=1x",
        ] {
            assert_eq!(super::param(bad, "index"), None, "{bad}");
        }
    }

    #[test]
    fn known_paths_name_their_methods() {
        assert_eq!(super::allowed_methods("/admin/reload"), Some("POST"));
        assert_eq!(
            super::allowed_methods("/audit/tile/0/000"),
            Some("GET, HEAD")
        );
        assert_eq!(
            super::allowed_methods("/audit/checkpoint"),
            Some("GET, HEAD")
        );
        assert_eq!(super::allowed_methods("/nothing"), None);
    }
}
