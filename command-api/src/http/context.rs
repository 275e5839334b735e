//! Builds the core's [`RequestMetadata`] from a request:
//!
//! - the principal of its bearer token (401 without one), after the per-principal command
//!   rate (429); the actor of its events is the token's `sub`, whatever headers say;
//! - `X-Correlation-Id` (or a new UUIDv7), `X-Causation-Id` (or this command's own id);
//! - `traceparent` (W3C, read by OpenTelemetry's propagator; continued with a new span id, or
//!   a new trace is started);
//! - `If-Match: "N"` (expected aggregate version) and `Idempotency-Key`;
//! - the method and path, as the operation an idempotency key is bound to.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use infra::auth::{Authenticated, OptionalPrincipal, Principal};
use infra::telemetry::propagation;
use uuid::Uuid;

use crate::core::policy::{self, Access};
use crate::core::{Actor, RequestMetadata};
use crate::error::ApiError;
use crate::state::AppState;

impl FromRequestParts<AppState> for RequestMetadata {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Authenticated(principal) = Authenticated::from_request_parts(parts, state).await?;
        state
            .identity
            .admit_command(&principal)
            .map_err(ApiError::RateLimited)?;
        metadata(parts, Some(principal))
    }
}

/// A command route's metadata once its principal holds a role the route's command admits
/// (`R`): a role that may not run it is answered 403 before the body is read or checked, so
/// it learns nothing of the command's validation. Ownership is checked later, on the state.
pub struct Admitted<R>(pub RequestMetadata, pub std::marker::PhantomData<R>);

/// What a route's command needs of its principal ([`Access`]).
pub trait RouteAccess {
    const ACCESS: Access;
}

/// Commands of a customer on what is theirs (and admins').
pub struct Owners;
/// [`Owners`], and services.
pub struct OwnersAndServices;
/// Fulfilment and payment state changes: admins and services.
pub struct Operators;
/// Role grants: admins.
pub struct Admins;

impl RouteAccess for Owners {
    const ACCESS: Access = Access::Owner { service: false };
}
impl RouteAccess for OwnersAndServices {
    const ACCESS: Access = Access::Owner { service: true };
}
impl RouteAccess for Operators {
    const ACCESS: Access = Access::Operator;
}
impl RouteAccess for Admins {
    const ACCESS: Access = Access::Admin;
}

impl<R: RouteAccess> FromRequestParts<AppState> for Admitted<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let meta = RequestMetadata::from_request_parts(parts, state).await?;
        policy::admit(meta.principal.as_ref(), R::ACCESS)?;
        Ok(Self(meta, std::marker::PhantomData))
    }
}

/// The metadata of a registration: a token is optional (an admin may register someone), and
/// without one the actor is the new user itself, set once its id is known. Limited per client
/// address unless the caller is an admin.
pub struct Registration(pub RequestMetadata);

impl FromRequestParts<AppState> for Registration {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let OptionalPrincipal(principal) =
            OptionalPrincipal::from_request_parts(parts, state).await?;
        // Only an admin's registrations count against its command limit; any other caller's,
        // token or not, are unauthenticated work as far as limits go: limited per address.
        // (With a customer's token counting against its command limit, every account could
        // register more accounts past the per-address limit, each a password hash.)
        let limited = match &principal {
            Some(principal) if principal.has(infra::auth::Role::Admin) => {
                state.identity.admit_command(principal)
            }
            _ => {
                match crate::identity::http::ClientAddress::from_request_parts(parts, state).await {
                    Ok(crate::identity::http::ClientAddress(Some(ip))) => {
                        state.identity.anonymous.check(&ip)
                    }
                    _ => Ok(()),
                }
            }
        };
        limited.map_err(ApiError::RateLimited)?;
        Ok(Self(metadata(parts, principal)?))
    }
}

pub fn metadata(parts: &Parts, principal: Option<Principal>) -> Result<RequestMetadata, ApiError> {
    let headers = &parts.headers;
    let command_id = Uuid::now_v7();
    let actor = principal
        .as_ref()
        .map(Principal::sub)
        .unwrap_or_else(|| "anonymous".into());
    let correlation_id = header_token(headers, "x-correlation-id", ID_HEADER_MAX)?
        .unwrap_or_else(|| command_id.to_string());
    let causation_id = header_token(headers, "x-causation-id", ID_HEADER_MAX)?
        .unwrap_or_else(|| command_id.to_string());
    let traceparent = propagation::continue_trace(&propagation::from_headers(headers));
    let expected_version = if_match(headers)?;
    let idempotency_key = header_token(headers, "idempotency-key", IDEMPOTENCY_KEY_MAX)?;
    Ok(RequestMetadata {
        principal,
        actor: Actor(actor),
        command_id,
        correlation_id,
        causation_id,
        traceparent,
        expected_version,
        idempotency_key,
        anonymous_scope: None,
        operation: format!("{} {}", parts.method, canonical_path(parts.uri.path())),
    })
}

