//! Syntax trees → a validated, indexed [`PolicySet`], with diagnostics.
//!
//! Files are processed sorted by name so diagnostics come in a stable
//! order; the compiled set itself is independent of file names and order
//! (everything is sorted by id before indexing and hashing).

mod denial;
mod grant;
mod index;
mod lint;
mod service;
mod values;

use std::collections::HashMap;
use std::ops::Range;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use toml::value::{Datetime, Offset};

use crate::LoadedPolicies;
use crate::error::{Diagnostic, PolicyLoadError, Severity, line_column_in, line_starts};
use crate::model::Service;
use crate::syntax::{self, PolicyFile};

const DAY: i64 = 86_400;
/// Grants ending within this window draw a warning.
pub(crate) const EXPIRY_WARNING: i64 = 30 * DAY;

/// One source file, for turning spans into line:column.
#[derive(Clone, Copy)]
pub(crate) struct Src<'a> {
    pub name: &'a str,
    pub text: &'a str,
    /// [`line_starts`] of `text`.
    pub lines: &'a [usize],
}

/// Where something was declared, kept for later diagnostics.
#[derive(Debug, Clone)]
pub(crate) struct Loc {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl Loc {
    pub(crate) fn at(src: Src<'_>, span: &Range<usize>) -> Loc {
        let (line, column) = line_column_in(src.text, src.lines, span.start);
        Loc {
            file: src.name.to_string(),
            line,
            column,
        }
    }
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

#[derive(Default)]
pub(crate) struct Diags {
    pub list: Vec<Diagnostic>,
}

impl Diags {
    pub(crate) fn error(
        &mut self,
        src: Src<'_>,
        span: &Range<usize>,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        self.push_at(&Loc::at(src, span), Severity::Error, message.into(), help);
    }

    pub(crate) fn push_at(
        &mut self,
        loc: &Loc,
        severity: Severity,
        message: String,
        help: Option<String>,
    ) {
        self.list.push(Diagnostic {
            file: loc.file.clone(),
            line: loc.line,
            column: loc.column,
            severity,
            message,
            help,
        });
    }

    /// A one-line text shown to people (a title, an agreement): its value, with an error when it
    /// holds a control character (a line break, tab or escape would reach pages and answers).
    pub(crate) fn plain_text(
        &mut self,
        src: Src<'_>,
        field: Option<&syntax::S<String>>,
        name: &str,
    ) -> Option<String> {
        let field = field?;
        if field.get_ref().chars().any(char::is_control) {
            self.error(
                src,
                &field.span(),
                format!("`{name}` holds a control character (a line break, tab or escape)"),
                None,
            );
        }
        Some(field.get_ref().clone())
    }

    /// Reports `op` as an operation `service` does not have, listing those it has.
    pub(crate) fn unknown_operation(
        &mut self,
        src: Src<'_>,
        op: &syntax::S<String>,
        service: &Service,
    ) {
        self.error(
            src,
            &op.span(),
            format!(
                "unknown operation `{}` for service `{}`",
                op.get_ref(),
                service.id
            ),
            Some(format!(
                "operations of `{}`: {}",
                service.id,
                list(service.operations.iter().map(|x| &x.id))
            )),
        );
    }

    fn has_errors(&self) -> bool {
        self.list.iter().any(|d| d.severity == Severity::Error)
    }
}

/// Services declared so far, by id, with where each was declared.
pub(crate) type Registry = HashMap<String, (Service, Loc)>;

/// Compiles `sources` (file name, text) as of `now` (unix seconds; only
/// warnings about expiry depend on it).
pub(crate) fn compile(
    sources: &[(String, String)],
    now: i64,
) -> Result<LoadedPolicies, PolicyLoadError> {
    let mut order: Vec<&(String, String)> = sources.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));

