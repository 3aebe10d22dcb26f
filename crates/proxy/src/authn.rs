//! Bearer-token validation, Maskinporten style, strict about algorithms.
//!
//! Only this module can create a [`VerifiedCaller`]; the request path needs
//! one to ask for a policy decision, so skipping validation does not compile.
//! Order of checks: size and shape, header (no `none`, no HMAC, no keys or key
//! references from the token, no `crit`, no nesting), issuer by exact `iss`,
//! algorithm allow-listed for that issuer, key by `kid` from the issuer's
//! JWKS, signature, then time claims on an injected clock, then the claims
//! we authorise on (`consumer`, `scope`, consent entries) and the token's
//! confirmation (`cnf`): a certificate-bound token's thumbprint is carried in
//! the caller and checked against each request's connection
//! ([`VerifiedCaller::check_binding`]), never remembered as passed.

mod claims;
mod jwks;
mod strict_json;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::Value;
use sha2::Digest;
use tollbu_policy::Caller;

use crate::error::{TokenFault, VerifyError};
use crate::http_client::HttpClient;
pub use jwks::{IssuerKeys, JwksError, RefreshReason, parse_jwks};

/// Header parameters that let a token name or carry its own key (RFC 7515 §4.1.2–4.1.8; RFC 8725
/// §3.10). The key comes from the issuer's key set by `kid`, never from the token.
const KEY_HEADERS: [&str; 6] = ["jwk", "jku", "x5u", "x5c", "x5t", "x5t#S256"];
const MAX_KID_CHARS: usize = 128;

/// Settings for one trusted issuer.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerSettings {
    /// Exact `iss`, trailing slash included.
    pub issuer: String,
    pub jwks_url: http::Uri,
    pub algorithms: Vec<Algorithm>,
    /// When set, `aud` must contain it; when not, a token carrying any `aud` is refused.
    pub audience: Option<String>,
    pub leeway_secs: i64,
    /// Oldest `iat` accepted, and the longest lifetime (`exp - now`) accepted.
    pub max_token_age_secs: i64,
    pub refresh_every: Duration,
    pub min_refetch: Duration,
    pub fetch_timeout: Duration,
}

/// A caller whose token verified. Constructed only by [`TokenVerifier::verify`].
#[derive(Debug, Clone)]
pub struct VerifiedCaller {
    pub issuer: String,
    /// What policies decide on: consumer and supplier organisation numbers,
    /// scopes, consent entries — built once here, borrowed by `decide`.
    pub facts: Caller,
    pub delegation_source: Option<String>,
    /// Recorded, never authorised on.
    pub client_id: String,
    pub token_id: String,
    pub expires_at: i64,
    pub system_users: Vec<Value>,
    /// `cnf.x5t#S256` of a certificate-bound token (RFC 8705 §3): the SHA-256 of the DER of the
    /// client certificate it may be used with. Checked on every request, against that request's
    /// connection, by [`VerifiedCaller::check_binding`]; a remembered token is checked again.
    certificate_thumbprint: Option<[u8; 32]>,
    _proof: Verified,
}

/// The client certificate a TLS connection presented, as the SHA-256 of its DER (RFC 8705
/// §3.1's `x5t#S256`): computed once per connection after the handshake and put in each of its
/// requests' extensions. A request without one came over plaintext or without a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientCertificate {
    sha256: [u8; 32],
}

impl ClientCertificate {
    /// The thumbprint of the end-entity certificate `der`.
    pub fn from_der(der: &[u8]) -> Self {
        ClientCertificate {
            sha256: sha2::Sha256::digest(der).into(),
        }
    }
}

impl VerifiedCaller {
    /// RFC 8705 §3: a certificate-bound token is accepted only from a connection that presented
    /// that certificate; a bearer token (no `cnf`) from any connection.
    pub fn check_binding(&self, presented: Option<&ClientCertificate>) -> Result<(), TokenFault> {
        match (self.certificate_thumbprint, presented) {
            (None, _) => Ok(()),
            (Some(bound), Some(presented)) if bound == presented.sha256 => Ok(()),
            (Some(_), _) => Err(TokenFault::CertificateMismatch),
        }
    }

    /// Legal consumer organisation number.
    pub fn consumer(&self) -> &str {
        &self.facts.consumer
    }

    /// Vendor organisation acting for the consumer, if any.
    pub fn supplier(&self) -> Option<&str> {
        self.facts.supplier.as_deref()
    }
}

/// Private marker: only this module can build a [`VerifiedCaller`].
#[derive(Debug, Clone)]
struct Verified;

/// One issuer's settings and keys.
struct TrustedIssuer {
    settings: IssuerSettings,
    keys: IssuerKeys,
}

