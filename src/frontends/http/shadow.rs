//! `GET /shadow`: how the shadow challenger compares with the champion on live texts, and the
//! challenger's part of `/info`.

use actix_web::{web, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::ApiState;
use crate::pipeline::classify::{Shadow, Summary};

/// The challenger model in the shadow slot.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChallengerInfo {
    #[schema(example = "news-topic")]
    pub name: String,
    #[schema(example = "4")]
    pub version: String,
    /// Where it came from: a directory, or a registry URI and its version.
    #[schema(example = "models:/news-topic@challenger (version 4)")]
    pub source: String,
    /// The ONNX file in use, relative to its directory.
    pub file: String,
    /// Execution provider: `cpu` or `cuda`.
    pub provider: String,
    /// When it was loaded, in Unix seconds.
    pub loaded_at_unix: f64,
}

/// The shadow in `/info`: the setting, the challenger, and the agreement so far.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShadowInfo {
    /// `shadow.uri`.
    pub uri: String,
    /// Share of texts mirrored.
    pub sample: f64,
    /// Null until a challenger version has loaded.
    pub challenger: Option<ChallengerInfo>,
    /// Texts mirrored since the current champion/challenger pair began.
    pub mirrored: u64,
    /// Share of compared texts with the same top label; null before the first.
    pub agreement: Option<f64>,
}

/// One label, with the champion's answers as the reference.
#[derive(Debug, Serialize, ToSchema)]
pub struct LabelReport {
    pub label: String,
    /// Texts the champion gave this label.
    pub champion: u64,
    /// Texts the challenger gave this label.
    pub challenger: u64,
    /// Of the challenger's texts with this label, the share the champion labelled so too.
    pub precision: Option<f64>,
    /// Of the champion's texts with this label, the share the challenger labelled so too.
    pub recall: Option<f64>,
}

/// Texts with this pair of top labels.
#[derive(Debug, Serialize, ToSchema)]
pub struct LabelPair {
    pub champion: String,
    pub challenger: String,
    pub texts: u64,
}

/// A label and its score.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopLabel {
    pub label: String,
    pub score: f32,
}

/// A text the two models labelled differently (`shadow.keep_disagreements`).
#[derive(Debug, Serialize, ToSchema)]
pub struct DisagreementReport {
    /// The text's first 200 characters.
    pub text: String,
    pub champion: TopLabel,
    pub challenger: TopLabel,
    pub at_unix: f64,
}

/// The comparison since the current champion/challenger pair began (it starts over when
/// either changes version).
#[derive(Debug, Serialize, ToSchema)]
pub struct ShadowReport {
    #[serde(flatten)]
    pub info: ShadowInfo,
    /// The version callers are answered from.
    #[schema(example = "3")]
    pub champion_version: String,
    pub since_unix: f64,
    /// Texts both models answered.
    pub compared: u64,
    pub agreed: u64,
    pub disagreed: u64,
    /// Mirrored texts the challenger did not compute: its queue was full, or they expired.
    pub dropped: u64,
    /// Mirrored texts the challenger failed on.
    pub failed: u64,
    /// Every label either model gave, by name.
    pub labels: Vec<LabelReport>,
    /// The live confusion matrix, champion by challenger.
    pub pairs: Vec<LabelPair>,
    /// The most recent disagreements, newest first; empty unless `shadow.keep_disagreements`.
    pub disagreements: Vec<DisagreementReport>,
}

fn unix(time: std::time::SystemTime) -> f64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The shadow's part of `/info`.
pub fn info(shadow: &Shadow) -> ShadowInfo {
    info_from(shadow, &shadow.summary())
}

fn info_from(shadow: &Shadow, summary: &Summary) -> ShadowInfo {
    ShadowInfo {
        uri: shadow.settings().uri.clone().unwrap_or_default(),
        sample: shadow.settings().sample,
        challenger: shadow.challenger().map(|model| ChallengerInfo {
            name: model.spec.name.clone(),
            version: model.spec.version.clone(),
            source: model.source.clone(),
            file: model.file.display().to_string(),
            provider: model.device.name().to_string(),
            loaded_at_unix: unix(model.loaded_at),
        }),
        mirrored: summary.mirrored(),
        agreement: summary.agreement(),
    }
}

/// How the shadow challenger compares with the champion. 404 unless `shadow.uri` is set.
#[utoipa::path(get, path = "/shadow", tag = "operations",
    responses((status = 200, description = "The comparison so far", body = ShadowReport)))]
pub async fn report(state: web::Data<ApiState>) -> Result<HttpResponse, ApiError> {
    let Some(shadow) = state.classifier.shadow() else {
        return Err(ApiError::NotFound(
            "GET /shadow (set shadow.uri to run a challenger beside the model)".into(),
        ));
    };
    let summary = shadow.summary();
    let compared = summary.compared();
    let agreed = summary.agreed();
    Ok(HttpResponse::Ok().json(ShadowReport {
        info: info_from(shadow, &summary),
        champion_version: state.classifier.serving().spec.version.clone(),
        since_unix: unix(summary.since),
        compared,
        agreed,
        disagreed: compared - agreed,
        dropped: summary.dropped,
        failed: summary.failed,
        labels: summary
            .per_label()
            .into_iter()
            .map(|l| LabelReport {
                label: l.label,
                champion: l.champion,
                challenger: l.challenger,
                precision: l.precision,
                recall: l.recall,
            })
            .collect(),
        pairs: summary
            .pairs
            .iter()
            .map(|(champion, challenger, texts)| LabelPair {
                champion: champion.clone(),
                challenger: challenger.clone(),
                texts: *texts,
            })
            .collect(),
        disagreements: summary
            .disagreements
            .into_iter()
            .map(|d| DisagreementReport {
                text: d.excerpt,
                champion: TopLabel {
                    label: d.champion.0,
                    score: d.champion.1,
                },
                challenger: TopLabel {
                    label: d.challenger.0,
                    score: d.challenger.1,
                },
                at_unix: unix(d.at),
            })
            .collect(),
    }))
}
