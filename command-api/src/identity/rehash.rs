//! Upgrading a password hash made with older argon2 costs after a successful login.

use infra::secrecy::SecretString;

use super::store;
use crate::state::AppState;

/// Replaces `old`, just verified for `password`, with a hash of today's parameters, after the
/// answer (the login does not wait for a second hash). Best effort: a hashing queue that is
/// full or a failed write leaves the old hash, which still verifies, for the next login.
pub(super) fn upgrade_hash(
    state: &AppState,
    user_id: uuid::Uuid,
    old: String,
    password: SecretString,
) {
    let identity = state.identity.clone();
    tokio::spawn(async move {
        let outcome = match identity.passwords.hash(&password).await {
            Ok(new) => match store::upgrade_hash(&identity.pool, user_id, &old, &new).await {
                Ok(true) => "upgraded",
                Ok(false) => "changed",
                Err(error) => {
                    tracing::warn!(%error, %user_id, "storing an upgraded password hash failed");
                    "failed"
                }
            },
            Err(error) => {
                tracing::debug!(%error, %user_id, "password hash not upgraded now");
                "failed"
            }
        };
        metrics::counter!("auth_password_rehashes_total", "outcome" => outcome).increment(1);
    });
}
