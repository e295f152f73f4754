//! The model directory, and the one way to load it.
//!
//! A directory holds one or more ONNX files, `tokenizer.json` and a Hugging Face style
//! `config.json` with `id2label` (the layout Hugging Face/optimum exports use): what a data
//! scientist drops in to ship a new version. ONNX files follow the naming of Hugging Face's
//! exports (transformers.js, optimum), at the top or under `onnx/`: `model.onnx` (full
//! precision), `model_fp16.onnx`, `model_quantized.onnx` (8-bit), `model_int8.onnx`,
//! `model_uint8.onnx`, `model_q4.onnx`. The device picks the variant: a quantized one on the CPU,
//! fp16 (else fp32) on a GPU; `model.file` overrides the choice. A graph whose quantized
//! operators have no CUDA kernel is never run on CUDA: with `device: cuda` loading fails and
//! says what to export, with `auto` the CPU is used. [`ModelSpec`] reads the metadata and
//! finds the files;
//! [`load`] then builds everything needed to serve it (tokenizer, ONNX Runtime, one session per
//! inference worker), checks the graph against the tokenizer and the labels, and runs a warm-up
//! batch. The app, the parity test and the ceiling benchmark all load through [`load`], so they
//! measure and test what is served. Nothing here is specific to one model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::infra::config::{DeviceChoice, ModelConfig, RescoreChoice};
use crate::infra::device::{Device, Precision};
use crate::pipeline::inference::graph::GraphOps;
use crate::pipeline::inference::graph_capture::GraphStats;
use crate::pipeline::inference::onnx::{
    default_library_path, init_runtime, runtime_version, OnnxBackend, OnnxOptions,
};
use crate::pipeline::inference::rescore::{RescoreStats, RescoringBackend};
use crate::pipeline::inference::{Backend, PaddedBatch, SetupError};
use crate::pipeline::postprocess::{ranked, ScoreFunction};
use crate::pipeline::tokenize::{TextTokenizer, TokenizedText, TokenizerLoadError};

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
    /// The device asked for cannot serve any file of this model well.
    #[error("{0}")]
    Device(String),
}

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
    /// The ONNX files found, in the order of [`Precision`].
    pub variants: Vec<Variant>,
    /// Logits are divided by it before softmax or sigmoid, so that a score means what it says
    /// (a 0.9 right nine times in ten): `calibration.temperature` in config.json, fitted on
    /// held-out data at export (`newscls eval --fit-temperature`); 1 when absent.
    pub temperature: f32,
    /// What the head was trained for: one label per text, or independent labels.
    pub head: Head,
    /// Which precise file answers the quantized variant's close calls, and below which margin
    /// (config.json's `rescore` block, written at export).
    pub rescore: Option<RescoreSpec>,
}

/// config.json's `rescore` block: on a CPU, a text whose top-two logit margin on the quantized
/// variant is below `below_margin` is run again on `file` and answered from there
/// ([`crate::pipeline::inference::rescore`]). `training/rescore_margin.py` chooses the margin:
/// the largest margin at which the quantized variant's top label differed from full
/// precision's on held-out articles, times a safety factor.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RescoreSpec {
    pub below_margin: f32,
    /// An ONNX file of the directory, e.g. `model_fp16.onnx`.
    pub file: PathBuf,
}

impl RescoreSpec {
    fn check(&self) -> Result<(), String> {
        if !(self.below_margin.is_finite() && self.below_margin > 0.0) {
            return Err(format!(
                "rescore.below_margin must be a positive number, not {}",
                self.below_margin
            ));
        }
        let inside = self
            .file
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside || self.file.as_os_str().is_empty() {
            return Err(format!(
                "rescore.file must name a file inside the model directory, not {:?}",
                self.file
            ));
        }
        Ok(())
    }
}

/// Re-scoring in force for a loaded model: its file and margin, and what it has done.
#[derive(Debug, Clone)]
pub struct Rescoring {
    pub spec: RescoreSpec,
    pub stats: Arc<RescoreStats>,
}

/// One ONNX file of a model directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Path relative to the model directory, e.g. `model_fp16.onnx` or `onnx/model.onnx`.
    pub file: PathBuf,
    pub precision: Precision,
}

