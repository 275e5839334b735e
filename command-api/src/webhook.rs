//! `POST /v1/webhooks/payments`: the payment provider's signed callbacks.
//!
//! The provider signs `"<t>.<raw body>"` with HMAC-SHA256 and sends
//! `X-Signature: t=<unix seconds>,v1=<hex>`. A callback is accepted when some `v1` matches
//! one of the configured secrets (two during a rotation), compared in constant time, and `t`
//! is within `webhook.tolerance_secs` of now. Its `provider_event_id` is the idempotency key
//! of the resulting command, so the dedup record is written in the same transaction as the
//! events: a replayed callback is answered 200 and writes nothing.

use aws_lc_rs::hmac;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use domain::values::Reason;
use domain::{Payment, PaymentCommand};
use infra::auth::{Principal, Role, Subject};
use infra::http::Problem;
use infra::secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::core::{CommandError, Dispatch, RequestMetadata};
use crate::error::ApiError;
use crate::http::{header_token, metadata, parse, read_limited, ID_HEADER_MAX};
use crate::routes::Reply;
use crate::state::AppState;

/// The principal callbacks act as; the actor of the events they cause.
pub const CLIENT_ID: &str = "payments-webhook";
/// Longest `provider_event_id`.
pub const PROVIDER_EVENT_ID_MAX: usize = 255;

pub struct Webhook {
    keys: Vec<hmac::Key>,
    tolerance_secs: i64,
    body_limit: usize,
}

/// Shortest webhook secret accepted in the settings.
pub const MIN_SECRET_CHARS: usize = 16;

/// Why a callback's signature was not accepted.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no X-Signature header")]
    Missing,
    #[error("X-Signature is not `t=<unix seconds>,v1=<hex>`")]
    Malformed,
    #[error("the signature's timestamp is too far from now")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

impl Webhook {
    /// Secrets shorter than [`MIN_SECRET_CHARS`] are refused: `Err` names how many were.
    pub fn new(
        secrets: &[SecretString],
        tolerance_secs: u64,
        body_limit: usize,
    ) -> Result<Self, usize> {
        let short = secrets
            .iter()
            .filter(|s| s.expose_secret().chars().count() < MIN_SECRET_CHARS)
            .count();
        if short > 0 {
            return Err(short);
        }
        Ok(Self {
            keys: secrets
                .iter()
                .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.expose_secret().as_bytes()))
                .collect(),
            tolerance_secs: tolerance_secs as i64,
            body_limit,
        })
    }

    /// Checks `X-Signature` against the raw body at time `now` (unix seconds).
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<(), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
                // A signature is an HMAC-SHA256 in hex, and a header carries a few at most
                // (one per secret the provider signs with during a rotation).
                Some(("v1", value)) if signatures.len() < MAX_SIGNATURES => {
                    let signature = hex::decode(value).map_err(|_| SignatureError::Malformed)?;
                    if signature.len() != SIGNATURE_BYTES {
                        return Err(SignatureError::Malformed);
                    }
                    signatures.push(signature);
                }
                Some(("v1", _)) => return Err(SignatureError::Malformed),
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
        if signatures.is_empty() {
            return Err(SignatureError::Malformed);
        }
        if now.abs_diff(timestamp) > self.tolerance_secs.unsigned_abs() {
            return Err(SignatureError::Stale);
        }
        let mut signed = Vec::with_capacity(body.len() + 24);
        signed.extend_from_slice(timestamp.to_string().as_bytes());
        signed.push(b'.');
        signed.extend_from_slice(body);
        // One HMAC per secret, compared with every signature in constant time: the work does
        // not grow with the signatures a header carries.
        let matched = self.keys.iter().any(|key| {
            let expected = hmac::sign(key, &signed);
            signatures.iter().any(|signature| {
                aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_ref(), signature)
                    .is_ok()
            })
        });
        matched.then_some(()).ok_or(SignatureError::Mismatch)
    }
}

/// The most `v1` signatures one `X-Signature` may carry.
const MAX_SIGNATURES: usize = 4;
/// The length of an HMAC-SHA256.
const SIGNATURE_BYTES: usize = 32;

/// The `X-Signature` a provider sends for `body` at `t` (unix seconds) with `secret`: what
/// [`Webhook::verify`] checks, for providers' client code and tests.
pub fn signature_header(secret: &str, t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    format!(
        "t={t},v1={}",
        hex::encode(hmac::sign(&key, &signed).as_ref())
    )
}

/// A provider callback.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentCallback {
    /// The provider's id of this notification; a repeat is acknowledged and ignored.
    pub provider_event_id: String,
    pub payment_id: String,
    #[serde(rename = "type")]
    pub kind: CallbackKind,
    pub amount_minor: i64,
    /// Why a payment failed or was refunded, if the provider says.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallbackKind {
    Authorized,
    Captured,
    Failed,
    Refunded,
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/webhooks/payments", post(payments))
}

#[utoipa::path(post, path = "/v1/webhooks/payments", tag = "webhooks", request_body = PaymentCallback,
    params(("X-Signature" = String, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<raw body>\">`")),
    responses((status = 200, body = crate::routes::CommandAccepted,
            description = "applied, or a replay of a callback already applied (nothing written)"),
        (status = 401, description = "`/problems/invalid-signature`: missing or bad signature, or `t` more than 300 s away"),
        (status = 404, description = "no such payment"), (status = 409, description = "the payment's state forbids it"),
        (status = 422, description = "invalid field")))]
