//! The request path, assembled in one place. Each step says why it sits
//! where it does. The function never returns an error to the server: every
//! outcome is a response, and every decided request leaves an audit record
//! before its response is released.
//!
//! 1. ids       request id and trace context first, so every later answer carries them
//! 2. route     cheap syntactic refusals before any crypto
//! 3. authn     token → VerifiedCaller (the only way to get one); a bound token only
//!    with its client certificate; no keys of its issuer is the gateway's failure (503)
//! 4. operation the policy's operation table gives the path template and subject
//! 5. decide    policy decision → Allow (grant, fields, rate) or Deny (reason)
//! 6. rate      after the decision, because the bucket is per (consumer, grant)
//! 7. forward   upstream call with our headers, under the total timeout (cut short near the
//!    end of a shutdown's grace, so that it is still answered and recorded)
//! 8. minimise  only the grant's fields leave; unfilterable answers are refused
//! 9. record    durable audit record, or 503 and nothing released

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Either, Full};
use sha2::{Digest, Sha256};
use tollbu_audit::{Decision as AuditDecision, Record};
use tollbu_policy::{Decision, DecisionRequest, OperationMatch};

use crate::authn::{ClientCertificate, VerifiedCaller};
use crate::body::{BodyOutcome, HashingBody};
use crate::error::{Problem, TokenFault};
use crate::gateway::GatewayState;
use crate::headers;
use crate::metrics::Observation;
use crate::rate_limit::{Limit, Verdict};
use crate::route;
use crate::trace::RequestTrace;
use crate::upstream::{Assertions, Outbound, UpstreamError};

/// The response body type every listener serves.
pub type ResponseBody = Full<Bytes>;

/// What the audit record needs, filled in as the request moves along.
struct Outcome {
    record: Record,
    started: Instant,
    /// Time spent waiting for the registry, when it was called.
    upstream_time: Option<std::time::Duration>,
    /// The request went to the registry, which may have acted on it: a
    /// failure from then on is an error, not a refusal.
    forwarded: bool,
    /// A `HEAD` request: the caller gets the head without the body.
    head: bool,
}

/// A request decided and, when allowed, answered by the registry: what is
/// left to do is recording it.
struct Settled {
    outcome: Outcome,
    response: Response<ResponseBody>,
    request_id: String,
    trace: RequestTrace,
}

/// Handles one request end to end; `in_flight` is dropped once the response
/// is ready.
///
/// Not an `async fn`, for memory: under load most requests in flight are
/// waiting for their audit record. The front half (token, policy, registry;
/// ≈ 2.6 KB of futures) is boxed, so only the requests running it pay for it,
/// and the returned future holds that box and the record's step, ≈ 1.2 KB
/// rather than ≈ 3.9 KB. (An `async fn` also stores its arguments twice.)
pub fn handle<B, G>(
    state: Arc<GatewayState>,
    request: Request<B>,
    peer: SocketAddr,
    scheme: &'static str,
    in_flight: G,
) -> impl Future<Output = Response<ResponseBody>> + Send + 'static
where
    B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    G: Send + 'static,
{
    let front = Box::pin(decide_and_forward(
        Arc::clone(&state),
        request,
        peer,
        scheme,
    ));
    async move {
        let response = finish(state, front.await).await;
        drop(in_flight);
        response
    }
}

