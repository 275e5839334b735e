//! Unit tests of the positions: where an assigned partition starts, and what moves them.

use super::*;

fn positions() -> Positions {
    Positions::new([
        ("users", vec!["users.events".to_owned()]),
        (
            "audit",
            vec!["users.events".to_owned(), "orders.events".to_owned()],
        ),
    ])
}

fn p(topic: &str, partition: i32) -> Partition {
    (topic.to_owned(), partition)
}

#[test]
fn a_partition_starts_at_the_lowest_offset_of_the_projections_reading_it() {
    let positions = positions();
    positions.merge([
        ("users".to_owned(), p("users.events", 0), 40),
        ("audit".to_owned(), p("users.events", 0), 25),
        ("audit".to_owned(), p("orders.events", 0), 7),
    ]);
    assert_eq!(positions.start("users.events", 0), Some(25));
    assert_eq!(positions.start("orders.events", 0), Some(7));
}

#[test]
fn a_projection_without_a_stored_offset_starts_its_partitions_at_the_beginning() {
    let positions = positions();
    positions.merge([("users".to_owned(), p("users.events", 1), 40)]);
    assert_eq!(positions.start("users.events", 1), None, "audit has none");
    assert_eq!(positions.start("orders.events", 1), None);
}

#[test]
fn positions_only_move_forward() {
    let positions = positions();
    positions.merge([("users".to_owned(), p("users.events", 0), 30)]);
    positions.merge([("users".to_owned(), p("users.events", 0), 12)]);
    assert_eq!(positions.next("users", "users.events", 0), Some(30));
    positions.merge([("users".to_owned(), p("users.events", 0), 31)]);
    assert_eq!(positions.next("users", "users.events", 0), Some(31));
    assert_eq!(positions.next("nobody", "users.events", 0), None);
    assert_eq!(positions.next_of("users"), vec![(p("users.events", 0), 31)]);
    assert!(positions.next_of("nobody").is_empty());
}

#[test]
fn an_assignment_starts_each_partition_where_the_projections_need_it_and_is_reported_once() {
    let positions = positions();
    positions.merge([
        ("users".to_owned(), p("users.events", 0), 40),
        ("audit".to_owned(), p("users.events", 0), 25),
    ]);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition("users.events", 0);
    tpl.add_partition("users.events", 1);
    positions.assign(&mut tpl);
    let offsets: Vec<Offset> = tpl.elements().iter().map(|e| e.offset()).collect();
    assert_eq!(offsets, vec![Offset::Offset(25), Offset::Beginning]);
    let mut fresh = positions.take_fresh();
    fresh.sort();
    assert_eq!(
        fresh,
        vec![
            (p("users.events", 0), Some(25)),
            (p("users.events", 1), None)
        ]
    );
    assert!(positions.take_fresh().is_empty());
    assert_eq!(positions.assigned_of(&["users.events".to_owned()]).len(), 2);

    let mut revoked = TopicPartitionList::new();
    revoked.add_partition("users.events", 1);
    positions.revoke(&revoked);
    assert_eq!(
        positions.assigned_of(&["users.events".to_owned()]),
        vec![p("users.events", 0)]
    );
}
