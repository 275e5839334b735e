//! The admin console at `/admin`: server-rendered HTML pages for the `support` role (read)
//! and `admin` (read and act), with no script and no build step (`docs/operations.md`,
//! "Admin console").
//!
//! - `/admin/login`: a form whose password login the query API sends to the command API's
//!   token endpoint (`query_api.command_api_url`); the access token, verified here, becomes
//!   the session cookie ([`session`]).
//! - `/admin`: projections (position, lag, dead letters, last error), the relay's checkpoint
//!   and lag, the process manager's outbox, recent replays ([`overview`]).
//! - `/admin/dead-letters`: dead letters with retry and discard ([`dead_letters`]).
//! - `/admin/replays`: replay, rollback and as-of runs with their progress ([`replays`]).
//! - `/admin/events`: one aggregate's events from the event store, with their metadata
//!   ([`events`]).
//!
//! Every answer carries a strict `Content-Security-Policy` (no script at all),
//! `X-Frame-Options: DENY` and `Cache-Control: no-store` ([`layout::security_headers`]).

mod dead_letters;
mod error;
mod events;
mod layout;
mod login;
mod overview;
mod replays;
mod session;

use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use infra::settings::Settings;

use crate::routes::AppState;

/// How long a login waits for the command API.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the console needs besides the pool: the settings (the Kafka brokers whose
/// watermarks give the lag), and the command API's token endpoint.
pub struct Console {
    settings: Settings,
    token_url: String,
    http: reqwest::Client,
    /// Whose `X-Forwarded-For` names the browser (an ingress in front of the query API).
    proxies: infra::http::TrustedProxies,
}

impl Console {
    pub fn new(
        settings: &Settings,
        proxies: infra::http::TrustedProxies,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            proxies,
            settings: settings.clone(),
            token_url: format!(
                "{}/v1/auth/token",
                settings.query_api.command_api_url.trim_end_matches('/')
            ),
            http: reqwest::Client::builder().timeout(LOGIN_TIMEOUT).build()?,
        })
    }

    /// Whether session cookies are always `Secure` (`query_api.admin_secure_cookie`).
    fn secure_cookie(&self) -> bool {
        self.settings.query_api.admin_secure_cookie
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(overview::show))
        .route("/admin/login", get(login::form).post(login::submit))
        .route("/admin/logout", post(login::logout))
        .route("/admin/dead-letters", get(dead_letters::show))
        .route("/admin/dead-letters/{id}/retry", post(dead_letters::retry))
        .route(
            "/admin/dead-letters/{id}/discard",
            post(dead_letters::discard),
        )
        .route("/admin/replays", get(replays::show))
        .route("/admin/events", get(events::show))
        .layer(axum::middleware::map_response(layout::security_headers))
}

/// The fields of a form body (`application/x-www-form-urlencoded`); a body that is not one
/// is a 400 page.
fn form<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, error::AdminError> {
    serde_urlencoded::from_bytes(body)
        .map_err(|e| error::AdminError::BadRequest(format!("the form is not valid: {e}")))
}

/// The query parameters of a page, strictly (unknown ones are a 400 page).
struct Query<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for Query<T>
{
    type Rejection = error::AdminError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        serde_urlencoded::from_str(parts.uri.query().unwrap_or_default())
            .map(Self)
            .map_err(|e| error::AdminError::BadRequest(format!("invalid query parameters: {e}")))
    }
}

/// The body of an action form: only the CSRF token.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionForm {
    csrf: Option<String>,
}
