//! The decision: may this caller perform this operation about this subject
//! for this purpose, now?
//!
//! Order: unknown service/operation → `no_grant`; any matching denial →
//! `explicitly_denied`; then each candidate grant in priority order (named
//! consumer before any-with-consent, then grant id) is checked stage by
//! stage: supplier, validity period, scopes, purpose, subject, consent. The
//! first grant that passes every stage allows. If none passes, the failure
//! that got furthest (highest stage, first in priority order on a tie) is
//! reported, so a consumer that has a grant but lacks the scope hears
//! `scope_missing`, not `no_grant`.

use std::sync::Arc;

use crate::consent::{Caller, find_consent};
use crate::filter::FieldFilter;
use crate::model::{Denial, Grant, Operation, PolicySet, RateLimit, Service};
use crate::reason::DenyReason;

/// Everything a decision depends on. The proxy fills it from the verified
/// token, the matched operation, the `Tollbu-Purpose` header and its clock.
#[derive(Debug, Clone, Copy)]
pub struct DecisionRequest<'a> {
    pub caller: &'a Caller,
    pub service: &'a str,
    pub operation: &'a str,
    pub params: &'a [(String, String)],
    pub subject: Option<&'a str>,
    pub purpose: Option<&'a str>,
    /// Unix seconds.
    pub now: i64,
}

