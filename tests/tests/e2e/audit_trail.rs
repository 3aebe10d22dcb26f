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
    // A caller's free text carrying another person's number: as the purpose, and as its
    // request id (a case key often is the number). Neither may reach the log in clear.
    let (as_purpose, as_request_id) = (example_pid(8), example_pid(9));
    let purpose_text = get(
        &format!("{}/population/persons/{pid}", env.base()),
        &auth(&token, Some(&as_purpose), &mut s),
    )
    .await;
    assert_eq!(purpose_text.status, StatusCode::FORBIDDEN);
    // Written as people write it in a case key, with a separator (`020284-04827`).
    let case_key = format!("case-{}-{}", &as_request_id[..6], &as_request_id[6..]);
    let mut headers = auth(&token, Some("benefit-assessment"), &mut s);
    headers.push(("x-request-id", &case_key));
    let keyed = get(
        &format!("{}/population/persons/{pid}", env.base()),
        &headers,
    )
    .await;
    assert_eq!(keyed.status, StatusCode::OK);
    assert_ne!(
        keyed.header("x-request-id"),
        case_key,
        "replaced by our own"
    );
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
        4,
        "allowed and denied requests about the person: {}",
        found.text
    );
    let allow = records
        .iter()
        .find(|r| r["request_id"] == request_id.as_str())
        .expect("allow record");
    assert_eq!(allow["decision"], "allow");
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
        5,
        "the unauthenticated request is recorded too: {}",
        all.text
    );

    for (path, bytes) in all_bytes_under(&audit_dir) {
        let text = String::from_utf8_lossy(&bytes);
        for number in [&pid, &as_purpose, &as_request_id, &case_key] {
            assert!(
                !text.contains(number.as_str()),
                "identity number in clear in {}",
                path.display()
            );
        }
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

#[tokio::test]
async fn an_outsider_verifies_a_record_from_the_admin_endpoints_alone() {
    use tollbu_audit::checkpoint::{parse_checkpoint_body, verify_note};
    use tollbu_audit::{InclusionProof, NoteVerifier};
    let env = Env::start(Options::default()).await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    let mut s = String::new();
    for i in 0..3 {
        let answer = get(
            &format!("{}/population/persons/{}", env.base(), example_pid(i)),
            &auth(&token, Some("benefit-assessment"), &mut s),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    // The default config checkpoints every second while the log grows.
    let verifier_key = std::fs::read_to_string(env.audit_dir().join("verifier-key")).unwrap();
    let verifier = NoteVerifier::parse(&verifier_key).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let checkpoint = loop {
        let note = get(&format!("{}/audit/checkpoint", env.admin()), &[]).await;
        if note.status == StatusCode::OK {
            let text = String::from_utf8(note.body.to_vec()).unwrap();
            let body = verify_note(&text, &verifier).expect("checkpoint signature verifies");
            let checkpoint = parse_checkpoint_body(body).unwrap();
            if checkpoint.size >= 3 {
                break checkpoint;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint of size 3"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(checkpoint.origin, "tollbu.example/test/gateway-0");

    let proof = get(
        &format!(
            "{}/audit/proof/inclusion?index=1&size={}",
            env.admin(),
            checkpoint.size
        ),
        &[],
    )
    .await;
    assert_eq!(
        proof.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&proof.body)
    );
    let proof: InclusionProof = serde_json::from_slice(&proof.body).unwrap();
    assert_eq!(proof.root, checkpoint.root);
    // The leaf hash the proof is about is the one published in the level-0 tile.
    let tile_path = if checkpoint.size < 256 {
        format!("0/000.p/{}", checkpoint.size)
    } else {
        "0/000".to_owned()
    };
    let tile_url = format!("{}/audit/tile/{tile_path}", env.admin());
    let tile = get(&tile_url, &[]).await;
    assert_eq!(tile.status, StatusCode::OK);
    assert_eq!(tile.body.len() as u64, 32 * checkpoint.size.min(256));
    // What a monitor or a cache in front of the admin port relies on (RFC 9110 §9.3.2, §15.5.6).
    assert_eq!(
        tile.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    let head = send(http::Method::HEAD, &tile_url).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), tile.body.len().to_string());
    let checkpoint_head = send(
        http::Method::HEAD,
        &format!("{}/audit/checkpoint", env.admin()),
    )
    .await;
    assert_eq!(checkpoint_head.status, StatusCode::OK);
    assert_eq!(checkpoint_head.header("cache-control"), "no-cache");
    let delete = send(http::Method::DELETE, &tile_url).await;
    assert_eq!(delete.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(delete.header("allow"), "GET, HEAD");
    let reload = get(&format!("{}/admin/reload", env.admin()), &[]).await;
    assert_eq!(reload.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reload.header("allow"), "POST");
    let second_spelling = get(
        &format!("{}/audit/tile/00/{}", env.admin(), &tile_path[2..]),
        &[],
    )
    .await;
    assert_eq!(second_spelling.status, StatusCode::BAD_REQUEST);
    // The admin port's refusals are problem+json with a stable code, as the gateway's are.
    for (answer, code) in [
        (&delete, "method_not_allowed"),
        (&second_spelling, "bad_tile_path"),
    ] {
        assert_eq!(answer.header("content-type"), "application/problem+json");
        assert_eq!(answer.json()["code"], code, "{}", answer.json());
    }
    let beyond = get(
        &format!(
            "{}/audit/proof/inclusion?index=0&size={}",
            env.admin(),
            checkpoint.size + 1_000
        ),
        &[],
    )
    .await;
    assert_eq!(beyond.status, StatusCode::BAD_REQUEST);
    assert_eq!(beyond.json()["code"], "bad_proof_request");
    assert!(
        beyond.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains("larger than")),
        "{}",
        beyond.json()
    );
    let no_tile = get(
        &format!(
            "{}/audit/tile/0/{}",
            env.admin(),
            tollbu_audit::tile::tile_index_path(1_000)
        ),
        &[],
    )
    .await;
    assert_eq!(no_tile.status, StatusCode::NOT_FOUND);
    assert_eq!(no_tile.json()["code"], "tile_not_found");
    assert_eq!(&tile.body[32..64], &proof.leaf_hash[..]);
    assert!(tollbu_audit::tree::verify_inclusion(
        &proof.leaf_hash,
        1,
        checkpoint.size,
        &proof.path,
        &checkpoint.root
    ));
    let mut forged = proof.leaf_hash;
    forged[0] ^= 1;
    assert!(!tollbu_audit::tree::verify_inclusion(
        &forged,
        1,
        checkpoint.size,
        &proof.path,
        &checkpoint.root
    ));
}

/// `[audit] retention_days`: a gateway that starts on a log holding year-old records removes their
/// bodies at once (whole segments), keeps the records inside the period, and the log still verifies.
#[tokio::test]
async fn retention_days_removes_old_record_bodies_at_start_and_the_log_still_verifies() {
    let password = "retention-officer-password";
    let mut env = Env::start(Options {
        extra_config: format!("retention_days = 30\n{}", console_section(password)),
        ..Options::default()
    })
    .await;
    env.stop_gateway().await;
    let audit_dir = env.audit_dir();
    let now = time::OffsetDateTime::now_utc();
    write_log_with_year_old_records(&audit_dir, "tollbu.example/test/gateway-0", now, None).await;
    let segments = || count_segments(&audit_dir);
    let before = segments();
    assert!(before > 10, "{before} segments");

    env.restart_gateway().await;
    let first_retained = wait_for_pruned(&audit_dir).await;
    // Old records go up to the last full tile the log had signed; today's stay.
    assert!(
        (768..=1_200).contains(&first_retained),
        "first retained {first_retained}"
    );
    assert!(
        segments() < before,
        "{} of {before} segments left",
        segments()
    );
    // The console's citizen view (here its JSON) says where the kept records start: which of the
    // removed records concerned anyone is no longer recorded.
    let session = console_login(&env, password).await;
    let view = console_get(
        &env,
        &session,
        &format!("/console/api/citizen?subject={}", "ab".repeat(32)),
    )
    .await;
    assert_eq!(
        view.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&view.body)
    );
    assert_eq!(
        view.json()["retention_removed_records_before"],
        first_retained,
        "{}",
        view.json()
    );
    // And so does the page an officer reads (records below 1,200 all carry the same time).
    let page = console_get(
        &env,
        &session,
        &format!("/console/citizen?subject={}", "ab".repeat(32)),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let html = String::from_utf8_lossy(&page.body);
    assert!(
        html.contains(&format!(
            "Requests recorded before {} were removed under the retention policy",
            tollbu_audit::Record::timestamp(now - time::Duration::days(365))
        )),
        "{html}"
    );
    // Platform teams see it in /metrics, and would see a failing sweep there too.
    let metrics = get(&format!("{}/metrics", env.admin()), &[]).await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metrics.contains(&format!(
            "\ntollbu_audit_first_retained_record {first_retained}\n"
        )) && metrics.contains("\ntollbu_audit_retention_failures_total 0\n"),
        "{metrics}"
    );
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    assert_eq!(env.read_person(&token, None).await.status, StatusCode::OK);
    env.stop_gateway().await;

    // (The officer's console reads are recorded too, as service `console`.)
    assert_pruned_yet_verified(&audit_dir, first_retained, now, Some("population"), 11, &[]);
    // An officer's table says where the kept records start.
    let table = tooling::query(&audit_dir, &Query::default(), None, false);
    // (Records below 1,200 all carry the same time, a year ago.)
    assert!(
        table.text.contains(&format!(
            "Records 0..{first_retained} (before {}) were removed under the retention policy",
            tollbu_audit::Record::timestamp(now - time::Duration::days(365))
        )),
        "{}",
        table.text
    );
}

/// Writes a log at `dir` with the gateway's keys: 1,200 records a year old in 16 KiB segments
/// (commits of 40, so that segments rotate between them), then 10 from an hour ago, about
/// `recent_subject` (a national id) when given.
async fn write_log_with_year_old_records(
    dir: &std::path::Path,
    origin: &str,
    now: time::OffsetDateTime,
    recent_subject: Option<&str>,
) {
    let certs = certs_dir();
    let mut cfg = tollbu_audit::AuditConfig::new(
        dir.to_path_buf(),
        origin,
        certs.join("audit-signing.key.pem"),
        certs.join("audit-pseudonym.key"),
    );
    cfg.segment_max_bytes = 16 * 1024;
    let (log, _) = tollbu_audit::AuditLog::open(cfg).expect("open the log");
    let record = |i: u64, age: time::Duration| tollbu_audit::Record {
        time: tollbu_audit::Record::timestamp(now - age),
        request_id: format!("old-{i}"),
        service: "population".into(),
        operation: "get-person".into(),
        decision: tollbu_audit::Decision::Allow,
        ..tollbu_audit::Record::default()
    };
    for first in (0..1_200).step_by(40) {
        let batch = (first..first + 40)
            .map(|i| record(i, time::Duration::days(365)))
            .collect();
        log.append_batch(batch).await.expect("append");
    }
    let subject = recent_subject.map(|id| log.pseudonymise(id));
    let recent = (1_200..1_210)
        .map(|i| tollbu_audit::Record {
            subject: subject.clone(),
            ..record(i, time::Duration::hours(1))
        })
        .collect();
    log.append_batch(recent).await.expect("append");
    close(log).await;
}

/// A `[console]` section with one officer, `officer`, whose password is `password`.
/// The test gateway's own log, opened while the gateway is stopped.
fn open_gateway_log(env: &Env) -> tollbu_audit::AuditLog {
    let certs = certs_dir();
    let (log, _) = tollbu_audit::AuditLog::open(tollbu_audit::AuditConfig::new(
        env.audit_dir(),
        "tollbu.example/test/gateway-0",
        certs.join("audit-signing.key.pem"),
        certs.join("audit-pseudonym.key"),
    ))
    .expect("open the gateway's log");
    log
}

/// `count` allowed reads of the person with pseudonym `subject`, at `now`.
fn reads_of(subject: &str, now: &str, count: usize) -> Vec<tollbu_audit::Record> {
    (0..count)
        .map(|_| tollbu_audit::Record {
            time: now.to_owned(),
            service: "population".into(),
            operation: "get-person".into(),
            subject: Some(subject.to_owned()),
            decision: tollbu_audit::Decision::Allow,
            ..tollbu_audit::Record::default()
        })
        .collect()
}

fn console_section(password: &str) -> String {
    console_section_for("officer", password)
}

/// A `[console]` section with one officer `user`. (Sessions and failed logins are kept per
/// process: a test that counts failures needs a name no other test logs in with.)
fn console_section_for(user: &str, password: &str) -> String {
    let hash = tollbu_proxy::console::auth::PasswordHash::new(password, 100_000)
        .expect("a salt")
        .to_phc();
    format!(
        "\n[console]\nenabled = true\nusers = [{{ name = \"{user}\", password_hash = \"{hash}\" }}]\n"
    )
}

/// `GET` of a console path (`/console/…`) with the session cookie.
async fn console_get(env: &Env, session: &str, path: &str) -> Answer {
    get(&format!("{}{path}", env.admin()), &[("cookie", session)]).await
}

/// A login form posted to the console at `admin`.
async fn post_login(admin: std::net::SocketAddr, user: &str, password: &str) -> RawOutcome {
    post_login_from([127, 0, 0, 1].into(), admin, user, password).await
}

/// [`post_login`] from the client address `from` (a 127.x.y.z address).
async fn post_login_from(
    from: std::net::IpAddr,
    admin: std::net::SocketAddr,
    user: &str,
    password: &str,
) -> RawOutcome {
    let form = format!("user={user}&password={password}");
    raw_exchange_from(
        from,
        admin,
        format!(
            "POST /console/login HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        )
        .as_bytes(),
        std::time::Duration::from_secs(30),
    )
    .await
}

/// Logs `officer` into the console and returns the session cookie (`name=value`).
async fn console_login(env: &Env, password: &str) -> String {
    let login = post_login(env.gateway().admin_addr, "officer", password)
        .await
        .text();
    login
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie").then(|| {
                value
                    .trim()
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            })
        })
        .unwrap_or_else(|| panic!("no session cookie in {login}"))
}

