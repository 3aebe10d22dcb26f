//! Server-side TLS: certificate, key and optional client-certificate
//! verification (mTLS) from PEM files, with ALPN for HTTP/2 and HTTP/1.1.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate or key file that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read `{0}`: {1}")]
    Read(String, std::io::Error),
    #[error("`{0}` holds no PEM certificate")]
    NoCertificate(String),
    /// A PEM section that does not decode: a file caught half-written, or damaged. Dropping it
    /// would serve a chain without its intermediate, or trust one CA fewer, with no error.
    #[error("`{path}`: PEM section {section} cannot be read ({reason})")]
    BadPem {
        path: String,
        section: usize,
        reason: String,
    },
    #[error("`{0}` holds no usable PEM private key")]
    NoKey(String),
    #[error("`{0}`: {reason}", reason = describe(.1))]
    Rustls(String, rustls::Error),
    /// A certificate the server sends (the first in the file, or an intermediate after it) is
    /// outside its validity period.
    #[error("`{path}`: {which} {problem} (valid from {not_before} until {not_after})")]
    NotValidNow {
        path: String,
        which: String,
        problem: &'static str,
        not_before: String,
        not_after: String,
    },
    #[error("`{0}`: {1} is not a well-formed X.509 certificate")]
    Malformed(String, String),
    #[error("client CA `{0}`: {1}")]
    ClientVerifier(String, String),
}

/// Paths of the server's TLS material.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate issued by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

/// Reads every certificate in a PEM file; any section that does not decode is an error.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::Read(path.display().to_string(), e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .enumerate()
        .map(|(index, cert)| {
            cert.map_err(|e| TlsError::BadPem {
                path: path.display().to_string(),
                section: index + 1,
                reason: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.display().to_string()));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| TlsError::Read(path.display().to_string(), e))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| TlsError::NoKey(path.display().to_string()))
}

/// rustls's words for a key that belongs to another certificate are its enum's names.
fn describe(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            "the private key does not match the certificate".into()
        }
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown) => {
            "cannot tell whether the private key matches the certificate".into()
        }
        other => other.to_string(),
    }
}

/// Refuses a served chain with a certificate that has expired or is not valid yet: clients
/// would refuse it, so serving it would fail every handshake. An intermediate counts as much as
/// the server's own certificate.
pub fn check_chain_validity(
    path: &Path,
    chain: &[CertificateDer<'_>],
    now: time::OffsetDateTime,
) -> Result<(), TlsError> {
    for (index, cert) in chain.iter().enumerate() {
        let which = if index == 0 {
            "the certificate".to_owned()
        } else {
            format!("certificate {} of the chain", index + 1)
        };
        check_validity(path, &which, cert, now)?;
    }
    Ok(())
}

fn check_validity(
    path: &Path,
    which: &str,
    cert: &CertificateDer<'_>,
    now: time::OffsetDateTime,
) -> Result<(), TlsError> {
    let name = || path.display().to_string();
    let (not_before, not_after) =
        validity(cert).ok_or_else(|| TlsError::Malformed(name(), which.to_owned()))?;
    let problem = if now < not_before {
        "is not valid yet"
    } else if now > not_after {
        "has expired"
    } else {
        return Ok(());
    };
    Err(TlsError::NotValidNow {
        path: name(),
        which: which.to_owned(),
        problem,
        not_before: utc(not_before),
        not_after: utc(not_after),
    })
}

fn utc(at: time::OffsetDateTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    at.format(&format).unwrap_or_else(|_| at.to_string())
}

/// One DER element: its tag, its contents, and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

/// `notBefore` and `notAfter` of a certificate (RFC 5280 §4.1.2.5).
fn validity(cert: &[u8]) -> Option<(time::OffsetDateTime, time::OffsetDateTime)> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, certificate, _) = der_element(cert)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = der_element(certificate)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] version (optional), serialNumber, signature, issuer, then validity.
    let (tag, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after;
    }
    for _ in 0..3 {
        rest = der_element(rest)?.2;
    }
    let (SEQUENCE, validity, _) = der_element(rest)? else {
        return None;
    };
    let (tag, first, after) = der_element(validity)?;
    let not_before = der_time(tag, first)?;
    let (tag, second, _) = der_element(after)?;
    Some((not_before, der_time(tag, second)?))
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn der_time(tag: u8, text: &[u8]) -> Option<time::OffsetDateTime> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<u16>().ok();
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy = number(0..2)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
        }
        (0x18, 14) => (number(0..4)?, 4),
        _ => return None,
    };
    let field =
        |i: usize| number(rest + 2 * i..rest + 2 * i + 2).and_then(|n| u8::try_from(n).ok());
    let date = time::Date::from_calendar_date(
        i32::from(year),
        time::Month::try_from(field(0)?).ok()?,
        field(1)?,
    )
    .ok()?;
    let at = time::Time::from_hms(field(2)?, field(3)?, field(4)?).ok()?;
    Some(time::PrimitiveDateTime::new(date, at).assume_utc())
}

