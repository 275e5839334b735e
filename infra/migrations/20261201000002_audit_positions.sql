-- Each audit entry's position in the event store, so that an audit export runs in log order and
-- resumes after the last position it wrote (GET /v1/audit/export, `projector audit-export`).
ALTER TABLE rm_audit ADD COLUMN global_position bigint;
UPDATE rm_audit a SET global_position = e.global_position FROM events e WHERE e.event_id = a.event_id;
-- Every entry came from a stored event, and the store is append-only: an entry without a position
-- would be a corruption, and this fails the migration loudly.
ALTER TABLE rm_audit ALTER COLUMN global_position SET NOT NULL;
CREATE UNIQUE INDEX rm_audit_position_idx ON rm_audit (global_position);
