//! Policy test files (`*.test.toml`) and request files for `explain`.
//!
//! A case describes a request as the gateway sees it (method, path, query,
//! purpose, verified caller with consents) and the expected outcome. The
//! request goes through the same routing and decision code as production.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use toml::value::Datetime;

use super::Report;
use crate::compile::to_unix;
use crate::error::line_column;
use crate::{
    Caller, Consent, ConsentRight, Decision, DecisionRequest, DenyReason, OperationMatch, PolicySet,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    now: Option<Datetime>,
    #[serde(default)]
    case: Vec<Spanned<CaseDecl>>,
}

/// One request (and, in test files, its expected outcome).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseDecl {
    name: Option<String>,
    now: Option<Datetime>,
    service: String,
    #[serde(default = "default_method")]
    method: String,
    path: String,
    query: Option<String>,
    purpose: Option<String>,
    caller: CallerDecl,
    expect: Option<ExpectDecl>,
}

fn default_method() -> String {
    "GET".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallerDecl {
    consumer: String,
    supplier: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    consent: Vec<ConsentDecl>,
    /// An end-user-restricted token's person (`pid`).
    pid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentDecl {
    id: Option<String>,
    /// Defaults to the request's subject.
    from: Option<String>,
    /// Defaults to the caller's consumer.
    to: Option<String>,
    consented: Datetime,
    valid_to: Datetime,
    #[serde(default)]
    rights: Vec<RightDecl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RightDecl {
    #[serde(default = "default_actions")]
    actions: Vec<String>,
    resources: Vec<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

fn default_actions() -> Vec<String> {
    vec!["consent".to_string()]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectDecl {
    /// `allow`, `deny`, `unknown-service`, `unknown-operation` or
    /// `undeclared-query-parameter`.
    decision: String,
    reason: Option<String>,
    grant: Option<String>,
    fields: Option<Vec<String>>,
    filter: Option<FilterDecl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterDecl {
    input: String,
    output: String,
}

/// What actually happened to a case's request.
enum Outcome {
    UnknownService,
    UnknownOperation,
    UndeclaredQueryParameter(String),
    Decided(Decision),
}

impl Outcome {
    fn describe(&self) -> String {
        match self {
            Outcome::UnknownService => "unknown-service".to_string(),
            Outcome::UnknownOperation => "unknown-operation".to_string(),
            Outcome::UndeclaredQueryParameter(name) => {
                format!("undeclared-query-parameter (`{name}`)")
            }
            Outcome::Decided(Decision::Allow(a)) => format!("allow by grant `{}`", a.grant_id),
            Outcome::Decided(Decision::Deny(d)) => {
                format!("deny ({}): {}", d.reason.code(), d.message)
            }
        }
    }
}

pub(super) fn run_dir(set: &PolicySet, dir: &Path) -> Report {
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with(".test.toml"))
            })
            .collect(),
        Err(e) => {
            return Report {
                ok: false,
                text: format!("{}: error: cannot read: {e}\n", dir.display()),
            };
        }
    };
    files.sort();
    let (mut passed, mut failed) = (0usize, 0usize);
    let mut text = String::new();
    for file in &files {
        let name = file.display().to_string();
        let source = match std::fs::read_to_string(file) {
            Ok(s) => s,
            Err(e) => {
                failed += 1;
                let _ = writeln!(text, "{name}: error: cannot read: {e}");
                continue;
            }
        };
        let (p, f) = run_source(set, &name, &source, &mut text);
        passed += p;
        failed += f;
    }
    if files.is_empty() {
        let _ = writeln!(text, "no *.test.toml files in {}", dir.display());
    }
    let _ = writeln!(text, "{passed} passed, {failed} failed");
    Report {
        ok: failed == 0,
        text,
    }
}

/// Runs the cases of one test file; returns (passed, failed).
pub(crate) fn run_source(
    set: &PolicySet,
    name: &str,
    source: &str,
    out: &mut String,
) -> (usize, usize) {
    let file: CaseFile = match toml::from_str(source) {
        Ok(f) => f,
        Err(e) => {
            let (line, col) = line_column(source, e.span().map_or(0, |s| s.start));
            let _ = writeln!(
                out,
                "{name}:{line}:{col}: error: {}",
                e.message().trim_end()
            );
            return (0, 1);
        }
    };
    let (mut passed, mut failed) = (0, 0);
    for case in &file.case {
        let (line, col) = line_column(source, case.span().start);
        let c = case.get_ref();
        let label = c.name.as_deref().unwrap_or("(unnamed)");
        match run_case(set, c, file.now.as_ref()) {
            Ok(()) => {
                passed += 1;
                let _ = writeln!(out, "ok    {name}:{line}:{col}: {label}");
            }
            Err(why) => {
                failed += 1;
                let _ = writeln!(out, "FAIL  {name}:{line}:{col}: {label}\n{why}");
            }
        }
    }
    (passed, failed)
}

fn run_case(set: &PolicySet, c: &CaseDecl, file_now: Option<&Datetime>) -> Result<(), String> {
    if c.name.is_none() {
        return Err("    error: a test case needs a `name`".to_string());
    }
    let expect = c
        .expect
        .as_ref()
        .ok_or("    error: a test case needs an `[case.expect]` table")?;
    let expected_reason = match (&*expect.decision, &expect.reason) {
        ("deny", Some(code)) => Some(DenyReason::from_code(code).ok_or_else(|| {
            format!("    error: unknown reason code `{code}` in `expect.reason`")
        })?),
        ("deny", None) => {
            return Err(
                "    error: `expect.reason` is required when a denial is expected".to_string(),
            );
        }
        (
            "allow" | "unknown-service" | "unknown-operation" | "undeclared-query-parameter",
            None,
        ) => None,
        (_, Some(_)) => {
            return Err(
                "    error: `expect.reason` only goes with `decision = \"deny\"`".to_string(),
            );
        }
        (other, None) => {
            return Err(format!(
                "    error: unknown expected decision `{other}`; use `allow`, `deny`, `unknown-service`, `unknown-operation` or `undeclared-query-parameter`"
            ));
        }
    };
    let outcome = evaluate(set, c, file_now)?;
    let matches = match (&outcome, &*expect.decision) {
        (Outcome::UnknownService, "unknown-service")
        | (Outcome::UnknownOperation, "unknown-operation")
        | (Outcome::UndeclaredQueryParameter(_), "undeclared-query-parameter") => true,
        (Outcome::Decided(Decision::Deny(d)), "deny") => Some(d.reason) == expected_reason,
        (Outcome::Decided(Decision::Allow(a)), "allow") => {
            let grant_ok = expect.grant.as_ref().is_none_or(|g| *g == a.grant_id);
            let fields_ok = expect.fields.as_ref().is_none_or(|f| {
                let mut want = f.clone();
                want.sort();
                want.dedup();
                want == a.fields.released()
            });
            if grant_ok
                && fields_ok
                && let Some(filter) = &expect.filter
            {
                return check_filter(a.fields.as_ref(), filter);
            }
            grant_ok && fields_ok
        }
        _ => false,
    };
    if matches {
        return Ok(());
    }
    let mut want = expect.decision.clone();
    if let Some(r) = &expect.reason {
        let _ = write!(want, " ({r})");
    }
    if let Some(g) = &expect.grant {
        let _ = write!(want, " by grant `{g}`");
    }
    if let Some(f) = &expect.fields {
        let _ = write!(want, " releasing [{}]", f.join(", "));
    }
    let mut got = outcome.describe();
    if let Outcome::Decided(Decision::Allow(a)) = &outcome {
        let _ = write!(got, " releasing [{}]", a.fields.released().join(", "));
    }
    Err(format!("    expected: {want}\n    actual:   {got}"))
}

fn check_filter(filter: &crate::FieldFilter, f: &FilterDecl) -> Result<(), String> {
    let got = filter
        .filter_json(f.input.as_bytes())
        .map_err(|e| format!("    filter failed: {e}"))?;
    let got: serde_json::Value =
        serde_json::from_slice(&got).map_err(|e| format!("    filter output unreadable: {e}"))?;
    let want: serde_json::Value = serde_json::from_str(&f.output)
        .map_err(|e| format!("    error: `expect.filter.output` is not json: {e}"))?;
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "    expected filtered body: {want}\n    actual filtered body:   {got}"
        ))
    }
}

