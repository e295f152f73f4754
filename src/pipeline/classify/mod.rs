//! The classification pipeline: one call from texts, options and a deadline to ranked labels,
//! or a typed error.
//!
//! [`Classifier::classify`] is the whole request path: readiness -> validation against the
//! limits -> tokenization on the blocking pool (bounded by a semaphore) -> admission to the
//! batching queue (all or nothing, refused at once when full or when the queue cannot finish
//! before the deadline) -> waiting for the answers -> ranking. HTTP handlers, protocol adapters,
//! tests and benchmarks call this and nothing below it, so they all get the same rules.
//!
//! Deadlines: every call carries one; past it the caller gets [`ClassifyError::Timeout`], and
//! its texts are skipped before tokenization and before inference. Cancellation: the caller
//! passes a future that completes when nobody wants the answer any more (an HTTP client hung
//! up); the call then returns [`ClassifyError::Cancelled`] and its reply channels drop, so the
//! queue skips its texts.
//!
//! The model in service is a [`ServingModel`]: metadata, tokenizer, and its own queue and
//! inference workers. A call takes a reference to the current one at its start and finishes on
//! it, so every answer comes from one model, and a model can be replaced under running calls.
//! With a [`Shadow`], a sample of the texts is mirrored to a challenger model after the caller
//! has the champion's answer (see the `shadow` module); a caller may also ask the challenger directly
//! ([`ModelRole::Challenger`]).

mod shadow;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::infra::config::{BatchingConfig, LimitsConfig};
use crate::infra::device::Device;
use crate::infra::events::{Role, Tokenized};
use crate::infra::metrics::Metrics;
use crate::pipeline::batching::worker::WorkerPool;
pub use crate::pipeline::batching::Priority;
use crate::pipeline::batching::{AdmitError, BatchQueue, BatchRule, Job, JobError, JobOutput};
use crate::pipeline::inference::graph_capture::GraphStats;
use crate::pipeline::model::{LoadedModel, ModelSpec, Rescoring};
use crate::pipeline::postprocess::{ranked, ScoreFunction};
use crate::pipeline::tokenize::{TextTokenizer, TokenizeError, TokenizedText, TruncationSide};
pub use shadow::{Disagreement, LabelAgreement, Shadow, Summary};

/// What went wrong with a classification, in terms the caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// The input breaks the contract (empty, too many texts, too long, bad option).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Tokenize(#[from] TokenizeError),
    /// Admission refused: the queue is full, or cannot finish this work before its deadline.
    #[error("server is overloaded: {queued} texts already queued; retry later")]
    Overloaded {
        queued: usize,
        retry_after: Duration,
    },
    /// The model is still loading, the service is draining, or inference is down.
    #[error("service is not ready: {0}")]
    NotReady(&'static str),
    #[error("request did not finish within the {0:.3}s timeout")]
    Timeout(f64),
    #[error("inference failed: {0}")]
    Inference(String),
    /// The caller's cancellation future completed first; nobody reads this answer.
    #[error("client closed the connection")]
    Cancelled,
    /// The challenger was asked for, and none is loaded.
    #[error("no challenger model is loaded (set shadow.uri to load one)")]
    NoChallenger,
}

impl From<AdmitError> for ClassifyError {
    fn from(error: AdmitError) -> Self {
        match error {
            AdmitError::Full {
                queued,
                retry_after,
                ..
            } => ClassifyError::Overloaded {
                queued,
                retry_after,
            },
            AdmitError::WouldMissDeadline {
                queued,
                expected_wait,
            } => ClassifyError::Overloaded {
                queued,
                retry_after: expected_wait,
            },
            AdmitError::Closed => ClassifyError::NotReady("shutting down"),
        }
    }
}

/// When a call must be answered by, and the budget it was given (for messages).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    pub budget: Duration,
}

impl Deadline {
    /// `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Self::from(Instant::now(), budget)
    }

    /// `budget` from `start` (when the call arrived).
    pub fn from(start: Instant, budget: Duration) -> Self {
        Self {
            at: start + budget,
            budget,
        }
    }

    fn timeout_error(&self) -> ClassifyError {
        ClassifyError::Timeout(self.budget.as_secs_f64())
    }
}

