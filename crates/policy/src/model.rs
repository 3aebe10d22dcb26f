//! The compiled, immutable policy set and its decision index.
//!
//! Only `compile` builds these. The index maps service → operation →
//! consumer to the grants that can apply, already in priority order, so a
//! decision looks at a handful of grants whatever the size of the set.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::filter::FieldFilter;
use crate::route::PathTemplate;

/// Requests per window, for the proxy's rate limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct RateLimit {
    pub requests: u32,
    pub per_seconds: u32,
}

/// What identifies the person an operation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum SubjectKind {
    NationalIdentityNumber,
    OrganisationNumber,
}

impl SubjectKind {
    pub(crate) const NAMES: &'static [&'static str] =
        &["national-identity-number", "organisation-number"];

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "national-identity-number" => Some(SubjectKind::NationalIdentityNumber),
            "organisation-number" => Some(SubjectKind::OrganisationNumber),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            SubjectKind::NationalIdentityNumber => "national-identity-number",
            SubjectKind::OrganisationNumber => "organisation-number",
        }
    }

    pub(crate) fn is_valid(self, value: &str) -> bool {
        match self {
            SubjectKind::NationalIdentityNumber => crate::ids::is_valid_pid(value),
            SubjectKind::OrganisationNumber => crate::ids::is_valid_orgno(value),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Subject {
    pub param: String,
    pub kind: SubjectKind,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Operation {
    pub id: String,
    pub title: Option<String>,
    pub method: String,
    pub template: PathTemplate,
    pub query: Vec<String>,
    /// The service's subject parameter is a path or declared query
    /// parameter of this operation, so every request must name a person.
    pub has_subject: bool,
}

impl Operation {
    pub(crate) fn has_param(&self, name: &str) -> bool {
        self.template.params().any(|p| p == name) || self.query.iter().any(|q| q == name)
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Service {
    pub id: String,
    pub title: Option<String>,
    pub subject: Option<Subject>,
    /// Declared leaf paths, sorted.
    pub fields: Vec<String>,
    /// Sorted by operation id.
    pub operations: Vec<Operation>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) enum Consumers {
    Listed(Vec<String>),
    AnyWithConsent,
}

/// A consent metadata constraint's expected value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) enum MetaValue {
    Literal(String),
    /// Must equal the request parameter with this name.
    Param(String),
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConsentRequirement {
    pub resource: String,
    pub action: String,
    pub metadata: Vec<(String, MetaValue)>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Grant {
    pub id: String,
    pub title: Option<String>,
    pub agreement: Option<String>,
    pub service: String,
    pub consumers: Consumers,
    pub suppliers: Vec<String>,
    pub scopes: Vec<String>,
    pub operations: Vec<String>,
    pub purposes: Vec<String>,
    pub legal_basis: Option<String>,
    pub consent: Option<ConsentRequirement>,
    #[serde(serialize_with = "ser_filter")]
    pub fields: Arc<FieldFilter>,
    pub valid_from: i64,
    pub valid_to: i64,
    pub rate_limit: Option<RateLimit>,
}

fn ser_filter<S: serde::Serializer>(f: &Arc<FieldFilter>, s: S) -> Result<S::Ok, S::Error> {
    f.released().serialize(s)
}

impl Grant {
    pub(crate) fn names_consumer(&self, consumer: &str) -> bool {
        match &self.consumers {
            Consumers::Listed(list) => list.iter().any(|c| c == consumer),
            Consumers::AnyWithConsent => true,
        }
    }

    /// Priority when several grants pass: explicitly named consumers before
    /// "any consumer with consent", then grant id.
    pub(crate) fn priority_key(&self) -> (bool, &str) {
        (
            matches!(self.consumers, Consumers::AnyWithConsent),
            &self.id,
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Denial {
    pub id: String,
    pub service: String,
    pub consumers: Vec<String>,
    pub suppliers: Vec<String>,
    /// `None`: every operation of the service.
    pub operations: Option<Vec<String>>,
    pub reason: String,
}

impl Denial {
    pub(crate) fn hits(&self, consumer: &str, supplier: Option<&str>) -> bool {
        self.consumers.iter().any(|c| c == consumer)
            || supplier.is_some_and(|s| self.suppliers.iter().any(|x| x == s))
    }
}

/// Per operation: the denials and grants that can apply, in priority order.
#[derive(Debug, Default)]
pub(crate) struct OpIndex {
    pub denials: Vec<usize>,
    pub by_consumer: HashMap<String, Vec<usize>>,
    pub any_with_consent: Vec<usize>,
}

#[derive(Debug)]
pub(crate) struct ServiceIndex {
    pub service: Service,
    pub ops: HashMap<String, OpIndex>,
    /// Every purpose a grant of the service lists (looked up for each request's record).
    pub purposes: std::collections::HashSet<String>,
}

/// A compiled, validated policy set. Immutable and `Send + Sync`: the proxy
/// holds it in an `Arc` and swaps the `Arc` on reload.
#[derive(Debug)]
pub struct PolicySet {
    pub(crate) services: HashMap<String, ServiceIndex>,
    /// Sorted by id.
    pub(crate) service_ids: Vec<String>,
    /// Sorted by id.
    pub(crate) grants: Vec<Grant>,
    /// Sorted by id.
    pub(crate) denials: Vec<Denial>,
    pub(crate) version: String,
}

impl PolicySet {
    pub(crate) fn service(&self, id: &str) -> Option<&Service> {
        self.services.get(id).map(|s| &s.service)
    }

    pub(crate) fn operation(&self, service: &str, op: &str) -> Option<&Operation> {
        self.service(service)?
            .operations
            .iter()
            .find(|o| o.id == op)
    }
}
