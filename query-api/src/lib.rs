//! The query API over the read models. Built by the read-side work; empty until then.
#![forbid(unsafe_code)]