/// One call: texts and how to answer them.
#[derive(Debug, Clone)]
pub struct ClassifyRequest {
    pub texts: Vec<String>,
    /// Only the best `top_k` labels per text; `None` for all.
    pub top_k: Option<usize>,
    /// Cut texts longer than the model's window; with `false` such a text is an error.
    pub truncate: bool,
    /// Which end of a long text is kept.
    pub truncation_side: TruncationSide,
    /// How logits become scores; `None` for the head's own (softmax for a single-label
    /// model, a sigmoid per label for a multi-label one).
    pub scores: Option<ScoreFunction>,
    pub deadline: Deadline,
    /// Interactive (a caller waits) goes ahead of background (the stream's backlog).
    pub priority: Priority,
    /// Which model answers: the champion (and a sample is mirrored to the challenger), or the
    /// challenger itself (debugging; nothing is mirrored).
    pub model: ModelRole,
}

/// The model in service for callers, or the shadow challenger beside it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ModelRole {
    #[default]
    Champion,
    Challenger,
}

impl ClassifyRequest {
    /// All labels, the head's own scores, long texts cut at the end.
    pub fn new(texts: Vec<String>, deadline: Deadline) -> Self {
        Self {
            texts,
            top_k: None,
            truncate: true,
            truncation_side: TruncationSide::Right,
            scores: None,
            deadline,
            priority: Priority::Interactive,
            model: ModelRole::Champion,
        }
    }
}

/// One label and its probability.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelScore {
    pub label: String,
    pub score: f32,
}

/// The answer for one text.
#[derive(Debug, Clone)]
pub struct TextScores {
    /// Labels by probability, best first, cut to `top_k`.
    pub ranked: Vec<LabelScore>,
    /// Every label's score in the model's label order (protocols that send vectors).
    pub scores: Vec<f32>,
    /// The labels the text is given, best first: the best one for a single-label model; those
    /// over their thresholds for a multi-label one (possibly none). Not cut by `top_k`.
    pub assigned: Vec<String>,
    /// Tokens the model read for this text, special tokens included.
    pub tokens: usize,
}

/// Where a call's time went.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    pub total: Duration,
    pub tokenize: Duration,
    /// The longest any of the call's texts waited in the queue.
    pub queue: Duration,
    /// The longest inference run any of the call's texts was part of.
    pub inference: Duration,
    /// The largest batch any of the call's texts was computed in.
    pub largest_batch: usize,
}

/// The model that produced an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelIdentity {
    pub name: String,
    pub version: String,
}

/// The answer to a [`ClassifyRequest`], texts in request order.
#[derive(Debug, Clone)]
pub struct Classification {
    pub texts: Vec<TextScores>,
    pub model: ModelIdentity,
    /// The producing model's labels, in the order of [`TextScores::scores`].
    pub labels: Arc<[String]>,
    /// Whether the producing model's head is multi-label ([`TextScores::assigned`] may hold
    /// any number of labels).
    pub multi_label: bool,
    pub timing: Timing,
}

impl Classification {
    /// Each text's label as one string, in request order (the tensor protocols' `label`
    /// output): its best label; for a multi-label model the labels it is given, best first,
    /// joined by commas (empty when none).
    pub fn label_strings(&self) -> Vec<String> {
        self.texts.iter().map(|t| t.assigned.join(",")).collect()
    }

    /// Every text's scores in the model's label order, row-major `[texts, labels]` (the tensor
    /// protocols' `probabilities` output).
    pub fn score_matrix(&self) -> Vec<f32> {
        self.texts
            .iter()
            .flat_map(|t| t.scores.iter().copied())
            .collect()
    }
}

/// One model version in service: what it is, and its own queue and inference workers.
pub struct ServingModel {
    pub spec: ModelSpec,
    /// `spec.labels`, shared with every answer this model gives.
    pub labels: Arc<[String]>,
    pub tokenizer: TextTokenizer,
    /// The ONNX file in use, relative to the model directory.
    pub file: PathBuf,
    /// Where it runs.
    pub device: Device,
    /// False when the graph's scores for a text depend on its batch-mates.
    pub batch_independent: bool,
    /// Version of the ONNX Runtime library actually loaded.
    pub runtime_version: String,
    /// Where this version came from: a directory or a registry URI.
    pub source: String,
    pub inference_workers: usize,
    /// Its workers' CUDA graphs; None when graphs are off.
    pub graphs: Option<Arc<GraphStats>>,
    /// Close calls run again on a precise variant; None when not in force.
    pub rescoring: Option<Rescoring>,
    /// The batching rule in force for this model's device.
    pub batch_rule: BatchRule,
    pub loaded_at: SystemTime,
    queue: Arc<BatchQueue>,
    workers: WorkerPool,
}

