-- The process manager confirms an order once a payment of it is captured in full: it keeps
-- each payment's amount (from PaymentInitiated) beside what was captured. Before, any capture,
-- one minor unit of a partial one included, confirmed the order.
--
-- Payments the process manager knew before this column are given their amount from the event
-- store; one whose PaymentInitiated is not there stays NULL (amount unknown), and for it the
-- earlier rule holds: its first capture confirms the order.
ALTER TABLE pm_payments ADD COLUMN amount_minor bigint;
UPDATE pm_payments p
   SET amount_minor = (e.payload ->> 'amount_minor')::bigint
  FROM events e
 WHERE e.aggregate_type = 'payment'
   AND e.aggregate_id = p.payment_id::text
   AND e.event_type = 'PaymentInitiated'
   AND jsonb_typeof(e.payload -> 'amount_minor') = 'number';
