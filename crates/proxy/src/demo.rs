//! `tollbu demo`: the whole exchange on one machine, on its embedded
//! defaults — a Maskinporten-style issuer, the population and income
//! registries, and the gateway (plain and mTLS) with a durable audit log.
//! It prints ready-to-paste commands. The state directory keeps the audit
//! log, so a restarted demo continues the same log.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tollbu_devkit::demo_material;
use tollbu_devkit::registries;
use tollbu_proxy::{Config, RunningGateway};

/// Ports the demo uses unless `--any-ports` is given (documented in README).
pub const ISSUER_PORT: u16 = 8070;
pub const POPULATION_PORT: u16 = 8101;
pub const INCOME_PORT: u16 = 8102;
pub const GATEWAY_PORT: u16 = 8080;
pub const GATEWAY_TLS_PORT: u16 = 8443;
pub const ADMIN_PORT: u16 = 9090;

/// Example policies, embedded so the demo runs from any directory.
const POLICIES: [(&str, &str); 4] = [
    (
        "population.toml",
        include_str!("../../../policies/population.toml"),
    ),
    (
        "population.test.toml",
        include_str!("../../../policies/population.test.toml"),
    ),
    ("income.toml", include_str!("../../../policies/income.toml")),
    (
        "income.test.toml",
        include_str!("../../../policies/income.test.toml"),
    ),
];

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the demo keeps its keys, policies, config and audit log.
    #[arg(long, default_value = "tollbu-demo")]
    state_dir: PathBuf,
    /// Use these policies instead of the embedded examples.
    #[arg(long)]
    policies: Option<PathBuf>,
    /// Let the OS choose every port (for running beside other services).
    #[arg(long)]
    any_ports: bool,
    /// Start, print the commands, and exit after this many seconds (0 = run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    exit_after: u64,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))?;
    Ok(ExitCode::SUCCESS)
}

async fn run_async(args: DemoArgs) -> anyhow::Result<()> {
    let mut signals = Signals::catch();
    let state_dir = absolute(&args.state_dir)?;
    let keys_dir = state_dir.join("keys");
    write_demo_keys(&keys_dir).context("writing the demo keys")?;
    let policies_dir = match &args.policies {
        Some(dir) => absolute(dir)?,
        None => {
            let dir = state_dir.join("policies");
            std::fs::create_dir_all(&dir)?;
            for (name, text) in POLICIES {
                std::fs::write(dir.join(name), text)?;
            }
            dir
        }
    };
    let port = |fixed: u16| if args.any_ports { 0 } else { fixed };
    let bind = |p: u16| async move {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, p));
        tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (is another demo running?)"))
    };

    let issuer_config = demo_material::issuer_config()?;
    let consents = issuer_config.consents.clone();
    let signing_key = std::fs::read_to_string(keys_dir.join("issuer-signing.key.pem"))?;
    let issuer =
        tollbu_devkit::start_issuer(bind(port(ISSUER_PORT)).await?, issuer_config, &signing_key)
            .await?;
    let population = registries::start_population(bind(port(POPULATION_PORT)).await?, None).await?;
    let income = registries::start_income(bind(port(INCOME_PORT)).await?, None).await?;

    // A fresh console password each run; only its salted hash goes into the config.
    let console_password = tollbu_proxy::console::auth::random_token()
        .map(|t| t[..20].to_owned())
        .context("no randomness for the console password")?;
    let console_hash = tollbu_proxy::console::auth::PasswordHash::new(
        &console_password,
        tollbu_proxy::console::auth::DEFAULT_ITERATIONS,
    )
    .context("no randomness for the console password salt")?
    .to_phc();
    let config_text = demo_config(
        &issuer.issuer_url(),
        &population.base_url(),
        &income.base_url(),
        port(GATEWAY_PORT),
        port(GATEWAY_TLS_PORT),
        port(ADMIN_PORT),
        &keys_dir,
        &policies_dir,
        &state_dir.join("audit"),
        &console_hash,
    );
    let config_path = state_dir.join("tollbu.toml");
    std::fs::write(&config_path, &config_text)?;
    let config = Config::parse(&config_text, &config_path.display().to_string(), &state_dir)?;
    let gateway = tollbu_proxy::start(config).await?;

    let kyc = consents
        .iter()
        .find(|c| c.resource == "demo-kyc-population" && c.valid_to.as_str() > "2026");
    let income_consent = consents.iter().find(|c| c.resource == "demo-income-data");
    print_guide(&Guide {
        exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tollbu")),
        issuer: issuer.issuer_url(),
        gateway: gateway.plain_addr,
        gateway_tls: gateway.tls_addr,
        admin: gateway.admin_addr,
        population: population.base_url(),
        income: income.base_url(),
        keys: keys_dir.clone(),
        state: state_dir.clone(),
        pid: tollbu_devkit::people::example_pid(0),
        other_pid: tollbu_devkit::people::example_pid(2),
        kyc: kyc.map(|c| (c.id.clone(), c.from_pid.clone())),
        income_consent: income_consent.map(|c| (c.id.clone(), c.from_pid.clone())),
        console_password,
    });

    // The signals are caught from the start, so `--exit-after` must watch them too: otherwise a
    // SIGTERM or Ctrl-C would be swallowed until the time is up.
    let exit_after = async {
        match args.exit_after {
            0 => std::future::pending::<()>().await,
            secs => tokio::time::sleep(std::time::Duration::from_secs(secs)).await,
        }
    };
    tokio::select! {
        () = exit_after => {}
        () = signals.wait_for_shutdown(&gateway) => {
            tracing::info!("shutting down: draining connections, flushing the audit log");
        }
    }
    gateway.shutdown().await;
    issuer.shutdown().await;
    population.shutdown().await;
    income.shutdown().await;
    eprintln!(
        "demo stopped; the audit log in {} is kept",
        state_dir.join("audit").display()
    );
    Ok(())
}

