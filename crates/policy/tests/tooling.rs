//! The `tollbu policy …` subcommands over real directories.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use tollbu_policy::{PolicySet, tooling};

fn repo_policies() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

fn copy_policies(to: &Path) {
    for entry in std::fs::read_dir(repo_policies()).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn explain_file_shows_every_grant_and_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("req.toml");
    std::fs::write(
        &req,
        r#"now = 2026-06-01T12:00:00Z
service = "income"
path = "/persons/01819010001/income/2022"
purpose = "loan-application"
[caller]
consumer = "310000027"
scopes = ["demo:income"]
consent = [{ consented = 2026-05-01T00:00:00Z, valid_to = 2026-08-01T00:00:00Z, rights = [{ resources = ["demo-income-data"], metadata = { inntektsaar = "2021" } }] }]
"#,
    )
    .unwrap();
    let r = tooling::explain_file(&repo_policies(), &req);
    assert!(r.ok, "{}", r.text);
    assert!(
        r.text
            .starts_with("routing: operation `get-income` (/persons/{pid}/income/{year})\n"),
        "{}",
        r.text
    );
    assert!(
        r.text
            .contains("grant `bank-loan-income-with-consent` [fails]: consent_not_covering: "),
        "{}",
        r.text
    );
    assert!(
        r.text
            .contains("grant `tax-assessment` [n/a]: does not name consumer `310000027`"),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("decision: deny (consent_not_covering)"),
        "{}",
        r.text
    );
    assert!(!r.text.contains("01819010001"), "{}", r.text);
}

#[test]
fn a_path_copied_with_its_query_is_routed_as_the_gateway_routes_it() {
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("req.toml");
    let case = |extra: &str| {
        format!(
            r#"now = 2026-06-01T12:00:00Z
service = "population"
path = "/persons/01819010001?ssn=15898510015"
{extra}purpose = "benefit-assessment"
[caller]
consumer = "310000019"
scopes = ["demo:population"]
"#
        )
    };
    std::fs::write(&req, case("")).unwrap();
    let r = tooling::explain_file(&repo_policies(), &req);
    assert!(r.ok, "{}", r.text);
    assert_eq!(
        r.text,
        "routing: undeclared-query-parameter (`ssn`) (no policy decision is made)\n"
    );
    std::fs::write(&req, case("query = \"x=1\"\n")).unwrap();
    let r = tooling::explain_file(&repo_policies(), &req);
    assert!(!r.ok, "{}", r.text);
    assert!(
        r.text.contains("put the whole query in `query`"),
        "{}",
        r.text
    );
}

#[test]
fn check_refuses_a_broken_directory_with_locations() {
    let dir = tempfile::tempdir().unwrap();
    copy_policies(dir.path());
    let path = dir.path().join("income.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"310000035\"", "\"310000036\"");
    std::fs::write(&path, text).unwrap();
    let r = tooling::check(dir.path());
    assert!(!r.ok);
    let want = format!(
        "{}:26:13: error: malformed organisation number `310000036`",
        path.display()
    );
    assert!(r.text.contains(&want), "{}", r.text);
    assert!(
        r.text.ends_with("refused: 1 error(s), 0 warning(s)\n"),
        "{}",
        r.text
    );
    assert!(PolicySet::load_dir(dir.path()).is_err());
    // Test files are not policies: a broken one does not break loading.
    std::fs::write(dir.path().join("x.test.toml"), "not toml [").unwrap();
    std::fs::write(
        &path,
        std::fs::read_to_string(repo_policies().join("income.toml")).unwrap(),
    )
    .unwrap();
    assert!(PolicySet::load_dir(dir.path()).is_ok());
    let t = tooling::run_tests(dir.path());
    assert!(!t.ok);
    assert!(t.text.contains("x.test.toml:1:5: error: "), "{}", t.text);
}

