//! The HTTP surface: routes, their OpenAPI description, and the request logger.
//!
//! Handlers only decode, call the [`Classifier`] and encode: [`predict`] (the model),
//! [`status`] (health, info, metrics) and [`demo`] (the page for planners). Errors become HTTP
//! in [`error`] only. Routes are registered in one place, [`routes`], and described in one
//! place, [`ApiDoc`], which feeds `/openapi.json` and the Swagger UI at `/docs`.

pub mod connection;
pub mod demo;
pub mod error;
pub mod json;
pub mod kserve;
pub mod predict;
pub mod server;
pub mod shadow;
pub mod status;
pub mod vllm;

use std::sync::Arc;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::frontends::Readiness;
use crate::infra::config::{Config, LimitsConfig};
use crate::infra::events::{Door, RequestCompleted};
use crate::infra::excerpt::excerpt;
use crate::infra::metrics::Metrics;
use crate::infra::telemetry;
use crate::lifecycle::reload::Reloader;
use crate::pipeline::classify::Classifier;
use error::{json_error, ApiError, ErrorBody, ErrorType};
use tracing::Instrument;

/// What every handler can reach, shared by all HTTP workers.
pub struct ApiState {
    pub classifier: Arc<Classifier>,
    /// Loads new model versions (`POST /admin/reload`).
    pub reloader: Arc<Reloader>,
    /// The other doors whose health `/readyz` reports (the Kafka consumer, in stream mode).
    pub other_doors: Vec<Arc<dyn Readiness>>,
    pub metrics: Arc<Metrics>,
    /// The effective configuration, for `/info` and per-request defaults.
    pub config: Config,
    /// Wrong admin tokens lately, to limit guessing.
    pub admin_attempts: status::AdminAttempts,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "newscls",
        description = "Classifies news articles (English and Korean) into topics with a fine-tuned transformer. \
                       Use **POST /predict** with \"Try it out\" to classify a text."
    ),
    paths(
        predict::predict,
        predict::predict_at_root,
        demo::page,
        vllm::classify,
        kserve::server_metadata,
        kserve::live,
        kserve::ready,
        kserve::model_metadata,
        kserve::model_ready,
        kserve::infer,
        status::livez,
        status::readyz,
        status::info,
        status::metrics,
        status::reload,
        shadow::report
    ),
    components(schemas(
        predict::PredictRequest,
        predict::PredictInputs,
        predict::Parameters,
        predict::FunctionToApply,
        predict::TruncationDirection,
        predict::PredictResponse,
        predict::LabelScore,
        predict::RequestedModel,
        shadow::ShadowReport,
        shadow::ShadowInfo,
        shadow::ChallengerInfo,
        shadow::LabelReport,
        shadow::LabelPair,
        shadow::TopLabel,
        shadow::DisagreementReport,
        status::Health,
        status::Info,
        status::ModelInfo,
        status::BatchingInfo,
        status::LimitsInfo,
        ErrorBody,
        ErrorType,
        vllm::ClassifyBody,
        vllm::ClassifyInput,
        vllm::ClassifyResponse,
        vllm::ClassifyData,
        vllm::Usage,
        kserve::ServerMetadata,
        kserve::TensorMetadata,
        kserve::ModelMetadata,
        kserve::Liveness,
        kserve::Readiness,
        kserve::InferRequest,
        kserve::InputTensor,
        kserve::RequestedOutput,
        kserve::InferResponse,
        kserve::OutputTensor,
        kserve::TensorTexts,
        kserve::OutputData,
        error::V2ErrorBody
    )),
    tags(
        (name = "classification", description = "The model: TEI / Hugging Face (`/predict`, `/`) and vLLM (`/classify`) shapes"),
        (name = "kserve-v2", description = "Open Inference Protocol (KServe v2, Triton, MLServer): JSON tensors"),
        (name = "operations", description = "Health, readiness, build info and metrics")
    )
)]
pub struct ApiDoc;

