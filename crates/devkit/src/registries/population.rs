//! The population register: `GET /persons/{pid}`.

use std::sync::LazyLock;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;

use super::Refusal;
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
    super::serve(req, |segments| {
        let ["persons", pid] = segments else {
            return Err(Refusal::UnknownPath);
        };
        super::require_get(req)?;
        let person = super::lookup(pid)?;
        let body = BODIES
            .get(person.index as usize)
            .ok_or(Refusal::UnknownPerson)?;
        Ok(respond::bytes(StatusCode::OK, respond::JSON, body.clone()))
    })
}
