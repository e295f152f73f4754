//! New model versions while serving: loading the version a [`ModelSource`] names, and swapping
//! it in under load.
//!
//! A reload is asked for by the registry poll (every `model.poll_interval` seconds, sources that
//! can name versions only), by SIGHUP, or by `POST /admin/reload`; one runs at a time, and the
//! admin endpoint is told [`Busy`] while one does. It asks the source for its version; when the
//! version differs from the one serving (a directory is always reloaded), it loads it beside
//! the old one through [`model::load_version`] (graph against tokenizer and labels, warm-up),
//! checks that the labels are the serving ones (clients index KServe and vLLM outputs by label
//! position) unless `model.allow_label_change`, runs the directory's own `examples.json` if it
//! ships one, and only then swaps it in ([`Classifier::swap`]).
//!
//! The shadow challenger (`shadow.uri`) has a reloader of its own ([`Reloader::for_challenger`]):
//! the same checks (its labels may differ: they are compared by name), swapped into the
//! challenger slot, counted in `newscls_shadow_reloads_total`. Both share the download cache, so
//! when the champion's alias moves to the version the challenger runs, its files are already
//! there, verified, and nothing is downloaded again.
//!
//! Outcomes, each logged and counted in `newscls_model_reloads_total{outcome}`: `swapped`;
//! `unchanged`; `refused` — the version is at fault, the serving one stays, and the same
//! version is not tried again until the source names another; `unavailable` — the source could
//! not be asked or read (registry down, 5xx, credentials, deadline): nothing is said about the
//! version, the next poll tries again; `panicked` — a bug, caught so polling goes on.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::infra::config::ModelConfig;
use crate::infra::events::{ReloadFinished, Role};
use crate::infra::metrics::Metrics;
use crate::lifecycle::source::{self, Check, Fetched, ModelSource, SourceError};
use crate::pipeline::classify::Classifier;
use crate::pipeline::model::{self, LoadError, LoadedModel};

/// Why a version could not be had, at startup or in a reload.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{source_name}: the model source is unavailable ({reason}) and no cached copy of it exists in {cache}")]
    NoCache {
        source_name: String,
        reason: String,
        cache: PathBuf,
    },
    #[error("examples.json: {0}")]
    Examples(String),
    #[error("the labels changed from {serving:?} to {new:?}; clients index outputs by label position (set model.allow_label_change: true to accept)")]
    LabelsChanged {
        serving: Vec<String>,
        new: Vec<String>,
    },
}

impl ReloadError {
    /// The version is at fault (as opposed to the source being unavailable).
    fn blames_version(&self) -> bool {
        match self {
            ReloadError::Source(e) => e.blames_version(),
            _ => true,
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Swapped { from: String, to: String },
    Unchanged { version: String },
    Refused { version: String, reason: String },
    Unavailable { reason: String },
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Swapped { .. } => "swapped",
            Outcome::Unchanged { .. } => "unchanged",
            Outcome::Refused { .. } => "refused",
            Outcome::Unavailable { .. } => "unavailable",
        }
    }
}

/// A reload is already running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// At startup: the version the source names, else (source unavailable) the cached copy with a
/// warning, else an error.
pub fn load_initial(
    source: &dyn ModelSource,
    config: &ModelConfig,
) -> Result<LoadedModel, ReloadError> {
    let fetched = match source.check(&|_| true) {
        Ok(Check::Fetched(fetched)) => fetched,
        Ok(Check::Unchanged(_)) => unreachable!("every version is wanted at startup"),
        Err(e) if !e.blames_version() => {
            let Some(cached) = source.cached() else {
                return Err(ReloadError::NoCache {
                    source_name: source.describe(),
                    reason: e.to_string(),
                    cache: config.cache_dir.clone(),
                });
            };
            tracing::warn!(source = %source.describe(), version = cached.version.as_deref().unwrap_or("?"), error = %e,
                "model source unavailable: starting from the cached version");
            cached
        }
        Err(e) => return Err(e.into()),
    };
    let loaded = check_examples(model::load_version(config, &fetched)?)?;
    source.served(&fetched);
    Ok(loaded)
}

/// One example a model directory ships to check itself with.
#[derive(Deserialize)]
struct Example {
    text: String,
    label: String,
}

/// Reloads on request, one at a time.
pub struct Reloader {
    /// Which model it keeps current: the one in service, or the shadow challenger.
    role: Role,
    source: Box<dyn ModelSource>,
    config: ModelConfig,
    classifier: Arc<Classifier>,
    metrics: Arc<Metrics>,
    /// Held while a reload runs; remembers the last refused version.
    refused: Mutex<Option<String>>,
    /// Set while a reload runs or is about to (the admin endpoint's 429).
    busy: AtomicBool,
}

