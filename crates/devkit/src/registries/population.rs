//! The population register: `GET /persons/{pid}`.

use std::sync::LazyLock;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;

use crate::people;
use crate::respond;

/// Each person's JSON, serialised once: this registry is the upstream of the
/// gateway's load benchmark, so answering must cost next to nothing.
static BODIES: LazyLock<Vec<Bytes>> = LazyLock::new(|| {
    people::all()
        .iter()
        .map(|p| Bytes::from(serde_json::to_vec(p).unwrap_or_default()))
        .collect()
});

pub(super) fn route(req: &Request<Bytes>) -> Response<Full<Bytes>> {
    let segments = match super::common(req) {
        Ok(s) => s,
        Err(response) => return response,
    };
    let ["persons", pid] = segments.as_slice() else {
        return respond::not_found(req.uri().path());
    };
    if let Err(response) = super::require_get(req) {
        return response;
    }
    match super::lookup(pid) {
        Ok(person) => match BODIES.get(person.index as usize) {
            Some(body) => respond::bytes(StatusCode::OK, respond::JSON, body.clone()),
            None => respond::not_found(req.uri().path()),
        },
        Err(response) => response,
    }
}
