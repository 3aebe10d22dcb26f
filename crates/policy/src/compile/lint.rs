//! Warnings about a valid policy set: grants near or past their end date,
//! grants that overlap (one wins where both apply), grants a denial
//! overrides. Warnings never refuse a set, so a reload cannot fail on them.

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
        let Consumers::Listed(consumers) = &g.consumers else {
            continue;
        };
        for (d, _) in rules.denials.iter().filter(|(d, _)| d.service == g.service) {
            let covers_ops = d
                .operations
                .as_ref()
                .is_none_or(|ops| g.operations.iter().all(|o| ops.contains(o)));
            let blocked: Vec<&String> = consumers
                .iter()
                .filter(|c| d.consumers.contains(c))
                .collect();
            if covers_ops && !blocked.is_empty() {
                diags.push_at(
                    loc,
                    Severity::Warning,
                    format!(
                        "denial `{}` overrides grant `{}` for consumer {}",
                        d.id,
                        g.id,
                        super::list(blocked)
                    ),
                    Some(
                        "a denial beats every grant; remove one of them once the matter is settled"
                            .into(),
                    ),
                );
            }
        }
    }
}
