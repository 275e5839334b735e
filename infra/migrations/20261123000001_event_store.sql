-- Event store: postgres-es's columns plus the ones the relay and auditors need.
-- `sequence` is bigint: postgres-es reads it as i64.
CREATE TABLE events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL CHECK (sequence > 0),
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    event_id        uuid        NOT NULL,
    -- Commit-safe tailing (see ARCHITECTURE.md guarantee 3): the relay reads rows whose tx_id is
    -- below the oldest running transaction, ordered by (tx_id, global_position).
    global_position bigserial   NOT NULL,
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT events_pkey PRIMARY KEY (aggregate_type, aggregate_id, sequence),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_global_position_key UNIQUE (global_position)
);

CREATE INDEX events_tailing_idx ON events (tx_id, global_position);

-- Aggregate snapshots, in postgres-es's shape.
CREATE TABLE snapshots (
    aggregate_type   text   NOT NULL,
    aggregate_id     text   NOT NULL,
    last_sequence    bigint NOT NULL,
    current_snapshot bigint NOT NULL,
    payload          jsonb  NOT NULL,
    CONSTRAINT snapshots_pkey PRIMARY KEY (aggregate_type, aggregate_id)
);

-- Values that must be unique across aggregates (a user's email). Claimed and released in the
-- same transaction (or statement) as the events that imply them, so a race has one winner.
CREATE TABLE unique_claims (
    scope          text        NOT NULL,
    key            text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    claimed_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT unique_claims_pkey PRIMARY KEY (scope, key)
);

-- Idempotency keys, written in the same transaction as the events they produced. A row whose
-- status is 0 is never visible to others: it is completed before its transaction commits.
CREATE TABLE idempotency_keys (
    scope        text        NOT NULL,
    key          text        NOT NULL,
    request_hash bytea       NOT NULL,
    status       smallint    NOT NULL,
    response     jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (scope, key)
);

CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
