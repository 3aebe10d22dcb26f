//! Operations: rate limits, reload, readiness.

use http::StatusCode;
use tollbu_audit::tooling::{self, Query};
use tollbu_tests::*;

const LIMITED_GRANT: &str = r#"
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
    let dir = policy_dir(&format!("{POPULATION_SERVICE_TOML}{LIMITED_GRANT}"));
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
    assert_eq!(refused.header("content-type"), "application/problem+json");
    assert_eq!(refused.json()["code"], "reload_refused");
    assert_eq!(refused.json()["reloaded"], false);
    assert!(
        refused.json()["detail"]
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
    // A page in an officer's browser cannot make the gateway reload: browsers send `Origin`.
    let from_a_page = raw_exchange(
        env.gateway().admin_addr,
        b"POST /admin/reload HTTP/1.1\r\nhost: admin\r\norigin: https://elsewhere.example\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        std::time::Duration::from_secs(30),
    )
    .await;
    assert_eq!(from_a_page.statuses(), [403], "{}", from_a_page.text());
    let old_purpose_still = get(&url, &auth(&token, Some("benefit-assessment"), &mut s)).await;
    assert_eq!(old_purpose_still.status, StatusCode::OK, "not reloaded");
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

/// A local OTLP/HTTP receiver: keeps every body POSTed to `/v1/traces`.
async fn otlp_receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = std::sync::Arc::clone(&bodies);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let kept = std::sync::Arc::clone(&kept);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let kept = std::sync::Arc::clone(&kept);
                        async move {
                            let path = request.uri().path().to_owned();
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            if path == "/v1/traces" {
                                kept.lock().unwrap().push(body.to_vec());
                            }
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::new()),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (format!("http://{addr}"), bodies)
}

