//! Capturing and replaying CUDA graphs through ONNX Runtime.
//!
//! ONNX Runtime captures a run as a graph when the session's CUDA provider has
//! `enable_cuda_graph` and the run names a `gpu_graph_id`; later runs with that id replay it.
//! A replay ignores the inputs given to the run: it reads and writes the device addresses it
//! was captured with. So each batch shape gets its own [`ShapeBuffers`]: device tensors bound
//! to the session once (I/O binding), which every batch of that shape is copied into and out
//! of through pinned host tensors (page-locked memory, which the GPU reads directly).
//!
//! On a CPU session the same code runs with CPU memory throughout and nothing is captured
//! (ONNX Runtime's CPU provider ignores the graph id): the tests drive the binding, copying and
//! checking that way, since capture itself needs a GPU.
//!
//! Which shapes get a graph, the check that a capture is kept only when a replay answers like
//! a plain run, and the fallbacks are `inference::graph_capture`'s; this module only binds,
//! copies and runs.

use std::sync::{RwLock, RwLockReadGuard};

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{IoBinding, RunOptions};
use ort::value::Tensor;

use super::{
    checked_logits, Runner, ATTENTION_MASK, GPU_GRAPH_ID, INPUT_IDS, LOGITS, TOKEN_TYPE_IDS,
};
use crate::infra::device::Device;
use crate::pipeline::inference::graph_capture::{GraphCapture, GraphId, GraphSession};
use crate::pipeline::inference::{BackendError, Logits, PaddedBatch};

/// The CUDA device the provider runs on (its default; the service does not choose another).
const DEVICE_ID: i32 = 0;

/// Where a graph's buffers and the host tensors staging them live, by the session's device.
fn memory(device: Device) -> Result<(MemoryInfo<'static>, MemoryInfo<'static>), ort::Error> {
    Ok(match device {
        Device::Cuda => (
            MemoryInfo::new(
                AllocationDevice::CUDA,
                DEVICE_ID,
                AllocatorType::Device,
                MemoryType::Default,
            )?,
            MemoryInfo::new(
                AllocationDevice::CUDA_PINNED,
                DEVICE_ID,
                AllocatorType::Device,
                MemoryType::CPUInput,
            )?,
        ),
        Device::Cpu => {
            let cpu = || {
                MemoryInfo::new(
                    AllocationDevice::CPU,
                    0,
                    AllocatorType::Device,
                    MemoryType::Default,
                )
            };
            (cpu()?, cpu()?)
        }
    })
}

/// ONNX Runtime captures in CUDA's global capture mode: while one thread captures, another
/// thread's device allocation or synchronous copy fails (its batch with it) and can spoil the
/// capture. So a capture runs alone: it holds this lock for writing, and every other run of a
/// CUDA session in the process (other workers, a shadow challenger, a new version warming up)
/// holds it for reading. Captures happen once per shape and worker; the lock costs the other
/// runs nothing measurable.
static CAPTURE_ALONE: RwLock<()> = RwLock::new(());

/// Held by every run on the GPU that does not capture (see [`CAPTURE_ALONE`]).
pub(super) fn running_on_gpu() -> RwLockReadGuard<'static, ()> {
    CAPTURE_ALONE.read().unwrap_or_else(|p| p.into_inner())
}

/// One inference worker's graphs over its session.
pub type CudaGraphs = GraphCapture<ShapeBuffers>;

impl GraphSession for Runner {
    type Buffers = ShapeBuffers;

    fn bind(&mut self, rows: usize, width: usize, id: GraphId) -> Result<ShapeBuffers, String> {
        ShapeBuffers::new(self, rows, width, id)
    }

    fn run_graph(
        &mut self,
        buffers: &mut ShapeBuffers,
        batch: &PaddedBatch,
    ) -> Result<Logits, String> {
        buffers.run(self, batch)
    }

    fn run_plain(&mut self, batch: &PaddedBatch) -> Result<Logits, BackendError> {
        self.run(batch)
    }
}

/// The device tensors one graph is captured with, their binding, and the pinned host tensors
/// batches are staged in.
pub struct ShapeBuffers {
    rows: usize,
    /// False until the first run, which captures.
    captured: bool,
    options: RunOptions,
    binding: IoBinding,
    input_ids: Tensor<i64>,
    attention_mask: Option<Tensor<i64>>,
    logits: Tensor<f32>,
    host_input_ids: Tensor<i64>,
    host_attention_mask: Tensor<i64>,
    host_logits: Tensor<f32>,
}

