//! The ONNX Runtime backend: the only module (with its child `cuda_graphs`) that touches `ort`.
//!
//! ONNX Runtime is loaded at run time from a shared library (the `load-dynamic` feature), so the
//! binary builds without it and the library's path is a setting. Startup checks the graph
//! against what the service will feed it: int64 `input_ids` (required), `attention_mask` and
//! `token_type_ids` (optional), and a float `logits` output with one column per label.

mod cuda_graphs;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session, SessionInputValue};
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::graph_capture::GraphStats;
use super::{Backend, BackendError, Logits, PaddedBatch, SetupError};
use crate::infra::config::paths::in_installation;
use crate::infra::device::{Device, GraphLimits};

/// The ONNX Runtime release `make setup` fetches; pinned together with ort's `api-31` feature.
const PINNED_VERSION: &str = "1.31.1";

const INPUT_IDS: &str = "input_ids";
const ATTENTION_MASK: &str = "attention_mask";
const TOKEN_TYPE_IDS: &str = "token_type_ids";
const LOGITS: &str = "logits";

/// `$ORT_DYLIB_PATH`, else where `make setup` puts the library fetched from the onnxruntime
/// wheel: `.cache/onnxruntime` in the installation (the repository), wherever the binary is run.
pub fn default_library_path() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            in_installation(Path::new(&format!(
                ".cache/onnxruntime/libonnxruntime.so.{PINNED_VERSION}"
            )))
        })
}

/// The process-wide ONNX Runtime environment. ONNX Runtime allows one per process, and a model
/// loaded later (a new version) must reuse it, so it is created once and kept.
static RUNTIME: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);

/// Loads the ONNX Runtime library (once per process) and returns the environment.
pub fn init_runtime(library: &Path) -> Result<Environment, SetupError> {
    let fail = |reason: String| SetupError::Runtime {
        path: library.to_path_buf(),
        reason,
    };
    let mut runtime = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((loaded, env)) = runtime.as_ref() {
        return if loaded == library {
            Ok(env.clone())
        } else {
            Err(fail(format!(
                "{} is already loaded; one ONNX Runtime library per process",
                loaded.display()
            )))
        };
    }
    if !library.is_file() {
        return Err(fail("file not found".into()));
    }
    // A library that is not ONNX Runtime, or one of the wrong version, fails here with ort's
    // message instead of a panic at first use.
    let builder = ort::init_from(library).map_err(|e| fail(e.to_string()))?;
    let env = builder
        .with_name("newscls")
        .build()
        .map_err(|e| fail(e.to_string()))?;
    *runtime = Some((library.to_path_buf(), env.clone()));
    Ok(env)
}

/// The version of the ONNX Runtime library actually loaded: from the loaded file's name once
/// symlinks are resolved (`libonnxruntime.so.1.31.1`, the name every release ships), else from
/// its build string when that names a release branch (`git-branch=rel-1.31.1`), else "unknown".
/// (ONNX Runtime's own `GetVersionString` is only reachable through unsafe FFI, which this
/// crate forbids; ort itself refuses a library older than the API version it was built for.)
pub fn runtime_version() -> String {
    let loaded = RUNTIME
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(|(path, _)| path.clone());
    loaded
        .and_then(|path| version_from_file_name(&path.canonicalize().unwrap_or(path)))
        .or_else(|| version_from_build_info(ort::info()))
        .unwrap_or_else(|| "unknown".into())
}

fn version_from_file_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let version = name.split_once(".so.")?.1;
    is_version(version).then(|| version.to_string())
}

fn version_from_build_info(info: &str) -> Option<String> {
    let branch = info.split("git-branch=").nth(1)?.split([',', ' ']).next()?;
    let version = branch.strip_prefix("rel-")?;
    is_version(version).then(|| version.to_string())
}

/// `1.31.1`: dot-separated numbers.
fn is_version(text: &str) -> bool {
    text.split('.').count() >= 2
        && text
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
}