#[tokio::test]
async fn spans_reach_an_otlp_receiver_and_traceparent_reaches_the_upstream() {
    let registry = RecordingUpstream::start(UpstreamBehaviour::Person).await;
    let upstream = registry.url.clone();
    let (collector, bodies) = otlp_receiver().await;
    let extra = format!(
        "\n[telemetry]\notlp_endpoint = \"{collector}\"\nexport_interval_ms = 50\nservice_name = \"tollbu-e2e\"\n"
    );
    let mut env = Env::start(Options {
        population_upstream: Some(upstream),
        extra_config: extra,
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut s = String::new();
    let mut headers = auth(&token, Some("benefit-assessment"), &mut s);
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    headers.push(("traceparent", &traceparent));
    let answer = get(
        &format!("{}/population/persons/{}", env.base(), example_pid(0)),
        &headers,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);

    let seen = registry.seen();
    let upstream_parent = seen[0]
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        upstream_parent.starts_with(&format!("00-{trace_id}-")),
        "{upstream_parent}"
    );
    let upstream_span_id = upstream_parent.split('-').nth(2).unwrap().to_owned();
    assert_ne!(
        upstream_span_id, "00f067aa0ba902b7",
        "the upstream's parent is our span, not the caller's"
    );

    env.stop_gateway().await; // flushes the exporter
    let exported: Vec<u8> = bodies.lock().unwrap().concat();
    let contains = |needle: &[u8]| exported.windows(needle.len()).any(|w| w == needle);
    for name in [
        "tollbu.request",
        "tollbu.authn",
        "tollbu.decide",
        "tollbu.upstream",
        "tollbu.audit",
        "tollbu-e2e",
    ] {
        assert!(
            contains(name.as_bytes()),
            "span or service `{name}` not exported ({} bytes)",
            exported.len()
        );
    }
    assert!(
        contains(&hex::decode(trace_id).unwrap()),
        "the caller's trace id is kept"
    );
    assert!(
        contains(&hex::decode(&upstream_span_id).unwrap()),
        "the upstream span is the one the registry saw"
    );
    assert!(
        !contains(example_pid(0).as_bytes()),
        "no identity number in spans"
    );

    let report = tollbu_audit::tooling::query(&env.audit_dir(), &Query::default(), None, true);
    assert!(
        report
            .text
            .contains(&format!("\"trace_id\":\"{trace_id}\"")),
        "trace id in the audit record: {}",
        report.text
    );
}

#[tokio::test]
async fn renewed_tls_certificate_files_are_picked_up_without_restart() {
    use rustls_pki_types::pem::PemObject;
    let dir = tempfile::tempdir().unwrap();
    for name in ["gateway.pem", "gateway.key.pem", "ca.pem"] {
        std::fs::copy(certs_dir().join(name), dir.path().join(name)).unwrap();
    }
    let env = Env::start(Options {
        tls: true,
        tls_dir: Some(dir.path().to_path_buf()),
        tls_reload_check_secs: 1,
        ..Options::default()
    })
    .await;
    let served_cert = |addr: std::net::SocketAddr| async move {
        let config = tls_client_config(Some((
            tollbu_devkit::demo_material::AGENCY_WELFARE_CERT_PEM,
            tollbu_devkit::demo_material::AGENCY_WELFARE_KEY_PEM,
        )));
        let connector = tokio_rustls::TlsConnector::from(config);
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let stream = connector.connect(name, tcp).await.unwrap();
        stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    };
    let pem_der = |pem: &str| {
        rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    };
    let gateway_der = pem_der(tollbu_devkit::demo_material::GATEWAY_CERT_PEM);
    let renewed_der = pem_der(tollbu_devkit::demo_material::REGISTRY_CERT_PEM);
    assert_eq!(served_cert(env.tls_addr()).await, gateway_der);

    // "Renewal": another certificate for the same names, from the same CA.
    std::fs::write(
        dir.path().join("gateway.pem"),
        tollbu_devkit::demo_material::REGISTRY_CERT_PEM,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("gateway.key.pem"),
        tollbu_devkit::demo_material::REGISTRY_KEY_PEM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while served_cert(env.tls_addr()).await != renewed_der {
        assert!(
            std::time::Instant::now() < deadline,
            "renewed certificate not served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let ready = get(&format!("{}/readyz", env.admin()), &[]).await.json();
    assert!(ready["last_reload_error"].is_null(), "{ready}");

    // A broken renewal is refused; the last good certificate keeps serving.
    std::fs::write(dir.path().join("gateway.pem"), "not a certificate").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ready = get(&format!("{}/readyz", env.admin()), &[]).await.json();
        if ready["last_reload_error"].is_string() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "broken certificate not reported"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(served_cert(env.tls_addr()).await, renewed_der);

    // An expired certificate (with its own key) is refused too, and named as such.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
    params.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let expired = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("gateway.key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("gateway.pem"), expired.pem()).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let ready = get(&format!("{}/readyz", env.admin()), &[]).await.json();
        if ready["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("gateway.pem`: the certificate has expired"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expired certificate not reported: {ready}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(served_cert(env.tls_addr()).await, renewed_der);
}

/// `needs_restart` compares with what the process started with: a worker count set by a reload
/// still needs a restart at the next reload, one set back does not, and retention settings
/// (applied at the next sweep) never do.
#[tokio::test]
async fn reload_reports_restart_only_changes_against_the_running_process() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs_dir();
    let base = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [policies]\ndir = \"{policies}\"\n\
         [audit]\ndir = \"audit\"\norigin = \"tollbu.example/restart/0\"\n\
         signing_key = \"{c}/audit-signing.key.pem\"\npseudonym_key = \"{c}/audit-pseudonym.key\"\n",
        policies = policies_dir().display(),
        c = certs.display(),
    );
    let path = dir.path().join("tollbu.toml");
    std::fs::write(&path, &base).unwrap();
    let config = tollbu_proxy::Config::load(&path).unwrap();
    let gateway = tollbu_proxy::start_with(config, Some(path.clone()))
        .await
        .unwrap();
    let reload = || async { gateway.live.reload().await.unwrap().needs_restart };

    let with_workers = base.replace("[admin]", "workers = 1\n[admin]");
    std::fs::write(&path, &with_workers).unwrap();
    assert_eq!(reload().await, ["gateway.workers"]);
    assert_eq!(reload().await, ["gateway.workers"], "still not running");
    std::fs::write(&path, &base).unwrap();
    assert!(reload().await.is_empty(), "back to what runs");

    let retention = base.replace(
        "[audit]\n",
        "[audit]\nretention_days = 400\nretired_dirs = [\"audit-2025\"]\n",
    );
    std::fs::write(&path, &retention).unwrap();
    assert!(reload().await.is_empty());
    assert_eq!(
        gateway
            .live
            .config()
            .audit
            .retention_days
            .map(|d| *d.get_ref()),
        Some(400),
        "applied at the next sweep"
    );
    gateway.shutdown().await;
}

/// A reload reads files and compiles the policies; however long that takes (a large policy
/// set, a slow volume), the gateway goes on serving meanwhile. It did not: the reload ran on
/// the runtime that accepts connections, and every request waited for it. Here the config
/// file is a FIFO, so the reload's read waits until the test writes it.
#[tokio::test]
async fn requests_are_served_while_a_reload_is_still_reading_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs_dir();
    let text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [policies]\ndir = \"{policies}\"\n\
         [audit]\ndir = \"audit\"\norigin = \"tollbu.example/slow-reload/0\"\n\
         signing_key = \"{c}/audit-signing.key.pem\"\npseudonym_key = \"{c}/audit-pseudonym.key\"\n",
        policies = policies_dir().display(),
        c = certs.display(),
    );
    let path = dir.path().join("tollbu.toml");
    std::fs::write(&path, &text).unwrap();
    let config = tollbu_proxy::Config::load(&path).unwrap();
    let gateway = tollbu_proxy::start_with(config, Some(path.clone()))
        .await
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());

    let live = std::sync::Arc::clone(&gateway.live);
    let reload = tokio::spawn(async move { live.reload().await });
    // The client runs on its own thread and runtime, so that a reload holding the gateway's
    // runtime makes its requests time out (rather than the test hang), and then lets the
    // reload finish by writing the file.
    let (admin, plain) = (gateway.admin_addr, gateway.plain_addr.unwrap());
    let client = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let answers = runtime.block_on(async {
            let mut answers = Vec::new();
            for _ in 0..3 {
                let wait = std::time::Duration::from_secs(10);
                let health_url = format!("http://{admin}/healthz");
                let health = tokio::time::timeout(wait, get(&health_url, &[])).await;
                answers.push(health.map(|a| a.status.as_u16()));
                // This config names no service: answered at once with 404, not held.
                let proxied_url = format!("http://{plain}/population/persons/x");
                let proxied = tokio::time::timeout(wait, get(&proxied_url, &[])).await;
                answers.push(proxied.map(|a| a.status.as_u16()));
            }
            answers
        });
        std::fs::write(&path, text).unwrap();
        answers
    });
    let report = reload.await.unwrap().unwrap();
    let answers = tokio::task::spawn_blocking(move || client.join().unwrap())
        .await
        .unwrap();
    assert_eq!(
        answers.into_iter().map(Result::ok).collect::<Vec<_>>(),
        [
            Some(200),
            Some(404),
            Some(200),
            Some(404),
            Some(200),
            Some(404)
        ],
        "served while the reload waited for its file"
    );
    assert!(report.needs_restart.is_empty(), "{report:?}");
    gateway.shutdown().await;
}

/// Reloads run one at a time and the last one asked for wins. They did not: a reload that
/// trusted a new issuer waited for its keys, a second reload (files put back) finished first,
/// and the first then swapped in the policy set and the issuer no longer on disk.
#[tokio::test]
async fn a_reload_asked_for_while_another_waits_on_keys_leaves_the_files_on_disk_in_force() {
    let policies = tempfile::tempdir().unwrap();
    for name in ["population.toml", "income.toml"] {
        std::fs::copy(policies_dir().join(name), policies.path().join(name)).unwrap();
    }
    let env = Env::start(Options {
        policies: Some(policies.path().to_path_buf()),
        config_file: true,
        ..Options::default()
    })
    .await;
    let ready_url = format!("{}/readyz", env.admin());
    let reload_url = format!("{}/admin/reload", env.admin());
    let on_disk_version = get(&ready_url, &[]).await.json()["policy_version"].clone();
    let population_a = std::fs::read_to_string(policies.path().join("population.toml")).unwrap();
    let config_a = env.config_text().to_owned();

    // Config B trusts a second issuer whose key set answers 2 s late; policy B renames the
    // welfare agency's purpose.
    let second = start_second_issuer().await;
    let slow_jwks = JwksStub::start(JwksMode::Slow).await;
    slow_jwks.set_real(&second.jwks_url());
    let config_b = format!(
        "{config_a}\n[[issuer]]\nissuer = \"{}\"\njwks_url = \"{}\"\n",
        second.issuer_url(),
        slow_jwks.url
    );
    std::fs::write(env.config_path(), &config_b).unwrap();
    std::fs::write(
        policies.path().join("population.toml"),
        population_a.replace("\"benefit-assessment\"", "\"benefit-review\""),
    )
    .unwrap();
    let first = tokio::spawn({
        let reload_url = reload_url.clone();
        async move { post(&reload_url).await }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while slow_jwks.fetches() == 0 {
        assert!(std::time::Instant::now() < deadline, "no key fetch");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // The operator puts A back and reloads while the first reload still waits for the keys.
    std::fs::write(env.config_path(), &config_a).unwrap();
    std::fs::write(policies.path().join("population.toml"), &population_a).unwrap();
    let second_reload = post(&reload_url).await;
    assert_eq!(
        second_reload.status,
        StatusCode::OK,
        "{:?}",
        second_reload.body
    );
    assert_eq!(
        second_reload.json()["report"]["policy_version"],
        on_disk_version
    );
    let first_reload = first.await.unwrap();
    assert_eq!(
        first_reload.status,
        StatusCode::OK,
        "{:?}",
        first_reload.body
    );

    let ready = get(&ready_url, &[]).await.json();
    assert_eq!(
        ready["policy_version"], on_disk_version,
        "the policy set on disk is in force"
    );
    let trusted: Vec<_> = ready["issuers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["issuer"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(trusted, [env.issuer_url.as_str()], "{ready}");

    let mut claims = second
        .access_token_claims("demo-welfare", "demo:population")
        .unwrap();
    claims["iss"] = serde_json::json!(second.issuer_url());
    let removed_issuers_token = second
        .sign_access_token(serde_json::json!({}), claims)
        .unwrap();
    let refused = env.read_person(&removed_issuers_token, None).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "{:?}",
        refused.body
    );
    assert_eq!(refused.json()["token_error"], "untrusted_issuer");
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    assert_eq!(
        env.read_person(&token, None).await.status,
        StatusCode::OK,
        "policy A's purpose is allowed"
    );
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_records_them() {
    let registry = RecordingUpstream::start(UpstreamBehaviour::Hold(
        std::time::Duration::from_millis(700),
    ))
    .await;
    let upstream = registry.url.clone();
    let mut env = Env::start(Options {
        population_upstream: Some(upstream),
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let url = format!("{}/population/persons/{}", env.base(), example_pid(0));
    let in_flight = tokio::spawn(async move {
        let mut s = String::new();
        get(&url, &auth(&token, Some("benefit-assessment"), &mut s)).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    env.stop_gateway().await;
    let answer = in_flight.await.unwrap();
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "the in-flight request finished during the drain"
    );
    let checkpoint = std::fs::read_to_string(env.audit_dir().join("checkpoint")).unwrap();
    assert!(
        checkpoint.contains("\n1\n"),
        "the final checkpoint covers it: {checkpoint}"
    );
    let report = tooling::query(&env.audit_dir(), &Query::default(), None, true);
    assert!(
        report.text.contains(&answer.header("x-request-id")),
        "{}",
        report.text
    );
}

/// A reload that runs when the shutdown starts (here one triggered by renewed TLS files, waiting
/// on a new issuer whose key set never comes) does not hold the drain: the request in flight
/// finishes and is recorded, and the shutdown ends long before the grace. It did not: the
/// shutdown waited for the reload first, the grace ran out meanwhile, and the request in flight
/// was cut with no answer and no record.
#[tokio::test]
async fn a_reload_running_at_shutdown_does_not_hold_the_drain() {
    let tls_dir = tempfile::tempdir().unwrap();
    for name in ["gateway.pem", "gateway.key.pem", "ca.pem"] {
        std::fs::copy(certs_dir().join(name), tls_dir.path().join(name)).unwrap();
    }
    let (registry, mut env) = env_behind_holding_registry(
        std::time::Duration::from_millis(1_500),
        Options {
            tls: true,
            tls_dir: Some(tls_dir.path().to_path_buf()),
            tls_reload_check_secs: 1,
            config_file: true,
            limits: "shutdown_grace_ms = 4000\n".to_owned(),
            ..Options::default()
        },
    )
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;

    // A new issuer whose key set never comes, then a "renewal" of the certificate.
    let hanging = JwksStub::start(JwksMode::Hang).await;
    let mut config = std::fs::read_to_string(env.config_path()).unwrap();
    config.push_str(&format!(
        "\n[[issuer]]\nissuer = \"http://hanging.example/\"\njwks_url = \"{}\"\n",
        hanging.url
    ));
    std::fs::write(env.config_path(), config).unwrap();
    let cert = std::fs::read(tls_dir.path().join("gateway.pem")).unwrap();
    std::fs::write(tls_dir.path().join("gateway.pem"), cert).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while hanging.fetches() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the reload never asked for the new issuer's keys"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let in_flight = read_in_flight(&env, token, &registry).await;
    let stopping = std::time::Instant::now();
    env.stop_gateway().await;
    let took = stopping.elapsed();
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK, "finished during the drain");
    assert!(
        took < std::time::Duration::from_millis(3_000),
        "the drain waited for the reload: {took:?}"
    );
    let records = audit_records(&env.audit_dir());
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["request_id"], answer.header("x-request-id"));
    assert_eq!(records[0]["decision"], "allow");
}

/// A registry that never answers, and a grace shorter than the upstream timeout (as with the
/// defaults, 10 s and 15 s): shortly before the grace ends the exchange is ended as a timeout,
/// so the caller gets 504 and the request an `error` record, and the shutdown still ends within
/// the grace. Before, the request was cut at the end of the grace with neither.
#[tokio::test]
async fn a_request_held_by_a_hanging_registry_at_shutdown_is_answered_and_recorded() {
    let registry =
        RecordingUpstream::start(UpstreamBehaviour::Hold(std::time::Duration::from_secs(120)))
            .await;
    let mut env = Env::start(Options {
        population_upstream: Some(registry.url.clone()),
        upstream_timeout_ms: 60_000,
        limits: "shutdown_grace_ms = 2000\n".to_owned(),
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let in_flight = read_in_flight(&env, token, &registry).await;
    let stopping = std::time::Instant::now();
    env.stop_gateway().await;
    let took = stopping.elapsed();
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.code(), "upstream_timeout");
    assert!(
        took < std::time::Duration::from_millis(2_500),
        "the shutdown kept to its grace: {took:?}"
    );
    let records = audit_records(&env.audit_dir());
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["request_id"], answer.header("x-request-id"));
    assert_eq!(records[0]["decision"], "error");
    assert_eq!(records[0]["reason"], "upstream_timeout");
}

/// Kubernetes takes a terminating pod out of its endpoints as it sends SIGTERM, but kube-proxy
/// and ingresses go on sending it new connections for a few seconds. During
/// `shutdown_delay_ms` the gateway says it is not ready and goes on accepting and serving;
/// only then do the listeners close. They closed at once, so each such connection was refused.
#[tokio::test]
async fn during_the_shutdown_delay_new_connections_are_served_and_readyz_says_shutting_down() {
    let mut env = Env::start(Options {
        limits: "shutdown_delay_ms = 1500\n".into(),
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let ready_url = format!("{}/readyz", env.admin());
    assert_eq!(get(&ready_url, &[]).await.json()["shutting_down"], false);
    let gateway_addr = env.gateway().plain_addr.unwrap();
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(env.gateway.take().unwrap().shutdown());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // `get` opens a new connection for each request.
    let ready = get(&ready_url, &[]).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["shutting_down"], true, "{:?}", ready.body);
    let mut s = String::new();
    let url = format!(
        "http://{gateway_addr}/population/persons/{}",
        example_pid(0)
    );
    let served = get(&url, &auth(&token, Some("benefit-assessment"), &mut s)).await;
    assert_eq!(served.status, StatusCode::OK, "{:?}", served.body);
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1500),
        "still within the delay"
    );
    assert!(!stopping.is_finished());

    stopping.await.unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
    let refused = tokio::net::TcpStream::connect(gateway_addr).await;
    assert!(refused.is_err(), "the listener is closed after the delay");
    let records = audit_records(&env.audit_dir());
    assert_eq!(
        records.len(),
        1,
        "the request served in the delay is on record"
    );
}

/// A stalled audit volume at shutdown (here: the index's watermark file is a FIFO nobody reads,
/// so writing it blocks for ever) no longer holds the process past `shutdown_flush_ms` (under
/// Kubernetes, until the kill): the shutdown returns, the final checkpoint, written before the
/// index, covers every answered request, and once the volume answers again the next start opens
/// the log and finds the record through the rebuilt index. Before, the shutdown waited for ever.
#[tokio::test]
async fn a_stalled_audit_flush_at_shutdown_is_bounded_and_the_checkpoint_comes_first() {
    let mut env = Env::start(Options {
        limits: "shutdown_flush_ms = 1000\n".into(),
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    for _ in 0..3 {
        assert_eq!(env.read_person(&token, None).await.status, StatusCode::OK);
    }
    let index_dir = env.audit_dir().join("index");
    std::fs::create_dir_all(&index_dir).unwrap();
    let fifo = index_dir.join("watermark.tmp");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());

    let shutdown = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        env.gateway.take().unwrap().shutdown(),
    )
    .await;
    assert!(
        shutdown.is_ok(),
        "the shutdown waited for the stalled flush"
    );
    let checkpoint = std::fs::read_to_string(env.audit_dir().join("checkpoint")).unwrap();
    assert!(
        checkpoint.contains("\n3\n"),
        "the final checkpoint covers every answered request: {checkpoint}"
    );

    // The volume answers again: the flush left behind finishes (its fsync of a FIFO fails) and
    // lets go of the log; the next start takes it over.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo))
    };
    let _ = reader.join();
    // The failed flush removes its temporary file itself; make sure of it.
    let _ = std::fs::remove_file(&fifo);
    let mut started = env.try_start_gateway().await;
    for _ in 0..100 {
        if started.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        started = env.try_start_gateway().await;
    }
    if let Err(error) = started {
        panic!("the log is not free again once the stalled flush ends: {error}");
    }
    env.stop_gateway().await;
    let by_subject = Query {
        subject: Some(example_pid(0)),
        ..Query::default()
    };
    let key = certs_dir().join("audit-pseudonym.key");
    let found = tooling::query(&env.audit_dir(), &by_subject, Some(&key), true);
    assert!(found.ok, "{}", found.text);
    assert_eq!(found.text.lines().count(), 3, "{}", found.text);
    let verified = tooling::verify(&env.audit_dir(), &[], None);
    assert!(verified.ok, "{}", verified.text);
}

#[tokio::test]
async fn a_cancelled_request_that_reached_the_registry_is_recorded_even_if_shutdown_follows() {
    // A registry that holds each request for 600 ms before answering.
    let registry = RecordingUpstream::start(UpstreamBehaviour::Hold(
        std::time::Duration::from_millis(600),
    ))
    .await;
    let upstream = registry.url.clone();
    let mut env = Env::start(Options {
        population_upstream: Some(upstream),
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let url = format!("{}/population/persons/{}", env.base(), example_pid(0));
    // HTTP/2: dropping the response future resets the stream.
    let h2 = client(true);
    let request = tokio::spawn(async move {
        let mut s = String::new();
        get_with(&h2, &url, &auth(&token, Some("benefit-assessment"), &mut s)).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    request.abort();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while registry.seen().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the request never reached the registry"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Shut down while the registry still holds the request: its client is
    // gone, so no connection keeps the drain waiting, but the record is due.
    env.stop_gateway().await;
    let records = audit_records(&env.audit_dir());
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(
        records[0]["upstream_status"], 200,
        "the access the registry served is on record"
    );
    let forwarded_id = registry.seen()[0]
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(records[0]["request_id"], forwarded_id.as_str());
}

/// The cap holds across the request workers, each of which has its own
/// registry connections: three workers with a share of one each would
/// otherwise reach three.
#[tokio::test]
async fn concurrent_exchanges_with_a_registry_are_capped() {
    let (registry, env) = env_behind_holding_registry(
        std::time::Duration::from_millis(300),
        Options {
            limits: "upstream_max_connections = 2\n".into(),
            workers: Some(3),
            ..Options::default()
        },
    )
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let mut requests = Vec::new();
    for i in 0..6 {
        let url = format!("{}/population/persons/{}", env.base(), example_pid(i));
        let token = token.clone();
        requests.push(tokio::spawn(async move {
            let mut s = String::new();
            get(&url, &auth(&token, Some("benefit-assessment"), &mut s))
                .await
                .status
        }));
    }
    for request in requests {
        assert_eq!(
            request.await.unwrap(),
            StatusCode::OK,
            "waiting requests are served, not refused"
        );
    }
    assert_eq!(registry.seen().len(), 6);
    assert!(
        registry.peak_in_flight() <= 2,
        "peak {} exchanges at once",
        registry.peak_in_flight()
    );
}

/// A worker starts with 32 exchanges per registry (`registry_limit`), so that a fast registry is
/// not held to hundreds of connections while the gateway's own CPU is the bottleneck; a slow
/// registry with requests waiting must still be given everything the cap allows.
#[tokio::test]
async fn a_slow_registry_with_requests_waiting_is_given_every_exchange_the_cap_allows() {
    let (registry, env) = env_behind_holding_registry(
        std::time::Duration::from_millis(100),
        Options {
            limits: "upstream_max_connections = 100\n".into(),
            workers: Some(1),
            ..Options::default()
        },
    )
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let mut callers = Vec::new();
    for caller in 0..120u32 {
        let (base, token) = (env.base(), token.clone());
        callers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            // 480 in all: within the welfare agency's 600 a minute.
            for i in 0..4 {
                let url = format!("{base}/population/persons/{}", example_pid(caller * 4 + i));
                let mut s = String::new();
                statuses.push(
                    get(&url, &auth(&token, Some("benefit-assessment"), &mut s))
                        .await
                        .status,
                );
            }
            statuses
        }));
    }
    for caller in callers {
        let statuses = caller.await.unwrap();
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{statuses:?}"
        );
    }
    assert_eq!(registry.seen().len(), 480);
    assert_eq!(
        registry.peak_in_flight(),
        100,
        "exchanges at once at the registry: the whole cap, never more"
    );
    let metrics = tollbu_tests::get(&format!("{}/metrics", env.admin()), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    let line = "tollbu_upstream_exchange_limit{service=\"population\",worker=\"0\"} 100\n";
    assert!(text.contains(line), "{line} in {text}");
}

/// A read of person 0 sent with `token`, returned once `registry` has received it: a request in
/// flight, allowed and forwarded, for the shutdown tests.
async fn read_in_flight(
    env: &Env,
    token: String,
    registry: &RecordingUpstream,
) -> tokio::task::JoinHandle<Answer> {
    let url = format!("{}/population/persons/{}", env.base(), example_pid(0));
    let in_flight = tokio::spawn(async move {
        let mut s = String::new();
        get(&url, &auth(&token, Some("benefit-assessment"), &mut s)).await
    });
    while registry.seen().is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    in_flight
}
