//! Integration tests for the audit log, in one binary (one link, shared helpers).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit {
    pub mod support;
}
#[path = "audit/crash.rs"]
mod crash;
#[path = "audit/faults.rs"]
mod faults;
#[path = "audit/index_damage.rs"]
mod index_damage;
#[path = "audit/lifecycle.rs"]
mod lifecycle;
#[path = "audit/readers.rs"]
mod readers;
#[path = "audit/tamper.rs"]
mod tamper;

pub use audit::support;
