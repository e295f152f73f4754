//! The model directory, and the one way to load it.
//!
//! A directory holds `model.onnx`, `tokenizer.json` and a Hugging Face style `config.json`
//! with `id2label` (the layout Hugging Face/optimum exports use): what a data scientist drops in
//! to ship a new version. [`ModelSpec`] reads the metadata and checks that the files are there;
//! [`load`] then builds everything needed to serve it (tokenizer, ONNX Runtime, one session per
//! inference worker), checks the graph against the tokenizer and the labels, and runs a warm-up
//! batch. The app, the parity test and the ceiling benchmark all load through [`load`], so they
//! measure and test what is served. Nothing here is specific to one model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::ModelConfig;
use crate::inference::onnx::{
    default_library_path, init_runtime, runtime_version, OnnxBackend, OnnxOptions,
};
use crate::inference::{Backend, PaddedBatch, SetupError};
use crate::tokenize::{TextTokenizer, TokenizedText, TokenizerLoadError};

/// Why a model could not be loaded. At startup the process exits with this as one line.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("model file {path}: {reason}")]
    ModelFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerLoadError),
    #[error(transparent)]
    Backend(#[from] SetupError),
    #[error("warm-up inference failed: {0}")]
    Warmup(String),
}

pub const MODEL_FILE: &str = "model.onnx";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const CONFIG_FILE: &str = "config.json";

/// Metadata of a model directory, validated.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub dir: PathBuf,
    /// The directory name, e.g. `news-topic-e5-small`.
    pub name: String,
    /// `model_version` from config.json, or "unversioned".
    pub version: String,
    /// Labels in logit order.
    pub labels: Vec<String>,
    /// `max_length` from config.json, if the export recorded one.
    pub max_length: Option<usize>,
}

#[derive(Deserialize)]
struct HfConfig {
    id2label: Option<BTreeMap<String, String>>,
    model_version: Option<String>,
    max_length: Option<usize>,
}

impl ModelSpec {
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        if !dir.is_dir() {
            return Err(LoadError::ModelFile {
                path: dir.to_path_buf(),
                reason: "model directory not found".into(),
            });
        }
        for file in [MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE] {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(LoadError::ModelFile {
                    path,
                    reason: "missing".into(),
                });
            }
        }
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path).map_err(|e| LoadError::ModelFile {
            path: config_path.clone(),
            reason: e.to_string(),
        })?;
        let config: HfConfig = serde_json::from_str(&text).map_err(|e| LoadError::ModelFile {
            path: config_path.clone(),
            reason: format!("not valid JSON: {e}"),
        })?;
        let labels = labels_in_order(config.id2label).map_err(|reason| LoadError::ModelFile {
            path: config_path,
            reason,
        })?;
        let name = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string());
        Ok(Self {
            dir: dir.to_path_buf(),
            name,
            version: config.model_version.unwrap_or_else(|| "unversioned".into()),
            labels,
            max_length: config.max_length,
        })
    }

    pub fn model_path(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(TOKENIZER_FILE)
    }
}

/// A model ready to serve: its metadata, its tokenizer, and one warmed-up backend per
/// inference worker.
pub struct LoadedModel {
    pub spec: ModelSpec,
    pub tokenizer: TextTokenizer,
    pub backends: Vec<Box<dyn Backend>>,
    /// Execution provider in use, e.g. `cpu` or `cuda`.
    pub provider: String,
    /// Version of the ONNX Runtime library actually loaded.
    pub runtime_version: String,
}

/// Loads and checks the model directory `config.dir`: metadata -> tokenizer -> ONNX Runtime ->
/// one session per inference worker -> a warm-up batch through each.
pub fn load(config: &ModelConfig) -> Result<LoadedModel, LoadError> {
    let spec = ModelSpec::load(&config.dir)?;
    let tokenizer = TextTokenizer::load(
        &spec.tokenizer_path(),
        config.max_length.or(spec.max_length),
    )?;
    let library = config
        .onnxruntime_library
        .clone()
        .unwrap_or_else(default_library_path);
    let env = init_runtime(&library)?;
    let options = OnnxOptions {
        device: config.device,
        intra_op_threads: config.intra_op_threads,
        intra_op_spinning: config.intra_op_spinning,
    };
    let mut backends: Vec<Box<dyn Backend>> = Vec::with_capacity(config.inference_workers);
    for _ in 0..config.inference_workers {
        let mut backend = OnnxBackend::load(&env, &spec.model_path(), &options, spec.labels.len())?;
        warm_up(&mut backend, &tokenizer)?;
        backends.push(Box::new(backend));
    }
    let provider = backends
        .first()
        .map(|b| b.provider().to_string())
        .unwrap_or_default();
    Ok(LoadedModel {
        spec,
        tokenizer,
        backends,
        provider,
        runtime_version: runtime_version(),
    })
}

/// One real batch through the model before it serves, so the first client does not pay for
/// ONNX Runtime's lazy initialisation, and a model that cannot run fails now.
fn warm_up(backend: &mut dyn Backend, tokenizer: &TextTokenizer) -> Result<(), LoadError> {
    let texts = [
        "Markets rallied after the central bank's decision.".to_string(),
        "코스피 상승".to_string(),
    ];
    let tokenized = tokenizer
        .encode(&texts, true)
        .map_err(|e| LoadError::Warmup(e.to_string()))?;
    let batch = PaddedBatch::new(tokenized.iter(), tokenizer.pad_id());
    let logits = backend
        .infer(&batch)
        .map_err(|e| LoadError::Warmup(e.to_string()))?;
    // The highest id the tokenizer can produce must exist in the model's embedding table;
    // otherwise some texts would fail at request time instead of now.
    let highest = TokenizedText {
        input_ids: vec![tokenizer.vocab_size() as i64 - 1],
        type_ids: vec![0],
    };
    backend
        .infer(&PaddedBatch::new([&highest], tokenizer.pad_id()))
        .map_err(|e| {
            LoadError::Warmup(format!(
                "the model rejects the tokenizer's highest id {}: {e}",
                highest.input_ids[0]
            ))
        })?;
    if logits.values.iter().any(|v| !v.is_finite()) {
        return Err(LoadError::Warmup("model returned non-finite logits".into()));
    }
    Ok(())
}

/// `id2label` keys are strings ("0", "1", ...); they must cover 0..n exactly.
fn labels_in_order(id2label: Option<BTreeMap<String, String>>) -> Result<Vec<String>, String> {
    let map = id2label.ok_or("no id2label: the service needs label names")?;
    if map.is_empty() {
        return Err("id2label is empty".into());
    }
    let count = map.len();
    let mut labels = vec![None; count];
    for (key, label) in map {
        let index: usize = key
            .parse()
            .map_err(|_| format!("id2label key {key:?} is not an integer"))?;
        let slot = labels
            .get_mut(index)
            .ok_or(format!("id2label ids must be 0..{count}, found {index}"))?;
        *slot = Some(label);
    }
    Ok(labels.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn labels_follow_numeric_ids_not_string_order() {
        let pairs: Vec<(String, String)> =
            (0..12).map(|i| (i.to_string(), format!("l{i}"))).collect();
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let labels = labels_in_order(map(&refs)).expect("valid");
        assert_eq!(labels[2], "l2");
        assert_eq!(labels[10], "l10");
    }

    #[test]
    fn gaps_and_bad_keys_are_rejected() {
        assert!(labels_in_order(map(&[("0", "a"), ("2", "b")])).is_err());
        assert!(labels_in_order(map(&[("x", "a")])).is_err());
        assert!(labels_in_order(None).is_err());
    }
}
