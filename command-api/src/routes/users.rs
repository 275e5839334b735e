//! `/v1/users` commands: register, profile, email, addresses, roles, deactivate.

use axum::extract::{Path, State};
use axum::routing::{delete, post};
use axum::Router;
use domain::values::{Address, AddressFields, DisplayName, Email, Preferences, Reason, Role};
use domain::{User, UserCommand, UserEvent};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Reply;
use crate::core::{Actor, CommandError, Dispatch};
use crate::error::ApiError;
use crate::http::{parse_id, EmptyBody, JsonBody, Registration, Validator};
use crate::http::{Admins, Admitted, Owners};
use crate::identity::passwords::check_length;
use crate::state::AppState;
use infra::secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/users", post(register))
        .route("/v1/users/{id}/profile", post(change_profile))
        .route("/v1/users/{id}/email", post(change_email))
        .route("/v1/users/{id}/addresses", post(add_address))
        .route(
            "/v1/users/{id}/addresses/{address_id}",
            delete(remove_address),
        )
        .route("/v1/users/{id}/roles", post(grant_role))
        .route("/v1/users/{id}/roles/{role}", delete(revoke_role))
        .route("/v1/users/{id}/deactivate", post(deactivate))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterUser {
    pub email: String,
    pub display_name: String,
    /// 12 to 128 characters; stored only as an argon2id hash, never in an event.
    #[schema(value_type = String, min_length = 12, max_length = 128)]
    pub password: SecretString,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeProfile {
    pub display_name: Option<String>,
    /// Any JSON object (at most 64 keys, 8 KiB, 32 levels of nesting); replaces the previous
    /// preferences.
    #[schema(value_type = Option<Object>)]
    pub preferences: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeEmail {
    pub email: String,
}

/// A postal address; `country` is ISO 3166-1 alpha-2.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressBody {
    pub label: String,
    pub line1: String,
    pub line2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub country: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRole {
    /// `customer`, `admin`, `service` or `support`.
    pub role: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Deactivate {
    pub reason: Option<String>,
}

/// Parses an address, reporting fields under `prefix` (e.g. `shipping_address.`).
pub fn parse_address(v: &mut Validator, prefix: &str, body: &AddressBody) -> Option<Address> {
    let fields = AddressFields {
        label: &body.label,
        line1: &body.line1,
        line2: body.line2.as_deref(),
        city: &body.city,
        postal_code: &body.postal_code,
        country: &body.country,
    };
    match Address::parse(fields) {
        Ok(address) => Some(address),
        Err(errors) => {
            for e in errors {
                v.push(format!("{prefix}{}", e.field), e.error.to_string());
            }
            None
        }
    }
}

/// Registration needs no token; with one (an admin registering someone), its subject is
/// recorded as the actor.
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = RegisterUser,
    responses((status = 201, body = super::CommandAccepted), (status = 409, description = "email taken"),
        (status = 422, description = "invalid field")))]
pub async fn register(
    State(state): State<AppState>,
    address: crate::identity::http::ClientAddress,
    Registration(mut meta): Registration,
    body: JsonBody<RegisterUser>,
) -> Result<Reply, ApiError> {
    let mut v = Validator::default();
    let email = v.check("email", Email::parse(&body.value.email));
    let name = v.check("display_name", DisplayName::parse(&body.value.display_name));
    v.check(
        "password",
        check_length(body.value.password.expose_secret()),
    );
    let (Some(email), Some(display_name), true) = (email, name, v.is_clean()) else {
        return Err(v.into_error());
    };
    let hash = state
        .identity
        .passwords
        .hash(&body.value.password)
        .await
        .map_err(crate::identity::http::hash_error)?;
    let email_key = email.normalized();
    let command = UserCommand::Register {
        email,
        display_name,
    };
    // The fingerprint an idempotency key is bound to leaves the password out: it is kept for a
    // day, and a fast hash of a body holding a password would be a shortcut around argon2id.
    let fingerprint = serde_json::json!([body.value.email, body.value.display_name]);
    let digest: [u8; 32] = Sha256::digest(fingerprint.to_string().as_bytes()).into();
    let mut dispatch = Dispatch::<User>::create("register_user", command, digest);
    dispatch.credential = Some(hash);
    if meta.principal.is_none() {
        // Self-registration: the new user is the actor of their own first event, and its key
        // is kept under the email it registers, as a digest (not the address itself, though a
        // guess of an address can be checked against it).
        meta.actor = Actor(format!("user:{}", dispatch.id));
        let email_digest = Sha256::digest(email_key.as_bytes());
        meta.anonymous_scope = Some(hex::encode(&email_digest[..16]));
    }
    let outcome = state.bus.execute(&meta, dispatch).await?;
    if outcome.replayed {
        // The key's fingerprint leaves the password out (above), so a replay checks it here,
        // with argon2 against the stored hash: the same key with another password is another
        // request, and answering it with the first one's 201 would hide that its password
        // was never stored. That makes a replay a check of a password, so a wrong one counts
        // against the login limits, and a blocked account or address is refused (otherwise
        // anyone holding the key, the email and the name could guess the password at the
        // per-address rate of registrations). Replays of one account are checked one at a
        // time, so none passes while another's failure is still to be counted; a matching
        // replay takes no place, as a client may send its registration several times at once.
        let address = address.key();
        let _turn = state.identity.password_check_turn(&email_key).await;
        if let Some(wait) = state.identity.password_checks_blocked(&address, &email_key) {
            return Err(ApiError::RateLimited(wait));
        }
        let stored = crate::identity::store::password_hash(&state.identity.pool, outcome.id)
            .await
            .map_err(|e| ApiError::Command(crate::core::database_error(e)))?;
        let same = state
            .identity
            .passwords
            .verify(&body.value.password, stored)
            .await
            .map_err(crate::identity::http::hash_error)?;
        if !same {
            state.identity.password_check_failed(&address, &email_key);
            return Err(ApiError::Command(CommandError::IdempotencyKeyMismatch));
        }
    }
    Ok(Reply::created(&outcome))
}

#[utoipa::path(post, path = "/v1/users/{id}/profile", tag = "users", request_body = ChangeProfile,
    params(("id" = Uuid, Path)), responses((status = 200, body = super::CommandAccepted)))]
