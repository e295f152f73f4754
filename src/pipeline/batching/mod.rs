//! The batching queue between HTTP handlers and the inference threads.
//!
//! Handlers tokenize, then [`BatchQueue::admit`] their texts as [`Job`]s; admission is all or
//! nothing and bounded, so overload is refused at once (429) instead of growing a queue.
//! Inference workers ([`worker`]) block in [`BatchQueue::next_batch`], which applies the pure
//! closing rule in [`rule`] and drops jobs whose client left or whose deadline passed before they
//! cost any inference. Answers go back over one oneshot channel per job.

pub mod queue;
pub mod rule;
pub mod worker;

pub use queue::{AdmitError, BatchQueue, Job, JobError, JobOutput, JobResult, Priority};
pub use rule::BatchRule;