/// Validates tokens against the configured issuers.
pub struct TokenVerifier {
    issuers: HashMap<String, Arc<TrustedIssuer>>,
    client: HttpClient,
    max_token_bytes: usize,
    /// Tokens that verified, by SHA-256 of the token, with the last second
    /// they stay valid: a caller reusing its token (Maskinporten tokens live
    /// ~2 minutes) skips signature and claim checks. Successes only; bounded.
    verified: moka::sync::Cache<[u8; 32], Remembered>,
}

/// A token that verified: the caller, the first second it stops being
/// acceptable, and the key that signed it (which must still be published
/// under that kid: the same key, not merely a key with the same kid).
#[derive(Clone)]
struct Remembered {
    caller: Arc<VerifiedCaller>,
    valid_until: i64,
    kid: String,
    key_fingerprint: [u8; 32],
}

/// Most verified tokens remembered at once.
const VERIFIED_CACHE_ENTRIES: u64 = 100_000;
/// Longest a verified token is remembered, whatever its lifetime.
const VERIFIED_CACHE_TTL: Duration = Duration::from_secs(300);

/// Readiness of one issuer's keys.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IssuerStatus {
    pub issuer: String,
    pub keys: usize,
    pub fetches: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

impl TokenVerifier {
    pub fn new(issuers: Vec<IssuerSettings>, client: HttpClient, max_token_bytes: usize) -> Self {
        let issuers = issuers
            .into_iter()
            .map(|settings| {
                let keys = IssuerKeys::new(
                    settings.jwks_url.clone(),
                    settings.min_refetch,
                    settings.fetch_timeout,
                );
                (
                    settings.issuer.clone(),
                    Arc::new(TrustedIssuer { settings, keys }),
                )
            })
            .collect();
        TokenVerifier {
            verified: moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CACHE_ENTRIES)
                .time_to_live(VERIFIED_CACHE_TTL)
                .build(),
            issuers,
            client,
            max_token_bytes,
        }
    }

    /// Fetches every issuer's keys once, all issuers at once, then refreshes them in the
    /// background for as long as the verifier lives: every `refresh_every`
    /// while fetches succeed, sooner (see [`next_refresh_wait`]) after a
    /// failed fetch or while the issuer holds no key, so that a gateway that
    /// started while an issuer was down becomes ready soon after it is back
    /// (a gateway that is not ready gets no token that would fetch the keys).
    ///
    /// Returns once every first fetch has ended: with several issuers down, a start or reload
    /// waits one `fetch_timeout`, not one per issuer (and a SIGTERM during start-up with it).
    pub async fn start_refresh(self: &Arc<Self>) {
        let mut first_fetches = Vec::with_capacity(self.issuers.len());
        for issuer in self.issuers.values() {
            let issuer = Arc::clone(issuer);
            let weak = Arc::downgrade(self);
            let (first_done, first_fetch) = tokio::sync::oneshot::channel::<()>();
            first_fetches.push(first_fetch);
            tokio::spawn(async move {
                let mut first_done = Some(first_done);
                let mut retry = None;
                loop {
                    let Some(verifier) = weak.upgrade() else {
                        break;
                    };
                    let fetched = issuer
                        .keys
                        .refresh(&verifier.client, RefreshReason::Scheduled)
                        .await
                        .is_ok();
                    drop(verifier);
                    if let Some(first_done) = first_done.take() {
                        let _ = first_done.send(());
                    }
                    let healthy = fetched && issuer.keys.key_count() > 0;
                    let wait = next_refresh_wait(&issuer.settings, healthy, &mut retry);
                    tokio::time::sleep(wait).await;
                }
            });
        }
        for first_fetch in first_fetches {
            // An error only means the task ended without sending: it has nothing left to wait for.
            let _ = first_fetch.await;
        }
    }

    /// Key status per issuer, for `/readyz` and metrics.
    pub fn status(&self) -> Vec<IssuerStatus> {
        let mut out: Vec<_> = self
            .issuers
            .values()
            .map(|issuer| IssuerStatus {
                issuer: issuer.settings.issuer.clone(),
                keys: issuer.keys.key_count(),
                fetches: issuer
                    .keys
                    .fetches
                    .load(std::sync::atomic::Ordering::Relaxed),
                failures: issuer
                    .keys
                    .failures
                    .load(std::sync::atomic::Ordering::Relaxed),
                last_error: issuer.keys.last_error(),
            })
            .collect();
        out.sort_by(|a, b| a.issuer.cmp(&b.issuer));
        out
    }

    /// Verifies `token` at time `now` (unix seconds).
    pub async fn verify(&self, token: &str, now: i64) -> Result<Arc<VerifiedCaller>, VerifyError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenFault::TooLarge.into());
        }
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(remembered) = self.verified.get(&digest) {
            // A key the issuer has since withdrawn, or replaced under the same kid, no longer
            // vouches for its tokens.
            let key_still_published = self
                .issuers
                .get(&remembered.caller.issuer)
                .and_then(|issuer| issuer.keys.get(&remembered.kid))
                .is_some_and(|held| held.fingerprint == remembered.key_fingerprint);
            if now < remembered.valid_until && key_still_published {
                return Ok(remembered.caller);
            }
            self.verified.invalidate(&digest);
        }
        // Boxed: the full check (and a possible key fetch) is rare once tokens
        // are cached, and inline it would make every request's future 1 KiB larger.
        let (caller, valid_until, (kid, key_fingerprint)) =
            Box::pin(self.verify_uncached(token, now)).await?;
        let caller = Arc::new(caller);
        self.verified.insert(
            digest,
            Remembered {
                caller: Arc::clone(&caller),
                valid_until,
                kid,
                key_fingerprint,
            },
        );
        Ok(caller)
    }

    /// [`verify`](Self::verify) without the verified-token cache (neither
    /// read nor filled): what a token the gateway has not seen before costs.
    /// For measurements; the request path always goes through the cache.
    pub async fn verify_without_cache(
        &self,
        token: &str,
        now: i64,
    ) -> Result<VerifiedCaller, VerifyError> {
        Ok(self.verify_uncached(token, now).await?.0)
    }

    /// Full verification; returns the caller, the first second at which the
    /// token stops being acceptable (expiry with leeway, or maximum age), and
    /// the signing key's id and fingerprint.
    async fn verify_uncached(
        &self,
        token: &str,
        now: i64,
    ) -> Result<(VerifiedCaller, i64, (String, [u8; 32])), VerifyError> {
        let parsed = parse_compact(token, self.max_token_bytes)?;
        let iss = parsed
            .payload
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(TokenFault::BadClaims)?;
        let issuer = self.issuers.get(iss).ok_or(TokenFault::UntrustedIssuer)?;
        if !issuer.settings.algorithms.contains(&parsed.alg) {
            return Err(TokenFault::AlgorithmNotAllowed.into());
        }
        let key = self.key_for(issuer, &parsed.kid).await?;
        if !key.accepts(parsed.alg) {
            return Err(TokenFault::AlgorithmNotAllowed.into());
        }
        match jsonwebtoken::crypto::verify(
            parsed.signature,
            parsed.signing_input,
            &key.key,
            parsed.alg,
        ) {
            Ok(true) => {}
            _ => return Err(TokenFault::BadSignature.into()),
        }
        let checked = check_claims(parsed.payload, &issuer.settings, now)?;
        let settings = &issuer.settings;
        let valid_until = checked.claims.exp.saturating_add(settings.leeway_secs).min(
            checked
                .claims
                .iat
                .saturating_add(settings.max_token_age_secs)
                .saturating_add(1),
        );
        let caller = VerifiedCaller {
            issuer: checked.claims.iss,
            facts: Caller {
                consumer: checked.consumer,
                supplier: checked.supplier,
                scopes: checked.scopes,
                consents: checked.details.consents,
                person: checked.person,
            },
            delegation_source: checked.claims.delegation_source,
            client_id: checked.claims.client_id,
            token_id: checked.claims.jti,
            expires_at: checked.claims.exp,
            system_users: checked.details.system_users,
            certificate_thumbprint: checked.certificate_thumbprint,
            _proof: Verified,
        };
        Ok((caller, valid_until, (parsed.kid.clone(), key.fingerprint)))
    }

    async fn key_for(
        &self,
        issuer: &TrustedIssuer,
        kid: &str,
    ) -> Result<Arc<jwks::VerificationKey>, VerifyError> {
        if let Some(key) = issuer.keys.get(kid) {
            return Ok(key);
        }
        // A refresh refused by the refetch throttle returns Ok without fetching; either way the
        // outcome is read from the keys held afterwards, not from the refresh's result.
        let _ = issuer
            .keys
            .refresh(&self.client, RefreshReason::UnknownKid)
            .await;
        match issuer.keys.get(kid) {
            Some(key) => Ok(key),
            // Holding no key at all, the gateway cannot say the kid is unknown: it cannot check
            // any token of this issuer, and the token may be good.
            None if issuer.keys.key_count() == 0 => Err(VerifyError::KeysUnavailable {
                retry_after: issuer.keys.refetch_wait(),
            }),
            None => Err(TokenFault::UnknownKey.into()),
        }
    }
}

