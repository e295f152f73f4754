//! Stream mode against a real Kafka-protocol broker (Tansu, see scripts/setup-tansu.sh): 2,000
//! articles in and 2,000 results out with the labels `/predict` gives, malformed messages
//! dead-lettered with their reason, a SIGKILL mid-stream with every input answered after a
//! restart, and two consumers in one group splitting the partitions.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::TopicPartitionList;
use serde_json::{json, Value};

use crate::support::{
    challenger_loaded, fast_model_dir_with_config, repo_path, send_signal, shadow_settled,
    write_fast_model_dir, write_perturbed_model_dir, Server, TempDir,
};

/// A record read back: key, payload, the `x-error` header if any, and its timestamp (ms).
type Record = (String, Vec<u8>, Option<String>, i64);

fn tansu() -> std::path::PathBuf {
    repo_path(".cache/tools/tansu/bin/tansu")
}

/// Why the stream tests cannot run here, if they cannot.
pub fn missing() -> Option<String> {
    (!tansu().is_file()).then(|| {
        "the Tansu broker is not installed in .cache/tools/tansu (scripts/setup-tansu.sh builds it)"
            .to_string()
    })
}

/// An in-memory Tansu broker on a free port with the service's three topics.
struct Broker {
    process: Child,
    address: String,
    /// Partitions of the input topic, `news`.
    partitions: i32,
}

impl Broker {
    fn start() -> Broker {
        Broker::with_partitions(3)
    }

    /// A broker whose input topic has `partitions` partitions.
    fn with_partitions(partitions: i32) -> Broker {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("port")
            .local_addr()
            .expect("addr")
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let process = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let input = partitions.to_string();
        for (topic, partitions) in [
            ("news", input.as_str()),
            ("news-classified", "1"),
            ("news-dead-letter", "1"),
        ] {
            let status = Command::new(tansu())
                .args([
                    "topic",
                    "create",
                    "--broker",
                    &url,
                    "--partitions",
                    partitions,
                    topic,
                ])
                .stdout(Stdio::null())
                .status()
                .expect("tansu topic create");
            assert!(status.success(), "creating {topic}");
        }
        Broker {
            process,
            address: format!("127.0.0.1:{port}"),
            partitions,
        }
    }

    fn producer(&self) -> BaseProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.address)
            // Tansu 0.6 cannot fetch from the middle of a record batch: one message per batch.
            .set("batch.num.messages", "1")
            .create()
            .expect("producer")
    }

    /// Article `i % texts.len()` as `{"id": i, "text": ...}` under key `{prefix}{i}`, for each
    /// `i` in `ids`, then a flush.
    fn send_articles(
        &self,
        producer: &BaseProducer,
        texts: &[String],
        prefix: char,
        ids: std::ops::Range<usize>,
    ) {
        for i in ids {
            let payload = json!({"id": i, "text": texts[i % texts.len()]}).to_string();
            self.send(producer, &format!("{prefix}{i}"), payload.as_bytes());
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }

    fn send(&self, producer: &BaseProducer, key: &str, payload: &[u8]) {
        loop {
            match producer.send(BaseRecord::to("news").key(key).payload(payload)) {
                Ok(()) => return,
                Err((_, _)) => {
                    producer.poll(Duration::from_millis(50));
                }
            }
        }
    }

    /// Records of a topic from offset 0 until `at_least` have arrived or none for `quiet`.
    fn read_all(&self, topic: &str, at_least: usize, quiet: Duration) -> Vec<Record> {
        self.read_until(topic, quiet, |records| records.len() >= at_least)
    }

    /// Records of a topic from offset 0 until `done` says so, or until none has arrived for
    /// `quiet`: a slow machine only makes the wait longer, a stalled stream ends it. Ten minutes
    /// at most, so a stream that keeps repeating itself cannot hold the test forever.
    fn read_until(
        &self,
        topic: &str,
        quiet: Duration,
        done: impl Fn(&[Record]) -> bool,
    ) -> Vec<Record> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.address)
            .set("group.id", format!("reader-{topic}-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut partitions = TopicPartitionList::new();
        partitions
            .add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
            .expect("partition");
        consumer.assign(&partitions).expect("assign");
        let mut records = Vec::new();
        let cap = Instant::now() + Duration::from_secs(600);
        let mut last_record = Instant::now();
        while !done(&records) && last_record.elapsed() < quiet && Instant::now() < cap {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                last_record = Instant::now();
                let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let error = m.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == "x-error")
                        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                });
                let at = m.timestamp().to_millis().unwrap_or_default();
                records.push((key, m.payload().unwrap_or_default().to_vec(), error, at));
            }
        }
        records
    }
}

