//! Faults around the gateway: an issuer whose key set is down, slow, garbage
//! or empty; registries that refuse, reset, stall or flood; a broken policy
//! reload; and SIGKILL under load. Each must fail closed, clearly, with an
//! audit record, and without losing a record of any answer that was sent.

use std::collections::HashSet;
use std::io::BufRead;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Empty};
use tollbu_devkit::{demo_material, registries, start_issuer};
use tollbu_tests::*;

async fn post(url: &str) -> Answer {
    let request = http::Request::post(url)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = client(false).request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

#[tokio::test]
async fn cached_keys_survive_a_failing_key_set_and_new_kids_are_refused() {
    let (stub, env) = env_behind_jwks_stub().await;
    let cached = env.token("demo-welfare", "demo:population", &[]).await;
    assert_eq!(
        env.read_person(&cached, Some("jwks-warm")).await.status,
        StatusCode::OK
    );

    // The issuer rotates; the gateway has not seen the new key yet.
    env.issuer().rotate_signing_key().unwrap();
    let fresh = env.token("demo-welfare", "demo:population", &[]).await;

    for mode in [
        JwksMode::Error,
        JwksMode::Garbage,
        JwksMode::Empty,
        JwksMode::Close,
        JwksMode::Hang,
    ] {
        stub.set_mode(mode);
        let before = stub.fetches();
        let answer = env.read_person(&fresh, Some("jwks-new-kid")).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{mode:?}");
        assert_eq!(
            answer.json()["token_error"],
            "unknown_key",
            "{mode:?}: {:?}",
            answer.body
        );
        assert!(
            stub.fetches() > before,
            "{mode:?}: an unknown kid triggers a refetch"
        );
        assert_eq!(
            env.read_person(&cached, Some("jwks-cached")).await.status,
            StatusCode::OK,
            "{mode:?}: cached keys keep working and were not replaced"
        );
    }
    let ready = get(&format!("{}/readyz", env.admin()), &[]).await;
    assert_eq!(
        ready.status,
        StatusCode::OK,
        "keys are still held: {:?}",
        ready.body
    );

    stub.set_mode(JwksMode::Real);
    assert_eq!(
        env.read_person(&fresh, Some("jwks-recovered")).await.status,
        StatusCode::OK,
        "the new key is picked up once the key set is back"
    );
}

/// An issuer whose key set is down (HTTP 500) or garbage when the gateway starts: not ready, and
/// its tokens, which may well be good, get 503 `keys_unavailable` with `Retry-After` (try again
/// later), not 401 `invalid_token` (throw the token away), recorded as the gateway's failure.
/// Once the key set is back, the same token is accepted.
#[tokio::test]
async fn an_issuer_whose_key_set_is_down_or_garbage_at_start_is_not_ready_and_its_tokens_get_503() {
    for mode in [JwksMode::Error, JwksMode::Garbage] {
        let stub = JwksStub::start(mode).await;
        let mut env = Env::start(Options {
            jwks_url: Some(stub.url.clone()),
            ..Options::default()
        })
        .await;
        let ready = get(&format!("{}/readyz", env.admin()), &[]).await;
        assert_eq!(
            ready.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{mode:?}: {:?}",
            ready.body
        );
        let body = ready.json();
        assert_eq!(body["ready"], false);
        let reasons = body["not_ready"].to_string();
        assert!(reasons.contains(&env.issuer_url), "{mode:?}: {body}");
        assert!(reasons.contains("no usable keys"), "{mode:?}: {body}");

        let token = env.token("demo-welfare", "demo:population", &[]).await;
        let answer = env.read_person(&token, Some("no-keys")).await;
        let text = String::from_utf8_lossy(&answer.body).to_string();
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{mode:?}: {text}"
        );
        assert_eq!(answer.header("content-type"), "application/problem+json");
        assert_eq!(answer.code(), "keys_unavailable", "{mode:?}: {text}");
        assert!(answer.json()["token_error"].is_null(), "{mode:?}: {text}");
        assert!(
            answer.headers.get("www-authenticate").is_none(),
            "{mode:?}: no RFC 6750 error, the token is not at fault"
        );
        // The test config's jwks_min_refetch_secs is 0: the next request may fetch at once, and
        // the gateway says the shortest wait it can.
        assert_eq!(answer.header("retry-after"), "1", "{mode:?}");

        stub.set_real(&env.issuer().jwks_url());
        stub.set_mode(JwksMode::Real);
        assert_eq!(
            env.read_person(&token, Some("keys-back")).await.status,
            StatusCode::OK,
            "{mode:?}: the same token once the key set is back"
        );
        let ready = get(&format!("{}/readyz", env.admin()), &[]).await;
        assert_eq!(ready.status, StatusCode::OK, "{mode:?}: {:?}", ready.body);

        env.stop_gateway().await;
        let records = audit_records(&env.audit_dir());
        let record = |request_id: &str| {
            records
                .iter()
                .find(|r| r["request_id"] == request_id)
                .unwrap_or_else(|| panic!("{mode:?}: no record of {request_id}: {records:?}"))
        };
        let refused = record("no-keys");
        assert_eq!(refused["decision"], "error", "{mode:?}: {refused}");
        assert_eq!(refused["reason"], "keys_unavailable", "{mode:?}: {refused}");
        assert_eq!(record("keys-back")["decision"], "allow", "{mode:?}");
    }
}

