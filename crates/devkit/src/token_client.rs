//! Obtaining an access token from any Maskinporten-compatible issuer with the
//! RFC 7523 JWT-bearer grant: read the issuer metadata, sign a grant with the
//! client's RSA key, post it to the token endpoint.
//!
//! One-shot by design (the `tollbu token` command, tests): no token caching
//! and no retries. https uses the system's root certificates.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::error::DevkitError;
use crate::issuer::{CONSENT_DETAIL_TYPE, JWT_BEARER_GRANT, PERSON_URN_PREFIX};
use crate::jwt::RsaSigningKey;

/// The grant's lifetime (`exp - iat`); Maskinporten allows at most 120 s.
pub const GRANT_LIFETIME_SECS: i64 = 100;
/// Upper bound for one HTTP exchange with the issuer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Issuer responses above this size are refused.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// What to ask the issuer for.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// The issuer identifier, e.g. `https://test.maskinporten.no/`; a missing
    /// trailing slash is added.
    pub issuer_url: String,
    pub client_id: String,
    /// The client's RSA private key, PKCS#8 or PKCS#1 PEM.
    pub key_pem: String,
    /// The kid the issuer knows the key by (chosen when the key was registered).
    /// Required: Maskinporten finds a client's key by `kid` and does not guess.
    pub kid: String,
    /// Space-separated scopes.
    pub scope: String,
    /// Act for this organisation through a registered delegation.
    pub consumer_org: Option<String>,
    /// Altinn consents to include: (consent id, consenting person's identity
    /// number or `urn:altinn:person:identifier-no:` URN).
    pub consent: Vec<(String, Option<String>)>,
    /// Audience to restrict the token to (becomes `aud`).
    pub resource: Option<String>,
}

/// The token endpoint's answer.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    #[serde(default)]
    pub scope: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    error_description: String,
}

/// Requests a token, trusting the system's root certificates for https.
pub async fn request_token(req: &TokenRequest) -> Result<TokenResponse, DevkitError> {
    request_token_with_roots(req, system_roots()).await
}

/// The operating system's trusted roots. Certificates rustls cannot parse
/// are skipped rather than failing the whole store.
fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    roots
}

/// Requests a token, trusting only `roots` for https (tests with a dev CA).
pub async fn request_token_with_roots(
    req: &TokenRequest,
    roots: rustls::RootCertStore,
) -> Result<TokenResponse, DevkitError> {
    let http = HttpClient::new(roots)?;
    let issuer = normalise_issuer(&req.issuer_url);
    let metadata_url = format!("{issuer}.well-known/oauth-authorization-server");
    let metadata = http.get_json(&metadata_url).await?;
    // RFC 8414 section 3.3: the metadata must name the issuer we asked.
    if metadata.get("issuer").and_then(Value::as_str) != Some(issuer.as_str()) {
        return Err(DevkitError::BadResponse {
            url: metadata_url,
            reason: format!("metadata `issuer` is not `{issuer}`"),
        });
    }
    let Some(token_endpoint) = metadata.get("token_endpoint").and_then(Value::as_str) else {
        return Err(DevkitError::BadResponse {
            url: metadata_url,
            reason: "metadata has no `token_endpoint`".into(),
        });
    };
    let grant = build_grant(req, &issuer, OffsetDateTime::now_utc().unix_timestamp())?;
    http.post_grant(token_endpoint, &grant).await
}

/// Posts an already signed grant to `token_endpoint` (https with the system
/// roots). Lets tests send grants they forged with [`sign_grant`].
pub async fn post_grant(
    token_endpoint: &str,
    assertion: &str,
) -> Result<TokenResponse, DevkitError> {
    HttpClient::new(system_roots())?
        .post_grant(token_endpoint, assertion)
        .await
}

