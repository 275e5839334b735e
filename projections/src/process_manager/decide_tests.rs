//! Given the facts seen so far, when one more arrives, then these reactions.

use super::*;

const ORDER: Uuid = Uuid::from_u128(1);
const PAY: Uuid = Uuid::from_u128(10);
const OTHER: Uuid = Uuid::from_u128(11);

fn given(facts: &[Fact]) -> OrderState {
    facts.iter().fold(OrderState::new(ORDER), evolve)
}

fn captured(payment: Uuid, total: i64) -> Fact {
    Fact::PaymentCaptured {
        payment,
        captured_total_minor: total,
    }
}

fn refunded(payment: Uuid, total: i64) -> Fact {
    Fact::PaymentRefunded {
        payment,
        refunded_total_minor: total,
    }
}

/// A payment initiated for 3000 (the amount the captures below pay in full).
fn initiated(payment: Uuid) -> Fact {
    Fact::PaymentInitiated {
        payment,
        amount_minor: 3000,
    }
}

fn failed(payment: Uuid) -> Fact {
    Fact::PaymentFailed { payment }
}

fn refund(payment: Uuid, amount_minor: i64) -> Reaction {
    Reaction::RefundPayment {
        payment,
        amount_minor,
    }
}

#[test]
fn a_capture_confirms_the_order() {
    let state = given(&[initiated(PAY)]);
    assert_eq!(
        decide(&state, &captured(PAY, 3000)),
        [Reaction::ConfirmOrder { order: ORDER }]
    );
}

/// Before, any capture confirmed the order: authorizing and capturing one minor unit of a
/// 3000 payment had the order confirmed (and shippable).
#[test]
fn a_partial_capture_does_not_confirm_and_the_capture_completing_it_does() {
    let state = given(&[initiated(PAY)]);
    assert_eq!(decide(&state, &captured(PAY, 1)), []);
    let state = given(&[initiated(PAY), captured(PAY, 1)]);
    assert_eq!(
        decide(&state, &captured(PAY, 3000)),
        [Reaction::ConfirmOrder { order: ORDER }]
    );
    let confirmed = given(&[initiated(PAY), captured(PAY, 1), captured(PAY, 3000)]);
    assert_eq!(decide(&confirmed, &captured(PAY, 3000)), []);
}

/// An authorization short of the amount stops capture there: once all of it is captured the
/// payment can never pay the order, which is cancelled (its cancellation then refunds the
/// capture). It is never confirmed underpaid, nor left waiting with the money taken; a part of
/// the authorization captured decides nothing yet.
#[test]
fn a_short_authorization_captured_as_far_as_it_allows_cancels_the_order() {
    let authorized = Fact::PaymentAuthorized {
        payment: PAY,
        amount_minor: 2000,
    };
    let state = given(&[initiated(PAY), authorized.clone()]);
    assert_eq!(decide(&state, &captured(PAY, 1500)), []);
    assert_eq!(
        decide(&state, &captured(PAY, 2000)),
        [Reaction::CancelOrder {
            order: ORDER,
            why: Cancel::PaymentShort,
        }]
    );
    assert_eq!(decide(&state, &authorized), []);
    // Then the cancellation refunds what was captured.
    let spent = given(&[initiated(PAY), authorized, captured(PAY, 2000)]);
    assert_eq!(decide(&spent, &Fact::OrderCancelled), [refund(PAY, 2000)]);
}

