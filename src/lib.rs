//! newscls serves a news-topic text classifier over HTTP.
//!
//! A request flows through the modules in this order:
//! [`api`] (HTTP: decode, call, encode; OpenAPI) → [`classify`] (the [`classify::Classifier`]:
//! validation, deadlines, cancellation, ranking) → [`tokenize`] (text to ids, off the async
//! executor) → [`batching`] (a bounded FIFO queue, HTTP ahead of the stream, that groups texts
//! from concurrent requests into batches) → [`inference`] (a `Backend` trait; ONNX Runtime on
//! CPU or CUDA, on dedicated threads) → [`postprocess`] (softmax, ranking) → back to the
//! caller over a oneshot channel.
//! [`model`] reads a model directory and is the one way to load it; [`app`] wires everything
//! together and owns startup and shutdown; [`config`] is the one typed configuration;
//! [`api::error`] is the one place where errors become HTTP; [`classify::Shadow`] runs a
//! challenger model beside the served one on a sample of the same texts and compares them;
//! [`metrics`] is what operators scrape; [`telemetry`] sets up logs and OTLP traces; [`probe`] is the container health check.
//!
//! Dependencies point one way: `app` → `api` → `classify` → `batching`/`tokenize`/`model` →
//! `inference`; nothing below `api` knows about HTTP.

/// mimalloc instead of the system allocator: tokenization allocated many small strings per text
/// and measured 1.3-1.6x faster per article with it (benches/tokenize.rs, `tokenizers` 0.22);
/// HTTP, JSON and the queue allocate per request too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod api;
pub mod app;
pub mod batching;
pub mod classify;
pub mod config;
pub mod device;
pub mod excerpt;
pub mod files;
pub mod grpc;
pub mod inference;
pub mod metrics;
pub mod model;
pub mod postprocess;
pub mod probe;
pub mod reload;
pub mod secret;
pub mod source;
pub mod stream;
pub mod telemetry;
pub mod tensor;
pub mod tls;
pub mod tokenize;
