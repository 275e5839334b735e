//! The command core: load an aggregate, let it decide, append its events with their metadata,
//! unique claims and idempotency record in one atomic write, and answer with an [`Outcome`].
//! It knows nothing of HTTP: callers hand it [`RequestMetadata`] and a [`Dispatch`], and
//! render the outcome or the [`CommandError`] themselves.
//!
//! Guarantees upheld here: an outcome is only produced after the append committed (1); a stale
//! expected version or a concurrent writer gives a version conflict with the current version
//! (2); a rejected command writes nothing (8); every event gets a UUIDv7 id and full metadata
//! (9) (numbers as in `docs/architecture.md`).

mod error;
mod idempotent;
mod load;
mod metadata;
mod outcome;
pub mod policy;
mod references;
mod target;

use std::time::Instant;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::EventStoreAggregateContext;
use cqrs_es::{Aggregate, DomainEvent};
use domain::{DomainError, UniqueClaim};
use infra::db::{Availability, DatabaseDown};
use infra::event_store::{
    AppendError, AppendRequest, Claim, Credential, EventStore, Idempotency, NewEvent,
};
use tracing::Instrument;
use uuid::Uuid;

pub use error::{database_error, source_sqlstate, CommandError};
pub use metadata::{Actor, RequestMetadata};
pub use outcome::Outcome;
pub use target::Target;

use error::append_failed;
use idempotent::idempotency;

pub struct CommandBus {
    events: EventStore,
    /// Known unreachability of PostgreSQL: commands are refused at once instead of each
    /// waiting for the pool's timeout.
    database: Availability,
}

/// How recent another command's answer must be for a pool timeout to count as overload: under
/// load answers keep coming well within it, while the pool's timeout (500 ms by default) after
/// an outage began leaves the last one older.
const ANSWERED_LATELY: std::time::Duration = std::time::Duration::from_millis(200);

/// What deciding a command came to: an answer already (an idempotent replay), or events to
/// append.
enum Decided<E> {
    Answered(Outcome<E>),
    Append(Box<Append<E>>),
}

/// Events a command decided on, ready for the writer.
struct Append<E> {
    id: Uuid,
    request: AppendRequest,
    events: Vec<E>,
    /// What the idempotency key is bound to, should the append find the key used.
    request_hash: Vec<u8>,
}

/// One command for one aggregate.
pub struct Dispatch<A: Aggregate> {
    /// Label for metrics and logs, e.g. `place_order`.
    pub name: &'static str,
    pub id: Uuid,
    /// The id was generated for this request, so the aggregate has no history to load.
    pub new: bool,
    pub command: A::Command,
    /// SHA-256 of the request body, for binding an idempotency key to it.
    pub body_digest: [u8; 32],
    /// A password hash to store with a new user's events (registration only).
    pub credential: Option<String>,
}

impl<A: Aggregate> Dispatch<A> {
    /// A command for an aggregate that should already exist.
    pub fn existing(
        name: &'static str,
        id: Uuid,
        command: A::Command,
        body_digest: [u8; 32],
    ) -> Self {
        Self {
            name,
            id,
            new: false,
            command,
            body_digest,
            credential: None,
        }
    }

    /// A command that creates an aggregate under a fresh UUIDv7.
    pub fn create(name: &'static str, command: A::Command, body_digest: [u8; 32]) -> Self {
        Self {
            name,
            id: Uuid::now_v7(),
            new: true,
            command,
            body_digest,
            credential: None,
        }
    }
}

impl CommandBus {
    /// Snapshots are written every `event_store.snapshot_every` events by `events` itself.
    pub fn new(events: EventStore, database: Availability) -> Self {
        Self { database, events }
    }

    pub fn event_store(&self) -> &EventStore {
        &self.events
    }

    /// Loads an aggregate's current state; `None` if it has no events.
    pub async fn load<A: Target>(&self, id: Uuid) -> Result<Option<A>, CommandError>
    where
        A::Error: DomainError,
    {
        let context = load::context::<A>(&self.events, id.to_string()).await?;
        Ok((context.current_sequence > 0).then_some(context.aggregate))
    }

