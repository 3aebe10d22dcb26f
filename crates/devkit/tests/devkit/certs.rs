use std::sync::Arc;

use http::StatusCode;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tollbu_devkit::{certs, people, start_population};

use crate::http::send_with_roots;

/// A freshly generated key set in its own temporary directory. Not shared
/// through a static: nextest runs every test in a process of its own, and
/// processes sharing one directory removed each other's files mid-test.
fn generated() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    certs::generate(dir.path()).unwrap();
    dir
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn roots(ca_pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    roots
}

fn server_config(
    dir: &std::path::Path,
    stem: &str,
    client_ca: Option<&str>,
) -> Arc<rustls::ServerConfig> {
    let chain =
        vec![CertificateDer::from_pem_slice(read(dir, &format!("{stem}.pem")).as_bytes()).unwrap()];
    let key =
        PrivateKeyDer::from_pem_slice(read(dir, &format!("{stem}.key.pem")).as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)),
                provider(),
            )
            .build()
            .unwrap(),
        ),
    };
    Arc::new(builder.with_single_cert(chain, key).unwrap())
}

#[test]
fn generate_writes_every_file() {
    let dir = tempfile::tempdir().unwrap();
    certs::generate(dir.path()).unwrap();
    let mut expected = vec![
        "ca.pem".to_owned(),
        "ca.key.pem".into(),
        "gateway.pem".into(),
        "gateway.key.pem".into(),
        "registry.pem".into(),
        "registry.key.pem".into(),
        "agency-welfare.pem".into(),
        "agency-welfare.key.pem".into(),
        "agency-bank.pem".into(),
        "agency-bank.key.pem".into(),
        "issuer-signing.key.pem".into(),
        "audit-signing.key.pem".into(),
        "audit-pseudonym.key".into(),
    ];
    for client in certs::DEMO_CLIENTS {
        expected.push(format!("clients/{client}.key.pem"));
        expected.push(format!("clients/{client}.pub.pem"));
    }
    for name in &expected {
        assert!(dir.path().join(name).is_file(), "{name} missing");
    }
    let issuer_key = read(dir.path(), "issuer-signing.key.pem");
    assert!(issuer_key.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let pseudonym = read(dir.path(), "audit-pseudonym.key");
    assert_eq!(pseudonym.len(), 65);
    assert!(
        pseudonym[..64]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert!(pseudonym.ends_with('\n'));
    use ed25519_dalek::pkcs8::DecodePrivateKey as _;
    ed25519_dalek::SigningKey::from_pkcs8_pem(&read(dir.path(), "audit-signing.key.pem")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("ca.key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "private keys must not be group/world readable"
        );
    }
}

#[tokio::test]
async fn generated_keys_work_with_the_issuer() {
    let dir = &generated();
    let client_pem = read(dir.path(), "clients/demo-tax.key.pem");
    let config = tollbu_devkit::IssuerConfig::from_toml_str(
        r#"
[[clients]]
client_id = "demo-tax"
consumer_org = "310000035"
scopes = ["demo:income"]
keys = [{ kid = "k1", public_key_path = "clients/demo-tax.pub.pem" }]
"#,
        |p| Ok(std::fs::read_to_string(dir.path().join(p)).unwrap()),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = tollbu_devkit::start_issuer(
        listener,
        config,
        &read(dir.path(), "issuer-signing.key.pem"),
    )
    .await
    .unwrap();
    let token = tollbu_devkit::request_token(&tollbu_devkit::TokenRequest {
        issuer_url: issuer.issuer_url(),
        client_id: "demo-tax".into(),
        key_pem: client_pem,
        kid: "k1".into(),
        scope: "demo:income".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(!token.access_token.is_empty());
}

#[tokio::test]
async fn tls_handshake_with_the_generated_ca() {
    let dir = &generated();
    let ca = read(dir.path(), "ca.pem");

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry = start_population(listener, Some(server_config(dir.path(), "registry", None)))
        .await
        .unwrap();
    assert!(registry.base_url().starts_with("https://127.0.0.1:"));
    let pid = people::example_pid(5);
    for host in [
        registry.base_url(),
        format!("https://localhost:{}", registry.addr().port()),
    ] {
        let reply = send_with_roots(
            http::Method::GET,
            &format!("{host}/persons/{pid}"),
            &[],
            "",
            roots(&ca),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["pid"], pid);
    }

    // A client that trusts another CA refuses the server.
    let other = tempfile::tempdir().unwrap();
    certs::generate(other.path()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&read(other.path(), "ca.pem")))
        .with_no_client_auth();
    let stream = tokio::net::TcpStream::connect(registry.addr())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    assert!(
        tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(name, stream)
            .await
            .is_err()
    );
    registry.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_with_an_agency_certificate() {
    let dir = &generated();
    let ca = read(dir.path(), "ca.pem");
    let server = server_config(dir.path(), "gateway", Some(&ca));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let server_task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let tls = acceptor.accept(stream).await.unwrap();
        let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        peer.as_ref().to_vec()
    });

    let chain = vec![
        CertificateDer::from_pem_slice(read(dir.path(), "agency-welfare.pem").as_bytes()).unwrap(),
    ];
    let key = PrivateKeyDer::from_pem_slice(read(dir.path(), "agency-welfare.key.pem").as_bytes())
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&ca))
        .with_client_auth_cert(chain.clone(), key)
        .unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let _tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, stream)
        .await
        .unwrap();
    let seen = server_task.await.unwrap();
    assert_eq!(seen, chain[0].as_ref());
    // The organisation number is in the subject, where enterprise certificates carry it.
    assert!(seen.windows(9).any(|w| w == b"310000019"));
}
