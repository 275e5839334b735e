use cqrs_es::test::TestFramework;

use super::*;
use crate::values::Reason;

type PaymentTest = TestFramework<Payment>;

fn order_id() -> Uuid {
    Uuid::from_u128(42)
}
fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}
fn terms(status: OrderStatus) -> PaymentTerms {
    PaymentTerms {
        total_minor: 1_000,
        currency: eur(),
        status,
    }
}
fn initiate_cmd(amount: i64, currency: &str, status: OrderStatus) -> PaymentCommand {
    PaymentCommand::Initiate {
        order_id: order_id(),
        order: terms(status),
        amount: Money::positive(amount, Currency::parse(currency).unwrap()).unwrap(),
        method: PaymentMethod::Card,
    }
}
fn reason() -> Reason {
    Reason::parse("because").unwrap()
}
fn initiated() -> PaymentEvent {
    PaymentEvent::Initiated {
        order_id: order_id(),
        amount_minor: 1_000,
        currency: eur(),
        method: PaymentMethod::Card,
    }
}
fn authorized(amount: i64) -> PaymentEvent {
    PaymentEvent::Authorized {
        order_id: order_id(),
        amount_minor: amount,
        currency: eur(),
    }
}
fn captured(amount: i64, total: i64) -> PaymentEvent {
    PaymentEvent::Captured {
        order_id: order_id(),
        amount_minor: amount,
        currency: eur(),
        captured_total_minor: total,
    }
}
fn refunded(amount: i64, total: i64, full: bool) -> PaymentEvent {
    PaymentEvent::Refunded {
        order_id: order_id(),
        amount_minor: amount,
        currency: eur(),
        reason: reason(),
        refunded_total_minor: total,
        fully_refunded: full,
    }
}

#[test]
fn initiate_for_a_payable_order() {
    PaymentTest::with(())
        .given_no_previous_events()
        .when(initiate_cmd(1_000, "EUR", OrderStatus::Created))
        .then_expect_events(vec![initiated()]);
}

#[test]
fn initiate_rules() {
    let cases = [
        (
            initiate_cmd(999, "EUR", OrderStatus::Created),
            PaymentError::AmountMismatch { expected: 1_000 },
        ),
        (
            initiate_cmd(1_000, "USD", OrderStatus::Created),
            PaymentError::CurrencyMismatch { expected: eur() },
        ),
        (
            initiate_cmd(1_000, "EUR", OrderStatus::Cancelled),
            PaymentError::OrderNotPayable {
                status: OrderStatus::Cancelled,
            },
        ),
        (
            initiate_cmd(1_000, "EUR", OrderStatus::Delivered),
            PaymentError::OrderNotPayable {
                status: OrderStatus::Delivered,
            },
        ),
    ];
    for (command, error) in cases {
        PaymentTest::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(error);
    }
    PaymentTest::with(())
        .given(vec![initiated()])
        .when(initiate_cmd(1_000, "EUR", OrderStatus::Created))
        .then_expect_error(PaymentError::AlreadyInitiated);
}

#[test]
fn commands_on_a_never_initiated_payment_are_not_found() {
    for command in [
        PaymentCommand::Authorize { amount_minor: 1 },
        PaymentCommand::Capture { amount_minor: 1 },
        PaymentCommand::Fail { reason: reason() },
        PaymentCommand::Refund {
            amount_minor: 1,
            reason: reason(),
        },
    ] {
        PaymentTest::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(PaymentError::NotFound);
    }
}

#[test]
fn authorize_up_to_the_amount() {
    PaymentTest::with(())
        .given(vec![initiated()])
        .when(PaymentCommand::Authorize {
            amount_minor: 1_000,
        })
        .then_expect_events(vec![authorized(1_000)]);
    PaymentTest::with(())
        .given(vec![initiated()])
        .when(PaymentCommand::Authorize {
            amount_minor: 1_001,
        })
        .then_expect_error(PaymentError::AuthorizationExceedsAmount { max: 1_000 });
    PaymentTest::with(())
        .given(vec![initiated(), authorized(1_000)])
        .when(PaymentCommand::Authorize { amount_minor: 1 })
        .then_expect_error(PaymentError::IllegalTransition {
            from: PaymentStatus::Authorized,
            action: "authorize",
        });
}

