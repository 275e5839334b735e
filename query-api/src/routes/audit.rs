//! `GET /v1/audit/{aggregate_type}/{id}`: every event of one aggregate, in order, with its
//! metadata (who, when, why, trace), from the audit projection; `GET /v1/audit/export`: every
//! event in log order as NDJSON, filtered and resumable by position. For `support` and
//! `admin` only.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use infra::auth::Authenticated;
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;
use utoipa::IntoParams;

use super::{AppState, Page};
use crate::error::QueryError;
use crate::params::{self, path_id, Params};
use crate::policy::{self, Query, Scope};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/audit/export", get(export))
        .route("/v1/audit/{aggregate_type}/{id}", get(history))
}

/// One audit entry: the event with its metadata and position (also one line of the export).
pub use infra::audit_export::AuditEntry;

/// The aggregate types with a history.
pub use infra::audit_export::AGGREGATE_TYPES;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryParams {
    /// Page size, 1 to 1000 (default 1000).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Read this as-of set instead of the live audit log.
    pub as_of: Option<String>,
}

#[utoipa::path(get, path = "/v1/audit/{aggregate_type}/{id}", tag = "audit",
    params(("aggregate_type" = String, Path, description = "`user`, `order` or `payment`"),
        ("id" = Uuid, Path), HistoryParams),
    responses((status = 200, body = Page<AuditEntry>),
        (status = 403, description = "only `support` and `admin` read audit histories"),
        (status = 404, description = "unknown aggregate type, or no events for that id"),
        (status = 422, description = "invalid `limit` or `cursor`")))]
pub async fn history(
    Authenticated(principal): Authenticated,
    State(state): State<AppState>,
    Path((aggregate_type, id)): Path<(String, String)>,
    params: Result<Params<HistoryParams>, QueryError>,
) -> Result<Json<Page<AuditEntry>>, QueryError> {
    policy::require_all(&principal, Query::Audit)?;
    let Params(params) = params?;
    let what = AGGREGATE_TYPES
        .into_iter()
        .find(|known| *known == aggregate_type)
        .ok_or(QueryError::NotFound {
            what: "aggregate type",
        })?;
    let id = path_id(&id, what)?;
    let limit = params::limit(params.limit, 1000, 1000)?;
    let pool = state
        .read_pool(Scope::All, params.as_of.as_deref(), &["rm_audit"])
        .await?;
    let as_of = params.as_of.is_some();
    let after: i64 = match params.cursor.as_deref() {
        None => 0,
        Some(raw) => raw
            .parse()
            .ok()
            .filter(|n: &i64| *n >= 0)
            .ok_or_else(|| QueryError::invalid("cursor", "not a cursor this API returned"))?,
    };
    // Streamed, and cut (with a cursor to go on) once the page holds PAGE_BYTES of events:
    // a thousand events of up to 64 KiB each would otherwise be one 64 MiB answer.
    let mut rows = sqlx::query_as::<_, AuditEntry>(
        "SELECT global_position, aggregate_type, aggregate_id, sequence, event_id, event_type,
             event_version, occurred_at, actor, correlation_id, causation_id, traceparent, payload
         FROM rm_audit
         WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3
         ORDER BY sequence
         LIMIT $4",
    )
    .bind(what)
    .bind(id.to_string())
    .bind(after)
    .bind(limit + 1)
    .fetch(&pool);
    let (mut items, mut bytes, mut more) = (Vec::new(), 0, false);
    while let Some(entry) = futures::TryStreamExt::try_next(&mut rows)
        .await
        .map_err(|e| QueryError::of_read(as_of, e))?
    {
        if items.len() as i64 == limit || bytes >= infra::audit_export::PAGE_BYTES {
            more = true;
            break;
        }
        bytes += entry.payload.to_string().len();
        items.push(entry);
    }
    if items.is_empty() && after == 0 {
        return Err(QueryError::NotFound { what });
    }
    let next_cursor = match more {
        true => items.last().map(|e| e.sequence.to_string()),
        false => None,
    };
    Ok(Json(Page { items, next_cursor }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// Only this aggregate type: `user`, `order` or `payment`.
    pub aggregate_type: Option<String>,
    /// Events that occurred at or after this instant (RFC 3339).
    #[serde(default, deserialize_with = "rfc3339")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<DateTime<Utc>>,
    /// Events that occurred before this instant (RFC 3339).
    #[serde(default, deserialize_with = "rfc3339")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<DateTime<Utc>>,
    /// Resume after this global position (the last `global_position` received; default 0).
    pub after_position: Option<i64>,
}

/// An instant exactly as RFC 3339 writes it (`date-time` in the document); chrono's general
/// parser would also take a space for the `T`.
fn rfc3339<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    let raw = <String as Deserialize>::deserialize(deserializer)?;
    let separated = raw
        .as_bytes()
        .get(10)
        .is_some_and(|b| matches!(b, b'T' | b't'));
    separated
        .then(|| DateTime::parse_from_rfc3339(&raw).ok())
        .flatten()
        .map(|at| Some(at.with_timezone(&Utc)))
        .ok_or_else(|| serde::de::Error::custom("must be an RFC 3339 date-time"))
}

/// The content type of the export: one JSON object per line.
pub const NDJSON: &str = "application/x-ndjson";

#[utoipa::path(get, path = "/v1/audit/export", tag = "audit", params(ExportParams),
    responses((status = 200, content_type = "application/x-ndjson",
            body = AuditEntry,
            description = "One entry per line, from the event store, as stored (not upcast), in \
                the relay's order: by transaction id, then position (positions rise within a \
                transaction and mostly across them). Only transactions older than every one \
                still open are read, so nothing can later appear before what was sent. The \
                stream is read \
                a page at a time; if it breaks off, ask again with `after_position` set to the \
                last `global_position` received."),
        (status = 403, description = "only `support` and `admin` export the audit log"),
        (status = 404, description = "no event has the position `after_position` names"),
        (status = 422, description = "an invalid parameter, or `from` not before `to`")))]
