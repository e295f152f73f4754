//! Stream mode: classify a Kafka topic through the same pipeline as HTTP.
//!
//! When `stream.brokers` is set, the process joins consumer group `stream.group_id` on
//! `stream.input_topic` and answers every input message with one result on
//! `stream.output_topic`, under the input's key. Each message is one call to the
//! [`Classifier`], so stream texts share the batching queue with HTTP requests, as background
//! work: they fill batches but queue behind what callers wait for.
//!
//! At-least-once: offsets are stored (and then committed by librdkafka) only after the result,
//! or the dead-letter record, is acknowledged by the broker, and only up to the lowest offset
//! still in flight in its partition ([`OffsetTracker`]), so a crash re-delivers everything not
//! answered. A message that cannot be classified (bad JSON, not UTF-8, missing or empty text,
//! over the limits) goes to `stream.dead_letter_topic` with the reason in the `x-error` header
//! and does not hold its partition up. Overload is retried, never dead-lettered; an inference
//! failure is retried a few times with backoff (it is usually the batch, not the text) before
//! the message is dead-lettered. A record the broker refuses for good (unknown topic, too
//! large, not authorized) is never retried silently: a refused result goes to the dead-letter
//! topic with the reason, a dead-letter record too large for the broker goes again with its
//! payload cut (`x-original-size` says how long it was), and when the dead-letter topic itself
//! refuses, the consumer stops, leaves that message uncommitted and `/readyz` turns 503 with
//! the reason. Transient produce errors (broker down) are retried with backoff. Backpressure:
//! at most `stream.max_in_flight` messages are being classified; at the limit the consumer
//! pauses its partitions, and resumes when half of it is free. A rebalance commits what the
//! revoked partitions answered and hands their messages in flight to the next owner. On
//! shutdown it stops consuming, finishes what is in flight, and commits.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};

use crate::frontends::{Drained, FrontDoor, Readiness};
use crate::infra::config::StreamConfig;
use crate::infra::events::{
    CommitLag, PartitionOwned, StreamClassified, StreamMessage, StreamPaused, StreamRetried,
};
use crate::infra::metrics::Metrics;
use crate::pipeline::classify::{Classifier, ClassifyError, ClassifyRequest, Deadline, Priority};

/// The header that carries a dead-lettered message's reason.
pub const ERROR_HEADER: &str = "x-error";

#[derive(Debug, thiserror::Error)]
#[error("stream: {0}")]
pub struct StreamError(String);

/// Headers of a dead-letter record whose payload was cut to fit the broker.
pub const ORIGINAL_SIZE_HEADER: &str = "x-original-size";
/// How much of an oversized payload a dead-letter record keeps.
const TRUNCATED_PAYLOAD: usize = 16 * 1024;
/// Attempts at classifying a message when inference fails.
const INFERENCE_ATTEMPTS: u32 = 5;

/// Whether the consumer reached its brokers at the last probe (every few seconds), and whether
/// it stopped because a record could not be delivered anywhere; `/readyz` reads it.
#[derive(Default)]
pub struct StreamStatus {
    brokers_down: AtomicBool,
    halted: Mutex<Option<String>>,
}

impl Readiness for StreamStatus {
    /// Why the stream is not healthy, if it is not.
    fn problem(&self) -> Option<String> {
        if let Some(reason) = &*self.halted.lock().unwrap_or_else(|p| p.into_inner()) {
            return Some(format!("the stream consumer stopped: {reason}"));
        }
        self.brokers_down
            .load(Ordering::SeqCst)
            .then(|| "the stream consumer lost its Kafka brokers".to_string())
    }
}

/// What to do with a message after the classifier failed on it (attempt counts from 1).
#[derive(Debug, PartialEq, Eq)]
enum AfterFailure {
    Retry(Duration),
    DeadLetter(String),
    /// Shutting down: leave it uncommitted for the next consumer.
    Abandon,
}

