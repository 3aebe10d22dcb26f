//! Token validation through the gateway: real issuer, real RSA signatures.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use serde_json::{Value, json};
use tollbu_tests::*;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn call(env: &Env, token: &str) -> Answer {
    let mut s = String::new();
    get(
        &format!("{}/population/persons/{}", env.base(), example_pid(0)),
        &auth(token, Some("benefit-assessment"), &mut s),
    )
    .await
}

#[track_caller]
fn assert_invalid(answer: &Answer, token_error: &str) {
    assert_eq!(
        answer.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.code(), "invalid_token");
    assert_eq!(
        answer.json()["token_error"],
        token_error,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        answer.header("www-authenticate"),
        "Bearer realm=\"tollbu\", error=\"invalid_token\""
    );
    assert_eq!(answer.header("content-type"), "application/problem+json");
}

fn claims(env: &Env) -> Value {
    env.issuer()
        .access_token_claims("demo-welfare", "demo:population")
        .unwrap()
}

fn forge(env: &Env, header: Value, claims: Value) -> String {
    env.issuer().sign_access_token(header, claims).unwrap()
}

fn unsigned(header: Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
    )
}

#[tokio::test]
async fn genuine_token_is_accepted_and_forged_ones_are_refused() {
    let mut env = Env::start(Options::default()).await;
    let good = forge(&env, json!({}), claims(&env));
    assert_eq!(call(&env, &good).await.status, StatusCode::OK);

    // Expired beyond the leeway (10 s).
    let mut expired = claims(&env);
    expired["iat"] = json!(now() - 300);
    expired["exp"] = json!(now() - 11);
    let expired = forge(&env, json!({}), expired);
    assert_invalid(&env.read_person(&expired, Some("expired")).await, "expired");

    // Issuer without its trailing slash, and another issuer entirely.
    let mut no_slash = claims(&env);
    no_slash["iss"] = json!(env.issuer_url.trim_end_matches('/'));
    assert_invalid(
        &call(&env, &forge(&env, json!({}), no_slash)).await,
        "untrusted_issuer",
    );
    let mut other = claims(&env);
    other["iss"] = json!("https://maskinporten.no/");
    assert_invalid(
        &call(&env, &forge(&env, json!({}), other)).await,
        "untrusted_issuer",
    );

    // Bad signature: one character of the signature changed.
    let mut bad_sig = good.clone().into_bytes();
    let last = bad_sig.len() - 5;
    bad_sig[last] = if bad_sig[last] == b'A' { b'B' } else { b'A' };
    assert_invalid(
        &env.read_person(&String::from_utf8(bad_sig).unwrap(), Some("bad-signature"))
            .await,
        "bad_signature",
    );

    // alg none, in three spellings.
    let kid = env.issuer().current_kid();
    for alg in ["none", "None", "NONE"] {
        let token = unsigned(json!({"alg": alg, "kid": kid, "typ": "JWT"}), &claims(&env));
        assert_invalid(&call(&env, &token).await, "algorithm_not_allowed");
    }

    // HS256 "signed" with the issuer's public key (the classic confusion attack).
    let public_pem = rcgen::KeyPair::from_pem(tollbu_devkit::demo_material::ISSUER_SIGNING_KEY_PEM)
        .unwrap()
        .public_key_pem();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.clone());
    let hs256 = jsonwebtoken::encode(
        &header,
        &claims(&env),
        &jsonwebtoken::EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .unwrap();
    assert_invalid(&call(&env, &hs256).await, "algorithm_not_allowed");

    // A key supplied by the token itself.
    let jwk = json!({"kty": "RSA", "n": "sXch", "e": "AQAB"});
    assert_invalid(
        &call(&env, &forge(&env, json!({"jwk": jwk}), claims(&env))).await,
        "forbidden_header",
    );
    assert_invalid(
        &call(
            &env,
            &forge(
                &env,
                json!({"jku": format!("{}jwk", env.issuer_url)}),
                claims(&env),
            ),
        )
        .await,
        "forbidden_header",
    );

    // Unknown kid (refetch finds nothing).
    assert_invalid(
        &call(
            &env,
            &forge(&env, json!({"kid": "not-a-known-key"}), claims(&env)),
        )
        .await,
        "unknown_key",
    );

    // Unknown critical header, nested token.
    assert_invalid(
        &call(&env, &forge(&env, json!({"crit": ["exp"]}), claims(&env))).await,
        "unknown_critical_header",
    );
    assert_invalid(
        &call(&env, &forge(&env, json!({"cty": "JWT"}), claims(&env))).await,
        "nested_token",
    );

    // Malformed consumer: wrong authority, bad check digit.
    let mut wrong_authority = claims(&env);
    wrong_authority["consumer"]["authority"] = json!("iso6523-actorid-xxx");
    assert_invalid(
        &call(&env, &forge(&env, json!({}), wrong_authority)).await,
        "bad_consumer",
    );
    let mut bad_checksum = claims(&env);
    bad_checksum["consumer"]["ID"] = json!("0192:310000018");
    assert_invalid(
        &call(&env, &forge(&env, json!({}), bad_checksum)).await,
        "bad_consumer",
    );

    // `scope` as an array is not a Maskinporten token.
    let mut scope_array = claims(&env);
    scope_array["scope"] = json!(["demo:population"]);
    assert_invalid(
        &call(&env, &forge(&env, json!({}), scope_array)).await,
        "bad_claims",
    );

    // Missing token, wrong scheme.
    let answer = get(
        &format!("{}/population/persons/{}", env.base(), example_pid(0)),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.code(), "missing_token");
    assert_eq!(answer.header("www-authenticate"), "Bearer realm=\"tollbu\"");

    // The audit record and the metrics name the sub-code: an officer tells an expired token from
    // a forged signature without the gateway's logs.
    let metrics = get(&format!("{}/metrics", env.admin()), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    for reason in ["invalid_token.expired", "invalid_token.bad_signature"] {
        assert!(
            text.contains(&format!(
                "tollbu_requests_total{{service=\"population\",consumer=\"none\",decision=\"deny\",reason=\"{reason}\",status=\"401\"}} 1"
            )),
            "{reason}: {text}"
        );
    }
    env.stop_gateway().await;
    let records = audit_records(&env.audit_dir());
    for (request_id, reason) in [
        ("expired", "invalid_token.expired"),
        ("bad-signature", "invalid_token.bad_signature"),
    ] {
        let record = records
            .iter()
            .find(|r| r["request_id"] == request_id)
            .unwrap_or_else(|| panic!("no record of {request_id}: {records:?}"));
        assert_eq!(record["decision"], "deny", "{record}");
        assert_eq!(record["reason"], reason, "{record}");
    }
}

#[tokio::test]
async fn missing_scope_is_403_scope_missing_with_rfc_6750_insufficient_scope() {
    let env = Env::start(Options::default()).await;
    let mut other_scope = claims(&env);
    other_scope["scope"] = json!("demo:income");
    let answer = call(&env, &forge(&env, json!({}), other_scope)).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    // The policy's stable code (as `policy explain` and the audit record say it), and
    // RFC 6750's error in the challenge.
    assert_eq!(answer.code(), "scope_missing");
    assert_eq!(
        answer.header("www-authenticate"),
        "Bearer realm=\"tollbu\", error=\"insufficient_scope\""
    );
}

#[tokio::test]
async fn rotated_issuer_key_is_picked_up_without_restart() {
    let env = Env::start(Options::default()).await;
    let before = env.token("demo-welfare", "demo:population", &[]).await;
    assert_eq!(call(&env, &before).await.status, StatusCode::OK);
    let new_kid = env.issuer().rotate_signing_key().unwrap();
    let after = env.token("demo-welfare", "demo:population", &[]).await;
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(after.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], new_kid.as_str());
    assert_eq!(
        call(&env, &after).await.status,
        StatusCode::OK,
        "new key fetched on unknown kid"
    );
    assert_eq!(
        call(&env, &before).await.status,
        StatusCode::OK,
        "old key still published"
    );
}

