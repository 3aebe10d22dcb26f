//! The console's views. Each one records the read, gathers its data (file reads on a blocking
//! thread), and renders it as HTML or, under `/console/api/`, as JSON.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;

use http::{Response, StatusCode};
use serde_json::json;
use time::OffsetDateTime;
use tollbu_audit::record::{StoredRecord, parse_time};
use tollbu_audit::tooling::browse::{self, Filter, Page};
use tollbu_audit::{AuditError, Decision, NoteVerifier, open_checkpoint};
use tollbu_policy::WhoCanConsumers;

use super::chart::{Series, stacked_bars};
use super::html::{Nav, decision_tag, esc, input, notice, or_dash, page, select, url};
use super::{Body, Ctx, html_response, json_response, redirect};
use crate::operator_problem;

/// Records per page unless `limit` says otherwise.
const PAGE_SIZE: usize = 50;
/// Records a filtered scan reads before it returns a "continue" cursor.
const SCAN_BUDGET: u64 = 2_000_000;

type Form = HashMap<String, String>;

fn field<'a>(form: &'a Form, name: &str) -> Option<&'a str> {
    form.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn is_pseudonym(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A Norwegian national identity (or D-) number: 11 digits, spaces allowed.
fn national_id(s: &str) -> Option<String> {
    let digits: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (digits.len() == 11 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// `2026-01-02T03:04` (a `datetime-local` field, read as UTC) or RFC 3339.
fn time_input(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    let full = match s.len() {
        16 => format!("{s}:00Z"),
        19 => format!("{s}Z"),
        _ => s.to_owned(),
    };
    parse_time(&full).ok()
}

fn short(pseudonym: &str) -> String {
    format!("{}…", pseudonym.get(..12).unwrap_or(pseudonym))
}

/// Why a view could not read the log.
enum ReadFailure {
    Log(AuditError),
    Task(tokio::task::JoinError),
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AuditError> + Send + 'static,
) -> Result<T, ReadFailure> {
    match tokio::task::spawn_blocking(f).await {
        Ok(read) => read.map_err(ReadFailure::Log),
        Err(failed) => Err(ReadFailure::Task(failed)),
    }
}

/// A read that failed: a damaged index is told as it is (what to run to repair it is the
/// officer's next step); anything else is logged, and the officer told where to find it.
fn read_failure(api: bool, read: ReadFailure) -> Response<Body> {
    let status = StatusCode::INTERNAL_SERVER_ERROR;
    match read {
        ReadFailure::Log(damaged @ AuditError::IndexDamaged { .. }) => {
            tracing::error!(error = %damaged, "console: the audit log index is damaged");
            failure(api, status, "audit_index_damaged", &damaged.to_string())
        }
        ReadFailure::Log(error) => {
            tracing::error!(%error, "console: the audit log could not be read");
            failure(api, status, "audit_unreadable", UNREADABLE)
        }
        ReadFailure::Task(error) => {
            tracing::error!(%error, "console: reading the audit log failed");
            failure(api, status, "audit_unreadable", UNREADABLE)
        }
    }
}

const UNREADABLE: &str = "the audit log could not be read; the gateway's log names the cause";

/// An error answer: problem+json with `code` under `/console/api/`, an error page otherwise.
fn failure(api: bool, status: StatusCode, code: &'static str, message: &str) -> Response<Body> {
    if api {
        operator_problem::response(status, code, message)
    } else {
        html_response(
            status,
            page(
                "Error",
                Nav::None,
                None,
                &format!(
                    "{}<p><a href=\"/console/records\">Back</a></p>",
                    notice("fail", &esc(message))
                ),
            ),
        )
    }
}

// ---------------------------------------------------------------- login

pub fn login(error: Option<&str>) -> String {
    let mut main = String::from("<div class=\"login\">");
    if let Some(e) = error {
        main.push_str(&notice("fail", &esc(e)));
    }
    main.push_str(
        "<form class=\"box\" method=\"post\" action=\"/console/login\">\
         <label>User<input name=\"user\" autocomplete=\"username\" required autofocus></label>\
         <label>Password<input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Log in</button></form></div>",
    );
    page("Log in", Nav::None, None, &main)
}

// ---------------------------------------------------------------- records

/// The filter as it travels in query strings (the subject only as its pseudonym).
#[derive(Default)]
struct Params {
    consumer: Option<String>,
    service: Option<String>,
    decision: Option<String>,
    reason: Option<String>,
    from: Option<String>,
    to: Option<String>,
    subject: Option<String>,
}

impl Params {
    fn read(form: &Form) -> Params {
        let get = |n: &str| field(form, n).map(str::to_owned);
        Params {
            consumer: get("consumer"),
            service: get("service"),
            decision: get("decision"),
            reason: get("reason"),
            from: get("from"),
            to: get("to"),
            subject: get("subject"),
        }
    }

    fn query(&self) -> String {
        let mut q = String::new();
        for (name, value) in [
            ("consumer", &self.consumer),
            ("service", &self.service),
            ("decision", &self.decision),
            ("reason", &self.reason),
            ("from", &self.from),
            ("to", &self.to),
            // Only pseudonyms travel in URLs: a clear identity number given by mistake is refused
            // by `filter`, and never copied into a link.
            ("subject", &self.subject.clone().filter(|s| is_pseudonym(s))),
        ] {
            if let Some(v) = value {
                let _ = write!(
                    q,
                    "{}{name}={}",
                    if q.is_empty() { "" } else { "&" },
                    url(v)
                );
            }
        }
        q
    }

    fn filter(&self) -> Result<Filter, String> {
        let time = |v: &Option<String>, what: &str| match v {
            None => Ok(None),
            Some(t) => time_input(t)
                .map(Some)
                .ok_or_else(|| format!("`{what}` is not a time (use 2026-01-02T03:04, UTC)")),
        };
        // A value the filter cannot use is refused: dropping it would answer a wider question
        // than the one asked, with nothing to show it.
        let decision = match self.decision.as_deref() {
            None => None,
            Some(d @ ("allow" | "deny" | "error")) => d.parse::<Decision>().ok(),
            Some(_) => return Err("`decision` must be allow, deny or error".into()),
        };
        if self.subject.as_deref().is_some_and(|s| !is_pseudonym(s)) {
            return Err(
                "`subject` must be a pseudonym (64 hex characters); enter an identity number in the form, which hashes it"
                    .into(),
            );
        }
        let (from, to) = (time(&self.from, "from")?, time(&self.to, "to")?);
        if let (Some(from), Some(to)) = (from, to)
            && from >= to
        {
            return Err("`from` must be before `to`".into());
        }
        Ok(Filter {
            subject: self.subject.clone(),
            consumer: self.consumer.clone(),
            service: self.service.clone(),
            decision,
            reason: self.reason.clone(),
            from,
            to,
        })
    }
}

/// The filter form posts here so a national id never appears in a URL: it is hashed with the
/// log's pseudonym key and the browser is sent to the pseudonymous query.
pub fn records_post(ctx: &Ctx, form: &Form) -> Response<Body> {
    let mut params = Params::read(form);
    if let Some(id) = field(form, "subject_id") {
        match national_id(id) {
            Some(id) => params.subject = Some(ctx.state.audit.pseudonymise(&id)),
            None => {
                return failure(
                    false,
                    StatusCode::BAD_REQUEST,
                    "bad_subject",
                    "a national identity number has 11 digits",
                );
            }
        }
    }
    redirect(&format!("/console/records?{}", params.query()), None)
}

pub async fn records(ctx: &Ctx, query: &Form, api: bool) -> Response<Body> {
    let params = Params::read(query);
    let filter = match params.filter() {
        Ok(f) => f,
        Err(e) => return failure(api, StatusCode::BAD_REQUEST, "bad_filter", &e),
    };
    let before = match field(query, "before").map(str::parse::<u64>) {
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err(_)) => {
            return failure(
                api,
                StatusCode::BAD_REQUEST,
                "bad_filter",
                "`before` must be a record number",
            );
        }
    };
    let limit = match field(query, "limit").map(str::parse::<usize>) {
        None => PAGE_SIZE,
        Some(Ok(l)) => l.clamp(1, 1000),
        Some(Err(_)) => {
            return failure(
                api,
                StatusCode::BAD_REQUEST,
                "bad_filter",
                "`limit` must be a number",
            );
        }
    };
    if let Err(r) = ctx
        .record_read("query", "/console/records", filter.subject.clone())
        .await
    {
        return r;
    }
    let dir = ctx.state.audit.dir().to_path_buf();
    let f = filter.clone();
    let found = blocking(move || browse::page(&dir, &f, before, limit, SCAN_BUDGET)).await;
    let found = match found {
        Ok(p) => p,
        Err(e) => return read_failure(api, e),
    };
    if api {
        return json_response(
            StatusCode::OK,
            &json!({
                "records": found.records,
                "next_before": found.next_before,
                "scanned": found.scanned,
                "partial": found.partial,
                "pruned": found.pruned,
                "unreadable": found.unreadable,
            }),
        );
    }
    html_response(StatusCode::OK, records_html(ctx, &params, &found, before))
}

fn records_html(ctx: &Ctx, params: &Params, found: &Page, before: Option<u64>) -> String {
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    let mut main = String::new();
    let _ = write!(
        main,
        "<form class=\"filters\" method=\"post\" action=\"/console/records\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">{}{}{}{}{}{}{}",
        esc(&ctx.session.csrf),
        input(
            "Consumer",
            "consumer",
            "text",
            &v(&params.consumer),
            " placeholder=\"0192:310000019\""
        ),
        input("Service", "service", "text", &v(&params.service), ""),
        select(
            "Decision",
            "decision",
            &[
                ("", "any"),
                ("allow", "allow"),
                ("deny", "deny"),
                ("error", "error")
            ],
            params.decision.as_deref().unwrap_or(""),
        ),
        input("Reason", "reason", "text", &v(&params.reason), ""),
        input("From (UTC)", "from", "datetime-local", &v(&params.from), ""),
        input("To (UTC)", "to", "datetime-local", &v(&params.to), ""),
        input(
            "Subject (national identity number)",
            "subject_id",
            "text",
            "",
            " inputmode=\"numeric\" autocomplete=\"off\" placeholder=\"11 digits\""
        ),
    );
    if let Some(s) = &params.subject {
        let _ = write!(
            main,
            "<input type=\"hidden\" name=\"subject\" value=\"{}\">",
            esc(s)
        );
    }
    main.push_str(
        "<button type=\"submit\">Filter</button> <a href=\"/console/records\">Reset</a></form>",
    );
    if let Some(s) = &params.subject {
        main.push_str(&notice(
            "info",
            &format!(
                "Subject filter: pseudonym <code>{}</code> (the number you typed was hashed on the server and not kept). <a href=\"/console/citizen?subject={}\">Citizen view</a>",
                esc(s),
                url(s)
            ),
        ));
    }
    if found.partial {
        main.push_str(&notice(
            "info",
            "The scan stopped after reading many records; follow “Older” to continue.",
        ));
    }
    if found.unreadable > 0 {
        main.push_str(&notice("fail", &unreadable_notice(found.unreadable)));
    }
    let _ = write!(
        main,
        "<p class=\"summary\">{} records shown{}.</p>",
        found.records.len(),
        if found.pruned > 0 {
            format!("; {} older matches were removed by retention", found.pruned)
        } else {
            String::new()
        }
    );
    main.push_str(&records_table(&found.records));
    let q = params.query();
    main.push_str("<nav class=\"pager\">");
    if before.is_some() {
        let _ = write!(
            main,
            "<a href=\"/console/records?{}\">« Newest</a>",
            esc(&q)
        );
    }
    if let Some(next) = found.next_before {
        let sep = if q.is_empty() { "" } else { "&" };
        let _ = write!(
            main,
            "<a rel=\"next\" href=\"/console/records?{}{sep}before={next}\">Older »</a>",
            esc(&q)
        );
    }
    main.push_str("</nav>");
    page("Recent accesses", Nav::Records, Some(&ctx.viewer()), &main)
}

fn records_table(records: &[StoredRecord]) -> String {
    let mut out = String::from(
        "<table class=\"records\"><thead><tr><th class=\"num\">#</th><th>Time (UTC)</th><th>Decision</th>\
         <th>Consumer</th><th>Service</th><th>Operation</th><th>Purpose</th><th>Legal basis</th>\
         <th>Reason</th><th>Subject</th></tr></thead><tbody>",
    );
    for r in records {
        let rec = &r.record;
        let _ = write!(
            out,
            "<tr><td class=\"num\"><a href=\"/console/records/{seq}\">{seq}</a></td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
            esc(&rec.time),
            decision_tag(rec.decision.as_str()),
            or_dash(rec.consumer.as_deref()),
            esc(&rec.service),
            esc(&rec.operation),
            or_dash(rec.purpose.as_deref()),
            or_dash(rec.legal_basis.as_deref()),
            or_dash(rec.reason.as_deref()),
            or_dash(rec.subject.as_deref().map(short).as_deref()),
            seq = r.seq,
        );
    }
    out.push_str("</tbody></table>");
    out
}

// ---------------------------------------------------------------- one record

pub async fn record(ctx: &Ctx, seq: u64, api: bool) -> Response<Body> {
    if let Err(r) = ctx
        .record_read("view-record", "/console/records/{seq}", None)
        .await
    {
        return r;
    }
    let dir = ctx.state.audit.dir().to_path_buf();
    let found = blocking(move || browse::record_at(&dir, seq)).await;
    let (stored, bytes) = match found {
        Ok(Some(found)) => found,
        Ok(None) => {
            return failure(
                api,
                StatusCode::NOT_FOUND,
                "record_not_found",
                &format!(
                    "record {seq} is not in the log (beyond its end, removed by retention, or altered)"
                ),
            );
        }
        Err(e) => return read_failure(api, e),
    };
    let leaf = tollbu_audit::hash::leaf_hash(&bytes);
    let note = ctx.state.audit.latest_checkpoint();
    let checkpoint = note.as_deref().and_then(|n| {
        let verifier = NoteVerifier::parse(ctx.state.audit.verifier_key().trim()).ok()?;
        open_checkpoint(n, &verifier).ok()
    });
    let proof = checkpoint
        .as_ref()
        .filter(|cp| seq < cp.size)
        .map(|cp| ctx.state.audit.inclusion_proof(seq, cp.size));
    let verified = match (&proof, &checkpoint) {
        (Some(Ok(p)), Some(cp)) => Some(
            p.leaf_hash == leaf
                && tollbu_audit::tree::verify_inclusion(&leaf, seq, cp.size, &p.path, &cp.root),
        ),
        _ => None,
    };
    if api {
        return json_response(
            StatusCode::OK,
            &json!({
                "record": stored,
                "stored": String::from_utf8_lossy(&bytes),
                "leaf_hash": hex::encode(leaf),
                "checkpoint": note,
                "inclusion_proof": proof.as_ref().and_then(|p| p.as_ref().ok()),
                "proof_verifies": verified,
            }),
        );
    }
    let r = &stored.record;
    let mut main = String::new();
    main.push_str("<table class=\"fields\"><tbody>");
    let rows: [(&str, String); 22] = [
        ("Sequence number", stored.seq.to_string()),
        ("Time (UTC)", r.time.clone()),
        ("Request id", r.request_id.clone()),
        ("Trace id", r.trace_id.clone().unwrap_or_default()),
        ("Consumer", r.consumer.clone().unwrap_or_default()),
        ("Supplier", r.supplier.clone().unwrap_or_default()),
        ("Client id", r.client_id.clone().unwrap_or_default()),
        ("Service", r.service.clone()),
        ("Operation", r.operation.clone()),
        ("Path template", r.path_template.clone().unwrap_or_default()),
        ("Subject pseudonym", r.subject.clone().unwrap_or_default()),
        ("Purpose", r.purpose.clone().unwrap_or_default()),
        ("Legal basis", r.legal_basis.clone().unwrap_or_default()),
        ("Grant", r.grant_id.clone().unwrap_or_default()),
        ("Consent", r.consent_id.clone().unwrap_or_default()),
        ("Reason", r.reason.clone().unwrap_or_default()),
        (
            "Policy version",
            r.policy_version.clone().unwrap_or_default(),
        ),
        (
            "Upstream status",
            r.upstream_status.map(|s| s.to_string()).unwrap_or_default(),
        ),
        ("Latency", format!("{} µs", r.latency_us)),
        (
            "Request SHA-256",
            r.request_sha256.map(hex::encode).unwrap_or_default(),
        ),
        (
            "Response SHA-256",
            r.response_sha256.map(hex::encode).unwrap_or_default(),
        ),
        ("Fields released", r.fields_released.join(", ")),
    ];
    let _ = write!(
        main,
        "<tr><th>Decision</th><td>{}</td></tr>",
        decision_tag(r.decision.as_str())
    );
    for (name, value) in rows {
        let _ = write!(
            main,
            "<tr><th>{name}</th><td>{}</td></tr>",
            or_dash(Some(&value))
        );
    }
    main.push_str("</tbody></table>");
    let _ = write!(
        main,
        "<h2>Stored bytes</h2><pre>{}</pre><p>Leaf hash (SHA-256 of 0x00 ‖ bytes): <code>{}</code></p>",
        esc(&String::from_utf8_lossy(&bytes)),
        hex::encode(leaf)
    );
    main.push_str("<h2>Inclusion proof</h2>");
    match (&proof, &checkpoint) {
        (Some(Ok(p)), Some(cp)) => {
            main.push_str(&if verified == Some(true) {
                notice(
                    "ok",
                    &format!(
                        "Record {seq} is included in the signed checkpoint of size {}: the proof verifies.",
                        cp.size
                    ),
                )
            } else {
                notice(
                    "fail",
                    "The inclusion proof does NOT verify against the checkpoint: run verification.",
                )
            });
            let _ = write!(
                main,
                "<p>Tree size {} · root <code>{}</code> · {} hashes on the path:</p><ol class=\"mono\">",
                p.size,
                hex::encode(p.root),
                p.path.len()
            );
            for h in &p.path {
                let _ = write!(main, "<li>{}</li>", hex::encode(h));
            }
            main.push_str("</ol>");
        }
        (Some(Err(e)), _) => main.push_str(&notice("fail", &esc(&e.to_string()))),
        (None, Some(cp)) => main.push_str(&notice(
            "info",
            &format!(
                "Not yet covered by a signed checkpoint (latest covers {} records); one is signed within seconds.",
                cp.size
            ),
        )),
        (_, None) => main.push_str(&notice("info", "No signed checkpoint yet.")),
    }
    if let Some(n) = &note {
        let _ = write!(main, "<h2>Checkpoint</h2><pre>{}</pre>", esc(n));
    }
    let _ = write!(main, "<nav class=\"pager\">");
    if seq > 0 {
        let _ = write!(
            main,
            "<a href=\"/console/records/{}\">« Previous</a>",
            seq - 1
        );
    }
    let _ = write!(
        main,
        "<a href=\"/console/records/{}\">Next »</a></nav>",
        seq + 1
    );
    html_response(
        StatusCode::OK,
        page(
            &format!("Record {seq}"),
            Nav::Records,
            Some(&ctx.viewer()),
            &main,
        ),
    )
}

// ---------------------------------------------------------------- verify

pub async fn verify(ctx: &Ctx, api: bool) -> Response<Body> {
    if let Err(r) = ctx.record_read("verify", "/console/verify", None).await {
        return r;
    }
    let dir: PathBuf = ctx.state.audit.dir().to_path_buf();
    let key = ctx.state.audit.verifier_key();
    let started = std::time::Instant::now();
    let d = dir.clone();
    // On the gateway's own cores: the whole check on this one thread, so that serving keeps the
    // others.
    let report = blocking(move || {
        Ok(tollbu_audit::tooling::verify_with_options(
            &d,
            &tollbu_audit::tooling::VerifyOptions {
                verifier_key: Some(key.trim()),
                readers: Some(0),
                ..Default::default()
            },
        ))
    })
    .await;
    let report = match report {
        Ok(r) => r,
        Err(e) => return read_failure(api, e),
    };
    let took = started.elapsed();
    let first_bad = report
        .text
        .lines()
        .find_map(|l| l.strip_prefix("FIRST bad record index: "))
        .map(str::to_owned);
    let on_disk = std::fs::read_to_string(dir.join("checkpoint")).ok();
    if api {
        return json_response(
            StatusCode::OK,
            &json!({
                "ok": report.ok,
                "first_bad_record": first_bad,
                "report": report.text,
                "checkpoint": on_disk,
                "seconds": took.as_secs_f64(),
            }),
        );
    }
    let mut main = String::new();
    if report.ok {
        main.push_str(&notice(
            "ok",
            "Verification succeeded: every record, tile and checkpoint is consistent.",
        ));
    } else {
        let index = first_bad.as_deref().unwrap_or("unknown");
        let digits: String = index
            .trim_start_matches("at or after ")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let link = if digits.is_empty() {
            String::new()
        } else {
            format!(" <a href=\"/console/records/{digits}\">open record {digits}</a>")
        };
        main.push_str(&notice(
            "fail",
            &format!(
                "Verification FAILED. First bad record index: <span class=\"first-bad\">{}</span>.{link}",
                esc(index)
            ),
        ));
    }
    let _ = write!(
        main,
        "<p>The same check as <code>tollbu audit verify</code>, run now on the files in <code>{}</code> with the running log's verifier key ({:.2} s).</p>\
         <h2>Report</h2><pre class=\"report\">{}</pre>",
        esc(&dir.display().to_string()),
        took.as_secs_f64(),
        esc(&report.text)
    );
    match on_disk {
        Some(n) => {
            let _ = write!(
                main,
                "<h2>Latest signed checkpoint</h2><pre>{}</pre>",
                esc(&n)
            );
        }
        None => main.push_str(&notice("info", "No signed checkpoint on disk yet.")),
    }
    html_response(
        StatusCode::OK,
        page(
            "Verify the audit log",
            Nav::Verify,
            Some(&ctx.viewer()),
            &main,
        ),
    )
}

// ---------------------------------------------------------------- citizen view

pub fn citizen_post(ctx: &Ctx, form: &Form) -> Response<Body> {
    match field(form, "subject_id").and_then(national_id) {
        Some(id) => redirect(
            &format!(
                "/console/citizen?subject={}",
                ctx.state.audit.pseudonymise(&id)
            ),
            None,
        ),
        None => failure(
            false,
            StatusCode::BAD_REQUEST,
            "bad_subject",
            "a national identity number has 11 digits",
        ),
    }
}

/// `clear_id`: the form carries `subject` as a national id (API POST) rather than a pseudonym.
pub async fn citizen(ctx: &Ctx, form: &Form, api: bool, clear_id: bool) -> Response<Body> {
    let subject = if clear_id {
        match field(form, "subject").and_then(national_id) {
            Some(id) => Some(ctx.state.audit.pseudonymise(&id)),
            None => {
                return failure(
                    api,
                    StatusCode::BAD_REQUEST,
                    "bad_subject",
                    "a national identity number has 11 digits",
                );
            }
        }
    } else {
        field(form, "subject")
            .filter(|s| is_pseudonym(s))
            .map(str::to_owned)
    };
    let Some(subject) = subject else {
        if api {
            return failure(
                api,
                StatusCode::BAD_REQUEST,
                "bad_subject",
                "give `subject`",
            );
        }
        let main = format!(
            "<p>What a citizen is owed: every request about them — who, when, what, why, and on which legal basis.</p>\
             <form class=\"box\" method=\"post\" action=\"/console/citizen\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">{}\
             <button type=\"submit\">Show</button></form>",
            esc(&ctx.session.csrf),
            input(
                "National identity number",
                "subject_id",
                "text",
                "",
                " inputmode=\"numeric\" autocomplete=\"off\" required"
            )
        );
        return html_response(
            StatusCode::OK,
            page("Citizen view", Nav::Citizen, Some(&ctx.viewer()), &main),
        );
    };
    if let Err(r) = ctx
        .record_read("citizen-view", "/console/citizen", Some(subject.clone()))
        .await
    {
        return r;
    }
    let dir = ctx.state.audit.dir().to_path_buf();
    let retired = ctx.retired_logs.clone();
    let key_check = ctx.state.audit.pseudonym_key_check();
    let filter = Filter {
        subject: Some(subject.clone()),
        ..Filter::default()
    };
    let found = blocking(move || {
        let current = CitizenLog::read(dir, &filter, None)?;
        // The logs a key rotation left behind hold this person's earlier requests: without them
        // the answer would silently start at the rotation.
        let earlier = retired
            .into_iter()
            .map(|d| CitizenLog::read(d, &filter, Some(&key_check)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((current, earlier))
    })
    .await;
    let (current, earlier) = match found {
        Ok(logs) => logs,
        Err(e) => return read_failure(api, e),
    };
    if api {
        let mut answer = current.json();
        answer["subject_pseudonym"] = json!(subject);
        answer["earlier_logs"] = earlier
            .iter()
            .map(|log| {
                let mut part = log.json();
                part["dir"] = json!(log.dir.display().to_string());
                part
            })
            .collect();
        return json_response(StatusCode::OK, &answer);
    }
    let count =
        current.page.records.len() + earlier.iter().map(|l| l.page.records.len()).sum::<usize>();
    let mut main = String::new();
    let _ = write!(
        main,
        "<p>Subject pseudonym <code>{}</code>: {count} requests, newest first.</p>",
        esc(&subject),
    );
    current.html(&mut main, true);
    for log in &earlier {
        let _ = write!(
            main,
            "<h2>Earlier log <code>{}</code></h2>\
             <p>Written before a signing-key rotation; nothing writes it any more. Requests found with \
             today's pseudonymisation key.</p>",
            esc(&log.dir.display().to_string())
        );
        log.html(&mut main, false);
    }
    html_response(
        StatusCode::OK,
        page("Citizen view", Nav::Citizen, Some(&ctx.viewer()), &main),
    )
}

/// The records a page could not show because they could not be read: the list is not the whole
/// answer, and the log needs verifying.
fn unreadable_notice(count: u64) -> String {
    format!(
        "{count} records in the range read could not be read (altered, damaged or missing) and are not listed: \
         the answer is incomplete. <a href=\"/console/verify\">Verify the log</a> to see what was changed."
    )
}

/// Requests per log the citizen view shows; `tollbu audit citizen` lists them all.
const CITIZEN_VIEW_LIMIT: usize = 10_000;

/// One log's part of the citizen view.
struct CitizenLog {
    dir: PathBuf,
    page: Page,
    /// Retention removed the records before this one (and their index entries with them): how
    /// many concerned this person is no longer known, only where the kept records start.
    retention: Option<(u64, String)>,
    /// Why the log could not be searched for the person (it was written with another key).
    unsearchable: Option<String>,
    /// No log at this path: a replica created after the rotation has none, or the path is wrong.
    absent: bool,
}

impl CitizenLog {
    /// `key_check`: the pseudonym key's check, for a log this gateway did not write.
    fn read(dir: PathBuf, filter: &Filter, key_check: Option<&str>) -> Result<Self, AuditError> {
        if !dir.join("segments").is_dir() {
            return Ok(Self {
                dir,
                page: Page::default(),
                retention: None,
                unsearchable: None,
                absent: true,
            });
        }
        if let Some(check) = key_check
            && let Err(e) = tollbu_audit::ensure_key_matches_log(&dir, check)
        {
            return Ok(Self {
                dir,
                page: Page::default(),
                retention: None,
                unsearchable: Some(e.to_string()),
                absent: false,
            });
        }
        let page = browse::page(&dir, filter, None, CITIZEN_VIEW_LIMIT, SCAN_BUDGET)?;
        let retention =
            tollbu_audit::tooling::retention_boundary(&dir).map(|(first, time)| {
                (
                    first,
                    format!(
                        "Requests recorded before {} were removed under the retention policy and can no longer be listed.",
                        time.unwrap_or_else(|| format!("record #{first}"))
                    ),
                )
            });
        Ok(Self {
            dir,
            page,
            retention,
            unsearchable: None,
            absent: false,
        })
    }

    fn json(&self) -> serde_json::Value {
        let entries: Vec<_> = self
            .page
            .records
            .iter()
            .map(|r| {
                let rec = &r.record;
                json!({
                    "record": r.seq,
                    "when": rec.time,
                    "who": rec.consumer,
                    "on_behalf_by": rec.supplier,
                    "what": {"service": rec.service, "operation": rec.operation, "path": rec.path_template, "fields": rec.fields_released},
                    "why": rec.purpose,
                    "legal_basis": rec.legal_basis,
                    "consent": rec.consent_id,
                    "outcome": rec.decision.as_str(),
                    "reason": rec.reason,
                })
            })
            .collect();
        json!({
            "requests": entries,
            "removed_by_retention": self.page.pruned,
            "retention_removed_records_before": self.retention.as_ref().map(|(first, _)| first),
            "unsearchable": self.unsearchable,
            "absent": self.absent,
            // Older requests exist beyond the view's limit: the list is not the whole answer.
            "truncated": self.page.next_before.is_some(),
            "unreadable": self.page.unreadable,
        })
    }

    /// The table and its retention notices; `link`: the record pages are this gateway's log.
    fn html(&self, main: &mut String, link: bool) {
        if let Some(why) = &self.unsearchable {
            main.push_str(&notice("fail", &esc(why)));
            return;
        }
        if self.absent {
            main.push_str(&notice(
                "info",
                "No audit log at this path on this replica's volume: a replica created after the rotation has none; \
                 otherwise check <code>[audit] retired_dirs</code>.",
            ));
            return;
        }
        main.push_str(
            "<table class=\"citizen\"><thead><tr><th>When (UTC)</th><th>Who</th><th>What</th><th>Why</th>\
             <th>Legal basis</th><th>Outcome</th><th class=\"num\">Record</th></tr></thead><tbody>",
        );
        for r in &self.page.records {
            let rec = &r.record;
            let outcome = match rec.decision {
                Decision::Allow => "data released".to_owned(),
                Decision::Deny => format!("refused ({})", rec.reason.as_deref().unwrap_or("-")),
                Decision::Error => format!("failed ({})", rec.reason.as_deref().unwrap_or("-")),
            };
            let who = match (&rec.consumer, &rec.supplier) {
                (Some(c), Some(s)) => format!("{} (by {})", esc(c), esc(s)),
                (Some(c), None) => esc(c),
                (None, _) => "unidentified caller".to_owned(),
            };
            let what = format!(
                "{} {} {}{}",
                esc(&rec.service),
                esc(&rec.operation),
                or_dash(rec.path_template.as_deref()),
                if rec.fields_released.is_empty() {
                    String::new()
                } else {
                    format!("<br>fields: {}", esc(&rec.fields_released.join(", ")))
                }
            );
            let basis = match &rec.consent_id {
                Some(c) => format!(
                    "{}<br>consent {}",
                    or_dash(rec.legal_basis.as_deref()),
                    esc(c)
                ),
                None => or_dash(rec.legal_basis.as_deref()),
            };
            let seq = if link {
                format!("<a href=\"/console/records/{0}\">{0}</a>", r.seq)
            } else {
                r.seq.to_string()
            };
            let _ = write!(
                main,
                "<tr><td>{}</td><td>{who}</td><td>{what}</td><td>{}</td><td>{basis}</td><td>{}</td>\
                 <td class=\"num\">{seq}</td></tr>",
                esc(&rec.time),
                or_dash(rec.purpose.as_deref()),
                esc(&outcome),
            );
        }
        main.push_str("</tbody></table>");
        if self.page.unreadable > 0 {
            main.push_str(&notice("fail", &unreadable_notice(self.page.unreadable)));
        }
        if self.page.next_before.is_some() {
            main.push_str(&notice(
                "fail",
                &format!(
                    "Only the newest {CITIZEN_VIEW_LIMIT} requests of this log are shown; older ones exist. \
                     <code>tollbu audit citizen</code> lists them all."
                ),
            ));
        }
        if self.page.pruned > 0 {
            main.push_str(&notice(
                "info",
                &format!(
                    "{} older requests were removed under the retention policy.",
                    self.page.pruned
                ),
            ));
        }
        if let Some((_, text)) = &self.retention {
            main.push_str(&notice("info", &esc(text)));
        }
    }
}

// ---------------------------------------------------------------- who can read what

pub async fn who_can(ctx: &Ctx, query: &Form, api: bool) -> Response<Body> {
    if let Err(r) = ctx.record_read("who-can", "/console/who-can", None).await {
        return r;
    }
    let policies = &ctx.state.policies;
    let want_service = field(query, "service");
    let want_field = field(query, "field");
    let mut json_out = Vec::new();
    let mut main = String::new();
    let services: Vec<String> = policies.service_ids().map(str::to_owned).collect();
    let mut options: Vec<(&str, &str)> = vec![("", "all")];
    options.extend(services.iter().map(|s| (s.as_str(), s.as_str())));
    let _ = write!(
        main,
        "<p>From the policy set in force (<code>{}</code>): which grant releases which field, to whom, for what, on which basis.</p>\
         <form class=\"filters\" method=\"get\" action=\"/console/who-can\">{}{}<button type=\"submit\">Show</button></form>",
        esc(policies.version()),
        select("Service", "service", &options, want_service.unwrap_or("")),
        input(
            "Field",
            "field",
            "text",
            want_field.unwrap_or(""),
            " placeholder=\"e.g. address\""
        ),
    );
    for service in services
        .iter()
        .filter(|s| want_service.is_none_or(|w| w == s.as_str()))
    {
        let grants = policies.who_can(service, want_field);
        // Field → grants releasing it.
        let mut by_field: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, g) in grants.iter().enumerate() {
            for f in &g.fields {
                by_field.entry(f.as_str()).or_default().push(i);
            }
        }
        let who = |c: &WhoCanConsumers, consent: &Option<String>| match c {
            WhoCanConsumers::Listed(l) => l.join(", "),
            WhoCanConsumers::AnyWithConsent => format!(
                "anyone with the citizen's consent ({})",
                consent.as_deref().unwrap_or("-")
            ),
        };
        let _ = write!(main, "<h2>Service <code>{}</code></h2>", esc(service));
        if by_field.is_empty() {
            main.push_str("<p>No grant releases a matching field.</p>");
            continue;
        }
        main.push_str(
            "<table class=\"who-can\"><thead><tr><th>Field</th><th>Grant</th><th>Who</th><th>Operations</th>\
             <th>Purposes</th><th>Legal basis</th><th>Limited by</th></tr></thead><tbody>",
        );
        for (f, idx) in &by_field {
            for (k, i) in idx.iter().enumerate() {
                let g = &grants[*i];
                let first = if k == 0 {
                    format!("<td rowspan=\"{}\"><code>{}</code></td>", idx.len(), esc(f))
                } else {
                    String::new()
                };
                let _ = write!(
                    main,
                    "<tr>{first}<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&g.grant_id),
                    esc(&who(&g.consumers, &g.consent_resource)),
                    esc(&g.operations.join(", ")),
                    esc(&g.purposes.join(", ")),
                    or_dash(g.legal_basis.as_deref()),
                    or_dash(Some(&g.notes().join("; "))),
                );
            }
        }
        main.push_str("</tbody></table>");
        for g in &grants {
            json_out.push(json!({
                "service": service,
                "grant": g.grant_id,
                "who": who(&g.consumers, &g.consent_resource),
                "suppliers": g.suppliers,
                "operations": g.operations,
                "purposes": g.purposes,
                "legal_basis": g.legal_basis,
                "consent_resource": g.consent_resource,
                "fields": g.fields,
                "valid_from": g.valid_from,
                "valid_to": g.valid_to,
                "overridden_by": g.overridden_by,
                "overridden_for_all": g.overridden_for_all,
                "shadowed_by": g.shadowed_by.iter().map(|s| &s.grant_id).collect::<Vec<_>>(),
                "limits": g.notes(),
            }));
        }
    }
    if api {
        return json_response(
            StatusCode::OK,
            &json!({"policy_version": policies.version(), "grants": json_out}),
        );
    }
    html_response(
        StatusCode::OK,
        page("Who can read what", Nav::WhoCan, Some(&ctx.viewer()), &main),
    )
}

// ---------------------------------------------------------------- charts

pub async fn charts(ctx: &Ctx, query: &Form, api: bool) -> Response<Body> {
    let hours: i64 = field(query, "hours")
        .and_then(|h| h.parse().ok())
        .unwrap_or(24)
        .clamp(1, 24 * 31);
    if let Err(r) = ctx.record_read("charts", "/console/charts", None).await {
        return r;
    }
    let bucket_secs = ((hours * 3600 + 47) / 48).max(60);
    let now = OffsetDateTime::now_utc();
    let end = now.unix_timestamp().div_euclid(bucket_secs) * bucket_secs + bucket_secs;
    let from_unix = end - bucket_secs * 48;
    let (Ok(from), Ok(to)) = (
        OffsetDateTime::from_unix_timestamp(from_unix),
        OffsetDateTime::from_unix_timestamp(end),
    ) else {
        return failure(
            api,
            StatusCode::INTERNAL_SERVER_ERROR,
            "clock_out_of_range",
            "the gateway's clock is out of range",
        );
    };
    let dir = ctx.state.audit.dir().to_path_buf();
    let hist = blocking(move || browse::histogram(&dir, from, to, bucket_secs, SCAN_BUDGET)).await;
    let hist = match hist {
        Ok(h) => h,
        Err(e) => return read_failure(api, e),
    };
    let labels: Vec<String> = (0..hist.buckets.len())
        .map(|i| {
            let t = from + time::Duration::seconds(bucket_secs * i as i64);
            if hours > 48 {
                format!(
                    "{:02}-{:02} {:02}:{:02}",
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute()
                )
            } else {
                format!("{:02}:{:02}", t.hour(), t.minute())
            }
        })
        .collect();
    let top = |key: &dyn Fn(&browse::Bucket) -> &BTreeMap<String, u64>| {
        let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
        for b in &hist.buckets {
            for (k, v) in key(b) {
                *totals.entry(k.as_str()).or_default() += v;
            }
        }
        let mut ranked: Vec<(&str, u64)> = totals.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let named: BTreeSet<String> = ranked
            .iter()
            .take(6)
            .map(|(k, _)| (*k).to_owned())
            .collect();
        let mut series: Vec<Series> = named
            .iter()
            .map(|name| Series {
                name: name.clone(),
                values: hist
                    .buckets
                    .iter()
                    .map(|b| key(b).get(name).copied().unwrap_or(0))
                    .collect(),
            })
            .collect();
        if ranked.len() > 6 {
            series.push(Series {
                name: "other".into(),
                values: hist
                    .buckets
                    .iter()
                    .map(|b| {
                        key(b)
                            .iter()
                            .filter(|(k, _)| !named.contains(*k))
                            .map(|(_, v)| v)
                            .sum()
                    })
                    .collect(),
            });
        }
        (
            series,
            ranked
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<Vec<_>>(),
        )
    };
    let (consumer_series, consumer_totals) = top(&|b| &b.by_consumer);
    let (reason_series, reason_totals) = top(&|b| &b.by_reason);
    if api {
        let buckets: Vec<_> = hist
            .buckets
            .iter()
            .zip(&labels)
            .map(|(b, l)| {
                json!({"label": l, "total": b.total, "allowed": b.allowed, "denied": b.denied,
                       "errors": b.errors, "by_consumer": b.by_consumer, "by_reason": b.by_reason})
            })
            .collect();
        return json_response(
            StatusCode::OK,
            &json!({"from": from_unix, "bucket_secs": bucket_secs, "buckets": buckets, "partial": hist.partial}),
        );
    }
    let decisions = vec![
        Series {
            name: "allowed".into(),
            values: hist.buckets.iter().map(|b| b.allowed).collect(),
        },
        Series {
            name: "denied".into(),
            values: hist.buckets.iter().map(|b| b.denied).collect(),
        },
        Series {
            name: "failed".into(),
            values: hist.buckets.iter().map(|b| b.errors).collect(),
        },
    ];
    let mut main = String::new();
    let _ = write!(
        main,
        "<form class=\"filters\" method=\"get\" action=\"/console/charts\">{}<button type=\"submit\">Show</button></form>\
         <p>Last {hours} h in buckets of {} min (UTC).</p>",
        select(
            "Period",
            "hours",
            &[
                ("1", "1 hour"),
                ("6", "6 hours"),
                ("24", "24 hours"),
                ("168", "7 days"),
                ("720", "30 days")
            ],
            &hours.to_string()
        ),
        bucket_secs / 60
    );
    if hist.partial {
        main.push_str(&notice(
            "info",
            "Very many records: the oldest buckets may be undercounted.",
        ));
    }
    main.push_str(&stacked_bars("Requests by decision", &labels, &decisions));
    main.push_str(&stacked_bars(
        "Requests by consumer",
        &labels,
        &consumer_series,
    ));
    main.push_str(&stacked_bars(
        "Denied and failed requests by reason",
        &labels,
        &reason_series,
    ));
    for (title, rows) in [
        ("Consumer", &consumer_totals),
        ("Reason (denied and failed)", &reason_totals),
    ] {
        let _ = write!(
            main,
            "<table><thead><tr><th>{title}</th><th class=\"num\">Requests</th></tr></thead><tbody>"
        );
        for (k, v) in rows.iter() {
            let _ = write!(
                main,
                "<tr><td>{}</td><td class=\"num\">{v}</td></tr>",
                esc(k)
            );
        }
        main.push_str("</tbody></table>");
    }
    html_response(
        StatusCode::OK,
        page(
            "Requests and denials over time",
            Nav::Charts,
            Some(&ctx.viewer()),
            &main,
        ),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn inputs_are_checked() {
        assert_eq!(national_id("010170 12345").as_deref(), Some("01017012345"));
        assert!(national_id("0101701234").is_none());
        assert!(national_id("0101701234x").is_none());
        assert!(is_pseudonym(&"ab".repeat(32)));
        assert!(!is_pseudonym(&"AB".repeat(32)));
        assert!(time_input("2026-01-02T03:04").is_some());
        assert!(time_input("2026-01-02T03:04:05").is_some());
        assert!(time_input("2026-01-02T03:04:05+01:00").is_some());
        assert!(time_input("yesterday").is_none());
    }

    #[test]
    fn filter_params_round_trip_through_the_query_string() {
        let mut form = Form::new();
        form.insert("consumer".into(), "0192:310000019".into());
        form.insert("decision".into(), "deny".into());
        form.insert("subject".into(), "not-a-pseudonym".into());
        let p = Params::read(&form);
        assert_eq!(
            p.query(),
            "consumer=0192%3A310000019&decision=deny",
            "only pseudonyms travel in URLs"
        );
        assert!(
            p.filter()
                .unwrap_err()
                .contains("`subject` must be a pseudonym")
        );
        form.insert("subject".into(), "ab".repeat(32));
        let p = Params::read(&form);
        assert!(
            p.query()
                .ends_with(&format!("&subject={}", "ab".repeat(32)))
        );
        let f = p.filter().unwrap();
        assert_eq!(f.decision, Some(Decision::Deny));
    }
}
