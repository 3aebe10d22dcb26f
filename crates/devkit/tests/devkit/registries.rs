use http::{Method, StatusCode};
use tokio::net::TcpListener;
use tollbu_devkit::registries::{FIRST_INCOME_YEAR, LAST_INCOME_YEAR};
use tollbu_devkit::{RegistryHandle, people, start_income, start_population};

use crate::http::{Reply, get, send};

async fn population() -> RegistryHandle {
    start_population(TcpListener::bind("127.0.0.1:0").await.unwrap(), None)
        .await
        .unwrap()
}

async fn income() -> RegistryHandle {
    start_income(TcpListener::bind("127.0.0.1:0").await.unwrap(), None)
        .await
        .unwrap()
}

/// A well-formed identity number (real month, so never synthetic) of nobody.
fn unknown_pid() -> String {
    (0..1000)
        .find_map(|n| tollbu_policy::ids::complete_pid(&format!("010190{n:03}")))
        .unwrap()
}

#[track_caller]
fn assert_problem(reply: &Reply, status: StatusCode, kind: &str) {
    assert_eq!(reply.status, status);
    assert_eq!(reply.content_type(), "application/problem+json");
    let body = reply.json();
    assert_eq!(body["status"], status.as_u16());
    assert!(body["type"].as_str().unwrap().ends_with(kind), "{body}");
}

#[tokio::test]
async fn population_answers_with_the_person() {
    let registry = population().await;
    let person = people::person(7).unwrap();
    let reply = get(&format!("{}/persons/{}", registry.base_url(), person.pid)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type(), "application/json");
    let body = reply.json();
    assert_eq!(body["pid"], person.pid);
    assert_eq!(body["name"]["given"], person.name.given);
    assert_eq!(body["name"]["family"], person.name.family);
    assert_eq!(
        body["birth_date"],
        format!(
            "{:04}-{:02}-{:02}",
            person.birth_date.year(),
            u8::from(person.birth_date.month()),
            person.birth_date.day()
        )
    );
    assert_eq!(body["address"]["street"], person.address.street);
    assert_eq!(body["address"]["postal_code"], person.address.postal_code);
    assert_eq!(body["address"]["city"], person.address.city);
    assert_eq!(body["marital_status"], person.marital_status);
    assert_eq!(
        body["citizenships"][0]["country"],
        person.citizenships[0].country
    );
    assert!(body["citizenships"][0]["since"].is_string());
    registry.shutdown().await;
}

#[tokio::test]
async fn population_errors() {
    let registry = population().await;
    let base = registry.base_url();
    // Valid check digits, nobody by that number (real-month date, not synthetic).
    let unknown = unknown_pid();
    assert_problem(
        &get(&format!("{base}/persons/{unknown}")).await,
        StatusCode::NOT_FOUND,
        "unknown-person",
    );
    let mut bad_check = people::example_pid(0);
    let last = bad_check.pop().unwrap();
    bad_check.push(if last == '0' { '1' } else { '0' });
    assert_problem(
        &get(&format!("{base}/persons/{bad_check}")).await,
        StatusCode::BAD_REQUEST,
        "malformed-pid",
    );
    assert_problem(
        &get(&format!("{base}/persons/abc")).await,
        StatusCode::BAD_REQUEST,
        "malformed-pid",
    );
    assert_problem(
        &get(&format!("{base}/nothing/here")).await,
        StatusCode::NOT_FOUND,
        "unknown-path",
    );
    // The income route does not exist on the population registry.
    let pid = people::example_pid(0);
    assert_problem(
        &get(&format!("{base}/persons/{pid}/income/2022")).await,
        StatusCode::NOT_FOUND,
        "unknown-path",
    );
    let reply = send(Method::DELETE, &format!("{base}/persons/{pid}"), &[], "").await;
    assert_problem(&reply, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed");
    assert_eq!(reply.headers["allow"], "GET");
}

#[tokio::test]
async fn income_answers_per_year() {
    let registry = income().await;
    let adult = people::all()
        .iter()
        .find(|p| p.birth_date.year() < 1980)
        .unwrap();
    let reply = get(&format!(
        "{}/persons/{}/income/2022",
        registry.base_url(),
        adult.pid
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["pid"], adult.pid);
    assert_eq!(body["year"], 2022);
    let items = body["items"].as_array().unwrap();
    assert!(!items.is_empty());
    let sum: u64 = items.iter().map(|i| i["amount"].as_u64().unwrap()).sum();
    assert_eq!(body["total"].as_u64().unwrap(), sum);
    for item in items {
        assert!(
            ["salary", "benefit", "pension", "capital_income"]
                .contains(&item["kind"].as_str().unwrap())
        );
        assert!(tollbu_policy::ids::is_valid_orgno(
            item["payer"].as_str().unwrap()
        ));
    }
    // Deterministic.
    let again = get(&format!(
        "{}/persons/{}/income/2022",
        registry.base_url(),
        adult.pid
    ))
    .await;
    assert_eq!(again.body, reply.body);
}

#[tokio::test]
async fn income_errors() {
    let registry = income().await;
    let base = registry.base_url();
    let pid = people::example_pid(3);
    for year in [FIRST_INCOME_YEAR, LAST_INCOME_YEAR] {
        assert_eq!(
            get(&format!("{base}/persons/{pid}/income/{year}"))
                .await
                .status,
            StatusCode::OK
        );
    }
    assert_problem(
        &get(&format!("{base}/persons/{pid}/income/2014")).await,
        StatusCode::NOT_FOUND,
        "unknown-year",
    );
    assert_problem(
        &get(&format!("{base}/persons/{pid}/income/2026")).await,
        StatusCode::NOT_FOUND,
        "unknown-year",
    );
    assert_problem(
        &get(&format!("{base}/persons/{pid}/income/20x2")).await,
        StatusCode::BAD_REQUEST,
        "malformed-year",
    );
    assert_problem(
        &get(&format!("{base}/persons/{pid}/income/+222")).await,
        StatusCode::BAD_REQUEST,
        "malformed-year",
    );
    assert_problem(
        &get(&format!("{base}/persons/123/income/2022")).await,
        StatusCode::BAD_REQUEST,
        "malformed-pid",
    );
    let unknown = unknown_pid();
    assert_problem(
        &get(&format!("{base}/persons/{unknown}/income/2022")).await,
        StatusCode::NOT_FOUND,
        "unknown-person",
    );
    assert_problem(
        &get(&format!("{base}/persons/{pid}")).await,
        StatusCode::NOT_FOUND,
        "unknown-path",
    );
    let reply = send(
        Method::POST,
        &format!("{base}/persons/{pid}/income/2022"),
        &[],
        "x",
    )
    .await;
    assert_problem(&reply, StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed");
}

#[tokio::test]
async fn both_registries_echo_the_headers_they_received() {
    for registry in [population().await, income().await] {
        let reply = send(
            Method::GET,
            &format!("{}/debug/echo-headers", registry.base_url()),
            &[
                ("x-tollbu-consumer", "0192:310000019"),
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
            ],
            "",
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let headers = reply.json();
        assert_eq!(headers["x-tollbu-consumer"], "0192:310000019");
        assert_eq!(
            headers["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert!(headers.get("authorization").is_none());
        registry.shutdown().await;
    }
}

#[tokio::test]
async fn minors_have_empty_income_records() {
    let child = people::all()
        .iter()
        .find(|p| p.birth_date.year() >= 2012)
        .unwrap();
    let record = tollbu_devkit::registries::income(child, 2015).unwrap();
    assert!(record.items.is_empty());
    assert_eq!(record.total, 0);
}
