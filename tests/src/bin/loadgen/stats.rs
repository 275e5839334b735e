//! Counters, latency histogram and the end-of-run report (human or JSON).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::common::Outcome;

/// Highest latency the histogram tracks, in microseconds (1 hour); larger
/// values are clamped, which cannot happen with the client timeout.
const MAX_TRACKED_MICROS: u64 = 3_600_000_000;

/// Outcome counters plus a latency histogram (microseconds, 3 significant
/// figures). One per worker, merged at the end; no locking on the hot path.
pub struct Stats {
    pub requests: u64,
    pub ok: u64,
    pub conflicts: u64,
    pub errors: u64,
    pub errors_by_status: BTreeMap<String, u64>,
    /// First error detail seen for each key, for diagnostics on stderr.
    pub error_samples: BTreeMap<String, String>,
    pub latency_us: Histogram<u64>,
}

impl Stats {
    pub fn new() -> Result<Self> {
        let latency_us = Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, 3)
            .context("creating the latency histogram")?;
        Ok(Self {
            requests: 0,
            ok: 0,
            conflicts: 0,
            errors: 0,
            errors_by_status: BTreeMap::new(),
            error_samples: BTreeMap::new(),
            latency_us,
        })
    }

    pub fn record(&mut self, outcome: &Outcome, latency: Duration) {
        self.requests += 1;
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(micros.max(1));
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Conflict => self.conflicts += 1,
            Outcome::Error { key, detail } => {
                self.errors += 1;
                *self.errors_by_status.entry(key.clone()).or_default() += 1;
                if !self.error_samples.contains_key(key) {
                    self.error_samples.insert(key.clone(), detail.clone());
                }
            }
        }
    }

    pub fn merge(&mut self, other: &Stats) -> Result<()> {
        self.requests += other.requests;
        self.ok += other.ok;
        self.conflicts += other.conflicts;
        self.errors += other.errors;
        for (key, n) in &other.errors_by_status {
            *self.errors_by_status.entry(key.clone()).or_default() += n;
        }
        for (key, detail) in &other.error_samples {
            self.error_samples
                .entry(key.clone())
                .or_insert_with(|| detail.clone());
        }
        self.latency_us
            .add(&other.latency_us)
            .context("merging latency histograms")
    }
}

/// The figures printed at the end of a run; also the `--json` schema.
#[derive(Debug, Serialize)]
pub struct Report {
    pub mode: String,
    pub concurrency: usize,
    pub duration_secs: f64,
    pub requests: u64,
    pub ok: u64,
    pub conflicts: u64,
    pub errors: u64,
    pub errors_by_status: BTreeMap<String, u64>,
    /// Accepted (2xx) commands per second of measured time: the headline figure.
    pub commands_per_sec: f64,
    /// All measured requests (any outcome, conflicts included) per second.
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Report {
    pub fn new(mode: &str, concurrency: usize, measured: Duration, stats: &Stats) -> Self {
        let secs = measured.as_secs_f64();
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let h = &stats.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        let empty = h.is_empty();
        let q = |quantile: f64| {
            if empty {
                0.0
            } else {
                ms(h.value_at_quantile(quantile))
            }
        };
        Self {
            mode: mode.to_owned(),
            concurrency,
            duration_secs: secs,
            requests: stats.requests,
            ok: stats.ok,
            conflicts: stats.conflicts,
            errors: stats.errors,
            errors_by_status: stats.errors_by_status.clone(),
            commands_per_sec: per_sec(stats.ok),
            requests_per_sec: per_sec(stats.requests),
            p50_ms: q(0.50),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            max_ms: if empty { 0.0 } else { ms(h.max()) },
        }
    }

    /// Compact multi-line report for people.
    pub fn human(&self, command: &str) -> String {
        let by_status = if self.errors_by_status.is_empty() {
            String::new()
        } else {
            let parts: Vec<String> = self
                .errors_by_status
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect();
            format!(" (by status: {})", parts.join(", "))
        };
        format!(
            "loadgen {command} mode={} concurrency={} duration={:.1}s\n\
             requests={} ok={} conflicts={} errors={}{by_status}\n\
             throughput: {:.1} commands/s accepted (all requests: {:.1}/s)\n\
             latency ms: p50={:.1} p95={:.1} p99={:.1} max={:.1}",
            self.mode,
            self.concurrency,
            self.duration_secs,
            self.requests,
            self.ok,
            self.conflicts,
            self.errors,
            self.commands_per_sec,
            self.requests_per_sec,
            self.p50_ms,
            self.p95_ms,
            self.p99_ms,
            self.max_ms,
        )
    }

    /// Prints the report on stdout (human or one JSON object) and the first
    /// error of each kind on stderr.
    pub fn print(&self, command: &str, json: bool, stats: &Stats) -> Result<()> {
        if json {
            println!(
                "{}",
                serde_json::to_string(self).context("serializing the report")?
            );
        } else {
            println!("{}", self.human(command));
        }
        for (key, detail) in &stats.error_samples {
            eprintln!("first {key} error: {detail}");
        }
        Ok(())
    }
}