/// Session settings for one inference worker. A request for CUDA that cannot be met is an
/// error, never a silent CPU session: the choice (and any fallback) is `model::load`'s.
#[derive(Debug, Clone)]
pub struct OnnxOptions {
    pub device: Device,
    pub intra_op_threads: usize,
    pub intra_op_spinning: bool,
    /// Capture CUDA graphs within these limits (CUDA only); None: never.
    pub cuda_graphs: Option<GraphLimits>,
    /// Shared by the model's workers, for `/info`.
    pub graph_stats: Arc<GraphStats>,
}

pub struct OnnxBackend {
    runner: Runner,
    /// The worker's captured graphs; None when graphs are off or the session refused them.
    graphs: Option<cuda_graphs::CudaGraphs>,
}

/// A session and what it takes: runs a padded batch the usual way (inputs copied in, kernels
/// launched one by one).
struct Runner {
    session: Session,
    /// Where its tensors live; a CUDA session's runs must not overlap another worker's graph
    /// capture.
    device: Device,
    num_labels: usize,
    wants_attention_mask: bool,
    wants_token_type_ids: bool,
    /// On a session that captures graphs, a plain run must say so (graph id -1); otherwise
    /// ONNX Runtime would capture one under its default id.
    plain_options: Option<RunOptions>,
}

impl OnnxBackend {
    pub fn load(
        env: &Environment,
        model_path: &Path,
        options: &OnnxOptions,
        num_labels: usize,
    ) -> Result<Self, SetupError> {
        let (session, graphs_on) = build_session(env, model_path, options)?;
        let mismatch = |reason: String| SetupError::Mismatch {
            dir: model_path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            reason: format!("{}: {reason}", model_path.display()),
        };
        let mut wants_attention_mask = false;
        let mut wants_token_type_ids = false;
        for input in session.inputs() {
            match input.name() {
                INPUT_IDS => {}
                ATTENTION_MASK => wants_attention_mask = true,
                TOKEN_TYPE_IDS => wants_token_type_ids = true,
                other => return Err(mismatch(format!(
                    "unexpected input {other:?}; the service feeds {INPUT_IDS}, {ATTENTION_MASK} and {TOKEN_TYPE_IDS}"
                ))),
            }
            if !matches!(
                input.dtype(),
                ValueType::Tensor {
                    ty: TensorElementType::Int64,
                    ..
                }
            ) {
                return Err(mismatch(format!(
                    "input {:?} must be an int64 tensor",
                    input.name()
                )));
            }
        }
        if !session.inputs().iter().any(|i| i.name() == INPUT_IDS) {
            return Err(mismatch(format!("no {INPUT_IDS} input")));
        }
        let logits = session
            .outputs()
            .iter()
            .find(|o| o.name() == LOGITS)
            .ok_or_else(|| mismatch(format!("no {LOGITS:?} output")))?;
        match logits.dtype() {
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape,
                ..
            } => {
                let columns = shape.last().copied().unwrap_or(-1);
                if shape.len() != 2 || (columns >= 0 && columns as usize != num_labels) {
                    return Err(mismatch(format!(
                        "{LOGITS} has shape {shape:?}, config.json id2label has {num_labels} labels"
                    )));
                }
            }
            other => {
                return Err(mismatch(format!(
                    "{LOGITS} must be a float32 tensor, found {other:?}"
                )))
            }
        }
        if options.cuda_graphs.is_some() && !graphs_on {
            // Refused by ONNX Runtime (logged in `cuda_session`): /info counts it.
            options.graph_stats.record_give_up(0);
        }
        let plain_options = if graphs_on {
            let no_graph = RunOptions::new().and_then(|mut options| {
                options.set(GPU_GRAPH_ID, "-1")?;
                Ok(options)
            });
            Some(no_graph.map_err(|e| SetupError::ModelFile {
                path: model_path.to_path_buf(),
                reason: e.to_string(),
            })?)
        } else {
            None
        };
        Ok(Self {
            runner: Runner {
                session,
                device: options.device,
                num_labels,
                wants_attention_mask,
                wants_token_type_ids,
                plain_options,
            },
            graphs: match (graphs_on, options.cuda_graphs) {
                (true, Some(limits)) => Some(cuda_graphs::CudaGraphs::new(
                    limits,
                    options.graph_stats.clone(),
                )),
                _ => None,
            },
        })
    }

    /// Runs a batch without capturing or replaying a graph. ONNX Runtime keeps captured graphs
    /// per thread, so a batch run on another thread than the worker's (the warm-up, on the
    /// loading thread) goes this way.
    pub fn infer_uncaptured(&mut self, batch: &PaddedBatch) -> Result<Logits, BackendError> {
        self.runner.run(batch)
    }
}

