//! Operations: rate limits, reload, readiness.

use http::StatusCode;
use tollbu_audit::tooling::{self, Query};
use tollbu_tests::*;

const LIMITED_POLICY: &str = r#"
[service]
id = "population"
subject = { param = "pid", kind = "national-identity-number" }
fields = ["pid", "name.given", "name.family", "birth_date", "address.street", "address.postal_code",
          "address.city", "marital_status", "citizenships[].country", "citizenships[].since"]

[[service.operation]]
id = "get-person"
method = "GET"
path = "/persons/{pid}"

[[grant]]
id = "tight"
consumer = ["310000019"]
scopes = ["demo:population"]
operations = ["get-person"]
purposes = ["benefit-assessment"]
legal_basis = "Test basis"
fields = ["name"]
valid_from = 2024-01-01T00:00:00Z
valid_to = 2030-12-31T23:59:59Z
rate_limit = { requests = 2, per_seconds = 60 }
"#;

#[tokio::test]
async fn rate_limit_per_consumer_and_grant_gives_429_with_headers_and_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("population.toml"), LIMITED_POLICY).unwrap();
    let mut env = Env::start(Options {
        policies: Some(dir.path().to_path_buf()),
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let url = format!("{}/population/persons/{}", env.base(), example_pid(0));
    let mut s = String::new();
    for _ in 0..2 {
        assert_eq!(
            get(&url, &auth(&token, Some("benefit-assessment"), &mut s))
                .await
                .status,
            StatusCode::OK
        );
    }
    let limited = get(&url, &auth(&token, Some("benefit-assessment"), &mut s)).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.code(), "rate_limited");
    let retry: u64 = limited.header("retry-after").parse().unwrap();
    assert!((1..=30).contains(&retry), "retry-after {retry}");
    assert_eq!(limited.header("ratelimit-policy"), "\"grant\";q=2;w=60");
    assert!(limited.header("ratelimit").starts_with("\"grant\";r=0;t="));
    env.stop_gateway().await;
    let denied = Query {
        decision: Some(tollbu_audit::Decision::Deny),
        ..Query::default()
    };
    let report = tooling::query(&env.audit_dir(), &denied, None, true);
    assert!(
        report.text.contains("\"reason\":\"rate_limited\""),
        "{}",
        report.text
    );
}

#[tokio::test]
async fn broken_policy_reload_is_refused_and_the_old_set_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["population.toml", "income.toml"] {
        std::fs::copy(policies_dir().join(name), dir.path().join(name)).unwrap();
    }
    let env = Env::start(Options {
        policies: Some(dir.path().to_path_buf()),
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let url = format!("{}/population/persons/{}", env.base(), example_pid(0));
    let mut s = String::new();
    assert_eq!(
        get(&url, &auth(&token, Some("benefit-assessment"), &mut s))
            .await
            .status,
        StatusCode::OK
    );
    let version_before =
        get(&format!("{}/readyz", env.admin()), &[]).await.json()["policy_version"].clone();

    // A broken file: unknown field in a grant.
    let good = std::fs::read_to_string(dir.path().join("population.toml")).unwrap();
    std::fs::write(
        dir.path().join("population.toml"),
        good.replace(
            "purposes = [\"benefit-assessment\"]",
            "purposes = [\"benefit-assessment\"]\nsurprise = 1",
        ),
    )
    .unwrap();
    let refused = post(&format!("{}/admin/reload", env.admin())).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    assert!(
        refused.json()["error"]
            .as_str()
            .unwrap()
            .contains("population.toml:"),
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    assert_eq!(
        get(&url, &auth(&token, Some("benefit-assessment"), &mut s))
            .await
            .status,
        StatusCode::OK,
        "old set serves"
    );
    let ready = get(&format!("{}/readyz", env.admin()), &[]).await.json();
    assert_eq!(ready["policy_version"], version_before);
    assert!(
        ready["last_reload_error"]
            .as_str()
            .unwrap()
            .contains("population.toml")
    );
    let metrics =
        String::from_utf8_lossy(&get(&format!("{}/metrics", env.admin()), &[]).await.body)
            .to_string();
    assert!(
        metrics.contains("tollbu_reload_failures_total 1"),
        "{metrics}"
    );

    // A valid change: the welfare agency's purpose is renamed.
    std::fs::write(
        dir.path().join("population.toml"),
        good.replace("\"benefit-assessment\"", "\"benefit-review\""),
    )
    .unwrap();
    let applied = post(&format!("{}/admin/reload", env.admin())).await;
    assert_eq!(
        applied.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&applied.body)
    );
    assert_eq!(
        applied.json()["report"]["keys_refetched"],
        false,
        "issuer keys are kept across a reload"
    );
    let old_purpose = get(&url, &auth(&token, Some("benefit-assessment"), &mut s)).await;
    assert_eq!(old_purpose.code(), "purpose_not_allowed");
    assert_eq!(
        get(&url, &auth(&token, Some("benefit-review"), &mut s))
            .await
            .status,
        StatusCode::OK
    );
    let ready = get(&format!("{}/readyz", env.admin()), &[]).await.json();
    assert_ne!(ready["policy_version"], version_before);
    assert!(ready["last_reload_error"].is_null());
}
