//! `/v1/payments` commands: initiate, authorize, capture, fail, refund.

use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use domain::values::{positive_amount, Currency, Money, PaymentMethod, Reason};
use domain::{Payment, PaymentCommand};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Reply;
use crate::core::{Dispatch, RequestMetadata};
use crate::error::ApiError;
use crate::http::{parse_id, JsonBody, Validator};
use crate::http::{Admitted, Operators, OwnersAndServices};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/payments", post(initiate))
        .route("/v1/payments/{id}/authorize", post(authorize))
        .route("/v1/payments/{id}/capture", post(capture))
        .route("/v1/payments/{id}/fail", post(fail))
        .route("/v1/payments/{id}/refund", post(refund))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InitiatePayment {
    pub order_id: String,
    /// Must equal the order's total.
    pub amount_minor: i64,
    /// Must equal the order's currency.
    pub currency: String,
    /// `card`, `bank_transfer` or `wallet`.
    pub method: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Amount {
    pub amount_minor: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailPayment {
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundPayment {
    pub amount_minor: i64,
    pub reason: String,
}

#[utoipa::path(post, path = "/v1/payments", tag = "payments", request_body = InitiatePayment,
    responses((status = 201, body = super::CommandAccepted),
        (status = 409, description = "the order cannot be paid, or already has a payment that has not failed"),
        (status = 422, description = "invalid field, unknown order, or amount/currency not matching the order")))]
pub async fn initiate(
    State(state): State<AppState>,
    Admitted(meta, _): Admitted<OwnersAndServices>,
    body: JsonBody<InitiatePayment>,
) -> Result<Reply, ApiError> {
    let raw = &body.value;
    let mut v = Validator::default();
    let order_id = v.check(
        "order_id",
        Uuid::parse_str(&raw.order_id).map_err(|_| "must be a UUID"),
    );
    let currency = v.check("currency", Currency::parse(&raw.currency));
    let amount = v.check("amount_minor", positive_amount(raw.amount_minor));
    let method = v.check("method", PaymentMethod::parse(&raw.method));
    let (Some(order_id), Some(currency), Some(amount), Some(method)) =
        (order_id, currency, amount, method)
    else {
        return Err(v.into_error());
    };
    let amount = Money::positive(amount, currency)
        .map_err(|e| ApiError::field("amount_minor", e.to_string()))?;
    let order = state.bus.payment_terms(order_id).await?;
    let command = PaymentCommand::Initiate {
        order_id,
        order,
        amount,
        method,
    };
    let dispatch = Dispatch::<Payment>::create("initiate_payment", command, body.digest);
    Ok(Reply::created(&state.bus.execute(&meta, dispatch).await?))
}

fn amount(raw: i64) -> Result<i64, ApiError> {
    positive_amount(raw).map_err(|e| ApiError::field("amount_minor", e.to_string()))
}

fn reason(raw: &str) -> Result<Reason, ApiError> {
    Reason::parse(raw).map_err(|e| ApiError::field("reason", e.to_string()))
}

async fn run(
    state: AppState,
    meta: RequestMetadata,
    name: &'static str,
    id: String,
    command: PaymentCommand,
    digest: [u8; 32],
) -> Result<Reply, ApiError> {
    let id = parse_id(&id, "payment")?;
    let dispatch = Dispatch::<Payment>::existing(name, id, command, digest);
    Ok(Reply::ok(&state.bus.execute(&meta, dispatch).await?))
}

#[utoipa::path(post, path = "/v1/payments/{id}/authorize", tag = "payments", params(("id" = Uuid, Path)),
    request_body = Amount, responses((status = 200, body = super::CommandAccepted),
        (status = 409, description = "exceeds the payment amount, or illegal transition")))]
pub async fn authorize(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Admitted(meta, _): Admitted<Operators>,
    body: JsonBody<Amount>,
) -> Result<Reply, ApiError> {
    let command = PaymentCommand::Authorize {
        amount_minor: amount(body.value.amount_minor)?,
    };
    run(state, meta, "authorize_payment", id, command, body.digest).await
}

#[utoipa::path(post, path = "/v1/payments/{id}/capture", tag = "payments", params(("id" = Uuid, Path)),
    request_body = Amount, responses((status = 200, body = super::CommandAccepted),
        (status = 409, description = "exceeds the authorized amount, or illegal transition")))]
pub async fn capture(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Admitted(meta, _): Admitted<Operators>,
    body: JsonBody<Amount>,
) -> Result<Reply, ApiError> {
    let command = PaymentCommand::Capture {
        amount_minor: amount(body.value.amount_minor)?,
    };
    run(state, meta, "capture_payment", id, command, body.digest).await
}

#[utoipa::path(post, path = "/v1/payments/{id}/fail", tag = "payments", params(("id" = Uuid, Path)),
    request_body = FailPayment, responses((status = 200, body = super::CommandAccepted),
        (status = 409, description = "illegal transition")))]
pub async fn fail(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Admitted(meta, _): Admitted<Operators>,
    body: JsonBody<FailPayment>,
) -> Result<Reply, ApiError> {
    let command = PaymentCommand::Fail {
        reason: reason(&body.value.reason)?,
    };
    run(state, meta, "fail_payment", id, command, body.digest).await
}

#[utoipa::path(post, path = "/v1/payments/{id}/refund", tag = "payments", params(("id" = Uuid, Path)),
    request_body = RefundPayment, responses((status = 200, body = super::CommandAccepted),
        (status = 409, description = "exceeds captured minus refunded, or illegal transition")))]
pub async fn refund(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Admitted(meta, _): Admitted<Operators>,
    body: JsonBody<RefundPayment>,
) -> Result<Reply, ApiError> {
    let mut v = Validator::default();
    let amount_minor = v.check("amount_minor", positive_amount(body.value.amount_minor));
    let reason = v.check("reason", Reason::parse(&body.value.reason));
    let (Some(amount_minor), Some(reason)) = (amount_minor, reason) else {
        return Err(v.into_error());
    };
    let command = PaymentCommand::Refund {
        amount_minor,
        reason,
    };
    run(state, meta, "refund_payment", id, command, body.digest).await
}