/// A capture can follow a refund (of what is left authorized). Refunds before the capture that
/// reaches the amount leave the order short: it is not confirmed, and since nothing more can
/// be captured it is cancelled (the cancellation refunds what is left). Before, the captured
/// total alone counted: capturing 1000, refunding it and capturing the other 2000 of a 3000
/// payment confirmed the order with 2000 received.
#[test]
fn refunds_before_the_last_capture_leave_the_order_short() {
    let authorized = Fact::PaymentAuthorized {
        payment: PAY,
        amount_minor: 3000,
    };
    let state = given(&[
        initiated(PAY),
        authorized.clone(),
        captured(PAY, 1000),
        refunded(PAY, 1000),
    ]);
    assert_eq!(
        decide(&state, &captured(PAY, 3000)),
        [Reaction::CancelOrder {
            order: ORDER,
            why: Cancel::PaymentShort,
        }]
    );
    // Short of the authorization, with more to capture: nothing yet.
    let state = given(&[
        initiated(PAY),
        authorized,
        captured(PAY, 1000),
        refunded(PAY, 500),
    ]);
    assert_eq!(decide(&state, &captured(PAY, 2000)), []);
    // Without the authorization in the state it is taken as the amount: still cancelled.
    let state = given(&[initiated(PAY), captured(PAY, 1000), refunded(PAY, 1000)]);
    assert_eq!(
        decide(&state, &captured(PAY, 3000)),
        [Reaction::CancelOrder {
            order: ORDER,
            why: Cancel::PaymentShort,
        }]
    );
    // A refund after the confirmation (goodwill) undoes nothing: a later capture (another
    // payment's) does not confirm or cancel again.
    let state = given(&[initiated(PAY), captured(PAY, 3000), refunded(PAY, 500)]);
    assert_eq!(decide(&state, &captured(OTHER, 3000)), []);
}

#[test]
fn a_capture_seen_first_still_confirms() {
    assert_eq!(
        decide(&given(&[]), &captured(PAY, 3000)),
        [Reaction::ConfirmOrder { order: ORDER }]
    );
}

#[test]
fn a_further_capture_of_a_confirmed_order_does_nothing() {
    let state = given(&[captured(PAY, 1000)]);
    assert_eq!(decide(&state, &captured(PAY, 3000)), []);
    assert_eq!(decide(&state, &captured(OTHER, 500)), []);
}

#[test]
fn a_cancellation_after_a_capture_refunds_the_capture() {
    let state = given(&[initiated(PAY), captured(PAY, 3000)]);
    assert_eq!(decide(&state, &Fact::OrderCancelled), [refund(PAY, 3000)]);
}

#[test]
fn a_cancellation_after_a_partial_refund_refunds_what_is_left() {
    let state = given(&[captured(PAY, 3000), refunded(PAY, 1000)]);
    assert_eq!(decide(&state, &Fact::OrderCancelled), [refund(PAY, 2000)]);
}

#[test]
fn a_cancellation_refunds_every_captured_payment_and_skips_settled_ones() {
    let state = given(&[
        captured(PAY, 3000),
        captured(OTHER, 500),
        refunded(OTHER, 500),
        initiated(Uuid::from_u128(12)),
    ]);
    assert_eq!(decide(&state, &Fact::OrderCancelled), [refund(PAY, 3000)]);
}

#[test]
fn a_cancellation_with_nothing_captured_does_nothing() {
    let state = given(&[initiated(PAY)]);
    assert_eq!(decide(&state, &Fact::OrderCancelled), []);
}

#[test]
fn a_capture_after_the_cancellation_refunds_that_capture() {
    let state = given(&[initiated(PAY), Fact::OrderCancelled]);
    assert_eq!(decide(&state, &captured(PAY, 3000)), [refund(PAY, 3000)]);
}

#[test]
fn a_capture_after_the_cancellation_refunds_what_is_left_of_it() {
    let state = given(&[Fact::OrderCancelled, refunded(PAY, 1000)]);
    assert_eq!(decide(&state, &captured(PAY, 3000)), [refund(PAY, 2000)]);
}

