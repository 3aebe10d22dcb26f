//! What the `tollbu policy …` subcommands run. Each returns a [`Report`]:
//! the text to print and whether the command succeeded; the binary only
//! prints and sets the exit status.

mod cases;

#[cfg(test)]
pub(crate) use cases::run_source as cases_run_source;

use std::fmt::Write as _;
use std::path::Path;

use crate::error::{Diagnostic, PolicyLoadError, Severity};
use crate::{LoadedPolicies, PolicySet, WhoCanConsumers};

/// Text for the terminal and a success flag for the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ok: bool,
    pub text: String,
}

/// Parses and validates every policy file: errors and warnings with
/// `file:line:col`, then a one-line summary.
pub fn check(dir: &Path) -> Report {
    check_at(dir, crate::unix_now())
}

/// [`check`] with an explicit "now" (expiry warnings depend on it).
pub fn check_at(dir: &Path, now: i64) -> Report {
    match PolicySet::load_dir_at(dir, now) {
        Ok(loaded) => {
            let mut text = diagnostics_text(&loaded.warnings);
            let set = &loaded.set;
            let _ = writeln!(
                text,
                "ok: {} service(s), {} grant(s), {} denial(s), {} warning(s); version {}",
                set.service_ids.len(),
                set.grants.len(),
                set.denials.len(),
                loaded.warnings.len(),
                set.version()
            );
            Report { ok: true, text }
        }
        Err(e) => refused(&e),
    }
}

/// Runs every `*.test.toml` case in `dir` against the policies in `dir`.
pub fn run_tests(dir: &Path) -> Report {
    let loaded = match PolicySet::load_dir(dir) {
        Ok(l) => l,
        Err(e) => return refused(&e),
    };
    cases::run_dir(&loaded.set, dir)
}

/// Explains one request described in a TOML file (format in
/// `docs/policy-language.md`, "Request files").
pub fn explain_file(dir: &Path, request_file: &Path) -> Report {
    let loaded = match PolicySet::load_dir(dir) {
        Ok(l) => l,
        Err(e) => return refused(&e),
    };
    cases::explain_file(&loaded.set, request_file)
}

/// Lists the grants that can release `field` (or any field) of `service`.
pub fn who_can(dir: &Path, service: &str, field: Option<&str>) -> Report {
    let LoadedPolicies { set, .. } = match PolicySet::load_dir(dir) {
        Ok(l) => l,
        Err(e) => return refused(&e),
    };
    let Some(svc) = set.service(service) else {
        return Report {
            ok: false,
            text: format!(
                "error: unknown service `{service}`\n  help: services: {}\n",
                crate::compile::list(set.service_ids())
            ),
        };
    };
    let unknown = field.filter(|f| {
        !svc.fields
            .iter()
            .any(|leaf| crate::filter::path_covers(f, leaf))
    });
    if let Some(f) = unknown {
        return Report {
            ok: false,
            text: format!(
                "error: unknown field `{f}` for service `{service}`\n  help: declared fields: {}\n",
                crate::compile::list(&svc.fields)
            ),
        };
    }
    let rows = set.who_can(service, field);
    let mut text = format!(
        "who can read {} of service `{service}`:\n",
        field.map_or_else(|| "any field".to_string(), |f| format!("`{f}`"))
    );
    if rows.is_empty() {
        text.push_str("  nobody\n");
    }
    for w in rows {
        let who = match &w.consumers {
            WhoCanConsumers::Listed(l) => l.join(", "),
            WhoCanConsumers::AnyWithConsent => "any consumer with consent".to_string(),
        };
        let _ = writeln!(text, "- grant `{}`: {who}", w.grant_id);
        if !w.suppliers.is_empty() {
            let _ = writeln!(text, "    suppliers: {}", w.suppliers.join(", "));
        }
        let _ = writeln!(
            text,
            "    purposes: {}; operations: {}",
            w.purposes.join(", "),
            w.operations.join(", ")
        );
        if let Some(l) = &w.legal_basis {
            let _ = writeln!(text, "    legal basis: {l}");
        }
        if let Some(c) = &w.consent_resource {
            let _ = writeln!(text, "    consent: `{c}`");
        }
        let _ = writeln!(text, "    fields: {}", w.fields.join(", "));
        let _ = writeln!(
            text,
            "    valid: {} to {}",
            crate::compile::rfc3339(w.valid_from),
            crate::compile::rfc3339(w.valid_to)
        );
        for note in w.notes() {
            let _ = writeln!(text, "    {note}");
        }
    }
    Report { ok: true, text }
}

/// The Markdown catalogue.
pub fn catalog(dir: &Path) -> Report {
    match PolicySet::load_dir(dir) {
        Ok(l) => Report {
            ok: true,
            text: l.set.catalog_markdown(),
        },
        Err(e) => refused(&e),
    }
}

fn refused(e: &PolicyLoadError) -> Report {
    let mut text = diagnostics_text(&e.errors);
    text.push_str(&diagnostics_text(&e.warnings));
    let _ = writeln!(
        text,
        "refused: {} error(s), {} warning(s)",
        e.errors.len(),
        e.warnings.len()
    );
    Report { ok: false, text }
}

fn diagnostics_text(diags: &[Diagnostic]) -> String {
    let mut text = String::new();
    for d in diags {
        let _ = writeln!(text, "{d}");
    }
    text
}

/// Reads every `*.toml` except `*.test.toml` (and hidden files) in `dir`,
/// sorted by name.
pub(crate) fn read_policy_sources(dir: &Path) -> Result<Vec<(String, String)>, PolicyLoadError> {
    let io_error = |file: &Path, e: std::io::Error| PolicyLoadError {
        errors: vec![Diagnostic {
            file: file.display().to_string(),
            line: 1,
            column: 1,
            severity: Severity::Error,
            message: format!("cannot read: {e}"),
            help: None,
        }],
        warnings: Vec::new(),
    };
    let entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".toml") && !name.ends_with(".test.toml") && !name.starts_with('.') {
            paths.push(entry.path());
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).map_err(|e| io_error(&p, e))?;
            let text = String::from_utf8(bytes).map_err(|e| {
                // Name where the first byte that is not UTF-8 is, as every other error does.
                let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
                let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
                let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
                let column = String::from_utf8_lossy(&valid[line_start..])
                    .chars()
                    .count()
                    + 1;
                PolicyLoadError {
                    errors: vec![Diagnostic {
                        file: p.display().to_string(),
                        line,
                        column,
                        severity: Severity::Error,
                        message: "the file is not UTF-8 text".into(),
                        help: Some("save it as UTF-8".into()),
                    }],
                    warnings: Vec::new(),
                }
            })?;
            Ok((p.display().to_string(), text))
        })
        .collect()
}
