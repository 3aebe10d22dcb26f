//! `[service]` tables: id, subject, declared fields, operations.

use crate::filter::{self, FieldFilter};
use crate::model::{Operation, Service, Subject, SubjectKind};
use crate::route::{self, PathTemplate, TemplateError};
use crate::syntax::{S, ServiceDecl};

use super::{Diags, Loc, Registry, Src, list};

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

pub(super) fn compile_service(
    src: Src<'_>,
    decl: &S<ServiceDecl>,
    registry: &mut Registry,
    diags: &mut Diags,
) {
    let decl = decl.get_ref();
    let id = decl.id.get_ref();
    if !is_lower_ident(id) {
        diags.error(
            src,
            &decl.id.span(),
            format!("malformed service id `{id}`"),
            Some("use lowercase letters, digits and `-`; the id is the first path segment at the gateway".into()),
        );
    }
    if let Some((_, first)) = registry.get(id) {
        diags.error(
            src,
            &decl.id.span(),
            format!("duplicate service id `{id}`"),
            Some(format!("first declared at {first}")),
        );
        return;
    }

    let fields = compile_fields(src, &decl.fields, diags);

    let subject = decl.subject.as_ref().and_then(|s| {
        let s = s.get_ref();
        let param = s.param.get_ref();
        if !route::is_ident(param) {
            diags.error(
                src,
                &s.param.span(),
                format!("malformed parameter name `{param}`"),
                None,
            );
        }
        match SubjectKind::parse(s.kind.get_ref()) {
            Some(kind) => Some(Subject {
                param: param.clone(),
                kind,
            }),
            None => {
                diags.error(
                    src,
                    &s.kind.span(),
                    format!("unknown subject kind `{}`", s.kind.get_ref()),
                    Some(format!("use one of {}", list(SubjectKind::NAMES))),
                );
                None
            }
        }
    });

    let mut operations: Vec<Operation> = Vec::new();
    for op in &decl.operation {
        if let Some(op) = compile_operation(src, op.get_ref(), subject.as_ref(), &operations, diags)
        {
            operations.push(op);
        }
    }
    operations.sort_by(|a, b| a.id.cmp(&b.id));

    let service = Service {
        id: id.clone(),
        title: diags.plain_text(src, decl.title.as_ref(), "title"),
        subject,
        fields,
        operations,
    };
    registry.insert(id.clone(), (service, Loc::at(src, &decl.id.span())));
}

fn compile_fields(src: Src<'_>, decl: &S<Vec<S<String>>>, diags: &mut Diags) -> Vec<String> {
    if decl.get_ref().is_empty() {
        diags.error(
            src,
            &decl.span(),
            "a service must declare at least one field",
            Some("list every JSON field path the registry returns, e.g. `name.given`".into()),
        );
    }
    let mut accepted: Vec<&S<String>> = Vec::new();
    for field in decl.get_ref() {
        let path = field.get_ref();
        let Some(segs) = filter::parse_path(path) else {
            diags.error(
                src,
                &field.span(),
                format!("malformed field path `{path}`"),
                Some("segments of letters, digits, `_` or `-`, joined by `.`; `[]` marks an array, e.g. `citizenships[].country`".into()),
            );
            continue;
        };
        let mut ok = true;
        for prev in &accepted {
            let prev_path = prev.get_ref();
            if prev_path == path {
                diags.error(
                    src,
                    &field.span(),
                    format!("duplicate field `{path}`"),
                    None,
                );
                ok = false;
                break;
            }
            let prev_segs = filter::parse_path(prev_path).unwrap_or_default();
            let shared = prev_segs
                .iter()
                .zip(&segs)
                .take_while(|(a, b)| a.0 == b.0)
                .count();
            let nested = shared == prev_segs.len().min(segs.len());
            let array_mismatch = prev_segs
                .iter()
                .zip(&segs)
                .take(shared)
                .enumerate()
                .any(|(i, (a, b))| a.1 != b.1 && i + 1 < prev_segs.len().min(segs.len()));
            if nested || array_mismatch {
                diags.error(
                    src,
                    &field.span(),
                    format!("field `{path}` conflicts with field `{prev_path}`"),
                    Some("a path is either a value or a parent of other paths, and a segment is either an array (`[]`) or not".into()),
                );
                ok = false;
                break;
            }
        }
        if ok {
            accepted.push(field);
        }
    }
    let mut fields: Vec<String> = accepted.iter().map(|f| f.get_ref().clone()).collect();
    fields.sort();
    // Belt and braces: the filter builder re-checks the whole set.
    if FieldFilter::from_paths(fields.iter().map(String::as_str)).is_err() {
        diags.error(src, &decl.span(), "field paths conflict", None);
    }
    fields
}

fn compile_operation(
    src: Src<'_>,
    decl: &crate::syntax::OperationDecl,
    subject: Option<&Subject>,
    earlier: &[Operation],
    diags: &mut Diags,
) -> Option<Operation> {
    let id = decl.id.get_ref();
    let mut ok = true;
    if !is_lower_ident(id) {
        diags.error(
            src,
            &decl.id.span(),
            format!("malformed operation id `{id}`"),
            None,
        );
        ok = false;
    }
    if earlier.iter().any(|o| o.id == *id) {
        diags.error(
            src,
            &decl.id.span(),
            format!("duplicate operation id `{id}`"),
            None,
        );
        ok = false;
    }
    let method = decl.method.get_ref();
    if !METHODS.contains(&method.as_str()) {
        diags.error(
            src,
            &decl.method.span(),
            format!("unsupported method `{method}`"),
            Some(format!("use one of {}", list(METHODS))),
        );
        ok = false;
    }
    let template = match PathTemplate::parse(decl.path.get_ref()) {
        Ok(t) => t,
        Err(e) => {
            let message = match e {
                TemplateError::NoLeadingSlash => "path template must start with `/`".to_string(),
                TemplateError::EmptySegment => "path template has an empty segment".to_string(),
                TemplateError::BadLiteral(s) => format!("malformed path segment `{s}`"),
                TemplateError::BadParam(s) => format!("malformed path parameter `{s}`"),
                TemplateError::DuplicateParam(s) => format!("path parameter `{s}` appears twice"),
            };
            diags.error(
                src,
                &decl.path.span(),
                message,
                Some(
                    "segments are literals (letters, digits, `-._~`) or `{name}` parameters".into(),
                ),
            );
            return None;
        }
    };
    let mut query = Vec::new();
    for q in &decl.query {
        let name = q.get_ref();
        if !route::is_ident(name) || template.params().any(|p| p == name) || query.contains(name) {
            diags.error(
                src,
                &q.span(),
                format!("malformed or repeated query parameter `{name}`"),
                None,
            );
            ok = false;
        } else {
            query.push(name.clone());
        }
    }
    if let Some(other) = earlier
        .iter()
        .find(|o| o.method == *method && o.template.shape() == template.shape())
    {
        diags.error(
            src,
            &decl.path.span(),
            format!(
                "operation `{id}` matches the same requests as operation `{}`",
                other.id
            ),
            Some("two operations may not share a method and path shape".into()),
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    let mut op = Operation {
        id: id.clone(),
        title: diags.plain_text(src, decl.title.as_ref(), "title"),
        method: method.clone(),
        template,
        query,
        has_subject: false,
    };
    op.has_subject = subject.is_some_and(|s| op.has_param(&s.param));
    Some(op)
}

pub(super) fn is_lower_ident(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}
