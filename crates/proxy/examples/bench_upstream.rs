//! Load-benchmark upstream (bench/run.sh): answers every request with the
//! same ~1 KiB JSON person record — synthetic person 0 of the devkit
//! population registry, its `citizenships` list repeated until the body
//! reaches 1 KiB — so every proxy in the comparison forwards to the same,
//! nearly free backend. Not a registry: it ignores the path.
//!
//! `cargo run --release -p tollbu-proxy --example bench_upstream -- 127.0.0.1:18001 [--print-body]`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// The body: person 0 as the population registry serialises it, padded to ≥ 1024 bytes.
fn body() -> Bytes {
    let person = tollbu_devkit::people::person(0).expect("person 0");
    let mut value = serde_json::to_value(&person).expect("person JSON");
    let citizenships = value["citizenships"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let first = citizenships
        .first()
        .cloned()
        .unwrap_or_else(|| serde_json::json!({"country": "NOR", "since": "1990-01-01"}));
    let mut list = citizenships;
    while serde_json::to_vec(&value).expect("json").len() < 1024 {
        list.push(first.clone());
        value["citizenships"] = serde_json::Value::Array(list.clone());
    }
    Bytes::from(serde_json::to_vec(&value).expect("json"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:18001".into())
        .parse()
        .expect("listen address");
    let body = body();
    if args.next().as_deref() == Some("--print-body") {
        println!("{}", String::from_utf8_lossy(&body));
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        eprintln!("bench_upstream: {} bytes on http://{addr}", body.len());
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().keep_alive(true);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            let builder = builder.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<Incoming>| {
                    let mut response = Response::new(Full::new(body.clone()));
                    response
                        .headers_mut()
                        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