fn evaluate(set: &PolicySet, c: &CaseDecl, file_now: Option<&Datetime>) -> Result<Outcome, String> {
    let (caller, now, m) = match prepare(set, c, file_now)? {
        Prepared::Route(outcome) => return Ok(outcome),
        Prepared::Ready(caller, now, m) => (caller, now, m),
    };
    let req = DecisionRequest {
        caller: &caller,
        service: &c.service,
        operation: &m.operation_id,
        params: &m.params,
        subject: m.subject.as_deref(),
        purpose: c.purpose.as_deref(),
        now,
    };
    Ok(Outcome::Decided(set.decide(&req)))
}

enum Prepared {
    Route(Outcome),
    Ready(Caller, i64, crate::MatchedOperation),
}

fn prepare(set: &PolicySet, c: &CaseDecl, file_now: Option<&Datetime>) -> Result<Prepared, String> {
    let now = c
        .now
        .as_ref()
        .or(file_now)
        .ok_or("    error: no `now`: set it at the top of the file or in the case")?;
    let now = to_unix(now).ok_or("    error: `now` must be a date, time and UTC offset")?;
    // A path copied from a URL carries its query: the gateway sees the two apart, and so must
    // the routing here (the query's parameters would otherwise end up inside a path parameter).
    let (path, query) = match (c.path.split_once('?'), c.query.as_deref()) {
        (None, query) => (c.path.as_str(), query),
        (Some((path, query)), None) => (path, Some(query)),
        (Some(_), Some(_)) => {
            return Err(
                "    error: `path` holds a `?` and `query` is set too: put the whole query in `query`"
                    .to_owned(),
            );
        }
    };
    let m = match set.match_operation(&c.service, &c.method, path, query) {
        OperationMatch::UnknownService => return Ok(Prepared::Route(Outcome::UnknownService)),
        OperationMatch::UnknownOperation => return Ok(Prepared::Route(Outcome::UnknownOperation)),
        OperationMatch::UndeclaredQueryParameter { parameter, .. } => {
            return Ok(Prepared::Route(Outcome::UndeclaredQueryParameter(
                parameter,
            )));
        }
        OperationMatch::Matched(m) => m,
    };
    let mut consents = Vec::new();
    for (i, d) in c.caller.consent.iter().enumerate() {
        let time = |dt: &Datetime, key: &str| {
            to_unix(dt).ok_or_else(|| {
                format!("    error: consent `{key}` must be a date, time and UTC offset")
            })
        };
        consents.push(Consent {
            id: d.id.clone().unwrap_or_else(|| format!("consent-{}", i + 1)),
            from: d
                .from
                .clone()
                .or_else(|| m.subject.clone())
                .unwrap_or_default(),
            to: d.to.clone().unwrap_or_else(|| c.caller.consumer.clone()),
            consented: time(&d.consented, "consented")?,
            valid_to: time(&d.valid_to, "valid_to")?,
            rights: d
                .rights
                .iter()
                .map(|r| ConsentRight {
                    actions: r.actions.clone(),
                    resources: r.resources.clone(),
                    metadata: r.metadata.clone(),
                })
                .collect(),
        });
    }
    let caller = Caller {
        consumer: c.caller.consumer.clone(),
        supplier: c.caller.supplier.clone(),
        scopes: c.caller.scopes.clone(),
        consents,
        person: c.caller.pid.clone(),
    };
    Ok(Prepared::Ready(caller, now, m))
}