/// Steps 1–8: everything up to the record.
async fn decide_and_forward<B>(
    state: Arc<GatewayState>,
    request: Request<B>,
    peer: SocketAddr,
    scheme: &'static str,
) -> Settled
where
    B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let http1 = request.version() < http::Version::HTTP_2;
    let request_id = request_id(request.headers());
    let trace = RequestTrace::start(
        state.tracer.as_ref(),
        request.headers(),
        request.method().as_str(),
    );
    let mut outcome = Outcome {
        record: Record {
            time: Record::timestamp(time::OffsetDateTime::now_utc()),
            request_id: request_id.clone(),
            trace_id: Some(trace.trace_id().to_owned()),
            operation: request.method().as_str().to_owned(),
            ..Record::default()
        },
        started,
        upstream_time: None,
        forwarded: false,
        head: request.method() == http::Method::HEAD,
    };
    let response = match serve(
        &state,
        request,
        peer,
        scheme,
        &request_id,
        &trace,
        &mut outcome,
    )
    .await
    {
        Ok(response) => response,
        Err(problem) => {
            outcome.record.decision = match problem {
                _ if outcome.forwarded => AuditDecision::Error,
                // The gateway could not check the token: its failure, not the caller's.
                Problem::KeysUnavailable { .. }
                | Problem::UpstreamUnreachable
                | Problem::UpstreamTimeout
                | Problem::UpstreamUnfilterable
                | Problem::UpstreamTooLarge
                | Problem::Internal => AuditDecision::Error,
                _ => AuditDecision::Deny,
            };
            outcome.record.reason = Some(problem.reason());
            let mut response = problem.to_response(&request_id);
            // A client that sends an oversized head is not kept talking.
            if problem == Problem::HeadersTooLarge && http1 {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    };
    Settled {
        outcome,
        response,
        request_id,
        trace,
    }
}

/// Step 9: records the outcome durably, then releases the response (or 503
/// if the record could not be made durable).
///
/// Not an `async fn`, so that `settled` is stored once in the future.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would store its arguments twice"
)]
fn finish(
    state: Arc<GatewayState>,
    mut settled: Settled,
) -> impl Future<Output = Response<ResponseBody>> + Send {
    // The block uses `settled`'s fields in place: binding them to locals
    // would store them again.
    async move {
        let (mut parts, body) = settled.response.into_parts();
        let body_bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        // The hash of what the caller got: no body at all for `HEAD`.
        let sent: &[u8] = if settled.outcome.head {
            &[]
        } else {
            &body_bytes
        };
        settled.outcome.record.response_sha256 = Some(Sha256::digest(sent).into());
        settled.outcome.record.latency_us =
            u64::try_from(settled.outcome.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let audit_step = settled.trace.step("tollbu.audit");
        let appended = state.audit.append_ref(&settled.outcome.record).await;
        let record = &settled.outcome.record;
        let decision = record.decision;
        let code = &record.reason;
        let service = &record.service;
        let consumer = &record.consumer;
        let path_template = &record.path_template;
        if appended.is_err() {
            audit_step.fail("audit_unavailable");
        }
        drop(audit_step);
        match appended {
            Ok(_) => {
                settled.trace.finish(
                    parts.status.as_u16(),
                    decision.as_str(),
                    code.as_deref(),
                    service,
                    path_template.as_deref(),
                );
                state.metrics.observe(&Observation {
                    service,
                    consumer: consumer.as_deref(),
                    decision: decision.as_str(),
                    reason: code.as_deref(),
                    status: parts.status.as_u16(),
                    total: settled.outcome.started.elapsed(),
                    upstream: settled.outcome.upstream_time,
                });
                if let Ok(value) = HeaderValue::from_str(&settled.request_id) {
                    parts.headers.insert(headers::REQUEST_ID, value);
                }
                Response::from_parts(parts, Full::new(body_bytes))
            }
            Err(error) => {
                tracing::error!(%error, request_id = %settled.request_id, "audit append failed; refusing to release the response");
                settled.trace.finish(
                    503,
                    "error",
                    Some("audit_unavailable"),
                    service,
                    path_template.as_deref(),
                );
                state.metrics.observe(&Observation {
                    service,
                    consumer: consumer.as_deref(),
                    decision: "error",
                    reason: Some("audit_unavailable"),
                    status: 503,
                    total: settled.outcome.started.elapsed(),
                    upstream: settled.outcome.upstream_time,
                });
                Problem::AuditUnavailable.to_response(&settled.request_id)
            }
        }
    }
}

async fn serve<B>(
    state: &GatewayState,
    request: Request<B>,
    peer: SocketAddr,
    scheme: &'static str,
    request_id: &str,
    trace: &RequestTrace,
    outcome: &mut Outcome,
) -> Result<Response<ResponseBody>, Problem>
where
    B: http_body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // 2. route
    if head_bytes(&request) > state.limits.max_header_bytes {
        return Err(Problem::HeadersTooLarge);
    }
    if request.version() < http::Version::HTTP_2 && request.uri().authority().is_some() {
        return Err(Problem::BadPath);
    }
    check_host(&request)?;
    let routed = route::route_path(request.uri().path()).map_err(|_| Problem::BadPath)?;
    let query = request.uri().query().map(str::to_owned);
    if let Some(q) = &query {
        route::check_query(q).map_err(|_| Problem::BadPath)?;
    }
    let Some(upstream) = state.upstreams.get(&routed.service) else {
        return Err(Problem::UnknownService);
    };
    outcome.record.service = routed.service.clone();

    // 3. authn
    let token = bearer_token(request.headers())?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let authn_step = trace.step("tollbu.authn");
    let caller: Arc<VerifiedCaller> = state.verifier.verify(token, now).await.map_err(|error| {
        authn_step.fail(error.code());
        Problem::from(error)
    })?;
    outcome.record.consumer = Some(format!("0192:{}", caller.consumer()));
    outcome.record.supplier = caller.supplier().map(|s| format!("0192:{s}"));
    outcome.record.client_id = Some(caller.client_id.clone());
    // A certificate-bound token (RFC 8705 §3) only from a connection that presented that
    // certificate. Checked on every request, the remembered ones too: the verified-token cache
    // keys on the token, and the same token may arrive on another connection. The refusal is
    // recorded with the (genuine, signed) consumer the stolen token names.
    if let Err(fault) = caller.check_binding(request.extensions().get::<ClientCertificate>()) {
        authn_step.fail(fault.code());
        return Err(Problem::InvalidToken(fault));
    }
    drop(authn_step);
    if let Some(allowed) = &upstream.issuers
        && !allowed.iter().any(|issuer| issuer == &caller.issuer)
    {
        return Err(Problem::InvalidToken(TokenFault::UntrustedIssuer));
    }

    // 4. operation
    let policies = Arc::clone(&state.policies);
    outcome.record.policy_version = Some(policies.version().to_owned());
    let method = request.method().clone();
    let matched = match policies.match_operation(
        &routed.service,
        method.as_str(),
        &routed.rest,
        query.as_deref(),
    ) {
        OperationMatch::Matched(matched) => matched,
        OperationMatch::UnknownService => return Err(Problem::UnknownService),
        OperationMatch::UnknownOperation => return Err(Problem::UnknownOperation),
        OperationMatch::UndeclaredQueryParameter { operation_id, .. } => {
            outcome.record.operation = operation_id;
            return Err(Problem::UndeclaredQueryParameter);
        }
    };
    outcome.record.operation = matched.operation_id.clone();
    outcome.record.path_template = Some(matched.path_template.clone());
    outcome.record.subject = matched
        .subject
        .as_deref()
        .map(|s| state.audit.pseudonymise(s));
    let purpose = declared_purpose(request.headers())?;
    // A purpose no grant names is the caller's free text: refused below, and not recorded.
    outcome.record.purpose = purpose
        .as_deref()
        .filter(|p| policies.names_purpose(&routed.service, p))
        .map(str::to_owned);

    // 5. decide
    let decide_step = trace.step("tollbu.decide");
    let decision = policies.decide(&DecisionRequest {
        caller: &caller.facts,
        service: &routed.service,
        operation: &matched.operation_id,
        params: &matched.params,
        subject: matched.subject.as_deref(),
        purpose: purpose.as_deref(),
        now,
    });
    drop(decide_step);
    let allow = match decision {
        Decision::Allow(allow) => allow,
        Decision::Deny(deny) => {
            return Err(match deny.reason.code() {
                "scope_missing" => Problem::InsufficientScope {
                    message: deny.message,
                },
                code => Problem::Denied {
                    code,
                    message: deny.message,
                },
            });
        }
    };
    outcome.record.grant_id = Some(allow.grant_id.clone());
    outcome.record.legal_basis = allow.legal_basis.clone();
    outcome.record.consent_id = allow.consent_id.clone();
    outcome.record.purpose = Some(allow.purpose.clone());

    // 6. rate
    let limit = allow
        .rate_limit
        .map(|r| Limit {
            requests: r.requests,
            per_seconds: r.per_seconds,
        })
        .unwrap_or(state.default_rate_limit);
    if let Verdict::Limited { retry_after_secs } = state.rate_limits.check(&allow.rate_key, limit) {
        return Err(Problem::RateLimited {
            retry_after_secs,
            limit: limit.requests,
            window_secs: limit.per_seconds,
        });
    }

    // 7. forward
    let (parts, body) = request.into_parts();
    check_declared_length(&parts.headers, state.limits.max_request_body_bytes)?;
    let body = if parts.method == http::Method::GET || parts.method == http::Method::HEAD {
        refuse_content(
            body,
            state.limits.max_request_body_bytes,
            state.limits.header_read_timeout(),
        )
        .await?;
        Either::Right(http_body_util::Empty::<Bytes>::new())
    } else {
        Either::Left(body)
    };
    let (body, body_digest) = HashingBody::new(body, state.limits.max_request_body_bytes);
    let body = body.boxed();
    let upstream_step = trace.step("tollbu.upstream");
    let upstream_started = Instant::now();
    outcome.forwarded = true;
    let traceparent = trace.traceparent_for(&upstream_step);
    let assertions = Assertions {
        request_id,
        traceparent: Some(&traceparent),
        consumer: caller.consumer(),
        supplier: caller.supplier(),
        client_id: &caller.client_id,
        grant_id: &allow.grant_id,
        purpose: &allow.purpose,
        peer,
        scheme,
    };
    // A shutdown near the end of its grace ends the exchange as a timeout, so that it is
    // still answered and recorded before the audit log closes. The exchange is built inside the
    // `select!` (a future bound to a local and then moved can keep two slots in the request's
    // state, rust-lang/rust#62958) and the wait for the cutoff is boxed: held in place it grew
    // every request's state (≈ 5 MB more at 1,000 connections in the A/B pairs of
    // bench/results/2026-12-07/request-path-ab/).
    let forwarded = tokio::select! {
        forwarded = upstream.forward(
            Outbound {
                method: parts.method,
                rest: &routed.rest,
                query: query.as_deref(),
                headers: &parts.headers,
                body,
            },
            &assertions,
            state.limits.upstream_timeout(),
            state.limits.max_response_body_bytes,
        ) => forwarded,
        () = Box::pin(state.upstream_cutoff.reached()) => Err(UpstreamError::Timeout),
    };
    let answer = match forwarded {
        Ok(answer) => answer,
        Err(error) => {
            tracing::warn!(%error, request_id, service = %routed.service, "upstream call failed");
            upstream_step.fail("upstream_error");
            // A registry that hung up in the middle of the body may have done so because of the
            // body: what is left is read (as after an answer) to tell a caller's oversized or
            // broken body from a registry's failure. Not after a timeout, which would only wait
            // longer.
            let body = match error {
                UpstreamError::Timeout => body_digest.outcome(),
                _ => Some(
                    body_digest
                        .drain_rest(state.limits.header_read_timeout())
                        .await,
                ),
            };
            return Err(match (body, error) {
                (Some(BodyOutcome::TooLarge), _) => Problem::PayloadTooLarge,
                (Some(BodyOutcome::Unreadable), _) => {
                    Problem::BadRequest("the request body could not be read")
                }
                (_, UpstreamError::Timeout) => Problem::UpstreamTimeout,
                (_, UpstreamError::TooLarge) => Problem::UpstreamTooLarge,
                (_, UpstreamError::Unreachable(_) | UpstreamError::Build(_)) => {
                    Problem::UpstreamUnreachable
                }
            });
        }
    };
    drop(upstream_step);
    outcome.upstream_time = Some(upstream_started.elapsed());
    outcome.record.upstream_status = Some(answer.status.as_u16());
    // The registry may answer before reading the whole body: read what it
    // left, so the record has the real hash and an answer to an oversized or
    // broken body is never released.
    match body_digest
        .drain_rest(state.limits.header_read_timeout())
        .await
    {
        BodyOutcome::Complete(sha256) => outcome.record.request_sha256 = Some(sha256),
        BodyOutcome::TooLarge => return Err(Problem::PayloadTooLarge),
        BodyOutcome::Unreadable => {
            return Err(Problem::BadRequest("the request body could not be read"));
        }
    }

    // 8. minimise
    let body =
        crate::minimise::minimise(&allow.fields, answer.status, &answer.headers, answer.body)?;
    outcome.record.fields_released = if answer.status.is_success() {
        allow.fields.released().to_vec()
    } else {
        Vec::new()
    };
    outcome.record.decision = AuditDecision::Allow;
    outcome.record.reason = None;
    let mut response = Response::new(Full::new(body.clone()));
    *response.status_mut() = answer.status;
    *response.headers_mut() = crate::minimise::answer_headers(answer.status, &answer.headers);
    if !answer.status.is_success() {
        response.headers_mut().remove(header::CONTENT_TYPE);
        if !body.is_empty() {
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::error::PROBLEM_JSON),
            );
        }
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The request head's size as HTTP/1.1 sends it: the request line, each
/// header as `name: value` and a line end, and the empty line.
///
/// hyper checks its `max_buf_size` only when the bytes read so far do not
/// hold a whole head, and its buffer grows in steps that can pass the limit:
/// an oversized head that arrives at once can be parsed whole. This is the
/// exact check of `max_header_bytes`.
fn head_bytes<B>(request: &Request<B>) -> usize {
    const LINE_END: usize = 2;
    let target = request
        .uri()
        .path_and_query()
        .map_or(1, |target| target.as_str().len());
    let request_line = request.method().as_str().len() + 1 + target + " HTTP/1.1".len() + LINE_END;
    request
        .headers()
        .iter()
        .fold(request_line + LINE_END, |size, (name, value)| {
            size + name.as_str().len() + ": ".len() + value.len() + LINE_END
        })
}

