-- `projection_versions` partitioned by projection, so that a replay's swap replaces a
-- projection's versions by detaching one partition and attaching another (the new set's
-- `applied`, built beside it) instead of rewriting a row per aggregate while it holds the
-- projection's lock (projections/src/replay/swap.rs). Each partition carries an explicit CHECK
-- on its projection, so attaching it needs no scan. A projection with no partition of its own
-- (a read model added later) lives in the default partition until its first replay.
ALTER TABLE projection_versions RENAME TO projection_versions_unpartitioned;
ALTER INDEX projection_versions_pkey RENAME TO projection_versions_unpartitioned_pkey;

CREATE TABLE projection_versions (
    projection     text   NOT NULL,
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    version        bigint NOT NULL,
    PRIMARY KEY (projection, aggregate_type, aggregate_id)
) PARTITION BY LIST (projection);

CREATE TABLE projection_versions_default PARTITION OF projection_versions DEFAULT;

DO $$
DECLARE
    p text;
BEGIN
    FOREACH p IN ARRAY ARRAY['users', 'orders', 'payments', 'analytics', 'audit',
                             'customer_value', 'process_manager'] LOOP
        EXECUTE format('CREATE TABLE %I (LIKE projection_versions, CONSTRAINT projection_is CHECK (projection = %L))',
                       'projection_versions_' || p, p);
        EXECUTE format('ALTER TABLE projection_versions ATTACH PARTITION %I FOR VALUES IN (%L)',
                       'projection_versions_' || p, p);
    END LOOP;
END;
$$;

INSERT INTO projection_versions SELECT * FROM projection_versions_unpartitioned;
DROP TABLE projection_versions_unpartitioned;
