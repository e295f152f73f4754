//! `POST /predict`: decode the body, call the classifier, encode the ranked labels.
//!
//! The request and response follow Hugging Face text-embeddings-inference's `/predict`, so its
//! clients work unchanged: one text in, one ranked list out; a list in, a list of lists out.
//! Every request carries a deadline of `server.timeout` from arrival (or the tighter
//! `x-request-timeout` header); past it the client gets 504. A client that hangs up cancels
//! its request (see [`connection`](super::connection)).

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::connection::{disconnected, ClientSocket};
use super::error::{ApiError, ErrorBody};
use super::ApiState;
use crate::classify::{Classification, ClassifyRequest, Deadline};
use crate::config::LimitsConfig;

/// The body of `POST /predict`. Only a JSON object is accepted: serde's derive would also
/// take a positional array (`["text"]`), which no client means to send.
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// One text, or a list of texts (at most `limits.max_client_batch_size`).
    pub inputs: PredictInputs,
    /// Return only the best `top_k` labels per text (default: all labels).
    #[schema(minimum = 1, example = 3)]
    pub top_k: Option<usize>,
    /// Cut texts longer than the model's token limit (default `true`). With `false`, such a
    /// text is refused with 422.
    pub truncate: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequestFields {
    inputs: PredictInputs,
    #[serde(default, deserialize_with = "whole_number")]
    top_k: Option<usize>,
    #[serde(default)]
    truncate: Option<bool>,
}

/// JSON Schema counts `3.0` as an integer, so the API does too; `3.5` or `-1` stay errors.
fn whole_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<usize>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(n) = number.as_u64() {
        return usize::try_from(n)
            .map(Some)
            .map_err(serde::de::Error::custom);
    }
    match number.as_f64() {
        // Beyond u64, a top_k only means "all labels": saturate.
        Some(f) if f >= 0.0 && f.fract() == 0.0 => Ok(Some(f as usize)),
        _ => Err(serde::de::Error::custom(format!(
            "expected a non-negative whole number, found {number}"
        ))),
    }
}

impl<'de> Deserialize<'de> for PredictRequest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectOnly;
        impl<'de> serde::de::Visitor<'de> for ObjectOnly {
            type Value = PredictRequestFields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object with an `inputs` field")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                PredictRequestFields::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        let fields = deserializer.deserialize_map(ObjectOnly)?;
        Ok(Self {
            inputs: fields.inputs,
            top_k: fields.top_k,
            truncate: fields.truncate,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "`inputs` must be a string or an array of strings"
)]
pub enum PredictInputs {
    Single(String),
    Batch(Vec<String>),
}

/// The OpenAPI schema of `inputs`, with the limits the server enforces, so that any text the
/// schema allows is accepted (apart from the token limit with `truncate: false`).
pub fn inputs_schema(
    limits: &LimitsConfig,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    let text = |description: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(limits.max_input_chars))
            // Not blank: at least one non-whitespace character.
            .pattern(Some(r"\S"))
            .description(Some(description))
    };
    OneOfBuilder::new()
        .item(text("One news text"))
        .item(
            ArrayBuilder::new()
                .items(text("A news text"))
                .min_items(Some(1))
                .max_items(Some(limits.max_client_batch_size))
                .description(Some("Several news texts, answered in order")),
        )
        .into()
}

impl utoipa::PartialSchema for PredictInputs {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        inputs_schema(&LimitsConfig::default())
    }
}

impl ToSchema for PredictInputs {}

/// One label and its probability.
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct LabelScore {
    #[schema(example = "business")]
    pub label: String,
    #[schema(example = 0.93)]
    pub score: f32,
}

/// Labels sorted by score, best first: a list for a single text, a list of lists for a batch.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PredictResponse {
    Single(Vec<LabelScore>),
    Batch(Vec<Vec<LabelScore>>),
}

/// What the request logger reports about how a request was batched.
#[derive(Debug, Clone, Copy)]
pub struct RequestStats {
    pub texts: usize,
    /// The largest batch any of this request's texts was computed in.
    pub largest_batch: usize,
}

