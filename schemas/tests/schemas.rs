//! Schema tests that need no registry: every event round-trips through Avro, every schema file
//! is listed and valid, newer versions are compatible with all older ones (the build-time
//! gate), and every old version has an upcast fixture.
// `to_avro_datum`/`from_avro_datum` are deprecated in apache-avro 0.22 in favour of a builder
// API; they remain the plainest way to write and read one datum here.
#![allow(deprecated)]

use apache_avro::{from_avro_datum, to_avro_datum, Schema};
use cqrs_es::DomainEvent;
use domain::{OrderEvent, PaymentEvent, UserEvent};
use schemas::convert::{avro_to_json, json_to_avro, round_trip};
use schemas::{catalogue, latest};
use serde_json::{json, Value};

fn samples() -> Vec<Value> {
    let addr = json!({"label": "home", "line1": "1 Main St", "line2": "Flat 2", "city": "Oslo",
        "postal_code": "0150", "country": "NO"});
    let addr_no_line2 = json!({"label": "work", "line1": "2 Side St", "line2": null, "city": "Oslo",
        "postal_code": "0151", "country": "NO"});
    let id = "0190a000-0000-7000-8000-000000000001";
    vec![
        json!({"type": "UserRegistered", "email": "a@b.co", "display_name": "A", "roles": ["customer", "admin"]}),
        json!({"type": "UserProfileChanged", "display_name": "B", "preferences": {"theme": "dark", "n": [1, 2]}}),
        json!({"type": "UserProfileChanged", "display_name": null, "preferences": null}),
        json!({"type": "UserEmailChanged", "previous_email": "a@b.co", "email": "c@d.co"}),
        json!({"type": "UserAddressAdded", "address_id": id, "address": addr}),
        json!({"type": "UserAddressAdded", "address_id": id, "address": addr_no_line2}),
        json!({"type": "UserAddressRemoved", "address_id": id}),
        json!({"type": "UserRoleGranted", "role": "admin"}),
        json!({"type": "UserRoleRevoked", "role": "admin"}),
        json!({"type": "UserDeactivated", "reason": "left"}),
        json!({"type": "UserDeactivated", "reason": null}),
        json!({"type": "OrderPlaced", "customer_id": id, "currency": "EUR",
            "items": [{"sku": "A", "quantity": 2, "unit_price_minor": 5, "line_total_minor": 10},
                      {"sku": "B", "quantity": 1, "unit_price_minor": 0, "line_total_minor": 0}],
            "total_minor": 10, "shipping_address": addr}),
        json!({"type": "OrderConfirmed"}),
        json!({"type": "OrderProcessingStarted"}),
        json!({"type": "OrderShipped", "carrier": "UPS", "tracking_number": "1Z"}),
        json!({"type": "OrderDelivered"}),
        json!({"type": "OrderCancelled", "reason": "r", "cancelled_from": "processing"}),
        json!({"type": "PaymentInitiated", "order_id": id, "amount_minor": 5, "currency": "EUR", "method": "card"}),
        json!({"type": "PaymentAuthorized", "order_id": id, "amount_minor": 5, "currency": "EUR"}),
        json!({"type": "PaymentCaptured", "order_id": id, "amount_minor": 5, "currency": "EUR", "captured_total_minor": 5}),
        json!({"type": "PaymentFailed", "order_id": id, "reason": "declined"}),
        json!({"type": "PaymentRefunded", "order_id": id, "amount_minor": 5, "currency": "EUR",
            "reason": "r", "refunded_total_minor": 5, "fully_refunded": true}),
    ]
}

/// Decodes the JSON into the domain event (so the sample is a real event) and back.
fn domain_round_trip(json: &Value) -> (String, Value) {
    let event_type = json["type"].as_str().unwrap();
    match &event_type[..4] {
        "User" => {
            let e: UserEvent = serde_json::from_value(json.clone()).unwrap();
            (e.event_type(), serde_json::to_value(e).unwrap())
        }
        "Orde" => {
            let e: OrderEvent = serde_json::from_value(json.clone()).unwrap();
            (e.event_type(), serde_json::to_value(e).unwrap())
        }
        _ => {
            let e: PaymentEvent = serde_json::from_value(json.clone()).unwrap();
            (e.event_type(), serde_json::to_value(e).unwrap())
        }
    }
}

#[test]
fn every_event_round_trips_domain_avro_bytes_domain() {
    let mut covered = std::collections::BTreeSet::new();
    for sample in samples() {
        let (event_type, stored) = domain_round_trip(&sample);
        let schema = &latest(&event_type).unwrap().schema;
        let avro = json_to_avro(&stored, schema).unwrap();
        let bytes = to_avro_datum(schema, avro).unwrap();
        let read = from_avro_datum(schema, &mut bytes.as_slice(), None).unwrap();
        let back = avro_to_json(&read, schema, &event_type).unwrap();
        assert_eq!(back, stored, "{event_type} changed in the round trip");
        assert_eq!(domain_round_trip(&back).1, stored);
        covered.insert(event_type);
    }
    let all: std::collections::BTreeSet<String> =
        catalogue().keys().map(|k| k.to_string()).collect();
    assert_eq!(covered, all, "every event type needs a round-trip sample");
}

