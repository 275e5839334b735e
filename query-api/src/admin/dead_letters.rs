//! `GET /admin/dead-letters[?projection=]`: the dead letters, newest first, each linked to its
//! aggregate's history; for `admin`, a retry and a discard button on each
//! (`POST /admin/dead-letters/{id}/retry | discard`, with the session's CSRF token). Retry is
//! `projections::dead_letters::retry`: applied again under the projection's lock, or refused
//! with the reason.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use infra::audit_export::AGGREGATE_TYPES;
use maud::{html, Markup};
use projections::dead_letters::{DeadLetter, RetryError};
use serde::Deserialize;

use super::error::AdminError;
use super::layout::{action, history_link, instant, page, respond};
use super::session::Staff;
use super::{form, ActionForm, Query};
use crate::routes::AppState;

/// Dead letters shown on the page.
const SHOWN: i64 = 200;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Params {
    projection: Option<String>,
    /// What the last action did (`retried` or `discarded`), with its `id` and this
    /// session's `seal` of the two (a link without it shows no notice).
    done: Option<String>,
    id: Option<i64>,
    seal: Option<String>,
}

pub async fn show(
    staff: Staff,
    State(state): State<AppState>,
    Query(params): Query<Params>,
) -> Result<Response, AdminError> {
    let names: Vec<&str> = projections::projections(true)
        .iter()
        .map(|p| p.name())
        .collect();
    let projection = params.projection.filter(|p| !p.is_empty());
    if let Some(name) = &projection {
        if !names.contains(&name.as_str()) {
            return Err(AdminError::BadRequest(format!("no projection {name:?}")));
        }
    }
    let notice = match (params.done.as_deref(), params.id, params.seal.as_deref()) {
        (Some(what), Some(id), Some(seal)) if staff.sealed(&format!("{what}:{id}"), seal) => {
            match what {
                "retried" => Some(format!("Dead letter {id} was applied and removed.")),
                "discarded" => Some(format!("Dead letter {id} was discarded.")),
                _ => None,
            }
        }
        _ => None,
    };
    let letters =
        projections::dead_letters::list(&state.pool, projection.as_deref(), SHOWN).await?;
    let prefix = &state.console.settings.kafka.topic_prefix;
    let body = html! {
        @if let Some(notice) = notice { p.notice { (notice) } }
        form method="get" action="/admin/dead-letters" {
            label {
                "Projection "
                select name="projection" {
                    option value="" { "all" }
                    @for name in &names {
                        option value=(name) selected[projection.as_deref() == Some(*name)] { (name) }
                    }
                }
                " " button type="submit" { "Show" }
            }
        }
        (letters_table(&letters, prefix, staff.may_act().then_some(&staff)))
    };
    Ok(respond(
        StatusCode::OK,
        page("Dead letters", Some(&staff), body),
    ))
}

/// The dead letters as a table, each linked to its aggregate's history; with `actions` (an
/// admin), a retry and a discard button on each.
pub fn letters_table(letters: &[DeadLetter], prefix: &str, actions: Option<&Staff>) -> Markup {
    html! {
        @if letters.is_empty() {
            p { "No dead letters." }
        } @else {
            table #dead-letters {
                tr {
                    th { "Id" } th { "Projection" } th { "Set aside" } th { "Message" }
                    th { "Event" } th { "Aggregate" } th { "Error" }
                    @if actions.is_some() { th { "Action" } }
                }
                @for letter in letters {
                    tr id={ "dead-letter-" (letter.id) } {
                        td.n { (letter.id) }
                        td { (letter.projection) }
                        td { (instant(&letter.created_at)) }
                        td { (letter.topic) "/" (letter.partition) "@" (letter.offset) }
                        td { (letter.event_id.as_deref().unwrap_or("-")) }
                        td {
                            @match aggregate_link(letter, prefix) {
                                Some(link) => a href=(link) { (letter.aggregate_id.as_deref().unwrap_or("")) },
                                None => (letter.aggregate_id.as_deref().unwrap_or("-")),
                            }
                        }
                        td { pre { (letter.error) } }
                        @if let Some(staff) = actions {
                            td {
                                (action(staff, &format!("/admin/dead-letters/{}/retry", letter.id), "Retry"))
                                " "
                                (action(staff, &format!("/admin/dead-letters/{}/discard", letter.id), "Discard"))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The event browser's address for the dead letter's aggregate, when its topic names the
/// aggregate type.
fn aggregate_link(letter: &DeadLetter, prefix: &str) -> Option<String> {
    let aggregate_id = letter.aggregate_id.as_deref()?;
    let aggregate_type = AGGREGATE_TYPES
        .into_iter()
        .find(|a| infra::kafka::topic_for(prefix, a) == letter.topic)?;
    Some(history_link(aggregate_type, aggregate_id))
}

/// A dead letter's id from the path.
fn dead_letter_id(raw: &str) -> Result<i64, AdminError> {
    raw.parse()
        .map_err(|_| AdminError::BadRequest("a dead letter id is a number".into()))
}

/// Back to the list, saying what was done (sealed for this session).
fn done(staff: &Staff, what: &str, id: i64) -> Response {
    let seal = staff.seal(&format!("{what}:{id}"));
    let location = format!("/admin/dead-letters?done={what}&id={id}&seal={seal}");
    match HeaderValue::from_str(&location) {
        Ok(location) => (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response(),
        Err(_) => StatusCode::SEE_OTHER.into_response(),
    }
}

/// The dead letter an action names, once the action is allowed: an admin, with this
/// session's CSRF token in the form. Logged with the actor.
fn allowed(staff: &Staff, raw_id: &str, body: &[u8], what: &str) -> Result<i64, AdminError> {
    let id = dead_letter_id(raw_id)?;
    let action: ActionForm = form(body)?;
    staff.authorize_action(action.csrf.as_deref())?;
    tracing::info!(actor = %staff.actor(), dead_letter = id, "admin console: {what}");
    Ok(id)
}

pub async fn retry(
    staff: Staff,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AdminError> {
    let id = allowed(&staff, &id, &body, "retry")?;
    match projections::dead_letters::retry(&state.pool, id).await {
        Ok(_) => Ok(done(&staff, "retried", id)),
        Err(RetryError::Database(error)) => Err(AdminError::Database(error)),
        Err(missing @ RetryError::Missing { .. }) => Err(AdminError::NotFound(missing.to_string())),
        Err(refused) => Err(AdminError::Conflict(refused.to_string())),
    }
}

pub async fn discard(
    staff: Staff,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, AdminError> {
    let id = allowed(&staff, &id, &body, "discard")?;
    let removed = projections::dead_letters::discard(&state.pool, &[id]).await?;
    if removed.is_empty() {
        return Err(AdminError::NotFound(format!("no dead letter {id}")));
    }
    Ok(done(&staff, "discarded", id))
}
