use base64::Engine as _;
use http::{Method, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls_pki_types::pem::PemObject as _;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tollbu_devkit::demo_material::{
    self, CONSENT_EXPIRED_PERSON1, CONSENT_INCOME_PERSON0, CONSENT_KYC_PERSON0,
};
use tollbu_devkit::token_client::{
    TokenRequest, TokenResponse, post_grant, request_token, sign_grant, sign_grant_with_header,
};
use tollbu_devkit::{DevkitError, IssuerConfig, IssuerHandle, people, start_issuer};

use crate::http::{get, send};

async fn issuer() -> IssuerHandle {
    issuer_with(demo_material::issuer_config().unwrap()).await
}

async fn issuer_with(config: IssuerConfig) -> IssuerHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_issuer(listener, config, demo_material::ISSUER_SIGNING_KEY_PEM)
        .await
        .unwrap()
}

fn request(issuer: &IssuerHandle, client_id: &str, scope: &str) -> TokenRequest {
    let (kid, key) = demo_material::client_key(client_id).unwrap();
    TokenRequest {
        issuer_url: issuer.issuer_url(),
        client_id: client_id.to_owned(),
        key_pem: key.to_owned(),
        kid: kid.to_owned(),
        scope: scope.to_owned(),
        ..TokenRequest::default()
    }
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// A well-formed grant from `client_id`, to be spoiled one claim at a time.
fn grant_claims(issuer: &IssuerHandle, client_id: &str, scope: &str) -> Value {
    json!({
        "aud": issuer.issuer_url(),
        "iss": client_id,
        "scope": scope,
        "iat": now(),
        "exp": now() + 100,
        "jti": uuid::Uuid::new_v4().to_string(),
    })
}

async fn post_signed(
    issuer: &IssuerHandle,
    client_id: &str,
    claims: &Value,
) -> Result<TokenResponse, DevkitError> {
    let (kid, key) = demo_material::client_key(client_id).unwrap();
    let grant = sign_grant(key, Some(kid), claims).unwrap();
    post_grant(&issuer.token_endpoint(), &grant).await
}

#[track_caller]
fn assert_refused(
    result: Result<TokenResponse, DevkitError>,
    status: u16,
    code: &str,
    mention: &str,
) {
    match result {
        Err(DevkitError::TokenRefused {
            status: s,
            error,
            description,
        }) => {
            assert_eq!((s, error.as_str()), (status, code), "{description}");
            assert!(
                description.contains(mention),
                "`{description}` lacks `{mention}`"
            );
        }
        other => panic!("expected {code}, got {other:?}"),
    }
}

/// Verifies `token` with an independent JWT implementation against the
/// issuer's published JWKS, returning the claims.
async fn verify(issuer: &IssuerHandle, token: &str) -> Value {
    let jwks = get(&issuer.jwks_url()).await.json();
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not in jwks"));
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[issuer.issuer_url()]);
    validation.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .unwrap()
        .claims
}

