//! W3C trace context (`traceparent`): accepted from the caller when valid,
//! otherwise started here; the upstream gets a child with a fresh span id.
//! The trace id goes into the audit record.

use http::HeaderMap;

use crate::headers::TRACEPARENT;

/// The trace this request belongs to.
#[derive(Debug, Clone)]
pub struct TraceContext {
    trace_id: String,
    flags: String,
}

impl TraceContext {
    /// Reads `traceparent` (version 00), or starts a new sampled trace.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse)
            .unwrap_or_else(|| TraceContext {
                trace_id: random_hex(16),
                flags: "01".into(),
            })
    }

    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// `traceparent` for the upstream call: same trace, new parent span.
    pub fn child_traceparent(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, random_hex(8), self.flags)
    }
}

fn parse(value: &str) -> Option<TraceContext> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let valid = version == "00"
        && parts.next().is_none()
        && lower_hex(trace_id, 32)
        && trace_id.bytes().any(|b| b != b'0')
        && lower_hex(span_id, 16)
        && span_id.bytes().any(|b| b != b'0')
        && lower_hex(flags, 2);
    valid.then(|| TraceContext {
        trace_id: trace_id.to_owned(),
        flags: flags.to_owned(),
    })
}

fn random_hex(bytes: usize) -> String {
    let id = uuid::Uuid::new_v4();
    let mut text = hex::encode(id.as_bytes());
    if bytes > 8 {
        text.truncate(bytes * 2);
    } else {
        text = text.chars().rev().take(bytes * 2).collect();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_and_replaces_invalid_traceparent() {
        let mut headers = HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            http::HeaderValue::from_static(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        );
        let ctx = TraceContext::from_headers(&headers);
        assert_eq!(ctx.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        let child = ctx.child_traceparent();
        assert!(child.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
        assert!(!child.contains("b7ad6b7169203331"));
        headers.insert(
            TRACEPARENT,
            http::HeaderValue::from_static(
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            ),
        );
        assert_ne!(
            TraceContext::from_headers(&headers).trace_id(),
            "00000000000000000000000000000000"
        );
        assert_eq!(
            TraceContext::from_headers(&HeaderMap::new())
                .trace_id()
                .len(),
            32
        );
    }
}
