//! Lays out the release `tollbu` binary's serving code together (`link-order.txt`, written by
//! `bench/build-profile/collect.sh`): the functions a serving gateway runs then share a few pages
//! instead of touching most of the binary, which keeps its resident code small.
//!
//! The file goes to lld (rustc's default linker on x86_64 Linux since 1.90) as
//! `--symbol-ordering-file`; names it does not find are skipped, so a stale file only costs
//! layout. `TOLLBU_LINK_ORDER=off` leaves the layout to the linker, for a linker without the option.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=TOLLBU_LINK_ORDER");
    let release = env::var("PROFILE").is_ok_and(|profile| profile == "release");
    let linux_x86_64 = env::var("TARGET").is_ok_and(|target| target == "x86_64-unknown-linux-gnu");
    let disabled = env::var("TOLLBU_LINK_ORDER").is_ok_and(|value| value == "off");
    if !(release && linux_x86_64) || disabled {
        return;
    }
    let Some(manifest_dir) = env::var_os("CARGO_MANIFEST_DIR") else {
        return;
    };
    let order = PathBuf::from(manifest_dir).join("link-order.txt");
    if !order.is_file() {
        return;
    }
    println!(
        "cargo:rustc-link-arg-bin=tollbu=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo:rustc-link-arg-bin=tollbu=-Wl,--no-warn-symbol-ordering");
}
