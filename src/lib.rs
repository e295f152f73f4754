//! newscls serves a news-topic text classifier over HTTP, gRPC and Kafka.
//!
//! The layout is the architecture, one layer per folder; a layer imports only from itself and
//! the layers below it (`tests/it/layering.rs` checks this from the source):
//!
//! - [`app`]: startup, the front doors opened on one service, shutdown;
//! - [`frontends`] (HTTP, gRPC, the Kafka stream, the Open Inference Protocol they share) and
//!   [`files`] (`newscls classify` and `newscls eval` over JSONL, CSV and Parquet): the ways in;
//! - [`service`]: the core built once from the config (model source, model, classifier, shadow
//!   challenger, reloaders), for the server and `classify`/`eval` alike;
//! - [`lifecycle`]: model versions found, fetched, swapped in, or run as a shadow challenger;
//! - [`pipeline`]: what happens to a text: classify → tokenize → batching → inference →
//!   postprocess, and the model those stages run;
//! - [`infra`]: configuration, metrics, telemetry, the machine (CPU, GPU), TLS, secrets, binary
//!   readers.
//!
//! A request: a front door decodes it → [`pipeline::classify::Classifier`] → tokenize →
//! the batching queue → an inference worker → softmax → back to the caller over a oneshot
//! channel → the front door encodes the answer.

/// mimalloc instead of the system allocator: tokenization allocated many small strings per text
/// and measured 1.3-1.6x faster per article with it (benches/tokenize.rs, `tokenizers` 0.22);
/// HTTP, JSON and the queue allocate per request too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod app;
pub mod files;
pub mod frontends;
pub mod infra;
pub mod lifecycle;
pub mod pipeline;
pub mod service;
