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
use super::error::ApiError;
use super::ApiState;
use crate::infra::config::LimitsConfig;
use crate::pipeline::classify::{Classification, ClassifyRequest, Deadline, ModelRole, Priority};
use crate::pipeline::postprocess::ScoreFunction;
use crate::pipeline::tokenize::TruncationSide;

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
    /// Which end of a long text is kept (TEI): `Right` cuts the end (default), `Left` the start.
    pub truncation_direction: Option<TruncationDirection>,
    /// Return the model's logits instead of probabilities (TEI).
    pub raw_scores: Option<bool>,
    /// Hugging Face Inference API parameters, as `huggingface_hub.InferenceClient` sends them.
    /// With this field present, a single text is answered as a list of one ranked list, the
    /// shape that client reads.
    pub parameters: Option<Parameters>,
}

/// `parameters` of the Hugging Face text-classification task.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Parameters {
    /// Same as the top-level `top_k`.
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1)]
    pub top_k: Option<usize>,
    /// `softmax` (default), `sigmoid` (each label scored alone) or `none` (logits).
    pub function_to_apply: Option<FunctionToApply>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FunctionToApply {
    Softmax,
    Sigmoid,
    None,
}

/// TEI spells these `Left` and `Right`; any case is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ToSchema)]
pub enum TruncationDirection {
    Left,
    Right,
}

impl<'de> Deserialize<'de> for TruncationDirection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.to_ascii_lowercase().as_str() {
            "left" => Ok(Self::Left),
            "right" => Ok(Self::Right),
            _ => Err(serde::de::Error::custom(format!(
                "truncation_direction must be \"Left\" or \"Right\", not {text:?}"
            ))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictRequestFields {
    inputs: PredictInputs,
    #[serde(default, deserialize_with = "whole_number")]
    top_k: Option<usize>,
    #[serde(default)]
    truncate: Option<bool>,
    #[serde(default)]
    truncation_direction: Option<TruncationDirection>,
    #[serde(default)]
    raw_scores: Option<bool>,
    #[serde(default, deserialize_with = "super::json::optional_object")]
    parameters: Option<Parameters>,
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
            truncation_direction: fields.truncation_direction,
            raw_scores: fields.raw_scores,
            parameters: fields.parameters,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "`inputs` must be a string, an array of strings, or (TEI) an array of one-string arrays"
)]
pub enum PredictInputs {
    Single(String),
    Batch(Vec<String>),
    /// TEI's batch form, `[["a"], ["b"]]`: each inner list is one input. An inner list of two
    /// is a text pair in TEI, which a single-text classifier cannot take.
    Nested(Vec<Vec<String>>),
}

impl PredictRequest {
    /// The classification asked for, and whether the answer is one list (a single text) or a
    /// list per text; conflicts between TEI's and Hugging Face's fields are refused.
    fn into_request(
        self,
        deadline: Deadline,
        model: ModelRole,
    ) -> Result<(ClassifyRequest, bool), ApiError> {
        let parameters = self.parameters.as_ref();
        let hf_shape = parameters.is_some();
        let (texts, single) = match self.inputs {
            PredictInputs::Single(text) => (vec![text], !hf_shape),
            PredictInputs::Batch(texts) => (texts, false),
            PredictInputs::Nested(inputs) => {
                let mut texts = Vec::with_capacity(inputs.len());
                for (index, mut input) in inputs.into_iter().enumerate() {
                    match input.len() {
                        1 => texts.extend(input.pop()),
                        2 => {
                            return Err(ApiError::Validation(format!(
                                "input {index} is a text pair; this model classifies single texts: \
                                 send [[\"text\"], ...] or [\"text\", ...]"
                            )))
                        }
                        n => {
                            return Err(ApiError::Validation(format!(
                                "input {index} is a list of {n} strings; each inner list must hold one text"
                            )))
                        }
                    }
                }
                (texts, false)
            }
        };
        let top_k = match (self.top_k, parameters.and_then(|p| p.top_k)) {
            (Some(_), Some(_)) => {
                return Err(ApiError::Validation(
                    "`top_k` and `parameters.top_k` are one option in two protocols' spellings: send one".into(),
                ))
            }
            (a, b) => a.or(b),
        };
        let function = parameters.and_then(|p| p.function_to_apply);
        let scores = match (self.raw_scores.unwrap_or(false), function) {
            (true, Some(f)) if f != FunctionToApply::None => {
                return Err(ApiError::Validation(
                    "`raw_scores: true` asks for logits; `parameters.function_to_apply` asks for another function"
                        .into(),
                ))
            }
            (true, _) | (false, Some(FunctionToApply::None)) => Some(ScoreFunction::None),
            (false, Some(FunctionToApply::Sigmoid)) => Some(ScoreFunction::Sigmoid),
            (false, Some(FunctionToApply::Softmax)) => Some(ScoreFunction::Softmax),
            // The head's own: softmax, or a sigmoid per label for a multi-label model.
            (false, None) => None,
        };
        let truncation_side = match self.truncation_direction {
            Some(TruncationDirection::Left) => TruncationSide::Left,
            _ => TruncationSide::Right,
        };
        let request = ClassifyRequest {
            texts,
            top_k,
            truncate: self.truncate.unwrap_or(true),
            truncation_side,
            scores,
            deadline,
            priority: Priority::Interactive,
            model,
        };
        Ok((request, single))
    }
}

/// The rules between fields that `into_request` enforces, as JSON Schema, so the document
/// states them: `top_k` and `parameters.top_k` are not both given, and `raw_scores: true`
/// (logits) goes with no other `function_to_apply` than `none`.
pub fn request_rules() -> serde_json::Value {
    serde_json::json!([
        {"not": {
            "required": ["top_k", "parameters"],
            "properties": {
                "top_k": {"type": "integer"},
                "parameters": {"type": "object", "required": ["top_k"],
                               "properties": {"top_k": {"type": "integer"}}}
            }
        }},
        {"not": {
            "required": ["raw_scores", "parameters"],
            "properties": {
                "raw_scores": {"const": true},
                "parameters": {"type": "object", "required": ["function_to_apply"],
                               "properties": {"function_to_apply": {"enum": ["softmax", "sigmoid"]}}}
            }
        }}
    ])
}

/// At least one character outside Unicode's White_Space set (the one `char::is_whitespace` and
/// `str::trim` use), as a JSON Schema pattern.
pub const NOT_BLANK: &str =
    r"[^\t\n\u000b\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]";

/// One text as the classifier takes it: 1 to `limits.max_input_chars` characters, not blank.
pub fn text_schema(
    limits: &LimitsConfig,
    description: &str,
) -> utoipa::openapi::schema::ObjectBuilder {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(limits.max_input_chars))
        // Not blank: at least one character that is not Unicode White_Space, which is what
        // the classifier's check (`str::trim`) means. Not `\S`: JSON Schema's regex dialect
        // (ECMA-262) counts U+0085 as a visible character and U+FEFF as a space.
        .pattern(Some(NOT_BLANK))
        .description(Some(description))
}

