//! The Maskinporten access-token claims we rely on, parsed strictly:
//! types are checked, organisation numbers carry valid check digits, and
//! `authorization_details` entries are understood or the token is refused.

use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tollbu_policy::ids;
use tollbu_policy::{Consent, ConsentRight};

use crate::error::TokenFault;

/// The ISO 6523 authority Maskinporten uses for Norwegian organisations.
const ISO6523_AUTHORITY: &str = "iso6523-actorid-upis";
const CONSENT_TYPE: &str = "urn:altinn:consent";
const SYSTEM_USER_TYPE: &str = "urn:altinn:systemuser";
const PERSON_URN_PREFIX: &str = "urn:altinn:person:identifier-no:";
const ALTINN_RESOURCE_TYPE: &str = "urn:altinn:resource";
const MAX_JTI_CHARS: usize = 256;

/// Claims as they arrive; typed so that a wrong type is a refusal.
#[derive(Debug, Deserialize)]
pub struct RawClaims {
    pub iss: String,
    pub scope: String,
    pub client_id: String,
    pub consumer: OrgClaim,
    #[serde(default)]
    pub supplier: Option<OrgClaim>,
    #[serde(default)]
    pub delegation_source: Option<String>,
    /// NumericDates (RFC 7519 §2) may carry a fraction: `exp` is rounded down to the second,
    /// `iat` and `nbf` up, so a fraction never lengthens the window a token is accepted in.
    #[serde(deserialize_with = "numeric_date_floor")]
    pub exp: i64,
    #[serde(deserialize_with = "numeric_date_ceil")]
    pub iat: i64,
    #[serde(default, deserialize_with = "optional_numeric_date_ceil")]
    pub nbf: Option<i64>,
    pub jti: String,
    #[serde(default)]
    pub aud: Option<Audience>,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub authorization_details: Option<Vec<Value>>,
    /// Present only in end-user-restricted tokens: the call must concern this person.
    #[serde(default)]
    pub pid: Option<String>,
    /// Confirmation (RFC 7800): what the presenter must prove it holds. Any JSON value, `null`
    /// included, counts as present; [`certificate_binding`] decides what is acceptable.
    #[serde(default, deserialize_with = "present")]
    pub cnf: Option<Value>,
}

/// A member that is present whatever its value: `null` is `Some(Value::Null)`, not absent.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// Largest fractional NumericDate accepted: 2^53, below which every whole second is exact in an
/// f64 (year 285 million; the lifetime checks refuse far less absurd values anyway).
const MAX_FRACTIONAL_DATE: f64 = 9_007_199_254_740_992.0;

/// A NumericDate as JSON gives it: a whole number of seconds (any i64, as before fractions were
/// accepted), or a finite non-negative number with a fraction, rounded by `round`. Anything else
/// (numbers beyond i64, negative or huge fractions) is `None`, and the claims do not deserialize
/// (`bad_claims`), as for strings and other non-numbers.
fn numeric_date(number: &serde_json::Number, round: fn(f64) -> f64) -> Option<i64> {
    if let Some(whole) = number.as_i64() {
        return Some(whole);
    }
    let seconds = number.as_f64().filter(|_| number.is_f64())?;
    if !seconds.is_finite() || !(0.0..MAX_FRACTIONAL_DATE).contains(&seconds) {
        return None;
    }
    // Finite and in range: the rounded value is a whole number below 2^53, exact in an i64.
    #[allow(clippy::cast_possible_truncation)]
    Some(round(seconds) as i64)
}

fn rounded<E: serde::de::Error>(
    number: &serde_json::Number,
    round: fn(f64) -> f64,
) -> Result<i64, E> {
    numeric_date(number, round).ok_or_else(|| {
        E::custom("a NumericDate must be a whole number of seconds or a non-negative fraction")
    })
}

fn numeric_date_floor<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    rounded(&serde_json::Number::deserialize(deserializer)?, f64::floor)
}

fn numeric_date_ceil<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    rounded(&serde_json::Number::deserialize(deserializer)?, f64::ceil)
}

/// As [`numeric_date_ceil`]; `null` is an absent claim, as it was before fractions.
fn optional_numeric_date_ceil<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    Option::<serde_json::Number>::deserialize(deserializer)?
        .map(|number| rounded(&number, f64::ceil))
        .transpose()
}

/// `aud` may be one string or a list (RFC 7519 §4.1.3).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(one) => one == wanted,
            Audience::Many(many) => many.iter().any(|a| a == wanted),
        }
    }
}

/// `{"authority": "iso6523-actorid-upis", "ID": "0192:<orgno>"}`; `id` is
/// accepted as a spelling of `ID`, as seen in the wild.
#[derive(Debug, Deserialize)]
pub struct OrgClaim {
    pub authority: String,
    #[serde(rename = "ID", alias = "id")]
    pub id: String,
}