/// The errors each route can answer with, by kind; their statuses and meanings come from the
/// error table ([`ErrorType::entry`]). `(method, path, kinds)`.
const ROUTE_ERRORS: &[(&str, &str, &[ErrorType])] = {
    use ErrorType::*;
    const CLASSIFY: &[ErrorType] = &[
        MalformedJson,
        PayloadTooLarge,
        UnsupportedMediaType,
        // `x-model-version: challenger` without a challenger.
        NotFound,
        Validation,
        Overloaded,
        Inference,
        NotReady,
        Timeout,
    ];
    &[
        ("post", "/predict", CLASSIFY),
        ("post", "/", CLASSIFY),
        ("post", "/classify", CLASSIFY),
        (
            "post",
            "/v2/models/{name}/infer",
            &[
                MalformedJson,
                PayloadTooLarge,
                NotFound,
                Validation,
                Overloaded,
                Inference,
                NotReady,
                Timeout,
            ],
        ),
        ("get", "/v2/health/ready", &[NotReady]),
        ("get", "/v2/models/{name}", &[NotFound]),
        ("get", "/v2/models/{name}/ready", &[NotFound, NotReady]),
        ("get", "/readyz", &[NotReady]),
        ("get", "/shadow", &[NotFound]),
        (
            "post",
            "/admin/reload",
            &[Unauthorized, NotFound, Overloaded],
        ),
    ]
};

/// The OpenAPI document, with the request limits this server actually enforces, every route's
/// error responses from the error table, and `GET /` only where the demo page is served.
pub fn openapi(limits: &LimitsConfig, demo_page: bool) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    if !demo_page {
        if let Some(root) = doc.paths.paths.get_mut("/") {
            root.get = None;
        }
    }
    if let Some(components) = doc.components.as_mut() {
        components
            .schemas
            .insert("PredictInputs".into(), predict::inputs_schema(limits));
        components
            .schemas
            .insert("ClassifyInput".into(), vllm::input_schema(limits));
        components
            .schemas
            .insert("TensorTexts".into(), kserve::texts_schema(limits));
    }
    for (method, path, kinds) in ROUTE_ERRORS {
        let item = doc
            .paths
            .paths
            .get_mut(*path)
            .unwrap_or_else(|| panic!("{path} is not in the OpenAPI document. This is a bug."));
        let operation = match *method {
            "get" => item.get.as_mut(),
            _ => item.post.as_mut(),
        }
        .unwrap_or_else(|| panic!("{method} {path} is not documented. This is a bug."));
        // KServe v2 routes answer errors in their protocol's body.
        let body = if path.starts_with("/v2") {
            "V2ErrorBody"
        } else {
            "ErrorBody"
        };
        error::document_errors(operation, kinds, body);
    }
    doc
}

/// The document as served at `/openapi.json`: [`openapi`] plus what utoipa's types cannot
/// hold, the rules between `/predict`'s fields (`allOf` of `not` clauses); without
/// `/admin/reload` and `/shadow` where this listener does not serve them (`server.admin_port`).
pub fn openapi_json(limits: &LimitsConfig, demo_page: bool, admin: bool) -> serde_json::Value {
    let mut doc = serde_json::to_value(openapi(limits, demo_page))
        .expect("the OpenAPI document serializes. This is a bug.");
    doc["components"]["schemas"]["PredictRequest"]["allOf"] = predict::request_rules();
    // The JSON part of a binary request is part of the body: at most `limits.max_body_bytes`.
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            // `get_mut`, not indexing: `value["key"]` on a missing key would insert a null.
            let parameters = item
                .get_mut("post")
                .and_then(|post| post.get_mut("parameters"))
                .and_then(|parameters| parameters.as_array_mut());
            for parameter in parameters.into_iter().flatten() {
                let name = parameter["name"].as_str().unwrap_or("");
                if name.eq_ignore_ascii_case(kserve::BINARY_HEADER) {
                    parameter["schema"]["minimum"] = 0.into();
                    parameter["schema"]["maximum"] = limits.max_body_bytes.into();
                }
            }
        }
    }
    if !admin {
        if let Some(paths) = doc["paths"].as_object_mut() {
            paths.remove("/admin/reload");
            paths.remove("/shadow");
        }
    }
    doc
}

/// `POST /admin/reload` and `GET /shadow` (which shows excerpts of callers' texts), on the main
/// listener or, with `server.admin_port`, on their own.
pub fn admin_routes(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/admin/reload", "POST").post(status::reload))
        .service(resource("/shadow", "GET").get(shadow::report));
}