/// ONNX Runtime's run option naming the CUDA graph a run captures or replays.
const GPU_GRAPH_ID: &str = "gpu_graph_id";

/// The session, and whether it captures CUDA graphs.
fn build_session(
    env: &Environment,
    path: &Path,
    options: &OnnxOptions,
) -> Result<(Session, bool), SetupError> {
    let session = match options.device {
        // A CPU provider captures nothing: "graphs" there are runs through the same bound
        // buffers and checks, which is how that path is tested without a GPU. `model::load`
        // never asks for them on a CPU.
        Device::Cpu => cpu_builder(env, options)
            .and_then(|mut b| b.commit_from_file(path))
            .map(|session| (session, options.cuda_graphs.is_some())),
        Device::Cuda => cuda_session(env, path, options),
    };
    session.map_err(|e| SetupError::ModelFile {
        path: path.to_path_buf(),
        reason: match options.device {
            Device::Cpu => e.to_string(),
            Device::Cuda => format!("CUDA requested: {e}"),
        },
    })
}

fn cpu_builder(
    env: &Environment,
    options: &OnnxOptions,
) -> Result<ort::session::builder::SessionBuilder, ort::Error> {
    // SessionBuilder errors carry the builder and are not Send; keep only the message.
    let mut builder = Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(ort::Error::<()>::from)?
        .with_inter_threads(1)
        .map_err(ort::Error::<()>::from)?
        .with_intra_op_spinning(options.intra_op_spinning)
        .map_err(ort::Error::<()>::from)?;
    if options.intra_op_threads > 0 {
        builder = builder
            .with_intra_threads(options.intra_op_threads)
            .map_err(ort::Error::<()>::from)?;
    }
    Ok(builder)
}

/// A tensor view over the batch's own buffer: no copy on the way in.
fn view(shape: [usize; 2], data: &[i64]) -> Result<TensorRef<'_, i64>, ort::Error> {
    TensorRef::from_array_view((shape, data))
}

/// A CUDA session, capturing graphs when asked and the graph allows it: ONNX Runtime refuses
/// graph capture for a model whose nodes are not all on the GPU (bar shape arithmetic), and
/// then the session is built again without it.
#[cfg(feature = "cuda")]
fn cuda_session(
    env: &Environment,
    path: &Path,
    options: &OnnxOptions,
) -> Result<(Session, bool), ort::Error> {
    // ONNX Runtime's CPU threads only run what the CUDA provider leaves on the host (shape
    // arithmetic): one thread that does not spin leaves the cores to tokenization. An explicit
    // model.intra_op_threads still wins.
    let options = OnnxOptions {
        intra_op_threads: match options.intra_op_threads {
            0 => 1,
            n => n,
        },
        intra_op_spinning: false,
        ..options.clone()
    };
    let build = |graphs: bool| -> Result<Session, ort::Error> {
        let provider = ort::ep::CUDA::default().with_cuda_graph(graphs);
        cpu_builder(env, &options)?
            .with_execution_providers([provider.build().error_on_failure()])
            .map_err(ort::Error::<()>::from)?
            .commit_from_file(path)
    };
    if options.cuda_graphs.is_some() {
        match build(true) {
            Ok(session) => return Ok((session, true)),
            Err(e) => tracing::warn!(
                error = %e,
                file = %path.display(),
                "ONNX Runtime refused CUDA graphs for this model; running without them"
            ),
        }
    }
    Ok((build(false)?, false))
}

