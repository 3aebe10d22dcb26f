//! `tollbu`: the gateway binary and the tools around it.
//!
//! args → config → serve; every other subcommand calls a library function and
//! prints its report. `anyhow` lives only here, at the edge.

mod cli;
mod demo;

use clap::Parser;

/// mimalloc instead of glibc's malloc: a request's memory is allocated and
/// freed across several threads (connection, request task, audit writer), and
/// under load glibc's arenas cost more CPU and more peak memory. Measured in
/// docs/BENCHMARKS.md (≈ 16 % less CPU per request, ≈ 5 % less peak RSS at
/// 1,000 connections). Arena memory is committed lazily: see .cargo/config.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
