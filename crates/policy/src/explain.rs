//! Explanations: the decision plus every denial and grant of the service,
//! and why each did or did not apply. For `tollbu policy explain` and for
//! support staff; never prints the subject's identifier.

use std::fmt;

use crate::decide::{self, Decision, DecisionRequest, Trace};
use crate::model::{Denial, Grant, PolicySet};
use crate::reason::DenyReason;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub decision: Decision,
    pub steps: Vec<ExplainStep>,
    request: String,
}

/// One rule and what it contributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainStep {
    /// `grant `id`` or `denial `id``.
    pub rule: String,
    pub outcome: StepOutcome,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The rule decided the request (the chosen grant, or a hit denial).
    Decisive,
    /// The grant would also allow, but a higher-priority grant was chosen.
    AlsoAllows,
    /// The rule was a candidate but failed a check.
    Failed(DenyReason),
    /// A denial that also names the caller, after the decisive one.
    AlsoDenies,
    /// The rule does not concern this consumer or operation.
    NotApplicable,
    /// A grant for this consumer and operation that was never checked,
    /// because a denial refused the request first.
    NotReached,
}

enum Event {
    Denial {
        id: String,
        hit: bool,
    },
    Grant {
        id: String,
        outcome: Result<(), DenyReason>,
    },
}

#[derive(Default)]
struct Recorder {
    events: Vec<Event>,
}

impl Trace for Recorder {
    fn denial(&mut self, denial: &Denial, hit: bool) {
        self.events.push(Event::Denial {
            id: denial.id.clone(),
            hit,
        });
    }
    fn grant(&mut self, grant: &Grant, outcome: Result<(), DenyReason>) {
        self.events.push(Event::Grant {
            id: grant.id.clone(),
            outcome,
        });
    }
    fn wants_all(&self) -> bool {
        true
    }
}

pub(crate) fn explain(set: &PolicySet, req: &DecisionRequest<'_>) -> Explanation {
    let mut rec = Recorder::default();
    let decision = decide::evaluate(set, req, &mut rec);
    let chosen = match &decision {
        Decision::Allow(a) => Some(a.grant_id.as_str()),
        Decision::Deny(_) => None,
    };
    let op = set.operation(req.service, req.operation);
    let mut steps = Vec::new();
    let mut grant_steps = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    // The first denial that names the caller decides; the gateway stops there.
    let mut decisive_denial: Option<&str> = None;
    for event in &rec.events {
        let (id, outcome) = match event {
            Event::Grant { id, outcome } => (id, outcome),
            Event::Denial { id: denial_id, hit } => {
                let (outcome, detail) = match (*hit, decisive_denial) {
                    (false, _) => (
                        StepOutcome::NotApplicable,
                        "names neither the consumer nor the supplier".to_string(),
                    ),
                    (true, None) => {
                        decisive_denial = Some(denial_id.as_str());
                        (
                            StepOutcome::Decisive,
                            "names the consumer or supplier; a denial beats every grant"
                                .to_string(),
                        )
                    }
                    (true, Some(first)) => (
                        StepOutcome::AlsoDenies,
                        format!("names the consumer or supplier too, but `{first}` comes first"),
                    ),
                };
                steps.push(ExplainStep {
                    rule: format!("denial `{denial_id}`"),
                    outcome,
                    detail,
                });
                continue;
            }
        };
        seen.push(id.clone());
        let Some(grant) = set.grants.iter().find(|g| g.id == *id) else {
            continue;
        };
        let (outcome, detail) = match outcome {
            Ok(()) if Some(id.as_str()) == chosen => (StepOutcome::Decisive, allow_detail(grant)),
            Ok(()) => (
                StepOutcome::AlsoAllows,
                "would also allow, but a grant earlier in priority order was chosen".to_string(),
            ),
            Err(reason) => (
                StepOutcome::Failed(*reason),
                match op {
                    Some(op) => format!(
                        "{}: {}",
                        reason.code(),
                        decide::failure_message(*reason, grant, op, req)
                    ),
                    None => reason.code().to_string(),
                },
            ),
        };
        grant_steps.push(ExplainStep {
            rule: format!("grant `{id}`"),
            outcome,
            detail,
        });
    }
    // Denials of the service for other operations, so every denial is listed.
    if op.is_some() {
        for denial in set.denials.iter().filter(|d| {
            d.service == req.service
                && d.operations
                    .as_ref()
                    .is_some_and(|ops| !ops.iter().any(|o| o == req.operation))
        }) {
            steps.push(ExplainStep {
                rule: format!("denial `{}`", denial.id),
                outcome: StepOutcome::NotApplicable,
                detail: format!("does not cover operation `{}`", req.operation),
            });
        }
    }
    steps.append(&mut grant_steps);
    // Grants of the service that were not candidates, or not reached, so
    // the reader sees the whole agreement landscape.
    for grant in set
        .grants
        .iter()
        .filter(|g| g.service == req.service && !seen.contains(&g.id))
    {
        let (outcome, detail) = if !grant.operations.iter().any(|o| o == req.operation) {
            (
                StepOutcome::NotApplicable,
                format!("does not cover operation `{}`", req.operation),
            )
        } else if !grant.names_consumer(&req.caller.consumer) {
            (
                StepOutcome::NotApplicable,
                format!("does not name consumer `{}`", req.caller.consumer),
            )
        } else if let Some(denial) = decisive_denial {
            (
                StepOutcome::NotReached,
                format!("not reached: denial `{denial}` refuses the request before any grant"),
            )
        } else {
            (StepOutcome::NotApplicable, "not reached".to_string())
        };
        steps.push(ExplainStep {
            rule: format!("grant `{}`", grant.id),
            outcome,
            detail,
        });
    }
    Explanation {
        decision,
        steps,
        request: describe(req),
    }
}

