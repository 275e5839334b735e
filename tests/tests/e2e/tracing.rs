//! One OpenTelemetry trace from a command to the read models. The command API (with its
//! relay) and the projector (with the process manager) run as processes exporting spans over
//! OTLP/HTTP to a receiver in this test. A capture sent with a `traceparent` must come back as
//! one trace: the command API's server, command and append spans, the relay's producer span,
//! the projections' consumer spans, the process manager's client span, the confirmation it
//! causes in the command API, its producer span and the orders projection's consumer span,
//! each the child of the one before. The command API's JSON logs inside those spans carry the
//! trace and span ids, and their `/metrics` describe every series and report the build, the
//! process and the database pool.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::app::read;
use crate::support::commerce::authorized_payment;
use crate::support::processes::{free_port, service_command, Process};
use crate::support::stack::stack_without_relay;
use tests::otlp::{ReceivedSpan, Receiver, CLIENT, CONSUMER, PRODUCER, SERVER};

const TRACE_ID: &str = "5b8efff798038103d269b633813fc60c";
const CALLER_SPAN: &str = "eee19b7ec3c1b174";

fn exporting(command: &mut Command, otlp: &str) {
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment.name=test",
        );
}

async fn wait_ready(url: &str, what: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = client.get(format!("{url}/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} never got ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The one span of `spans` that is a child of `parent` and satisfies `what`.
fn child<'a>(
    spans: &'a [ReceivedSpan],
    parent: &ReceivedSpan,
    description: &str,
    what: impl Fn(&ReceivedSpan) -> bool,
) -> Result<&'a ReceivedSpan, String> {
    let found: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id && what(s))
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        _ => Err(format!(
            "expected one {description} under {:?} ({}), found {found:#?}",
            parent.name, parent.service
        )),
    }
}

/// Checks the trace hop by hop (every span is exported complete, so only a missing span is
/// worth waiting for); returns the capture's server span.
fn chain(spans: &[ReceivedSpan]) -> Result<ReceivedSpan, String> {
    let caller = ReceivedSpan {
        service: "caller".into(),
        name: "caller".into(),
        kind: CLIENT,
        trace_id: TRACE_ID.into(),
        span_id: CALLER_SPAN.into(),
        parent_span_id: String::new(),
        attributes: HashMap::new(),
        resource: HashMap::new(),
        start_unix_nano: 0,
        end_unix_nano: 0,
    };
    // Command API: server span, command span, append span.
    let server = child(spans, &caller, "capture server span", |s| {
        s.kind == SERVER && s.name == "POST /v1/payments/{id}/capture"
    })?;
    assert_eq!(
        server.service, "commerce-command-api",
        "OTEL_SERVICE_NAME is honoured"
    );
    assert_eq!(attribute(server, "http.response.status_code"), "200");
    let capture = child(spans, server, "command span", |s| {
        s.name.starts_with("command ")
    })?;
    let append = child(spans, capture, "append span", |s| {
        s.kind == CLIENT && attribute(s, "db.system.name") == "postgresql"
    })?;
    assert_eq!(attribute(append, "db.collection.name"), "events");
    // Relay: one producer span for the captured event, under the command.
    let produced = child(spans, capture, "producer span", |s| s.kind == PRODUCER)?;
    assert!(attribute(produced, "messaging.destination.name").ends_with("payments.events"));
    assert_eq!(attribute(produced, "messaging.system"), "kafka");
    assert!(!attribute(produced, "messaging.kafka.offset").is_empty());
    // Projector: the process manager's and the payments projection's consumer spans.
    let decided = child(spans, produced, "process manager consumer span", |s| {
        s.kind == CONSUMER && attribute(s, "projection") == "process_manager"
    })?;
    assert_eq!(decided.service, "projector", "the default service name");
    child(spans, produced, "payments consumer span", |s| {
        s.kind == CONSUMER && attribute(s, "projection") == "payments"
    })?;
    // The process manager's command, and the command API handling it.
    let sent = child(spans, decided, "process manager client span", |s| {
        s.kind == CLIENT
    })?;
    let confirm_server = child(spans, sent, "confirm server span", |s| {
        s.kind == SERVER && s.name.ends_with("/confirm")
    })?;
    let confirm = child(spans, confirm_server, "confirm command span", |s| {
        s.name.starts_with("command ")
    })?;
    let confirmed = child(spans, confirm, "confirmation producer span", |s| {
        s.kind == PRODUCER
    })?;
    assert!(attribute(confirmed, "messaging.destination.name").ends_with("orders.events"));
    child(spans, confirmed, "orders consumer span", |s| {
        s.kind == CONSUMER && attribute(s, "projection") == "orders"
    })?;
    Ok(server.clone())
}