/// `path` with every segment that is an id written the one way the routes answer with
/// (hyphenated, lower case): the routes take an id in any form `Uuid` parses, and a retry
/// naming the same aggregate otherwise is the same request.
fn canonical_path(path: &str) -> String {
    path.split('/')
        .map(|segment| match Uuid::parse_str(segment) {
            Ok(id) => id.hyphenated().to_string(),
            Err(_) => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Longest `X-Correlation-Id` and `X-Causation-Id`.
pub const ID_HEADER_MAX: usize = 128;
/// Longest `Idempotency-Key`.
pub const IDEMPOTENCY_KEY_MAX: usize = 255;
/// What [`header_token`] accepts (apart from the length), for the OpenAPI document.
pub const TOKEN_PATTERN: &str = "^[!-~]+$";
/// What [`if_match`] accepts, for the OpenAPI document: `*`, or a version of at most
/// [`VERSION_DIGITS`] digits, bare, quoted or weak (`W/"N"`).
pub const IF_MATCH_PATTERN: &str =
    r#"^(?:\*|(?:W/)?"[0-9]{1,18}(?:\.[0-9]{1,19}\.[0-9]{1,19})?"|[0-9]{1,18})$"#;
/// Most digits of an `If-Match` version (any version an aggregate can reach fits).
const VERSION_DIGITS: usize = 18;

/// A header of printable ASCII without spaces, at most `max` bytes; absent is `None`.
pub(crate) fn header_token(
    headers: &HeaderMap,
    name: &'static str,
    max: usize,
) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let bad = |message: &str| ApiError::BadHeader {
        name,
        message: message.to_owned(),
    };
    let text = value
        .to_str()
        .map_err(|_| bad("must be printable ASCII"))?
        .trim();
    if text.is_empty() {
        return Err(bad("must not be empty"));
    }
    if text.len() > max {
        return Err(bad(&format!("must be at most {max} characters")));
    }
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("must be printable ASCII without spaces"));
    }
    Ok(Some(text.to_owned()))
}

/// `If-Match: "N"` (also accepts `N` and `W/"N"`); `*` means any existing version. An order's
/// tag as the query API gives it once money has moved, `"N.paid.refunded"`, is its version N:
/// the order's commands check the order's version, which the money moved does not change.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(raw) = header_token(headers, "if-match", 64)? else {
        return Ok(None);
    };
    if raw == "*" {
        return Ok(None);
    }
    let digits = match raw.strip_prefix("W/") {
        Some(weak) => weak.strip_prefix('"').and_then(|v| v.strip_suffix('"')),
        None => Some(
            raw.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(&raw),
        ),
    };
    let quoted = raw.starts_with('"') || raw.starts_with("W/");
    let digits = digits.and_then(|tag| match tag.split_once('.') {
        // Only a quoted tag carries money, and only as two totals of digits.
        Some((version, money)) if quoted => {
            let totals = money.split_once('.').filter(|(paid, refunded)| {
                [paid, refunded]
                    .iter()
                    .all(|t| (1..=19).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit()))
            });
            totals.map(|_| version)
        }
        Some(_) => None,
        None => Some(tag),
    });
    digits
        .filter(|d| {
            (1..=VERSION_DIGITS).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit())
        })
        .and_then(|d| d.parse::<i64>().ok())
        .map(Some)
        .ok_or(ApiError::BadHeader {
            name: "if-match",
            message: "must be a version number in quotes, e.g. \"3\"".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn if_match_forms() {
        let mut headers = HeaderMap::new();
        assert_eq!(if_match(&headers).unwrap(), None);
        for (raw, expected) in [
            ("\"3\"", Some(3)),
            ("3", Some(3)),
            ("W/\"7\"", Some(7)),
            ("\"4.3000.500\"", Some(4)),
            ("W/\"4.3000.0\"", Some(4)),
            ("*", None),
        ] {
            headers.insert("if-match", HeaderValue::from_static(raw));
            assert_eq!(if_match(&headers).unwrap(), expected, "{raw}");
        }
        let pattern = regex_lite::Regex::new(IF_MATCH_PATTERN).unwrap();
        for raw in [
            "\"3\"",
            "3",
            "W/\"7\"",
            "*",
            "007",
            "\"123456789012345678\"",
            "\"123456789012345678.1000000000000000000.1000000000000000000\"",
        ] {
            headers.insert("if-match", HeaderValue::from_static(raw));
            assert!(if_match(&headers).is_ok(), "{raw}");
            assert!(pattern.is_match(raw), "{raw}");
        }
        for raw in [
            "\"abc\"",
            "\"3",
            "3\"",
            "W/3",
            "W/W/\"3\"",
            "+3",
            "-1",
            "\"\"",
            "1234567890123456789",
            "**",
            "4.3000.500",
            "\"4.3000\"",
            "\"4.3000.500.1\"",
            "\"4..500\"",
            "\".3000.500\"",
            "\"4.30a0.500\"",
        ] {
            headers.insert("if-match", HeaderValue::from_static(raw));
            assert!(
                matches!(if_match(&headers), Err(ApiError::BadHeader { .. })),
                "{raw}"
            );
            assert!(!pattern.is_match(raw), "{raw}");
        }
    }
}
