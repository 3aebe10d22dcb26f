use tollbu_devkit::demo_material::{self, CLIENTS};
use tollbu_devkit::people;

#[test]
fn demo_config_loads_and_names_the_demo_people() {
    let config = demo_material::issuer_config().unwrap();
    let ids: Vec<&str> = config
        .clients
        .iter()
        .map(|c| c.client_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "demo-welfare",
            "demo-bank",
            "demo-tax",
            "demo-vendor",
            "demo-suspended"
        ]
    );
    assert_eq!(ids, tollbu_devkit::certs::DEMO_CLIENTS);
    let consent = |id: &str| config.consents.iter().find(|c| c.id == id).unwrap();
    assert_eq!(
        consent(demo_material::CONSENT_KYC_PERSON0).from_pid,
        people::example_pid(0)
    );
    assert_eq!(
        consent(demo_material::CONSENT_INCOME_PERSON0).from_pid,
        people::example_pid(0)
    );
    assert_eq!(
        consent(demo_material::CONSENT_KYC_PERSON1).from_pid,
        people::example_pid(1)
    );
    assert_eq!(
        consent(demo_material::CONSENT_EXPIRED_PERSON1).valid_to,
        "2025-06-30T23:59:59Z"
    );
    assert_eq!(config.consents.len(), 4);
    // Every configured kid is the one demo_material hands to clients.
    for client in &config.clients {
        let (kid, _) = demo_material::client_key(&client.client_id).unwrap();
        assert_eq!(client.keys[0].kid, kid);
    }
    assert_eq!(CLIENTS.len(), 5);
}

#[test]
fn embedded_key_material_is_well_formed() {
    assert!(demo_material::ISSUER_SIGNING_KEY_PEM.contains("BEGIN PRIVATE KEY"));
    assert_eq!(demo_material::AUDIT_PSEUDONYM_KEY.trim_end().len(), 64);
    for pem in [
        demo_material::CA_PEM,
        demo_material::GATEWAY_CERT_PEM,
        demo_material::REGISTRY_CERT_PEM,
    ] {
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