impl Reloader {
    pub fn new(
        source: Box<dyn ModelSource>,
        config: &ModelConfig,
        classifier: Arc<Classifier>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            role: Role::Champion,
            source,
            config: config.clone(),
            classifier,
            metrics,
            refused: Mutex::new(None),
            busy: AtomicBool::new(false),
        }
    }

    /// This reloader for the shadow challenger instead: its `config` is the challenger's (see
    /// [`crate::infra::config::ShadowConfig::model_config`]), and the classifier has a shadow slot.
    pub fn for_challenger(self) -> Self {
        Self {
            role: Role::Challenger,
            ..self
        }
    }

    /// What this reloader keeps current, for logs.
    fn what(&self) -> &'static str {
        match self.role {
            Role::Champion => "model",
            Role::Challenger => "challenger model",
        }
    }

    /// The version in the slot now; empty while the challenger slot is empty.
    fn slot_version(&self) -> String {
        match self.role {
            Role::Champion => self.classifier.serving().identity().version,
            Role::Challenger => self
                .classifier
                .shadow()
                .and_then(|s| s.challenger())
                .map(|c| c.spec.version.clone())
                .unwrap_or_default(),
        }
    }

    fn count(&self, outcome: &str) {
        self.metrics.emit(ReloadFinished {
            role: self.role,
            outcome,
        });
    }

    /// Puts a loaded version in the slot.
    fn fill(&self, loaded: LoadedModel) {
        match self.role {
            Role::Champion => self.classifier.swap(loaded),
            Role::Challenger => match self.classifier.shadow() {
                Some(shadow) => shadow.swap(loaded),
                None => {
                    tracing::error!("a challenger loaded without a shadow slot. This is a bug.")
                }
            },
        }
    }

    /// Seconds between polls; `None` when there is nothing to poll.
    pub fn poll_interval(&self) -> Option<Duration> {
        let seconds = self.config.poll_interval;
        (self.source.polls() && seconds > 0.0).then(|| Duration::from_secs_f64(seconds))
    }

    /// Polls the source on its own thread for as long as the process runs. A panic in a
    /// reload is logged and counted, and polling goes on.
    pub fn spawn_poller(self: &Arc<Self>) {
        let Some(interval) = self.poll_interval() else {
            return;
        };
        let reloader = self.clone();
        let name = match self.role {
            Role::Champion => "model-poll",
            Role::Challenger => "shadow-poll",
        };
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || loop {
                std::thread::sleep(interval);
                // Busy: a reload asked for by hand is running; it answers this poll's question.
                let _ = reloader.reload(false);
            })
            .expect("spawning the registry poll thread failed. This is a bug.");
    }

    /// The challenger's first version, loaded on its own thread so the champion serves
    /// meanwhile; then polls like [`Reloader::spawn_poller`]. A challenger that cannot be
    /// loaded is logged and counted, and the service runs without one until a later check
    /// (poll or SIGHUP) finds a version that loads.
    pub fn start_challenger(self: &Arc<Self>) {
        let reloader = self.clone();
        std::thread::Builder::new()
            .name("shadow-load".into())
            .spawn(move || {
                if let Ok(held) = reloader.hold() {
                    match load_initial(reloader.source.as_ref(), &reloader.config) {
                        Ok(loaded) => {
                            let version = loaded.spec.version.clone();
                            reloader.fill(loaded);
                            tracing::info!(version, source = %reloader.source.describe(), "challenger model loaded");
                            reloader.count("swapped");
                        }
                        Err(e) => {
                            tracing::error!(error = %e, source = %reloader.source.describe(),
                                "challenger model not loaded; serving without a shadow until a version loads");
                            reloader.count(if e.blames_version() { "refused" } else { "unavailable" });
                        }
                    }
                    drop(held);
                }
                reloader.spawn_poller();
            })
            .expect("spawning the challenger's loading thread failed. This is a bug.");
    }

    /// [`Reloader::reload`] from async code, on the blocking pool (the registry client blocks).
    pub async fn reload_off_runtime(self: &Arc<Self>, forced: bool) -> Result<Outcome, Busy> {
        let held = self.hold()?;
        let reloader = self.clone();
        tokio::task::spawn_blocking(move || {
            let _held = held;
            reloader.reload_held(forced)
        })
        .await
        .map_err(|_| Busy)
    }

    /// Marks a reload as running until the guard drops; `Err(Busy)` if one already is.
    fn hold(self: &Arc<Self>) -> Result<HeldReload, Busy> {
        if self.busy.swap(true, Ordering::SeqCst) {
            return Err(Busy);
        }
        Ok(HeldReload(self.clone()))
    }

    /// Checks the source and swaps in a new version if there is one; `Err(Busy)` at once when
    /// a reload is already running, so callers never pile up behind it. `forced`: reload even
    /// an unchanged or previously refused version (SIGHUP, the admin endpoint). Blocks.
    pub fn reload(self: &Arc<Self>, forced: bool) -> Result<Outcome, Busy> {
        let _held = self.hold()?;
        Ok(self.reload_held(forced))
    }

    fn reload_held(&self, forced: bool) -> Outcome {
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
            let serving = self.slot_version();
            self.try_reload(&serving, forced, &mut refused)
        }));
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(panic) => {
                let reason = panic_message(&panic);
                tracing::error!(
                    reason,
                    what = self.what(),
                    "reload panicked; the serving version stays. This is a bug."
                );
                self.count("panicked");
                return Outcome::Unavailable {
                    reason: format!("the reload panicked: {reason}"),
                };
            }
        };
        let what = self.what();
        match &outcome {
            Outcome::Swapped { from, to } => {
                tracing::info!(what, from, to, "model version swapped in")
            }
            Outcome::Unchanged { .. } => tracing::debug!(what, "model version unchanged"),
            Outcome::Refused { version, reason } => tracing::error!(
                what,
                version,
                reason,
                "new model version refused; the serving version stays"
            ),
            Outcome::Unavailable { reason } => tracing::warn!(
                what,
                reason,
                "model source unavailable; the serving version stays, the next check tries again"
            ),
        }
        // Polls that find nothing new are not counted: they would drown the real events.
        if forced || !matches!(outcome, Outcome::Unchanged { .. }) {
            self.count(outcome.label());
        }
        outcome
    }

    fn try_reload(&self, serving: &str, forced: bool, refused: &mut Option<String>) -> Outcome {
        let skip = refused.clone();
        let wanted =
            |version: &str| forced || (version != serving && skip.as_deref() != Some(version));
        let fetched = match self.source.check(&wanted) {
            Ok(Check::Unchanged(_)) => {
                return Outcome::Unchanged {
                    version: serving.to_string(),
                }
            }
            Ok(Check::Fetched(fetched)) => fetched,
            Err(e) if e.blames_version() => {
                // The version is unknown when its own answer was refused; "?" is not remembered.
                return Outcome::Refused {
                    version: "?".into(),
                    reason: e.to_string(),
                };
            }
            Err(e) => {
                return Outcome::Unavailable {
                    reason: e.to_string(),
                }
            }
        };
        let version = fetched
            .version
            .clone()
            .unwrap_or_else(|| "directory".into());
        match self.load_checked(&fetched) {
            Ok(loaded) => {
                *refused = None;
                let to = loaded.spec.version.clone();
                self.fill(loaded);
                // Only a version that loaded may be the one to start from when the source is down.
                self.source.served(&fetched);
                Outcome::Swapped {
                    from: serving.to_string(),
                    to,
                }
            }
            Err(e) if e.blames_version() => {
                *refused = fetched.version;
                Outcome::Refused {
                    version,
                    reason: e.to_string(),
                }
            }
            Err(e) => Outcome::Unavailable {
                reason: e.to_string(),
            },
        }
    }

    fn load_checked(&self, fetched: &Fetched) -> Result<LoadedModel, ReloadError> {
        let loaded = model::load_version(&self.config, fetched)?;
        let serving = self.classifier.serving().spec.labels.clone();
        // A challenger's labels are compared with the champion's by name: it may change them.
        if self.role == Role::Champion && loaded.spec.labels != serving {
            if !self.config.allow_label_change {
                return Err(ReloadError::LabelsChanged {
                    serving,
                    new: loaded.spec.labels,
                });
            }
            tracing::warn!(from = ?serving, to = ?loaded.spec.labels, "the new version's labels differ (model.allow_label_change)");
        }
        check_examples(loaded)
    }
}