#[tokio::test]
async fn metadata_names_the_issuer_and_its_endpoints() {
    let issuer = issuer().await;
    let url = issuer.issuer_url();
    assert_eq!(url, format!("http://{}/", issuer.addr()));
    let reply = get(&format!("{url}.well-known/oauth-authorization-server")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let meta = reply.json();
    assert_eq!(meta["issuer"], url);
    assert_eq!(meta["token_endpoint"], format!("{url}token"));
    assert_eq!(meta["jwks_uri"], format!("{url}jwk"));
    assert_eq!(
        meta["grant_types_supported"],
        json!(["urn:ietf:params:oauth:grant-type:jwt-bearer"])
    );
    assert_eq!(
        meta["token_endpoint_auth_methods_supported"],
        json!(["private_key_jwt"])
    );
    issuer.shutdown().await;
}

#[tokio::test]
async fn jwks_publishes_the_signing_key() {
    let first = issuer().await;
    let jwks = get(&first.jwks_url()).await.json();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    assert_eq!(
        (k["kty"].as_str(), k["use"].as_str(), k["alg"].as_str()),
        (Some("RSA"), Some("sig"), Some("RS256"))
    );
    assert_eq!(k["kid"], first.current_kid());
    assert_eq!(k["e"], "AQAB");
    // 2048-bit modulus: 256 bytes, 342 base64url characters, no padding.
    assert_eq!(k["n"].as_str().unwrap().len(), 342);
    // The kid is the key's thumbprint, so it survives restarts.
    let again = issuer().await;
    assert_eq!(again.current_kid(), first.current_kid());
}

#[tokio::test]
async fn grant_is_exchanged_for_a_maskinporten_shaped_token() {
    let issuer = issuer().await;
    let response = request_token(&request(&issuer, "demo-welfare", "demo:population"))
        .await
        .unwrap();
    assert_eq!(response.token_type, "Bearer");
    assert_eq!(response.expires_in, 120);
    assert_eq!(response.scope.as_deref(), Some("demo:population"));

    // Maskinporten's access-token header is `alg` and `kid`, nothing else (no RFC 9068 `typ`:
    // the token does not carry RFC 9068's `sub` and `aud`).
    let header = response.access_token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header, json!({"alg": "RS256", "kid": issuer.current_kid()}));

    let claims = verify(&issuer, &response.access_token).await;
    assert_eq!(claims["iss"], issuer.issuer_url());
    assert!(claims["iss"].as_str().unwrap().ends_with('/'));
    assert_eq!(claims["scope"], "demo:population");
    assert_eq!(
        claims["consumer"],
        json!({"authority": "iso6523-actorid-upis", "ID": "0192:310000019"})
    );
    assert_eq!(claims["client_id"], "demo-welfare");
    assert_eq!(claims["client_amr"], "private_key_jwt");
    assert_eq!(claims["token_type"], "Bearer");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        120
    );
    assert!((claims["iat"].as_i64().unwrap() - now()).abs() <= 5);
    assert!(!claims["jti"].as_str().unwrap().is_empty());
    for absent in [
        "aud",
        "supplier",
        "delegation_source",
        "authorization_details",
    ] {
        assert!(claims.get(absent).is_none(), "{absent}");
    }
}

#[tokio::test]
async fn token_lifetime_is_configurable() {
    let mut config = demo_material::issuer_config().unwrap();
    config.token_lifetime_secs = 30;
    let issuer = issuer_with(config).await;
    let response = request_token(&request(&issuer, "demo-tax", "demo:income"))
        .await
        .unwrap();
    assert_eq!(response.expires_in, 30);
    let claims = verify(&issuer, &response.access_token).await;
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        30
    );
}

#[tokio::test]
async fn a_grant_without_kid_is_refused() {
    // Maskinporten finds the client's key by `kid` (or takes it from an `x5c` chain); it never
    // guesses, so a client that forgets `kid` must fail here as it would there.
    let issuer = issuer().await;
    let (_, key) = demo_material::client_key("demo-bank").unwrap();
    let grant = sign_grant(
        key,
        None,
        &grant_claims(&issuer, "demo-bank", "demo:income"),
    )
    .unwrap();
    assert_refused(
        post_grant(&issuer.token_endpoint(), &grant).await,
        400,
        "invalid_grant",
        "names no key",
    );
}

#[tokio::test]
async fn grants_carrying_their_own_key_or_certificate_are_refused() {
    let issuer = issuer().await;
    let (kid, key) = demo_material::client_key("demo-welfare").unwrap();
    let jwk = get(&issuer.jwks_url()).await.json()["keys"][0].clone();
    // Another organisation's enterprise certificate, DER in standard base64 as `x5c` wants it.
    let bank_cert = rustls_pki_types::CertificateDer::from_pem_slice(
        demo_material::AGENCY_BANK_CERT_PEM.as_bytes(),
    )
    .unwrap();
    let bank_cert = base64::engine::general_purpose::STANDARD.encode(bank_cert.as_ref());
    for (extra, mention) in [
        (json!({"x5c": [bank_cert]}), "x5c"),
        (json!({"x5c": ["garbage"]}), "x5c"),
        (json!({"kid": null, "x5c": [bank_cert]}), "x5c"),
        (json!({"x5u": "https://evil.example/chain.pem"}), "x5u"),
        (json!({"jku": "https://evil.example/jwks"}), "jku"),
        (json!({"jwk": jwk}), "jwk"),
    ] {
        let mut header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
        for (name, value) in extra.as_object().unwrap() {
            if value.is_null() {
                header.as_object_mut().unwrap().remove(name);
            } else {
                header[name] = value.clone();
            }
        }
        let claims = grant_claims(&issuer, "demo-welfare", "demo:population");
        let grant = sign_grant_with_header(key, &header, &claims).unwrap();
        assert_refused(
            post_grant(&issuer.token_endpoint(), &grant).await,
            400,
            "invalid_grant",
            mention,
        );
    }
}

