//! Forwarding to a registry: builds the outbound request (our headers, not
//! the caller's credentials), sends it over the service's pooled client under
//! a total timeout, and reads the answer within the size limit.
//!
//! The response body is read whole before anything is released: the audit
//! record must hold the SHA-256 of the body as sent, and must be durable
//! before the first byte leaves (see `docs/architecture-notes.md`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};

use crate::headers as names;
use crate::http_client::{HttpClient, OutboundBody};
use crate::registry_limit::{AdaptiveLimit, Slot};

/// One configured registry.
pub struct Upstream {
    /// The pool used off the request workers (tools, tests, benches).
    pub client: HttpClient,
    /// One pool per request worker, indexed by worker: a request then uses
    /// registry connections driven by its own thread (see `workers`).
    per_worker: Vec<WorkerPool>,
    /// Scheme and authority, e.g. `http://127.0.0.1:8101`.
    pub origin: String,
    /// Base path without trailing slash, e.g. `` or `/api/v1`.
    pub base_path: String,
    /// Issuers whose tokens this service accepts; `None` = all trusted.
    pub issuers: Option<Vec<String>>,
    /// Bounds concurrent exchanges (and so open connections) to the registry:
    /// the pool only limits idle connections, and each one costs buffers.
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    max_connections: usize,
}

/// A worker's own registry connections, with its share of the connection cap:
/// a pool's connections are not shared with other workers, so without a share
/// each pool would grow to the whole cap (≈ 40 KiB per connection). Within the
/// share, the worker runs as many exchanges at once as pay (`registry_limit`).
struct WorkerPool {
    client: HttpClient,
    limit: AdaptiveLimit,
}

/// Default for `[limits] upstream_max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Each request worker's share of a registry's connection cap (rounded up):
/// the exchanges its pool may run at once, and the idle connections it keeps.
pub fn worker_share(max_connections: usize, workers: usize) -> usize {
    max_connections.div_ceil(workers.max(1))
}

/// What came back from the registry.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why forwarding failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    #[error("upstream timed out")]
    Timeout,
    #[error("upstream response larger than allowed")]
    TooLarge,
    #[error("cannot build upstream request: {0}")]
    Build(String),
}

/// Ends the exchanges still waiting on a registry when a shutdown's grace
/// period is nearly over, as upstream timeouts: each is then answered 504 and
/// recorded (decision `error`) before the audit log closes. Without it, a
/// request held by a hanging registry past the grace had no record at all.
///
/// One per process, shared by every state a reload builds. A request pays for
/// a receiver (two atomic counts) and a wait registered on one of the watch
/// channel's shards; nothing is allocated.
#[derive(Clone)]
pub struct UpstreamCutoff(std::sync::Arc<tokio::sync::watch::Sender<bool>>);

impl Default for UpstreamCutoff {
    fn default() -> Self {
        UpstreamCutoff(std::sync::Arc::new(tokio::sync::watch::Sender::new(false)))
    }
}

impl UpstreamCutoff {
    /// Ends every exchange in flight now, and any started later.
    pub fn cut(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once [`UpstreamCutoff::cut`] was called (at once if it already was).
    pub async fn reached(&self) {
        let mut cut = self.0.subscribe();
        if cut.wait_for(|cut| *cut).await.is_err() {
            // The sender lives as long as `self`: unreachable, but never a cut.
            std::future::pending::<()>().await;
        }
    }
}

/// The caller's request as it will be forwarded.
pub struct Outbound<'a> {
    pub method: Method,
    /// Path after the service prefix, normalised.
    pub rest: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: OutboundBody,
}

/// Identity and context the gateway asserts to the registry.
pub struct Assertions<'a> {
    pub request_id: &'a str,
    pub traceparent: Option<&'a str>,
    pub consumer: &'a str,
    pub supplier: Option<&'a str>,
    pub client_id: &'a str,
    pub grant_id: &'a str,
    pub purpose: &'a str,
    pub peer: SocketAddr,
    pub scheme: &'static str,
}