/// Closes a log the test wrote (its shutdown blocks).
async fn close(log: tollbu_audit::AuditLog) {
    tokio::task::spawn_blocking(move || log.shutdown())
        .await
        .expect("join")
        .expect("shutdown");
}

/// The log at `dir` verifies with records below `first_retained` kept as hashes only, their
/// removal vouched for by a retention statement (signed by the log's key, or by one of
/// `retention_keys`), and holds `recent` records of the last day (of `service`, when given).
fn assert_pruned_yet_verified(
    dir: &std::path::Path,
    first_retained: u64,
    now: time::OffsetDateTime,
    service: Option<&str>,
    recent: usize,
    retention_keys: &[String],
) {
    let report = tooling::verify_with_options(
        dir,
        &tooling::VerifyOptions {
            retention_keys,
            ..tooling::VerifyOptions::default()
        },
    );
    assert!(report.ok, "{}", report.text);
    assert!(
        report
            .text
            .contains(&format!("pruned: records 0..{first_retained}")),
        "{}",
        report.text
    );
    assert!(
        report.text.contains(&format!(
            "retention statement: records below {first_retained} removed by retention (the latest sweep removed records older than "
        )),
        "{}",
        report.text
    );
    let found = tooling::query(
        dir,
        &Query {
            from: Some(tollbu_audit::Record::timestamp(
                now - time::Duration::days(1),
            )),
            service: service.map(str::to_owned),
            ..Query::default()
        },
        None,
        true,
    );
    assert!(found.ok, "{}", found.text);
    assert_eq!(found.text.lines().count(), recent, "{}", found.text);
}

