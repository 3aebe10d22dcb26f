//! Checking a JWT-bearer grant (RFC 7523) the way Maskinporten does. Pure
//! apart from the replay cache: the clock is a parameter.

use http::StatusCode;
use serde_json::{Map, Value, json};
use tollbu_policy::ids::{is_valid_orgno, is_valid_pid};

use crate::issuer::registry::{PERSON_URN_PREFIX, Registry};
use crate::issuer::replay::JtiCache;
use crate::jwt::CompactJws;

/// The grant type this issuer supports.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How far a grant's `iat` may be from the issuer's clock.
pub const MAX_IAT_SKEW_SECS: i64 = 10;
/// The longest a grant may live (`exp - iat`).
pub const MAX_GRANT_LIFETIME_SECS: i64 = 120;
/// The only `authorization_details` type understood.
pub const CONSENT_DETAIL_TYPE: &str = "urn:altinn:consent";
/// Header members that bring a key or certificate of their own (RFC 7515 §4.1.2-6). A grant
/// must name a registered key by `kid`; trusting a key the grant carries would let anyone sign.
const KEY_BEARING_HEADERS: [&str; 3] = ["jku", "jwk", "x5u"];
/// The largest NumericDate accepted (about the year 36812): far beyond any real grant, and
/// small enough that differences between two of them cannot overflow.
const MAX_NUMERIC_DATE: i64 = 1 << 40;

/// An RFC 6749 section 5.2 error.
#[derive(Debug)]
pub(crate) struct OAuthError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) description: String,
}

impl OAuthError {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
        }
    }
    fn request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }
    fn grant(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", d)
    }
    fn scope(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", d)
    }
    fn client(d: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", d)
    }
    pub(crate) fn body(&self) -> Value {
        json!({"error": self.code, "error_description": self.description})
    }
}

/// What an accepted grant entitles the client to.
#[derive(Debug)]
pub(crate) struct AcceptedGrant {
    pub(crate) client_id: String,
    /// The organisation the token is for (`consumer`).
    pub(crate) consumer_org: String,
    /// Set when the client acts for `consumer_org` through a delegation.
    pub(crate) supplier_org: Option<String>,
    pub(crate) scopes: Vec<String>,
    pub(crate) audience: Option<Value>,
    pub(crate) consents: Vec<Value>,
}

