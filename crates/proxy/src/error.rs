//! The one rescue: every failure on the request path becomes a problem+json
//! answer (RFC 9457) with a stable reason code and a short public text.
//!
//! Details of the cause go to the logs only; the client sees the code, the
//! status and a fixed sentence, never an internal message.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

/// Why a request was refused or failed, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// Path or request line the gateway will not forward.
    BadPath,
    /// Malformed request (headers, purpose, …).
    BadRequest(&'static str),
    /// No bearer token.
    MissingToken,
    /// Token failed validation; the sub-reason is a stable code.
    InvalidToken(TokenFault),
    /// The gateway holds no key of the token's issuer (its key set could not be fetched), so it
    /// cannot check the token, which may be good: 503 with `Retry-After`, and no RFC 6750 error,
    /// which would tell the client to throw the token away.
    KeysUnavailable { retry_after_secs: u64 },
    /// Token lacks a scope the grant needs: the policy's `scope_missing`,
    /// with RFC 6750's `insufficient_scope` in `WWW-Authenticate`.
    InsufficientScope { message: String },
    /// The policy engine said no; code and sentence come from the policy.
    Denied { code: &'static str, message: String },
    /// Service not configured.
    UnknownService,
    /// Service known, but no operation matches this method and path.
    UnknownOperation,
    /// The query names a parameter the operation does not declare: it was
    /// not part of the decision, so it is not forwarded either.
    UndeclaredQueryParameter,
    /// Request or response body larger than allowed.
    PayloadTooLarge,
    /// Request head (request line and headers) larger than `max_header_bytes`.
    HeadersTooLarge,
    /// Too many requests for this consumer and grant.
    RateLimited {
        retry_after_secs: u64,
        limit: u32,
        window_secs: u32,
    },
    /// Upstream refused or dropped the connection.
    UpstreamUnreachable,
    /// Upstream answered with something the grant does not allow through.
    UpstreamUnfilterable,
    /// Upstream did not answer in time.
    UpstreamTimeout,
    /// Upstream answered with a body larger than allowed.
    UpstreamTooLarge,
    /// The audit record could not be made durable; nothing is released.
    AuditUnavailable,
    /// Anything else; the cause is logged, never shown.
    Internal,
}

/// Stable sub-codes for `invalid_token`, so clients and tests can tell
/// causes apart without parsing text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenFault {
    Malformed,
    TooLarge,
    AlgorithmNotAllowed,
    ForbiddenHeader,
    UnknownCritical,
    NestedToken,
    UntrustedIssuer,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    TooOld,
    WrongAudience,
    BadClaims,
    BadConsumer,
    BadSupplier,
    BadAuthorizationDetails,
    /// `cnf` names a proof of possession the gateway cannot check (DPoP's `jkt`, `jwk`, …).
    UnsupportedConfirmation,
    /// The token is bound to a client certificate (`cnf.x5t#S256`, RFC 8705 §3) that the
    /// request's connection did not present.
    CertificateMismatch,
}

impl TokenFault {
    /// The stable code put in the problem body's `token_error`.
    pub fn code(self) -> &'static str {
        match self {
            TokenFault::Malformed => "malformed",
            TokenFault::TooLarge => "too_large",
            TokenFault::AlgorithmNotAllowed => "algorithm_not_allowed",
            TokenFault::ForbiddenHeader => "forbidden_header",
            TokenFault::UnknownCritical => "unknown_critical_header",
            TokenFault::NestedToken => "nested_token",
            TokenFault::UntrustedIssuer => "untrusted_issuer",
            TokenFault::UnknownKey => "unknown_key",
            TokenFault::BadSignature => "bad_signature",
            TokenFault::Expired => "expired",
            TokenFault::NotYetValid => "not_yet_valid",
            TokenFault::TooOld => "too_old",
            TokenFault::WrongAudience => "wrong_audience",
            TokenFault::BadClaims => "bad_claims",
            TokenFault::BadConsumer => "bad_consumer",
            TokenFault::BadSupplier => "bad_supplier",
            TokenFault::BadAuthorizationDetails => "bad_authorization_details",
            TokenFault::UnsupportedConfirmation => "unsupported_confirmation",
            TokenFault::CertificateMismatch => "certificate_mismatch",
        }
    }

    fn description(self) -> &'static str {
        match self {
            TokenFault::Malformed => "the token is not a well-formed signed JWT",
            TokenFault::TooLarge => "the token is larger than allowed",
            TokenFault::AlgorithmNotAllowed => {
                "the token's algorithm is not allowed for its issuer"
            }
            TokenFault::ForbiddenHeader => "the token carries a key or key reference in its header",
            TokenFault::UnknownCritical => {
                "the token names a critical header extension we do not support"
            }
            TokenFault::NestedToken => "nested or encrypted tokens are not accepted",
            TokenFault::UntrustedIssuer => "the token's issuer is not trusted",
            TokenFault::UnknownKey => "the token's key id is not in the issuer's key set",
            TokenFault::BadSignature => "the token's signature does not verify",
            TokenFault::Expired => "the token has expired",
            TokenFault::NotYetValid => "the token is not valid yet",
            TokenFault::TooOld => "the token was issued too long ago",
            TokenFault::WrongAudience => "the token is not meant for this gateway",
            TokenFault::BadClaims => "the token's claims are missing or of the wrong type",
            TokenFault::BadConsumer => "the token's consumer is not a valid organisation",
            TokenFault::BadSupplier => "the token's supplier is not a valid organisation",
            TokenFault::BadAuthorizationDetails => {
                "the token's authorization_details are malformed"
            }
            TokenFault::UnsupportedConfirmation => {
                "the token is bound to a proof of possession this gateway cannot check"
            }
            TokenFault::CertificateMismatch => {
                "the token is bound to a client certificate this connection did not present"
            }
        }
    }
}

