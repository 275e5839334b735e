//! Idempotency keys in the command core: a request sent again under its key is answered as
//! the first one was, and a key reused for another request is refused.

use domain::DomainError;
use infra::event_store::Idempotency;

use super::{database_error, outcome, CommandBus, CommandError, Outcome, RequestMetadata, Target};

impl CommandBus {
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

    /// `refusal`, unless a request with the same key committed while this one was loading (its
    /// first look found nothing yet): then that request's outcome, which a retry must get.
    pub(super) async fn refused_unless_replayed<A: Target>(
        &self,
        idempotency: Option<&Idempotency>,
        refusal: CommandError,
    ) -> Result<Outcome<A::Event>, CommandError>
    where
        A::Error: DomainError,
    {
        match self.replay::<A>(idempotency).await? {
            Some(replay) => Ok(replay),
            None => Err(refusal),
        }
    }

    /// The remembered outcome for this key, or a mismatch if the key was used for another
    /// request.
    pub(super) async fn replay<A: Target>(
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
pub(super) fn idempotency(meta: &RequestMetadata, body_digest: &[u8; 32]) -> Option<Idempotency> {
    meta.idempotency_key.as_ref().map(|key| Idempotency {
        scope: meta.idempotency_scope(),
        key: key.clone(),
        request_hash: meta.request_hash(body_digest),
        lasting: meta.idempotency_lasting(),
    })
}
