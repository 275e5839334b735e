//! The identity tables (`infra/migrations/20261201000001_identity.sql`): credentials, refresh
//! families and tokens, reset tokens and the notification outbox. Tokens handed out are
//! random 256-bit strings; only their SHA-256 is stored, so a copy of the database cannot be
//! used to log in.

use std::time::Duration;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

mod resets;

pub use resets::{confirm_reset, request_reset, reset_token_usable};

/// A new opaque token: 32 random bytes, base64url.
pub fn new_token() -> Result<String, sqlx::Error> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| sqlx::Error::Protocol("no randomness available".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn secs(ttl: Duration) -> f64 {
    ttl.as_secs_f64()
}

/// A user's password hash, with the generation of the password it is a hash of.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user_id: Uuid,
    pub password_hash: String,
    /// Grows by one at each password reset; not when a hash is upgraded ([`upgrade_hash`]).
    pub generation: i64,
}

/// The credentials of the user holding this email (normalised).
pub async fn credentials_by_email(
    pool: &PgPool,
    normalized_email: &str,
) -> Result<Option<Credentials>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT c.user_id, c.password_hash, c.password_generation
         FROM unique_claims u JOIN credentials c ON c.user_id::text = u.aggregate_id
         WHERE u.scope = $1 AND u.key = $2 AND u.aggregate_type = 'user'",
    )
    .bind(domain::user::EMAIL_SCOPE)
    .bind(normalized_email)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(Credentials {
            user_id: r.try_get("user_id")?,
            password_hash: r.try_get("password_hash")?,
            generation: r.try_get("password_generation")?,
        })
    })
    .transpose()
}

/// The password hash stored for `user_id`, if it has credentials.
pub async fn password_hash(pool: &PgPool, user_id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT password_hash FROM credentials WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await
}

/// The user holding this email (normalised), with or without credentials.
pub async fn user_by_email(
    pool: &PgPool,
    normalized_email: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT aggregate_id FROM unique_claims
         WHERE scope = $1 AND key = $2 AND aggregate_type = 'user'",
    )
    .bind(domain::user::EMAIL_SCOPE)
    .bind(normalized_email)
    .fetch_optional(pool)
    .await?;
    Ok(id.and_then(|id| Uuid::parse_str(&id).ok()))
}

/// Starts a refresh family for a login that checked a hash of the password of generation
/// `verified_generation` ([`Credentials`]); returns its first token,
/// or `None` when the user's password has changed since (a reset committed while the login
/// was hashing). The credentials row is share-locked while the family is written: a reset
/// either waits for the family and then revokes it with the others, or commits first and no
/// family starts. Without this, a login racing a reset kept a session the reset should have
/// ended.
pub async fn start_family(
    pool: &PgPool,
    user_id: Uuid,
    verified_generation: i64,
    ttl: Duration,
) -> Result<Option<String>, sqlx::Error> {
    let token = new_token()?;
    let mut tx = pool.begin().await?;
    let unchanged: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM credentials
         WHERE user_id = $1 AND password_generation = $2 FOR SHARE",
    )
    .bind(user_id)
    .bind(verified_generation)
    .fetch_optional(&mut *tx)
    .await?;
    if unchanged.is_none() {
        return Ok(None);
    }
    sqlx::query(
        "WITH family AS (INSERT INTO refresh_families (id, user_id) VALUES ($1, $2))
         INSERT INTO refresh_tokens (token_hash, family_id, expires_at)
         VALUES ($3, $1, now() + make_interval(secs => $4))",
    )
    .bind(Uuid::now_v7())
    .bind(user_id)
    .bind(token_hash(&token))
    .bind(secs(ttl))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(token))
}

/// Longest a login's refresh family lives, however often it is refreshed.
pub const FAMILY_MAX_AGE_DAYS: i32 = 90;

/// What makes a refresh token `t` of family `f` live (with `$1` its hash, `$2`
/// [`FAMILY_MAX_AGE_DAYS`]): unused, unexpired, of a family neither revoked nor too old.
const LIVE: &str = "t.token_hash = $1 AND t.rotated_at IS NULL AND t.expires_at > now()
    AND f.id = t.family_id AND f.revoked_at IS NULL
    AND f.created_at > now() - make_interval(days => $2)";

/// What presenting a refresh token came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Rotation {
    /// It was live: it is now used up and `token` replaces it.
    Rotated {
        user_id: Uuid,
        family_id: Uuid,
        token: String,
    },
    /// It had been used already: its whole family is now revoked.
    Reused,
    /// Unknown, expired or of a revoked family.
    Refused,
}

