//! Setup shared by the timing examples: a log directory under `base` with throwaway keys.

use std::path::Path;

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use tollbu_audit::AuditConfig;

/// Writes a fixed (test-only) signing key `k.pem` and pseudonym key `p.key` into `base` and
/// returns the default configuration of a log in `base/log` named `origin`.
pub fn config_in(base: &Path, origin: &str) -> AuditConfig {
    std::fs::create_dir_all(base).unwrap();
    let pem = SigningKey::from_bytes(&[1u8; 32])
        .to_pkcs8_pem(LineEnding::LF)
        .unwrap();
    std::fs::write(base.join("k.pem"), pem.as_bytes()).unwrap();
    std::fs::write(base.join("p.key"), "11".repeat(32)).unwrap();
    AuditConfig::new(
        base.join("log"),
        origin,
        base.join("k.pem"),
        base.join("p.key"),
    )
}
