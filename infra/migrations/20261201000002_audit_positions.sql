-- Each audit entry's position in the event store, so that an audit export runs in log order and
-- resumes after the last position it wrote (GET /v1/audit/export, `projector audit-export`).
--
-- An entry whose event is not in the store cannot get one. That happens only when the database
-- was restored to a point before events the projector had already consumed from Kafka (see
-- docs/operations.md, "Back up and restore"). Such entries are evidence, not noise: they move to
-- rm_audit_unmatched, unchanged, instead of failing the upgrade or being dropped.
CREATE TABLE rm_audit_unmatched (LIKE rm_audit INCLUDING ALL);
WITH unmatched AS (
    DELETE FROM rm_audit a
    WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = a.event_id)
    RETURNING a.*
)
INSERT INTO rm_audit_unmatched SELECT * FROM unmatched;
ALTER TABLE rm_audit ADD COLUMN global_position bigint;
UPDATE rm_audit a SET global_position = e.global_position FROM events e WHERE e.event_id = a.event_id;
ALTER TABLE rm_audit ALTER COLUMN global_position SET NOT NULL;
CREATE UNIQUE INDEX rm_audit_position_idx ON rm_audit (global_position);