/// Why token verification gave no caller: the token's fault, or the gateway's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The token is not acceptable; the client needs another.
    Token(TokenFault),
    /// The gateway holds no key of the token's issuer, so it cannot check the token; `retry_after`
    /// is how long until a request may fetch the issuer's key set again.
    KeysUnavailable { retry_after: Duration },
}

impl VerifyError {
    /// The stable code, for traces.
    pub fn code(self) -> &'static str {
        match self {
            VerifyError::Token(fault) => fault.code(),
            VerifyError::KeysUnavailable { .. } => "keys_unavailable",
        }
    }
}

impl From<TokenFault> for VerifyError {
    fn from(fault: TokenFault) -> Self {
        VerifyError::Token(fault)
    }
}

impl From<VerifyError> for Problem {
    fn from(error: VerifyError) -> Self {
        match error {
            VerifyError::Token(fault) => Problem::InvalidToken(fault),
            // Whole seconds, rounded up, and at least one: `Retry-After: 0` invites a busy loop.
            VerifyError::KeysUnavailable { retry_after } => Problem::KeysUnavailable {
                retry_after_secs: (retry_after.as_secs()
                    + u64::from(retry_after.subsec_nanos() > 0))
                .max(1),
            },
        }
    }
}

/// One row of the public catalogue of problems: code, status, text.
pub struct ProblemInfo {
    pub code: &'static str,
    pub status: StatusCode,
    pub title: &'static str,
}

impl Problem {
    /// Code, status and title; the single table the docs are checked against.
    pub fn info(&self) -> ProblemInfo {
        let (code, status, title) = match self {
            Problem::BadPath => (
                "bad_path",
                StatusCode::BAD_REQUEST,
                "The request path is not acceptable",
            ),
            Problem::BadRequest(_) => (
                "bad_request",
                StatusCode::BAD_REQUEST,
                "The request is malformed",
            ),
            Problem::MissingToken => (
                "missing_token",
                StatusCode::UNAUTHORIZED,
                "A bearer token is required",
            ),
            Problem::InvalidToken(_) => (
                "invalid_token",
                StatusCode::UNAUTHORIZED,
                "The bearer token is not valid",
            ),
            Problem::KeysUnavailable { .. } => (
                "keys_unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                "The keys of the token's issuer are not available; try again later",
            ),
            Problem::InsufficientScope { .. } => (
                "scope_missing",
                StatusCode::FORBIDDEN,
                "The token lacks a scope this operation requires",
            ),
            Problem::Denied { code, .. } => (
                *code,
                StatusCode::FORBIDDEN,
                "The data-sharing policy does not allow this request",
            ),
            Problem::UnknownService => {
                ("unknown_service", StatusCode::NOT_FOUND, "No such service")
            }
            Problem::UnknownOperation => (
                "unknown_operation",
                StatusCode::NOT_FOUND,
                "The service has no such operation",
            ),
            Problem::UndeclaredQueryParameter => (
                "undeclared_query_parameter",
                StatusCode::BAD_REQUEST,
                "The query names a parameter this operation does not take",
            ),
            Problem::PayloadTooLarge => (
                "payload_too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                "The body is larger than allowed",
            ),
            Problem::HeadersTooLarge => (
                "headers_too_large",
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "The request headers are larger than allowed",
            ),
            Problem::RateLimited { .. } => (
                "rate_limited",
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
            ),
            Problem::UpstreamUnreachable => (
                "upstream_unreachable",
                StatusCode::BAD_GATEWAY,
                "The registry could not be reached",
            ),
            Problem::UpstreamUnfilterable => (
                "upstream_unfilterable",
                StatusCode::BAD_GATEWAY,
                "The registry's answer cannot be minimised to the allowed fields",
            ),
            Problem::UpstreamTimeout => (
                "upstream_timeout",
                StatusCode::GATEWAY_TIMEOUT,
                "The registry did not answer in time",
            ),
            Problem::UpstreamTooLarge => (
                "upstream_too_large",
                StatusCode::BAD_GATEWAY,
                "The registry's answer is larger than allowed",
            ),
            Problem::AuditUnavailable => (
                "audit_unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                "The request could not be recorded, so it was not served",
            ),
            Problem::Internal => (
                "internal",
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
            ),
        };
        ProblemInfo {
            code,
            status,
            title,
        }
    }

