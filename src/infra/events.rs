//! What happened, as typed events: each one writes its metrics, and its log line where it has
//! one, in one place. Code elsewhere says what happened (`metrics.emit(BatchRan { .. })`) and
//! never touches a series: the [`Metrics`] fields are private to `infra`.
//!
//! The pipeline's events carry a [`Role`], so the shadow challenger's queue and workers report
//! beside the champion's under `role="challenger"` instead of into a registry of their own.

use std::time::Duration;

use super::metrics::Metrics;

/// Something that happened, which knows what to record of itself.
pub trait Event {
    fn record(self, metrics: &Metrics);
}

impl Metrics {
    /// Records `event`: its metrics and its log line.
    pub fn emit(&self, event: impl Event) {
        event.record(self);
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub fn request_started(&self, door: Door) -> InFlight<'_> {
        let gauge = match door {
            Door::Http => &self.http_in_flight,
            Door::Grpc => &self.grpc_in_flight,
        };
        gauge.inc();
        InFlight(gauge)
    }
}

/// Which model a pipeline serves: the one that answers, or the shadow challenger beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Champion,
    Challenger,
}

impl Role {
    /// The `role` label's value.
    pub fn label(self) -> &'static str {
        match self {
            Role::Champion => "champion",
            Role::Challenger => "challenger",
        }
    }
}

/// The request/response doors, which report their requests the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Http,
    Grpc,
}

/// A request being handled; see [`Metrics::request_started`].
pub struct InFlight<'a>(&'a prometheus::IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A request answered, by HTTP or gRPC.
pub struct RequestCompleted<'a> {
    pub door: Door,
    /// HTTP: the request's method; gRPC: `grpc`.
    pub method: &'a str,
    /// HTTP: the raw path, for the log line only; gRPC: the method's name.
    pub path: &'a str,
    /// The metrics' label: HTTP's route pattern (never the raw path: clients must not be able to
    /// grow the metrics), gRPC's method.
    pub route: &'a str,
    /// HTTP: the status code; gRPC: the code's name (`Ok`, `InvalidArgument`, ...).
    pub status: &'a str,
    pub elapsed: Duration,
    /// Texts classified and the largest batch they rode in, when the request classified any.
    pub texts: Option<usize>,
    pub batch_size: Option<usize>,
    pub trace_id: Option<String>,
}

impl Event for RequestCompleted<'_> {
    fn record(self, metrics: &Metrics) {
        let (requests, duration) = match self.door {
            Door::Http => (&metrics.http_requests, &metrics.http_duration),
            Door::Grpc => (&metrics.grpc_requests, &metrics.grpc_duration),
        };
        requests.with_label_values(&[self.route, self.status]).inc();
        duration
            .with_label_values(&[self.route])
            .observe(self.elapsed.as_secs_f64());
        let latency_ms = format!("{:.2}", self.elapsed.as_secs_f64() * 1000.0);
        match self.door {
            Door::Http => tracing::info!(
                method = self.method,
                path = self.path,
                status = self.status.parse::<u16>().unwrap_or_default(),
                latency_ms,
                texts = self.texts,
                batch_size = self.batch_size,
                trace_id = self.trace_id,
                "request"
            ),
            Door::Grpc => tracing::info!(
                method = self.method,
                path = self.path,
                grpc_code = self.status,
                latency_ms,
                texts = self.texts,
                batch_size = self.batch_size,
                trace_id = self.trace_id,
                "request"
            ),
        }
    }
}

/// A request's texts were tokenized by the champion's tokenizer. (The challenger reuses those
/// ids, or, when its tokenizer file differs, tokenizes its mirrored texts again off the request
/// path; that is not timed here.)
pub struct Tokenized {
    pub elapsed: Duration,
}

impl Event for Tokenized {
    fn record(self, metrics: &Metrics) {
        metrics
            .tokenize_duration
            .with_label_values(&[Role::Champion.label()])
            .observe(self.elapsed.as_secs_f64());
    }
}

/// A batching queue now holds `depth` texts.
pub struct QueueChanged {
    pub role: Role,
    pub depth: usize,
}

impl Event for QueueChanged {
    fn record(self, metrics: &Metrics) {
        metrics
            .queue_depth
            .with_label_values(&[self.role.label()])
            .set(self.depth as i64);
    }
}

/// Why queued texts were dropped before inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Their deadline passed while they waited.
    Deadline,
    /// Their caller stopped waiting (a closed connection, a cancelled call).
    ClientGone,
}

