//! Command-line surface: one subcommand per user task. Each command's
//! library call returns a report; this module prints it and picks the exit code.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tollbu_audit::tooling as audit_tools;
use tollbu_policy::tooling as policy_tools;
use tollbu_proxy::Config;

#[derive(Parser)]
#[command(
    name = "tollbu",
    version,
    about = "Once-only data-exchange gateway: tokens, policies, minimisation, audit"
)]
pub struct Args {
    /// Log as JSON lines (default for `serve`); `RUST_LOG` sets levels.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a config file.
    Serve {
        #[arg(long, short, default_value = "tollbu.toml")]
        config: PathBuf,
    },
    /// Run issuer, two example registries, the gateway and its audit log locally.
    Demo(crate::demo::DemoArgs),
    /// Obtain an access token with the RFC 7523 JWT-bearer grant (Maskinporten style).
    Token {
        /// Issuer identifier, e.g. `https://test.maskinporten.no/`.
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        client_id: String,
        /// The client's RSA private key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// Key id the issuer knows the key by (given when the key was registered).
        /// Required: Maskinporten refuses a grant that names no key.
        #[arg(long)]
        kid: String,
        /// Space-separated scopes.
        #[arg(long)]
        scope: String,
        /// Act for this organisation through a registered delegation.
        #[arg(long)]
        consumer_org: Option<String>,
        /// Include an Altinn consent by id (repeatable); `ID:PID` names the person too.
        #[arg(long)]
        consent: Vec<String>,
        /// Audience to restrict the token to.
        #[arg(long)]
        resource: Option<String>,
        /// Print the whole token response as JSON instead of only the token.
        #[arg(long)]
        json: bool,
    },
    /// Policy tools.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Audit-log tools for security officers.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Config tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Developer tools.
    #[command(subcommand)]
    Devkit(DevkitCommand),
    /// Security officer console tools.
    #[command(subcommand)]
    Console(ConsoleCommand),
}

#[derive(Subcommand)]
enum ConsoleCommand {
    /// Hash a console password for `[console] users` (reads the password from stdin).
    HashPassword,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Parse and validate; errors name file:line:column.
    Check { dir: PathBuf },
    /// Run the `*.test.toml` cases beside the policies.
    Test { dir: PathBuf },
    /// Show every grant considered for one request and why it matched or not.
    Explain {
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
        #[arg(long)]
        request: PathBuf,
    },
    /// Which consumers can read a service (or one field), under which grants.
    WhoCan {
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
        #[arg(long)]
        service: String,
        #[arg(long)]
        field: Option<String>,
    },
    /// A Markdown catalogue of services, fields, grants, purposes and legal bases.
    Catalog { dir: PathBuf },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute the tree and check every checkpoint; non-zero exit names the first bad record.
    Verify {
        dir: PathBuf,
        /// A checkpoint kept from earlier (repeatable): detects rollback and forks.
        #[arg(long)]
        checkpoint: Vec<PathBuf>,
        /// Verifier key `<name>+<keyid>+<base64>`; when given, checkpoints must be signed by it.
        #[arg(long)]
        key: Option<String>,
        /// Another verifier key trusted to sign the retention statement (repeatable): the key of
        /// the gateway that swept this log after a signing-key rotation retired it.
        #[arg(long)]
        retention_key: Vec<String>,
        /// Threads that read, decode and hash segments beside the one building the tree
        /// (default: one per core; 0 does everything on one thread, e.g. beside a busy gateway).
        #[arg(long)]
        readers: Option<usize>,
    },
    /// Records by subject, consumer, service, decision and time.
    ///
    /// Records are written as they are found, oldest first; damage found part way ends the
    /// output with an error and a non-zero exit.
    Query {
        dir: PathBuf,
        /// National identity number; hashed with the pseudonymisation key.
        #[arg(long)]
        subject: Option<String>,
        #[arg(long)]
        pseudonym_key: Option<PathBuf>,
        #[arg(long)]
        consumer: Option<String>,
        #[arg(long)]
        service: Option<String>,
        /// allow, deny or error.
        #[arg(long)]
        decision: Option<String>,
        /// RFC 3339 lower bound.
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339 upper bound.
        #[arg(long)]
        to: Option<String>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Read every record instead of the subject or consumer index (a complete answer while
        /// the index is damaged; slower on a large log).
        #[arg(long)]
        scan: bool,
    },
    /// Inclusion proof for record `index` in the tree of `size`.
    Prove {
        dir: PathBuf,
        #[arg(long)]
        index: u64,
        #[arg(long)]
        size: Option<u64>,
    },
    /// Consistency proof between two tree sizes.
    Consistency {
        dir: PathBuf,
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
    },
    /// What a citizen is owed: who read what about them, when, why, on which legal basis. Name
    /// every log that may hold them (e.g. each generation a key rotation left): one report per log.
    Citizen {
        #[arg(required = true, num_args = 1..)]
        dirs: Vec<PathBuf>,
        #[arg(long)]
        subject: String,
        #[arg(long)]
        pseudonym_key: PathBuf,
        /// Read every record instead of the subject index (see `query --scan`).
        #[arg(long)]
        scan: bool,
    },
    /// Rebuild the subject and consumer index of a log no gateway has open, from its records (when
    /// `verify` says the index does not match them).
    Reindex { dir: PathBuf },
    /// Retention on a log no gateway has open (a serving gateway applies `retention_days` itself):
    /// removes record bodies older than the given days, keeping their hashes.
    Prune {
        dir: PathBuf,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=36_500))]
        older_than_days: u64,
        /// Ed25519 private key (PKCS#8 PEM) that signs the retention statement `verify` requires
        /// for the removed records: the log's own signing key, or another whose verifier key the
        /// log's verifiers are given with `--retention-key`.
        #[arg(long)]
        signing_key: PathBuf,
        /// The key's name in the statement's signature (its log's origin); by default this log's.
        #[arg(long)]
        key_name: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file (errors name file:line:column) and load the files it names.
    Check {
        file: PathBuf,
        /// Only the config itself, not the files it names: for a config rendered on a
        /// workstation whose paths exist only in the pod.
        #[arg(long)]
        syntax_only: bool,
    },
}