#[cfg(not(feature = "cuda"))]
fn cuda_session(
    _env: &Environment,
    _path: &Path,
    _options: &OnnxOptions,
) -> Result<(Session, bool), ort::Error> {
    Err(ort::Error::new(
        "this binary was built without the `cuda` feature",
    ))
}

impl Backend for OnnxBackend {
    fn device(&self) -> Device {
        self.runner.device
    }

    fn infer(&mut self, batch: &PaddedBatch) -> Result<Logits, BackendError> {
        if let Some(graphs) = self.graphs.as_mut() {
            return graphs.infer(&mut self.runner, batch);
        }
        self.runner.run(batch)
    }
}

impl Runner {
    fn run(&mut self, batch: &PaddedBatch) -> Result<Logits, BackendError> {
        let run_err = |e: ort::Error| BackendError::Run(e.to_string());
        let shape = [batch.rows, batch.width];
        let mut inputs: Vec<(&str, SessionInputValue<'_>)> = vec![(
            INPUT_IDS,
            view(shape, &batch.input_ids).map_err(run_err)?.into(),
        )];
        if self.wants_attention_mask {
            inputs.push((
                ATTENTION_MASK,
                view(shape, &batch.attention_mask).map_err(run_err)?.into(),
            ));
        }
        if self.wants_token_type_ids {
            inputs.push((
                TOKEN_TYPE_IDS,
                view(shape, &batch.type_ids).map_err(run_err)?.into(),
            ));
        }
        let _gpu = (self.device == Device::Cuda).then(cuda_graphs::running_on_gpu);
        let outputs = match &self.plain_options {
            Some(no_graph) => self.session.run_with_options(inputs, no_graph),
            None => self.session.run(inputs),
        }
        .map_err(run_err)?;
        let (_, values) = outputs[LOGITS]
            .try_extract_tensor::<f32>()
            .map_err(run_err)?;
        checked_logits(self.num_labels, batch.rows, values)
    }
}

/// The scores of a batch of `rows`, checked for their count.
fn checked_logits(num_labels: usize, rows: usize, values: &[f32]) -> Result<Logits, BackendError> {
    if values.len() != rows * num_labels {
        return Err(BackendError::OutputShape {
            got: values.len(),
            rows,
            num_labels,
        });
    }
    Ok(Logits {
        num_labels,
        values: values.to_vec(),
        rescored: 0,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{version_from_build_info, version_from_file_name};

    #[test]
    fn version_comes_from_the_library_file_name() {
        let path = Path::new("/opt/ort/libonnxruntime.so.1.31.1");
        assert_eq!(version_from_file_name(path).as_deref(), Some("1.31.1"));
        assert_eq!(
            version_from_file_name(Path::new("/x/libonnxruntime.so")),
            None
        );
        assert_eq!(
            version_from_file_name(Path::new("/x/libonnxruntime.so.abc")),
            None
        );
    }

    #[test]
    fn or_from_a_release_branch_in_the_build_string() {
        let info = "ORT Build Info: git-branch=rel-1.31.1, git-commit-id=abc, build type=Release";
        assert_eq!(version_from_build_info(info).as_deref(), Some("1.31.1"));
        // What the PyPI 1.31.1 library actually says: no version in it.
        let pypi = "ORT Build Info: git-branch=HEAD, git-commit-id=6af1a93, build type=Release";
        assert_eq!(version_from_build_info(pypi), None);
    }
}
