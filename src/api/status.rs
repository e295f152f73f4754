//! Operational endpoints: liveness, readiness, build/model info and Prometheus metrics.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::config::{BatchingConfig, LimitsConfig};
use crate::error::{ApiError, ErrorBody};
use crate::inference::onnx::ONNXRUNTIME_VERSION;

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
        (status = 200, description = "Ready for traffic", body = Health),
        (status = 503, description = "Not ready: starting, draining, or inference is down", body = ErrorBody)
    ))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.ensure_ready()?;
    Ok(HttpResponse::Ok().json(Health { status: "ready" }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelInfo {
    #[schema(example = "news-topic-e5-small")]
    pub name: String,
    #[schema(example = "2026.11.25")]
    pub version: String,
    pub labels: Vec<String>,
    /// Tokens per text, special tokens included; longer texts are truncated.
    pub max_length: usize,
    /// Execution provider in use: `cpu` or `cuda`.
    #[schema(example = "cpu")]
    pub provider: String,
    pub inference_workers: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Info {
    pub model: ModelInfo,
    #[schema(value_type = Object)]
    pub batching: BatchingConfig,
    #[schema(value_type = Object)]
    pub limits: LimitsConfig,
    /// Seconds a /predict request may take before 504.
    pub timeout_seconds: f64,
    #[schema(example = "0.1.0")]
    pub version: &'static str,
    #[schema(example = "1.31.1")]
    pub onnxruntime_version: &'static str,
}

/// Which model is served, how, and with which limits.
#[utoipa::path(get, path = "/info", tag = "operations", responses((status = 200, body = Info)))]
pub async fn info(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(Info {
        model: ModelInfo {
            name: state.model.name.clone(),
            version: state.model.version.clone(),
            labels: state.model.labels.clone(),
            max_length: state.tokenizer.max_length(),
            provider: state.provider.clone(),
            inference_workers: state.config.model.inference_workers,
        },
        batching: state.config.batching.clone(),
        limits: state.config.limits.clone(),
        timeout_seconds: state.config.server.timeout,
        version: env!("CARGO_PKG_VERSION"),
        onnxruntime_version: ONNXRUNTIME_VERSION,
    })
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
