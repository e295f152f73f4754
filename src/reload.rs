//! New model versions while serving: where a model comes from, and swapping it under load.
//!
//! A model comes from a directory (`model.dir`) or an MLflow registry URI (`model.uri`, see
//! [`crate::registry`]). A reload is asked for by the registry poll (every
//! `model.poll_interval` seconds, URIs only), by SIGHUP, or by `POST /admin/reload`. It resolves
//! the source; when the version differs from the one serving (a directory is always reloaded),
//! it loads the new version beside the old one through [`model::load`] (graph against tokenizer
//! and labels, warm-up), runs the directory's own `examples.json` if it ships one, and only
//! then swaps it in ([`Classifier::swap`]). A version that fails any step is refused with a log
//! line and `newscls_model_reloads_total{outcome="refused"}`, the serving version stays, and the
//! same version is not retried until the source names another one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::classify::Classifier;
use crate::config::ModelConfig;
use crate::metrics::Metrics;
use crate::model::{self, LoadError, LoadedModel};
use crate::registry::{self, Mlflow, ModelUri, ModelVersion, RegistryError};

/// Why no model could be had at startup.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(
        "{uri}: the registry is unreachable ({reason}) and no cached copy of it exists in {cache}"
    )]
    NoCache {
        uri: String,
        reason: String,
        cache: PathBuf,
    },
    #[error("examples.json: {0}")]
    Examples(String),
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Swapped { from: String, to: String },
    Unchanged { version: String },
    Refused { version: String, reason: String },
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Swapped { .. } => "swapped",
            Outcome::Unchanged { .. } => "unchanged",
            Outcome::Refused { .. } => "refused",
        }
    }
}

/// Where the serving model comes from, and how to load a version of it.
pub struct ModelSource {
    config: ModelConfig,
    uri: Option<ModelUri>,
}

impl ModelSource {
    pub fn new(config: &ModelConfig) -> Result<Self, SourceError> {
        let uri = config.uri.as_deref().map(str::parse).transpose()?;
        Ok(Self {
            config: config.clone(),
            uri,
        })
    }