    let mut diags = Diags::default();
    let lines: Vec<Vec<usize>> = order.iter().map(|(_, text)| line_starts(text)).collect();
    let mut parsed: Vec<(Src<'_>, PolicyFile)> = Vec::new();
    for ((name, text), lines) in order.into_iter().zip(&lines) {
        let src = Src { name, text, lines };
        match syntax::parse(text) {
            Ok(file) => parsed.push((src, file)),
            Err((message, span)) => {
                let help = parse_help(&message);
                diags.error(src, &span, message, help);
            }
        }
    }

    let mut registry = Registry::new();
    for (src, file) in &parsed {
        if let Some(decl) = &file.service {
            service::compile_service(*src, decl, &mut registry, &mut diags);
        }
    }

    let mut rules = grant::Rules::default();
    for (src, file) in &parsed {
        let default_service = file
            .service
            .as_ref()
            .map(|s| s.get_ref().id.get_ref().as_str());
        for decl in &file.grant {
            grant::compile_grant(
                *src,
                decl,
                default_service,
                &registry,
                &mut rules,
                &mut diags,
            );
        }
        for decl in &file.denial {
            denial::compile_denial(
                *src,
                decl,
                default_service,
                &registry,
                &mut rules,
                &mut diags,
            );
        }
    }

    if diags.has_errors() {
        let (errors, warnings) = diags
            .list
            .into_iter()
            .partition(|d| d.severity == Severity::Error);
        return Err(PolicyLoadError { errors, warnings });
    }

    let services: Vec<Service> = registry.into_values().map(|(s, _)| s).collect();
    lint::warnings(&rules, now, &mut diags);
    let set = index::build(services, rules);
    Ok(LoadedPolicies {
        set,
        warnings: diags.list,
    })
}

/// A help line for syntax errors that name a key.
fn parse_help(message: &str) -> Option<String> {
    (message.starts_with("unknown field") || message.starts_with("missing field"))
        .then(|| "see docs/policy-language.md for every key and its type".to_string())
}

/// Converts a TOML offset date-time to unix seconds; `None` for local
/// date-times (no offset), bare dates or bare times, which would make a
/// validity period depend on the server's time zone.
pub(crate) fn to_unix(dt: &Datetime) -> Option<i64> {
    let (date, clock, offset) = (dt.date?, dt.time?, dt.offset?);
    let month = time::Month::try_from(date.month).ok()?;
    let day = time::Date::from_calendar_date(i32::from(date.year), month, date.day).ok()?;
    let t =
        time::Time::from_hms_nano(clock.hour, clock.minute, clock.second, clock.nanosecond).ok()?;
    let minutes = match offset {
        Offset::Z => 0,
        Offset::Custom { minutes } => i32::from(minutes),
    };
    let offset = time::UtcOffset::from_whole_seconds(minutes * 60).ok()?;
    Some(
        time::PrimitiveDateTime::new(day, t)
            .assume_offset(offset)
            .unix_timestamp(),
    )
}

/// Unix seconds as RFC 3339 UTC, for messages.
pub(crate) fn rfc3339(ts: i64) -> String {
    OffsetDateTime::from_unix_timestamp(ts)
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_else(|| ts.to_string())
}

/// `a`, `b`, `c` — for help lines listing what is known.
pub(crate) fn list<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> String {
    let v: Vec<String> = items
        .into_iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect();
    if v.is_empty() {
        "(none)".to_string()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn only_offset_datetimes_convert() {
        let dt: Datetime = "2024-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(to_unix(&dt), Some(1_704_067_200));
        let dt: Datetime = "2024-01-01T02:00:00+02:00".parse().unwrap();
        assert_eq!(to_unix(&dt), Some(1_704_067_200));
        let local: Datetime = "2024-01-01T00:00:00".parse().unwrap();
        assert_eq!(to_unix(&local), None);
        let date: Datetime = "2024-01-01".parse().unwrap();
        assert_eq!(to_unix(&date), None);
        assert_eq!(rfc3339(1_704_067_200), "2024-01-01T00:00:00Z");
    }
}