impl ServingModel {
    /// Starts the model's queue and workers; they report under `role`, and the challenger's
    /// workers run at the operating system's lowest priority.
    fn start(
        model: LoadedModel,
        batching: &BatchingConfig,
        metrics: &Arc<Metrics>,
        role: Role,
    ) -> Self {
        let inference_workers = model.backends.len();
        let batch_rule = BatchRule::new(batching, model.device);
        let queue = Arc::new(BatchQueue::new(
            batching.max_queue_size,
            batch_rule,
            metrics.clone(),
            role,
            inference_workers,
        ));
        let workers = WorkerPool::spawn(
            model.backends,
            queue.clone(),
            model.tokenizer.pad_id(),
            metrics.clone(),
            role,
        );
        Self {
            labels: model.spec.labels.clone().into(),
            spec: model.spec,
            tokenizer: model.tokenizer,
            file: model.file,
            device: model.device,
            batch_independent: model.batch_independent,
            runtime_version: model.runtime_version,
            source: model.source,
            inference_workers,
            graphs: model.graphs,
            rescoring: model.rescoring,
            batch_rule,
            loaded_at: SystemTime::now(),
            queue,
            workers,
        }
    }

    pub fn identity(&self) -> ModelIdentity {
        ModelIdentity {
            name: self.spec.name.clone(),
            version: self.spec.version.clone(),
        }
    }

    /// Stops admission, lets the workers finish what was queued, and waits for them. Blocks.
    fn stop(&self) {
        self.queue.close();
        self.workers.join();
    }

    /// Like [`ServingModel::stop`], but background texts still queued are dropped, not
    /// computed: a retiring challenger's mirrored texts are compared with nothing any more.
    fn stop_dropping_background(&self) {
        self.queue.close_dropping_background();
        self.workers.join();
    }
}

/// Stops a replaced model on its own thread with `stop` ([`ServingModel::stop`] or
/// [`ServingModel::stop_dropping_background`]); it is freed when the last call holding it has
/// its answer.
fn retire(old: Arc<ServingModel>, stop: fn(&ServingModel)) {
    std::thread::Builder::new()
        .name("model-retire".into())
        .spawn(move || stop(&old))
        .expect("spawning a thread failed; the OS is out of threads. This is a bug.");
}

/// The classification service: the serving model, the limits, and the service's lifecycle.
pub struct Classifier {
    serving: RwLock<Arc<ServingModel>>,
    batching: BatchingConfig,
    limits: LimitsConfig,
    metrics: Arc<Metrics>,
    /// Tokenizations running at once. Without a bound, each waiting request takes a thread of
    /// the blocking pool (70 threads at 64 clients) and they slow inference down by contention.
    tokenize_permits: Arc<Semaphore>,
    ready: AtomicBool,
    draining: AtomicBool,
    /// The challenger slot, when `shadow.uri` is set.
    shadow: Option<Arc<Shadow>>,
}

