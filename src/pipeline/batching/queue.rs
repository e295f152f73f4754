//! A bounded queue of tokenized texts, shared by HTTP handlers and the stream (producers) and
//! inference threads (consumers).
//!
//! Two priorities: interactive texts (HTTP) are queued ahead of background texts (the Kafka
//! stream), so a request does not wait behind a stream backlog; each class is first in, first
//! out. Background texts wait while interactive ones keep coming; the stream retries what
//! expires.
//!
//! Admission is refused in two cases: the queue is full, or the queue already holds more work
//! than can be done before the new request's deadline (estimated from the measured time per
//! text). The second turns what would become a 504 after `server.timeout` into an immediate
//! 429: under overload, clients learn at once instead of waiting to fail.
//!
//! A plain mutex and condition variable: the consumers are OS threads that must block anyway.
//! One deque per priority, so admitting a request and taking a batch cost the texts they move;
//! dropping abandoned texts scans the queue once per batch taken. Capacity counts texts, not
//! requests, so a request of 32 texts costs 32 slots.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::rule::{BatchRule, Decision, WorkerState};
use crate::infra::events::{DropReason, QueueChanged, Role, TextsDropped};
use crate::infra::metrics::Metrics;
use crate::pipeline::tokenize::TokenizedText;

pub type JobResult = Result<JobOutput, JobError>;

/// The answer for one text, with where its time went.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutput {
    /// The model's logits in label order; the caller turns them into scores.
    pub logits: Vec<f32>,
    /// Texts in the batch this one was computed in.
    pub batch_size: usize,
    pub queue_time: Duration,
    pub inference_time: Duration,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JobError {
    #[error("{0}")]
    Inference(String),
}

/// The order batches take texts in: a caller's (HTTP, gRPC) before a backlog's (the stream, the
/// shadow's mirrored texts). Queue order only: how much CPU a worker thread gets is its
/// [`Role`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Interactive,
    Background,
}

/// One text waiting for inference.
#[derive(Debug)]
pub struct Job {
    pub text: TokenizedText,
    pub priority: Priority,
    pub enqueued_at: Instant,
    pub deadline: Instant,
    pub reply: oneshot::Sender<JobResult>,
    /// The caller's span: the inference batch that serves this text links to it.
    pub span: tracing::Span,
}