/// The retry rule: bad input is dead-lettered at once; inference failures are retried with
/// backoff, then dead-lettered (a text that fails the model every time must not pin its
/// partition); overload, timeouts and a model swap in progress say nothing about the message
/// and are retried for as long as it takes.
fn after_failure(error: &ClassifyError, attempt: u32, stopping: bool) -> AfterFailure {
    match error {
        ClassifyError::Invalid(_) | ClassifyError::Tokenize(_) => {
            AfterFailure::DeadLetter(error.to_string())
        }
        ClassifyError::Inference(_) if attempt >= INFERENCE_ATTEMPTS => {
            AfterFailure::DeadLetter(format!("inference failed {attempt} times: {error}"))
        }
        ClassifyError::Inference(_) => {
            AfterFailure::Retry(Duration::from_millis(200) * 2u32.pow(attempt - 1))
        }
        ClassifyError::NotReady(_) if stopping => AfterFailure::Abandon,
        ClassifyError::Overloaded { retry_after, .. } => {
            AfterFailure::Retry((*retry_after).min(Duration::from_millis(500)))
        }
        _ => AfterFailure::Retry(Duration::from_millis(200)),
    }
}

/// A produce error the broker will give again however often it is retried.
fn is_permanent(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    let code = match error {
        KafkaError::MessageProduction(code) => *code,
        _ => return false,
    };
    matches!(
        code,
        UnknownTopic
            | UnknownTopicOrPartition
            | InvalidTopic
            | MessageSizeTooLarge
            | InvalidMessageSize
            | InvalidMessage
            | InvalidRecord
            | TopicAuthorizationFailed
            | ClusterAuthorizationFailed
            | PolicyViolation
            | InvalidRequiredAcks
            | Fatal
    )
}

fn is_too_large(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize
        )
    )
}

/// The offsets of the input topic, shared by the stream task and librdkafka's rebalance
/// callback.
type SharedOffsets = Arc<Mutex<OffsetTracker>>;

fn lock(offsets: &SharedOffsets) -> std::sync::MutexGuard<'_, OffsetTracker> {
    offsets.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stores "the next offset to read" of each partition for the next commit.
///
/// `rd_kafka_offsets_store` takes the next offset as given; the single-partition
/// `store_offset` stores one past the offset it is given (it expects the last message
/// processed), which would skip a message after a crash.
fn store_next_offsets<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    topic: &str,
    next: &[(i32, i64)],
) -> Result<(), KafkaError> {
    if next.is_empty() {
        return Ok(());
    }
    let mut list = TopicPartitionList::with_capacity(next.len());
    for &(partition, offset) in next {
        list.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    }
    consumer.store_offsets(&list)
}

/// librdkafka's callbacks: errors are logged; a revoked partition's answered offsets are
/// stored (librdkafka commits them as it hands the partition over) and its messages still in
/// flight are handed back: the next owner reads them again, and their late answers store
/// nothing.
struct Context {
    topic: String,
    offsets: SharedOffsets,
    /// For `newscls_stream_partition_assigned`: which partitions this replica owns, for
    /// operators spreading a group over replicas.
    metrics: Arc<Metrics>,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            let partitions: Vec<i32> = assigned
                .elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition())
                .collect();
            for &partition in &partitions {
                self.metrics.emit(PartitionOwned {
                    partition,
                    owned: true,
                });
            }
            tracing::info!(?partitions, "partitions assigned");
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        for element in revoked.elements_for_topic(&self.topic) {
            self.metrics.emit(PartitionOwned {
                partition: element.partition(),
                owned: false,
            });
        }
        let mut handed_back = 0;
        let mut answered = Vec::new();
        {
            let mut offsets = lock(&self.offsets);
            for element in revoked.elements_for_topic(&self.topic) {
                if let Some(revoke) = offsets.revoke(element.partition()) {
                    handed_back += revoke.in_flight;
                    answered.push((element.partition(), revoke.next));
                }
            }
        }
        if answered.is_empty() {
            return;
        }
        if let Err(e) = store_next_offsets(consumer, &self.topic, &answered) {
            tracing::warn!(error = %e, "storing the revoked partitions' offsets failed");
        }
        tracing::info!(
            partitions = ?answered,
            handed_back,
            "partitions revoked: answered offsets stored, messages in flight handed back"
        );
    }
}

