//! Writes the dev-only key set (demo CA, server and client certificates,
//! issuer and client JWT keys, audit keys) into a directory.
//!
//! `cargo run -p tollbu-devkit --example gen_certs -- certs-example`

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "certs-example".to_owned()),
    );
    match tollbu_devkit::certs::generate(&dir) {
        Ok(()) => {
            println!("wrote demo keys and certificates to {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