fn attribute<'a>(span: &'a ReceivedSpan, key: &str) -> &'a str {
    span.attributes.get(key).map(String::as_str).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_traced_command_is_one_trace_from_the_command_api_to_the_read_models() {
    let (receiver, otlp) = Receiver::start().await;
    let stack = stack_without_relay().await;
    let app = &stack.app;
    let logs = std::env::temp_dir().join(format!("trace-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&logs).unwrap();

    let port = free_port();
    let command_api_url = format!("http://127.0.0.1:{port}");
    let mut command = service_command("command-api", &stack.settings);
    command
        .env("APP__DATABASE__MIGRATE_ON_START", "false")
        .env("APP__RELAY__ENABLED", "true")
        .env("APP__RELAY__POLL_INTERVAL_MS", "200")
        .env("APP__COMMAND_API__PORT", port.to_string())
        .env("APP__LOG__FILTER", "info")
        .env("OTEL_SERVICE_NAME", "commerce-command-api");
    exporting(&mut command, &otlp);
    let _command_api = Process::spawn_logged(
        command,
        "a command-api process",
        &logs.join("command-api.log"),
    );
    wait_ready(&command_api_url, "the command API process").await;

    let projector_port = free_port();
    let mut command = service_command("projector", &stack.settings);
    command
        .env("APP__PROJECTOR__COMMAND_API_URL", &command_api_url)
        .env("APP__PROJECTOR__PORT", projector_port.to_string())
        .env("APP__PROJECTOR__BATCH_SIZE", "50");
    exporting(&mut command, &otlp);
    let _projector =
        Process::spawn_logged(command, "a projector process", &logs.join("projector.log"));
    wait_ready(
        &format!("http://127.0.0.1:{projector_port}"),
        "the projector process",
    )
    .await;

    // An order with an authorized payment, through the in-process command API (not traced).
    let (_, payment) = authorized_payment(app).await;

    // The capture, traced, through the exporting command API.
    let response = app
        .client
        .post(format!("{command_api_url}/v1/payments/{payment}/capture"))
        .bearer_auth(app.admin_token().await)
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .json(&json!({"amount_minor": 3000}))
        .send()
        .await
        .expect("capture");
    let captured = read(response).await;
    assert!(captured.status.is_success(), "{captured:?}");

    let spans = receiver
        .wait_for(TRACE_ID, Duration::from_secs(60), |spans| {
            chain(spans).is_ok()
        })
        .await;
    let server = match chain(&spans) {
        Ok(server) => server,
        Err(error) => panic!("{error}\nall spans of the trace: {spans:#?}"),
    };
    for span in &spans {
        assert_eq!(
            span.resource
                .get("deployment.environment.name")
                .map(String::as_str),
            Some("test"),
            "OTEL_RESOURCE_ATTRIBUTES is honoured by {}",
            span.service
        );
    }

    // The audit rows of the trace's events (the capture and the confirmation) record each
    // event's own context, as a rebuild from the store does, not the producer span's that the
    // messages' `traceparent` names: `projector verify audit` failed on every event published
    // while the relay exported spans.
    let recorded = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, (String, String)>(
            "SELECT a.traceparent, e.metadata->>'traceparent'
             FROM rm_audit a JOIN events e ON e.event_id = a.event_id
             WHERE e.metadata->>'traceparent' LIKE '00-' || $1 || '-%'
             ORDER BY a.global_position",
        )
        .bind(TRACE_ID)
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut rows = recorded(app.pool.clone()).await;
    while rows.len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        rows = recorded(app.pool.clone()).await;
    }
    assert!(rows.len() >= 2, "the trace's audit rows: {rows:?}");
    for (audit, stored) in &rows {
        assert_eq!(audit, stored, "an audit row records another trace context");
    }

    // The command API's JSON log lines inside the capture's spans carry its ids.
    let log = std::fs::read_to_string(logs.join("command-api.log")).unwrap();
    let ours: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["trace_id"] == TRACE_ID)
        .collect();
    assert!(!ours.is_empty(), "no log line carries the trace id:\n{log}");
    let span_ids: Vec<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    for line in &ours {
        let span_id = line["span_id"].as_str().unwrap_or("");
        assert!(span_ids.contains(&span_id), "{line} names an unknown span");
    }
    assert!(
        ours.iter()
            .any(|l| l["span_id"] == server.span_id.as_str() && l["message"] == "response"),
        "the capture's response line is not in its server span: {ours:#?}"
    );
    std::fs::remove_dir_all(&logs).ok();

    // The same processes' metrics: described, with build, process and pool series.
    for (url, service) in [
        (command_api_url.clone(), "command-api"),
        (format!("http://127.0.0.1:{projector_port}"), "projector"),
    ] {
        let text = app
            .client
            .get(format!("{url}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap();
        for expected in [
            "# HELP http_requests_total HTTP requests answered",
            "# HELP process_resident_memory_bytes",
            "# TYPE http_request_duration_seconds histogram",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "db_pool_max_connections ",
            "db_pool_connections{state=\"in_use\"}",
            &format!(
                "build_info{{service=\"{service}\",version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            ),
        ] {
            assert!(
                text.contains(expected),
                "{service}: no {expected:?} in\n{text}"
            );
        }
    }
}
