//! End-to-end tests of the devkit over real sockets on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod certs;
mod demo;
mod http;
mod issuer;
mod people;
mod registries;
