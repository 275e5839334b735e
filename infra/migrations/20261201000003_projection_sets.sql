-- The table set a replay replaced, kept (in its own schema) for `projector rollback` until
-- `projector prune`: where it is, and from which transaction on it lacks the log's events (every
-- event with tx_id >= swapped_xmin may have reached only the set that replaced it).
CREATE TABLE projection_previous_sets (
    projection   text        PRIMARY KEY,
    schema_name  text        NOT NULL,
    swapped_xmin xid8        NOT NULL,
    swapped_at   timestamptz NOT NULL DEFAULT now()
);