impl OrgClaim {
    /// The organisation number, or a refusal for any other scheme or a bad check digit.
    pub fn orgno(&self) -> Result<String, TokenFault> {
        if self.authority != ISO6523_AUTHORITY {
            return Err(TokenFault::BadConsumer);
        }
        ids::orgno_from_iso6523(&self.id)
            .map(str::to_owned)
            .ok_or(TokenFault::BadConsumer)
    }
}

/// What `authorization_details` held, split by type.
#[derive(Debug, Default)]
pub struct AuthorizationDetails {
    pub consents: Vec<Consent>,
    /// System-user entries are recorded but not yet authorised on.
    pub system_users: Vec<Value>,
}

/// Parses every entry; an unknown type or a malformed consent refuses the token.
pub fn parse_authorization_details(entries: &[Value]) -> Result<AuthorizationDetails, TokenFault> {
    let mut details = AuthorizationDetails::default();
    for entry in entries {
        match entry.get("type").and_then(Value::as_str) {
            Some(CONSENT_TYPE) => details.consents.push(parse_consent(entry)?),
            Some(SYSTEM_USER_TYPE) => details.system_users.push(entry.clone()),
            _ => return Err(TokenFault::BadAuthorizationDetails),
        }
    }
    Ok(details)
}

#[derive(Deserialize)]
struct RawConsent {
    id: String,
    from: String,
    to: OrgClaim,
    consented: String,
    #[serde(rename = "validTo")]
    valid_to: String,
    #[serde(rename = "consentRights", default)]
    consent_rights: Vec<RawConsentRight>,
}

#[derive(Deserialize)]
struct RawConsentRight {
    #[serde(default)]
    action: Vec<String>,
    #[serde(default)]
    resource: Vec<RawResource>,
    #[serde(default, alias = "metaData")]
    metadata: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
struct RawResource {
    #[serde(rename = "type")]
    kind: String,
    value: String,
}

fn parse_consent(entry: &Value) -> Result<Consent, TokenFault> {
    let raw: RawConsent =
        serde_json::from_value(entry.clone()).map_err(|_| TokenFault::BadAuthorizationDetails)?;
    let from = raw
        .from
        .strip_prefix(PERSON_URN_PREFIX)
        .filter(|pid| ids::is_valid_pid(pid))
        .ok_or(TokenFault::BadAuthorizationDetails)?
        .to_owned();
    let to = raw
        .to
        .orgno()
        .map_err(|_| TokenFault::BadAuthorizationDetails)?;
    let consented = rfc3339_seconds(&raw.consented)?;
    let valid_to = rfc3339_seconds(&raw.valid_to)?;
    if !is_recordable_id(&raw.id, MAX_CONSENT_ID_CHARS) {
        return Err(TokenFault::BadAuthorizationDetails);
    }
    let mut rights = Vec::with_capacity(raw.consent_rights.len());
    for right in raw.consent_rights {
        let mut resources = Vec::with_capacity(right.resource.len());
        for resource in right.resource {
            if resource.kind != ALTINN_RESOURCE_TYPE {
                return Err(TokenFault::BadAuthorizationDetails);
            }
            resources.push(resource.value);
        }
        let mut metadata = std::collections::BTreeMap::new();
        for (key, value) in right.metadata.unwrap_or_default() {
            let text = match value {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(TokenFault::BadAuthorizationDetails),
            };
            metadata.insert(key, text);
        }
        rights.push(ConsentRight {
            actions: right.action,
            resources,
            metadata,
        });
    }
    Ok(Consent {
        id: raw.id,
        from,
        to,
        consented,
        valid_to,
        rights,
    })
}

fn rfc3339_seconds(text: &str) -> Result<i64, TokenFault> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(OffsetDateTime::unix_timestamp)
        .map_err(|_| TokenFault::BadAuthorizationDetails)
}

/// Longest `client_id` accepted; Maskinporten's are UUIDs or short names.
const MAX_CLIENT_ID_CHARS: usize = 256;
/// Longest consent `id` accepted; Altinn's are UUIDs.
const MAX_CONSENT_ID_CHARS: usize = 128;

/// `client_id` is recorded and passed to the registry in a header: see [`is_recordable_id`].
pub fn check_client_id(client_id: &str) -> Result<(), TokenFault> {
    if !is_recordable_id(client_id, MAX_CLIENT_ID_CHARS) {
        return Err(TokenFault::BadClaims);
    }
    Ok(())
}