/// Uses up a refresh token and issues its successor in one transaction. Two requests with
/// the same token serialise on its row: the second sees it used and revokes the family.
pub async fn rotate(pool: &PgPool, token: &str, ttl: Duration) -> Result<Rotation, sqlx::Error> {
    let hash = token_hash(token);
    let mut tx = pool.begin().await?;
    let live = sqlx::query(&format!(
        "UPDATE refresh_tokens t SET rotated_at = now() FROM refresh_families f
             WHERE {LIVE} RETURNING f.id, f.user_id"
    ))
    .bind(&hash)
    .bind(FAMILY_MAX_AGE_DAYS)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = live {
        let family_id: Uuid = row.try_get("id")?;
        let user_id: Uuid = row.try_get("user_id")?;
        let next = new_token()?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, expires_at)
             VALUES ($1, $2, now() + make_interval(secs => $3))",
        )
        .bind(token_hash(&next))
        .bind(family_id)
        .bind(secs(ttl))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Rotation::Rotated {
            user_id,
            family_id,
            token: next,
        });
    }
    let reused = sqlx::query(
        "UPDATE refresh_families f SET revoked_at = now(), revoked_reason = 'reuse'
         FROM refresh_tokens t
         WHERE t.token_hash = $1 AND t.rotated_at IS NOT NULL AND f.id = t.family_id
           AND f.revoked_at IS NULL
         RETURNING f.id",
    )
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(match reused {
        Some(_) => Rotation::Reused,
        None => Rotation::Refused,
    })
}

/// The family and user of a refresh token that is live ([`LIVE`]: what [`rotate`] would
/// take), locking nothing; `None` otherwise.
pub async fn live_family(pool: &PgPool, token: &str) -> Result<Option<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT f.id, f.user_id FROM refresh_tokens t, refresh_families f WHERE {LIVE}"
    ))
    .bind(token_hash(token))
    .bind(FAMILY_MAX_AGE_DAYS)
    .fetch_optional(pool)
    .await
}

/// Revokes the family of a refresh token (logout); false when the token is unknown.
pub async fn revoke_family_of(pool: &PgPool, token: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE refresh_families f SET revoked_at = now(), revoked_reason = 'logout'
         FROM refresh_tokens t
         WHERE t.token_hash = $1 AND f.id = t.family_id AND f.revoked_at IS NULL",
    )
    .bind(token_hash(token))
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Revokes one family (the user behind it can no longer log in with it).
pub async fn revoke_family(
    pool: &PgPool,
    family_id: Uuid,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE refresh_families SET revoked_at = now(), revoked_reason = $2
         WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(family_id)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
}

async fn revoke_user(
    tx: &mut Transaction<'_, Postgres>,
    user_id: Uuid,
    reason: &str,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE refresh_families SET revoked_at = now(), revoked_reason = $2
         WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .bind(reason)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected())
}

/// Replaces `old`, a hash made with outdated parameters that a login has just verified, with
/// `new` (of the same password); `false` when the password changed meanwhile (a reset), which
/// wins. The password's generation stays, so a login still checking the old hash opens its
/// session ([`start_family`]); the old hash itself is not kept.
pub async fn upgrade_hash(
    pool: &PgPool,
    user_id: Uuid,
    old: &str,
    new: &str,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        // `rehashed_from` is emptied too: a binary of the release before, running beside this
        // one during a rolling upgrade, still keeps a replaced hash there.
        "UPDATE credentials SET password_hash = $3, rehashed_from = NULL, updated_at = now()
         WHERE user_id = $1 AND password_hash = $2",
    )
    .bind(user_id)
    .bind(old)
    .bind(new)
    .execute(pool)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// Deletes what can no longer be used: expired refresh tokens and reset tokens (a day after
/// expiry, so reuse is still recognised for a while), families left with no token, and
/// outbox messages older than a day.
pub async fn purge(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut purged = 0;
    for statement in [
        "DELETE FROM refresh_tokens WHERE expires_at < now() - interval '1 day'",
        "DELETE FROM refresh_families f WHERE created_at < now() - interval '1 day'
           AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = f.id)",
        "DELETE FROM password_reset_tokens WHERE expires_at < now() - interval '1 day'",
        "DELETE FROM notification_outbox WHERE created_at < now() - interval '1 day'",
    ] {
        purged += sqlx::query(statement).execute(pool).await?.rows_affected();
    }
    Ok(purged)
}
