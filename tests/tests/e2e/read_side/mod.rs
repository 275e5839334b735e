//! The read side: the query API over projections fed through Kafka, the process manager closing
//! the order–payment loop, read-your-writes with `min_version`, the cache, and the query API's
//! contract (errors, pagination, conditional requests).

mod cache;
mod end_to_end;
mod process_manager;
mod query_contract;
