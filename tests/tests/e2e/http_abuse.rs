//! HTTP-level abuse: oversized and too many headers, slowloris, request
//! smuggling probes, absolute-form targets and Host tricks, path traversal in
//! every encoding, HTTP/2 rapid reset and stream floods, huge bodies, and the
//! connection cap. During each attack a well-behaved client keeps being served.
//!
//! Raw TCP (and hand-built HTTP/2 frames) are used where a real client
//! library would refuse to send the attack.

use std::time::Duration;

use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tollbu_tests::*;

const WAIT: Duration = Duration::from_secs(10);

/// A good request over a fresh connection; must be 200.
async fn assert_still_served(env: &Env, token: &str) {
    let mut s = String::new();
    let answer = get(
        &format!("{}/population/persons/{}", env.base(), example_pid(0)),
        &auth(token, Some("benefit-assessment"), &mut s),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "a well-behaved client must be served during the attack: {:?}",
        answer.body
    );
}

fn request_head(path: &str, token: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {token}\r\ntollbu-purpose: benefit-assessment\r\n{extra}"
    )
}

async fn env_with_recorder(options: Options) -> (Env, RecordingUpstream, String) {
    let upstream = RecordingUpstream::start(UpstreamBehaviour::Person).await;
    let env = Env::start(Options {
        population_upstream: Some(upstream.url.clone()),
        ..options
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    (env, upstream, token)
}

/// A 400 ms header read timeout, so that tests of it finish quickly.
fn short_header_read_timeout() -> Options {
    Options {
        limits: "header_read_timeout_ms = 400\n".into(),
        ..Options::default()
    }
}

#[tokio::test]
async fn oversized_and_too_many_headers_get_431() {
    let (env, upstream, token) = env_with_recorder(Options::default()).await;
    let addr = addr_of(&env.base());
    let path = format!("/population/persons/{}", example_pid(0));

    // One header larger than max_header_bytes (32 KiB), and a head one byte
    // over it: refused however the bytes arrive (here in one write, which
    // hyper's own buffer limit lets through).
    let head = request_head(&path, &token, "");
    let just_over = 32_768 + 1 - (head.len() + "x-big: \r\n\r\n".len());
    for filler in [40_000, just_over] {
        let big = format!("{head}x-big: {}\r\n\r\n", "a".repeat(filler));
        let attack = tokio::spawn(async move { raw_exchange(addr, big.as_bytes(), WAIT).await });
        assert_still_served(&env, &token).await;
        let outcome = attack.await.unwrap();
        assert_eq!(outcome.statuses(), [431], "{}", outcome.text());
        assert!(outcome.closed, "connection closed after 431");
    }

    // More headers than max_header_count (100).
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let request = format!("{}{many}\r\n", request_head(&path, &token, ""));
    let outcome = raw_exchange(addr, request.as_bytes(), WAIT).await;
    assert_eq!(outcome.statuses(), [431], "{}", outcome.text());
    assert!(outcome.closed);

    // Well under both limits is served (the stub registry behind us has
    // hyper's own limit of 100 headers, and we add about a dozen).
    let fine: String = (0..60).map(|i| format!("x-h{i}: v\r\n")).collect();
    let request = format!(
        "{}{fine}connection: close\r\n\r\n",
        request_head(&path, &token, "")
    );
    let outcome = raw_exchange(addr, request.as_bytes(), WAIT).await;
    assert_eq!(outcome.statuses(), [200], "{}", outcome.text());
    assert_eq!(
        upstream.seen().len(),
        3,
        "only the good requests reached the registry"
    );
}

#[tokio::test]
async fn silent_connections_and_a_stalled_http2_preface_are_closed_at_the_header_read_timeout() {
    let (env, _upstream, token) = env_with_recorder(short_header_read_timeout()).await;
    let addr = addr_of(&env.base());
    // Nothing at all, and the first bytes of the HTTP/2 preface and then nothing: the gateway
    // cannot yet tell which HTTP either speaks, and must not hold the connection for it.
    for first in [&b""[..], &b"PRI * HTTP/2"[..]] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(first).await.unwrap();
        let mut answer = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
        assert!(
            closed.is_ok(),
            "a connection that sent {first:?} is still open after 5 s"
        );
        assert_still_served(&env, &token).await;
    }
}

#[tokio::test]
async fn slowloris_is_cut_off_at_the_header_read_timeout() {
    let (env, upstream, token) = env_with_recorder(short_header_read_timeout()).await;
    let addr = addr_of(&env.base());
    let request = format!(
        "{}\r\n",
        request_head(
            &format!("/population/persons/{}", example_pid(0)),
            &token,
            ""
        )
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let attacker = tokio::spawn(async move {
        // One byte every 50 ms: the whole head would take ~60 s.
        let mut sent = 0;
        for byte in request.as_bytes() {
            if stream.write_all(&[*byte]).await.is_err() {
                return (sent, Vec::new(), true);
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            if sent % 10 == 0 {
                let mut probe = [0u8; 512];
                match tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => return (sent, Vec::new(), true),
                    Ok(Ok(n)) => return (sent, probe[..n].to_vec(), true),
                    Err(_) => {}
                }
            }
        }
        (sent, Vec::new(), false)
    });
    for _ in 0..3 {
        assert_still_served(&env, &token).await;
    }
    let (sent, answer, cut_off) = tokio::time::timeout(Duration::from_secs(30), attacker)
        .await
        .expect("attacker loop ends")
        .unwrap();
    assert!(
        cut_off,
        "a slowloris client must be disconnected (sent {sent} bytes)"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 408"),
        "closed, or 408: {text}"
    );
    assert_eq!(
        upstream.seen().len(),
        3,
        "the slow request never reached the registry"
    );
}

#[tokio::test]
async fn smuggling_probes_are_refused_or_reframed_and_never_forwarded_unseen() {
    let (env, upstream, token) = env_with_recorder(Options::default()).await;
    let addr = addr_of(&env.base());
    let victim = format!("/population/persons/{}", example_pid(0));
    // The smuggled request has no token and names another person: if it ever
    // reached the registry, the registry would see it without our identity headers.
    let smuggled = format!(
        "GET /persons/{} HTTP/1.1\r\nhost: registry\r\n\r\n",
        example_pid(1)
    );
    let head = |extra: &str| request_head(&victim, &token, extra);
    let chunked_body = format!("0\r\n\r\n{smuggled}");
    let probes: Vec<(&str, String)> = vec![
        (
            "CL.TE",
            format!(
                "{}content-length: {}\r\ntransfer-encoding: chunked\r\n\r\n{chunked_body}",
                head(""),
                5
            ),
        ),
        (
            "TE.CL",
            format!(
                "{}transfer-encoding: chunked\r\ncontent-length: 4\r\n\r\n{chunked_body}",
                head("")
            ),
        ),
        (
            "TE obfuscated (xchunked)",
            format!(
                "{}transfer-encoding: xchunked\r\n\r\n{chunked_body}",
                head("")
            ),
        ),
        (
            "TE obfuscated (chunked, identity)",
            format!(
                "{}transfer-encoding: chunked, identity\r\n\r\n{chunked_body}",
                head("")
            ),
        ),
        (
            "TE twice (chunked then identity)",
            format!(
                "{}transfer-encoding: chunked\r\ntransfer-encoding: identity\r\n\r\n{chunked_body}",
                head("")
            ),
        ),
        (
            "TE with space before colon",
            format!(
                "{}transfer-encoding : chunked\r\n\r\n{chunked_body}",
                head("")
            ),
        ),
        (
            "TE with vertical tab",
            format!(
                "{}transfer-encoding:\x0bchunked\r\n\r\n{chunked_body}",
                head("")
            ),
        ),
        (
            "TE line-folded",
            format!(
                "{}transfer-encoding:\r\n chunked\r\n\r\n{chunked_body}",
                head("")
            ),
        ),
        (
            "duplicate content-length",
            format!(
                "{}content-length: 0\r\ncontent-length: {}\r\n\r\n{smuggled}",
                head(""),
                smuggled.len()
            ),
        ),
        (
            "content-length list",
            format!("{}content-length: 0, 5\r\n\r\n{smuggled}", head("")),
        ),
        (
            "content-length with sign",
            format!("{}content-length: +0\r\n\r\n{smuggled}", head("")),
        ),
        (
            "chunk size overflow",
            format!(
                "{}transfer-encoding: chunked\r\n\r\nffffffffffffffffff\r\n{smuggled}",
                head("")
            ),
        ),
        (
            "bare LF line endings",
            format!(
                "GET {victim} HTTP/1.1\nhost: gateway\nauthorization: Bearer {token}\ntollbu-purpose: benefit-assessment\ntransfer-encoding: chunked\n\n0\n\n{smuggled}"
            ),
        ),
    ];
    let mut report = Vec::new();
    let mut answered_ok = 0;
    for (name, bytes) in &probes {
        let attack = raw_exchange(addr, bytes.as_bytes(), Duration::from_secs(3));
        let (outcome, ()) = tokio::join!(attack, assert_still_served(&env, &token));
        let statuses = outcome.statuses();
        report.push(format!("{name}: {statuses:?} closed={}", outcome.closed));
        for status in &statuses {
            assert!(
                *status == 200 || *status == 400 || *status == 401,
                "{name}: unexpected status {status}: {}",
                outcome.text()
            );
        }
        answered_ok += statuses.iter().filter(|s| **s == 200).count();
    }
    eprintln!("smuggling probes:\n{}", report.join("\n"));
    let seen = upstream.seen();
    // The registry may see a probe that we then refuse (it answered before the
    // broken body was read to the end), but never one without our identity
    // headers and never one that is missing from the audit log.
    assert!(
        seen.len() >= answered_ok + probes.len(),
        "every answered probe and good request reached the registry: {}",
        report.join("\n")
    );
    let mut env = env;
    env.stop_gateway().await;
    let recorded: std::collections::HashSet<String> = audit_records(&env.audit_dir())
        .iter()
        .filter_map(|r| r["request_id"].as_str().map(str::to_owned))
        .collect();
    for request in &seen {
        let id = request
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            recorded.contains(id),
            "the registry saw request `{id}` that has no audit record"
        );
    }
    for request in &seen {
        assert_eq!(
            request.uri,
            format!("/persons/{}", example_pid(0)),
            "smuggled request forwarded"
        );
        assert!(request.headers.contains_key("tollbu-verified-consumer"));
        assert!(!request.headers.contains_key("transfer-encoding"));
        assert!(
            !String::from_utf8_lossy(&request.body).contains("GET "),
            "smuggled bytes forwarded as a body"
        );
    }
}

#[tokio::test]
async fn absolute_form_targets_and_host_tricks_are_harmless() {
    let (env, upstream, token) = env_with_recorder(Options::default()).await;
    let addr = addr_of(&env.base());
    let path = format!("/population/persons/{}", example_pid(0));

    for target in [
        format!("http://evil.example{path}"),
        format!("http://{addr}{path}"),
        format!("https://gateway{path}"),
    ] {
        let request = format!(
            "GET {target} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {token}\r\ntollbu-purpose: benefit-assessment\r\nconnection: close\r\n\r\n"
        );
        let outcome = raw_exchange(addr, request.as_bytes(), WAIT).await;
        assert_eq!(outcome.statuses(), [400], "{target}: {}", outcome.text());
        assert!(outcome.text().contains("bad_path"), "{}", outcome.text());
    }
    for target in ["*", "population/persons/x", "//evil.example/population"] {
        let request =
            format!("GET {target} HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n");
        let outcome = raw_exchange(addr, request.as_bytes(), WAIT).await;
        let statuses = outcome.statuses();
        assert!(
            statuses.iter().all(|s| *s == 400 || *s == 404 || *s == 401),
            "{target}: {}",
            outcome.text()
        );
    }
    assert!(upstream.seen().is_empty(), "nothing forwarded");

    // Host is ours to set: whatever the client says, the registry sees its own.
    for host in [
        "host: evil.example\r\n",
        "host: gateway\r\nx-forwarded-host: evil.example\r\n",
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\n{host}authorization: Bearer {token}\r\ntollbu-purpose: benefit-assessment\r\nconnection: close\r\n\r\n"
        );
        let outcome = raw_exchange(addr, request.as_bytes(), WAIT).await;
        let statuses = outcome.statuses();
        assert!(
            statuses == [200] || statuses == [400],
            "{host:?}: {}",
            outcome.text()
        );
    }
    // No Host, or two (RFC 9112 §3.2), and two purposes: refused, never decided on one of them.
    for (head, code) in [
        ("", "bad_request"),
        ("host: a\r\nhost: b\r\n", "bad_request"),
        (
            "host: gateway\r\ntollbu-purpose: marketing\r\n",
            "bad_request",
        ),
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\n{head}authorization: Bearer {token}\r\ntollbu-purpose: benefit-assessment\r\nconnection: close\r\n\r\n"
        );
        let outcome = raw_exchange(addr, request.as_bytes(), WAIT).await;
        assert_eq!(outcome.statuses(), [400], "{head:?}: {}", outcome.text());
        assert!(outcome.text().contains(code), "{}", outcome.text());
    }
    let registry_host = upstream.url.trim_start_matches("http://").to_owned();
    for request in upstream.seen() {
        assert_eq!(
            request.headers.get("host").and_then(|v| v.to_str().ok()),
            Some(registry_host.as_str()),
            "{:?}",
            request.headers
        );
        assert!(!request.headers.contains_key("x-forwarded-host"));
        // The registry reads the purpose the decision accepted, not the caller's header.
        assert!(!request.headers.contains_key("tollbu-purpose"));
        assert!(request.headers.contains_key("tollbu-verified-purpose"));
    }
    // A `%` that starts no escape, or escapes that decode to no UTF-8, are read differently by
    // different decoders (RFC 3986 §2.1): refused in the path and in the query.
    let seen_before = upstream.seen().len();
    for target in [
        format!("{path}?x=%ZZ"),
        format!("{path}?x=%FF"),
        format!("{path}?x=50%"),
        "/population/persons/%ZZ".to_owned(),
    ] {
        let request = format!(
            "GET {target} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {token}\r\ntollbu-purpose: benefit-assessment\r\nconnection: close\r\n\r\n"
        );
        let outcome = raw_exchange(addr, request.as_bytes(), WAIT).await;
        assert_eq!(outcome.statuses(), [400], "{target}: {}", outcome.text());
        assert!(outcome.text().contains("bad_path"), "{}", outcome.text());
    }
    assert_eq!(upstream.seen().len(), seen_before);
}

