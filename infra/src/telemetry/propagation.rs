//! W3C trace context across every hop: HTTP requests, stored event metadata and Kafka
//! headers. OpenTelemetry's `TraceContextPropagator` reads and writes the `traceparent` and
//! `tracestate` headers; nothing here parses them by hand.
//!
//! With span export on ([`super::exporting`]), the context to pass on is the current span's.
//! With it off no OpenTelemetry span exists, so [`continue_trace`] keeps a caller's trace id
//! (with a new span id) or starts a trace, and the ids still join logs, events and messages.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header (and metadata key) that carries the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The message header that keeps the event's own `traceparent` (its metadata's, the command
/// span's) where the relay's producer span has taken `traceparent`: what the read models
/// record must be what a rebuild from the event store records.
pub const EVENT_TRACEPARENT: &str = "event_traceparent";

/// Reads a context from HTTP headers.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Reads a context from `(name, value)` pairs, e.g. Kafka message headers.
struct Pairs<'a>(&'a [(&'a str, &'a str)]);

impl Extractor for Pairs<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

/// Collects what a propagator writes.
#[derive(Default)]
struct Collected(HashMap<String, String>);

impl Injector for Collected {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// The remote context named by HTTP headers (empty when they carry none or an invalid one).
pub fn from_headers(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&Headers(headers))
}

/// The remote context named by a `traceparent` value (stored event metadata, Kafka headers).
pub fn from_traceparent(traceparent: &str) -> Context {
    TraceContextPropagator::new().extract(&Pairs(&[(TRACEPARENT, traceparent)]))
}

/// The `traceparent` value of a context, if it has a valid span.
pub fn traceparent_of(context: &Context) -> Option<String> {
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut collected = Collected::default();
    TraceContextPropagator::new().inject_context(context, &mut collected);
    collected.0.remove(TRACEPARENT)
}

/// The `traceparent` of the current `tracing` span while spans are exported; `None` otherwise
/// (or outside any span).
pub fn current_traceparent() -> Option<String> {
    if !super::exporting() {
        return None;
    }
    traceparent_of(&tracing::Span::current().context())
}

/// The `traceparent` of `span` while spans are exported.
pub fn traceparent_of_span(span: &tracing::Span) -> Option<String> {
    if !super::exporting() {
        return None;
    }
    traceparent_of(&span.context())
}

/// Makes `span` a child of `parent` when spans are exported and `parent` is valid. A span
/// created with no parent then starts a trace of its own.
pub fn set_parent(span: &tracing::Span, parent: &Context) {
    if super::exporting() && parent.span().span_context().is_valid() {
        // Fails only for a span that is already started or disabled; either way it keeps the
        // parent it has.
        let _ = span.set_parent(parent.clone());
    }
}

/// The `traceparent` to pass on for work done under `incoming`: the current span's while
/// spans are exported, else the incoming trace with a new span id, else a new trace.
pub fn continue_trace(incoming: &Context) -> String {
    if let Some(current) = current_traceparent() {
        return current;
    }
    let parent = incoming.span().span_context().clone();
    let child = if parent.is_valid() {
        SpanContext::new(
            parent.trace_id(),
            random_span_id(),
            parent.trace_flags(),
            false,
            parent.trace_state().clone(),
        )
    } else {
        SpanContext::new(
            TraceId::from_bytes(*uuid::Uuid::new_v4().as_bytes()),
            random_span_id(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        )
    };
    traceparent_of(&Context::new().with_remote_span_context(child))
        .unwrap_or_else(|| format!("00-{}-{}-01", TraceId::INVALID, SpanId::INVALID))
}

fn random_span_id() -> SpanId {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut id = [0u8; 8];
    id.copy_from_slice(&bytes[..8]);
    // A zero span id is invalid; flipping one bit keeps the other 63 random.
    if id == [0; 8] {
        id[7] = 1;
    }
    SpanId::from_bytes(id)
}

/// The trace id of a `traceparent` value, for logs; `None` if it is not valid.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let context = from_traceparent(traceparent);
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INCOMING: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn given_an_incoming_trace_when_continued_then_the_trace_id_stays_and_the_span_id_changes() {
        let next = continue_trace(&from_traceparent(INCOMING));
        assert!(
            next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{next}"
        );
        assert!(next.ends_with("-01"), "{next}");
        assert_ne!(next, INCOMING);
        assert_eq!(
            trace_id_of(&next).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn given_an_unsampled_trace_when_continued_then_it_stays_unsampled() {
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(continue_trace(&from_traceparent(unsampled)).ends_with("-00"));
    }

    #[test]
    fn given_garbage_or_zero_ids_when_continued_then_a_new_valid_trace_starts() {
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "",
        ] {
            let fresh = continue_trace(&from_traceparent(bad));
            assert!(trace_id_of(&fresh).is_some(), "{bad:?} gave {fresh}");
            assert!(!fresh.contains("4bf92f3577b34da6"), "{bad:?} gave {fresh}");
        }
    }

    #[test]
    fn given_headers_when_extracted_then_the_remote_context_is_read() {
        let mut headers = http::HeaderMap::new();
        headers.insert(TRACEPARENT, INCOMING.parse().unwrap());
        let context = from_headers(&headers);
        assert_eq!(traceparent_of(&context).as_deref(), Some(INCOMING));
        assert_eq!(traceparent_of(&Context::new()), None);
    }
}