/// Shortest wait before retrying a failed background key fetch.
const MIN_REFRESH_RETRY: Duration = Duration::from_secs(1);

/// How long the background refresher waits before its next fetch. After a
/// successful fetch that left keys held: `refresh_every`. Otherwise (the fetch
/// failed, or the issuer holds no key): a retry, the first after
/// `min_refetch` (at least [`MIN_REFRESH_RETRY`]), each next one twice as
/// late, never later than `refresh_every`. `retry` carries the last retry's
/// wait between calls and is cleared by a healthy fetch.
fn next_refresh_wait(
    settings: &IssuerSettings,
    healthy: bool,
    retry: &mut Option<Duration>,
) -> Duration {
    if healthy {
        *retry = None;
        return settings.refresh_every;
    }
    let wait = match *retry {
        None => settings.min_refetch.max(MIN_REFRESH_RETRY),
        Some(previous) => previous.saturating_mul(2),
    }
    .min(settings.refresh_every);
    *retry = Some(wait);
    wait
}

/// A compact JWS split and decoded, nothing verified yet.
struct Parsed<'t> {
    alg: Algorithm,
    kid: String,
    payload: Value,
    signing_input: &'t [u8],
    signature: &'t str,
}

/// Size, shape, header and payload checks: everything before the key lookup.
fn parse_compact(token: &str, max_token_bytes: usize) -> Result<Parsed<'_>, TokenFault> {
    if token.len() > max_token_bytes {
        return Err(TokenFault::TooLarge);
    }
    // A compact JWS is base64url segments and dots; anything else (spaces,
    // padding, standard base64) is refused before it is counted as JWE.
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(TokenFault::Malformed);
    }
    let parts: Vec<&str> = token.split('.').collect();
    let (header, body, signature) = match parts.as_slice() {
        [header, body, signature] => (*header, *body, *signature),
        [_, _, _, _, _] => return Err(TokenFault::NestedToken),
        _ => return Err(TokenFault::Malformed),
    };
    let (alg, kid) = check_header(&decode_json_object(header)?)?;
    let payload_bytes = decode_segment(body)?;
    if !strict_json::is_strict_json(&payload_bytes) {
        return Err(TokenFault::Malformed);
    }
    let payload: Value =
        serde_json::from_slice(&payload_bytes).map_err(|_| TokenFault::Malformed)?;
    let signing_input = token
        .as_bytes()
        .get(..header.len() + 1 + body.len())
        .ok_or(TokenFault::Malformed)?;
    Ok(Parsed {
        alg,
        kid,
        payload,
        signing_input,
        signature,
    })
}

