//! newscls serves a news-topic text classifier over HTTP.
//!
//! A request flows through the modules in this order:
//! [`api`] (HTTP, validation, OpenAPI) → [`tokenize`] (text to ids, off the async executor) →
//! [`batching`] (a bounded FIFO queue that groups texts from concurrent requests into batches)
//! → [`inference`] (a `Backend` trait; ONNX Runtime on CPU or CUDA, on dedicated threads) →
//! [`postprocess`] (softmax, ranked labels) → back to the handler over a oneshot channel.
//! [`app`] wires these together and owns startup and shutdown; [`config`] is the one typed
//! configuration; [`error`] maps every failure to HTTP in one place; [`metrics`] is what
//! operators scrape; [`model`] reads a model directory; [`probe`] is the container health check.

pub mod api;
pub mod app;
pub mod batching;
pub mod config;
pub mod error;
pub mod inference;
pub mod metrics;
pub mod model;
pub mod postprocess;
pub mod probe;
pub mod tokenize;
