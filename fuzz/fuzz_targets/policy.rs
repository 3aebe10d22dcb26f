//! Policy text → parse → validate → compile, then one decision and the
//! static analyses over whatever compiled.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tollbu_policy::PolicySet;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sources = vec![("fuzz.toml".to_owned(), text.to_owned())];
    if let Ok(loaded) = PolicySet::from_sources_at(&sources, 1_700_000_000) {
        let set = loaded.set;
        let services: Vec<String> = set.service_ids().map(str::to_owned).collect();
        for service in &services {
            let _ = set.who_can(service, None);
            let _ = set.match_operation(service, "GET", "/persons/05885624741", None);
        }
        let _ = set.catalog_markdown();
    }
});