/// The OpenAPI schema of `inputs`, with the limits the server enforces, so that any text the
/// schema allows is accepted (apart from the token limit with `truncate: false`).
pub fn inputs_schema(
    limits: &LimitsConfig,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder};
    let text = |description: &str| text_schema(limits, description);
    OneOfBuilder::new()
        .item(text("One news text"))
        .item(
            ArrayBuilder::new()
                .items(text("A news text"))
                .min_items(Some(1))
                .max_items(Some(limits.max_client_batch_size))
                .description(Some("Several news texts, answered in order")),
        )
        .item(
            ArrayBuilder::new()
                .items(
                    ArrayBuilder::new()
                        .items(text("A news text"))
                        .min_items(Some(1))
                        .max_items(Some(1)),
                )
                .min_items(Some(1))
                .max_items(Some(limits.max_client_batch_size))
                .description(Some("TEI's batch form: one single-text list per input")),
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
            description = "Seconds this request may take, when tighter than the server's `server.timeout`"),
        ("x-model-version" = Option<RequestedModel>, Header, nullable = false,
            description = "`challenger`: answer from the shadow challenger instead (debugging; 404 when none is loaded). The response's `x-model-version` names the version that answered")
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
    )
)]
pub async fn predict(
    state: web::Data<ApiState>,
    http: HttpRequest,
    body: web::Json<PredictRequest>,
) -> Result<HttpResponse, ApiError> {
    let deadline = request_deadline(&http, state.config.server.timeout)?;
    let model = requested_model(&http)?;
    let (request, single) = tracing::info_span!("decode")
        .in_scope(|| body.into_inner().into_request(deadline, model))?;
    let hung_up = disconnected(http.conn_data::<ClientSocket>());
    let classification = state.classifier.classify(request, hung_up).await?;
    Ok(respond(classification, single))
}

/// `POST /`: the same as `POST /predict`, where Hugging Face's clients and TEI's send it.
#[utoipa::path(
    post,
    path = "/",
    tag = "classification",
    request_body(content = PredictRequest, example = json!({
        "inputs": "The striker scored twice as the home side won the cup final.",
        "parameters": {"top_k": 2}
    })),
    responses(
        (status = 200, description = "As POST /predict", body = PredictResponse),
    )
)]
pub async fn predict_at_root(
    state: web::Data<ApiState>,
    http: HttpRequest,
    body: web::Json<PredictRequest>,
) -> Result<HttpResponse, ApiError> {
    predict(state, http, body).await
}

