//! The hardware a model runs on, as one type.
//!
//! Everything that differs between a CPU and a GPU is a method of [`Device`]: the ONNX Runtime
//! execution provider, which exported file to prefer, how batch shapes are rounded, whether the
//! next batch is assembled while one runs, the batch limits, how many texts are worth waiting
//! for, how many inference workers share the device, which batches replay captured CUDA graphs.
//! Adding an accelerator (TensorRT, ROCm) is a variant here plus its session builder in
//! `inference::onnx`; every `match` the compiler then flags is a decision to make for it, and
//! there is no other place to look.
//!
//! The operator asks for a device with `model.device` (`auto`, `cpu`, `cuda`: a choice, see
//! `config::DeviceChoice`); `model::load` turns the choice into the [`Device`] a model actually
//! runs on, and everything after that reads it from here.

use serde::Serialize;

/// Where a loaded model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Cuda,
}

/// What an ONNX file holds, by the naming convention of Hugging Face exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    /// `model_quantized.onnx`, `model_int8.onnx`, `model_uint8.onnx`: 8-bit weights.
    Quantized8,
    /// `model_q4.onnx`: 4-bit weights.
    Quantized4,
    /// `model.onnx`: full precision.
    Fp32,
    /// `model_fp16.onnx`: half precision, for GPUs.
    Fp16,
}

/// Multiples that a batch's shape is rounded up to. A GPU pays for every new tensor shape
/// (kernel selection, memory planning), so a handful of shapes reused beats exact shapes:
/// measured on an H100 with the fp16 model at 64 clients, rounding rows to 8 and width to 32
/// took p99 from 119 ms to 21 ms. On a CPU padding is pure waste, so shapes stay exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeBuckets {
    pub rows: usize,
    pub width: usize,
}

impl ShapeBuckets {
    pub const EXACT: Self = Self { rows: 1, width: 1 };
}

/// Which batches an inference worker may replay as captured CUDA graphs (one graph per batch
/// shape, captured the first time that shape runs; see `inference::graph_capture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphLimits {
    /// Batches of at most this many rows get a graph. Small batches are launch-bound (on an
    /// H200 a batch of 1 and a batch of 8 both take 1.0 ms, a batch of 64 about 2 ms): that is
    /// the time a graph, launched as one unit, saves. Larger batches run as usual.
    pub max_rows: usize,
    /// Most graphs one inference worker keeps; shapes after that run as usual. With rows in
    /// multiples of 8 up to 64 and widths in multiples of 32 up to 128 tokens there are 32.
    pub max_graphs: usize,
}

/// What a batch may hold on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_batch_size: usize,
    pub max_batch_tokens: usize,
}

