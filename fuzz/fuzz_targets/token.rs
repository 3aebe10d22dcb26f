//! Token parsing and every key-free check of the verifier, plus the JWKS parser.
#![no_main]

use std::time::Duration;

use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use tollbu_proxy::authn::{IssuerSettings, inspect_unverified, parse_jwks};

fuzz_target!(|data: &[u8]| {
    let _ = parse_jwks(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let settings = IssuerSettings {
        issuer: "https://test.maskinporten.no/".into(),
        jwks_url: http::Uri::from_static("https://test.maskinporten.no/jwk"),
        algorithms: vec![Algorithm::RS256, Algorithm::ES256],
        audience: Some("https://registry.example/".into()),
        leeway_secs: 10,
        max_token_age_secs: 3600,
        refresh_every: Duration::from_secs(300),
        min_refetch: Duration::from_secs(10),
        fetch_timeout: Duration::from_secs(5),
    };
    // Every offline check; the signature is never reached here.
    let _ = inspect_unverified(text, &settings, 16384, 1_700_000_000);
});
