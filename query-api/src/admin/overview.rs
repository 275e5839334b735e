//! `GET /admin`: the projections (consumed position, lag from the brokers, dead letters, the
//! newest error), the relay's checkpoints and how far behind the event store they are, the
//! process manager's outbox, and the newest replay runs. The same figures as
//! `projector status` (`projections::status`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use projections::status::Status;

use super::dead_letters::letters_table;
use super::error::AdminError;
use super::layout::{instant, page, respond};
use super::replays::{recent, runs_table};
use super::session::Staff;
use crate::routes::AppState;

/// Replay runs shown on the overview.
const RECENT_REPLAYS: i64 = 5;
/// Dead letters shown on the overview.
const RECENT_DEAD_LETTERS: i64 = 5;

pub async fn show(staff: Staff, State(state): State<AppState>) -> Result<Response, AdminError> {
    let all = projections::projections(true);
    let status = projections::status::status(&state.pool, &state.console.settings, &all).await?;
    let runs = recent(&state.pool, RECENT_REPLAYS).await?;
    let letters = projections::dead_letters::list(&state.pool, None, RECENT_DEAD_LETTERS).await?;
    let body = html! {
        h2 { "Projections" }
        (projections_table(&status))
        @if let Some(error) = &status.brokers_error {
            p.bad { "Lag unknown: the brokers did not answer (" (error) ")" }
        }
        h2 { "Newest dead letters" }
        (letters_table(&letters, &state.console.settings.kafka.topic_prefix, None))
        @if !letters.is_empty() { p { a href="/admin/dead-letters" { "All dead letters" } } }
        h2 { "Relay" }
        (relay_table(&status))
        h2 { "Process manager outbox" }
        (outbox_table(&status))
        h2 { "Recent replays" }
        (runs_table(&runs))
        p { a href="/admin/replays" { "All replay runs" } }
    };
    Ok(respond(
        StatusCode::OK,
        page("Overview", Some(&staff), body),
    ))
}

fn projections_table(status: &Status) -> Markup {
    html! {
        table #projections {
            tr {
                th { "Projection" } th { "Consumed" } th { "Lag" } th { "Status" }
                th { "Last error" } th { "At" }
            }
            @for p in &status.projections {
                tr {
                    td { (p.name) }
                    td.n { (p.consumed) }
                    td.n { @match p.lag { Some(lag) => (lag), None => "?" } }
                    td {
                        @if p.dead_letters > 0 {
                            a.bad href={ "/admin/dead-letters?projection=" (p.name) } {
                                (p.dead_letters) @if p.dead_letters == 1 { " dead letter" } @else { " dead letters" }
                            }
                        } @else if p.last_error.is_some() {
                            span.bad { "error" }
                        } @else {
                            span.ok { "ok" }
                        }
                    }
                    td { @if let Some(error) = &p.last_error { pre { (error) } } @else { "-" } }
                    td { @if let Some(at) = &p.last_error_at { (instant(at)) } @else { "-" } }
                }
            }
        }
    }
}

fn relay_table(status: &Status) -> Markup {
    let mut relays: Vec<_> = status.relay_checkpoints.iter().collect();
    relays.sort();
    html! {
        @if relays.is_empty() {
            p { "No relay has published yet (newest position " (status.newest_position) ")." }
        } @else {
            table #relay {
                tr { th { "Relay" } th { "Checkpoint" } th { "Newest position" } th { "Events to publish" } }
                @for (name, position) in relays {
                    tr {
                        td { (name) }
                        td.n { (position) }
                        td.n { (status.newest_position) }
                        td.n { (status.pending_text(name)) }
                    }
                }
            }
        }
    }
}

fn outbox_table(status: &Status) -> Markup {
    let mut outbox: Vec<_> = status.outbox.iter().collect();
    outbox.sort();
    html! {
        @if outbox.is_empty() {
            p { "Empty." }
        } @else {
            table #outbox {
                tr { th { "Status" } th { "Commands" } }
                @for (state, count) in outbox {
                    tr {
                        td { @if state == "parked" { span.bad { (state) } } @else { (state) } }
                        td.n { (count) }
                    }
                }
            }
        }
    }
}
