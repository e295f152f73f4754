//! The model directory: what a data scientist drops in to ship a new version.
//!
//! A directory holds `model.onnx`, `tokenizer.json` and a Hugging Face style `config.json`
//! with `id2label` (the layout Hugging Face/optimum exports use). This module reads the metadata
//! and checks that the files are there; the tokenizer and the ONNX session check the rest
//! against it. Nothing here is specific to one model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::StartupError;

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
    pub fn load(dir: &Path) -> Result<Self, StartupError> {
        if !dir.is_dir() {
            return Err(StartupError::ModelFile {
                path: dir.to_path_buf(),
                reason: "model directory not found".into(),
            });
        }
        for file in [MODEL_FILE, TOKENIZER_FILE, CONFIG_FILE] {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(StartupError::ModelFile {
                    path,
                    reason: "missing".into(),
                });
            }
        }
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path).map_err(|e| StartupError::ModelFile {
            path: config_path.clone(),
            reason: e.to_string(),
        })?;
        let config: HfConfig =
            serde_json::from_str(&text).map_err(|e| StartupError::ModelFile {
                path: config_path.clone(),
                reason: format!("not valid JSON: {e}"),
            })?;
        let labels =
            labels_in_order(config.id2label).map_err(|reason| StartupError::ModelFile {
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
