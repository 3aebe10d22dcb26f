//! Static analysis over a compiled set: "who can read field X of service
//! Y?" and the Markdown catalogue reviewers and consumers read.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::compile::rfc3339;
use crate::filter::path_covers;
use crate::model::{Consumers, Denial, Grant, MetaValue, PolicySet};
use crate::overlap::overlaps;

/// One grant through which `field` can be released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoCan {
    pub grant_id: String,
    pub consumers: WhoCanConsumers,
    pub suppliers: Vec<String>,
    pub operations: Vec<String>,
    pub purposes: Vec<String>,
    pub legal_basis: Option<String>,
    /// The consent resource the grant requires, if any.
    pub consent_resource: Option<String>,
    /// The released leaf paths that fall under the queried field.
    pub fields: Vec<String>,
    pub valid_from: i64,
    pub valid_to: i64,
    /// Denials that override this grant for some (or all) of its consumers,
    /// suppliers or operations: the ids of [`WhoCan::overrides`].
    pub overridden_by: Vec<String>,
    /// What each of those denials takes away.
    pub overrides: Vec<WhoCanOverride>,
    /// The denials together refuse every consumer of the grant on every
    /// operation it covers: it releases nothing while they stand.
    pub overridden_for_all: bool,
    /// Grants the gateway uses instead of this one where both apply (it
    /// uses the first in priority order, and only that grant's fields).
    pub shadowed_by: Vec<WhoCanShadow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhoCanConsumers {
    Listed(Vec<String>),
    AnyWithConsent,
}

/// What one denial takes away from one grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoCanOverride {
    pub denial_id: String,
    /// Consumers of the grant the denial names (for a grant open to any
    /// consumer with consent: every consumer the denial names).
    pub consumers: Vec<String>,
    /// Suppliers the grant allows that the denial names: a request through
    /// one of them is refused, for whichever consumer it acts.
    pub suppliers: Vec<String>,
    /// The grant's operations the denial covers.
    pub operations: Vec<String>,
    /// The denial names every consumer the grant lists.
    pub all_consumers: bool,
    /// The denial covers every operation of the grant.
    pub all_operations: bool,
}

/// Where an earlier grant is used instead of this one: the requests both
/// could allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhoCanShadow {
    /// The grant used instead.
    pub grant_id: String,
    pub consumers: WhoCanConsumers,
    pub operations: Vec<String>,
    pub purposes: Vec<String>,
    /// The period both grants are valid.
    pub valid_from: i64,
    pub valid_to: i64,
}

impl WhoCan {
    /// What limits the grant, one sentence each, for people reading who can see what: the
    /// denials that override it and the grants used instead of it where both apply.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.overridden_for_all {
            notes.push(format!(
                "overridden for all its consumers by denial(s) {}: it releases nothing while they stand",
                crate::compile::list(&self.overridden_by)
            ));
        }
        for o in &self.overrides {
            let mut whom = Vec::new();
            if o.all_consumers {
                whom.push(format!("all its consumers ({})", o.consumers.join(", ")));
            } else if !o.consumers.is_empty() {
                whom.push(format!(
                    "{} {}",
                    plural("consumer", &o.consumers),
                    o.consumers.join(", ")
                ));
            }
            if !o.suppliers.is_empty() {
                whom.push(format!(
                    "requests through {} {}",
                    plural("supplier", &o.suppliers),
                    o.suppliers.join(", ")
                ));
            }
            let on = if o.all_operations {
                String::new()
            } else {
                format!(
                    " on {} {}",
                    plural("operation", &o.operations),
                    o.operations.join(", ")
                )
            };
            notes.push(format!(
                "overridden by denial `{}` for {}{on}",
                o.denial_id,
                whom.join(" and ")
            ));
        }
        for s in &self.shadowed_by {
            let who = match &s.consumers {
                WhoCanConsumers::Listed(l) => format!("{} {}", plural("consumer", l), l.join(", ")),
                WhoCanConsumers::AnyWithConsent => "any consumer with consent".to_string(),
            };
            notes.push(format!(
                "shadowed by grant `{}` for {who}, {} {}, {} {}, {} to {}: where both apply the gateway uses `{}` and releases only its fields",
                s.grant_id,
                plural("operation", &s.operations),
                s.operations.join(", "),
                plural("purpose", &s.purposes),
                s.purposes.join(", "),
                crate::compile::rfc3339(s.valid_from),
                crate::compile::rfc3339(s.valid_to),
                s.grant_id
            ));
        }
        notes
    }
}

