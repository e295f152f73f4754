//! Prometheus metrics: one struct, created once and passed explicitly.
//!
//! All names share the `newscls_` prefix and carry their unit. Tokenization, queue wait and
//! inference are timed separately so an operator can see where latency goes; batch size and
//! padded tokens per batch show whether batching works; real vs padded token counters give the
//! padding waste. The pipeline's series carry a `role` label: `champion` (the served model) or
//! `challenger` (the shadow).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every series, registered once. The fields are private to `infra`: the rest of the service
/// writes them only through [`crate::infra::events`], so a figure and its log line are written
/// in one place.
pub struct Metrics {
    registry: Registry,
    pub(super) http_requests: IntCounterVec,
    pub(super) http_duration: HistogramVec,
    pub(super) http_in_flight: IntGauge,
    pub(super) grpc_requests: IntCounterVec,
    pub(super) grpc_duration: HistogramVec,
    pub(super) grpc_in_flight: IntGauge,
    // The pipeline's series carry `role`: the champion's and the shadow challenger's queues and
    // workers report side by side.
    pub(super) queue_depth: IntGaugeVec,
    pub(super) queue_wait: HistogramVec,
    pub(super) tokenize_duration: HistogramVec,
    pub(super) inference_duration: HistogramVec,
    pub(super) batch_size: HistogramVec,
    pub(super) batch_tokens: HistogramVec,
    pub(super) tokens: IntCounterVec,
    pub(super) rescored_texts: IntCounterVec,
    pub(super) dropped_texts: IntCounterVec,
    pub(super) failed_batches: IntCounterVec,
    pub(super) admin_auth_failures: IntCounterVec,
    pub(super) model_reloads: IntCounterVec,
    pub(super) shadow_reloads: IntCounterVec,
    pub(super) stream_messages: IntCounterVec,
    pub(super) stream_retries: IntCounterVec,
    pub(super) stream_commit_lag: IntGaugeVec,
    pub(super) stream_partition_assigned: IntGaugeVec,
    pub(super) stream_paused: IntGauge,
    pub(super) stream_batch_size: Histogram,
    pub(super) shadow_texts: IntCounterVec,
    pub(super) shadow_label_pairs: IntCounterVec,
    pub(super) shadow_score_difference: Histogram,
    pub(super) shadow_duration: Histogram,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Registers each series as it is made; a name used twice is a bug.
struct Registrar(Registry);

impl Registrar {
    fn add<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> M {
        self.0
            .register(Box::new(metric.clone()))
            .expect("metric names are unique. This is a bug.");
        metric
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid gauge"))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge"))
    }

    fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(Histogram::with_opts(opts).expect("valid histogram"))
    }

    fn histograms(&self, name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
        self.add(HistogramVec::new(opts, labels).expect("valid histogram"))
    }
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registrar(
            Registry::new_custom(Some("newscls".into()), None)
                .expect("static metric prefix is valid"),
        );
        r.add(crate::infra::telemetry::SPANS_DROPPED.clone());
        let role = &["role"];
        let token_buckets = prometheus::exponential_buckets(64.0, 2.0, 10).expect("valid buckets");
        Self {
            http_requests: r.counters(
                "http_requests_total",
                "HTTP requests by route and status",
                &["route", "status"],
            ),
            http_duration: r.histograms(
                "http_request_duration_seconds",
                "HTTP request latency by route",
                LATENCY_BUCKETS,
                &["route"],
            ),
            http_in_flight: r.gauge("http_requests_in_flight", "HTTP requests being handled"),
            grpc_requests: r.counters(
                "grpc_requests_total",
                "gRPC requests by method and status code",
                &["method", "code"],
            ),
            grpc_duration: r.histograms(
                "grpc_request_duration_seconds",
                "gRPC request latency by method",
                LATENCY_BUCKETS,
                &["method"],
            ),
            grpc_in_flight: r.gauge("grpc_requests_in_flight", "gRPC requests being handled"),
            queue_depth: r.gauges(
                "queue_depth",
                "Texts waiting in the batching queue, by role (champion, challenger)",
                role,
            ),
            queue_wait: r.histograms(
                "queue_wait_seconds",
                "Time a text waits in the queue",
                LATENCY_BUCKETS,
                role,
            ),
            tokenize_duration: r.histograms(
                "tokenize_duration_seconds",
                "Tokenization time per request",
                LATENCY_BUCKETS,
                role,
            ),
            inference_duration: r.histograms(
                "inference_duration_seconds",
                "Model run time per batch",
                LATENCY_BUCKETS,
                role,
            ),
            batch_size: r.histograms(
                "batch_size",
                "Texts per inference batch",
                BATCH_BUCKETS,
                role,
            ),
            batch_tokens: r.histograms(
                "batch_tokens",
                "Token slots per batch, padding included",
                &token_buckets,
                role,
            ),
            tokens: r.counters(
                "tokens_total",
                "Token slots computed, by kind (real or padded)",
                &["kind", "role"],
            ),
            rescored_texts: r.counters(
                "rescored_texts_total",
                "Texts run again on the precise variant after a close call on the fast one \
                 (model.rescore)",
                &["role"],
            ),
            dropped_texts: r.counters(
                "queue_dropped_total",
                "Texts dropped from the queue before inference, by reason",
                &["reason", "role"],
            ),
            failed_batches: r.counters(
                "inference_failed_batches_total",
                "Batches whose inference failed",
                role,
            ),
            admin_auth_failures: r.counters(
                "admin_auth_failures_total",
                "Admin requests refused for their token: wrong (401) or while failed attempts are limited (429)",
                &["outcome"],
            ),
            model_reloads: r.counters(
                "model_reloads_total",
                "Model reloads by outcome (swapped, unchanged on request, refused, unavailable, panicked)",
                &["outcome"],
            ),
            shadow_reloads: r.counters(
                "shadow_reloads_total",
                "Challenger reloads by outcome (as newscls_model_reloads_total)",
                &["outcome"],
            ),
            stream_messages: r.counters(
                "stream_messages_total",
                "Stream messages by outcome: consumed, produced (a result), dead_lettered, undeliverable (the consumer stopped)",
                &["outcome"],
            ),
            stream_retries: r.counters(
                "stream_retries_total",
                "Stream messages classified again, by why the attempt failed (overloaded, inference, other)",
                &["reason"],
            ),
            stream_commit_lag: r.gauges(
                "stream_commit_lag_messages",
                "Per input partition: high watermark minus the offset to be committed",
                &["partition"],
            ),
            stream_partition_assigned: r.gauges(
                "stream_partition_assigned",
                "Per input partition: 1 while this replica owns it in its consumer group, 0 once revoked",
                &["partition"],
            ),
            stream_paused: r.gauge(
                "stream_paused",
                "1 while the stream consumer has paused its partitions for backpressure",
            ),
            stream_batch_size: r.histogram(
                "stream_batch_size",
                "Per stream message: texts in the inference batch it was classified in",
                BATCH_BUCKETS,
            ),
            shadow_texts: r.counters(
                "shadow_texts_total",
                "Texts mirrored to the shadow challenger, by outcome: agree, disagree (top labels), dropped (its queue was full or the text expired), failed",
                &["outcome"],
            ),
            shadow_label_pairs: r.counters(
                "shadow_label_pairs_total",
                "Mirrored texts by the champion's and the challenger's top label: the live confusion matrix",
                &["champion", "challenger"],
            ),
            shadow_score_difference: r.histogram(
                "shadow_score_difference",
                "Per mirrored text: |champion's score - challenger's score| for the champion's top label",
                &[0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0],
            ),
            shadow_duration: r.histogram(
                "shadow_duration_seconds",
                "Per mirrored text: from mirroring to the challenger's answer (its queue and inference)",
                LATENCY_BUCKETS,
            ),
            registry: r.0,
        }
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("encoding metrics into memory cannot fail. This is a bug.");
        String::from_utf8(buffer).expect("the Prometheus text format is UTF-8. This is a bug.")
    }

    /// One series' value as scraped, e.g. `newscls_queue_depth{role="champion"}`; 0 when it has
    /// no sample yet.
    pub fn sample(&self, series: &str) -> f64 {
        self.render()
            .lines()
            .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .filter_map(|value| value.trim().parse::<f64>().ok())
            .sum()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