#[tokio::test]
async fn issuer_down_does_not_stop_tokens_with_cached_keys() {
    let mut env = Env::start(Options::default()).await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    assert_eq!(call(&env, &token).await.status, StatusCode::OK);
    env.issuer.take().unwrap().shutdown().await;
    assert_eq!(
        call(&env, &token).await.status,
        StatusCode::OK,
        "cached keys keep working"
    );
    // A token under a key we never saw cannot be checked: refused, clearly.
    let forged = unsigned(
        json!({"alg": "RS256", "kid": "rotated-while-down"}),
        &json!({"iss": env.issuer_url}),
    );
    let answer = call(&env, &format!("{forged}c2ln")).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json()["token_error"], "unknown_key");
}

#[tokio::test]
async fn delegated_supplier_token_is_accepted_for_the_consumer() {
    let env = Env::start(Options::default()).await;
    let token = env
        .token_for("demo-vendor", "demo:population", &[], Some("310000019"))
        .await;
    let answer = call(&env, &token).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
}

#[tokio::test]
async fn remembered_tokens_stop_being_accepted_when_they_expire_or_grow_too_old() {
    use tollbu_proxy::authn::{IssuerSettings, TokenVerifier};
    let env = Env::start(Options::default()).await;
    let client = tollbu_proxy::http_client::build_client(
        &Default::default(),
        std::time::Duration::from_secs(2),
    )
    .unwrap();
    let settings = IssuerSettings {
        issuer: env.issuer_url.clone(),
        jwks_url: format!("{}jwk", env.issuer_url).parse().unwrap(),
        algorithms: vec![jsonwebtoken::Algorithm::RS256],
        audience: None,
        leeway_secs: 10,
        max_token_age_secs: 60,
        refresh_every: std::time::Duration::from_secs(300),
        min_refetch: std::time::Duration::from_secs(0),
        fetch_timeout: std::time::Duration::from_secs(5),
    };
    let verifier = TokenVerifier::new(vec![settings], client, 16 << 10);
    let t0 = now();
    let mut claims = claims(&env);
    claims["iat"] = json!(t0);
    claims["exp"] = json!(t0 + 30);
    let token = forge(&env, json!({}), claims);
    assert!(verifier.verify(&token, t0).await.is_ok());
    assert!(
        verifier.verify(&token, t0 + 39).await.is_ok(),
        "within exp + leeway"
    );
    assert_eq!(
        verifier.verify(&token, t0 + 40).await.err(),
        Some(tollbu_proxy::error::VerifyError::Token(
            tollbu_proxy::error::TokenFault::Expired
        ))
    );

    // Long-lived token: the maximum age ends it before its expiry does.
    let mut claims = self::claims(&env);
    claims["iat"] = json!(t0);
    claims["exp"] = json!(t0 + 65);
    let token = forge(&env, json!({}), claims);
    assert!(verifier.verify(&token, t0).await.is_ok());
    assert!(verifier.verify(&token, t0 + 60).await.is_ok());
    assert_eq!(
        verifier.verify(&token, t0 + 61).await.err(),
        Some(tollbu_proxy::error::VerifyError::Token(
            tollbu_proxy::error::TokenFault::TooOld
        ))
    );
}

