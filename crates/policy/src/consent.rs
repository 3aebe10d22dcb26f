//! The verified caller and the citizen's consent, as the proxy hands them
//! over after token validation, and the check that a consent covers a
//! grant's requirement.

use std::collections::BTreeMap;

use crate::model::{ConsentRequirement, MetaValue};
use crate::reason::DenyReason;

/// Who is calling, from a verified token. Organisation numbers are the nine
/// digits without the `0192:` prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub consumer: String,
    pub supplier: Option<String>,
    pub scopes: Vec<String>,
    pub consents: Vec<Consent>,
    /// The person an end-user-restricted token (`pid`) may be used for: every request with it must
    /// concern that person, whatever the grants allow.
    pub person: Option<String>,
}

/// One `urn:altinn:consent` entry. `from` is the 11-digit national identity
/// number (prefix stripped), `to` the consumer's organisation number; times
/// are unix seconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consent {
    pub id: String,
    pub from: String,
    pub to: String,
    pub consented: i64,
    pub valid_to: i64,
    pub rights: Vec<ConsentRight>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsentRight {
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    pub metadata: BTreeMap<String, String>,
}

/// Finds the first consent that satisfies `req` for this subject, consumer
/// and time, or returns the most specific reason none does.
pub(crate) fn find_consent(
    req: &ConsentRequirement,
    consents: &[Consent],
    subject: &str,
    consumer: &str,
    params: &[(String, String)],
    now: i64,
) -> Result<usize, DenyReason> {
    let mut best = DenyReason::ConsentMissing;
    for (i, c) in consents.iter().enumerate() {
        let outcome = if c.from != subject {
            DenyReason::ConsentWrongSubject
        } else if c.to != consumer {
            DenyReason::ConsentWrongConsumer
        } else if !c.rights.iter().any(|r| right_covers(r, req, params)) {
            DenyReason::ConsentNotCovering
        } else if now < c.consented {
            DenyReason::ConsentNotYetValid
        } else if now >= c.valid_to {
            DenyReason::ConsentExpired
        } else {
            return Ok(i);
        };
        if outcome.rank() > best.rank() {
            best = outcome;
        }
    }
    Err(best)
}

fn right_covers(
    right: &ConsentRight,
    req: &ConsentRequirement,
    params: &[(String, String)],
) -> bool {
    right.resources.contains(&req.resource)
        && right.actions.contains(&req.action)
        && req.metadata.iter().all(|(key, expected)| {
            let Some(given) = right.metadata.get(key) else {
                return false;
            };
            let expected = match expected {
                MetaValue::Literal(v) => v.as_str(),
                MetaValue::Param(name) => match single_param(params, name) {
                    Some(v) => v,
                    None => return false,
                },
            };
            metadata_contains(given, expected)
        })
}

/// The value of parameter `name` when it occurs once, or several times with
/// the same value; `None` when absent or ambiguous.
pub(crate) fn single_param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let mut found: Option<&str> = None;
    for (k, v) in params {
        if k == name {
            match found {
                Some(prev) if prev != v => return None,
                _ => found = Some(v),
            }
        }
    }
    found
}

/// A consent metadata value covers `expected` when equal to it, or when it
/// is a comma-separated list (`"2021,2022"`) with `expected` as a member.
pub(crate) fn metadata_contains(given: &str, expected: &str) -> bool {
    given == expected || given.split(',').any(|part| part.trim() == expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_valued_metadata_contains_whole_members_only() {
        assert!(metadata_contains("2022", "2022"));
        assert!(metadata_contains("2021, 2022", "2022"));
        assert!(!metadata_contains("20221", "2022"));
        assert!(!metadata_contains("2021,2023", "2022"));
        assert!(!metadata_contains("", "2022"));
    }

    #[test]
    fn ambiguous_parameters_yield_nothing() {
        let p = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(single_param(&p(&[("year", "2022")]), "year"), Some("2022"));
        assert_eq!(
            single_param(&p(&[("year", "2022"), ("year", "2022")]), "year"),
            Some("2022")
        );
        assert_eq!(
            single_param(&p(&[("year", "2022"), ("year", "2023")]), "year"),
            None
        );
        assert_eq!(single_param(&p(&[]), "year"), None);
    }
}
