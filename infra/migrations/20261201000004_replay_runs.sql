-- Every replay, rollback and as-of build, with its progress while it runs (updated about once
-- a second), so an operator (`projector status`, the admin console) can follow it.
CREATE TABLE replay_runs (
    id          bigserial   PRIMARY KEY,
    -- The projections of the run, space-separated (one replay scans the log once for all).
    projection  text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('replay', 'rollback', 'as_of')),
    -- The as-of set's name, for kind 'as_of'.
    target      text,
    state       text        NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'failed')),
    events      bigint      NOT NULL DEFAULT 0,
    -- Events the run expects to fold (an estimate taken at its start), if known.
    total       bigint,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    error       text
);
CREATE INDEX replay_runs_recent ON replay_runs (started_at DESC);

-- Named read-only sets of what read models said at a point of the log (`projector replay
-- --as-of`): the query API serves them on request (`?as_of=<name>`).
CREATE TABLE as_of_sets (
    name         text        PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,39}$'),
    schema_name  text        NOT NULL UNIQUE,
    -- The last global position folded into it.
    position     bigint      NOT NULL,
    -- What was asked for: a global position or a time.
    requested    text        NOT NULL,
    projections  text[]      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