fn bearer_token(headers: &http::HeaderMap) -> Result<&str, Problem> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(Problem::MissingToken)?;
    if values.next().is_some() {
        return Err(Problem::InvalidToken(TokenFault::Malformed));
    }
    let text = value
        .to_str()
        .map_err(|_| Problem::InvalidToken(TokenFault::Malformed))?;
    let (scheme, token) = text.split_once(' ').ok_or(Problem::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Problem::MissingToken);
    }
    // RFC 6750: `Bearer 1*SP b64token`. Only spaces separate the two (a tab or other whitespace
    // is a malformed token, not the same one); the field's own edges were trimmed by the parser.
    let token = token.trim_start_matches(' ');
    if token.is_empty() {
        return Err(Problem::MissingToken);
    }
    Ok(token)
}

/// `Host` as RFC 9112 §3.2 and RFC 9113 §8.3.1 require: exactly one in an HTTP/1.1 request (at most
/// one in HTTP/1.0), and over HTTP/2 none, or one that agrees with `:authority`. A request whose
/// target host is ambiguous may be routed differently by whatever sits behind the registry.
fn check_host<B>(request: &Request<B>) -> Result<(), Problem> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Err(Problem::BadRequest("send one `Host` header"));
    }
    match request.version() {
        http::Version::HTTP_11 if first.is_none() => Err(Problem::BadRequest(
            "an HTTP/1.1 request needs a `Host` header",
        )),
        http::Version::HTTP_2 => match (first, request.uri().authority()) {
            (Some(host), Some(authority)) if host.as_bytes() != authority.as_str().as_bytes() => {
                Err(Problem::BadRequest("`Host` and `:authority` disagree"))
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// The `Tollbu-Purpose` header: absent is allowed here (the policy answers
/// `purpose_missing`); present must be one short token, exactly as sent (the decision and the
/// registry must read the same value).
fn declared_purpose(headers: &http::HeaderMap) -> Result<Option<String>, Problem> {
    let mut values = headers.get_all(headers::PURPOSE).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Problem::BadRequest("send one `Tollbu-Purpose` header"));
    }
    let text = value
        .to_str()
        .map_err(|_| Problem::BadRequest("the purpose header must be ASCII"))?;
    let valid = !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if !valid {
        return Err(Problem::BadRequest(
            "the purpose header must be a short identifier such as `benefit-assessment`",
        ));
    }
    Ok(Some(text.to_owned()))
}

fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(headers::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
                // A caller's case key is often the person's number; the id is logged in clear.
                && !tollbu_policy::ids::contains_pid(v)
        })
        .map(str::to_owned)
        .unwrap_or_else(crate::ids::request_id)
}

