//! Properties: file order does not matter, denials beat grants, an allow
//! always satisfies its grant.

use proptest::prelude::*;

use super::*;

fn arb_request() -> impl Strategy<Value = Req> {
    let consumers = prop::sample::select(vec!["310000019", "310000027", "310000035", "310000078"]);
    let suppliers = prop::option::of(prop::sample::select(vec!["310000043", "310000027"]));
    let paths = prop::sample::select(vec![
        "/persons/01819010001",
        "/persons/15898510015",
        "/persons/search",
        "/stats",
        "/persons/01819010002",
    ]);
    let purposes = prop::option::of(prop::sample::select(vec![
        "benefit-assessment",
        "kyc",
        "case-handling",
        "x",
    ]));
    let scopes = prop::sample::subsequence(vec!["demo:population", "demo:income"], 0..=2);
    let consents = prop::collection::vec(
        (
            prop::sample::select(vec![KARI, OLA]),
            prop::sample::select(vec!["310000019", "310000027"]),
            prop::sample::select(vec!["kyc-res", "other"]),
            -2i64..2,
        )
            .prop_map(|(from, to, res, shift)| {
                consent(from, to, res, NOW + shift * DAY, NOW + (shift + 2) * DAY)
            }),
        0..3,
    )
    .prop_map(|mut cs| {
        for (i, c) in cs.iter_mut().enumerate() {
            c.id = format!("c-{i}");
        }
        cs
    });
    (
        consumers,
        suppliers,
        paths,
        purposes,
        scopes,
        consents,
        -3000i64..3000,
    )
        .prop_map(
            |(consumer, supplier, path, purpose, scopes, consents, days)| Req {
                consumer,
                supplier,
                scopes,
                consents,
                path,
                query: None,
                purpose,
                now: NOW + days * DAY,
                person: None,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn decisions_and_version_do_not_depend_on_file_order_or_names(
        order in Just((0..=GRANTS.len()).collect::<Vec<usize>>()).prop_shuffle(),
        salt in "[a-z]{1,6}",
        reqs in prop::collection::vec(arb_request(), 1..16),
    ) {
        let base = fixture();
        let files: Vec<(String, String)> = order
            .iter()
            .map(|&i| {
                let text = if i == GRANTS.len() { SERVICE } else { GRANTS[i] };
                (format!("{salt}-{}.toml", GRANTS.len() - i), text.to_string())
            })
            .collect();
        let shuffled = PolicySet::from_sources_at(&files, NOW).unwrap().set;
        prop_assert_eq!(base.version(), shuffled.version());
        for r in &reqs {
            prop_assert_eq!(run(&base, r), run(&shuffled, r));
        }
    }

    #[test]
    fn a_denial_beats_any_grant(r in arb_request()) {
        let set = fixture();
        let r = Req { consumer: "310000078", ..r };
        prop_assert_eq!(run(&set, &r).reason(), Some(DenyReason::ExplicitlyDenied));
        // A denial naming a supplier blocks every consumer that uses it.
        let by_supplier = GRANTS.concat() + "[[denial]]\nid = \"vendor\"\nservice = \"population\"\nsupplier = [\"310000043\"]\nreason = \"Vendor suspended\"\n";
        let set = PolicySet::from_sources_at(&sources(&[("s.toml", SERVICE), ("g.toml", &by_supplier)]), NOW).unwrap().set;
        let r = Req { consumer: "310000019", supplier: Some("310000043"), ..r };
        prop_assert_eq!(run(&set, &r).reason(), Some(DenyReason::ExplicitlyDenied));
    }

    #[test]
    fn an_allow_always_satisfies_its_grant(r in arb_request()) {
        let set = fixture();
        if let Decision::Allow(a) = run(&set, &r) {
            let g = set.grants.iter().find(|g| g.id == a.grant_id).unwrap();
            prop_assert!(g.valid_from <= r.now && r.now < g.valid_to);
            prop_assert!(g.purposes.iter().any(|p| Some(p.as_str()) == r.purpose));
            prop_assert!(g.scopes.iter().all(|s| r.scopes.contains(&s.as_str())));
            prop_assert!(g.names_consumer(r.consumer));
            prop_assert!(r.consumer != "310000078");
            if g.consent.is_some() {
                let c = r.consents.iter().find(|c| Some(c.id.as_str()) == a.consent_id.as_deref()).unwrap();
                prop_assert!(c.to == r.consumer && c.consented <= r.now && r.now < c.valid_to);
                prop_assert!(r.path.ends_with(&c.from));
            }
        }
    }
}