    /// The stable `code` of the problem body.
    pub fn code(&self) -> &'static str {
        self.info().code
    }

    /// The reason recorded in the audit log and counted in metrics: the `code`, and for a refused
    /// token its `token_error` after a dot (`invalid_token.certificate_mismatch`), so that the log
    /// alone tells a stolen or forged token from an expired one. The sub-codes are a fixed set,
    /// so the metrics' label set stays bounded.
    pub fn reason(&self) -> String {
        match self {
            Problem::InvalidToken(fault) => format!("{}.{}", self.code(), fault.code()),
            _ => self.code().to_owned(),
        }
    }

    fn detail(&self) -> Option<String> {
        match self {
            Problem::InvalidToken(fault) => Some(fault.description().to_owned()),
            Problem::Denied { message, .. } | Problem::InsufficientScope { message } => {
                Some(message.clone())
            }
            Problem::BadRequest(why) => Some((*why).to_owned()),
            Problem::RateLimited {
                retry_after_secs, ..
            }
            | Problem::KeysUnavailable { retry_after_secs } => {
                Some(format!("retry after {retry_after_secs} s"))
            }
            _ => None,
        }
    }

    /// The HTTP answer: problem+json body, plus `WWW-Authenticate` for token
    /// problems (RFC 6750 §3) and `Retry-After` for rate limits and missing keys.
    pub fn to_response(&self, request_id: &str) -> Response<Full<Bytes>> {
        let info = self.info();
        let body = ProblemBody {
            r#type: format!("urn:tollbu:problem:{}", info.code),
            title: info.title,
            status: info.status.as_u16(),
            detail: self.detail(),
            code: info.code,
            token_error: match self {
                Problem::InvalidToken(fault) => Some(fault.code()),
                _ => None,
            },
            request_id,
        };
        let mut response = no_store_json(info.status, &body, PROBLEM_JSON);
        let headers = response.headers_mut();
        match self {
            Problem::MissingToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tollbu\""),
                );
            }
            Problem::InvalidToken(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tollbu\", error=\"invalid_token\""),
                );
            }
            Problem::InsufficientScope { .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer realm=\"tollbu\", error=\"insufficient_scope\"",
                    ),
                );
            }
            Problem::KeysUnavailable { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Problem::RateLimited {
                retry_after_secs,
                limit,
                window_secs,
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
                // draft-ietf-httpapi-ratelimit-headers: the policy, and what remains of it.
                if let Ok(policy) =
                    HeaderValue::from_str(&format!("\"grant\";q={limit};w={window_secs}"))
                {
                    headers.insert(HeaderName::from_static("ratelimit-policy"), policy);
                }
                if let Ok(state) =
                    HeaderValue::from_str(&format!("\"grant\";r=0;t={retry_after_secs}"))
                {
                    headers.insert(HeaderName::from_static("ratelimit"), state);
                }
            }
            _ => {}
        }
        if let Ok(value) = HeaderValue::from_str(request_id) {
            headers.insert(crate::headers::REQUEST_ID, value);
        }
        response
    }
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    r#type: String,
    title: &'static str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_error: Option<&'static str>,
    request_id: &'a str,
}

