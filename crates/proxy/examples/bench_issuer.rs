//! Load-benchmark token issuer (bench/run.sh): the devkit's local
//! Maskinporten-style issuer on the embedded demo material (DEMO KEYS ONLY),
//! with a 30-minute token lifetime so one token from `tollbu token` lasts a
//! whole benchmark run. Runs until killed.
//!
//! `cargo run --release -p tollbu-proxy --example bench_issuer -- 127.0.0.1:18070`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;

use tollbu_devkit::demo_material;

fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18070".into())
        .parse()
        .expect("listen address");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let mut config = demo_material::issuer_config().expect("demo issuer config");
        config.token_lifetime_secs = 1800;
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let issuer =
            tollbu_devkit::start_issuer(listener, config, demo_material::ISSUER_SIGNING_KEY_PEM)
                .await
                .expect("issuer");
        eprintln!("bench_issuer: {}", issuer.issuer_url());
        std::future::pending::<()>().await;
    });
}
