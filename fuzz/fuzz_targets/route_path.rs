//! Path normalisation and the query check: never panic, and anything
//! accepted is free of dot segments, encoded separators and control bytes,
//! even after one more round of percent-decoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollbu_proxy::route::{check_query, route_path};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = check_query(text);
    if let Ok(routed) = route_path(text) {
        assert!(routed.rest.starts_with('/'));
        for segment in routed.rest.split('/') {
            assert!(segment != "." && segment != "..", "{text:?}");
        }
        assert!(
            !routed
                .rest
                .bytes()
                .any(|b| b.is_ascii_control() || b == b'\\'),
            "{text:?}"
        );
        // Normalising twice changes nothing.
        let again = route_path(&format!("/{}{}", routed.service, routed.rest));
        assert_eq!(
            again.as_ref().map(|r| &r.rest),
            Ok(&routed.rest),
            "{text:?}"
        );
    }
});
