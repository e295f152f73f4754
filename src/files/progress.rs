//! What a long file run tells the person waiting for it, on standard error: a progress bar
//! (rows, rows/s, ETA) when standard error is a terminal, a one-line report every few seconds
//! otherwise (logs, CI), and a summary line at the end.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the line report is written when standard error is not a terminal (the first one
/// after a second, so short runs show one too).
const LOG_EVERY: Duration = Duration::from_secs(5);
const FIRST_LOG_AFTER: Duration = Duration::from_secs(1);

pub struct Progress {
    what: &'static str,
    bar: Option<ProgressBar>,
    started: Instant,
    next_log: Instant,
    rows: u64,
    errors: u64,
    /// How far the input goes (bytes or rows, the reader's unit), when known.
    total: Option<u64>,
    position: u64,
    labels: BTreeMap<String, u64>,
}

impl Progress {
    pub fn new(what: &'static str, total: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
            let template = if total.is_some() {
                "{spinner} {wide_bar} {percent:>3}% {msg} (ETA {eta})"
            } else {
                "{spinner} {msg}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let now = Instant::now();
        Self {
            what,
            bar,
            started: now,
            next_log: now + FIRST_LOG_AFTER,
            rows: 0,
            errors: 0,
            total,
            position: 0,
            labels: BTreeMap::new(),
        }
    }

    /// Rows written so far, the reader's position, and the labels of the new rows.
    pub fn advance<'a>(
        &mut self,
        rows: u64,
        errors: u64,
        position: u64,
        labels: impl Iterator<Item = &'a str>,
    ) {
        self.rows += rows;
        self.errors += errors;
        self.position = position;
        for label in labels {
            *self.labels.entry(label.to_string()).or_default() += 1;
        }
        let message = format!(
            "{} rows, {:.0} rows/s, {} errors",
            self.rows,
            self.rate(),
            self.errors
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(position);
                bar.set_message(message);
            }
            None if Instant::now() >= self.next_log => {
                self.next_log = Instant::now() + LOG_EVERY;
                let share = self
                    .total
                    .filter(|&t| t > 0)
                    .map(|t| format!(", {:.0}% of the input", 100.0 * position as f64 / t as f64))
                    .unwrap_or_default();
                eprintln!("newscls {}: {message}{share}", self.what);
            }
            None => {}
        }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn errors(&self) -> u64 {
        self.errors
    }

    fn rate(&self) -> f64 {
        self.rows as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// The summary line: rows, errors, seconds, rows/s, and the rows per label.
    pub fn finish(self, note: &str) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(label, count)| format!("{label} {count}"))
            .collect();
        eprintln!(
            "newscls {}: {} rows, {} errors, {:.1} s, {:.0} rows/s{}{note}",
            self.what,
            self.rows,
            self.errors,
            self.started.elapsed().as_secs_f64(),
            self.rate(),
            if labels.is_empty() {
                String::new()
            } else {
                format!("; labels: {}", labels.join(", "))
            },
        );
    }
}