/// Checks a `/token` request body (form-encoded) against the registry.
pub(crate) fn check(
    form_body: &[u8],
    registry: &Registry,
    issuer_url: &str,
    now: i64,
    jtis: &JtiCache,
) -> Result<AcceptedGrant, OAuthError> {
    let mut grant_type = None;
    let mut assertion = None;
    for (k, v) in form_urlencoded::parse(form_body) {
        let slot = match k.as_ref() {
            "grant_type" => &mut grant_type,
            "assertion" => &mut assertion,
            _ => continue,
        };
        if slot.replace(v.into_owned()).is_some() {
            return Err(OAuthError::request(format!("parameter `{k}` given twice")));
        }
    }
    match grant_type.as_deref() {
        None => return Err(OAuthError::request("missing `grant_type`")),
        Some(JWT_BEARER_GRANT) => {}
        Some(other) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant type `{other}` is not supported; use `{JWT_BEARER_GRANT}`"),
            ));
        }
    }
    let assertion = assertion.ok_or_else(|| OAuthError::request("missing `assertion`"))?;
    // RFC 7523 §3.1: an assertion that is not a valid JWT is `invalid_grant`, like any other
    // invalid JWT; `invalid_request` is kept for the form around it.
    let jws = CompactJws::parse(&assertion).map_err(OAuthError::grant)?;

    if jws.header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(OAuthError::grant("grant `alg` must be `RS256`"));
    }
    // RFC 7515 §4.1.11: a recipient that does not understand every extension `crit` names must
    // refuse the JWS. This issuer understands none.
    if jws.header.contains_key("crit") {
        return Err(OAuthError::grant(
            "grant header names critical extensions (`crit`); none is supported",
        ));
    }
    // Maskinporten takes the client's key from an enterprise certificate chain (`x5c`) or a
    // registered key named by `kid`. This issuer has no certificate path, so `x5c` is refused
    // rather than ignored: ignoring it would accept grants Maskinporten would judge by the
    // certificate (another organisation's, or garbage).
    if jws.header.contains_key("x5c") {
        return Err(OAuthError::grant(
            "certificate grants (`x5c`) are not supported by this issuer; name a registered key with `kid`",
        ));
    }
    if let Some(name) = KEY_BEARING_HEADERS
        .iter()
        .find(|name| jws.header.contains_key(**name))
    {
        return Err(OAuthError::grant(format!(
            "key-bearing headers are refused (`{name}`); name a registered key with `kid`"
        )));
    }
    let kid = match jws.header.get("kid") {
        Some(Value::String(kid)) => kid,
        Some(_) => return Err(OAuthError::grant("grant `kid` must be a string")),
        None => {
            return Err(OAuthError::grant(
                "the grant names no key: set `kid` to the id of a key registered for the client \
                 (`x5c` is not supported by this issuer)",
            ));
        }
    };
    let claims = &jws.claims;
    let client_id = str_claim(claims, "iss")?
        .ok_or_else(|| OAuthError::grant("grant has no `iss` (the client id)"))?;
    let client = registry
        .client(client_id)
        .ok_or_else(|| OAuthError::client(format!("unknown client `{client_id}`")))?;

    let key = client
        .keys
        .iter()
        .find(|(k, _)| k == kid)
        .map(|(_, key)| key)
        .ok_or_else(|| OAuthError::client(format!("client `{client_id}` has no key `{kid}`")))?;
    if !key.verify(&jws) {
        return Err(OAuthError::grant("grant signature is not valid"));
    }

    match claims.get("aud") {
        Some(Value::String(aud)) if aud == issuer_url => {}
        Some(Value::String(aud)) => {
            return Err(OAuthError::grant(format!(
                "grant `aud` `{aud}` is not `{issuer_url}`"
            )));
        }
        _ => return Err(OAuthError::grant("grant `aud` must be a single string")),
    }
    // `time_claim` bounds every time to 0..=2^40 s, so none of the differences below overflows.
    let iat = time_claim(claims, "iat")?;
    let exp = time_claim(claims, "exp")?;
    if (iat - now).abs() > MAX_IAT_SKEW_SECS {
        return Err(OAuthError::grant(format!(
            "grant `iat` is more than {MAX_IAT_SKEW_SECS} s from the issuer's clock"
        )));
    }
    if exp <= now {
        return Err(OAuthError::grant("grant has expired"));
    }
    if exp <= iat {
        return Err(OAuthError::grant("grant `exp` must be after `iat`"));
    }
    // RFC 7523 §3: not accepted before `nbf`, with the clock skew allowed for `iat`.
    if claims.contains_key("nbf") && time_claim(claims, "nbf")? - now > MAX_IAT_SKEW_SECS {
        return Err(OAuthError::grant("grant is not valid yet (`nbf`)"));
    }
    if exp - iat > MAX_GRANT_LIFETIME_SECS {
        return Err(OAuthError::grant(format!(
            "grant lifetime (`exp` - `iat`) exceeds {MAX_GRANT_LIFETIME_SECS} s"
        )));
    }
    let jti = str_claim(claims, "jti")?
        .filter(|j| !j.is_empty())
        .ok_or_else(|| OAuthError::grant("grant has no `jti`"))?;
    if !jtis.claim(client_id, jti, exp, now) {
        return Err(OAuthError::grant(format!(
            "grant `jti` `{jti}` was already used"
        )));
    }

    let scope = str_claim(claims, "scope")?.unwrap_or_default();
    let mut scopes: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !client.scopes.contains(s) {
            return Err(OAuthError::scope(format!(
                "client `{client_id}` may not request scope `{s}`"
            )));
        }
        if !scopes.iter().any(|have| have == s) {
            scopes.push(s.to_owned());
        }
    }
    if scopes.is_empty() {
        return Err(OAuthError::scope("grant requests no `scope`"));
    }

    let (consumer_org, supplier_org) = match str_claim(claims, "consumer_org")? {
        None => (client.org.clone(), None),
        Some(org) if org == client.org => (client.org.clone(), None),
        Some(org) => {
            if !is_valid_orgno(org) {
                return Err(OAuthError::grant(format!(
                    "`consumer_org` `{org}` is not an organisation number"
                )));
            }
            if !registry.delegation_covers(org, &client.org, scopes.iter().map(String::as_str)) {
                return Err(OAuthError::grant(format!(
                    "no delegation from `{org}` to `{}` covers the requested scopes",
                    client.org
                )));
            }
            (org.to_owned(), Some(client.org.clone()))
        }
    };

    let audience = match claims.get("resource") {
        None => None,
        Some(Value::String(r)) if !r.is_empty() => Some(Value::String(r.clone())),
        Some(Value::Array(items))
            if !items.is_empty()
                && items
                    .iter()
                    .all(|i| i.as_str().is_some_and(|s| !s.is_empty())) =>
        {
            Some(Value::Array(items.clone()))
        }
        Some(_) => {
            return Err(OAuthError::grant(
                "`resource` must be a string or an array of strings",
            ));
        }
    };

    let consents = match claims.get("authorization_details") {
        None => Vec::new(),
        Some(Value::Array(details)) => {
            let mut consents = Vec::with_capacity(details.len());
            let mut ids: Vec<&str> = Vec::with_capacity(details.len());
            for detail in details {
                let (id, consent) = check_consent(detail, registry, &consumer_org, now)?;
                // Refused, not merged: a token must not list one consent twice, and merging
                // would hide which of two differing entries (`from`) the client meant.
                if ids.contains(&id) {
                    return Err(OAuthError::grant(format!(
                        "consent `{id}` is named twice in `authorization_details`"
                    )));
                }
                ids.push(id);
                consents.push(consent);
            }
            consents
        }
        Some(_) => {
            return Err(OAuthError::grant(
                "`authorization_details` must be an array",
            ));
        }
    };

    Ok(AcceptedGrant {
        client_id: client_id.to_owned(),
        consumer_org,
        supplier_org,
        scopes,
        audience,
        consents,
    })
}

