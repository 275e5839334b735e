//! The page frame every console page shares (head, style sheet, navigation), the response
//! headers of every `/admin` answer, and small rendering helpers.
//!
//! Every value spliced into a page goes through maud's `(…)`, which escapes it; nothing from
//! the database or the request is ever wrapped in `PreEscaped`. The only raw text is
//! [`STYLE`], a constant, which the `Content-Security-Policy` allows by its hash; no script
//! runs on any page.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use sha2::{Digest, Sha256};

use super::session::Staff;

/// The console's whole style sheet, inline.
const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d232a}\
header{background:#24303f;color:#fff;padding:.6em 1em;display:flex;gap:1.2em;align-items:center}\
header a{color:#fff}header form{margin-left:auto}main{padding:1em}\
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #c8ced6;padding:.3em .6em;\
text-align:left;vertical-align:top}th{background:#eef1f5}td.n{text-align:right}\
pre{margin:0;white-space:pre-wrap;word-break:break-all;max-width:60em}\
.ok{color:#17692c}.bad{color:#a11d1d;font-weight:600}.notice{background:#e7f5ea;padding:.5em}\
form.inline{display:inline}label{display:block;margin:.4em 0}dl{margin:0}dt{font-weight:600}";

/// `Content-Security-Policy` of every console answer: nothing loads or runs but the style
/// sheet above; forms post only here; no page may be framed.
fn content_security_policy() -> &'static str {
    static POLICY: OnceLock<String> = OnceLock::new();
    POLICY.get_or_init(|| {
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE));
        format!(
            "default-src 'none'; style-src 'sha256-{hash}'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'"
        )
    })
}

/// Adds the console's security headers to an answer.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if let Ok(policy) = HeaderValue::from_str(content_security_policy()) {
        headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// A whole page: the frame, with the navigation when someone is logged in.
pub fn page(title: &str, staff: Option<&Staff>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · admin console" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "Commerce admin" }
                    @if let Some(staff) = staff {
                        a href="/admin" { "Overview" }
                        a href="/admin/dead-letters" { "Dead letters" }
                        a href="/admin/replays" { "Replays" }
                        a href="/admin/events" { "Events" }
                        form.inline method="post" action="/admin/logout" {
                            span { (staff.actor()) " (" (role_name(staff)) ") " }
                            input type="hidden" name="csrf" value=(staff.csrf());
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

fn role_name(staff: &Staff) -> &'static str {
    if staff.may_act() {
        "admin"
    } else {
        "support"
    }
}

/// An HTML answer.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        markup.into_string(),
    )
        .into_response()
}

/// An error page.
pub fn error_page(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = html! {
        p.bad { (detail) }
        p { a href="/admin" { "Back to the overview" } }
    };
    respond(status, page(title, None, body))
}

/// An instant as RFC 3339, seconds.
pub fn instant(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A POST button with the session's CSRF token.
pub fn action(staff: &Staff, path: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(path) {
            input type="hidden" name="csrf" value=(staff.csrf());
            button type="submit" { (label) }
        }
    }
}

/// The event browser's address for one aggregate.
pub fn history_link(aggregate_type: &str, aggregate_id: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("aggregate_type", aggregate_type)
        .append_pair("aggregate_id", aggregate_id)
        .finish();
    format!("/admin/events?{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_the_policy_allows_only_the_style_sheet() {
        let hostile = "<script>alert(1)</script>\"'&";
        let markup = page(hostile, None, html! { p { (hostile) } }).into_string();
        assert!(!markup.contains("<script>"), "{markup}");
        assert!(markup.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;'&amp;"));
        let link = history_link("order", "x\"><script>");
        assert!(!link.contains('"') && !link.contains('<'), "{link}");
        let policy = content_security_policy();
        assert!(policy.starts_with("default-src 'none'; style-src 'sha256-"));
        assert!(!policy.contains("script-src"));
        assert!(markup.contains(&format!("<style>{STYLE}</style>")));
    }
}
