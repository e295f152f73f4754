//! What happens to a text, in order: [`classify`] (the [`classify::Classifier`]: validation,
//! deadlines, cancellation, ranking; the shadow challenger beside it) → [`tokenize`] (text to
//! ids, off the async executor) → [`batching`] (a bounded queue that groups texts from concurrent
//! requests into batches) → [`inference`] (a `Backend` trait; ONNX Runtime on CPU or CUDA, on
//! dedicated threads) → [`postprocess`] (softmax, ranking). [`model`] reads a model directory and
//! is the one way to load what these stages run.
//!
//! Nothing here knows about HTTP, gRPC or Kafka, nor about where a model version came from.

pub mod batching;
pub mod classify;
pub mod inference;
pub mod model;
pub mod postprocess;
pub mod tokenize;
