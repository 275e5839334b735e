-- Some idempotency keys must outlive the TTL: a payment provider's event id names one event
-- for good, and a provider may retry a callback days later (re-signed, so the signature's
-- 300 s tolerance does not stop it). Without this, a refund callback retried after the TTL
-- refunded a second time. A lasting record is never replaced nor expired.
ALTER TABLE idempotency_keys ADD COLUMN lasting boolean NOT NULL DEFAULT false;
-- The provider callbacks' records still within their TTL become lasting too. They are bound to
-- a digest of the callback's raw body; from this release on, to one of what it says (so that
-- the same event serialised again is a replay), so a callback first seen before the upgrade
-- and sent again after it in any form is refused with 422 and writes nothing.
UPDATE idempotency_keys SET lasting = true WHERE scope = 'service:payments-webhook';
