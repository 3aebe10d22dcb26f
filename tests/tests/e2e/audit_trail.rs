//! Every decided request leaves a durable, verifiable, pseudonymised record.

use http::StatusCode;
use tollbu_audit::tooling::{self, Query};
use tollbu_tests::*;

#[tokio::test]
async fn requests_are_recorded_with_their_decision_and_no_identity_number_in_clear() {
    let mut env = Env::start(Options::default()).await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let pid = example_pid(7);
    let mut s = String::new();
    let allowed = get(
        &format!("{}/population/persons/{pid}", env.base()),
        &auth(&token, Some("benefit-assessment"), &mut s),
    )
    .await;
    assert_eq!(allowed.status, StatusCode::OK);
    let denied = get(
        &format!("{}/population/persons/{pid}", env.base()),
        &auth(&token, Some("marketing"), &mut s),
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let unauthenticated = get(&format!("{}/population/persons/{pid}", env.base()), &[]).await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
    let request_id = allowed.header("x-request-id");
    env.stop_gateway().await;

    let audit_dir = env.audit_dir();
    let key = certs_dir().join("audit-pseudonym.key");
    let report = tooling::verify(&audit_dir, &[], None);
    assert!(report.ok, "{}", report.text);

    let query = Query {
        subject: Some(pid.clone()),
        ..Query::default()
    };
    let found = tooling::query(&audit_dir, &query, Some(&key), true);
    assert!(found.ok, "{}", found.text);
    let records: Vec<serde_json::Value> = found
        .text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(
        records.len(),
        2,
        "allowed and denied requests about the person: {}",
        found.text
    );
    let allow = records
        .iter()
        .find(|r| r["decision"] == "allow")
        .expect("allow record");
    assert_eq!(allow["request_id"], request_id.as_str());
    assert_eq!(allow["consumer"], "0192:310000019");
    assert_eq!(allow["client_id"], "demo-welfare");
    assert_eq!(allow["service"], "population");
    assert_eq!(allow["operation"], "get-person");
    assert_eq!(allow["path_template"], "/persons/{pid}");
    assert_eq!(allow["purpose"], "benefit-assessment");
    assert_eq!(allow["grant_id"], "welfare-benefit-assessment");
    assert!(
        allow["legal_basis"]
            .as_str()
            .unwrap()
            .contains("Folketrygdloven")
    );
    assert_eq!(allow["upstream_status"], 200);
    assert!(
        allow["policy_version"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(allow["trace_id"].as_str().unwrap().len(), 32);
    let released: Vec<&str> = allow["fields_released"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        released.contains(&"name.given") && !released.contains(&"birth_date"),
        "{released:?}"
    );
    let sent = sha256_hex(&allowed.body);
    assert_eq!(
        allow["response_sha256"],
        sent.as_str(),
        "hash of the body as sent"
    );
    let deny = records
        .iter()
        .find(|r| r["decision"] == "deny")
        .expect("deny record");
    assert_eq!(deny["reason"], "purpose_not_allowed");

    let all = tooling::query(&audit_dir, &Query::default(), None, true);
    assert_eq!(
        all.text.lines().count(),
        3,
        "the unauthenticated request is recorded too: {}",
        all.text
    );

    for (path, bytes) in all_bytes_under(&audit_dir) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(&pid),
            "identity number in clear in {}",
            path.display()
        );
        assert!(
            !text.contains(&token[20..80]),
            "token in {}",
            path.display()
        );
    }
}

#[tokio::test]
async fn a_restarted_gateway_continues_the_same_verifiable_log() {
    let mut env = Env::start(Options::default()).await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let mut s = String::new();
    for i in 0..5 {
        let answer = get(
            &format!("{}/population/persons/{}", env.base(), example_pid(i)),
            &auth(&token, Some("benefit-assessment"), &mut s),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    env.stop_gateway().await;
    let audit_dir = env.audit_dir();
    let kept = audit_dir.join("checkpoint");
    let kept_copy = env.state_dir.path().join("kept-checkpoint");
    std::fs::copy(&kept, &kept_copy).unwrap();
    assert!(
        std::fs::read_to_string(&kept_copy)
            .unwrap()
            .contains("\n5\n"),
        "final checkpoint covers all five"
    );

    // Same config and directory, new gateway: the log continues.
    env.restart_gateway().await;
    for i in 0..3 {
        let answer = get(
            &format!("{}/population/persons/{}", env.base(), example_pid(i)),
            &auth(&token, Some("benefit-assessment"), &mut s),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    env.stop_gateway().await;
    let report = tooling::verify(&audit_dir, &[kept_copy], None);
    assert!(report.ok, "{}", report.text);
    assert!(
        std::fs::read_to_string(&kept).unwrap().contains("\n8\n"),
        "the log grew from 5 to 8"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
