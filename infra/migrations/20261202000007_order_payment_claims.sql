-- One payment per order at a time (domain/src/payment/events.rs, ORDER_PAYMENT_SCOPE): a
-- payment claims its order when initiated and releases it when it fails. Payments initiated
-- before this rule held no claim, so the claims of those that have not failed are written
-- here; where an order already has more than one, the oldest holds it.
INSERT INTO unique_claims (scope, key, aggregate_type, aggregate_id)
SELECT 'order_payment', i.payload->>'order_id', 'payment', i.aggregate_id
FROM events i
WHERE i.aggregate_type = 'payment' AND i.event_type = 'PaymentInitiated'
  AND NOT EXISTS (SELECT 1 FROM events f
                  WHERE f.aggregate_type = 'payment' AND f.aggregate_id = i.aggregate_id
                    AND f.event_type = 'PaymentFailed')
ORDER BY i.global_position
ON CONFLICT (scope, key) DO NOTHING;