impl Device {
    /// The execution provider's name, as `/info`, logs and traces report it.
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }

    /// Which exported file to prefer, best first: the CPU wants small integer weights (its
    /// int8 kernels are the fast ones); a GPU wants floats, fp16 first (tensor cores; ONNX
    /// Runtime's CUDA provider has no kernels for the quantized operators).
    pub fn variant_order(self) -> &'static [Precision] {
        match self {
            Device::Cpu => &[
                Precision::Quantized8,
                Precision::Quantized4,
                Precision::Fp32,
                Precision::Fp16,
            ],
            Device::Cuda => &[Precision::Fp16, Precision::Fp32],
        }
    }

    /// How batch shapes are rounded (see [`ShapeBuckets`]).
    pub fn shape_buckets(self) -> ShapeBuckets {
        match self {
            Device::Cpu => ShapeBuckets::EXACT,
            Device::Cuda => ShapeBuckets { rows: 8, width: 32 },
        }
    }

    /// Whether the next batch is assembled on another thread while one runs: worth it when
    /// inference is asynchronous to the CPU (a GPU), not when the CPU does both.
    pub fn pipelined(self) -> bool {
        match self {
            Device::Cpu => false,
            Device::Cuda => true,
        }
    }

    /// Measured defaults. CPU: throughput peaks at small batches that stay in cache, 8 texts of
    /// 128 tokens (benches/ceiling.rs). GPU: it keeps rising to 128-256 texts per batch
    /// (bench/results of the GPU run), so the limits only stop runaway batches.
    pub fn batch_limits(self) -> BatchLimits {
        match self {
            Device::Cpu => BatchLimits {
                max_batch_size: 32,
                max_batch_tokens: 1024,
            },
            Device::Cuda => BatchLimits {
                max_batch_size: 256,
                max_batch_tokens: 32768,
            },
        }
    }

    /// The batch size worth waiting for when the device is idle (`batching.max_wait_ms` at
    /// most). A CPU computes a batch in time proportional to its texts, so waiting gains
    /// nothing: 1. On the GPU a batch of 1 and a batch of 8 take the same time (1.0 ms for the
    /// fp16 model on an H200), so a lone text waits briefly for company.
    pub fn preferred_batch_size(self) -> usize {
        match self {
            Device::Cpu => 1,
            Device::Cuda => 8,
        }
    }

    /// Captured graphs on this device: none on a CPU (nothing to launch).
    pub fn graph_limits(self) -> Option<GraphLimits> {
        match self {
            Device::Cpu => None,
            Device::Cuda => Some(GraphLimits {
                max_rows: 64,
                max_graphs: 64,
            }),
        }
    }

    /// Whether graphs are captured when `model.cuda_graphs` is not set. Off until a GPU run of
    /// `make bench-gpu`, which measures the service with and without them side by side, shows
    /// what they are worth.
    pub fn graphs_by_default(self) -> bool {
        match self {
            Device::Cpu | Device::Cuda => false,
        }
    }

    /// Inference workers (sessions) when `model.inference_workers` is not set. On the GPU a
    /// second session lets one batch's host work overlap another's kernels: measured on an
    /// H200, p99 at 256 clients went from 79 to 55 ms and at 1,024 from 169 to 57 ms.
    pub fn inference_workers(self) -> usize {
        match self {
            Device::Cpu => 1,
            Device::Cuda => 2,
        }
    }
}

/// Which of ONNX Runtime's integer matrix kernels this host's CPU gets. ONNX Runtime (MLAS)
/// picks them by instruction set at load, and they do not all compute the same sums: with AVX2,
/// and with AVX-512 without VNNI, each pair of neighbouring uint8 × int8 products is added into
/// a saturating 16-bit integer first (`vpmaddubsw`), while VNNI (`vpdpbusd`) and SSE4.1
/// sum exactly. A quantized model whose weights can saturate a pair therefore answers
/// differently on different x86 CPUs; the bundled CPU variant is exported with weights that
/// cannot (`training/export.py`, `integer_kernels_exact`), so this is reported, not acted on:
/// an operator comparing two deployments, or `newscls eval` figures, can see which path ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IntegerKernels {
    /// AVX-512 VNNI (also on CPUs with AMX): exact sums.
    Avx512Vnni,
    /// AVX-VNNI (the VEX form, e.g. on CPUs without AVX-512): exact sums.
    AvxVnni,
    /// AVX-512 without VNNI: pairs of products saturate at 16 bits.
    Avx512,
    /// AVX2: pairs of products saturate at 16 bits.
    Avx2,
    /// SSE4.1 and older: exact sums.
    Sse,
    /// Not an x86 CPU (e.g. ARM: its own kernels, not covered by this distinction).
    Other,
}

impl IntegerKernels {
    /// The kernels ONNX Runtime 1.31 chooses on the CPU this process runs on (the order of
    /// MLAS's own checks in `platform.cpp`).
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512bw")
            {
                return IntegerKernels::Avx512Vnni;
            }
            if std::arch::is_x86_feature_detected!("avxvnni")
                && std::arch::is_x86_feature_detected!("avx2")
            {
                return IntegerKernels::AvxVnni;
            }
            if std::arch::is_x86_feature_detected!("avx512bw") {
                return IntegerKernels::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return IntegerKernels::Avx2;
            }
            IntegerKernels::Sse
        }
        #[cfg(not(target_arch = "x86_64"))]
        IntegerKernels::Other
    }

    /// The name `/info`, the startup log and `newscls eval` report.
    pub fn name(self) -> &'static str {
        match self {
            IntegerKernels::Avx512Vnni => "avx512_vnni",
            IntegerKernels::AvxVnni => "avx_vnni",
            IntegerKernels::Avx512 => "avx512",
            IntegerKernels::Avx2 => "avx2",
            IntegerKernels::Sse => "sse",
            IntegerKernels::Other => "other",
        }
    }

    /// Whether uint8 × int8 products are summed in pairs that saturate at 16 bits here.
    pub fn saturating_pairs(self) -> bool {
        matches!(self, IntegerKernels::Avx512 | IntegerKernels::Avx2)
    }
}

