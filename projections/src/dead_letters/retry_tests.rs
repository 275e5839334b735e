//! Unit tests of the retry's ordering rule.

use super::*;

fn event<'a>(aggregate_type: &'a str, event_type: &'a str, sequence: i64) -> Event<'a> {
    Event {
        aggregate_type,
        event_type,
        sequence,
    }
}

#[test]
fn only_audit_and_analytics_money_events_ignore_order() {
    assert!(order_insensitive("audit", "order", "OrderShipped"));
    assert!(order_insensitive("audit", "user", "UserRegistered"));
    assert!(order_insensitive("analytics", "payment", "PaymentCaptured"));
    assert!(order_insensitive("analytics", "payment", "PaymentRefunded"));
    assert!(!order_insensitive("analytics", "order", "OrderPlaced"));
    assert!(!order_insensitive("analytics", "order", "OrderShipped"));
    assert!(!order_insensitive("analytics", "payment", "PaymentFailed"));
    for projection in ["users", "orders", "payments", "process_manager"] {
        assert!(!order_insensitive(projection, "payment", "PaymentCaptured"));
    }
}

#[test]
fn an_event_behind_the_applied_version_is_refused_unless_order_does_not_matter() {
    let shipped = event("order", "OrderShipped", 3);
    assert_eq!(order("orders", &shipped, Some(3)), Order::Fine);
    assert_eq!(
        order("orders", &shipped, Some(5)),
        Order::Later { applied: 5 }
    );
    assert_eq!(order("audit", &shipped, Some(5)), Order::Fine);
    let captured = event("payment", "PaymentCaptured", 2);
    assert_eq!(order("analytics", &captured, Some(4)), Order::Fine);
    assert_eq!(
        order("payments", &captured, Some(4)),
        Order::Later { applied: 4 }
    );
}

#[test]
fn an_event_past_the_next_one_is_refused_as_it_would_skip_events() {
    let third = event("order", "OrderShipped", 3);
    assert_eq!(order("orders", &third, Some(2)), Order::Fine);
    assert_eq!(
        order("orders", &third, Some(1)),
        Order::Ahead { applied: 1 }
    );
    assert_eq!(order("audit", &third, None), Order::Ahead { applied: 0 });
    let first = event("user", "UserRegistered", 1);
    assert_eq!(order("users", &first, None), Order::Fine);
}
