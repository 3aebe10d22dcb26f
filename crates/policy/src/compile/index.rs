//! Builds the decision index and the content hash of a compiled set.

use std::collections::HashMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::{Consumers, Denial, Grant, OpIndex, PolicySet, Service, ServiceIndex};

use super::grant::Rules;

pub(super) fn build(mut services: Vec<Service>, rules: Rules) -> PolicySet {
    services.sort_by(|a, b| a.id.cmp(&b.id));
    let mut grants: Vec<Grant> = rules.grants.into_iter().map(|(g, _)| g).collect();
    grants.sort_by(|a, b| a.id.cmp(&b.id));
    let mut denials: Vec<Denial> = rules.denials.into_iter().map(|(d, _)| d).collect();
    denials.sort_by(|a, b| a.id.cmp(&b.id));

    let version = version(&services, &grants, &denials);

    let mut index: HashMap<String, ServiceIndex> = HashMap::new();
    for service in &services {
        let mut ops: HashMap<String, OpIndex> = HashMap::new();
        for op in &service.operations {
            ops.insert(op.id.clone(), OpIndex::default());
        }
        index.insert(
            service.id.clone(),
            ServiceIndex {
                service: service.clone(),
                ops,
                purposes: Default::default(),
            },
        );
    }

    // Grants are visited in id order, so every list below ends up sorted by
    // id; named-consumer lists are consulted before `any_with_consent`.
    for (i, g) in grants.iter().enumerate() {
        let Some(svc) = index.get_mut(&g.service) else {
            continue;
        };
        svc.purposes.extend(g.purposes.iter().cloned());
        for op in &g.operations {
            let Some(entry) = svc.ops.get_mut(op) else {
                continue;
            };
            match &g.consumers {
                Consumers::Listed(list) => {
                    for c in list {
                        entry.by_consumer.entry(c.clone()).or_default().push(i);
                    }
                }
                Consumers::AnyWithConsent => entry.any_with_consent.push(i),
            }
        }
    }
    for (i, d) in denials.iter().enumerate() {
        let Some(svc) = index.get_mut(&d.service) else {
            continue;
        };
        for (op_id, entry) in svc.ops.iter_mut() {
            if d.operations.as_ref().is_none_or(|ops| ops.contains(op_id)) {
                entry.denials.push(i);
            }
        }
    }

    PolicySet {
        service_ids: services.iter().map(|s| s.id.clone()).collect(),
        services: index,
        grants,
        denials,
        version,
    }
}

/// `sha256:<hex>` over a canonical JSON form: every list sorted by id,
/// every set-like list sorted, no file names. Equal policies hash equal
/// however they are spread over files.
fn version(services: &[Service], grants: &[Grant], denials: &[Denial]) -> String {
    #[derive(Serialize)]
    struct Canonical<'a> {
        format: u32,
        services: &'a [Service],
        grants: &'a [Grant],
        denials: &'a [Denial],
    }
    let canonical = Canonical {
        format: 1,
        services,
        grants,
        denials,
    };
    // Serialising plain data with string keys cannot fail.
    let bytes = serde_json::to_vec(&canonical).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}
