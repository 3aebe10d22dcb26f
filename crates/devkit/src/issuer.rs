//! A local Maskinporten-style OAuth2 authorization server: issuer metadata,
//! a JWKS, and `/token` with the RFC 7523 JWT-bearer grant, issuing RS256
//! access tokens with Maskinporten's claims (consumer, supplier and
//! delegation source, audience, Altinn consents).
//!
//! It keeps no state beyond the replay cache and the signing keys, has no
//! admin API and no persistence: configure it with [`IssuerConfig`], drive it
//! from tests through [`IssuerHandle`].

mod config;
mod grant;
mod keys;
mod registry;
mod replay;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::net::TcpListener;

pub use config::{
    ClientConfig, ClientKeyConfig, ConsentConfig, DEFAULT_TOKEN_LIFETIME_SECS, DelegationConfig,
    IssuerConfig,
};
pub use grant::{
    CONSENT_DETAIL_TYPE, JWT_BEARER_GRANT, MAX_GRANT_LIFETIME_SECS, MAX_IAT_SKEW_SECS,
};
pub use registry::PERSON_URN_PREFIX;

use crate::error::DevkitError;
use crate::issuer::grant::AcceptedGrant;
use crate::issuer::keys::KeySet;
use crate::issuer::registry::{Registry, org_identity};
use crate::issuer::replay::JtiCache;
use crate::jwt::RsaSigningKey;
use crate::respond;
use crate::server::Server;

/// Put in `delegation_source` of delegated tokens, as Maskinporten names Altinn.
pub const DELEGATION_SOURCE: &str = "https://altinn.example/";
/// The only request media type `/token` takes (RFC 6749 §4.5, RFC 7523 §2.1).
const FORM_MEDIA_TYPE: &str = "application/x-www-form-urlencoded";
/// How long clients may cache the JWKS. Short, so rotation tests see new keys.
const JWKS_MAX_AGE: &str = "max-age=60";

struct IssuerState {
    issuer_url: String,
    registry: Registry,
    keys: KeySet,
    jtis: JtiCache,
    metadata: Bytes,
}

/// A running issuer. Dropping it stops the issuer; prefer [`Self::shutdown`].
pub struct IssuerHandle {
    state: Arc<IssuerState>,
    server: Server,
}

/// Starts an issuer on `listener`, signing with `signing_key_pem` (an RSA
/// private key, PKCS#8 or PKCS#1 PEM) under its RFC 7638 thumbprint as kid.
/// The issuer URL is `http://<listener address>/`.
pub async fn start_issuer(
    listener: TcpListener,
    config: IssuerConfig,
    signing_key_pem: &str,
) -> Result<IssuerHandle, DevkitError> {
    let registry = Registry::compile(&config)?;
    let keys = KeySet::new(RsaSigningKey::from_pem(signing_key_pem, None)?);
    let addr = listener.local_addr().map_err(DevkitError::Socket)?;
    let issuer_url = format!("http://{addr}/");
    let metadata = json!({
        "issuer": issuer_url,
        "token_endpoint": format!("{issuer_url}token"),
        "jwks_uri": format!("{issuer_url}jwk"),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
        "grant_types_supported": [JWT_BEARER_GRANT],
        "authorization_details_types_supported": [CONSENT_DETAIL_TYPE],
        "token_type_supported": ["Bearer"],
    });
    let state = Arc::new(IssuerState {
        issuer_url,
        registry,
        keys,
        jtis: JtiCache::default(),
        metadata: Bytes::from(serde_json::to_vec(&metadata).unwrap_or_default()),
    });
    let handler_state = state.clone();
    let server = Server::spawn(
        listener,
        None,
        Arc::new(move |req| route(&handler_state, &req)),
        Some(Arc::new(unreadable_body)),
    )?;
    tracing::info!(issuer = %state.issuer_url, "devkit issuer started");
    Ok(IssuerHandle { state, server })
}