fn allow_detail(grant: &Grant) -> String {
    let mut basis = Vec::new();
    if let Some(l) = &grant.legal_basis {
        basis.push(format!("legal basis: {l}"));
    }
    if let Some(c) = &grant.consent {
        basis.push(format!("consent to `{}`", c.resource));
    }
    format!("allows ({})", basis.join("; "))
}

fn describe(req: &DecisionRequest<'_>) -> String {
    let c = req.caller;
    let mut s = format!("consumer `{}`", c.consumer);
    if let Some(sup) = &c.supplier {
        s.push_str(&format!(" via supplier `{sup}`"));
    }
    s.push_str(&format!(
        ", service `{}`, operation `{}`, purpose {}, subject {}, scopes [{}], {} consent(s), at {}",
        req.service,
        req.operation,
        req.purpose
            .map_or_else(|| "(none)".to_string(), |p| format!("`{p}`")),
        if req.subject.is_some() {
            "given"
        } else {
            "(none)"
        },
        c.scopes.join(" "),
        c.consents.len(),
        crate::compile::rfc3339(req.now),
    ));
    s
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "request: {}", self.request)?;
        for step in &self.steps {
            let tag = match step.outcome {
                StepOutcome::Decisive => "DECISIVE",
                StepOutcome::AlsoAllows => "also allows",
                StepOutcome::Failed(_) => "fails",
                StepOutcome::AlsoDenies => "also denies",
                StepOutcome::NotApplicable => "n/a",
                StepOutcome::NotReached => "n/a (denied)",
            };
            writeln!(f, "  {} [{tag}]: {}", step.rule, step.detail)?;
        }
        match &self.decision {
            Decision::Allow(a) => {
                write!(
                    f,
                    "decision: allow by grant `{}`; fields released: {}",
                    a.grant_id,
                    a.fields.released().join(", ")
                )
            }
            Decision::Deny(d) => write!(f, "decision: deny ({}): {}", d.reason.code(), d.message),
        }
    }
}