/// Claims that passed every check after the signature.
struct CheckedClaims {
    claims: claims::RawClaims,
    consumer: String,
    supplier: Option<String>,
    details: claims::AuthorizationDetails,
    scopes: Vec<String>,
    /// `pid` of an end-user-restricted token, checked.
    person: Option<String>,
    /// `cnf.x5t#S256`, when the token is bound to a client certificate.
    certificate_thumbprint: Option<[u8; 32]>,
}

/// Types, times, audience, `jti`, `token_type`, `cnf`, organisations and
/// `authorization_details`: every check after the signature.
fn check_claims(
    payload: Value,
    settings: &IssuerSettings,
    now: i64,
) -> Result<CheckedClaims, TokenFault> {
    let claims: claims::RawClaims =
        serde_json::from_value(payload).map_err(|_| TokenFault::BadClaims)?;
    check_times(&claims, settings, now)?;
    // RFC 7519 §4.1.3: a recipient that does not identify itself with a value in a present `aud`
    // must reject the token. With no `audience` configured the gateway names itself by nothing,
    // so an audience-restricted token (meant for some API) is never for us.
    let audience_fits = match (&settings.audience, &claims.aud) {
        (Some(wanted), Some(aud)) => aud.contains(wanted),
        (None, None) => true,
        (Some(_), None) | (None, Some(_)) => false,
    };
    if !audience_fits {
        return Err(TokenFault::WrongAudience);
    }
    claims::check_jti(&claims.jti)?;
    claims::check_client_id(&claims.client_id)?;
    let scopes = claims::scopes(&claims.scope)?;
    let person = claims::person(claims.pid.as_deref())?;
    let certificate_thumbprint = claims::certificate_binding(claims.cnf.as_ref())?;
    if claims
        .token_type
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
    {
        return Err(TokenFault::BadClaims);
    }
    let consumer = claims.consumer.orgno()?;
    let supplier = claims
        .supplier
        .as_ref()
        .map(|supplier| supplier.orgno().map_err(|_| TokenFault::BadSupplier))
        .transpose()?;
    let details = claims::parse_authorization_details(
        claims.authorization_details.as_deref().unwrap_or_default(),
    )?;
    Ok(CheckedClaims {
        claims,
        consumer,
        supplier,
        details,
        scopes,
        person,
        certificate_thumbprint,
    })
}

/// What [`inspect_unverified`] read from a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnverifiedSummary {
    pub alg: Algorithm,
    pub kid: String,
    pub issuer: String,
    pub consumer: String,
    pub consents: usize,
}