#[test]
fn who_can_and_catalog_report_from_the_repository_policies() {
    let r = tooling::who_can(&repo_policies(), "population", Some("marital_status"));
    assert!(r.ok);
    assert!(
        r.text
            .contains("- grant `welfare-benefit-assessment`: 310000019"),
        "{}",
        r.text
    );
    assert!(!r.text.contains("bank-kyc"), "{}", r.text);
    let r = tooling::who_can(&repo_policies(), "population", Some("shoe_size"));
    assert!(!r.ok);
    assert!(
        r.text
            .starts_with("error: unknown field `shoe_size` for service `population`")
    );
    let r = tooling::who_can(&repo_policies(), "vehicles", None);
    assert!(!r.ok);
    let r = tooling::catalog(&repo_policies());
    assert!(r.ok);
    assert!(r.text.contains("### Grant `bank-loan-income-with-consent`"));
    assert!(
        r.text
            .contains("metadata `inntektsaar` covers the request's `year`")
    );
}

/// The reviewer's case: a denial of the welfare agency's vendor, and a second
/// agreement for the agency that the gateway never uses where the first applies.
#[test]
fn who_can_says_what_denials_and_earlier_grants_take_away() {
    let dir = tempfile::tempdir().unwrap();
    copy_policies(dir.path());
    std::fs::write(
        dir.path().join("vendor.toml"),
        r#"[[denial]]
id = "vendor-suspended"
service = "population"
supplier = ["310000043"]
reason = "Vendor suspended pending audit"

[[grant]]
id = "welfare-benefit-assessment-extended"
service = "population"
consumer = ["310000019"]
scopes = ["demo:population"]
operations = ["get-person"]
purposes = ["benefit-assessment"]
legal_basis = "Folketrygdloven § 21-4"
fields = ["marital_status", "citizenships"]
valid_from = 2025-01-01T00:00:00Z
valid_to = 2030-12-31T23:59:59Z
"#,
    )
    .unwrap();
    let r = tooling::who_can(dir.path(), "population", Some("marital_status"));
    assert!(r.ok, "{}", r.text);
    assert!(
        r.text.contains(
            "    overridden by denial `vendor-suspended` for requests through supplier 310000043\n"
        ),
        "{}",
        r.text
    );
    assert!(
        r.text
            .contains("- grant `welfare-benefit-assessment-extended`: 310000019\n"),
        "{}",
        r.text
    );
    assert!(
        r.text.contains(
            "    shadowed by grant `welfare-benefit-assessment` for consumer 310000019, operation get-person, purpose benefit-assessment, 2025-01-01T00:00:00Z to 2030-12-31T23:59:59Z: where both apply the gateway uses `welfare-benefit-assessment` and releases only its fields\n"
        ),
        "{}",
        r.text
    );

    let r = tooling::who_can(dir.path(), "population", Some("name"));
    assert!(
        r.text
            .contains("- grant `suspended-agency-case-handling`: 310000078\n"),
        "{}",
        r.text
    );
    assert!(
        r.text.contains(
            "    overridden for all its consumers by denial(s) `suspended-agency`: it releases nothing while they stand\n    overridden by denial `suspended-agency` for all its consumers (310000078)\n"
        ),
        "{}",
        r.text
    );
    assert!(!r.text.contains("for some consumers"), "{}", r.text);

    let check = tooling::check(dir.path());
    assert!(
        check.text.contains(
            "warning: denial `vendor-suspended` overrides grant `welfare-benefit-assessment` for requests through supplier `310000043`"
        ),
        "{}",
        check.text
    );
}

/// A policy file that is not UTF-8 is named at the first byte that is not, like every other error.
#[test]
fn a_file_that_is_not_utf8_is_named_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.toml"),
        b"[[service]]\nid = \"population\"\ntitle = \"Folkeregister \xff\"\n",
    )
    .unwrap();
    let Err(e) = PolicySet::load_dir(dir.path()) else {
        panic!("a file that is not UTF-8 loaded");
    };
    let shown = e.errors[0].to_string();
    assert!(
        shown.contains("broken.toml:3:24: error: the file is not UTF-8 text"),
        "{shown}"
    );
}