#[test]
fn whichever_of_cancel_and_capture_is_second_refunds_exactly_once() {
    let orders = [
        [captured(PAY, 3000), Fact::OrderCancelled],
        [Fact::OrderCancelled, captured(PAY, 3000)],
    ];
    for facts in orders {
        let (mut state, mut refunds) = (OrderState::new(ORDER), Vec::new());
        for fact in &facts {
            refunds.extend(
                decide(&state, fact)
                    .into_iter()
                    .filter(|r| matches!(r, Reaction::RefundPayment { .. })),
            );
            state = evolve(state, fact);
        }
        assert_eq!(refunds, [refund(PAY, 3000)], "{facts:?}");
    }
}

#[test]
fn a_failed_payment_cancels_the_order() {
    let state = given(&[initiated(PAY)]);
    assert_eq!(
        decide(&state, &failed(PAY)),
        [Reaction::CancelOrder {
            order: ORDER,
            why: Cancel::PaymentFailed,
        }]
    );
}

#[test]
fn a_failed_payment_keeps_an_order_another_payment_captured() {
    let state = given(&[captured(OTHER, 3000), initiated(PAY)]);
    assert_eq!(decide(&state, &failed(PAY)), []);
}

/// A failed payment frees its order for another; a retry already started keeps the order.
/// Before, the first payment's failure cancelled the order the retry was paying.
#[test]
fn a_failed_payment_keeps_an_order_whose_retry_is_live() {
    let state = given(&[initiated(PAY), initiated(OTHER)]);
    assert_eq!(decide(&state, &failed(PAY)), []);
    // A retry that failed too keeps nothing.
    let state = given(&[initiated(PAY), initiated(OTHER), failed(OTHER)]);
    assert_eq!(
        decide(&state, &failed(PAY)),
        [Reaction::CancelOrder {
            order: ORDER,
            why: Cancel::PaymentFailed,
        }]
    );
}

#[test]
fn a_failed_payment_of_a_cancelled_order_does_nothing() {
    let state = given(&[initiated(PAY), Fact::OrderCancelled]);
    assert_eq!(decide(&state, &failed(PAY)), []);
}

#[test]
fn initiations_and_refunds_never_react() {
    let state = given(&[captured(PAY, 3000), Fact::OrderCancelled]);
    assert_eq!(decide(&state, &initiated(OTHER)), []);
    assert_eq!(decide(&state, &refunded(PAY, 3000)), []);
}

#[test]
fn a_duplicate_capture_does_nothing() {
    let state = given(&[captured(PAY, 3000)]);
    assert_eq!(decide(&state, &captured(PAY, 3000)), []);
    let cancelled = given(&[Fact::OrderCancelled, captured(PAY, 3000)]);
    assert_eq!(decide(&cancelled, &captured(PAY, 3000)), []);
}

#[test]
fn a_duplicate_cancellation_does_nothing() {
    let state = given(&[captured(PAY, 3000), Fact::OrderCancelled]);
    assert_eq!(decide(&state, &Fact::OrderCancelled), []);
}

#[test]
fn a_duplicate_failure_does_nothing() {
    let state = given(&[failed(PAY)]);
    assert_eq!(decide(&state, &failed(PAY)), []);
}

#[test]
fn a_stale_refund_does_not_lower_what_is_known() {
    let state = given(&[
        captured(PAY, 3000),
        refunded(PAY, 2000),
        refunded(PAY, 1000),
    ]);
    assert_eq!(state.payment(PAY).map(|p| p.refunded_minor), Some(2000));
    assert_eq!(decide(&state, &Fact::OrderCancelled), [refund(PAY, 1000)]);
}

#[test]
fn redelivering_a_whole_history_reacts_to_nothing() {
    let history = [
        initiated(PAY),
        captured(PAY, 3000),
        refunded(PAY, 1000),
        initiated(OTHER),
        failed(OTHER),
        Fact::OrderCancelled,
    ];
    let state = given(&history);
    for fact in &history {
        assert_eq!(decide(&state, fact), [], "{fact:?}");
        assert_eq!(evolve(state.clone(), fact), state, "{fact:?}");
    }
}
