//! An OTLP/HTTP trace receiver inside the test process: it takes `POST /v1/traces` bodies in
//! the protobuf encoding the services export by default and keeps every span, so a test can
//! check what each hop exported and how the spans link up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;

/// One exported span, flattened.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    /// OpenTelemetry's span kind number: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub attributes: HashMap<String, String>,
    /// The exporting process's resource attributes.
    pub resource: HashMap<String, String>,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;
pub const PRODUCER: i32 = 4;
pub const CONSUMER: i32 = 5;

#[derive(Clone, Default)]
pub struct Receiver {
    /// Every span with when it arrived.
    spans: Arc<Mutex<Vec<(ReceivedSpan, Instant)>>>,
}

fn text(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => s.clone(),
                AnyValue::IntValue(i) => i.to_string(),
                AnyValue::BoolValue(b) => b.to_string(),
                AnyValue::DoubleValue(d) => d.to_string(),
                other => format!("{other:?}"),
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

async fn receive(State(receiver): State<Receiver>, body: Bytes) -> StatusCode {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| text(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: text(&span.attributes),
                    resource: resource.clone(),
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                });
            }
        }
    }
    let now = Instant::now();
    receiver
        .spans
        .lock()
        .unwrap()
        .extend(received.into_iter().map(|s| (s, now)));
    StatusCode::OK
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Receiver {
    /// Serves on a free loopback port; returns the receiver and its base URL (what
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` takes).
    pub async fn start() -> (Self, String) {
        Self::start_on("127.0.0.1:0")
            .await
            .expect("bind the OTLP receiver")
    }

    /// Serves on `address`.
    pub async fn start_on(address: &str) -> std::io::Result<(Self, String)> {
        let receiver = Self::default();
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(receiver.clone());
        Ok((receiver, serve(address, app).await?))
    }

    /// Removes and returns the traces that received nothing for `quiet` (finished, as far as
    /// anyone can tell), each as its spans.
    pub fn take_quiet(&self, quiet: Duration) -> Vec<Vec<ReceivedSpan>> {
        let now = Instant::now();
        let mut spans = self.spans.lock().unwrap();
        let mut last: HashMap<String, Instant> = HashMap::new();
        for (span, at) in spans.iter() {
            let entry = last.entry(span.trace_id.clone()).or_insert(*at);
            *entry = (*entry).max(*at);
        }
        let done: Vec<String> = last
            .into_iter()
            .filter(|(_, at)| now.duration_since(*at) >= quiet)
            .map(|(trace, _)| trace)
            .collect();
        let mut traces = Vec::new();
        for trace in done {
            let (taken, kept): (Vec<_>, Vec<_>) =
                spans.drain(..).partition(|(s, _)| s.trace_id == trace);
            *spans = kept;
            traces.push(taken.into_iter().map(|(s, _)| s).collect());
        }
        traces
    }

    /// The spans of `trace_id` received so far.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| s.trace_id == trace_id)
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Waits (at most `timeout`) until `done` holds for the spans of `trace_id`; returns them.
    pub async fn wait_for(
        &self,
        trace_id: &str,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.trace(trace_id);
            if done(&spans) || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A receiver that keeps nothing: it answers every export and counts requests and bytes
/// without decoding them, so that a benchmark's sink costs the machine as little as possible
/// (a collector would run elsewhere).
#[derive(Clone, Default)]
pub struct Sink {
    requests: Arc<std::sync::atomic::AtomicU64>,
    bytes: Arc<std::sync::atomic::AtomicU64>,
}

async fn swallow(State(sink): State<Sink>, body: Bytes) -> StatusCode {
    use std::sync::atomic::Ordering;
    sink.requests.fetch_add(1, Ordering::Relaxed);
    sink.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    StatusCode::OK
}

impl Sink {
    pub async fn start_on(address: &str) -> std::io::Result<(Self, String)> {
        let sink = Self::default();
        let app = Router::new()
            .route("/v1/traces", post(swallow))
            .with_state(sink.clone());
        Ok((sink, serve(address, app).await?))
    }

    /// Export requests and bytes received so far.
    pub fn received(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.requests.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// Serves `app` on `address` in the background; returns its base URL.
async fn serve(address: &str, app: Router) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        axum::serve(listener, app).await.ok();
    });
    Ok(url)
}
