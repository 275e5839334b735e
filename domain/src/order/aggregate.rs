//! The `Order` aggregate. Totals are computed once, in `handle`, and carried by the event.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{LineItem, NewLineItem, OrderCommand, OrderError, OrderEvent};
use crate::values::{Currency, MAX_AMOUNT_MINOR};

/// How many lines one order may have.
pub const MAX_LINE_ITEMS: usize = 100;

/// The reason of a cancellation for a failed payment (the process manager's): it applies only
/// to an order not confirmed yet. Once confirmed (by another payment that a failed one raced,
/// or by an operator), an order is not cancelled because one payment attempt failed.
pub const PAYMENT_FAILED: &str = "payment_failed";

/// The reason of a cancellation for a payment captured as far as its authorization allows
/// without paying the order (the process manager's): from any state a cancellation is allowed
/// from, so that what it took is refunded, even of an order an operator confirmed.
pub const PAYMENT_SHORT: &str = "payment_short";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Created,
    Confirmed,
    Processing,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [OrderStatus; 6] = [
        Self::Created,
        Self::Confirmed,
        Self::Processing,
        Self::Shipped,
        Self::Delivered,
        Self::Cancelled,
    ];

    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Confirmed => "confirmed",
            Self::Processing => "processing",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a payment needs to know about its order; resolved by the caller from the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentTerms {
    pub total_minor: i64,
    pub currency: Currency,
    pub status: OrderStatus,
}

/// `None` until the order is placed.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    state: Option<OrderState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderState {
    customer_id: Uuid,
    currency: Currency,
    total_minor: i64,
    status: OrderStatus,
}

impl Order {
    /// The customer who placed the order.
    pub fn customer_id(&self) -> Option<Uuid> {
        self.state.as_ref().map(|s| s.customer_id)
    }

    pub fn status(&self) -> Option<OrderStatus> {
        self.state.as_ref().map(|s| s.status)
    }

    pub fn payment_terms(&self) -> Option<PaymentTerms> {
        self.state.as_ref().map(|s| PaymentTerms {
            total_minor: s.total_minor,
            currency: s.currency,
            status: s.status,
        })
    }

    fn place(
        customer_id: Uuid,
        currency: Currency,
        items: Vec<NewLineItem>,
        shipping_address: crate::values::Address,
    ) -> Result<OrderEvent, OrderError> {
        if items.is_empty() {
            return Err(OrderError::NoItems);
        }
        if items.len() > MAX_LINE_ITEMS {
            return Err(OrderError::TooManyItems {
                max: MAX_LINE_ITEMS,
            });
        }
        let mut lines = Vec::with_capacity(items.len());
        let mut total: i64 = 0;
        for (index, item) in items.into_iter().enumerate() {
            if lines.iter().any(|l: &LineItem| l.sku == item.sku) {
                return Err(OrderError::DuplicateSku { index });
            }
            let line_total = item
                .unit_price
                .minor()
                .checked_mul(i64::from(item.quantity.get()))
                .ok_or(OrderError::TotalTooLarge)?;
            total = total
                .checked_add(line_total)
                .filter(|t| *t <= MAX_AMOUNT_MINOR)
                .ok_or(OrderError::TotalTooLarge)?;
            lines.push(LineItem {
                sku: item.sku,
                quantity: item.quantity,
                unit_price_minor: item.unit_price,
                line_total_minor: line_total,
            });
        }
        if total == 0 {
            return Err(OrderError::NothingToPay);
        }
        Ok(OrderEvent::Placed {
            customer_id,
            currency,
            items: lines,
            total_minor: total,
            shipping_address,
        })
    }

    fn decide(&self, command: OrderCommand) -> Result<OrderEvent, OrderError> {
        use OrderStatus as S;
        if let OrderCommand::Place {
            customer_id,
            currency,
            items,
            shipping_address,
        } = command
        {
            if self.state.is_some() {
                return Err(OrderError::AlreadyPlaced);
            }
            return Self::place(customer_id, currency, items, shipping_address);
        }
        let from = self.status().ok_or(OrderError::NotFound)?;
        let refuse = |action| Err(OrderError::IllegalTransition { from, action });
        match (command, from) {
            (OrderCommand::Place { .. }, _) => Err(OrderError::AlreadyPlaced),
            (OrderCommand::Confirm, S::Created) => Ok(OrderEvent::Confirmed),
            (OrderCommand::Confirm, _) => refuse("confirm"),
            (OrderCommand::StartProcessing, S::Confirmed) => Ok(OrderEvent::ProcessingStarted),
            (OrderCommand::StartProcessing, _) => refuse("start processing"),
            (
                OrderCommand::Ship {
                    carrier,
                    tracking_number,
                },
                S::Processing,
            ) => Ok(OrderEvent::Shipped {
                carrier,
                tracking_number,
            }),
            (OrderCommand::Ship { .. }, _) => refuse("ship"),
            (OrderCommand::Deliver, S::Shipped) => Ok(OrderEvent::Delivered),
            (OrderCommand::Deliver, _) => refuse("deliver"),
            // A payment has confirmed the order since the failed one was decided about.
            (OrderCommand::Cancel { reason }, S::Confirmed | S::Processing)
                if reason.as_str() == PAYMENT_FAILED =>
            {
                refuse("cancel for a failed payment")
            }
            (OrderCommand::Cancel { reason }, S::Created | S::Confirmed | S::Processing) => {
                Ok(OrderEvent::Cancelled {
                    reason,
                    cancelled_from: from,
                })
            }
            (OrderCommand::Cancel { .. }, _) => refuse("cancel"),
        }
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let next = match event {
            OrderEvent::Placed {
                customer_id,
                currency,
                total_minor,
                ..
            } => {
                self.state = Some(OrderState {
                    customer_id,
                    currency,
                    total_minor,
                    status: OrderStatus::Created,
                });
                return;
            }
            OrderEvent::Confirmed => OrderStatus::Confirmed,
            OrderEvent::ProcessingStarted => OrderStatus::Processing,
            OrderEvent::Shipped { .. } => OrderStatus::Shipped,
            OrderEvent::Delivered => OrderStatus::Delivered,
            OrderEvent::Cancelled { .. } => OrderStatus::Cancelled,
        };
        if let Some(state) = self.state.as_mut() {
            state.status = next;
        }
    }
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;