pub async fn payments(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Reply, ApiError> {
    let webhook = &state.webhook;
    let (parts, body) = request.into_parts();
    let request = axum::extract::Request::from_parts(parts.clone(), body);
    let body: Bytes = read_limited(request, webhook.body_limit).await?;
    let header = parts
        .headers
        .get("x-signature")
        .and_then(|v| v.to_str().ok());
    if let Err(error) = webhook.verify(header, &body, chrono::Utc::now().timestamp()) {
        metrics::counter!("webhook_signatures_refused_total").increment(1);
        tracing::warn!(%error, "payment callback refused");
        return Err(ApiError::Signature);
    }
    let callback: PaymentCallback = parse(&body)?;
    let (payment_id, command) = command(&callback)?;
    let principal = Principal::new(Subject::Service(CLIENT_ID.to_owned()), [Role::Service]);
    // No version is expected (`If-Match` is left out), and the provider's event id is the key.
    let mut meta: RequestMetadata = metadata(&unsigned_left_out(parts), Some(principal))?;
    meta.idempotency_key = Some(callback.provider_event_id.clone());
    let name = command_name(callback.kind);
    let digest = content_digest(&callback, payment_id);
    let dispatch = Dispatch::<Payment>::existing(name, payment_id, command, digest);
    match state.bus.execute(&meta, dispatch).await {
        Ok(outcome) => Ok(Reply::ok(&outcome)),
        Err(CommandError::IdempotencyKeyMismatch) => {
            // A callback recorded before keys were bound to what it says was bound to its raw
            // body's digest: the same bytes sent again are a replay of it.
            let raw: [u8; 32] = Sha256::digest(&body).into();
            match state.bus.replayed::<Payment>(name, &meta, &raw).await? {
                Some(outcome) => Ok(Reply::ok(&outcome)),
                None => Err(CommandError::IdempotencyKeyMismatch.into()),
            }
        }
        Err(error) => Err(error.into()),
    }
}

/// The request's parts without what a callback is not judged by: its own `Idempotency-Key` and
/// `If-Match` (the provider's event id is the key, and no version is expected), and an id
/// header the command routes would refuse (the command gets ids of its own instead). A
/// provider or a proxy adding such a header would otherwise be answered 400 at every retry.
fn unsigned_left_out(mut parts: axum::http::request::Parts) -> axum::http::request::Parts {
    for name in ["idempotency-key", "if-match"] {
        parts.headers.remove(name);
    }
    for name in ["x-correlation-id", "x-causation-id"] {
        if header_token(&parts.headers, name, ID_HEADER_MAX).is_err() {
            parts.headers.remove(name);
        }
    }
    parts
}

/// What a callback says, as a digest its `provider_event_id` is bound to: the same event sent
/// again in another serialisation (key order, spacing, the id's letter case) is a replay; the
/// same event id saying something else is refused.
fn content_digest(callback: &PaymentCallback, payment_id: Uuid) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut field = |bytes: &[u8]| {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    };
    field(callback.provider_event_id.as_bytes());
    field(payment_id.as_bytes());
    field(command_name(callback.kind).as_bytes());
    field(&callback.amount_minor.to_be_bytes());
    match &callback.reason {
        Some(reason) => {
            field(b"reason");
            field(reason.as_bytes());
        }
        None => field(b""),
    }
    hasher.finalize().into()
}

fn command_name(kind: CallbackKind) -> &'static str {
    match kind {
        CallbackKind::Authorized => "webhook_authorize_payment",
        CallbackKind::Captured => "webhook_capture_payment",
        CallbackKind::Failed => "webhook_fail_payment",
        CallbackKind::Refunded => "webhook_refund_payment",
    }
}

fn command(callback: &PaymentCallback) -> Result<(Uuid, PaymentCommand), ApiError> {
    let id = &callback.provider_event_id;
    if id.is_empty()
        || id.len() > PROVIDER_EVENT_ID_MAX
        || !id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::field(
            "provider_event_id",
            format!("must be 1 to {PROVIDER_EVENT_ID_MAX} printable ASCII characters"),
        ));
    }
    let payment_id = Uuid::parse_str(&callback.payment_id)
        .map_err(|_| ApiError::field("payment_id", "must be a UUID"))?;
    let amount_minor = callback.amount_minor;
    // As the REST routes check it: 1 to MAX_AMOUNT_MINOR (before, only positivity, and an
    // amount past the maximum met a business rule, 409, instead of naming the field).
    if !matches!(callback.kind, CallbackKind::Failed)
        && domain::values::positive_amount(amount_minor).is_err()
    {
        return Err(ApiError::field(
            "amount_minor",
            format!("must be 1 to {}", domain::values::MAX_AMOUNT_MINOR),
        ));
    }
    // A provider's localized reason may come wrapped in directional isolates (Arabic, Hebrew):
    // they are taken out rather than the callback refused, which would leave the payment
    // event unrecorded once the provider stops retrying.
    let reason = |default: &str| {
        let raw = callback.reason.as_deref().unwrap_or(default);
        Reason::parse(&domain::values::without_bidi_controls(raw))
            .map_err(|e| ApiError::field("reason", e.to_string()))
    };
    let command = match callback.kind {
        CallbackKind::Authorized => PaymentCommand::Authorize { amount_minor },
        CallbackKind::Captured => PaymentCommand::Capture { amount_minor },
        CallbackKind::Failed => PaymentCommand::Fail {
            reason: reason("reported failed by the payment provider")?,
        },
        CallbackKind::Refunded => PaymentCommand::Refund {
            amount_minor,
            reason: reason("refunded by the payment provider")?,
        },
    };
    Ok((payment_id, command))
}

/// 401 `/problems/invalid-signature`.
pub fn signature_problem() -> Problem {
    Problem::new(
        StatusCode::UNAUTHORIZED,
        "invalid-signature",
        "Invalid signature",
        "X-Signature is missing, does not match, or its timestamp is more than the tolerance from now",
    )
}

#[cfg(test)]
#[path = "webhook_tests.rs"]
mod tests;