#[tokio::test]
async fn path_traversal_in_every_encoding_never_reaches_the_registry() {
    let (env, upstream, token) = env_with_recorder(Options::default()).await;
    let addr = addr_of(&env.base());
    let pid = example_pid(0);
    let paths = attacks::traversal_paths(&pid);
    let mut report = Vec::new();
    for path in &paths {
        let request = format!(
            "{}connection: close\r\n\r\n",
            request_head(path, &token, "")
        );
        let outcome = raw_exchange(addr, request.as_bytes(), WAIT).await;
        let statuses = outcome.statuses();
        report.push(format!("{path} -> {statuses:?}"));
        assert!(
            statuses.len() == 1 && (400..500).contains(&statuses[0]),
            "{path}: {}",
            outcome.text()
        );
    }
    assert!(
        upstream.seen().is_empty(),
        "forwarded: {:?}\n{}",
        upstream.seen().iter().map(|r| &r.uri).collect::<Vec<_>>(),
        report.join("\n")
    );
    assert_still_served(&env, &token).await;
    assert_eq!(upstream.seen().len(), 1);
}

#[tokio::test]
async fn huge_declared_request_body_is_413_and_huge_response_is_502() {
    let (env, upstream, token) = env_with_recorder(Options {
        limits: "max_request_body_bytes = 65536\n".into(),
        ..Options::default()
    })
    .await;
    let addr = addr_of(&env.base());
    let path = format!("/population/persons/{}", example_pid(0));
    let body = vec![b'a'; 200_000];

    // Announced length over the limit.
    let mut request = format!(
        "{}content-length: {}\r\nconnection: close\r\n\r\n",
        request_head(&path, &token, ""),
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let (outcome, ()) = tokio::join!(
        raw_exchange(addr, &request, WAIT),
        assert_still_served(&env, &token)
    );
    assert_eq!(outcome.statuses(), [413], "{}", outcome.text());
    assert!(outcome.text().contains("payload_too_large"));

    assert_eq!(
        upstream.seen().len(),
        1,
        "only the good request was forwarded"
    );

    // Responses over max_response_body_bytes, with and without a length.
    for chunked in [false, true] {
        let big = RecordingUpstream::start(UpstreamBehaviour::Large {
            bytes: 100_000,
            chunked,
        })
        .await;
        let env = Env::start(Options {
            population_upstream: Some(big.url.clone()),
            limits: "max_response_body_bytes = 65536\n".into(),
            ..Options::default()
        })
        .await;
        let token = env.token("demo-welfare", "demo:population", &[]).await;
        let mut s = String::new();
        let answer = get(
            &format!("{}{path}", env.base()),
            &auth(&token, Some("benefit-assessment"), &mut s),
        )
        .await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "chunked={chunked}");
        assert_eq!(answer.code(), "upstream_too_large");
        assert!(answer.body.len() < 1000, "nothing of the answer released");
        assert_eq!(big.seen().len(), 1);
    }
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    let (env, _upstream, token) = env_with_recorder(Options {
        limits: "max_connections = 2\n".into(),
        ..Options::default()
    })
    .await;
    let addr = addr_of(&env.base());
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut held = TcpStream::connect(addr).await.unwrap();
        // Prove each is being served (and keep it open).
        let request = format!(
            "{}\r\n",
            request_head(
                &format!("/population/persons/{}", example_pid(0)),
                &token,
                ""
            )
        );
        held.write_all(request.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = held.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        holders.push(held);
    }
    // The third connects (kernel backlog) but is not served while both are held.
    let mut third = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{}connection: close\r\n\r\n",
        request_head(
            &format!("/population/persons/{}", example_pid(0)),
            &token,
            ""
        )
    );
    third.write_all(request.as_bytes()).await.unwrap();
    let waiting = read_until_close(&mut third, Duration::from_millis(800)).await;
    assert!(
        waiting.bytes.is_empty() && !waiting.closed,
        "the N+1st connection must wait: {}",
        waiting.text()
    );
    drop(holders.pop());
    let served = read_until_close(&mut third, WAIT).await;
    assert_eq!(
        served.statuses(),
        [200],
        "served once a slot frees: {}",
        served.text()
    );
}