/// Per partition, which offsets are in flight, so that the committed offset never passes a
/// message that has not been answered. Pure: unit-tested without a broker.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: BTreeMap<i32, PartitionOffsets>,
    /// Numbers each assignment of a partition, so that an answer begun under an earlier
    /// assignment cannot complete an offset of the current one.
    assignments: u64,
}

#[derive(Debug)]
struct PartitionOffsets {
    assignment: u64,
    in_flight: BTreeSet<i64>,
    /// One past the highest offset seen.
    next: i64,
}

impl PartitionOffsets {
    fn committable(&self) -> i64 {
        self.in_flight.first().copied().unwrap_or(self.next)
    }
}

/// A message being answered: what [`OffsetTracker::complete`] needs.
#[derive(Debug, Clone, Copy)]
pub struct InFlight {
    partition: i32,
    offset: i64,
    assignment: u64,
}

/// What a revoked partition leaves: the offset to commit, and how many of its messages were
/// handed back unanswered.
#[derive(Debug, PartialEq, Eq)]
pub struct Revoked {
    pub next: i64,
    pub in_flight: usize,
}

impl OffsetTracker {
    pub fn begin(&mut self, partition: i32, offset: i64) -> InFlight {
        let assignments = &mut self.assignments;
        let state = self.partitions.entry(partition).or_insert_with(|| {
            *assignments += 1;
            PartitionOffsets {
                assignment: *assignments,
                in_flight: BTreeSet::new(),
                next: offset,
            }
        });
        state.in_flight.insert(offset);
        state.next = state.next.max(offset + 1);
        InFlight {
            partition,
            offset,
            assignment: state.assignment,
        }
    }

    /// Marks a message answered; returns the offset that may now be committed (the next one
    /// to read): the lowest still in flight, else one past the highest seen. `None` when the
    /// partition was revoked since the message was read: its next owner reads it again.
    pub fn complete(&mut self, message: InFlight) -> Option<i64> {
        let state = self
            .partitions
            .get_mut(&message.partition)
            .filter(|s| s.assignment == message.assignment)?;
        state.in_flight.remove(&message.offset);
        Some(state.committable())
    }

    /// Forgets a partition handed to another consumer.
    pub fn revoke(&mut self, partition: i32) -> Option<Revoked> {
        self.partitions.remove(&partition).map(|state| Revoked {
            next: state.committable(),
            in_flight: state.in_flight.len(),
        })
    }

    /// The committable offset of every partition held.
    pub fn committable(&self) -> Vec<(i32, i64)> {
        self.partitions
            .iter()
            .map(|(p, s)| (*p, s.committable()))
            .collect()
    }
}

/// A running consumer; as a [`FrontDoor`], it stops, drains and commits.
pub struct StreamHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    pub status: Arc<StreamStatus>,
}

impl FrontDoor for StreamHandle {
    fn name(&self) -> &'static str {
        "stream"
    }

    /// Stops consuming now; finishes once the messages in flight are answered and their offsets
    /// committed.
    fn stop_accepting(self: Box<Self>) -> Drained {
        let _ = self.stop.send(true);
        let task = self.task;
        Box::pin(async move {
            let _ = task.await;
        })
    }
}

struct Stream {
    config: StreamConfig,
    consumer: StreamConsumer<Context>,
    producer: FutureProducer,
    classifier: Arc<Classifier>,
    metrics: Arc<Metrics>,
    offsets: SharedOffsets,
    permits: Arc<Semaphore>,
    timeout: Duration,
    /// Set once shutdown began: messages the classifier no longer takes are left uncommitted,
    /// for the next consumer to read again.
    stopping: AtomicBool,
    status: Arc<StreamStatus>,
    /// Signalled when a record could not be delivered anywhere: consumption stops.
    halt: tokio::sync::Notify,
}

