use cqrs_es::test::TestFramework;

use super::*;
use crate::values::{
    Address, AddressFields, Carrier, Quantity, Reason, Sku, TrackingNumber, UnitPrice,
};

type OrderTest = TestFramework<Order>;

fn customer() -> Uuid {
    Uuid::from_u128(7)
}
fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}
fn address() -> Address {
    Address::parse(AddressFields {
        label: "home",
        line1: "1 Main St",
        line2: None,
        city: "Paris",
        postal_code: "75001",
        country: "FR",
    })
    .unwrap()
}
fn item(sku: &str, quantity: i64, price: i64) -> NewLineItem {
    NewLineItem {
        sku: Sku::parse(sku).unwrap(),
        quantity: Quantity::parse(quantity).unwrap(),
        unit_price: UnitPrice::parse(price).unwrap(),
    }
}
fn place(items: Vec<NewLineItem>) -> OrderCommand {
    OrderCommand::Place {
        customer_id: customer(),
        currency: eur(),
        items,
        shipping_address: address(),
    }
}
fn placed() -> OrderEvent {
    OrderEvent::Placed {
        customer_id: customer(),
        currency: eur(),
        items: vec![LineItem {
            sku: Sku::parse("A").unwrap(),
            quantity: Quantity::parse(2).unwrap(),
            unit_price_minor: UnitPrice::parse(150).unwrap(),
            line_total_minor: 300,
        }],
        total_minor: 300,
        shipping_address: address(),
    }
}
fn reason() -> Reason {
    Reason::parse("customer asked").unwrap()
}
fn ship() -> OrderCommand {
    OrderCommand::Ship {
        carrier: Carrier::parse("DHL").unwrap(),
        tracking_number: TrackingNumber::parse("TRK1").unwrap(),
    }
}
fn shipped() -> OrderEvent {
    OrderEvent::Shipped {
        carrier: Carrier::parse("DHL").unwrap(),
        tracking_number: TrackingNumber::parse("TRK1").unwrap(),
    }
}
fn history(status: OrderStatus) -> Vec<OrderEvent> {
    use OrderStatus as S;
    let mut events = vec![placed()];
    let path = [
        (S::Confirmed, OrderEvent::Confirmed),
        (S::Processing, OrderEvent::ProcessingStarted),
        (S::Shipped, shipped()),
        (S::Delivered, OrderEvent::Delivered),
    ];
    if status == S::Cancelled {
        events.push(OrderEvent::Cancelled {
            reason: reason(),
            cancelled_from: S::Created,
        });
        return events;
    }
    for (reached, event) in path {
        if status == S::Created {
            break;
        }
        events.push(event);
        if reached == status {
            break;
        }
    }
    events
}

#[test]
fn place_computes_line_totals_and_the_total() {
    OrderTest::with(())
        .given_no_previous_events()
        .when(place(vec![item("A", 2, 150)]))
        .then_expect_events(vec![placed()]);
    let events = OrderTest::with(())
        .given_no_previous_events()
        .when(place(vec![item("A", 3, 199), item("B", 1, 1)]))
        .inspect_result()
        .unwrap();
    assert!(matches!(
        events[0],
        OrderEvent::Placed {
            total_minor: 598,
            ..
        }
    ));
}

#[test]
fn place_rules() {
    let cases = [
        (vec![], OrderError::NoItems),
        (
            vec![item("A", 1, 1), item("B", 1, 1), item("A", 2, 1)],
            OrderError::DuplicateSku { index: 2 },
        ),
        (
            vec![item("A", 10_000, 10_000_000_000_000)],
            OrderError::TotalTooLarge,
        ),
        // Free lines only: nothing could pay the order (a payment is at least 1).
        (
            vec![item("A", 2, 0), item("B", 1, 0)],
            OrderError::NothingToPay,
        ),
        (
            (0..=MAX_LINE_ITEMS)
                .map(|i| item(&format!("S{i}"), 1, 1))
                .collect(),
            OrderError::TooManyItems {
                max: MAX_LINE_ITEMS,
            },
        ),
    ];
    for (items, error) in cases {
        OrderTest::with(())
            .given_no_previous_events()
            .when(place(items))
            .then_expect_error(error);
    }
    OrderTest::with(())
        .given(vec![placed()])
        .when(place(vec![item("A", 1, 1)]))
        .then_expect_error(OrderError::AlreadyPlaced);
}