impl Classifier {
    /// Starts the model's inference workers. Not ready until [`Classifier::mark_ready`].
    pub fn start(
        model: LoadedModel,
        batching: &BatchingConfig,
        limits: &LimitsConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let serving = ServingModel::start(model, batching, &metrics, Role::Champion);
        Self {
            serving: RwLock::new(Arc::new(serving)),
            batching: batching.clone(),
            limits: limits.clone(),
            metrics,
            tokenize_permits: Arc::new(Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            shadow: None,
        }
    }

    /// Adds an (empty) challenger slot: fill it with [`Shadow::swap`].
    pub fn with_shadow(mut self, shadow: Shadow) -> Self {
        self.shadow = Some(Arc::new(shadow));
        self
    }

    /// The challenger slot, when `shadow.uri` is set.
    pub fn shadow(&self) -> Option<&Arc<Shadow>> {
        self.shadow.as_ref()
    }

    /// The model in service now.
    pub fn serving(&self) -> Arc<ServingModel> {
        self.serving
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn limits(&self) -> &LimitsConfig {
        &self.limits
    }

    /// The service takes traffic from now on.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Shutdown has begun: new calls are refused, running ones finish.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Puts `model` in service: it gets its own queue and workers, and calls from now on use
    /// it. The old model's queue closes to new texts; the texts it holds are still computed
    /// by its workers, which then exit, and the old model is freed when the last call holding
    /// it has its answer. A call that tokenized for the old model and finds its queue closed
    /// starts over on the new one, so nothing accepted is lost.
    pub fn swap(&self, model: LoadedModel) {
        let new = Arc::new(ServingModel::start(
            model,
            &self.batching,
            &self.metrics,
            Role::Champion,
        ));
        let old = std::mem::replace(
            &mut *self.serving.write().unwrap_or_else(|p| p.into_inner()),
            new,
        );
        // A new pair is compared from now on.
        if let Some(shadow) = &self.shadow {
            shadow.reset();
        }
        retire(old, ServingModel::stop);
    }

    /// Lets the workers finish every queued text, then stops them. Blocks; call once accepted
    /// calls have been answered.
    pub fn shutdown(&self) {
        self.serving().stop();
        if let Some(shadow) = &self.shadow {
            shadow.shutdown();
        }
    }

    /// The model `role` names now.
    fn model(&self, role: ModelRole) -> Result<Arc<ServingModel>, ClassifyError> {
        match role {
            ModelRole::Champion => Ok(self.serving()),
            ModelRole::Challenger => self
                .shadow
                .as_ref()
                .and_then(|s| s.challenger())
                .ok_or(ClassifyError::NoChallenger),
        }
    }

    /// `Ok` when this instance should take traffic.
    pub fn readiness(&self) -> Result<(), ClassifyError> {
        if self.draining.load(Ordering::SeqCst) {
            Err(ClassifyError::NotReady("shutting down"))
        } else if !self.ready.load(Ordering::SeqCst) {
            Err(ClassifyError::NotReady("starting"))
        } else if self.serving().workers.running() == 0 {
            Err(ClassifyError::NotReady("no inference worker is running"))
        } else {
            Ok(())
        }
    }

    /// Classifies `request.texts`, or gives up when `cancelled` completes first.
    pub async fn classify(
        &self,
        request: ClassifyRequest,
        cancelled: impl Future<Output = ()>,
    ) -> Result<Classification, ClassifyError> {
        let arrived = Instant::now();
        self.readiness()?;
        validate(&request.texts, request.top_k, &self.limits)?;
        let deadline = request.deadline;
        let work = tokio::time::timeout_at(deadline.at.into(), self.run(request));
        let mut classification = tokio::select! {
            outcome = work => outcome.map_err(|_| deadline.timeout_error())??,
            () = cancelled => return Err(ClassifyError::Cancelled),
        };
        classification.timing.total = arrived.elapsed();
        Ok(classification)
    }

    async fn run(&self, request: ClassifyRequest) -> Result<Classification, ClassifyError> {
        let ClassifyRequest {
            mut texts,
            top_k,
            truncate,
            truncation_side,
            scores,
            deadline,
            priority,
            model: role,
        } = request;
        // At most twice: a model swapped in between tokenizing and admission closes the old
        // queue, and the texts are tokenized again for the new model.
        let (model, outputs, tokens, tokenize_time, mirror) = loop {
            let model = self.model(role)?;
            let (returned, tokenized, tokenize_time) = self
                .tokenize(&model, texts, truncate, truncation_side, deadline)
                .instrument(tracing::info_span!("tokenize"))
                .await?;
            texts = returned;
            let tokens: Vec<usize> = tokenized.iter().map(TokenizedText::len).collect();
            let mirror = match role {
                ModelRole::Champion => self.plan_mirror(&model, &tokenized),
                ModelRole::Challenger => None,
            };
            let (jobs, replies): (Vec<Job>, Vec<_>) = tokenized
                .into_iter()
                .map(|text| {
                    let (mut job, reply) = Job::new(text, deadline.at);
                    job.priority = priority;
                    (job, reply)
                })
                .unzip();
            let waiting = tracing::info_span!("queue_wait", texts = jobs.len());
            let admitted = model.queue.admit(jobs);
            if matches!(admitted, Err(AdmitError::Closed))
                && !self.draining.load(Ordering::SeqCst)
                && self
                    .model(role)
                    .is_ok_and(|current| !Arc::ptr_eq(&model, &current))
            {
                continue;
            }
            admitted?;
            let outputs = async {
                let mut outputs = Vec::with_capacity(replies.len());
                for reply in replies {
                    outputs.push(match reply.await {
                        Ok(Ok(output)) => output,
                        Ok(Err(JobError::Inference(message))) => {
                            return Err(ClassifyError::Inference(message))
                        }
                        // The queue drops a job only once its deadline has passed.
                        Err(_) => return Err(deadline.timeout_error()),
                    });
                }
                Ok(outputs)
            }
            .instrument(waiting)
            .await?;
            break (model, outputs, tokens, tokenize_time, mirror);
        };
        if let Some(mirror) = mirror {
            self.mirror(mirror, &model, &mut texts, &outputs, truncation_side);
        }
        let _answer = tracing::info_span!("answer").entered();
        let slowest = |f: fn(&JobOutput) -> Duration| outputs.iter().map(f).max();
        let timing = Timing {
            total: Duration::ZERO,
            tokenize: tokenize_time,
            queue: slowest(|o| o.queue_time).unwrap_or_default(),
            inference: slowest(|o| o.inference_time).unwrap_or_default(),
            largest_batch: outputs.iter().map(|o| o.batch_size).max().unwrap_or(0),
        };
        let labels = &model.labels;
        let function = scores.unwrap_or_else(|| model.spec.head.default_scores());
        let temperature = model.spec.temperature;
        let texts = outputs
            .iter()
            .zip(tokens)
            .map(|(output, tokens)| {
                let assigned = model
                    .spec
                    .head
                    .assign(&output.logits, temperature)
                    .into_iter()
                    .map(|index| labels[index].clone())
                    .collect();
                let scores = function.apply(&output.logits, temperature);
                TextScores {
                    ranked: ranked(&scores, top_k)
                        .into_iter()
                        .map(|(index, score)| LabelScore {
                            label: labels[index].clone(),
                            score,
                        })
                        .collect(),
                    scores,
                    assigned,
                    tokens,
                }
            })
            .collect();
        Ok(Classification {
            texts,
            labels: model.labels.clone(),
            multi_label: model.spec.head.is_multi_label(),
            model: model.identity(),
            timing,
        })
    }

    /// Which of these texts go to the challenger, with the champion's ids when the
    /// challenger's tokenizer gives the same ones. `None`: no shadow, no challenger, or none
    /// drawn.
    fn plan_mirror(
        &self,
        champion: &ServingModel,
        tokenized: &[TokenizedText],
    ) -> Option<MirrorPlan> {
        let shadow = self.shadow.as_ref()?;
        let challenger = shadow.challenger()?;
        let picked = shadow.draw(tokenized.len());
        if picked.is_empty() {
            return None;
        }
        let reuses_ids = champion.tokenizer.same_ids_as(&challenger.tokenizer);
        let ids = picked
            .iter()
            .map(|&i| reuses_ids.then(|| tokenized[i].clone()))
            .collect();
        Some(MirrorPlan {
            shadow: shadow.clone(),
            challenger,
            picked,
            ids,
            keeps_text: shadow.needs_text(reuses_ids),
        })
    }

    /// Hands the drawn texts and the champion's answers to the shadow; returns at once.
    fn mirror(
        &self,
        plan: MirrorPlan,
        champion: &ServingModel,
        texts: &mut [String],
        outputs: &[JobOutput],
        side: TruncationSide,
    ) {
        let picks = plan
            .picked
            .iter()
            .zip(plan.ids)
            .map(|(&i, ids)| shadow::Pick {
                ids,
                text: plan.keeps_text.then(|| std::mem::take(&mut texts[i])),
                champion_logits: outputs[i].logits.clone(),
            })
            .collect();
        plan.shadow.mirror(
            plan.challenger,
            (
                champion.labels.clone(),
                champion.spec.temperature,
                champion.spec.head.clone(),
            ),
            picks,
            side,
            self.tokenize_permits.clone(),
        );
    }

    /// Tokenizes on the blocking pool, at most one call per core at a time.
    async fn tokenize(
        &self,
        model: &Arc<ServingModel>,
        texts: Vec<String>,
        truncate: bool,
        side: TruncationSide,
        deadline: Deadline,
    ) -> Result<(Vec<String>, Vec<TokenizedText>, Duration), ClassifyError> {
        let _permit = self
            .tokenize_permits
            .acquire()
            .await
            .map_err(|_| ClassifyError::NotReady("shutting down"))?;
        let model = model.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            // The blocking pool may be busy: work whose deadline passed while waiting is dropped.
            if Instant::now() >= deadline.at {
                return None;
            }
            let started = Instant::now();
            let tokenized = model.tokenizer.encode_with(&texts, truncate, side);
            Some((texts, tokenized, started.elapsed()))
        })
        .await
        .map_err(|e| ClassifyError::Inference(format!("tokenizer thread failed: {e}")))?;
        let (texts, tokenized, elapsed) = outcome.ok_or_else(|| deadline.timeout_error())?;
        self.metrics.emit(Tokenized { elapsed });
        Ok((texts, tokenized?, elapsed))
    }
}

