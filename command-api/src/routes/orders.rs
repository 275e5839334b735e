//! `/v1/orders` commands: place, confirm, start processing, ship, deliver, cancel.

use axum::extract::{Path, State};
use axum::routing::post;
use axum::Router;
use domain::order::NewLineItem;
use domain::values::{Carrier, Currency, Quantity, Reason, Sku, TrackingNumber, UnitPrice};
use domain::{Order, OrderCommand, OrderEvent};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::users::{parse_address, AddressBody};
use super::Reply;
use crate::core::{Dispatch, RequestMetadata};
use crate::error::ApiError;
use crate::http::{parse_id, EmptyBody, JsonBody, Validator};
use crate::http::{Admitted, Operators, Owners, OwnersAndServices};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/orders", post(place))
        .route("/v1/orders/{id}/confirm", post(confirm))
        .route("/v1/orders/{id}/start-processing", post(start_processing))
        .route("/v1/orders/{id}/ship", post(ship))
        .route("/v1/orders/{id}/deliver", post(deliver))
        .route("/v1/orders/{id}/cancel", post(cancel))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineItemBody {
    pub sku: String,
    /// 1 to 10 000.
    pub quantity: i64,
    /// Price of one unit in minor units of the order's currency.
    pub unit_price_minor: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    pub customer_id: String,
    /// ISO 4217, upper case.
    pub currency: String,
    pub items: Vec<LineItemBody>,
    pub shipping_address: AddressBody,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShipOrder {
    pub carrier: String,
    pub tracking_number: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelOrder {
    pub reason: String,
}

fn parse_items(v: &mut Validator, items: &[LineItemBody]) -> Vec<NewLineItem> {
    let mut parsed = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let sku = v.check(format!("items[{i}].sku"), Sku::parse(&item.sku));
        let quantity = v.check(
            format!("items[{i}].quantity"),
            Quantity::parse(item.quantity),
        );
        let unit_price = v.check(
            format!("items[{i}].unit_price_minor"),
            UnitPrice::parse(item.unit_price_minor),
        );
        if let (Some(sku), Some(quantity), Some(unit_price)) = (sku, quantity, unit_price) {
            parsed.push(NewLineItem {
                sku,
                quantity,
                unit_price,
            });
        }
    }
    parsed
}

fn parse_place(body: &PlaceOrder) -> Result<OrderCommand, ApiError> {
    let mut v = Validator::default();
    let customer_id = v.check(
        "customer_id",
        Uuid::parse_str(&body.customer_id).map_err(|_| "must be a UUID"),
    );
    let currency = v.check("currency", Currency::parse(&body.currency));
    let items = parse_items(&mut v, &body.items);
    let address = parse_address(&mut v, "shipping_address.", &body.shipping_address);
    match (customer_id, currency, address) {
        (Some(customer_id), Some(currency), Some(shipping_address)) if v.is_clean() => {
            Ok(OrderCommand::Place {
                customer_id,
                currency,
                items,
                shipping_address,
            })
        }
        _ => Err(v.into_error()),
    }
}

#[utoipa::path(post, path = "/v1/orders", tag = "orders", request_body = PlaceOrder,
    responses((status = 201, description = "`{id, version, position, total_minor}`"),
        (status = 422, description = "invalid field, or no active customer with that id")))]
pub async fn place(
    State(state): State<AppState>,
    Admitted(meta, _): Admitted<Owners>,
    body: JsonBody<PlaceOrder>,
) -> Result<Reply, ApiError> {
    let command = parse_place(&body.value)?;
    if let OrderCommand::Place { customer_id, .. } = &command {
        if let Err(refused) = state.bus.require_active_customer(*customer_id).await {
            // A request with this key that placed the order (before the customer was
            // deactivated, or while this one was checking) is answered as it was: an order
            // placed stays placed for a client retrying. Otherwise the dispatch looks it up.
            if let Some(outcome) = state
                .bus
                .replayed::<Order>("place_order", &meta, &body.digest)
                .await?
            {
                return Ok(placed(&outcome));
            }
            return Err(refused.into());
        }
    }
    let dispatch = Dispatch::<Order>::create("place_order", command, body.digest);
    Ok(placed(&state.bus.execute(&meta, dispatch).await?))
}

