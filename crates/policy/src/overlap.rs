//! Grants that overlap: a request both could allow (same service, a shared
//! operation, purpose and consumer, overlapping validity). The gateway then
//! uses the first in priority order (named consumers before
//! `any-with-consent`, then id) and only its fields; `policy check` warns
//! and `who-can` marks the other as shadowed.
//!
//! Only grants that share a service, an operation, a purpose and a consumer
//! (a listed one, or any at all for an `any-with-consent` grant) are
//! compared, so a set of thousands of agreements does not cost the square
//! of its size at every check and reload.

use std::collections::{BTreeSet, HashMap};

use crate::model::{Consumers, Grant};

/// The requests two grants could both allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overlap {
    /// Consumers both admit, in the earlier grant's order; `None` when both
    /// are open to any consumer with consent.
    pub consumers: Option<Vec<String>>,
    /// Shared operations, in the earlier grant's order.
    pub operations: Vec<String>,
    /// Shared purposes, in the earlier grant's order.
    pub purposes: Vec<String>,
    /// The period both are valid: `from ≤ now < to`.
    pub from: i64,
    pub to: i64,
}

impl Overlap {
    /// One request both could allow, in words: `consumer `x`, operation `o`, purpose `p``.
    pub(crate) fn example(&self) -> String {
        let consumer = match &self.consumers {
            None => "any consumer with consent".to_string(),
            Some(list) => format!("consumer `{}`", list[0]),
        };
        format!(
            "{consumer}, operation `{}`, purpose `{}`",
            self.operations[0], self.purposes[0]
        )
    }
}

/// Every overlapping pair of `order` (grants in priority order) as
/// `(earlier, later, overlap)`, positions in `order`, sorted by earlier then
/// later: where both apply, the gateway uses `order[earlier]`.
pub(crate) fn overlaps(order: &[&Grant]) -> Vec<(usize, usize, Overlap)> {
    candidates(order)
        .into_iter()
        .filter_map(|(a, b)| overlap(order[a], order[b]).map(|o| (a, b, o)))
        .collect()
}

/// The pairs `(i, j)`, `i < j`, of positions in `order` whose grants share a
/// service, an operation, a purpose and a consumer, sorted. Every
/// overlapping pair is among them.
fn candidates(order: &[&Grant]) -> BTreeSet<(usize, usize)> {
    #[derive(Default)]
    struct Bucket {
        all: Vec<usize>,
        any_with_consent: Vec<usize>,
        by_consumer: HashMap<String, Vec<usize>>,
    }
    let mut buckets: HashMap<(&str, &str, &str), Bucket> = HashMap::new();
    for (i, &g) in order.iter().enumerate() {
        for op in &g.operations {
            for purpose in &g.purposes {
                let b = buckets
                    .entry((g.service.as_str(), op.as_str(), purpose.as_str()))
                    .or_default();
                // A grant naming an operation or purpose twice is entered once.
                if b.all.last() == Some(&i) {
                    continue;
                }
                b.all.push(i);
                match &g.consumers {
                    Consumers::AnyWithConsent => b.any_with_consent.push(i),
                    Consumers::Listed(list) => {
                        for c in list {
                            let grants = b.by_consumer.entry(c.clone()).or_default();
                            if grants.last() != Some(&i) {
                                grants.push(i);
                            }
                        }
                    }
                }
            }
        }
    }
    let mut pairs = BTreeSet::new();
    for b in buckets.values() {
        // Positions were pushed in increasing order, so `a < c` below.
        for grants in b.by_consumer.values() {
            for (k, &a) in grants.iter().enumerate() {
                for &c in &grants[k + 1..] {
                    pairs.insert((a, c));
                }
            }
        }
        // An `any-with-consent` grant admits every consumer: it can overlap
        // every grant in the bucket.
        for &a in &b.any_with_consent {
            for &other in &b.all {
                if other != a {
                    pairs.insert((a.min(other), a.max(other)));
                }
            }
        }
    }
    pairs
}

