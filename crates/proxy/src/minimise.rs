//! Data minimisation on the way out: a successful answer carries only the
//! fields the grant allows. An answer that cannot be filtered (not JSON)
//! under a restricting grant is refused, never passed through. A registry's
//! error answer becomes the gateway's own problem document with the registry's
//! status and problem `type`, never its free text; a redirect, a byte range and an
//! encoded body are refused. Of the registry's headers only the media type and
//! (on a 429 or 503) `Retry-After` pass, each only in its plain form.

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderMap};
use serde_json::Value;
use tollbu_policy::FieldFilter;

use crate::error::Problem;

/// Every registry header the gateway reads ([`minimise`]) or passes on ([`answer_headers`]);
/// the upstream client keeps only these.
pub const ANSWER_HEADERS_USED: [header::HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::CONTENT_RANGE,
    header::CONTENT_ENCODING,
    header::RETRY_AFTER,
];

/// The registry's headers the caller gets: its media type and, on a 429 or 503, `Retry-After`.
/// `Content-Type` keeps only its media type, and only one without a run of six digits: its
/// parameters and subtype are free text a registry could fill with an identity number, and the
/// filter's output is UTF-8 JSON in any case. `Retry-After` passes only as what RFC 9110 §10.2.3
/// allows (a number of seconds or an HTTP-date), for the same reason. Everything else stays
/// behind the gateway: `Server`, `Set-Cookie`, `Location`, a registry's own diagnostics, and the
/// validators (`ETag`, `Last-Modified`), which describe the registry's whole record rather than
/// the fields released (an ETag that hashes the record lets a caller test guesses at the withheld
/// fields).
pub fn answer_headers(status: StatusCode, registry: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    if let Some(media_type) = registry
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(media_type)
        .filter(|m| !has_digit_run(m, 6))
        .and_then(|m| header::HeaderValue::from_str(&m).ok())
    {
        kept.insert(header::CONTENT_TYPE, media_type);
    }
    let waits =
        status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE;
    if let Some(retry_after) = registry
        .get(header::RETRY_AFTER)
        .filter(|v| waits && v.to_str().is_ok_and(is_retry_after))
    {
        kept.insert(header::RETRY_AFTER, retry_after.clone());
    }
    kept
}

/// RFC 9110 §10.2.3: `delay-seconds` (digits; ten at most here) or an HTTP-date.
fn is_retry_after(value: &str) -> bool {
    let value = value.trim();
    (!value.is_empty() && value.len() <= 10 && value.bytes().all(|b| b.is_ascii_digit()))
        || httpdate::parse_http_date(value).is_ok()
}

/// True when `text` holds `run` ASCII digits in a row (an identity number holds eleven, an
/// organisation number nine).
fn has_digit_run(text: &str, run: usize) -> bool {
    let mut digits = 0;
    text.bytes().any(|b| {
        digits = if b.is_ascii_digit() { digits + 1 } else { 0 };
        digits >= run
    })
}

/// `type/subtype` of a `Content-Type` value, lowercased; `None` unless both are RFC 9110 tokens.
fn media_type(content_type: &str) -> Option<String> {
    let essence = content_type.split(';').next()?.trim();
    let (kind, subtype) = essence.split_once('/')?;
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    (token(kind) && token(subtype)).then(|| essence.to_ascii_lowercase())
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
    // A byte range is a fragment, not the record the filter's paths describe; an encoded body
    // is not the JSON the filter reads (and its encoding is not passed on). The gateway asks for
    // neither, so either means a registry the filter cannot be trusted with.
    if status == StatusCode::PARTIAL_CONTENT
        || headers.contains_key(header::CONTENT_RANGE)
        || !identity_encoded(headers)
    {
        return Err(Problem::UpstreamUnfilterable);
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

/// No `Content-Encoding`, or only `identity`.
fn identity_encoded(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONTENT_ENCODING).iter().all(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .all(|coding| coding.trim().eq_ignore_ascii_case("identity"))
        })
    })
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
    t.len() <= 200 && t.bytes().all(|b| b.is_ascii_graphic()) && !has_digit_run(t, 6)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn fragments_and_encoded_answers_are_refused_even_when_everything_is_released() {
        let body = Bytes::from_static(br#"{"name":"Ola"}"#);
        let json = ("content-type", "application/json");
        let refused = [
            (StatusCode::PARTIAL_CONTENT, headers(&[json])),
            (
                StatusCode::OK,
                headers(&[json, ("content-range", "bytes 0-13/200")]),
            ),
            (
                StatusCode::OK,
                headers(&[json, ("content-encoding", "gzip")]),
            ),
            (
                StatusCode::OK,
                headers(&[json, ("content-encoding", "identity, br")]),
            ),
        ];
        for (status, headers) in refused {
            assert_eq!(
                minimise(&FieldFilter::allow_all(), status, &headers, body.clone()),
                Err(Problem::UpstreamUnfilterable),
                "{status} {headers:?}"
            );
        }
        let identity = headers(&[json, ("content-encoding", "Identity")]);
        assert_eq!(
            minimise(
                &FieldFilter::allow_all(),
                StatusCode::OK,
                &identity,
                body.clone()
            ),
            Ok(body)
        );
    }

    #[test]
    fn validators_and_content_type_parameters_stay_behind() {
        let registry = headers(&[
            (
                "content-type",
                "Application/JSON; charset=utf-8; x-pid=05885624741",
            ),
            ("etag", "\"07c3ffcd1b2fd5b8979a91fd8c489830\""),
            ("last-modified", "Tue, 17 Mar 2015 09:00:00 GMT"),
            ("content-language", "nb"),
            ("retry-after", "30"),
            ("server", "registry/1.0"),
        ]);
        let kept = answer_headers(StatusCode::SERVICE_UNAVAILABLE, &registry);
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept[header::CONTENT_TYPE], "application/json");
        assert_eq!(kept[header::RETRY_AFTER], "30");
        let odd = headers(&[("content-type", "json")]);
        assert!(answer_headers(StatusCode::OK, &odd).is_empty());
    }

    #[test]
    fn free_text_in_a_media_type_or_retry_after_stays_behind() {
        let registry = headers(&[
            ("content-type", "application/x-person-05885624741+json"),
            ("retry-after", "later, ask for 05885624741"),
        ]);
        for status in [StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE] {
            assert!(
                answer_headers(status, &registry).is_empty(),
                "{status}: {:?}",
                answer_headers(status, &registry)
            );
        }
        let date = headers(&[("retry-after", "Wed, 21 Oct 2026 07:28:00 GMT")]);
        assert_eq!(
            answer_headers(StatusCode::TOO_MANY_REQUESTS, &date)[header::RETRY_AFTER],
            "Wed, 21 Oct 2026 07:28:00 GMT"
        );
        let seconds = headers(&[("retry-after", "120")]);
        assert!(
            answer_headers(StatusCode::OK, &seconds).is_empty(),
            "Retry-After means nothing on a 200"
        );
        assert_eq!(
            answer_headers(StatusCode::TOO_MANY_REQUESTS, &seconds)[header::RETRY_AFTER],
            "120"
        );
    }
}
