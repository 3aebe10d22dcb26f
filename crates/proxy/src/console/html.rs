//! HTML building blocks: escaping, the page frame, forms and small formatters. Every value that
//! reaches a page goes through [`esc`] (text and attribute values alike), and no page carries
//! scripts, so the content security policy can forbid them outright.

use std::fmt::Write as _;

/// Escapes text for HTML element content and double- or single-quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query-string value.
pub fn url(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Records,
    Citizen,
    Verify,
    WhoCan,
    Charts,
    None,
}

/// The logged-in part of the frame.
pub struct Viewer<'a> {
    pub user: &'a str,
    pub csrf: &'a str,
}

/// A whole page: head, navigation (when logged in), main content.
pub fn page(title: &str, nav: Nav, viewer: Option<&Viewer<'_>>, main: &str) -> String {
    let mut out = String::with_capacity(main.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Tollbu console</title>\
         <link rel=\"stylesheet\" href=\"/console/static/console.css\"></head><body>\
         <header><span class=\"brand\">Tollbu · audit console</span>",
        esc(title)
    );
    if let Some(v) = viewer {
        out.push_str("<nav>");
        for (entry, href, label) in [
            (Nav::Records, "/console/records", "Accesses"),
            (Nav::Citizen, "/console/citizen", "Citizen view"),
            (Nav::Verify, "/console/verify", "Verify"),
            (Nav::WhoCan, "/console/who-can", "Who can read what"),
            (Nav::Charts, "/console/charts", "Charts"),
        ] {
            let current = if entry == nav {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(out, "<a href=\"{href}\"{current}>{label}</a>");
        }
        let _ = write!(
            out,
            "</nav><form class=\"logout\" method=\"post\" action=\"/console/logout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <span class=\"user\">{}</span> <button type=\"submit\">Log out</button></form>",
            esc(v.csrf),
            esc(v.user)
        );
    }
    let _ = writeln!(
        out,
        "</header><main><h1>{}</h1>{main}</main>\
         <footer>Every page you open here is itself written to the audit log.</footer></body></html>",
        esc(title)
    );
    out
}

/// `<input>` with label.
pub fn input(label: &str, name: &str, kind: &str, value: &str, extra: &str) -> String {
    format!(
        "<label>{}<input type=\"{kind}\" name=\"{name}\" value=\"{}\"{extra}></label>",
        esc(label),
        esc(value)
    )
}

/// `<select>` with label; `options` are (value, text).
pub fn select(label: &str, name: &str, options: &[(&str, &str)], current: &str) -> String {
    let mut out = format!("<label>{}<select name=\"{name}\">", esc(label));
    for (value, text) in options {
        let selected = if *value == current { " selected" } else { "" };
        let _ = write!(
            out,
            "<option value=\"{}\"{selected}>{}</option>",
            esc(value),
            esc(text)
        );
    }
    out.push_str("</select></label>");
    out
}

/// A value or a dash.
pub fn or_dash(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => esc(v),
        _ => "<span class=\"none\">–</span>".to_owned(),
    }
}

/// A decision as a coloured tag.
pub fn decision_tag(decision: &str) -> String {
    format!(
        "<span class=\"tag {}\">{}</span>",
        esc(decision),
        esc(decision)
    )
}

/// A notice box.
pub fn notice(kind: &str, html: &str) -> String {
    format!("<p class=\"notice {kind}\" role=\"status\">{html}</p>")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            esc(r#"<script>alert("x&y")</script> 'q'"#),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt; &#39;q&#39;"
        );
        let field = input("Consumer", "consumer", "text", "\"><img src=x>", "");
        assert!(field.contains("value=\"&quot;&gt;&lt;img src=x&gt;\""));
        assert!(!field.contains("<img"));
    }

    #[test]
    fn the_frame_escapes_the_user_and_title() {
        let v = Viewer {
            user: "<b>so</b>",
            csrf: "t\"",
        };
        let html = page("<T>", Nav::Records, Some(&v), "");
        assert!(html.contains("&lt;b&gt;so&lt;/b&gt;"));
        assert!(html.contains("<h1>&lt;T&gt;</h1>"));
        assert!(html.contains("value=\"t&quot;\""));
        assert!(html.contains("<a href=\"/console/records\" aria-current=\"page\">"));
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(url("0192:310000019 &x"), "0192%3A310000019%20%26x");
    }
}