/// Checks one `authorization_details` entry; returns its consent id and the entry for the token.
fn check_consent<'a>(
    detail: &'a Value,
    registry: &Registry,
    consumer_org: &str,
    now: i64,
) -> Result<(&'a str, Value), OAuthError> {
    let kind = detail.get("type").and_then(Value::as_str);
    if kind != Some(CONSENT_DETAIL_TYPE) {
        return Err(OAuthError::grant(format!(
            "unsupported `authorization_details` type; only `{CONSENT_DETAIL_TYPE}` is supported"
        )));
    }
    let id = detail
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| OAuthError::grant("consent detail has no string `id`"))?;
    let consent = registry
        .consent(id)
        .ok_or_else(|| OAuthError::grant(format!("unknown consent `{id}`")))?;
    if let Some(from) = detail.get("from") {
        let from = from.as_str().unwrap_or_default();
        let pid = from.strip_prefix(PERSON_URN_PREFIX).unwrap_or(from);
        if !is_valid_pid(pid) || pid != consent.from_pid {
            return Err(OAuthError::grant(format!(
                "consent `{id}` was not given by `{from}`"
            )));
        }
    }
    if consent.to_org != consumer_org {
        return Err(OAuthError::grant(format!(
            "consent `{id}` was not given to `{consumer_org}`"
        )));
    }
    let (consented, valid_to) = (
        consent.consented.unix_timestamp(),
        consent.valid_to.unix_timestamp(),
    );
    if now < consented || now >= valid_to {
        return Err(OAuthError::grant(format!(
            "consent `{id}` is not valid now"
        )));
    }
    Ok((id, consent.entry.clone()))
}

fn str_claim<'a>(
    claims: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, OAuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(OAuthError::grant(format!(
            "grant `{name}` must be a string"
        ))),
    }
}

