//! Example registries the gateway can front: a population register
//! (`GET /persons/{pid}`) and an income register
//! (`GET /persons/{pid}/income/{year}`), both over the synthetic people of
//! [`crate::people`], both with `GET /debug/echo-headers` so tests can see
//! what the gateway forwarded. No authentication: they trust their caller,
//! as a registry behind Tollbu would.

mod income;
mod population;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::net::TcpListener;
use tollbu_policy::ids::is_valid_pid;

pub use income::{FIRST_INCOME_YEAR, Income, IncomeItem, LAST_INCOME_YEAR, income};

use crate::error::DevkitError;
use crate::people::{self, Person};
use crate::respond;
use crate::server::{Handler, Server};

/// A running registry. Dropping it stops the registry; prefer [`Self::shutdown`].
pub struct RegistryHandle {
    server: Server,
    scheme: &'static str,
}

impl RegistryHandle {
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT` or `https://…`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.server.addr())
    }

    /// Closes the listener and idle connections; returns when all is closed.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Starts the population registry on `listener`, over TLS when `tls` is given.
pub async fn start_population(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<RegistryHandle, DevkitError> {
    start(listener, tls, Arc::new(|req| population::route(&req)))
}

/// Starts the income registry on `listener`, over TLS when `tls` is given.
pub async fn start_income(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<RegistryHandle, DevkitError> {
    start(listener, tls, Arc::new(|req| income::route(&req)))
}

fn start(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    handler: Handler,
) -> Result<RegistryHandle, DevkitError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Build the population now, not on the first (timed) request.
    let _ = people::all();
    let server = Server::spawn(listener, tls, handler)?;
    tracing::info!(url = %format!("{scheme}://{}", server.addr()), "devkit registry started");
    Ok(RegistryHandle { server, scheme })
}

/// Routing shared by both registries: the echo endpoint, method checks, and
/// the path split into segments for the registry's own routes.
fn common<'a>(req: &'a Request<Bytes>) -> Result<Vec<&'a str>, Response<Full<Bytes>>> {
    let path = req.uri().path();
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    if segments == ["debug", "echo-headers"] {
        return Err(match *req.method() {
            Method::GET | Method::HEAD => respond::echo_headers(req.headers()),
            _ => respond::method_not_allowed("GET"),
        });
    }
    Ok(segments)
}

fn require_get(req: &Request<Bytes>) -> Result<(), Response<Full<Bytes>>> {
    match *req.method() {
        Method::GET | Method::HEAD => Ok(()),
        _ => Err(respond::method_not_allowed("GET")),
    }
}

/// 400 for something that is not an identity number, 404 for a well-formed
/// number of nobody in the register.
fn lookup(pid: &str) -> Result<&'static Person, Response<Full<Bytes>>> {
    if !is_valid_pid(pid) {
        return Err(respond::problem(
            StatusCode::BAD_REQUEST,
            "malformed-pid",
            "the identity number must be 11 digits with valid check digits",
        ));
    }
    people::by_pid(pid).ok_or_else(|| {
        respond::problem(
            StatusCode::NOT_FOUND,
            "unknown-person",
            "no person with that identity number in this register",
        )
    })
}
