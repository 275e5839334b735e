//! `/v1/auth/*` and `/.well-known/jwks.json` (`docs/api.md`, "Identity and access").

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use domain::values::Email;
use domain::{User, UserStatus};
use infra::auth::{Principal, Role, Subject};
use infra::secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::http::{no_store, AuthProblem, ClientAddress};
use super::resets;
use super::store::{self, Rotation};
use crate::core::CommandError;
use crate::http::JsonBody;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/token", post(token))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/password-reset", post(resets::password_reset))
        .route(
            "/v1/auth/password-reset/confirm",
            post(resets::password_reset_confirm),
        )
        .route("/.well-known/jwks.json", get(jwks))
}

/// One of the three grants, by `grant_type`.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "grant_type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenRequest {
    Password {
        email: String,
        #[schema(value_type = String)]
        password: SecretString,
    },
    RefreshToken {
        #[schema(value_type = String)]
        refresh_token: SecretString,
    },
    ClientCredentials {
        client_id: String,
        #[schema(value_type = String)]
        client_secret: SecretString,
    },
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Absent for the client-credentials grant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogoutRequest {
    #[schema(value_type = String)]
    pub refresh_token: SecretString,
}

#[utoipa::path(post, path = "/v1/auth/token", tag = "auth", request_body = TokenRequest,
    responses((status = 200, body = TokenResponse),
        (status = 401, description = "`/problems/invalid-credentials` or `/problems/invalid-grant`"),
        (status = 422, description = "malformed request"),
        (status = 429, description = "`/problems/rate-limited`: too many failed attempts")))]
pub async fn token(
    State(state): State<AppState>,
    address: ClientAddress,
    body: JsonBody<TokenRequest>,
) -> Result<Response, AuthProblem> {
    let response = match body.value {
        TokenRequest::Password { email, password } => {
            password_grant(&state, address, &email, &password).await?
        }
        TokenRequest::RefreshToken { refresh_token } => {
            refresh_grant(&state, &refresh_token).await?
        }
        TokenRequest::ClientCredentials {
            client_id,
            client_secret,
        } => client_grant(&state, address, &client_id, &client_secret)?,
    };
    Ok(no_store(Json(response)))
}

async fn password_grant(
    state: &AppState,
    address: ClientAddress,
    email: &str,
    password: &SecretString,
) -> Result<TokenResponse, AuthProblem> {
    let identity = &state.identity;
    // An address that is not an email names no account: only the address is counted.
    let account = Email::parse(email).ok().map(|e| e.normalized());
    let address = address.key();
    let mut check = identity
        .begin_password_check(&address, account.as_deref())
        .map_err(limited)?;
    // Until the password has been checked, an error gives the attempt back (nothing was
    // checked); a request dropped meanwhile keeps it counted, as a mismatch would be.
    let stored = match &account {
        Some(account) => store::credentials_by_email(&identity.pool, account)
            .await
            .map_err(|e| check.shed(e))?,
        None => None,
    };
    let user_id = stored.as_ref().map(|c| c.user_id);
    let generation = stored.as_ref().map_or(0, |c| c.generation);
    let checked = stored
        .as_ref()
        .map(|c| c.password_hash.clone())
        .unwrap_or_default();
    let matched = identity
        .passwords
        .verify(password, stored.map(|c| c.password_hash))
        .await
        .map_err(|e| check.shed(e))?;
    if matched {
        check.matched();
    }
    let user = match (matched, user_id) {
        // The right password: a failure to load its user is no failed login.
        (true, Some(id)) => active_user(state, id).await.map_err(|e| check.shed(e))?,
        _ => None,
    };
    let Some((id, roles)) = user else {
        check.failed();
        metrics::counter!("auth_logins_total", "outcome" => "failed").increment(1);
        return Err(AuthProblem::InvalidCredentials);
    };
    let Some(refresh) = store::start_family(&identity.pool, id, generation, identity.refresh_ttl)
        .await
        .map_err(|e| check.shed(e))?
    else {
        // The password was reset while this one was being checked: it opens no session.
        check.failed();
        metrics::counter!("auth_logins_total", "outcome" => "failed").increment(1);
        return Err(AuthProblem::InvalidCredentials);
    };
    check.passed();
    if identity.passwords.outdated(&checked) {
        super::rehash::upgrade_hash(state, id, checked, password.clone());
    }
    metrics::counter!("auth_logins_total", "outcome" => "ok").increment(1);
    let principal = Principal::new(Subject::User(id), roles);
    issue(state, &principal, Some(refresh))
}

