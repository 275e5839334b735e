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

pub use error::{database_error, CommandError};
pub use metadata::{Actor, RequestMetadata};
pub use outcome::Outcome;
pub use target::Target;

use error::append_failed;

pub struct CommandBus {
    events: EventStore,
    /// Known unreachability of PostgreSQL: commands are refused at once instead of each
    /// waiting for the pool's timeout.
    database: Availability,
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
        let answers = self.database.answers();
        // While the database is down, nothing waits for the pool's timeout: a command is
        // refused at once, and one already waiting gives up when the outage is noticed.
        let result = match self.database.check() {
            Ok(()) => {
                async {
                    tokio::select! {
                        result = self.run(meta, dispatch) => result,
                        () = self.database.went_down() => {
                            Err(CommandError::Unavailable(Box::new(DatabaseDown)))
                        }
                    }
                }
                .instrument(span.clone())
                .await
            }
            Err(down) => Err(CommandError::Unavailable(Box::new(down))),
        };
        let result = match result {
            Err(CommandError::Unavailable(source)) => {
                let busy = self.database.answers() != answers;
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

    async fn run<A: Target>(
        &self,
        meta: &RequestMetadata,
        dispatch: Dispatch<A>,
    ) -> Result<Outcome<A::Event>, CommandError>
    where
        A::Error: DomainError,
    {
        let must_own = policy::admit(meta.principal.as_ref(), A::access(&dispatch.command))?;
        let idempotency = idempotency(meta, &dispatch.body_digest);
        if let Some(replay) = self.replay::<A>(idempotency.as_ref()).await? {
            return Ok(replay);
        }
        let mut context = self.context::<A>(&dispatch).await?;
        if must_own {
            let customer = meta.principal.as_ref().and_then(|p| p.user_id());
            let customer = customer.ok_or(CommandError::Forbidden)?;
            self.check_owner(
                customer,
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
        if let Some(expected) = meta.expected_version {
            if expected != current && current > 0 {
                return Err(CommandError::VersionConflict {
                    current_version: current,
                });
            }
        }
        let sink = EventSink::default();
        if let Err(error) = context.aggregate.handle(dispatch.command, &(), &sink).await {
            // A request with the same key may have committed while this one was loading.
            if let Some(replay) = self.replay::<A>(idempotency.as_ref()).await? {
                return Ok(replay);
            }
            return Err(CommandError::from_domain(&error));
        }
        let events = sink.collect().await;
        let mut request =
            self.append_request::<A>(meta, &context, current, &events, idempotency)?;
        request.credential = credential;
        match self.events.append(request).await {
            Ok(appended) => {
                metrics::counter!("events_appended_total", "aggregate_type" => A::TYPE)
                    .increment(events.len() as u64);
                Ok(Outcome::fresh(dispatch.id, appended, events))
            }
            Err(AppendError::IdempotencyKeyUsed(remembered)) => {
                if remembered.request_hash != meta.request_hash(&dispatch.body_digest) {
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

    /// The outcome remembered for this request's idempotency key and body, for a route that
    /// checks other aggregates before it dispatches: a repeated request is answered as the
    /// first one was even when those checks would now fail (the customer of an order placed
    /// has been deactivated since). `None` without a key or with a key not used yet.
    pub async fn replayed<A: Target>(
        &self,
        name: &'static str,
        meta: &RequestMetadata,
        body_digest: &[u8; 32],
    ) -> Result<Option<Outcome<A::Event>>, CommandError>
    where
        A::Error: DomainError,
    {
        let replayed = self
            .replay::<A>(idempotency(meta, body_digest).as_ref())
            .await;
        let outcome = match &replayed {
            Ok(Some(_)) => Some("replayed"),
            Ok(None) => None,
            Err(error) => Some(error.outcome()),
        };
        if let Some(outcome) = outcome {
            metrics::counter!("commands_total", "command" => name, "outcome" => outcome)
                .increment(1);
        }
        replayed
    }

    /// The remembered outcome for this key, or a mismatch if the key was used for another
    /// request.
    async fn replay<A: Target>(
        &self,
        idempotency: Option<&Idempotency>,
    ) -> Result<Option<Outcome<A::Event>>, CommandError>
    where
        A::Error: DomainError,
    {
        let Some(idempotency) = idempotency else {
            return Ok(None);
        };
        let Some(remembered) = self
            .events
            .remembered(&idempotency.scope, &idempotency.key)
            .await
            .map_err(database_error)?
        else {
            return Ok(None);
        };
        if remembered.request_hash != idempotency.request_hash {
            return Err(CommandError::IdempotencyKeyMismatch);
        }
        outcome::remembered::<A>(remembered.outcome).map(Some)
    }
}

/// The request's idempotency key, bound to its operation and body.
fn idempotency(meta: &RequestMetadata, body_digest: &[u8; 32]) -> Option<Idempotency> {
    meta.idempotency_key.as_ref().map(|key| Idempotency {
        scope: meta.idempotency_scope(),
        key: key.clone(),
        request_hash: meta.request_hash(body_digest),
        lasting: meta.idempotency_lasting(),
    })
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