pub(super) fn explain_file(set: &PolicySet, path: &Path) -> Report {
    let name = path.display().to_string();
    let fail = |text: String| Report { ok: false, text };
    let source = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => return fail(format!("{name}: error: cannot read: {e}\n")),
    };
    let c: CaseDecl = match toml::from_str(&source) {
        Ok(c) => c,
        Err(e) => {
            let (line, col) = line_column(&source, e.span().map_or(0, |s| s.start));
            return fail(format!(
                "{name}:{line}:{col}: error: {}\n",
                e.message().trim_end()
            ));
        }
    };
    let (caller, now, m) = match prepare(set, &c, None) {
        Err(e) => return fail(format!("{name}: {}\n", e.trim())),
        Ok(Prepared::Route(o)) => {
            return Report {
                ok: true,
                text: format!("routing: {} (no policy decision is made)\n", o.describe()),
            };
        }
        Ok(Prepared::Ready(caller, now, m)) => (caller, now, m),
    };
    let req = DecisionRequest {
        caller: &caller,
        service: &c.service,
        operation: &m.operation_id,
        params: &m.params,
        subject: m.subject.as_deref(),
        purpose: c.purpose.as_deref(),
        now,
    };
    let explanation = set.explain(&req);
    Report {
        ok: true,
        text: format!(
            "routing: operation `{}` ({})\n{explanation}\n",
            m.operation_id, m.path_template
        ),
    }
}
