//! `model`: which model, where from, and on which device.

use crate::infra::device::{Device, GraphLimits};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Directory with the ONNX file(s), tokenizer.json and config.json.
    pub dir: PathBuf,
    /// An MLflow registry model, `models:/<name>@<alias>` or `models:/<name>/<version>`, used
    /// instead of `dir` (tracking server from `MLFLOW_TRACKING_URI`).
    pub uri: Option<String>,
    /// Seconds between registry checks for a new version; 0 turns polling off.
    pub poll_interval: f64,
    /// Where registry versions are downloaded to.
    pub cache_dir: PathBuf,
    /// Registry versions kept in the cache besides the serving one (most recently used first).
    pub cache_keep: usize,
    /// Most bytes one registry version may download (each file and all together).
    pub max_download_bytes: u64,
    /// Seconds a registry version's download may take in all, retries included.
    pub download_timeout: f64,
    /// The name the model is served under, the same for every version (`x-model-name`, KServe
    /// `/v2/models/<name>`, vLLM's `model`); null: the registered model's name, else the
    /// directory's name.
    pub name: Option<String>,
    /// Accept a new version whose labels differ from the serving one's (clients that index
    /// outputs by label position then read other labels).
    pub allow_label_change: bool,
    /// ONNX file to use, relative to `dir`; null picks the variant for the device
    /// (CPU: model_quantized.onnx, ...; GPU: model_fp16.onnx, else model.onnx).
    pub file: Option<PathBuf>,
    /// Token limit per text; null takes the tokenizer's own truncation length.
    pub max_length: Option<usize>,
    pub device: DeviceChoice,
    /// Inference threads, each with its own ONNX Runtime session pulling from the shared queue;
    /// null: by device (CPU 1, CUDA 2; see [`Device::inference_workers`]).
    pub inference_workers: Option<usize>,
    /// On a GPU, replay a captured CUDA graph for each batch shape seen before instead of
    /// launching its kernels one by one (small batches only, see [`Device::graph_limits`]);
    /// null: by device (see [`Device::graphs_by_default`]). Ignored on a CPU.
    pub cuda_graphs: Option<bool>,
    /// ONNX Runtime intra-op threads per inference worker; 0 lets ONNX Runtime decide.
    pub intra_op_threads: usize,
    /// Let ONNX Runtime's threads spin while waiting for work: lower latency on dedicated cores,
    /// but CPU taken from HTTP and tokenization when cores are shared.
    pub intra_op_spinning: bool,
    /// On a CPU, run the close calls again on a precise variant (config.json's `rescore`
    /// block names it and the margin): `auto` where the model directory has the block, `off`
    /// to answer from the quantized variant alone.
    pub rescore: RescoreChoice,
    /// Path to libonnxruntime; null uses `ORT_DYLIB_PATH`, else the copy fetched by `make setup`.
    pub onnxruntime_library: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    Cpu,
    Cuda,
    /// CUDA when the binary was built with it and a GPU answers, else CPU.
    Auto,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RescoreChoice {
    /// Re-score where the model directory says how (a `rescore` block and its file), on a CPU.
    Auto,
    Off,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("models/news-topic-e5-small"),
            uri: None,
            poll_interval: 30.0,
            cache_dir: PathBuf::from(".cache/models"),
            cache_keep: 2,
            // A few times the largest bundled variant (model_fp16.onnx, 73 MB; fp32 would be 145).
            max_download_bytes: 512 * 1024 * 1024,
            download_timeout: 600.0,
            name: None,
            allow_label_change: false,
            file: None,
            max_length: None,
            device: DeviceChoice::Auto,
            inference_workers: None,
            cuda_graphs: None,
            intra_op_threads: 0,
            intra_op_spinning: true,
            rescore: RescoreChoice::Auto,
            onnxruntime_library: None,
        }
    }
}

impl ModelConfig {
    /// Inference workers on `device`: the configured number, else the device's default.
    pub fn inference_workers(&self, device: Device) -> usize {
        self.inference_workers
            .unwrap_or_else(|| device.inference_workers())
    }

    /// The graph limits in force on `device`, or None when graphs are off (always on a CPU).
    pub fn cuda_graphs(&self, device: Device) -> Option<GraphLimits> {
        let limits = device.graph_limits()?;
        self.cuda_graphs
            .unwrap_or_else(|| device.graphs_by_default())
            .then_some(limits)
    }
}
