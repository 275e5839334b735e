//! The process manager's rules, as pure functions: [`decide`] says what to do about one event
//! given what is known of the order and its payments; [`evolve`] says what is known afterwards.
//!
//! Guarantees, each pinned by a test below:
//! - a payment captured in full (its amount, as initiated, net of refunds made before the
//!   capture) confirms its order, once: a partial capture does not, and neither does a later
//!   capture once the order is confirmed;
//! - a payment captured as far as its authorization allows without paying its amount (the
//!   authorization short of it, or refunds before the last capture) can never pay the order:
//!   the order is cancelled (`payment_short`), and the cancellation refunds what is left
//!   (never an underpaid order confirmed, nor one left waiting with its money taken);
//! - an order cancelled refunds every payment of it captured and not refunded, by what is left;
//!   a capture of an order known as cancelled refunds that capture: whichever of the two
//!   arrives second triggers the refund, so exactly one of them does;
//! - a payment failed cancels its order (`payment_failed`), unless another payment of the
//!   order is known and has not failed (a retry: a failed payment frees its order for one), or
//!   the order is already cancelled (the order itself refuses it once confirmed: by a payment
//!   this one raced on another partition, or by an operator);
//! - an event already reflected in the state (a duplicate, a redelivery) decides nothing.

use uuid::Uuid;

/// What the process manager knows of one order and its payments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderState {
    pub order_id: Uuid,
    /// An `OrderCancelled` of this order has been seen.
    pub cancelled: bool,
    pub payments: Vec<PaymentState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentState {
    pub payment_id: Uuid,
    /// The amount the payment was initiated for; `None` when unknown (a payment known from
    /// before the amount was kept, whose initiation is not in the store).
    pub amount_minor: Option<i64>,
    /// The amount authorized; `None` until an authorization is seen.
    pub authorized_minor: Option<i64>,
    /// The running totals as the payment's latest seen events state them.
    pub captured_minor: i64,
    pub refunded_minor: i64,
    pub failed: bool,
}

impl PaymentState {
    fn new(payment_id: Uuid) -> Self {
        Self {
            payment_id,
            amount_minor: None,
            authorized_minor: None,
            captured_minor: 0,
            refunded_minor: 0,
            failed: false,
        }
    }

    /// Captured and, as far as known, not refunded.
    fn owed(&self) -> i64 {
        (self.captured_minor - self.refunded_minor).max(0)
    }

    /// Whether a capture of `captured_minor` in all pays the payment's amount, net of what was
    /// refunded before it (any capture when the amount is unknown). A capture can follow a
    /// refund (of what is left authorized): before refunds counted, capturing 1000, refunding
    /// it and capturing 2000 of a 3000 payment confirmed the order with 2000 received.
    fn paid_by(&self, captured_minor: i64) -> bool {
        match self.amount_minor {
            Some(amount) => captured_minor - self.refunded_minor >= amount,
            None => captured_minor > 0,
        }
    }

    /// Whether a capture of `captured_minor` in all took everything the authorization allows
    /// while the amount is not paid: nothing more can be captured, so the payment never will
    /// pay it (an authorization short of the amount, or refunds before the last capture).
    fn short_and_spent(&self, captured_minor: i64) -> bool {
        // An authorization not known (its event not in the state) is taken as the amount,
        // the most it can be.
        match self.amount_minor {
            Some(amount) => {
                captured_minor >= self.authorized_minor.unwrap_or(amount)
                    && !self.paid_by(captured_minor)
            }
            None => false,
        }
    }
}

impl OrderState {
    pub fn new(order_id: Uuid) -> Self {
        Self {
            order_id,
            ..Self::default()
        }
    }

    pub fn payment(&self, payment_id: Uuid) -> Option<&PaymentState> {
        self.payments.iter().find(|p| p.payment_id == payment_id)
    }

    fn payment_mut(&mut self, payment_id: Uuid) -> &mut PaymentState {
        let index = match self
            .payments
            .iter()
            .position(|p| p.payment_id == payment_id)
        {
            Some(index) => index,
            None => {
                self.payments.push(PaymentState::new(payment_id));
                self.payments.len() - 1
            }
        };
        &mut self.payments[index]
    }

    /// A payment of the order has had its amount captured: the capture that got there decided
    /// the order (confirmed it, or cancelled it when refunds before it left it short), and a
    /// later capture decides nothing. Captured in all, not net: a goodwill refund after the
    /// confirmation does not make a later capture confirm again.
    fn any_paid(&self) -> bool {
        self.payments.iter().any(|p| match p.amount_minor {
            Some(amount) => p.captured_minor >= amount,
            None => p.captured_minor > 0,
        })
    }