async fn refresh_grant(
    state: &AppState,
    refresh_token: &SecretString,
) -> Result<TokenResponse, AuthProblem> {
    use infra::secrecy::ExposeSecret;
    let identity = &state.identity;
    let presented = refresh_token.expose_secret();
    // Roles and status are read afresh (a revoked role or a deactivation takes effect at the
    // next refresh), and before the token is used up: a load that fails (timing out, say)
    // leaves the token live for the client's retry, which would otherwise be taken for a
    // reuse and revoke the family. Nothing is locked while the user loads.
    let user = match store::live_family(&identity.pool, presented).await? {
        Some((family_id, user_id)) => match active_user(state, user_id).await? {
            Some(user) => Some(user),
            None => {
                store::revoke_family(&identity.pool, family_id, "deactivated").await?;
                return Err(AuthProblem::InvalidGrant);
            }
        },
        None => None,
    };
    match store::rotate(&identity.pool, presented, identity.refresh_ttl).await? {
        Rotation::Rotated { user_id, token, .. } => {
            let (id, roles) = match user {
                Some(user) if user.0 == user_id => user,
                // Not live when looked up, yet rotated: only if its expiry or its family's
                // age was judged on either side of a step of the database's clock. The user
                // is loaded now, as before the look-up.
                _ => active_user(state, user_id)
                    .await?
                    .ok_or(AuthProblem::InvalidGrant)?,
            };
            metrics::counter!("auth_refreshes_total", "outcome" => "ok").increment(1);
            issue(
                state,
                &Principal::new(Subject::User(id), roles),
                Some(token),
            )
        }
        Rotation::Reused => {
            tracing::warn!("a rotated refresh token was presented again; its family is revoked");
            metrics::counter!("auth_refreshes_total", "outcome" => "reused").increment(1);
            Err(AuthProblem::InvalidGrant)
        }
        Rotation::Refused => {
            metrics::counter!("auth_refreshes_total", "outcome" => "refused").increment(1);
            Err(AuthProblem::InvalidGrant)
        }
    }
}

fn client_grant(
    state: &AppState,
    address: ClientAddress,
    client_id: &str,
    secret: &SecretString,
) -> Result<TokenResponse, AuthProblem> {
    use infra::secrecy::ExposeSecret;
    let identity = &state.identity;
    let address = address.key();
    identity
        .failures_by_address
        .attempt(&address)
        .map_err(limited)?;
    if !identity.clients.verify(client_id, secret.expose_secret()) {
        metrics::counter!("auth_logins_total", "outcome" => "failed").increment(1);
        return Err(AuthProblem::InvalidCredentials);
    }
    identity.failures_by_address.succeeded(&address, false);
    let principal = Principal::new(Subject::Service(client_id.to_owned()), [Role::Service]);
    issue(state, &principal, None)
}

/// A refused attempt, counted.
fn limited(wait: std::time::Duration) -> AuthProblem {
    metrics::counter!("auth_logins_total", "outcome" => "limited").increment(1);
    AuthProblem::RateLimited(wait)
}

/// The user's roles if the user exists and is active.
async fn active_user(
    state: &AppState,
    id: uuid::Uuid,
) -> Result<Option<(uuid::Uuid, Vec<Role>)>, AuthProblem> {
    let Some(user) = state.bus.load::<User>(id).await? else {
        return Ok(None);
    };
    if user.status() != Some(UserStatus::Active) {
        return Ok(None);
    }
    let roles = user
        .roles()
        .iter()
        .filter_map(|r| Role::parse(r.as_str()))
        .collect();
    Ok(Some((id, roles)))
}

fn issue(
    state: &AppState,
    principal: &Principal,
    refresh_token: Option<String>,
) -> Result<TokenResponse, AuthProblem> {
    let issued = state
        .identity
        .access_token(principal)
        .map_err(|e| AuthProblem::from(CommandError::Internal(Box::new(e))))?;
    Ok(TokenResponse {
        access_token: issued.token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
        refresh_token,
    })
}

#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = LogoutRequest,
    responses((status = 204, description = "the token's family is revoked (also when the token was unknown)")))]
pub async fn logout(
    State(state): State<AppState>,
    body: JsonBody<LogoutRequest>,
) -> Result<StatusCode, AuthProblem> {
    use infra::secrecy::ExposeSecret;
    store::revoke_family_of(
        &state.identity.pool,
        body.value.refresh_token.expose_secret(),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "the public keys access tokens are signed with")))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.identity.keys.jwks()).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

/// Unauthenticated work from `address`: `Err` (429) past its per-address limit.
pub(super) fn admit_anonymous(
    state: &AppState,
    address: &ClientAddress,
) -> Result<(), AuthProblem> {
    match address.0 {
        Some(ip) => state
            .identity
            .anonymous
            .check(&ip)
            .map_err(AuthProblem::RateLimited),
        None => Ok(()),
    }
}