impl Broker {
    /// Per partition of `news`: the offset group `group` committed, and the partition's end.
    fn committed(&self, group: &str) -> Vec<(i32, i64, i64)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.address)
            .set("group.id", group)
            .create()
            .expect("consumer");
        let mut partitions = TopicPartitionList::new();
        for partition in 0..self.partitions {
            partitions.add_partition("news", partition);
        }
        let committed = consumer
            .committed_offsets(partitions, Duration::from_secs(10))
            .expect("committed offsets");
        committed
            .elements()
            .iter()
            .map(|e| {
                let (_, end) = consumer
                    .fetch_watermarks("news", e.partition(), Duration::from_secs(10))
                    .expect("watermarks");
                let committed = e.offset().to_raw().expect("a committed offset");
                (e.partition(), committed, end)
            })
            .collect()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn articles() -> Vec<String> {
    let path = repo_path("training/.cache/data/test.jsonl");
    let text = std::fs::read_to_string(&path)
        .or_else(|_| {
            Command::new(repo_path("training/test_split.sh"))
                .output()
                .expect("test_split.sh");
            std::fs::read_to_string(&path)
        })
        .expect("the test split");
    text.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("jsonl")["text"]
                .as_str()
                .expect("text")
                .to_string()
        })
        .collect()
}

fn serve(broker: &Broker, group: &str) -> Server {
    serve_with(broker, group, &[])
}

fn serve_with(broker: &Broker, group: &str, env: &[(&str, &str)]) -> Server {
    serve_with_args(broker, group, &[], env)
}

fn serve_with_args(broker: &Broker, group: &str, args: &[&str], given: &[(&str, &str)]) -> Server {
    // A killed member's partitions move on after the session timeout: 6 s instead of 45 s.
    // One result per produce batch: Tansu 0.6 skips or stalls on fetches that start inside a
    // batch, which would hide results from the reader.
    // A folder of its own: stream tests run side by side in one process.
    let folder = TempDir::new("stream-config");
    let config = folder.path().join("config.yaml");
    std::fs::write(
        &config,
        "stream:\n  kafka:\n    session.timeout.ms: \"6000\"\n    heartbeat.interval.ms: \"1000\"\n    batch.num.messages: \"1\"\n",
    )
    .expect("write config");
    let path = config.to_str().expect("utf-8").to_string();
    // Each message's deadline is the server's timeout: a minute, so that a message queued behind
    // the other tests' work on two shared cores is answered rather than retried past its deadline.
    let mut env = vec![("NEWSCLS__SERVER__TIMEOUT", "60")];
    env.extend_from_slice(given);
    env.push(("NEWSCLS__STREAM__BROKERS", broker.address.as_str()));
    env.push(("NEWSCLS__STREAM__GROUP_ID", group));
    let args = [&["--config", path.as_str()], args].concat();
    Server::start(&args, &env)
}

pub fn stream_mode_end_to_end() {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(run());
}