/// The media type of every problem answer (RFC 9457).
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// A JSON answer no cache keeps: problems, health, proofs and reload reports describe this moment.
/// Shared by the gateway's problems, the admin port's answers and its problems.
pub(crate) fn no_store_json<T: Serialize>(
    status: StatusCode,
    body: &T,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::TokenFault::{self, *};

    /// Every fault. The match below stops compiling when a variant is added and not listed here.
    const ALL: [TokenFault; 19] = [
        Malformed,
        TooLarge,
        AlgorithmNotAllowed,
        ForbiddenHeader,
        UnknownCritical,
        NestedToken,
        UntrustedIssuer,
        UnknownKey,
        BadSignature,
        Expired,
        NotYetValid,
        TooOld,
        WrongAudience,
        BadClaims,
        BadConsumer,
        BadSupplier,
        BadAuthorizationDetails,
        UnsupportedConfirmation,
        CertificateMismatch,
    ];

    #[test]
    fn every_token_error_code_is_distinct_and_listed_in_the_readme() {
        for fault in ALL {
            match fault {
                Malformed
                | TooLarge
                | AlgorithmNotAllowed
                | ForbiddenHeader
                | UnknownCritical
                | NestedToken
                | UntrustedIssuer
                | UnknownKey
                | BadSignature
                | Expired
                | NotYetValid
                | TooOld
                | WrongAudience
                | BadClaims
                | BadConsumer
                | BadSupplier
                | BadAuthorizationDetails
                | UnsupportedConfirmation
                | CertificateMismatch => {}
            }
        }
        let readme = include_str!("../../../README.md");
        let mut codes: Vec<&str> = ALL.iter().map(|fault| fault.code()).collect();
        for code in &codes {
            assert!(
                readme.contains(&format!("`{code}`")),
                "README.md does not list token_error `{code}`"
            );
        }
        let descriptions: std::collections::BTreeSet<&str> =
            ALL.iter().map(|fault| fault.description()).collect();
        assert_eq!(descriptions.len(), ALL.len(), "each fault has its own text");
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ALL.len(), "each fault has its own code");
    }

    /// A token the gateway cannot check for want of its issuer's keys is not called bad: 503
    /// with a whole, non-zero `Retry-After`, no RFC 6750 error, no `token_error`.
    #[tokio::test]
    async fn missing_keys_are_503_with_retry_after_and_no_token_error() {
        use super::{Problem, VerifyError};
        use http_body_util::BodyExt;
        use std::time::Duration;
        for (wait, secs) in [(0, 1), (1_200, 2), (10_000, 10)] {
            let problem = Problem::from(VerifyError::KeysUnavailable {
                retry_after: Duration::from_millis(wait),
            });
            assert_eq!(
                problem,
                Problem::KeysUnavailable {
                    retry_after_secs: secs
                }
            );
            let response = problem.to_response("r1");
            assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()["retry-after"], secs.to_string().as_str());
            assert!(response.headers().get("www-authenticate").is_none());
            let bytes = response
                .into_body()
                .collect()
                .await
                .map(|collected| collected.to_bytes())
                .unwrap_or_default();
            let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            assert_eq!(body["code"], "keys_unavailable");
            assert!(body.get("token_error").is_none(), "{body}");
            assert_eq!(problem.reason(), "keys_unavailable");
        }
        assert_eq!(
            Problem::from(VerifyError::Token(Expired)),
            Problem::InvalidToken(Expired)
        );
        let readme = include_str!("../../../README.md");
        assert!(
            readme.contains("`keys_unavailable` 503 with `Retry-After`"),
            "README.md lists keys_unavailable as a 503"
        );
    }

    /// The audit record and the metrics name the cause of a refused token; the answer's `code`
    /// stays `invalid_token`, with the cause in `token_error`.
    #[test]
    fn a_refused_tokens_reason_names_its_token_error() {
        use super::Problem;
        for fault in ALL {
            let problem = Problem::InvalidToken(fault);
            assert_eq!(problem.code(), "invalid_token");
            assert_eq!(problem.reason(), format!("invalid_token.{}", fault.code()));
        }
        assert_eq!(Problem::MissingToken.reason(), "missing_token");
        let denied = Problem::Denied {
            code: "no_grant",
            message: String::new(),
        };
        assert_eq!(denied.reason(), "no_grant");
    }
}
