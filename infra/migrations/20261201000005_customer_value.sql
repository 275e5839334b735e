-- The customer-value read model (projections/src/models/customer_value.rs): per order, its
-- customer and currency (from OrderPlaced) and the money its payments captured and refunded.
-- Payments and orders are consumed in any relative order, so a payment may arrive first: its
-- row then waits without a customer until the order's OrderPlaced fills it in. The query API
-- sums the rows per customer and currency (GET /v1/analytics/customer-value).
CREATE TABLE rm_customer_value (
    order_id       uuid        PRIMARY KEY,
    customer_id    uuid,
    currency       text,
    placed_at      timestamptz,
    captured_minor bigint      NOT NULL DEFAULT 0,
    refunded_minor bigint      NOT NULL DEFAULT 0
);
CREATE INDEX rm_customer_value_customer_idx ON rm_customer_value (customer_id, currency);