/// File names of each precision, in order of preference within it.
const VARIANT_NAMES: &[(&str, Precision)] = &[
    ("model_quantized.onnx", Precision::Quantized8),
    ("model_int8.onnx", Precision::Quantized8),
    ("model_uint8.onnx", Precision::Quantized8),
    ("model_q4.onnx", Precision::Quantized4),
    ("model.onnx", Precision::Fp32),
    ("model_fp16.onnx", Precision::Fp16),
];

#[derive(Deserialize)]
struct HfConfig {
    id2label: Option<BTreeMap<String, String>>,
    model_version: Option<String>,
    max_length: Option<usize>,
    /// What the exporter trained the head for (Hugging Face's `problem_type`); absent for most
    /// single-label exports.
    problem_type: Option<String>,
    /// newscls's own block: which precise file answers close calls (see [`RescoreSpec`]).
    rescore: Option<RescoreSpec>,
    /// A multi-label head's decision thresholds, label name to probability.
    label_thresholds: Option<BTreeMap<String, f32>>,
    /// newscls's own block: how the scores were calibrated. (Not a top-level `temperature`:
    /// Hugging Face configs use that name for text generation.)
    calibration: Option<CalibrationConfig>,
}

#[derive(Deserialize)]
struct CalibrationConfig {
    temperature: f32,
}

/// What the classification head was trained for, from config.json's `problem_type`: it decides
/// how logits become scores by default and which labels a text is given.
#[derive(Debug, Clone, PartialEq)]
pub enum Head {
    /// One label per text (`single_label_classification`, or no `problem_type`): the labels
    /// compete in a softmax, and a text's label is the best one.
    SingleLabel,
    /// Independent labels (`multi_label_classification`): a sigmoid per label, and a text is
    /// given every label whose score reaches its threshold (`label_thresholds` in config.json,
    /// label name to threshold; 0.5 for a label it does not name). Thresholds are in label order.
    MultiLabel { thresholds: Vec<f32> },
}

/// Hugging Face's name for each [`Head`].
pub const SINGLE_LABEL: &str = "single_label_classification";
pub const MULTI_LABEL: &str = "multi_label_classification";

/// A label's threshold when `label_thresholds` does not name it: a sigmoid's even odds, the
/// decision rule a multi-label head is trained for.
pub const DEFAULT_THRESHOLD: f32 = 0.5;

impl Head {
    /// The head `problem_type` names, with its thresholds. Refuses a head newscls would serve
    /// wrong (a regression output read as class scores looks right and is not), thresholds for
    /// a single-label head, and thresholds that are not labels or not in (0, 1).
    fn read(
        problem_type: Option<&str>,
        thresholds: Option<&BTreeMap<String, f32>>,
        labels: &[String],
    ) -> Result<Self, String> {
        match problem_type {
            None | Some(SINGLE_LABEL) => match thresholds {
                Some(_) => Err(format!(
                    "label_thresholds are for a {MULTI_LABEL:?} head; this one is single-label \
                     (its text's label is the best one)"
                )),
                None => Ok(Head::SingleLabel),
            },
            Some(MULTI_LABEL) => {
                let given = thresholds.cloned().unwrap_or_default();
                if let Some(unknown) = given.keys().find(|name| !labels.contains(name)) {
                    return Err(format!(
                        "label_thresholds names {unknown:?}, which is not one of id2label's labels"
                    ));
                }
                if let Some((name, t)) = given.iter().find(|(_, t)| !(**t > 0.0 && **t < 1.0)) {
                    return Err(format!(
                        "label_thresholds[{name:?}] is {t}: a threshold is a probability \
                         strictly between 0 and 1"
                    ));
                }
                Ok(Head::MultiLabel {
                    thresholds: labels
                        .iter()
                        .map(|label| given.get(label).copied().unwrap_or(DEFAULT_THRESHOLD))
                        .collect(),
                })
            }
            Some(other) => Err(format!(
                "problem_type is {other:?}: newscls serves classifiers ({SINGLE_LABEL:?}, \
                 {MULTI_LABEL:?}, or no problem_type)"
            )),
        }
    }

