//! The demo issuer config and the dev key set from `certs-example/`,
//! compiled into the binary so `tollbu demo` runs from any directory.
//!
//! DEMO AND TESTS ONLY: every key here is public. Nothing in the gateway may
//! fall back to these outside the `demo` command and tests.

use std::path::Path;

use crate::error::DevkitError;
use crate::issuer::IssuerConfig;

/// `crates/devkit/demo/issuer.toml`.
pub const ISSUER_TOML: &str = include_str!("../demo/issuer.toml");
/// The issuer's RSA signing key (PKCS#8 PEM).
pub const ISSUER_SIGNING_KEY_PEM: &str =
    include_str!("../../../certs-example/issuer-signing.key.pem");

/// The demo CA that signed every certificate below.
pub const CA_PEM: &str = include_str!("../../../certs-example/ca.pem");
/// Gateway server certificate for `localhost` and `127.0.0.1`.
pub const GATEWAY_CERT_PEM: &str = include_str!("../../../certs-example/gateway.pem");
pub const GATEWAY_KEY_PEM: &str = include_str!("../../../certs-example/gateway.key.pem");
/// Registry server certificate for `localhost`, `127.0.0.1`, `registry.localhost`.
pub const REGISTRY_CERT_PEM: &str = include_str!("../../../certs-example/registry.pem");
pub const REGISTRY_KEY_PEM: &str = include_str!("../../../certs-example/registry.key.pem");
/// Client certificate of Demo Welfare Agency (310000019).
pub const AGENCY_WELFARE_CERT_PEM: &str = include_str!("../../../certs-example/agency-welfare.pem");
pub const AGENCY_WELFARE_KEY_PEM: &str =
    include_str!("../../../certs-example/agency-welfare.key.pem");
/// Client certificate of Demo Bank (310000027).
pub const AGENCY_BANK_CERT_PEM: &str = include_str!("../../../certs-example/agency-bank.pem");
pub const AGENCY_BANK_KEY_PEM: &str = include_str!("../../../certs-example/agency-bank.key.pem");
/// The audit log's Ed25519 checkpoint signing key (PKCS#8 PEM).
pub const AUDIT_SIGNING_KEY_PEM: &str =
    include_str!("../../../certs-example/audit-signing.key.pem");
/// The audit log's pseudonymisation key: 64 hex characters and a newline.
pub const AUDIT_PSEUDONYM_KEY: &str = include_str!("../../../certs-example/audit-pseudonym.key");

/// Consent of person 0 to Demo Bank: resource `demo-kyc-population`.
pub const CONSENT_KYC_PERSON0: &str = "6f1d2c3b-8a4e-4b7f-9c21-5e0a7d3b9f10";
/// Consent of person 0 to Demo Bank: `demo-income-data`, `inntektsaar` 2022.
pub const CONSENT_INCOME_PERSON0: &str = "8c4b7e21-3d5f-4a69-b0e8-2f7c1a9d6e32";
/// Consent of person 1 to Demo Bank: resource `demo-kyc-population`.
pub const CONSENT_KYC_PERSON1: &str = "2a9e5f17-6c0b-4d83-a1f4-7b3e8d2c5a41";
/// Consent of person 1 to Demo Bank for `demo-income-data`, expired 2025-06-30.
pub const CONSENT_EXPIRED_PERSON1: &str = "e3b0c442-98fc-4c14-9afb-f4c8996fb924";

macro_rules! client {
    ($id:literal) => {
        (
            $id,
            concat!($id, "-1"),
            include_str!(concat!("../../../certs-example/clients/", $id, ".key.pem")),
            include_str!(concat!("../../../certs-example/clients/", $id, ".pub.pem")),
        )
    };
}

/// (client id, kid, private key PEM, public key PEM) of every demo client.
pub const CLIENTS: &[(&str, &str, &str, &str)] = &[
    client!("demo-welfare"),
    client!("demo-bank"),
    client!("demo-tax"),
    client!("demo-vendor"),
    client!("demo-suspended"),
];

/// The private key PEM and kid of demo client `client_id`.
pub fn client_key(client_id: &str) -> Option<(&'static str, &'static str)> {
    CLIENTS
        .iter()
        .find(|(id, ..)| *id == client_id)
        .map(|(_, kid, key, _)| (*kid, *key))
}

/// [`ISSUER_TOML`] parsed, its key paths answered from the embedded keys.
pub fn issuer_config() -> Result<IssuerConfig, DevkitError> {
    IssuerConfig::from_toml_str(ISSUER_TOML, |path: &Path| {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        CLIENTS
            .iter()
            .find(|(id, ..)| name.strip_suffix(".pub.pem") == Some(*id))
            .map(|(.., public)| (*public).to_owned())
            .ok_or_else(|| DevkitError::Config(format!("no embedded key for `{}`", path.display())))
    })
}