/// Joins the consumer group and starts classifying. `timeout`: each message's deadline.
pub fn start(
    config: &StreamConfig,
    timeout: Duration,
    classifier: Arc<Classifier>,
    metrics: Arc<Metrics>,
) -> Result<StreamHandle, StreamError> {
    let brokers = config
        .brokers
        .as_deref()
        .ok_or_else(|| StreamError("stream.brokers is not set".into()))?;
    let status = Arc::new(StreamStatus::default());
    let with_properties = |mut client: ClientConfig| {
        for (key, value) in config.kafka.expose() {
            client.set(key, value);
        }
        client.set("bootstrap.servers", brokers);
        client
    };
    let offsets = SharedOffsets::default();
    let mut consumer_config = ClientConfig::new();
    // Defaults the properties may change: read a new group's topic from its start, and commit
    // every second (what a crash re-delivers is at most about a second of answers).
    consumer_config
        .set("auto.offset.reset", "earliest")
        .set("auto.commit.interval.ms", "1000");
    let consumer: StreamConsumer<Context> = with_properties(consumer_config)
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "true")
        // Offsets are stored by hand, only for answered messages (see OffsetTracker).
        .set("enable.auto.offset.store", "false")
        .create_with_context(Context {
            topic: config.input_topic.clone(),
            offsets: offsets.clone(),
            metrics: metrics.clone(),
        })
        .map_err(|e| StreamError(format!("consumer: {e}")))?;
    consumer
        .subscribe(&[&config.input_topic])
        .map_err(|e| StreamError(format!("subscribe to {}: {e}", config.input_topic)))?;
    let mut producer_config = ClientConfig::new();
    // A default the properties may change: a topic the cluster does not know is refused after
    // 5 s instead of librdkafka's 30 (a topic that was just created is known well within that).
    producer_config.set("topic.metadata.propagation.max.ms", "5000");
    let producer: FutureProducer = with_properties(producer_config)
        .set("acks", "all")
        .create()
        .map_err(|e| StreamError(format!("producer: {e}")))?;
    let stream = Arc::new(Stream {
        config: config.clone(),
        consumer,
        producer,
        classifier,
        metrics,
        offsets,
        permits: Arc::new(Semaphore::new(config.max_in_flight)),
        timeout,
        stopping: AtomicBool::new(false),
        status: status.clone(),
        halt: tokio::sync::Notify::new(),
    });
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(stream.run(stopped));
    tracing::info!(brokers, topic = %config.input_topic, group = %config.group_id, "stream consumer started");
    Ok(StreamHandle { stop, task, status })
}

impl Stream {
    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let watcher = tokio::spawn(self.clone().watch_brokers());
        loop {
            if self.permits.available_permits() == 0 {
                // Resume once half the room is back, not at every answer: each pause and
                // resume drops and refetches what librdkafka had buffered.
                let room = (self.config.max_in_flight / 2).max(1) as u32;
                self.pause(true);
                tokio::select! {
                    permits = self.permits.acquire_many(room) => drop(permits),
                    _ = stop.changed() => break,
                    _ = self.halt.notified() => break,
                }
                self.pause(false);
            }
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                break;
            };
            let message = tokio::select! {
                message = self.consumer.recv() => message,
                _ = stop.changed() => break,
                _ = self.halt.notified() => break,
            };
            match message {
                Ok(message) => {
                    let message = message.detach();
                    self.metrics.emit(StreamMessage {
                        outcome: "consumed",
                    });
                    let in_flight =
                        lock(&self.offsets).begin(message.partition(), message.offset());
                    let stream = self.clone();
                    tokio::spawn(async move {
                        stream.handle(message, in_flight).await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "kafka consume error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        watcher.abort();
        self.stopping.store(true, Ordering::SeqCst);
        // Drain: every permit back means nothing is in flight.
        let _ = self
            .permits
            .acquire_many(self.config.max_in_flight as u32)
            .await;
        self.store_offsets();
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            // The last automatic commit already holds every stored offset.
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => tracing::warn!(error = %e, "final offset commit failed"),
        }
        tracing::info!("stream consumer stopped");
    }

    fn pause(&self, pause: bool) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let result = if pause {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, pause, "pausing or resuming partitions failed");
        }
        self.metrics.emit(StreamPaused { paused: pause });
    }

