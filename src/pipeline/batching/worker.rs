//! Inference workers: one OS thread per backend, each looping `next_batch -> infer -> reply`.
//!
//! The async executor never runs a model: handlers only wait on oneshot channels. A failing or
//! panicking batch fails its own jobs (500) and the worker goes on with the next one. The
//! `running` counter counts live workers; it reaches zero when every worker has exited (queue
//! closed and drained, or a worker died), and readiness reads it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use super::queue::{BatchQueue, Job, JobError, JobOutput};
use super::rule::WorkerState;
use crate::infra::events::{BatchFailed, BatchRan, Role};
use crate::infra::metrics::Metrics;
use crate::pipeline::inference::{Backend, PaddedBatch};

pub struct WorkerPool {
    handles: Mutex<Vec<JoinHandle<()>>>,
    running: Arc<AtomicUsize>,
}

impl WorkerPool {
    /// One thread per backend. The challenger's threads run at the operating system's lowest
    /// priority, so they only get CPU the champion's work leaves. (Which texts a batch takes
    /// first is the queue's `Priority`, a separate thing.)
    pub fn spawn(
        backends: Vec<Box<dyn Backend>>,
        queue: Arc<BatchQueue>,
        pad_id: i64,
        metrics: Arc<Metrics>,
        role: Role,
    ) -> Self {
        let running = Arc::new(AtomicUsize::new(backends.len()));
        let handles = backends
            .into_iter()
            .enumerate()
            .map(|(worker, backend)| {
                let (queue, metrics, running) = (queue.clone(), metrics.clone(), running.clone());
                let name = match role {
                    Role::Champion => format!("inference-{worker}"),
                    Role::Challenger => format!("inference-bg-{worker}"),
                };
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || {
                        // Counts down however the thread ends, a panic included.
                        let _alive = RunningGuard(running);
                        if role == Role::Challenger {
                            lower_priority();
                        }
                        run_worker(backend, worker, &queue, pad_id, &metrics, role);
                    })
                    .expect("spawning an inference thread failed; the OS is out of threads. This is a bug.")
            })
            .collect();
        Self {
            handles: Mutex::new(handles),
            running,
        }
    }

    /// Workers still serving; zero means inference is gone and the service is not ready.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Waits for the workers to finish the (closed) queue. Later calls return at once.
    pub fn join(&self) {
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|p| p.into_inner()));
        for handle in handles {
            let _ = handle.join();
        }
    }
}

/// The calling thread gets the lowest priority of its scheduling policy (niceness 19 on
/// Linux, where each thread has its own). ONNX Runtime's own threads are not affected: a
/// background session should run with one intra-op thread, computing on this one.
fn lower_priority() {
    use thread_priority::{set_current_thread_priority, ThreadPriority};
    if let Err(e) = set_current_thread_priority(ThreadPriority::Min) {
        tracing::warn!(error = ?e, "could not lower a background inference thread's priority");
    }
}

struct RunningGuard(Arc<AtomicUsize>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if self.0.fetch_sub(1, Ordering::SeqCst) == 1 && std::thread::panicking() {
            tracing::error!("the last inference worker died; the service is no longer ready");
        }
    }
}

/// Worker `worker`'s loop. On a pipelined device (a GPU) a second thread takes and pads the next
/// batch while this one runs; the queue knows the device is busy meanwhile, so that batch
/// keeps growing until the device is ready for it (see `rule`).
fn run_worker(
    mut backend: Box<dyn Backend>,
    worker: usize,
    queue: &BatchQueue,
    pad_id: i64,
    metrics: &Metrics,
    role: Role,
) {
    let device = backend.device();
    let assemble = |jobs: Vec<Job>| {
        let batch =
            PaddedBatch::bucketed(jobs.iter().map(|j| &j.text), pad_id, device.shape_buckets());
        (jobs, batch)
    };
    let mut infer = |(jobs, batch): (Vec<Job>, PaddedBatch)| {
        let started = Instant::now();
        let texts = run_batch(backend.as_mut(), jobs, batch, metrics, role);
        queue.record_batch(texts, started.elapsed());
    };
    if !device.pipelined() {
        while let Some(jobs) = queue.next_batch(worker) {
            infer(assemble(jobs));
        }
        return;
    }
    // A rendezvous channel: the assembled batch is handed over when the device takes it, so
    // at most one batch waits ready, and the one after it is taken from the queue only then.
    let (ready, assembled) = std::sync::mpsc::sync_channel(0);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            while let Some(jobs) = queue.next_batch(worker) {
                if ready.send(assemble(jobs)).is_err() {
                    break;
                }
            }
        });
        for next in assembled {
            queue.set_worker_state(worker, WorkerState::Busy);
            infer(next);
            queue.set_worker_state(worker, WorkerState::Idle);
        }
    });
}

