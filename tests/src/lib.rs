//! What the end-to-end tests and the load generator share: an OTLP/HTTP trace receiver
//! ([`otlp`]), used by the tracing test and by `loadgen traces`, which prints the traces a
//! locally running system exports.

pub mod otlp;
