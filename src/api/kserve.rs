//! The Open Inference Protocol (KServe v2), as Triton, KServe and MLServer speak it over HTTP.
//!
//! Server and model metadata, liveness and readiness, and `infer` with one `BYTES` input,
//! `text`, and two outputs: `label` (`BYTES`, the top label per text) and `probabilities`
//! (`FP32`, `[texts, labels]` in the model's label order). Tensors travel as JSON; the binary
//! tensor extension is not offered (`/v2` lists no extensions) and a binary request is refused
//! with a message that says so. Errors take the protocol's `{"error": "..."}` form.

use actix_web::http::header::HeaderMap;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::connection::{disconnected, ClientSocket};
use super::error::{ApiError, V2Error};
use super::json::Object;
use super::predict::request_deadline;
use super::ApiState;
use crate::classify::ClassifyRequest;

const INPUT: &str = "text";
const LABEL: &str = "label";
const PROBABILITIES: &str = "probabilities";
/// The header that announces the binary tensor extension.
const BINARY_HEADER: &str = "inference-header-content-length";

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerMetadata {
    #[schema(example = "newscls")]
    pub name: &'static str,
    pub version: &'static str,
    /// Protocol extensions: none.
    pub extensions: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TensorMetadata {
    pub name: &'static str,
    pub datatype: &'static str,
    /// -1: any size.
    pub shape: Vec<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Liveness {
    pub live: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct InferRequest {
    pub id: Option<String>,
    /// Exactly one: `text`.
    #[serde(deserialize_with = "super::json::objects")]
    #[schema(min_items = 1, max_items = 1)]
    pub inputs: Vec<InputTensor>,
    #[serde(default, deserialize_with = "super::json::objects")]
    pub outputs: Vec<RequestedOutput>,
    #[schema(value_type = Object)]
    pub parameters: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct InputTensor {
    /// The model's one input.
    #[schema(example = "text", pattern = "^text$")]
    pub name: String,
    /// `[texts]` or `[texts, 1]`; its product must equal the number of strings in `data`.
    #[schema(min_items = 1, max_items = 2)]
    pub shape: Vec<i64>,
    #[schema(example = "BYTES", pattern = "^BYTES$")]
    pub datatype: String,
    /// The texts, as JSON strings, flat or one per row.
    #[schema(value_type = TensorTexts)]
    pub data: Value,
    #[schema(value_type = Object)]
    pub parameters: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct RequestedOutput {
    #[schema(pattern = "^(label|probabilities)$")]
    pub name: String,
    #[schema(value_type = Object)]
    pub parameters: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub outputs: Vec<OutputTensor>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OutputTensor {
    pub name: &'static str,
    pub datatype: &'static str,
    pub shape: Vec<usize>,
    /// Row-major: strings for `BYTES` (`label`), numbers for `FP32` (`probabilities`).
    #[schema(value_type = OutputData)]
    pub data: Value,
}

/// The texts of an input tensor: 1 to `limits.max_client_batch_size` strings, none blank, flat
/// (`["a", "b"]`) or one per row (`[["a"], ["b"]]`).
pub fn texts_schema(
    limits: &crate::config::LimitsConfig,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder};
    let text = || super::predict::text_schema(limits, "A text");
    OneOfBuilder::new()
        .item(
            ArrayBuilder::new()
                .items(text())
                .min_items(Some(1))
                .max_items(Some(limits.max_client_batch_size)),
        )
        .item(
            ArrayBuilder::new()
                .items(
                    ArrayBuilder::new()
                        .items(text())
                        .min_items(Some(1))
                        .max_items(Some(1)),
                )
                .min_items(Some(1))
                .max_items(Some(limits.max_client_batch_size)),
        )
        .into()
}

/// The schema of [`InputTensor::data`] (see [`texts_schema`]).
pub struct TensorTexts;

impl utoipa::PartialSchema for TensorTexts {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        texts_schema(&crate::config::LimitsConfig::default())
    }
}

impl ToSchema for TensorTexts {}

/// The schema of [`OutputTensor::data`]: strings or numbers.
pub struct OutputData;

impl utoipa::PartialSchema for OutputData {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)))
            .item(ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::Number)))
            .into()
    }
}

impl ToSchema for OutputData {}

/// Server metadata.
#[utoipa::path(get, path = "/v2", tag = "kserve-v2",
    responses((status = 200, body = ServerMetadata)))]
pub async fn server_metadata() -> HttpResponse {
    HttpResponse::Ok().json(ServerMetadata {
        name: "newscls",
        version: env!("CARGO_PKG_VERSION"),
        extensions: Vec::new(),
    })
}

