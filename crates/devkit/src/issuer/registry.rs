//! The issuer's configuration checked and indexed for lookups per grant.

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tollbu_policy::ids::{is_valid_orgno, is_valid_pid};

use crate::error::DevkitError;
use crate::issuer::config::IssuerConfig;
use crate::jwt::RsaVerifyingKey;

/// Authority of the ISO 6523 identifiers Maskinporten puts in `consumer`.
pub(crate) const ISO6523_AUTHORITY: &str = "iso6523-actorid-upis";
/// Prefix Altinn writes before a person's identity number in consent `from`.
pub const PERSON_URN_PREFIX: &str = "urn:altinn:person:identifier-no:";

pub(crate) struct Registry {
    pub(crate) token_lifetime_secs: i64,
    clients: HashMap<String, Client>,
    delegations: Vec<Delegation>,
    consents: HashMap<String, Consent>,
}

pub(crate) struct Client {
    pub(crate) org: String,
    pub(crate) scopes: HashSet<String>,
    pub(crate) keys: Vec<(String, RsaVerifyingKey)>,
}

struct Delegation {
    from_org: String,
    to_org: String,
    scopes: HashSet<String>,
}

pub(crate) struct Consent {
    pub(crate) from_pid: String,
    pub(crate) to_org: String,
    pub(crate) consented: OffsetDateTime,
    pub(crate) valid_to: OffsetDateTime,
    /// The `authorization_details` entry exactly as tokens carry it.
    pub(crate) entry: Value,
}

/// `{"authority":"iso6523-actorid-upis","ID":"0192:<orgno>"}`.
pub(crate) fn org_identity(orgno: &str) -> Value {
    json!({"authority": ISO6523_AUTHORITY, "ID": format!("0192:{orgno}")})
}

impl Registry {
    pub(crate) fn compile(config: &IssuerConfig) -> Result<Self, DevkitError> {
        let bad = |msg: String| Err(DevkitError::Config(msg));
        let token_lifetime_secs = match i64::try_from(config.token_lifetime_secs) {
            Ok(secs) if (1..=86_400).contains(&secs) => secs,
            _ => return bad("token_lifetime_secs must be between 1 and 86400".into()),
        };

        let mut clients = HashMap::new();
        for c in &config.clients {
            if !is_valid_orgno(&c.consumer_org) {
                return bad(format!(
                    "client `{}`: invalid organisation number `{}`",
                    c.client_id, c.consumer_org
                ));
            }
            if c.keys.is_empty() {
                return bad(format!("client `{}` has no keys", c.client_id));
            }
            let mut keys: Vec<(String, RsaVerifyingKey)> = Vec::new();
            for k in &c.keys {
                if keys.iter().any(|(kid, _)| kid == &k.kid) {
                    return bad(format!(
                        "client `{}`: duplicate kid `{}`",
                        c.client_id, k.kid
                    ));
                }
                let pem = k.public_key_pem.as_deref().unwrap_or_default();
                let key = RsaVerifyingKey::from_pem(pem).map_err(|e| {
                    DevkitError::Config(format!("client `{}` key `{}`: {e}", c.client_id, k.kid))
                })?;
                keys.push((k.kid.clone(), key));
            }
            let client = Client {
                org: c.consumer_org.clone(),
                scopes: c.scopes.iter().cloned().collect(),
                keys,
            };
            if clients.insert(c.client_id.clone(), client).is_some() {
                return bad(format!("duplicate client `{}`", c.client_id));
            }
        }

        let mut delegations = Vec::new();
        for d in &config.delegations {
            for org in [&d.from_org, &d.to_org] {
                if !is_valid_orgno(org) {
                    return bad(format!("delegation: invalid organisation number `{org}`"));
                }
            }
            delegations.push(Delegation {
                from_org: d.from_org.clone(),
                to_org: d.to_org.clone(),
                scopes: d.scopes.iter().cloned().collect(),
            });
        }

        let mut consents = HashMap::new();
        for c in &config.consents {
            if !is_valid_pid(&c.from_pid) {
                return bad(format!(
                    "consent `{}`: invalid identity number `{}`",
                    c.id, c.from_pid
                ));
            }
            if !is_valid_orgno(&c.to_org) {
                return bad(format!(
                    "consent `{}`: invalid organisation number `{}`",
                    c.id, c.to_org
                ));
            }
            let parse = |field: &str, text: &str| {
                OffsetDateTime::parse(text, &Rfc3339).map_err(|e| {
                    DevkitError::Config(format!(
                        "consent `{}`: {field} `{text}` is not RFC 3339: {e}",
                        c.id
                    ))
                })
            };
            let consented = parse("consented", &c.consented)?;
            let valid_to = parse("valid_to", &c.valid_to)?;
            if valid_to <= consented {
                return bad(format!(
                    "consent `{}`: valid_to is not after consented",
                    c.id
                ));
            }
            let entry = json!({
                "type": "urn:altinn:consent",
                "id": c.id,
                "from": format!("{PERSON_URN_PREFIX}{}", c.from_pid),
                "to": org_identity(&c.to_org),
                "consented": c.consented,
                "validTo": c.valid_to,
                "consentRights": [{
                    "action": c.action,
                    "resource": [{"type": "urn:altinn:resource", "value": c.resource}],
                    "metadata": c.metadata,
                }],
            });
            let consent = Consent {
                from_pid: c.from_pid.clone(),
                to_org: c.to_org.clone(),
                consented,
                valid_to,
                entry,
            };
            if consents.insert(c.id.clone(), consent).is_some() {
                return bad(format!("duplicate consent `{}`", c.id));
            }
        }

        Ok(Self {
            token_lifetime_secs,
            clients,
            delegations,
            consents,
        })
    }

    pub(crate) fn client(&self, client_id: &str) -> Option<&Client> {
        self.clients.get(client_id)
    }

    pub(crate) fn consent(&self, id: &str) -> Option<&Consent> {
        self.consents.get(id)
    }

    /// True when `from_org` has delegated every one of `scopes` to `to_org`.
    pub(crate) fn delegation_covers<'a>(
        &self,
        from_org: &str,
        to_org: &str,
        mut scopes: impl Iterator<Item = &'a str>,
    ) -> bool {
        let granted: HashSet<&str> = self
            .delegations
            .iter()
            .filter(|d| d.from_org == from_org && d.to_org == to_org)
            .flat_map(|d| d.scopes.iter().map(String::as_str))
            .collect();
        scopes.all(|s| granted.contains(s))
    }
}
