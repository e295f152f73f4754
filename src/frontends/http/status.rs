//! Operational endpoints: liveness, readiness, build/model info and Prometheus metrics.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::ApiState;
use crate::infra::config::{BatchingConfig, LimitsConfig};
use crate::infra::device::CpuKernels;
use crate::infra::events::AdminRefused;
use crate::lifecycle::reload::{Busy, Outcome};
use crate::pipeline::batching::BatchRule;
use crate::pipeline::inference::graph_capture::GraphCounts;
use crate::pipeline::model::Head;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// The process is up. Restart it only when this fails.
#[utoipa::path(get, path = "/livez", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// The model is loaded and warmed up, inference workers run, and the server is not draining.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready for traffic", body = Health)
    ))]
pub async fn readyz(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    state.classifier.readiness()?;
    if let Some(problem) = state.other_doors.iter().find_map(|door| door.problem()) {
        return Err(ApiError::NotReady(format!(
            "service is not ready: {problem}"
        )));
    }
    Ok(HttpResponse::Ok().json(Health { status: "ready" }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelInfo {
    #[schema(example = "news-topic-e5-small")]
    pub name: String,
    #[schema(example = "2026.11.30")]
    pub version: String,
    pub labels: Vec<String>,
    /// What the head was trained for: `single_label_classification` (softmax, one label per
    /// text) or `multi_label_classification` (a sigmoid per label, every label over its
    /// threshold).
    #[schema(example = "single_label_classification")]
    pub problem_type: String,
    /// A multi-label model's thresholds, in `labels` order; null for a single-label model.
    pub label_thresholds: Option<Vec<f32>>,
    /// Tokens per text, special tokens included; longer texts are truncated.
    pub max_length: usize,
    /// The ONNX file in use, relative to the model directory.
    #[schema(example = "model_quantized.onnx")]
    pub file: String,
    /// Execution provider in use: `cpu` or `cuda`.
    #[schema(example = "cpu")]
    pub provider: String,
    /// False when the graph quantizes activations per batch, so that a text's scores depend on
    /// the other texts it happens to be batched with.
    pub batch_independent: bool,
    pub inference_workers: usize,
    /// How batch shapes are rounded up on this device, rows and width (1 and 1: exact shapes).
    pub shape_buckets: ShapeBucketsInfo,
    /// Whether the next batch is assembled while one runs (on a GPU).
    pub pipelined: bool,
    /// Captured CUDA graphs (`model.cuda_graphs`); null when off, and always on a CPU.
    pub cuda_graphs: Option<CudaGraphsInfo>,
    /// Close calls answered by a precise variant (`model.rescore`); null when not in force.
    pub rescore: Option<RescoreInfo>,
    /// Where the serving version came from: a directory, or a registry URI and its version.
    #[schema(example = "models:/news-topic@champion (version 3)")]
    pub source: String,
    /// When the serving version was loaded, in Unix seconds.
    pub loaded_at_unix: f64,
}

/// Re-scoring: texts whose top-two margin on the quantized variant is below `below_margin` are
/// run again on `file` and answered from there.
#[derive(Debug, Serialize, ToSchema)]
pub struct RescoreInfo {
    #[schema(example = "model_fp16.onnx")]
    pub file: String,
    pub below_margin: f32,
    /// Texts this version has answered since it was loaded, and how many were re-scored.
    pub texts: u64,
    pub rescored: u64,
}

/// CUDA graphs: one per batch shape, for batches of up to `max_rows` rows.
#[derive(Debug, Serialize, ToSchema)]
pub struct CudaGraphsInfo {
    pub max_rows: usize,
    /// Most graphs per inference worker.
    pub max_graphs: usize,
    #[serde(flatten)]
    pub counts: GraphCounts,
}

/// Multiples a batch's rows and width are rounded up to.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShapeBucketsInfo {
    pub rows: usize,
    pub width: usize,
}

/// How texts are batched. Its own type, not the config struct: renaming a config key must not
/// silently change the API.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchingInfo {
    pub max_batch_size: usize,
    pub max_batch_tokens: usize,
    /// A batch this large goes at once; below it, only when the device is ready for it.
    pub preferred_batch_size: usize,
    pub max_wait_ms: u64,
    pub max_queue_size: usize,
}

impl BatchingInfo {
    /// The settings in force: the limits depend on the device the model runs on.
    fn new(config: &BatchingConfig, rule: BatchRule) -> Self {
        Self {
            max_batch_size: rule.max_batch_size,
            max_batch_tokens: rule.max_batch_tokens,
            preferred_batch_size: rule.preferred_batch_size,
            max_wait_ms: config.max_wait_ms,
            max_queue_size: config.max_queue_size,
        }
    }
}

/// The request limits this server enforces.
#[derive(Debug, Serialize, ToSchema)]
pub struct LimitsInfo {
    pub max_body_bytes: usize,
    pub max_client_batch_size: usize,
    pub max_input_chars: usize,
}

impl From<&LimitsConfig> for LimitsInfo {
    fn from(config: &LimitsConfig) -> Self {
        Self {
            max_body_bytes: config.max_body_bytes,
            max_client_batch_size: config.max_client_batch_size,
            max_input_chars: config.max_input_chars,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Info {
    pub model: ModelInfo,
    pub batching: BatchingInfo,
    pub limits: LimitsInfo,
    /// Seconds a /predict request may take before 504.
    pub timeout_seconds: f64,
    #[schema(example = "0.1.0")]
    pub version: &'static str,
    /// The ONNX Runtime library actually loaded.
    #[schema(example = "1.31.1")]
    pub onnxruntime_version: String,
    /// The shadow challenger (`shadow.uri`); null when off.
    pub shadow: Option<super::shadow::ShadowInfo>,
    pub cpu: CpuKernels,
}

/// Which model is served, how, and with which limits.
#[utoipa::path(get, path = "/info", tag = "operations", responses((status = 200, body = Info)))]
pub async fn info(state: web::Data<ApiState>) -> HttpResponse {
    let model = state.classifier.serving();
    HttpResponse::Ok().json(Info {
        model: ModelInfo {
            name: model.spec.name.clone(),
            version: model.spec.version.clone(),
            labels: model.spec.labels.clone(),
            problem_type: model.spec.head.problem_type().to_string(),
            label_thresholds: match &model.spec.head {
                Head::SingleLabel => None,
                Head::MultiLabel { thresholds } => Some(thresholds.clone()),
            },
            max_length: model.tokenizer.max_length(),
            file: model.file.display().to_string(),
            provider: model.device.name().to_string(),
            batch_independent: model.batch_independent,
            inference_workers: model.inference_workers,
            shape_buckets: ShapeBucketsInfo {
                rows: model.device.shape_buckets().rows,
                width: model.device.shape_buckets().width,
            },
            pipelined: model.device.pipelined(),
            cuda_graphs: model.graphs.as_ref().and_then(|stats| {
                let limits = model.device.graph_limits()?;
                Some(CudaGraphsInfo {
                    max_rows: limits.max_rows,
                    max_graphs: limits.max_graphs,
                    counts: stats.counts(),
                })
            }),
            rescore: model.rescoring.as_ref().map(|r| RescoreInfo {
                file: r.spec.file.display().to_string(),
                below_margin: r.spec.below_margin,
                texts: r.stats.texts(),
                rescored: r.stats.rescored(),
            }),
            source: model.source.clone(),
            loaded_at_unix: model
                .loaded_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        },
        batching: BatchingInfo::new(&state.config.batching, model.batch_rule),
        limits: (&state.config.limits).into(),
        timeout_seconds: state.config.server.timeout,
        version: env!("CARGO_PKG_VERSION"),
        onnxruntime_version: model.runtime_version.clone(),
        shadow: state.classifier.shadow().map(|s| super::shadow::info(s)),
        cpu: CpuKernels::detect(),
    })
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(state: web::Data<ApiState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

/// Loads the model source's version now and swaps it in if it is new (a directory is always
/// reloaded). Off (404) unless `server.admin_token` is set; send it as a bearer token.
#[utoipa::path(post, path = "/admin/reload", tag = "operations",
    responses(
        (status = 200, description = "Swapped, or unchanged", body = Object,
            example = json!({"outcome": "swapped", "from": "2", "to": "3"})),
        (status = 409, description = "The new version was refused; the serving one stays", body = Object,
            example = json!({"outcome": "refused", "version": "4", "reason": "..."})),
        (status = 502, description = "The model source could not be reached or read; the serving version stays", body = Object,
            example = json!({"outcome": "unavailable", "reason": "..."})),
    ))]
pub async fn reload(
    state: web::Data<ApiState>,
    http: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let Some(token) = &state.config.server.admin_token else {
        return Err(ApiError::NotFound(
            "POST /admin/reload (set server.admin_token to enable it)".into(),
        ));
    };
    if let Some(retry_after) = state.admin_attempts.locked() {
        state.metrics.emit(AdminRefused::Limited);
        return Err(ApiError::Overloaded {
            message: "too many wrong admin tokens; try again later".into(),
            retry_after,
        });
    }
    let presented = http
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !presented.is_some_and(|presented| token.matches(presented)) {
        state.admin_attempts.failed();
        state.metrics.emit(AdminRefused::WrongToken);
        return Err(ApiError::Unauthorized(
            "POST /admin/reload needs the admin bearer token",
        ));
    }
    let outcome = state
        .reloader
        .reload_off_runtime(true)
        .await
        .map_err(|Busy| ApiError::Overloaded {
            message: "a model reload is already running; try again when it is done".into(),
            retry_after: std::time::Duration::from_secs(5),
        })?;
    let status = match outcome {
        Outcome::Refused { .. } => actix_web::http::StatusCode::CONFLICT,
        Outcome::Unavailable { .. } => actix_web::http::StatusCode::BAD_GATEWAY,
        _ => actix_web::http::StatusCode::OK,
    };
    Ok(HttpResponse::build(status).json(outcome))
}

/// Limits guessing of the admin token: after [`AdminAttempts::ALLOWED`] wrong tokens within
/// [`AdminAttempts::WINDOW`], every admin request gets 429 until the window ends, without its
/// token being checked (so the answer tells a guesser nothing). One limit for all callers: behind
/// a proxy or ingress the peer address names the proxy, not the guesser.
#[derive(Default)]
pub struct AdminAttempts {
    /// The start of the current window and the wrong tokens seen in it.
    window: std::sync::Mutex<Option<(std::time::Instant, u32)>>,
}

impl AdminAttempts {
    pub const ALLOWED: u32 = 5;
    pub const WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

    /// How long to wait, while attempts are limited.
    pub fn locked(&self) -> Option<std::time::Duration> {
        let window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let (started, failures) = (*window)?;
        let left = Self::WINDOW.checked_sub(started.elapsed())?;
        (failures >= Self::ALLOWED).then_some(left.max(std::time::Duration::from_secs(1)))
    }

    /// Counts a wrong token.
    pub fn failed(&self) {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *window {
            Some((started, failures)) if started.elapsed() < Self::WINDOW => *failures += 1,
            _ => *window = Some((std::time::Instant::now(), 1)),
        }
    }
}
