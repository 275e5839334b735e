//! `GET /admin/login` (the form), `POST /admin/login` (the command API's password grant,
//! server-side; the verified access token becomes the session cookie) and
//! `POST /admin/logout`.
//!
//! Failed logins count against the command API's limits per account and per client address.
//! The console tells the command API whose login it is with `X-Forwarded-For`: the browser's
//! address (read past `auth.trusted_proxies` here too). The command API believes it only when
//! the query API's address is one of its own `auth.trusted_proxies`; otherwise every console
//! login counts against the query API's address, and 50 failures in a window lock the console
//! for every member of staff.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use infra::auth::Verifier;
use maud::{html, Markup};
use serde::Deserialize;

use super::error::AdminError;
use super::layout::{page, respond};
use super::session::{cleared_cookie, is_staff, over_https, same_site, session_cookie, Staff};
use super::{form as parse_form, ActionForm, Console};
use crate::routes::AppState;

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

/// What the token endpoint answers (the fields the console uses).
#[derive(Deserialize)]
struct Token {
    access_token: String,
    expires_in: u64,
    /// The console keeps no refresh token: it is revoked at once (a session lasts as long as
    /// its access token, then the user logs in again).
    refresh_token: Option<String>,
}

/// The login form, with why the last attempt failed.
pub fn login_page(message: Option<&str>) -> Markup {
    let body = html! {
        @if let Some(message) = message {
            p.bad { (message) }
        }
        form method="post" action="/admin/login" {
            label { "Email " input type="email" name="email" required autocomplete="username"; }
            label { "Password " input type="password" name="password" required autocomplete="current-password"; }
            button type="submit" { "Log in" }
        }
    };
    page("Log in", None, body)
}

pub async fn form() -> Response {
    respond(StatusCode::OK, login_page(None))
}

pub async fn submit(
    State(state): State<AppState>,
    Extension(verifier): Extension<Arc<Verifier>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    if !same_site(&headers) {
        return Err(AdminError::Forbidden(
            "the login form must be sent from the console's own page".into(),
        ));
    }
    let credentials: Credentials = parse_form(&body)?;
    let console = &state.console;
    let browser =
        peer.map(|Extension(ConnectInfo(peer))| console.proxies.client(peer.ip(), &headers));
    let token = password_grant(console, &credentials, browser).await?;
    if let Some(refresh_token) = &token.refresh_token {
        revoke(console, refresh_token).await;
    }
    let principal = verifier
        .verify(&token.access_token)
        .await
        .map_err(|e| AdminError::Internal(format!("a token just issued does not verify: {e}")))?;
    if !is_staff(&principal) {
        tracing::info!(actor = %principal.sub(), "admin login refused: no support or admin role");
        return Err(AdminError::Forbidden(
            "the console is for the support and admin roles".into(),
        ));
    }
    tracing::info!(actor = %principal.sub(), "admin console login");
    let secure = over_https(&headers, console.secure_cookie());
    let cookie = session_cookie(&token.access_token, token.expires_in, secure)
        .ok_or_else(|| AdminError::Internal("the token is not a cookie value".into()))?;
    Ok(see_other("/admin", cookie))
}

/// The command API's answer to a password grant: a token, or the form again with why not.
async fn password_grant(
    console: &Console,
    credentials: &Credentials,
    browser: Option<IpAddr>,
) -> Result<Token, AdminError> {
    let mut request = console.http.post(&console.token_url);
    if let Some(browser) = browser {
        request = request.header("x-forwarded-for", browser.to_string());
    }
    let sent = request
        .json(&serde_json::json!({
            "grant_type": "password",
            "email": credentials.email,
            "password": credentials.password,
        }))
        .send()
        .await;
    let response = sent.map_err(|error| {
        tracing::warn!(error = %infra::error_chain(&error), "admin login: the command API did not answer");
        AdminError::Unavailable("the login service cannot be reached; try again shortly".into())
    })?;
    let status = response.status();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(AdminError::LoginRefused {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "too many attempts; wait a few minutes and try again",
        });
    }
    // 401 for a wrong password or an unknown email; any other 4xx (an empty field) alike.
    if status.is_client_error() {
        return Err(AdminError::LoginRefused {
            status: StatusCode::UNAUTHORIZED,
            message: "wrong email or password",
        });
    }
    match response.json::<Token>().await {
        Ok(token) if status.is_success() => Ok(token),
        _ => {
            tracing::warn!(%status, "admin login: unexpected answer from the token endpoint");
            Err(AdminError::Unavailable(
                "the login service answered unexpectedly; try again shortly".into(),
            ))
        }
    }
}

/// Revokes the refresh token of a console login (`POST /v1/auth/logout`), so none is left
/// usable; a failure is logged and the login goes on (the token is never stored or shown).
async fn revoke(console: &Console, refresh_token: &str) {
    let url = console
        .token_url
        .replace("/v1/auth/token", "/v1/auth/logout");
    let sent = console
        .http
        .post(url)
        .json(&serde_json::json!({ "refresh_token": refresh_token }))
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => {}
        Ok(response) => {
            tracing::warn!(status = %response.status(), "admin login: the refresh token was not revoked")
        }
        Err(error) => {
            tracing::warn!(error = %infra::error_chain(&error), "admin login: the refresh token was not revoked")
        }
    }
}

/// 303 to `location`, setting (or clearing) the session cookie.
fn see_other(location: &'static str, cookie: HeaderValue) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, HeaderValue::from_static(location)),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

/// Ends the session (a form with the session's CSRF token, so no other site can log one out).
pub async fn logout(staff: Staff, body: Bytes) -> Result<Response, AdminError> {
    let form: ActionForm = parse_form(&body)?;
    staff.check_csrf(form.csrf.as_deref())?;
    tracing::info!(actor = %staff.actor(), "admin console logout");
    Ok(see_other("/admin/login", cleared_cookie()))
}
