//! Tollbu as a plain reverse proxy, for the load benchmark (bench/run.sh):
//! the gateway's own listener settings (`server::ConnectionBuilders` with the
//! default limits, the HTTP version told by `http_version::plaintext_version`),
//! pooled upstream client (`http_client::build_client`) and forwarding
//! (`upstream::Upstream::forward`: header hygiene, forwarding headers, total
//! timeout, whole-body read under the size limit) — but no
//! token check, no policy decision, no rate limit, no minimisation and no
//! audit record. It measures what the pipeline costs on top of proxying.
//! Same allocator as the `tollbu` binary (mimalloc) and the same threads: an
//! acceptor dealing connections to the request workers (`workers::Workers`),
//! each with its own registry pool. The comparison is of the pipeline alone.
//!
//! NOT a mode of the gateway, and never to be deployed: it forwards anyone.
//!
//! `cargo run --release -p tollbu-proxy --example bench_plain_proxy -- 127.0.0.1:18004 http://127.0.0.1:18001`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tollbu_proxy::config::LimitsSection;
use tollbu_proxy::http_client::{ClientTls, build_client, build_clients};
use tollbu_proxy::upstream::{Assertions, Outbound, Upstream};
use tollbu_proxy::workers::Workers;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let listen: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:18004".into())
        .parse()
        .expect("listen address");
    let upstream_url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:18001".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(serve(listen, upstream_url));
}

async fn serve(listen: SocketAddr, upstream_url: String) {
    let limits = LimitsSection::default();
    let workers = Workers::start(tollbu_proxy::workers::default_count()).expect("workers");
    let dealer = workers.dealer();
    let client = build_client(&ClientTls::default(), limits.connect_timeout()).expect("client");
    let per_worker = build_clients(
        &ClientTls::default(),
        limits.connect_timeout(),
        dealer.len(),
        tollbu_proxy::upstream::worker_share(limits.upstream_max_connections, dealer.len()),
    )
    .expect("clients");
    let upstream = Arc::new(
        Upstream::new(&upstream_url, client, None)
            .expect("upstream URL")
            .with_worker_clients(per_worker),
    );
    let builders = Arc::new(tollbu_proxy::server::ConnectionBuilders::new(&limits));
    let limits = Arc::new(limits);
    let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
    eprintln!("bench_plain_proxy: http://{listen} -> {upstream_url}");
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stream = stream.into_std().expect("std stream");
        let upstream = Arc::clone(&upstream);
        let builders = Arc::clone(&builders);
        let limits = Arc::clone(&limits);
        dealer.next().spawn(async move {
            let stream = tokio::net::TcpStream::from_std(stream).expect("worker stream");
            let service = service_fn(move |request: Request<Incoming>| {
                let upstream = Arc::clone(&upstream);
                let limits = Arc::clone(&limits);
                async move { Ok::<_, Infallible>(proxy(&upstream, &limits, request, peer).await) }
            });
            let Ok(Some(version)) = tollbu_proxy::http_version::plaintext_version(&stream).await
            else {
                return;
            };
            let _ = builders
                .for_version(version)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn proxy(
    upstream: &Upstream,
    limits: &LimitsSection,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    // Streamed upstream under the size limit, as the gateway does.
    let body = Limited::new(body, limits.max_request_body_bytes).boxed();
    let request_id = tollbu_proxy::ids::request_id();
    let assertions = Assertions {
        request_id: &request_id,
        traceparent: None,
        consumer: "000000000",
        supplier: None,
        client_id: "bench-plain-proxy",
        grant_id: "none",
        purpose: "none",
        peer,
        scheme: "http",
    };
    let answer = upstream
        .forward(
            Outbound {
                method: parts.method,
                rest: parts.uri.path(),
                query: parts.uri.query(),
                headers: &parts.headers,
                body,
            },
            &assertions,
            limits.upstream_timeout(),
            limits.max_response_body_bytes,
        )
        .await;
    match answer {
        Ok(answer) => {
            let mut response = Response::new(Full::new(answer.body));
            *response.status_mut() = answer.status;
            *response.headers_mut() = answer.headers;
            response
        }
        Err(_) => status(StatusCode::BAD_GATEWAY),
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}