fn count_segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("segments"))
        .expect("segments")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "seg"))
        })
        .count()
}

/// Waits for a sweep's `pruned` marker in `dir` and returns the first record it kept.
async fn wait_for_pruned(dir: &std::path::Path) -> u64 {
    let pruned = dir.join("pruned");
    for _ in 0..100 {
        if pruned.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    std::fs::read_to_string(&pruned)
        .unwrap_or_else(|e| panic!("no `pruned` marker in {}: {e}", dir.display()))
        .trim()
        .parse()
        .expect("a record number")
}

/// `retired_dirs`: after a signing-key rotation the previous generation's log stays on the volume
/// and nothing writes it; its records have the same retention period, so the gateway sweeps it
/// too, and the console's citizen view includes it (the answer must not start at the rotation).
/// A retired log this replica never had is not a failure.
#[tokio::test]
async fn retention_days_applies_to_retired_logs_on_the_volume() {
    let password = "retired-officer-password";
    let mut env = Env::start(Options {
        extra_config: format!(
            "retention_days = 30\nretired_dirs = [\"audit-g0\", \"audit-never-written\", \"audit-other-key\"]\n{}",
            console_section(password)
        ),
        ..Options::default()
    })
    .await;
    env.stop_gateway().await;
    let retired = env.audit_dir().with_file_name("audit-g0");
    let now = time::OffsetDateTime::now_utc();
    let person = example_pid(0);
    write_log_with_year_old_records(
        &retired,
        "tollbu.example/test/gateway-0/g0",
        now,
        Some(&person),
    )
    .await;
    // A log whose subjects were pseudonymised with another key cannot be searched for the person:
    // the view must say so rather than show it as holding no requests.
    let other_key_log = env.audit_dir().with_file_name("audit-other-key");
    let other_key = env.audit_dir().with_file_name("other-pseudonym.key");
    std::fs::write(&other_key, format!("{}\n", "6b".repeat(32))).expect("a key file");
    let (log, _) = tollbu_audit::AuditLog::open(tollbu_audit::AuditConfig::new(
        other_key_log.clone(),
        "tollbu.example/test/gateway-0/other",
        certs_dir().join("audit-signing.key.pem"),
        other_key,
    ))
    .expect("open the log");
    log.append(tollbu_audit::Record {
        time: tollbu_audit::Record::timestamp(now),
        service: "population".into(),
        operation: "get-person".into(),
        subject: Some(log.pseudonymise(&person)),
        decision: tollbu_audit::Decision::Allow,
        ..tollbu_audit::Record::default()
    })
    .await
    .expect("append");
    close(log).await;
    let before = count_segments(&retired);
    assert!(before > 10, "{before} segments");

    env.restart_gateway().await;
    let first_retained = wait_for_pruned(&retired).await;
    assert!(
        (768..=1_200).contains(&first_retained),
        "first retained {first_retained}"
    );
    assert!(count_segments(&retired) < before);
    let metrics = get(&format!("{}/metrics", env.admin()), &[]).await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metrics.contains("\ntollbu_audit_retention_failures_total 0\n"),
        "{metrics}"
    );
    assert!(
        !env.audit_dir()
            .with_file_name("audit-never-written")
            .exists()
    );

    // The person's request today is in the active log, the ten before the rotation in the
    // retired one; the citizen view shows both, and where the retired log's kept records start.
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    assert_eq!(env.read_person(&token, None).await.status, StatusCode::OK);
    let session = console_login(&env, password).await;
    let pseudonym =
        tollbu_audit::Pseudonymiser::from_key_file(&certs_dir().join("audit-pseudonym.key"))
            .expect("the pseudonym key")
            .pseudonym(&person);
    let view = console_get(
        &env,
        &session,
        &format!("/console/api/citizen?subject={pseudonym}"),
    )
    .await;
    assert_eq!(view.status, StatusCode::OK);
    let view = view.json();
    // (The officer's own read of the view is recorded too, as service `console`.)
    let requests = view["requests"].as_array().expect("requests");
    let data_requests = requests
        .iter()
        .filter(|r| r["what"]["service"] == "population")
        .count();
    assert_eq!(data_requests, 1, "{view}");
    let earlier = &view["earlier_logs"];
    // In `retired_dirs` order: the log, the path this replica never had a log at, the other key.
    assert_eq!(earlier.as_array().map(Vec::len), Some(3), "{view}");
    assert_eq!(earlier[1]["absent"], true, "{view}");
    assert_eq!(earlier[0]["absent"], false, "{view}");
    assert_eq!(earlier[0]["dir"], retired.display().to_string(), "{view}");
    assert_eq!(
        earlier[0]["requests"].as_array().map(Vec::len),
        Some(10),
        "{view}"
    );
    assert_eq!(
        earlier[0]["retention_removed_records_before"], first_retained,
        "{view}"
    );
    assert!(earlier[0]["unsearchable"].is_null(), "{view}");
    assert_eq!(
        earlier[2]["dir"],
        other_key_log.display().to_string(),
        "{view}"
    );
    assert!(
        earlier[2]["unsearchable"]
            .as_str()
            .is_some_and(|why| why.contains("not the one")),
        "{view}"
    );
    let page = console_get(
        &env,
        &session,
        &format!("/console/citizen?subject={pseudonym}"),
    )
    .await;
    let html = String::from_utf8_lossy(&page.body);
    assert!(
        html.contains(&format!(
            "<h2>Earlier log <code>{}</code></h2>",
            retired.display()
        )),
        "{html}"
    );
    env.stop_gateway().await;

    // The retired log's key may be gone, so the gateway signed the retention statement with the
    // active log's: an officer verifying the retired log names that key as trusted for it.
    let active_key = std::fs::read_to_string(env.audit_dir().join("verifier-key"))
        .expect("the active log's verifier key");
    let untrusted = tooling::verify(&retired, &[], None);
    assert!(!untrusted.ok, "{}", untrusted.text);
    assert!(
        untrusted
            .text
            .contains("is signed by `tollbu.example/test/gateway-0` (key id")
            && untrusted.text.contains("--retention-key"),
        "{}",
        untrusted.text
    );
    assert_pruned_yet_verified(
        &retired,
        first_retained,
        now,
        None,
        10,
        &[active_key.trim().to_string()],
    );
}

