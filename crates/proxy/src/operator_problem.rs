//! Error answers of the admin port and of the console's JSON API, in the problem+json shape
//! (RFC 9457) the gateway's own refusals have: one client, one parser, a stable `code` for each.
//!
//! Unlike a refused agency, an operator or a security officer is told what to do in `detail`
//! (a config file's line, a damaged index's repair). What would only show internals (an I/O
//! error's path, a failed task) goes to the gateway's log instead, and `detail` says so.

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

/// The body: `type` (`urn:tollbu:problem:<code>`), `title` (the status's reason phrase),
/// `status`, `code`, `detail`. Callers may add members (the reload answer's `reloaded`).
pub fn body(status: StatusCode, code: &'static str, detail: &str) -> Value {
    json!({
        "type": format!("urn:tollbu:problem:{code}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "code": code,
        "detail": detail,
    })
}

/// [`body`] as an answer: problem+json, never cached (it describes this moment).
pub fn response(status: StatusCode, code: &'static str, detail: &str) -> Response<Full<Bytes>> {
    with_body(status, &body(status, code, detail))
}

/// An answer for a problem body built with [`body`] and extended by the caller.
pub fn with_body(status: StatusCode, problem: &Value) -> Response<Full<Bytes>> {
    crate::error::no_store_json(status, problem, crate::error::PROBLEM_JSON)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http::header;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn answers_are_problem_json_with_their_code() {
        let answer = response(StatusCode::NOT_FOUND, "no_checkpoint", "none signed yet");
        assert_eq!(answer.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            answer.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(answer.headers()[header::CACHE_CONTROL], "no-store");
        let bytes = answer.into_body().collect().await.unwrap().to_bytes();
        let parsed: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            parsed,
            json!({
                "type": "urn:tollbu:problem:no_checkpoint",
                "title": "Not Found",
                "status": 404,
                "code": "no_checkpoint",
                "detail": "none signed yet",
            })
        );
    }
}
