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
    pub exp: i64,
    pub iat: i64,
    #[serde(default)]
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
    if raw.id.is_empty() || raw.id.len() > 128 {
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

/// `client_id` is recorded and passed to the registry in a header: printable ASCII only, so that
/// neither the audit record nor the header the registry relies on can be bent by control
/// characters (a header that cannot carry the value would silently go missing).
pub fn check_client_id(client_id: &str) -> Result<(), TokenFault> {
    let printable = client_id.bytes().all(|b| b.is_ascii_graphic());
    if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_CHARS || !printable {
        return Err(TokenFault::BadClaims);
    }
    Ok(())
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

/// `jti` must be present, non-empty and of sane length.
pub fn check_jti(jti: &str) -> Result<(), TokenFault> {
    if jti.is_empty() || jti.chars().count() > MAX_JTI_CHARS {
        return Err(TokenFault::BadClaims);
    }
    Ok(())
}
