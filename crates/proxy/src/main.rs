//! `tollbu`: the gateway binary and the tools around it.
//!
//! args → config → serve; every other subcommand calls a library function and
//! prints its report. `anyhow` lives only here, at the edge.

mod cli;
mod demo;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Args::parse();
    init_logging(args.log_format_json());
    cli::run(args)
}

fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(false).init();
    } else {
        builder.compact().init();
    }
}
