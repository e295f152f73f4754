//! Deadlines and admission: the timeout really works, and a full queue refuses at once.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::Server;

#[tokio::test]
async fn request_past_the_timeout_gets_504_and_its_queued_work_is_skipped() {
    // The batch would close only after 1.5 s, but requests may take 0.3 s: the request times out
    // while its text is still queued, and the worker must then skip it.
    let server = Server::start(
        &[
            "--timeout",
            "0.3",
            "--preferred-batch-size",
            "1000",
            "--max-wait-ms",
            "1500",
        ],
        &[],
    );
    let started = Instant::now();
    let response = server
        .predict(json!({"inputs": "Central bank holds rates."}))
        .await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error_type"], "timeout");
    assert!(
        elapsed < Duration::from_millis(1200),
        "answered at the deadline, not after the batch: {elapsed:?}"
    );
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(
        server
            .metric("newscls_queue_dropped_total{reason=\"deadline\",role=\"champion\"}")
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric("newscls_batch_size_count{role=\"champion\"}")
            .await,
        0.0,
        "no inference ran for the expired text"
    );
}

#[tokio::test]
async fn full_queue_refuses_at_once_with_429_and_retry_after() {
    let server = Server::start(
        &[
            "--max-queue-size",
            "2",
            "--preferred-batch-size",
            "1000",
            "--max-wait-ms",
            "2000",
        ],
        &[("NEWSCLS__LIMITS__MAX_CLIENT_BATCH_SIZE", "2")],
    );
    let first = {
        let request = server
            .client
            .post(server.url("/predict"))
            .json(&json!({"inputs": ["one", "two"]}));
        tokio::spawn(async move { request.send().await.expect("request") })
    };
    // Wait until the first request's two texts fill the queue.
    server.wait_for_queue_depth(2.0).await;
    let started = Instant::now();
    let refused = server.predict(json!({"inputs": "three"})).await;
    assert_eq!(refused.status(), 429);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "refusal must be immediate"
    );
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error_type"], "overloaded");
    // The accepted request is not lost.
    assert_eq!(first.await.expect("first request").status(), 200);
}

#[tokio::test]
async fn tighter_deadline_from_the_request_header_is_honoured() {
    let server = Server::start(
        &["--preferred-batch-size", "1000", "--max-wait-ms", "1500"],
        &[],
    );
    let started = Instant::now();
    let response = server
        .client
        .post(server.url("/predict"))
        .header("x-request-timeout", "0.2")
        .json(&json!({"inputs": "Oil prices rose."}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 504);
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "the header's 0.2 s applied, not 10 s"
    );
}

#[tokio::test]
async fn work_of_a_client_that_disconnected_is_skipped() {
    let server = Server::start(
        &["--preferred-batch-size", "1000", "--max-wait-ms", "1000"],
        &[],
    );
    // The client gives up after 200 ms, long before the batch closes at 1 s.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let result = impatient
        .post(server.url("/predict"))
        .json(&json!({"inputs": "Oil prices rose."}))
        .send()
        .await;
    assert!(result.is_err(), "the client timed out");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        server
            .metric("newscls_queue_dropped_total{reason=\"client_gone\",role=\"champion\"}")
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric("newscls_batch_size_count{role=\"champion\"}")
            .await,
        0.0,
        "no inference ran for it"
    );
    assert_eq!(
        server
            .predict(json!({"inputs": "Stocks fell."}))
            .await
            .status(),
        200
    );
}
