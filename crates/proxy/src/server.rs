//! Listeners: plaintext (HTTP/1.1 and h2c prior knowledge) and TLS (ALPN h2
//! and http/1.1, optional mTLS), with the abuse limits applied per
//! connection, a connection cap, and graceful drain on shutdown. A TLS
//! connection's client certificate travels with each of its requests (for
//! certificate-bound tokens, RFC 8705).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::authn::ClientCertificate;
use crate::config::LimitsSection;
use crate::http_version::{HttpVersion, negotiated_version, plaintext_version, with_h2_preface};
use crate::live::Live;
use crate::stack;
use crate::workers::Dealer;

/// Connection builder with the configured limits.
fn connection_builder(limits: &LimitsSection) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout())
        .max_headers(limits.max_header_count)
        .max_buf_size(limits.max_header_bytes.max(8192))
        // No read-ahead while a request is in flight. hyper would otherwise read
        // to notice a client hang-up early, and since the request's headers
        // still share the first read buffer, allocate a second 8 KiB one per
        // in-flight request (8 MiB at 1,000 connections). Noticing early buys
        // nothing here: each request runs to completion on its own task so that
        // it is recorded, and a gone client shows when its answer is written.
        .half_close(true)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_h2_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// The listener's connection builders, one per HTTP version: each connection's
/// version is known before hyper reads from it.
///
/// hyper-util's builder for both versions finds out by reading the first 24
/// bytes on their own and handing them back as hyper's first read; an HTTP/1
/// connection then starts with a partial request head, and its read buffer
/// grows to 16 KiB instead of 8 KiB (8 MiB more at 1,000 connections). That
/// read also has no timer. Plaintext connections are told apart by peeking,
/// TLS ones by ALPN (see [`crate::http_version`]).
#[derive(Clone)]
pub struct ConnectionBuilders {
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
}

impl ConnectionBuilders {
    /// Builders with the configured limits.
    pub fn new(limits: &LimitsSection) -> Self {
        let both = connection_builder(limits);
        ConnectionBuilders {
            http1: both.clone().http1_only(),
            http2: both.http2_only(),
        }
    }

    /// The builder for a connection that speaks `version`.
    pub fn for_version(&self, version: HttpVersion) -> &auto::Builder<TokioExecutor> {
        match version {
            HttpVersion::Http1 => &self.http1,
            HttpVersion::Http2 => &self.http2,
        }
    }
}