    /// Runs one command, with metrics.
    pub async fn execute<A: Target>(
        &self,
        meta: &RequestMetadata,
        dispatch: Dispatch<A>,
    ) -> Result<Outcome<A::Event>, CommandError>
    where
        A::Error: DomainError,
    {
        let started = Instant::now();
        let name = dispatch.name;
        let span = tracing::info_span!(
            "command",
            otel.name = %format_args!("command {name}"),
            otel.status_code = tracing::field::Empty,
            command.name = name,
            aggregate.type = A::TYPE,
            aggregate.id = %dispatch.id,
            outcome = tracing::field::Empty,
        );
        // While the database is down, nothing waits for the pool's timeout: a command is
        // refused at once, and one still being decided gives up when the outage is noticed.
        // Once its events are handed to the writer, their own outcome is awaited (the writer
        // fails within the pool's timeout): giving up then could answer 503 for events that
        // commit a moment later, and a client retrying without a key would do it twice.
        let result = match self.database.check() {
            Ok(()) => {
                async {
                    let decided = tokio::select! {
                        decided = self.decide(meta, dispatch) => decided,
                        () = self.database.went_down() => {
                            Err(CommandError::Unavailable(Box::new(DatabaseDown)))
                        }
                    };
                    match decided {
                        Ok(Decided::Answered(outcome)) => Ok(outcome),
                        Ok(Decided::Append(append)) => self.commit::<A>(append).await,
                        Err(error) => Err(error),
                    }
                }
                .instrument(span.clone())
                .await
            }
            Err(down) => Err(CommandError::Unavailable(Box::new(down))),
        };
        let result = match result {
            Err(CommandError::Unavailable(source)) => {
                // Answered lately (for a pool timeout, which waits longer than that: while this
                // command waited), and not found down: answers given just before an outage must not
                // make a command that then timed out on it look like overload (the outage test
                // caught one so answered, before any probe ran).
                let busy =
                    self.database.answered_within(ANSWERED_LATELY) && !self.database.is_down();
                let error = error::unavailable_or_busy(source, busy);
                if matches!(error, CommandError::Unavailable(_)) {
                    self.database.suspect();
                }
                span.record("otel.status_code", "error");
                Err(error)
            }
            Ok(outcome) => {
                self.database.answered();
                Ok(outcome)
            }
            Err(error) => {
                if error.database_answered() {
                    self.database.answered();
                }
                Err(error)
            }
        };
        let outcome = match &result {
            Ok(outcome) if outcome.replayed => "replayed",
            Ok(_) => "accepted",
            Err(error) => error.outcome(),
        };
        span.record("outcome", outcome);
        metrics::counter!("commands_total", "command" => name, "outcome" => outcome).increment(1);
        metrics::histogram!("command_duration_seconds", "command" => name)
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Everything before the append: the policy, an idempotent replay, loading, the owner and
    /// version checks, and the aggregate's decision.
    async fn decide<A: Target>(
        &self,
        meta: &RequestMetadata,
        dispatch: Dispatch<A>,
    ) -> Result<Decided<A::Event>, CommandError>
    where
        A::Error: DomainError,
    {
        let must_own = policy::admit(meta.principal.as_ref(), A::access(&dispatch.command))?;
        let idempotency = idempotency(meta, &dispatch.body_digest);
        if let Some(replay) = self.replay::<A>(idempotency.as_ref()).await? {
            return Ok(Decided::Answered(replay));
        }
        let mut context = self.context::<A>(&dispatch).await?;
        if must_own {
            let customer = meta.principal.as_ref().and_then(|p| p.user_id());
            let customer = customer.ok_or(CommandError::Forbidden)?;
            let support = meta
                .principal
                .as_ref()
                .is_some_and(|p| p.has(infra::auth::Role::Support));
            self.check_owner(
                customer,
                support,
                &context.aggregate,
                dispatch.id,
                &dispatch.command,
                dispatch.new,
            )
            .await?;
        }
        let credential = dispatch.credential.map(|password_hash| Credential {
            user_id: dispatch.id,
            password_hash,
        });
        let current = context.current_sequence as i64;
        // A refusal from here on may be due to a request with the same key that committed
        // while this one was loading: that request's outcome is the answer. Before, a retry
        // with `If-Match` got 409 version-conflict for its own first send's commit.
        if let Some(expected) = meta.expected_version {
            if expected != current && current > 0 {
                let conflict = CommandError::VersionConflict {
                    current_version: current,
                };
                return self
                    .refused_unless_replayed::<A>(idempotency.as_ref(), conflict)
                    .await
                    .map(Decided::Answered);
            }
        }
        let sink = EventSink::default();
        if let Err(error) = context.aggregate.handle(dispatch.command, &(), &sink).await {
            return self
                .refused_unless_replayed::<A>(
                    idempotency.as_ref(),
                    CommandError::from_domain(&error),
                )
                .await
                .map(Decided::Answered);
        }
        let events = sink.collect().await;
        let mut request =
            self.append_request::<A>(meta, &context, current, &events, idempotency)?;
        request.credential = credential;
        Ok(Decided::Append(Box::new(Append {
            id: dispatch.id,
            request,
            events,
            request_hash: meta.request_hash(&dispatch.body_digest),
        })))
    }

    /// Appends what [`Self::decide`] decided, and answers with what the append says.
    async fn commit<A: Target>(
        &self,
        append: Box<Append<A::Event>>,
    ) -> Result<Outcome<A::Event>, CommandError>
    where
        A::Error: DomainError,
    {
        let Append {
            id,
            request,
            events,
            request_hash,
        } = *append;
        match self.events.append(request).await {
            Ok(appended) => {
                metrics::counter!("events_appended_total", "aggregate_type" => A::TYPE)
                    .increment(events.len() as u64);
                Ok(Outcome::fresh(id, appended, events))
            }
            Err(AppendError::IdempotencyKeyUsed(remembered)) => {
                if remembered.request_hash != request_hash {
                    return Err(CommandError::IdempotencyKeyMismatch);
                }
                outcome::remembered::<A>(remembered.outcome)
            }
            Err(error) => Err(append_failed(error)),
        }
    }

    /// The aggregate to decide on: empty for a new id, else loaded with its snapshot.
    async fn context<A: Target>(
        &self,
        dispatch: &Dispatch<A>,
    ) -> Result<EventStoreAggregateContext<A>, CommandError>
    where
        A::Error: DomainError,
    {
        let aggregate_id = dispatch.id.to_string();
        if dispatch.new {
            return Ok(EventStoreAggregateContext {
                aggregate_id,
                aggregate: A::default(),
                current_sequence: 0,
                current_snapshot: None,
            });
        }
        load::context::<A>(&self.events, aggregate_id).await
    }

    fn append_request<A: Target>(
        &self,
        meta: &RequestMetadata,
        context: &EventStoreAggregateContext<A>,
        current: i64,
        events: &[A::Event],
        idempotency: Option<Idempotency>,
    ) -> Result<AppendRequest, CommandError>
    where
        A::Error: DomainError,
    {
        let mut new_events = Vec::with_capacity(events.len());
        let mut claims = Vec::new();
        for event in events {
            let event_id = Uuid::now_v7();
            new_events.push(NewEvent {
                event_id,
                event_type: event.event_type(),
                event_version: event.event_version(),
                payload: serde_json::to_value(event)
                    .map_err(|e| CommandError::Internal(e.into()))?,
                metadata: meta.event_metadata(event_id).to_json(),
            });
            claims.extend(A::claims(event).into_iter().map(claim));
        }
        let next = current + events.len() as i64;
        let snapshot = if self.events.snapshot_due(current, next) {
            Some(
                serde_json::to_value(&context.aggregate)
                    .map_err(|e| CommandError::Internal(e.into()))?,
            )
        } else {
            None
        };
        Ok(AppendRequest {
            aggregate_type: A::TYPE.to_owned(),
            aggregate_id: context.aggregate_id.clone(),
            expected_sequence: current,
            events: new_events,
            snapshot,
            claims,
            idempotency,
            credential: None,
        })
    }
}

fn claim(claim: UniqueClaim) -> Claim {
    match claim {
        UniqueClaim::Claim { scope, key } => Claim {
            scope: scope.to_owned(),
            key,
            release: false,
        },
        UniqueClaim::Release { scope, key } => Claim {
            scope: scope.to_owned(),
            key,
            release: true,
        },
    }
}