/// SIGTERM, SIGINT and SIGHUP, caught from the start of the process: before, they were caught
/// only once the gateway served, so a SIGHUP during start-up killed the process (its default
/// action) and a SIGTERM ended it (exit 143) without closing the audit log. A signal that comes
/// while nothing waits for it is kept, and acted on once the gateway serves.
pub struct Signals {
    terminate: Option<Signal>,
    interrupt: Option<Signal>,
    hangup: Option<Signal>,
}

impl Signals {
    /// Catches the signals from now on. Needs the runtime (entered, or inside `block_on`).
    pub fn catch() -> Signals {
        let catch = |kind| match signal(kind) {
            Ok(caught) => Some(caught),
            Err(error) => {
                tracing::warn!(%error, ?kind, "cannot catch the signal");
                None
            }
        };
        Signals {
            terminate: catch(SignalKind::terminate()),
            interrupt: catch(SignalKind::interrupt()),
            hangup: catch(SignalKind::hangup()),
        }
    }

    /// Waits for SIGINT or SIGTERM (returns at once for one that came during start-up). SIGHUP
    /// reloads meanwhile, on a task of its own: a reload can take seconds (an issuer's keys, a
    /// large policy set), and a shutdown signal is acted on while it runs.
    pub async fn wait_for_shutdown(&mut self, gateway: &RunningGateway) {
        loop {
            tokio::select! {
                () = next(&mut self.terminate) => break,
                () = next(&mut self.interrupt) => break,
                () = next(&mut self.hangup) => {
                    let live = std::sync::Arc::clone(&gateway.live);
                    tokio::spawn(async move {
                        let _ = live.reload().await;
                    });
                }
            }
        }
    }
}