    /// A payment of the order other than `payment` is known and has not failed.
    fn other_live(&self, payment: Uuid) -> bool {
        self.payments
            .iter()
            .any(|p| p.payment_id != payment && !p.failed)
    }
}

/// The events of an order and its payments that the rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    OrderCancelled,
    PaymentInitiated {
        payment: Uuid,
        amount_minor: i64,
    },
    PaymentAuthorized {
        payment: Uuid,
        amount_minor: i64,
    },
    PaymentCaptured {
        payment: Uuid,
        captured_total_minor: i64,
    },
    PaymentFailed {
        payment: Uuid,
    },
    PaymentRefunded {
        payment: Uuid,
        refunded_total_minor: i64,
    },
}

/// A command the process manager decided to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaction {
    ConfirmOrder {
        order: Uuid,
    },
    /// Cancel, for `why`.
    CancelOrder {
        order: Uuid,
        why: Cancel,
    },
    RefundPayment {
        payment: Uuid,
        amount_minor: i64,
    },
}

/// Why the process manager cancels an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// A payment failed and no other is under way (`domain::order::PAYMENT_FAILED`: refused
    /// by an order confirmed meanwhile).
    PaymentFailed,
    /// A payment was captured as far as its authorization allows without paying the order
    /// (`domain::order::PAYMENT_SHORT`: what it took must go back, whatever the order's state).
    PaymentShort,
}

/// What to do about `fact`, given `state` as it was before it.
pub fn decide(state: &OrderState, fact: &Fact) -> Vec<Reaction> {
    match *fact {
        Fact::OrderCancelled if state.cancelled => Vec::new(),
        Fact::OrderCancelled => state
            .payments
            .iter()
            .filter(|p| p.owed() > 0)
            .map(|p| Reaction::RefundPayment {
                payment: p.payment_id,
                amount_minor: p.owed(),
            })
            .collect(),
        Fact::PaymentCaptured {
            payment,
            captured_total_minor,
        } => {
            let known = state.payment(payment);
            if known.is_some_and(|p| captured_total_minor <= p.captured_minor) {
                return Vec::new(); // seen already
            }
            if state.cancelled {
                let refunded = known.map_or(0, |p| p.refunded_minor);
                let owed = captured_total_minor - refunded;
                return match owed > 0 {
                    true => vec![Reaction::RefundPayment {
                        payment,
                        amount_minor: owed,
                    }],
                    false => Vec::new(),
                };
            }
            let paid = known.map_or(captured_total_minor > 0, |p| {
                p.paid_by(captured_total_minor)
            });
            let short = known.is_some_and(|p| p.short_and_spent(captured_total_minor));
            match (paid, short, state.any_paid()) {
                // An earlier capture confirmed it.
                (_, _, true) => Vec::new(),
                (true, _, false) => vec![Reaction::ConfirmOrder {
                    order: state.order_id,
                }],
                (false, true, false) => vec![Reaction::CancelOrder {
                    order: state.order_id,
                    why: Cancel::PaymentShort,
                }],
                // Not in full yet.
                (false, false, false) => Vec::new(),
            }
        }
        Fact::PaymentFailed { payment } => {
            let seen = state.payment(payment).is_some_and(|p| p.failed);
            if seen || state.cancelled || state.other_live(payment) {
                return Vec::new();
            }
            vec![Reaction::CancelOrder {
                order: state.order_id,
                why: Cancel::PaymentFailed,
            }]
        }
        Fact::PaymentInitiated { .. }
        | Fact::PaymentAuthorized { .. }
        | Fact::PaymentRefunded { .. } => Vec::new(),
    }
}

/// What is known after `fact`. Totals only grow, so a stale or repeated event changes nothing.
pub fn evolve(mut state: OrderState, fact: &Fact) -> OrderState {
    match *fact {
        Fact::OrderCancelled => state.cancelled = true,
        Fact::PaymentInitiated {
            payment,
            amount_minor,
        } => state.payment_mut(payment).amount_minor = Some(amount_minor),
        Fact::PaymentAuthorized {
            payment,
            amount_minor,
        } => state.payment_mut(payment).authorized_minor = Some(amount_minor),
        Fact::PaymentCaptured {
            payment,
            captured_total_minor,
        } => {
            let p = state.payment_mut(payment);
            p.captured_minor = p.captured_minor.max(captured_total_minor);
        }
        Fact::PaymentFailed { payment } => state.payment_mut(payment).failed = true,
        Fact::PaymentRefunded {
            payment,
            refunded_total_minor,
        } => {
            let p = state.payment_mut(payment);
            p.refunded_minor = p.refunded_minor.max(refunded_total_minor);
        }
    }
    state
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
