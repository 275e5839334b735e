//! Avro schemas of every event type and version, domain <-> Avro conversion, Confluent
//! wire-format encoding and the schema-registry service. Built by the Kafka-log work; empty
//! until then.
#![forbid(unsafe_code)]
