//! `[[denial]]` tables: who is refused regardless of any grant.

use crate::model::Denial;
use crate::syntax::{DenialDecl, S};

use super::grant::Rules;
use super::values::{check_id, orgnos, resolve_service};
use super::{Diags, Loc, Registry, Src};

pub(super) fn compile_denial(
    src: Src<'_>,
    decl: &S<DenialDecl>,
    default_service: Option<&str>,
    registry: &Registry,
    rules: &mut Rules,
    diags: &mut Diags,
) {
    let d = decl.get_ref();
    let loc = Loc::at(src, &d.id.span());
    let mut ok = check_id(src, &d.id, "denial", rules, diags);
    let Some(service) = resolve_service(
        src,
        &d.id,
        d.service.as_ref(),
        default_service,
        registry,
        diags,
    ) else {
        return;
    };
    let empty = Vec::new();
    let consumers = d.consumer.as_ref().map_or(Some(Vec::new()), |c| {
        orgnos(src, c.get_ref(), &c.span(), "consumer", diags)
    });
    let suppliers = d.supplier.as_ref().map_or(Some(Vec::new()), |c| {
        orgnos(src, c.get_ref(), &c.span(), "supplier", diags)
    });
    if d.consumer
        .as_ref()
        .map_or(&empty, |c| c.get_ref())
        .is_empty()
        && d.supplier
            .as_ref()
            .map_or(&empty, |c| c.get_ref())
            .is_empty()
    {
        diags.error(
            src,
            &d.id.span(),
            format!(
                "denial `{}` names no consumer and no supplier",
                d.id.get_ref()
            ),
            Some("add `consumer = [\"<orgno>\"]` or `supplier = [\"<orgno>\"]`".into()),
        );
        ok = false;
    }
    let operations = match &d.operations {
        None => Some(None),
        Some(ops) => {
            if ops.get_ref().is_empty() {
                diags.error(
                    src,
                    &ops.span(),
                    "`operations` is an empty list",
                    Some(
                        "list the operations denied, or omit `operations` to deny them all".into(),
                    ),
                );
                ok = false;
            }
            let mut out = Vec::new();
            for o in ops.get_ref() {
                if service.operations.iter().any(|x| x.id == *o.get_ref()) {
                    out.push(o.get_ref().clone());
                } else {
                    diags.unknown_operation(src, o, service);
                    ok = false;
                }
            }
            out.sort();
            out.dedup();
            Some(Some(out))
        }
    };
    let reason = d.reason.get_ref().trim();
    // The reason is sent to the refused caller and shown in the console: text, one line.
    if reason.chars().any(char::is_control) {
        diags.error(
            src,
            &d.reason.span(),
            "`reason` holds a control character (a line break, tab or escape)",
            None,
        );
        ok = false;
    }
    if reason.is_empty() {
        diags.error(
            src,
            &d.reason.span(),
            "`reason` is empty",
            Some("say why, for the caller and the audit log".into()),
        );
        ok = false;
    }
    let (true, Some(consumers), Some(suppliers), Some(operations)) =
        (ok, consumers, suppliers, operations)
    else {
        return;
    };
    rules.denials.push((
        Denial {
            id: d.id.get_ref().clone(),
            service: service.id.clone(),
            consumers,
            suppliers,
            operations,
            reason: reason.to_string(),
        },
        loc,
    ));
}