/// Server liveness.
#[utoipa::path(get, path = "/v2/health/live", tag = "kserve-v2",
    responses((status = 200, body = Liveness)))]
pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(Liveness { live: true })
}

/// Server readiness: as `/readyz`.
#[utoipa::path(get, path = "/v2/health/ready", tag = "kserve-v2",
    responses((status = 200, body = Readiness)))]
pub async fn ready(state: web::Data<ApiState>) -> Result<HttpResponse, V2Error> {
    state.classifier.readiness().map_err(ApiError::from)?;
    Ok(HttpResponse::Ok().json(Readiness { ready: true }))
}

/// The served model's metadata.
#[utoipa::path(get, path = "/v2/models/{name}", tag = "kserve-v2",
    params(("name" = String, Path, description = "The served model's name")),
    responses((status = 200, body = ModelMetadata)))]
pub async fn model_metadata(
    state: web::Data<ApiState>,
    path: web::Path<ModelPath>,
) -> Result<HttpResponse, V2Error> {
    let model = state.classifier.serving();
    check_model(&model.spec.name, &model.spec.version, &path)?;
    let labels = model.labels.len() as i64;
    Ok(HttpResponse::Ok().json(ModelMetadata {
        name: model.spec.name.clone(),
        versions: vec![model.spec.version.clone()],
        platform: "onnxruntime_onnx",
        inputs: vec![TensorMetadata {
            name: INPUT,
            datatype: "BYTES",
            shape: vec![-1],
        }],
        outputs: vec![
            TensorMetadata {
                name: LABEL,
                datatype: "BYTES",
                shape: vec![-1],
            },
            TensorMetadata {
                name: PROBABILITIES,
                datatype: "FP32",
                shape: vec![-1, labels],
            },
        ],
    }))
}

/// The served model's readiness.
#[utoipa::path(get, path = "/v2/models/{name}/ready", tag = "kserve-v2",
    params(("name" = String, Path, description = "The served model's name")),
    responses((status = 200, body = Readiness)))]
pub async fn model_ready(
    state: web::Data<ApiState>,
    path: web::Path<ModelPath>,
) -> Result<HttpResponse, V2Error> {
    let model = state.classifier.serving();
    check_model(&model.spec.name, &model.spec.version, &path)?;
    state.classifier.readiness().map_err(ApiError::from)?;
    Ok(HttpResponse::Ok().json(Readiness { ready: true }))
}

/// Classify texts: a `BYTES` input `text`; outputs `label` and `probabilities`.
#[utoipa::path(post, path = "/v2/models/{name}/infer", tag = "kserve-v2",
    params(("name" = String, Path, description = "The served model's name")),
    request_body(content = InferRequest, example = json!({
        "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES",
                    "data": ["The striker scored twice.", "Shares fell 5% after the forecast cut."]}]
    })),
    responses(
        (status = 200, body = InferResponse),
    ))]
pub async fn infer(
    state: web::Data<ApiState>,
    http: HttpRequest,
    path: web::Path<ModelPath>,
    body: web::Bytes,
) -> Result<HttpResponse, V2Error> {
    let model = state.classifier.serving();
    check_model(&model.spec.name, &model.spec.version, &path)?;
    refuse_binary(http.headers())?;
    let Object(request): Object<InferRequest> = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("not a valid inference request: {e}")))?;
    let texts = input_texts(&request)?;
    let wanted = requested_outputs(&request)?;
    let classify =
        ClassifyRequest::new(texts, request_deadline(&http, state.config.server.timeout)?);
    let hung_up = disconnected(http.conn_data::<ClientSocket>());
    let classification = state
        .classifier
        .classify(classify, hung_up)
        .await
        .map_err(ApiError::from)?;
    let count = classification.texts.len();
    let mut outputs = Vec::new();
    if wanted.contains(&LABEL) {
        let labels: Vec<String> = classification
            .texts
            .iter()
            .map(|t| {
                t.ranked
                    .first()
                    .map(|s| s.label.clone())
                    .unwrap_or_default()
            })
            .collect();
        outputs.push(OutputTensor {
            name: LABEL,
            datatype: "BYTES",
            shape: vec![count],
            data: labels.into(),
        });
    }
    if wanted.contains(&PROBABILITIES) {
        let probabilities: Vec<f32> = classification
            .texts
            .iter()
            .flat_map(|t| t.scores.iter().copied())
            .collect();
        outputs.push(OutputTensor {
            name: PROBABILITIES,
            datatype: "FP32",
            shape: vec![count, classification.labels.len()],
            data: probabilities.into(),
        });
    }
    Ok(HttpResponse::Ok().json(InferResponse {
        model_name: classification.model.name,
        model_version: classification.model.version,
        id: request.id,
        outputs,
    }))
}

