//! Forwarding, routing, errors, TLS and HTTP/2.

use std::sync::Arc;

use http::StatusCode;
use tollbu_devkit::demo_material;
use tollbu_tests::*;

#[tokio::test]
async fn valid_token_reads_a_person_with_only_granted_fields() {
    let env = Env::start(Options::default()).await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let pid = example_pid(3);
    let mut s = String::new();
    let answer = get(
        &format!("{}/population/persons/{pid}", env.base()),
        &auth(&token, Some("benefit-assessment"), &mut s),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let body = answer.json();
    assert!(body["name"]["given"].is_string());
    assert!(body["address"]["city"].is_string());
    assert!(body["marital_status"].is_string());
    assert!(body.get("pid").is_none(), "pid is not in the grant");
    assert!(
        body.get("birth_date").is_none(),
        "birth_date is not in the grant"
    );
    assert!(
        body.get("citizenships").is_none(),
        "citizenships are not in the grant"
    );
    assert!(!answer.header("x-request-id").is_empty());
}

#[tokio::test]
async fn request_id_is_echoed_and_identity_headers_cannot_be_spoofed() {
    let env = Env::start(Options::default()).await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    // The echo endpoint is not in the policy: prove it is refused, then check
    // forwarded headers through the registry's view of a real request below.
    let mut s = String::new();
    let mut headers = auth(&token, Some("benefit-assessment"), &mut s);
    headers.push(("x-request-id", "test-req-42"));
    headers.push(("tollbu-verified-consumer", "999999999"));
    let answer = get(
        &format!("{}/population/persons/{}", env.base(), example_pid(1)),
        &headers,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-request-id"), "test-req-42");
    let echo = get(
        &format!("{}/population/debug/echo-headers", env.base()),
        &headers,
    )
    .await;
    assert_eq!(
        echo.status,
        StatusCode::NOT_FOUND,
        "paths outside the policy are not forwarded"
    );
    assert_eq!(echo.code(), "unknown_operation");
}

#[tokio::test]
async fn upstream_sees_verified_identity_and_never_the_token() {
    let registry = RecordingUpstream::start(UpstreamBehaviour::Person).await;
    let env = Env::start(Options {
        population_upstream: Some(registry.url.clone()),
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let mut s = String::new();
    let mut headers = auth(&token, Some("benefit-assessment"), &mut s);
    headers.push(("tollbu-verified-consumer", "999999999"));
    headers.push(("x-forwarded-for", "6.6.6.6"));
    headers.push(("connection", "x-drop-me"));
    headers.push(("x-drop-me", "1"));
    headers.push((
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ));
    // Caller headers that would change what the registry does after the
    // decision: a byte range of the record, another target, another method,
    // an encoding the filter cannot read.
    let retargeting = [
        ("range", "bytes=54-157"),
        ("if-none-match", "\"abc\""),
        ("x-original-url", "/persons/17912099997"),
        ("x-http-method-override", "DELETE"),
        ("accept-encoding", "gzip, br"),
        ("x-real-ip", "6.6.6.6"),
    ];
    headers.extend(retargeting);
    headers.push(("accept-language", "nb"));
    // A query parameter the operation does not declare was never decided on.
    let person = format!("{}/population/persons/{}", env.base(), example_pid(2));
    let answer = get(&format!("{person}?ssn=17912099997"), &headers).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{:?}", answer.body);
    assert_eq!(answer.code(), "undeclared_query_parameter");
    assert!(registry.seen().is_empty(), "forwarded");

    let answer = get(&person, &headers).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let seen = registry.seen();
    assert_eq!(seen.len(), 1);
    let (uri, forwarded) = (&seen[0].uri, &seen[0].headers);
    let header = |name: &str| {
        forwarded
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(uri, &format!("/persons/{}", example_pid(2)));
    for (name, _) in retargeting {
        assert!(
            forwarded.get(name).is_none(),
            "{name} forwarded: {forwarded:?}"
        );
    }
    assert_eq!(header("accept-language"), "nb");
    assert!(
        forwarded.get("authorization").is_none(),
        "token forwarded: {forwarded:?}"
    );
    assert!(forwarded.values().all(|v| {
        !v.as_bytes()
            .windows(40)
            .any(|w| w == &token.as_bytes()[..40])
    }));
    assert_eq!(
        header("tollbu-verified-consumer"),
        "310000019",
        "spoofed identity replaced"
    );
    assert_eq!(header("x-forwarded-for"), "127.0.0.1");
    assert_eq!(header("forwarded"), "for=127.0.0.1;proto=http");
    assert!(
        forwarded.get("x-drop-me").is_none(),
        "header named in Connection forwarded"
    );
    assert!(header("traceparent").starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
    assert_eq!(
        header("tollbu-verified-grant"),
        "welfare-benefit-assessment"
    );
    assert!(!header("x-request-id").is_empty());
}

#[tokio::test]
async fn traversal_and_malformed_paths_are_refused_with_400() {
    let env = Env::start(Options::default()).await;
    for path in [
        "/population/%2e%2e/admin",
        "/population/persons/%2E%2E",
        "/population/persons/..%2f..%2fetc",
        "/population/persons/a%2fb",
        "/population/persons/a%00b",
        "/population/persons/%252e%252e",
        "/population/persons/%c0%ae%c0%ae",
    ] {
        let answer = get(&format!("{}{path}", env.base()), &[]).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(answer.code(), "bad_path", "{path}");
        assert_eq!(answer.header("content-type"), "application/problem+json");
    }
    let answer = get(&format!("{}/no-such-service/x", env.base()), &[]).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.code(), "unknown_service");
}

#[tokio::test]
async fn upstream_down_gives_502_and_slow_upstream_gives_504() {
    let down = closed_upstream().await;
    let env = Env::start(Options {
        population_upstream: Some(down),
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let answer = env.read_person(&token, None).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.code(), "upstream_unreachable");
    assert_eq!(answer.header("content-type"), "application/problem+json");

    let (slow, _task) = silent_upstream().await;
    let env = Env::start(Options {
        population_upstream: Some(slow),
        upstream_timeout_ms: 500,
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let answer = env.read_person(&token, None).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(answer.code(), "upstream_timeout");
}

#[tokio::test]
async fn http2_prior_knowledge_client_is_served() {
    let env = Env::start(Options::default()).await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let h2 = client(true);
    let mut s = String::new();
    let answer = get_with(
        &h2,
        &format!("{}/population/persons/{}", env.base(), example_pid(0)),
        &auth(&token, Some("benefit-assessment"), &mut s),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.json()["name"].is_object());
}

/// An ingress in front of the gateway may send everything over one HTTP/2
/// connection. Its requests must not be confined to the worker that holds the
/// connection once that worker is busy; while it is not, they stay there
/// (moving costs wake-ups across threads). Three workers: requests one after
/// another all run on one worker, twelve at once reach every worker, and
/// `/metrics` shows the same counts.
#[tokio::test]
async fn a_busy_http2_connection_spreads_over_the_workers_and_a_quiet_one_stays_home() {
    let (registry, env) = env_behind_holding_registry(
        std::time::Duration::from_millis(300),
        Options {
            workers: Some(3),
            ..Options::default()
        },
    )
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let h2 = client(true);
    let get = |i: u32| {
        let (h2, token) = (h2.clone(), token.clone());
        let url = format!("{}/population/persons/{}", env.base(), example_pid(i));
        async move {
            let mut s = String::new();
            get_with(&h2, &url, &auth(&token, Some("benefit-assessment"), &mut s)).await
        }
    };
    // One after another: no worker is busier than another, so each request
    // runs on its connection's worker.
    for i in 0..6 {
        let answer = get(i).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    }
    let served = env.gateway().requests_per_worker();
    assert_eq!(served.iter().sum::<u64>(), 6);
    assert_eq!(served.iter().filter(|&&n| n > 0).count(), 1, "{served:?}");
    // Twelve at once on the same connection, each held by the registry: they
    // spread over every worker.
    let at_once: Vec<_> = (6..18).map(|i| tokio::spawn(get(i))).collect();
    for request in at_once {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    }
    let served = env.gateway().requests_per_worker();
    assert_eq!(served.iter().sum::<u64>(), 18);
    assert!(served.iter().all(|&n| n > 0), "{served:?}");
    // The platform team sees the same on /metrics.
    let metrics = tollbu_tests::get(&format!("{}/metrics", env.admin()), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body);
    for (worker, n) in served.iter().enumerate() {
        let line = format!("tollbu_worker_requests_total{{worker=\"{worker}\"}} {n}\n");
        assert!(text.contains(&line), "{line} in {text}");
        let idle = format!("tollbu_worker_requests_in_flight{{worker=\"{worker}\"}} 0\n");
        assert!(text.contains(&idle), "{idle} in {text}");
    }
    assert_eq!(registry.seen().len(), 18);
    assert_eq!(audit_records(&env.audit_dir()).len(), 18);
}

/// A TLS connection to the gateway at `addr` with the welfare agency's client certificate,
/// offering `alpn` (no protocol when `None`); the gateway must agree to what was offered.
async fn welfare_agency_tls(
    addr: std::net::SocketAddr,
    alpn: Option<&[u8]>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut config = Arc::unwrap_or_clone(tls_client_config(Some((
        demo_material::AGENCY_WELFARE_CERT_PEM,
        demo_material::AGENCY_WELFARE_KEY_PEM,
    ))));
    config.alpn_protocols = alpn.map(<[u8]>::to_vec).into_iter().collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let server_name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(server_name, tcp).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), alpn);
    stream
}

#[tokio::test]
async fn tls_listener_requires_a_client_certificate() {
    let env = Env::start(Options {
        tls: true,
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let addr = env.tls_addr();
    let server_name = rustls_pki_types::ServerName::try_from("localhost").unwrap();

    // Without a client certificate the handshake (or the first read) fails.
    let connector = tokio_rustls::TlsConnector::from(tls_client_config(None));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let refused = match connector.connect(server_name, tcp).await {
        Err(_) => true,
        Ok(mut stream) => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = stream
                .write_all(b"GET /population/persons/1 HTTP/1.1\r\nhost: localhost\r\n\r\n")
                .await;
            let mut buf = [0u8; 64];
            !matches!(stream.read(&mut buf).await, Ok(n) if n > 0)
        }
    };
    assert!(refused, "a client without a certificate must not be served");

    // With the welfare agency's certificate, HTTP/2 over TLS (ALPN) works.
    let stream = welfare_agency_tls(addr, Some(b"h2")).await;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get(format!(
        "https://localhost:{}/population/persons/{}",
        addr.port(),
        example_pid(0)
    ))
    .header("authorization", format!("Bearer {token}"))
    .header("tollbu-purpose", "benefit-assessment")
    .body(http_body_util::Empty::<bytes::Bytes>::new())
    .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // HTTP/1.1 over TLS: agreed by ALPN, and from a client that names no protocol.
    for alpn in [Some(&b"http/1.1"[..]), None] {
        let stream = welfare_agency_tls(addr, alpn).await;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = http::Request::get(format!("/population/persons/{}", example_pid(0)))
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .header("tollbu-purpose", "benefit-assessment")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "ALPN {alpn:?}");
    }
}

#[tokio::test]
async fn a_tls_client_that_agrees_http2_and_then_sends_nothing_is_closed_at_the_header_read_timeout()
 {
    let env = Env::start(Options {
        tls: true,
        limits: "header_read_timeout_ms = 400\n".into(),
        ..Options::default()
    })
    .await;
    let mut stream = welfare_agency_tls(env.tls_addr(), Some(b"h2")).await;
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(
        closed.is_ok(),
        "a TLS connection that agreed h2 and sent no preface is still open after 5 s"
    );
}

#[tokio::test]
async fn admin_reports_health_readiness_and_metrics() {
    let env = Env::start(Options::default()).await;
    assert_eq!(
        get(&format!("{}/healthz", env.admin()), &[]).await.status,
        StatusCode::OK
    );
    let ready = get(&format!("{}/readyz", env.admin()), &[]).await;
    assert_eq!(ready.status, StatusCode::OK, "{:?}", ready.body);
    assert_eq!(ready.json()["ready"], true);
    let _ = get(&format!("{}/population/persons/1", env.base()), &[]).await;
    let metrics = get(&format!("{}/metrics", env.admin()), &[]).await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(text.contains("tollbu_requests_total{service=\"population\",consumer=\"none\",decision=\"deny\",reason=\"missing_token\",status=\"401\"} 1"), "{text}");
    // The denial was recorded durably, so at least one audit fsync was timed; the histogram is
    // cumulative and ends with every fsync in `+Inf`.
    let fsync_line = |suffix: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("tollbu_audit_fsync_seconds{suffix} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no tollbu_audit_fsync_seconds{suffix} in {text}"))
    };
    let count = fsync_line("_count");
    assert!(count >= 1, "{text}");
    assert_eq!(fsync_line("_bucket{le=\"+Inf\"}"), count);
    assert!(fsync_line("_bucket{le=\"0.0001\"}") <= fsync_line("_bucket{le=\"1\"}"));
}

#[tokio::test]
async fn request_bodies_stream_to_the_upstream_hashed_and_bounded() {
    use sha2::Digest;
    let registry = RecordingUpstream::start(UpstreamBehaviour::Person).await;
    let policies = policy_dir(&format!("{POPULATION_SERVICE_TOML}{NOTES_GRANT}"));
    let mut env = Env::start(Options {
        population_upstream: Some(registry.url.clone()),
        policies: Some(policies.path().to_path_buf()),
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let url = format!("{}/population/persons/{}/notes", env.base(), example_pid(0));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Full<bytes::Bytes>>(
        hyper_util::client::legacy::connect::HttpConnector::new(),
    );
    let send = |body: Vec<u8>, declare_length: bool| {
        let mut builder = http::Request::post(&url)
            .header("authorization", format!("Bearer {token}"))
            .header("tollbu-purpose", "benefit-assessment");
        if !declare_length {
            builder = builder.header("transfer-encoding", "chunked");
        }
        let request = builder
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let client = client.clone();
        async move { client.request(request).await.unwrap().status() }
    };
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(send(payload.clone(), true).await, StatusCode::OK);
    assert_eq!(registry.seen()[0].body, payload, "the body arrives intact");
    assert_eq!(
        send(vec![b'x'; 2 << 20], true).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "declared length over the 1 MiB default"
    );
    assert_eq!(
        send(vec![b'x'; 2 << 20], false).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "chunked body cut off"
    );
    assert!(
        registry.seen().iter().all(|r| r.body.len() <= 1 << 20),
        "never more than the limit forwarded"
    );

    env.stop_gateway().await;
    let records = audit_records(&env.audit_dir());
    let expected = hex::encode(sha2::Sha256::digest(&payload));
    assert_eq!(records[0]["request_sha256"], expected.as_str());
    assert_eq!(
        records
            .iter()
            .filter(|r| r["reason"] == "payload_too_large")
            .count(),
        2,
        "{records:?}"
    );
}

#[tokio::test]
async fn upstream_over_tls_with_private_ca_and_client_certificate() {
    // The registry serves TLS with the demo registry certificate and requires
    // a client certificate from the demo CA (mTLS between gateway and registry).
    let certs = certs_dir();
    let registry_tls = tollbu_proxy::tls::server_config(&tollbu_proxy::tls::ServerTlsFiles {
        cert: certs.join("registry.pem"),
        key: certs.join("registry.key.pem"),
        client_ca: Some(certs.join("ca.pem")),
    })
    .unwrap();
    let registry = tollbu_devkit::registries::start_population(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Some(registry_tls),
    )
    .await
    .unwrap();
    let upstream = registry.base_url().replace("127.0.0.1", "localhost");
    assert!(upstream.starts_with("https://"), "{upstream}");

    let with_client_cert = format!(
        "upstream_ca = \"{}\"\nupstream_client_cert = \"{}\"\nupstream_client_key = \"{}\"",
        certs.join("ca.pem").display(),
        certs.join("agency-welfare.pem").display(),
        certs.join("agency-welfare.key.pem").display()
    );
    let env = Env::start(Options {
        population_upstream: Some(upstream.clone()),
        population_extra: with_client_cert,
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let answer = env.read_person(&token, None).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(answer.json()["name"].is_object());

    // Without a client certificate the registry refuses the handshake: 502.
    let ca_only = format!("upstream_ca = \"{}\"", certs.join("ca.pem").display());
    let env = Env::start(Options {
        population_upstream: Some(upstream.clone()),
        population_extra: ca_only,
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let answer = env.read_person(&token, None).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.code(), "upstream_unreachable");

    // Without the private CA the registry's certificate is not trusted: 502.
    let env = Env::start(Options {
        population_upstream: Some(upstream),
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let answer = env.read_person(&token, None).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
}

/// What a registry says beyond the data stays behind the gateway: its error text (which can name a
/// person or its internals) and its own headers; a redirect to its internal address is refused.
#[tokio::test]
async fn registry_internals_do_not_reach_the_caller() {
    for (behaviour, status, code) in [
        (
            UpstreamBehaviour::Answer {
                status: 404,
                headers: &[
                    ("content-type", "application/problem+json"),
                    ("server", "registry-db/1.2"),
                    ("set-cookie", "session=abc"),
                    ("x-backend", "10.9.8.7"),
                ],
                body: r#"{"type":"https://registry.example/problems/unknown-person","title":"no 05885624741","detail":"person 05885624741 at /srv/registry/db.rs:42","code":"x"}"#,
            },
            StatusCode::NOT_FOUND,
            "upstream_error",
        ),
        (
            UpstreamBehaviour::Answer {
                status: 302,
                headers: &[(
                    "location",
                    "http://10.9.8.7:8080/internal/persons/05885624741?token=abc",
                )],
                body: "",
            },
            StatusCode::BAD_GATEWAY,
            "upstream_unfilterable",
        ),
    ] {
        let answer = read_person_from(behaviour).await;
        assert_eq!(answer.status, status);
        assert_eq!(answer.code(), code);
        assert_eq!(answer.header("content-type"), "application/problem+json");
        let text = format!(
            "{:?} {}",
            answer.headers,
            String::from_utf8_lossy(&answer.body)
        );
        for secret in [
            "05885624741",
            "10.9.8.7",
            "registry-db",
            "session=abc",
            "db.rs",
        ] {
            assert!(
                !text.contains(secret),
                "`{secret}` reached the caller: {text}"
            );
        }
        if status == StatusCode::NOT_FOUND {
            assert_eq!(
                answer.json()["upstream_type"],
                "https://registry.example/problems/unknown-person"
            );
        }
    }
}

/// What the filter cannot vouch for never reaches the caller: a byte range of the record (its
/// paths describe the whole record, so a fragment starting inside `spouse` would pass as the
/// subject's own `name`), an encoded body, and validators computed over the whole record (an
/// ETag hashing it lets a caller test guesses at the withheld fields offline).
#[tokio::test]
async fn fragments_encodings_and_validators_of_the_whole_record_stay_behind() {
    let fragment = r#"{"name":{"given":"Ola","family":"Hemmelig"},"marital_status":"secret"}"#;
    for (behaviour, status) in [
        (
            UpstreamBehaviour::Answer {
                status: 206,
                headers: &[("content-range", "bytes 54-125/300")],
                body: fragment,
            },
            StatusCode::BAD_GATEWAY,
        ),
        (
            UpstreamBehaviour::Answer {
                status: 200,
                headers: &[("content-range", "bytes 54-125/300")],
                body: fragment,
            },
            StatusCode::BAD_GATEWAY,
        ),
        (
            UpstreamBehaviour::Answer {
                status: 200,
                headers: &[("content-encoding", "gzip")],
                body: fragment,
            },
            StatusCode::BAD_GATEWAY,
        ),
        (
            UpstreamBehaviour::Answer {
                status: 200,
                headers: &[
                    ("etag", "\"07c3ffcd1b2fd5b8979a91fd8c489830\""),
                    ("last-modified", "Tue, 17 Mar 2015 09:00:00 GMT"),
                    ("content-language", "nb"),
                ],
                body: STUB_PERSON,
            },
            StatusCode::OK,
        ),
    ] {
        let answer = read_person_from(behaviour).await;
        assert_eq!(answer.status, status, "{:?}", answer.body);
        if status == StatusCode::BAD_GATEWAY {
            assert_eq!(answer.code(), "upstream_unfilterable");
            assert!(!String::from_utf8_lossy(&answer.body).contains("Hemmelig"));
        } else {
            for name in ["etag", "last-modified", "content-language", "content-range"] {
                assert!(
                    answer.headers.get(name).is_none(),
                    "{name} passed: {:?}",
                    answer.headers
                );
            }
            assert_eq!(answer.header("content-type"), "application/json");
        }
    }
}

/// The audit record's response digest is of the body the caller got: none at all for `HEAD`.
#[tokio::test]
async fn a_head_answer_is_recorded_with_the_digest_of_the_empty_body_it_had() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::start(Options::default()).await;
    let mut stream = tokio::net::TcpStream::connect(addr_of(&env.base()))
        .await
        .unwrap();
    let head = format!(
        "HEAD /population/persons/{} HTTP/1.1\r\nhost: gateway\r\nx-request-id: head-1\r\nconnection: close\r\n\r\n",
        example_pid(0)
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.ends_with("\r\n\r\n"), "a head without a body: {text}");
    let records = audit_records(&env.audit_dir());
    let record = records
        .iter()
        .find(|r| r["request_id"] == "head-1")
        .expect("record of the HEAD request");
    assert_eq!(record["response_sha256"], sha256_hex(b"").as_str());
}

/// The welfare agency's read of example person 0 from a registry that behaves so.
async fn read_person_from(behaviour: UpstreamBehaviour) -> Answer {
    let registry = RecordingUpstream::start(behaviour).await;
    let env = Env::start(Options {
        population_upstream: Some(registry.url.clone()),
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    env.read_person(&token, None).await
}
