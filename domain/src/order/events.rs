//! Events of the `Order` aggregate. Stored names are pinned by a test and must not change.

use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::OrderStatus;
use crate::values::{Address, Carrier, Currency, Quantity, Reason, Sku, TrackingNumber, UnitPrice};
use crate::NamedEvent;

/// A priced line of a placed order; `line_total_minor` is quantity times unit price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineItem {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price_minor: UnitPrice,
    pub line_total_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OrderEvent {
    #[serde(rename = "OrderPlaced")]
    Placed {
        customer_id: Uuid,
        currency: Currency,
        items: Vec<LineItem>,
        total_minor: i64,
        shipping_address: Address,
    },
    #[serde(rename = "OrderConfirmed")]
    Confirmed,
    #[serde(rename = "OrderProcessingStarted")]
    ProcessingStarted,
    #[serde(rename = "OrderShipped")]
    Shipped {
        carrier: Carrier,
        tracking_number: TrackingNumber,
    },
    #[serde(rename = "OrderDelivered")]
    Delivered,
    #[serde(rename = "OrderCancelled")]
    Cancelled {
        reason: Reason,
        /// The status the order was in when it was cancelled.
        cancelled_from: OrderStatus,
    },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Placed { .. } => "OrderPlaced",
            Self::Confirmed => "OrderConfirmed",
            Self::ProcessingStarted => "OrderProcessingStarted",
            Self::Shipped { .. } => "OrderShipped",
            Self::Delivered => "OrderDelivered",
            Self::Cancelled { .. } => "OrderCancelled",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

impl NamedEvent for OrderEvent {
    fn catalogue() -> &'static [(&'static str, &'static str)] {
        &[
            ("OrderPlaced", "1"),
            ("OrderConfirmed", "1"),
            ("OrderProcessingStarted", "1"),
            ("OrderShipped", "1"),
            ("OrderDelivered", "1"),
            ("OrderCancelled", "1"),
        ]
    }
}
