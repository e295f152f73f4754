//! An open-loop load generator for overload and soak runs (not a test).
//!
//! `cargo bench --bench loadgen -- URL RATE SECONDS BODIES.jsonl`
//! Sends RATE requests per second on a fixed schedule, whatever the server answers (an
//! open loop: a slow server does not slow the offered load), with a rotating mix of bodies.
//! Prints one JSON object: answers by status with latency percentiles for each, and requests
//! that got no HTTP answer at all (lost).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [url, rate, seconds, bodies] = args.as_slice() else {
        eprintln!("usage: loadgen URL RATE SECONDS BODIES.jsonl");
        std::process::exit(2);
    };
    let rate: f64 = rate.parse().expect("rate");
    let seconds: f64 = seconds.parse().expect("seconds");
    let bodies: Vec<String> = std::fs::read_to_string(bodies)
        .expect("bodies")
        .lines()
        .map(String::from)
        .collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(4096)
        .build()
        .expect("client");
    let latencies: Arc<Mutex<BTreeMap<String, Vec<f64>>>> = Arc::default();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = (rate * seconds) as usize;
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until((started + interval * i as u32).into()).await;
        let request = client
            .post(url)
            .header("content-type", "application/json")
            .body(bodies[i % bodies.len()].clone());
        let latencies = latencies.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let key = match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16().to_string();
                    let _ = response.bytes().await;
                    status
                }
                Err(_) => "lost".to_string(),
            };
            let ms = sent.elapsed().as_secs_f64() * 1000.0;
            latencies
                .lock()
                .expect("lock")
                .entry(key)
                .or_default()
                .push(ms);
        }));
    }
    let offered_for = started.elapsed().as_secs_f64();
    for task in tasks {
        let _ = task.await;
    }
    let mut by_status = serde_json::Map::new();
    for (status, mut ms) in std::mem::take(&mut *latencies.lock().expect("lock")) {
        ms.sort_by(f64::total_cmp);
        by_status.insert(
            status,
            serde_json::json!({"count": ms.len(), "p50_ms": percentile(&ms, 0.5), "p99_ms": percentile(&ms, 0.99),
                               "max_ms": ms.last().copied().unwrap_or(0.0)}),
        );
    }
    println!(
        "{}",
        serde_json::json!({"offered": total, "offered_rate": total as f64 / offered_for, "seconds": offered_for,
                           "wall_seconds": started.elapsed().as_secs_f64(), "by_status": by_status})
    );
}
