//! Runs the repository's policy test files (`policies/*.test.toml`) against
//! the repository's policies, as CI does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use tollbu_policy::{DenyReason, PolicySet, tooling};

fn policies_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    dir.canonicalize().unwrap_or(dir)
}

/// 2026-06-01T12:00:00Z, the `now` the test files use.
const NOW: i64 = 1_780_315_200;

#[test]
fn repository_policy_tests_pass() {
    let report = tooling::run_tests(&policies_dir());
    println!("{}", report.text);
    assert!(report.ok, "{}", report.text);
    assert!(report.text.contains(" passed, 0 failed"));
    assert!(!report.text.contains("FAIL"));
}

#[test]
fn repository_policies_check_clean_apart_from_the_suspension() {
    let report = tooling::check_at(&policies_dir(), NOW);
    assert!(report.ok, "{}", report.text);
    let warnings: Vec<&str> = report
        .text
        .lines()
        .filter(|l| l.contains(": warning: "))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", report.text);
    assert!(warnings[0].ends_with(
        "warning: denial `suspended-agency` overrides grant `suspended-agency-case-handling` for all its consumers (`310000078`)"
    ));
    let loaded = PolicySet::load_dir_at(&policies_dir(), NOW).unwrap();
    assert_eq!(
        loaded.set.service_ids().collect::<Vec<_>>(),
        ["income", "population"]
    );
}

#[test]
fn test_files_exercise_every_reason_reachable_in_the_demo_policies() {
    let mut seen = BTreeSet::new();
    for entry in std::fs::read_dir(policies_dir()).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".test.toml") {
            continue;
        }
        let file: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for case in file["case"].as_array().unwrap() {
            if let Some(reason) = case.get("expect").and_then(|e| e.get("reason")) {
                seen.insert(reason.as_str().unwrap().to_string());
            }
        }
    }
    // Unreachable there (see the test files' headers), covered by unit tests:
    // `no_grant` (each operation has a grant open to any consumer with
    // consent) and `subject_missing` (the subject is always a path segment).
    let unreachable = [DenyReason::NoGrant, DenyReason::SubjectMissing];
    for reason in DenyReason::ALL.iter().filter(|r| !unreachable.contains(r)) {
        assert!(
            seen.contains(reason.code()),
            "no test case expects `{}`",
            reason.code()
        );
    }
}

#[test]
fn the_language_reference_documents_every_reason_code() {
    let doc = std::fs::read_to_string(policies_dir().join("../docs/policy-language.md")).unwrap();
    for reason in DenyReason::ALL {
        assert!(
            doc.contains(&format!("| `{}` |", reason.code())),
            "docs lack `{}`",
            reason.code()
        );
    }
}
