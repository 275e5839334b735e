//! [`Outcome`]: what a command did. The core answers with it; the HTTP edge renders it. A
//! repeated request with the same idempotency key gets the remembered outcome back, rendered by
//! the same code, so a replayed answer cannot drift from a fresh one.

use cqrs_es::Aggregate;
use infra::event_store::{Appended, RecordedOutcome};
use uuid::Uuid;

use super::error::CommandError;

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<E> {
    /// The aggregate's id.
    pub id: Uuid,
    /// The aggregate's version after the command.
    pub version: i64,
    /// Global position of the command's last event.
    pub position: i64,
    /// The events the command produced, in order.
    pub events: Vec<E>,
    /// True when this is the remembered outcome of an earlier request with the same key.
    pub replayed: bool,
}

impl<E> Outcome<E> {
    pub(super) fn fresh(id: Uuid, appended: Appended, events: Vec<E>) -> Self {
        Self {
            id,
            version: appended.version,
            position: appended.position,
            events,
            replayed: false,
        }
    }
}

/// Rebuilds a remembered outcome with the aggregate's own event type.
pub(super) fn remembered<A: Aggregate>(
    recorded: RecordedOutcome,
) -> Result<Outcome<A::Event>, CommandError> {
    let id = recorded
        .id
        .parse()
        .map_err(|e: uuid::Error| CommandError::Internal(e.into()))?;
    // An event type changed since the outcome was recorded is upcast first, as loading from
    // the store does; outcomes recorded without their kinds hold current versions only.
    let kinds = recorded.kinds;
    let upcast = |(i, payload): (usize, serde_json::Value)| match kinds.get(i) {
        Some(kind) => domain::upcast::upcast(&kind.event_type, &kind.event_version, payload).1,
        None => payload,
    };
    let events = recorded
        .events
        .into_iter()
        .enumerate()
        .map(upcast)
        .map(serde_json::from_value)
        .collect::<Result<Vec<A::Event>, _>>()
        .map_err(|e| CommandError::Internal(e.into()))?;
    Ok(Outcome {
        id,
        version: recorded.version,
        position: recorded.position,
        events,
        replayed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{User, UserEvent};
    use infra::event_store::{AppendRequest, NewEvent};

    #[test]
    fn a_remembered_outcome_equals_the_fresh_one_but_for_the_replay_mark() {
        let id = Uuid::now_v7();
        let event = UserEvent::Deactivated { reason: None };
        let request = AppendRequest {
            aggregate_type: "user".into(),
            aggregate_id: id.to_string(),
            expected_sequence: 3,
            events: vec![NewEvent {
                event_id: Uuid::now_v7(),
                event_type: "UserDeactivated".into(),
                event_version: "1".into(),
                payload: serde_json::to_value(&event).unwrap(),
                metadata: serde_json::json!({}),
            }],
            snapshot: None,
            claims: vec![],
            idempotency: None,
            credential: None,
        };
        let appended = Appended {
            version: 4,
            position: 17,
        };
        let fresh = Outcome::fresh(id, appended, vec![event]);
        let again = remembered::<User>(request.outcome(&appended)).unwrap();
        assert!(again.replayed);
        assert_eq!(
            Outcome {
                replayed: false,
                ..again
            },
            fresh
        );
    }

    /// An outcome recorded when an event type was at an older version replays upcast, as the
    /// store's events load: before, its payload was decoded into today's type as it was, and
    /// the replay failed (a 500) once the type had changed.
    #[test]
    fn an_outcome_recorded_at_an_older_event_version_replays_upcast() {
        let id = Uuid::now_v7();
        // `UserRegistered` version 1 had no roles.
        let v1 = serde_json::json!({
            "type": "UserRegistered",
            "email": "old@example.com",
            "display_name": "Old",
        });
        let recorded = |kinds| infra::event_store::RecordedOutcome {
            id: id.to_string(),
            version: 1,
            position: 5,
            events: vec![v1.clone()],
            kinds,
        };
        let replayed = remembered::<User>(recorded(vec![infra::event_store::RecordedKind {
            event_type: "UserRegistered".into(),
            event_version: "1".into(),
        }]))
        .expect("upcast and decoded");
        match &replayed.events[..] {
            [UserEvent::Registered { roles, .. }] => assert_eq!(roles.len(), 1, "{roles:?}"),
            other => panic!("{other:?}"),
        }
        // Without the kinds the payload is taken as current, and this one is not.
        assert!(remembered::<User>(recorded(Vec::new())).is_err());
    }
}