    /// At startup: the version the source names, else (registry down) the cached one with a
    /// warning, else an error.
    pub fn load_initial(&self) -> Result<LoadedModel, SourceError> {
        let Some(uri) = &self.uri else {
            return Ok(self.load_dir(&self.config.dir, None)?);
        };
        match self.resolve_and_fetch(uri) {
            Ok((version, dir)) => {
                let loaded = self.load_dir(&dir, Some((uri, &version)))?;
                registry::remember(&self.config.cache_dir, uri, &version);
                Ok(loaded)
            }
            Err(RegistryError::Unreachable { url, reason }) => {
                let Some((version, dir)) = registry::cached(&self.config.cache_dir, uri) else {
                    return Err(SourceError::NoCache {
                        uri: uri.to_string(),
                        reason: format!("{url}: {reason}"),
                        cache: self.config.cache_dir.clone(),
                    });
                };
                tracing::warn!(%uri, version, %url, %reason, "model registry unreachable: starting from the cached version");
                Ok(self.load_dir(&dir, Some((uri, &version)))?)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn resolve_and_fetch(&self, uri: &ModelUri) -> Result<(String, PathBuf), RegistryError> {
        let client = Mlflow::from_env(uri)?;
        let version = client.resolve(uri)?;
        let dir = client.fetch(&version, &self.config.cache_dir)?;
        Ok((version.version, dir))
    }

    /// The version the source names now, without downloading it: `None` for a directory.
    fn current_version(&self) -> Result<Option<(Mlflow, ModelVersion)>, RegistryError> {
        match &self.uri {
            None => Ok(None),
            Some(uri) => {
                let client = Mlflow::from_env(uri)?;
                let version = client.resolve(uri)?;
                Ok(Some((client, version)))
            }
        }
    }

    fn load_dir(
        &self,
        dir: &Path,
        registry: Option<(&ModelUri, &str)>,
    ) -> Result<LoadedModel, LoadError> {
        let config = ModelConfig {
            dir: dir.to_path_buf(),
            ..self.config.clone()
        };
        let mut loaded = model::load(&config)?;
        if let Some((uri, version)) = registry {
            loaded.spec.version = version.to_string();
            loaded.source = format!("{uri} (version {version})");
        }
        Ok(loaded)
    }
}

/// One example a model directory ships to check itself with.
#[derive(Deserialize)]
struct Example {
    text: String,
    label: String,
}

/// Reloads on request, one at a time.
pub struct Reloader {
    source: ModelSource,
    classifier: Arc<Classifier>,
    metrics: Arc<Metrics>,
    /// Held while a reload runs; also remembers the last refused version.
    refused: Mutex<Option<String>>,
}

impl Reloader {
    pub fn new(source: ModelSource, classifier: Arc<Classifier>, metrics: Arc<Metrics>) -> Self {
        Self {
            source,
            classifier,
            metrics,
            refused: Mutex::new(None),
        }
    }

    /// Seconds between registry polls; `None` when there is nothing to poll.
    pub fn poll_interval(&self) -> Option<Duration> {
        let seconds = self.source.config.poll_interval;
        (self.source.uri.is_some() && seconds > 0.0).then(|| Duration::from_secs_f64(seconds))
    }

    /// Polls the registry on its own thread for as long as the process runs.
    pub fn spawn_poller(self: &Arc<Self>) {
        let Some(interval) = self.poll_interval() else {
            return;
        };
        let reloader = self.clone();
        std::thread::Builder::new()
            .name("model-poll".into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                reloader.reload(false);
            })
            .expect("spawning the registry poll thread failed. This is a bug.");
    }

    /// [`Reloader::reload`] from async code: on a plain thread, since the registry client blocks
    /// and must not run inside the async runtime.
    pub async fn reload_off_runtime(self: &Arc<Self>, forced: bool) -> Option<Outcome> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        let reloader = self.clone();
        std::thread::Builder::new()
            .name("model-reload".into())
            .spawn(move || {
                let _ = done.send(reloader.reload(forced));
            })
            .ok()?;
        outcome.await.ok()
    }

    /// Checks the source and swaps in a new version if there is one. `forced`: reload even an
    /// unchanged or previously refused version (SIGHUP, the admin endpoint). Blocks.
    pub fn reload(&self, forced: bool) -> Outcome {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        let serving = self.classifier.serving().identity().version;
        let outcome = self.try_reload(&serving, forced, &mut refused);
        match &outcome {
            Outcome::Swapped { from, to } => tracing::info!(from, to, "model version swapped in"),
            Outcome::Unchanged { .. } => tracing::debug!("model version unchanged"),
            Outcome::Refused { version, reason } => {
                tracing::error!(
                    version,
                    reason,
                    "new model version refused; the serving version stays"
                )
            }
        }
        // Polls that find nothing new are not counted: they would drown the real events.
        if forced || !matches!(outcome, Outcome::Unchanged { .. }) {
            self.metrics
                .model_reloads
                .with_label_values(&[outcome.label()])
                .inc();
        }
        outcome
    }

    fn try_reload(&self, serving: &str, forced: bool, refused: &mut Option<String>) -> Outcome {
        let refuse = |version: &str, reason: String| Outcome::Refused {
            version: version.to_string(),
            reason,
        };
        let current = match self.source.current_version() {
            Ok(current) => current,
            Err(e) => return refuse("?", e.to_string()),
        };
        let named = current.as_ref().map(|(_, v)| v.version.clone());
        if let Some(version) = &named {
            let already = version == serving || refused.as_deref() == Some(version.as_str());
            if already && !forced {
                return Outcome::Unchanged {
                    version: serving.to_string(),
                };
            }
        }
        // The version just resolved is the one fetched and loaded: resolving again could name
        // another if the alias moved in between.
        let loaded = match (&self.source.uri, &current) {
            (Some(uri), Some((client, version))) => client
                .fetch(version, &self.source.config.cache_dir)
                .map_err(SourceError::from)
                .and_then(|dir| Ok(self.source.load_dir(&dir, Some((uri, &version.version)))?)),
            _ => self
                .source
                .load_dir(&self.source.config.dir, None)
                .map_err(SourceError::from),
        };
        let version = named.clone().unwrap_or_else(|| "directory".into());
        let loaded = match loaded.and_then(check_examples) {
            Ok(model) => model,
            Err(e) => {
                *refused = named;
                return refuse(&version, e.to_string());
            }
        };
        *refused = None;
        let to = loaded.spec.version.clone();
        // Only a version that loaded may be the one to start from when the registry is down.
        if let Some(uri) = &self.source.uri {
            registry::remember(&self.source.config.cache_dir, uri, &to);
        }
        self.classifier.swap(loaded);
        Outcome::Swapped {
            from: serving.to_string(),
            to,
        }
    }
}

/// A model directory may ship `examples.json`, `[{"text": ..., "label": ...}]`: each must get
/// its label from the loaded model before it may serve.
fn check_examples(mut model: LoadedModel) -> Result<LoadedModel, SourceError> {
    let path = model.spec.dir.join("examples.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(model);
    };
    let examples: Vec<Example> =
        serde_json::from_str(&text).map_err(|e| SourceError::Examples(e.to_string()))?;
    let texts: Vec<String> = examples.iter().map(|e| e.text.clone()).collect();
    let tokenized = model
        .tokenizer
        .encode(&texts, true)
        .map_err(|e| SourceError::Examples(e.to_string()))?;
    let pad = model.tokenizer.pad_id();
    let backend = model
        .backends
        .first_mut()
        .ok_or_else(|| SourceError::Examples("no inference worker".into()))?;
    let logits = backend
        .infer(&crate::inference::PaddedBatch::new(tokenized.iter(), pad))
        .map_err(|e| SourceError::Examples(e.to_string()))?;
    for (example, row) in examples.iter().zip(logits.rows()) {
        let best = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| model.spec.labels[i].as_str())
            .unwrap_or_default();
        if best != example.label {
            return Err(SourceError::Examples(format!(
                "{:.60}: expected {}, the model says {best}",
                example.text, example.label
            )));
        }
    }
    Ok(model)
}
