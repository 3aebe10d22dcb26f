//! Warnings about a valid policy set: grants near or past their end date,
//! grants that overlap (one wins where both apply), grants a denial
//! overrides (for consumers or suppliers, on some or all operations). Warnings never refuse a set, so a reload cannot fail on them.

use crate::analysis::denial_effect;
use crate::error::Severity;
use crate::model::{Consumers, Grant};
use crate::overlap::overlaps;

use super::grant::Rules;
use super::{DAY, Diags, EXPIRY_WARNING, rfc3339};

pub(super) fn warnings(rules: &Rules, now: i64, diags: &mut Diags) {
    for (g, loc) in &rules.grants {
        if g.valid_to <= now {
            diags.push_at(
                loc,
                Severity::Warning,
                format!("grant `{}` expired at {}", g.id, rfc3339(g.valid_to)),
                Some("it no longer allows anything; remove it once the agreement has ended".into()),
            );
        } else if g.valid_to - now <= EXPIRY_WARNING {
            let days = (g.valid_to - now + DAY - 1) / DAY;
            diags.push_at(
                loc,
                Severity::Warning,
                format!(
                    "grant `{}` expires at {} (in {days} day{})",
                    g.id,
                    rfc3339(g.valid_to),
                    if days == 1 { "" } else { "s" }
                ),
                Some(
                    "renew the agreement and extend `valid_to`, or let it lapse deliberately"
                        .into(),
                ),
            );
        }
    }

    let mut order: Vec<&(Grant, super::Loc)> = rules.grants.iter().collect();
    order.sort_by(|a, b| a.0.priority_key().cmp(&b.0.priority_key()));
    let grants: Vec<&Grant> = order.iter().map(|(g, _)| g).collect();
    for (w, l, overlap) in overlaps(&grants) {
        let winner = grants[w];
        let (loser, loc) = order[l];
        diags.push_at(
            loc,
            Severity::Warning,
            format!(
                "grant `{}` overlaps grant `{}` ({}); `{}` is chosen where both apply",
                loser.id,
                winner.id,
                overlap.example(),
                winner.id
            ),
            Some("grants are tried named-consumer first, then by id; narrow the purposes or operations, or merge the grants".into()),
        );
    }

    for (g, loc) in &rules.grants {
        for (d, _) in &rules.denials {
            let Some(mut o) = denial_effect(d, g) else {
                continue;
            };
            // A grant open to any consumer with consent is refused to each
            // consumer a denial names; that is what the denial is for, and
            // nothing to settle between the two.
            if matches!(g.consumers, Consumers::AnyWithConsent) {
                o.consumers.clear();
                if o.suppliers.is_empty() {
                    continue;
                }
            }
            let mut whom = Vec::new();
            if o.all_consumers {
                whom.push(format!("all its consumers ({})", super::list(&o.consumers)));
            } else if !o.consumers.is_empty() {
                whom.push(format!("consumer {}", super::list(&o.consumers)));
            }
            if !o.suppliers.is_empty() {
                whom.push(format!(
                    "requests through supplier {}",
                    super::list(&o.suppliers)
                ));
            }
            let on = if o.all_operations {
                String::new()
            } else {
                format!(" on operation {}", super::list(&o.operations))
            };
            let help = if o.all_consumers && o.all_operations {
                "while the denial stands the grant allows nothing; remove one of them once the matter is settled"
            } else {
                "a denial beats every grant; remove one of them once the matter is settled"
            };
            diags.push_at(
                loc,
                Severity::Warning,
                format!(
                    "denial `{}` overrides grant `{}` for {}{on}",
                    d.id,
                    g.id,
                    whom.join(" and ")
                ),
                Some(help.into()),
            );
        }
    }
}