/// The console's citizen view lists at most 10,000 requests per log; beyond that it must say the
/// list is not the whole answer rather than present it as complete.
#[tokio::test]
async fn the_citizen_view_says_when_it_shows_only_the_newest_requests() {
    let password = "busy-person-officer-password";
    let mut env = Env::start(Options {
        extra_config: console_section(password),
        ..Options::default()
    })
    .await;
    env.stop_gateway().await;
    let log = open_gateway_log(&env);
    let person = example_pid(0);
    let subject = log.pseudonymise(&person);
    let now = tollbu_audit::Record::timestamp(time::OffsetDateTime::now_utc());
    for _ in 0..11 {
        let batch = reads_of(&subject, &now, 1_000);
        log.append_batch(batch).await.expect("append");
    }
    close(log).await;

    env.restart_gateway().await;
    let session = console_login(&env, password).await;
    let view = console_get(
        &env,
        &session,
        &format!("/console/api/citizen?subject={subject}"),
    )
    .await;
    assert_eq!(view.status, StatusCode::OK);
    let view = view.json();
    assert_eq!(view["requests"].as_array().map(Vec::len), Some(10_000));
    assert_eq!(view["truncated"], true);
    let page = console_get(
        &env,
        &session,
        &format!("/console/citizen?subject={subject}"),
    )
    .await;
    let html = String::from_utf8_lossy(&page.body);
    assert!(
        html.contains("Only the newest 10000 requests of this log are shown"),
        "{}",
        &html[..html.len().min(2_000)]
    );
}

