//! Projections: read models equal an independent fold of the events table, whatever is
//! redelivered, killed or undecodable, and `verify` proves it per read model.

mod abandoned;
mod dead_letters;
mod exactly_once;
mod fold;
mod kills;
mod rollback;
mod scan;
mod swap;
mod verify;
