//! What an append asks for and what it answers: shared by the transactional writer
//! ([`super::EventStore::append`]) and the group-commit queue, so neither imports the other.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
}

/// A unique value to claim for this aggregate, or to release from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub scope: String,
    pub key: String,
    pub release: bool,
}

/// An idempotency key and the hash of the request it was first used with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub scope: String,
    pub key: String,
    pub request_hash: Vec<u8>,
    /// Kept for good instead of for the TTL: the key names one event of another system for
    /// ever (a payment provider's event id), which may be sent again at any time.
    pub lasting: bool,
}

/// What a command did, as remembered under its idempotency key: enough to answer a repeated
/// request exactly like the first one, in whatever form the caller renders outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedOutcome {
    /// The aggregate the command ran on.
    pub id: String,
    /// The aggregate's version after the command.
    pub version: i64,
    /// Global position of the command's last event.
    pub position: i64,
    /// The payloads of the events the command produced, in order.
    pub events: Vec<serde_json::Value>,
    /// Each event's type and version as written, in the same order: a replay long after (the
    /// keys of machine clients are kept for good) upcasts what an event type has become since,
    /// as loading from the store does. Empty in outcomes recorded before it was kept, whose
    /// events were all at the versions current since (no event version has changed after
    /// outcomes were first recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<RecordedKind>,
}

/// An event's type and version, as recorded with an outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedKind {
    pub event_type: String,
    pub event_version: String,
}

/// A remembered outcome and the hash of the request that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Remembered {
    pub outcome: RecordedOutcome,
    pub request_hash: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The aggregate's version the events were decided against; they get the next sequences.
    pub expected_sequence: i64,
    pub events: Vec<NewEvent>,
    /// The aggregate's state after these events, written as its snapshot.
    pub snapshot: Option<serde_json::Value>,
    pub claims: Vec<Claim>,
    pub idempotency: Option<Idempotency>,
    /// A credential to store with the events (a new user's password hash): never an event,
    /// but written in the same transaction so that neither exists without the other.
    pub credential: Option<Credential>,
}

/// A password hash for the user the events create.
#[derive(Clone)]
pub struct Credential {
    pub user_id: Uuid,
    pub password_hash: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl AppendRequest {
    /// The outcome to remember once the events landed as `appended`.
    pub fn outcome(&self, appended: &Appended) -> RecordedOutcome {
        RecordedOutcome {
            id: self.aggregate_id.clone(),
            version: appended.version,
            position: appended.position,
            events: self.events.iter().map(|e| e.payload.clone()).collect(),
            kinds: self
                .events
                .iter()
                .map(|e| RecordedKind {
                    event_type: e.event_type.clone(),
                    event_version: e.event_version.clone(),
                })
                .collect(),
        }
    }
}

/// Where the new events landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The aggregate's version after the append.
    pub version: i64,
    /// Global position of the last new event.
    pub position: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("the aggregate was changed concurrently; it is now at version {current_version}")]
    VersionConflict { current_version: i64 },
    #[error("the {scope} value is already taken")]
    ClaimTaken { scope: String },
    #[error("the idempotency key was already used")]
    IdempotencyKeyUsed(Remembered),
    #[error("nothing to append")]
    Empty,
    /// PostgreSQL refused a value of this request (SQLSTATE class 22); the request is at
    /// fault, and in a group commit only this request gets the answer.
    #[error("the event store refused a value of the request")]
    InvalidData(#[source] Arc<sqlx::Error>),
    #[error("the event store is shutting down")]
    Closed,
    /// The database was found unreachable before this append sent anything: nothing was
    /// written (see [`super::EventStore::failing_fast`]).
    #[error("the database is unreachable; nothing was written")]
    DatabaseDown,
    #[error("event store query failed")]
    Database(#[source] Arc<sqlx::Error>),
}

/// A database error of an append: a value PostgreSQL refused is the request's fault
/// ([`AppendError::InvalidData`]), anything else the store's.
pub(crate) fn db(error: sqlx::Error) -> AppendError {
    if crate::db::is_data_exception(&error) {
        AppendError::InvalidData(Arc::new(error))
    } else {
        AppendError::Database(Arc::new(error))
    }
}

/// Turns unique violations into the conflicts they mean.
pub(crate) fn classify(error: sqlx::Error, request: &AppendRequest) -> AppendError {
    if let sqlx::Error::Database(db) = &error {
        if db.code().as_deref() == Some("23505") {
            match db.constraint() {
                Some("events_pkey") => {
                    return AppendError::VersionConflict { current_version: 0 };
                }
                Some("unique_claims_pkey") => {
                    let scope = request
                        .claims
                        .iter()
                        .find(|c| !c.release)
                        .map(|c| c.scope.clone())
                        .unwrap_or_default();
                    return AppendError::ClaimTaken { scope };
                }
                _ => {}
            }
        }
    }
    self::db(error)
}