/// Texts left a queue without being run.
pub struct TextsDropped {
    pub role: Role,
    pub reason: DropReason,
    pub texts: usize,
}

impl Event for TextsDropped {
    fn record(self, metrics: &Metrics) {
        if self.texts == 0 {
            return;
        }
        let reason = match self.reason {
            DropReason::Deadline => "deadline",
            DropReason::ClientGone => "client_gone",
        };
        metrics
            .dropped_texts
            .with_label_values(&[reason, self.role.label()])
            .inc_by(self.texts as u64);
    }
}

/// A batch went through the model (whether or not inference succeeded).
pub struct BatchRan<W: Iterator<Item = Duration>> {
    pub role: Role,
    pub texts: usize,
    /// Texts answered by the precise variant after a close call (re-scoring).
    pub rescored: usize,
    pub real_tokens: usize,
    /// Token slots, padding included.
    pub padded_tokens: usize,
    /// How long each of its texts waited in the queue.
    pub queue_waits: W,
    pub inference: Duration,
}

impl<W: Iterator<Item = Duration>> Event for BatchRan<W> {
    fn record(self, metrics: &Metrics) {
        let role = [self.role.label()];
        let waits = metrics.queue_wait.with_label_values(&role);
        for wait in self.queue_waits {
            waits.observe(wait.as_secs_f64());
        }
        metrics
            .batch_size
            .with_label_values(&role)
            .observe(self.texts as f64);
        metrics
            .batch_tokens
            .with_label_values(&role)
            .observe(self.padded_tokens as f64);
        metrics
            .tokens
            .with_label_values(&["real", self.role.label()])
            .inc_by(self.real_tokens as u64);
        metrics
            .tokens
            .with_label_values(&["padded", self.role.label()])
            .inc_by(self.padded_tokens as u64);
        metrics
            .inference_duration
            .with_label_values(&role)
            .observe(self.inference.as_secs_f64());
        metrics
            .rescored_texts
            .with_label_values(&role)
            .inc_by(self.rescored as u64);
    }
}

/// A batch's inference failed (an error or a panic); each of its texts gets the error.
pub struct BatchFailed<'a> {
    pub role: Role,
    pub texts: usize,
    pub error: &'a str,
}

impl Event for BatchFailed<'_> {
    fn record(self, metrics: &Metrics) {
        tracing::error!(
            error = self.error,
            texts = self.texts,
            role = self.role.label(),
            "inference batch failed"
        );
        metrics
            .failed_batches
            .with_label_values(&[self.role.label()])
            .inc();
    }
}

/// A reload of the champion or the challenger ended: `swapped`, `unchanged`, `refused`,
/// `unavailable`, `panicked`. (Its log lines say why; they are written where the reason is.)
pub struct ReloadFinished<'a> {
    pub role: Role,
    pub outcome: &'a str,
}

impl Event for ReloadFinished<'_> {
    fn record(self, metrics: &Metrics) {
        let counter = match self.role {
            Role::Champion => &metrics.model_reloads,
            Role::Challenger => &metrics.shadow_reloads,
        };
        counter.with_label_values(&[self.outcome]).inc();
    }
}

/// An admin request was refused for its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRefused {
    /// A wrong token (401).
    WrongToken,
    /// Any token, while wrong ones are being limited (429).
    Limited,
}

impl Event for AdminRefused {
    fn record(self, metrics: &Metrics) {
        let outcome = match self {
            AdminRefused::WrongToken => "wrong",
            AdminRefused::Limited => "limited",
        };
        metrics
            .admin_auth_failures
            .with_label_values(&[outcome])
            .inc();
    }
}

/// What became of a text mirrored to the shadow challenger.
pub enum ShadowText<'a> {
    /// Both answered: their top labels and how far apart their scores for the champion's label
    /// are.
    Compared {
        champion: &'a str,
        challenger: &'a str,
        difference: f32,
    },
    /// Its queue was full, or the text expired in it.
    Dropped,
    /// The challenger's inference failed.
    Failed,
}

impl Event for ShadowText<'_> {
    fn record(self, metrics: &Metrics) {
        let outcome = match self {
            ShadowText::Compared {
                champion,
                challenger,
                difference,
            } => {
                metrics
                    .shadow_label_pairs
                    .with_label_values(&[champion, challenger])
                    .inc();
                metrics
                    .shadow_score_difference
                    .observe(f64::from(difference));
                if champion == challenger {
                    "agree"
                } else {
                    "disagree"
                }
            }
            ShadowText::Dropped => "dropped",
            ShadowText::Failed => "failed",
        };
        metrics.shadow_texts.with_label_values(&[outcome]).inc();
    }
}

