//! Tollbu's data-sharing policy engine.
//!
//! Reads the TOML policy files in `policies/` (each reads like the agreement
//! it encodes), validates them with `file:line:col` diagnostics, compiles
//! them into an immutable, indexed [`PolicySet`], and answers: may this
//! caller perform this operation about this person for this purpose, now —
//! and which response fields may it see? It also explains decisions, answers
//! "who can read field X", renders a catalogue, and runs policy test files.
//!
//! It deliberately does no I/O beyond reading policy files on request, knows
//! nothing of HTTP, tokens or clocks (the proxy passes the verified caller and
//! the time in), and never writes the audit log. Decisions are deny by
//! default, a denial beats any grant, and the outcome does not depend on the
//! order or names of the files. The language is documented in
//! `docs/policy-language.md`.

#![forbid(unsafe_code)]

mod analysis;
mod compile;
mod consent;
mod decide;
mod error;
mod explain;
mod filter;
pub mod ids;
mod model;
mod overlap;
mod reason;
mod route;
mod syntax;
pub mod tooling;

use std::path::Path;

pub use analysis::{WhoCan, WhoCanConsumers, WhoCanOverride, WhoCanShadow};
pub use consent::{Caller, Consent, ConsentRight};
pub use decide::{Allow, Decision, DecisionRequest, Deny};
pub use error::{Diagnostic, FilterError, PolicyLoadError, Severity};
pub use explain::{ExplainStep, Explanation, StepOutcome};
pub use filter::FieldFilter;
pub use model::{PolicySet, RateLimit};
pub use reason::DenyReason;
pub use route::{MatchedOperation, OperationMatch};

/// A successfully compiled set and the warnings found on the way.
#[derive(Debug)]
pub struct LoadedPolicies {
    pub set: PolicySet,
    pub warnings: Vec<Diagnostic>,
}

impl PolicySet {
    /// Loads every `*.toml` in `dir` except `*.test.toml`.
    pub fn load_dir(dir: &Path) -> Result<LoadedPolicies, PolicyLoadError> {
        Self::load_dir_at(dir, unix_now())
    }

    /// [`PolicySet::load_dir`] with an explicit "now" for expiry warnings.
    pub fn load_dir_at(dir: &Path, now: i64) -> Result<LoadedPolicies, PolicyLoadError> {
        let sources = tooling::read_policy_sources(dir)?;
        compile::compile(&sources, now)
    }

    /// Compiles in-memory sources: `(file name, text)` pairs.
    pub fn from_sources(sources: &[(String, String)]) -> Result<LoadedPolicies, PolicyLoadError> {
        compile::compile(sources, unix_now())
    }

    /// [`PolicySet::from_sources`] with an explicit "now" for expiry warnings.
    pub fn from_sources_at(
        sources: &[(String, String)],
        now: i64,
    ) -> Result<LoadedPolicies, PolicyLoadError> {
        compile::compile(sources, now)
    }

    /// `sha256:<hex>` of the canonical compiled form; recorded with every
    /// audit record so a decision can be traced to the exact policy text.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Service ids, sorted.
    pub fn service_ids(&self) -> impl Iterator<Item = &str> {
        self.service_ids.iter().map(String::as_str)
    }

    /// Whether some grant of `service` lists `purpose`. Any other declared purpose is the
    /// caller's free text, which the audit log does not keep: it could carry a person's number.
    pub fn names_purpose(&self, service: &str, purpose: &str) -> bool {
        self.services
            .get(service)
            .is_some_and(|s| s.purposes.contains(purpose))
    }

    /// Decides a request: deny by default, denials first, then candidate
    /// grants in priority order (`docs/policy-language.md`, "How a request
    /// is decided"). Allocates only the strings of the returned decision.
    pub fn decide(&self, req: &DecisionRequest<'_>) -> Decision {
        decide::evaluate(self, req, &mut decide::NoTrace)
    }

    /// Decides a request and records every denial and grant considered.
    pub fn explain(&self, req: &DecisionRequest<'_>) -> Explanation {
        explain::explain(self, req)
    }

    /// Which grants release `field` (or anything, when `None`) of `service`.
    pub fn who_can(&self, service: &str, field: Option<&str>) -> Vec<WhoCan> {
        analysis::who_can(self, service, field)
    }

    /// A Markdown catalogue of services, operations, fields, grants and
    /// denials, for publishing to consumers and reviewers.
    pub fn catalog_markdown(&self) -> String {
        analysis::catalog_markdown(self)
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests;