/// `GET` and `HEAD` content has no defined meaning (RFC 9110 §9.3.1, §9.3.2), and no decision
/// looked at it, yet a registry could act on it (a search body naming another person): what came
/// is read, within the body limit and `timeout`, and any byte of it refuses the request. An empty
/// body (`Content-Length: 0`, an empty chunked body, an empty HTTP/2 DATA frame) is fine.
async fn refuse_content<B>(
    body: B,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<(), Problem>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if body.is_end_stream() {
        return Ok(());
    }
    let unreadable = Problem::BadRequest("the request body could not be read");
    let read = tokio::time::timeout(timeout, http_body_util::Limited::new(body, limit).collect());
    let content = match read.await {
        Err(_) => return Err(unreadable),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            return Err(Problem::PayloadTooLarge);
        }
        Ok(Err(_)) => return Err(unreadable),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    if content.is_empty() {
        Ok(())
    } else {
        Err(Problem::BadRequest("a GET or HEAD request carries no body"))
    }
}

/// Refuses a body whose declared length is over the limit, before any byte is forwarded.
fn check_declared_length(headers: &http::HeaderMap, limit: usize) -> Result<(), Problem> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(Problem::PayloadTooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn purpose_of(values: &[&str]) -> Result<Option<String>, Problem> {
        let mut headers = http::HeaderMap::new();
        for v in values {
            headers.append(headers::PURPOSE, http::HeaderValue::from_str(v).unwrap());
        }
        declared_purpose(&headers)
    }

    /// The value decided on is the value sent: over HTTP/2 nothing trims it (HTTP/1's parser
    /// drops the spaces around a field), so spaces or a tab make it malformed, not equal.
    #[test]
    fn the_purpose_is_one_header_taken_exactly_as_sent() {
        assert_eq!(purpose_of(&[]).unwrap(), None);
        assert_eq!(
            purpose_of(&["benefit-assessment"]).unwrap().as_deref(),
            Some("benefit-assessment")
        );
        for bad in [
            &[" benefit-assessment"][..],
            &["benefit-assessment\t"],
            &["benefit-assessment", "marketing"],
            &[""],
        ] {
            assert!(
                matches!(purpose_of(bad), Err(Problem::BadRequest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn host_must_be_unambiguous() {
        let request = |version: http::Version, uri: &str, hosts: &[&str]| {
            let mut r = Request::builder().version(version).uri(uri);
            for h in hosts {
                r = r.header(header::HOST, *h);
            }
            r.body(()).unwrap()
        };
        let ok = |r: &Request<()>| check_host(r).is_ok();
        assert!(ok(&request(http::Version::HTTP_11, "/p", &["gw"])));
        assert!(!ok(&request(http::Version::HTTP_11, "/p", &[])));
        assert!(!ok(&request(http::Version::HTTP_11, "/p", &["a", "b"])));
        assert!(ok(&request(http::Version::HTTP_10, "/p", &[])));
        assert!(ok(&request(http::Version::HTTP_2, "https://gw/p", &[])));
        assert!(ok(&request(http::Version::HTTP_2, "https://gw/p", &["gw"])));
        assert!(!ok(&request(
            http::Version::HTTP_2,
            "https://gw/p",
            &["evil"]
        )));
    }
}
