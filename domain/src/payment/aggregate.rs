//! The `Payment` aggregate. Amount rules are enforced in `handle`; events carry running totals.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{PaymentCommand, PaymentError, PaymentEvent};
use crate::order::{OrderStatus, PaymentTerms};
use crate::values::{Currency, Money, PaymentMethod};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Initiated,
    Authorized,
    Captured,
    PartiallyRefunded,
    Refunded,
    Failed,
}

impl PaymentStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Initiated => "initiated",
            Self::Authorized => "authorized",
            Self::Captured => "captured",
            Self::PartiallyRefunded => "partially_refunded",
            Self::Refunded => "refunded",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `None` until the payment is initiated.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    state: Option<PaymentState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PaymentState {
    order_id: Uuid,
    amount_minor: i64,
    currency: Currency,
    method: PaymentMethod,
    status: PaymentStatus,
    authorized_minor: i64,
    captured_minor: i64,
    refunded_minor: i64,
}

fn initiate(
    order_id: Uuid,
    order: PaymentTerms,
    amount: Money,
    method: PaymentMethod,
) -> Result<PaymentEvent, PaymentError> {
    if !matches!(
        order.status,
        OrderStatus::Created | OrderStatus::Confirmed | OrderStatus::Processing
    ) {
        return Err(PaymentError::OrderNotPayable {
            status: order.status,
        });
    }
    if amount.currency != order.currency {
        return Err(PaymentError::CurrencyMismatch {
            expected: order.currency,
        });
    }
    if amount.amount_minor != order.total_minor {
        return Err(PaymentError::AmountMismatch {
            expected: order.total_minor,
        });
    }
    Ok(PaymentEvent::Initiated {
        order_id,
        amount_minor: amount.amount_minor,
        currency: amount.currency,
        method,
    })
}

impl Payment {
    /// The order the payment is for.
    pub fn order_id(&self) -> Option<Uuid> {
        self.state.as_ref().map(|s| s.order_id)
    }

    pub fn status(&self) -> Option<PaymentStatus> {
        self.state.as_ref().map(|s| s.status)
    }

    fn decide(&self, command: PaymentCommand) -> Result<PaymentEvent, PaymentError> {
        use PaymentStatus as S;
        if let PaymentCommand::Initiate {
            order_id,
            order,
            amount,
            method,
        } = command
        {
            if self.state.is_some() {
                return Err(PaymentError::AlreadyInitiated);
            }
            return initiate(order_id, order, amount, method);
        }
        let s = self.state.as_ref().ok_or(PaymentError::NotFound)?;
        let refuse = |action| {
            Err(PaymentError::IllegalTransition {
                from: s.status,
                action,
            })
        };
        match (command, s.status) {
            (PaymentCommand::Initiate { .. }, _) => Err(PaymentError::AlreadyInitiated),
            (PaymentCommand::Authorize { amount_minor }, S::Initiated) => {
                if amount_minor > s.amount_minor {
                    return Err(PaymentError::AuthorizationExceedsAmount {
                        max: s.amount_minor,
                    });
                }
                Ok(PaymentEvent::Authorized {
                    order_id: s.order_id,
                    amount_minor,
                    currency: s.currency,
                })
            }
            (PaymentCommand::Authorize { .. }, _) => refuse("authorize"),
            // What is left of the authorization can be captured after a refund too: a provider
            // may capture the rest after refunding part of a first capture, and refusing its
            // report would leave money taken that the books do not show.
            (
                PaymentCommand::Capture { amount_minor },
                S::Authorized | S::Captured | S::PartiallyRefunded | S::Refunded,
            ) => {
                let available = s.authorized_minor - s.captured_minor;
                if amount_minor > available {
                    return Err(PaymentError::CaptureExceedsAuthorized { available });
                }
                Ok(PaymentEvent::Captured {
                    order_id: s.order_id,
                    amount_minor,
                    currency: s.currency,
                    captured_total_minor: s.captured_minor + amount_minor,
                })
            }
            (PaymentCommand::Capture { .. }, _) => refuse("capture"),
            (PaymentCommand::Fail { reason }, S::Initiated | S::Authorized) => {
                Ok(PaymentEvent::Failed {
                    order_id: s.order_id,
                    reason,
                })
            }
            (PaymentCommand::Fail { .. }, _) => refuse("fail"),
            (
                PaymentCommand::Refund {
                    amount_minor,
                    reason,
                },
                S::Captured | S::PartiallyRefunded | S::Refunded,
            ) => {
                // Refunded in full, nothing is left: the rule broken is the amount's (a later
                // capture can still be refunded).
                let available = s.captured_minor - s.refunded_minor;
                if amount_minor > available || available <= 0 {
                    return Err(PaymentError::RefundExceedsCaptured { available });
                }
                let refunded_total_minor = s.refunded_minor + amount_minor;
                Ok(PaymentEvent::Refunded {
                    order_id: s.order_id,
                    amount_minor,
                    currency: s.currency,
                    reason,
                    refunded_total_minor,
                    fully_refunded: refunded_total_minor == s.captured_minor,
                })
            }
            (PaymentCommand::Refund { .. }, _) => refuse("refund"),
        }
    }
}

impl Aggregate for Payment {
    const TYPE: &'static str = "payment";
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;
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
        if let PaymentEvent::Initiated {
            order_id,
            amount_minor,
            currency,
            method,
        } = event
        {
            self.state = Some(PaymentState {
                order_id,
                amount_minor,
                currency,
                method,
                status: PaymentStatus::Initiated,
                authorized_minor: 0,
                captured_minor: 0,
                refunded_minor: 0,
            });
            return;
        }
        let Some(s) = self.state.as_mut() else {
            return;
        };
        match event {
            PaymentEvent::Initiated { .. } => {}
            PaymentEvent::Authorized { amount_minor, .. } => {
                s.authorized_minor = amount_minor;
                s.status = PaymentStatus::Authorized;
            }
            PaymentEvent::Captured {
                captured_total_minor,
                ..
            } => {
                s.captured_minor = captured_total_minor;
                // Refunds made before this capture stay: it is partly refunded.
                s.status = match s.refunded_minor > 0 {
                    true => PaymentStatus::PartiallyRefunded,
                    false => PaymentStatus::Captured,
                };
            }
            PaymentEvent::Failed { .. } => s.status = PaymentStatus::Failed,
            PaymentEvent::Refunded {
                refunded_total_minor,
                fully_refunded,
                ..
            } => {
                s.refunded_minor = refunded_total_minor;
                s.status = if fully_refunded {
                    PaymentStatus::Refunded
                } else {
                    PaymentStatus::PartiallyRefunded
                };
            }
        }
    }
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;