/// A damaged index (here a subject bucket cut short while the gateway was stopped) makes the
/// console's citizen view and record list fail naming the file, instead of listing fewer requests.
#[tokio::test]
async fn the_console_refuses_to_answer_from_a_damaged_index() {
    use sha2::Digest;
    let password = "damaged-index-officer-password";
    let mut env = Env::start(Options {
        extra_config: console_section(password),
        ..Options::default()
    })
    .await;
    env.stop_gateway().await;
    let log = open_gateway_log(&env);
    let subject = log.pseudonymise(&example_pid(1));
    let now = tollbu_audit::Record::timestamp(time::OffsetDateTime::now_utc());
    let batch = reads_of(&subject, &now, 200);
    log.append_batch(batch).await.expect("append");
    close(log).await;
    let bucket = env.audit_dir().join("index").join("subject").join(format!(
        "{:02x}.idx",
        sha2::Sha256::digest(subject.as_bytes())[0]
    ));
    let bytes = std::fs::read(&bucket).expect("the subject's bucket");
    std::fs::write(&bucket, &bytes[..bytes.len() / 2]).expect("cut the bucket short");

    env.restart_gateway().await;
    let session = console_login(&env, password).await;
    let damaged = format!("the audit log index is damaged: `{}`", bucket.display());
    for path in [
        format!("/console/api/citizen?subject={subject}"),
        format!("/console/api/records?subject={subject}"),
    ] {
        let answer = console_get(&env, &session, &path).await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert_eq!(answer.header("content-type"), "application/problem+json");
        assert_eq!(answer.json()["code"], "audit_index_damaged", "{path}");
        assert!(
            answer.json()["detail"]
                .as_str()
                .is_some_and(|e| e.contains(&damaged) && e.contains("tollbu audit verify")),
            "{path}: {}",
            answer.json()
        );
    }
    let page = console_get(
        &env,
        &session,
        &format!("/console/citizen?subject={subject}"),
    )
    .await;
    assert_eq!(page.status, StatusCode::INTERNAL_SERVER_ERROR);
    let html = String::from_utf8_lossy(&page.body);
    assert!(
        html.contains("the audit log index is damaged") && html.contains(".idx"),
        "{}",
        &html[..html.len().min(2_000)]
    );
}