/// An identifier from the token that the audit record (and a header to the registry) carries
/// verbatim: printable ASCII only, so that neither can be bent by control characters (a header
/// that cannot carry the value would silently go missing), and no identity number, which the
/// record holds only as a pseudonym.
fn is_recordable_id(id: &str, max_chars: usize) -> bool {
    !id.is_empty()
        && id.len() <= max_chars
        && id.bytes().all(|b| b.is_ascii_graphic())
        && !ids::contains_pid(id)
}

/// `scope` is scope tokens separated by single spaces (RFC 6749 §3.3); each token printable
/// ASCII other than `"` and `\`. Any other whitespace is not a separator but a malformed token.
pub fn scopes(scope: &str) -> Result<Vec<String>, TokenFault> {
    let valid = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    };
    let tokens: Vec<&str> = scope.split(' ').collect();
    if !tokens.iter().all(|t| valid(t)) {
        return Err(TokenFault::BadClaims);
    }
    Ok(tokens.into_iter().map(str::to_owned).collect())
}

/// `pid` of an end-user-restricted token: a national identity number with valid check digits.
pub fn person(pid: Option<&str>) -> Result<Option<String>, TokenFault> {
    match pid {
        None => Ok(None),
        Some(p) if ids::is_valid_pid(p) => Ok(Some(p.to_owned())),
        Some(_) => Err(TokenFault::BadClaims),
    }
}

/// The one confirmation method the gateway can check: the SHA-256 thumbprint of the client
/// certificate of the TLS connection (RFC 8705 §3.1).
const X5T_S256: &str = "x5t#S256";

/// `cnf` (RFC 7800 §3.1): absent, or an object whose only member is `x5t#S256`, a base64url
/// (unpadded) SHA-256 thumbprint of the certificate the token is bound to (RFC 8705 §3.1).
/// A `cnf` that is not an object, holds no method, or holds a malformed thumbprint is
/// `bad_claims`; one naming a method the gateway cannot check possession of (`jkt` of a
/// DPoP-bound token, `jwk`, `jku`, `kid`, anything else), alone or beside `x5t#S256`, is
/// `unsupported_confirmation`: accepting it as a bearer token would ignore its binding.
pub fn certificate_binding(cnf: Option<&Value>) -> Result<Option<[u8; 32]>, TokenFault> {
    use base64::Engine;
    let Some(cnf) = cnf else {
        return Ok(None);
    };
    let methods = cnf.as_object().ok_or(TokenFault::BadClaims)?;
    if methods.keys().any(|method| method != X5T_S256) {
        return Err(TokenFault::UnsupportedConfirmation);
    }
    let thumbprint = methods
        .get(X5T_S256)
        .ok_or(TokenFault::BadClaims)?
        .as_str()
        .ok_or(TokenFault::BadClaims)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(thumbprint)
        .map_err(|_| TokenFault::BadClaims)?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map(Some)
        .map_err(|_| TokenFault::BadClaims)
}