/// The signed grant [`request_token`] would send at unix time `now`.
pub fn build_grant(req: &TokenRequest, issuer: &str, now: i64) -> Result<String, DevkitError> {
    let mut claims = json!({
        "aud": issuer,
        "iss": req.client_id,
        "scope": req.scope,
        "iat": now,
        "exp": now + GRANT_LIFETIME_SECS,
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    if let Some(org) = &req.consumer_org {
        claims["consumer_org"] = Value::String(org.clone());
    }
    if let Some(resource) = &req.resource {
        claims["resource"] = Value::String(resource.clone());
    }
    if !req.consent.is_empty() {
        let details: Vec<Value> = req
            .consent
            .iter()
            .map(|(id, from)| {
                let mut detail = json!({"type": CONSENT_DETAIL_TYPE, "id": id});
                if let Some(from) = from {
                    detail["from"] = Value::String(if from.starts_with("urn:") {
                        from.clone()
                    } else {
                        format!("{PERSON_URN_PREFIX}{from}")
                    });
                }
                detail
            })
            .collect();
        claims["authorization_details"] = Value::Array(details);
    }
    if req.kid.is_empty() {
        return Err(DevkitError::Key(
            "a kid is required: the issuer finds the client's key by it".into(),
        ));
    }
    sign_grant(&req.key_pem, Some(&req.kid), &claims)
}

/// Signs any `claims` as a grant (`{"alg":"RS256","typ":"JWT","kid":…}`),
/// for tests that need grants no well-behaved client would send.
pub fn sign_grant(key_pem: &str, kid: Option<&str>, claims: &Value) -> Result<String, DevkitError> {
    let key = RsaSigningKey::from_pem(key_pem, kid)?;
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = Value::String(kid.to_owned());
    }
    key.sign(&header, claims)
}

/// Signs `claims` under exactly `header` (its `alg` should say RS256, the only
/// signature made), for tests that forge grant headers (`x5c`, `jku`, …).
pub fn sign_grant_with_header(
    key_pem: &str,
    header: &Value,
    claims: &Value,
) -> Result<String, DevkitError> {
    RsaSigningKey::from_pem(key_pem, None)?.sign(header, claims)
}

fn normalise_issuer(url: &str) -> String {
    if url.ends_with('/') {
        url.to_owned()
    } else {
        format!("{url}/")
    }
}

struct HttpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    fn new(roots: rustls::RootCertStore) -> Result<Self, DevkitError> {
        // An explicit provider: never depend on a process-wide default.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn get_json(&self, url: &str) -> Result<Value, DevkitError> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(url)
            .header(ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|_| DevkitError::Url(url.to_owned()))?;
        let (status, body) = self.send(url, request).await?;
        if status != StatusCode::OK {
            return Err(DevkitError::BadResponse {
                url: url.to_owned(),
                reason: format!("status {status}"),
            });
        }
        serde_json::from_slice(&body).map_err(|e| DevkitError::BadResponse {
            url: url.to_owned(),
            reason: format!("not json: {e}"),
        })
    }

    async fn post_grant(&self, url: &str, assertion: &str) -> Result<TokenResponse, DevkitError> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", JWT_BEARER_GRANT)
            .append_pair("assertion", assertion)
            .finish();
        let request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(Full::new(Bytes::from(form)))
            .map_err(|_| DevkitError::Url(url.to_owned()))?;
        let (status, body) = self.send(url, request).await?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| DevkitError::BadResponse {
                url: url.to_owned(),
                reason: format!("not a token response: {e}"),
            });
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => Err(DevkitError::TokenRefused {
                status: status.as_u16(),
                error: e.error,
                description: e.error_description,
            }),
            Err(_) => Err(DevkitError::BadResponse {
                url: url.to_owned(),
                reason: format!("status {status} without an oauth error body"),
            }),
        }
    }

    async fn send(
        &self,
        url: &str,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), DevkitError> {
        let http_err = |reason: String| DevkitError::Http {
            url: url.to_owned(),
            reason,
        };
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| http_err(error_chain(&e)))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| http_err(format!("reading body: {e}")))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(HTTP_TIMEOUT, exchange)
            .await
            .map_err(|_| http_err(format!("no answer within {} s", HTTP_TIMEOUT.as_secs())))?
    }
}

/// hyper's client errors say little at the top level; the cause is below.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn issuer_gets_exactly_one_trailing_slash() {
        assert_eq!(normalise_issuer("http://a:1"), "http://a:1/");
        assert_eq!(
            normalise_issuer("https://maskinporten.no/"),
            "https://maskinporten.no/"
        );
    }
}