pub async fn change_profile(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Admitted(meta, _): Admitted<Owners>,
    body: JsonBody<ChangeProfile>,
) -> Result<Reply, ApiError> {
    let id = parse_id(&id, "user")?;
    let mut v = Validator::default();
    let display_name = body
        .value
        .display_name
        .as_deref()
        .map(|raw| v.check("display_name", DisplayName::parse(raw)));
    let preferences = body
        .value
        .preferences
        .clone()
        .map(|raw| v.check("preferences", Preferences::parse(raw)));
    if display_name.is_none() && preferences.is_none() {
        v.push("display_name", "give display_name, preferences or both");
    }
    if !v.is_clean() {
        return Err(v.into_error());
    }
    let command = UserCommand::ChangeProfile {
        display_name: display_name.flatten(),
        preferences: preferences.flatten(),
    };
    let dispatch = Dispatch::<User>::existing("change_profile", id, command, body.digest);
    Ok(Reply::ok(&state.bus.execute(&meta, dispatch).await?))
}

#[utoipa::path(post, path = "/v1/users/{id}/email", tag = "users", request_body = ChangeEmail,
    params(("id" = Uuid, Path)), responses((status = 200, body = super::CommandAccepted),
        (status = 409, description = "email taken or unchanged")))]
pub async fn change_email(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Admitted(meta, _): Admitted<Owners>,
    body: JsonBody<ChangeEmail>,
) -> Result<Reply, ApiError> {
    let id = parse_id(&id, "user")?;
    let email =
        Email::parse(&body.value.email).map_err(|e| ApiError::field("email", e.to_string()))?;
    let dispatch = Dispatch::<User>::existing(
        "change_email",
        id,
        UserCommand::ChangeEmail { email },
        body.digest,
    );
    Ok(Reply::ok(&state.bus.execute(&meta, dispatch).await?))
}

#[utoipa::path(post, path = "/v1/users/{id}/addresses", tag = "users", request_body = AddressBody,
    params(("id" = Uuid, Path)),
    responses((status = 201, description = "`{id, version, position, address_id}`")))]
