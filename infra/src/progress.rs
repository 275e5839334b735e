//! Progress of a long command-line job on standard error: on a terminal one line redrawn in
//! place (done, total, rate, time left), otherwise one JSON object per line (for logs and
//! scripts), at most once a second and once at the end.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a report is written at most.
const EVERY: Duration = Duration::from_secs(1);

pub struct Progress {
    job: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    reported: Option<Instant>,
    terminal: bool,
    failed: bool,
}

impl Progress {
    /// A job of `total` items (0 when unknown).
    pub fn new(job: &'static str, total: u64) -> Self {
        Self {
            job,
            total,
            done: 0,
            started: Instant::now(),
            reported: None,
            terminal: std::io::stderr().is_terminal(),
            failed: false,
        }
    }

    /// Counts `n` more items done and reports if a second has passed.
    pub fn advance(&mut self, n: u64) {
        self.done += n;
        if self.reported.is_none_or(|at| at.elapsed() >= EVERY) {
            self.report(false);
        }
    }

    /// The last report; returns the items done.
    pub fn finish(mut self) -> u64 {
        self.report(true);
        self.done
    }

    /// The last report of a job that ended as `outcome` says: done, or failed (a failed job's
    /// last line must not read as finished work); returns the items done.
    pub fn end<T, E>(mut self, outcome: &Result<T, E>) -> u64 {
        self.failed = outcome.is_err();
        self.finish()
    }

    fn report(&mut self, last: bool) {
        self.reported = Some(Instant::now());
        let line = self.line(last);
        let mut err = std::io::stderr().lock();
        // Progress is best effort: a closed standard error must not fail the job.
        let _ = if self.terminal {
            write!(err, "\r\x1b[2K{line}{}", if last { "\n" } else { "" })
        } else {
            writeln!(err, "{line}")
        };
    }

    /// The report: text for a terminal, JSON otherwise.
    fn line(&self, last: bool) -> String {
        let seconds = self.started.elapsed().as_secs_f64();
        let rate = if seconds > 0.0 {
            self.done as f64 / seconds
        } else {
            0.0
        };
        let left =
            (self.total > self.done && rate > 0.0).then(|| (self.total - self.done) as f64 / rate);
        if self.terminal {
            let eta = match left {
                Some(s) => format!(", {s:.0} s left"),
                None => String::new(),
            };
            let of = if self.total > 0 {
                format!(" of {}", self.total)
            } else {
                String::new()
            };
            let state = match (last, self.failed) {
                (false, _) => "",
                (true, false) => "done: ",
                (true, true) => "failed: ",
            };
            format!("{}: {state}{}{of} ({rate:.0}/s{eta})", self.job, self.done)
        } else {
            serde_json::json!({
                "job": self.job,
                "done": self.done,
                "total": self.total,
                "rate_per_second": (rate * 10.0).round() / 10.0,
                "eta_seconds": left.map(|s| (s * 10.0).round() / 10.0),
                "finished": last,
                "failed": self.failed,
            })
            .to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_say_how_far_how_fast_and_how_long_is_left() {
        let mut progress = Progress::new("export", 100);
        progress.terminal = false;
        progress.started = Instant::now() - Duration::from_secs(2);
        progress.done = 50;
        let line: serde_json::Value = serde_json::from_str(&progress.line(false)).unwrap();
        assert_eq!(line["job"], "export");
        assert_eq!(line["done"], 50);
        assert_eq!(line["total"], 100);
        let rate = line["rate_per_second"].as_f64().unwrap();
        assert!((20.0..=25.0).contains(&rate), "{line}");
        let eta = line["eta_seconds"].as_f64().unwrap();
        assert!((1.8..=2.5).contains(&eta), "{line}");
        progress.terminal = true;
        let text = progress.line(false);
        assert!(text.starts_with("export: 50 of 100 ("), "{text}");
        assert!(text.contains("s left"), "{text}");
        progress.done = 100;
        assert!(progress.line(true).starts_with("export: done: 100 of 100"));
        progress.failed = true;
        assert!(progress
            .line(true)
            .starts_with("export: failed: 100 of 100"));
        progress.terminal = false;
        let line: serde_json::Value = serde_json::from_str(&progress.line(true)).unwrap();
        assert_eq!(
            (&line["finished"], &line["failed"]),
            (&true.into(), &true.into())
        );
    }
}
