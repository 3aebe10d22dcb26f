//! `tollbu`: the gateway binary and the tools around it.
//!
//! args → config → serve; every other subcommand calls a library function and
//! prints its report. `anyhow` lives only here, at the edge.

mod cli;
mod demo;

use clap::Parser;

fn main() -> std::process::ExitCode {
    cli::run(cli::Args::parse())
}

/// Structured logs on stderr: `RUST_LOG` when set, else `default_level`.
pub fn init_logging(json: bool, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(false).init();
    } else {
        builder.compact().init();
    }
}
