//! Attack inputs shared by the HTTP abuse test and the memory test.

/// Request targets that try to leave `/population/persons/{pid}` by path traversal: dot segments in
/// every encoding (percent, double, triple, overlong UTF-8, `%u`, NUL, `;`, backslash) and encoded
/// or control separators. 82 paths.
pub fn traversal_paths(pid: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for dots in [
        "..",
        "%2e%2e",
        "%2E%2E",
        ".%2e",
        "%2e.",
        "%252e%252e",
        "%252E%252E",
        "%25252e%25252e",
        "%c0%ae%c0%ae",
        "%e0%80%ae%e0%80%ae",
        "%u002e%u002e",
        ".%00.",
        "..%00",
        "..;",
        "%2e%2e;",
        "..%5c",
        "..\\",
        "%2e%2e%5c",
        "..%255c",
        ".",
    ] {
        paths.push(format!("/population/persons/{dots}/{pid}"));
        paths.push(format!("/population/{dots}/population/persons/{pid}"));
        paths.push(format!("/{dots}/population/persons/{pid}"));
    }
    for sep in [
        "%2f", "%2F", "%252f", "%5c", "%5C", "\\", "%00", "%0a", "%0d%0a", "%09", "%7f",
    ] {
        paths.push(format!("/population/persons{sep}{pid}"));
        paths.push(format!("/population/persons/{pid}{sep}"));
    }
    paths
}