/// The texts of one call drawn for the shadow, decided before their ids go to the queue.
struct MirrorPlan {
    shadow: Arc<Shadow>,
    challenger: Arc<ServingModel>,
    /// Indices of the drawn texts in the call.
    picked: Vec<usize>,
    /// Per drawn text: the champion's ids, when the challenger can use them.
    ids: Vec<Option<TokenizedText>>,
    /// Whether the texts themselves go along (to tokenize again, or to keep).
    keeps_text: bool,
}

/// Why one text is refused before any work is done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextProblem {
    #[error("is empty; send the article text")]
    Empty,
    #[error("has {chars} characters; the limit is {limit}")]
    TooLong { chars: usize, limit: usize },
}

/// The rules one text must meet: what `/predict` checks per input and `newscls classify` per
/// row.
pub fn check_text(text: &str, limits: &LimitsConfig) -> Result<(), TextProblem> {
    if text.trim().is_empty() {
        return Err(TextProblem::Empty);
    }
    // Bytes bound characters from above, so the count is only needed near the limit.
    if text.len() > limits.max_input_chars {
        let chars = text.chars().count();
        if chars > limits.max_input_chars {
            return Err(TextProblem::TooLong {
                chars,
                limit: limits.max_input_chars,
            });
        }
    }
    Ok(())
}