/// Runs every check of [`TokenVerifier::verify`] that needs no key: size,
/// shape, header, strict JSON, claim types, times, audience, organisations
/// and `authorization_details` — for fuzzing and diagnostics. The signature
/// is NOT checked, so nothing here may ever be authorised on (it cannot
/// produce a [`VerifiedCaller`]).
pub fn inspect_unverified(
    token: &str,
    settings: &IssuerSettings,
    max_token_bytes: usize,
    now: i64,
) -> Result<UnverifiedSummary, TokenFault> {
    let parsed = parse_compact(token, max_token_bytes)?;
    let checked = check_claims(parsed.payload, settings, now)?;
    Ok(UnverifiedSummary {
        alg: parsed.alg,
        kid: parsed.kid,
        issuer: checked.claims.iss,
        consumer: checked.consumer,
        consents: checked.details.consents.len(),
    })
}

fn decode_segment(segment: &str) -> Result<Vec<u8>, TokenFault> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenFault::Malformed)
}

fn decode_json_object(segment: &str) -> Result<serde_json::Map<String, Value>, TokenFault> {
    let bytes = decode_segment(segment)?;
    if !strict_json::is_strict_json(&bytes) {
        return Err(TokenFault::Malformed);
    }
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenFault::Malformed),
    }
}

/// Checks the JOSE header and returns the algorithm and key id.
fn check_header(
    header: &serde_json::Map<String, Value>,
) -> Result<(Algorithm, String), TokenFault> {
    if KEY_HEADERS.iter().any(|name| header.contains_key(*name)) {
        return Err(TokenFault::ForbiddenHeader);
    }
    if header.contains_key("crit") {
        return Err(TokenFault::UnknownCritical);
    }
    if header.contains_key("enc")
        || header
            .get("cty")
            .and_then(Value::as_str)
            .is_some_and(|cty| cty.eq_ignore_ascii_case("jwt"))
    {
        return Err(TokenFault::NestedToken);
    }
    if let Some(typ) = header.get("typ") {
        let typ = typ
            .as_str()
            .ok_or(TokenFault::Malformed)?
            .to_ascii_lowercase();
        if !matches!(typ.as_str(), "jwt" | "at+jwt" | "application/at+jwt") {
            return Err(TokenFault::Malformed);
        }
    }
    let alg_name = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(TokenFault::Malformed)?;
    let alg = Algorithm::from_str(alg_name).map_err(|_| TokenFault::AlgorithmNotAllowed)?;
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return Err(TokenFault::AlgorithmNotAllowed);
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(TokenFault::UnknownKey)?;
    let kid_ok = !kid.is_empty()
        && kid.chars().count() <= MAX_KID_CHARS
        && kid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:=+".contains(c));
    if !kid_ok {
        return Err(TokenFault::UnknownKey);
    }
    Ok((alg, kid.to_owned()))
}