/// `word` or `words`, for a list of that many.
fn plural<T>(word: &str, items: &[T]) -> String {
    if items.len() == 1 {
        word.to_string()
    } else {
        format!("{word}s")
    }
}

pub(crate) fn who_can(set: &PolicySet, service: &str, field: Option<&str>) -> Vec<WhoCan> {
    let mut order: Vec<&Grant> = set.grants.iter().filter(|g| g.service == service).collect();
    order.sort_by(|a, b| a.priority_key().cmp(&b.priority_key()));
    let mut shadows: HashMap<&str, Vec<WhoCanShadow>> = HashMap::new();
    for (earlier, later, o) in overlaps(&order) {
        shadows
            .entry(order[later].id.as_str())
            .or_default()
            .push(WhoCanShadow {
                grant_id: order[earlier].id.clone(),
                consumers: match o.consumers {
                    Some(l) => WhoCanConsumers::Listed(l),
                    None => WhoCanConsumers::AnyWithConsent,
                },
                operations: o.operations,
                purposes: o.purposes,
                valid_from: o.from,
                valid_to: o.to,
            });
    }
    set.grants
        .iter()
        .filter(|g| g.service == service)
        .filter_map(|g| {
            let fields: Vec<String> = g
                .fields
                .released()
                .iter()
                .filter(|leaf| field.is_none_or(|f| path_covers(f, leaf)))
                .cloned()
                .collect();
            if fields.is_empty() {
                return None;
            }
            let overrides: Vec<WhoCanOverride> = set
                .denials
                .iter()
                .filter_map(|d| denial_effect(d, g))
                .collect();
            Some(WhoCan {
                grant_id: g.id.clone(),
                consumers: match &g.consumers {
                    Consumers::Listed(l) => WhoCanConsumers::Listed(l.clone()),
                    Consumers::AnyWithConsent => WhoCanConsumers::AnyWithConsent,
                },
                suppliers: g.suppliers.clone(),
                operations: g.operations.clone(),
                purposes: g.purposes.clone(),
                legal_basis: g.legal_basis.clone(),
                consent_resource: g.consent.as_ref().map(|c| c.resource.clone()),
                fields,
                valid_from: g.valid_from,
                valid_to: g.valid_to,
                overridden_by: overrides.iter().map(|o| o.denial_id.clone()).collect(),
                overridden_for_all: overridden_for_all(g, &overrides),
                overrides,
                shadowed_by: shadows.remove(g.id.as_str()).unwrap_or_default(),
            })
        })
        .collect()
}

/// What `d` takes away from `g`, as the gateway decides (step 2 of "How a
/// request is decided" in `docs/policy-language.md`): on the operations
/// both cover, the consumers it names and the suppliers it names that the
/// grant allows. `None` when it takes nothing.
pub(crate) fn denial_effect(d: &Denial, g: &Grant) -> Option<WhoCanOverride> {
    if d.service != g.service {
        return None;
    }
    let operations: Vec<String> = g
        .operations
        .iter()
        .filter(|o| d.operations.as_ref().is_none_or(|ops| ops.contains(o)))
        .cloned()
        .collect();
    let consumers: Vec<String> = match &g.consumers {
        Consumers::Listed(l) => l
            .iter()
            .filter(|c| d.consumers.contains(c))
            .cloned()
            .collect(),
        Consumers::AnyWithConsent => d.consumers.clone(),
    };
    let suppliers: Vec<String> = g
        .suppliers
        .iter()
        .filter(|s| d.suppliers.contains(s))
        .cloned()
        .collect();
    if operations.is_empty() || (consumers.is_empty() && suppliers.is_empty()) {
        return None;
    }
    Some(WhoCanOverride {
        denial_id: d.id.clone(),
        all_consumers: matches!(&g.consumers, Consumers::Listed(l) if l.len() == consumers.len()),
        all_operations: operations.len() == g.operations.len(),
        consumers,
        suppliers,
        operations,
    })
}