pub async fn export(
    Authenticated(principal): Authenticated,
    State(state): State<AppState>,
    params: Result<Params<ExportParams>, QueryError>,
) -> Result<axum::response::Response, QueryError> {
    use axum::response::IntoResponse;
    policy::require_all(&principal, Query::Audit)?;
    let Params(params) = params?;
    let aggregate_type = match params.aggregate_type {
        None => None,
        Some(raw) => Some(
            AGGREGATE_TYPES
                .into_iter()
                .find(|known| *known == raw)
                .ok_or_else(|| {
                    QueryError::invalid("aggregate_type", "must be `user`, `order` or `payment`")
                })?
                .to_owned(),
        ),
    };
    if let (Some(from), Some(to)) = (params.from, params.to) {
        if from >= to {
            return Err(QueryError::invalid("from", "must be before `to`"));
        }
    }
    let after = match params.after_position {
        None => 0,
        Some(n) if n >= 0 => n,
        Some(_) => {
            return Err(QueryError::invalid(
                "after_position",
                "must be a position, 0 or more",
            ))
        }
    };
    let filter = infra::audit_export::Filter {
        aggregate_type,
        from: params.from,
        to: params.to,
    };
    let place = state
        .exports
        .places
        .clone()
        .try_acquire_owned()
        .map_err(|_| QueryError::TooManyExports)?;
    let pool = state.pool.clone();
    let cursor = match infra::audit_export::cursor(&pool, after).await {
        Ok(cursor) => cursor,
        // A well-formed position that names no event: what it refers to is not there.
        Err(infra::audit_export::CursorError::Unknown(_)) => {
            return Err(QueryError::NotFound {
                what: "event at `after_position` (resume after the last one an export returned)",
            })
        }
        Err(infra::audit_export::CursorError::Database(error)) => return Err(error.into()),
    };
    // The first page is read before the answer starts: a database that cannot be read is a
    // 503 problem, not a 200 whose body breaks off.
    let first = infra::audit_export::page(
        &pool,
        &filter,
        cursor,
        infra::audit_export::PAGE,
        AuditEntry::json_line,
    )
    .await?;
    let (handed, taken) = tokio::sync::mpsc::channel(1);
    let feed = Feed {
        pool,
        filter,
        handed,
        stall: state.exports.stall,
    };
    tokio::spawn(feed.run(first, place));
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, NDJSON),
            (axum::http::header::CACHE_CONTROL, "no-store"),
        ],
        axum::body::Body::from_stream(chunks(taken)),
    )
        .into_response())
}