pub async fn add_address(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Admitted(meta, _): Admitted<Owners>,
    body: JsonBody<AddressBody>,
) -> Result<Reply, ApiError> {
    let id = parse_id(&id, "user")?;
    let mut v = Validator::default();
    let Some(address) = parse_address(&mut v, "", &body.value) else {
        return Err(v.into_error());
    };
    let address_id = Uuid::now_v7();
    let command = UserCommand::AddAddress {
        address_id,
        address,
    };
    let dispatch = Dispatch::<User>::existing("add_address", id, command, body.digest);
    let outcome = state.bus.execute(&meta, dispatch).await?;
    // The id actually recorded (equal to the one chosen above, unless this is a replay).
    let recorded = outcome.events.iter().find_map(|e| match e {
        UserEvent::AddressAdded { address_id, .. } => Some(*address_id),
        _ => None,
    });
    Ok(Reply::created(&outcome).with("address_id", recorded.unwrap_or(address_id)))
}

#[utoipa::path(delete, path = "/v1/users/{id}/addresses/{address_id}", tag = "users",
    params(("id" = Uuid, Path), ("address_id" = Uuid, Path)),
    responses((status = 200, body = super::CommandAccepted), (status = 404, description = "no such user or address")))]
pub async fn remove_address(
    State(state): State<AppState>,
    Path((id, address_id)): Path<(String, String)>,
    Admitted(meta, _): Admitted<Owners>,
    body: JsonBody<EmptyBody>,
) -> Result<Reply, ApiError> {
    let id = parse_id(&id, "user")?;
    let address_id = parse_id(&address_id, "address")?;
    let command = UserCommand::RemoveAddress { address_id };
    let dispatch = Dispatch::<User>::existing("remove_address", id, command, body.digest);
    Ok(Reply::ok(&state.bus.execute(&meta, dispatch).await?))
}

#[utoipa::path(post, path = "/v1/users/{id}/roles", tag = "users", request_body = GrantRole,
    params(("id" = Uuid, Path)), responses((status = 200, body = super::CommandAccepted)))]
pub async fn grant_role(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Admitted(meta, _): Admitted<Admins>,
    body: JsonBody<GrantRole>,
) -> Result<Reply, ApiError> {
    let id = parse_id(&id, "user")?;
    let role = Role::parse(&body.value.role).map_err(|e| ApiError::field("role", e.to_string()))?;
    let dispatch = Dispatch::<User>::existing(
        "grant_role",
        id,
        UserCommand::GrantRole { role },
        body.digest,
    );
    Ok(Reply::ok(&state.bus.execute(&meta, dispatch).await?))
}

#[utoipa::path(delete, path = "/v1/users/{id}/roles/{role}", tag = "users",
    params(("id" = Uuid, Path), ("role" = String, Path)),
    responses((status = 200, body = super::CommandAccepted)))]
pub async fn revoke_role(
    State(state): State<AppState>,
    Path((id, role)): Path<(String, String)>,
    Admitted(meta, _): Admitted<Admins>,
    body: JsonBody<EmptyBody>,
) -> Result<Reply, ApiError> {
    let id = parse_id(&id, "user")?;
    let role = Role::parse(&role).map_err(|e| ApiError::field("role", e.to_string()))?;
    let dispatch = Dispatch::<User>::existing(
        "revoke_role",
        id,
        UserCommand::RevokeRole { role },
        body.digest,
    );
    Ok(Reply::ok(&state.bus.execute(&meta, dispatch).await?))
}

#[utoipa::path(post, path = "/v1/users/{id}/deactivate", tag = "users", request_body = Deactivate,
    params(("id" = Uuid, Path)), responses((status = 200, body = super::CommandAccepted)))]
pub async fn deactivate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Admitted(meta, _): Admitted<Owners>,
    body: JsonBody<Deactivate>,
) -> Result<Reply, ApiError> {
    let id = parse_id(&id, "user")?;
    let reason = match body.value.reason.as_deref() {
        None => None,
        Some(raw) => {
            Some(Reason::parse(raw).map_err(|e| ApiError::field("reason", e.to_string()))?)
        }
    };
    let dispatch = Dispatch::<User>::existing(
        "deactivate_user",
        id,
        UserCommand::Deactivate { reason },
        body.digest,
    );
    Ok(Reply::ok(&state.bus.execute(&meta, dispatch).await?))
}