    /// Classifies one message and answers it; returns once the answer is acknowledged.
    async fn handle(&self, message: OwnedMessage, in_flight: InFlight) {
        let started = Instant::now();
        let answer = match decode(&message, &self.config) {
            Ok((id, text)) => match self.classify(id, text, started).await {
                Some(answer) => answer,
                // Shutting down: not answered, not committed, read again after the restart.
                None => return,
            },
            Err(reason) => Err(reason),
        };
        let delivered = match answer {
            Ok(result) => {
                let output = &self.config.output_topic;
                let payload = result.to_string().into_bytes();
                match self.deliver(output, message.key(), &payload, &[]).await {
                    Ok(()) => Ok("produced"),
                    Err(refused) => {
                        let reason =
                            format!("the output topic {output} refused the result: {refused}");
                        tracing::error!(reason, "stream result refused; dead-lettering the input");
                        self.dead_letter(&message, &reason).await
                    }
                }
            }
            Err(reason) => self.dead_letter(&message, &reason).await,
        };
        let outcome = match delivered {
            Ok(outcome) => outcome,
            Err(reason) => {
                // Nowhere to put it: stop here rather than skip it or retry forever. Its offset
                // stays in flight, so nothing past it is committed.
                let reason = format!(
                    "message at partition {} offset {} could not be dead-lettered: {reason}",
                    in_flight.partition, in_flight.offset
                );
                tracing::error!(reason, "stream consumer stopping; /readyz reports it");
                *self.status.halted.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                self.metrics.emit(StreamMessage {
                    outcome: "undeliverable",
                });
                self.halt.notify_one();
                return;
            }
        };
        self.metrics.emit(StreamMessage { outcome });
        // None: the partition was handed to another consumer, which reads this message again.
        if let Some(next) = lock(&self.offsets).complete(in_flight) {
            let partition = in_flight.partition;
            if let Err(e) = store_next_offsets(
                &self.consumer,
                &self.config.input_topic,
                &[(partition, next)],
            ) {
                tracing::debug!(error = %e, partition, "offset not stored");
            }
        }
    }