// --- HTTP/2 with hand-built frames ------------------------------------------

mod h2raw {
    use super::*;

    pub use tollbu_tests::h2raw::*;

    pub async fn connect(addr: std::net::SocketAddr) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        hello.extend(frame(SETTINGS, 1, 0, &[])); // ack the server's, whenever it comes
        stream.write_all(&hello).await.unwrap();
        stream
    }

    /// Frames the server sent, until it closes or `wait` passes.
    pub async fn read_frames(
        stream: &mut TcpStream,
        wait: Duration,
    ) -> (Vec<(u8, u8, u32, Vec<u8>)>, bool) {
        let outcome = read_until_close(stream, wait).await;
        let mut frames = Vec::new();
        let mut rest = &outcome.bytes[..];
        while rest.len() >= 9 {
            let len =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            if rest.len() < 9 + len {
                break;
            }
            let stream_id = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
            frames.push((rest[3], rest[4], stream_id, rest[9..9 + len].to_vec()));
            rest = &rest[9 + len..];
        }
        (frames, outcome.closed)
    }
}

#[tokio::test]
async fn h2_rapid_reset_is_cut_off_and_others_are_served() {
    use h2raw::*;
    let (env, upstream, token) = env_with_recorder(Options::default()).await;
    let addr = addr_of(&env.base());
    let mut stream = connect(addr).await;
    let authorization = format!("Bearer {token}");
    let block = get_block(
        "gateway",
        &format!("/population/persons/{}", example_pid(0)),
        &[
            ("authorization", &authorization),
            ("tollbu-purpose", "benefit-assessment"),
        ],
    );
    // CVE-2023-44487: open a stream and cancel it at once, thousands of times.
    let attack = rapid_reset(&mut stream, &block);
    let (sent, ()) = tokio::join!(attack, assert_still_served(&env, &token));
    let (frames, closed) = read_frames(&mut stream, WAIT).await;
    let goaway = frames.iter().find(|f| f.0 == GOAWAY);
    eprintln!(
        "rapid reset: sent {sent} streams, {} frames back, goaway={:?}, closed={closed}, registry saw {}",
        frames.len(),
        goaway.map(|f| f
            .3
            .get(4..8)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))),
        upstream.seen().len()
    );
    let Some(goaway) = goaway else {
        panic!(
            "the server must answer a reset flood with GOAWAY ({} frames)",
            frames.len()
        );
    };
    let code = u32::from_be_bytes([goaway.3[4], goaway.3[5], goaway.3[6], goaway.3[7]]);
    assert!(
        code == 0xb || code == 0x1,
        "GOAWAY with ENHANCE_YOUR_CALM (or PROTOCOL_ERROR), got {code:#x}"
    );
    assert!(
        upstream.seen().len() < sent as usize / 2,
        "most cancelled streams never reach the registry ({} of {sent})",
        upstream.seen().len()
    );
    assert_still_served(&env, &token).await;
}

