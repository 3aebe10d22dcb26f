//! The `tollbu` binary as users run it: config check, serve with signals,
//! and the demo's printed commands.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOLLBU: &str = env!("CARGO_BIN_EXE_tollbu");

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn config_check_names_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("tollbu.toml");
    std::fs::write(&bad, "[gateway]\nlisten = \"127.0.0.1:8080\"\nlisen = 1\n").unwrap();
    let out = Command::new(TOLLBU)
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tollbu.toml:3:1: unknown field `lisen`"),
        "{stderr}"
    );

    let doc = std::fs::read_to_string(repo().join("docs/configuration.md")).unwrap();
    let example = doc
        .split("## Complete example")
        .nth(1)
        .unwrap()
        .split("```toml\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    // The example names files (under /etc/tollbu, and `policies`) which `config check` reads as `serve` does: its
    // settings are valid when the only complaint is about those files.
    let good = dir.path().join("good.toml");
    std::fs::write(&good, example).unwrap();
    let out = Command::new(TOLLBU)
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("good.toml:") && !stderr.contains("good.toml`"),
        "{stderr}"
    );
}

/// `config check` loads what `serve` loads (TLS material, audit keys, policies, CA files), so a
/// config it calls ok does not fail at start; each cause is printed once.
#[test]
fn config_check_refuses_what_serve_would_refuse() {
    let dir = tempfile::tempdir().unwrap();
    let certs = repo().join("certs-example");
    let c = |name: &str| certs.join(name).display().to_string();
    let good = format!(
        "[gateway]\n[gateway.tls]\nlisten = \"127.0.0.1:8443\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\
         [[issuer]]\nissuer = \"https://issuer.example/\"\njwks_url = \"https://issuer.example/jwk\"\nca = \"{ca}\"\n\
         [[service]]\nid = \"population\"\nupstream = \"https://registry.example\"\nupstream_ca = \"{ca}\"\n\
         [policies]\ndir = \"{policies}\"\n\
         [audit]\ndir = \"audit\"\norigin = \"tollbu.example/check/0\"\nsigning_key = \"{signing}\"\npseudonym_key = \"{pseudonym}\"\n",
        cert = c("gateway.pem"),
        key = c("gateway.key.pem"),
        ca = c("ca.pem"),
        policies = repo().join("policies").display(),
        signing = c("audit-signing.key.pem"),
        pseudonym = c("audit-pseudonym.key"),
    );
    let check = |text: &str| {
        let file = dir.path().join("tollbu.toml");
        std::fs::write(&file, text).unwrap();
        let out = Command::new(TOLLBU)
            .args(["config", "check"])
            .arg(&file)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = check(&good);
    assert!(ok, "{stderr}");
    assert!(
        !dir.path().join("audit").exists(),
        "config check opened the audit log"
    );

    let missing = dir.path().join("missing.pem").display().to_string();
    let a_dir = dir.path().display().to_string();
    // (setting, new value, what the error says)
    let cases = [
        ("\ncert", missing.clone(), "cannot read"),
        ("\ncert", c("gateway.key.pem"), "holds no PEM certificate"),
        ("\nkey", c("ca.pem"), "holds no usable PEM private key"),
        ("\nkey", a_dir, "cannot read"),
        (
            "\nkey",
            c("registry.key.pem"),
            "the private key does not match the certificate",
        ),
        ("\nca", missing.clone(), "cannot read"),
        ("\nupstream_ca", missing.clone(), "cannot read"),
        (
            "\nsigning_key",
            c("gateway.key.pem"),
            "expected an Ed25519 private key (PKCS#8 PEM)",
        ),
        (
            "\nsigning_key",
            missing.clone(),
            "missing.pem`: No such file",
        ),
        ("\npseudonym_key", missing.clone(), "missing.pem"),
        ("\npseudonym_key", c("ca.pem"), "expected 64 hex characters"),
        (
            "[policies]\ndir",
            missing.clone(),
            "cannot read: No such file",
        ),
    ];
    for (setting, value, why) in cases {
        let text = replace_setting(&good, setting, &value);
        assert_ne!(text, good, "{setting}");
        let (ok, stderr) = check(&text);
        assert!(!ok, "{setting} = {value}: accepted");
        assert!(stderr.contains(why), "{setting} = {value}: {stderr}");
        assert_eq!(
            stderr.matches(why).count(),
            1,
            "{setting} = {value}: {stderr}"
        );
    }

    let invalid_policy = tempfile::tempdir().unwrap();
    std::fs::write(invalid_policy.path().join("broken.toml"), "[service\n").unwrap();
    let text = good.replace(
        &repo().join("policies").display().to_string(),
        &invalid_policy.path().display().to_string(),
    );
    let (ok, stderr) = check(&text);
    assert!(!ok && stderr.contains("broken.toml"), "{stderr}");

    let (ok, stderr) = check(&good.replace(
        "[policies]",
        "[limits]\nupstream_timeout_ms = 0\n[policies]",
    ));
    assert!(!ok && stderr.contains("upstream_timeout_ms"), "{stderr}");

    // `--syntax-only`: the config alone, for one rendered where its files do not exist.
    let file = dir.path().join("tollbu.toml");
    std::fs::write(&file, replace_setting(&good, "\ncert", &missing)).unwrap();
    let syntax_only = |file: &Path| {
        Command::new(TOLLBU)
            .args(["config", "check", "--syntax-only"])
            .arg(file)
            .output()
            .unwrap()
    };
    let out = syntax_only(&file);
    assert!(out.status.success(), "{:?}", out);
    std::fs::write(
        &file,
        good.replace("[policies]", "[limits]\nbogus = 1\n[policies]"),
    )
    .unwrap();
    let out = syntax_only(&file);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tollbu.toml:"));
}

/// `text` with the value of the first `setting = "…"` (a key, after a newline) replaced.
fn replace_setting(text: &str, setting: &str, value: &str) -> String {
    let start = text.find(&format!("{setting} = \"")).unwrap() + setting.len() + 4;
    let end = start + text[start..].find('"').unwrap();
    format!("{}{value}{}", &text[..start], &text[end..])
}

/// `serve` names each cause once: a chain of errors that each repeat their source did not.
#[test]
fn serve_prints_each_cause_of_a_start_failure_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(TOLLBU)
        .args(["serve", "--config"])
        .arg(dir.path().join("nowhere.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");

    let certs = repo().join("certs-example");
    let c = |name: &str| certs.join(name).display().to_string();
    let config = format!(
        "[gateway]\n[gateway.tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n[policies]\ndir = \"{policies}\"\n\
         [audit]\ndir = \"audit\"\norigin = \"tollbu.example/once/0\"\nsigning_key = \"{signing}\"\npseudonym_key = \"{pseudonym}\"\n",
        cert = c("gateway.pem"),
        key = c("registry.key.pem"),
        policies = repo().join("policies").display(),
        signing = c("audit-signing.key.pem"),
        pseudonym = c("audit-pseudonym.key"),
    );
    let file = dir.path().join("tollbu.toml");
    std::fs::write(&file, config).unwrap();
    let out = Command::new(TOLLBU)
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: TLS: `")
            && stderr.contains("gateway.pem`: the private key does not match the certificate\n"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("does not match").count(), 1, "{stderr}");
}

#[test]
fn policy_check_and_policy_tests_pass_on_the_example_policies() {
    let out = Command::new(TOLLBU)
        .args(["policy", "check"])
        .arg(repo().join("policies"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(TOLLBU)
        .args(["policy", "test"])
        .arg(repo().join("policies"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills the child when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `tollbu demo` on any free ports in `state`, stopping by itself after `exit_after_secs`; its
/// guide on stdout.
fn spawn_demo(state: &Path, exit_after_secs: u32) -> Running {
    let child = Command::new(TOLLBU)
        .args(["demo", "--any-ports", "--exit-after"])
        .arg(exit_after_secs.to_string())
        .arg("--state-dir")
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Running(child)
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn http_get(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use http_body_util::BodyExt;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let mut builder = http::Request::get(url);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let response = client
            .request(
                builder
                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).to_string())
    })
}

/// Lines the demo prints, read until the guide's last line.
fn read_guide(child: &mut Child) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let last = line.contains("/audit/checkpoint") && line.starts_with("curl");
        lines.push(line);
        if last || Instant::now() > deadline {
            break;
        }
    }
    lines
}

/// `--exit-after` (the console tests' demo) must still stop on SIGTERM: the signals are caught
/// from the start, and a demo that only slept swallowed them until its time was up.
#[test]
fn a_demo_with_exit_after_stops_on_sigterm() {
    let state = tempfile::tempdir().unwrap();
    let mut running = spawn_demo(state.path(), 600);
    let guide = read_guide(&mut running.0);
    assert!(
        guide.iter().any(|l| l.contains("/audit/checkpoint")),
        "{guide:#?}"
    );
    signal(&running.0, "TERM");
    let status = wait_for_exit(&mut running, Duration::from_secs(30));
    assert!(status.success(), "{status}");
}

#[test]
fn demo_prints_commands_that_work() {
    let state = tempfile::tempdir().unwrap();
    let mut running = spawn_demo(state.path(), 60);
    let guide = read_guide(&mut running.0);
    let token_line = guide
        .iter()
        .find(|l| l.starts_with("TOKEN=$("))
        .unwrap_or_else(|| panic!("{guide:#?}"));
    // Every `$(tollbu token …)` the guide prints gets a token (the welfare agency's, the
    // suspended agency's, the bank's with consents): each is a grant the issuer must accept.
    let token_commands: Vec<&str> = guide
        .iter()
        .flat_map(|line| line.split("$(").skip(1))
        .filter_map(|rest| rest.split_once(')').map(|(command, _)| command))
        .filter(|command| command.starts_with(&format!("{TOLLBU} token ")))
        .collect();
    assert!(token_commands.len() >= 4, "{guide:#?}");
    let mut tokens = Vec::new();
    for command in &token_commands {
        let mut words = command.split_whitespace();
        let program = words.next().unwrap();
        assert_eq!(program, TOLLBU, "the guide names the built binary");
        let out = Command::new(program).args(words).output().unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        assert_eq!(token.split('.').count(), 3);
        tokens.push(token);
    }
    let first = token_line
        .trim_start_matches("TOKEN=$(")
        .trim_end_matches(')');
    assert_eq!(token_commands[0], first, "the welfare agency's comes first");
    let token = tokens.remove(0);

    let allowed = guide
        .iter()
        .find(|l| l.contains("'Tollbu-Purpose: benefit-assessment'") && l.starts_with("curl -s -H"))
        .unwrap();
    let url = allowed.split_whitespace().last().unwrap();
    let bearer = format!("Bearer {token}");
    let (status, body) = http_get(
        url,
        &[
            ("authorization", &bearer),
            ("tollbu-purpose", "benefit-assessment"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"name\"") && !body.contains("birth_date"),
        "{body}"
    );
    let (status, body) = http_get(url, &[("authorization", &bearer)]);
    assert_eq!(status, 403);
    assert!(body.contains("purpose_missing"));

    // Until the gateway signs a checkpoint covering these records (within its 1 s checkpoint
    // interval), nothing proves them and verify rightly fails; a reader of the guide is slower.
    let verify = guide.iter().find(|l| l.contains(" audit verify ")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let out = loop {
        let mut words = verify.split_whitespace();
        let out = Command::new(words.next().unwrap())
            .args(words)
            .output()
            .unwrap();
        let uncovered =
            String::from_utf8_lossy(&out.stderr).contains("no signed checkpoint covers");
        if out.status.success() || !uncovered || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_reloads_on_sighup_and_drains_on_sigterm() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (issuer, population) = rt.block_on(async {
        let issuer = tollbu_devkit::start_issuer(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            tollbu_devkit::demo_material::issuer_config().unwrap(),
            tollbu_devkit::demo_material::ISSUER_SIGNING_KEY_PEM,
        )
        .await
        .unwrap();
        let population = tollbu_devkit::registries::start_population(
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            None,
        )
        .await
        .unwrap();
        (issuer, population)
    });
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let population_policy =
        std::fs::read_to_string(repo().join("policies/population.toml")).unwrap();
    std::fs::write(policies.join("population.toml"), &population_policy).unwrap();
    let certs = repo().join("certs-example");
    let admin_port = free_port();
    let gateway_port = free_port();
    let config = format!(
        "[gateway]\nlisten = \"127.0.0.1:{gateway_port}\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
         [[issuer]]\nissuer = \"{iss}\"\njwks_url = \"{iss}jwk\"\n\
         [[service]]\nid = \"population\"\nupstream = \"{pop}\"\n[policies]\ndir = \"policies\"\n\
         [log]\nlevel = \"debug\"\n\
         [audit]\ndir = \"audit\"\norigin = \"tollbu.example/cli-test/${{TEST_REPLICA}}\"\nsigning_key = \"{c}/audit-signing.key.pem\"\npseudonym_key = \"{c}/audit-pseudonym.key\"\n",
        iss = issuer.issuer_url(),
        pop = population.base_url(),
        c = certs.display(),
    );
    let config_path = dir.path().join("tollbu.toml");
    std::fs::write(&config_path, config).unwrap();
    let child = Command::new(TOLLBU)
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("TEST_REPLICA", "replica-7")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    // Read the logs as they come, so a full pipe never blocks the gateway.
    let stderr = running.0.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    });
    let admin = format!("http://127.0.0.1:{admin_port}");
    wait_until(|| std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_ok());
    let ready = http_get(&format!("{admin}/readyz"), &[]);
    assert_eq!(ready.0, 200, "{}", ready.1);
    let version: serde_json::Value = serde_json::from_str(&ready.1).unwrap();

    std::fs::write(
        policies.join("population.toml"),
        population_policy.replace("benefit-assessment", "benefit-review"),
    )
    .unwrap();
    signal(&running.0, "HUP");
    wait_until(|| {
        let now: serde_json::Value =
            serde_json::from_str(&http_get(&format!("{admin}/readyz"), &[]).1).unwrap();
        now["policy_version"] != version["policy_version"]
    });

    let token = rt.block_on(async {
        let (kid, key) = tollbu_devkit::demo_material::client_key("demo-welfare").unwrap();
        tollbu_devkit::token_client::request_token(&tollbu_devkit::token_client::TokenRequest {
            issuer_url: issuer.issuer_url(),
            client_id: "demo-welfare".into(),
            key_pem: key.into(),
            kid: kid.into(),
            scope: "demo:population".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .access_token
    });
    let url = format!(
        "http://127.0.0.1:{gateway_port}/population/persons/{}",
        tollbu_devkit::people::example_pid(0)
    );
    let bearer = format!("Bearer {token}");
    let status_for = |purpose: &str| {
        http_get(
            &url,
            &[("authorization", &bearer), ("tollbu-purpose", purpose)],
        )
        .0
    };
    assert_eq!(status_for("benefit-review"), 200);
    // A broken config file on SIGHUP is refused; the running set keeps serving.
    let good_config = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(
        &config_path,
        good_config.replace("[policies]", "[policies]\nnot_a_setting = 1"),
    )
    .unwrap();
    signal(&running.0, "HUP");
    wait_until(|| {
        let now: serde_json::Value =
            serde_json::from_str(&http_get(&format!("{admin}/readyz"), &[]).1).unwrap();
        now["last_reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("tollbu.toml:") && e.contains("not_a_setting"))
    });
    assert_eq!(
        status_for("benefit-review"),
        200,
        "the previous configuration keeps serving"
    );
    std::fs::write(&config_path, good_config).unwrap();
    assert_eq!(status_for("marketing"), 403);
    let forged = format!("Bearer {}x", &token[..token.len() - 1]);
    assert_eq!(http_get(&url, &[("authorization", &forged)]).0, 401);

    signal(&running.0, "TERM");
    let status = wait_for_exit(&mut running, Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");
    let logs = logs.join().unwrap();
    assert!(logs.lines().count() > 3, "{logs}");
    for line in logs.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not a JSON log line: {line}"
        );
    }
    // Fields are values, not Rust's Debug output, and `serve`'s lines carry its own target.
    for debug in ["Some(", "None", "RecoveryReport", "ReloadReport"] {
        assert!(!logs.contains(debug), "`{debug}` in the logs: {logs}");
    }
    let shutdown = logs
        .lines()
        .find(|l| l.contains("shutting down"))
        .unwrap_or_default();
    assert!(
        shutdown.contains("\"target\":\"tollbu::cli\""),
        "{shutdown}"
    );
    let serving = logs
        .lines()
        .find(|l| l.contains("gateway serving"))
        .unwrap();
    assert!(
        serving.contains(&format!("\"plain\":\"127.0.0.1:{gateway_port}\"")),
        "{serving}"
    );
    let pid = tollbu_devkit::people::example_pid(0);
    assert!(!logs.contains(&pid), "identity number in the logs");
    assert!(
        !logs.contains(&token[token.len() - 40..]),
        "token in the logs"
    );
    assert!(
        !logs.contains("Lindeveien") && !logs.contains("\"given\""),
        "response body in the logs"
    );
    let checkpoint = std::fs::read_to_string(dir.path().join("audit/checkpoint")).unwrap();
    assert!(
        checkpoint.starts_with("tollbu.example/cli-test/replica-7\n4\n"),
        "final checkpoint covers all four requests: {checkpoint}"
    );
    drop(rt);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `tollbu audit prune` on a log no gateway has open (a scaled-away replica's kept volume):
/// old record bodies go, the log still verifies, and an open log is refused. The removal is
/// vouched for by a retention statement signed with the key given: the log's own, or another
/// (a successor's), which `verify` then has to be told to trust with `--retention-key`.
#[test]
fn audit_prune_applies_retention_to_a_closed_log() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join("audit");
    let certs = repo().join("certs-example");
    let mut cfg = tollbu_audit::AuditConfig::new(
        &dir,
        "tollbu.example/test/gateway-9",
        certs.join("audit-signing.key.pem"),
        certs.join("audit-pseudonym.key"),
    );
    cfg.segment_max_bytes = 16 * 1024;
    let (log, _) = tollbu_audit::AuditLog::open(cfg.clone()).unwrap();
    let age = |days| {
        tollbu_audit::Record::timestamp(
            time::OffsetDateTime::now_utc() - time::Duration::days(days),
        )
    };
    let (two_years_ago, year_ago) = (age(730), age(365));
    for first in (0..1_000).step_by(50) {
        let batch = (first..first + 50)
            .map(|i| tollbu_audit::Record {
                time: if i < 500 { &two_years_ago } else { &year_ago }.clone(),
                request_id: format!("old-{i}"),
                service: "population".into(),
                operation: "get-person".into(),
                decision: tollbu_audit::Decision::Allow,
                ..tollbu_audit::Record::default()
            })
            .collect();
        log.append_batch_blocking(batch).unwrap();
    }
    let own_key = certs.join("audit-signing.key.pem");
    let prune_signed = |dir: &Path, days: &str, key: &Path, name: Option<&str>| {
        let mut command = Command::new(TOLLBU);
        command
            .args(["audit", "prune"])
            .arg(dir)
            .args(["--older-than-days", days])
            .arg("--signing-key")
            .arg(key);
        if let Some(name) = name {
            command.args(["--key-name", name]);
        }
        command.output().unwrap()
    };
    let prune = |dir: &Path, days: &str| prune_signed(dir, days, &own_key, None);
    let verify = |dir: &Path, retention_key: Option<&str>| {
        let mut command = Command::new(TOLLBU);
        command.args(["audit", "verify"]).arg(dir);
        if let Some(key) = retention_key {
            command.args(["--retention-key", key]);
        }
        command.output().unwrap()
    };
    // While the log is open its own gateway's retention applies; the tool stays out.
    let refused = prune(&dir, "30");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("the log is open"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    log.shutdown().unwrap();

    // No key, no removal: nothing could vouch for it.
    let unsigned = Command::new(TOLLBU)
        .args(["audit", "prune"])
        .arg(&dir)
        .args(["--older-than-days", "30"])
        .output()
        .unwrap();
    assert!(!unsigned.status.success());
    assert!(
        String::from_utf8_lossy(&unsigned.stderr).contains("--signing-key"),
        "{}",
        String::from_utf8_lossy(&unsigned.stderr)
    );
    assert!(!dir.join("pruned").exists());

    // The two-year-old records, with the log's own key.
    let out = prune(&dir, "500");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("removed "), "{text}");
    assert!(!text.contains("--retention-key"), "{text}");
    let checked = verify(&dir, None);
    let report = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "{report}");
    assert!(report.contains("pruned: records 0.."), "{report}");
    assert!(
        report.contains("by `tollbu.example/test/gateway-9`\n"),
        "{report}"
    );

    // The year-old ones with a successor's key: the tool says how to verify the log now.
    let successor = state.path().join("successor.key.pem");
    let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .unwrap()
        .serialize_pem();
    std::fs::write(&successor, pem).unwrap();
    let out = prune_signed(
        &dir,
        "30",
        &successor,
        Some("tollbu.example/test/gateway-10"),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let advice = "--retention-key tollbu.example/test/gateway-10+";
    let successor_key = text
        .split_once(advice)
        .map(|(_, rest)| {
            format!(
                "tollbu.example/test/gateway-10+{}",
                rest.trim_end_matches(['`', '\n'])
            )
        })
        .unwrap_or_else(|| panic!("no `{advice}` in: {text}"));
    let untrusted = verify(&dir, None);
    assert!(!untrusted.status.success());
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("--retention-key"),
        "{}",
        String::from_utf8_lossy(&untrusted.stderr)
    );
    let checked = verify(&dir, Some(&successor_key));
    let report = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        report.contains("by `tollbu.example/test/gateway-10`\n"),
        "{report}"
    );
    // On one thread (`--readers 0`, as beside a busy gateway) the report is the same.
    let alone = Command::new(TOLLBU)
        .args(["audit", "verify"])
        .arg(&dir)
        .args(["--retention-key", &successor_key, "--readers", "0"])
        .output()
        .unwrap();
    assert!(alone.status.success());
    assert_eq!(String::from_utf8_lossy(&alone.stdout), report);
    // A mistyped directory is an error, and is not created.
    let missing = state.path().join("no-such-log");
    let typo = prune(&missing, "30");
    assert!(!typo.status.success());
    assert!(
        String::from_utf8_lossy(&typo.stderr).contains("holds no audit log"),
        "{}",
        String::from_utf8_lossy(&typo.stderr)
    );
    assert!(!missing.exists());
    // A zero-day period is refused before anything is touched.
    let zero = prune(&dir, "0");
    assert!(!zero.status.success());
    // The log opens again and continues.
    let (log, report) = tollbu_audit::AuditLog::open(cfg).unwrap();
    assert_eq!(report.records, 1_000);
    log.shutdown().unwrap();
}

/// `tollbu audit citizen` over every generation a key rotation left: the citizen is owed the
/// requests before the rotation too, one report per log. A mistyped directory fails `citizen`,
/// `query` and `verify` rather than answering for an empty log.
#[test]
fn audit_citizen_reports_every_log_it_is_given() {
    let state = tempfile::tempdir().unwrap();
    let certs = repo().join("certs-example");
    let pid = "01017012345";
    let mut dirs = Vec::new();
    for (generation, consumer) in [("g1", "0192:111111111"), ("g2", "0192:222222222")] {
        let dir = state.path().join(generation);
        let cfg = tollbu_audit::AuditConfig::new(
            &dir,
            format!("tollbu.example/test/gateway-0/{generation}"),
            certs.join("audit-signing.key.pem"),
            certs.join("audit-pseudonym.key"),
        );
        let (log, _) = tollbu_audit::AuditLog::open(cfg).unwrap();
        let about = |subject: &str| tollbu_audit::Record {
            time: tollbu_audit::Record::timestamp(time::OffsetDateTime::now_utc()),
            consumer: Some(consumer.into()),
            service: "population".into(),
            operation: "get-person".into(),
            subject: Some(log.pseudonymise(subject)),
            decision: tollbu_audit::Decision::Allow,
            ..tollbu_audit::Record::default()
        };
        log.append_batch_blocking(vec![about(pid), about("01017054321")])
            .unwrap();
        log.shutdown().unwrap();
        dirs.push(dir);
    }
    let citizen = |dirs: &[PathBuf]| {
        Command::new(TOLLBU)
            .args(["audit", "citizen"])
            .args(dirs)
            .args(["--subject", pid, "--pseudonym-key"])
            .arg(certs.join("audit-pseudonym.key"))
            .output()
            .unwrap()
    };
    let both = citizen(&dirs);
    let text = String::from_utf8_lossy(&both.stdout);
    assert!(
        both.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&both.stderr)
    );
    for (dir, consumer) in dirs.iter().zip(["0192:111111111", "0192:222222222"]) {
        let part = text
            .split(&format!("== Log {}\n", dir.display()))
            .nth(1)
            .unwrap_or_else(|| panic!("no report for {}: {text}", dir.display()));
        let part = part.split("== Log").next().unwrap_or_default();
        assert!(
            part.starts_with("Requests concerning this person: 1\n") && part.contains(consumer),
            "{part}"
        );
    }
    // An index rebuilt from the records answers the same.
    std::fs::remove_dir_all(dirs[0].join("index")).unwrap();
    let reindex = Command::new(TOLLBU)
        .args(["audit", "reindex"])
        .arg(&dirs[0])
        .output()
        .unwrap();
    assert!(reindex.status.success());
    assert!(String::from_utf8_lossy(&reindex.stdout).starts_with("indexed 2 records"));
    assert_eq!(citizen(&dirs).stdout, both.stdout);
    // A mistyped log is an error, never "0 requests"; the other logs' reports still print.
    let with_missing = citizen(&[dirs[0].clone(), state.path().join("g9")]);
    assert!(!with_missing.status.success());
    assert!(String::from_utf8_lossy(&with_missing.stdout).contains("0192:111111111"));
    assert!(
        String::from_utf8_lossy(&with_missing.stderr).contains("holds no audit log"),
        "{}",
        String::from_utf8_lossy(&with_missing.stderr)
    );
    let query = Command::new(TOLLBU)
        .args(["audit", "query"])
        .arg(state.path().join("g9"))
        .output()
        .unwrap();
    assert!(!query.status.success());
    assert!(String::from_utf8_lossy(&query.stderr).contains("holds no audit log"));
    // Verifying with the published key reads nothing else first: a mistyped directory must not
    // pass as an empty, consistent log.
    let key = std::fs::read_to_string(dirs[0].join("verifier-key")).unwrap();
    let verify = Command::new(TOLLBU)
        .args(["audit", "verify"])
        .arg(state.path().join("g9"))
        .args(["--key", key.trim()])
        .output()
        .unwrap();
    assert!(
        !verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert!(String::from_utf8_lossy(&verify.stderr).contains("holds no audit log"));
}

/// An issuer's JWKS endpoint that accepts and never answers; counts the connections.
/// A broad query is written as it is found (a whole log's answer is never held at once): a reader
/// that stops early ends it quietly, and damage found part way ends the output with an error,
/// after the records before it.
#[test]
fn audit_query_writes_records_as_found() {
    let state = tempfile::tempdir().unwrap();
    let certs = repo().join("certs-example");
    let dir = state.path().join("log");
    let cfg = tollbu_audit::AuditConfig::new(
        &dir,
        "tollbu.example/test/gateway-0/log",
        certs.join("audit-signing.key.pem"),
        certs.join("audit-pseudonym.key"),
    );
    let (log, _) = tollbu_audit::AuditLog::open(cfg).unwrap();
    let records: Vec<_> = (0..3_000)
        .map(|i| tollbu_audit::Record {
            time: tollbu_audit::Record::timestamp(time::OffsetDateTime::now_utc()),
            request_id: format!("r-{i}"),
            consumer: Some("0192:111111111".into()),
            service: "population".into(),
            operation: "get-person".into(),
            decision: tollbu_audit::Decision::Allow,
            ..tollbu_audit::Record::default()
        })
        .collect();
    log.append_batch_blocking(records).unwrap();
    log.shutdown().unwrap();
    let query = || {
        let mut c = Command::new(TOLLBU);
        c.args(["audit", "query"])
            .arg(&dir)
            .args(["--service", "population", "--json"]);
        c
    };
    // More than a pipe holds (≈ 1 MB); the reader takes one line and closes its end.
    let mut child = query()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("\"request_id\":\"r-0\""), "{first}");
    let closed = child.wait_with_output().unwrap();
    assert!(closed.status.success());
    assert!(
        closed.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&closed.stderr)
    );
    // A record two thirds in made unreadable (its checksum fails): the 2,000 before it are
    // written, then the error.
    let segment = std::fs::read_dir(dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = memchr_find(&bytes, b"\"request_id\":\"r-2000\"").unwrap();
    bytes[at + 15] ^= 0x01;
    std::fs::write(&segment, bytes).unwrap();
    let damaged = query().output().unwrap();
    assert!(!damaged.status.success());
    let stdout = String::from_utf8_lossy(&damaged.stdout);
    assert_eq!(stdout.lines().count(), 2_000, "{}", &stdout[..200]);
    assert!(
        stdout
            .lines()
            .last()
            .unwrap()
            .contains("\"request_id\":\"r-1999\"")
    );
    assert!(
        String::from_utf8_lossy(&damaged.stderr).contains("record 2000"),
        "{}",
        String::from_utf8_lossy(&damaged.stderr)
    );
}

fn memchr_find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn hanging_jwks() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/jwk", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&accepted);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    (url, accepted)
}

/// `tollbu serve` on a config whose only issuer's keys never come (start-up waits 5 s for them).
fn serve_waiting_on_keys(dir: &Path, jwks_url: &str) -> (Running, u16, PathBuf) {
    let certs = repo().join("certs-example");
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::copy(
        repo().join("policies/population.toml"),
        policies.join("population.toml"),
    )
    .unwrap();
    let admin_port = free_port();
    let config = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
         [[issuer]]\nissuer = \"http://hanging.example/\"\njwks_url = \"{jwks_url}\"\n\
         [[service]]\nid = \"population\"\nupstream = \"http://127.0.0.1:9\"\n[policies]\ndir = \"policies\"\n\
         [audit]\ndir = \"audit\"\norigin = \"tollbu.example/cli-signals/0\"\nsigning_key = \"{c}/audit-signing.key.pem\"\npseudonym_key = \"{c}/audit-pseudonym.key\"\n",
        c = certs.display(),
    );
    let config_path = dir.join("tollbu.toml");
    std::fs::write(&config_path, config).unwrap();
    let child = Command::new(TOLLBU)
        .args(["serve", "--config"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (Running(child), admin_port, config_path)
}

/// Collects the child's log lines on a thread, so a full pipe never blocks it.
fn collect_logs(running: &mut Running) -> std::thread::JoinHandle<String> {
    let stderr = running.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
        text
    })
}

fn wait_for_exit(running: &mut Running, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Signals are caught from the start: a SIGHUP during start-up (here: while the gateway waits
/// for an issuer's keys) no longer kills the process but reloads once it serves, and a SIGTERM
/// during start-up ends it with exit 0 and the audit log closed. And a SIGTERM that comes while
/// a SIGHUP reload runs (one waiting on a new issuer's keys) is acted on at once, not after it.
#[test]
fn signals_during_start_up_and_during_a_reload_are_acted_on() {
    let (jwks_url, fetches) = hanging_jwks();
    let fetching = |at_least: usize| {
        wait_until(|| fetches.load(std::sync::atomic::Ordering::SeqCst) >= at_least)
    };

    // SIGTERM during start-up.
    let dir = tempfile::tempdir().unwrap();
    let (mut running, _, _) = serve_waiting_on_keys(dir.path(), &jwks_url);
    let logs = collect_logs(&mut running);
    fetching(1);
    signal(&running.0, "TERM");
    let status = wait_for_exit(&mut running, Duration::from_secs(20));
    let logs = logs.join().unwrap();
    assert!(status.success(), "exit status {status:?}: {logs}");
    assert!(
        logs.contains("audit log flushed; final checkpoint written"),
        "{logs}"
    );

    // SIGHUP during start-up, then a SIGTERM while a SIGHUP reload runs.
    let dir = tempfile::tempdir().unwrap();
    let started_fetches = fetches.load(std::sync::atomic::Ordering::SeqCst);
    let (mut running, admin_port, config_path) = serve_waiting_on_keys(dir.path(), &jwks_url);
    let logs = collect_logs(&mut running);
    fetching(started_fetches + 1);
    signal(&running.0, "HUP");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        running.0.try_wait().unwrap().is_none(),
        "SIGHUP during start-up ended the process"
    );
    let metrics = format!("http://127.0.0.1:{admin_port}/metrics");
    wait_until(|| {
        std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_ok()
            && http_get(&metrics, &[]).1.contains("tollbu_reloads_total 1")
    });

    let mut config = std::fs::read_to_string(&config_path).unwrap();
    config.push_str(&format!(
        "[[issuer]]\nissuer = \"http://hanging-too.example/\"\njwks_url = \"{jwks_url}\"\n"
    ));
    std::fs::write(&config_path, config).unwrap();
    let before_reload = fetches.load(std::sync::atomic::Ordering::SeqCst);
    signal(&running.0, "HUP");
    fetching(before_reload + 1);
    // Past the point where both signals could be pending at once.
    std::thread::sleep(Duration::from_millis(300));
    let terminated = Instant::now();
    signal(&running.0, "TERM");
    let status = wait_for_exit(&mut running, Duration::from_secs(30));
    let took = terminated.elapsed();
    let logs = logs.join().unwrap();
    assert!(status.success(), "exit status {status:?}: {logs}");
    assert!(
        took < Duration::from_millis(2_500),
        "SIGTERM waited for the reload: {took:?}"
    );
}