/// Audit exports streaming at once (`query_api.max_exports`) and how long one waits for its
/// client to take a page (`query_api.export_stall_ms`).
pub struct Exports {
    places: Arc<tokio::sync::Semaphore>,
    stall: Duration,
}

impl Exports {
    pub fn new(max: usize, stall: Duration) -> Self {
        Self {
            places: Arc::new(tokio::sync::Semaphore::new(max.max(1))),
            stall,
        }
    }
}

/// The most bytes handed to an export's response at once.
const PIECE: usize = 64 * 1024;

/// What the task reading an export's pages hands its response.
enum Chunk {
    Page(Bytes),
    Failed(std::io::Error),
    End,
}

/// Reads an export's pages, each its own query (nothing is held open between them), and
/// hands them to the response one at a time.
struct Feed {
    pool: sqlx::PgPool,
    filter: infra::audit_export::Filter,
    handed: tokio::sync::mpsc::Sender<Chunk>,
    stall: Duration,
}

impl Feed {
    /// Holds the export's place until the last page is taken, the client goes away, or the
    /// client takes nothing for the stall limit. A client that stops reading without
    /// closing its connection (its socket buffers full) then loses its place and its stream
    /// breaks off, to be resumed with `after_position`; before, it held the place for as long
    /// as the connection lived, and `max_exports` such clients stopped every export.
    async fn run(self, first: infra::audit_export::Page, place: OwnedSemaphorePermit) {
        let _place = place;
        let mut next = first.last.filter(|_| first.full);
        let mut chunk = Chunk::Page(Bytes::from(first.text));
        loop {
            let last = !matches!(chunk, Chunk::Page(_));
            if !self.hand(chunk, next).await || last {
                return;
            }
            chunk = match next {
                None => Chunk::End,
                Some(after) => self.page(after, &mut next).await,
            };
        }
    }

    /// Hands `chunk` to the response in pieces of at most [`PIECE`] bytes, each of which the
    /// client must take within the stall limit (a slow reader still moving is not cut off
    /// for taking a whole page slowly). False when the client went away or stalled.
    async fn hand(&self, chunk: Chunk, next: Option<i64>) -> bool {
        let mut pieces = Vec::new();
        let chunk = match chunk {
            Chunk::Page(mut bytes) => {
                while bytes.len() > PIECE {
                    pieces.push(Chunk::Page(bytes.split_to(PIECE)));
                }
                Chunk::Page(bytes)
            }
            other => other,
        };
        pieces.push(chunk);
        for piece in pieces {
            match tokio::time::timeout(self.stall, self.handed.send(piece)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return false, // the client went away
                Err(_) => {
                    tracing::warn!(
                        stall_ms = self.stall.as_millis() as u64,
                        ?next,
                        "audit export: the client took nothing within the stall limit; stream cut"
                    );
                    metrics::counter!("query_api_exports_stalled_total").increment(1);
                    return false;
                }
            }
        }
        true
    }

    async fn page(&self, after: i64, next: &mut Option<i64>) -> Chunk {
        let page = infra::audit_export::page(
            &self.pool,
            &self.filter,
            Some(after),
            infra::audit_export::PAGE,
            AuditEntry::json_line,
        );
        match page.await {
            Ok(page) if page.entries == 0 => Chunk::End,
            Ok(page) => {
                *next = page.last.filter(|_| page.full);
                Chunk::Page(Bytes::from(page.text))
            }
            Err(error) => {
                tracing::error!(%error, ?after, "audit export: reading a page failed; stream cut");
                Chunk::Failed(std::io::Error::other(error))
            }
        }
    }
}

/// The response body: the pages as handed over. A feed that ended before its last page (its
/// client stalled) breaks the body off with an error, so the client sees a truncated
/// download and not a complete one.
fn chunks(
    taken: tokio::sync::mpsc::Receiver<Chunk>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::unfold(Some(taken), |taken| async move {
        let mut taken = taken?;
        match taken.recv().await {
            Some(Chunk::Page(bytes)) => Some((Ok(bytes), Some(taken))),
            Some(Chunk::Failed(error)) => Some((Err(error), None)),
            Some(Chunk::End) => None,
            None => Some((
                Err(std::io::Error::other(
                    "audit export cut: the client took no page within the stall limit",
                )),
                None,
            )),
        }
    })
}
