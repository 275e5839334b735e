//! The command bus: load an aggregate, let it decide, append its events with their metadata,
//! unique claims and idempotency record in one atomic write, and answer with where they landed.
//!
//! Guarantees upheld here: a reply is only produced after the append committed (1); a stale
//! `If-Match` or a concurrent writer gives 409 with the current version (2); a rejected command
//! writes nothing (8); every event gets a UUIDv7 id and full metadata (9).

use std::time::Instant;

use axum::http::StatusCode;
use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateError, DomainEvent, EventStore as _};
use domain::{DomainError, Order, Payment, UniqueClaim, User};
use infra::event_store::{
    AppendError, AppendRequest, Appended, Claim, EventStore, Idempotency, NewEvent,
    PgEventRepository, StoredResponse,
};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{database_error, shared_database_error, ApiError};
use crate::http::CommandContext;

type Store<A> = PersistedEventStore<PgEventRepository, A>;

pub struct CommandBus {
    events: EventStore,
    users: Store<User>,
    orders: Store<Order>,
    payments: Store<Payment>,
}

/// An aggregate the bus can drive.
pub trait Target: Aggregate<Services = ()> + Send + Sync
where
    Self::Error: DomainError,
{
    /// Name used in 404 problems, e.g. `user`.
    const NAME: &'static str;
    fn store(bus: &CommandBus) -> &Store<Self>;
    fn claims(_event: &Self::Event) -> Vec<UniqueClaim> {
        Vec::new()
    }
}

impl Target for User {
    const NAME: &'static str = "user";
    fn store(bus: &CommandBus) -> &Store<Self> {
        &bus.users
    }
    fn claims(event: &Self::Event) -> Vec<UniqueClaim> {
        event.unique_claims()
    }
}
impl Target for Order {
    const NAME: &'static str = "order";
    fn store(bus: &CommandBus) -> &Store<Self> {
        &bus.orders
    }
}
impl Target for Payment {
    const NAME: &'static str = "payment";
    fn store(bus: &CommandBus) -> &Store<Self> {
        &bus.payments
    }
}

/// One command for one aggregate.
pub struct Dispatch<A: Aggregate> {
    /// Label for metrics and logs, e.g. `place_order`.
    pub name: &'static str,
    pub id: Uuid,
    /// The id was generated for this request, so the aggregate has no history to load.
    pub new: bool,
    pub command: A::Command,
    pub body_digest: [u8; 32],
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
        }
    }
}

/// What a handler sees after a successful append, to shape its response.
pub struct Committed<'a, A: Aggregate> {
    pub id: Uuid,
    pub version: i64,
    pub position: i64,
    pub events: &'a [A::Event],
}

/// A command's HTTP answer; `replayed` is true when it was remembered under an idempotency key.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Value,
    pub replayed: bool,
}

impl CommandBus {
    pub fn new(events: EventStore, snapshot_every: usize) -> Self {
        Self {
            users: store(&events, snapshot_every),
            orders: store(&events, snapshot_every),
            payments: store(&events, snapshot_every),
            events,
        }
    }

    pub fn event_store(&self) -> &EventStore {
        &self.events
    }

    /// Loads an aggregate's current state; `None` if it has no events.
    pub async fn load<A: Target>(&self, id: Uuid) -> Result<Option<A>, ApiError>
    where
        A::Error: DomainError,
    {
        let context = A::store(self)
            .load_aggregate(&id.to_string())
            .await
            .map_err(load_error)?;
        Ok((context.current_sequence > 0).then_some(context.aggregate))
    }