/// The console's record list refuses a filter it cannot apply: ignoring it would answer a wider
/// question than the officer asked, with nothing on the page to show it.
#[tokio::test]
async fn the_console_refuses_filters_it_cannot_apply() {
    let password = "filter-officer-password";
    let env = Env::start(Options {
        extra_config: console_section(password),
        ..Options::default()
    })
    .await;
    let session = console_login(&env, password).await;
    let records = |query: &'static str| {
        let url = format!("{}/console/api/records?{query}", env.admin());
        let session = session.clone();
        async move { get(&url, &[("cookie", &session)]).await }
    };
    for (query, why) in [
        ("decision=denied", "`decision` must be"),
        ("subject=05885624741", "`subject` must be a pseudonym"),
        ("before=abc", "`before` must be a record number"),
        ("limit=many", "`limit` must be a number"),
        (
            "from=2026-12-07T00:00&to=2026-12-06T00:00",
            "`from` must be before `to`",
        ),
    ] {
        let answer = records(query).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(answer.json()["code"], "bad_filter", "{query}");
        assert!(
            answer.json()["detail"]
                .as_str()
                .is_some_and(|e| e.contains(why)),
            "{query}: {}",
            answer.json()
        );
    }
    let fine = records("decision=allow&limit=5").await;
    assert_eq!(fine.status, StatusCode::OK);
    assert_eq!(fine.json()["unreadable"], 0);
}