#[tokio::test]
async fn grant_times_out_of_range_are_refused_not_panicked_on() {
    let issuer = issuer().await;
    let c = "demo-welfare";
    let s = "demo:population";
    for (claim, value) in [
        ("iat", json!(i64::MIN)),
        ("iat", json!(-1)),
        ("exp", json!(i64::MIN)),
        ("exp", json!(i64::MAX)),
        ("exp", json!(-1e14)),
        ("nbf", json!(i64::MIN)),
        ("nbf", json!(u64::MAX)),
    ] {
        let mut claims = grant_claims(&issuer, c, s);
        claims[claim] = value.clone();
        assert_refused(
            post_signed(&issuer, c, &claims).await,
            400,
            "invalid_grant",
            claim,
        );
    }
    // The issuer is still serving.
    assert!(
        post_signed(&issuer, c, &grant_claims(&issuer, c, s))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn grant_times_that_cannot_hold_are_refused() {
    let issuer = issuer().await;
    let c = "demo-welfare";
    let s = "demo:population";

    let mut exp_before_iat = grant_claims(&issuer, c, s);
    exp_before_iat["iat"] = json!(now() + 9);
    exp_before_iat["exp"] = json!(now() + 3);
    assert_refused(
        post_signed(&issuer, c, &exp_before_iat).await,
        400,
        "invalid_grant",
        "`exp` must be after `iat`",
    );

    let mut exp_at_iat = grant_claims(&issuer, c, s);
    exp_at_iat["iat"] = json!(now() + 5);
    exp_at_iat["exp"] = json!(now() + 5);
    assert_refused(
        post_signed(&issuer, c, &exp_at_iat).await,
        400,
        "invalid_grant",
        "`exp` must be after `iat`",
    );

    let mut not_yet_valid = grant_claims(&issuer, c, s);
    not_yet_valid["nbf"] = json!(now() + 60);
    assert_refused(
        post_signed(&issuer, c, &not_yet_valid).await,
        400,
        "invalid_grant",
        "nbf",
    );

    let mut nbf_not_a_number = grant_claims(&issuer, c, s);
    nbf_not_a_number["nbf"] = json!("soon");
    assert_refused(
        post_signed(&issuer, c, &nbf_not_a_number).await,
        400,
        "invalid_grant",
        "nbf",
    );

    // The same few seconds of clock skew as for `iat`.
    let mut nbf_within_skew = grant_claims(&issuer, c, s);
    nbf_within_skew["nbf"] = json!(now() + 5);
    assert!(post_signed(&issuer, c, &nbf_within_skew).await.is_ok());
}

#[tokio::test]
async fn invalid_jwts_are_invalid_grants() {
    // RFC 7523 section 3.1: a JWT that is not valid is `invalid_grant`; `invalid_request` is
    // for the form around it.
    let issuer = issuer().await;
    let c = "demo-welfare";
    let s = "demo:population";
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let token = issuer.token_endpoint();
    let prefix = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";

    for assertion in ["a.b.c", "not-a-jwt"] {
        let reply = send(
            Method::POST,
            &token,
            &form,
            &format!("{prefix}&assertion={assertion}"),
        )
        .await;
        assert_eq!(
            (reply.status, reply.json()["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_grant")),
            "{assertion}"
        );
    }
    for (claim, value) in [
        ("jti", json!(5)),
        ("scope", Value::Null),
        ("consumer_org", json!("nope")),
        ("resource", json!(7)),
        ("authorization_details", json!({})),
        ("authorization_details", json!([{"type": "urn:example:x"}])),
    ] {
        let mut claims = grant_claims(&issuer, c, s);
        claims[claim] = value;
        assert_refused(
            post_signed(&issuer, c, &claims).await,
            400,
            "invalid_grant",
            claim,
        );
    }
    let (kid, key) = demo_material::client_key(c).unwrap();
    let header = json!({"alg": "RS256", "kid": 7});
    let grant = sign_grant_with_header(key, &header, &grant_claims(&issuer, c, s)).unwrap();
    assert_refused(
        post_grant(&token, &grant).await,
        400,
        "invalid_grant",
        "kid",
    );

    // The form itself: still `invalid_request`.
    let reply = send(Method::POST, &token, &form, prefix).await;
    assert_eq!(reply.json()["error"], "invalid_request");
    let grant = sign_grant(key, Some(kid), &grant_claims(&issuer, c, s)).unwrap();
    let twice = format!("{prefix}&assertion={grant}&assertion={grant}");
    let reply = send(Method::POST, &token, &form, &twice).await;
    assert_eq!(reply.json()["error"], "invalid_request");
}

#[tokio::test]
async fn token_requests_are_told_apart_by_their_media_type() {
    let issuer = issuer().await;
    let c = "demo-welfare";
    let s = "demo:population";
    let token = issuer.token_endpoint();
    let (kid, key) = demo_material::client_key(c).unwrap();
    for (content_type, accepted) in [
        ("application/x-www-form-urlencoded", true),
        ("Application/X-WWW-Form-URLEncoded", true),
        (" application/x-www-form-urlencoded ; charset=utf-8", true),
        ("application/x-www-form-urlencodedjunk", false),
        ("application/x-www-form-urlencoded-x; a=b", false),
        ("application/json", false),
    ] {
        let grant = sign_grant(key, Some(kid), &grant_claims(&issuer, c, s)).unwrap();
        let body = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={grant}"
        );
        let reply = send(
            Method::POST,
            &token,
            &[("content-type", content_type)],
            &body,
        )
        .await;
        if accepted {
            assert_eq!(reply.status, StatusCode::OK, "{content_type}");
        } else {
            assert_eq!(
                (reply.status, reply.json()["error"].as_str()),
                (StatusCode::BAD_REQUEST, Some("invalid_request")),
                "{content_type}"
            );
        }
    }
}

#[tokio::test]
async fn an_oversized_token_request_gets_an_oauth_error() {
    let issuer = issuer().await;
    let body = format!("grant_type=x&assertion={}", "a".repeat(70 * 1024));
    let reply = send(
        Method::POST,
        &issuer.token_endpoint(),
        &[("content-type", "application/x-www-form-urlencoded")],
        &body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.content_type(), "application/json");
    assert_eq!(reply.json()["error"], "invalid_request");
    assert!(
        reply.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("too large")
    );
    assert_eq!(reply.headers["cache-control"], "no-store");
    // Elsewhere the issuer answers as the other stand-ins do.
    let reply = send(
        Method::POST,
        &format!("{}jwk", issuer.issuer_url()),
        &[],
        &body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.content_type(), "application/problem+json");
}

#[tokio::test]
async fn spoiled_grants_are_refused_with_oauth_errors() {
    let issuer = issuer().await;
    let c = "demo-welfare";
    let s = "demo:population";

    let mut wrong_aud = grant_claims(&issuer, c, s);
    wrong_aud["aud"] = json!(issuer.issuer_url().trim_end_matches('/'));
    assert_refused(
        post_signed(&issuer, c, &wrong_aud).await,
        400,
        "invalid_grant",
        "aud",
    );

    let mut aud_array = grant_claims(&issuer, c, s);
    aud_array["aud"] = json!([issuer.issuer_url()]);
    assert_refused(
        post_signed(&issuer, c, &aud_array).await,
        400,
        "invalid_grant",
        "aud",
    );

    let mut expired = grant_claims(&issuer, c, s);
    expired["iat"] = json!(now() - 8);
    expired["exp"] = json!(now() - 2);
    assert_refused(
        post_signed(&issuer, c, &expired).await,
        400,
        "invalid_grant",
        "expired",
    );

    let mut future_iat = grant_claims(&issuer, c, s);
    future_iat["iat"] = json!(now() + 60);
    future_iat["exp"] = json!(now() + 100);
    assert_refused(
        post_signed(&issuer, c, &future_iat).await,
        400,
        "invalid_grant",
        "iat",
    );

    let mut old_iat = grant_claims(&issuer, c, s);
    old_iat["iat"] = json!(now() - 60);
    old_iat["exp"] = json!(now() + 50);
    assert_refused(
        post_signed(&issuer, c, &old_iat).await,
        400,
        "invalid_grant",
        "iat",
    );

    let mut long_lived = grant_claims(&issuer, c, s);
    long_lived["exp"] = json!(now() + 121);
    assert_refused(
        post_signed(&issuer, c, &long_lived).await,
        400,
        "invalid_grant",
        "lifetime",
    );

    let mut no_jti = grant_claims(&issuer, c, s);
    no_jti.as_object_mut().unwrap().remove("jti");
    assert_refused(
        post_signed(&issuer, c, &no_jti).await,
        400,
        "invalid_grant",
        "jti",
    );

    let mut bad_scope = grant_claims(&issuer, c, s);
    bad_scope["scope"] = json!("demo:population demo:income");
    assert_refused(
        post_signed(&issuer, c, &bad_scope).await,
        400,
        "invalid_scope",
        "demo:income",
    );

    let mut no_scope = grant_claims(&issuer, c, s);
    no_scope["scope"] = json!("");
    assert_refused(
        post_signed(&issuer, c, &no_scope).await,
        400,
        "invalid_scope",
        "scope",
    );

    // Unknown client: 401 invalid_client.
    let unknown = grant_claims(&issuer, "nobody", s);
    let (_, key) = demo_material::client_key(c).unwrap();
    let grant = sign_grant(key, Some("k"), &unknown).unwrap();
    assert_refused(
        post_grant(&issuer.token_endpoint(), &grant).await,
        401,
        "invalid_client",
        "nobody",
    );

    // Unknown kid of a known client.
    let grant = sign_grant(key, Some("demo-welfare-9"), &grant_claims(&issuer, c, s)).unwrap();
    assert_refused(
        post_grant(&issuer.token_endpoint(), &grant).await,
        401,
        "invalid_client",
        "demo-welfare-9",
    );

    // Signed with another client's key under this client's kid.
    let (_, other_key) = demo_material::client_key("demo-bank").unwrap();
    let grant = sign_grant(
        other_key,
        Some("demo-welfare-1"),
        &grant_claims(&issuer, c, s),
    )
    .unwrap();
    assert_refused(
        post_grant(&issuer.token_endpoint(), &grant).await,
        400,
        "invalid_grant",
        "signature",
    );

    // Delegation that was never registered: the bank acting for the welfare agency.
    let mut undelegated = grant_claims(&issuer, "demo-bank", "demo:population");
    undelegated["consumer_org"] = json!("310000019");
    assert_refused(
        post_signed(&issuer, "demo-bank", &undelegated).await,
        400,
        "invalid_grant",
        "delegation",
    );

    // A well-formed grant still works after all that.
    assert!(
        post_signed(&issuer, c, &grant_claims(&issuer, c, s))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_grant_is_accepted_once() {
    let issuer = issuer().await;
    let (kid, key) = demo_material::client_key("demo-welfare").unwrap();
    let grant = sign_grant(
        key,
        Some(kid),
        &grant_claims(&issuer, "demo-welfare", "demo:population"),
    )
    .unwrap();
    post_grant(&issuer.token_endpoint(), &grant).await.unwrap();
    assert_refused(
        post_grant(&issuer.token_endpoint(), &grant).await,
        400,
        "invalid_grant",
        "already used",
    );
}

#[tokio::test]
async fn malformed_token_requests_get_rfc6749_errors() {
    let issuer = issuer().await;
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let token = issuer.token_endpoint();

    let reply = send(Method::POST, &token, &form, "grant_type=client_credentials").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"], "unsupported_grant_type");
    assert_eq!(reply.headers["cache-control"], "no-store");
    assert_eq!(reply.headers["pragma"], "no-cache");

    let reply = send(
        Method::POST,
        &token,
        &form,
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=not-a-jwt",
    )
    .await;
    assert_eq!(
        (reply.status, reply.json()["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );

    let reply = send(
        Method::POST,
        &token,
        &[("content-type", "application/json")],
        "{}",
    )
    .await;
    assert_eq!(reply.json()["error"], "invalid_request");

    let reply = get(&token).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.headers["allow"], "POST");
    assert_eq!(
        get(&format!("{}nope", issuer.issuer_url())).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_registered_delegation_yields_consumer_supplier_and_source() {
    let issuer = issuer().await;
    let mut req = request(&issuer, "demo-vendor", "demo:population");
    req.consumer_org = Some("310000019".into());
    let token = request_token(&req).await.unwrap().access_token;
    let claims = verify(&issuer, &token).await;
    assert_eq!(claims["consumer"]["ID"], "0192:310000019");
    assert_eq!(
        claims["supplier"],
        json!({"authority": "iso6523-actorid-upis", "ID": "0192:310000043"})
    );
    assert!(
        claims["delegation_source"]
            .as_str()
            .unwrap()
            .starts_with("https://")
    );
    assert_eq!(claims["client_id"], "demo-vendor");

    // Acting for an organisation that delegated nothing is refused.
    req.consumer_org = Some("310000027".into());
    assert_refused(
        request_token(&req).await,
        400,
        "invalid_grant",
        "delegation",
    );
}

#[tokio::test]
async fn resource_becomes_the_audience() {
    let issuer = issuer().await;
    let mut req = request(&issuer, "demo-bank", "demo:income");
    req.resource = Some("https://gateway.example/income".into());
    let claims = verify(&issuer, &request_token(&req).await.unwrap().access_token).await;
    assert_eq!(claims["aud"], "https://gateway.example/income");
}

#[tokio::test]
async fn consents_are_carried_in_full() {
    let issuer = issuer().await;
    let pid0 = people::example_pid(0);
    let mut req = request(&issuer, "demo-bank", "demo:population demo:income");
    req.consent = vec![
        (CONSENT_KYC_PERSON0.into(), Some(pid0.clone())),
        (CONSENT_INCOME_PERSON0.into(), None),
    ];
    let claims = verify(&issuer, &request_token(&req).await.unwrap().access_token).await;
    let details = claims["authorization_details"].as_array().unwrap();
    assert_eq!(details.len(), 2);
    assert_eq!(
        details[0],
        json!({
            "type": "urn:altinn:consent",
            "id": CONSENT_KYC_PERSON0,
            "from": format!("urn:altinn:person:identifier-no:{pid0}"),
            "to": {"authority": "iso6523-actorid-upis", "ID": "0192:310000027"},
            "consented": "2025-01-01T00:00:00Z",
            "validTo": "2030-12-31T23:59:59Z",
            "consentRights": [{
                "action": ["consent"],
                "resource": [{"type": "urn:altinn:resource", "value": "demo-kyc-population"}],
                "metadata": {},
            }],
        })
    );
    assert_eq!(
        details[1]["consentRights"][0]["metadata"],
        json!({"inntektsaar": "2022"})
    );
    assert_eq!(
        details[1]["consentRights"][0]["resource"][0]["value"],
        "demo-income-data"
    );
    assert_eq!(
        issuer.consent_entry(CONSENT_KYC_PERSON0).unwrap(),
        details[0]
    );
}

#[tokio::test]
async fn consents_that_do_not_fit_are_refused() {
    let issuer = issuer().await;
    let pid1 = people::example_pid(1);

    let mut wrong_person = request(&issuer, "demo-bank", "demo:population");
    wrong_person.consent = vec![(CONSENT_KYC_PERSON0.into(), Some(pid1))];
    assert_refused(
        request_token(&wrong_person).await,
        400,
        "invalid_grant",
        "not given by",
    );

    let mut expired = request(&issuer, "demo-bank", "demo:income");
    expired.consent = vec![(CONSENT_EXPIRED_PERSON1.into(), None)];
    assert_refused(
        request_token(&expired).await,
        400,
        "invalid_grant",
        "not valid now",
    );

    let mut unknown = request(&issuer, "demo-bank", "demo:income");
    unknown.consent = vec![("00000000-0000-4000-8000-000000000000".into(), None)];
    assert_refused(
        request_token(&unknown).await,
        400,
        "invalid_grant",
        "unknown consent",
    );

    // Given to the bank, asked for by the tax office.
    let mut other_consumer = request(&issuer, "demo-tax", "demo:income");
    other_consumer.consent = vec![(CONSENT_INCOME_PERSON0.into(), None)];
    assert_refused(
        request_token(&other_consumer).await,
        400,
        "invalid_grant",
        "not given to",
    );
}

#[tokio::test]
async fn a_consent_named_twice_is_refused() {
    // Two entries for one consent would put it twice in the token's `authorization_details`.
    let issuer = issuer().await;
    let mut twice = request(&issuer, "demo-bank", "demo:population");
    twice.consent = vec![
        (CONSENT_KYC_PERSON0.into(), None),
        (CONSENT_KYC_PERSON0.into(), None),
    ];
    assert_refused(request_token(&twice).await, 400, "invalid_grant", "twice");
}

#[tokio::test]
async fn rotation_publishes_both_keys_and_signs_with_the_new_one() {
    let issuer = issuer().await;
    let old_kid = issuer.current_kid();
    let old_token = request_token(&request(&issuer, "demo-welfare", "demo:population"))
        .await
        .unwrap()
        .access_token;

    let new_kid = issuer.rotate_signing_key().unwrap();
    assert_ne!(new_kid, old_kid);
    assert_eq!(issuer.current_kid(), new_kid);
    let kids = |jwks: Value| -> Vec<String> {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        kids(get(&issuer.jwks_url()).await.json()),
        [new_kid.clone(), old_kid.clone()]
    );

    let new_token = request_token(&request(&issuer, "demo-welfare", "demo:population"))
        .await
        .unwrap()
        .access_token;
    assert_eq!(
        jsonwebtoken::decode_header(&new_token).unwrap().kid,
        Some(new_kid.clone())
    );
    // Both verify against the published set.
    verify(&issuer, &new_token).await;
    verify(&issuer, &old_token).await;

    // A second rotation retires the oldest key.
    let newest = issuer.rotate_signing_key().unwrap();
    assert_eq!(
        kids(get(&issuer.jwks_url()).await.json()),
        [newest, new_kid]
    );
}

#[tokio::test]
async fn tests_can_forge_tokens_with_the_real_key() {
    let issuer = issuer().await;
    let mut claims = issuer
        .access_token_claims("demo-welfare", "demo:population")
        .unwrap();
    assert_eq!(claims["consumer"]["ID"], "0192:310000019");
    claims["exp"] = json!(now() - 3600);
    let expired = issuer.sign_access_token(json!({}), claims.clone()).unwrap();
    let jwks = get(&issuer.jwks_url()).await.json();
    let jwk = &jwks["keys"][0];
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = false;
    // Genuine signature, expired claims.
    let decoded = jsonwebtoken::decode::<Value>(&expired, &key, &validation).unwrap();
    assert_eq!(decoded.claims["exp"], claims["exp"]);
    assert!(
        jsonwebtoken::decode::<Value>(&expired, &key, &Validation::new(Algorithm::RS256)).is_err()
    );

    // Header overrides: replace and remove members.
    let odd = issuer
        .sign_access_token(
            json!({"kid": null, "jku": "https://evil.example/jwks"}),
            claims,
        )
        .unwrap();
    let header = jsonwebtoken::decode_header(&odd).unwrap();
    assert_eq!(header.kid, None);
    assert_eq!(header.jku.as_deref(), Some("https://evil.example/jwks"));
}

#[tokio::test]
async fn shutdown_closes_the_listener_and_idle_connections() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let issuer = issuer().await;
    let addr = issuer.addr();
    // An idle keep-alive connection, as a gateway's JWKS client would hold.
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /jwk HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    issuer.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener still open"
    );
    // The idle connection was closed by the server: EOF (or a reset).
    let closed = matches!(conn.read(&mut buf).await, Ok(0) | Err(_));
    assert!(closed, "idle connection still open");
}

#[tokio::test]
async fn token_client_reports_unreachable_issuers() {
    let issuer = issuer().await;
    let req = request(&issuer, "demo-welfare", "demo:population");
    issuer.shutdown().await;
    assert!(matches!(
        request_token(&req).await,
        Err(DevkitError::Http { .. })
    ));
}

#[tokio::test]
async fn config_errors_are_reported_not_panicked() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad_key = start_issuer(
        listener,
        demo_material::issuer_config().unwrap(),
        "not a pem",
    )
    .await;
    assert!(matches!(bad_key, Err(DevkitError::Key(_))));

    let unknown_field = IssuerConfig::from_toml_str("surprise = 1", |_| Ok(String::new()));
    assert!(matches!(unknown_field, Err(DevkitError::ConfigSyntax(_))));

    let mut config = demo_material::issuer_config().unwrap();
    config.clients[0].consumer_org = "310000010".into();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = start_issuer(listener, config, demo_material::ISSUER_SIGNING_KEY_PEM)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("`310000010`"), "{err}");
}

#[tokio::test]
async fn config_file_paths_are_relative_to_the_file() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/issuer.toml");
    let from_disk = IssuerConfig::from_file(&path).unwrap();
    let embedded = demo_material::issuer_config().unwrap();
    let pems = |c: &IssuerConfig| -> Vec<Option<String>> {
        c.clients
            .iter()
            .flat_map(|c| c.keys.iter().map(|k| k.public_key_pem.clone()))
            .collect()
    };
    assert_eq!(pems(&from_disk), pems(&embedded));
    assert!(pems(&from_disk).iter().all(Option::is_some));
}
