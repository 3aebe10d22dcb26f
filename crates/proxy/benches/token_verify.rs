//! Token verification, in process, against the devkit issuer on 127.0.0.1
//! (demo material — DEMO KEYS ONLY):
//!
//! - `verify/cold`: a fresh `TokenVerifier` per iteration, so every verify
//!   fetches the JWKS (HTTP GET over a pooled loopback connection, JSON
//!   parse, RSA key import) and then checks the RS256 signature and claims;
//! - `verify/keys_cached`: a token not seen before, the issuer's keys
//!   already held: header/payload decode, strict-JSON check, RSA-2048
//!   verify, claims (`TokenVerifier::verify_without_cache`);
//! - `verify/token_cached`: the same token again (what a caller reusing its
//!   token pays until expiry): a SHA-256 of the token, a cache lookup and the
//!   check that its signing key is still published.
//!
//! `cargo bench -p tollbu-proxy --bench token_verify`

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::Algorithm;
use tollbu_devkit::demo_material;
use tollbu_proxy::authn::{IssuerSettings, TokenVerifier};
use tollbu_proxy::http_client::{ClientTls, HttpClient, build_client};

fn settings(issuer: &str, jwks: &str) -> IssuerSettings {
    IssuerSettings {
        issuer: issuer.to_owned(),
        jwks_url: jwks.parse().unwrap(),
        algorithms: vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
        audience: None,
        leeway_secs: 10,
        max_token_age_secs: 3600,
        refresh_every: Duration::from_secs(300),
        min_refetch: Duration::from_secs(0),
        fetch_timeout: Duration::from_secs(5),
    }
}

fn bench_verify(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let issuer = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        tollbu_devkit::start_issuer(
            listener,
            demo_material::issuer_config().unwrap(),
            demo_material::ISSUER_SIGNING_KEY_PEM,
        )
        .await
        .unwrap()
    });
    let claims = issuer
        .access_token_claims("demo-welfare", "demo:population")
        .unwrap();
    let token = issuer
        .sign_access_token(serde_json::json!({}), claims)
        .unwrap();
    let settings = settings(&issuer.issuer_url(), &issuer.jwks_url());
    let client: HttpClient = runtime
        .block_on(async { build_client(&ClientTls::default(), Duration::from_secs(2)) })
        .unwrap();
    let now = || time::OffsetDateTime::now_utc().unix_timestamp();

    let mut group = c.benchmark_group("verify");
    group.bench_function("cold", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let verifier = TokenVerifier::new(vec![settings.clone()], client.clone(), 16 << 10);
                let caller = verifier.verify(black_box(&token), now()).await.unwrap();
                black_box(caller.consumer().len())
            })
        });
    });

    let warm = Arc::new(TokenVerifier::new(
        vec![settings.clone()],
        client.clone(),
        16 << 10,
    ));
    runtime.block_on(warm.start_refresh());
    group.bench_function("keys_cached", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let caller = warm
                    .verify_without_cache(black_box(&token), now())
                    .await
                    .unwrap();
                black_box(caller.consumer().len())
            })
        });
    });
    group.bench_function("token_cached", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let caller = warm.verify(black_box(&token), now()).await.unwrap();
                black_box(caller.consumer().len())
            })
        });
    });
    group.finish();
    runtime.block_on(issuer.shutdown());
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(5));
    targets = bench_verify
}
criterion_main!(benches);
