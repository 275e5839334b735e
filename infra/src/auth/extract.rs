//! `Authorization: Bearer <token>` as axum extractors. The service puts its [`Verifier`] into
//! the request extensions (an `Extension` layer); [`Authenticated`] yields the principal or a
//! 401 `/problems/unauthenticated` with `WWW-Authenticate: Bearer`, and [`OptionalPrincipal`]
//! allows no token at all (a token that is present must still be valid).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Principal, TokenError, Verifier};
use crate::http::Problem;

/// Why a request is not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("the Authorization header is not `Bearer <token>`")]
    Malformed,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("the service has no token verifier")]
    NotConfigured,
}

impl AuthError {
    pub fn problem(&self) -> Problem {
        let detail = match self {
            Self::Missing => "this route needs `Authorization: Bearer <access token>`",
            Self::Malformed => "the Authorization header must be `Bearer <access token>`",
            Self::Token(TokenError::Expired) => "the access token has expired; refresh it",
            Self::Token(_) | Self::NotConfigured => "the access token is not valid here",
        };
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Unauthenticated",
            detail,
        )
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        if matches!(self, Self::NotConfigured) {
            tracing::error!("a route needs authentication but the service has no verifier");
        }
        let challenge = match self {
            Self::Missing => r#"Bearer realm="commerce""#,
            _ => r#"Bearer realm="commerce", error="invalid_token""#,
        };
        let mut response = self.problem().into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        response
    }
}

/// The bearer token of a request, if it has one; a malformed header is an error.
pub fn bearer(parts: &Parts) -> Result<Option<&str>, AuthError> {
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = text.split_once(' ').ok_or(AuthError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.len() > 8192 {
        return Err(AuthError::Malformed);
    }
    Ok(Some(token))
}

async fn verify(parts: &Parts, token: &str) -> Result<Principal, AuthError> {
    let verifier = parts
        .extensions
        .get::<Arc<Verifier>>()
        .ok_or(AuthError::NotConfigured)?;
    Ok(verifier.verify(token).await?)
}

/// A request with a valid access token.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(Self(principal.clone()));
        }
        let token = bearer(parts)?.ok_or(AuthError::Missing)?;
        let principal = verify(parts, token).await?;
        parts.extensions.insert(principal.clone());
        Ok(Self(principal))
    }
}

/// A request that may carry a token (registration); one it carries must be valid.
#[derive(Debug, Clone)]
pub struct OptionalPrincipal(pub Option<Principal>);

impl<S: Send + Sync> FromRequestParts<S> for OptionalPrincipal {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if bearer(parts)?.is_none() {
            return Ok(Self(None));
        }
        let Authenticated(principal) = Authenticated::from_request_parts(parts, state).await?;
        Ok(Self(Some(principal)))
    }
}