#[test]
fn every_schema_file_is_listed_and_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/avro");
    let mut on_disk = Vec::new();
    for aggregate in std::fs::read_dir(dir).unwrap() {
        for file in std::fs::read_dir(aggregate.unwrap().path()).unwrap() {
            on_disk.push(file.unwrap().file_name().to_string_lossy().to_string());
        }
    }
    on_disk.sort();
    let mut listed: Vec<String> = catalogue()
        .values()
        .flatten()
        .map(|s| format!("{}.v{}.avsc", s.file.event_type, s.file.version))
        .collect();
    listed.sort();
    assert_eq!(
        listed, on_disk,
        "catalogue_table.rs and schemas/avro/ disagree (or a file is invalid)"
    );
}

#[test]
fn newest_versions_match_the_domain_event_versions() {
    for (event_type, version) in domain_catalogue() {
        let schema = latest(event_type).unwrap();
        assert_eq!(schema.file.version.to_string(), version, "{event_type}");
    }
}

fn domain_catalogue() -> Vec<(&'static str, &'static str)> {
    use domain::NamedEvent;
    let mut all = UserEvent::catalogue().to_vec();
    all.extend_from_slice(OrderEvent::catalogue());
    all.extend_from_slice(PaymentEvent::catalogue());
    all
}

/// BACKWARD_TRANSITIVE: a reader with any newer schema reads data written with every older one.
fn backward_transitive(versions: &[&Schema]) -> Result<(), String> {
    for (i, reader) in versions.iter().enumerate() {
        for writer in &versions[..i] {
            // The registry's own check: fully (a partial compatibility, a missing enum symbol
            // or union branch, fails on some data), and named types used by name compared by
            // their definitions.
            schema_registry::reads_all(writer, reader)?;
        }
    }
    Ok(())
}

#[test]
fn compatibility_gate_every_new_version_reads_all_older_ones() {
    for (event_type, versions) in catalogue() {
        let schemas: Vec<&Schema> = versions.iter().map(|s| &s.schema).collect();
        if let Err(error) = backward_transitive(&schemas) {
            panic!("{event_type}: a newer schema cannot read older data: {error}");
        }
    }
}

#[test]
fn the_gate_catches_an_incompatible_version() {
    let v1 = Schema::parse_str(
        r#"{"type": "record", "name": "E", "fields": [{"name": "a", "type": "string"}]}"#,
    )
    .unwrap();
    // A new required field without a default cannot be filled from old data.
    let bad = Schema::parse_str(
        r#"{"type": "record", "name": "E", "fields": [
        {"name": "a", "type": "string"}, {"name": "b", "type": "long"}]}"#,
    )
    .unwrap();
    let good = Schema::parse_str(
        r#"{"type": "record", "name": "E", "fields": [
        {"name": "a", "type": "string"}, {"name": "b", "type": "long", "default": 0}]}"#,
    )
    .unwrap();
    assert!(backward_transitive(&[&v1, &bad]).is_err());
    assert!(backward_transitive(&[&v1, &good]).is_ok());
    assert!(backward_transitive(&[&v1, &good, &bad]).is_err());
}

#[test]
fn every_old_version_has_a_fixture_that_upcasts_to_a_valid_event() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures");
    for (event_type, versions) in catalogue() {
        let newest = versions.last().unwrap().file.version;
        for old in versions.iter().filter(|s| s.file.version < newest) {
            let version = old.file.version;
            let path = format!("{dir}/{event_type}.v{version}.json");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|_| panic!("missing fixture {path} for an old version"));
            let stored: Value = serde_json::from_str(&text).unwrap();
            // The fixture is valid data of its own version's schema...
            json_to_avro(&stored, &old.schema).unwrap();
            // ...and upcasts to a current domain event.
            let (now, payload) = domain::upcast::upcast(event_type, &version.to_string(), stored);
            assert_eq!(
                now,
                newest.to_string(),
                "{event_type} v{version} was not upcast"
            );
            let (_, decoded) = domain_round_trip(&payload);
            assert_eq!(decoded, payload);
        }
    }
}

/// Every value of `json` put through the Avro value and back, against the one-walk
/// `round_trip`: each sample, and each with every field removed or replaced by a value of
/// another kind (equal JSON, or the same error).
#[test]
fn the_one_walk_round_trip_is_the_avro_round_trip() {
    let others = [
        json!(null),
        json!(1.5),
        json!(-7),
        json!(4_000_000_000u64),
        json!("x"),
        json!(true),
        json!([1, "a"]),
        json!({"k": [null]}),
    ];
    let mut compared = 0;
    for sample in samples() {
        let (event_type, stored) = domain_round_trip(&sample);
        let schema = &latest(&event_type).unwrap().schema;
        let mut variants = vec![stored.clone()];
        let mut extra = stored.clone();
        extra["not_in_the_schema"] = json!({"a": 1});
        variants.push(extra);
        for key in stored.as_object().unwrap().keys() {
            let mut removed = stored.clone();
            removed.as_object_mut().unwrap().remove(key);
            variants.push(removed);
            for other in &others {
                let mut replaced = stored.clone();
                replaced[key] = other.clone();
                variants.push(replaced);
            }
        }
        for json in variants {
            let through_avro = json_to_avro(&json, schema)
                .and_then(|avro| avro_to_json(&avro, schema, &event_type))
                .map_err(|e| e.to_string());
            let one_walk = round_trip(&json, schema, &event_type).map_err(|e| e.to_string());
            assert_eq!(one_walk, through_avro, "{event_type}: {json}");
            compared += 1;
        }
    }
    assert!(compared > 500, "only {compared} payloads compared");
}
