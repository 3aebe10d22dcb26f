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

/// Structured logs on stderr: `RUST_LOG` when set, else `default_level`, with the HTTP crates
/// capped (see [`cap_http_crates`]).
pub fn init_logging(json: bool, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let wanted = std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|text| EnvFilter::try_new(text).is_ok())
        .unwrap_or_else(|| default_level.to_owned());
    let filter = EnvFilter::new(cap_http_crates(&wanted));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(false).init();
    } else {
        builder.compact().init();
    }
}

/// The crates that parse requests log what they could not parse at `debug` (h2 writes a malformed
/// `:path` whole, identity number and all), and our logs promise never to carry one: a filter
/// such as `debug` leaves them at `info` unless it names them itself.
const CAPPED_HTTP_CRATES: [&str; 3] = ["h2", "hyper", "hyper_util"];

/// `filter` with `<crate>=info` added for each of [`CAPPED_HTTP_CRATES`] it does not name.
fn cap_http_crates(filter: &str) -> String {
    let named = |krate: &str| {
        filter.split(',').any(|directive| {
            let target = directive
                .trim()
                .split(['=', '['])
                .next()
                .unwrap_or_default();
            target == krate || target.starts_with(&format!("{krate}::"))
        })
    };
    let mut capped = filter.trim().to_owned();
    for krate in CAPPED_HTTP_CRATES.iter().filter(|krate| !named(krate)) {
        if !capped.is_empty() {
            capped.push(',');
        }
        capped.push_str(krate);
        capped.push_str("=info");
    }
    capped
}

#[cfg(test)]
mod tests {
    use super::cap_http_crates;

    #[test]
    fn http_crates_stay_at_info_unless_the_filter_names_them() {
        assert_eq!(
            cap_http_crates("debug"),
            "debug,h2=info,hyper=info,hyper_util=info"
        );
        assert_eq!(
            cap_http_crates("info,h2::server=trace"),
            "info,h2::server=trace,hyper=info,hyper_util=info"
        );
        assert_eq!(
            cap_http_crates("hyper=debug,hyper_util[conn]=trace,h2=warn"),
            "hyper=debug,hyper_util[conn]=trace,h2=warn"
        );
        assert_eq!(
            cap_http_crates("h2c=debug"),
            "h2c=debug,h2=info,hyper=info,hyper_util=info"
        );
    }
}
