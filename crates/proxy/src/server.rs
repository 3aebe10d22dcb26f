//! Listeners: plaintext (HTTP/1.1 and h2c prior knowledge) and TLS (ALPN h2
//! and http/1.1, optional mTLS), with the abuse limits applied per
//! connection, a connection cap, and graceful drain on shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::LimitsSection;
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

/// Which HTTP a connection speaks, when known before hyper reads from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http1,
    Http2,
}

/// The listener's connection builders, one per HTTP version: each connection's
/// version is known before hyper reads from it.
///
/// hyper-util's builder for both versions finds out by reading the first 24
/// bytes on their own and handing them back as hyper's first read; an HTTP/1
/// connection then starts with a partial request head, and its read buffer
/// grows to 16 KiB instead of 8 KiB (8 MiB more at 1,000 connections). That
/// read also has no timer. Plaintext connections are told apart by peeking
/// ([`plaintext_version`]), TLS ones by ALPN ([`negotiated_version`]).
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

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long to wait before peeking again at a connection whose bytes so far
/// are the start of the HTTP/2 preface: peeking does not consume them, so the
/// socket stays readable and an immediate retry would spin.
const PREFACE_RETRY: Duration = Duration::from_millis(5);

/// Tells an HTTP/1 connection from an HTTP/2 one by peeking at its first
/// bytes, without taking them off the socket. `None`: it closed first.
pub async fn plaintext_version(
    stream: &tokio::net::TcpStream,
) -> std::io::Result<Option<HttpVersion>> {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 {
            return Ok(None);
        }
        if first[..n] != H2_PREFACE[..n] {
            return Ok(Some(HttpVersion::Http1));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(HttpVersion::Http2));
        }
        tokio::time::sleep(PREFACE_RETRY).await;
    }
}

/// The version a TLS connection agreed by ALPN. HTTP/2 over TLS is only ever
/// agreed that way (RFC 9113, section 3.2), so a client that names no
/// protocol speaks HTTP/1.1.
fn negotiated_version(alpn: Option<&[u8]>) -> HttpVersion {
    match alpn {
        Some(b"h2") => HttpVersion::Http2,
        _ => HttpVersion::Http1,
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
            let service = service_fn(move |request: hyper::Request<Incoming>| {
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
                // The future is made inside the task: awaiting one made
                // outside would store it twice in the task (≈ 4 KiB more per
                // request in flight).
                let state = live.state();
                let task = async move {
                    let _counted_until_done = slot;
                    stack::handle(state, request, peer, scheme).await
                };
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
                        let version = negotiated_version(tls_stream.get_ref().1.alpn_protocol());
                        let connection = builders
                            .for_version(version)
                            .serve_connection(TokioIo::new(tls_stream), service);
                        let _ = watcher.watch(connection.into_owned()).await;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connected pair on 127.0.0.1: (client side, server side).
    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn plaintext_version_peeks_without_taking_the_bytes() {
        let request = b"GET /population/persons/1 HTTP/1.1\r\nhost: x\r\n\r\n";
        let (mut client, mut server) = pair().await;
        client.write_all(request).await.unwrap();
        assert_eq!(
            plaintext_version(&server).await.unwrap(),
            Some(HttpVersion::Http1)
        );
        // hyper still reads the whole request, from its first byte.
        let mut read = vec![0u8; request.len()];
        server.read_exact(&mut read).await.unwrap();
        assert_eq!(read, request);

        let (mut client, server) = pair().await;
        client.write_all(H2_PREFACE).await.unwrap();
        assert_eq!(
            plaintext_version(&server).await.unwrap(),
            Some(HttpVersion::Http2)
        );
    }

    #[tokio::test]
    async fn plaintext_version_waits_for_a_split_preface_and_tells_lookalikes_apart() {
        // The preface in two pieces: the answer waits for the second.
        let (mut client, server) = pair().await;
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        let rest = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            client.write_all(&H2_PREFACE[10..]).await.unwrap();
            client
        });
        assert_eq!(
            plaintext_version(&server).await.unwrap(),
            Some(HttpVersion::Http2)
        );
        drop(rest.await.unwrap());

        // An HTTP/1 request with the method PRI is HTTP/1 from its 12th byte.
        let (mut client, server) = pair().await;
        client
            .write_all(b"PRI * HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(
            plaintext_version(&server).await.unwrap(),
            Some(HttpVersion::Http1)
        );

        // A client that hangs up before its first byte has nothing to serve.
        let (client, server) = pair().await;
        drop(client);
        assert_eq!(plaintext_version(&server).await.unwrap(), None);
    }

    #[test]
    fn the_tls_version_is_the_one_alpn_agreed_and_http1_without_alpn() {
        assert_eq!(negotiated_version(Some(b"h2")), HttpVersion::Http2);
        assert_eq!(negotiated_version(Some(b"http/1.1")), HttpVersion::Http1);
        assert_eq!(negotiated_version(None), HttpVersion::Http1);
    }
}