#[tokio::test]
async fn a_remembered_token_is_refused_once_its_key_is_withdrawn() {
    let env = Env::start(Options::default()).await;
    let old = env.token("demo-welfare", "demo:population", &[]).await;
    assert_eq!(
        call(&env, &old).await.status,
        StatusCode::OK,
        "verified and remembered"
    );
    // Two rotations: the JWKS now lists the two newest keys, not the first.
    env.issuer().rotate_signing_key().unwrap();
    env.issuer().rotate_signing_key().unwrap();
    let new = env.token("demo-welfare", "demo:population", &[]).await;
    assert_eq!(
        call(&env, &new).await.status,
        StatusCode::OK,
        "the new key is fetched"
    );
    assert_invalid(&call(&env, &old).await, "unknown_key");
}

#[tokio::test]
async fn a_remembered_token_is_refused_once_its_kid_names_another_key() {
    let (stub, env) = env_behind_jwks_stub().await;
    let old = env.token("demo-welfare", "demo:population", &[]).await;
    assert_eq!(
        call(&env, &old).await.status,
        StatusCode::OK,
        "verified and remembered"
    );

    // The issuer now publishes another key under the same kid (a key replaced in place).
    let kid = env.issuer().current_kid();
    let other = start_second_issuer().await;
    let other_jwks = get(&other.jwks_url(), &[]).await.json();
    let mut replacement = other_jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == other.current_kid().as_str())
        .unwrap()
        .clone();
    replacement["kid"] = json!(kid);
    stub.set_body(serde_json::to_vec(&json!({"keys": [replacement]})).unwrap());
    stub.set_mode(JwksMode::Body);
    // An unknown kid makes the gateway fetch the key set again.
    let before = stub.fetches();
    let probe = unsigned(
        json!({"alg": "RS256", "kid": "force-a-refetch"}),
        &json!({"iss": env.issuer_url}),
    );
    assert_invalid(&call(&env, &format!("{probe}c2ln")).await, "unknown_key");
    assert!(stub.fetches() > before, "the key set was fetched again");

    // The remembered token was signed by the key that kid no longer names.
    assert_invalid(&call(&env, &old).await, "bad_signature");
    // Positive control: a token signed by the key now published under that kid.
    let current = other
        .sign_access_token(json!({"kid": kid}), claims(&env))
        .unwrap();
    assert_eq!(call(&env, &current).await.status, StatusCode::OK);
}

