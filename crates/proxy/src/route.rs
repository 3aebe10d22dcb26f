//! Turns a request target into `(service, path after the service)`, refusing
//! anything that could mean a different resource to the upstream than to us.
//!
//! Pure and synchronous: the whole path policy is here and unit-tested.
//! Refused: dot segments (`.` and `..`) in any percent-encoding, encoded
//! slashes and backslashes, NUL and other control bytes, invalid UTF-8 after
//! decoding, double-encoded versions of all of those, and targets that are
//! not in origin form. Repeated slashes are collapsed.

use percent_encoding::percent_decode_str;

/// A request path the gateway accepts, split at the service name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedPath {
    /// First segment: the service id from config.
    pub service: String,
    /// The rest, still percent-encoded as received but normalised; starts with `/`.
    pub rest: String,
}

/// Why a path was refused; all map to 400 `bad_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    #[error("path must start with `/`")]
    NotOriginForm,
    #[error("path has a dot segment")]
    DotSegment,
    #[error("path has an encoded slash or backslash")]
    EncodedSeparator,
    #[error("path has a control character")]
    ControlCharacter,
    #[error("path is not valid UTF-8 once decoded")]
    InvalidEncoding,
    #[error("path names no service")]
    NoService,
    #[error("path is too long")]
    TooLong,
}

/// Upper bound on a path we are willing to look at.
const MAX_PATH_BYTES: usize = 4096;

/// Normalises and splits `path` (without the query).
pub fn route_path(path: &str) -> Result<RoutedPath, PathError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if !path.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let mut segments = Vec::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        check_segment(raw)?;
        segments.push(raw);
    }
    let Some((service, rest)) = segments.split_first() else {
        return Err(PathError::NoService);
    };
    if !is_service_id(service) {
        return Err(PathError::NoService);
    }
    let mut rest_path = String::with_capacity(path.len());
    for segment in rest {
        rest_path.push('/');
        push_normalised(&mut rest_path, segment);
    }
    if rest_path.is_empty() || path.ends_with('/') {
        rest_path.push('/');
    }
    Ok(RoutedPath {
        service: (*service).to_owned(),
        rest: rest_path,
    })
}

/// Appends `segment` with its percent-encodings normalised (RFC 3986 §6.2.2): an encoded
/// unreserved character decoded (`%32022` is `2022`), every other escape in upper case. The
/// policy decides on the decoded value; a registry that does not decode `%32` would otherwise
/// be asked for something else than what was decided on. `segment` passed [`check_segment`].
fn push_normalised(out: &mut String, segment: &str) {
    if !segment.contains('%') {
        out.push_str(segment);
        return;
    }
    let mut rest = segment;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at + 1..at + 3).unwrap_or_default();
        match u8::from_str_radix(escape, 16) {
            Ok(byte) if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) => {
                out.push(char::from(byte));
            }
            _ => {
                out.push('%');
                out.push_str(&escape.to_ascii_uppercase());
            }
        }
        rest = rest.get(at + 1 + escape.len()..).unwrap_or_default();
    }
    out.push_str(rest);
}

/// Refuses control bytes and NUL anywhere in the query, in any encoding.
pub fn check_query(query: &str) -> Result<(), PathError> {
    if query.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if !well_formed_percent(query) {
        return Err(PathError::InvalidEncoding);
    }
    let once = percent_decode_str(query).collect::<Vec<u8>>();
    // Parameters are read as UTF-8 (the subject among them): bytes that are not cannot be decided on.
    if std::str::from_utf8(&once).is_err() {
        return Err(PathError::InvalidEncoding);
    }
    let twice = percent_decode_str(&String::from_utf8_lossy(&once)).collect::<Vec<u8>>();
    if once.iter().chain(&twice).any(|b| b.is_ascii_control()) {
        return Err(PathError::ControlCharacter);
    }
    Ok(())
}

fn check_segment(raw: &str) -> Result<(), PathError> {
    if raw.bytes().any(|b| b.is_ascii_control() || b == b'\\') {
        return Err(PathError::ControlCharacter);
    }
    if !well_formed_percent(raw) {
        return Err(PathError::InvalidEncoding);
    }
    // Decode twice: a registry that decodes once more than we do must not
    // see a dot segment or a separator either.
    let once = decode(raw)?;
    let twice = decode(&once)?;
    for decoded in [&once, &twice] {
        if decoded == "." || decoded == ".." {
            return Err(PathError::DotSegment);
        }
        if decoded.contains('/') || decoded.contains('\\') {
            return Err(PathError::EncodedSeparator);
        }
        if decoded.chars().any(char::is_control) {
            return Err(PathError::ControlCharacter);
        }
    }
    Ok(())
}

