//! Local stand-ins for the outside world, so the Tollbu gateway can be run and
//! tested on one machine: a Maskinporten-style token issuer ([`issuer`]), a
//! client that obtains tokens from any Maskinporten-compatible issuer
//! ([`token_client`]), example population and income registries serving
//! synthetic people ([`registries`], [`people`]), and dev-only keys and
//! certificates ([`certs`], [`demo_material`]).
//!
//! Everything here speaks real HTTP on real sockets with real signatures; it
//! is still not meant for production: the issuer has no persistence or rate
//! limits, the registries hold invented people, and the keys in
//! `certs-example/` are public. The gateway depends on this crate only for its
//! `demo` and `token` commands.

#![forbid(unsafe_code)]

pub mod certs;
pub mod demo_material;
mod error;
pub mod issuer;
mod jwt;
pub mod people;
pub mod registries;
mod respond;
mod server;
pub mod token_client;

pub use error::DevkitError;
pub use issuer::{IssuerConfig, IssuerHandle, start_issuer};
pub use registries::{RegistryHandle, start_income, start_population};
pub use respond::PROBLEM_TYPE_BASE;
pub use token_client::{TokenRequest, TokenResponse, request_token};
