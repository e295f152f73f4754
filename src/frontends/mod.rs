//! The ways in, as peers: each decodes its own wire format, calls the pipeline's
//! [`Classifier`](crate::pipeline::classify::Classifier) and encodes the answer.
//!
//! - [`http`]: `/predict`, the clients people already have (HF, TEI, vLLM, KServe v2 over JSON
//!   and binary tensors), the demo page, health, `/info`, `/metrics`, the admin routes; the
//!   OpenAPI contract; [`http::error`] is the one place where errors become HTTP.
//! - [`grpc`]: KServe v2 over gRPC.
//! - [`stream`]: Kafka in, Kafka out.
//! - [`v2`]: the Open Inference Protocol once, for HTTP and gRPC.
//!
//! Every door stops accepting and drains the same way ([`FrontDoor`]); front doors never import
//! each other.

pub mod grpc;
pub mod http;
pub mod stream;
pub mod v2;

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

/// What [`FrontDoor::stop_accepting`] returns: finishes once the work the door had accepted has
/// been answered.
pub type Drained = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A way in that is open: a listener or a consumer. Every door stops the same way, so one
/// shutdown sequence can stop them all at the same moment and drain them under one deadline.
pub trait FrontDoor: Send {
    /// For logs: `http`, `admin`, `grpc`, `stream`.
    fn name(&self) -> &'static str;

    /// Stops taking new work now, before returning; the future finishes when what was already
    /// accepted has been answered (the stream: answered and committed).
    fn stop_accepting(self: Box<Self>) -> Drained;
}

/// Whether a door other than HTTP is healthy, for `/readyz` (the stream's consumer).
pub trait Readiness: Send + Sync {
    /// Why the door cannot take work, if it cannot.
    fn problem(&self) -> Option<String>;
}

/// A listener that could not be opened: the address and the reason.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve on {addr}: {source}")]
pub struct BindError {
    pub addr: String,
    pub source: std::io::Error,
}

/// Stops every door at the same moment, then waits for all of them until `deadline`: one
/// window for the whole shutdown, not one per door after another, which could outlast the
/// orchestrator's grace period and lose accepted work to a kill.
pub async fn drain_all(doors: Vec<Box<dyn FrontDoor>>, deadline: Instant) {
    // Each door stops inside stop_accepting, so all have stopped before the first wait below;
    // the waits then overlap, and the last one ends at the slowest door or at the deadline.
    let draining: Vec<(&'static str, Drained)> = doors
        .into_iter()
        .map(|door| (door.name(), door.stop_accepting()))
        .collect();
    for (door, drained) in draining {
        if tokio::time::timeout_at(deadline.into(), drained)
            .await
            .is_err()
        {
            tracing::warn!(door, "the drain deadline passed with work still in flight");
        }
    }
}
