//! `rm_audit`: every event of every aggregate with its metadata (who, when, why, trace).

use sqlx::PgConnection;

use super::ApplyError;
use crate::bulk::{CopyRows, Fold, TableRows};
use crate::envelope::Envelope;
use crate::projection::{ApplyFuture, Projection, ReadModel, Table};

/// The `audit` read model.
pub struct Audit;

impl Projection for Audit {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn aggregates(&self) -> &'static [&'static str] {
        &["user", "order", "payment"]
    }

    fn apply<'a>(&'a self, conn: &'a mut PgConnection, event: &'a Envelope) -> ApplyFuture<'a> {
        Box::pin(apply(conn, event))
    }
}

impl ReadModel for Audit {
    fn tables(&self) -> &'static [Table] {
        &[Table { name: "rm_audit" }]
    }

    fn fold(&self) -> Box<dyn Fold> {
        Box::new(AuditFold(CopyRows::new()))
    }
}

async fn apply(conn: &mut PgConnection, e: &Envelope) -> Result<(), ApplyError> {
    sqlx::query(
        "INSERT INTO rm_audit (aggregate_type, aggregate_id, sequence, event_id, event_type, event_version,
             occurred_at, actor, correlation_id, causation_id, traceparent, payload, global_position)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (aggregate_type, aggregate_id, sequence) DO NOTHING",
    )
    .bind(&e.aggregate_type)
    .bind(&e.aggregate_id)
    .bind(e.sequence)
    .bind(e.event_id)
    .bind(&e.event_type)
    .bind(&e.event_version)
    .bind(e.occurred_at)
    .bind(&e.actor)
    .bind(&e.correlation_id)
    .bind(&e.causation_id)
    .bind(&e.traceparent)
    .bind(&e.payload)
    .bind(e.global_position)
    .execute(conn)
    .await?;
    Ok(())
}

/// `rm_audit` folded in memory: a row per event, written after every chunk (see
/// [`crate::bulk`]). The log holds each (aggregate, sequence) once, so `apply`'s conflict
/// clause never applies to a rebuild.
struct AuditFold(CopyRows);

impl Fold for AuditFold {
    fn fold(&mut self, e: &Envelope) -> Result<(), ApplyError> {
        self.0
            .text(&e.aggregate_type)
            .text(&e.aggregate_id)
            .int(e.sequence)
            .uuid(&e.event_id)
            .text(&e.event_type)
            .text(&e.event_version)
            .time(&e.occurred_at)
            .text(&e.actor)
            .text(&e.correlation_id)
            .text(&e.causation_id)
            .text(&e.traceparent)
            .json(&e.payload)
            .int(e.global_position)
            .end_row();
        Ok(())
    }

    fn take(&mut self, _done: bool) -> Vec<TableRows> {
        vec![TableRows {
            table: "rm_audit",
            columns:
                "aggregate_type, aggregate_id, sequence, event_id, event_type, event_version, \
                      occurred_at, actor, correlation_id, causation_id, traceparent, payload, \
                      global_position",
            rows: self.0.take_leaving_room(),
        }]
    }
}