/// `/v2/models/{name}` and `/v2/models/{name}/versions/{version}`.
#[derive(Debug, Deserialize)]
pub struct ModelPath {
    name: String,
    version: Option<String>,
}

fn check_model(name: &str, version: &str, path: &ModelPath) -> Result<(), V2Error> {
    if path.name != name {
        return Err(ApiError::NotFound(format!(
            "model {:?}; this server serves {name:?}",
            path.name
        ))
        .into());
    }
    match &path.version {
        Some(v) if v != version => Err(ApiError::NotFound(format!(
            "version {v:?} of {name:?}; the served version is {version:?}"
        ))
        .into()),
        _ => Ok(()),
    }
}

fn bad(message: String) -> V2Error {
    ApiError::MalformedJson(message).into()
}

fn refuse_binary(headers: &HeaderMap) -> Result<(), V2Error> {
    if headers.contains_key(BINARY_HEADER) {
        return Err(bad(
            "the binary tensor data extension is not supported: send tensors as JSON \
             (tritonclient: set_data_from_numpy(..., binary_data=False))"
                .into(),
        ));
    }
    Ok(())
}

fn wants_binary(parameters: &Option<serde_json::Map<String, Value>>, key: &str) -> bool {
    parameters
        .as_ref()
        .and_then(|p| p.get(key))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// The texts of the one `BYTES` input, checked against its declared shape.
fn input_texts(request: &InferRequest) -> Result<Vec<String>, V2Error> {
    let [input] = request.inputs.as_slice() else {
        return Err(bad(format!(
            "expected exactly one input, {INPUT:?}; got {}",
            request.inputs.len()
        )));
    };
    if input.name != INPUT {
        return Err(bad(format!(
            "unknown input {:?}; the model's input is {INPUT:?}",
            input.name
        )));
    }
    if input.datatype != "BYTES" {
        return Err(bad(format!(
            "input {INPUT:?} must be BYTES, not {}",
            input.datatype
        )));
    }
    if wants_binary(&input.parameters, "binary_data_size") {
        return Err(bad(
            "binary input data is not supported: send strings as JSON".into(),
        ));
    }
    if !input.data.is_array() {
        return Err(bad(format!(
            "input {INPUT:?}'s data must be an array of strings"
        )));
    }
    let mut texts = Vec::new();
    flatten_strings(&input.data, &mut texts)?;
    // Checked: a shape such as [2^62, 4] must be refused, not wrap around to a small count.
    let declared = input.shape.iter().try_fold(1i64, |product, d| {
        if *d < 0 {
            None
        } else {
            product.checked_mul(*d)
        }
    });
    if declared != Some(texts.len() as i64) {
        return Err(bad(format!(
            "input {INPUT:?} has shape {:?} but {} strings",
            input.shape,
            texts.len()
        )));
    }
    Ok(texts)
}

/// Row-major data may come flat or nested; either way, strings only.
fn flatten_strings(data: &Value, out: &mut Vec<String>) -> Result<(), V2Error> {
    match data {
        Value::String(text) => out.push(text.clone()),
        Value::Array(items) => {
            for item in items {
                flatten_strings(item, out)?;
            }
        }
        other => {
            return Err(bad(format!(
                "input {INPUT:?} must hold strings, found {other}"
            )))
        }
    }
    Ok(())
}

/// The outputs asked for (all when none are named), as JSON only.
fn requested_outputs(request: &InferRequest) -> Result<Vec<&'static str>, V2Error> {
    if wants_binary(&request.parameters, "binary_data_output") {
        return Err(bad(
            "binary output data is not supported: ask for binary_data=false".into(),
        ));
    }
    if request.outputs.is_empty() {
        return Ok(vec![LABEL, PROBABILITIES]);
    }
    request
        .outputs
        .iter()
        .map(|output| {
            if wants_binary(&output.parameters, "binary_data") {
                return Err(bad(format!(
                    "output {:?} asks for binary data, which is not supported: use binary_data=False",
                    output.name
                )));
            }
            match output.name.as_str() {
                LABEL => Ok(LABEL),
                PROBABILITIES => Ok(PROBABILITIES),
                other => Err(bad(format!(
                    "unknown output {other:?}; the model's outputs are {LABEL:?} and {PROBABILITIES:?}"
                ))),
            }
        })
        .collect()
}
