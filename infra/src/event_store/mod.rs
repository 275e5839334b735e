//! The event store: PostgreSQL tables created by `infra/migrations`, read through postgres-es
//! (the command API reads an aggregate's snapshot and events in one statement instead,
//! [`EventStore::load_stream`]) and written by [`EventStore::append`], which adds what
//! postgres-es cannot do on its own:
//!
//! - every event gets an `event_id`, and the database assigns `global_position` and `tx_id`;
//! - unique claims (a user's email) and the idempotency record are written atomically with the
//!   events — in one statement when possible, in one transaction otherwise;
//! - a version conflict is reported with the aggregate's current version;
//! - the global positions of the new events are returned, so a command response can name them.
//!
//! See `docs/adr/0001-event-store-side-writes.md` for why this wraps postgres-es rather than
//! using triggers.

mod append;
mod batch;
mod insert;
mod load;
mod metadata;
mod repository;
mod types;

pub use append::EventStore;
pub use load::{LoadedStream, StoredSnapshot};
pub use metadata::{message_headers, EventMetadata, HeaderMetadata, PublishedEvent};
pub use repository::PgEventRepository;
pub use types::{
    AppendError, AppendRequest, Appended, Claim, Credential, Idempotency, NewEvent, RecordedKind,
    RecordedOutcome, Remembered,
};
