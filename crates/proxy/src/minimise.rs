//! Data minimisation on the way out: a successful answer carries only the
//! fields the grant allows. An answer that cannot be filtered (not JSON)
//! under a restricting grant is refused, never passed through. A registry's
//! error answer becomes the gateway's own problem document with the registry's
//! status and problem `type`, never its free text; a redirect is refused. Of the
//! registry's headers only those describing the released body pass.

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap};
use serde_json::Value;
use tollbu_policy::FieldFilter;

use crate::error::Problem;

/// Registry headers a caller may see: they describe the body released. Everything else
/// (`Server`, `Set-Cookie`, `Location`, a registry's own diagnostics) stays behind the gateway.
const ANSWER_HEADERS: [header::HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::CONTENT_LANGUAGE,
    header::ETAG,
    header::LAST_MODIFIED,
    header::RETRY_AFTER,
];

/// The registry's headers the caller gets.
pub fn answer_headers(registry: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in ANSWER_HEADERS {
        for value in registry.get_all(&name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// Filters `body` for the caller; may rewrite `Content-Type`.
pub fn minimise(
    filter: &FieldFilter,
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Bytes, Problem> {
    // A redirect would send the caller to the registry's address, past the gateway.
    if status.is_redirection() || status.is_informational() {
        return Err(Problem::UpstreamUnfilterable);
    }
    if !status.is_success() {
        return Ok(reduce_error_body(status, &body));
    }
    if filter.is_unrestricted() {
        return Ok(body);
    }
    if status == StatusCode::NO_CONTENT || body.is_empty() {
        return Ok(body);
    }
    if !is_json(headers) {
        return Err(Problem::UpstreamUnfilterable);
    }
    filter
        .filter_json(&body)
        .map(Bytes::from)
        .map_err(|_| Problem::UpstreamUnfilterable)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|mime| {
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

/// A registry's error answer as the caller gets it: the registry's status and its problem `type`
/// (its reason, such as `…/unknown-person`) under the gateway's stable `code`. The registry's
/// `title` and `detail` are free text that can carry identity numbers or its internals; they
/// stay behind.
fn reduce_error_body(status: StatusCode, body: &[u8]) -> Bytes {
    let registry_type = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned))
        .filter(|t| is_plain_problem_type(t));
    let mut problem = serde_json::json!({
        "type": "urn:tollbu:problem:upstream_error",
        "title": "The registry did not answer the request with data",
        "status": status.as_u16(),
        "code": "upstream_error",
    });
    if let Some(t) = registry_type {
        problem["upstream_type"] = Value::String(t);
    }
    serde_json::to_vec(&problem)
        .map(Bytes::from)
        .unwrap_or_default()
}

/// A problem `type` safe to pass on: a short URI of printable ASCII without a run of six digits
/// (an identity or organisation number would be one).
fn is_plain_problem_type(t: &str) -> bool {
    let mut digits = 0;
    t.len() <= 200
        && t.bytes().all(|b| {
            digits = if b.is_ascii_digit() { digits + 1 } else { 0 };
            b.is_ascii_graphic() && digits < 6
        })
}