#[tokio::test]
async fn h2_streams_beyond_max_h2_streams_are_refused() {
    use h2raw::*;
    let upstream =
        RecordingUpstream::start(UpstreamBehaviour::Hold(Duration::from_millis(1500))).await;
    let env = Env::start(Options {
        population_upstream: Some(upstream.url.clone()),
        limits: "max_h2_streams = 4\n".into(),
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let addr = addr_of(&env.base());
    let mut stream = connect(addr).await;
    let authorization = format!("Bearer {token}");
    let block = get_block(
        "gateway",
        &format!("/population/persons/{}", example_pid(0)),
        &[
            ("authorization", &authorization),
            ("tollbu-purpose", "benefit-assessment"),
        ],
    );
    // Ignore SETTINGS_MAX_CONCURRENT_STREAMS and open 20 at once.
    let mut bytes = Vec::new();
    for i in 0..20u32 {
        bytes.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, &block));
    }
    stream.write_all(&bytes).await.unwrap();
    assert_still_served(&env, &token).await;
    let (frames, _closed) = read_frames(&mut stream, Duration::from_secs(4)).await;
    let settings = frames
        .iter()
        .find(|f| f.0 == SETTINGS && f.1 == 0)
        .expect("server SETTINGS");
    let advertised = settings
        .3
        .chunks(6)
        .find(|c| c.len() == 6 && u16::from_be_bytes([c[0], c[1]]) == 0x3)
        .map(|c| u32::from_be_bytes([c[2], c[3], c[4], c[5]]));
    assert_eq!(
        advertised,
        Some(4),
        "SETTINGS_MAX_CONCURRENT_STREAMS advertised"
    );
    let refused = frames
        .iter()
        .filter(|f| f.0 == RST_STREAM && f.3 == 7u32.to_be_bytes())
        .count();
    let answered = frames.iter().filter(|f| f.0 == HEADERS).count();
    let goaway = frames.iter().any(|f| f.0 == GOAWAY);
    eprintln!(
        "stream flood: refused={refused} answered={answered} goaway={goaway} peak={}",
        upstream.peak_in_flight()
    );
    assert!(
        refused >= 16 || goaway,
        "streams beyond the limit are refused (REFUSED_STREAM) or the connection is closed"
    );
    assert!(answered <= 4, "at most max_h2_streams answered: {answered}");
    // The well-behaved client's request also reached the registry, on its own connection.
    assert!(
        upstream.peak_in_flight() <= 5,
        "at most 4 streams of the flood (+1 good client) in flight at the registry: {}",
        upstream.peak_in_flight()
    );
}