#[tokio::test]
async fn readiness_returns_soon_after_an_issuer_whose_key_set_failed_at_start_recovers() {
    let stub = JwksStub::start(JwksMode::Error).await;
    let env = Env::start(Options {
        jwks_url: Some(stub.url.clone()),
        ..Options::default()
    })
    .await;
    let ready = get(&format!("{}/readyz", env.admin()), &[]).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    stub.set_real(&env.issuer().jwks_url());
    stub.set_mode(JwksMode::Real);
    // No token is sent: only the background refresher can fetch the keys now. It retries
    // within seconds (the test config's jwks_min_refetch_secs is 0: first retry after 1 s,
    // doubling), not after jwks_refresh_secs (300 s). 20 s is a generous upper bound.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ready = get(&format!("{}/readyz", env.admin()), &[]).await;
        if ready.status == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still not ready 20 s after the issuer recovered: {}",
            String::from_utf8_lossy(&ready.body)
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    assert_eq!(call(&env, &token).await.status, StatusCode::OK);
}

// ---------------------------------------------------------------------------
// Certificate-bound tokens (RFC 8705 §3): `cnf.x5t#S256` names the client certificate the token
// may be used with; the TLS listener's connection must have presented it, on every request.
// ---------------------------------------------------------------------------

/// A client certificate and its key, PEM.
type ClientPem = (&'static str, &'static str);
const WELFARE: ClientPem = (
    tollbu_devkit::demo_material::AGENCY_WELFARE_CERT_PEM,
    tollbu_devkit::demo_material::AGENCY_WELFARE_KEY_PEM,
);
const BANK: ClientPem = (
    tollbu_devkit::demo_material::AGENCY_BANK_CERT_PEM,
    tollbu_devkit::demo_material::AGENCY_BANK_KEY_PEM,
);

/// `x5t#S256` of a PEM certificate: base64url (unpadded) SHA-256 of its DER.
fn thumbprint(cert_pem: &str) -> String {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    use sha2::Digest;
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&der))
}

/// The welfare agency's token with `cnf` added.
fn with_cnf(env: &Env, cnf: Value) -> String {
    let mut claims = claims(env);
    claims["cnf"] = cnf;
    forge(env, json!({}), claims)
}

/// One TLS connection to the gateway's TLS listener presenting `certificate`, HTTP/2 or HTTP/1.1
/// by ALPN, reading person 0 once with each of `tokens` in turn (request ids `{label}-{i}`).
async fn over_mtls(
    env: &Env,
    certificate: ClientPem,
    http2: bool,
    label: &str,
    tokens: &[&str],
) -> Vec<Answer> {
    use http_body_util::{BodyExt, Empty};
    let mut config = std::sync::Arc::unwrap_or_clone(tls_client_config(Some(certificate)));
    config.alpn_protocols = vec![if http2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(env.tls_addr())
        .await
        .unwrap();
    let server_name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let io = hyper_util::rt::TokioIo::new(connector.connect(server_name, tcp).await.unwrap());
    let request = |i: usize, token: &str| {
        http::Request::get(format!(
            "https://localhost:{}/population/persons/{}",
            env.tls_addr().port(),
            example_pid(0)
        ))
        .header("host", format!("localhost:{}", env.tls_addr().port()))
        .header("authorization", format!("Bearer {token}"))
        .header("tollbu-purpose", "benefit-assessment")
        .header("x-request-id", format!("{label}-{i}"))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap()
    };
    let mut answers = Vec::new();
    let mut h1 = None;
    let mut h2 = None;
    if http2 {
        let (sender, connection) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(connection);
        h2 = Some(sender);
    } else {
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        h1 = Some(sender);
    }
    for (i, token) in tokens.iter().enumerate() {
        let mut request = request(i, token);
        let response = match (&mut h1, &mut h2) {
            (Some(h1), _) => {
                *request.uri_mut() = request.uri().path().parse().unwrap();
                h1.send_request(request).await.unwrap()
            }
            (_, Some(h2)) => {
                request.headers_mut().remove("host");
                h2.send_request(request).await.unwrap()
            }
            _ => unreachable!(),
        };
        let (parts, body) = response.into_parts();
        answers.push(Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        });
    }
    answers
}

