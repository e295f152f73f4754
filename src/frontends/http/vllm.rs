//! `POST /classify`: the classification API of vLLM and SGLang.
//!
//! `{"model": "...", "input": "text" | ["a", "b"]}` in; `data[{index, label, probs,
//! num_classes}]` and `usage` (token counts) out, `probs` in the model's label order. A
//! `model` that is not the one served is refused with 404, as those servers do.

use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::connection::{disconnected, ClientSocket};
use super::error::ApiError;
use super::json::Object;
use super::predict::{request_deadline, MODEL_NAME_HEADER, MODEL_VERSION_HEADER};
use super::ApiState;
use crate::infra::config::LimitsConfig;
use crate::infra::excerpt::excerpt;
use crate::pipeline::classify::ClassifyRequest;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassifyBody {
    /// The served model's name (see `/info`); optional.
    #[schema(example = "news-topic-e5-small")]
    pub model: Option<String>,
    /// One text or a list of texts.
    pub input: ClassifyInput,
    /// An end-user id, accepted for compatibility and ignored.
    pub user: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "`input` must be a string or an array of strings"
)]
pub enum ClassifyInput {
    One(String),
    Many(Vec<String>),
}

/// One text or 1 to `limits.max_client_batch_size` texts, none blank: what the classifier
/// takes.
pub fn input_schema(
    limits: &LimitsConfig,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder};
    OneOfBuilder::new()
        .item(super::predict::text_schema(limits, "One text"))
        .item(
            ArrayBuilder::new()
                .items(super::predict::text_schema(limits, "A text"))
                .min_items(Some(1))
                .max_items(Some(limits.max_client_batch_size))
                .description(Some("Several texts, answered in order")),
        )
        .into()
}

impl utoipa::PartialSchema for ClassifyInput {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        input_schema(&LimitsConfig::default())
    }
}

impl ToSchema for ClassifyInput {}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClassifyResponse {
    #[schema(example = "classify-18a2f0c4d1e")]
    pub id: String,
    /// Always `list`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    pub model: String,
    pub data: Vec<ClassifyData>,
    pub usage: Usage,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClassifyData {
    pub index: usize,
    /// The most probable label.
    pub label: String,
    /// Every label's probability, in the model's label order (`/info` lists it): a softmax,
    /// or for a multi-label model a sigmoid per label.
    pub probs: Vec<f32>,
    /// A multi-label model's answer: every label whose probability reaches its threshold
    /// (`/info` lists them), best first; possibly empty. Absent for a single-label model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    pub num_classes: usize,
    /// Always `classify`.
    pub object: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    /// Tokens the model read, special tokens included.
    pub prompt_tokens: usize,
    pub total_tokens: usize,
    pub completion_tokens: usize,
}

/// Classify texts, vLLM style.
#[utoipa::path(
    post,
    path = "/classify",
    tag = "classification",
    request_body(content = ClassifyBody, example = json!({
        "model": "news-topic-e5-small",
        "input": ["The striker scored twice.", "Shares fell 5% after the forecast cut."]
    })),
    responses(
        (status = 200, description = "One entry per input, in order", body = ClassifyResponse),
    )
)]
pub async fn classify(
    state: web::Data<ApiState>,
    http: HttpRequest,
    body: web::Json<Object<ClassifyBody>>,
) -> Result<HttpResponse, ApiError> {
    let Object(body) = body.into_inner();
    let served = state.classifier.serving().spec.name.clone();
    if let Some(model) = body.model.as_deref().filter(|m| *m != served) {
        return Err(ApiError::NotFound(format!(
            "model {}; this server serves {served:?}",
            excerpt(model)
        )));
    }
    let texts = match body.input {
        ClassifyInput::One(text) => vec![text],
        ClassifyInput::Many(texts) => texts,
    };
    let request =
        ClassifyRequest::new(texts, request_deadline(&http, state.config.server.timeout)?);
    let hung_up = disconnected(http.conn_data::<ClientSocket>());
    let classification = state.classifier.classify(request, hung_up).await?;
    let tokens: usize = classification.texts.iter().map(|t| t.tokens).sum();
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let multi_label = classification.multi_label;
    let data = classification
        .texts
        .into_iter()
        .enumerate()
        .map(|(index, text)| ClassifyData {
            index,
            labels: multi_label.then_some(text.assigned),
            label: text
                .ranked
                .into_iter()
                .next()
                .map(|best| best.label)
                .unwrap_or_default(),
            num_classes: text.scores.len(),
            probs: text.scores,
            object: "classify",
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header((MODEL_NAME_HEADER, classification.model.name.clone()))
        .insert_header((MODEL_VERSION_HEADER, classification.model.version.clone()))
        .json(ClassifyResponse {
            id: format!("classify-{:x}", created.as_nanos()),
            object: "list",
            created: created.as_secs(),
            model: classification.model.name,
            data,
            usage: Usage {
                prompt_tokens: tokens,
                total_tokens: tokens,
                completion_tokens: 0,
            },
        }))
}
