//! Diagnostics: exact `file:line:col`, message and help for each
//! validation rule.

use super::{NOW, SERVICE, sources};
use crate::{PolicySet, Severity};

const GRANT: &str = r#"[[grant]]
id = "welfare"
service = "population"
consumer = ["310000019"]
scopes = ["demo:population"]
operations = ["get-person"]
purposes = ["benefit-assessment"]
legal_basis = "Folketrygdloven § 21-4"
fields = ["name"]
valid_from = 2024-01-01T00:00:00Z
valid_to = 2030-01-01T00:00:00Z
"#;

/// Replaces line `line` (1-based) of GRANT with `with` (may be empty or
/// several lines).
fn edit(line: usize, with: &str) -> String {
    let mut lines: Vec<&str> = GRANT.lines().collect();
    lines[line - 1] = with;
    lines.join("\n") + "\n"
}

/// Every diagnostic (errors, then warnings) rendered as the CLI shows it.
fn diags(grant_file: &str) -> Vec<String> {
    match PolicySet::from_sources_at(
        &sources(&[("s.toml", SERVICE), ("g.toml", grant_file)]),
        NOW,
    ) {
        Ok(l) => l.warnings.iter().map(ToString::to_string).collect(),
        Err(e) => e
            .errors
            .iter()
            .chain(&e.warnings)
            .map(ToString::to_string)
            .collect(),
    }
}

fn one(grant_file: &str) -> String {
    let d = diags(grant_file);
    assert_eq!(d.len(), 1, "{d:#?}");
    d.into_iter().next().unwrap_or_default()
}

#[test]
fn the_base_grant_is_valid() {
    assert_eq!(diags(GRANT), Vec::<String>::new());
}