/// Classify news texts into topics.
#[utoipa::path(
    post,
    path = "/predict",
    tag = "classification",
    params(
        ("x-request-timeout" = Option<f64>, Header, nullable = false, minimum = 0.1,
            description = "Seconds this request may take, when tighter than the server's `server.timeout`")
    ),
    request_body(
        content = PredictRequest,
        examples(
            ("English" = (summary = "One English article", value = json!({
                "inputs": "Shares of the carmaker fell 5% after it cut its profit forecast, citing weaker demand in Europe and China."
            }))),
            ("Korean" = (summary = "One Korean article (한국어)", value = json!({
                "inputs": "삼성전자 주가가 3분기 실적 발표 이후 5% 급등하며 코스피 상승을 이끌었다.",
                "top_k": 3
            }))),
            ("Batch" = (summary = "Several articles at once", value = json!({
                "inputs": [
                    "The striker scored twice as the home side won the cup final.",
                    "Parliament rejected the budget bill after a long debate."
                ]
            })))
        )
    ),
    responses(
        (status = 200, description = "Labels ranked by probability", body = PredictResponse,
            example = json!([{"label": "business", "score": 0.93}, {"label": "world", "score": 0.04}])),
        (status = 400, description = "Body is not valid JSON", body = ErrorBody),
        (status = 413, description = "Body larger than `limits.max_body_bytes`", body = ErrorBody),
        (status = 415, description = "Content-Type is not application/json", body = ErrorBody),
        (status = 422, description = "Invalid input: empty, too many texts, too long, wrong types", body = ErrorBody),
        (status = 429, description = "Queue full; retry after the `Retry-After` seconds", body = ErrorBody),
        (status = 500, description = "Inference failed", body = ErrorBody),
        (status = 503, description = "Starting up or shutting down", body = ErrorBody),
        (status = 504, description = "Not finished within `server.timeout`", body = ErrorBody),
    )
)]
pub async fn predict(
    state: web::Data<ApiState>,
    http: HttpRequest,
    body: web::Json<PredictRequest>,
) -> Result<HttpResponse, ApiError> {
    let deadline = request_deadline(&http, state.config.server.timeout)?;
    let request = body.into_inner();
    let single = matches!(request.inputs, PredictInputs::Single(_));
    let texts = match request.inputs {
        PredictInputs::Single(text) => vec![text],
        PredictInputs::Batch(texts) => texts,
    };
    let request = ClassifyRequest {
        texts,
        top_k: request.top_k,
        truncate: request.truncate.unwrap_or(true),
        deadline,
    };
    let hung_up = disconnected(http.conn_data::<ClientSocket>());
    let classification = state.classifier.classify(request, hung_up).await?;
    Ok(respond(classification, single))
}

/// The ranked labels as JSON, with where the time went in headers.
fn respond(classification: Classification, single: bool) -> HttpResponse {
    let Classification { texts, timing, .. } = classification;
    let stats = RequestStats {
        texts: texts.len(),
        largest_batch: timing.largest_batch,
    };
    let mut lists: Vec<Vec<LabelScore>> = texts
        .into_iter()
        .map(|text| {
            text.ranked
                .into_iter()
                .map(|s| LabelScore {
                    label: s.label,
                    score: s.score,
                })
                .collect()
        })
        .collect();
    let body = if single {
        PredictResponse::Single(lists.pop().unwrap_or_default())
    } else {
        PredictResponse::Batch(lists)
    };
    let mut response = HttpResponse::Ok()
        .insert_header(("x-total-time", millis(timing.total)))
        .insert_header(("x-queue-time", millis(timing.queue)))
        .insert_header(("x-inference-time", millis(timing.inference)))
        .insert_header(("x-batch-size", timing.largest_batch.to_string()))
        .json(body);
    response.extensions_mut().insert(stats);
    response
}

/// Header with which a client asks for a tighter deadline than `server.timeout`, in seconds.
pub const TIMEOUT_HEADER: &str = "x-request-timeout";
/// Less than this cannot cover even an idle round trip; refusing it is clearer than a 504.
const MIN_REQUEST_TIMEOUT: f64 = 0.1;

/// The request's deadline: `server.timeout` from now, or the client's header when tighter.
fn request_deadline(http: &HttpRequest, server_timeout: f64) -> Result<Deadline, ApiError> {
    let seconds = match http.headers().get(TIMEOUT_HEADER) {
        None => server_timeout,
        Some(value) => header_seconds(value)?.min(server_timeout),
    };
    Ok(Deadline::after(Duration::from_secs_f64(seconds)))
}

fn header_seconds(value: &actix_web::http::header::HeaderValue) -> Result<f64, ApiError> {
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= MIN_REQUEST_TIMEOUT)
        .ok_or_else(|| {
            ApiError::Validation(format!(
                "{TIMEOUT_HEADER} must be a number of seconds, at least {MIN_REQUEST_TIMEOUT}"
            ))
        })
}

fn millis(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_accept_a_string_or_a_list_and_name_the_problem_otherwise() {
        let one: PredictRequest = serde_json::from_str(r#"{"inputs": "x"}"#).expect("string");
        assert!(matches!(one.inputs, PredictInputs::Single(_)));
        let many: PredictRequest = serde_json::from_str(r#"{"inputs": ["x", "y"]}"#).expect("list");
        assert!(matches!(many.inputs, PredictInputs::Batch(ref v) if v.len() == 2));
        let err = serde_json::from_str::<PredictRequest>(r#"{"inputs": 5}"#)
            .expect_err("number")
            .to_string();
        assert!(err.contains("string or an array of strings"), "{err}");
        let err = serde_json::from_str::<PredictRequest>(r#"{"inputs": "x", "topk": 1}"#)
            .expect_err("typo");
        assert!(err.to_string().contains("topk"), "{err}");
    }
}