#[tokio::test]
async fn upstream_faults_are_problem_json_and_audited() {
    let cases: Vec<(&str, String, &str, StatusCode, &str)> = vec![
        (
            "refused",
            closed_upstream().await,
            "",
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
        ),
        (
            "reset-mid-body",
            scripted_upstream(UpstreamFault::ResetMidBody).await,
            "",
            StatusCode::BAD_GATEWAY,
            "upstream_unreachable",
        ),
        (
            "slow-headers",
            scripted_upstream(UpstreamFault::SlowHeaders).await,
            "",
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
        ),
        (
            "slow-body",
            scripted_upstream(UpstreamFault::SlowBody).await,
            "",
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
        ),
        (
            "oversized",
            RecordingUpstream::start(UpstreamBehaviour::Large {
                bytes: 100_000,
                chunked: true,
            })
            .await
            .url,
            "max_response_body_bytes = 65536\n",
            StatusCode::BAD_GATEWAY,
            "upstream_too_large",
        ),
        (
            "not-json",
            RecordingUpstream::start(UpstreamBehaviour::Body {
                content_type: "text/plain",
                body: "name: Ada Stub",
            })
            .await
            .url,
            "",
            StatusCode::BAD_GATEWAY,
            "upstream_unfilterable",
        ),
        (
            // Parsers differ on which `given` counts: refused, not guessed.
            "released-member-twice",
            RecordingUpstream::start(UpstreamBehaviour::Body {
                content_type: "application/json",
                body: r#"{"name":{"given":"Ada","given":"Eve"},"pid":"x"}"#,
            })
            .await
            .url,
            "",
            StatusCode::BAD_GATEWAY,
            "upstream_unfilterable",
        ),
    ];
    let runs = cases
        .into_iter()
        .map(|(name, url, limits, status, code)| async move {
            let mut env = Env::start(Options {
                population_upstream: Some(url),
                upstream_timeout_ms: 800,
                limits: limits.to_owned(),
                ..Options::default()
            })
            .await;
            let token = env.token("demo-welfare", "demo:population", &[]).await;
            let request_id = format!("fault-{name}");
            let answer = env.read_person(&token, Some(&request_id)).await;
            assert_eq!(answer.status, status, "{name}: {:?}", answer.body);
            assert_eq!(answer.code(), code, "{name}");
            assert_eq!(
                answer.header("content-type"),
                "application/problem+json",
                "{name}"
            );
            assert_eq!(answer.header("x-request-id"), request_id, "{name}");
            env.stop_gateway().await;
            let records = audit_records(&env.audit_dir());
            let record = records
                .iter()
                .find(|r| r["request_id"] == request_id.as_str())
                .unwrap_or_else(|| panic!("{name}: no audit record: {records:?}"));
            assert_eq!(record["decision"], "error", "{name}: {record}");
            assert_eq!(record["reason"], code, "{name}: {record}");
            assert_eq!(record["consumer"], "0192:310000019", "{name}: {record}");
            assert_eq!(
                record["grant_id"], "welfare-benefit-assessment",
                "{name}: {record}"
            );
        });
    for run in runs {
        run.await;
    }
}

