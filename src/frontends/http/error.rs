//! The one place where errors become HTTP.
//!
//! Every failure a client can see is an [`ApiError`]. Other areas keep their own error types
//! (the pipeline's `ClassifyError`, actix's JSON errors) and convert into it here, and its
//! `ResponseError` impl below is the only mapping to status codes. Every body has the same
//! shape, `{"error": ..., "error_type": ...}` (the shape Hugging Face text-embeddings-inference
//! uses, so its clients parse ours), with `error_type` one of [`ErrorType`].

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::infra::excerpt::bounded_message;
use crate::pipeline::classify::ClassifyError;

/// What went wrong with a request, in terms the caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all, or not UTF-8.
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// Well-formed JSON, a header or query input that breaks the request contract.
    #[error("{0}")]
    Validation(String),
    #[error("request body is larger than the {limit}-byte limit")]
    PayloadTooLarge { limit: usize },
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("no route for {0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("method not allowed: {request}; this path accepts {allow}")]
    MethodNotAllowed {
        request: String,
        allow: &'static str,
    },
    /// Admission refused. Retry after the hinted delay.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after: Duration,
    },
    /// Starting, draining, or inference is down.
    #[error("{0}")]
    NotReady(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Inference(String),
    /// The client closed the connection before the answer was ready; nobody reads this.
    #[error("client closed the connection")]
    ClientClosed,
}

impl From<ClassifyError> for ApiError {
    fn from(error: ClassifyError) -> Self {
        let message = error.to_string();
        match error {
            ClassifyError::Invalid(_) | ClassifyError::Tokenize(_) => ApiError::Validation(message),
            ClassifyError::Overloaded { retry_after, .. } => ApiError::Overloaded {
                message,
                retry_after,
            },
            ClassifyError::NotReady(_) => ApiError::NotReady(message),
            ClassifyError::Timeout(_) => ApiError::Timeout(message),
            ClassifyError::Inference(_) => ApiError::Inference(message),
            ClassifyError::Cancelled => ApiError::ClientClosed,
            ClassifyError::NoChallenger => ApiError::NotFound(
                "a challenger model: none is loaded (set shadow.uri to load one)".into(),
            ),
        }
    }
}

/// The stable, machine-readable kind of an error (`error_type` in every error body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// 400: the body is not JSON.
    MalformedJson,
    /// 422: valid JSON (or a header) that breaks the request contract.
    Validation,
    /// 413: the body is over `limits.max_body_bytes`.
    PayloadTooLarge,
    /// 415: the Content-Type is not JSON.
    UnsupportedMediaType,
    /// 404: no such route.
    NotFound,
    /// 401: an admin route without its bearer token.
    Unauthorized,
    /// 405: the route does not serve this method (see `Allow`).
    MethodNotAllowed,
    /// 429: the queue is full or cannot finish in time (see `Retry-After`).
    Overloaded,
    /// 503: starting, draining, or inference is down (see `Retry-After`).
    NotReady,
    /// 504: not finished within the request's timeout.
    Timeout,
    /// 500: the model failed on this batch.
    Inference,
    /// 499 (logs only): the client left before the answer.
    ClientClosed,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
#[schema(example = json!({"error": "no text was sent; send at least one", "error_type": "validation"}))]
pub struct ErrorBody {
    /// A human-readable message that says what to fix.
    pub error: String,
    /// A stable machine-readable code.
    pub error_type: ErrorType,
}

impl ApiError {
    pub fn error_type(&self) -> ErrorType {
        match self {
            ApiError::MalformedJson(_) => ErrorType::MalformedJson,
            ApiError::Validation(_) => ErrorType::Validation,
            ApiError::PayloadTooLarge { .. } => ErrorType::PayloadTooLarge,
            ApiError::UnsupportedMediaType => ErrorType::UnsupportedMediaType,
            ApiError::NotFound(_) => ErrorType::NotFound,
            ApiError::Unauthorized(_) => ErrorType::Unauthorized,
            ApiError::MethodNotAllowed { .. } => ErrorType::MethodNotAllowed,
            ApiError::Overloaded { .. } => ErrorType::Overloaded,
            ApiError::NotReady(_) => ErrorType::NotReady,
            ApiError::Timeout(_) => ErrorType::Timeout,
            ApiError::Inference(_) => ErrorType::Inference,
            ApiError::ClientClosed => ErrorType::ClientClosed,
        }
    }
}