#[tokio::test]
async fn chunked_request_body_over_the_limit_is_413_even_if_the_registry_answers_early() {
    let (env, upstream, token, _policies) = env_with_notes(
        UpstreamBehaviour::PersonBodyUnread,
        "max_request_body_bytes = 65536\n",
    )
    .await;
    let addr = addr_of(&env.base());
    let body = vec![b'a'; 200_000];
    // Chunked, no length announced.
    let mut request = note_head(
        &token,
        "transfer-encoding: chunked\r\nconnection: close\r\n\r\n",
    )
    .into_bytes();
    for chunk in body.chunks(8192) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let outcome = raw_exchange(addr, &request, WAIT).await;
    assert_eq!(outcome.statuses(), [413], "{}", outcome.text());
    assert!(outcome.text().contains("payload_too_large"));
    assert!(
        upstream.seen().iter().all(|r| r.body.len() <= 65_536),
        "no more than the limit was forwarded"
    );
}

/// The admin listener (health, metrics, proofs, the officer console) has the gateway's header
/// timeout too: a client sending half a request head is cut off, and the listener keeps serving.
/// Without it one client could hold connections until the process ran out of file descriptors,
/// taking the gateway's own port down with it.
#[tokio::test]
async fn a_half_sent_request_head_on_the_admin_port_is_cut_off_at_the_header_read_timeout() {
    let env = Env::start(short_header_read_timeout()).await;
    let admin = env.gateway().admin_addr;
    let mut stream = TcpStream::connect(admin).await.unwrap();
    stream
        .write_all(b"GET /console/login HTTP/1.1\r\nhost: admin\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the admin listener held a half-sent head for 10 s"
    );
    let text = String::from_utf8_lossy(&rest);
    assert!(
        rest.is_empty() || text.starts_with("HTTP/1.1 408"),
        "closed, or 408: {text}"
    );
    let health = get(&format!("{}/healthz", env.admin()), &[]).await;
    assert_eq!(health.status, StatusCode::OK);
}