/// Clears [`Reloader::busy`] when dropped, also when the reload panicked.
struct HeldReload(Arc<Reloader>);

impl Drop for HeldReload {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::SeqCst);
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

/// A model directory may ship `examples.json`, `[{"text": ..., "label": ...}]`: each must get
/// its label from the loaded model before it may serve. A file that is there but cannot be
/// read or parsed refuses the version: it must not go live unchecked.
fn check_examples(mut model: LoadedModel) -> Result<LoadedModel, ReloadError> {
    let path = model.spec.dir.join("examples.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(model),
        Err(e) => return Err(ReloadError::Examples(format!("unreadable: {e}"))),
    };
    let examples: Vec<Example> =
        serde_json::from_str(&text).map_err(|e| ReloadError::Examples(e.to_string()))?;
    let texts: Vec<String> = examples.iter().map(|e| e.text.clone()).collect();
    let tokenized = model
        .tokenizer
        .encode(&texts, true)
        .map_err(|e| ReloadError::Examples(e.to_string()))?;
    let pad = model.tokenizer.pad_id();
    let backend = model
        .backends
        .first_mut()
        .ok_or_else(|| ReloadError::Examples("no inference worker".into()))?;
    let logits = backend
        .infer(&crate::pipeline::inference::PaddedBatch::new(
            tokenized.iter(),
            pad,
        ))
        .map_err(|e| ReloadError::Examples(e.to_string()))?;
    for (example, row) in examples.iter().zip(logits.rows()) {
        let best = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| model.spec.labels[i].as_str())
            .unwrap_or_default();
        if best != example.label {
            return Err(ReloadError::Examples(format!(
                "{:.60}: expected {}, the model says {best}",
                example.text, example.label
            )));
        }
    }
    Ok(model)
}

/// The source `config` names, for [`load_initial`] and the [`Reloader`].
pub fn source(config: &ModelConfig) -> Result<Box<dyn ModelSource>, ReloadError> {
    Ok(source::from_config(config)?)
}
