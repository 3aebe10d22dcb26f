//! Path templates (`/persons/{pid}/income/{year}`) and matching a request
//! path against a service's operations.
//!
//! Matching fails closed: a parameter that decodes to something a registry
//! could read as a different path (`%2F`, `.`, `..`, empty) does not match,
//! so the policy never decides about one path while the upstream serves
//! another.

use std::borrow::Cow;

use serde::Serialize;

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) enum Segment {
    Literal(String),
    Param(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct PathTemplate {
    pub raw: String,
    pub segments: Vec<Segment>,
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TemplateError {
    NoLeadingSlash,
    EmptySegment,
    BadLiteral(String),
    BadParam(String),
    DuplicateParam(String),
}

impl PathTemplate {
    pub(crate) fn parse(raw: &str) -> Result<Self, TemplateError> {
        let rest = raw.strip_prefix('/').ok_or(TemplateError::NoLeadingSlash)?;
        let mut segments = Vec::new();
        if !rest.is_empty() {
            for seg in rest.split('/') {
                if seg.is_empty() {
                    return Err(TemplateError::EmptySegment);
                }
                if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    if !is_ident(name) {
                        return Err(TemplateError::BadParam(seg.to_string()));
                    }
                    if segments
                        .iter()
                        .any(|s| matches!(s, Segment::Param(p) if p == name))
                    {
                        return Err(TemplateError::DuplicateParam(name.to_string()));
                    }
                    segments.push(Segment::Param(name.to_string()));
                } else if seg.bytes().all(is_unreserved) && seg != "." && seg != ".." {
                    segments.push(Segment::Literal(seg.to_string()));
                } else {
                    return Err(TemplateError::BadLiteral(seg.to_string()));
                }
            }
        }
        Ok(PathTemplate {
            raw: raw.to_string(),
            segments,
        })
    }

    pub(crate) fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(p) => Some(p.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Shape used to detect two templates that match the same paths.
    pub(crate) fn shape(&self) -> Vec<Option<&str>> {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => Some(l.as_str()),
                Segment::Param(_) => None,
            })
            .collect()
    }

    /// Matches `path` and returns the decoded parameters, or `None`.
    /// Specificity: literal segments beat parameters, compared left to
    /// right (see [`PathTemplate::specificity`]).
    pub(crate) fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let rest = path.strip_prefix('/')?;
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (seg, part) in self.segments.iter().zip(parts) {
            match seg {
                Segment::Literal(l) => {
                    if l != part {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let value = decode_segment(part)?;
                    params.push((name.clone(), value));
                }
            }
        }
        Some(params)
    }

    /// Higher sorts first: a `true` for each literal segment, left to right.
    pub(crate) fn specificity(&self) -> Vec<bool> {
        self.segments
            .iter()
            .map(|s| matches!(s, Segment::Literal(_)))
            .collect()
    }
}

fn decode_segment(part: &str) -> Option<String> {
    if part.is_empty() {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .ok()?;
    let bad = decoded.is_empty()
        || decoded == "."
        || decoded == ".."
        || decoded.contains('/')
        || decoded.contains('\\')
        || decoded.chars().any(char::is_control);
    if bad {
        return None;
    }
    Some(match decoded {
        Cow::Borrowed(s) => s.to_string(),
        Cow::Owned(s) => s,
    })
}

/// Query parameters, decoded (`+` is a space), in order of appearance.
pub(crate) fn query_params(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(crate) fn is_ident(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The result of routing a request to an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationMatch {
    UnknownService,
    /// The service exists but no operation matches this method and path.
    UnknownOperation,
    /// The operation matches, but the query names a parameter it does not
    /// declare. Such a parameter was never part of the decision, yet a
    /// registry may act on it (`?ssn=…` serving another person), so it is
    /// refused rather than forwarded.
    UndeclaredQueryParameter {
        operation_id: String,
        parameter: String,
    },
    Matched(MatchedOperation),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchedOperation {
    pub operation_id: String,
    /// The template, e.g. `/persons/{pid}`: safe to log, unlike the path.
    pub path_template: String,
    /// Path parameters (percent-decoded), then every query parameter in
    /// order of appearance. Repeated names are kept; `decide` refuses a
    /// repeated subject.
    pub params: Vec<(String, String)>,
    /// The subject parameter's value, `None` when absent or given more than
    /// once.
    pub subject: Option<String>,
}

impl crate::PolicySet {
    /// Routes `method path?query` (path already normalised, after the
    /// service prefix) to an operation. Where several templates match, the
    /// one with a literal segment earliest wins (`/persons/search` beats
    /// `/persons/{pid}`).
    pub fn match_operation(
        &self,
        service: &str,
        method: &str,
        path: &str,
        query: Option<&str>,
    ) -> OperationMatch {
        let Some(svc) = self.service(service) else {
            return OperationMatch::UnknownService;
        };
        let mut best: Option<(&crate::model::Operation, Vec<(String, String)>)> = None;
        for op in svc.operations.iter().filter(|o| o.method == method) {
            let Some(params) = op.template.matches(path) else {
                continue;
            };
            let better = best
                .as_ref()
                .is_none_or(|(b, _)| op.template.specificity() > b.template.specificity());
            if better {
                best = Some((op, params));
            }
        }
        let Some((op, mut params)) = best else {
            return OperationMatch::UnknownOperation;
        };
        if let Some(q) = query {
            let path_params = params.len();
            params.extend(query_params(q));
            // On an operation about a person, the subject parameter is left
            // to the subject check, which names a second person in the query
            // more precisely. Elsewhere it is as undeclared as any other.
            let undeclared = params[path_params..].iter().find(|(name, _)| {
                let subject_checked =
                    op.has_subject && svc.subject.as_ref().is_some_and(|s| s.param == *name);
                !op.query.iter().any(|q| q == name) && !subject_checked
            });
            if let Some((name, _)) = undeclared {
                return OperationMatch::UndeclaredQueryParameter {
                    operation_id: op.id.clone(),
                    parameter: name.clone(),
                };
            }
        }
        let subject = svc.subject.as_ref().and_then(|s| {
            let mut values = params.iter().filter(|(k, _)| *k == s.param).map(|(_, v)| v);
            match (values.next(), values.next()) {
                (Some(v), None) => Some(v.clone()),
                _ => None,
            }
        });
        OperationMatch::Matched(MatchedOperation {
            operation_id: op.id.clone(),
            path_template: op.template.raw.clone(),
            params,
            subject,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn templates_parse_and_refuse_malformed_shapes() {
        let t = PathTemplate::parse("/persons/{pid}/income/{year}").unwrap();
        assert_eq!(t.params().collect::<Vec<_>>(), ["pid", "year"]);
        assert_eq!(
            PathTemplate::parse("persons"),
            Err(TemplateError::NoLeadingSlash)
        );
        assert_eq!(
            PathTemplate::parse("/a//b"),
            Err(TemplateError::EmptySegment)
        );
        assert_eq!(
            PathTemplate::parse("/a/{p}/{p}"),
            Err(TemplateError::DuplicateParam("p".into()))
        );
        assert_eq!(
            PathTemplate::parse("/a/{p q}"),
            Err(TemplateError::BadParam("{p q}".into()))
        );
        assert_eq!(
            PathTemplate::parse("/a/x{p}"),
            Err(TemplateError::BadLiteral("x{p}".into()))
        );
        assert!(PathTemplate::parse("/").unwrap().segments.is_empty());
    }

    #[test]
    fn matching_decodes_params_and_refuses_path_tricks() {
        let t = PathTemplate::parse("/persons/{pid}").unwrap();
        assert_eq!(
            t.matches("/persons/12%334"),
            Some(vec![("pid".into(), "1234".into())])
        );
        assert_eq!(t.matches("/persons/12345/"), None);
        assert_eq!(t.matches("/persons"), None);
        assert_eq!(t.matches("/persons/a%2Fb"), None);
        assert_eq!(t.matches("/persons/%2e%2e"), None);
        assert_eq!(t.matches("/persons/%ff"), None);
        assert_eq!(t.matches("/persons/%0a"), None);
        assert_eq!(t.matches("/people/1"), None);
    }

    #[test]
    fn query_params_are_decoded_in_order() {
        assert_eq!(
            query_params("pid=1&x=a+b&pid=2"),
            vec![
                ("pid".to_string(), "1".to_string()),
                ("x".to_string(), "a b".to_string()),
                ("pid".to_string(), "2".to_string())
            ]
        );
    }
}