impl Job {
    pub fn new(text: TokenizedText, deadline: Instant) -> (Self, oneshot::Receiver<JobResult>) {
        let (reply, receiver) = oneshot::channel();
        (
            Self {
                text,
                priority: Priority::Interactive,
                enqueued_at: Instant::now(),
                deadline,
                reply,
                span: tracing::Span::current(),
            },
            receiver,
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    #[error("queue full: {queued} texts waiting, capacity {capacity}")]
    Full {
        queued: usize,
        capacity: usize,
        /// Roughly one queue's worth of work: when a retry has a fair chance.
        retry_after: Duration,
    },
    #[error("{queued} texts waiting would take {expected_wait:?}, past the request's deadline")]
    WouldMissDeadline {
        queued: usize,
        expected_wait: Duration,
    },
    #[error("queue closed for shutdown")]
    Closed,
}

pub struct BatchQueue {
    state: Mutex<QueueState>,
    work_available: Condvar,
    capacity: usize,
    rule: BatchRule,
    metrics: Arc<Metrics>,
    /// Whose queue it is, for the metrics.
    role: Role,
    /// Inference threads draining the queue in parallel.
    workers: usize,
    /// Smoothed seconds of inference per text, as `f64` bits (0 until the first batch).
    seconds_per_text: AtomicU64,
}

/// Weight of the newest batch in the smoothed time per text.
const SMOOTHING: f64 = 0.2;

#[derive(Default)]
struct QueueState {
    /// Texts a caller waits for, first in first out; batches take from here first.
    interactive: VecDeque<Job>,
    /// Backlog texts (the stream), first in first out, after every interactive one.
    background: VecDeque<Job>,
    closed: bool,
    /// Per inference worker: whether its device is running a batch while the worker's next
    /// batch is being assembled (pipelined workers only; see [`BatchQueue::set_worker_state`]).
    workers: Vec<WorkerState>,
}

impl QueueState {
    fn len(&self) -> usize {
        self.interactive.len() + self.background.len()
    }

    /// Every job in the order batches take them.
    fn in_order(&self) -> impl Iterator<Item = &Job> {
        self.interactive.iter().chain(self.background.iter())
    }

    /// The first `n` jobs in batch order.
    fn take(&mut self, n: usize) -> Vec<Job> {
        let from_interactive = n.min(self.interactive.len());
        let mut batch: Vec<Job> = self.interactive.drain(..from_interactive).collect();
        let from_background = (n - from_interactive).min(self.background.len());
        batch.extend(self.background.drain(..from_background));
        batch
    }

    /// Keeps the jobs `keep` says yes to, in order.
    fn retain(&mut self, mut keep: impl FnMut(&Job) -> bool) {
        self.interactive.retain(&mut keep);
        self.background.retain(&mut keep);
    }
}

impl BatchQueue {
    /// `workers`: inference threads draining this queue in parallel (for the wait estimate).
    pub fn new(
        capacity: usize,
        rule: BatchRule,
        metrics: Arc<Metrics>,
        role: Role,
        workers: usize,
    ) -> Self {
        let workers = workers.max(1);
        // The series exists from the start: an empty queue reads 0, not "no data".
        metrics.emit(QueueChanged { role, depth: 0 });
        Self {
            state: Mutex::new(QueueState {
                workers: vec![WorkerState::Idle; workers],
                ..QueueState::default()
            }),
            work_available: Condvar::new(),
            capacity,
            rule,
            metrics,
            role,
            workers,
            seconds_per_text: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Workers report each batch, so admission knows how fast the queue drains.
    pub fn record_batch(&self, texts: usize, elapsed: Duration) {
        if texts == 0 {
            return;
        }
        let sample = elapsed.as_secs_f64() / texts as f64;
        let old = f64::from_bits(self.seconds_per_text.load(Ordering::Relaxed));
        let new = if old == 0.0 {
            sample
        } else {
            old + SMOOTHING * (sample - old)
        };
        self.seconds_per_text
            .store(new.to_bits(), Ordering::Relaxed);
    }

    /// How long `texts` queued texts take to drain, at the measured pace.
    pub fn expected_wait(&self, texts: usize) -> Duration {
        let per_text = f64::from_bits(self.seconds_per_text.load(Ordering::Relaxed));
        Duration::from_secs_f64(per_text * texts as f64 / self.workers as f64)
    }

    /// Enqueues all jobs or none: a request is never half admitted. Interactive jobs go
    /// behind the other interactive ones, ahead of background jobs.
    pub fn admit(&self, jobs: Vec<Job>) -> Result<(), AdmitError> {
        let mut state = self.lock();
        if state.closed {
            return Err(AdmitError::Closed);
        }
        let queued = state.len();
        if queued + jobs.len() > self.capacity {
            return Err(AdmitError::Full {
                queued,
                capacity: self.capacity,
                retry_after: self.retry_hint(queued),
            });
        }
        let interactive = jobs.iter().all(|j| j.priority == Priority::Interactive);
        let ahead = match interactive {
            true => state.interactive.len(),
            false => queued,
        };
        let expected_wait = self.expected_wait(ahead + jobs.len());
        let deadline = jobs.iter().map(|j| j.deadline).min();
        // Only work queued ahead makes this overload; a deadline too short for the request's
        // own texts is the request's, and it gets a timeout, not a 429.
        if ahead > 0 && deadline.is_some_and(|d| Instant::now() + expected_wait > d) {
            return Err(AdmitError::WouldMissDeadline {
                queued: ahead,
                expected_wait,
            });
        }
        match interactive {
            true => state.interactive.extend(jobs),
            false => state.background.extend(jobs),
        }
        self.depth_changed(&state);
        drop(state);
        // Every waiting worker re-decides: one whose device is busy may keep waiting while an
        // idle one can start, so waking only one could wake the wrong one.
        self.work_available.notify_all();
        Ok(())
    }

    /// A pipelined worker (`worker`, below the `workers` given to [`BatchQueue::new`]) reports
    /// that its device started (`Busy`) or finished (`Idle`) a batch. While it is busy the
    /// worker's next batch keeps growing; when it is done, that batch goes.
    pub fn set_worker_state(&self, worker: usize, now: WorkerState) {
        let mut state = self.lock();
        if let Some(slot) = state.workers.get_mut(worker) {
            *slot = now;
        }
        drop(state);
        if now == WorkerState::Idle {
            self.work_available.notify_all();
        }
    }

    /// Blocks until a batch is due for `worker`, and returns it. `None` once closed and
    /// empty: the worker then exits, so closing the queue drains it before the workers stop.
    pub fn next_batch(&self, worker: usize) -> Option<Vec<Job>> {
        let mut state = self.lock();
        loop {
            self.drop_abandoned(&mut state);
            let Some(oldest) = state.in_order().next() else {
                if state.closed {
                    return None;
                }
                state = self
                    .work_available
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let worker_state = state
                .workers
                .get(worker)
                .copied()
                .unwrap_or(WorkerState::Idle);
            let lengths = state.in_order().map(|j| j.text.len());
            match self.rule.decide(
                lengths,
                oldest.enqueued_at.elapsed(),
                worker_state,
                state.closed,
            ) {
                Decision::Take(n) => {
                    let batch = state.take(n);
                    self.depth_changed(&state);
                    // Another worker may be able to start on what is left.
                    if state.len() > 0 {
                        self.work_available.notify_all();
                    }
                    return Some(batch);
                }
                Decision::WaitForDevice => {
                    state = self
                        .work_available
                        .wait(state)
                        .unwrap_or_else(|p| p.into_inner());
                }
                Decision::Wait(duration) => {
                    state = self
                        .work_available
                        .wait_timeout(state, duration)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }

    /// How long an overloaded client should wait before retrying: roughly one queue's worth of
    /// batches, at least a second.
    fn retry_hint(&self, queued: usize) -> Duration {
        let batches = queued.div_ceil(self.rule.max_batch_size.max(1)) as u32;
        (self.rule.max_wait + Duration::from_millis(50))
            .saturating_mul(batches)
            .max(Duration::from_secs(1))
    }

    /// Stops admission; queued jobs are still handed out until the queue is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.work_available.notify_all();
    }

    /// Stops admission and drops the background jobs still waiting (their receivers see the
    /// channel close); interactive ones are still handed out. For work nobody waits for, such
    /// as a retiring challenger's mirrored texts.
    pub fn close_dropping_background(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.background.clear();
        self.depth_changed(&state);
        drop(state);
        self.work_available.notify_all();
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn depth_changed(&self, state: &QueueState) {
        self.metrics.emit(QueueChanged {
            role: self.role,
            depth: state.len(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Jobs whose client went away, or whose deadline passed, would only waste inference.
    fn drop_abandoned(&self, state: &mut QueueState) {
        let now = Instant::now();
        let before = state.len();
        let mut expired = 0;
        // Deadline first: a handler that timed out has also dropped its receiver.
        state.retain(|job| {
            if job.deadline <= now {
                expired += 1;
                false
            } else {
                !job.reply.is_closed()
            }
        });
        let dropped = before - state.len();
        if dropped > 0 {
            for (reason, texts) in [
                (DropReason::Deadline, expired),
                (DropReason::ClientGone, dropped - expired),
            ] {
                self.metrics.emit(TextsDropped {
                    role: self.role,
                    reason,
                    texts,
                });
            }
            self.depth_changed(state);
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A panic while holding this lock cannot leave the queue inconsistent (every mutation is
        // a VecDeque call that completes or does not start), so a poisoned lock is still safe.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(len: usize) -> TokenizedText {
        TokenizedText {
            input_ids: vec![1; len],
        }
    }

    fn queue(capacity: usize) -> BatchQueue {
        let rule = BatchRule {
            max_batch_size: 4,
            max_batch_tokens: 1000,
            preferred_batch_size: 1,
            max_wait: Duration::from_millis(1),
        };
        BatchQueue::new(capacity, rule, Arc::new(Metrics::new()), Role::Champion, 1)
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn admission_is_all_or_nothing() {
        let q = queue(3);
        let (jobs, _rx): (Vec<_>, Vec<_>) = (0..2).map(|_| Job::new(text(3), far())).unzip();
        q.admit(jobs).expect("fits");
        let (jobs, _rx2): (Vec<_>, Vec<_>) = (0..2).map(|_| Job::new(text(3), far())).unzip();
        assert!(matches!(
            q.admit(jobs),
            Err(AdmitError::Full {
                queued: 2,
                capacity: 3,
                ..
            })
        ));
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn abandoned_and_expired_jobs_never_reach_a_batch() {
        let q = queue(10);
        let (gone, gone_rx) = Job::new(text(3), far());
        let (expiring, _expiring_rx) =
            Job::new(text(3), Instant::now() + Duration::from_millis(20));
        let (live, _live_rx) = Job::new(text(5), far());
        drop(gone_rx);
        q.admit(vec![gone]).expect("fits");
        q.admit(vec![expiring]).expect("fits");
        q.admit(vec![live]).expect("fits");
        std::thread::sleep(Duration::from_millis(30));
        let batch = q.next_batch(0).expect("one live job");
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].text.len(), 5);
    }

    #[test]
    fn interactive_texts_go_ahead_of_background_ones() {
        let q = queue(20);
        let mut receivers = Vec::new();
        for len in [1, 2, 3] {
            let (mut job, rx) = Job::new(text(len), far());
            job.priority = Priority::Background;
            q.admit(vec![job]).expect("fits");
            receivers.push(rx);
        }
        for len in [4, 5] {
            let (job, rx) = Job::new(text(len), far());
            q.admit(vec![job]).expect("fits");
            receivers.push(rx);
        }
        let lengths = |batch: Vec<Job>| batch.iter().map(|j| j.text.len()).collect::<Vec<_>>();
        // Batches of at most 4: both interactive texts first, in arrival order.
        assert_eq!(q.next_batch(0).map(lengths), Some(vec![4, 5, 1, 2]));
        let (job, _rx) = Job::new(text(6), far());
        q.admit(vec![job]).expect("fits");
        assert_eq!(q.next_batch(0).map(lengths), Some(vec![6, 3]));
    }

    #[test]
    fn closed_queue_drains_then_ends() {
        let q = queue(10);
        let (job, _rx) = Job::new(text(3), far());
        q.admit(vec![job]).expect("fits");
        q.close();
        assert_eq!(q.admit(vec![]), Err(AdmitError::Closed));
        assert_eq!(q.next_batch(0).map(|b| b.len()), Some(1));
        assert!(q.next_batch(0).is_none());
    }
}

#[cfg(test)]
mod worker_state_tests {
    use std::sync::mpsc;

    use super::*;

    /// A queue for one pipelined worker whose batches go at 4 texts, fill at 8, and would
    /// wait only 1 ms for company on an idle device.
    fn queue(preferred_batch_size: usize) -> Arc<BatchQueue> {
        let rule = BatchRule {
            max_batch_size: 8,
            max_batch_tokens: 1000,
            preferred_batch_size,
            max_wait: Duration::from_millis(1),
        };
        Arc::new(BatchQueue::new(
            100,
            rule,
            Arc::new(Metrics::new()),
            Role::Champion,
            1,
        ))
    }

    fn admit(q: &BatchQueue, texts: usize) -> Vec<oneshot::Receiver<JobResult>> {
        let far = Instant::now() + Duration::from_secs(60);
        let (jobs, receivers): (Vec<_>, Vec<_>) = (0..texts)
            .map(|_| {
                Job::new(
                    TokenizedText {
                        input_ids: vec![1; 3],
                    },
                    far,
                )
            })
            .unzip();
        q.admit(jobs).expect("fits");
        receivers
    }

    /// The sizes of the batches worker 0 takes, as it takes them.
    fn taken_batches(q: &Arc<BatchQueue>) -> mpsc::Receiver<usize> {
        let (sizes, taken) = mpsc::channel();
        let q = q.clone();
        std::thread::spawn(move || {
            while let Some(batch) = q.next_batch(0) {
                if sizes.send(batch.len()).is_err() {
                    return;
                }
            }
        });
        taken
    }

    #[test]
    fn while_the_device_is_busy_a_small_batch_grows_past_the_timer_then_goes_when_it_is_ready() {
        let q = queue(4);
        q.set_worker_state(0, WorkerState::Busy);
        let taken = taken_batches(&q);
        let _first = admit(&q, 2);
        // 50 times max_wait: an idle device would have taken these long ago.
        assert_eq!(
            taken.recv_timeout(Duration::from_millis(50)),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        let _second = admit(&q, 1);
        assert_eq!(
            taken.recv_timeout(Duration::from_millis(50)),
            Err(mpsc::RecvTimeoutError::Timeout),
            "3 texts are still below the preferred 4"
        );
        q.set_worker_state(0, WorkerState::Idle);
        assert_eq!(taken.recv_timeout(Duration::from_secs(10)), Ok(3));
        q.close();
    }

    #[test]
    fn the_preferred_size_and_a_full_batch_go_at_once_while_the_device_is_busy() {
        let q = queue(4);
        q.set_worker_state(0, WorkerState::Busy);
        let taken = taken_batches(&q);
        let _four = admit(&q, 4);
        assert_eq!(taken.recv_timeout(Duration::from_secs(10)), Ok(4));
        let never = queue(usize::MAX);
        never.set_worker_state(0, WorkerState::Busy);
        let taken = taken_batches(&never);
        let _ten = admit(&never, 10);
        assert_eq!(
            taken.recv_timeout(Duration::from_secs(10)),
            Ok(8),
            "full at 8"
        );
        q.close();
        never.close();
    }

    #[test]
    fn on_an_idle_device_a_small_batch_goes_after_the_short_wait() {
        let q = queue(4);
        let taken = taken_batches(&q);
        let _one = admit(&q, 1);
        assert_eq!(taken.recv_timeout(Duration::from_secs(10)), Ok(1));
        q.close();
    }
}

#[cfg(test)]
mod admission_tests {
    use super::*;

    /// A queue whose batches never close on the timer within a test.
    fn queue() -> BatchQueue {
        let rule = BatchRule {
            max_batch_size: 4,
            max_batch_tokens: 1000,
            preferred_batch_size: 1,
            max_wait: Duration::from_secs(10),
        };
        BatchQueue::new(100, rule, Arc::new(Metrics::new()), Role::Champion, 1)
    }

    #[test]
    fn work_that_cannot_finish_before_its_deadline_is_refused_at_once() {
        let q = queue();
        q.record_batch(4, Duration::from_millis(400)); // 100 ms per text
        let text = || TokenizedText {
            input_ids: vec![1; 3],
        };
        let (jobs, _rx): (Vec<_>, Vec<_>) = (0..5)
            .map(|_| Job::new(text(), Instant::now() + Duration::from_secs(10)))
            .unzip();
        q.admit(jobs).expect("0.5 s of work fits a 10 s deadline");
        let (job, _rx2) = Job::new(text(), Instant::now() + Duration::from_millis(300));
        assert!(matches!(
            q.admit(vec![job]),
            Err(AdmitError::WouldMissDeadline { queued: 5, .. })
        ));
        assert_eq!(q.len(), 5);
    }

    #[test]
    fn with_nothing_queued_ahead_a_short_deadline_is_the_requests_own_not_overload() {
        let q = queue();
        q.record_batch(1, Duration::from_secs(1));
        let text = TokenizedText {
            input_ids: vec![1; 3],
        };
        let (job, _rx) = Job::new(text, Instant::now() + Duration::from_millis(10));
        assert_eq!(
            q.admit(vec![job]),
            Ok(()),
            "admitted: it times out on its own"
        );
    }
}
