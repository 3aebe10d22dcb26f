//! The issuer's TOML configuration: which clients exist, with which keys and
//! scopes, which delegations and citizen consents are registered.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::DevkitError;

/// Access-token lifetime when the config does not say (Maskinporten's default).
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 120;

/// The whole issuer configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Lifetime of issued access tokens, seconds.
    #[serde(default = "default_lifetime")]
    pub token_lifetime_secs: u64,
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    #[serde(default)]
    pub delegations: Vec<DelegationConfig>,
    #[serde(default)]
    pub consents: Vec<ConsentConfig>,
}

/// A registered client (an integration in Maskinporten's terms).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub client_id: String,
    /// The organisation number the client belongs to; becomes `consumer`.
    pub consumer_org: String,
    /// Scopes this client may ask for.
    pub scopes: Vec<String>,
    pub keys: Vec<ClientKeyConfig>,
}

/// One public key a client signs its grants with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientKeyConfig {
    pub kid: String,
    /// A `PUBLIC KEY` PEM file, relative to the config file's directory.
    #[serde(default)]
    pub public_key_path: Option<PathBuf>,
    /// The PEM itself; filled in from `public_key_path` when the config is
    /// loaded, so a loaded config no longer depends on the file system.
    #[serde(default)]
    pub public_key_pem: Option<String>,
}

/// An Altinn-style delegation: `from_org` lets `to_org` (a supplier) fetch
/// tokens on its behalf for `scopes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegationConfig {
    pub from_org: String,
    pub to_org: String,
    pub scopes: Vec<String>,
}

/// A citizen's consent, as Altinn would hold it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentConfig {
    pub id: String,
    /// The consenting person's national identity number (11 digits).
    pub from_pid: String,
    /// The organisation number the consent is given to.
    pub to_org: String,
    pub resource: String,
    #[serde(default = "default_actions")]
    pub action: Vec<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// RFC 3339.
    pub consented: String,
    /// RFC 3339.
    pub valid_to: String,
}

fn default_lifetime() -> u64 {
    DEFAULT_TOKEN_LIFETIME_SECS
}

fn default_actions() -> Vec<String> {
    vec!["consent".to_owned()]
}

impl IssuerConfig {
    /// Reads a config file; key paths are resolved against its directory.
    pub fn from_file(path: &Path) -> Result<Self, DevkitError> {
        let text = std::fs::read_to_string(path).map_err(|e| DevkitError::io(path, e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_toml_str(&text, |p| {
            let full = base.join(p);
            std::fs::read_to_string(&full).map_err(|e| DevkitError::io(full, e))
        })
    }

    /// Parses config text; `read_key` turns each `public_key_path` into PEM
    /// text (from disk, or from material compiled into the binary).
    pub fn from_toml_str(
        text: &str,
        read_key: impl Fn(&Path) -> Result<String, DevkitError>,
    ) -> Result<Self, DevkitError> {
        let mut config: Self = toml::from_str(text)?;
        for client in &mut config.clients {
            for key in &mut client.keys {
                if key.public_key_pem.is_none() {
                    let Some(path) = &key.public_key_path else {
                        return Err(DevkitError::Config(format!(
                            "key `{}` of client `{}` has neither public_key_path nor public_key_pem",
                            key.kid, client.client_id
                        )));
                    };
                    key.public_key_pem = Some(read_key(path)?);
                }
            }
        }
        Ok(config)
    }
}
