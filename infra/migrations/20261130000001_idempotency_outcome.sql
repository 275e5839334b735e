-- An idempotency key remembers what the command did (the aggregate, its version, the global
-- position and the events it produced), not an HTTP answer: the API renders a repeated request's
-- outcome exactly as it renders a fresh one. `completed` is false only inside the transaction
-- that took the key, so other sessions never see an unfinished record.
ALTER TABLE idempotency_keys ADD COLUMN completed boolean NOT NULL DEFAULT false;
UPDATE idempotency_keys SET completed = status > 0;
ALTER TABLE idempotency_keys RENAME COLUMN response TO outcome;
-- Records written before this change held the HTTP body {id, version, position, ...}; they keep
-- their id, version and position (the events they produced are not repeated in them).
UPDATE idempotency_keys
SET outcome = jsonb_build_object('id', outcome->>'id', 'version', outcome->'version',
                                 'position', outcome->'position', 'events', '[]'::jsonb)
WHERE completed;
ALTER TABLE idempotency_keys DROP COLUMN status;