#[tokio::test]
async fn broken_policy_reload_is_refused_and_the_old_set_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(policies_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let env = Env::start(Options {
        policies: Some(dir.path().to_path_buf()),
        ..Options::default()
    })
    .await;
    let token = env.token("demo-welfare", "demo:population", &[]).await;
    assert_eq!(
        env.read_person(&token, Some("before")).await.status,
        StatusCode::OK
    );
    let version = |ready: &Answer| ready.json()["policy_version"].clone();
    let v1 = version(&get(&format!("{}/readyz", env.admin()), &[]).await);
    assert!(v1.is_string(), "readyz names the policy version");

    let good = std::fs::read_to_string(dir.path().join("population.toml")).unwrap();
    for (name, broken) in [
        ("syntax error", format!("{good}\n[[grant]\nid = ")),
        (
            "grant naming an unknown operation",
            good.replace(
                r#"operations = ["get-person"]"#,
                r#"operations = ["delete-everyone"]"#,
            ),
        ),
        (
            "duplicate grant id",
            format!("{good}\n{}", &good[good.find("[[grant]]").unwrap()..]),
        ),
    ] {
        std::fs::write(dir.path().join("population.toml"), &broken).unwrap();
        let reload = post(&format!("{}/admin/reload", env.admin())).await;
        assert_eq!(
            reload.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name}: {:?}",
            reload.body
        );
        assert_eq!(reload.json()["reloaded"], false, "{name}");
        assert_eq!(
            env.read_person(&token, Some("after-broken")).await.status,
            StatusCode::OK,
            "{name}: the old set keeps serving"
        );
        assert_eq!(
            version(&get(&format!("{}/readyz", env.admin()), &[]).await),
            v1,
            "{name}"
        );
    }

    // A valid change is applied: without the welfare grant, welfare is refused.
    let start = good
        .find("[[grant]]\nid = \"welfare-benefit-assessment\"")
        .unwrap();
    let end = good[start + 1..].find("[[grant]]").unwrap() + start + 1;
    let without = format!("{}{}", &good[..start], &good[end..]);
    std::fs::write(dir.path().join("population.toml"), without).unwrap();
    let reload = post(&format!("{}/admin/reload", env.admin())).await;
    assert_eq!(reload.status, StatusCode::OK, "{:?}", reload.body);
    let answer = env.read_person(&token, Some("after-good")).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{:?}", answer.body);
    assert_ne!(
        version(&get(&format!("{}/readyz", env.admin()), &[]).await),
        v1
    );
}

// --- SIGKILL under load ------------------------------------------------------

const CHILD_CONFIG_ENV: &str = "TOLLBU_CRASH_CHILD_CONFIG";