/// The next delivery of a caught signal; never, for one that could not be caught.
async fn next(caught: &mut Option<Signal>) {
    match caught {
        Some(caught) => {
            if caught.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Writes the embedded dev-only keys where the printed commands point.
fn write_demo_keys(dir: &Path) -> std::io::Result<()> {
    use demo_material as m;
    std::fs::create_dir_all(dir.join("clients"))?;
    for (name, text) in [
        ("ca.pem", m::CA_PEM),
        ("gateway.pem", m::GATEWAY_CERT_PEM),
        ("gateway.key.pem", m::GATEWAY_KEY_PEM),
        ("agency-welfare.pem", m::AGENCY_WELFARE_CERT_PEM),
        ("agency-welfare.key.pem", m::AGENCY_WELFARE_KEY_PEM),
        ("agency-bank.pem", m::AGENCY_BANK_CERT_PEM),
        ("agency-bank.key.pem", m::AGENCY_BANK_KEY_PEM),
        ("issuer-signing.key.pem", m::ISSUER_SIGNING_KEY_PEM),
        ("audit-signing.key.pem", m::AUDIT_SIGNING_KEY_PEM),
        ("audit-pseudonym.key", m::AUDIT_PSEUDONYM_KEY),
    ] {
        std::fs::write(dir.join(name), text)?;
    }
    for (client, _kid, private, public) in m::CLIENTS {
        std::fs::write(
            dir.join("clients").join(format!("{client}.key.pem")),
            private,
        )?;
        std::fs::write(
            dir.join("clients").join(format!("{client}.pub.pem")),
            public,
        )?;
    }
    std::fs::write(
        dir.join("README.txt"),
        "DEMO ONLY: copies of certs-example/; every key here is public.\n",
    )
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(path).with_context(|| format!("cannot create `{}`", path.display()))?;
    Ok(std::fs::canonicalize(path)?)
}

#[allow(clippy::too_many_arguments)]
fn demo_config(
    issuer_url: &str,
    population_url: &str,
    income_url: &str,
    gateway_port: u16,
    tls_port: u16,
    admin_port: u16,
    keys: &Path,
    policies: &Path,
    audit: &Path,
    console_hash: &str,
) -> String {
    let k = |name: &str| toml_string(&keys.join(name).display().to_string());
    format!(
        r#"# Generated by `tollbu demo`; see docs/configuration.md.
[gateway]
listen = "127.0.0.1:{gateway_port}"

[gateway.tls]
listen = "127.0.0.1:{tls_port}"
cert = {cert}
key = {key}
client_ca = {ca}

[admin]
listen = "127.0.0.1:{admin_port}"

[[issuer]]
issuer = {issuer}
jwks_url = {jwks}

[[service]]
id = "population"
upstream = {population}

[[service]]
id = "income"
upstream = {income}

[policies]
dir = {policies}

[audit]
dir = {audit}
origin = "tollbu.example/demo/gateway-0"
signing_key = {signing}
pseudonym_key = {pseudonym}

[console]
enabled = true
users = [{{ name = "officer", password_hash = {console_hash} }}]
"#,
        cert = k("gateway.pem"),
        key = k("gateway.key.pem"),
        ca = k("ca.pem"),
        issuer = toml_string(issuer_url),
        jwks = toml_string(&format!("{issuer_url}jwk")),
        population = toml_string(population_url),
        income = toml_string(income_url),
        policies = toml_string(&policies.display().to_string()),
        audit = toml_string(&audit.display().to_string()),
        signing = k("audit-signing.key.pem"),
        pseudonym = k("audit-pseudonym.key"),
        console_hash = toml_string(console_hash),
    )
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

struct Guide {
    exe: PathBuf,
    issuer: String,
    gateway: Option<SocketAddr>,
    gateway_tls: Option<SocketAddr>,
    admin: SocketAddr,
    population: String,
    income: String,
    keys: PathBuf,
    state: PathBuf,
    pid: String,
    /// A person who gave the bank no consent.
    other_pid: String,
    kyc: Option<(String, String)>,
    income_consent: Option<(String, String)>,
    /// Password of the console user `officer` (new each run).
    console_password: String,
}

fn print_guide(g: &Guide) {
    let exe = g.exe.display();
    let keys = g.keys.display();
    let gw = g.gateway.map(|a| format!("http://{a}")).unwrap_or_default();
    let tls = g
        .gateway_tls
        .map(|a| format!("https://localhost:{}", a.port()))
        .unwrap_or_default();
    let audit = g.state.join("audit");
    let audit = audit.display();
    // `--kid` names the key as the issuer registered it: a grant naming no key is refused.
    let token = |client: &str, scope: &str, extra: &str| {
        let kid = demo_material::client_key(client)
            .map(|(kid, _)| kid)
            .unwrap_or_default();
        format!(
            "{exe} token --issuer {} --client-id {client} --key {keys}/clients/{client}.key.pem --kid {kid} --scope {scope}{extra}",
            g.issuer
        )
    };
    println!("Tollbu demo is running on 127.0.0.1 (Ctrl-C stops it; the audit log is kept).\n");
    println!(
        "  issuer      {}  (/.well-known/oauth-authorization-server, /jwk, /token)",
        g.issuer
    );
    println!(
        "  registries  population {}   income {}",
        g.population, g.income
    );
    println!("  gateway     {gw}   and   {tls} (mTLS: client certificate required)");
    println!(
        "  admin       http://{}/readyz  /metrics  /audit/checkpoint",
        g.admin
    );
    println!(
        "  console     http://{}/console  (user officer, password {})",
        g.admin, g.console_password
    );
    println!("  audit log   {audit}");
    println!("  demo keys   {keys}   (DEMO ONLY)\n");
    println!("# 1. A token for the Demo Welfare Agency (310000019):");
    println!(
        "TOKEN=$({})\n",
        token("demo-welfare", "demo:population", "")
    );
    println!(
        "# 2. Allowed: read a synthetic person for benefit assessment (only name, address, marital status come back):"
    );
    println!(
        "curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Tollbu-Purpose: benefit-assessment' {gw}/population/persons/{}\n",
        g.pid
    );
    println!("# 3. Denied: no purpose declared (403 purpose_missing):");
    println!(
        "curl -s -H \"Authorization: Bearer $TOKEN\" {gw}/population/persons/{}\n",
        g.pid
    );
    println!("# 4. Denied: the suspended agency (403 explicitly_denied):");
    println!(
        "curl -s -H \"Authorization: Bearer $({})\" -H 'Tollbu-Purpose: case-handling' {gw}/population/persons/{}\n",
        token("demo-suspended", "demo:population", ""),
        g.pid
    );
    if let Some((id, pid)) = &g.kyc {
        println!(
            "# 5. Consent: the bank reads name and address of a customer who consented (know your customer):"
        );
        println!(
            "BANK=$({})",
            token("demo-bank", "demo:population", &format!(" --consent {id}"))
        );
        println!(
            "curl -s -H \"Authorization: Bearer $BANK\" -H 'Tollbu-Purpose: kyc' {gw}/population/persons/{pid}"
        );
        println!("# ... and is denied for anyone else (403 consent_wrong_subject):");
        println!(
            "curl -s -H \"Authorization: Bearer $BANK\" -H 'Tollbu-Purpose: kyc' {gw}/population/persons/{}\n",
            g.other_pid
        );
    }
    if let Some((id, pid)) = &g.income_consent {
        println!(
            "# 6. Consent with metadata: income for 2022 is covered, 2021 is not (403 consent_not_covering):"
        );
        println!(
            "INCOME=$({})",
            token("demo-bank", "demo:income", &format!(" --consent {id}"))
        );
        println!(
            "curl -s -H \"Authorization: Bearer $INCOME\" -H 'Tollbu-Purpose: loan-application' {gw}/income/persons/{pid}/income/2022"
        );
        println!(
            "curl -s -H \"Authorization: Bearer $INCOME\" -H 'Tollbu-Purpose: loan-application' {gw}/income/persons/{pid}/income/2021\n"
        );
    }
    println!("# 7. The same as step 2 over mutual TLS, as the welfare agency's certificate:");
    println!(
        "curl -s --cacert {keys}/ca.pem --cert {keys}/agency-welfare.pem --key {keys}/agency-welfare.key.pem -H \"Authorization: Bearer $TOKEN\" -H 'Tollbu-Purpose: benefit-assessment' {tls}/population/persons/{}\n",
        g.pid
    );
    println!(
        "# 8. For the security officer: verify the log, ask who read data about a person, answer the citizen:"
    );
    println!("{exe} audit verify {audit}");
    println!(
        "{exe} audit query {audit} --subject {} --pseudonym-key {keys}/audit-pseudonym.key",
        g.pid
    );
    println!(
        "{exe} audit citizen {audit} --subject {} --pseudonym-key {keys}/audit-pseudonym.key",
        g.pid
    );
    println!("curl -s http://{}/audit/checkpoint", g.admin);
}
