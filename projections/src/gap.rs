//! Where a consumed event stands against what its projection has applied of its aggregate,
//! and filling a gap from the event store.
//!
//! A projection applies an aggregate's event only when it is exactly the next sequence. The log
//! can show a later one first: the idempotent producer fails messages after its delivery
//! timeout and sends the next ones, so a partition may read 1, 4, 5 before the relay
//! re-publishes 2, 3, 4, 5 from its checkpoint (ADR 0009). Applying 4 there, and skipping 2 and
//! 3 later as duplicates, would lose them for good. Instead the runner holds 4 back, reads 2
//! and 3 from the events table (the system of record, which has every committed event: 4 was
//! committed, so 2 and 3 were before it) inside the batch's transaction, applies them as a
//! consumer would have received them ([`crate::stored::envelope`]), and then 4.

use std::ops::RangeInclusive;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

/// An event's sequence against the last one its projection applied for the aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// At or below what was applied: a redelivery or a re-publication.
    Duplicate,
    /// Exactly the next one.
    Next,
    /// Later than the next: these sequences are missing before it.
    Gap(RangeInclusive<i64>),
}

/// Classifies `sequence` against `applied` (None: nothing applied yet; sequences start at 1).
pub fn position(applied: Option<i64>, sequence: i64) -> Position {
    let applied = applied.unwrap_or(0);
    if sequence <= applied {
        Position::Duplicate
    } else if sequence == applied + 1 {
        Position::Next
    } else {
        Position::Gap(applied + 1..=sequence - 1)
    }
}

/// The sequences of `missing` that `found` (ordered) lacks; empty when the gap can be filled.
pub fn unfilled(missing: &RangeInclusive<i64>, found: &[i64]) -> Vec<i64> {
    missing.clone().filter(|s| !found.contains(s)).collect()
}

/// The stored events of `missing` for one aggregate, in sequence order, on the batch's
/// connection (so inside its transaction); selected with [`crate::stored::COLUMNS`].
pub async fn missing_events(
    conn: &mut PgConnection,
    aggregate_type: &str,
    aggregate_id: &str,
    missing: &RangeInclusive<i64>,
) -> Result<Vec<PgRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {} FROM events e
         WHERE e.aggregate_type = $1 AND e.aggregate_id = $2 AND e.sequence BETWEEN $3 AND $4
         ORDER BY e.sequence",
        crate::stored::COLUMNS
    ))
    .bind(aggregate_type)
    .bind(aggregate_id)
    .bind(missing.start())
    .bind(missing.end())
    .fetch_all(conn)
    .await
}

/// The sequences of rows selected by [`missing_events`].
pub fn sequences(rows: &[PgRow]) -> Result<Vec<i64>, sqlx::Error> {
    rows.iter().map(|r| r.try_get("sequence")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_event_of_an_aggregate_is_next() {
        assert_eq!(position(None, 1), Position::Next);
    }

    #[test]
    fn a_later_first_event_leaves_a_gap_from_one() {
        assert_eq!(position(None, 3), Position::Gap(1..=2));
    }

    #[test]
    fn the_sequence_after_the_applied_one_is_next() {
        assert_eq!(position(Some(4), 5), Position::Next);
    }

    #[test]
    fn at_or_below_the_applied_sequence_is_a_duplicate() {
        assert_eq!(position(Some(4), 4), Position::Duplicate);
        assert_eq!(position(Some(4), 1), Position::Duplicate);
    }

    #[test]
    fn a_jump_leaves_exactly_the_sequences_between() {
        assert_eq!(position(Some(1), 4), Position::Gap(2..=3));
        assert_eq!(position(Some(1), 3), Position::Gap(2..=2));
    }

    #[test]
    fn the_log_one_four_five_two_three_applies_each_sequence_once_in_order() {
        // What a projection does with 1, 4, 5, 2, 3, 4, 5 when every gap is filled in full.
        let mut applied = None;
        let mut order = Vec::new();
        for sequence in [1, 4, 5, 2, 3, 4, 5] {
            match position(applied, sequence) {
                Position::Duplicate => {}
                Position::Next => order.push(sequence),
                Position::Gap(missing) => order.extend(missing.chain([sequence])),
            }
            applied = Some(applied.unwrap_or(0).max(sequence));
        }
        assert_eq!(order, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_gap_is_unfilled_until_every_missing_sequence_is_found() {
        assert_eq!(unfilled(&(2..=4), &[2, 3, 4]), Vec::<i64>::new());
        assert_eq!(unfilled(&(2..=4), &[2, 4]), [3]);
        assert_eq!(unfilled(&(2..=4), &[]), [2, 3, 4]);
    }
}
