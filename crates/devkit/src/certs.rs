//! Dev-only keys and certificates: a demo CA, server certificates for the
//! gateway and the registries, client certificates for two example
//! agencies, the issuer's and the demo clients' RSA keys, and the audit log's
//! keys. For demos and tests only: anything written here is meant to be
//! committed and therefore public.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use rand::RngCore as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use crate::error::DevkitError;
use crate::jwt::RsaSigningKey;

/// The demo clients registered in the demo issuer config; each gets
/// `clients/<id>.key.pem` and `clients/<id>.pub.pem`.
pub const DEMO_CLIENTS: &[&str] = &[
    "demo-welfare",
    "demo-bank",
    "demo-tax",
    "demo-vendor",
    "demo-suspended",
];
/// Example agencies with client certificates: (file stem, name, organisation number).
pub const AGENCIES: &[(&str, &str, &str)] = &[
    ("agency-welfare", "Demo Welfare Agency", "310000019"),
    ("agency-bank", "Demo Bank", "310000027"),
];
/// Certificates are valid this long, so committed files keep working.
const VALIDITY_DAYS: i64 = 3650;
/// X.520 serialNumber, where Norwegian enterprise certificates carry the
/// organisation number.
const OID_SERIAL_NUMBER: &[u64] = &[2, 5, 4, 5];
/// X.520 organizationIdentifier (`NTRNO-<orgno>` in eIDAS form).
const OID_ORGANIZATION_IDENTIFIER: &[u64] = &[2, 5, 4, 97];

/// Writes the whole dev key set into `dir` (created if missing), replacing
/// what is there. See `certs-example/README.md` for what each file is.
pub fn generate(dir: &Path) -> Result<(), DevkitError> {
    std::fs::create_dir_all(dir.join("clients")).map_err(|e| DevkitError::io(dir, e))?;
    let not_before = OffsetDateTime::now_utc() - Duration::days(1);
    let not_after = not_before + Duration::days(VALIDITY_DAYS);

    let ca_key = KeyPair::generate()?;
    write_secret(&dir.join("ca.key.pem"), &ca_key.serialize_pem())?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = dn(&[
        (DnType::CommonName, "Tollbu Demo CA - NOT FOR PRODUCTION"),
        (DnType::OrganizationName, "Tollbu demo"),
    ]);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;
    write_public(&dir.join("ca.pem"), &ca.pem())?;

    let leaf =
        |stem: &str, sans: &[&str], names: &[(DnType, &str)], usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate()?;
            let mut params =
                CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
            params.distinguished_name = dn(names);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![usage];
            params.use_authority_key_identifier_extension = true;
            params.not_before = not_before;
            params.not_after = not_after;
            let cert = params.signed_by(&key, &ca)?;
            write_public(&dir.join(format!("{stem}.pem")), &cert.pem())?;
            write_secret(&dir.join(format!("{stem}.key.pem")), &key.serialize_pem())
        };
    leaf(
        "gateway",
        &["localhost", "127.0.0.1"],
        &[
            (DnType::CommonName, "localhost"),
            (DnType::OrganizationName, "Tollbu demo gateway"),
        ],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    leaf(
        "registry",
        &["localhost", "127.0.0.1", "registry.localhost"],
        &[
            (DnType::CommonName, "registry.localhost"),
            (DnType::OrganizationName, "Tollbu demo registry"),
        ],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    for (stem, name, orgno) in AGENCIES {
        let org_id = format!("NTRNO-{orgno}");
        leaf(
            stem,
            &[],
            &[
                (DnType::CommonName, name),
                (DnType::OrganizationName, name),
                (DnType::CustomDnType(OID_SERIAL_NUMBER.to_vec()), orgno),
                (
                    DnType::CustomDnType(OID_ORGANIZATION_IDENTIFIER.to_vec()),
                    &org_id,
                ),
                (DnType::CountryName, "NO"),
            ],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
    }

    let issuer_key = RsaSigningKey::generate()?;
    write_secret(
        &dir.join("issuer-signing.key.pem"),
        &pem_encode("PRIVATE KEY", &issuer_key.pkcs8_der()?),
    )?;
    for client in DEMO_CLIENTS {
        let key = RsaSigningKey::generate()?;
        write_secret(
            &dir.join(format!("clients/{client}.key.pem")),
            &pem_encode("PRIVATE KEY", &key.pkcs8_der()?),
        )?;
        write_public(
            &dir.join(format!("clients/{client}.pub.pem")),
            &pem_encode("PUBLIC KEY", &key.spki_der()?),
        )?;
    }

    // PKCS#8 v1 (no embedded public key): OpenSSL 3.0 cannot read the v2
    // form ed25519-dalek writes by default, and every reader accepts v1.
    let audit_key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let audit_pem = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: audit_key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
    .map_err(|e| DevkitError::Crypto(format!("ed25519 pkcs8 encoding failed: {e}")))?;
    write_secret(&dir.join("audit-signing.key.pem"), &audit_pem)?;
    let mut pseudonym_key = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut pseudonym_key);
    let hex: String = pseudonym_key.iter().map(|b| format!("{b:02x}")).collect();
    write_secret(&dir.join("audit-pseudonym.key"), &format!("{hex}\n"))?;
    Ok(())
}

/// PEM text (RFC 7468): base64 in 64-character lines between the labels.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn dn(names: &[(DnType, &str)]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for (ty, value) in names {
        dn.push(ty.clone(), *value);
    }
    dn
}

fn write_public(path: &Path, text: &str) -> Result<(), DevkitError> {
    std::fs::write(path, text).map_err(|e| DevkitError::io(path, e))
}

/// Private keys are written owner-readable only, even demo ones, so that a
/// copied key directory starts out with the permissions real keys need.
fn write_secret(path: &Path, text: &str) -> Result<(), DevkitError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| DevkitError::io(path, e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| DevkitError::io(path, e))
}
