// The Avro schema files, one per event type and version; kept in sync with `schemas/avro/`
// by the `every_schema_file_is_listed` test.
#[rustfmt::skip]
pub(crate) const FILES: &[SchemaFile] = &[
    SchemaFile { aggregate: "order", event_type: "OrderCancelled", version: 1, text: include_str!("../avro/order/OrderCancelled.v1.avsc") },
    SchemaFile { aggregate: "order", event_type: "OrderConfirmed", version: 1, text: include_str!("../avro/order/OrderConfirmed.v1.avsc") },
    SchemaFile { aggregate: "order", event_type: "OrderDelivered", version: 1, text: include_str!("../avro/order/OrderDelivered.v1.avsc") },
    SchemaFile { aggregate: "order", event_type: "OrderPlaced", version: 1, text: include_str!("../avro/order/OrderPlaced.v1.avsc") },
    SchemaFile { aggregate: "order", event_type: "OrderProcessingStarted", version: 1, text: include_str!("../avro/order/OrderProcessingStarted.v1.avsc") },
    SchemaFile { aggregate: "order", event_type: "OrderShipped", version: 1, text: include_str!("../avro/order/OrderShipped.v1.avsc") },
    SchemaFile { aggregate: "payment", event_type: "PaymentAuthorized", version: 1, text: include_str!("../avro/payment/PaymentAuthorized.v1.avsc") },
    SchemaFile { aggregate: "payment", event_type: "PaymentCaptured", version: 1, text: include_str!("../avro/payment/PaymentCaptured.v1.avsc") },
    SchemaFile { aggregate: "payment", event_type: "PaymentFailed", version: 1, text: include_str!("../avro/payment/PaymentFailed.v1.avsc") },
    SchemaFile { aggregate: "payment", event_type: "PaymentInitiated", version: 1, text: include_str!("../avro/payment/PaymentInitiated.v1.avsc") },
    SchemaFile { aggregate: "payment", event_type: "PaymentRefunded", version: 1, text: include_str!("../avro/payment/PaymentRefunded.v1.avsc") },
    SchemaFile { aggregate: "user", event_type: "UserAddressAdded", version: 1, text: include_str!("../avro/user/UserAddressAdded.v1.avsc") },
    SchemaFile { aggregate: "user", event_type: "UserAddressRemoved", version: 1, text: include_str!("../avro/user/UserAddressRemoved.v1.avsc") },
    SchemaFile { aggregate: "user", event_type: "UserDeactivated", version: 1, text: include_str!("../avro/user/UserDeactivated.v1.avsc") },
    SchemaFile { aggregate: "user", event_type: "UserEmailChanged", version: 1, text: include_str!("../avro/user/UserEmailChanged.v1.avsc") },
    SchemaFile { aggregate: "user", event_type: "UserProfileChanged", version: 1, text: include_str!("../avro/user/UserProfileChanged.v1.avsc") },
    SchemaFile { aggregate: "user", event_type: "UserRegistered", version: 1, text: include_str!("../avro/user/UserRegistered.v1.avsc") },
    SchemaFile { aggregate: "user", event_type: "UserRegistered", version: 2, text: include_str!("../avro/user/UserRegistered.v2.avsc") },
    SchemaFile { aggregate: "user", event_type: "UserRoleGranted", version: 1, text: include_str!("../avro/user/UserRoleGranted.v1.avsc") },
    SchemaFile { aggregate: "user", event_type: "UserRoleRevoked", version: 1, text: include_str!("../avro/user/UserRoleRevoked.v1.avsc") },
];