impl IssuerHandle {
    /// `http://127.0.0.1:PORT/`, trailing slash included: the exact `iss`.
    pub fn issuer_url(&self) -> String {
        self.state.issuer_url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `<issuer>jwk`, where the JWKS is served.
    pub fn jwks_url(&self) -> String {
        format!("{}jwk", self.state.issuer_url)
    }

    /// `<issuer>token`.
    pub fn token_endpoint(&self) -> String {
        format!("{}token", self.state.issuer_url)
    }

    /// The kid new tokens are signed under.
    pub fn current_kid(&self) -> String {
        self.state.keys.current().kid().to_owned()
    }

    /// Switches to a freshly generated RSA-2048 key and returns its kid. The
    /// JWKS then lists the new key and the one it replaces.
    pub fn rotate_signing_key(&self) -> Result<String, DevkitError> {
        let kid = self.state.keys.rotate()?;
        tracing::info!(%kid, "devkit issuer rotated its signing key");
        Ok(kid)
    }

    /// Signs arbitrary `claims` with the issuer's current key, so tests can
    /// forge expired, mis-addressed or oddly-headed tokens that are otherwise
    /// genuine. The header starts as `{"alg":"RS256","kid":…}`, as `/token` issues it;
    /// each member of `header_overrides` (a JSON object) replaces one, and a
    /// `null` member removes it. The signature is always RS256.
    pub fn sign_access_token(
        &self,
        header_overrides: Value,
        claims: Value,
    ) -> Result<String, DevkitError> {
        let key = self.state.keys.current();
        let mut header = key.header();
        if let (Value::Object(base), Value::Object(overrides)) = (&mut header, header_overrides) {
            for (name, value) in overrides {
                if value.is_null() {
                    base.remove(&name);
                } else {
                    base.insert(name, value);
                }
            }
        }
        key.sign(&header, &claims)
    }

    /// The claims `/token` would issue now to `client_id` for `scope` (no
    /// delegation, audience or consent): a starting point for forged tokens.
    pub fn access_token_claims(&self, client_id: &str, scope: &str) -> Result<Value, DevkitError> {
        let client = self
            .state
            .registry
            .client(client_id)
            .ok_or_else(|| DevkitError::Config(format!("unknown client `{client_id}`")))?;
        let grant = AcceptedGrant {
            client_id: client_id.to_owned(),
            consumer_org: client.org.clone(),
            supplier_org: None,
            scopes: scope
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            audience: None,
            consents: Vec::new(),
        };
        Ok(self
            .state
            .claims_for(&grant, OffsetDateTime::now_utc().unix_timestamp()))
    }

    /// The `authorization_details` entry a token carries for consent `id`.
    pub fn consent_entry(&self, id: &str) -> Option<Value> {
        self.state.registry.consent(id).map(|c| c.entry.clone())
    }

    /// Stops accepting, closes the listening socket and idle connections,
    /// and returns once the server task has ended.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

impl IssuerState {
    fn claims_for(&self, grant: &AcceptedGrant, now: i64) -> Value {
        let mut claims = json!({
            "iss": self.issuer_url,
            "scope": grant.scopes.join(" "),
            "consumer": org_identity(&grant.consumer_org),
            "client_id": grant.client_id,
            "client_amr": "private_key_jwt",
            "token_type": "Bearer",
            "iat": now,
            "exp": now + self.registry.token_lifetime_secs,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        if let Some(supplier) = &grant.supplier_org {
            claims["supplier"] = org_identity(supplier);
            claims["delegation_source"] = Value::String(DELEGATION_SOURCE.to_owned());
        }
        if let Some(aud) = &grant.audience {
            claims["aud"] = aud.clone();
        }
        if !grant.consents.is_empty() {
            claims["authorization_details"] = Value::Array(grant.consents.clone());
        }
        claims
    }

    fn token(&self, req: &Request<Bytes>) -> Response<Full<Bytes>> {
        if !is_form(req.headers()) {
            let body = json!({
                "error": "invalid_request",
                "error_description": format!("content type must be `{FORM_MEDIA_TYPE}`"),
            });
            return respond::json_no_store(StatusCode::BAD_REQUEST, &body);
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let grant = match grant::check(
            req.body(),
            &self.registry,
            &self.issuer_url,
            now,
            &self.jtis,
        ) {
            Ok(grant) => grant,
            Err(e) => {
                tracing::debug!(error = e.code, description = %e.description, "grant refused");
                return respond::json_no_store(e.status, &e.body());
            }
        };
        let claims = self.claims_for(&grant, now);
        let key = self.keys.current();
        // Maskinporten's header: `alg` and `kid`. No RFC 9068 `typ: at+jwt`, whose required
        // `sub` and `aud` these tokens do not carry.
        match key.sign(&key.header(), &claims) {
            Ok(token) => respond::json_no_store(
                StatusCode::OK,
                &json!({
                    "access_token": token,
                    "token_type": "Bearer",
                    "expires_in": self.registry.token_lifetime_secs,
                    "scope": claims["scope"],
                }),
            ),
            Err(e) => {
                tracing::warn!("signing an access token failed: {e}");
                respond::json_no_store(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"error": "server_error", "error_description": "signing failed"}),
                )
            }
        }
    }
}

/// Whether the request's media type (before any `;` parameters, ASCII case-insensitive, as
/// RFC 9110 §8.3.1 has it) is exactly the form type.
fn is_form(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media_type| media_type.trim().eq_ignore_ascii_case(FORM_MEDIA_TYPE))
}

/// A request whose body was too large to read: `/token` answers as RFC 6749 §5.2 has
/// token errors (a client parses those), every other path with the usual problem document.
fn unreadable_body(head: &http::request::Parts) -> Response<Full<Bytes>> {
    if head.uri.path() == "/token" {
        let body = json!({
            "error": "invalid_request",
            "error_description": "request body too large or unreadable",
        });
        respond::json_no_store(StatusCode::PAYLOAD_TOO_LARGE, &body)
    } else {
        respond::body_too_large()
    }
}

fn route(state: &IssuerState, req: &Request<Bytes>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let method = req.method();
    match path {
        "/.well-known/oauth-authorization-server" => match *method {
            Method::GET | Method::HEAD => {
                respond::bytes(StatusCode::OK, respond::JSON, state.metadata.clone())
            }
            _ => respond::method_not_allowed("GET"),
        },
        "/jwk" => match *method {
            Method::GET | Method::HEAD => {
                let mut response = respond::bytes(StatusCode::OK, respond::JSON, state.keys.jwks());
                response
                    .headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static(JWKS_MAX_AGE));
                response
            }
            _ => respond::method_not_allowed("GET"),
        },
        "/token" => match *method {
            Method::POST => state.token(req),
            _ => respond::method_not_allowed("POST"),
        },
        _ => respond::not_found(path),
    }
}