impl Upstream {
    /// Parses `base_url` into origin and base path.
    pub fn new(
        base_url: &str,
        client: HttpClient,
        issuers: Option<Vec<String>>,
    ) -> Result<Upstream, UpstreamError> {
        let uri: Uri = base_url
            .parse()
            .map_err(|_| UpstreamError::Build(format!("bad upstream URL `{base_url}`")))?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(UpstreamError::Build(format!(
                "upstream URL `{base_url}` needs scheme and host"
            )));
        };
        Ok(Upstream {
            client,
            origin: format!("{scheme}://{authority}"),
            base_path: uri.path().trim_end_matches('/').to_owned(),
            issuers,
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_CONNECTIONS)),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            per_worker: Vec::new(),
        })
    }

    /// At most `n` exchanges with this registry at once (others wait, within the total timeout).
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self.permits = std::sync::Arc::new(tokio::sync::Semaphore::new(self.max_connections));
        let clients = std::mem::take(&mut self.per_worker)
            .into_iter()
            .map(|pool| pool.client)
            .collect();
        self.with_worker_clients(clients)
    }

    /// Gives each request worker its own pool (`clients[i]` for worker `i`)
    /// with an equal share of the connection cap (rounded up); the cap itself
    /// still holds across all workers.
    pub fn with_worker_clients(mut self, clients: Vec<HttpClient>) -> Self {
        let share = worker_share(self.max_connections, clients.len());
        self.per_worker = clients
            .into_iter()
            .map(|client| WorkerPool {
                client,
                limit: AdaptiveLimit::new(share),
            })
            .collect();
        self
    }

    /// Each request worker's current limit on exchanges with this registry, by worker index.
    pub fn worker_limits(&self) -> Vec<usize> {
        self.per_worker
            .iter()
            .map(|pool| pool.limit.current())
            .collect()
    }

    /// The pool of the worker running the caller, with its limit.
    fn pool(&self) -> (&HttpClient, Option<&AdaptiveLimit>) {
        match crate::workers::current_index().and_then(|index| self.per_worker.get(index)) {
            Some(pool) => (&pool.client, Some(&pool.limit)),
            None => (&self.client, None),
        }
    }

    /// Sends one request and reads the whole answer, within `timeout` and `max_body`.
    pub async fn forward(
        &self,
        outbound: Outbound<'_>,
        assertions: &Assertions<'_>,
        timeout: Duration,
        max_body: usize,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let Outbound {
            method,
            rest,
            query,
            headers: incoming,
            body,
        } = outbound;
        let target = match query {
            Some(q) => format!("{}{}{}?{}", self.origin, self.base_path, rest, q),
            None => format!("{}{}{}", self.origin, self.base_path, rest),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(target)
            .body(body)
            .map_err(|e| UpstreamError::Build(e.to_string()))?;
        let exchange = async {
            let closed = |_| UpstreamError::Unreachable("closed".into());
            let (pool, worker_limit) = self.pool();
            let _slot: Option<Slot<'_>> = match worker_limit {
                Some(limit) => Some(limit.acquire().await.map_err(closed)?),
                None => None,
            };
            let _permit = self.permits.acquire().await.map_err(closed)?;
            // Built once a connection slot is free: a request queued for one
            // holds no outbound header map (≈ 3 KiB each at 1,000 connections).
            *request.headers_mut() = outbound_headers(incoming, assertions);
            let response = pool
                .request(request)
                .await
                .map_err(|e| UpstreamError::Unreachable(error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            if parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                .is_some_and(|len| len > max_body)
            {
                return Err(UpstreamError::TooLarge);
            }
            let collected = Limited::new(body, max_body).collect().await.map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    UpstreamError::TooLarge
                } else {
                    UpstreamError::Unreachable(e.to_string())
                }
            })?;
            let body = collected.to_bytes();
            let body = if body.len() <= DETACH_MAX_BYTES {
                Bytes::copy_from_slice(&body)
            } else {
                body
            };
            Ok(UpstreamResponse {
                status: parts.status,
                headers: kept_answer_headers(&parts.headers),
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout)?
    }
}

/// Answers up to this size are copied out of the registry connection's read
/// buffer. hyper hands out the header values and a one-chunk body as slices of
/// that buffer, so a 1 KiB answer held until its audit record is durable would
/// keep the whole buffer (8 KiB or more) alive that long, while the connection
/// reads on into a new one. A larger body fills most of its buffer anyway and
/// is not copied.
const DETACH_MAX_BYTES: usize = 64 * 1024;

