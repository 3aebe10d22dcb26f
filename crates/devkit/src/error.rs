//! The one error type of the devkit.

use std::path::PathBuf;

/// Everything that can go wrong in the devkit. Servers never return these to
/// HTTP clients: request handlers answer with a status and a JSON body instead.
///
/// Each message names its cause itself, and none is also chained as a
/// `source`: printed with its chain (as the binary does) it would appear twice.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevkitError {
    /// A file could not be read or written.
    #[error("cannot access `{path}`: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A socket operation failed (bind, local address, accept).
    #[error("socket error: {0}")]
    Socket(std::io::Error),
    /// The issuer configuration is not valid TOML or has the wrong shape.
    #[error("invalid issuer config: {0}")]
    ConfigSyntax(toml::de::Error),
    /// The issuer configuration parsed but its content is inconsistent.
    #[error("invalid issuer config: {0}")]
    Config(String),
    /// A PEM file did not hold the expected key or certificate.
    #[error("invalid key material: {0}")]
    Key(String),
    /// A cryptographic operation failed (key generation, signing).
    #[error("crypto operation failed: {0}")]
    Crypto(String),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Certificate(rcgen::Error),
    /// TLS client or server setup failed.
    #[error("tls setup failed: {0}")]
    Tls(rustls::Error),
    /// An HTTP request to a remote issuer failed before a response arrived.
    #[error("http request to `{url}` failed: {reason}")]
    Http { url: String, reason: String },
    /// A remote issuer answered, but not with what was expected.
    #[error("unexpected response from `{url}`: {reason}")]
    BadResponse { url: String, reason: String },
    /// The issuer refused the grant with an RFC 6749 error.
    #[error("token request refused ({status}): `{error}`: {description}")]
    TokenRefused {
        status: u16,
        error: String,
        description: String,
    },
    /// A URL given by the caller could not be used.
    #[error("invalid url `{0}`")]
    Url(String),
}

impl DevkitError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            error: source,
        }
    }
}

impl From<toml::de::Error> for DevkitError {
    fn from(error: toml::de::Error) -> Self {
        Self::ConfigSyntax(error)
    }
}

impl From<rcgen::Error> for DevkitError {
    fn from(error: rcgen::Error) -> Self {
        Self::Certificate(error)
    }
}

impl From<rustls::Error> for DevkitError {
    fn from(error: rustls::Error) -> Self {
        Self::Tls(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_printed_once_with_the_chain() {
        let errors = [
            DevkitError::io(
                "/nowhere/key.pem",
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ),
            DevkitError::Socket(std::io::Error::from(std::io::ErrorKind::AddrInUse)),
            DevkitError::from(rustls::Error::General("no".into())),
        ];
        for error in errors {
            assert!(std::error::Error::source(&error).is_none(), "{error}");
        }
    }
}