#[test]
fn unknown_field_for_the_service() {
    assert_eq!(
        one(&edit(9, r#"fields = ["name", "shoe_size"]"#)),
        "g.toml:9:19: error: unknown field `shoe_size` for service `population`\n  help: declared fields: `address.city`, `citizenships[].country`, `name.family`, `name.given`, `pid`"
    );
    // A prefix must end on a segment boundary.
    assert!(
        one(&edit(9, r#"fields = ["name.giv"]"#))
            .starts_with("g.toml:9:11: error: unknown field `name.giv`")
    );
}

#[test]
fn unknown_operation() {
    assert_eq!(
        one(&edit(6, r#"operations = ["get-persons"]"#)),
        "g.toml:6:15: error: unknown operation `get-persons` for service `population`\n  help: operations of `population`: `get-person`, `search`, `stats`"
    );
}

#[test]
fn grant_without_legal_basis_or_consent() {
    assert_eq!(
        one(&edit(8, "")),
        "g.toml:2:6: error: grant `welfare` has neither a legal basis nor a consent requirement\n  help: add `legal_basis = \"<statute and section>\"`, or `consent = { resource = \"…\" }`"
    );
}

#[test]
fn malformed_organisation_number() {
    assert_eq!(
        one(&edit(4, r#"consumer = ["310000019", "310000018"]"#)),
        "g.toml:4:26: error: malformed organisation number `310000018`\n  help: organisation numbers are nine digits whose last is a mod-11 check digit (weights 3,2,7,6,5,4,3,2)"
    );
}

#[test]
fn duplicate_ids_across_files() {
    let d = match PolicySet::from_sources_at(
        &sources(&[("s.toml", SERVICE), ("a.toml", GRANT), ("b.toml", GRANT)]),
        NOW,
    ) {
        Err(e) => e.errors,
        Ok(_) => panic!("duplicate ids must be refused"),
    };
    assert_eq!(d.len(), 1);
    assert_eq!(
        d[0].to_string(),
        "b.toml:2:6: error: duplicate id `welfare`\n  help: first declared at a.toml:2:6; grant and denial ids are unique across all files"
    );
}

#[test]
fn unknown_keys_are_refused() {
    let d = one(&edit(8, r#"legal_bassis = "Folketrygdloven § 21-4""#));
    assert!(
        d.starts_with(
            "g.toml:8:1: error: unknown field `legal_bassis`, expected one of `id`, `title`"
        ),
        "{d}"
    );
    assert!(
        d.ends_with("\n  help: see docs/policy-language.md for every key and its type"),
        "{d}"
    );
}

#[test]
fn syntax_errors_point_at_the_character() {
    // The unclosed list is noticed where the next key starts.
    assert_eq!(
        one(&edit(9, r#"fields = ["name""#)),
        "g.toml:10:1: error: missing comma between array elements, expected `,`"
    );
    assert_eq!(
        one(&edit(7, r#"purposes = "benefit-assessment""#)),
        "g.toml:7:12: error: invalid type: string \"benefit-assessment\", expected a sequence"
    );
}

#[test]
fn local_times_are_refused() {
    assert_eq!(
        one(&edit(10, "valid_from = 2024-01-01T00:00:00")),
        "g.toml:10:14: error: `valid_from` must be a date, time and UTC offset\n  help: write e.g. `2024-01-01T00:00:00Z`; local times would depend on the server's time zone"
    );
}

#[test]
fn open_grants_need_consent_and_consent_needs_a_subject() {
    assert_eq!(
        one(&edit(4, r#"consumer = "any-with-consent""#)),
        "g.toml:4:12: error: grant `welfare` admits any consumer but requires no consent\n  help: `any-with-consent` grants must say which consent they require: `consent = { resource = \"…\" }`"
    );
    let text = edit(6, r#"operations = ["stats"]"#).replace(
        "legal_basis = \"Folketrygdloven § 21-4\"",
        "consent = { resource = \"r\" }",
    );
    assert_eq!(
        one(&text),
        "g.toml:8:11: error: consent is required, but operation `stats` does not identify a person\n  help: declare `subject` on the service and use its parameter in the operation's path or query"
    );
    let text = edit(
        8,
        r#"consent = { resource = "r", metadata = { inntektsaar = "{year}" } }"#,
    );
    assert_eq!(
        one(&text),
        "g.toml:8:56: error: metadata `inntektsaar` refers to parameter `year`, which operation `get-person` does not have\n  help: parameters of `get-person`: `pid`"
    );
}

/// An empty consent action or metadata value would match no consent, or one the author did not
/// mean; a denial's reason goes to the caller and the console as one line of text.
#[test]
fn empty_consent_terms_and_control_characters_in_shown_texts_are_refused() {
    let text = edit(8, r#"consent = { resource = "r", action = "" }"#);
    assert!(
        one(&text).starts_with("g.toml:8:38: error: consent `action` is empty"),
        "{}",
        one(&text)
    );
    let text = edit(
        8,
        r#"consent = { resource = "r", metadata = { inntektsaar = "" } }"#,
    );
    assert!(
        one(&text).starts_with("g.toml:8:56: error: metadata `inntektsaar` is empty"),
        "{}",
        one(&text)
    );
    let titled = GRANT.replace(
        "service = \"population\"",
        "service = \"population\"\ntitle = \"Welfare \\u001b[31mred\"",
    );
    assert!(
        one(&titled).starts_with("g.toml:4:9: error: `title` holds a control character"),
        "{}",
        one(&titled)
    );
    let denial = "[[denial]]\nid = \"d\"\nservice = \"population\"\noperations = [\"get-person\"]\nconsumer = [\"310000019\"]\nreason = \"suspended\\r\\nx: y\"\n";
    let d = diags(&format!("{GRANT}{denial}"));
    assert!(
        d.iter()
            .any(|e| e.contains("error: `reason` holds a control character")),
        "{d:#?}"
    );
}

#[test]
fn unknown_service() {
    assert_eq!(
        one(&edit(3, r#"service = "vehicles""#)),
        "g.toml:3:11: error: unknown service `vehicles`\n  help: services: `population`"
    );
}

#[test]
fn grants_expiring_within_30_days_warn() {
    // NOW is 2026-06-01T12:00:00Z.
    let loaded = PolicySet::from_sources_at(
        &sources(&[
            ("s.toml", SERVICE),
            ("g.toml", &edit(11, "valid_to = 2026-06-11T12:00:00Z")),
        ]),
        NOW,
    )
    .unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert_eq!(loaded.warnings[0].severity, Severity::Warning);
    assert_eq!(
        loaded.warnings[0].to_string(),
        "g.toml:2:6: warning: grant `welfare` expires at 2026-06-11T12:00:00Z (in 10 days)\n  help: renew the agreement and extend `valid_to`, or let it lapse deliberately"
    );
    // 31 days ahead: no warning.
    assert_eq!(
        diags(&edit(11, "valid_to = 2026-07-02T12:00:01Z")),
        Vec::<String>::new()
    );
    assert_eq!(
        diags(&edit(11, "valid_to = 2025-01-01T00:00:00Z"))[0],
        "g.toml:2:6: warning: grant `welfare` expired at 2025-01-01T00:00:00Z\n  help: it no longer allows anything; remove it once the agreement has ended"
    );
}

#[test]
fn service_declarations_are_validated() {
    let bad = SERVICE
        .replace("national-identity-number", "passport")
        .replace("\"address.city\"", "\"address\", \"address.city\"")
        .replace("/persons/search", "/persons/{pid}");
    let errors = match PolicySet::from_sources_at(&sources(&[("s.toml", &bad)]), NOW) {
        Err(e) => e.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        Ok(_) => panic!("must be refused"),
    };
    assert_eq!(
        errors,
        [
            "s.toml:5:58: error: field `address.city` conflicts with field `address`\n  help: a path is either a value or a parent of other paths, and a segment is either an array (`[]`) or not",
            "s.toml:4:35: error: unknown subject kind `passport`\n  help: use one of `national-identity-number`, `organisation-number`",
            "s.toml:16:10: error: malformed or repeated query parameter `pid`",
            "s.toml:15:8: error: operation `search` matches the same requests as operation `get-person`\n  help: two operations may not share a method and path shape",
        ]
    );
}

#[test]
fn denials_must_name_someone_and_something() {
    let denial =
        "[[denial]]\nid = \"d\"\nservice = \"population\"\noperations = []\nreason = \"r\"\n";
    let d = diags(&format!("{GRANT}{denial}"));
    assert_eq!(
        d,
        [
            "g.toml:13:6: error: denial `d` names no consumer and no supplier\n  help: add `consumer = [\"<orgno>\"]` or `supplier = [\"<orgno>\"]`",
            "g.toml:15:14: error: `operations` is an empty list\n  help: list the operations denied, or omit `operations` to deny them all",
        ]
    );
}

/// A registry's thousands of agreements: every consumer its own grant of the
/// same operation, a few purposes shared by many. None overlap, so none warns;
/// the overlaps planted among them are each found once. (The lint compares
/// only grants that share an operation, a purpose and a consumer; before, it
/// compared every pair, which took seconds per thousand grants.)
#[test]
fn thousands_of_agreements_compile_and_only_real_overlaps_warn() {
    const COUNT: usize = 5_000;
    let consumers: Vec<String> = (0..)
        .filter_map(|n| crate::ids::complete_orgno(&format!("{:08}", 80_000_000 + n)))
        .take(COUNT)
        .collect();
    let purposes = [
        "benefit-assessment",
        "case-handling",
        "tax",
        "health",
        "school",
    ];
    let mut text = String::new();
    for (i, consumer) in consumers.iter().enumerate() {
        text.push_str(
            &GRANT
                .replace("\"welfare\"", &format!("\"a-{i:05}\""))
                .replace("\"310000019\"", &format!("\"{consumer}\""))
                .replace("benefit-assessment", purposes[i % purposes.len()]),
        );
    }
    let loaded =
        PolicySet::from_sources_at(&sources(&[("s.toml", SERVICE), ("g.toml", &text)]), NOW)
            .unwrap();
    assert_eq!(loaded.set.grants.len(), COUNT);
    assert_eq!(loaded.warnings, Vec::new());

    // A renewal for the 4,321st consumer, and a consent grant open to all
    // for a purpose nobody else has: one overlap, and none for the rest.
    let renewal = GRANT
        .replace("\"welfare\"", "\"z-renewal\"")
        .replace("\"310000019\"", &format!("\"{}\"", consumers[4_321]))
        .replace("benefit-assessment", purposes[4_321 % purposes.len()]);
    let open = r#"[[grant]]
id = "open"
service = "population"
consumer = "any-with-consent"
scopes = ["demo:population"]
operations = ["get-person"]
purposes = ["kyc"]
consent = { resource = "kyc-res" }
fields = ["name"]
valid_from = 2024-01-01T00:00:00Z
valid_to = 2030-01-01T00:00:00Z
"#;
    let loaded = PolicySet::from_sources_at(
        &sources(&[("s.toml", SERVICE), ("g.toml", &(text + &renewal + open))]),
        NOW,
    )
    .unwrap();
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.message.clone()).collect();
    assert_eq!(
        warnings,
        [format!(
            "grant `z-renewal` overlaps grant `a-04321` (consumer `{}`, operation `get-person`, purpose `{}`); `a-04321` is chosen where both apply",
            consumers[4_321],
            purposes[4_321 % purposes.len()]
        )]
    );
}
