//! Response builders shared by the stand-ins: JSON bodies and RFC 9457
//! problem documents, each status and content type declared once here.

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

pub(crate) const JSON: &str = "application/json";
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";
/// Prefix of the `type` URI of every problem document the devkit writes.
pub const PROBLEM_TYPE_BASE: &str = "https://tollbu.example/devkit/problems/";

pub(crate) fn bytes(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON response; values built with `json!` always serialise.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    bytes(status, JSON, Bytes::from(body))
}

/// Like [`json`], marked as not to be cached (token responses, RFC 6749 5.1): `Cache-Control:
/// no-store`, and `Pragma: no-cache` for HTTP/1.0 caches.
pub(crate) fn json_no_store(
    status: StatusCode,
    value: &serde_json::Value,
) -> Response<Full<Bytes>> {
    let mut response = json(status, value);
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// An RFC 9457 problem document; `kind` becomes the last segment of `type`.
pub(crate) fn problem(status: StatusCode, kind: &str, detail: &str) -> Response<Full<Bytes>> {
    let body = json!({
        "type": format!("{PROBLEM_TYPE_BASE}{kind}"),
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    bytes(
        status,
        PROBLEM_JSON,
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
}

/// 413 for a request body over the servers' limit (or one that could not be read).
pub(crate) fn body_too_large() -> Response<Full<Bytes>> {
    problem(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body-too-large",
        "request body too large or unreadable",
    )
}

pub(crate) fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        &format!("only {allow} is supported here"),
    );
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

pub(crate) fn not_found(path: &str) -> Response<Full<Bytes>> {
    problem(
        StatusCode::NOT_FOUND,
        "unknown-path",
        &format!("no resource at `{path}`"),
    )
}

/// `GET /debug/echo-headers`: the request headers as a JSON object, so tests
/// can see what a proxy in front forwarded. Repeated headers are joined with
/// ", " as RFC 9110 allows; non-UTF-8 values are shown lossily.
pub(crate) fn echo_headers(headers: &http::HeaderMap) -> Response<Full<Bytes>> {
    let mut map = serde_json::Map::new();
    for name in headers.keys() {
        let joined = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        map.insert(name.as_str().to_owned(), serde_json::Value::String(joined));
    }
    json(StatusCode::OK, &serde_json::Value::Object(map))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn token_responses_are_marked_not_to_be_cached() {
        let response = json_no_store(StatusCode::OK, &json!({"access_token": "t"}));
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        assert_eq!(response.headers()[PRAGMA], "no-cache");
    }
}