impl ShapeBuffers {
    fn new(runner: &Runner, rows: usize, width: usize, id: GraphId) -> Result<Self, String> {
        let text = |e: ort::Error| e.to_string();
        let _gpu = running_on_gpu();
        let session = &runner.session;
        let (device_memory, host_memory) = memory(runner.device).map_err(text)?;
        let on_device = Allocator::new(session, device_memory).map_err(text)?;
        let pinned = Allocator::new(session, host_memory).map_err(text)?;
        let shape = [rows, width];
        let mut binding = session.create_binding().map_err(text)?;
        let input_ids = Tensor::<i64>::new(&on_device, shape).map_err(text)?;
        binding.bind_input(INPUT_IDS, &input_ids).map_err(text)?;
        let attention_mask = if runner.wants_attention_mask {
            let mask = Tensor::<i64>::new(&on_device, shape).map_err(text)?;
            binding.bind_input(ATTENTION_MASK, &mask).map_err(text)?;
            Some(mask)
        } else {
            None
        };
        if runner.wants_token_type_ids {
            // Always zeros: copied in once. Host tensors from an allocator ONNX Runtime can
            // read are zeroed when made.
            let zeros = Tensor::<i64>::new(&pinned, shape).map_err(text)?;
            let mut type_ids = Tensor::<i64>::new(&on_device, shape).map_err(text)?;
            zeros.copy_into(&mut type_ids).map_err(text)?;
            binding
                .bind_input(TOKEN_TYPE_IDS, &type_ids)
                .map_err(text)?;
        }
        let mut logits = Tensor::<f32>::new(&on_device, [rows, runner.num_labels]).map_err(text)?;
        binding.bind_output(LOGITS, &mut logits).map_err(text)?;
        let mut options = RunOptions::new().map_err(text)?;
        options.set(GPU_GRAPH_ID, id.to_string()).map_err(text)?;
        Ok(Self {
            rows,
            captured: false,
            options,
            binding,
            input_ids,
            attention_mask,
            logits,
            host_input_ids: Tensor::<i64>::new(&pinned, shape).map_err(text)?,
            host_attention_mask: Tensor::<i64>::new(&pinned, shape).map_err(text)?,
            host_logits: Tensor::<f32>::new(&pinned, [rows, runner.num_labels]).map_err(text)?,
        })
    }

    /// Copies the batch into the bound device tensors, runs the graph (ONNX Runtime runs the
    /// first run of an id as usual, twice, to settle its memory arena, then captures and
    /// replays the capture for that run's outputs), and copies the scores back.
    fn run(&mut self, runner: &mut Runner, batch: &PaddedBatch) -> Result<Logits, String> {
        let text = |e: ort::Error| e.to_string();
        // The copies too: they are synchronous device calls.
        let (_alone, _shared) = if self.captured {
            (None, Some(running_on_gpu()))
        } else {
            let alone = CAPTURE_ALONE.write().unwrap_or_else(|p| p.into_inner());
            (Some(alone), None)
        };
        stage(&mut self.host_input_ids, &batch.input_ids)?;
        self.host_input_ids
            .copy_into(&mut self.input_ids)
            .map_err(text)?;
        if let Some(mask) = self.attention_mask.as_mut() {
            stage(&mut self.host_attention_mask, &batch.attention_mask)?;
            self.host_attention_mask.copy_into(mask).map_err(text)?;
        }
        drop(
            runner
                .session
                .run_binding_with_options(&self.binding, &self.options)
                .map_err(text)?,
        );
        self.captured = true;
        self.logits.copy_into(&mut self.host_logits).map_err(text)?;
        let (_, scores) = self.host_logits.try_extract_tensor::<f32>().map_err(text)?;
        checked_logits(runner.num_labels, self.rows, scores).map_err(|e| e.to_string())
    }
}

/// Writes a batch's tensor into its pinned host tensor (same shape: the buffers are per shape).
fn stage(host: &mut Tensor<i64>, values: &[i64]) -> Result<(), String> {
    let (_, staged) = host
        .try_extract_tensor_mut::<i64>()
        .map_err(|e| e.to_string())?;
    if staged.len() != values.len() {
        return Err(format!(
            "a batch of {} values for buffers of {}",
            values.len(),
            staged.len()
        ));
    }
    staged.copy_from_slice(values);
    Ok(())
}
