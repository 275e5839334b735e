//! The first admin: with `auth.bootstrap_admin_email` and a password set, the command API
//! registers that account at start and grants it `admin`, unless an account with that email
//! exists already. An existing account is never promoted (someone else may have registered
//! the address first); that is logged as an error instead. The bootstrap's own account is
//! granted `admin` again only while its history is its registration alone (a start that
//! stopped between registering and granting): a revocation or a deactivation since is an
//! operator's decision, which a restart must not undo.

use domain::values::{DisplayName, Email, Role};
use domain::{User, UserCommand};
use infra::auth::{Principal, Subject};
use infra::secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::passwords::check_length;
use super::{store, Identity};
use crate::core::{Actor, CommandBus, CommandError, Dispatch, RequestMetadata};

/// The client id the bootstrap acts as (reserved: see `super::clients::RESERVED`).
const ACTOR: &str = "bootstrap";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("auth.bootstrap_admin_email: {0}")]
    Email(String),
    #[error("auth.bootstrap_admin_password: {0}")]
    Password(String),
    #[error("hashing the bootstrap admin's password")]
    Hash(#[source] super::passwords::HashError),
    #[error("registering the bootstrap admin")]
    Command(#[source] CommandError),
    #[error("looking up the bootstrap admin")]
    Database(#[source] sqlx::Error),
}

/// Creates the admin if needed; returns its id when it was created now.
pub async fn ensure_admin(
    bus: &CommandBus,
    identity: &Identity,
    email: &str,
    password: &SecretString,
) -> Result<Option<Uuid>, BootstrapError> {
    let email = Email::parse(email).map_err(|e| BootstrapError::Email(e.to_string()))?;
    check_length(password.expose_secret()).map_err(BootstrapError::Password)?;
    if let Some(existing) = store::user_by_email(&identity.pool, &email.normalized())
        .await
        .map_err(BootstrapError::Database)?
    {
        let user = bus
            .load::<User>(existing)
            .await
            .map_err(BootstrapError::Command)?;
        if user.is_some_and(|u| u.roles().contains(&Role::Admin)) {
            return Ok(None);
        }
        match bootstrap_history(&identity.pool, existing).await? {
            // Registered by an earlier bootstrap that stopped before the grant: finish it.
            History::RegisteredOnly => {
                grant_admin(bus, existing).await?;
                tracing::info!(user = %existing, "bootstrap admin promoted");
            }
            History::ChangedSince => tracing::warn!(user = %existing,
                "the bootstrap admin's account lost its admin role or was deactivated since it \
                 was created; left as it is"),
            History::Someone => tracing::error!(user = %existing,
                "the bootstrap admin's email belongs to an account without the admin role; it \
                 was not promoted"),
        }
        return Ok(None);
    }
    let hash = identity
        .passwords
        .hash(password)
        .await
        .map_err(BootstrapError::Hash)?;
    let command = UserCommand::Register {
        email,
        display_name: DisplayName::parse("Administrator")
            .map_err(|e| BootstrapError::Email(e.to_string()))?,
    };
    let mut register = Dispatch::<User>::create("register_user", command, [0; 32]);
    register.credential = Some(hash);
    let id = register.id;
    match bus.execute(&metadata("bootstrap register"), register).await {
        Ok(_) => {}
        // Another instance bootstrapping at the same moment won.
        Err(CommandError::Taken { .. }) => return Ok(None),
        Err(error) => return Err(BootstrapError::Command(error)),
    }
    grant_admin(bus, id).await?;
    tracing::info!(user = %id, "bootstrap admin created");
    Ok(Some(id))
}

/// The bootstrap's own principal and request metadata.
fn metadata(operation: &str) -> RequestMetadata {
    let principal = Principal::new(
        Subject::Service(ACTOR.to_owned()),
        [infra::auth::Role::Admin],
    );
    RequestMetadata {
        actor: Actor(principal.sub()),
        principal: Some(principal.clone()),
        command_id: Uuid::now_v7(),
        correlation_id: Uuid::now_v7().to_string(),
        causation_id: Uuid::now_v7().to_string(),
        traceparent: format!(
            "00-{}-{}-01",
            Uuid::new_v4().simple(),
            &Uuid::new_v4().simple().to_string()[..16]
        ),
        expected_version: None,
        idempotency_key: None,
        anonymous_scope: None,
        operation: operation.to_owned(),
    }
}

async fn grant_admin(bus: &CommandBus, id: Uuid) -> Result<(), BootstrapError> {
    let grant = Dispatch::<User>::existing(
        "grant_role",
        id,
        UserCommand::GrantRole { role: Role::Admin },
        [0; 32],
    );
    bus.execute(&metadata("bootstrap grant admin"), grant)
        .await
        .map(|_| ())
        .map_err(BootstrapError::Command)
}

/// What the history of an account holding the bootstrap admin's email says.
enum History {
    /// The bootstrap registered it, and nothing happened to it since.
    RegisteredOnly,
    /// The bootstrap registered it; it has changed since (a role revoked, deactivated).
    ChangedSince,
    /// Someone else registered it.
    Someone,
}

async fn bootstrap_history(pool: &sqlx::PgPool, id: Uuid) -> Result<History, BootstrapError> {
    let (actor, events): (Option<String>, i64) = sqlx::query_as(
        "SELECT max(metadata->>'actor') FILTER (WHERE sequence = 1), count(*)
         FROM events WHERE aggregate_type = 'user' AND aggregate_id = $1",
    )
    .bind(id.to_string())
    .fetch_one(pool)
    .await
    .map_err(BootstrapError::Database)?;
    Ok(match (actor == Some(format!("service:{ACTOR}")), events) {
        (false, _) => History::Someone,
        (true, 1) => History::RegisteredOnly,
        (true, _) => History::ChangedSince,
    })
}