async fn run() {
    let broker = Broker::start();
    let texts = articles();
    let server = serve(&broker, "g1");
    // What /predict says for each distinct article: the stream must say the same.
    let mut expected = HashMap::new();
    for chunk in texts.chunks(32) {
        let answers: Vec<Vec<Value>> = server
            .predict(json!({ "inputs": chunk }))
            .await
            .json()
            .await
            .expect("json");
        for (text, answer) in chunk.iter().zip(answers) {
            expected.insert(
                text.clone(),
                answer[0]["label"].as_str().expect("label").to_string(),
            );
        }
    }

    // Backpressure: with 2,000 messages waiting, the consumer pauses its partitions at
    // `max_in_flight` (256) rather than taking them all.
    let metrics_url = server.url("/metrics");
    let paused_seen = tokio::spawn(async move {
        loop {
            let metrics = reqwest::get(&metrics_url).await.expect("metrics");
            let text = metrics.text().await.expect("metrics text");
            if text.lines().any(|l| l == "newscls_stream_paused 1") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    // 2,000 articles (every 200th as plain text, whose id is its key), with malformed
    // messages among them.
    let producer = broker.producer();
    let started = Instant::now();
    let mut sent = BTreeMap::new();
    let mut sent_at = HashMap::new();
    for i in 0..2000 {
        let text = &texts[i % texts.len()];
        let key = format!("a{i}");
        sent_at.insert(key.clone(), now_millis());
        let payload = if i % 200 == 0 {
            text.clone()
        } else {
            json!({"id": i, "text": text}).to_string()
        };
        broker.send(&producer, &key, payload.as_bytes());
        sent.insert(key, text.clone());
        if i % 400 == 7 {
            let bad: [(&str, Vec<u8>); 5] = [
                ("bad-json", b"{\"id\": 1, \"text\": ".to_vec()),
                ("no-text", br#"{"id": 2}"#.to_vec()),
                ("empty", br#"{"id": 3, "text": "   "}"#.to_vec()),
                ("not-utf8", vec![0xff, 0xfe, 0x41]),
                (
                    "too-long",
                    json!({"id": 4, "text": "a ".repeat(60_000)})
                        .to_string()
                        .into_bytes(),
                ),
            ];
            for (kind, payload) in bad {
                broker.send(&producer, &format!("bad-{kind}-{i}"), &payload);
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    // HTTP goes ahead of the stream's backlog (at least 200 messages in flight).
    let busy = &server;
    wait_until("200 stream messages in flight", move || async move {
        consumed(busy).await - produced(busy).await >= 200.0
    })
    .await;
    let asked = Instant::now();
    let response = server.predict(json!({ "inputs": [texts[0]] })).await;
    assert_eq!(response.status(), 200, "/predict during the stream's burst");
    eprintln!(
        "stream: /predict during the burst ({} in flight) answered in {} ms",
        consumed(&server).await - produced(&server).await,
        asked.elapsed().as_millis()
    );
    let results = broker.read_all("news-classified", 2000, Duration::from_secs(90));
    let elapsed = started.elapsed();
    assert_eq!(results.len(), 2000, "one result per article");
    let mut seen = BTreeMap::new();
    for (key, payload, _, _) in &results {
        let result: Value = serde_json::from_slice(payload).expect("result JSON");
        let text = sent
            .get(key)
            .unwrap_or_else(|| panic!("result for unknown key {key}"));
        assert_eq!(
            result["label"].as_str(),
            Some(expected[text].as_str()),
            "{key}"
        );
        let number: u64 = key[1..].parse().expect("key number");
        let id = if number.is_multiple_of(200) {
            json!(key)
        } else {
            json!(number)
        };
        assert_eq!(
            result["id"], id,
            "{key}: the id of a JSON or a plain-text input"
        );
        assert_eq!(result["model"], "news-topic-e5-small");
        assert!(result["scores"].as_object().is_some_and(|s| s.len() == 6));
        *seen.entry(key.clone()).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2000, "every article answered");
    assert!(
        paused_seen.is_finished(),
        "the consumer paused its partitions during the burst"
    );
    // Produce-to-result latency: the result's broker timestamp minus the input's send time.
    let mut latencies: Vec<i64> = results
        .iter()
        .filter_map(|(key, _, _, at)| sent_at.get(key).map(|sent| at - sent))
        .collect();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    eprintln!(
        "stream: produce-to-result latency of a 2000-message burst: p50 {} ms, p90 {} ms, p99 {} ms",
        pct(0.5),
        pct(0.9),
        pct(0.99)
    );
    eprintln!(
        "stream: 2000 articles classified in {:.1} s ({:.0} messages/s)",
        elapsed.as_secs_f64(),
        2000.0 / elapsed.as_secs_f64()
    );
    let dead = broker.read_all("news-dead-letter", 25, Duration::from_secs(30));
    assert_eq!(dead.len(), 25, "5 malformed messages x 5 rounds");
    for (key, _, error, _) in &dead {
        let reason = error
            .as_deref()
            .unwrap_or_else(|| panic!("{key} has no x-error"));
        let wanted = match key.split('-').nth(1) {
            Some("bad") => "not valid JSON",
            Some("no") => "no `text` field",
            Some("empty") => "empty",
            Some("not") => "not UTF-8",
            Some("too") => "characters",
            other => panic!("unexpected dead letter {key} {other:?}"),
        };
        assert!(reason.contains(wanted), "{key}: {reason}");
    }
    assert_eq!(
        server
            .metric("newscls_stream_messages_total{outcome=\"dead_lettered\"}")
            .await,
        25.0
    );
    // Stream texts go through the batching queue: a burst shares batches.
    let classified = server.metric("newscls_stream_batch_size_count").await;
    let texts_per_batch = server.metric("newscls_stream_batch_size_sum").await / classified;
    assert_eq!(classified, 2000.0);
    assert!(
        texts_per_batch > 1.5,
        "stream messages were batched together: {texts_per_batch:.1} texts per batch"
    );
    eprintln!("stream: a message's batch held {texts_per_batch:.1} texts on average");

    // SIGTERM drains and commits exactly the next offset to read: the end of every partition.
    send_signal(server.pid(), "TERM");
    let exit = server.wait_exit(Duration::from_secs(30));
    assert!(exit.is_some_and(|s| s.success()), "clean exit: {exit:?}");
    for (partition, committed, end) in broker.committed("g1") {
        assert_eq!(
            committed, end,
            "partition {partition}: committed offset vs the partition's end"
        );
    }
}

/// Settings for several replicas of one group on this machine. What the group tests measure is
/// the group, not the model: the generated fast model, and one non-spinning inference thread per
/// replica, so replicas sharing two cores do not starve each other's group heartbeats.
struct GroupReplica {
    /// Kept for as long as the replicas run: the directory goes with it.
    _model: TempDir,
    model_dir: String,
}

impl GroupReplica {
    fn new() -> GroupReplica {
        let model = TempDir::new("stream-group-model");
        write_fast_model_dir(model.path());
        let model_dir = model.path().display().to_string();
        GroupReplica {
            _model: model,
            model_dir,
        }
    }

    /// The environment overrides for [`serve_with`].
    fn env(&self) -> [(&str, &str); 3] {
        [
            ("NEWSCLS__MODEL__DIR", self.model_dir.as_str()),
            ("NEWSCLS__MODEL__INTRA_OP_THREADS", "1"),
            ("NEWSCLS__MODEL__INTRA_OP_SPINNING", "false"),
        ]
    }
}

pub fn two_consumers_in_a_group_split_the_partitions() {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(rebalance());
}

/// A second consumer joins the group mid-stream: the rebalance takes partitions from the first
/// while it has messages in flight. Every message is answered by the group, and both consumers
/// classify. Then the broker goes away and `/readyz` says so.
async fn rebalance() {
    let broker = Broker::start();
    let texts = articles();
    let producer = broker.producer();
    let replica = GroupReplica::new();
    let env = replica.env();
    broker.send_articles(&producer, &texts, 'g', 0..300);
    let first = serve_with(&broker, "g2", &env);
    let started = &first;
    wait_until("the first consumer starting", move || async move {
        consumed(started).await >= 150.0
    })
    .await;
    // The second joins while the first has a backlog, and the stream goes on until the second
    // has classified too: how many that takes depends on the machine, not on the test.
    let second = serve_with(&broker, "g2", &env);
    let mut sent = 300;
    while consumed(&second).await < 50.0 {
        assert!(sent < 5000, "the second consumer took no partition");
        broker.send_articles(&producer, &texts, 'g', sent..sent + 50);
        sent += 50;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let answered = |records: &[Record]| {
        records
            .iter()
            .map(|(k, _, _, _)| k.as_str())
            .filter(|k| k.starts_with('g'))
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let all = broker.read_until("news-classified", Duration::from_secs(90), |records| {
        answered(records) >= sent
    });
    assert_eq!(
        answered(&all),
        sent,
        "each of the {sent} messages answered by the group across the rebalance"
    );
    let by_second = consumed(&second).await;
    eprintln!(
        "stream: group of two across a rebalance: {sent} messages, {} results; first consumed \
         {}, second {by_second}",
        all.iter().filter(|(k, _, _, _)| k.starts_with('g')).count(),
        consumed(&first).await
    );

    // Brokers gone: the consumer is not ready.
    drop(broker);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = second.get("/readyz").await;
        if response.status() == 503 {
            let body: Value = response.json().await.expect("json");
            assert!(
                body["error"]
                    .as_str()
                    .is_some_and(|m| m.contains("lost its Kafka brokers")),
                "{body}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still {} a minute after the broker stopped",
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn a_dead_letter_topic_that_refuses_stops_the_consumer_visibly() {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(undeliverable());
}

/// The dead-letter topic does not exist: a malformed message can go nowhere. The consumer
/// stops with `/readyz` 503 naming the reason, and the committed offset stops at that message:
/// a restart with the topic in place reads it again.
async fn undeliverable() {
    let broker = Broker::start();
    let texts = articles();
    let server = serve_with(
        &broker,
        "g-undeliverable",
        &[("NEWSCLS__STREAM__DEAD_LETTER_TOPIC", "news-no-such-topic")],
    );
    let producer = broker.producer();
    // One key: one partition, in this order. Offsets 0-2 good, 3 malformed, 4-6 good.
    for (i, payload) in [
        json!({"id": 0, "text": texts[0]}).to_string(),
        json!({"id": 1, "text": texts[1]}).to_string(),
        json!({"id": 2, "text": texts[2]}).to_string(),
        "{not json".to_string(),
        json!({"id": 4, "text": texts[4]}).to_string(),
        json!({"id": 5, "text": texts[5]}).to_string(),
        json!({"id": 6, "text": texts[6]}).to_string(),
    ]
    .iter()
    .enumerate()
    {
        broker.send(&producer, "same-key", payload.as_bytes());
        if i == 2 {
            // The good ones first: their answers must be committed.
            producer.flush(Duration::from_secs(30)).expect("flush");
            wait_until("three answers", || async { produced(&server).await >= 3.0 }).await;
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let sent = Instant::now();
    let body = loop {
        let response = server.get("/readyz").await;
        if response.status() == 503 {
            break response.text().await.expect("body");
        }
        assert!(
            sent.elapsed() < Duration::from_secs(60),
            "/readyz still 200 a minute after the undeliverable message"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "stream: /readyz 503 {:.1} s after the undeliverable message: {body}",
        sent.elapsed().as_secs_f64()
    );
    assert!(
        body.contains("could not be dead-lettered") && body.contains("news-no-such-topic"),
        "{body}"
    );
    assert_eq!(
        server
            .metric("newscls_stream_messages_total{outcome=\"undeliverable\"}")
            .await,
        1.0
    );
    // The consumer drains and commits what it answered, and nothing past the stuck message.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let committed: Vec<(i32, i64, i64)> = broker
        .committed("g-undeliverable")
        .into_iter()
        .filter(|(_, _, end)| *end > 0)
        .collect();
    assert_eq!(committed.len(), 1, "{committed:?}");
    let (_, offset, end) = committed[0];
    assert_eq!(
        (offset, end),
        (3, 7),
        "committed up to the stuck message: {committed:?}"
    );
}

pub fn an_overloaded_queue_is_retried_not_dead_lettered() {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(overloaded());
}

/// A queue of 4 texts behind 64 messages in flight refuses most admissions: each refusal is
/// retried, and every message is answered, none dead-lettered.
async fn overloaded() {
    let broker = Broker::start();
    let texts = articles();
    let server = serve_with(
        &broker,
        "g-overloaded",
        &[
            ("NEWSCLS__BATCHING__MAX_QUEUE_SIZE", "4"),
            ("NEWSCLS__LIMITS__MAX_CLIENT_BATCH_SIZE", "4"),
            ("NEWSCLS__STREAM__MAX_IN_FLIGHT", "64"),
        ],
    );
    let producer = broker.producer();
    broker.send_articles(&producer, &texts, 'o', 0..150);
    wait_until("150 answers", || async { produced(&server).await >= 150.0 }).await;
    let retried = server
        .metric("newscls_stream_retries_total{reason=\"overloaded\"}")
        .await;
    let dead = server
        .metric("newscls_stream_messages_total{outcome=\"dead_lettered\"}")
        .await;
    println!(
        "stream: 150 messages through a 4-text queue: {} retries after 429, {} dead-lettered",
        retried as u64, dead as u64
    );
    assert!(
        retried > 0.0,
        "the queue never refused: the test proves nothing"
    );
    assert_eq!(dead, 0.0);
    assert_eq!(produced(&server).await, 150.0);
}

pub fn the_stream_is_mirrored_to_a_shadow_challenger() {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(mirrored());
}

/// Stream mode goes through the same classifier as HTTP, so a challenger (`shadow.uri`) sees
/// the stream's texts too: every message answered is one text mirrored.
async fn mirrored() {
    let broker = Broker::start();
    let texts = articles();
    let challenger = TempDir::new("stream-challenger");
    write_perturbed_model_dir(challenger.path(), 5, 1.0, None);
    let server = serve_with(
        &broker,
        "g-shadow",
        &[
            (
                "NEWSCLS__SHADOW__URI",
                challenger.path().to_str().expect("utf-8"),
            ),
            // The challenger runs at the lowest priority: leave it the idle CPU.
            ("NEWSCLS__MODEL__INTRA_OP_SPINNING", "false"),
        ],
    );
    challenger_loaded(&server).await;
    let producer = broker.producer();
    broker.send_articles(&producer, &texts, 's', 0..60);
    wait_until("60 answers", || async { produced(&server).await >= 60.0 }).await;
    let (agree, disagree, dropped, failed) = shadow_settled(&server, Some(60.0)).await;
    println!("stream with a shadow: 60 messages, {agree} agree, {disagree} disagree");
    assert_eq!((agree + disagree, dropped, failed), (60.0, 0.0, 0.0));
    assert_eq!(server.get_json("/shadow").await["compared"], 60);
}

pub fn a_multi_label_models_results_carry_its_labels() {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(multi_label());
}

/// A multi-label model (`problem_type: multi_label_classification`) streams `labels`, the
/// labels over their thresholds, as `/classify` gives them for the same text.
async fn multi_label() {
    let broker = Broker::start();
    let texts = articles();
    let model = fast_model_dir_with_config("stream-multi-label", |config| {
        config["problem_type"] = "multi_label_classification".into();
    });
    let dir = model.path().to_str().expect("utf-8");
    let server = serve_with_args(&broker, "g-multi-label", &["--model-dir", dir], &[]);
    let producer = broker.producer();
    broker.send_articles(&producer, &texts, 'm', 0..20);
    let results = broker.read_all("news-classified", 20, Duration::from_secs(60));
    assert_eq!(results.len(), 20, "one result per article");
    let mut labels_given = 0;
    for (key, payload, _, _) in &results {
        let result: Value = serde_json::from_slice(payload).expect("result JSON");
        let i: usize = key[1..].parse().expect("an index");
        let answer: Value = server
            .client
            .post(server.url("/classify"))
            .json(&json!({ "input": texts[i % texts.len()] }))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        let labels = result["labels"].as_array().expect("labels: a list");
        labels_given += labels.len();
        assert_eq!(
            result["labels"], answer["data"][0]["labels"],
            "{key}: {result}"
        );
    }
    assert!(labels_given > 0, "some label reaches 0.5");
}

/// Polls `reached` every 20 ms until it holds; fails the test after a minute.
async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut reached: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !reached().await {
        assert!(Instant::now() < deadline, "{what}: not within a minute");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn produced(server: &Server) -> f64 {
    server
        .metric("newscls_stream_messages_total{outcome=\"produced\"}")
        .await
}

async fn consumed(server: &Server) -> f64 {
    server
        .metric("newscls_stream_messages_total{outcome=\"consumed\"}")
        .await
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub fn a_killed_consumer_is_restarted_without_losing_messages() {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(killed());
}

async fn killed() {
    let broker = Broker::start();
    let texts = articles();
    let producer = broker.producer();
    let server = serve(&broker, "g1");
    // SIGKILL mid-stream, then a restart: every input gets at least one result.
    broker.send_articles(&producer, &texts, 'k', 2000..2600);
    let progressing = &server;
    wait_until("150 answers before the kill", move || async move {
        produced(progressing).await >= 150.0
    })
    .await;
    send_signal(server.pid(), "KILL");
    drop(server);
    let before_kill = broker
        .read_all("news-classified", 600, Duration::from_secs(3))
        .len();
    assert!(
        before_kill < 600,
        "killed mid-stream: {before_kill} of 600 answered"
    );
    // Restart after the dead member's session (6 s) expired, as a supervisor's restart would;
    // with Tansu 0.6 a member joining while the dead one still holds partitions could leave
    // those partitions unassigned.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let server = serve(&broker, "g1");
    let answered = |records: &[Record]| {
        records
            .iter()
            .filter(|(k, _, _, _)| k.starts_with('k'))
            .map(|(k, _, _, _)| k.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let all = broker.read_until("news-classified", Duration::from_secs(90), |records| {
        answered(records) >= 600
    });
    let mut after_kill: BTreeMap<&str, usize> = BTreeMap::new();
    for (key, _, _, _) in &all {
        if key.starts_with('k') {
            *after_kill.entry(key.as_str()).or_default() += 1;
        }
    }
    assert_eq!(
        after_kill.len(),
        600,
        "every message sent around the kill is answered ({} of 600)",
        after_kill.len()
    );
    let duplicates: usize = after_kill.values().map(|n| n - 1).sum();
    eprintln!(
        "stream: killed after {before_kill} of 600 answered; after the restart 600 of 600 \
         answered, {duplicates} duplicates"
    );
    drop(server);
}

/// The partitions a replica owns now, from its `newscls_stream_partition_assigned` gauge.
async fn owned(server: &Server) -> Vec<i32> {
    let page = server.get("/metrics").await.text().await.expect("metrics");
    page.lines()
        .filter_map(|l| l.strip_prefix("newscls_stream_partition_assigned{partition=\""))
        .filter_map(|rest| rest.split_once("\"} "))
        .filter(|(_, value)| value.trim() == "1")
        .filter_map(|(partition, _)| partition.parse().ok())
        .collect()
}

/// Waits (a minute at most) until the group has spread the six partitions over `replicas`, each
/// owning some; returns each replica's partitions.
async fn settled(replicas: &[Server]) -> Vec<Vec<i32>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut assignment = Vec::new();
        for replica in replicas {
            assignment.push(owned(replica).await);
        }
        let total: usize = assignment.iter().map(Vec::len).sum();
        if total == 6 && assignment.iter().all(|a| !a.is_empty()) {
            return assignment;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not spread six partitions over {} replicas: {assignment:?}",
            replicas.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn three_replicas_share_six_partitions_and_survive_a_kill() {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(scale_out());
}

/// Scale-out as operators run it: three replicas in one consumer group on a six-partition topic
/// each own partitions; 3,000 articles are all classified; one replica SIGKILLed mid-stream and
/// a replacement started, the group rebalances and every input has a result (duplicates
/// counted, none missing).
async fn scale_out() {
    let broker = Broker::with_partitions(6);
    let texts = articles();
    let producer = broker.producer();
    let replica = GroupReplica::new();
    let env = replica.env();
    let mut replicas: Vec<Server> = (0..3).map(|_| serve_with(&broker, "g3", &env)).collect();
    let assignment = settled(&replicas).await;
    eprintln!("stream scale-out: partitions per replica {assignment:?}");

    // In flushed steps: each produce request carries one message to Tansu.
    for start in (0..3000).step_by(300) {
        broker.send_articles(&producer, &texts, 's', start..start + 300);
    }
    let group = &replicas;
    wait_until("a third of the stream answered", move || async move {
        let mut answered = 0.0;
        for replica in group {
            answered += produced(replica).await;
        }
        answered >= 1000.0
    })
    .await;
    let killed = replicas.remove(0);
    send_signal(killed.pid(), "KILL");
    drop(killed);
    // After the dead member's session (6 s) expired, as a supervisor's replacement would come.
    tokio::time::sleep(Duration::from_secs(8)).await;
    replicas.push(serve_with(&broker, "g3", &env));
    let answered = |records: &[Record]| {
        records
            .iter()
            .map(|(k, _, _, _)| k.as_str())
            .filter(|k| k.starts_with('s'))
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let all = broker.read_until("news-classified", Duration::from_secs(90), |records| {
        answered(records) >= 3000
    });
    let results = all.iter().filter(|(k, _, _, _)| k.starts_with('s')).count();
    assert_eq!(
        answered(&all),
        3000,
        "every article classified across the kill ({results} results)"
    );
    // A rebalance may still be under way (the replacement joined while the survivors worked):
    // the group settles again, each replica owning some of the six partitions.
    settled(&replicas).await;
    let mut after = Vec::new();
    for replica in &replicas {
        after.push((owned(replica).await, consumed(replica).await));
    }
    eprintln!(
        "stream scale-out: 3,000 of 3,000 answered, {} duplicates after the kill; survivors and \
         replacement (partitions, consumed): {after:?}",
        results - 3000
    );
    assert!(
        after.iter().all(|(partitions, _)| !partitions.is_empty()),
        "after the rebalance every replica owns partitions: {after:?}"
    );
}

pub fn every_front_door_drains_under_one_deadline() {
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(drained());
}

/// SIGTERM while HTTP, gRPC and the stream all hold accepted work: every door stops at once and
/// drains under the one `server.drain_timeout`, so the process exits within it with every
/// request answered, every message's result produced and every offset committed.
async fn drained() {
    const DRAIN_SECONDS: u64 = 20;
    const MESSAGES: usize = 20;
    let broker = Broker::start();
    let texts = articles();
    // Texts wait for the batch timer (5 s) and nothing else: every door's work is still queued
    // when the signal comes.
    let server = serve_with_args(
        &broker,
        "g-drain",
        &[
            "--grpc-port",
            "0",
            "--max-wait-ms",
            "5000",
            "--preferred-batch-size",
            "1000",
            "--max-batch-size",
            "1000",
        ],
        &[
            ("NEWSCLS__SERVER__DRAIN_TIMEOUT", "20"),
            ("NEWSCLS__BATCHING__MAX_BATCH_TOKENS", "1000000"),
        ],
    );
    let producer = broker.producer();
    broker.send_articles(&producer, &texts, 'd', 0..MESSAGES);
    wait_until("the messages consumed", || async {
        consumed(&server).await >= MESSAGES as f64
    })
    .await;
    let name = server.model_name().await;
    let request = server
        .client
        .post(server.url("/predict"))
        .json(&json!({"inputs": "Stocks fell as rates rose."}));
    let http = tokio::spawn(async move { request.send().await.map(|r| r.status()) });
    let mut client = crate::support::grpc_client(&server).await;
    let call = crate::support::grpc_request_of(&name, 1, vec!["The striker scored twice.".into()]);
    let grpc = tokio::spawn(async move { client.model_infer(call).await.map(|_| ()) });
    server.wait_for_queue_depth((MESSAGES + 2) as f64).await;
    assert_eq!(
        produced(&server).await,
        0.0,
        "a result went out before the signal: the test would prove nothing"
    );

    let signalled = Instant::now();
    send_signal(server.pid(), "TERM");
    let status = server
        .wait_exit(Duration::from_secs(DRAIN_SECONDS + 10))
        .expect("exited");
    let took = signalled.elapsed();
    println!(
        "drain: HTTP, gRPC and {MESSAGES} stream messages in flight: exited {took:?} after SIGTERM"
    );
    assert_eq!(status.code(), Some(0));
    assert!(
        took < Duration::from_secs(DRAIN_SECONDS + 1),
        "exited {took:?} after SIGTERM with a {DRAIN_SECONDS} s drain window"
    );
    assert_eq!(
        http.await.expect("joined").expect("HTTP answered"),
        200,
        "the accepted HTTP request was answered"
    );
    grpc.await
        .expect("joined")
        .expect("the accepted gRPC call was answered");
    let results = broker.read_all("news-classified", MESSAGES, Duration::from_secs(10));
    let mut keys: Vec<String> = results.iter().map(|r| r.0.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), MESSAGES, "a result for every message: {keys:?}");
    for (partition, committed, end) in broker.committed("g-drain") {
        assert_eq!(
            committed, end,
            "partition {partition}: committed up to its end"
        );
    }
}
