//! `loadgen traces`: an OTLP/HTTP receiver for a locally running system that prints each trace
//! as a tree once it has been quiet for a moment: service, span kind, name and duration, each
//! span under its parent. Point the services at it with
//! `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318`.

use std::collections::HashMap;
use std::time::Duration;

use ::tests::otlp::{ReceivedSpan, Receiver, Sink};
use clap::Args;

#[derive(Debug, Args)]
pub struct TracesArgs {
    /// Where to listen (OTLP/HTTP's usual port by default).
    #[arg(long, default_value = "127.0.0.1:4318")]
    listen: String,
    /// A trace is printed once no span of it arrived for this long.
    #[arg(long, default_value_t = 3000)]
    quiet_ms: u64,
    /// Stop after printing this many traces (0: run until interrupted).
    #[arg(long, default_value_t = 0)]
    count: usize,
    /// Keep and print nothing: count export requests and bytes without decoding them and
    /// report them every 5 s (a cheap sink for benchmarks with span export on).
    #[arg(long)]
    discard: bool,
}

pub async fn run(args: TracesArgs) -> anyhow::Result<()> {
    if args.discard {
        return discard(&args.listen).await;
    }
    let (receiver, url) = Receiver::start_on(&args.listen).await?;
    eprintln!("loadgen: receiving OTLP/HTTP traces at {url}/v1/traces");
    let mut printed = 0;
    let mut ticks = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        for trace in receiver.take_quiet(Duration::from_millis(args.quiet_ms)) {
            print!("{}", render(&trace));
            printed += 1;
            if args.count > 0 && printed >= args.count {
                return Ok(());
            }
        }
    }
}

async fn discard(listen: &str) -> anyhow::Result<()> {
    let (sink, url) = Sink::start_on(listen).await?;
    eprintln!("loadgen: swallowing OTLP/HTTP exports at {url}/v1/traces");
    let mut ticks = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let (requests, bytes) = sink.received();
                eprintln!("loadgen: {requests} export requests, {bytes} bytes received");
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn kind(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

/// The trace as an indented tree, children in start order; spans whose parent was not
/// received (the caller's, or one still in flight) are printed as roots.
pub fn render(spans: &[ReceivedSpan]) -> String {
    let ids: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: HashMap<&str, Vec<&ReceivedSpan>> = HashMap::new();
    let mut roots = Vec::new();
    for span in spans {
        if ids.contains(span.parent_span_id.as_str()) {
            children.entry(&span.parent_span_id).or_default().push(span);
        } else {
            roots.push(span);
        }
    }
    for list in children.values_mut() {
        list.sort_by_key(|s| s.start_unix_nano);
    }
    roots.sort_by_key(|s| s.start_unix_nano);
    let trace_id = spans.first().map(|s| s.trace_id.as_str()).unwrap_or("");
    let mut out = format!("trace {trace_id} ({} spans)\n", spans.len());
    let mut stack: Vec<(&ReceivedSpan, usize)> = roots.into_iter().rev().map(|s| (s, 0)).collect();
    while let Some((span, depth)) = stack.pop() {
        let millis = span.end_unix_nano.saturating_sub(span.start_unix_nano) as f64 / 1e6;
        out.push_str(&format!(
            "{:indent$}{} [{}] {} {millis:.2} ms\n",
            "",
            span.service,
            kind(span.kind),
            span.name,
            indent = 2 + depth * 2
        ));
        if let Some(list) = children.get(span.span_id.as_str()) {
            stack.extend(list.iter().rev().map(|s| (*s, depth + 1)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: &str, name: &str, start: u64) -> ReceivedSpan {
        ReceivedSpan {
            service: "svc".into(),
            name: name.into(),
            kind: 2,
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.into(),
            attributes: HashMap::new(),
            resource: HashMap::new(),
            start_unix_nano: start,
            end_unix_nano: start + 1_500_000,
        }
    }

    #[test]
    fn spans_are_printed_under_their_parents_in_start_order() {
        let spans = vec![
            span("c", "a", "second child", 30),
            span("a", "caller", "root", 10),
            span("b", "a", "first child", 20),
            span("d", "b", "grandchild", 25),
        ];
        let text = render(&spans);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "trace t (4 spans)");
        assert_eq!(lines[1], "  svc [server] root 1.50 ms");
        assert_eq!(lines[2], "    svc [server] first child 1.50 ms");
        assert_eq!(lines[3], "      svc [server] grandchild 1.50 ms");
        assert_eq!(lines[4], "    svc [server] second child 1.50 ms");
    }
}
