//! `GET /admin/events?aggregate_type=&aggregate_id=`: the event browser. A form to pick an
//! aggregate, then its events from the event store (the system of record, not a read model)
//! in sequence order: global position, type and version, when it occurred, its metadata
//! (actor, correlation, causation, trace…) and its payload as indented JSON.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use infra::audit_export::AGGREGATE_TYPES;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::error::AdminError;
use super::layout::{instant, page, respond};
use super::session::Staff;
use super::Query;
use crate::routes::AppState;

/// Most events shown for one aggregate.
const SHOWN: i64 = 1000;
/// Most bytes of one payload or metadata value shown: a larger one is shown compact and cut
/// (the audit export has it whole).
const VALUE_SHOWN_BYTES: usize = 16 * 1024;
/// Most bytes of payloads and metadata on one page; the events past it are not shown. Indenting a deeply nested payload can make it a hundred times its size:
/// before these limits, one user's history could be a page of a gigabyte.
const PAGE_SHOWN_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    aggregate_type: Option<String>,
    aggregate_id: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
struct Event {
    global_position: i64,
    sequence: i64,
    event_id: Uuid,
    event_type: String,
    event_version: String,
    recorded_at: chrono::DateTime<chrono::Utc>,
    metadata: Value,
    payload: Value,
}

/// The aggregate asked for: both parameters or neither; a known type and a UUID.
fn aggregate(params: &Params) -> Result<Option<(&'static str, Uuid)>, AdminError> {
    let (raw_type, raw_id) = match (
        params.aggregate_type.as_deref(),
        params.aggregate_id.as_deref(),
    ) {
        (None | Some(""), None | Some("")) => return Ok(None),
        (Some(t), Some(i)) if !t.is_empty() && !i.trim().is_empty() => (t, i.trim()),
        _ => {
            return Err(AdminError::BadRequest(
                "give both an aggregate type and an aggregate id".into(),
            ))
        }
    };
    let aggregate_type = AGGREGATE_TYPES
        .into_iter()
        .find(|known| *known == raw_type)
        .ok_or_else(|| {
            AdminError::BadRequest("the aggregate type is user, order or payment".into())
        })?;
    let id = Uuid::parse_str(raw_id)
        .map_err(|_| AdminError::BadRequest("the aggregate id is a UUID".into()))?;
    Ok(Some((aggregate_type, id)))
}

pub async fn show(
    staff: Staff,
    State(state): State<AppState>,
    Query(params): Query<Params>,
) -> Result<Response, AdminError> {
    let chosen = aggregate(&params)?;
    let Some((aggregate_type, id)) = chosen else {
        let body = picker(&params);
        return Ok(respond(StatusCode::OK, page("Events", Some(&staff), body)));
    };
    let events: Vec<Event> = sqlx::query_as(
        "SELECT global_position, sequence, event_id, event_type, event_version, recorded_at,
                metadata, payload
         FROM events WHERE aggregate_type = $1 AND aggregate_id = $2
         ORDER BY sequence LIMIT $3",
    )
    .bind(aggregate_type)
    .bind(id.to_string())
    .bind(SHOWN + 1)
    .fetch_all(&state.pool)
    .await?;
    let status = if events.is_empty() {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    let body = html! {
        (picker(&params))
        h2 { (aggregate_type) " " (id) }
        @if events.is_empty() {
            p.bad { "The event store has no events of this aggregate." }
        } @else {
            @let (table, shown) = events_table(&events[..events.len().min(SHOWN as usize)]);
            (table)
            @if shown < events.len() {
                p { "Only the first " (shown) " events are shown (at most " (SHOWN)
                    " events and " (PAGE_SHOWN_BYTES / (1024 * 1024)) " MiB of payloads)." }
            }
        }
    };
    Ok(respond(status, page("Events", Some(&staff), body)))
}

fn picker(params: &Params) -> Markup {
    let chosen_type = params.aggregate_type.as_deref().unwrap_or("order");
    html! {
        form method="get" action="/admin/events" {
            label {
                "Aggregate type "
                select name="aggregate_type" {
                    @for t in AGGREGATE_TYPES {
                        option value=(t) selected[t == chosen_type] { (t) }
                    }
                }
            }
            label {
                "Aggregate id "
                input type="text" name="aggregate_id" size="40" required
                    value=(params.aggregate_id.as_deref().unwrap_or(""));
            }
            button type="submit" { "Show history" }
        }
    }
}

/// The events as table rows, as many as fit [`PAGE_SHOWN_BYTES`]; and how many that is.
fn events_table(events: &[Event]) -> (Markup, usize) {
    let mut budget = PAGE_SHOWN_BYTES;
    // Counted as escaped for HTML, as the page will hold them (a quote becomes six bytes).
    let rows: Vec<(&Event, Markup, Markup)> = events
        .iter()
        .map(|e| (e, metadata(&e.metadata), html! { (shown(&e.payload)) }))
        .take_while(|(_, metadata, payload)| {
            match budget.checked_sub(metadata.0.len() + payload.0.len()) {
                Some(left) => {
                    budget = left;
                    true
                }
                None => false,
            }
        })
        .collect();
    let table = html! {
        table #events {
            tr {
                th { "Seq" } th { "Position" } th { "Event" } th { "Occurred" }
                th { "Metadata" } th { "Payload" }
            }
            @for (e, metadata, payload) in &rows {
                tr {
                    td.n { (e.sequence) }
                    td.n { (e.global_position) }
                    td { (e.event_type) " v" (e.event_version) br; small { (e.event_id) } }
                    td {
                        @match e.metadata.get("occurred_at").and_then(Value::as_str) {
                            Some(at) => (at),
                            None => (instant(&e.recorded_at)),
                        }
                    }
                    td { (metadata) }
                    td { pre { (payload) } }
                }
            }
        }
    };
    (table, rows.len())
}

