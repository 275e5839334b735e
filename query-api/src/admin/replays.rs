//! `GET /admin/replays`: every replay, rollback and as-of build (`replay_runs`, written by
//! `projector replay` about once a second while it runs), newest first, with its progress. A
//! run still marked running whose lease is no longer held shows as `abandoned`: its process
//! died (see the migration `20261202000002_projector_leases`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use sqlx::PgPool;

use super::error::AdminError;
use super::layout::{instant, page, respond};
use super::session::Staff;
use crate::routes::AppState;

/// Runs shown on the page.
const SHOWN: i64 = 100;

#[derive(Debug, sqlx::FromRow)]
pub struct Run {
    pub projection: String,
    pub kind: String,
    pub target: Option<String>,
    pub state: String,
    pub events: i64,
    pub total: Option<i64>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

impl Run {
    /// Events per second over the run so far (to its end, once ended).
    fn rate(&self) -> Option<f64> {
        let until = self.finished_at.unwrap_or(self.updated_at);
        let seconds = (until - self.started_at).num_milliseconds() as f64 / 1000.0;
        (seconds > 0.0).then(|| self.events as f64 / seconds)
    }
}

/// The newest `limit` runs.
pub async fn recent(pool: &PgPool, limit: i64) -> Result<Vec<Run>, sqlx::Error> {
    sqlx::query_as(
        "SELECT projection, kind, target,
                CASE WHEN abandoned THEN 'abandoned' ELSE state END AS state,
                events, total, started_at, updated_at, finished_at,
                CASE WHEN abandoned THEN 'the process running it ended before the run finished'
                     ELSE error END AS error
         FROM (SELECT *, state = 'running' AND NOT replay_run_alive(lease) AS abandoned
               FROM replay_runs) r ORDER BY started_at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

pub async fn show(staff: Staff, State(state): State<AppState>) -> Result<Response, AdminError> {
    let runs = recent(&state.pool, SHOWN).await?;
    let body = html! { (runs_table(&runs)) };
    Ok(respond(StatusCode::OK, page("Replays", Some(&staff), body)))
}

/// The runs as a table.
pub fn runs_table(runs: &[Run]) -> Markup {
    html! {
        @if runs.is_empty() {
            p { "No replay has run." }
        } @else {
            table #replays {
                tr {
                    th { "Projection" } th { "Kind" } th { "State" } th { "Events" }
                    th { "Rate (events/s)" } th { "Started" } th { "Finished" } th { "Error" }
                }
                @for run in runs {
                    tr {
                        td { (run.projection) }
                        td { (run.kind) @if let Some(target) = &run.target { " " (target) } }
                        td {
                            @if run.state == "failed" || run.state == "abandoned" {
                                span.bad { (run.state) }
                            } @else { (run.state) }
                        }
                        td.n {
                            (run.events)
                            @if let Some(total) = run.total { " / " (total) }
                        }
                        td.n { @if let Some(rate) = run.rate() { (format!("{rate:.0}")) } @else { "-" } }
                        td { (instant(&run.started_at)) }
                        td { @if let Some(at) = &run.finished_at { (instant(at)) } @else { "-" } }
                        td { @if let Some(error) = &run.error { pre { (error) } } @else { "-" } }
                    }
                }
            }
        }
    }
}
