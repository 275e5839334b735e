//! Upcasters: stored JSON events of older versions are rewritten to the current version when
//! they are loaded (by the event store and by the relay), so the aggregates and every consumer
//! only ever see current events. Each old version has a fixture in `schemas/fixtures/` that a
//! test upcasts and decodes.

use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde_json::{json, Value};

/// Rewrites one event type from one version to the next. Versions are plain integers, as in
/// `DomainEvent::event_version` and the schema file names.
#[derive(Clone, Copy)]
struct Step {
    event_type: &'static str,
    from: &'static str,
    to: &'static str,
    rewrite: fn(Value) -> Value,
}

impl EventUpcaster for Step {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        event_type == self.event_type && event_version == self.from
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        event.payload = (self.rewrite)(event.payload);
        event.event_version = self.to.to_owned();
        event
    }
}

/// Every step, oldest first.
const STEPS: &[Step] = &[Step {
    event_type: "UserRegistered",
    from: "1",
    to: "2",
    rewrite: user_registered_v1_to_v2,
}];

/// Every upcaster, oldest step first, for `PersistedEventStore::with_upcasters`.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    STEPS
        .iter()
        .map(|step| Box::new(*step) as Box<dyn EventUpcaster>)
        .collect()
}

/// `UserRegistered` v1 did not record roles; every user then got the customer role.
fn user_registered_v1_to_v2(mut payload: Value) -> Value {
    if let Some(fields) = payload.as_object_mut() {
        fields.entry("roles").or_insert_with(|| json!(["customer"]));
    }
    payload
}

/// Upcasts one stored event's payload; returns the version it is now at and the payload. The
/// same steps as [`upcasters`], applied in place: the relay, replay and every command's load
/// call this for each event, so it allocates nothing beyond the returned version.
pub fn upcast(event_type: &str, event_version: &str, mut payload: Value) -> (String, Value) {
    let mut version = event_version.to_owned();
    for step in STEPS {
        if step.event_type == event_type && step.from == version {
            payload = (step.rewrite)(payload);
            version = step.to.to_owned();
        }
    }
    (version, payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UserEvent;

    #[test]
    fn user_registered_v1_gets_the_customer_role() {
        let v1 = json!({"type": "UserRegistered", "email": "a@b.co", "display_name": "A"});
        let (version, payload) = upcast("UserRegistered", "1", v1);
        assert_eq!(version, "2");
        let event: UserEvent = serde_json::from_value(payload).unwrap();
        assert!(matches!(event, UserEvent::Registered { ref roles, .. } if roles.len() == 1));
    }

    #[test]
    fn the_boxed_upcasters_and_upcast_agree() {
        let v1 = json!({"type": "UserRegistered", "email": "a@b.co", "display_name": "A"});
        let event = SerializedEvent::new(
            "id".into(),
            1,
            "user".into(),
            "UserRegistered".into(),
            "1".into(),
            v1.clone(),
            Value::Null,
        );
        let boxed = upcasters().iter().fold(event, |event, upcaster| {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                upcaster.upcast(event)
            } else {
                event
            }
        });
        assert_eq!(
            upcast("UserRegistered", "1", v1),
            (boxed.event_version, boxed.payload)
        );
    }

    #[test]
    fn current_versions_are_left_alone() {
        let v2 =
            json!({"type": "UserRegistered", "email": "a@b.co", "display_name": "A", "roles": []});
        assert_eq!(
            upcast("UserRegistered", "2", v2.clone()),
            ("2".to_owned(), v2)
        );
    }
}