/// Registers every route (`/admin/reload` only when `admin` is true: otherwise it is served on
/// the admin listener). A known path with a method it does not serve gets 405.
pub fn routes(cfg: &mut web::ServiceConfig, limits: &LimitsConfig, demo_page: bool, admin: bool) {
    if admin {
        admin_routes(cfg);
    }
    let max_body_bytes = limits.max_body_bytes;
    // `POST /` is `/predict` (TEI and the Hugging Face Inference API serve their task there);
    // a browser's `GET /` gets the demo page.
    if demo_page {
        cfg.service(
            resource("/", "GET, POST")
                .get(demo::page)
                .post(predict::predict_at_root),
        );
    } else {
        cfg.service(resource("/", "POST").post(predict::predict_at_root));
    }
    cfg.app_data(
        web::JsonConfig::default()
            .limit(max_body_bytes)
            .error_handler(move |err, _req| json_error(err, max_body_bytes).into()),
    )
    // Raw bodies (the KServe v2 routes read them to answer in their own error form).
    .app_data(web::PayloadConfig::new(max_body_bytes))
    .service(resource("/predict", "POST").post(predict::predict))
    .service(resource("/classify", "POST").post(vllm::classify))
    .service(resource("/v2", "GET").get(kserve::server_metadata))
    .service(resource("/v2/health/live", "GET").get(kserve::live))
    .service(resource("/v2/health/ready", "GET").get(kserve::ready))
    .service(resource("/v2/models/{name}", "GET").get(kserve::model_metadata))
    .service(resource("/v2/models/{name}/versions/{version}", "GET").get(kserve::model_metadata))
    .service(resource("/v2/models/{name}/ready", "GET").get(kserve::model_ready))
    .service(resource("/v2/models/{name}/versions/{version}/ready", "GET").get(kserve::model_ready))
    .service(resource("/v2/models/{name}/infer", "POST").post(kserve::infer))
    .service(resource("/v2/models/{name}/versions/{version}/infer", "POST").post(kserve::infer))
    .service(resource("/livez", "GET").get(status::livez))
    .service(resource("/readyz", "GET").get(status::readyz))
    .service(resource("/info", "GET").get(status::info))
    .service(resource("/metrics", "GET").get(status::metrics))
    .service(web::redirect("/docs", "/docs/"))
    .service(
        SwaggerUi::new("/docs/{_:.*}").external_urls_from_iter_unchecked([(
            "/openapi.json",
            openapi_json(limits, demo_page, admin),
        )]),
    );
}

/// A route whose other methods get 405 with `Allow: <allow>`.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move |req: HttpRequest| async move {
        Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed {
            request: format!("{} {}", req.method(), excerpt(req.path())),
            allow,
        })
    }))
}

/// Any unknown path or method: a JSON 404, like every other error.
pub async fn not_found(req: HttpRequest) -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "{} {}",
        req.method(),
        excerpt(req.path())
    )))
}

/// Counts the request in flight, runs it in its span, and reports it ([`RequestCompleted`]).
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let Some(state) = req.app_data::<web::Data<ApiState>>().cloned() else {
        return next.call(req).await;
    };
    // The request's span, a child of the caller's when it sent a W3C traceparent.
    let span = tracing::info_span!("request", method = %req.method(), path = req.path());
    telemetry::continue_trace(
        &span,
        req.headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok()),
    );
    let trace_id = telemetry::trace_id(&span);
    let in_flight = state.metrics.request_started(Door::Http);
    let result = next.call(req).instrument(span).await;
    drop(in_flight);
    let response = result?;
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let timing = response
        .response()
        .extensions()
        .get::<predict::RequestStats>()
        .copied();
    state.metrics.emit(RequestCompleted {
        door: Door::Http,
        method: response.request().method().as_str(),
        path: response.request().path(),
        route: &route,
        status: response.status().as_str(),
        elapsed: started.elapsed(),
        texts: timing.map(|t| t.texts),
        batch_size: timing.map(|t| t.largest_batch),
        trace_id,
    });
    Ok(response)
}
