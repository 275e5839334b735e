-- Read models built by the projector (`projections/`), and its bookkeeping. Each projection
-- writes its rows, its consumed offsets and the per-aggregate versions it has applied in one
-- transaction, so a crash can neither lose nor double-apply an event.

CREATE TABLE projection_offsets (
    projection  text    NOT NULL,
    topic       text    NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint  NOT NULL,
    PRIMARY KEY (projection, topic, partition)
);

-- The last sequence of each aggregate a projection applied: redelivered or republished events
-- (at other offsets) are recognised and skipped.
CREATE TABLE projection_versions (
    projection     text   NOT NULL,
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    version        bigint NOT NULL,
    PRIMARY KEY (projection, aggregate_type, aggregate_id)
);

-- Messages a projection could not apply (undecodable, unknown type, broken payload).
CREATE TABLE dead_letters (
    id           bigserial   PRIMARY KEY,
    projection   text        NOT NULL,
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    event_id     text,
    aggregate_id text,
    error        text        NOT NULL,
    payload      bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (projection, topic, partition, "offset")
);

CREATE TABLE rm_users (
    id           uuid        PRIMARY KEY,
    email        text        NOT NULL,
    email_key    text        NOT NULL,
    display_name text        NOT NULL,
    preferences  jsonb       NOT NULL DEFAULT '{}',
    addresses    jsonb       NOT NULL DEFAULT '[]',
    roles        jsonb       NOT NULL DEFAULT '[]',
    status       text        NOT NULL,
    version      bigint      NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);
CREATE INDEX rm_users_email_idx ON rm_users (email_key);

CREATE TABLE rm_orders (
    id               uuid        PRIMARY KEY,
    customer_id      uuid        NOT NULL,
    status           text        NOT NULL,
    items            jsonb       NOT NULL,
    currency         text        NOT NULL,
    total_minor      bigint      NOT NULL,
    paid_minor       bigint      NOT NULL DEFAULT 0,
    refunded_minor   bigint      NOT NULL DEFAULT 0,
    shipping_address jsonb       NOT NULL,
    carrier          text,
    tracking_number  text,
    version          bigint      NOT NULL,
    placed_at        timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
-- Newest first per customer; the id breaks ties so cursors are stable.
CREATE INDEX rm_orders_customer_idx ON rm_orders (customer_id, placed_at DESC, id DESC);
CREATE INDEX rm_orders_placed_idx ON rm_orders (placed_at);

CREATE TABLE rm_payments (
    id               uuid   PRIMARY KEY,
    order_id         uuid   NOT NULL,
    status           text   NOT NULL,
    amount_minor     bigint NOT NULL,
    authorized_minor bigint NOT NULL DEFAULT 0,
    captured_minor   bigint NOT NULL DEFAULT 0,
    refunded_minor   bigint NOT NULL DEFAULT 0,
    currency         text   NOT NULL,
    method           text   NOT NULL,
    version          bigint NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX rm_payments_order_idx ON rm_payments (order_id);

CREATE TABLE rm_revenue_daily (
    day            date   NOT NULL,
    currency       text   NOT NULL,
    captured_minor bigint NOT NULL DEFAULT 0,
    refunded_minor bigint NOT NULL DEFAULT 0,
    orders         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, currency)
);

CREATE TABLE rm_audit (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL,
    event_id       uuid        NOT NULL,
    event_type     text        NOT NULL,
    event_version  text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    actor          text        NOT NULL,
    correlation_id text        NOT NULL,
    causation_id   text        NOT NULL,
    traceparent    text        NOT NULL,
    payload        jsonb       NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- Each order's current status, for the funnel (owned by the analytics projection).
CREATE TABLE rm_funnel (
    order_id  uuid        PRIMARY KEY,
    status    text        NOT NULL,
    placed_at timestamptz NOT NULL
);
CREATE INDEX rm_funnel_placed_idx ON rm_funnel (placed_at);