#[track_caller]
fn assert_ok(answer: &Answer, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{what}: {}",
        String::from_utf8_lossy(&answer.body)
    );
}

#[tokio::test]
async fn a_certificate_bound_token_is_accepted_only_from_a_connection_presenting_its_certificate() {
    let mut env = Env::start(Options {
        tls: true,
        ..Options::default()
    })
    .await;
    let bound = with_cnf(&env, json!({"x5t#S256": thumbprint(WELFARE.0)}));

    // The certificate it is bound to, over HTTP/2 and HTTP/1.1; twice on one connection (the
    // second from the verified-token cache).
    for answer in over_mtls(&env, WELFARE, true, "welfare-h2", &[&bound, &bound]).await {
        assert_ok(&answer, "welfare certificate, HTTP/2");
    }
    assert_ok(
        &over_mtls(&env, WELFARE, false, "welfare-h1", &[&bound]).await[0],
        "welfare certificate, HTTP/1.1",
    );

    // The same (now remembered) token with another agency's certificate, or with none at all.
    for http2 in [true, false] {
        let answers = over_mtls(&env, BANK, http2, &format!("bank-{http2}"), &[&bound]).await;
        assert_invalid(&answers[0], "certificate_mismatch");
    }
    assert_invalid(
        &env.read_person(&bound, Some("plaintext")).await,
        "certificate_mismatch",
    );
    // And still accepted where it belongs: a refusal elsewhere does not spoil it.
    assert_ok(
        &over_mtls(&env, WELFARE, true, "welfare-again", &[&bound]).await[0],
        "welfare certificate after refusals elsewhere",
    );

    // A token never seen before, first on the wrong connection (no cache involved), then right.
    let fresh = with_cnf(&env, json!({"x5t#S256": thumbprint(WELFARE.0)}));
    assert_invalid(
        &over_mtls(&env, BANK, true, "fresh-bank", &[&fresh]).await[0],
        "certificate_mismatch",
    );
    assert_ok(
        &over_mtls(&env, WELFARE, true, "fresh-welfare", &[&fresh]).await[0],
        "fresh token, welfare certificate",
    );
    // Bound to the bank's certificate: refused on the welfare agency's connection.
    let bank_bound = with_cnf(&env, json!({"x5t#S256": thumbprint(BANK.0)}));
    assert_invalid(
        &over_mtls(&env, WELFARE, true, "bank-bound", &[&bank_bound]).await[0],
        "certificate_mismatch",
    );

    // A bearer token (no `cnf`) is not affected: any connection.
    let bearer = forge(&env, json!({}), claims(&env));
    assert_ok(
        &over_mtls(&env, BANK, false, "bearer", &[&bearer]).await[0],
        "bearer token over mTLS",
    );
    assert_ok(&call(&env, &bearer).await, "bearer token over plaintext");

    // Each refusal is recorded as a token presented without its certificate (not merely an
    // invalid one), naming the consumer the stolen token names.
    env.stop_gateway().await;
    let records = audit_records(&env.audit_dir());
    for request_id in [
        "bank-true-0",
        "bank-false-0",
        "plaintext",
        "fresh-bank-0",
        "bank-bound-0",
    ] {
        let record = records
            .iter()
            .find(|r| r["request_id"] == request_id)
            .unwrap_or_else(|| panic!("no record of {request_id}: {records:?}"));
        assert_eq!(record["decision"], "deny", "{record}");
        assert_eq!(
            record["reason"], "invalid_token.certificate_mismatch",
            "{record}"
        );
        assert_eq!(record["consumer"], "0192:310000019", "{record}");
        assert!(record["grant_id"].is_null(), "no policy decision: {record}");
    }
    let allowed = records.iter().filter(|r| r["decision"] == "allow").count();
    assert_eq!(allowed, 7, "{records:?}");
}