/// Runs one batch (`batch` holds `jobs`' texts, in order) and answers every job in it,
/// whatever happens. Returns the number of texts.
pub fn run_batch(
    backend: &mut dyn Backend,
    jobs: Vec<Job>,
    batch: PaddedBatch,
    metrics: &Metrics,
    role: Role,
) -> usize {
    let started = Instant::now();

    // One span per batch: a child of its first request, linked to every request it serves.
    let span = match jobs.first() {
        Some(first) => tracing::info_span!(
            parent: &first.span,
            "inference_batch",
            batch_size = batch.texts,
            padded_tokens = batch.padded_tokens(),
            provider = backend.device().name(),
            rescored = tracing::field::Empty,
        ),
        None => tracing::Span::none(),
    };
    for job in &jobs {
        span.follows_from(&job.span);
    }
    let outcome = span.in_scope(|| catch_unwind(AssertUnwindSafe(|| backend.infer(&batch))));
    let inference_time = started.elapsed();
    let rescored = match &outcome {
        Ok(Ok(logits)) => logits.rescored,
        _ => 0,
    };
    span.record("rescored", rescored);
    metrics.emit(BatchRan {
        role,
        texts: batch.texts,
        rescored,
        real_tokens: batch.real_tokens(),
        padded_tokens: batch.padded_tokens(),
        queue_waits: jobs
            .iter()
            .map(|job| started.duration_since(job.enqueued_at)),
        inference: inference_time,
    });
    let texts = batch.texts;
    let failed = |jobs: Vec<Job>, error: &str| {
        metrics.emit(BatchFailed {
            role,
            texts: jobs.len(),
            error,
        });
        fail_all(jobs, error);
    };
    match outcome {
        Ok(Ok(logits)) => {
            // Filler rows past the texts are dropped by the zip.
            for (job, row) in jobs.into_iter().zip(logits.rows()) {
                let output = JobOutput {
                    logits: row.to_vec(),
                    batch_size: texts,
                    queue_time: started.duration_since(job.enqueued_at),
                    inference_time,
                };
                // The receiver is gone when the client left mid-batch; nothing to do then.
                let _ = job.reply.send(Ok(output));
            }
        }
        Ok(Err(e)) => failed(jobs, &e.to_string()),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "inference panicked".into());
            failed(jobs, &format!("inference panicked: {message}"));
        }
    }
    texts
}

/// Every job of a failed batch gets its error.
fn fail_all(jobs: Vec<Job>, message: &str) {
    for job in jobs {
        let _ = job
            .reply
            .send(Err(JobError::Inference(message.to_string())));
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::infra::device::Device;
    use crate::pipeline::batching::{BatchRule, JobResult};
    use crate::pipeline::inference::{BackendError, Logits};
    use crate::pipeline::tokenize::TokenizedText;

    /// A test-only backend that fails on marker ids: 666 returns an error, 999 panics.
    struct FaultyBackend;

    impl Backend for FaultyBackend {
        fn device(&self) -> Device {
            Device::Cpu
        }
        fn infer(&mut self, batch: &PaddedBatch) -> Result<Logits, BackendError> {
            if batch.input_ids.contains(&999) {
                panic!("injected panic");
            }
            if batch.input_ids.contains(&666) {
                return Err(BackendError::Run("injected failure".into()));
            }
            Ok(Logits {
                num_labels: 2,
                values: [1.0, 0.0].repeat(batch.rows),
                rescored: 0,
            })
        }
    }

    fn submit(queue: &BatchQueue, id: i64) -> tokio::sync::oneshot::Receiver<JobResult> {
        let text = TokenizedText {
            input_ids: vec![0, id, 2],
        };
        let (job, reply) = Job::new(text, Instant::now() + Duration::from_secs(30));
        queue.admit(vec![job]).expect("room in the queue");
        reply
    }

    #[test]
    fn a_failing_or_panicking_batch_fails_only_its_own_jobs_and_the_worker_goes_on() {
        let metrics = Arc::new(Metrics::new());
        // Batches of one, so each job's fate is its own.
        let rule = BatchRule {
            max_batch_size: 1,
            max_batch_tokens: 100,
            preferred_batch_size: 1,
            max_wait: Duration::ZERO,
        };
        let queue = Arc::new(BatchQueue::new(
            16,
            rule,
            metrics.clone(),
            Role::Champion,
            1,
        ));
        let pool = WorkerPool::spawn(
            vec![Box::new(FaultyBackend)],
            queue.clone(),
            1,
            metrics.clone(),
            Role::Champion,
        );

        let replies = [5, 999, 7, 666, 8].map(|id| submit(&queue, id));
        let outcomes: Vec<JobResult> = replies
            .into_iter()
            .map(|r| r.blocking_recv().expect("every job is answered"))
            .collect();
        assert!(
            outcomes[0].is_ok() && outcomes[2].is_ok() && outcomes[4].is_ok(),
            "{outcomes:?}"
        );
        assert!(
            matches!(&outcomes[1], Err(JobError::Inference(m)) if m.contains("injected panic"))
        );
        assert!(
            matches!(&outcomes[3], Err(JobError::Inference(m)) if m.contains("injected failure"))
        );
        assert_eq!(
            metrics.sample("newscls_inference_failed_batches_total{role=\"champion\"}"),
            2.0
        );
        assert_eq!(pool.running(), 1, "the worker survived");

        queue.close();
        pool.join();
    }

    #[test]
    fn running_counter_reaches_zero_when_the_workers_exit() {
        let metrics = Arc::new(Metrics::new());
        let queue = Arc::new(BatchQueue::new(
            4,
            BatchRule {
                max_batch_size: 1,
                max_batch_tokens: 10,
                preferred_batch_size: 1,
                max_wait: Duration::ZERO,
            },
            metrics.clone(),
            Role::Champion,
            1,
        ));
        let pool = WorkerPool::spawn(
            vec![Box::new(FaultyBackend)],
            queue.clone(),
            1,
            metrics,
            Role::Champion,
        );
        assert_eq!(pool.running(), 1);
        queue.close();
        pool.join();
        assert_eq!(pool.running(), 0);
    }
}
