//! Keys, configs and records for the tests.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use tollbu_audit::{AuditConfig, CheckpointSigner, Decision, Pseudonymiser, Record};

pub const ORIGIN: &str = "tollbu.example/test/replica-0";

/// Key material kept apart from the log directory, as in production.
#[derive(Debug)]
pub struct Keys {
    dir: PathBuf,
    _owned: Option<tempfile::TempDir>,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new()
    }
}

impl Keys {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let pem = SigningKey::from_bytes(&[42u8; 32])
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap();
        std::fs::write(tmp.path().join("signing.pem"), pem.as_bytes()).unwrap();
        std::fs::write(
            tmp.path().join("pseudonym.key"),
            format!("{}\n", "5a".repeat(32)),
        )
        .unwrap();
        Self {
            dir: tmp.path().to_path_buf(),
            _owned: Some(tmp),
        }
    }
    /// Keys written earlier by [`Keys::new`] (used by the crash test's child process).
    pub fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            _owned: None,
        }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn signing(&self) -> PathBuf {
        self.dir.join("signing.pem")
    }
    pub fn pseudonym(&self) -> PathBuf {
        self.dir.join("pseudonym.key")
    }
    pub fn config(&self, log_dir: &Path) -> AuditConfig {
        AuditConfig::new(log_dir, ORIGIN, self.signing(), self.pseudonym())
    }
    pub fn pseudonymiser(&self) -> Pseudonymiser {
        Pseudonymiser::from_key_file(&self.pseudonym()).unwrap()
    }
    /// The log's own key, as `tollbu audit prune --signing-key` loads it.
    pub fn signer(&self) -> CheckpointSigner {
        CheckpointSigner::from_pem_file(&self.signing(), ORIGIN).unwrap()
    }
}

/// A tool's report that fails and says `needle`.
pub fn assert_fails_saying(r: &tollbu_audit::tooling::Report, needle: &str) {
    assert!(!r.ok, "passed:\n{}", r.text);
    assert!(
        r.text.contains(needle),
        "expected `{needle}` in:\n{}",
        r.text
    );
}

/// A closed log in a new temporary directory holding records `0..n` of [`record`], and its
/// verifier key.
pub fn closed_log(keys: &Keys, n: u64) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = tollbu_audit::AuditLog::open(keys.config(dir.path())).unwrap();
    let ps = keys.pseudonymiser();
    for i in 0..n {
        log.append_blocking(record(i, &ps)).unwrap();
    }
    let vkey = log.verifier_key();
    log.shutdown().unwrap();
    (dir, vkey)
}

/// Synthetic national id for person `p` (not a real number; check digits are irrelevant here).
pub fn person(p: u64) -> String {
    format!("{:011}", 10_000_000_000 + p)
}

pub fn record(i: u64, pseudonymiser: &Pseudonymiser) -> Record {
    Record {
        time: format!(
            "2026-03-{:02}T10:00:{:02}.{:03}Z",
            1 + (i / 1000) % 28,
            i % 60,
            i % 1000
        ),
        request_id: format!("req-{i}"),
        trace_id: Some(format!("{i:032x}")),
        consumer: Some(format!("0192:91000000{}", i % 3)),
        client_id: Some("client-a".into()),
        service: if i.is_multiple_of(2) {
            "folkeregister"
        } else {
            "skatt"
        }
        .into(),
        operation: "read".into(),
        path_template: Some("/persons/{id}".into()),
        subject: Some(pseudonymiser.pseudonym(&person(i % 7))),
        purpose: Some("loan-application".into()),
        legal_basis: Some("consent".into()),
        grant_id: Some("grant-1".into()),
        decision: if i.is_multiple_of(5) {
            Decision::Deny
        } else {
            Decision::Allow
        },
        reason: i.is_multiple_of(5).then(|| "deny.no_consent".to_string()),
        upstream_status: (!i.is_multiple_of(5)).then_some(200),
        latency_us: 1000 + i,
        fields_released: if i.is_multiple_of(5) {
            vec![]
        } else {
            vec!["name".into(), "address".into()]
        },
        ..Record::default()
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Copies a log directory as it is on disk, files and subdirectories.
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