    /// Sends the input to the dead-letter topic with `reason`; if the broker finds it too large,
    /// again with the payload cut and its original size in a header. `Err`: refused for good.
    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        reason: &str,
    ) -> Result<&'static str, String> {
        let topic = &self.config.dead_letter_topic;
        let payload = message.payload().unwrap_or_default();
        let headers = [(ERROR_HEADER, reason.to_string())];
        match self
            .deliver_raw(topic, message.key(), payload, &headers)
            .await
        {
            Ok(()) => Ok("dead_lettered"),
            Err(e) if is_too_large(&e) && payload.len() > TRUNCATED_PAYLOAD => {
                let headers = [
                    (ERROR_HEADER, reason.to_string()),
                    (ORIGINAL_SIZE_HEADER, payload.len().to_string()),
                ];
                self.deliver(
                    topic,
                    message.key(),
                    &payload[..TRUNCATED_PAYLOAD],
                    &headers,
                )
                .await
                .map(|()| "dead_lettered")
                .map_err(|e| format!("dead-letter topic {topic}: {e}"))
            }
            Err(e) => Err(format!("dead-letter topic {topic}: {e}")),
        }
    }

    /// The result JSON, or the reason the text cannot be classified; `None` when shutdown
    /// stopped it. See [`after_failure`] for what is retried.
    async fn classify(
        &self,
        id: Value,
        text: String,
        started: Instant,
    ) -> Option<Result<Value, String>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let request = ClassifyRequest {
                // Behind HTTP requests: a caller waits for those, the backlog can.
                priority: Priority::Background,
                ..ClassifyRequest::new(vec![text.clone()], Deadline::after(self.timeout))
            };
            let error = match self
                .classifier
                .classify(request, std::future::pending())
                .await
            {
                Ok(classification) => {
                    self.metrics.emit(StreamClassified {
                        batch_size: classification.timing.largest_batch,
                    });
                    let multi_label = classification.multi_label;
                    let text = classification.texts.into_iter().next();
                    let (scores, assigned) =
                        text.map(|t| (t.ranked, t.assigned)).unwrap_or_default();
                    let mut result = json!({
                        "id": id,
                        "label": scores.first().map(|s| s.label.clone()),
                        "scores": scores.iter().map(|s| (s.label.clone(), json!(s.score))).collect::<serde_json::Map<_, _>>(),
                        "model": classification.model.name,
                        "model_version": classification.model.version,
                        "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
                    });
                    // A multi-label model's answer: the labels over their thresholds.
                    if multi_label {
                        result["labels"] = json!(assigned);
                    }
                    return Some(Ok(result));
                }
                Err(error) => error,
            };
            match after_failure(&error, attempt, self.stopping.load(Ordering::SeqCst)) {
                AfterFailure::Retry(pause) => {
                    let reason = match error {
                        ClassifyError::Overloaded { .. } => "overloaded",
                        ClassifyError::Inference(_) => {
                            tracing::warn!(%error, attempt, "stream: inference failed; retrying");
                            "inference"
                        }
                        _ => "other",
                    };
                    self.metrics.emit(StreamRetried { reason });
                    tokio::time::sleep(pause).await;
                }
                AfterFailure::DeadLetter(reason) => return Some(Err(reason)),
                AfterFailure::Abandon => return None,
            }
        }
    }

    /// Sends until the broker acknowledges or refuses for good (`Err` with the reason);
    /// transient errors are retried with backoff.
    async fn deliver(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, String)],
    ) -> Result<(), String> {
        self.deliver_raw(topic, key, payload, headers)
            .await
            .map_err(|e| e.to_string())
    }

    async fn deliver_raw(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: &[(&str, String)],
    ) -> Result<(), KafkaError> {
        let mut backoff = Duration::from_millis(500);
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic).payload(payload);
            if let Some(key) = key {
                record = record.key(key);
            }
            if !headers.is_empty() {
                let mut list = OwnedHeaders::new_with_capacity(headers.len());
                for (key, value) in headers {
                    list = list.insert(Header {
                        key,
                        value: Some(value.as_str()),
                    });
                }
                record = record.headers(list);
            }
            match self.producer.send(record, Duration::from_secs(10)).await {
                Ok(_) => return Ok(()),
                Err((e, _)) if is_permanent(&e) => return Err(e),
                Err((e, _)) => {
                    tracing::warn!(error = %e, topic, retry_in = ?backoff, "producing failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn store_offsets(&self) {
        let committable = lock(&self.offsets).committable();
        if let Err(e) = store_next_offsets(&self.consumer, &self.config.input_topic, &committable) {
            tracing::warn!(error = %e, "storing the final offsets failed");
        }
    }

    /// Every 5 s: asks a broker for the input topic's metadata (no answer within 2 s: the
    /// brokers are down and `/readyz` says so), and reports per partition the high watermark
    /// minus the offset that will be committed.
    async fn watch_brokers(self: Arc<Self>) {
        loop {
            let stream = self.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let reached = stream
                    .consumer
                    .fetch_metadata(Some(&stream.config.input_topic), Duration::from_secs(2));
                if let Err(e) = &reached {
                    tracing::warn!(error = %e, "the Kafka brokers did not answer");
                }
                stream
                    .status
                    .brokers_down
                    .store(reached.is_err(), Ordering::SeqCst);
                let committable = lock(&stream.offsets).committable();
                for (partition, offset) in committable {
                    if let Ok((_, high)) = stream.consumer.fetch_watermarks(
                        &stream.config.input_topic,
                        partition,
                        Duration::from_secs(1),
                    ) {
                        stream.metrics.emit(CommitLag {
                            partition,
                            messages: high - offset,
                        });
                    }
                }
            })
            .await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
}

/// The id and text of a message: a JSON object with the configured fields, or plain UTF-8 text
/// (whose id is then its key, else its offset).
fn decode(message: &OwnedMessage, config: &StreamConfig) -> Result<(Value, String), String> {
    let payload = message.payload().unwrap_or_default();
    let text = std::str::from_utf8(payload).map_err(|_| "the message is not UTF-8".to_string())?;
    let (id, text) = if text.trim_start().starts_with('{') {
        let object: Value = serde_json::from_str(text)
            .map_err(|e| format!("the message is not valid JSON: {e}"))?;
        let text = match &object[&config.text_field] {
            Value::String(text) => text.clone(),
            Value::Null => return Err(format!("the message has no `{}` field", config.text_field)),
            _ => return Err(format!("`{}` must be a string", config.text_field)),
        };
        (object[&config.id_field].clone(), text)
    } else {
        let id = message
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .map_or_else(|| json!(message.offset()), |k| json!(k));
        (id, text.to_string())
    };
    if text.trim().is_empty() {
        return Err("the text is empty".into());
    }
    Ok((id, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bad_input_and_repeated_inference_failures_are_dead_lettered() {
        let invalid = ClassifyError::Invalid("the text is empty".into());
        assert!(matches!(
            after_failure(&invalid, 1, false),
            AfterFailure::DeadLetter(_)
        ));
        let inference = ClassifyError::Inference("CUDA error".into());
        let pauses: Vec<AfterFailure> = (1..INFERENCE_ATTEMPTS)
            .map(|attempt| after_failure(&inference, attempt, false))
            .collect();
        assert_eq!(
            pauses,
            [200, 400, 800, 1600].map(|ms| AfterFailure::Retry(Duration::from_millis(ms))),
            "retried with backoff"
        );
        match after_failure(&inference, INFERENCE_ATTEMPTS, false) {
            AfterFailure::DeadLetter(reason) => assert!(reason.contains("5 times"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let overloaded = ClassifyError::Overloaded {
            queued: 1024,
            retry_after: Duration::from_secs(3),
        };
        for attempt in [1, 100] {
            assert_eq!(
                after_failure(&overloaded, attempt, false),
                AfterFailure::Retry(Duration::from_millis(500)),
                "overload is never the message's fault"
            );
        }
        let not_ready = ClassifyError::NotReady("draining");
        assert_eq!(after_failure(&not_ready, 1, true), AfterFailure::Abandon);
    }

    #[test]
    fn refusals_for_good_are_told_from_transient_errors() {
        for code in [
            RDKafkaErrorCode::UnknownTopicOrPartition,
            RDKafkaErrorCode::UnknownTopic,
            RDKafkaErrorCode::MessageSizeTooLarge,
            RDKafkaErrorCode::TopicAuthorizationFailed,
        ] {
            assert!(
                is_permanent(&KafkaError::MessageProduction(code)),
                "{code:?}"
            );
        }
        for code in [
            RDKafkaErrorCode::MessageTimedOut,
            RDKafkaErrorCode::QueueFull,
            RDKafkaErrorCode::NotLeaderForPartition,
            RDKafkaErrorCode::BrokerTransportFailure,
        ] {
            assert!(
                !is_permanent(&KafkaError::MessageProduction(code)),
                "{code:?}"
            );
        }
    }

    #[test]
    fn the_committed_offset_never_passes_a_message_in_flight() {
        let mut offsets = OffsetTracker::default();
        let read: Vec<InFlight> = (10..14).map(|offset| offsets.begin(0, offset)).collect();
        assert_eq!(
            offsets.complete(read[2]),
            Some(10),
            "10 and 11 are still in flight"
        );
        assert_eq!(offsets.complete(read[0]), Some(11));
        assert_eq!(offsets.complete(read[1]), Some(13));
        assert_eq!(
            offsets.complete(read[3]),
            Some(14),
            "all answered: the next to read"
        );
        offsets.begin(1, 5);
        assert_eq!(offsets.committable(), vec![(0, 14), (1, 5)]);
    }

    #[test]
    fn a_revoked_partition_hands_back_its_messages_in_flight() {
        let mut offsets = OffsetTracker::default();
        let first = offsets.begin(0, 20);
        let second = offsets.begin(0, 21);
        assert_eq!(offsets.complete(second), Some(20));
        assert_eq!(
            offsets.revoke(0),
            Some(Revoked {
                next: 20,
                in_flight: 1
            }),
            "20 is not answered: the next owner starts there"
        );
        assert_eq!(offsets.revoke(0), None);
        // Assigned again, the partition is read from the committed offset: 20 once more.
        let again = offsets.begin(0, 20);
        assert_eq!(
            offsets.complete(first),
            None,
            "an answer from the earlier assignment stores nothing"
        );
        assert_eq!(
            offsets.committable(),
            vec![(0, 20)],
            "20 is in flight again"
        );
        assert_eq!(offsets.complete(again), Some(21));
    }
}