#[tokio::test]
async fn a_confirmation_the_gateway_cannot_check_is_refused() {
    let env = Env::start(Options {
        tls: true,
        ..Options::default()
    })
    .await;
    let welfare = thumbprint(WELFARE.0);
    for (cnf, token_error) in [
        // DPoP-bound (RFC 9449 §6.1), or bound to a key: possession not checkable here.
        (
            json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}),
            "unsupported_confirmation",
        ),
        (
            json!({"jwk": {"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}}),
            "unsupported_confirmation",
        ),
        (json!({"kid": "k1"}), "unsupported_confirmation"),
        (
            json!({"x5t#S256": welfare, "jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}),
            "unsupported_confirmation",
        ),
        // Malformed.
        (json!({"x5t#S256": format!("{welfare}=")}), "bad_claims"),
        (json!({"x5t#S256": &welfare[..42]}), "bad_claims"),
        // Standard base64's alphabet, not base64url's.
        (
            json!({"x5t#S256": format!("+{}", &welfare[1..])}),
            "bad_claims",
        ),
        (json!({"x5t#S256": 1}), "bad_claims"),
        (json!({}), "bad_claims"),
        (json!(welfare), "bad_claims"),
        (json!(null), "bad_claims"),
    ] {
        let token = with_cnf(&env, cnf.clone());
        // Refused even from the connection whose certificate a well-formed thumbprint would name.
        let answers = over_mtls(&env, WELFARE, true, "cnf", &[&token]).await;
        let answer = &answers[0];
        assert_eq!(
            answer.json()["token_error"],
            token_error,
            "{cnf}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_invalid(answer, token_error);
        assert_invalid(&call(&env, &token).await, token_error);
    }
}

/// HTTP/2 requests of one connection may run on another worker: the certificate goes with them.
#[tokio::test]
async fn the_certificate_travels_with_http2_requests_moved_to_another_worker() {
    let (_registry, env) = env_behind_holding_registry(
        std::time::Duration::from_millis(300),
        Options {
            tls: true,
            workers: Some(3),
            ..Options::default()
        },
    )
    .await;
    let bound = with_cnf(&env, json!({"x5t#S256": thumbprint(WELFARE.0)}));
    // Twelve at once on one connection, each held by the registry: they spread over the workers.
    let answers = over_mtls_at_once(&env, WELFARE, &bound, 12).await;
    for answer in &answers {
        assert_ok(answer, "bound token on a moved request");
    }
    let served = env.gateway().requests_per_worker();
    assert_eq!(served.iter().sum::<u64>(), 12);
    assert!(
        served.iter().filter(|&&n| n > 0).count() > 1,
        "the requests stayed on one worker: {served:?}"
    );
}

/// `count` requests at once over one HTTP/2 mTLS connection presenting `certificate`.
async fn over_mtls_at_once(
    env: &Env,
    certificate: ClientPem,
    token: &str,
    count: usize,
) -> Vec<Answer> {
    use http_body_util::{BodyExt, Empty};
    let mut config = std::sync::Arc::unwrap_or_clone(tls_client_config(Some(certificate)));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(env.tls_addr())
        .await
        .unwrap();
    let server_name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let io = hyper_util::rt::TokioIo::new(connector.connect(server_name, tcp).await.unwrap());
    let (sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(connection);
    let at_once: Vec<_> = (0..count)
        .map(|i| {
            let mut sender = sender.clone();
            let request = http::Request::get(format!(
                "https://localhost:{}/population/persons/{}",
                env.tls_addr().port(),
                example_pid(u32::try_from(i).unwrap())
            ))
            .header("authorization", format!("Bearer {token}"))
            .header("tollbu-purpose", "benefit-assessment")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
            tokio::spawn(async move {
                let (parts, body) = sender.send_request(request).await.unwrap().into_parts();
                Answer {
                    status: parts.status,
                    headers: parts.headers,
                    body: body.collect().await.unwrap().to_bytes(),
                }
            })
        })
        .collect();
    let mut answers = Vec::new();
    for request in at_once {
        answers.push(request.await.unwrap());
    }
    answers
}
