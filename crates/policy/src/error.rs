//! Every error this crate returns, and the diagnostics policy authors read.

use std::fmt;

/// How bad a diagnostic is: errors refuse the whole policy set, warnings are
/// reported but the set still loads (so a reload never fails on a warning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One finding about a policy file, pointing at the exact line and column
/// (1-based, columns in characters) so an editor can jump to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub severity: Severity,
    pub message: String,
    pub help: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.severity, self.message
        )?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// The policy set was refused. `errors` is never empty; `warnings` are the
/// findings that would not on their own have refused it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", render(&self.errors))]
pub struct PolicyLoadError {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

fn render(diagnostics: &[Diagnostic]) -> String {
    let mut out = format!(
        "policy set refused with {} error{}",
        diagnostics.len(),
        if diagnostics.len() == 1 { "" } else { "s" }
    );
    for d in diagnostics {
        out.push('\n');
        out.push_str(&d.to_string());
    }
    out
}

/// A response body could not be minimised. The proxy must then fail closed
/// (never forward the unfiltered body). Messages never quote the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FilterError {
    #[error("response body is not valid json (line {line}, column {column})")]
    InvalidJson { line: usize, column: usize },
    #[error("response body is a json {kind}, not an object or an array of objects")]
    NotAnObject { kind: &'static str },
    #[error("response body names the released member `{name}` twice in one object")]
    DuplicateMember { name: String },
}

/// Converts a byte offset in `text` into a 1-based line and a 1-based
/// column counted in characters.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    line_column_in(text, &line_starts(text), offset)
}

/// The byte offset at which each line of `text` starts, for
/// [`line_column_in`]: a file's thousands of diagnostics and locations then
/// cost a binary search each, not a scan from the start of the file.
pub(crate) fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// [`line_column`] with the file's [`line_starts`].
pub(crate) fn line_column_in(text: &str, starts: &[usize], offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    // Inside a character: as if at the end of the text (as before the index).
    if !text.is_char_boundary(offset) {
        offset = text.len();
    }
    let line = starts.partition_point(|&s| s <= offset).max(1);
    let line_start = starts.get(line - 1).copied().unwrap_or(0);
    let column = text
        .get(line_start..offset)
        .map_or(0, |s| s.chars().count())
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let text = "a = 1\nbø = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // `=` on line 2 follows "bø " (4 bytes, 3 characters).
        assert_eq!(line_column(text, 10), (2, 4));
        assert_eq!(line_column(text, 10_000), (3, 1));
        // Inside `ø`: as if at the end.
        assert_eq!(line_column(text, 8), (3, 1));
        assert_eq!(line_column("", 0), (1, 1));
    }

    #[test]
    fn diagnostic_display_has_location_and_help_line() {
        let d = Diagnostic {
            file: "p.toml".into(),
            line: 3,
            column: 7,
            severity: Severity::Error,
            message: "unknown operation `x`".into(),
            help: Some("known operations: `get-person`".into()),
        };
        assert_eq!(
            d.to_string(),
            "p.toml:3:7: error: unknown operation `x`\n  help: known operations: `get-person`"
        );
    }
}