    /// Hugging Face's `problem_type` for this head.
    pub fn problem_type(&self) -> &'static str {
        match self {
            Head::SingleLabel => SINGLE_LABEL,
            Head::MultiLabel { .. } => MULTI_LABEL,
        }
    }

    pub fn is_multi_label(&self) -> bool {
        matches!(self, Head::MultiLabel { .. })
    }

    /// How logits become scores unless a caller asks otherwise: what the head was trained with.
    pub fn default_scores(&self) -> ScoreFunction {
        match self {
            Head::SingleLabel => ScoreFunction::Softmax,
            Head::MultiLabel { .. } => ScoreFunction::Sigmoid,
        }
    }

    /// The labels a text is given, as indexes best first: the best label for a single-label
    /// head; for a multi-label head every label whose calibrated sigmoid reaches its threshold
    /// (possibly none). Read from the logits, whatever scores the caller asked to see.
    pub fn assign(&self, logits: &[f32], temperature: f32) -> Vec<usize> {
        match self {
            Head::SingleLabel => ranked(logits, Some(1))
                .into_iter()
                .map(|(index, _)| index)
                .collect(),
            Head::MultiLabel { thresholds } => {
                let scores = ScoreFunction::Sigmoid.apply(logits, temperature);
                ranked(&scores, None)
                    .into_iter()
                    .filter(|&(index, score)| thresholds.get(index).is_some_and(|t| score >= *t))
                    .map(|(index, _)| index)
                    .collect()
            }
        }
    }
}

impl ModelSpec {
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        if !dir.is_dir() {
            return Err(LoadError::ModelFile {
                path: dir.to_path_buf(),
                reason: "model directory not found (model.dir, --model-dir or \
                         NEWSCLS__MODEL__DIR names it; a relative one is relative to the config \
                         file that sets it, else to the working directory)"
                    .into(),
            });
        }
        for file in [TOKENIZER_FILE, CONFIG_FILE] {
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
        let temperature = config.calibration.map_or(1.0, |c| c.temperature);
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(LoadError::ModelFile {
                path: config_path,
                reason: format!(
                    "calibration.temperature must be a positive number, not {temperature}"
                ),
            });
        }
        if let Some(rescore) = &config.rescore {
            rescore.check().map_err(|reason| LoadError::ModelFile {
                path: config_path.clone(),
                reason,
            })?;
        }
        let labels = labels_in_order(config.id2label).map_err(|reason| LoadError::ModelFile {
            path: config_path.clone(),
            reason,
        })?;
        let head = Head::read(
            config.problem_type.as_deref(),
            config.label_thresholds.as_ref(),
            &labels,
        )
        .map_err(|reason| LoadError::ModelFile {
            path: config_path,
            reason,
        })?;
        let variants = find_variants(dir);
        if variants.is_empty() {
            return Err(LoadError::ModelFile {
                path: dir.join("model.onnx"),
                reason:
                    "missing: no ONNX file (model.onnx, model_fp16.onnx, model_quantized.onnx, ...)"
                        .into(),
            });
        }
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
            variants,
            temperature,
            head,
            rescore: config.rescore,
        })
    }

    /// The preferred file for `order`, if the directory has one.
    fn preferred(&self, order: &[Precision]) -> Option<&Variant> {
        order
            .iter()
            .find_map(|p| self.variants.iter().find(|v| v.precision == *p))
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(TOKENIZER_FILE)
    }
}

/// The ONNX files a directory holds, at the top level or under `onnx/`, best first.
fn find_variants(dir: &Path) -> Vec<Variant> {
    let mut found = Vec::new();
    for folder in ["", "onnx"] {
        for (name, precision) in VARIANT_NAMES {
            let file = Path::new(folder).join(name);
            if dir.join(&file).is_file() {
                found.push(Variant {
                    file,
                    precision: *precision,
                });
            }
        }
    }
    found
}

/// A model ready to serve: its metadata, its tokenizer, and one warmed-up backend per
/// inference worker.
pub struct LoadedModel {
    pub spec: ModelSpec,
    pub tokenizer: TextTokenizer,
    pub backends: Vec<Box<dyn Backend>>,
    /// The ONNX file in use, relative to the model directory.
    pub file: PathBuf,
    /// Where it runs.
    pub device: Device,
    /// False when the graph quantizes activations per batch: a text's scores then depend on
    /// its batch-mates.
    pub batch_independent: bool,
    /// Version of the ONNX Runtime library actually loaded.
    pub runtime_version: String,
    /// Where this version came from, for `/info`: a directory or a registry URI.
    pub source: String,
    /// Its workers' CUDA graphs, for `/info`; None when graphs are off.
    pub graphs: Option<Arc<GraphStats>>,
    /// Close calls run again on a precise variant; None when not in force.
    pub rescoring: Option<Rescoring>,
}