fn placed(outcome: &crate::core::Outcome<OrderEvent>) -> Reply {
    let total = outcome.events.first().and_then(|event| match event {
        OrderEvent::Placed { total_minor, .. } => Some(*total_minor),
        _ => None,
    });
    Reply::created(outcome).with("total_minor", total)
}

async fn transition(
    state: AppState,
    meta: RequestMetadata,
    name: &'static str,
    id: String,
    command: OrderCommand,
    digest: [u8; 32],
) -> Result<Reply, ApiError> {
    let id = parse_id(&id, "order")?;
    let dispatch = Dispatch::<Order>::existing(name, id, command, digest);
    Ok(Reply::ok(&state.bus.execute(&meta, dispatch).await?))
}

#[utoipa::path(post, path = "/v1/orders/{id}/confirm", tag = "orders", params(("id" = Uuid, Path)),
    responses((status = 200, body = super::CommandAccepted), (status = 409, description = "illegal transition")))]
pub async fn confirm(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Admitted(meta, _): Admitted<Operators>,
    body: JsonBody<EmptyBody>,
) -> Result<Reply, ApiError> {
    transition(
        state,
        meta,
        "confirm_order",
        id,
        OrderCommand::Confirm,
        body.digest,
    )
    .await
}

#[utoipa::path(post, path = "/v1/orders/{id}/start-processing", tag = "orders", params(("id" = Uuid, Path)),
    responses((status = 200, body = super::CommandAccepted), (status = 409, description = "illegal transition")))]
pub async fn start_processing(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Admitted(meta, _): Admitted<Operators>,
    body: JsonBody<EmptyBody>,
) -> Result<Reply, ApiError> {
    let command = OrderCommand::StartProcessing;
    transition(state, meta, "start_processing", id, command, body.digest).await
}

#[utoipa::path(post, path = "/v1/orders/{id}/ship", tag = "orders", params(("id" = Uuid, Path)),
    request_body = ShipOrder,
    responses((status = 200, body = super::CommandAccepted), (status = 409, description = "illegal transition")))]
pub async fn ship(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Admitted(meta, _): Admitted<Operators>,
    body: JsonBody<ShipOrder>,
) -> Result<Reply, ApiError> {
    let mut v = Validator::default();
    let carrier = v.check("carrier", Carrier::parse(&body.value.carrier));
    let tracking = v.check(
        "tracking_number",
        TrackingNumber::parse(&body.value.tracking_number),
    );
    let (Some(carrier), Some(tracking_number)) = (carrier, tracking) else {
        return Err(v.into_error());
    };
    let command = OrderCommand::Ship {
        carrier,
        tracking_number,
    };
    transition(state, meta, "ship_order", id, command, body.digest).await
}

#[utoipa::path(post, path = "/v1/orders/{id}/deliver", tag = "orders", params(("id" = Uuid, Path)),
    responses((status = 200, body = super::CommandAccepted), (status = 409, description = "illegal transition")))]
pub async fn deliver(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Admitted(meta, _): Admitted<Operators>,
    body: JsonBody<EmptyBody>,
) -> Result<Reply, ApiError> {
    transition(
        state,
        meta,
        "deliver_order",
        id,
        OrderCommand::Deliver,
        body.digest,
    )
    .await
}

#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders", params(("id" = Uuid, Path)),
    request_body = CancelOrder,
    responses((status = 200, body = super::CommandAccepted), (status = 409, description = "illegal transition")))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Admitted(meta, _): Admitted<OwnersAndServices>,
    body: JsonBody<CancelOrder>,
) -> Result<Reply, ApiError> {
    let reason =
        Reason::parse(&body.value.reason).map_err(|e| ApiError::field("reason", e.to_string()))?;
    transition(
        state,
        meta,
        "cancel_order",
        id,
        OrderCommand::Cancel { reason },
        body.digest,
    )
    .await
}
