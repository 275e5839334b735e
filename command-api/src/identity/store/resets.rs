//! Password reset tokens: requested (at most one a minute per user, the message queued in the
//! same transaction), checked and used once.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::{new_token, revoke_user, secs, token_hash};

/// Creates a reset token for the user and queues the message that carries it, unless one
/// was made for the user in the last minute (so nobody can flood a mailbox with resets).
/// Requests for one user take turns on a transaction lock: under read committed, requests
/// running at once would each find no recent token and each queue a message.
pub async fn request_reset(
    pool: &PgPool,
    user_id: Uuid,
    recipient: &str,
    normalized_email: &str,
    ttl: Duration,
) -> Result<(), sqlx::Error> {
    let token = new_token()?;
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('password-reset:' || $1, 0))")
        .bind(user_id.to_string())
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "WITH recent AS (
             SELECT 1 FROM password_reset_tokens
             WHERE user_id = $2 AND created_at > now() - interval '1 minute'
         ), reset AS (
             INSERT INTO password_reset_tokens (token_hash, user_id, expires_at, email)
             SELECT $1, $2, now() + make_interval(secs => $3), $6
             WHERE NOT EXISTS (SELECT 1 FROM recent))
         INSERT INTO notification_outbox (kind, recipient, payload)
         SELECT 'password_reset', $4, jsonb_build_object('user_id', $2::text, 'token', $5::text,
                'expires_in_secs', $3)
         WHERE NOT EXISTS (SELECT 1 FROM recent)",
    )
    .bind(token_hash(&token))
    .bind(user_id)
    .bind(secs(ttl))
    .bind(recipient)
    .bind(&token)
    .bind(normalized_email)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// What makes a reset token usable (with `$1` its hash, `$2` the email claims' scope): known,
/// unused, unexpired, and sent to an email its user still has.
const USABLE: &str = "token_hash = $1 AND used_at IS NULL AND expires_at > now()
    AND (email IS NULL OR EXISTS (SELECT 1 FROM unique_claims c
         WHERE c.scope = $2 AND c.key = password_reset_tokens.email
           AND c.aggregate_type = 'user' AND c.aggregate_id = password_reset_tokens.user_id::text))";

/// Whether a reset token is usable ([`USABLE`]; checked before hashing anything).
pub async fn reset_token_usable(pool: &PgPool, token: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(&format!(
        "SELECT EXISTS (SELECT 1 FROM password_reset_tokens WHERE {USABLE})"
    ))
    .bind(token_hash(token))
    .bind(domain::user::EMAIL_SCOPE)
    .fetch_one(pool)
    .await
}

/// Uses a reset token ([`USABLE`]): sets the new password hash, ends every other reset token of the user
/// and revokes all their refresh families, in one transaction. `None` when the token is
/// unknown, used or expired.
pub async fn confirm_reset(
    pool: &PgPool,
    token: &str,
    password_hash: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // The user's reset lock first (the one requests take), before any token row: two of the
    // user's tokens confirmed at once would otherwise each lock its own row and then wait for
    // the other's in the update of every token below, and one would fail as a deadlock. In
    // turn, the second finds its token used by the first and is refused.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('password-reset:' || user_id::text, 0))
         FROM password_reset_tokens WHERE token_hash = $1",
    )
    .bind(token_hash(token))
    .execute(&mut *tx)
    .await?;
    let user_id: Option<Uuid> = sqlx::query_scalar(&format!(
        "UPDATE password_reset_tokens SET used_at = now() WHERE {USABLE} RETURNING user_id"
    ))
    .bind(token_hash(token))
    .bind(domain::user::EMAIL_SCOPE)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(user_id) = user_id else {
        return Ok(None);
    };
    // Inserted for a user without credentials (registered before accounts had passwords): the
    // reset is how such a user gets a first one.
    sqlx::query(
        "INSERT INTO credentials (user_id, password_hash) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE
         SET password_hash = EXCLUDED.password_hash,
             password_generation = credentials.password_generation + 1,
             rehashed_from = NULL, updated_at = now()",
    )
    .bind(user_id)
    .bind(password_hash)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE password_reset_tokens SET used_at = now() WHERE user_id = $1 AND used_at IS NULL",
    )
    .bind(user_id)
    .execute(&mut *tx)
    .await?;
    revoke_user(&mut tx, user_id, "password-reset").await?;
    tx.commit().await?;
    Ok(Some(user_id))
}