impl ErrorType {
    /// The error table: each kind's HTTP status and what it tells a caller. The only mapping
    /// from kinds to statuses; every route's documented error responses are written from it
    /// ([`document_errors`]).
    pub fn entry(self) -> (StatusCode, &'static str) {
        let (status, meaning) = match self {
            ErrorType::MalformedJson => (400, "The body is not valid JSON"),
            ErrorType::Validation => (
                422,
                "Invalid input: empty, too many texts, too long, wrong types or values",
            ),
            ErrorType::PayloadTooLarge => (413, "The body is larger than `limits.max_body_bytes`"),
            ErrorType::UnsupportedMediaType => (415, "The Content-Type is not application/json"),
            ErrorType::NotFound => (404, "No such route or model"),
            ErrorType::Unauthorized => (401, "Missing or wrong bearer token"),
            ErrorType::MethodNotAllowed => {
                (405, "The route does not serve this method (see `Allow`)")
            }
            ErrorType::Overloaded => (429, "Overloaded: retry after the `Retry-After` seconds"),
            ErrorType::NotReady => (
                503,
                "Not ready: starting, draining, or inference is down (see `Retry-After`)",
            ),
            ErrorType::Timeout => (504, "Not finished within the request's timeout"),
            ErrorType::Inference => (500, "Inference failed"),
            // nginx's convention for "client closed request"; only logs and metrics see it.
            ErrorType::ClientClosed => (499, "The client closed the connection (logs only)"),
        };
        (
            StatusCode::from_u16(status).expect("a valid status code. This is a bug."),
            meaning,
        )
    }
}

/// Adds to a route's OpenAPI operation a response for each of `kinds`, from the error table,
/// with `body` (a schema name: `ErrorBody`, or `V2ErrorBody` on KServe routes) as content.
pub fn document_errors(
    operation: &mut utoipa::openapi::path::Operation,
    kinds: &[ErrorType],
    body: &str,
) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    for kind in kinds {
        let (status, meaning) = kind.entry();
        let response = ResponseBuilder::new()
            .description(meaning)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(body)))
                    .build(),
            )
            .build();
        operation
            .responses
            .responses
            .entry(status.as_u16().to_string())
            .or_insert(response.into());
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.error_type().entry().0
    }

    fn error_response(&self) -> HttpResponse {
        self.response_builder().json(ErrorBody {
            error: self.to_string(),
            error_type: self.error_type(),
        })
    }
}

impl ApiError {
    /// The status and the headers that go with it (`Retry-After`, `Allow`); the body is added
    /// by the caller, in its protocol's shape.
    fn response_builder(&self) -> actix_web::HttpResponseBuilder {
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
        if let ApiError::Unauthorized(_) = self {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        response
    }
}

/// An error on an Open Inference Protocol (KServe v2) route: the same status and headers as
/// the [`ApiError`] it wraps, in that protocol's body, `{"error": "..."}`.
#[derive(Debug)]
pub struct V2Error(pub ApiError);

/// The body of every KServe v2 error.
#[derive(Debug, Serialize, ToSchema)]
pub struct V2ErrorBody {
    pub error: String,
}

impl From<ApiError> for V2Error {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

/// The protocol's refusals over HTTP: a malformed request is 400, another model 404.
impl From<crate::frontends::v2::ProtocolError> for V2Error {
    fn from(error: crate::frontends::v2::ProtocolError) -> Self {
        use crate::frontends::v2::ProtocolError;
        Self(match error {
            ProtocolError::Invalid(message) => ApiError::MalformedJson(message),
            ProtocolError::NotFound(message) => ApiError::NotFound(message),
        })
    }
}

impl std::fmt::Display for V2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for V2Error {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        self.0.response_builder().json(V2ErrorBody {
            error: self.0.to_string(),
        })
    }
}

/// Routes actix's JSON extractor failures into [`ApiError`], so they get the same body.
/// (A function, not a `From` impl: the message needs the configured body limit.)
pub fn json_error(err: actix_web::error::JsonPayloadError, limit: usize) -> ApiError {
    use actix_web::error::JsonPayloadError as E;
    match err {
        E::Overflow { .. } | E::OverflowKnownLength { .. } => ApiError::PayloadTooLarge { limit },
        E::ContentType => ApiError::UnsupportedMediaType,
        // serde_json reports type errors (data) apart from syntax/EOF errors: the first is a
        // contract problem (422), the others mean the body is not JSON (400).
        E::Deserialize(e) if e.is_data() => ApiError::Validation(format!(
            "invalid request: {}",
            bounded_message(&e.to_string())
        )),
        E::Deserialize(e) => ApiError::MalformedJson(bounded_message(&e.to_string())),
        other => ApiError::MalformedJson(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pipeline_error_has_its_status() {
        let cases = [
            (ClassifyError::Invalid("x".into()), 422),
            (
                ClassifyError::Overloaded {
                    queued: 1,
                    retry_after: Duration::from_secs(3),
                },
                429,
            ),
            (ClassifyError::NotReady("starting"), 503),
            (ClassifyError::Timeout(1.0), 504),
            (ClassifyError::Inference("boom".into()), 500),
            (ClassifyError::Cancelled, 499),
        ];
        for (error, status) in cases {
            let message = error.to_string();
            let api = ApiError::from(error);
            assert_eq!(api.status_code().as_u16(), status, "{message}");
            assert_eq!(api.to_string(), message);
        }
    }

    #[test]
    fn overload_carries_retry_after() {
        let response = ApiError::from(ClassifyError::Overloaded {
            queued: 1,
            retry_after: Duration::from_secs(3),
        })
        .error_response();
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"3"[..])
        );
    }
}
