-- The process manager's outbox. Its decisions (commands to send) are written here in the same
-- transaction as its view (pm_orders, pm_payments) and its consumed offsets; a dispatcher
-- sends them to the command API after commit, so no transaction waits on the network.
--
-- status: pending (to send; next_attempt_at says when), done (2xx), refused (the aggregate
-- refused it by a rule, or the resource does not exist), parked (retry budget spent or the
-- request was malformed: a person looks at last_error, then resets it to pending).
CREATE TABLE pm_outbox (
    id              bigserial   PRIMARY KEY,
    -- Derived from the triggering event (pm-confirm-<event id>, pm-cancel-<event id>,
    -- pm-refund-<event id>-<payment id>-<amount>): a redelivered decision adds no row.
    idempotency_key text        NOT NULL UNIQUE,
    kind            text        NOT NULL CHECK (kind IN ('confirm_order', 'cancel_order', 'refund_payment')),
    target          uuid        NOT NULL,
    path            text        NOT NULL,
    body            jsonb       NOT NULL,
    correlation_id  text        NOT NULL,
    causation_id    uuid        NOT NULL,
    traceparent     text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'done', 'refused', 'parked')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pm_outbox_due_idx ON pm_outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX pm_outbox_parked_idx ON pm_outbox (id) WHERE status = 'parked';
CREATE INDEX pm_outbox_settled_idx ON pm_outbox (updated_at) WHERE status IN ('done', 'refused');
