//! [`RequestMetadata`]: everything about a command that is not its body: who asks, how it
//! relates to other messages, the trace it belongs to and the preconditions it carries. A plain
//! type: the HTTP edge builds it from headers (`crate::http`), the process manager's requests
//! arrive the same way, and the core never sees a header.

use chrono::{SecondsFormat, Utc};
use infra::auth::Principal;
use infra::event_store::EventMetadata;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Who issues a command, as recorded in every event it produces: the principal's `sub`
/// (`user:<id>` or `service:<client_id>`); for a registration without a token, the new user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

#[derive(Debug, Clone)]
pub struct RequestMetadata {
    /// The authenticated caller; `None` only for a registration without a token.
    pub principal: Option<Principal>,
    pub actor: Actor,
    /// This command's own id; the default causation id.
    pub command_id: Uuid,
    pub correlation_id: String,
    pub causation_id: String,
    /// W3C trace context under which the command runs.
    pub traceparent: String,
    /// The aggregate version the caller decided against, if it named one.
    pub expected_version: Option<i64>,
    pub idempotency_key: Option<String>,
    /// For a caller without a token (a registration), the scope its idempotency keys are kept
    /// in: the route names it after what the request is about (the email's digest), so that
    /// strangers cannot use up each other's keys.
    pub anonymous_scope: Option<String>,
    /// What was asked, e.g. `POST /v1/orders/<id>/confirm`: an idempotency key is bound to it
    /// and to the body.
    pub operation: String,
}

impl RequestMetadata {
    /// The namespace of this caller's idempotency keys: its `sub`, so that no client can use
    /// up a key another will send; without a token, the route's [`Self::anonymous_scope`].
    pub fn idempotency_scope(&self) -> String {
        match (&self.principal, &self.anonymous_scope) {
            (Some(principal), _) => principal.sub(),
            (None, Some(scope)) => format!("anonymous:{scope}"),
            (None, None) => "anonymous".to_owned(),
        }
    }

    /// Whether this caller's keys are kept for good instead of for the TTL: a machine client's
    /// name its decisions for good (a payment provider's event id, the process manager's
    /// `pm-refund-<event>-<payment>-<amount>`), and it may send one again days later (a
    /// provider's retry, a parked command reset), so that a refund done once is not done twice.
    pub fn idempotency_lasting(&self) -> bool {
        self.principal
            .as_ref()
            .is_some_and(|p| matches!(p.subject, infra::auth::Subject::Service(_)))
    }

    /// The metadata of an event this command produces.
    pub fn event_metadata(&self, event_id: Uuid) -> EventMetadata {
        EventMetadata {
            event_id,
            occurred_at: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            actor: self.actor.0.clone(),
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id.clone(),
            // Under the command's span while spans are exported, so that the relay's and the
            // projector's spans join the trace below it.
            traceparent: infra::telemetry::propagation::current_traceparent()
                .unwrap_or_else(|| self.traceparent.clone()),
        }
    }

    /// The fingerprint of the request an idempotency key is bound to: SHA-256 over the
    /// operation's digest and the body's digest (the form records already stored carry).
    pub fn request_hash(&self, body_digest: &[u8; 32]) -> Vec<u8> {
        let mut hasher = Sha256::new();
        hasher.update(Sha256::digest(self.operation.as_bytes()));
        hasher.update(body_digest);
        hasher.finalize().to_vec()
    }
}
