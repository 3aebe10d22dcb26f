//! End-to-end tests over real sockets on 127.0.0.1: one binary, one module
//! per capability.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod adversarial_tokens;
mod audit_trail;
mod faults;
mod gateway;
mod http_abuse;
mod operations;
mod policy_decisions;
mod tokens;