/// Which file to run on which device, in the order to try.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attempt {
    file: PathBuf,
    device: Device,
}

/// Decides which file runs where. `ops` reads a file's operators. Pure apart from that, so the
/// rules are unit-tested without a GPU.
fn plan(
    spec: &ModelSpec,
    config: &ModelConfig,
    cuda_built: bool,
    ops: &mut dyn FnMut(&Path) -> Result<GraphOps, LoadError>,
) -> Result<Vec<Attempt>, LoadError> {
    let pick = |device: Device| -> PathBuf {
        match &config.file {
            Some(file) => file.clone(),
            None => spec
                .preferred(device.variant_order())
                .or_else(|| spec.variants.first())
                .map(|v| v.file.clone())
                .expect("ModelSpec::load ensures at least one variant. This is a bug."),
        }
    };
    let cpu = Attempt {
        file: pick(Device::Cpu),
        device: Device::Cpu,
    };
    let wants_gpu = match config.device {
        DeviceChoice::Cpu => false,
        DeviceChoice::Cuda => true,
        DeviceChoice::Auto => cuda_built,
    };
    if !wants_gpu {
        return Ok(vec![cpu]);
    }
    let gpu = Attempt {
        file: pick(Device::Cuda),
        device: Device::Cuda,
    };
    let fallback = ops(&spec.dir.join(&gpu.file))?.cuda_fallback_ops();
    if fallback.is_empty() {
        return Ok(match config.device {
            DeviceChoice::Cuda => vec![gpu],
            _ => vec![gpu, cpu],
        });
    }
    let why = format!(
        "{} uses {} with no CUDA kernel in ONNX Runtime: those nodes would run on the CPU, with \
         copies both ways, slower than the CPU alone. Export a float variant for the GPU (`make \
         model` writes model_fp16.onnx), or set model.device: cpu",
        gpu.file.display(),
        fallback.join(", ")
    );
    if config.device == DeviceChoice::Cuda {
        return Err(LoadError::Device(why));
    }
    tracing::warn!(reason = %why, "not using the GPU for this model");
    Ok(vec![cpu])
}

/// A version's files, in a local directory: a model directory, or a version a model source
/// (a registry) fetched into its cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub dir: PathBuf,
    /// The source's version (a registry version); `None`: the directory's config.json says.
    pub version: Option<String>,
    /// The registered model's name, when the source has one.
    pub registry_name: Option<String>,
    /// For `/info` and logs, e.g. `models:/news@champion (version 3)`.
    pub description: String,
}

/// Loads and checks the model directory `config.dir`: metadata -> tokenizer -> the file for
/// the device -> ONNX Runtime -> one session per inference worker -> a warm-up batch
/// through each. With `device: auto` a GPU that cannot be used is a warning, then the CPU.
pub fn load(config: &ModelConfig) -> Result<LoadedModel, LoadError> {
    load_version(
        config,
        &Fetched {
            dir: config.dir.clone(),
            version: None,
            registry_name: None,
            description: format!("directory {}", config.dir.display()),
        },
    )
}