/// The request contract that holds before any work is done.
fn validate(
    texts: &[String],
    top_k: Option<usize>,
    limits: &LimitsConfig,
) -> Result<(), ClassifyError> {
    let invalid = |message: String| Err(ClassifyError::Invalid(message));
    if texts.is_empty() {
        return invalid("no text was sent; send at least one".into());
    }
    if texts.len() > limits.max_client_batch_size {
        return invalid(format!(
            "{} texts were sent; at most {} are accepted per request",
            texts.len(),
            limits.max_client_batch_size
        ));
    }
    for (index, text) in texts.iter().enumerate() {
        if let Err(problem) = check_text(text, limits) {
            return invalid(format!("input {index} {problem}"));
        }
    }
    if top_k == Some(0) {
        return invalid("`top_k` must be at least 1".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        LimitsConfig {
            max_body_bytes: 1000,
            max_client_batch_size: 2,
            max_input_chars: 5,
            max_row_bytes: None,
        }
    }

    #[test]
    fn rejects_what_the_contract_forbids() {
        let cases: &[(&[&str], Option<usize>)] = &[
            (&[], None),
            (&["a", "b", "c"], None),
            (&["  "], None),
            (&["abcdef"], None),
            (&["ok"], Some(0)),
        ];
        for (texts, top_k) in cases {
            let texts: Vec<String> = texts.iter().map(|s| s.to_string()).collect();
            assert!(
                validate(&texts, *top_k, &limits()).is_err(),
                "{texts:?} {top_k:?}"
            );
        }
    }

    #[test]
    fn counts_characters_not_bytes() {
        // Five Hangul syllables are 15 bytes but 5 characters: within the limit.
        assert!(validate(&["한국은행장".to_string()], None, &limits()).is_ok());
    }

    #[test]
    fn a_full_queue_and_a_hopeless_deadline_are_both_overload() {
        let full = ClassifyError::from(AdmitError::Full {
            queued: 9,
            capacity: 9,
            retry_after: Duration::from_secs(2),
        });
        assert!(matches!(
            full,
            ClassifyError::Overloaded { queued: 9, retry_after } if retry_after == Duration::from_secs(2)
        ));
        let late = ClassifyError::from(AdmitError::WouldMissDeadline {
            queued: 3,
            expected_wait: Duration::from_secs(5),
        });
        assert!(matches!(late, ClassifyError::Overloaded { queued: 3, .. }));
        assert!(matches!(
            ClassifyError::from(AdmitError::Closed),
            ClassifyError::NotReady(_)
        ));
    }
}