/// Builds the listener's rustls configuration.
pub fn server_config(files: &ServerTlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls("server protocol versions".into(), e))?;
    let builder = match &files.client_ca {
        Some(ca_path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in load_certs(ca_path)? {
                roots
                    .add(cert)
                    .map_err(|e| TlsError::Rustls(ca_path.display().to_string(), e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| {
                    TlsError::ClientVerifier(ca_path.display().to_string(), e.to_string())
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let certs = load_certs(&files.cert)?;
    check_chain_validity(&files.cert, &certs, time::OffsetDateTime::now_utc())?;
    let mut config = builder
        .with_single_cert(certs, load_private_key(&files.key)?)
        .map_err(|e| TlsError::Rustls(files.cert.display().to_string(), e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use time::{Duration, OffsetDateTime};

    /// A self-signed certificate for `localhost` valid from `from` until `until`, written as
    /// `gateway.pem` and `gateway.key.pem` in `dir`.
    fn write_cert(dir: &Path, from: OffsetDateTime, until: OffsetDateTime) -> ServerTlsFiles {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = from;
        params.not_after = until;
        let cert = params.self_signed(&key).unwrap();
        let files = ServerTlsFiles {
            cert: dir.join("gateway.pem"),
            key: dir.join("gateway.key.pem"),
            client_ca: None,
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }

    fn date(year: i32) -> OffsetDateTime {
        time::Date::from_calendar_date(year, time::Month::March, 4)
            .unwrap()
            .with_hms(5, 6, 7)
            .unwrap()
            .assume_utc()
    }

    #[test]
    fn a_certificate_within_its_validity_period_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let files = write_cert(dir.path(), now - Duration::days(1), now + Duration::days(1));
        server_config(&files).unwrap();
    }

    #[test]
    fn an_expired_certificate_is_refused_with_its_file_and_dates() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_cert(dir.path(), date(2001), date(2002));
        let error = server_config(&files).err().unwrap().to_string();
        assert!(error.contains("gateway.pem"), "{error}");
        assert!(error.contains("has expired"), "{error}");
        assert!(
            error.contains("valid from 2001-03-04 05:06:07 UTC until 2002-03-04 05:06:07 UTC"),
            "{error}"
        );
    }

    #[test]
    fn a_certificate_not_valid_yet_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        // GeneralizedTime from 2050 on, UTCTime before.
        let files = write_cert(dir.path(), date(2049), date(2051));
        let error = server_config(&files).err().unwrap().to_string();
        assert!(error.contains("is not valid yet"), "{error}");
        assert!(error.contains("2049-03-04 05:06:07 UTC"), "{error}");
        assert!(error.contains("2051-03-04 05:06:07 UTC"), "{error}");
    }

    #[test]
    fn a_key_of_another_certificate_is_named_as_such_once() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let files = write_cert(dir.path(), now - Duration::days(1), now + Duration::days(1));
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&files.key, other.serialize_pem()).unwrap();
        let error = server_config(&files).err().unwrap().to_string();
        assert!(
            error.ends_with("gateway.pem`: the private key does not match the certificate"),
            "{error}"
        );
    }

    /// A leaf issued by an intermediate valid from `from` until `until`, both written to
    /// `chain.pem` (leaf first), the leaf's key to `chain.key.pem`, the intermediate alone to
    /// `ca.pem`.
    fn write_chain(dir: &Path, from: OffsetDateTime, until: OffsetDateTime) -> ServerTlsFiles {
        let now = OffsetDateTime::now_utc();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.not_before = from;
        ca_params.not_after = until;
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(1);
        let leaf = params.signed_by(&key, &ca).unwrap();
        let files = ServerTlsFiles {
            cert: dir.join("chain.pem"),
            key: dir.join("chain.key.pem"),
            client_ca: Some(dir.join("ca.pem")),
        };
        std::fs::write(&files.cert, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        files
    }

    #[test]
    fn a_chain_or_ca_bundle_caught_half_written_is_refused_not_shortened() {
        let dir = tempfile::tempdir().unwrap();
        let now = OffsetDateTime::now_utc();
        let files = write_chain(dir.path(), now - Duration::days(1), now + Duration::days(1));
        server_config(&files).unwrap();
        let whole = std::fs::read(&files.cert).unwrap();
        std::fs::write(&files.cert, &whole[..whole.len() - 200]).unwrap();
        let error = server_config(&files).err().unwrap().to_string();
        assert!(
            error.contains("chain.pem`: PEM section 2 cannot be read"),
            "{error}"
        );
        std::fs::write(&files.cert, &whole).unwrap();
        let ca_path = dir.path().join("ca.pem");
        let ca = std::fs::read(&ca_path).unwrap();
        let bundle = [&ca[..], &ca[..ca.len() - 100]].concat();
        std::fs::write(&ca_path, bundle).unwrap();
        let error = server_config(&files).err().unwrap().to_string();
        assert!(
            error.contains("ca.pem`: PEM section 2 cannot be read"),
            "{error}"
        );
    }

    #[test]
    fn an_expired_intermediate_in_the_served_chain_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = write_chain(dir.path(), date(2001), date(2002));
        files.client_ca = None;
        let error = server_config(&files).err().unwrap().to_string();
        assert!(
            error.contains("chain.pem`: certificate 2 of the chain has expired"),
            "{error}"
        );
    }
}