/// Every consumer the grant lists is refused on every operation it covers.
fn overridden_for_all(g: &Grant, overrides: &[WhoCanOverride]) -> bool {
    let Consumers::Listed(list) = &g.consumers else {
        return false;
    };
    list.iter().all(|c| {
        g.operations.iter().all(|op| {
            overrides
                .iter()
                .any(|o| o.consumers.contains(c) && o.operations.contains(op))
        })
    })
}

pub(crate) fn catalog_markdown(set: &PolicySet) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Data-sharing catalogue\n");
    let _ = writeln!(out, "Policy version: `{}`\n", set.version);
    for id in &set.service_ids {
        let Some(svc) = set.service(id) else { continue };
        let _ = writeln!(
            out,
            "## Service `{}`{}\n",
            svc.id,
            svc.title
                .as_ref()
                .map_or_else(String::new, |t| format!(" — {t}"))
        );
        if let Some(s) = &svc.subject {
            let _ = writeln!(
                out,
                "Each request concerns one subject: parameter `{}` ({}).\n",
                s.param,
                s.kind.name()
            );
        }
        let _ = writeln!(
            out,
            "| operation | method | path | about |\n|---|---|---|---|"
        );
        for op in &svc.operations {
            let _ = writeln!(
                out,
                "| `{}` | {} | `{}` | {} |",
                op.id,
                op.method,
                op.template.raw,
                op.title.as_deref().unwrap_or("")
            );
        }
        let _ = writeln!(out, "\nFields: {}\n", code_list(&svc.fields));
        let grants: Vec<&Grant> = set.grants.iter().filter(|g| g.service == svc.id).collect();
        if grants.is_empty() {
            let _ = writeln!(out, "No grants: nobody may call this service.\n");
        }
        for g in grants {
            let _ = writeln!(
                out,
                "### Grant `{}`{}\n",
                g.id,
                g.title
                    .as_ref()
                    .map_or_else(String::new, |t| format!(" — {t}"))
            );
            let who = match &g.consumers {
                Consumers::Listed(l) => code_list(l),
                Consumers::AnyWithConsent => {
                    "any organisation holding the citizen's consent".to_string()
                }
            };
            let _ = writeln!(out, "- **Who:** {who}");
            if !g.suppliers.is_empty() {
                let _ = writeln!(
                    out,
                    "- **Suppliers acting for them:** {}",
                    code_list(&g.suppliers)
                );
            }
            let _ = writeln!(out, "- **Operations:** {}", code_list(&g.operations));
            let _ = writeln!(out, "- **Purposes:** {}", code_list(&g.purposes));
            if let Some(l) = &g.legal_basis {
                let _ = writeln!(out, "- **Legal basis:** {l}");
            }
            if let Some(c) = &g.consent {
                let mut text = format!("resource `{}`, action `{}`", c.resource, c.action);
                for (k, v) in &c.metadata {
                    let v = match v {
                        MetaValue::Literal(v) => format!("`{v}`"),
                        MetaValue::Param(p) => format!("the request's `{p}`"),
                    };
                    let _ = write!(text, "; metadata `{k}` covers {v}");
                }
                let _ = writeln!(out, "- **Consent required:** {text}");
            }
            if let Some(a) = &g.agreement {
                let _ = writeln!(out, "- **Agreement:** {a}");
            }
            let _ = writeln!(out, "- **Scopes:** {}", code_list(&g.scopes));
            let _ = writeln!(
                out,
                "- **Fields released:** {}",
                code_list(g.fields.released())
            );
            let _ = writeln!(
                out,
                "- **Valid:** {} to {}",
                rfc3339(g.valid_from),
                rfc3339(g.valid_to)
            );
            if let Some(r) = &g.rate_limit {
                let _ = writeln!(
                    out,
                    "- **Rate limit:** {} requests per {} s",
                    r.requests, r.per_seconds
                );
            }
            let _ = writeln!(out);
        }
        for d in set.denials.iter().filter(|d| d.service == svc.id) {
            let mut who = d.consumers.clone();
            who.extend(d.suppliers.iter().map(|s| format!("{s} (as supplier)")));
            let ops = d
                .operations
                .as_ref()
                .map_or_else(|| "all operations".to_string(), |o| code_list(o));
            let _ = writeln!(
                out,
                "### Denial `{}`\n\n- **Who:** {}\n- **Covers:** {ops}\n- **Reason:** {}\n",
                d.id,
                code_list(&who),
                d.reason
            );
        }
    }
    out
}

fn code_list<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}