#[derive(Subcommand)]
enum DevkitCommand {
    /// Regenerate the dev-only keys and certificates (as in `certs-example/`).
    Certs {
        #[arg(long, default_value = "certs-example")]
        out: PathBuf,
    },
}

/// Runs the chosen command and maps its outcome to an exit code.
pub fn run(args: Args) -> ExitCode {
    // `serve` sets up logging once its config (and `[log] level`) is read.
    if !matches!(args.command, Command::Serve { .. }) {
        crate::init_logging(args.log_json, "info");
    }
    match dispatch(args.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--scan` of `audit query` and `audit citizen`.
fn lookup(scan: bool) -> audit_tools::Lookup {
    if scan {
        audit_tools::Lookup::Scan
    } else {
        audit_tools::Lookup::Index
    }
}

/// The key `audit prune` signs the retention statement with, named after this log's origin unless
/// another name is given (the key of another log, such as the gateway's current one).
fn retention_signer(
    dir: &std::path::Path,
    signing_key: &std::path::Path,
    key_name: Option<String>,
) -> Result<tollbu_audit::CheckpointSigner, String> {
    let name = match key_name {
        Some(name) => name,
        None => {
            if !dir.join("segments").is_dir() {
                return Err(tollbu_audit::AuditError::NoLog(dir.to_path_buf()).to_string());
            }
            let origin = dir.join("origin");
            std::fs::read_to_string(&origin)
                .map(|o| o.trim().to_string())
                .map_err(|e| {
                    format!(
                        "`{}` cannot be read ({e}); is `{}` an audit log? Name the key with `--key-name`",
                        origin.display(),
                        dir.display()
                    )
                })?
        }
    };
    tollbu_audit::CheckpointSigner::from_pem_file(signing_key, &name).map_err(|e| e.to_string())
}

/// When the statement was signed by a key other than the log's own, what its verifiers must pass.
fn foreign_signer_advice(dir: &std::path::Path, signer: &tollbu_audit::CheckpointSigner) -> String {
    let own = std::fs::read_to_string(dir.join("verifier-key")).unwrap_or_default();
    let signer_key = signer.verifier_key();
    if own.trim() == signer_key {
        return String::new();
    }
    format!(
        "\nthe retention statement is signed by a key other than the log's: verify it with `tollbu audit verify {} --retention-key {signer_key}`",
        dir.display()
    )
}

/// `audit verify`, with a line on a terminal's stderr saying how far it got once it has run a
/// second: a large log takes minutes (10M records ≈ 13 s on the 2-core bench machine), and a silent
/// terminal looks hung. Piped or redirected, nothing extra is written.
fn verify_showing_progress(
    dir: &std::path::Path,
    options: audit_tools::VerifyOptions<'_>,
) -> audit_tools::Report {
    use std::io::{IsTerminal, Write};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    if !std::io::stderr().is_terminal() {
        return audit_tools::verify_with_options(dir, &options);
    }
    let read = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let signed = audit_tools::checkpoint_size(dir).ok();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut shown = false;
            let mut ticks = 0u32;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(100));
                ticks += 1;
                if !ticks.is_multiple_of(10) {
                    continue;
                }
                let n = read.load(Ordering::Relaxed);
                let of = signed.map_or(String::new(), |m| format!(" of about {m}"));
                eprint!("\r\x1b[2Kverifying: {n} records read{of}");
                let _ = std::io::stderr().flush();
                shown = true;
            }
            if shown {
                eprint!("\r\x1b[2K");
            }
        });
        let report = audit_tools::verify_with_options(
            dir,
            &audit_tools::VerifyOptions {
                progress: Some(&read),
                ..options
            },
        );
        done.store(true, Ordering::Relaxed);
        report
    })
}

fn report(ok: bool, text: &str) -> ExitCode {
    if ok {
        print!("{text}");
        if !text.ends_with('\n') && !text.is_empty() {
            println!();
        }
        ExitCode::SUCCESS
    } else {
        eprint!("{text}");
        if !text.ends_with('\n') && !text.is_empty() {
            eprintln!();
        }
        ExitCode::FAILURE
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { config } => serve(config),
        Command::Demo(demo_args) => crate::demo::run(demo_args),
        Command::Token {
            issuer,
            client_id,
            key,
            kid,
            scope,
            consumer_org,
            consent,
            resource,
            json,
        } => {
            let key_pem = std::fs::read_to_string(&key)
                .with_context(|| format!("cannot read key `{}`", key.display()))?;
            let consent = consent
                .into_iter()
                .map(|c| match c.split_once(':') {
                    Some((id, pid)) => (id.to_owned(), Some(pid.to_owned())),
                    None => (c, None),
                })
                .collect();
            let request = tollbu_devkit::token_client::TokenRequest {
                issuer_url: issuer,
                client_id,
                key_pem,
                kid,
                scope,
                consumer_org,
                consent,
                resource,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let response =
                runtime.block_on(tollbu_devkit::token_client::request_token(&request))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "access_token": response.access_token,
                        "token_type": response.token_type,
                        "expires_in": response.expires_in,
                        "scope": response.scope,
                    })
                );
            } else {
                println!("{}", response.access_token);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy(policy) => Ok(match policy {
            PolicyCommand::Check { dir } => {
                let r = policy_tools::check(&dir);
                report(r.ok, &r.text)
            }
            PolicyCommand::Test { dir } => {
                let r = policy_tools::run_tests(&dir);
                report(r.ok, &r.text)
            }
            PolicyCommand::Explain { policies, request } => {
                let r = policy_tools::explain_file(&policies, &request);
                report(r.ok, &r.text)
            }
            PolicyCommand::WhoCan {
                policies,
                service,
                field,
            } => {
                let r = policy_tools::who_can(&policies, &service, field.as_deref());
                report(r.ok, &r.text)
            }
            PolicyCommand::Catalog { dir } => {
                let r = policy_tools::catalog(&dir);
                report(r.ok, &r.text)
            }
        }),
        Command::Audit(audit) => Ok(match audit {
            AuditCommand::Verify {
                dir,
                checkpoint,
                key,
                retention_key,
                readers,
            } => {
                let options = audit_tools::VerifyOptions {
                    checkpoints: &checkpoint,
                    verifier_key: key.as_deref(),
                    retention_keys: &retention_key,
                    progress: None,
                    readers,
                };
                let r = verify_showing_progress(&dir, options);
                report(r.ok, &r.text)
            }
            AuditCommand::Query {
                dir,
                subject,
                pseudonym_key,
                consumer,
                service,
                decision,
                from,
                to,
                json,
                scan,
            } => {
                let decision = match decision.as_deref() {
                    None => None,
                    Some("allow") => Some(tollbu_audit::Decision::Allow),
                    Some("deny") => Some(tollbu_audit::Decision::Deny),
                    Some("error") => Some(tollbu_audit::Decision::Error),
                    Some(other) => {
                        anyhow::bail!("`--decision` must be allow, deny or error, not `{other}`")
                    }
                };
                let query = audit_tools::Query {
                    subject,
                    consumer,
                    service,
                    decision,
                    from,
                    to,
                    lookup: lookup(scan),
                };
                // Written as found: a broad query on a large log may match millions of records.
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                let answered =
                    audit_tools::query_to(&dir, &query, pseudonym_key.as_deref(), json, &mut out)
                        .and_then(|()| {
                            out.flush().map_err(|source| tollbu_audit::AuditError::Io {
                                path: "<output>".into(),
                                source,
                            })
                        });
                match answered {
                    Ok(()) => ExitCode::SUCCESS,
                    // The reader went away (`| head`): it has what it wanted.
                    Err(tollbu_audit::AuditError::Io { source, path })
                        if source.kind() == std::io::ErrorKind::BrokenPipe
                            && path.as_os_str() == "<output>" =>
                    {
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        let _ = out.flush();
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            AuditCommand::Prove { dir, index, size } => {
                let r = audit_tools::prove(&dir, index, size);
                report(r.ok, &r.text)
            }
            AuditCommand::Consistency { dir, from, to } => {
                let r = audit_tools::consistency(&dir, from, to);
                report(r.ok, &r.text)
            }
            AuditCommand::Citizen {
                dirs,
                subject,
                pseudonym_key,
                scan,
            } => {
                // Each log's report as it comes, a failing one on stderr; fails if any did.
                let mut status = ExitCode::SUCCESS;
                for dir in &dirs {
                    if dirs.len() > 1 {
                        println!("== Log {}", dir.display());
                    }
                    let r = audit_tools::citizen(dir, &subject, &pseudonym_key, lookup(scan));
                    if report(r.ok, &r.text) != ExitCode::SUCCESS {
                        status = ExitCode::FAILURE;
                    }
                }
                status
            }
            AuditCommand::Reindex { dir } => match tollbu_audit::reindex_closed_log(&dir) {
                Ok(r) => report(
                    true,
                    &format!(
                        "indexed {} records; subject and consumer queries use the new index\n",
                        r.records
                    ),
                ),
                Err(tollbu_audit::AuditError::Locked(_)) => report(
                    false,
                    "the log is open (a gateway is serving it): stop it, or remove the log's `index` directory and restart the gateway, which rebuilds it\n",
                ),
                Err(e) => report(false, &format!("error: {e}\n")),
            },
            AuditCommand::Prune {
                dir,
                older_than_days,
                signing_key,
                key_name,
            } => {
                let age = std::time::Duration::from_secs(older_than_days.saturating_mul(86_400));
                let cutoff = std::time::SystemTime::now()
                    .checked_sub(age)
                    .unwrap_or(std::time::UNIX_EPOCH);
                let signer = match retention_signer(&dir, &signing_key, key_name) {
                    Ok(signer) => signer,
                    Err(e) => return Ok(report(false, &format!("error: {e}\n"))),
                };
                match tollbu_audit::prune_closed_log(&dir, cutoff, &signer) {
                    Ok(r) if r.segments_removed > 0 => report(
                        true,
                        &format!(
                            "removed {} segments: records 0..{} are now kept as hashes only{}\n",
                            r.segments_removed,
                            r.first_retained,
                            foreign_signer_advice(&dir, &signer)
                        ),
                    ),
                    Ok(_) => report(true, "nothing older than that to remove\n"),
                    Err(tollbu_audit::AuditError::Locked(_)) => report(
                        false,
                        "the log is open (a gateway is serving it); its `retention_days` applies there\n",
                    ),
                    Err(e) => report(false, &format!("error: {e}\n")),
                }
            }
        }),
        Command::Config(ConfigCommand::Check { file, syntax_only }) => {
            // What `serve` reads, short of binding its sockets and opening the audit log.
            let checked = Config::load(&file)
                .map_err(|e| e.to_string())
                .and_then(|config| {
                    if syntax_only {
                        return Ok(());
                    }
                    tollbu_proxy::gateway::check_files(&config).map_err(|e| e.to_string())
                });
            match checked {
                Ok(()) => {
                    println!("{}: ok", file.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(error) => {
                    eprintln!("{error}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Console(ConsoleCommand::HashPassword) => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(
                password.chars().count() >= 12,
                "use a password of at least 12 characters"
            );
            let hash = tollbu_proxy::console::auth::PasswordHash::new(
                password,
                tollbu_proxy::console::auth::DEFAULT_ITERATIONS,
            )
            .context("no randomness for the salt")?;
            println!("{}", hash.to_phc());
            Ok(ExitCode::SUCCESS)
        }
        Command::Devkit(DevkitCommand::Certs { out }) => {
            tollbu_devkit::certs::generate(&out)?;
            println!("wrote dev-only keys and certificates to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn serve(config_path: PathBuf) -> anyhow::Result<ExitCode> {
    // Requests run on the gateway's own workers (`[gateway] workers`); this
    // runtime only accepts, serves the admin listener and refreshes keys.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // First of all, so that no signal during start-up kills the process or goes unheeded.
    let mut signals = {
        let _entered = runtime.enter();
        crate::demo::Signals::catch()
    };
    let config = match Config::load(&config_path) {
        Ok(config) => config,
        Err(error) => {
            crate::init_logging(true, "info");
            return Err(error.into());
        }
    };
    crate::init_logging(true, config.log.level.get_ref());
    runtime.block_on(async {
        let gateway = tollbu_proxy::start_with(config, Some(config_path.clone())).await?;
        tracing::info!(
            plain = gateway.plain_addr.map(|a| a.to_string()),
            tls = gateway.tls_addr.map(|a| a.to_string()),
            admin = %gateway.admin_addr,
            "gateway serving"
        );
        signals.wait_for_shutdown(&gateway).await;
        // Logged here, so that `serve`'s lines carry its target (not the demo's).
        tracing::info!("shutting down: draining connections, flushing the audit log");
        gateway.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