/// A NumericDate claim; fractions are allowed by RFC 7519 and truncated. Only
/// 0..=[`MAX_NUMERIC_DATE`] is accepted, so the checks can subtract times freely.
fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<i64, OAuthError> {
    let value = claims
        .get(name)
        .ok_or_else(|| OAuthError::grant(format!("grant has no `{name}`")))?;
    value
        .as_i64()
        .or_else(|| {
            value
                .as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e15)
                .map(|f| f.trunc() as i64)
        })
        .filter(|secs| (0..=MAX_NUMERIC_DATE).contains(secs))
        .ok_or_else(|| {
            OAuthError::grant(format!(
                "grant `{name}` must be a number of seconds since 1970 (0 to 2^40)"
            ))
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn arbitrary_bodies_are_refused_without_panicking() {
        let registry = Registry::compile(&toml::from_str("").unwrap()).unwrap();
        let jtis = JtiCache::default();
        let mut rng = crate::people::SplitMix64::new(7);
        let prefix = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=";
        for round in 0..2_000 {
            let len = rng.below(200) as usize;
            let noise: Vec<u8> = (0..len).map(|_| rng.below(256) as u8).collect();
            let mut body = if round % 2 == 0 {
                prefix.as_bytes().to_vec()
            } else {
                Vec::new()
            };
            body.extend_from_slice(&noise);
            assert!(check(&body, &registry, "http://x/", 0, &jtis).is_err());
        }
        // Structurally valid JWS parts with hostile JSON inside.
        for (header, claims) in [
            ("{}", "{}"),
            (r#"{"alg":"RS256"}"#, r#"{"iss":5}"#),
            (r#"{"alg":"RS256","kid":[]}"#, r#"{"iss":"c"}"#),
            (r#"{"alg":"none"}"#, r#"{"iss":"c","exp":1e308}"#),
        ] {
            let token = format!(
                "{}.{}.",
                crate::jwt::b64url(header),
                crate::jwt::b64url(claims)
            );
            let body = format!("{prefix}{token}");
            assert!(check(body.as_bytes(), &registry, "http://x/", 0, &jtis).is_err());
        }
    }

    #[test]
    fn a_grant_naming_critical_extensions_is_refused() {
        let registry = Registry::compile(&crate::demo_material::issuer_config().unwrap()).unwrap();
        let (kid, pem) = crate::demo_material::client_key("demo-welfare").unwrap();
        let key = crate::jwt::RsaSigningKey::from_pem(pem, Some(kid)).unwrap();
        let claims = json!({
            "aud": "http://x/",
            "iss": "demo-welfare",
            "scope": "demo:population",
            "iat": 1000,
            "exp": 1100,
            "jti": "j-1",
        });
        let run = |header: Value, jti: &str| {
            let mut claims = claims.clone();
            claims["jti"] = json!(jti);
            let grant = key.sign(&header, &claims).unwrap();
            let body = format!("grant_type={JWT_BEARER_GRANT}&assertion={grant}");
            check(
                body.as_bytes(),
                &registry,
                "http://x/",
                1000,
                &JtiCache::default(),
            )
        };
        assert!(
            run(json!({"alg": "RS256", "kid": kid}), "j-1").is_ok(),
            "positive control"
        );
        for crit in [json!(["exp"]), json!(["urn:example:unknown"]), json!([])] {
            let refused = run(json!({"alg": "RS256", "kid": kid, "crit": crit}), "j-2")
                .map(|_| ())
                .unwrap_err();
            assert_eq!(refused.code, "invalid_grant", "{crit}");
            assert!(refused.description.contains("crit"), "{crit}");
        }
    }

    #[test]
    fn form_errors_are_oauth_errors() {
        let registry = Registry::compile(&toml::from_str("").unwrap()).unwrap();
        let jtis = JtiCache::default();
        let run = |body: &str| {
            check(body.as_bytes(), &registry, "http://x/", 0, &jtis)
                .unwrap_err()
                .code
        };
        assert_eq!(run(""), "invalid_request");
        assert_eq!(
            run("grant_type=client_credentials"),
            "unsupported_grant_type"
        );
        assert_eq!(
            run("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"),
            "invalid_request"
        );
        assert_eq!(
            run("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=x.y"),
            "invalid_grant"
        );
        assert_eq!(run("grant_type=a&grant_type=b"), "invalid_request");
    }
}
