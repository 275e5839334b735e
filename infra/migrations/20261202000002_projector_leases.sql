-- A replay, an as-of build or a verify creates schemas it drops when it ends, and a replay,
-- rollback or as-of build keeps a `replay_runs` row in state 'running' while it works. If its process dies
-- (killed, out of memory, machine lost), those stay behind: tables with autovacuum off, and a
-- run the admin console would show running for ever. So each such process holds a lease while
-- it works: a session advisory lock, named by a random id, on a connection of its own, which
-- PostgreSQL releases when that connection ends, however the process ended. Every schema it
-- creates is recorded under its lease before it is created, and its runs carry the lease: what
-- a lease no longer held left behind is abandoned, and `projector prune` (and every replay,
-- rollback, as-of build and verify as it starts) drops those schemas and marks those runs
-- abandoned (projections/src/lease.rs).

-- Whether the lease `lease` is held by a live session of this database: a lock taken with
-- pg_advisory_lock(bigint) shows in pg_locks as its key's high and low halves.
CREATE FUNCTION projector_lease_held(lease text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM pg_locks
        WHERE locktype = 'advisory' AND objsubid = 1 AND granted
          AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND ((classid::bigint << 32) | objid::bigint)
              = hashtextextended('projector-lease:' || lease, 0)
    )
$$;

-- Whether a run still marked running has its process behind it: its lease is held. A run
-- recorded without a lease (by a binary from before leases) counts as alive. The projector's
-- sweep, `projector status` and the admin console all ask this.
CREATE FUNCTION replay_run_alive(lease text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT lease IS NULL OR projector_lease_held(lease)
$$;

-- The schemas a leased process created and has not dropped or kept yet. Work that keeps one
-- (a replay's swap, an as-of set's registration) deletes its row in the transaction that
-- keeps it, and a sweep deletes it in the transaction that drops it: the row's lock lets
-- only one of them happen, even when a process lost its lease while it still works.
CREATE TABLE projector_work_schemas (
    schema_name text        PRIMARY KEY,
    lease       text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE replay_runs ADD COLUMN lease text;
ALTER TABLE replay_runs DROP CONSTRAINT replay_runs_state_check;
ALTER TABLE replay_runs ADD CONSTRAINT replay_runs_state_check
    CHECK (state IN ('running', 'done', 'failed', 'abandoned'));

-- What runs before this migration left behind is recorded under a lease nobody holds, so the
-- first sweep clears it: the work schemas no set refers to (by the names replays, as-of builds
-- and verifies give them: `replay_<model>_<8 hex digits>`, `asof_<8>`, `verify_<model>_<8>`),
-- and the runs still marked running. Every service applies migrations as it starts: upgrade
-- when no replay, rollback, as-of build or verify is running (docs/operations.md).
INSERT INTO projector_work_schemas (schema_name, lease)
SELECT n.nspname, 'from-before-leases'
FROM pg_namespace n
WHERE n.nspname ~ '^((replay|verify)_[a-z0-9_]+|asof)_[0-9a-f]{8}$'
  AND n.nspname NOT IN (SELECT schema_name FROM as_of_sets)
  AND n.nspname NOT IN (SELECT schema_name FROM projection_previous_sets);
UPDATE replay_runs SET lease = 'from-before-leases' WHERE state = 'running';
