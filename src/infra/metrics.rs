//! Prometheus metrics: one struct, created once and passed explicitly.
//!
//! All names share the `newscls_` prefix and carry their unit. Tokenization, queue wait and
//! inference are timed separately so an operator can see where latency goes; batch size and
//! padded tokens per batch show whether batching works; real vs padded token counters give the
//! padding waste.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub grpc_requests: IntCounterVec,
    pub grpc_duration: HistogramVec,
    pub http_duration: HistogramVec,
    pub inflight: IntGauge,
    pub queue_depth: IntGauge,
    pub queue_wait: Histogram,
    pub tokenize_duration: Histogram,
    pub inference_duration: Histogram,
    pub batch_size: Histogram,
    pub batch_tokens: Histogram,
    pub tokens: IntCounterVec,
    pub dropped_jobs: IntCounterVec,
    pub failed_batches: IntCounter,
    pub admin_auth_failures: IntCounterVec,
    pub model_reloads: IntCounterVec,
    pub stream_messages: IntCounterVec,
    pub stream_retries: IntCounterVec,
    pub stream_commit_lag: prometheus::IntGaugeVec,
    pub stream_partition_assigned: prometheus::IntGaugeVec,
    pub stream_paused: IntGauge,
    pub stream_batch_size: Histogram,
    pub shadow_texts: IntCounterVec,
    pub shadow_label_pairs: IntCounterVec,
    pub shadow_score_difference: Histogram,
    pub shadow_duration: Histogram,
    pub shadow_reloads: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("newscls".into()), None)
            .expect("static metric prefix is valid");
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid histogram");
            registry
                .register(Box::new(h.clone()))
                .expect("metric names are unique. This is a bug.");
            h
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            registry
                .register(Box::new(c.clone()))
                .expect("metric names are unique. This is a bug.");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid gauge");
            registry
                .register(Box::new(g.clone()))
                .expect("metric names are unique. This is a bug.");
            g
        };
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid histogram");
        registry
            .register(Box::new(http_duration.clone()))
            .expect("metric names are unique. This is a bug.");
        let grpc_duration = HistogramVec::new(
            HistogramOpts::new(
                "grpc_request_duration_seconds",
                "gRPC request latency by method",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method"],
        )
        .expect("valid histogram");
        registry
            .register(Box::new(grpc_duration.clone()))
            .expect("metric names are unique. This is a bug.");
        let failed_batches = IntCounter::new(
            "inference_failed_batches_total",
            "Batches whose inference failed",
        )
        .expect("valid counter");
        registry
            .register(Box::new(failed_batches.clone()))
            .expect("metric names are unique. This is a bug.");

        registry
            .register(Box::new(crate::infra::telemetry::SPANS_DROPPED.clone()))
            .expect("metric names are unique. This is a bug.");

        Self {
            http_requests: counter_vec(
                "http_requests_total",
                "HTTP requests by route and status",
                &["route", "status"],
            ),
            http_duration,
            grpc_requests: counter_vec(
                "grpc_requests_total",
                "gRPC requests by method and status code",
                &["method", "code"],
            ),
            grpc_duration,
            inflight: gauge("http_requests_in_flight", "HTTP requests being handled"),
            queue_depth: gauge("queue_depth", "Texts waiting in the batching queue"),
            queue_wait: histogram(
                "queue_wait_seconds",
                "Time a text waits in the queue",
                LATENCY_BUCKETS.to_vec(),
            ),
            tokenize_duration: histogram(
                "tokenize_duration_seconds",
                "Tokenization time per request",
                LATENCY_BUCKETS.to_vec(),
            ),
            inference_duration: histogram(
                "inference_duration_seconds",
                "Model run time per batch",
                LATENCY_BUCKETS.to_vec(),
            ),
            batch_size: histogram(
                "batch_size",
                "Texts per inference batch",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            ),
            batch_tokens: histogram(
                "batch_tokens",
                "Token slots per batch, padding included",
                prometheus::exponential_buckets(64.0, 2.0, 10).expect("valid buckets"),
            ),
            tokens: counter_vec(
                "tokens_total",
                "Token slots computed, by kind (real or padded)",
                &["kind"],
            ),
            dropped_jobs: counter_vec(
                "queue_dropped_total",
                "Texts dropped from the queue before inference, by reason",
                &["reason"],
            ),
            failed_batches,
            stream_messages: counter_vec(
                "stream_messages_total",
                "Stream messages by outcome: consumed, produced (a result), dead_lettered, undeliverable (the consumer stopped)",
                &["outcome"],
            ),
            stream_partition_assigned: {
                let g = prometheus::IntGaugeVec::new(
                    Opts::new(
                        "stream_partition_assigned",
                        "Per input partition: 1 while this replica owns it in its consumer group, 0 once revoked",
                    ),
                    &["partition"],
                )
                .expect("valid gauge");
                registry
                    .register(Box::new(g.clone()))
                    .expect("metric names are unique. This is a bug.");
                g
            },
            stream_commit_lag: {
                let g = prometheus::IntGaugeVec::new(
                    Opts::new(
                        "stream_commit_lag_messages",
                        "Per input partition: high watermark minus the offset to be committed",
                    ),
                    &["partition"],
                )
                .expect("valid gauge");
                registry
                    .register(Box::new(g.clone()))
                    .expect("metric names are unique. This is a bug.");
                g
            },
            stream_paused: gauge(
                "stream_paused",
                "1 while the stream consumer has paused its partitions for backpressure",
            ),
            stream_retries: counter_vec(
                "stream_retries_total",
                "Stream messages classified again, by why the attempt failed (overloaded, inference, other)",
                &["reason"],
            ),
            stream_batch_size: histogram(
                "stream_batch_size",
                "Per stream message: texts in the inference batch it was classified in",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            ),
            model_reloads: counter_vec(
                "model_reloads_total",
                "Model reloads by outcome (swapped, unchanged on request, refused, unavailable, panicked)",
                &["outcome"],
            ),
            shadow_texts: counter_vec(
                "shadow_texts_total",
                "Texts mirrored to the shadow challenger, by outcome: agree, disagree (top labels), dropped (its queue was full or the text expired), failed",
                &["outcome"],
            ),
            shadow_label_pairs: counter_vec(
                "shadow_label_pairs_total",
                "Mirrored texts by the champion's and the challenger's top label: the live confusion matrix",
                &["champion", "challenger"],
            ),
            shadow_score_difference: histogram(
                "shadow_score_difference",
                "Per mirrored text: |champion's score - challenger's score| for the champion's top label",
                vec![0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0],
            ),
            shadow_duration: histogram(
                "shadow_duration_seconds",
                "Per mirrored text: from mirroring to the challenger's answer (its queue and inference)",
                LATENCY_BUCKETS.to_vec(),
            ),
            admin_auth_failures: counter_vec(
                "admin_auth_failures_total",
                "Admin requests refused for their token: wrong (401) or while failed attempts are limited (429)",
                &["outcome"],
            ),
            shadow_reloads: counter_vec(
                "shadow_reloads_total",
                "Challenger reloads by outcome (as newscls_model_reloads_total)",
                &["outcome"],
            ),
            registry,
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
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
