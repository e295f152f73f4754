//! `shadow`: a challenger version beside the served one.

use serde::{Deserialize, Serialize};

use super::ModelConfig;
use std::path::PathBuf;

/// A shadow challenger: a second model version that sees the texts the champion (`model`)
/// answers and answers no one; off unless `uri` is set.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowConfig {
    /// A model directory, or an MLflow registry model (`models:/<name>@<alias>`,
    /// `models:/<name>/<version>`), loaded, cached and polled like `model.uri`; null: off.
    pub uri: Option<String>,
    /// Share of texts mirrored to the challenger, 0 to 1.
    pub sample: f64,
    /// Mirrored texts waiting for the challenger; past it a mirrored text is dropped (and
    /// counted), never waited for.
    pub max_queue: usize,
    /// ONNX Runtime threads of the challenger's session (CPU); 0 lets ONNX Runtime decide.
    pub intra_op_threads: usize,
    /// The most recent disagreements kept for `GET /shadow`, with their texts' first 200
    /// characters; 0 keeps none (texts may be sensitive).
    pub keep_disagreements: usize,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        Self {
            uri: None,
            sample: 1.0,
            max_queue: 256,
            intra_op_threads: 1,
            keep_disagreements: 0,
        }
    }
}

impl ShadowConfig {
    /// How the challenger is loaded: the champion's settings (device, cache, polling, limits)
    /// with the challenger's source, its own name, one inference worker whose ONNX Runtime
    /// threads are capped and do not spin (they would take CPU from the champion).
    pub fn model_config(&self, champion: &ModelConfig) -> Option<ModelConfig> {
        let uri = self.uri.as_ref()?;
        let (dir, uri) = if uri.starts_with("models:/") {
            (champion.dir.clone(), Some(uri.clone()))
        } else {
            (PathBuf::from(uri), None)
        };
        Some(ModelConfig {
            dir,
            uri,
            name: None,
            file: None,
            allow_label_change: true,
            inference_workers: Some(1),
            intra_op_threads: self.intra_op_threads,
            intra_op_spinning: false,
            ..champion.clone()
        })
    }
}
