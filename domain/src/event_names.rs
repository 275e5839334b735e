//! Pins every event's stored type name and version. Changing a Rust variant name must not change
//! what is stored; if this test fails, you are about to break every stored event of that type.

#[cfg(test)]
mod tests {
    use cqrs_es::DomainEvent;
    use serde::Serialize;

    use crate::{NamedEvent, OrderEvent, PaymentEvent, UserEvent};

    const PINNED: &[(&str, &str)] = &[
        ("UserRegistered", "2"),
        ("UserProfileChanged", "1"),
        ("UserEmailChanged", "1"),
        ("UserAddressAdded", "1"),
        ("UserAddressRemoved", "1"),
        ("UserRoleGranted", "1"),
        ("UserRoleRevoked", "1"),
        ("UserDeactivated", "1"),
        ("OrderPlaced", "1"),
        ("OrderConfirmed", "1"),
        ("OrderProcessingStarted", "1"),
        ("OrderShipped", "1"),
        ("OrderDelivered", "1"),
        ("OrderCancelled", "1"),
        ("PaymentInitiated", "1"),
        ("PaymentAuthorized", "1"),
        ("PaymentCaptured", "1"),
        ("PaymentFailed", "1"),
        ("PaymentRefunded", "1"),
    ];

    fn check<E: DomainEvent + Serialize>(event: E) -> (String, String) {
        let stored = serde_json::to_value(&event).unwrap();
        assert_eq!(
            stored["type"].as_str(),
            Some(event.event_type().as_str()),
            "the payload tag and event_type() disagree"
        );
        (event.event_type(), event.event_version())
    }

    /// One sample of every variant, built from JSON so that the samples do not depend on the
    /// Rust variant names either.
    fn samples() -> Vec<(String, String)> {
        let addr = serde_json::json!({"label": "home", "line1": "1 Main St", "line2": null,
            "city": "Oslo", "postal_code": "0150", "country": "NO"});
        let id = "0190a000-0000-7000-8000-000000000001";
        let user = [
            serde_json::json!({"type": "UserRegistered", "email": "a@b.co", "display_name": "A", "roles": ["customer"]}),
            serde_json::json!({"type": "UserProfileChanged", "display_name": "B", "preferences": null}),
            serde_json::json!({"type": "UserEmailChanged", "previous_email": "a@b.co", "email": "c@d.co"}),
            serde_json::json!({"type": "UserAddressAdded", "address_id": id, "address": addr}),
            serde_json::json!({"type": "UserAddressRemoved", "address_id": id}),
            serde_json::json!({"type": "UserRoleGranted", "role": "admin"}),
            serde_json::json!({"type": "UserRoleRevoked", "role": "admin"}),
            serde_json::json!({"type": "UserDeactivated", "reason": null}),
        ];
        let order = [
            serde_json::json!({"type": "OrderPlaced", "customer_id": id, "currency": "EUR",
                "items": [{"sku": "A", "quantity": 1, "unit_price_minor": 5, "line_total_minor": 5}],
                "total_minor": 5, "shipping_address": addr}),
            serde_json::json!({"type": "OrderConfirmed"}),
            serde_json::json!({"type": "OrderProcessingStarted"}),
            serde_json::json!({"type": "OrderShipped", "carrier": "UPS", "tracking_number": "1Z"}),
            serde_json::json!({"type": "OrderDelivered"}),
            serde_json::json!({"type": "OrderCancelled", "reason": "r", "cancelled_from": "created"}),
        ];
        let payment = [
            serde_json::json!({"type": "PaymentInitiated", "order_id": id, "amount_minor": 5, "currency": "EUR", "method": "card"}),
            serde_json::json!({"type": "PaymentAuthorized", "order_id": id, "amount_minor": 5, "currency": "EUR"}),
            serde_json::json!({"type": "PaymentCaptured", "order_id": id, "amount_minor": 5, "currency": "EUR", "captured_total_minor": 5}),
            serde_json::json!({"type": "PaymentFailed", "order_id": id, "reason": "declined"}),
            serde_json::json!({"type": "PaymentRefunded", "order_id": id, "amount_minor": 5, "currency": "EUR",
                "reason": "r", "refunded_total_minor": 5, "fully_refunded": true}),
        ];
        let mut out = Vec::new();
        out.extend(user.map(|v| check(serde_json::from_value::<UserEvent>(v).unwrap())));
        out.extend(order.map(|v| check(serde_json::from_value::<OrderEvent>(v).unwrap())));
        out.extend(payment.map(|v| check(serde_json::from_value::<PaymentEvent>(v).unwrap())));
        out
    }

    #[test]
    fn every_event_type_name_and_version_is_pinned() {
        let produced = samples();
        let pinned: Vec<(String, String)> = PINNED
            .iter()
            .map(|(t, v)| (t.to_string(), v.to_string()))
            .collect();
        assert_eq!(produced, pinned);
    }

    #[test]
    fn catalogues_list_exactly_the_pinned_names() {
        let mut all = Vec::new();
        all.extend_from_slice(UserEvent::catalogue());
        all.extend_from_slice(OrderEvent::catalogue());
        all.extend_from_slice(PaymentEvent::catalogue());
        assert_eq!(all, PINNED);
    }
}