/// Accepts connections until `stop` flips, serving each on its own task on
/// the next request worker (see `workers`).
pub async fn accept_loop(
    listener: TcpListener,
    use_tls: bool,
    live: Arc<Live>,
    connections: Arc<Semaphore>,
    graceful: Arc<GracefulShutdown>,
    workers: Dealer,
    mut stop: watch::Receiver<bool>,
) {
    let limits = live.state().limits.clone();
    let builders = Arc::new(ConnectionBuilders::new(&limits));
    let scheme: &'static str = if use_tls { "https" } else { "http" };
    let handshake_timeout = limits.header_read_timeout();
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let live = Arc::clone(&live);
        let builders = Arc::clone(&builders);
        // Each connection takes the TLS configuration in force when it arrives.
        let tls = if use_tls {
            live.tls().map(TlsAcceptor::from)
        } else {
            None
        };
        if use_tls && tls.is_none() {
            continue;
        }
        let watcher = graceful.watcher();
        // The socket moves to the worker's runtime, which then drives it.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot hand a connection to a worker");
                continue;
            }
        };
        let dealer = workers.clone();
        workers.next().spawn(async move {
            let _permit = permit;
            let _open = OpenConnection::new(&live);
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "worker cannot take a connection");
                    return;
                }
            };
            let home = crate::workers::current_index();
            // The connection's client certificate, set once after the TLS handshake (never on
            // plaintext), and carried by each of its requests, wherever that request runs.
            let client_certificate = Arc::new(OnceLock::<ClientCertificate>::new());
            let presented = Arc::clone(&client_certificate);
            let service = service_fn(move |mut request: hyper::Request<Incoming>| {
                if let Some(certificate) = presented.get() {
                    request.extensions_mut().insert(*certificate);
                }
                // An HTTP/2 connection multiplexes many requests: one may move
                // to a less busy worker, so that one busy connection can use
                // every worker. An HTTP/1 request stays on its connection's.
                let moved_to = match home {
                    Some(home) if request.version() == http::Version::HTTP_2 => {
                        Some(dealer.worker_for_request(home)).filter(|&to| to != home)
                    }
                    _ => None,
                };
                let slot = moved_to.or(home).map(|worker| dealer.begin_request(worker));
                // Its own task: a client that resets the stream or hangs up
                // cannot stop a request that reached the registry from
                // being recorded. Tracked, so that shutdown waits for it.
                // The future is spawned as it is: awaiting it inside another
                // would store it twice in the task.
                let task = stack::handle(live.state(), request, peer, scheme, slot);
                let handled = match moved_to.and_then(|to| dealer.handle(to)) {
                    Some(worker) => live.requests.spawn_on(task, worker),
                    None => live.requests.spawn(task),
                };
                async move {
                    Ok::<_, Infallible>(match handled.await {
                        Ok(response) => response,
                        Err(_) => crate::error::Problem::Internal.to_response("-"),
                    })
                }
            });
            match tls {
                // Boxed: a TLS connection's state is half as large again as a
                // plaintext one's, and each task is sized for its largest arm.
                Some(acceptor) => {
                    Box::pin(async move {
                        let Ok(Ok(tls_stream)) =
                            tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                        else {
                            return;
                        };
                        // The end-entity certificate comes first (RFC 8446 §4.4.2).
                        if let Some(end_entity) = tls_stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(<[_]>::first)
                        {
                            let _ = client_certificate.set(ClientCertificate::from_der(end_entity));
                        }
                        match negotiated_version(tls_stream.get_ref().1.alpn_protocol()) {
                            HttpVersion::Http1 => {
                                let connection = builders
                                    .for_version(HttpVersion::Http1)
                                    .serve_connection(TokioIo::new(tls_stream), service);
                                let _ = watcher.watch(connection.into_owned()).await;
                            }
                            HttpVersion::Http2 => {
                                // hyper's HTTP/2 handshake would wait for the
                                // preface without end.
                                let Ok(Ok(Some(stream))) = tokio::time::timeout(
                                    handshake_timeout,
                                    with_h2_preface(tls_stream),
                                )
                                .await
                                else {
                                    return;
                                };
                                let connection = builders
                                    .for_version(HttpVersion::Http2)
                                    .serve_connection(TokioIo::new(stream), service);
                                let _ = watcher.watch(connection.into_owned()).await;
                            }
                        }
                    })
                    .await
                }
                None => {
                    // Bounded like a TLS handshake: a client that sends
                    // nothing (or only part of the HTTP/2 preface) is dropped.
                    let Ok(Ok(Some(version))) =
                        tokio::time::timeout(handshake_timeout, plaintext_version(&stream)).await
                    else {
                        return;
                    };
                    let connection = builders
                        .for_version(version)
                        .serve_connection(TokioIo::new(stream), service);
                    let _ = watcher.watch(connection.into_owned()).await;
                }
            }
        });
    }
}

/// Pending connections the kernel queues before `accept` (capped by `net.core.somaxconn`). The
/// standard library's 128 overflows when a thousand clients connect at once, and each dropped SYN
/// costs that client a one-second retransmit.
const LISTEN_BACKLOG: u32 = 4_096;

/// Binds `addr` with [`LISTEN_BACKLOG`], naming it in the error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::gateway::BuildError> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|e| crate::gateway::BuildError::Listen(addr, e))
}

/// Counts a connection as open for as long as it lives.
struct OpenConnection(Arc<Live>);

impl OpenConnection {
    fn new(live: &Arc<Live>) -> Self {
        live.open_connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenConnection(Arc::clone(live))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0
            .open_connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