/// The challenger answered a mirrored text, `elapsed` after it was mirrored.
pub struct ShadowAnswered {
    pub elapsed: Duration,
}

impl Event for ShadowAnswered {
    fn record(self, metrics: &Metrics) {
        metrics.shadow_duration.observe(self.elapsed.as_secs_f64());
    }
}

/// A stream message moved on: `consumed`, `produced` (a result), `dead_lettered`,
/// `undeliverable` (the consumer stops).
pub struct StreamMessage<'a> {
    pub outcome: &'a str,
}

impl Event for StreamMessage<'_> {
    fn record(self, metrics: &Metrics) {
        metrics
            .stream_messages
            .with_label_values(&[self.outcome])
            .inc();
    }
}

/// A stream message was classified, in a batch of `batch_size` texts.
pub struct StreamClassified {
    pub batch_size: usize,
}

impl Event for StreamClassified {
    fn record(self, metrics: &Metrics) {
        metrics.stream_batch_size.observe(self.batch_size as f64);
    }
}

/// A stream message's classification failed and will be tried again: `overloaded`, `inference`,
/// `other`.
pub struct StreamRetried<'a> {
    pub reason: &'a str,
}

impl Event for StreamRetried<'_> {
    fn record(self, metrics: &Metrics) {
        metrics
            .stream_retries
            .with_label_values(&[self.reason])
            .inc();
    }
}

/// The stream consumer paused its partitions for backpressure, or resumed them.
pub struct StreamPaused {
    pub paused: bool,
}

impl Event for StreamPaused {
    fn record(self, metrics: &Metrics) {
        metrics.stream_paused.set(i64::from(self.paused));
    }
}

/// This replica was given an input partition by its consumer group, or lost it.
pub struct PartitionOwned {
    pub partition: i32,
    pub owned: bool,
}

impl Event for PartitionOwned {
    fn record(self, metrics: &Metrics) {
        metrics
            .stream_partition_assigned
            .with_label_values(&[&self.partition.to_string()])
            .set(i64::from(self.owned));
    }
}

/// A partition's high watermark minus the offset this replica will commit next.
pub struct CommitLag {
    pub partition: i32,
    pub messages: i64,
}

impl Event for CommitLag {
    fn record(self, metrics: &Metrics) {
        metrics
            .stream_commit_lag
            .with_label_values(&[&self.partition.to_string()])
            .set(self.messages);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipelines_report_side_by_side_by_role() {
        let metrics = Metrics::new();
        for (role, texts) in [(Role::Champion, 8), (Role::Challenger, 3)] {
            metrics.emit(BatchRan {
                role,
                texts,
                rescored: 0,
                real_tokens: 10 * texts,
                padded_tokens: 16 * texts,
                queue_waits: std::iter::repeat_n(Duration::from_millis(1), texts),
                inference: Duration::from_millis(5),
            });
            metrics.emit(QueueChanged { role, depth: texts });
        }
        let text = metrics.render();
        for sample in [
            "newscls_batch_size_sum{role=\"champion\"} 8",
            "newscls_batch_size_sum{role=\"challenger\"} 3",
            "newscls_queue_wait_seconds_count{role=\"champion\"} 8",
            "newscls_tokens_total{kind=\"padded\",role=\"challenger\"} 48",
            "newscls_queue_depth{role=\"challenger\"} 3",
        ] {
            assert!(text.contains(sample), "{sample} missing from:\n{text}");
        }
    }

    #[test]
    fn the_in_flight_guard_counts_until_dropped() {
        let metrics = Metrics::new();
        let first = metrics.request_started(Door::Grpc);
        let second = metrics.request_started(Door::Grpc);
        assert!(metrics
            .render()
            .contains("newscls_grpc_requests_in_flight 2"));
        drop((first, second));
        assert!(metrics
            .render()
            .contains("newscls_grpc_requests_in_flight 0"));
    }

    #[test]
    fn nothing_dropped_writes_no_series() {
        let metrics = Metrics::new();
        metrics.emit(TextsDropped {
            role: Role::Champion,
            reason: DropReason::Deadline,
            texts: 0,
        });
        assert!(!metrics.render().contains("newscls_queue_dropped_total"));
    }
}