#[test]
fn capture_partially_and_never_beyond_authorized() {
    PaymentTest::with(())
        .given(vec![initiated(), authorized(800)])
        .when(PaymentCommand::Capture { amount_minor: 300 })
        .then_expect_events(vec![captured(300, 300)]);
    PaymentTest::with(())
        .given(vec![initiated(), authorized(800), captured(300, 300)])
        .when(PaymentCommand::Capture { amount_minor: 500 })
        .then_expect_events(vec![captured(500, 800)]);
    PaymentTest::with(())
        .given(vec![initiated(), authorized(800), captured(300, 300)])
        .when(PaymentCommand::Capture { amount_minor: 501 })
        .then_expect_error(PaymentError::CaptureExceedsAuthorized { available: 500 });
    PaymentTest::with(())
        .given(vec![initiated()])
        .when(PaymentCommand::Capture { amount_minor: 1 })
        .then_expect_error(PaymentError::IllegalTransition {
            from: PaymentStatus::Initiated,
            action: "capture",
        });
}

/// What is left of the authorization is captured after a refund too, and the payment stays
/// partly refunded. Before, a capture after any refund was refused as an illegal transition,
/// so a provider's report of it (a webhook) left money taken that the books did not show.
#[test]
fn the_rest_of_an_authorization_is_captured_after_a_refund() {
    let partly = vec![
        initiated(),
        authorized(800),
        captured(300, 300),
        refunded(100, 100, false),
    ];
    PaymentTest::with(())
        .given(partly.clone())
        .when(PaymentCommand::Capture { amount_minor: 500 })
        .then_expect_events(vec![captured(500, 800)]);
    PaymentTest::with(())
        .given(partly.clone())
        .when(PaymentCommand::Capture { amount_minor: 501 })
        .then_expect_error(PaymentError::CaptureExceedsAuthorized { available: 500 });
    let mut after = partly;
    after.push(captured(500, 800));
    let mut payment = Payment::default();
    for event in after {
        payment.apply(event);
    }
    assert_eq!(
        payment.state.as_ref().map(|s| s.status),
        Some(PaymentStatus::PartiallyRefunded)
    );
    // After a full refund of the first capture, the rest too.
    PaymentTest::with(())
        .given(vec![
            initiated(),
            authorized(800),
            captured(300, 300),
            refunded(300, 300, true),
        ])
        .when(PaymentCommand::Capture { amount_minor: 500 })
        .then_expect_events(vec![captured(500, 800)]);
}

#[test]
fn fail_before_capture_only() {
    for history in [vec![initiated()], vec![initiated(), authorized(1_000)]] {
        PaymentTest::with(())
            .given(history)
            .when(PaymentCommand::Fail { reason: reason() })
            .then_expect_events(vec![PaymentEvent::Failed {
                order_id: order_id(),
                reason: reason(),
            }]);
    }
    PaymentTest::with(())
        .given(vec![initiated(), authorized(1_000), captured(1_000, 1_000)])
        .when(PaymentCommand::Fail { reason: reason() })
        .then_expect_error(PaymentError::IllegalTransition {
            from: PaymentStatus::Captured,
            action: "fail",
        });
}

#[test]
fn refunds_never_exceed_captured_minus_refunded() {
    let base = vec![initiated(), authorized(1_000), captured(600, 600)];
    PaymentTest::with(())
        .given(base.clone())
        .when(PaymentCommand::Refund {
            amount_minor: 200,
            reason: reason(),
        })
        .then_expect_events(vec![refunded(200, 200, false)]);
    let mut partly = base.clone();
    partly.push(refunded(200, 200, false));
    PaymentTest::with(())
        .given(partly.clone())
        .when(PaymentCommand::Refund {
            amount_minor: 400,
            reason: reason(),
        })
        .then_expect_events(vec![refunded(400, 600, true)]);
    PaymentTest::with(())
        .given(partly)
        .when(PaymentCommand::Refund {
            amount_minor: 401,
            reason: reason(),
        })
        .then_expect_error(PaymentError::RefundExceedsCaptured { available: 400 });
    // Refunded in full: nothing is left to refund, which is the rule a refund breaks (with
    // what is available), not the payment's state (a later capture can be refunded).
    let mut full = base;
    full.push(refunded(600, 600, true));
    PaymentTest::with(())
        .given(full)
        .when(PaymentCommand::Refund {
            amount_minor: 1,
            reason: reason(),
        })
        .then_expect_error(PaymentError::RefundExceedsCaptured { available: 0 });
    PaymentTest::with(())
        .given(vec![initiated(), authorized(1_000)])
        .when(PaymentCommand::Refund {
            amount_minor: 1,
            reason: reason(),
        })
        .then_expect_error(PaymentError::IllegalTransition {
            from: PaymentStatus::Authorized,
            action: "refund",
        });
}

#[test]
fn status_follows_the_events() {
    let mut payment = Payment::default();
    for event in [
        initiated(),
        authorized(1_000),
        captured(1_000, 1_000),
        refunded(10, 10, false),
    ] {
        payment.apply(event);
    }
    assert_eq!(payment.status(), Some(PaymentStatus::PartiallyRefunded));
}
