-- The process manager keeps what a payment's authorization allows beside its amount: an
-- authorization can be for less than the payment's amount, and capture stops there, so a
-- payment whose authorized amount is captured in full confirms its order even when it is
-- short of the amount (before this column such an order was never confirmed, with the money
-- captured). Rows written without it (and without `amount_minor`, by a projector of the
-- release before, still running during a rolling upgrade) are filled in from the event store
-- when the process manager loads them (projections/src/process_manager/store.rs).
ALTER TABLE pm_payments ADD COLUMN authorized_minor bigint;