    /// Runs one command, with metrics.
    pub async fn execute<A: Target>(
        &self,
        ctx: &CommandContext,
        dispatch: Dispatch<A>,
        respond: impl Fn(&Committed<A>) -> (StatusCode, Value),
    ) -> Result<Reply, ApiError>
    where
        A::Error: DomainError,
    {
        let started = Instant::now();
        let name = dispatch.name;
        let result = self.run(ctx, dispatch, respond).await;
        let outcome = match &result {
            Ok(reply) if reply.replayed => "replayed",
            Ok(_) => "accepted",
            Err(error) => error.outcome(),
        };
        metrics::counter!("commands_total", "command" => name, "outcome" => outcome).increment(1);
        metrics::histogram!("command_duration_seconds", "command" => name)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn run<A: Target>(
        &self,
        ctx: &CommandContext,
        dispatch: Dispatch<A>,
        respond: impl Fn(&Committed<A>) -> (StatusCode, Value),
    ) -> Result<Reply, ApiError>
    where
        A::Error: DomainError,
    {
        let idempotency = ctx.idempotency_key.as_ref().map(|key| Idempotency {
            scope: ctx.actor.0.clone(),
            key: key.clone(),
            request_hash: ctx.request_hash(&dispatch.body_digest),
        });
        if let Some(replay) = self.replay(idempotency.as_ref()).await? {
            return Ok(replay);
        }
        let aggregate_id = dispatch.id.to_string();
        let mut context = if dispatch.new {
            EventStoreAggregateContext {
                aggregate_id: aggregate_id.clone(),
                aggregate: A::default(),
                current_sequence: 0,
                current_snapshot: None,
            }
        } else {
            A::store(self)
                .load_aggregate(&aggregate_id)
                .await
                .map_err(load_error)?
        };
        let current = context.current_sequence as i64;
        if let Some(expected) = ctx.expected_version {
            if expected != current && current > 0 {
                return Err(ApiError::VersionConflict {
                    current_version: current,
                });
            }
        }
        let sink = EventSink::default();
        if let Err(error) = context.aggregate.handle(dispatch.command, &(), &sink).await {
            // A request with the same key may have committed while this one was loading.
            if let Some(replay) = self.replay(idempotency.as_ref()).await? {
                return Ok(replay);
            }
            return Err(ApiError::from_domain(&error));
        }
        let events = sink.collect().await;
        let request = self.append_request::<A>(ctx, &context, current, &events, idempotency)?;
        let mut reply = None;
        let appended = self
            .events
            .append(request, |appended| {
                let (status, body) = respond(&committed(dispatch.id, appended, &events));
                reply = Some((status, body.clone()));
                Some(StoredResponse {
                    status: status.as_u16(),
                    body,
                    request_hash: Vec::new(),
                })
            })
            .await;
        let appended = match appended {
            Ok(appended) => appended,
            Err(error) => return self.append_failed(ctx, error, &dispatch.body_digest),
        };
        metrics::counter!("events_appended_total", "aggregate_type" => A::TYPE)
            .increment(events.len() as u64);
        let (status, body) =
            reply.unwrap_or_else(|| respond(&committed(dispatch.id, &appended, &events)));
        Ok(Reply {
            status,
            body,
            replayed: false,
        })
    }

    fn append_request<A: Target>(
        &self,
        ctx: &CommandContext,
        context: &EventStoreAggregateContext<A>,
        current: i64,
        events: &[A::Event],
        idempotency: Option<Idempotency>,
    ) -> Result<AppendRequest, ApiError>
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
                payload: serde_json::to_value(event).map_err(|e| ApiError::Internal(e.into()))?,
                metadata: ctx.metadata(event_id).to_json(),
            });
            claims.extend(A::claims(event).into_iter().map(|claim| match claim {
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
            }));
        }
        let next = current + events.len() as i64;
        let snapshot = if self.events.snapshot_due(current, next) {
            Some(
                serde_json::to_value(&context.aggregate)
                    .map_err(|e| ApiError::Internal(e.into()))?,
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
        })
    }

    /// The remembered reply for this key, or 422 if the key was used for another request.
    async fn replay(&self, idempotency: Option<&Idempotency>) -> Result<Option<Reply>, ApiError> {
        let Some(idempotency) = idempotency else {
            return Ok(None);
        };
        let stored = self
            .events
            .idempotent_response(&idempotency.scope, &idempotency.key)
            .await
            .map_err(database_error)?;
        stored
            .map(|stored| replayed(stored, &idempotency.request_hash))
            .transpose()
    }

    fn append_failed(
        &self,
        ctx: &CommandContext,
        error: AppendError,
        body_digest: &[u8; 32],
    ) -> Result<Reply, ApiError> {
        match error {
            AppendError::VersionConflict { current_version } => {
                Err(ApiError::VersionConflict { current_version })
            }
            AppendError::ClaimTaken { scope } => Err(ApiError::Taken { scope }),
            AppendError::IdempotencyKeyUsed(stored) => {
                replayed(stored, &ctx.request_hash(body_digest))
            }
            AppendError::Database(error) => Err(shared_database_error(error)),
            AppendError::Closed => Err(ApiError::Unavailable(Box::new(AppendError::Closed))),
            AppendError::Empty => Err(ApiError::Internal("a command produced no events".into())),
        }
    }
}

fn store<A: Aggregate>(events: &EventStore, snapshot_every: usize) -> Store<A> {
    let repo = PgEventRepository::new(events.clone());
    let store = if snapshot_every > 0 {
        PersistedEventStore::new_snapshot_store(repo, snapshot_every)
    } else {
        PersistedEventStore::new_event_store(repo)
    };
    store.with_upcasters(domain::upcast::upcasters())
}

fn committed<'a, A: Aggregate>(
    id: Uuid,
    appended: &Appended,
    events: &'a [A::Event],
) -> Committed<'a, A> {
    Committed {
        id,
        version: appended.version,
        position: appended.position,
        events,
    }
}

fn replayed(stored: StoredResponse, request_hash: &[u8]) -> Result<Reply, ApiError> {
    if stored.request_hash != request_hash {
        return Err(ApiError::IdempotencyKeyMismatch);
    }
    Ok(Reply {
        status: StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK),
        body: stored.body,
        replayed: true,
    })
}

/// Loading failed: unreachable database is 503, anything else is ours (500).
fn load_error<E: std::error::Error>(error: AggregateError<E>) -> ApiError {
    match error {
        AggregateError::DatabaseConnectionError(source) => ApiError::Unavailable(source),
        AggregateError::UnexpectedError(source) => match source.downcast::<sqlx::Error>() {
            Ok(sql) => database_error(*sql),
            Err(other) => ApiError::Internal(other),
        },
        AggregateError::DeserializationError(source) => ApiError::Internal(source),
        AggregateError::UserError(inner) => ApiError::Internal(inner.to_string().into()),
        AggregateError::AggregateConflict => ApiError::VersionConflict { current_version: 0 },
    }
}
