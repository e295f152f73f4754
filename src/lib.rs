//! newscls serves a news-topic text classifier over HTTP, gRPC and Kafka.
//!
//! A request flows through the modules in this order:
//! [`api`] (HTTP: decode, call, encode; OpenAPI) or [`grpc`] (KServe v2 over gRPC) or [`stream`]
//! (Kafka) → [`classify`] (the [`classify::Classifier`]: validation, deadlines, cancellation,
//! ranking) → [`tokenize`] (text to ids, off the async executor) → [`batching`] (a bounded queue,
//! callers ahead of the stream, that groups texts from concurrent requests into batches) →
//! [`inference`] (a `Backend` trait; ONNX Runtime on CPU or CUDA, on dedicated threads) →
//! [`postprocess`] (softmax, ranking) → back to the caller over a oneshot channel.
//!
//! Around it:
//! - front doors' shared parts: [`v2`] is the Open Inference Protocol once for HTTP and gRPC
//!   (its byte framing in [`v2::binary`]); [`excerpt`] cuts echoed input short in every error;
//!   [`api::error`] is the one place where errors become HTTP;
//! - the model's life: [`model`] reads a model directory and is the one way to load it;
//!   [`source`] fetches versions from a registry (MLflow) into a cache; [`reload`] swaps them in;
//!   [`classify::Shadow`] runs a challenger beside the served model and compares them;
//! - binary formats: [`wire`] reads untrusted ones byte by byte (the ONNX graph scan, the
//!   Parquet page headers);
//! - the machine: [`device`] (CPU features, kernels, GPU detection), [`tls`] (registry and
//!   collector certificates), [`secret`] (credentials that never print);
//! - operations: [`service`] builds the core once from the config (model, classifier, shadow,
//!   reloaders) for the server and `classify`/`eval` alike; [`app`] opens the front doors on it
//!   and owns startup and shutdown; [`config`] is
//!   the one typed configuration; [`metrics`] is what operators scrape; [`telemetry`] sets up
//!   logs and OTLP traces; [`probe`] is the container health check;
//! - offline: [`files`] is `newscls classify` and `newscls eval` over JSONL, CSV and Parquet.
//!
//! Dependencies point one way: `app` → front doors → `classify` → `batching`/`tokenize`/`model` →
//! `inference`; nothing below the front doors knows about HTTP or gRPC.

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
pub mod service;
pub mod source;
pub mod stream;
pub mod telemetry;
pub mod tls;
pub mod tokenize;
pub mod v2;
pub mod wire;