/// The ranked labels as JSON, with where the time went in headers.
fn respond(classification: Classification, single: bool) -> HttpResponse {
    let Classification {
        texts,
        timing,
        model,
        ..
    } = classification;
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
        .insert_header((MODEL_NAME_HEADER, model.name))
        .insert_header((MODEL_VERSION_HEADER, model.version))
        .json(body);
    response.extensions_mut().insert(stats);
    response
}

/// Response headers naming the model version that produced the answer.
pub const MODEL_NAME_HEADER: &str = "x-model-name";
pub const MODEL_VERSION_HEADER: &str = "x-model-version";

/// Which model a caller asks for with the `x-model-version` request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RequestedModel {
    /// The model in service (the default).
    Champion,
    /// The shadow challenger (`shadow.uri`).
    Challenger,
}

/// The model the request's `x-model-version` header asks for; the champion without one.
fn requested_model(http: &HttpRequest) -> Result<ModelRole, ApiError> {
    let Some(value) = http.headers().get(MODEL_VERSION_HEADER) else {
        return Ok(ModelRole::Champion);
    };
    match value.to_str().map(str::trim) {
        Ok(v) if v.eq_ignore_ascii_case("champion") => Ok(ModelRole::Champion),
        Ok(v) if v.eq_ignore_ascii_case("challenger") => Ok(ModelRole::Challenger),
        _ => Err(ApiError::Validation(format!(
            "{MODEL_VERSION_HEADER} must be \"champion\" or \"challenger\""
        ))),
    }
}

/// Header with which a client asks for a tighter deadline than `server.timeout`, in seconds.
pub const TIMEOUT_HEADER: &str = "x-request-timeout";
/// Less than this cannot cover even an idle round trip; refusing it is clearer than a 504.
const MIN_REQUEST_TIMEOUT: f64 = 0.1;

/// The request's deadline: `server.timeout` from now, or the client's header when tighter.
pub(super) fn request_deadline(
    http: &HttpRequest,
    server_timeout: f64,
) -> Result<Deadline, ApiError> {
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
        assert!(err.contains("a string, an array of strings"), "{err}");
        let err = serde_json::from_str::<PredictRequest>(r#"{"inputs": "x", "topk": 1}"#)
            .expect_err("typo");
        assert!(err.to_string().contains("topk"), "{err}");
    }

    fn parts(json: &str) -> Result<(ClassifyRequest, bool), ApiError> {
        serde_json::from_str::<PredictRequest>(json)
            .expect("decodes")
            .into_request(Deadline::after(Duration::from_secs(1)), ModelRole::Champion)
    }

    #[test]
    fn hugging_face_parameters_are_honoured_and_ask_for_a_list_per_text() {
        let (request, single) =
            parts(r#"{"inputs": "x", "parameters": {"top_k": 2, "function_to_apply": "sigmoid"}}"#)
                .expect("valid");
        assert_eq!((request.texts.len(), single), (1, false));
        assert_eq!(request.top_k, Some(2));
        assert_eq!(request.scores, Some(ScoreFunction::Sigmoid));
        let (request, single) = parts(r#"{"inputs": "x"}"#).expect("valid");
        assert!(single, "TEI's shape without parameters");
        assert_eq!(request.scores, None, "the head's own function");
        let (request, _) =
            parts(r#"{"inputs": "x", "parameters": {"function_to_apply": "softmax"}}"#)
                .expect("valid");
        assert_eq!(request.scores, Some(ScoreFunction::Softmax));
        let err = serde_json::from_str::<PredictRequest>(
            r#"{"inputs": "x", "parameters": {"top_k": 1, "temperature": 2}}"#,
        )
        .expect_err("unknown parameter");
        assert!(err.to_string().contains("temperature"), "{err}");
    }

    #[test]
    fn tei_batches_raw_scores_and_truncation_direction() {
        let (request, single) = parts(
            r#"{"inputs": [["a"], ["b"]], "raw_scores": true, "truncation_direction": "Left"}"#,
        )
        .expect("valid");
        assert_eq!(
            (request.texts, single),
            (vec!["a".to_string(), "b".to_string()], false)
        );
        assert_eq!(request.scores, Some(ScoreFunction::None));
        assert_eq!(request.truncation_side, TruncationSide::Left);
        let pair = parts(r#"{"inputs": [["a", "b"]]}"#).expect_err("a pair");
        assert!(pair.to_string().contains("text pair"), "{pair}");
        assert!(parts(r#"{"inputs": "x", "top_k": 1, "parameters": {"top_k": 2}}"#).is_err());
        assert!(parts(
            r#"{"inputs": "x", "raw_scores": true, "parameters": {"function_to_apply": "softmax"}}"#
        )
        .is_err());
    }
}
