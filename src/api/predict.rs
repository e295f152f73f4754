//! `POST /predict`: validate -> tokenize (off the executor) -> queue -> wait for answers.
//!
//! The request and response follow Hugging Face text-embeddings-inference's `/predict`, so its
//! clients work unchanged: one text in, one ranked list out; a list in, a list of lists out.
//! Every request carries a deadline of `server.timeout` from arrival (or the tighter
//! `x-request-timeout` header); past it the client gets 504, and its texts are skipped before
//! tokenization and before inference.

use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::connection::{disconnected, ClientSocket};
use crate::app::AppState;
use crate::batching::{AdmitError, Job, JobError, JobOutput};
use crate::config::LimitsConfig;
use crate::error::{ApiError, ErrorBody};
use crate::postprocess::ranked;

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
pub struct BatchInfo {
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
    state: web::Data<AppState>,
    http: HttpRequest,
    body: web::Json<PredictRequest>,
) -> Result<HttpResponse, ApiError> {
    let arrived = Instant::now();
    let timeout = request_timeout(&http, state.config.server.timeout)?;
    let deadline = arrived + Duration::from_secs_f64(timeout);
    state.ensure_ready()?;
    let request = body.into_inner();
    let single = matches!(request.inputs, PredictInputs::Single(_));
    let texts = match request.inputs {
        PredictInputs::Single(text) => vec![text],
        PredictInputs::Batch(texts) => texts,
    };
    validate(&texts, request.top_k, &state.config.limits)?;

    let tokenizer = state.tokenizer.clone();
    let truncate = request.truncate.unwrap_or(true);
    let tokenize = move || {
        // The blocking pool may be busy: work whose deadline passed while waiting is dropped.
        if Instant::now() >= deadline {
            return None;
        }
        let started = Instant::now();
        Some((tokenizer.encode(&texts, truncate), started.elapsed()))
    };
    let tokenized = within(deadline, timeout, async {
        let _permit = state.tokenize_permits.acquire().await;
        web::block(tokenize).await
    });
    let (tokenized, tokenize_time) = tokenized
        .await?
        .map_err(|e| ApiError::Inference(format!("tokenizer thread failed: {e}")))?
        .ok_or(ApiError::Timeout(timeout))?;
    state
        .metrics
        .tokenize_duration
        .observe(tokenize_time.as_secs_f64());
    let tokenized = tokenized.map_err(|e| ApiError::Validation(e.to_string()))?;

    let (jobs, replies): (Vec<Job>, Vec<_>) = tokenized
        .into_iter()
        .map(|text| Job::new(text, deadline))
        .unzip();
    state.queue.admit(jobs).map_err(|e| match e {
        AdmitError::Full { queued, .. } => ApiError::Overloaded {
            queued,
            retry_after: state.retry_hint(queued),
        },
        AdmitError::WouldMissDeadline {
            queued,
            expected_wait,
        } => ApiError::Overloaded {
            queued,
            retry_after: expected_wait,
        },
        AdmitError::Closed => ApiError::NotReady("shutting down"),
    })?;
    let answers = within(deadline, timeout, async move {
        let mut outputs = Vec::with_capacity(replies.len());
        for reply in replies {
            outputs.push(reply.await);
        }
        outputs
    });
    let socket = http.conn_data::<ClientSocket>();
    let outputs = tokio::select! {
        answers = answers => answers?,
        // Returning drops the reply channels: the queue then skips these texts.
        () = disconnected(socket) => return Err(ApiError::ClientClosed),
    }
    .into_iter()
    .map(|reply| match reply {
        Ok(Ok(output)) => Ok(output),
        Ok(Err(JobError::Inference(message))) => Err(ApiError::Inference(message)),
        // The queue drops a job only once its deadline has passed.
        Err(_) => Err(ApiError::Timeout(timeout)),
    })
    .collect::<Result<Vec<JobOutput>, ApiError>>()?;

    let info = BatchInfo {
        texts: outputs.len(),
        largest_batch: outputs.iter().map(|o| o.batch_size).max().unwrap_or(0),
    };
    let slowest = |f: fn(&JobOutput) -> Duration| outputs.iter().map(f).max().unwrap_or_default();
    let (queue_time, inference_time) = (slowest(|o| o.queue_time), slowest(|o| o.inference_time));
    let mut ranked_lists: Vec<Vec<LabelScore>> = outputs
        .iter()
        .map(|o| {
            ranked(&o.probabilities, request.top_k)
                .into_iter()
                .map(|(index, score)| LabelScore {
                    label: state.model.labels[index].clone(),
                    score,
                })
                .collect()
        })
        .collect();
    let body = if single {
        PredictResponse::Single(ranked_lists.pop().unwrap_or_default())
    } else {
        PredictResponse::Batch(ranked_lists)
    };
    let mut response = HttpResponse::Ok()
        .insert_header(("x-total-time", millis(arrived.elapsed())))
        .insert_header(("x-queue-time", millis(queue_time)))
        .insert_header(("x-inference-time", millis(inference_time)))
        .insert_header(("x-batch-size", info.largest_batch.to_string()))
        .json(body);
    response.extensions_mut().insert(info);
    Ok(response)
}

