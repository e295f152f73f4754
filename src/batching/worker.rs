//! Inference workers: one OS thread per backend, each looping `next_batch -> infer -> reply`.
//!
//! The async executor never runs a model: handlers only wait on oneshot channels. A failing or
//! panicking batch fails its own jobs (500) and the worker goes on with the next one. When every
//! worker has exited (queue closed and drained), the `finished` counter reaches zero.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use super::queue::{BatchQueue, Job, JobError, JobOutput};
use crate::inference::{Backend, PaddedBatch};
use crate::metrics::Metrics;
use crate::postprocess::softmax;

pub struct WorkerPool {
    handles: Vec<JoinHandle<()>>,
    running: Arc<AtomicUsize>,
}

impl WorkerPool {
    pub fn spawn(
        backends: Vec<Box<dyn Backend>>,
        queue: Arc<BatchQueue>,
        pad_id: i64,
        metrics: Arc<Metrics>,
    ) -> Self {
        let running = Arc::new(AtomicUsize::new(backends.len()));
        let handles = backends
            .into_iter()
            .enumerate()
            .map(|(index, backend)| {
                let (queue, metrics, running) = (queue.clone(), metrics.clone(), running.clone());
                std::thread::Builder::new()
                    .name(format!("inference-{index}"))
                    .spawn(move || {
                        run_worker(backend, &queue, pad_id, &metrics);
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                    .expect("spawning an inference thread failed; the OS is out of threads. This is a bug.")
            })
            .collect();
        Self { handles, running }
    }

    /// Workers still serving; zero means inference is gone and the service is not ready.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    pub fn running_counter(&self) -> Arc<AtomicUsize> {
        self.running.clone()
    }

    /// Waits for the workers to finish the (closed) queue.
    pub fn join(self) {
        for handle in self.handles {
            let _ = handle.join();
        }
    }
}

fn run_worker(mut backend: Box<dyn Backend>, queue: &BatchQueue, pad_id: i64, metrics: &Metrics) {
    while let Some(jobs) = queue.next_batch() {
        run_batch(backend.as_mut(), jobs, pad_id, metrics);
    }
}

/// Runs one batch and answers every job in it, whatever happens.
pub fn run_batch(
    backend: &mut dyn Backend,
    jobs: Vec<Job>,
    pad_id: i64,
    metrics: &Metrics,
) -> usize {
    let started = Instant::now();
    for job in &jobs {
        metrics
            .queue_wait
            .observe(started.duration_since(job.enqueued_at).as_secs_f64());
    }
    let batch = PaddedBatch::new(jobs.iter().map(|j| &j.text), pad_id);
    metrics.batch_size.observe(batch.rows as f64);
    metrics.batch_tokens.observe(batch.padded_tokens() as f64);
    metrics
        .tokens
        .with_label_values(&["real"])
        .inc_by(batch.real_tokens() as u64);
    metrics
        .tokens
        .with_label_values(&["padded"])
        .inc_by(batch.padded_tokens() as u64);

    let outcome = catch_unwind(AssertUnwindSafe(|| backend.infer(&batch)));
    let inference_time = started.elapsed();
    metrics
        .inference_duration
        .observe(inference_time.as_secs_f64());
    let rows = batch.rows;
    match outcome {
        Ok(Ok(logits)) => {
            for (job, row) in jobs.into_iter().zip(logits.rows()) {
                let output = JobOutput {
                    probabilities: softmax(row),
                    batch_size: rows,
                    queue_time: started.duration_since(job.enqueued_at),
                    inference_time,
                };
                // The receiver is gone when the client left mid-batch; nothing to do then.
                let _ = job.reply.send(Ok(output));
            }
        }
        Ok(Err(e)) => fail_all(jobs, &e.to_string(), metrics),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "inference panicked".into());
            fail_all(jobs, &format!("inference panicked: {message}"), metrics);
        }
    }
    rows
}

fn fail_all(jobs: Vec<Job>, message: &str, metrics: &Metrics) {
    tracing::error!(
        error = message,
        texts = jobs.len(),
        "inference batch failed"
    );
    metrics.failed_batches.inc();
    for job in jobs {
        let _ = job
            .reply
            .send(Err(JobError::Inference(message.to_string())));
    }
}
