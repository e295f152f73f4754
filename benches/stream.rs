//! The stream mode's throughput and produce-to-result latency, against a running service.
//!
//! `cargo bench --bench stream -- BROKER TEXTS.jsonl MESSAGES [RATE,RATE,...] [SECONDS]`
//! (bench/stream.sh starts the broker and the service and runs this beside `/predict` and the
//! in-process ceiling.)
//! 1. Burst (unless MESSAGES is 0): MESSAGES articles produced to `news` at once; messages/s from the first send to
//!    the last result, and the latency of each (result's broker timestamp minus its send
//!    time), which in a burst is mostly time spent waiting behind the others.
//! 2. For each RATE: messages sent on a fixed schedule for SECONDS, the latency the stream adds
//!    at that load.
//!
//! Prints a markdown table and one `STREAM_JSON {...}` line per phase. `STREAM_INPUT` and
//! `STREAM_OUTPUT` name other topics than `news` and `news-classified` (the replica phases of
//! bench/stream.sh use a topic per phase).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

#[path = "common/mod.rs"]
mod common;

/// The input topic: `STREAM_INPUT`, else `news`.
fn input() -> String {
    std::env::var("STREAM_INPUT").unwrap_or_else(|_| "news".into())
}

/// The result topic: `STREAM_OUTPUT`, else `news-classified`.
fn output() -> String {
    std::env::var("STREAM_OUTPUT").unwrap_or_else(|_| "news-classified".into())
}

fn main() {
    let args = common::args();
    let (Some(broker), Some(texts), Some(messages)) = (args.first(), args.get(1), args.get(2))
    else {
        eprintln!("usage: stream BROKER TEXTS.jsonl MESSAGES [RATE,RATE,...] [SECONDS]");
        std::process::exit(2);
    };
    let texts = common::texts(std::path::Path::new(texts));
    let messages: usize = messages.parse().expect("MESSAGES");
    let rates: Vec<f64> = args
        .get(3)
        .map(|r| r.split(',').map(|r| r.parse().expect("rate")).collect())
        .unwrap_or_default();
    let seconds: f64 = args.get(4).map_or(20.0, |s| s.parse().expect("SECONDS"));

    println!("| phase | messages | messages/s | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    if messages > 0 {
        run_phase(broker, &texts, "burst", messages, None).print();
    }
    for rate in rates {
        let count = (rate * seconds) as usize;
        run_phase(broker, &texts, &format!("{rate} msg/s"), count, Some(rate)).print();
    }
}

struct Phase {
    name: String,
    messages: usize,
    per_second: f64,
    latencies_ms: Vec<i64>,
}

impl Phase {
    fn percentile(&self, p: f64) -> i64 {
        self.latencies_ms[((self.latencies_ms.len() - 1) as f64 * p).round() as usize]
    }

    fn print(&self) {
        let [p50, p90, p99, max] = [0.5, 0.9, 0.99, 1.0].map(|p| self.percentile(p));
        println!(
            "| {} | {} | {:.1} | {p50} | {p90} | {p99} | {max} |",
            self.name, self.messages, self.per_second
        );
        println!(
            "STREAM_JSON {}",
            json!({"phase": self.name, "messages": self.messages, "messages_per_s": self.per_second,
                   "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": max})
        );
    }
}

/// Sends `count` articles (all at once, or at `rate` per second) and waits for every result.
fn run_phase(broker: &str, texts: &[String], name: &str, count: usize, rate: Option<f64>) -> Phase {
    let results = result_reader(broker);
    let prefix = format!("{}-{}", name.replace([' ', '/'], ""), now_ms());
    let sender = {
        let (broker, texts, prefix) = (broker.to_string(), texts.to_vec(), prefix.clone());
        std::thread::spawn(move || send(&broker, &texts, &prefix, count, rate))
    };
    let mut answered: HashMap<String, i64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while answered.len() < count {
        assert!(
            Instant::now() < deadline,
            "{name}: {} of {count} results after 10 minutes",
            answered.len()
        );
        if let Some(Ok(message)) = results.poll(Duration::from_millis(200)) {
            let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
            if key.starts_with(&prefix) {
                let at = message.timestamp().to_millis().unwrap_or_default();
                answered.entry(key).or_insert(at);
            }
        }
    }
    let sent_at: HashMap<String, i64> = sender.join().expect("sender");
    let first_sent = sent_at.values().min().copied().unwrap_or_default();
    let last_answer = answered.values().max().copied().unwrap_or_default();
    let mut latencies_ms: Vec<i64> = answered.iter().map(|(key, at)| at - sent_at[key]).collect();
    latencies_ms.sort_unstable();
    Phase {
        name: name.to_string(),
        messages: count,
        per_second: count as f64 * 1000.0 / (last_answer - first_sent).max(1) as f64,
        latencies_ms,
    }
}

/// A reader of the output topic positioned at its end: it sees only this phase's results.
fn result_reader(broker: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", format!("stream-bench-{}", now_ms()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let output = output();
    let (_, end) = consumer
        .fetch_watermarks(&output, 0, Duration::from_secs(10))
        .expect("watermarks of the output topic");
    let mut partitions = TopicPartitionList::new();
    partitions
        .add_partition_offset(&output, 0, Offset::Offset(end))
        .expect("partition");
    consumer.assign(&partitions).expect("assign");
    consumer
}

/// Sends the articles round-robin; returns each key's send time (ms since the epoch).
fn send(
    broker: &str,
    texts: &[String],
    prefix: &str,
    count: usize,
    rate: Option<f64>,
) -> HashMap<String, i64> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        // Tansu 0.6 cannot fetch from the middle of a record batch: one message per batch.
        .set("batch.num.messages", "1")
        .set("linger.ms", "0")
        .create()
        .expect("producer");
    let input = input();
    let started = Instant::now();
    let mut sent_at = HashMap::with_capacity(count);
    for i in 0..count {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let key = format!("{prefix}-{i}");
        let payload = json!({"id": i, "text": texts[i % texts.len()]}).to_string();
        sent_at.insert(key.clone(), now_ms());
        while producer
            .send(BaseRecord::to(&input).key(&key).payload(&payload))
            .is_err()
        {
            producer.poll(Duration::from_millis(10));
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    sent_at
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
