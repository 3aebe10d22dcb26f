//! Trace context for one request: W3C `traceparent` accepted from the
//! caller when valid (otherwise a new trace starts here), OpenTelemetry spans
//! when export is on (a request span with one child per step), the
//! `traceparent` the upstream gets, and the trace id the audit record keeps.

use http::HeaderMap;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;

use crate::headers::TRACEPARENT;
use crate::ids::random_hex;

/// The trace this request belongs to, and its request span when exporting.
pub struct RequestTrace {
    trace_id: String,
    flags: String,
    tracer: Option<SdkTracer>,
    /// Context holding the request span (export on only).
    context: Option<Context>,
}

/// One step of the request (token check, decision, upstream call, audit).
/// Ends when dropped; a no-op when export is off.
pub struct StepSpan {
    context: Option<Context>,
}

impl RequestTrace {
    /// Reads `traceparent` and, with a tracer, starts the request span under it.
    pub fn start(tracer: Option<&SdkTracer>, headers: &HeaderMap, method: &str) -> Self {
        let incoming = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse);
        let Some(tracer) = tracer else {
            let (trace_id, flags) = match incoming {
                Some((trace_id, _, flags)) => (trace_id, flags),
                None => (random_hex::<16>(), "01".to_owned()),
            };
            return RequestTrace {
                trace_id,
                flags,
                tracer: None,
                context: None,
            };
        };
        let parent = match &incoming {
            Some((trace_id, span_id, flags)) => {
                let remote = SpanContext::new(
                    TraceId::from_hex(trace_id).unwrap_or(TraceId::INVALID),
                    SpanId::from_hex(span_id).unwrap_or(SpanId::INVALID),
                    if flags.ends_with('1') {
                        TraceFlags::SAMPLED
                    } else {
                        TraceFlags::default()
                    },
                    true,
                    TraceState::default(),
                );
                Context::new().with_remote_span_context(remote)
            }
            None => Context::new(),
        };
        let span = tracer
            .span_builder("tollbu.request")
            .with_kind(SpanKind::Server)
            .with_attributes([KeyValue::new("http.request.method", method.to_owned())])
            .start_with_context(tracer, &parent);
        let span_context = span.span_context().clone();
        let context = parent.with_span(span);
        RequestTrace {
            trace_id: span_context.trace_id().to_string(),
            flags: format!("{:02x}", span_context.trace_flags().to_u8()),
            tracer: Some(tracer.clone()),
            context: Some(context),
        }
    }

    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// A child span for one step of the pipeline.
    pub fn step(&self, name: &'static str) -> StepSpan {
        let (Some(tracer), Some(parent)) = (&self.tracer, &self.context) else {
            return StepSpan { context: None };
        };
        let kind = if name == "tollbu.upstream" {
            SpanKind::Client
        } else {
            SpanKind::Internal
        };
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(tracer, parent);
        StepSpan {
            context: Some(parent.with_span(span)),
        }
    }

    /// `traceparent` for the upstream: same trace, the upstream step as parent
    /// (or a fresh span id when export is off).
    pub fn traceparent_for(&self, step: &StepSpan) -> String {
        let span_id = match &step.context {
            Some(cx) => cx.span().span_context().span_id().to_string(),
            None => random_hex::<8>(),
        };
        format!("00-{}-{}-{}", self.trace_id, span_id, self.flags)
    }

    /// Records the outcome on the request span and ends it.
    pub fn finish(
        &self,
        status: u16,
        decision: &str,
        reason: Option<&str>,
        service: &str,
        path_template: Option<&str>,
    ) {
        let Some(cx) = &self.context else { return };
        let span = cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        span.set_attribute(KeyValue::new("tollbu.decision", decision.to_owned()));
        span.set_attribute(KeyValue::new("tollbu.service", service.to_owned()));
        if let Some(reason) = reason {
            span.set_attribute(KeyValue::new("tollbu.reason", reason.to_owned()));
        }
        if let Some(template) = path_template {
            span.set_attribute(KeyValue::new("http.route", template.to_owned()));
        }
        if status >= 500 {
            span.set_status(Status::error(reason.unwrap_or("error").to_owned()));
        }
        span.end();
    }
}

impl StepSpan {
    /// Marks the step as failed with a stable code.
    pub fn fail(&self, code: &str) {
        if let Some(cx) = &self.context {
            cx.span().set_status(Status::error(code.to_owned()));
        }
    }
}

impl Drop for StepSpan {
    fn drop(&mut self) {
        if let Some(cx) = &self.context {
            cx.span().end();
        }
    }
}

/// `(trace id, parent span id, flags)` of a valid version-00 `traceparent`.
fn parse(value: &str) -> Option<(String, String, String)> {
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
    valid.then(|| (trace_id.to_owned(), span_id.to_owned(), flags.to_owned()))
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
        let trace = RequestTrace::start(None, &headers, "GET");
        assert_eq!(trace.trace_id(), "0af7651916cd43dd8448eb211c80319c");
        let child = trace.traceparent_for(&trace.step("tollbu.upstream"));
        assert!(child.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
        assert!(!child.contains("b7ad6b7169203331"));
        assert!(child.ends_with("-01"));
        headers.insert(
            TRACEPARENT,
            http::HeaderValue::from_static(
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            ),
        );
        assert_ne!(
            RequestTrace::start(None, &headers, "GET").trace_id(),
            "00000000000000000000000000000000"
        );
        headers.insert(
            TRACEPARENT,
            http::HeaderValue::from_static(
                "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        );
        assert_ne!(
            RequestTrace::start(None, &headers, "GET").trace_id(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(
            RequestTrace::start(None, &HeaderMap::new(), "GET")
                .trace_id()
                .len(),
            32
        );
    }
}
