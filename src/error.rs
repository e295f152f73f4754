//! Errors as types, and the one place where they become HTTP.
//!
//! Every failure a client can see is an [`ApiError`]; its `ResponseError` impl below is the only
//! mapping to status codes, and every body has the same shape, `{"error": ..., "error_type": ...}`
//! (the shape Hugging Face text-embeddings-inference uses, so its clients parse ours). actix's
//! own JSON and routing failures are routed into the same type. Startup failures are a separate
//! [`StartupError`]: they end the process with one clear line instead of an HTTP answer.

use std::path::PathBuf;
use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

/// What went wrong with a request, in terms the caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all, or not UTF-8.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// Well-formed JSON, or query input, that breaks the request contract.
    #[error("{0}")]
    Validation(String),
    #[error("request body is larger than the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("no route for {0}")]
    NotFound(String),
    #[error("method not allowed: {request}; this path accepts {allow}")]
    MethodNotAllowed {
        request: String,
        allow: &'static str,
    },
    /// Admission refused: the queue is full. Retry after the hinted delay.
    #[error("server is overloaded: {queued} texts already queued; retry later")]
    Overloaded {
        queued: usize,
        retry_after: Duration,
    },
    /// The model is still loading or the server is draining for shutdown.
    #[error("service is not ready: {0}")]
    NotReady(&'static str),
    #[error("request did not finish within the {0:.3}s timeout")]
    Timeout(f64),
    #[error("inference failed: {0}")]
    Inference(String),
    /// The client closed the connection before the answer was ready; nobody reads this.
    #[error("client closed the connection")]
    ClientClosed,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
#[schema(example = json!({"error": "`inputs` must not be empty", "error_type": "validation"}))]
pub struct ErrorBody {
    /// A human-readable message that says what to fix.
    pub error: String,
    /// A stable machine-readable code: `malformed_json`, `validation`, `payload_too_large`,
    /// `unsupported_media_type`, `not_found`, `method_not_allowed`, `overloaded`, `not_ready`, `timeout`, `inference`.
    pub error_type: String,
}

impl ApiError {
    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::Validation(_) => "validation",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Timeout(_) => "timeout",
            ApiError::Inference(_) => "inference",
            ApiError::ClientClosed => "client_closed",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Inference(_) => StatusCode::INTERNAL_SERVER_ERROR,
            // nginx's convention for "client closed request"; only logs and metrics see it.
            ApiError::ClientClosed => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        let retry_after = match self {
            ApiError::Overloaded { retry_after, .. } => Some(retry_after.as_secs().max(1)),
            ApiError::NotReady(_) => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(seconds)));
        }
        if let ApiError::MethodNotAllowed { allow, .. } = self {
            response.insert_header((header::ALLOW, *allow));
        }
        response.json(ErrorBody {
            error: self.to_string(),
            error_type: self.error_type().to_string(),
        })
    }
}

/// Routes actix's JSON extractor failures into [`ApiError`], so they get the same body.
pub fn json_error(err: actix_web::error::JsonPayloadError, limit: usize) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    match err {
        E::Overflow { .. } | E::OverflowKnownLength { .. } => ApiError::PayloadTooLarge { limit },
        E::ContentType => ApiError::UnsupportedMediaType,
        // serde_json reports type errors (data) apart from syntax/EOF errors: the first is a
        // contract problem (422), the others mean the body is not JSON (400).
        E::Deserialize(e) if e.is_data() => ApiError::Validation(format!("invalid request: {e}")),
        E::Deserialize(e) => ApiError::MalformedJson(e.to_string()),
        other => ApiError::MalformedJson(other.to_string()),
    }
}

/// Why the service could not start. Printed as one line; the process exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("ONNX Runtime library {path}: {reason} (run `make setup`, or set model.onnxruntime_library / ORT_DYLIB_PATH)")]
    OnnxRuntime { path: PathBuf, reason: String },
    #[error("model file {path}: {reason}")]
    ModelFile { path: PathBuf, reason: String },
    #[error("model {dir} is inconsistent: {reason}")]
    ModelMismatch { dir: PathBuf, reason: String },
    #[error("warm-up inference failed: {0}")]
    Warmup(String),
    #[error("cannot serve on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Server(#[from] std::io::Error),
}
