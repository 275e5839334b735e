//! Commands accepted by the `Order` aggregate.

use uuid::Uuid;

use crate::values::{Address, Carrier, Currency, Quantity, Reason, Sku, TrackingNumber, UnitPrice};

#[derive(Debug, Clone, PartialEq)]
pub struct NewLineItem {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price: UnitPrice,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    /// The caller has checked that `customer_id` names an active user.
    Place {
        customer_id: Uuid,
        currency: Currency,
        items: Vec<NewLineItem>,
        shipping_address: Address,
    },
    Confirm,
    StartProcessing,
    Ship {
        carrier: Carrier,
        tracking_number: TrackingNumber,
    },
    Deliver,
    Cancel {
        reason: Reason,
    },
}
