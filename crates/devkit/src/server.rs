//! The HTTP/1.1 + HTTP/2 server (optionally over TLS) that every devkit
//! stand-in runs on. Handlers are plain synchronous functions from a request
//! with its whole body to a response: none of the stand-ins does I/O while
//! answering, and that keeps each of them a pure, testable function.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::DevkitError;
use crate::respond;

/// Request bodies above this are refused with 413: no stand-in needs more.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// How long shutdown waits for in-flight requests before dropping them.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

pub(crate) type Handler = Arc<dyn Fn(Request<Bytes>) -> Response<Full<Bytes>> + Send + Sync>;
/// Answers a request whose body could not be read whole (over [`MAX_BODY_BYTES`], or cut
/// off), from its head alone, for a stand-in whose clients expect a particular error shape.
pub(crate) type UnreadableBodyHandler =
    Arc<dyn Fn(&http::request::Parts) -> Response<Full<Bytes>> + Send + Sync>;

/// What a server answers with: the stand-in's handler, and its answer to unreadable bodies.
#[derive(Clone)]
struct Handlers {
    handler: Handler,
    unreadable: Option<UnreadableBodyHandler>,
}

/// A running server. Dropping it stops the server too (the stop channel
/// closes), so a forgotten handle cannot leak a listener between tests.
pub(crate) struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `handler`; a request whose body cannot be read gets `unreadable`'s answer, or
    /// a 413 problem document when that is `None`.
    pub(crate) fn spawn(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: Handler,
        unreadable: Option<UnreadableBodyHandler>,
    ) -> Result<Self, DevkitError> {
        let addr = listener.local_addr().map_err(DevkitError::Socket)?;
        let (stop, stopped) = oneshot::channel();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let handlers = Handlers {
            handler,
            unreadable,
        };
        let task = tokio::spawn(accept_loop(listener, acceptor, handlers, stopped));
        Ok(Self { addr, stop, task })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listening socket, lets in-flight requests finish (closing
    /// idle keep-alive connections at once), and returns when all is closed.
    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    handlers: Handlers,
    mut stopped: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let watcher = graceful.watcher();
                    let handlers = handlers.clone();
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        match acceptor {
                            None => serve(stream, handlers, watcher).await,
                            Some(acceptor) => match acceptor.accept(stream).await {
                                Ok(tls) => serve(tls, handlers, watcher).await,
                                Err(e) => tracing::debug!("tls handshake failed: {e}"),
                            },
                        }
                    });
                }
                // Per-connection failures (reset before accept, fd exhaustion)
                // must not stop the server; back off briefly on the latter.
                Err(e) => {
                    tracing::debug!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_LIMIT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("connections still open after drain limit; dropping them");
    }
}

async fn serve<IO>(io: IO, handlers: Handlers, watcher: Watcher)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let handlers = handlers.clone();
        async move { Ok::<_, Infallible>(handle(req, &handlers).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!("connection ended with error: {e}");
    }
}

async fn handle(req: Request<Incoming>, handlers: &Handlers) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => (handlers.handler)(Request::from_parts(parts, collected.to_bytes())),
        Err(_) => match &handlers.unreadable {
            Some(unreadable) => unreadable(&parts),
            None => respond::body_too_large(),
        },
    }
}
