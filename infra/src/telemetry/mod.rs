//! Logs, traces and metrics set-up shared by every service:
//!
//! - `tracing` with JSON (or pretty) output filtered by `log.filter`; inside a span, every JSON
//!   line carries the `trace_id` and `span_id` of that span while spans are exported;
//! - OpenTelemetry spans exported over OTLP when the standard variables ask for it
//!   (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; protocol, service
//!   name, resource attributes and sampler from theirs). Without an endpoint no OpenTelemetry
//!   layer is installed: nothing is recorded, exported or paid for;
//! - one process-wide Prometheus recorder rendered on `/metrics` ([`metrics`]).

pub mod metrics;
pub mod propagation;

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::settings::{LogFormat, LogSettings};

pub use self::metrics::metrics_handle;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans (an OTLP endpoint is configured and the OpenTelemetry
/// layer is installed).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Keeps the span exporter of a process; [`Telemetry::shutdown`] flushes what is buffered.
#[must_use = "dropping the guard keeps spans buffered; call shutdown before exiting"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter (bounded by its own timeout).
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let result = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(error)) = result {
                tracing::warn!(%error, "flushing spans at shutdown failed");
            }
        }
    }
}

/// Whether the standard variables ask for span export.
fn export_requested() -> bool {
    let value = |name: &str| std::env::var(name).unwrap_or_default();
    let disabled = value("OTEL_SDK_DISABLED")
        .trim()
        .eq_ignore_ascii_case("true")
        || value("OTEL_TRACES_EXPORTER")
            .trim()
            .eq_ignore_ascii_case("none");
    let endpoint = !value("OTEL_EXPORTER_OTLP_ENDPOINT").trim().is_empty()
        || !value("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .trim()
            .is_empty();
    endpoint && !disabled
}

/// `service.name` (unless `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` names one) and
/// `service.version`, over what the SDK reads from the environment.
fn resource(service: &'static str) -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let builder = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if named {
        builder.build()
    } else {
        builder.with_service_name(service).build()
    }
}

/// The tracer provider: the OTLP exporter (protocol from `OTEL_EXPORTER_OTLP_PROTOCOL`,
/// http/protobuf by default) behind the batch processor, the sampler from
/// `OTEL_TRACES_SAMPLER` (parent-based always-on by default). Must run inside the Tokio
/// runtime: the gRPC transport needs it.
fn provider(service: &'static str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .build()
        .map_err(|e| e.to_string())?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(service))
        .build())
}

/// Installs the global subscriber (and, when asked for, span export). Later calls (several
/// services in one test process) keep the first subscriber and return a guard with nothing
/// to flush, so this never fails the caller. Call it inside the Tokio runtime.
pub fn init(service: &'static str, settings: &LogSettings) -> Telemetry {
    init_writing(service, settings, BoxMakeWriter::new(std::io::stdout))
}

/// [`init`] for a command-line tool: logs go to standard error, so that what the command
/// prints on standard output (a table, JSON) stays clean.
pub fn init_for_command(service: &'static str, settings: &LogSettings) -> Telemetry {
    init_writing(service, settings, BoxMakeWriter::new(std::io::stderr))
}

fn init_writing(service: &'static str, settings: &LogSettings, writer: BoxMakeWriter) -> Telemetry {
    let filter = EnvFilter::try_new(&settings.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let mut export_error = None;
    let provider = if export_requested() {
        provider(service)
            .inspect_err(|error| export_error = Some(error.clone()))
            .ok()
    } else {
        None
    };
    // Spans at INFO and above are exported whatever `log.filter` keeps for the logs. Each
    // carries the attributes it declares and nothing per span besides: no source location,
    // thread or busy/idle timings (attributes cost time on every request and say little), and
    // no OpenTelemetry context is activated on enter (propagation reads a span's context
    // explicitly, see `propagation`).
    let spans = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false)
            .with_context_activation(false)
            .with_filter(LevelFilter::INFO)
    });
    let registry = tracing_subscriber::registry().with(spans);
    let result = match settings.format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .json()
                    .event_format(WithTraceIds(
                        tracing_subscriber::fmt::format()
                            .json()
                            .flatten_event(true)
                            .with_current_span(true)
                            .with_span_list(false),
                    ))
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_filter(filter),
            )
            .try_init(),
    };
    if let Some(error) = export_error {
        tracing::error!(%error, "span export is configured but could not start; no spans are exported");
    }
    if result.is_err() {
        tracing::debug!("a tracing subscriber was already installed");
        return Telemetry { provider: None };
    }
    if provider.is_some() {
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!(service, "exporting spans over OTLP");
    }
    Telemetry { provider }
}

/// Puts `trace_id` and `span_id` of the event's span first in each JSON line while spans are
/// exported; otherwise the line is the inner format's unchanged.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let ids = if exporting() { trace_ids(ctx) } else { None };
        let Some((trace_id, span_id)) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::with_capacity(256);
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
            ),
            None => writer.write_str(&line),
        }
    }
}

/// The OpenTelemetry ids of the span an event belongs to, if it is in one.
fn trace_ids<S, N>(ctx: &FmtContext<'_, S, N>) -> Option<(String, String)>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    let span = ctx.event_scope()?.next()?;
    let id = span.id();
    drop(span);
    let context = tracing::dispatcher::get_default(|dispatch| {
        tracing_opentelemetry::get_otel_context(&id, dispatch)
    })?;
    let otel_span = context.span();
    let span_context = otel_span.span_context();
    span_context.is_valid().then(|| {
        (
            span_context.trace_id().to_string(),
            span_context.span_id().to_string(),
        )
    })
}