fn validate(texts: &[String], top_k: Option<usize>, limits: &LimitsConfig) -> Result<(), ApiError> {
    if texts.is_empty() {
        return Err(ApiError::Validation("`inputs` must not be empty".into()));
    }
    if texts.len() > limits.max_client_batch_size {
        return Err(ApiError::Validation(format!(
            "`inputs` has {} texts; at most {} are accepted per request",
            texts.len(),
            limits.max_client_batch_size
        )));
    }
    for (index, text) in texts.iter().enumerate() {
        if text.trim().is_empty() {
            return Err(ApiError::Validation(format!(
                "input {index} is empty; send the article text"
            )));
        }
        // Bytes bound characters from above, so the count is only needed near the limit.
        if text.len() > limits.max_input_chars {
            let chars = text.chars().count();
            if chars > limits.max_input_chars {
                return Err(ApiError::Validation(format!(
                    "input {index} has {chars} characters; the limit is {}",
                    limits.max_input_chars
                )));
            }
        }
    }
    if top_k == Some(0) {
        return Err(ApiError::Validation("`top_k` must be at least 1".into()));
    }
    Ok(())
}

/// Header with which a client asks for a tighter deadline than `server.timeout`, in seconds.
pub const TIMEOUT_HEADER: &str = "x-request-timeout";
/// Less than this cannot cover even an idle round trip; refusing it is clearer than a 504.
const MIN_REQUEST_TIMEOUT: f64 = 0.1;

/// The request's timeout: `server.timeout`, or the client's header when that is tighter.
fn request_timeout(http: &HttpRequest, server_timeout: f64) -> Result<f64, ApiError> {
    let Some(value) = http.headers().get(TIMEOUT_HEADER) else {
        return Ok(server_timeout);
    };
    let seconds = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= MIN_REQUEST_TIMEOUT)
        .ok_or_else(|| {
            ApiError::Validation(format!(
                "{TIMEOUT_HEADER} must be a number of seconds, at least {MIN_REQUEST_TIMEOUT}"
            ))
        })?;
    Ok(seconds.min(server_timeout))
}

/// Runs `work` until the request's deadline; past it, 504.
async fn within<T>(
    deadline: Instant,
    timeout: f64,
    work: impl std::future::Future<Output = T>,
) -> Result<T, ApiError> {
    tokio::time::timeout_at(deadline.into(), work)
        .await
        .map_err(|_| ApiError::Timeout(timeout))
}

fn millis(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        LimitsConfig {
            max_body_bytes: 1000,
            max_client_batch_size: 2,
            max_input_chars: 5,
        }
    }

    #[test]
    fn rejects_what_the_contract_forbids() {
        let cases: &[(&[&str], Option<usize>)] = &[
            (&[], None),
            (&["a", "b", "c"], None),
            (&["  "], None),
            (&["abcdef"], None),
            (&["ok"], Some(0)),
        ];
        for (texts, top_k) in cases {
            let texts: Vec<String> = texts.iter().map(|s| s.to_string()).collect();
            assert!(
                validate(&texts, *top_k, &limits()).is_err(),
                "{texts:?} {top_k:?}"
            );
        }
    }

    #[test]
    fn counts_characters_not_bytes() {
        // Five Hangul syllables are 15 bytes but 5 characters: within the limit.
        assert!(validate(&["한국은행장".to_string()], None, &limits()).is_ok());
    }

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