/// Every `%` starts a `%XX` escape (RFC 3986 §2.1). A lone `%` is passed on as it is by lenient
/// decoders and read differently by strict ones; the registry must see what was decided on.
fn well_formed_percent(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|b| *b == b'%') {
        let at = i + offset;
        match bytes.get(at + 1..at + 3) {
            Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => i = at + 3,
            _ => return false,
        }
    }
    true
}

fn decode(text: &str) -> Result<String, PathError> {
    percent_decode_str(text)
        .decode_utf8()
        .map(|cow| cow.into_owned())
        .map_err(|_| PathError::InvalidEncoding)
}

/// Whether `candidate` can be a service id: the first path segment as routed.
pub fn is_service_id(candidate: &str) -> bool {
    !candidate.is_empty()
        && candidate.len() <= 64
        && candidate
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn splits_service_and_rest() {
        let routed = route_path("/population/persons/12345678901").unwrap();
        assert_eq!(routed.service, "population");
        assert_eq!(routed.rest, "/persons/12345678901");
        assert_eq!(route_path("/population").unwrap().rest, "/");
        assert_eq!(
            route_path("//population//persons//1").unwrap().rest,
            "/persons/1"
        );
        assert_eq!(
            route_path("/population/persons/").unwrap().rest,
            "/persons/"
        );
    }

    #[test]
    fn encoded_unreserved_characters_are_forwarded_decoded_and_other_escapes_upper_case() {
        assert_eq!(
            route_path("/income/persons/01819010001/income/%32022")
                .unwrap()
                .rest,
            "/persons/01819010001/income/2022"
        );
        assert_eq!(
            route_path("/population/persons/%7e%41-%2d%5F/%c3%a6%20x%2523")
                .unwrap()
                .rest,
            "/persons/~A--_/%C3%A6%20x%2523"
        );
    }

    #[test]
    fn refuses_traversal_in_every_encoding() {
        for path in [
            "/population/../admin",
            "/population/./persons",
            "/population/%2e%2e/admin",
            "/population/%2E%2E/admin",
            "/population/.%2e/admin",
            "/population/%2e./admin",
            "/population/%252e%252e/admin",
            "/population/%252E%252E/admin",
            "/population/..",
            "/../population",
            "/population/%2e",
        ] {
            assert_eq!(route_path(path), Err(PathError::DotSegment), "{path}");
        }
    }

    #[test]
    fn refuses_encoded_separators_nul_and_bad_utf8() {
        assert_eq!(
            route_path("/population/a%2fb"),
            Err(PathError::EncodedSeparator)
        );
        assert_eq!(
            route_path("/population/a%2Fb"),
            Err(PathError::EncodedSeparator)
        );
        assert_eq!(
            route_path("/population/a%5cb"),
            Err(PathError::EncodedSeparator)
        );
        assert_eq!(
            route_path("/population/a%252fb"),
            Err(PathError::EncodedSeparator)
        );
        assert_eq!(
            route_path("/population/a\\b"),
            Err(PathError::ControlCharacter)
        );
        assert_eq!(
            route_path("/population/a%00b"),
            Err(PathError::ControlCharacter)
        );
        assert_eq!(
            route_path("/population/a%2500b"),
            Err(PathError::ControlCharacter)
        );
        assert_eq!(
            route_path("/population/a%0ab"),
            Err(PathError::ControlCharacter)
        );
        assert_eq!(
            route_path("/population/%c0%ae%c0%ae"),
            Err(PathError::InvalidEncoding)
        );
        assert_eq!(route_path("population/x"), Err(PathError::NotOriginForm));
        assert_eq!(
            route_path("http://evil/population/x"),
            Err(PathError::NotOriginForm)
        );
        assert_eq!(route_path("/"), Err(PathError::NoService));
        assert_eq!(route_path("/Population/x"), Err(PathError::NoService));
        assert_eq!(
            route_path(&format!("/p/{}", "a".repeat(5000))),
            Err(PathError::TooLong)
        );
    }

    #[test]
    fn query_refuses_control_bytes() {
        assert!(check_query("year=2022&x=%41").is_ok());
        assert_eq!(check_query("x=%00"), Err(PathError::ControlCharacter));
        assert_eq!(check_query("x=%2500"), Err(PathError::ControlCharacter));
    }
}