#[test]
fn commands_on_a_never_placed_order_are_not_found() {
    for command in [
        OrderCommand::Confirm,
        OrderCommand::StartProcessing,
        ship(),
        OrderCommand::Deliver,
        OrderCommand::Cancel { reason: reason() },
    ] {
        OrderTest::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(OrderError::NotFound);
    }
}

#[test]
fn the_happy_path_walks_every_status() {
    use OrderStatus as S;
    let steps = [
        (S::Created, OrderCommand::Confirm, OrderEvent::Confirmed),
        (
            S::Confirmed,
            OrderCommand::StartProcessing,
            OrderEvent::ProcessingStarted,
        ),
        (S::Processing, ship(), shipped()),
        (S::Shipped, OrderCommand::Deliver, OrderEvent::Delivered),
    ];
    for (from, command, event) in steps {
        OrderTest::with(())
            .given(history(from))
            .when(command)
            .then_expect_events(vec![event]);
    }
}

#[test]
fn cancel_is_allowed_before_shipping_and_records_where_from() {
    use OrderStatus as S;
    for from in [S::Created, S::Confirmed, S::Processing] {
        OrderTest::with(())
            .given(history(from))
            .when(OrderCommand::Cancel { reason: reason() })
            .then_expect_events(vec![OrderEvent::Cancelled {
                reason: reason(),
                cancelled_from: from,
            }]);
    }
}

/// A cancellation for a failed payment applies only to an order not confirmed yet: one a
/// payment has confirmed since (the process manager's decision, sent late or reset from
/// parked, racing the capture of a retried payment) is not cancelled and refunded for it.
#[test]
fn an_order_confirmed_is_not_cancelled_for_a_failed_payment() {
    use OrderStatus as S;
    let failed = || OrderCommand::Cancel {
        reason: Reason::parse(PAYMENT_FAILED).unwrap(),
    };
    OrderTest::with(())
        .given(history(S::Created))
        .when(failed())
        .then_expect_events(vec![OrderEvent::Cancelled {
            reason: Reason::parse(PAYMENT_FAILED).unwrap(),
            cancelled_from: S::Created,
        }]);
    for from in [S::Confirmed, S::Processing] {
        OrderTest::with(())
            .given(history(from))
            .when(failed())
            .then_expect_error(OrderError::IllegalTransition {
                from,
                action: "cancel for a failed payment",
            });
        // A payment that took money and can never pay the order still cancels it (so that
        // what it took is refunded), whoever confirmed the order.
        OrderTest::with(())
            .given(history(from))
            .when(OrderCommand::Cancel {
                reason: Reason::parse(PAYMENT_SHORT).unwrap(),
            })
            .then_expect_events(vec![OrderEvent::Cancelled {
                reason: Reason::parse(PAYMENT_SHORT).unwrap(),
                cancelled_from: from,
            }]);
    }
}

#[test]
fn every_illegal_transition_is_refused() {
    use OrderStatus as S;
    let all = [
        S::Created,
        S::Confirmed,
        S::Processing,
        S::Shipped,
        S::Delivered,
        S::Cancelled,
    ];
    type Case = (fn() -> OrderCommand, &'static [S], &'static str);
    let commands: [Case; 5] = [
        (|| OrderCommand::Confirm, &[S::Created], "confirm"),
        (
            || OrderCommand::StartProcessing,
            &[S::Confirmed],
            "start processing",
        ),
        (ship, &[S::Processing], "ship"),
        (|| OrderCommand::Deliver, &[S::Shipped], "deliver"),
        (
            || OrderCommand::Cancel { reason: reason() },
            &[S::Created, S::Confirmed, S::Processing],
            "cancel",
        ),
    ];
    for (command, allowed, action) in commands {
        for from in all.iter().filter(|s| !allowed.contains(s)) {
            OrderTest::with(())
                .given(history(*from))
                .when(command())
                .then_expect_error(OrderError::IllegalTransition {
                    from: *from,
                    action,
                });
        }
    }
}

#[test]
fn payment_terms_follow_the_order() {
    let mut order = Order::default();
    assert_eq!(order.payment_terms(), None);
    for event in history(OrderStatus::Confirmed) {
        order.apply(event);
    }
    assert_eq!(
        order.payment_terms(),
        Some(PaymentTerms {
            total_minor: 300,
            currency: eur(),
            status: OrderStatus::Confirmed
        })
    );
}
