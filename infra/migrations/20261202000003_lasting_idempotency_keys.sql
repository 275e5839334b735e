-- Some idempotency keys must outlive the TTL: those of machine clients (client credentials:
-- the process manager, the payments webhook) name an event or a decision for good, and may be
-- sent again at any time: a provider retries a callback days later, re-signed (so the
-- signature's 300 s tolerance does not stop it); a parked process-manager command is reset a
-- week later. Without this, a partial refund sent again after the TTL was refunded twice. A
-- lasting record is never replaced nor expired.
ALTER TABLE idempotency_keys ADD COLUMN lasting boolean NOT NULL DEFAULT false;
-- Machine clients' records still within their TTL become lasting too.
UPDATE idempotency_keys SET lasting = true WHERE scope LIKE 'service:%';
-- The expiry sweep reads only what it may delete: lasting records pile up below its bound.
DROP INDEX idempotency_keys_created_idx;
CREATE INDEX idempotency_keys_expiring_idx ON idempotency_keys (created_at) WHERE NOT lasting;
