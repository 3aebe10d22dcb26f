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
    let server = Server::spawn(listener, tls, handler, None)?;
    tracing::info!(url = %format!("{scheme}://{}", server.addr()), "devkit registry started");
    Ok(RegistryHandle { server, scheme })
}

/// Why a registry cannot answer. Each becomes a problem document in
/// [`Refusal::response`], the one place statuses and texts are declared.
#[derive(Debug)]
enum Refusal {
    UnknownPath,
    MethodNotAllowed,
    MalformedPid,
    UnknownPerson,
    MalformedYear(String),
    UnknownYear(u16),
}

impl Refusal {
    fn response(&self, path: &str) -> Response<Full<Bytes>> {
        match self {
            Self::UnknownPath => respond::not_found(path),
            Self::MethodNotAllowed => respond::method_not_allowed("GET"),
            Self::MalformedPid => respond::problem(
                StatusCode::BAD_REQUEST,
                "malformed-pid",
                "the identity number must be 11 digits with valid check digits",
            ),
            Self::UnknownPerson => respond::problem(
                StatusCode::NOT_FOUND,
                "unknown-person",
                "no person with that identity number in this register",
            ),
            Self::MalformedYear(year) => respond::problem(
                StatusCode::BAD_REQUEST,
                "malformed-year",
                &format!("`{year}` is not a four-digit year"),
            ),
            Self::UnknownYear(year) => respond::problem(
                StatusCode::NOT_FOUND,
                "unknown-year",
                &format!(
                    "the register holds years {FIRST_INCOME_YEAR}-{LAST_INCOME_YEAR}, not `{year}`"
                ),
            ),
        }
    }
}

/// Runs a registry's `answer`, after the routes both registries share.
fn serve(
    req: &Request<Bytes>,
    answer: impl FnOnce(&[&str]) -> Result<Response<Full<Bytes>>, Refusal>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let result = if segments == ["debug", "echo-headers"] {
        require_get(req).map(|()| respond::echo_headers(req.headers()))
    } else {
        answer(&segments)
    };
    result.unwrap_or_else(|refusal| refusal.response(path))
}

fn require_get(req: &Request<Bytes>) -> Result<(), Refusal> {
    match *req.method() {
        Method::GET | Method::HEAD => Ok(()),
        _ => Err(Refusal::MethodNotAllowed),
    }
}

/// 400 for something that is not an identity number, 404 for a well-formed
/// number of nobody in the register.
fn lookup(pid: &str) -> Result<&'static Person, Refusal> {
    if !is_valid_pid(pid) {
        return Err(Refusal::MalformedPid);
    }
    people::by_pid(pid).ok_or(Refusal::UnknownPerson)
}
