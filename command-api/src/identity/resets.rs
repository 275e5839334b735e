//! `/v1/auth/password-reset` and its confirmation (`docs/api.md`, "Identity and access"):
//! a reset is asked for by email and answered the same whether or not the account exists;
//! its token, mailed to the account's address, sets a new password once.

use axum::extract::State;
use axum::http::StatusCode;
use domain::values::Email;
use infra::secrecy::SecretString;
use serde::Deserialize;
use utoipa::ToSchema;

use super::http::{AuthProblem, ClientAddress};
use super::passwords::check_length;
use super::routes::admit_anonymous;
use super::store;
use crate::error::ApiError;
use crate::http::JsonBody;
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    pub email: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetConfirm {
    #[schema(value_type = String)]
    pub token: SecretString,
    /// 12 to 128 characters.
    #[schema(value_type = String, min_length = 12, max_length = 128)]
    pub new_password: SecretString,
}

#[utoipa::path(post, path = "/v1/auth/password-reset", tag = "auth", request_body = ResetRequest,
    responses((status = 202, description = "accepted whether or not the account exists"),
        (status = 429, description = "`/problems/rate-limited`")))]
pub async fn password_reset(
    State(state): State<AppState>,
    address: ClientAddress,
    body: JsonBody<ResetRequest>,
) -> Result<StatusCode, AuthProblem> {
    admit_anonymous(&state, &address)?;
    // The answer is the same and immediate whether or not the account exists; the token is
    // made and queued afterwards.
    if let Ok(email) = Email::parse(&body.value.email) {
        let identity = state.identity.clone();
        let bus = state.bus.clone();
        tokio::spawn(async move {
            let result = async {
                let normalized = email.normalized();
                let Some(user_id) = store::user_by_email(&identity.pool, &normalized).await? else {
                    return Ok(());
                };
                // The token goes to the address the account holds, as its owner wrote it, not
                // to the requester's spelling of it (equal only once lower-cased: a mail
                // system may tell `Victim@` from `victim@`).
                let user = bus.load::<domain::User>(user_id).await?;
                let Some(recipient) = user.as_ref().and_then(domain::User::email) else {
                    return Ok(());
                };
                if recipient.normalized() != normalized {
                    return Ok(()); // the account moved to another email meanwhile
                }
                store::request_reset(
                    &identity.pool,
                    user_id,
                    recipient.as_str(),
                    &normalized,
                    identity.reset_ttl,
                )
                .await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            }
            .await;
            if let Err(error) = result {
                tracing::error!(error = &*error, "queueing a password reset failed");
            }
        });
    }
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(post, path = "/v1/auth/password-reset/confirm", tag = "auth", request_body = ResetConfirm,
    responses((status = 204, description = "password changed; every refresh family of the user revoked"),
        (status = 400, description = "`/problems/invalid-reset-token`"),
        (status = 422, description = "the new password is not 12 to 128 characters"),
        (status = 429, description = "`/problems/rate-limited`")))]
pub async fn password_reset_confirm(
    State(state): State<AppState>,
    address: ClientAddress,
    body: JsonBody<ResetConfirm>,
) -> Result<StatusCode, AuthProblem> {
    use infra::secrecy::ExposeSecret;
    // Unauthenticated work: it counts against the per-address limit, and a token that cannot
    // work is refused before the password is hashed (else anyone could fill the hashing queue
    // with made-up tokens and shed every login with 503).
    admit_anonymous(&state, &address)?;
    check_length(body.value.new_password.expose_secret())
        .map_err(|message| ApiError::field("new_password", message))?;
    if !store::reset_token_usable(&state.identity.pool, body.value.token.expose_secret()).await? {
        return Err(AuthProblem::InvalidResetToken);
    }
    let hash = state
        .identity
        .passwords
        .hash(&body.value.new_password)
        .await?;
    match store::confirm_reset(
        &state.identity.pool,
        body.value.token.expose_secret(),
        &hash,
    )
    .await?
    {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(AuthProblem::InvalidResetToken),
    }
}