/// The outcome. Only this module constructs it, so holding an `Allow` is
/// proof the policy engine was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(Allow),
    Deny(Deny),
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// The deny reason, or `None` for an allow.
    pub fn reason(&self) -> Option<DenyReason> {
        match self {
            Decision::Allow(_) => None,
            Decision::Deny(d) => Some(d.reason),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    pub grant_id: String,
    pub purpose: String,
    pub legal_basis: Option<String>,
    pub consent_id: Option<String>,
    pub fields: Arc<FieldFilter>,
    pub rate_limit: Option<RateLimit>,
    /// Bucket key for the rate limiter: one bucket per grant and consumer.
    pub rate_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    pub reason: DenyReason,
    /// One sentence for the caller and the log; never contains a national
    /// identity number or the caller's purpose text.
    pub message: String,
}

/// Observes the evaluation; `explain` records everything, `decide` nothing.
pub(crate) trait Trace {
    fn denial(&mut self, _denial: &Denial, _hit: bool) {}
    fn grant(&mut self, _grant: &Grant, _outcome: Result<(), DenyReason>) {}
    /// Keep evaluating denials after the first hit and grants after the
    /// first allow (for explanations).
    fn wants_all(&self) -> bool {
        false
    }
}

pub(crate) struct NoTrace;

impl Trace for NoTrace {}

pub(crate) fn evaluate<T: Trace>(
    set: &PolicySet,
    req: &DecisionRequest<'_>,
    trace: &mut T,
) -> Decision {
    let Some(svc) = set.services.get(req.service) else {
        return deny(
            DenyReason::NoGrant,
            format!("no policy covers service `{}`", req.service),
        );
    };
    let (Some(op_index), Some(op)) = (
        svc.ops.get(req.operation),
        svc.service
            .operations
            .iter()
            .find(|o| o.id == req.operation),
    ) else {
        return deny(
            DenyReason::NoGrant,
            format!(
                "service `{}` has no operation `{}`",
                req.service, req.operation
            ),
        );
    };
    let caller = req.caller;
    let supplier = caller
        .supplier
        .as_deref()
        .filter(|s| *s != caller.consumer.as_str());

    let mut denied: Option<&Denial> = None;
    for &d in &op_index.denials {
        let denial = &set.denials[d];
        let hit = denial.hits(&caller.consumer, supplier);
        trace.denial(denial, hit);
        if hit && denied.is_none() {
            denied = Some(denial);
            // The gateway stops at the first; an explanation lists the rest.
            if !trace.wants_all() {
                break;
            }
        }
    }
    if let Some(denial) = denied {
        return deny(
            DenyReason::ExplicitlyDenied,
            format!("access denied by `{}`: {}", denial.id, denial.reason),
        );
    }

    let subject = subject_check(&svc.service, op, req);
    // An end-user-restricted token may only be used about its own person: no grant widens that.
    // A request about nobody (no subject, or a person operation naming none) is not about it.
    // (An invalid subject is left to the grants, which say so.)
    if let Some(person) = caller.person.as_deref()
        && (matches!(subject, Ok(s) if s != Some(person))
            || subject == Err(DenyReason::SubjectMissing))
    {
        return deny(
            DenyReason::TokenPersonMismatch,
            "the token is restricted to one person (`pid`) and this request concerns another person, or none".into(),
        );
    }
    let named = op_index
        .by_consumer
        .get(caller.consumer.as_str())
        .map_or(&[][..], Vec::as_slice);
    let mut allowed: Option<(usize, Option<usize>)> = None;
    let mut best: Option<(DenyReason, usize)> = None;
    for &g in named.iter().chain(&op_index.any_with_consent) {
        let grant = &set.grants[g];
        let outcome = check_grant(grant, op, req, supplier, subject);
        trace.grant(grant, outcome.map(|_| ()));
        match outcome {
            Ok(consent) => {
                if allowed.is_none() {
                    allowed = Some((g, consent));
                }
                if !trace.wants_all() {
                    break;
                }
            }
            Err(reason) => {
                if best.is_none_or(|(r, _)| reason.rank() > r.rank()) {
                    best = Some((reason, g));
                }
            }
        }
    }

    if let Some((g, consent)) = allowed {
        let grant = &set.grants[g];
        return Decision::Allow(Allow {
            grant_id: grant.id.clone(),
            purpose: req.purpose.unwrap_or_default().to_string(),
            legal_basis: grant.legal_basis.clone(),
            consent_id: consent
                .and_then(|i| caller.consents.get(i))
                .map(|c| c.id.clone()),
            fields: Arc::clone(&grant.fields),
            rate_limit: grant.rate_limit,
            rate_key: format!("{}/{}", grant.id, caller.consumer),
        });
    }
    match best {
        Some((reason, g)) => deny(reason, failure_message(reason, &set.grants[g], op, req)),
        None => deny(
            DenyReason::NoGrant,
            format!(
                "consumer `{}` has no grant for operation `{}` of service `{}`",
                caller.consumer, op.id, req.service
            ),
        ),
    }
}

fn deny(reason: DenyReason, message: String) -> Decision {
    Decision::Deny(Deny { reason, message })
}

/// Request-level subject check, applied at the subject stage of each grant.
/// Returns the validated subject (or `None` when the operation has none).
fn subject_check<'a>(
    svc: &Service,
    op: &Operation,
    req: &DecisionRequest<'a>,
) -> Result<Option<&'a str>, DenyReason> {
    let Some(subject) = svc.subject.as_ref().filter(|_| op.has_subject) else {
        return Ok(None);
    };
    let mut occurrences = 0usize;
    let mut mismatch = false;
    for (k, v) in req.params {
        if *k == subject.param {
            occurrences += 1;
            mismatch |= req.subject.is_some_and(|s| s != v);
        }
    }
    // Two values for the person parameter could let the policy check one
    // person while the registry serves another.
    if occurrences > 1 || mismatch {
        return Err(DenyReason::SubjectInvalid);
    }
    match req.subject.filter(|s| !s.is_empty()) {
        None => Err(DenyReason::SubjectMissing),
        Some(s) if !subject.kind.is_valid(s) => Err(DenyReason::SubjectInvalid),
        Some(s) => Ok(Some(s)),
    }
}

