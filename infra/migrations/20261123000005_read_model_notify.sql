-- Change notifications for the query API's cache. Every committed change to a single-resource
-- read model sends `<kind>:<id>` on channel `read_models`; PostgreSQL delivers notifications
-- only after the projector's transaction commits, so a reader that hears one sees the change.
-- A payment also changes its order's representation (paid and refunded totals).

CREATE FUNCTION read_model_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'rm_users' THEN
        PERFORM pg_notify('read_models', 'user:' || NEW.id);
    ELSIF TG_TABLE_NAME = 'rm_orders' THEN
        PERFORM pg_notify('read_models', 'order:' || NEW.id);
    ELSIF TG_TABLE_NAME = 'rm_payments' THEN
        PERFORM pg_notify('read_models', 'payment:' || NEW.id);
        PERFORM pg_notify('read_models', 'order:' || NEW.order_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER rm_users_changed AFTER INSERT OR UPDATE ON rm_users
    FOR EACH ROW EXECUTE FUNCTION read_model_changed();
CREATE TRIGGER rm_orders_changed AFTER INSERT OR UPDATE ON rm_orders
    FOR EACH ROW EXECUTE FUNCTION read_model_changed();
CREATE TRIGGER rm_payments_changed AFTER INSERT OR UPDATE ON rm_payments
    FOR EACH ROW EXECUTE FUNCTION read_model_changed();

-- One order's payments, oldest first (replaces the plain order_id index).
DROP INDEX rm_payments_order_idx;
CREATE INDEX rm_payments_order_created_idx ON rm_payments (order_id, created_at, id);

-- The process manager's view of orders and payments (progress lives in projection_offsets
-- and projection_versions under the name `process_manager`, like any projection's).
CREATE TABLE pm_orders (
    order_id  uuid    PRIMARY KEY,
    cancelled boolean NOT NULL DEFAULT false
);

CREATE TABLE pm_payments (
    payment_id     uuid   PRIMARY KEY,
    order_id       uuid   NOT NULL,
    captured_minor bigint NOT NULL DEFAULT 0,
    refunded_minor bigint NOT NULL DEFAULT 0,
    failed         boolean NOT NULL DEFAULT false
);
CREATE INDEX pm_payments_order_idx ON pm_payments (order_id);
