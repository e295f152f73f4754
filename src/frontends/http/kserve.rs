//! The Open Inference Protocol (KServe v2), as Triton, KServe and MLServer speak it over HTTP.
//!
//! Server and model metadata, liveness and readiness, and `infer` with one `BYTES` input,
//! `text`, and two outputs: `label` (`BYTES`, the top label per text) and `probabilities`
//! (`FP32`, `[texts, labels]` in the model's label order). Tensors travel as JSON, or in the
//! binary tensor data extension ([`crate::frontends::v2::binary`]), both ways, as
//! `tritonclient.http` sends and asks for them by default. Errors take the protocol's
//! `{"error": "..."}` form. The protocol itself (checks, output selection, the answer's tensors)
//! is [`crate::frontends::v2`]'s, shared with gRPC; this module is its HTTP transport.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::connection::{disconnected, ClientSocket};
use super::error::{ApiError, V2Error};
use super::json::Object;
use super::predict::request_deadline;
use super::ApiState;
use crate::frontends::v2::binary::{decode_strings, split_body, Tail};
use crate::frontends::v2::{self, Output, Selected, TensorData, INPUT};
use crate::infra::excerpt::{bounded_message, excerpt};
use crate::pipeline::classify::ClassifyRequest;

/// The header that announces the binary tensor extension: the JSON part's length.
pub const BINARY_HEADER: &str = "inference-header-content-length";

#[derive(Debug, Serialize, ToSchema)]
pub struct ServerMetadata {
    #[schema(example = "newscls")]
    pub name: &'static str,
    pub version: &'static str,
    /// Protocol extensions: `binary_tensor_data`.
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
    /// The texts, as JSON strings, flat or one per row; absent when `parameters.binary_data_size`
    /// says they follow the JSON in binary.
    #[serde(default)]
    #[schema(value_type = Option<TensorTexts>)]
    pub data: Option<Value>,
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
    /// Row-major: strings for `BYTES` (`label`), numbers for `FP32` (`probabilities`); absent
    /// when the output was asked for in binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<OutputData>)]
    pub data: Option<Value>,
    /// `binary_data_size` for a binary output.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
}