/// The requests both `a` and `b` could allow, if any; lists in `a`'s order.
pub(crate) fn overlap(a: &Grant, b: &Grant) -> Option<Overlap> {
    if a.service != b.service || a.valid_to <= b.valid_from || b.valid_to <= a.valid_from {
        return None;
    }
    let operations = shared(&a.operations, &b.operations);
    let purposes = shared(&a.purposes, &b.purposes);
    let consumers = match (&a.consumers, &b.consumers) {
        (Consumers::AnyWithConsent, Consumers::AnyWithConsent) => None,
        (Consumers::Listed(l), Consumers::AnyWithConsent)
        | (Consumers::AnyWithConsent, Consumers::Listed(l)) => Some(l.clone()),
        (Consumers::Listed(x), Consumers::Listed(y)) => Some(shared(x, y)),
    };
    if operations.is_empty() || purposes.is_empty() || consumers.as_ref().is_some_and(Vec::is_empty)
    {
        return None;
    }
    Some(Overlap {
        consumers,
        operations,
        purposes,
        from: a.valid_from.max(b.valid_from),
        to: a.valid_to.min(b.valid_to),
    })
}

fn shared(a: &[String], b: &[String]) -> Vec<String> {
    a.iter().filter(|x| b.contains(x)).cloned().collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use proptest::prelude::*;

    use super::*;
    use crate::PolicySet;

    /// Every pair, as the lint did before it bucketed: the oracle.
    fn overlaps_all_pairs(order: &[&Grant]) -> Vec<(usize, usize, Overlap)> {
        let mut out = Vec::new();
        for (a, first) in order.iter().enumerate() {
            for (b, second) in order.iter().enumerate().skip(a + 1) {
                if let Some(o) = overlap(first, second) {
                    out.push((a, b, o));
                }
            }
        }
        out
    }

    const SERVICE: &str = r#"[service]
id = "a"
subject = { param = "pid", kind = "national-identity-number" }
fields = ["x"]
[[service.operation]]
id = "op1"
method = "GET"
path = "/1/{pid}"
[[service.operation]]
id = "op2"
method = "GET"
path = "/2/{pid}"
[[service.operation]]
id = "op3"
method = "GET"
path = "/3/{pid}"
"#;

    type GrantShape = (
        Option<Vec<&'static str>>,
        Vec<&'static str>,
        Vec<&'static str>,
        i64,
        i64,
    );

    fn grant_toml(i: usize, (consumers, ops, purposes, from, len): &GrantShape) -> String {
        let quoted = |v: &[&str]| {
            v.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let who = match consumers {
            Some(list) => format!("consumer = [{}]\nlegal_basis = \"L\"\n", quoted(list)),
            None => "consumer = \"any-with-consent\"\nconsent = { resource = \"r\" }\n".into(),
        };
        let year = |y: i64| format!("{y}-01-01T00:00:00Z");
        format!(
            "[[grant]]\nid = \"g{i:02}\"\nservice = \"a\"\n{who}scopes = [\"s\"]\noperations = [{}]\npurposes = [{}]\nfields = [\"x\"]\nvalid_from = {}\nvalid_to = {}\n",
            quoted(ops),
            quoted(purposes),
            year(2020 + from),
            year(2020 + from + len),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Bucketing finds exactly the overlaps comparing every pair finds,
        /// in the same order.
        #[test]
        fn bucketed_overlaps_equal_all_pairs(
            grants in prop::collection::vec(
                (
                    prop::option::weighted(
                        0.8,
                        prop::sample::subsequence(vec!["310000019", "310000027", "310000035"], 1..=3),
                    ),
                    prop::sample::subsequence(vec!["op1", "op2", "op3"], 1..=3),
                    prop::sample::subsequence(vec!["p", "q", "r"], 1..=3),
                    0i64..4,
                    1i64..3,
                ),
                0..14,
            )
        ) {
            let mut text = SERVICE.to_string();
            for (i, g) in grants.iter().enumerate() {
                text.push_str(&grant_toml(i, g));
            }
            let loaded = PolicySet::from_sources_at(&[("a.toml".to_string(), text)], 0).unwrap();
            let mut order: Vec<&Grant> = loaded.set.grants.iter().collect();
            order.sort_by(|a, b| a.priority_key().cmp(&b.priority_key()));
            prop_assert_eq!(overlaps(&order), overlaps_all_pairs(&order));
        }
    }
}
