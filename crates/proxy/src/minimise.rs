//! Data minimisation on the way out: a successful answer carries only the
//! fields the grant allows. An answer that cannot be filtered (not JSON)
//! under a restricting grant is refused, never passed through. Error answers
//! from the registry are reduced to the RFC 9457 problem members.

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap};
use serde_json::Value;
use tollbu_policy::FieldFilter;

use crate::error::Problem;

/// Problem members a registry's error answer may pass on.
const PROBLEM_MEMBERS: [&str; 5] = ["type", "title", "status", "detail", "code"];

/// Filters `body` for the caller; may rewrite `Content-Type`.
pub fn minimise(
    filter: &FieldFilter,
    status: StatusCode,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Bytes, Problem> {
    if !status.is_success() {
        return Ok(reduce_error_body(&body));
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

fn reduce_error_body(body: &[u8]) -> Bytes {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Bytes::new();
    };
    let kept: serde_json::Map<String, Value> = map
        .into_iter()
        .filter(|(k, v)| PROBLEM_MEMBERS.contains(&k.as_str()) && !v.is_object() && !v.is_array())
        .collect();
    serde_json::to_vec(&Value::Object(kept))
        .map(Bytes::from)
        .unwrap_or_default()
}