/// Every metadata field, as name and value (strings as they are, anything else as JSON).
fn metadata(value: &Value) -> Markup {
    let Some(fields) = value.as_object() else {
        return html! { pre { (shown(value)) } };
    };
    let mut fields: Vec<_> = fields.iter().filter(|(k, _)| *k != "occurred_at").collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    html! {
        dl {
            @for (name, value) in fields {
                dt { (name) }
                dd { @match value.as_str() { Some(text) => (cut(text.to_owned())), None => (shown(value)) } }
            }
        }
    }
}

/// `value` indented, or when that passes [`VALUE_SHOWN_BYTES`], compact and cut there. The
/// indented form is written into a buffer that refuses to grow past the limit, so a payload
/// that would indent to megabytes costs no more than the limit.
fn shown(value: &Value) -> String {
    let mut limited = Limited(Vec::new());
    if serde_json::to_writer_pretty(&mut limited, value).is_ok() {
        if let Ok(text) = String::from_utf8(limited.0) {
            return text;
        }
    }
    cut(value.to_string())
}

/// At most [`VALUE_SHOWN_BYTES`] of `text`, saying so when cut.
fn cut(mut text: String) -> String {
    if text.len() > VALUE_SHOWN_BYTES {
        let total = text.len();
        let mut end = VALUE_SHOWN_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(&format!(" … (cut: {total} bytes in all)"));
    }
    text
}

/// A buffer that refuses writes past [`VALUE_SHOWN_BYTES`].
struct Limited(Vec<u8>);

impl std::io::Write for Limited {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + bytes.len() > VALUE_SHOWN_BYTES {
            return Err(std::io::Error::other("past the shown limit"));
        }
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: Option<&str>, i: Option<&str>) -> Params {
        Params {
            aggregate_type: t.map(str::to_owned),
            aggregate_id: i.map(str::to_owned),
        }
    }

    #[test]
    fn both_parameters_or_neither_and_each_checked() {
        let id = Uuid::now_v7().to_string();
        assert!(matches!(aggregate(&params(None, None)), Ok(None)));
        assert!(matches!(aggregate(&params(Some(""), Some(""))), Ok(None)));
        assert!(matches!(
            aggregate(&params(Some("order"), Some(&id))),
            Ok(Some(("order", _)))
        ));
        for (t, i) in [
            (Some("order"), None),
            (None, Some(id.as_str())),
            (Some("orders"), Some(id.as_str())),
            (Some("order"), Some("not-a-uuid")),
            (Some("<script>"), Some(id.as_str())),
        ] {
            assert!(
                matches!(aggregate(&params(t, i)), Err(AdminError::BadRequest(_))),
                "{t:?} {i:?}"
            );
        }
    }

    #[test]
    fn hostile_metadata_and_payloads_are_escaped() {
        let hostile = serde_json::json!({"actor": "<img src=x onerror=alert(1)>", "x": {"y": "</pre><script>"}});
        let shown = metadata(&hostile).into_string();
        assert!(
            !shown.contains("<img") && !shown.contains("<script>"),
            "{shown}"
        );
        assert!(
            shown.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{shown}"
        );
        let payload = html! { pre { (super::shown(&hostile)) } }.into_string();
        assert!(!payload.contains("</pre><script>"), "{payload}");
    }

    /// A payload that indents to about a megabyte (deeply nested arrays of zeros, as
    /// preferences could be before their nesting was bounded) is shown cut, and a page holds
    /// a bounded number of bytes: before, a hundred of them made a page of 100 MB.
    #[test]
    fn a_page_of_huge_payloads_stays_small() {
        // Strings of ampersands: each is five bytes once escaped.
        let mut deep = serde_json::json!(vec!["&&&&"; 800]);
        for _ in 0..120 {
            deep = serde_json::json!([deep]);
        }
        let event = |sequence| Event {
            global_position: sequence,
            sequence,
            event_id: Uuid::now_v7(),
            event_type: "UserProfileChanged".into(),
            event_version: "1".into(),
            recorded_at: chrono::Utc::now(),
            metadata: serde_json::json!({"actor": "x".repeat(100_000)}),
            payload: serde_json::json!({"type": "UserProfileChanged", "preferences": {"k": deep}}),
        };
        let events: Vec<Event> = (1..=300).map(event).collect();
        let (table, shown_events) = events_table(&events);
        let html = table.into_string();
        // The budget, and the table's own markup around the rows.
        assert!(
            html.len() < PAGE_SHOWN_BYTES + 256 * 1024,
            "{} bytes",
            html.len()
        );
        assert!(
            shown_events > 0 && shown_events < events.len(),
            "{shown_events}"
        );
        assert!(html.contains("(cut: "));
    }
}