/// Loads a version a model source fetched, like [`load`]. It serves under a
/// name that does not change from version to version (clients address the model by it):
/// `model.name`, else the registered model's name, else the directory's name; and under the
/// source's version when it has one, else config.json's `model_version`.
pub fn load_version(config: &ModelConfig, fetched: &Fetched) -> Result<LoadedModel, LoadError> {
    let mut spec = ModelSpec::load(&fetched.dir)?;
    if let Some(name) = config
        .name
        .clone()
        .or_else(|| fetched.registry_name.clone())
    {
        spec.name = name;
    }
    if let Some(version) = &fetched.version {
        spec.version = version.clone();
    }
    let tokenizer = TextTokenizer::load(
        &spec.tokenizer_path(),
        config.max_length.or(spec.max_length),
    )?;
    let mut read_ops = |path: &Path| {
        GraphOps::read(path).map_err(|e| LoadError::ModelFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    };
    let attempts = plan(&spec, config, cfg!(feature = "cuda"), &mut read_ops)?;
    let library = config
        .onnxruntime_library
        .clone()
        .unwrap_or_else(default_library_path);
    let env = init_runtime(&library)?;
    let mut last_error = None;
    for (index, attempt) in attempts.iter().enumerate() {
        let path = spec.dir.join(&attempt.file);
        let graph_stats = Arc::new(GraphStats::default());
        let options = OnnxOptions {
            device: attempt.device,
            intra_op_threads: config.intra_op_threads,
            intra_op_spinning: config.intra_op_spinning,
            cuda_graphs: config.cuda_graphs(attempt.device),
            graph_stats: graph_stats.clone(),
        };
        let rescoring = rescoring_for(&spec, config, attempt);
        let backends = (0..config.inference_workers(attempt.device))
            .map(|_| -> Result<Box<dyn Backend>, LoadError> {
                let mut backend = OnnxBackend::load(&env, &path, &options, spec.labels.len())?;
                warm_up(&mut backend, &tokenizer)?;
                let Some(rescoring) = &rescoring else {
                    return Ok(Box::new(backend));
                };
                let precise_path = spec.dir.join(&rescoring.spec.file);
                let mut precise =
                    OnnxBackend::load(&env, &precise_path, &options, spec.labels.len())?;
                warm_up(&mut precise, &tokenizer)?;
                Ok(Box::new(RescoringBackend::new(
                    Box::new(backend),
                    Box::new(precise),
                    rescoring.spec.below_margin,
                    tokenizer.pad_id(),
                    rescoring.stats.clone(),
                )))
            })
            .collect::<Result<Vec<_>, _>>();
        match backends {
            Ok(backends) => {
                let batch_independent = !read_ops(&path)?.is_batch_dependent();
                if !batch_independent {
                    tracing::warn!(
                        file = %attempt.file.display(),
                        "this graph quantizes activations per batch (DynamicQuantizeLinear): a text's \
                         scores depend on the other texts in its batch. Export a statically or \
                         weight-only quantized variant for stable answers"
                    );
                }
                return Ok(LoadedModel {
                    source: fetched.description.clone(),
                    file: attempt.file.clone(),
                    device: attempt.device,
                    spec,
                    tokenizer,
                    backends,
                    batch_independent,
                    runtime_version: runtime_version(),
                    graphs: options.cuda_graphs.map(|_| graph_stats),
                    rescoring,
                });
            }
            Err(e) if index + 1 < attempts.len() => {
                tracing::warn!(error = %e, file = %attempt.file.display(), "GPU unavailable; using the CPU");
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last_error.expect("plan returns at least one attempt. This is a bug."))
}

/// Whether `attempt` re-scores close calls, and how: on a CPU, with `model.rescore: auto`, when
/// the directory's `rescore` block names a file it has, for a quantized variant and a
/// single-label head (the margin is between the two best labels of one softmax). A block
/// whose file is missing is served without re-scoring, with a warning.
fn rescoring_for(spec: &ModelSpec, config: &ModelConfig, attempt: &Attempt) -> Option<Rescoring> {
    let rescore = spec.rescore.as_ref()?;
    let quantized = spec.variants.iter().any(|v| {
        v.file == attempt.file
            && matches!(v.precision, Precision::Quantized8 | Precision::Quantized4)
    });
    if config.rescore == RescoreChoice::Off
        || attempt.device != Device::Cpu
        || !quantized
        || spec.head.is_multi_label()
        || rescore.file == attempt.file
    {
        return None;
    }
    if !spec.dir.join(&rescore.file).is_file() {
        tracing::warn!(
            file = %rescore.file.display(),
            "config.json asks for re-scoring close calls on a file this model directory does \
             not have: serving the quantized variant's answers alone"
        );
        return None;
    }
    Some(Rescoring {
        spec: rescore.clone(),
        stats: Arc::new(RescoreStats::default()),
    })
}

/// One real batch through the model before it serves, so the first client does not pay for
/// ONNX Runtime's lazy initialisation, and a model that cannot run fails now.
fn warm_up(backend: &mut OnnxBackend, tokenizer: &TextTokenizer) -> Result<(), LoadError> {
    let texts = [
        "Markets rallied after the central bank's decision.".to_string(),
        "코스피 상승".to_string(),
    ];
    let tokenized = tokenizer
        .encode(&texts, true)
        .map_err(|e| LoadError::Warmup(e.to_string()))?;
    let batch = PaddedBatch::new(tokenized.iter(), tokenizer.pad_id());
    let logits = backend
        .infer_uncaptured(&batch)
        .map_err(|e| LoadError::Warmup(e.to_string()))?;
    // The highest id the tokenizer can produce must exist in the model's embedding table;
    // otherwise some texts would fail at request time instead of now.
    let highest = TokenizedText {
        input_ids: vec![tokenizer.vocab_size() as i64 - 1],
    };
    backend
        .infer_uncaptured(&PaddedBatch::new([&highest], tokenizer.pad_id()))
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

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_problem_type_picks_the_head_and_regression_is_refused() {
        let ab = labels(&["a", "b"]);
        assert_eq!(Head::read(None, None, &ab), Ok(Head::SingleLabel));
        assert_eq!(
            Head::read(Some(SINGLE_LABEL), None, &ab),
            Ok(Head::SingleLabel)
        );
        let thresholds = BTreeMap::from([("b".to_string(), 0.3)]);
        assert_eq!(
            Head::read(Some(MULTI_LABEL), Some(&thresholds), &ab),
            Ok(Head::MultiLabel {
                thresholds: vec![DEFAULT_THRESHOLD, 0.3]
            })
        );
        let regression = Head::read(Some("regression"), None, &ab).expect_err("refused");
        assert!(regression.contains("regression"), "{regression}");
        let on_single = Head::read(None, Some(&thresholds), &ab).expect_err("refused");
        assert!(on_single.contains("single-label"), "{on_single}");
        let unknown = BTreeMap::from([("c".to_string(), 0.3)]);
        let unknown = Head::read(Some(MULTI_LABEL), Some(&unknown), &ab).expect_err("refused");
        assert!(unknown.contains("\"c\""), "{unknown}");
        for bad in [0.0, 1.0, f32::NAN, -0.5] {
            let map = BTreeMap::from([("a".to_string(), bad)]);
            assert!(
                Head::read(Some(MULTI_LABEL), Some(&map), &ab).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_rescore_block_needs_a_positive_margin_and_a_file_inside_the_directory() {
        let block = |below_margin: f32, file: &str| RescoreSpec {
            below_margin,
            file: PathBuf::from(file),
        };
        assert!(block(1.4, "model_fp16.onnx").check().is_ok());
        assert!(block(1.4, "onnx/model_fp16.onnx").check().is_ok());
        for margin in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let refused = block(margin, "model_fp16.onnx")
                .check()
                .expect_err("refused");
            assert!(refused.contains("below_margin"), "{refused}");
        }
        for file in ["", "../model.onnx", "/etc/passwd", "onnx/../../x.onnx"] {
            let refused = block(1.4, file).check().expect_err("refused");
            assert!(refused.contains("rescore.file"), "{file}: {refused}");
        }
    }

    #[test]
    fn a_multi_label_head_gives_every_label_over_its_threshold_best_first() {
        let head = Head::MultiLabel {
            thresholds: vec![0.5, 0.5, 0.9, 0.5],
        };
        // Sigmoids: 0.88, 0.27, 0.88 (under its 0.9), 0.95.
        assert_eq!(head.assign(&[2.0, -1.0, 2.0, 3.0], 1.0), vec![3, 0]);
        assert_eq!(
            head.assign(&[-2.0, -1.0, -2.0, -3.0], 1.0),
            Vec::<usize>::new()
        );
        // 2.5 reaches its 0.9 (0.92) at temperature 1, not at 4 (0.65).
        assert_eq!(head.assign(&[2.0, -1.0, 2.5, 3.0], 1.0), vec![3, 2, 0]);
        assert_eq!(head.assign(&[2.0, -1.0, 2.5, 3.0], 4.0), vec![3, 0]);
        assert_eq!(Head::SingleLabel.assign(&[0.1, 2.0, 1.0], 1.0), vec![1]);
        assert_eq!(head.default_scores(), ScoreFunction::Sigmoid);
        assert_eq!(Head::SingleLabel.default_scores(), ScoreFunction::Softmax);
    }

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

    fn spec(files: &[(&str, Precision)]) -> ModelSpec {
        ModelSpec {
            dir: PathBuf::from("m"),
            name: "m".into(),
            version: "1".into(),
            labels: vec!["a".into(), "b".into()],
            max_length: None,
            variants: files
                .iter()
                .map(|(file, precision)| Variant {
                    file: PathBuf::from(file),
                    precision: *precision,
                })
                .collect(),
            temperature: 1.0,
            head: Head::SingleLabel,
            rescore: None,
        }
    }

    /// `plan` with graphs whose operators are given by file name.
    fn plan_with(
        spec: &ModelSpec,
        device: DeviceChoice,
        file: Option<&str>,
        cuda_built: bool,
        graphs: &[(&str, GraphOps)],
    ) -> Result<Vec<(String, Device)>, LoadError> {
        let config = ModelConfig {
            device,
            file: file.map(PathBuf::from),
            ..ModelConfig::default()
        };
        let mut ops = |path: &Path| -> Result<GraphOps, LoadError> {
            Ok(graphs
                .iter()
                .find(|(name, _)| path.ends_with(name))
                .map(|(_, ops)| ops.clone())
                .unwrap_or_else(|| GraphOps::from(["MatMul"])))
        };
        plan(spec, &config, cuda_built, &mut ops).map(|attempts| {
            attempts
                .into_iter()
                .map(|a| (a.file.display().to_string(), a.device))
                .collect()
        })
    }

    fn hf_export() -> ModelSpec {
        spec(&[
            ("model_quantized.onnx", Precision::Quantized8),
            ("model.onnx", Precision::Fp32),
            ("model_fp16.onnx", Precision::Fp16),
        ])
    }

    fn dynamic_int8() -> GraphOps {
        GraphOps::from(["DynamicQuantizeLinear", "MatMulInteger", "Gather"])
    }

    #[test]
    fn the_cpu_gets_the_quantized_variant_and_the_gpu_fp16() {
        let spec = hf_export();
        let cpu = ("model_quantized.onnx".to_string(), Device::Cpu);
        let gpu = ("model_fp16.onnx".to_string(), Device::Cuda);
        let got =
            |device, cuda_built| plan_with(&spec, device, None, cuda_built, &[]).expect("plan");
        assert_eq!(got(DeviceChoice::Cpu, true), std::slice::from_ref(&cpu));
        assert_eq!(got(DeviceChoice::Cuda, false), std::slice::from_ref(&gpu));
        assert_eq!(got(DeviceChoice::Auto, true), [gpu, cpu.clone()]);
        assert_eq!(got(DeviceChoice::Auto, false), [cpu]);
    }

    #[test]
    fn a_gpu_without_fp16_gets_fp32_and_the_file_setting_wins() {
        let spec = spec(&[
            ("model_quantized.onnx", Precision::Quantized8),
            ("onnx/model.onnx", Precision::Fp32),
        ]);
        let got = plan_with(&spec, DeviceChoice::Cuda, None, true, &[]).expect("plan");
        assert_eq!(got, [("onnx/model.onnx".to_string(), Device::Cuda)]);
        let got =
            plan_with(&spec, DeviceChoice::Cpu, Some("onnx/model.onnx"), true, &[]).expect("plan");
        assert_eq!(got, [("onnx/model.onnx".to_string(), Device::Cpu)]);
    }

    #[test]
    fn a_dynamically_quantized_graph_is_never_run_on_cuda() {
        // Only a dynamically quantized file, as the old bundled model was.
        let spec = spec(&[("model.onnx", Precision::Fp32)]);
        let graphs = [("model.onnx", dynamic_int8())];
        let err = plan_with(&spec, DeviceChoice::Cuda, None, true, &graphs)
            .expect_err("cuda must refuse")
            .to_string();
        for part in [
            "model.onnx",
            "DynamicQuantizeLinear",
            "MatMulInteger",
            "model_fp16.onnx",
            "device: cpu",
        ] {
            assert!(err.contains(part), "{err:?} should mention {part:?}");
        }
        let got =
            plan_with(&spec, DeviceChoice::Auto, None, true, &graphs).expect("auto uses the CPU");
        assert_eq!(got, [("model.onnx".to_string(), Device::Cpu)]);
        // The override cannot sneak it onto the GPU either.
        let spec = hf_export();
        let graphs = [("model_quantized.onnx", dynamic_int8())];
        assert!(plan_with(
            &spec,
            DeviceChoice::Cuda,
            Some("model_quantized.onnx"),
            true,
            &graphs
        )
        .is_err());
    }

    #[test]
    fn gaps_and_bad_keys_are_rejected() {
        assert!(labels_in_order(map(&[("0", "a"), ("2", "b")])).is_err());
        assert!(labels_in_order(map(&[("x", "a")])).is_err());
        assert!(labels_in_order(None).is_err());
    }
}