/// The texts of an input tensor: 1 to `limits.max_client_batch_size` strings, none blank, flat
/// (`["a", "b"]`) or one per row (`[["a"], ["b"]]`).
pub fn texts_schema(
    limits: &crate::infra::config::LimitsConfig,
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
        texts_schema(&crate::infra::config::LimitsConfig::default())
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
        name: v2::SERVER_NAME,
        version: env!("CARGO_PKG_VERSION"),
        extensions: vec![v2::BINARY_EXTENSION.to_string()],
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
    let (name, datatype, shape) = v2::input_metadata();
    Ok(HttpResponse::Ok().json(ModelMetadata {
        name: model.spec.name.clone(),
        versions: vec![model.spec.version.clone()],
        platform: v2::PLATFORM,
        inputs: vec![TensorMetadata {
            name,
            datatype,
            shape,
        }],
        outputs: Output::ALL
            .into_iter()
            .map(|output| TensorMetadata {
                name: output.name(),
                datatype: output.datatype(),
                shape: output.metadata_shape(model.labels.len()),
            })
            .collect(),
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
    params(
        ("name" = String, Path, description = "The served model's name"),
        ("Inference-Header-Content-Length" = Option<u64>, Header, nullable = false,
            description = "Binary tensor data extension: the length of the JSON part; the body's \
                           remaining bytes are the tensors whose `parameters.binary_data_size` say so \
                           (BYTES: a 4-byte little-endian length before each element). Answers with \
                           binary outputs (`binary_data` per output, or `binary_data_output`) carry \
                           the same header and `application/octet-stream`.")
    ),
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
    payload: web::Payload,
) -> Result<HttpResponse, V2Error> {
    // Read here rather than by the `Bytes` extractor, whose size refusal is plain text: a body
    // over the limit gets the protocol's `{"error"}` 413 like every other v2 error.
    let limit = state.config.limits.max_body_bytes;
    let body = payload
        .to_bytes_limited(limit)
        .await
        .map_err(|_| ApiError::PayloadTooLarge { limit })?
        .map_err(|e| bad(format!("reading the body: {e}")))?;
    let model = state.classifier.serving();
    check_model(&model.spec.name, &model.spec.version, &path)?;
    let header_length = http
        .headers()
        .get(BINARY_HEADER)
        .map(|v| v.to_str().unwrap_or("not text"));
    let (json, tail) = split_body(&body, header_length).map_err(v2::ProtocolError::from)?;
    let Object(request): Object<InferRequest> = serde_json::from_slice(json).map_err(|e| {
        bad(format!(
            "not a valid inference request: {}",
            bounded_message(&e.to_string())
        ))
    })?;
    let texts = input_texts(
        &request,
        Tail::new(tail),
        state.config.limits.max_client_batch_size,
    )?;
    let wanted = requested_outputs(&request)?;
    let classify =
        ClassifyRequest::new(texts, request_deadline(&http, state.config.server.timeout)?);
    let hung_up = disconnected(http.conn_data::<ClientSocket>());
    let classification = state
        .classifier
        .classify(classify, hung_up)
        .await
        .map_err(ApiError::from)?;
    let mut outputs = Vec::new();
    let mut binary = Vec::new();
    for tensor in v2::output_tensors(&classification, &wanted) {
        // The binary form is built only for an output sent that way.
        let (data, parameters) = match tensor.selected.binary {
            true => {
                let bytes = tensor.data.to_bytes();
                let size = bytes.len();
                binary.push(bytes);
                (None, Some(serde_json::json!({ "binary_data_size": size })))
            }
            false => (Some(json_data(tensor.data)), None),
        };
        outputs.push(OutputTensor {
            name: tensor.selected.output.name(),
            datatype: tensor.selected.output.datatype(),
            shape: tensor.shape,
            data,
            parameters,
        });
    }
    let answer = InferResponse {
        model_name: classification.model.name.clone(),
        model_version: classification.model.version.clone(),
        id: request.id,
        outputs,
    };
    if binary.is_empty() {
        return Ok(HttpResponse::Ok().json(answer));
    }
    let mut body = serde_json::to_vec(&answer).map_err(|e| ApiError::Inference(e.to_string()))?;
    let json_length = body.len();
    for bytes in binary {
        body.extend_from_slice(&bytes);
    }
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .insert_header((BINARY_HEADER, json_length.to_string()))
        .body(body))
}

/// `/v2/models/{name}` and `/v2/models/{name}/versions/{version}`.
#[derive(Debug, Deserialize)]
pub struct ModelPath {
    name: String,
    version: Option<String>,
}

fn check_model(name: &str, version: &str, path: &ModelPath) -> Result<(), V2Error> {
    Ok(v2::check_model(
        name,
        version,
        &path.name,
        path.version.as_deref(),
    )?)
}

fn json_data(data: TensorData) -> Value {
    match data {
        TensorData::Labels(labels) => Value::from(labels),
        TensorData::Scores(scores) => Value::from(scores),
    }
}

fn bad(message: String) -> V2Error {
    ApiError::MalformedJson(message).into()
}

fn wants_binary(parameters: &Option<serde_json::Map<String, Value>>, key: &str) -> Option<bool> {
    parameters
        .as_ref()
        .and_then(|p| p.get(key))
        .and_then(Value::as_bool)
}

/// The texts of the one `BYTES` input, checked against its declared shape.
fn input_texts(
    request: &InferRequest,
    mut tail: Tail<'_>,
    max_texts: usize,
) -> Result<Vec<String>, V2Error> {
    let input = v2::the_input(&request.inputs, |i| &i.name, |i| &i.datatype)?;
    let binary_size = input
        .parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_size"));
    let texts = match (binary_size, &input.data) {
        (Some(size), None) => {
            let size = size.as_u64().ok_or_else(|| {
                bad(format!(
                    "input {INPUT:?}: binary_data_size must be a byte count"
                ))
            })?;
            let bytes = tail.take(INPUT, size).map_err(v2::ProtocolError::from)?;
            tail.finish().map_err(v2::ProtocolError::from)?;
            decode_strings(INPUT, bytes, max_texts).map_err(v2::ProtocolError::from)?
        }
        (Some(_), Some(_)) => {
            return Err(bad(format!(
                "input {INPUT:?} has both data and binary_data_size; send one"
            )))
        }
        (None, Some(data)) if data.is_array() => {
            tail.finish().map_err(v2::ProtocolError::from)?;
            let mut texts = Vec::new();
            flatten_strings(data, &mut texts)?;
            texts
        }
        (None, _) => {
            return Err(bad(format!(
                "input {INPUT:?} needs data, an array of strings, or binary_data_size"
            )))
        }
    };
    v2::check_shape(&input.shape, texts.len())?;
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
                "input {INPUT:?} must hold strings, found {}",
                excerpt(&other.to_string())
            )))
        }
    }
    Ok(())
}

/// The outputs asked for (all when none are named) and whether each goes in binary: its own
/// `binary_data` parameter, else the request's `binary_data_output`, else JSON.
fn requested_outputs(request: &InferRequest) -> Result<Vec<Selected>, V2Error> {
    let all_binary = wants_binary(&request.parameters, "binary_data_output").unwrap_or(false);
    let named = request
        .outputs
        .iter()
        .map(|o| (o.name.as_str(), wants_binary(&o.parameters, "binary_data")));
    Ok(v2::select_outputs(named, all_binary)?)
}