/// Not a test on its own: the gateway process that
/// `sigkill_under_load_loses_no_record_of_an_answer` starts and kills. It
/// runs `tollbu_proxy::start` exactly as `tollbu serve` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process for sigkill_under_load_loses_no_record_of_an_answer"]
async fn crash_child_gateway() {
    let Ok(path) = std::env::var(CHILD_CONFIG_ENV) else {
        return;
    };
    let path = std::path::PathBuf::from(path);
    let text = std::fs::read_to_string(&path).unwrap();
    let config = tollbu_proxy::Config::parse(&text, "crash.toml", path.parent().unwrap()).unwrap();
    let gateway = tollbu_proxy::start(config).await.unwrap();
    println!("TOLLBU_CHILD_READY {}", gateway.plain_addr.unwrap());
    use std::io::Write;
    let _ = std::io::stdout().flush();
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// Starts the gateway process: `$TOLLBU_BIN serve --config …` when set (the
/// real binary, as `scripts/crash-test` does), else this test binary running
/// [`crash_child_gateway`]. Returns the child and its plaintext address.
fn spawn_gateway(config: &std::path::Path) -> (std::process::Child, std::net::SocketAddr) {
    use std::process::{Command, Stdio};
    let mut command = match std::env::var("TOLLBU_BIN") {
        Ok(bin) => {
            let mut c = Command::new(bin);
            c.arg("serve").arg("--config").arg(config);
            c
        }
        Err(_) => {
            let mut c = Command::new(std::env::current_exe().unwrap());
            c.args([
                "faults::crash_child_gateway",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_CONFIG_ENV, config);
            c
        }
    };
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // The child's own test harness prints to stdout; the real binary logs
    // "gateway serving" (with the plaintext address) to stderr.
    for reader in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if line.contains("panicked") || line.contains("ERROR") {
                    eprintln!("gateway process: {line}");
                }
                // libtest prints "test … ... " first, on the same line.
                let addr = if let Some((_, addr)) = line.split_once("TOLLBU_CHILD_READY ") {
                    addr.trim().parse().ok()
                } else if line.contains("gateway serving") {
                    line.split("127.0.0.1:")
                        .nth(1)
                        .map(|rest| {
                            rest.chars()
                                .take_while(char::is_ascii_digit)
                                .collect::<String>()
                        })
                        .and_then(|port| format!("127.0.0.1:{port}").parse().ok())
                } else {
                    None
                };
                if let Some(addr) = addr {
                    let _ = tx.send(addr);
                }
            }
        });
    }
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => (child, addr),
        Err(_) => {
            let _ = child.kill();
            panic!("gateway process did not report its address");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_record_of_an_answer() {
    let rounds: usize = std::env::var("TOLLBU_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let issuer = start_issuer(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        demo_material::issuer_config().unwrap(),
        demo_material::ISSUER_SIGNING_KEY_PEM,
    )
    .await
    .unwrap();
    let population = registries::start_population(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        None,
    )
    .await
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let certs = certs_dir();
    let config_path = state.path().join("tollbu.toml");
    let config = format!(
        r#"[gateway]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[[issuer]]
issuer = "{issuer}"
jwks_url = "{issuer}jwk"

[[service]]
id = "population"
upstream = "{population}"

[policies]
dir = "{policies}"

[audit]
dir = "{audit}"
origin = "tollbu.example/test/crash"
signing_key = "{signing}"
pseudonym_key = "{pseudonym}"
durability = "fsync"
checkpoint_interval_secs = 1
"#,
        issuer = issuer.issuer_url(),
        population = population.base_url(),
        policies = policies_dir().display(),
        audit = state.path().join("audit").display(),
        signing = certs.join("audit-signing.key.pem").display(),
        pseudonym = certs.join("audit-pseudonym.key").display(),
    );
    std::fs::write(&config_path, &config).unwrap();

    let token = {
        let (kid, key) = demo_material::client_key("demo-welfare").unwrap();
        tollbu_devkit::token_client::request_token(&tollbu_devkit::token_client::TokenRequest {
            issuer_url: issuer.issuer_url(),
            client_id: "demo-welfare".into(),
            key_pem: key.into(),
            kid: kid.into(),
            scope: "demo:population".into(),
            consumer_org: None,
            consent: Vec::new(),
            resource: None,
        })
        .await
        .unwrap()
        .access_token
    };
    let answered: Arc<Mutex<Vec<(String, u16)>>> = Arc::default();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash loop: {rounds} rounds, seed {seed}");
    let started = std::time::Instant::now();
    for round in 0..rounds {
        let (mut child, addr) = spawn_gateway(&config_path);
        let mut load = Vec::new();
        for task in 0..4 {
            let answered = Arc::clone(&answered);
            let token = token.clone();
            load.push(tokio::spawn(async move {
                let client = client(false);
                for n in 0.. {
                    let request_id = format!("crash-{round}-{task}-{n}");
                    // Every third request is denied (no purpose): denials are recorded too.
                    let mut builder = http::Request::get(format!(
                        "http://{addr}/population/persons/{}",
                        example_pid(n % 5)
                    ))
                    .header("authorization", format!("Bearer {token}"))
                    .header("x-request-id", &request_id);
                    if n % 3 != 0 {
                        builder = builder.header("tollbu-purpose", "benefit-assessment");
                    }
                    let Ok(response) = client
                        .request(builder.body(Empty::<Bytes>::new()).unwrap())
                        .await
                    else {
                        break;
                    };
                    let status = response.status().as_u16();
                    // Only a complete answer counts as acknowledged.
                    if response.into_body().collect().await.is_ok() {
                        answered.lock().unwrap().push((request_id, status));
                    } else {
                        break;
                    }
                }
            }));
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(50 + seed % 450)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        for task in load {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        eprintln!(
            "round {round}: {} answers so far, {:?}",
            answered.lock().unwrap().len(),
            started.elapsed()
        );
    }

    // Start once more (recovery cuts any torn tail), stop cleanly, verify.
    let (mut child, _) = spawn_gateway(&config_path);
    child.kill().unwrap();
    child.wait().unwrap();
    let config = tollbu_proxy::Config::parse(&config, "tollbu.toml", state.path()).unwrap();
    tollbu_proxy::start(config).await.unwrap().shutdown().await;
    let audit = state.path().join("audit");
    let report = tollbu_audit::tooling::verify(&audit, &[], None);
    assert!(
        report.ok,
        "audit verify after {rounds} SIGKILLs: {}",
        report.text
    );
    let recorded: HashSet<String> = audit_records(&audit)
        .iter()
        .filter_map(|r| r["request_id"].as_str().map(str::to_owned))
        .collect();
    let answered = answered.lock().unwrap();
    let ok = answered
        .iter()
        .filter(|(_, s)| (200..300).contains(s))
        .count();
    assert!(ok >= rounds, "load was served: {ok} 2xx answers");
    let missing: Vec<&(String, u16)> = answered
        .iter()
        .filter(|(id, _)| !recorded.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered requests have no audit record, e.g. {:?}",
        missing.len(),
        answered.len(),
        &missing[..missing.len().min(5)]
    );
    let statuses: HashSet<u16> = answered.iter().map(|(_, s)| *s).collect();
    eprintln!(
        "crash loop done: {} answers ({ok} 2xx, statuses {statuses:?}), {} records, {:?}",
        answered.len(),
        recorded.len(),
        started.elapsed()
    );
}

/// How an injected storage fault shows, while its switch is on.
#[derive(Clone, Copy)]
enum Fault {
    /// ENOSPC on write, after half of the batch reached the file (as a real full disk).
    DiskFull,
    /// EROFS on write, fsync and truncate (as after an ext4 error remount).
    ReadOnly,
}

/// Segment storage that fails as `fault` says while the switch is on.
struct FaultyDisk(Fault, Arc<std::sync::atomic::AtomicBool>);
struct FaultySegment(
    Box<dyn tollbu_audit::SegmentFile>,
    Fault,
    Arc<std::sync::atomic::AtomicBool>,
);

impl FaultySegment {
    fn read_only(&self) -> std::io::Result<()> {
        match self.1 {
            Fault::ReadOnly if self.2.load(std::sync::atomic::Ordering::SeqCst) => {
                Err(std::io::Error::from_raw_os_error(30)) // EROFS
            }
            _ => Ok(()),
        }
    }
}

impl tollbu_audit::Storage for FaultyDisk {
    fn open_segment(
        &self,
        path: &std::path::Path,
        frames_end: u64,
    ) -> std::io::Result<Box<dyn tollbu_audit::SegmentFile>> {
        Ok(Box::new(FaultySegment(
            tollbu_audit::FsStorage.open_segment(path, frames_end)?,
            self.0,
            Arc::clone(&self.1),
        )))
    }
    fn sync_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        tollbu_audit::FsStorage.sync_dir(dir)
    }
}

impl tollbu_audit::SegmentFile for FaultySegment {
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.read_only()?;
        if matches!(self.1, Fault::DiskFull) && self.2.load(std::sync::atomic::Ordering::SeqCst) {
            self.0.append(&buf[..buf.len() / 2])?;
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        self.0.append(buf)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.read_only()?;
        self.0.sync()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.read_only()?;
        self.0.truncate(len)
    }
}

/// A gateway whose audit log sits on [`FaultyDisk`], in front of a recording registry.
struct OnFaultyDisk {
    env: Env,
    token: String,
    fault_on: Arc<std::sync::atomic::AtomicBool>,
    registry: RecordingUpstream,
    options: Options,
    config: tollbu_audit::AuditConfig,
    dir: tempfile::TempDir,
}

impl OnFaultyDisk {
    async fn start(fault: Fault, origin: &str) -> Self {
        let fault_on = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let dir = tempfile::tempdir().unwrap();
        let certs = certs_dir();
        let config = tollbu_audit::AuditConfig::new(
            dir.path(),
            origin,
            certs.join("audit-signing.key.pem"),
            certs.join("audit-pseudonym.key"),
        );
        let (log, _) = tollbu_audit::AuditLog::open_with_storage(
            config.clone(),
            Arc::new(FaultyDisk(fault, Arc::clone(&fault_on))),
        )
        .unwrap();
        let registry = RecordingUpstream::start(UpstreamBehaviour::Person).await;
        let options = Options {
            population_upstream: Some(registry.url.clone()),
            ..Options::default()
        };
        let env = Env::start_with_audit(options.clone(), log).await;
        let token = env.token("demo-welfare", "demo:population", &[]).await;
        Self {
            env,
            token,
            fault_on,
            registry,
            options,
            config,
            dir,
        }
    }

    fn fault(&self, on: bool) {
        self.fault_on.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    async fn read(&self, request_id: &str) -> Answer {
        self.env.read_person(&self.token, Some(request_id)).await
    }

    /// A refusal that releases nothing of the registry's answer.
    async fn assert_refused(&self, request_id: &str) {
        let refused = self.read(request_id).await;
        assert_eq!(
            refused.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{request_id}"
        );
        assert_eq!(refused.code(), "audit_unavailable");
        assert!(
            !String::from_utf8_lossy(&refused.body).contains("given"),
            "nothing of the registry's answer is released"
        );
    }

    /// Stops the gateway and checks the log holds exactly `released` records, and verifies.
    async fn stop_and_verify(mut self, released: u64) {
        self.env.stop_gateway().await;
        let report = tollbu_audit::tooling::verify(self.dir.path(), &[], None);
        assert!(report.ok, "{}", report.text);
        assert!(
            report.text.contains(&format!("records: {released}")),
            "the {released} released answers, and only they, are recorded: {}",
            report.text
        );
    }
}

#[tokio::test]
async fn a_full_audit_disk_fails_closed_and_service_resumes_when_space_returns() {
    let g = OnFaultyDisk::start(Fault::DiskFull, "tollbu.example/test/full-disk").await;
    assert_eq!(g.read("before").await.status, StatusCode::OK);

    g.fault(true);
    g.assert_refused("full").await;
    assert_eq!(
        g.registry.seen().len(),
        2,
        "the registry was asked; its answer was withheld"
    );
    // Out of service while records cannot be written, but alive: no restart is needed.
    let ready = get(&format!("{}/readyz", g.env.admin()), &[]).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        String::from_utf8_lossy(&ready.body).contains("audit records cannot be written"),
        "{:?}",
        String::from_utf8_lossy(&ready.body)
    );
    let live = get(&format!("{}/healthz", g.env.admin()), &[]).await;
    assert_eq!(live.status, StatusCode::OK);

    g.fault(false);
    // Ready again without any request: out of service, the replica would get none.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let ready = get(&format!("{}/readyz", g.env.admin()), &[]).await;
        if ready.status == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still not ready 30 s after space returned: {:?}",
            String::from_utf8_lossy(&ready.body)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        g.read("space-returned").await.status,
        StatusCode::OK,
        "resumes when space returns"
    );
    g.stop_and_verify(2).await;
}

#[tokio::test]
async fn a_read_only_audit_disk_fails_closed_until_a_restart_on_writable_storage() {
    let mut g = OnFaultyDisk::start(Fault::ReadOnly, "tollbu.example/test/read-only-disk").await;
    assert_eq!(g.read("before").await.status, StatusCode::OK);

    g.fault(true);
    for attempt in 0..3 {
        g.assert_refused(&format!("read-only-{attempt}")).await;
    }
    let ready = get(&format!("{}/readyz", g.env.admin()), &[]).await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "readiness takes the replica out of service: {:?}",
        String::from_utf8_lossy(&ready.body)
    );
    // Writable again, but the writer cannot know what reached the disk: it stays closed until a
    // restart re-reads the directory, and says so to the liveness probe, which restarts it.
    g.fault(false);
    g.assert_refused("writable-again").await;
    let live = get(&format!("{}/healthz", g.env.admin()), &[]).await;
    assert_eq!(live.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&live.body).contains("audit_log_stopped"));

    g.env.stop_gateway().await;
    let (log, report) = tollbu_audit::AuditLog::open(g.config.clone()).unwrap();
    assert_eq!(report.records, 1, "{report:?}");
    g.env = Env::start_with_audit(g.options.clone(), log).await;
    g.token = g.env.token("demo-welfare", "demo:population", &[]).await;
    assert_eq!(
        g.read("restarted").await.status,
        StatusCode::OK,
        "serves again after the restart"
    );
    g.stop_and_verify(2).await;
}
