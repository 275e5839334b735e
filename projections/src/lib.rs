//! Projector workers, process managers and replay tooling. Built by the read-side work; empty
//! until then.
#![forbid(unsafe_code)]
