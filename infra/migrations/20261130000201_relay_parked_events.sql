-- Events the relay cannot encode against their registered schema (a payload that does not fit
-- it). They are parked here instead of stopping the relay for good: every later event is still
-- published, `relay_events_parked_total` counts them for alerting, and a person decides what to
-- do (fix the schema or the data, then republish). The event itself stays in `events`.
CREATE TABLE relay_parked_events (
    event_id        uuid        PRIMARY KEY,
    global_position bigint      NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    event_type      text        NOT NULL,
    error           text        NOT NULL,
    parked_at       timestamptz NOT NULL DEFAULT now()
);