/// A gateway whose policies hold the `POST …/notes` operation (bodies belong to it), in front
/// of `behaviour`, with `limits`; and a welfare agency token.
async fn env_with_notes(
    behaviour: UpstreamBehaviour,
    limits: &str,
) -> (Env, RecordingUpstream, String, tempfile::TempDir) {
    let upstream = RecordingUpstream::start(behaviour).await;
    let policies = policy_dir(&format!("{POPULATION_SERVICE_TOML}{NOTES_GRANT}"));
    let env = Env::start(Options {
        population_upstream: Some(upstream.url.clone()),
        policies: Some(policies.path().to_path_buf()),
        limits: limits.into(),
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    (env, upstream, token, policies)
}

/// The head of a `POST` of a note about example person 0.
fn note_head(token: &str, extra: &str) -> String {
    format!(
        "POST /population/persons/{}/notes HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {token}\r\ntollbu-purpose: benefit-assessment\r\n{extra}",
        example_pid(0)
    )
}

/// A registry may answer as soon as it has the head, while the gateway's connection to it is
/// still sending the body. A caller whose body is complete but arrives in parts is then served,
/// and its record has the digest of the whole body; it used to get 400 and a `deny` record for
/// a request the registry had executed.
#[tokio::test]
async fn a_body_still_arriving_when_the_registry_answers_is_read_to_its_end() {
    let (env, _upstream, token, _policies) =
        env_with_notes(UpstreamBehaviour::PersonBodyUnread, "").await;
    let body = vec![b'a'; 3000];
    let mut stream = TcpStream::connect(addr_of(&env.base())).await.unwrap();
    let head = note_head(
        &token,
        &format!(
            "x-request-id: early-1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        ),
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..1000]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(&body[1000..]).await.unwrap();
    let outcome = read_until_close(&mut stream, WAIT).await;
    assert_eq!(outcome.statuses(), [200], "{}", outcome.text());
    let records = audit_records(&env.audit_dir());
    let record = records
        .iter()
        .find(|r| r["request_id"] == "early-1")
        .expect("record");
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["request_sha256"], sha256_hex(&body).as_str());
}

/// A body that fails after the registry was called: the record says the request was forwarded
/// (`error`, with the registry's status), not that the policy refused it.
#[tokio::test]
async fn a_body_that_breaks_after_forwarding_is_recorded_as_an_error_with_the_registry_status() {
    let (env, _upstream, token, _policies) = env_with_notes(
        UpstreamBehaviour::PersonBodyUnread,
        "header_read_timeout_ms = 400\n",
    )
    .await;
    let mut stream = TcpStream::connect(addr_of(&env.base())).await.unwrap();
    let head = note_head(
        &token,
        "x-request-id: broken-1\r\ncontent-length: 3000\r\n\r\n",
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b'a'; 1000]).await.unwrap();
    // The rest never comes.
    let outcome = read_until_close(&mut stream, WAIT).await;
    assert_eq!(outcome.statuses(), [400], "{}", outcome.text());
    let records = audit_records(&env.audit_dir());
    let record = records
        .iter()
        .find(|r| r["request_id"] == "broken-1")
        .expect("record");
    assert_eq!(record["decision"], "error");
    assert_eq!(record["reason"], "bad_request");
    assert_eq!(record["upstream_status"], 200);
}

/// `GET` and `HEAD` content has no meaning (RFC 9110 §9.3.1) and no decision looked at it, yet a
/// registry could act on it (a search body naming another person): any byte of it refuses the
/// request before the registry is called. An empty body, however framed, is no body.
#[tokio::test]
async fn content_on_a_get_is_refused_and_never_reaches_the_registry() {
    let (env, upstream, token) = env_with_recorder(Options::default()).await;
    let addr = addr_of(&env.base());
    let path = format!("/population/persons/{}", example_pid(0));
    let search = format!(r#"{{"pid":"{}"}}"#, example_pid(1));
    for framing in [
        format!("content-length: {}\r\n\r\n{search}", search.len()),
        format!(
            "transfer-encoding: chunked\r\n\r\n{:x}\r\n{search}\r\n0\r\n\r\n",
            search.len()
        ),
    ] {
        let request = format!(
            "{}connection: close\r\n{framing}",
            request_head(&path, &token, "")
        );
        let outcome = raw_exchange(addr, request.as_bytes(), WAIT).await;
        assert_eq!(outcome.statuses(), [400], "{}", outcome.text());
        assert!(
            outcome.text().contains("carries no body"),
            "{}",
            outcome.text()
        );
    }
    assert!(
        upstream.seen().is_empty(),
        "forwarded: {:?}",
        upstream.seen()
    );
    for empty in [
        "content-length: 0\r\n\r\n",
        "transfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let request = format!(
            "{}connection: close\r\n{empty}",
            request_head(&path, &token, "")
        );
        let outcome = raw_exchange(addr, request.as_bytes(), WAIT).await;
        assert_eq!(outcome.statuses(), [200], "{empty}: {}", outcome.text());
    }
}
