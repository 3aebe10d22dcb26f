//! Outbound HTTP clients (upstream registries and issuer JWKS endpoints):
//! pooled hyper-util clients speaking HTTP/1.1 and HTTP/2 over plain TCP or
//! rustls, with optional private CA and client certificate (mTLS).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::tls::{TlsError, load_certs, load_private_key};

/// The body type we send upstream: streamed, boxed.
pub type OutboundBody = BoxBody<Bytes, crate::body::BodyError>;
/// A pooled client for one trust configuration.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, OutboundBody>;

/// How to trust and authenticate to a remote server.
#[derive(Debug, Clone, Default)]
pub struct ClientTls<'a> {
    /// PEM bundle of CAs to trust instead of the system roots.
    pub ca: Option<&'a Path>,
    /// Client certificate chain and key for mutual TLS.
    pub client_cert: Option<(&'a Path, &'a Path)>,
}

/// Builds a pooled client; `connect_timeout` bounds TCP connect.
pub fn build_client(
    tls: &ClientTls<'_>,
    connect_timeout: Duration,
) -> Result<HttpClient, TlsError> {
    Ok(client_with(
        client_tls_config(tls)?,
        connect_timeout,
        crate::upstream::DEFAULT_MAX_CONNECTIONS,
    ))
}

/// `count` clients with the same trust but separate connection pools (one per
/// request worker), each keeping at most `max_idle` idle connections; the
/// certificate files are read once.
///
/// `max_idle` is the worker's share of `upstream_max_connections`: the share
/// bounds the exchanges in flight, but the pool also keeps the connections it
/// opened while a busy one came free, and without a bound on idle ones those
/// piled up past the cap (≈ 300 for a cap of 256 at 1,000 client connections).
pub fn build_clients(
    tls: &ClientTls<'_>,
    connect_timeout: Duration,
    count: usize,
    max_idle: usize,
) -> Result<Vec<HttpClient>, TlsError> {
    let config = client_tls_config(tls)?;
    Ok((0..count)
        .map(|_| client_with(config.clone(), connect_timeout, max_idle))
        .collect())
}

fn client_with(
    config: rustls::ClientConfig,
    connect_timeout: Duration,
    max_idle: usize,
) -> HttpClient {
    client_closing_idle_after(config, connect_timeout, max_idle, POOL_IDLE_TIMEOUT)
}

fn client_closing_idle_after(
    config: rustls::ClientConfig,
    connect_timeout: Duration,
    max_idle: usize,
    idle_timeout: Duration,
) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(idle_timeout)
        // Without a timer the pool drops an idle connection only when a checkout meets it, and
        // it hands out the most recently used first: connections a burst opened would stay open
        // (buffers here, a socket and a worker at the registry) as long as the process runs.
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(max_idle)
        .build(connector)
}

/// How long a registry or issuer connection stays open unused.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

fn client_tls_config(tls: &ClientTls<'_>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match tls.ca {
        Some(ca) => {
            for cert in load_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Rustls(ca.display().to_string(), e))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let _ = roots.add_parsable_certificates(native.certs);
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Rustls("client protocol versions".into(), e))?
    .with_root_certificates(roots);
    // hyper-rustls sets ALPN itself from `enable_http1/2`.
    let config = match tls.client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_private_key(key)?)
            .map_err(|e| TlsError::Rustls(cert.display().to_string(), e))?,
        None => builder.with_no_client_auth(),
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A registry on 127.0.0.1 that holds each answer for 100 ms and counts its open connections.
    async fn counting_registry() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let open = Arc::new(AtomicUsize::new(0));
        let counter = open.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let open = counter.clone();
                open.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_| async {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(Bytes::from_static(b"{}")),
                        ))
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (url, open)
    }

    #[tokio::test]
    async fn connections_a_burst_opened_are_closed_once_idle() {
        let (url, open) = counting_registry().await;
        let config = client_tls_config(&ClientTls::default()).unwrap();
        let client = client_closing_idle_after(
            config,
            Duration::from_secs(2),
            16,
            Duration::from_millis(200),
        );
        let send = |client: HttpClient, url: String| async move {
            let empty = http_body_util::Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed();
            let request = http::Request::get(url).body(empty).unwrap();
            client.request(request).await.unwrap().status()
        };
        let burst: Vec<_> = (0..4)
            .map(|_| tokio::spawn(send(client.clone(), url.clone())))
            .collect();
        for request in burst {
            assert_eq!(request.await.unwrap(), http::StatusCode::OK);
        }
        assert_eq!(
            open.load(Ordering::SeqCst),
            4,
            "one connection per request at once"
        );
        // One keeps being used, the others idle past the timeout.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while open.load(Ordering::SeqCst) > 1 && std::time::Instant::now() < deadline {
            assert_eq!(
                send(client.clone(), url.clone()).await,
                http::StatusCode::OK
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            open.load(Ordering::SeqCst),
            1,
            "idle connections still open"
        );
    }
}