/// Checks one grant stage by stage; `Ok` carries the consent used, if any.
fn check_grant(
    grant: &Grant,
    op: &Operation,
    req: &DecisionRequest<'_>,
    supplier: Option<&str>,
    subject: Result<Option<&str>, DenyReason>,
) -> Result<Option<usize>, DenyReason> {
    let caller = req.caller;
    if supplier.is_some_and(|s| !grant.suppliers.iter().any(|x| x == s)) {
        return Err(DenyReason::SupplierNotAllowed);
    }
    if req.now < grant.valid_from {
        return Err(DenyReason::GrantNotYetValid);
    }
    if req.now >= grant.valid_to {
        return Err(DenyReason::GrantExpired);
    }
    if !grant.scopes.iter().all(|s| caller.scopes.contains(s)) {
        return Err(DenyReason::ScopeMissing);
    }
    match req.purpose.filter(|p| !p.is_empty()) {
        None => return Err(DenyReason::PurposeMissing),
        Some(p) if !grant.purposes.iter().any(|x| x == p) => {
            return Err(DenyReason::PurposeNotAllowed);
        }
        Some(_) => {}
    }
    let subject = subject?;
    let Some(requirement) = &grant.consent else {
        return Ok(None);
    };
    // Compilation guarantees consent grants only cover operations with a
    // subject; refuse anyway if that ever stops holding.
    let Some(subject) = subject.filter(|_| op.has_subject) else {
        return Err(DenyReason::SubjectMissing);
    };
    find_consent(
        requirement,
        &caller.consents,
        subject,
        &caller.consumer,
        req.params,
        req.now,
    )
    .map(Some)
}

/// The one-sentence explanation of why `grant` did not apply.
pub(crate) fn failure_message(
    reason: DenyReason,
    grant: &Grant,
    op: &Operation,
    req: &DecisionRequest<'_>,
) -> String {
    let caller = req.caller;
    let g = &grant.id;
    match reason {
        DenyReason::SupplierNotAllowed => format!(
            "supplier `{}` may not act for consumer `{}` under grant `{g}`",
            caller.supplier.as_deref().unwrap_or_default(),
            caller.consumer
        ),
        DenyReason::GrantNotYetValid => format!(
            "grant `{g}` is not valid before {}",
            crate::compile::rfc3339(grant.valid_from)
        ),
        DenyReason::GrantExpired => format!(
            "grant `{g}` expired at {}",
            crate::compile::rfc3339(grant.valid_to)
        ),
        DenyReason::ScopeMissing => {
            let missing: Vec<&str> = grant
                .scopes
                .iter()
                .filter(|s| !caller.scopes.contains(s))
                .map(String::as_str)
                .collect();
            format!(
                "the token lacks scope {} required by grant `{g}`",
                quoted(&missing)
            )
        }
        DenyReason::PurposeMissing => format!(
            "no purpose was declared; grant `{g}` allows {}",
            quoted(&grant.purposes)
        ),
        DenyReason::PurposeNotAllowed => format!(
            "the declared purpose is not allowed by grant `{g}`, which allows {}",
            quoted(&grant.purposes)
        ),
        DenyReason::SubjectMissing => format!(
            "operation `{}` concerns a person, but the request names no subject",
            op.id
        ),
        DenyReason::SubjectInvalid => {
            "the subject identifier is malformed or given more than once".to_string()
        }
        DenyReason::ConsentMissing => format!(
            "grant `{g}` requires the citizen's consent to {} and the token carries none",
            consent_resource(grant)
        ),
        DenyReason::ConsentWrongSubject => {
            "the consent presented was not given by the person this request concerns".to_string()
        }
        DenyReason::ConsentWrongConsumer => format!(
            "the consent presented was given to another organisation than consumer `{}`",
            caller.consumer
        ),
        DenyReason::ConsentNotCovering => {
            let mut text = format!(
                "no consent right covers {} as grant `{g}` requires",
                consent_resource(grant)
            );
            let keys: Vec<&str> = grant
                .consent
                .iter()
                .flat_map(|c| c.metadata.iter().map(|(k, _)| k.as_str()))
                .collect();
            if !keys.is_empty() {
                text.push_str(&format!(" (metadata {})", quoted(&keys)));
            }
            text
        }
        DenyReason::ConsentExpired => "the consent presented has expired".to_string(),
        DenyReason::ConsentNotYetValid => "the consent presented is not yet valid".to_string(),
        DenyReason::NoGrant | DenyReason::ExplicitlyDenied | DenyReason::TokenPersonMismatch => {
            format!(
                "consumer `{}` has no grant for operation `{}` of service `{}`",
                caller.consumer, op.id, grant.service
            )
        }
    }
}

fn consent_resource(grant: &Grant) -> String {
    grant.consent.as_ref().map_or_else(String::new, |c| {
        format!("resource `{}` (action `{}`)", c.resource, c.action)
    })
}

fn quoted<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}