/// Which family of ONNX Runtime's float kernels this host's CPU gets. MLAS switches several of
/// them on AVX-512F (matrix multiply, exp and softmax sums, GELU's erf, quantize-linear), and
/// their last bits differ from the FMA3 ones. A float model's logits move by rounding only
/// (~1e-6), but a statically quantized one re-rounds activations to integers between its layers,
/// which can turn a last-bit difference into a step of one quantum: measured on the bundled
/// CPU variant, the SSE and FMA3 families gave logits up to 0.07 apart with exact integer sums on
/// both. Logits are bit-identical only within one family (`tests/it/parity.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FloatKernels {
    /// AVX-512F kernels.
    Avx512f,
    /// AVX2 with FMA3 kernels.
    Fma3,
    /// AVX without FMA, or SSE only.
    Sse,
    /// Not an x86 CPU.
    Other,
}

impl FloatKernels {
    /// The family ONNX Runtime 1.31 chooses on the CPU this process runs on.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return FloatKernels::Avx512f;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return FloatKernels::Fma3;
            }
            FloatKernels::Sse
        }
        #[cfg(not(target_arch = "x86_64"))]
        FloatKernels::Other
    }

    /// The name `/info`, the golden file and `newscls eval` use.
    pub fn name(self) -> &'static str {
        match self {
            FloatKernels::Avx512f => "avx512f",
            FloatKernels::Fma3 => "fma3",
            FloatKernels::Sse => "sse",
            FloatKernels::Other => "other",
        }
    }
}

/// The host CPU as ONNX Runtime's kernels see it: what `/info` and the startup log report, so
/// that two deployments' figures can be told apart by the kernels that produced them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CpuKernels {
    /// Which integer matrix kernels ONNX Runtime uses here (`avx2` and `avx512` add pairs of
    /// products in saturating 16-bit sums; the others sum exactly).
    pub integer_kernels: IntegerKernels,
    /// Which family of float kernels ONNX Runtime uses here: a quantized model's logits are
    /// bit-identical only between hosts of one family.
    pub float_kernels: FloatKernels,
    /// Instruction sets seen at startup that decide the kernels.
    #[schema(example = json!(["sse4.1", "avx", "fma", "f16c", "avx2"]))]
    pub features: Vec<&'static str>,
}

impl CpuKernels {
    pub fn detect() -> Self {
        Self {
            integer_kernels: IntegerKernels::detect(),
            float_kernels: FloatKernels::detect(),
            features: cpu_features(),
        }
    }
}

/// The instruction sets seen on this CPU that decide ONNX Runtime's CPU kernels.
fn cpu_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut seen = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! check {
            ($($feature:tt),*) => {
                $(if std::arch::is_x86_feature_detected!($feature) {
                    seen.push($feature);
                })*
            };
        }
        check!(
            "sse4.1",
            "avx",
            "fma",
            "f16c",
            "avx2",
            "avx512f",
            "avx512bw",
            "avx512vnni",
            "avxvnni"
        );
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::{FloatKernels, IntegerKernels};

    #[test]
    fn float_kernels_are_named_as_reported() {
        let kernels = FloatKernels::detect();
        assert_eq!(
            serde_json::to_value(kernels).expect("json"),
            serde_json::json!(kernels.name())
        );
    }

    #[test]
    fn integer_kernels_are_detected_and_named_as_reported() {
        let kernels = IntegerKernels::detect();
        assert_eq!(
            serde_json::to_value(kernels).expect("json"),
            serde_json::json!(kernels.name())
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            kernels.saturating_pairs(),
            std::arch::is_x86_feature_detected!("avx2")
                && !std::arch::is_x86_feature_detected!("avx512vnni")
                && !std::arch::is_x86_feature_detected!("avxvnni"),
            "{kernels:?}"
        );
    }
}