/// Logins are audited, and so are attempts on a name locked after five failures: an officer
/// reviewing the log sees a guessing attack go on, not stop at the fifth try. The lock holds for
/// the address the guesses came from: the officer, connecting from another one, still logs in
/// (guessing could otherwise lock the officers out of the audit trail at will).
#[tokio::test]
async fn attempts_on_a_locked_console_name_are_recorded() {
    let mut env = Env::start(Options {
        extra_config: console_section_for("locked-officer", "the-right-password"),
        ..Options::default()
    })
    .await;
    let admin = env.gateway().admin_addr;
    let attempt = |password: &'static str| async move {
        post_login(admin, "locked-officer", password)
            .await
            .statuses()
    };
    for _ in 0..5 {
        assert_eq!(attempt("guess").await, [401]);
    }
    assert_eq!(attempt("guess").await, [429]);
    assert_eq!(attempt("the-right-password").await, [429]);
    let elsewhere: std::net::IpAddr = [127, 0, 0, 2].into();
    let officer = post_login_from(elsewhere, admin, "locked-officer", "the-right-password").await;
    assert_eq!(officer.statuses(), [303], "{}", officer.text());
    assert!(
        officer
            .text()
            .to_ascii_lowercase()
            .contains("set-cookie: tollbu_console="),
        "{}",
        officer.text()
    );
    env.stop_gateway().await;
    let logins = tooling::query(
        &env.audit_dir(),
        &Query {
            service: Some("console".into()),
            ..Query::default()
        },
        None,
        true,
    );
    assert!(logins.ok, "{}", logins.text);
    let reasons: Vec<String> = logins
        .text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("a record")["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        reasons.iter().filter(|r| *r == "bad_credentials").count(),
        5
    );
    assert_eq!(reasons.iter().filter(|r| *r == "locked_out").count(), 2);
    assert_eq!(
        reasons.iter().filter(|r| r.is_empty()).count(),
        1,
        "{reasons:?}"
    );
}

/// The console's who-can answer says what limits a grant, as `tollbu policy who-can` does: a
/// data-protection officer reading it learns that the suspended agency's grant releases
/// nothing while its denial stands (it showed only the denial's id).
#[tokio::test]
async fn the_console_says_which_grants_a_denial_empties() {
    let password = "who-can-officer-password";
    let env = Env::start(Options {
        extra_config: console_section(password),
        ..Options::default()
    })
    .await;
    let session = console_login(&env, password).await;
    let view = console_get(&env, &session, "/console/api/who-can?service=population").await;
    assert_eq!(view.status, StatusCode::OK);
    let json = view.json();
    let grants = json["grants"].as_array().expect("grants");
    let suspended = grants
        .iter()
        .find(|g| g["grant"] == "suspended-agency-case-handling")
        .expect("the suspended agency's grant");
    assert_eq!(suspended["overridden_for_all"], true, "{suspended}");
    assert!(
        suspended["limits"][0]
            .as_str()
            .is_some_and(|l| l.starts_with("overridden for all its consumers")),
        "{suspended}"
    );
    let page = console_get(&env, &session, "/console/who-can?service=population").await;
    assert!(String::from_utf8_lossy(&page.body).contains("releases nothing while they stand"));
}