/// Of the registry's headers, those the gateway reads or passes on
/// ([`crate::minimise::ANSWER_HEADERS_USED`]) and `Connection` does not name as hop-by-hop, each
/// value in its own allocation (see [`DETACH_MAX_BYTES`]). The others are dropped on arrival:
/// none of them reaches the caller.
fn kept_answer_headers(registry: &HeaderMap) -> HeaderMap {
    let hop_by_hop = connection_named(registry);
    let mut kept = HeaderMap::new();
    for name in crate::minimise::ANSWER_HEADERS_USED {
        if hop_by_hop.contains(&name) {
            continue;
        }
        for value in registry.get_all(&name) {
            let copy = match HeaderValue::from_bytes(value.as_bytes()) {
                Ok(mut copy) => {
                    copy.set_sensitive(value.is_sensitive());
                    copy
                }
                Err(_) => value.clone(),
            };
            kept.append(name.clone(), copy);
        }
    }
    kept
}

/// The few caller headers a registry needs to shape its answer or read a
/// body, plus our own assertions and forwarding headers.
///
/// An allow-list: any other caller header could change what the registry
/// does after the decision (`Range` serves a fragment the filter cannot
/// minimise, `X-Original-URL` or a method override re-target the request,
/// `Accept-Encoding` makes the answer unreadable to the filter).
fn outbound_headers(incoming: &HeaderMap, a: &Assertions<'_>) -> HeaderMap {
    let named_by_connection = connection_named(incoming);
    let mut headers = HeaderMap::with_capacity(FORWARDED_FROM_CALLER.len() + 10);
    for (name, value) in incoming {
        if FORWARDED_FROM_CALLER.contains(&name.as_str()) && !named_by_connection.contains(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    let peer_ip = a.peer.ip();
    let forwarded_for = if peer_ip.is_ipv6() {
        format!("\"[{peer_ip}]\"")
    } else {
        peer_ip.to_string()
    };
    set(
        header::FORWARDED,
        &format!("for={forwarded_for};proto={}", a.scheme),
    );
    set(
        HeaderName::from_static("x-forwarded-for"),
        &peer_ip.to_string(),
    );
    set(HeaderName::from_static("x-forwarded-proto"), a.scheme);
    set(names::REQUEST_ID, a.request_id);
    if let Some(traceparent) = a.traceparent {
        set(names::TRACEPARENT, traceparent);
    }
    set(names::VERIFIED_CONSUMER, a.consumer);
    if let Some(supplier) = a.supplier {
        set(names::VERIFIED_SUPPLIER, supplier);
    }
    set(names::VERIFIED_CLIENT_ID, a.client_id);
    set(names::VERIFIED_GRANT, a.grant_id);
    set(names::VERIFIED_PURPOSE, a.purpose);
    headers
}

/// Caller headers forwarded to the registry: what it may answer in, and
/// how the request body is encoded. Everything else stays at the gateway.
pub const FORWARDED_FROM_CALLER: [&str; 5] = [
    "accept",
    "accept-language",
    "content-type",
    "content-encoding",
    "content-language",
];

/// Header names listed in `Connection` (they are hop-by-hop too).
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect()
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn kept_answer_headers_are_the_used_ones_each_released_from_the_read_buffer() {
        // As hyper hands them out: every value a slice of the connection's read buffer.
        let buffer = Bytes::from(b"application/json|a=1|b=2|secret|30|gzip".to_vec());
        let value = |from: usize, to: usize| {
            HeaderValue::from_maybe_shared(buffer.slice(from..to)).unwrap()
        };
        let mut headers = HeaderMap::new();
        headers.append(header::CONTENT_TYPE, value(0, 16));
        headers.append(header::SET_COOKIE, value(17, 20));
        headers.append(header::SET_COOKIE, value(21, 24));
        let mut secret = value(25, 31);
        secret.set_sensitive(true);
        headers.append(header::RETRY_AFTER, secret);
        headers.append(header::RETRY_AFTER, value(32, 34));
        headers.append(header::CONTENT_ENCODING, value(35, 39));
        headers.append(
            header::CONNECTION,
            HeaderValue::from_static("content-encoding"),
        );
        assert!(!buffer.is_unique());

        let kept = kept_answer_headers(&headers);
        drop(headers);
        assert!(buffer.is_unique(), "a value still shares the read buffer");
        assert_eq!(kept.len(), 3, "{kept:?}");
        assert_eq!(kept[header::CONTENT_TYPE], "application/json");
        let retry: Vec<_> = kept.get_all(header::RETRY_AFTER).iter().collect();
        assert_eq!(retry, ["secret", "30"]);
        assert!(kept[header::RETRY_AFTER].is_sensitive());
        assert!(kept.get(header::SET_COOKIE).is_none());
        assert!(
            kept.get(header::CONTENT_ENCODING).is_none(),
            "named in Connection: hop-by-hop"
        );
    }

    /// What the gateway asserts for consumer 310000019 calling from 127.0.0.1 over `scheme`.
    fn assertions(scheme: &'static str) -> Assertions<'static> {
        Assertions {
            request_id: "r1",
            traceparent: None,
            consumer: "310000019",
            supplier: None,
            client_id: "c",
            grant_id: "g",
            purpose: "p",
            peer: "127.0.0.1:5000".parse().unwrap(),
            scheme,
        }
    }

    #[test]
    fn outbound_headers_drop_credentials_and_spoofed_identity() {
        let mut incoming = HeaderMap::new();
        incoming.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret"),
        );
        incoming.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        incoming.insert("x-secret-hop", HeaderValue::from_static("1"));
        incoming.insert(
            "tollbu-verified-consumer",
            HeaderValue::from_static("999999999"),
        );
        incoming.insert("tollbu-verified-anything", HeaderValue::from_static("x"));
        incoming.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        incoming.insert("accept", HeaderValue::from_static("application/json"));
        // Headers that would change what the registry does after the decision.
        for (name, value) in [
            ("range", "bytes=54-157"),
            ("if-range", "\"x\""),
            ("if-none-match", "\"x\""),
            ("accept-encoding", "gzip, br"),
            ("x-original-url", "/persons/17912099997"),
            ("x-http-method-override", "DELETE"),
            ("x-real-ip", "6.6.6.6"),
            ("tollbu-purpose", "anything"),
            ("cookie", "a=b"),
        ] {
            incoming.insert(name, HeaderValue::from_static(value));
        }
        incoming.insert(
            "content-type",
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        let out = outbound_headers(&incoming, &assertions("https"));
        assert!(out.get(header::AUTHORIZATION).is_none());
        assert!(out.get(header::CONNECTION).is_none());
        assert!(out.get("x-secret-hop").is_none());
        assert!(out.get("tollbu-verified-anything").is_none());
        assert_eq!(out.get("tollbu-verified-consumer").unwrap(), "310000019");
        assert_eq!(out.get("x-forwarded-for").unwrap(), "127.0.0.1");
        assert_eq!(
            out.get(header::FORWARDED).unwrap(),
            "for=127.0.0.1;proto=https"
        );
        assert_eq!(out.get("accept").unwrap(), "application/json");
        assert_eq!(
            out.get("content-type").unwrap(),
            "application/json; charset=utf-8"
        );
        assert_eq!(out.get("x-request-id").unwrap(), "r1");
        for name in [
            "range",
            "if-range",
            "if-none-match",
            "accept-encoding",
            "x-original-url",
            "x-http-method-override",
            "x-real-ip",
            "tollbu-purpose",
            "cookie",
        ] {
            assert!(out.get(name).is_none(), "{name} was forwarded");
        }
        assert_eq!(
            out.get("tollbu-verified-purpose").unwrap(),
            "p",
            "the purpose the decision accepted, not the caller's"
        );
    }

    #[test]
    fn a_caller_header_named_in_connection_is_not_forwarded_even_if_allowed() {
        let mut incoming = HeaderMap::new();
        incoming.insert(header::CONNECTION, HeaderValue::from_static("accept"));
        incoming.insert("accept", HeaderValue::from_static("application/json"));
        incoming.insert("accept-language", HeaderValue::from_static("nb"));
        let out = outbound_headers(&incoming, &assertions("http"));
        assert!(out.get("accept").is_none());
        assert_eq!(out.get("accept-language").unwrap(), "nb");
    }
}
