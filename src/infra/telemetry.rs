//! Logs, and OpenTelemetry traces over OTLP when configured the standard way.
//!
//! Logs go to stderr (text or JSON). Traces are on when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, as every OpenTelemetry SDK reads them, with
//! `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_SERVICE_NAME` honoured; they are exported as
//! OTLP/HTTP protobuf by a batch processor on its own thread, so exporting never blocks or fails
//! a request. A collector that is down costs the spans of the batches it refused, counted in
//! `newscls_trace_spans_dropped_total`, and nothing else.
//!
//! Spans: each HTTP request has a `request` span, a child of the caller's span when the request
//! carries a W3C `traceparent`; under it `tokenize`, `queue_wait` and `answer`. Each inference
//! batch is one `inference_batch` span, a child of its first request's span and linked to every
//! request it served, with batch size, padded tokens and provider as attributes.

use std::io::IsTerminal;
use std::sync::LazyLock;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::infra::config::{LogFormat, LoggingConfig};

/// Spans in export batches the collector did not take. Registered by `Metrics`.
pub static SPANS_DROPPED: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::IntCounter::new(
        "trace_spans_dropped_total",
        "Trace spans dropped because the OTLP collector did not accept them",
    )
    .expect("a valid counter. This is a bug.")
});

/// Colour codes only for a person at a terminal: a container engine, a log collector or a file
/// would keep them as raw escape sequences. `NO_COLOR` (any non-empty value, no-color.org)
/// turns them off there too.
fn colour_logs(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// Keeps the trace pipeline alive; flushes it when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            // Flushing may wait on the network: never on an async executor thread.
            let _ = std::thread::spawn(move || provider.shutdown()).join();
        }
    }
}

/// True when the standard OTLP environment variables ask for traces.
pub fn traces_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|key| std::env::var_os(key).is_some_and(|v| !v.is_empty()))
}

/// Installs the log subscriber, with the OpenTelemetry layer when traces are configured.
pub fn init(logging: &LoggingConfig) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_new(&logging.level)
        .map_err(|e| format!("logging.level {:?}: {e}", logging.level))?;
    let logs = match logging.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(colour_logs(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR"),
            ))
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let provider = if traces_configured() {
        use opentelemetry_otlp::WithHttpConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(otlp_http_client()?)
            .build()
            .map_err(|e| format!("OTLP trace exporter: {e}"))?;
        let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "newscls".into());
        Some(
            SdkTracerProvider::builder()
                .with_resource(Resource::builder().with_service_name(service).build())
                .with_batch_exporter(CountingExporter(exporter))
                .build(),
        )
    } else {
        None
    };
    let traces = provider.as_ref().map(|provider| {
        // Only this crate's spans: the HTTP client inside the exporter must not trace itself.
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("newscls"))
            .with_filter(EnvFilter::new("newscls=info"))
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init()
        .map_err(|e| format!("logging: {e}"))?;
    Ok(Telemetry { provider })
}

/// The exporter's HTTP client: TLS trusts the system roots plus the CA in
/// `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE` or `OTEL_EXPORTER_OTLP_CERTIFICATE` (the standard
/// variables), and a request gives up after `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or
/// `OTEL_EXPORTER_OTLP_TIMEOUT` milliseconds (10 s by default).
fn otlp_http_client() -> Result<reqwest::blocking::Client, String> {
    let tls = crate::infra::tls::TlsOptions::from_env(
        &[
            "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ],
        None,
    );
    let timeout = [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .find_map(|key| std::env::var(key).ok()?.parse::<u64>().ok())
    .map_or(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_millis,
    );
    crate::infra::tls::blocking_client(&tls, timeout)
        .map_err(|e| format!("OTLP trace exporter: {e}"))
}

/// Makes `span` a child of the caller's span named by a W3C `traceparent` header, if any.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let carrier =
        std::collections::HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

/// The trace id of `span` as 32 hex digits, when it is being traced.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The OTLP exporter, counting the spans of every batch it could not deliver.
#[derive(Debug)]
struct CountingExporter<E>(E);

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.0.export(batch).await;
        if result.is_err() {
            SPANS_DROPPED.inc_by(spans);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.0.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::colour_logs;

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(colour_logs(true, None));
        assert!(colour_logs(true, Some("".into())));
        assert!(!colour_logs(false, None));
        assert!(!colour_logs(true, Some("1".into())));
    }
}