fn check_times(
    claims: &claims::RawClaims,
    settings: &IssuerSettings,
    now: i64,
) -> Result<(), TokenFault> {
    let leeway = settings.leeway_secs;
    if claims.exp.saturating_add(leeway) <= now {
        return Err(TokenFault::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf > now.saturating_add(leeway))
    {
        return Err(TokenFault::NotYetValid);
    }
    if claims.iat > now.saturating_add(leeway) {
        return Err(TokenFault::NotYetValid);
    }
    if now.saturating_sub(claims.iat) > settings.max_token_age_secs {
        return Err(TokenFault::TooOld);
    }
    if claims.exp.saturating_sub(now) > settings.max_token_age_secs.saturating_add(leeway) {
        return Err(TokenFault::BadClaims);
    }
    // A token that expires before it was issued, or becomes valid only after it expires, was not
    // made by a working issuer.
    if claims.exp <= claims.iat || claims.nbf.is_some_and(|nbf| nbf >= claims.exp) {
        return Err(TokenFault::BadClaims);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn header(json: &str) -> serde_json::Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    fn settings() -> IssuerSettings {
        IssuerSettings {
            issuer: "https://test.maskinporten.no/".into(),
            jwks_url: "https://test.maskinporten.no/jwk".parse().unwrap(),
            algorithms: vec![Algorithm::RS256],
            audience: None,
            leeway_secs: 10,
            max_token_age_secs: 3600,
            refresh_every: Duration::from_secs(300),
            min_refetch: Duration::from_secs(10),
            fetch_timeout: Duration::from_secs(5),
        }
    }

    fn compact(header: &str, claims: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn offline_checks_run_without_keys() {
        let claims = r#"{"iss":"https://test.maskinporten.no/","scope":"a:b","client_id":"c","consumer":{"authority":"iso6523-actorid-upis","ID":"0192:310000019"},"exp":1100,"iat":1000,"jti":"j"}"#;
        let summary = inspect_unverified(
            &compact(r#"{"alg":"RS256","kid":"k1"}"#, claims),
            &settings(),
            16384,
            1000,
        )
        .unwrap();
        assert_eq!(summary.consumer, "310000019");
        assert_eq!(summary.kid, "k1");
        let at = |token: &str| inspect_unverified(token, &settings(), 16384, 1000).err();
        assert_eq!(at(&compact(r#"{"alg":"RS256","kid":"k1"}"#, claims)), None);
        assert_eq!(
            at(&compact(r#"{"alg":"RS256","kid":"k1"}"#, claims).replace(".c2ln", ".c2ln ")),
            Some(TokenFault::Malformed),
            "whitespace inside a token"
        );
        assert_eq!(
            at("a b.c.d.e.f"),
            Some(TokenFault::Malformed),
            "not counted as JWE"
        );
        assert_eq!(at("a.b.c.d.e"), Some(TokenFault::NestedToken));
        assert_eq!(
            at(&compact(
                r#"{"alg":"RS256","kid":"k1"}"#,
                &claims.replace("1100", "5000")
            )),
            Some(TokenFault::BadClaims),
            "lifetime beyond max age"
        );
        assert_eq!(
            inspect_unverified(
                &compact(r#"{"alg":"RS256","kid":"k1"}"#, claims),
                &settings(),
                10,
                1000
            )
            .err(),
            Some(TokenFault::TooLarge)
        );
    }

    #[test]
    fn aud_must_name_the_configured_audience_and_is_refused_when_none_is_configured() {
        let claims = |aud: &str| {
            format!(
                r#"{{"iss":"https://test.maskinporten.no/","scope":"a:b","client_id":"c","consumer":{{"authority":"iso6523-actorid-upis","ID":"0192:310000019"}},"exp":1100,"iat":1000,"jti":"j"{aud}}}"#
            )
        };
        let at = |settings: &IssuerSettings, aud: &str| {
            inspect_unverified(
                &compact(r#"{"alg":"RS256","kid":"k1"}"#, &claims(aud)),
                settings,
                16384,
                1000,
            )
            .err()
        };
        let open = settings();
        assert_eq!(at(&open, ""), None, "no audience configured, no aud");
        for aud in [
            r#","aud":"https://other.example/api""#,
            r#","aud":["https://other.example/api"]"#,
            r#","aud":[]"#,
            r#","aud":"""#,
        ] {
            assert_eq!(
                at(&open, aud),
                Some(TokenFault::WrongAudience),
                "no audience configured: {aud}"
            );
        }
        let restricted = IssuerSettings {
            audience: Some("https://registry.example/population".into()),
            ..settings()
        };
        assert_eq!(at(&restricted, ""), Some(TokenFault::WrongAudience));
        assert_eq!(
            at(&restricted, r#","aud":"https://other.example/api""#),
            Some(TokenFault::WrongAudience)
        );
        assert_eq!(
            at(
                &restricted,
                r#","aud":["https://other.example/api","https://registry.example/population"]"#
            ),
            None
        );
    }

    /// A verifier trusting `settings()`'s issuer, whose key set is at a port nothing listens on.
    fn verifier_without_keys(min_refetch: Duration) -> TokenVerifier {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let client =
            crate::http_client::build_client(&Default::default(), Duration::from_secs(2)).unwrap();
        let settings = IssuerSettings {
            jwks_url: format!("http://127.0.0.1:{port}/jwk").parse().unwrap(),
            min_refetch,
            ..settings()
        };
        TokenVerifier::new(vec![settings], client, 16384)
    }

    /// Issuers' first key fetches run together: with two issuers whose key-set servers accept
    /// and never answer, the second is asked while the first still hangs. One after the other,
    /// the second would be asked only once the first fetch timed out (here after 10 minutes).
    #[tokio::test]
    async fn first_key_fetches_of_all_issuers_run_at_once() {
        let hanging = [
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        ];
        let issuers = hanging
            .iter()
            .enumerate()
            .map(|(n, listener)| IssuerSettings {
                issuer: format!("https://issuer-{n}.test/"),
                jwks_url: format!("http://{}/jwk", listener.local_addr().unwrap())
                    .parse()
                    .unwrap(),
                fetch_timeout: Duration::from_secs(600),
                ..settings()
            })
            .collect();
        let client =
            crate::http_client::build_client(&Default::default(), Duration::from_secs(2)).unwrap();
        let verifier = Arc::new(TokenVerifier::new(issuers, client, 16384));
        let starting = tokio::spawn({
            let verifier = Arc::clone(&verifier);
            async move { verifier.start_refresh().await }
        });
        let [first, second] = hanging;
        let both_asked = async {
            let (held_first, _) = first.accept().await.unwrap();
            let (held_second, _) = second.accept().await.unwrap();
            (held_first, held_second)
        };
        let asked = tokio::time::timeout(Duration::from_secs(120), both_asked).await;
        assert!(
            asked.is_ok(),
            "the second issuer's keys were not asked for while the first fetch hung"
        );
        assert!(!starting.is_finished(), "both first fetches still hang");
        starting.abort();
    }

    #[tokio::test]
    async fn an_issuer_holding_no_keys_refuses_with_keys_unavailable_inside_the_refetch_window() {
        let verifier = verifier_without_keys(Duration::from_secs(600));
        let claims = r#"{"iss":"https://test.maskinporten.no/","scope":"a:b","client_id":"c","consumer":{"authority":"iso6523-actorid-upis","ID":"0192:310000019"},"exp":1100,"iat":1000,"jti":"j"}"#;
        let token = compact(r#"{"alg":"RS256","kid":"k1"}"#, claims);
        let mut waits = Vec::new();
        for attempt in 0..3 {
            let error = verifier.verify(&token, 1000).await.err();
            assert!(
                matches!(error, Some(VerifyError::KeysUnavailable { .. })),
                "attempt {attempt}: {error:?}"
            );
            if let Some(VerifyError::KeysUnavailable { retry_after }) = error {
                waits.push(retry_after);
            }
        }
        // The client is told to come back when a request may fetch the key set again: at the end
        // of the refetch window that the first attempt's fetch opened.
        assert!(
            waits[0] <= Duration::from_secs(600) && waits[0] > Duration::from_secs(590),
            "{waits:?}"
        );
        assert!(waits.is_sorted_by(|a, b| a >= b), "{waits:?}");
        let status = verifier.status();
        assert_eq!(
            status[0].fetches, 1,
            "later attempts fell inside jwks_min_refetch and fetched nothing"
        );
        assert_eq!(status[0].keys, 0);
    }

    #[test]
    fn failed_key_fetches_are_retried_with_a_capped_doubling_backoff() {
        let settings = IssuerSettings {
            refresh_every: Duration::from_secs(300),
            min_refetch: Duration::from_secs(10),
            ..settings()
        };
        let mut retry = None;
        let mut waits = Vec::new();
        for _ in 0..7 {
            waits.push(next_refresh_wait(&settings, false, &mut retry).as_secs());
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(
            next_refresh_wait(&settings, true, &mut retry),
            Duration::from_secs(300)
        );
        assert_eq!(retry, None, "a healthy fetch resets the backoff");
        assert_eq!(
            next_refresh_wait(&settings, false, &mut retry),
            Duration::from_secs(10),
            "the next failure starts over"
        );

        // No refetch throttle: retries start at one second. A refresh period shorter than
        // the first retry caps it.
        let eager = IssuerSettings {
            min_refetch: Duration::ZERO,
            ..settings.clone()
        };
        let mut retry = None;
        assert_eq!(
            next_refresh_wait(&eager, false, &mut retry),
            Duration::from_secs(1)
        );
        let short = IssuerSettings {
            refresh_every: Duration::from_secs(5),
            ..settings
        };
        let mut retry = None;
        assert_eq!(
            next_refresh_wait(&short, false, &mut retry),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn a_bad_supplier_is_told_apart_from_a_bad_consumer() {
        let claims = |consumer: &str, supplier: &str| {
            format!(
                r#"{{"iss":"https://test.maskinporten.no/","scope":"a:b","client_id":"c","consumer":{{"authority":"iso6523-actorid-upis","ID":"0192:{consumer}"}},"supplier":{{"authority":"iso6523-actorid-upis","ID":"0192:{supplier}"}},"exp":1100,"iat":1000,"jti":"j"}}"#
            )
        };
        let at = |consumer: &str, supplier: &str| {
            inspect_unverified(
                &compact(r#"{"alg":"RS256","kid":"k1"}"#, &claims(consumer, supplier)),
                &settings(),
                16384,
                1000,
            )
            .err()
        };
        assert_eq!(at("310000019", "310000019"), None);
        assert_eq!(
            at("310000019", "310000018"),
            Some(TokenFault::BadSupplier),
            "supplier with a bad check digit"
        );
        assert_eq!(
            at("310000018", "310000019"),
            Some(TokenFault::BadConsumer),
            "consumer with a bad check digit"
        );
    }

    #[test]
    fn cnf_is_checked_offline_and_a_bound_caller_needs_its_certificate() {
        let claims = |cnf: &str| {
            format!(
                r#"{{"iss":"https://test.maskinporten.no/","scope":"a:b","client_id":"c","consumer":{{"authority":"iso6523-actorid-upis","ID":"0192:310000019"}},"exp":1100,"iat":1000,"jti":"j"{cnf}}}"#
            )
        };
        let at = |cnf: &str| {
            let token = compact(r#"{"alg":"RS256","kid":"k1"}"#, &claims(cnf));
            check_claims(
                parse_compact(&token, 16384).unwrap().payload,
                &settings(),
                1000,
            )
            .map(|checked| checked.certificate_thumbprint)
        };
        let certificate = ClientCertificate::from_der(b"certificate");
        let thumbprint = URL_SAFE_NO_PAD.encode(certificate.sha256);
        assert_eq!(at(""), Ok(None));
        assert_eq!(
            at(&format!(r#","cnf":{{"x5t#S256":"{thumbprint}"}}"#)),
            Ok(Some(certificate.sha256))
        );
        assert_eq!(
            at(r#","cnf":{"jkt":"0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}"#),
            Err(TokenFault::UnsupportedConfirmation)
        );
        assert_eq!(
            at(r#","cnf":{"x5t#S256":"not a thumbprint"}"#),
            Err(TokenFault::BadClaims)
        );

        let caller = |certificate_thumbprint| VerifiedCaller {
            issuer: "https://test.maskinporten.no/".into(),
            facts: Caller {
                consumer: "310000019".into(),
                supplier: None,
                scopes: vec!["a:b".into()],
                consents: Vec::new(),
                person: None,
            },
            delegation_source: None,
            client_id: "c".into(),
            token_id: "j".into(),
            expires_at: 1100,
            system_users: Vec::new(),
            certificate_thumbprint,
            _proof: Verified,
        };
        let other = ClientCertificate::from_der(b"another certificate");
        let bearer = caller(None);
        assert_eq!(bearer.check_binding(None), Ok(()));
        assert_eq!(bearer.check_binding(Some(&other)), Ok(()));
        let bound = caller(Some(certificate.sha256));
        assert_eq!(bound.check_binding(Some(&certificate)), Ok(()));
        for presented in [None, Some(&other)] {
            assert_eq!(
                bound.check_binding(presented),
                Err(TokenFault::CertificateMismatch),
                "{presented:?}"
            );
        }
    }

    #[test]
    fn header_checks() {
        assert_eq!(
            check_header(&header(r#"{"alg":"RS256","kid":"k1"}"#))
                .unwrap()
                .0,
            Algorithm::RS256
        );
        for (json, fault) in [
            (
                r#"{"alg":"none","kid":"k"}"#,
                TokenFault::AlgorithmNotAllowed,
            ),
            (
                r#"{"alg":"None","kid":"k"}"#,
                TokenFault::AlgorithmNotAllowed,
            ),
            (
                r#"{"alg":"HS256","kid":"k"}"#,
                TokenFault::AlgorithmNotAllowed,
            ),
            (
                r#"{"alg":"HS512","kid":"k"}"#,
                TokenFault::AlgorithmNotAllowed,
            ),
            (
                r#"{"alg":"RS256","kid":"k","jwk":{}}"#,
                TokenFault::ForbiddenHeader,
            ),
            (
                r#"{"alg":"RS256","kid":"k","jku":"https://x"}"#,
                TokenFault::ForbiddenHeader,
            ),
            (
                r#"{"alg":"RS256","kid":"k","x5u":"https://x"}"#,
                TokenFault::ForbiddenHeader,
            ),
            (
                r#"{"alg":"RS256","kid":"k","x5c":["MII"]}"#,
                TokenFault::ForbiddenHeader,
            ),
            (
                r#"{"alg":"RS256","kid":"k","crit":["exp"]}"#,
                TokenFault::UnknownCritical,
            ),
            (
                r#"{"alg":"RS256","kid":"k","cty":"JWT"}"#,
                TokenFault::NestedToken,
            ),
            (
                r#"{"alg":"RS256","kid":"../../etc/passwd"}"#,
                TokenFault::UnknownKey,
            ),
            (
                r#"{"alg":"RS256","kid":"k' OR 1=1"}"#,
                TokenFault::UnknownKey,
            ),
            (r#"{"alg":"RS256"}"#, TokenFault::UnknownKey),
            (r#"{"kid":"k"}"#, TokenFault::Malformed),
            (
                r#"{"alg":"RS256","kid":"k","typ":"JWE"}"#,
                TokenFault::Malformed,
            ),
        ] {
            assert_eq!(check_header(&header(json)).err(), Some(fault), "{json}");
        }
        let long_kid = format!(r#"{{"alg":"RS256","kid":"{}"}}"#, "a".repeat(200));
        assert_eq!(
            check_header(&header(&long_kid)).err(),
            Some(TokenFault::UnknownKey)
        );
    }
}
