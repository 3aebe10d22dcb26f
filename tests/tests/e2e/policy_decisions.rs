//! Policy decisions and field minimisation through the gateway.

use http::StatusCode;
use tollbu_devkit::demo_material::{
    CONSENT_EXPIRED_PERSON1, CONSENT_INCOME_PERSON0, CONSENT_KYC_PERSON0, CONSENT_KYC_PERSON1,
};
use tollbu_tests::*;

async fn read(env: &Env, token: &str, purpose: Option<&str>, path: &str) -> Answer {
    let mut s = String::new();
    get(
        &format!("{}{path}", env.base()),
        &auth(token, purpose, &mut s),
    )
    .await
}

fn assert_denied(answer: &Answer, code: &str) {
    assert_eq!(
        answer.status,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(
        answer.code(),
        code,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("content-type"), "application/problem+json");
    let detail = answer.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!detail.is_empty(), "a human sentence explains the refusal");
    for i in 0..3 {
        assert!(
            !detail.contains(&example_pid(i)),
            "no identity number in error texts: {detail}"
        );
    }
}

#[tokio::test]
async fn legal_basis_grant_allows_and_each_main_deny_reason_is_reported() {
    let env = Env::start(Options::default()).await;
    let person = format!("/population/persons/{}", example_pid(0));
    let welfare = env.token("demo-welfare", "demo:population", &[]).await;
    assert_eq!(
        read(&env, &welfare, Some("benefit-assessment"), &person)
            .await
            .status,
        StatusCode::OK
    );
    assert_denied(
        &read(&env, &welfare, None, &person).await,
        "purpose_missing",
    );
    assert_denied(
        &read(&env, &welfare, Some("marketing"), &person).await,
        "purpose_not_allowed",
    );

    let tax = env.token("demo-tax", "demo:income", &[]).await;
    let income = format!("/income/persons/{}/income/2022", example_pid(0));
    let answer = read(&env, &tax, Some("tax-assessment"), &income).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.json()["items"].is_array(),
        "the tax grant sees the items"
    );
    // The tax authority has no agreement with the population registry.
    let tax_pop = env.token("demo-tax", "demo:income", &[]).await;
    let answer = read(&env, &tax_pop, Some("tax-assessment"), &person).await;
    assert!(answer.status == StatusCode::FORBIDDEN, "{:?}", answer.body);

    let suspended = env.token("demo-suspended", "demo:population", &[]).await;
    assert_denied(
        &read(&env, &suspended, Some("case-handling"), &person).await,
        "explicitly_denied",
    );

    // A bank without consent gets nothing.
    let bank = env.token("demo-bank", "demo:population", &[]).await;
    assert_denied(
        &read(&env, &bank, Some("kyc"), &person).await,
        "consent_missing",
    );

    let unknown_operation = read(
        &env,
        &welfare,
        Some("benefit-assessment"),
        "/population/persons",
    )
    .await;
    assert_eq!(unknown_operation.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown_operation.code(), "unknown_operation");
}

#[tokio::test]
async fn consent_is_checked_for_person_consumer_time_and_metadata() {
    let env = Env::start(Options::default()).await;
    let bank = env
        .token("demo-bank", "demo:population", &[CONSENT_KYC_PERSON0])
        .await;
    let person0 = format!("/population/persons/{}", example_pid(0));
    let person1 = format!("/population/persons/{}", example_pid(1));
    let answer = read(&env, &bank, Some("kyc"), &person0).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let body = answer.json();
    assert!(body["name"].is_object() && body["address"].is_object());
    assert!(
        body.get("marital_status").is_none(),
        "KYC sees name and address only"
    );
    // Person 0's consent does not open person 1's record.
    assert_denied(
        &read(&env, &bank, Some("kyc"), &person1).await,
        "consent_wrong_subject",
    );

    // Income: 2022 is consented, 2021 is not.
    let income = env
        .token("demo-bank", "demo:income", &[CONSENT_INCOME_PERSON0])
        .await;
    let answer = read(
        &env,
        &income,
        Some("loan-application"),
        &format!("/income/persons/{}/income/2022", example_pid(0)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    assert_eq!(body["year"], 2022);
    assert!(
        body.get("items").is_none() && body.get("pid").is_none(),
        "only year and total: {body}"
    );
    assert_denied(
        &read(
            &env,
            &income,
            Some("loan-application"),
            &format!("/income/persons/{}/income/2021", example_pid(0)),
        )
        .await,
        "consent_not_covering",
    );

    // An expired consent: the issuer will not issue it any more, so a token
    // minted while it was valid is stood in for by one signed with the issuer's key.
    let mut claims = env
        .issuer()
        .access_token_claims("demo-bank", "demo:income")
        .unwrap();
    claims["authorization_details"] =
        serde_json::json!([env.issuer().consent_entry(CONSENT_EXPIRED_PERSON1).unwrap()]);
    let expired = env
        .issuer()
        .sign_access_token(serde_json::json!({}), claims)
        .unwrap();
    assert_denied(
        &read(
            &env,
            &expired,
            Some("loan-application"),
            &format!("/income/persons/{}/income/2022", example_pid(1)),
        )
        .await,
        "consent_expired",
    );

    // Person 1's KYC consent works for person 1.
    let bank1 = env
        .token("demo-bank", "demo:population", &[CONSENT_KYC_PERSON1])
        .await;
    assert_eq!(
        read(&env, &bank1, Some("kyc"), &person1).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn consent_for_another_consumer_is_refused() {
    let env = Env::start(Options::default()).await;
    // A genuine consent entry to the bank, carried in a token for the welfare agency.
    let entry = env.issuer().consent_entry(CONSENT_KYC_PERSON0).unwrap();
    let mut claims = env
        .issuer()
        .access_token_claims("demo-welfare", "demo:population")
        .unwrap();
    claims["authorization_details"] = serde_json::json!([entry]);
    let token = env
        .issuer()
        .sign_access_token(serde_json::json!({}), claims)
        .unwrap();
    assert_denied(
        &read(
            &env,
            &token,
            Some("kyc"),
            &format!("/population/persons/{}", example_pid(0)),
        )
        .await,
        "consent_wrong_consumer",
    );
}

#[tokio::test]
async fn nested_objects_and_arrays_are_filtered_to_the_grant() {
    let grant = r#"
[[grant]]
id = "eligibility"
consumer = ["310000019"]
scopes = ["demo:population"]
operations = ["get-person"]
purposes = ["benefit-assessment"]
legal_basis = "Test basis"
fields = ["name.given", "address.city", "citizenships[].country"]
valid_from = 2024-01-01T00:00:00Z
valid_to = 2030-12-31T23:59:59Z
"#;
    let dir = policy_dir(&format!("{POPULATION_SERVICE_TOML}{grant}"));
    let env = Env::start(Options {
        policies: Some(dir.path().to_path_buf()),
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let answer = read(
        &env,
        &token,
        Some("benefit-assessment"),
        &format!("/population/persons/{}", example_pid(5)),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let body = answer.json();
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
    assert_eq!(
        body["name"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["given"]
    );
    assert_eq!(
        body["address"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["city"]
    );
    let citizenships = body["citizenships"].as_array().unwrap();
    assert!(!citizenships.is_empty());
    for c in citizenships {
        assert_eq!(
            c.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["country"],
            "{body}"
        );
    }
}