/// `jti` must be present, non-empty and of sane length.
pub fn check_jti(jti: &str) -> Result<(), TokenFault> {
    if jti.is_empty() || jti.chars().count() > MAX_JTI_CHARS {
        return Err(TokenFault::BadClaims);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn date(json: &str, round: fn(f64) -> f64) -> Option<i64> {
        numeric_date(&serde_json::from_str(json).unwrap(), round)
    }

    #[test]
    fn numeric_dates_may_carry_a_fraction_rounded_to_the_safe_side() {
        assert_eq!(date("1700000000", f64::floor), Some(1_700_000_000));
        assert_eq!(date("-1", f64::floor), Some(-1), "whole numbers as before");
        assert_eq!(date("1700000000.5", f64::floor), Some(1_700_000_000));
        assert_eq!(date("1700000000.5", f64::ceil), Some(1_700_000_001));
        assert_eq!(date("1700000000.0", f64::ceil), Some(1_700_000_000));
        assert_eq!(date("1.7e9", f64::floor), Some(1_700_000_000));
        for absurd in [
            "1e300",
            "-0.5",
            "-1700000000.5",
            "9007199254740992.0",
            "18446744073709551615",
        ] {
            assert_eq!(date(absurd, f64::floor), None, "{absurd}");
        }
    }

    #[test]
    fn fractional_time_claims_deserialize_and_others_do_not() {
        let claims = |times: &str| {
            serde_json::from_str::<RawClaims>(&format!(
                r#"{{"iss":"i","scope":"a:b","client_id":"c","consumer":{{"authority":"iso6523-actorid-upis","ID":"0192:310000019"}},"jti":"j",{times}}}"#
            ))
        };
        let parsed = claims(r#""exp":1100.9,"iat":1000.1,"nbf":1000.5"#).unwrap();
        assert_eq!(
            (parsed.exp, parsed.iat, parsed.nbf),
            (1100, 1001, Some(1001))
        );
        let parsed = claims(r#""exp":1100,"iat":1000,"nbf":null"#).unwrap();
        assert_eq!(parsed.nbf, None);
        assert!(claims(r#""exp":1100,"iat":1000"#).unwrap().nbf.is_none());
        for bad in [
            r#""exp":"1100","iat":1000"#,
            r#""exp":1e300,"iat":1000"#,
            r#""exp":1100,"iat":-0.5"#,
            r#""exp":1100,"iat":1000,"nbf":"0""#,
            r#""exp":null,"iat":1000"#,
            r#""iat":1000"#,
        ] {
            assert!(claims(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_recorded_verbatim_are_printable_and_carry_no_identity_number() {
        for bad in [
            "",
            "abc\ndef",
            "café",
            "05885624741",
            "case-058856-24741",
            " c-1",
        ] {
            assert_eq!(check_client_id(bad), Err(TokenFault::BadClaims), "{bad:?}");
            assert!(!is_recordable_id(bad, MAX_CONSENT_ID_CHARS), "{bad:?}");
        }
        for good in [
            "c-1",
            "0b6a3c5e-7f5a-4a1e-9a43-2b7f1e0c9d11",
            "oidc_310000019",
        ] {
            assert_eq!(check_client_id(good), Ok(()), "{good:?}");
            assert!(is_recordable_id(good, MAX_CONSENT_ID_CHARS), "{good:?}");
        }
        assert!(!is_recordable_id(&"a".repeat(129), MAX_CONSENT_ID_CHARS));
    }

    fn binding(cnf: &str) -> Result<Option<[u8; 32]>, TokenFault> {
        let claims: RawClaims = serde_json::from_str(&format!(
            r#"{{"iss":"i","scope":"a:b","client_id":"c","consumer":{{"authority":"iso6523-actorid-upis","ID":"0192:310000019"}},"jti":"j","exp":1100,"iat":1000{cnf}}}"#
        ))
        .unwrap();
        certificate_binding(claims.cnf.as_ref())
    }

    #[test]
    fn cnf_binds_to_a_certificate_thumbprint_or_the_token_is_refused() {
        // SHA-256 of "abc", base64url without padding: 43 characters.
        let abc: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(b"abc").into();
        let thumbprint = "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0";
        assert_eq!(binding(""), Ok(None), "no cnf: a bearer token");
        assert_eq!(
            binding(&format!(r#","cnf":{{"x5t#S256":"{thumbprint}"}}"#)),
            Ok(Some(abc))
        );
        for malformed in [
            r#","cnf":null"#.to_owned(),
            r#","cnf":"x5t#S256""#.to_owned(),
            format!(r#","cnf":["{thumbprint}"]"#),
            r#","cnf":{}"#.to_owned(),
            r#","cnf":{"x5t#S256":null}"#.to_owned(),
            r#","cnf":{"x5t#S256":42}"#.to_owned(),
            r#","cnf":{"x5t#S256":""}"#.to_owned(),
            // Padded, standard base64, hex, one byte short, one byte long.
            format!(r#","cnf":{{"x5t#S256":"{thumbprint}="}}"#),
            r#","cnf":{"x5t#S256":"ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0"}"#.to_owned(),
            format!(r#","cnf":{{"x5t#S256":"{}"}}"#, hex::encode(abc)),
            format!(r#","cnf":{{"x5t#S256":"{}"}}"#, &thumbprint[..42]),
            format!(r#","cnf":{{"x5t#S256":"{thumbprint}AA"}}"#),
            // The last character's unused bits set: not the canonical encoding.
            format!(r#","cnf":{{"x5t#S256":"{}b"}}"#, &thumbprint[..42]),
        ] {
            assert_eq!(
                binding(&malformed),
                Err(TokenFault::BadClaims),
                "{malformed}"
            );
        }
        for unsupported in [
            r#","cnf":{"jkt":"0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}"#.to_owned(),
            r#","cnf":{"jwk":{"kty":"EC","crv":"P-256","x":"a","y":"b"}}"#.to_owned(),
            r#","cnf":{"jku":"https://client.example/jwks","kid":"k1"}"#.to_owned(),
            r#","cnf":{"kid":"k1"}"#.to_owned(),
            r#","cnf":{"x5t":"abc"}"#.to_owned(),
            format!(
                r#","cnf":{{"x5t#S256":"{thumbprint}","jkt":"0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}}"#
            ),
        ] {
            assert_eq!(
                binding(&unsupported),
                Err(TokenFault::UnsupportedConfirmation),
                "{unsupported}"
            );
        }
    }
}
