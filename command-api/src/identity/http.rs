//! The HTTP edge of identity: the client address limits are keyed by, and [`AuthProblem`], how
//! every identity refusal is rendered (also used by the command routes for 429 and 503).

use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use infra::http::Problem;

use super::limits::retry_after_secs;
use super::passwords::HashError;
use crate::core::CommandError;
use crate::error::ApiError;
use crate::state::AppState;

/// The address a request came from, as the per-address limits count it: the TCP peer, or,
/// when that is one of `auth.trusted_proxies`, the client its `X-Forwarded-For` names
/// ([`infra::http::TrustedProxies`]); an IPv6 address as its /64 network ([`limit_key`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(state.identity.proxies.client_of(parts).map(limit_key)))
    }
}

/// What a per-address limit counts `ip` as. One IPv6 subscriber gets a whole /64 (2^64
/// addresses), so counting each address apart would give one client as many budgets as it
/// cares to use, and let it fill the limiters' key tables; an IPv4 address mapped into IPv6 is
/// the IPv4 address.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

impl ClientAddress {
    pub fn key(&self) -> String {
        self.0
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| "unknown".into())
    }
}

/// Why an identity request failed; rendered as a problem.
#[derive(Debug)]
pub enum AuthProblem {
    InvalidCredentials,
    InvalidGrant,
    InvalidResetToken,
    RateLimited(std::time::Duration),
    Busy,
    Api(ApiError),
}

impl From<ApiError> for AuthProblem {
    fn from(error: ApiError) -> Self {
        Self::Api(error)
    }
}

impl From<sqlx::Error> for AuthProblem {
    fn from(error: sqlx::Error) -> Self {
        Self::Api(ApiError::Command(crate::core::database_error(error)))
    }
}

impl From<CommandError> for AuthProblem {
    fn from(error: CommandError) -> Self {
        Self::Api(ApiError::Command(error))
    }
}

impl From<HashError> for AuthProblem {
    fn from(error: HashError) -> Self {
        match error {
            HashError::Busy => Self::Busy,
            failed => Self::Api(hash_error(failed)),
        }
    }
}

impl IntoResponse for AuthProblem {
    fn into_response(self) -> Response {
        let problem = match self {
            Self::InvalidCredentials => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid-credentials",
                "Invalid credentials",
                "the email and password (or client id and secret) do not match an account",
            ),
            Self::InvalidGrant => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid-grant",
                "Invalid refresh token",
                "the refresh token is unknown, expired, revoked or already used; log in again",
            ),
            Self::InvalidResetToken => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-reset-token",
                "Invalid reset token",
                "the reset token is unknown, expired or already used; ask for a new one",
            ),
            Self::RateLimited(wait) => rate_limited(wait),
            Self::Busy => hashing_busy(),
            Self::Api(error) => return error.into_response(),
        };
        problem.into_response()
    }
}

/// A hashing failure as an API error (registration): busy is 503, anything else ours.
pub fn hash_error(error: HashError) -> ApiError {
    match error {
        HashError::Busy => ApiError::Overloaded,
        HashError::Failed(detail) => ApiError::Command(CommandError::Internal(detail.into())),
    }
}

/// 429 `/problems/rate-limited` with `Retry-After`.
pub fn rate_limited(wait: std::time::Duration) -> Problem {
    Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many requests",
        "slow down; retry after the number of seconds in Retry-After",
    )
    .retry_after(retry_after_secs(wait))
}

/// 503 `/problems/overloaded`: too many password hashes waiting.
pub fn hashing_busy() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "Overloaded",
        "too many password checks are waiting; retry shortly",
    )
    .retry_after(1)
}

pub fn no_store(body: impl IntoResponse) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_network_of_one_subscriber_counts_as_one_address() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let key = |s: &str| limit_key(ip(s));
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:fffe")
        );
        assert_eq!(key("2001:db8:1:2::1"), ip("2001:db8:1:2::"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), ip("192.0.2.7"));
        assert_eq!(key("192.0.2.7"), ip("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }
}
