//! The happy path: single and batched predictions, ranking, top_k, batching across requests.

use serde_json::{json, Value};

use crate::support::Server;

const SPORT: &str = "The striker scored twice as Manchester United beat Chelsea 3-1 in the Premier League on Saturday, \
                     lifting the club to second in the table.";
const BUSINESS: &str =
    "Shares of the carmaker fell 5% after it cut its annual profit forecast, citing weaker demand \
                        and rising costs; investors also worried about its debt.";

fn labels_of(scores: &Value) -> Vec<String> {
    scores
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["label"].as_str().expect("label").to_string())
        .collect()
}

fn assert_is_distribution(scores: &Value, label_count: usize) {
    let list = scores.as_array().expect("a list of label scores");
    assert_eq!(list.len(), label_count, "every label is returned");
    let sum: f64 = list
        .iter()
        .map(|s| s["score"].as_f64().expect("score"))
        .sum();
    assert!((sum - 1.0).abs() < 1e-4, "scores sum to 1, got {sum}");
    let scores: Vec<f64> = list
        .iter()
        .map(|s| s["score"].as_f64().expect("score"))
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "sorted best first: {scores:?}"
    );
}

#[tokio::test]
async fn single_text_returns_every_label_ranked_with_the_expected_top_label() {
    let server = Server::start(&[], &[]);
    let info: Value = server.get_json("/info").await;
    let label_count = info["model"]["labels"].as_array().expect("labels").len();

    let response = server.predict(json!({"inputs": SPORT})).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-inference-time"));
    let body: Value = response.json().await.expect("json");
    assert_is_distribution(&body, label_count);
    assert_eq!(labels_of(&body)[0], "sport");
}

#[tokio::test]
async fn batch_returns_one_ranked_list_per_text_in_order() {
    let server = Server::start(&[], &[]);
    let body: Value = server
        .predict(json!({"inputs": [BUSINESS, SPORT]}))
        .await
        .json()
        .await
        .expect("json");
    let lists = body.as_array().expect("list of lists");
    assert_eq!(lists.len(), 2);
    assert_eq!(labels_of(&lists[0])[0], "business");
    assert_eq!(labels_of(&lists[1])[0], "sport");
}

#[tokio::test]
async fn top_k_cuts_the_list_and_korean_text_is_classified() {
    let server = Server::start(&[], &[]);
    let korean = "손흥민이 두 골을 터뜨리며 토트넘의 3-1 승리를 이끌었다.";
    let body: Value = server
        .predict(json!({"inputs": korean, "top_k": 2}))
        .await
        .json()
        .await
        .expect("json");
    let list = body.as_array().expect("list");
    assert_eq!(list.len(), 2);
    assert!(list[0]["score"].as_f64() >= list[1]["score"].as_f64());
}

#[tokio::test]
async fn concurrent_requests_are_batched_together() {
    // A generous batching window makes the grouping deterministic.
    let server = Server::start(
        &["--preferred-batch-size", "8", "--max-wait-ms", "300"],
        &[],
    );
    let bodies = (0..8)
        .map(|i| json!({"inputs": format!("{SPORT} Match report {i}.")}))
        .collect();
    let mut largest = 0;
    for response in server.predict_concurrently(bodies).await {
        assert_eq!(response.status(), 200);
        let size: usize = response.headers()["x-batch-size"]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("number");
        largest = largest.max(size);
    }
    assert!(
        largest > 1,
        "8 concurrent requests were never batched together"
    );
    let batches = server
        .metric("newscls_batch_size_count{role=\"champion\"}")
        .await;
    let texts = server
        .metric("newscls_batch_size_sum{role=\"champion\"}")
        .await;
    // Warm-up runs outside the queue, so only these 8 texts went through it.
    assert_eq!(texts, 8.0);
    assert!(batches < 8.0, "8 texts in {batches} batches");
}
