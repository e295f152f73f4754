//! A text's answer does not depend on what else is in its batch.
//!
//! Every golden text is classified alone, then inside batches of 2, 8 and 32 filled with other
//! news texts of other lengths, through the real service. The top label must be the same and
//! every label's score within 1e-4. The bundled CPU variant quantizes activations with fixed,
//! calibrated ranges, so the only differences left are float rounding (~1e-7); a dynamically
//! quantized graph (one activation scale per batch) moved scores by up to 0.24 here.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::support::{repo_path, Server};

const BOUND: f64 = 1e-4;

fn golden_texts() -> Vec<String> {
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_path("tests/golden/news-topic-e5-small.json"))
            .expect("golden file"),
    )
    .expect("json");
    golden["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| c["text"].as_str().expect("text").to_string())
        .collect()
}

/// Other texts, of every length from a headline to a full window.
fn fillers() -> Vec<String> {
    let lines: Vec<String> = std::fs::read_to_string(repo_path("jmeter/news.tsv"))
        .expect("news.tsv")
        .lines()
        .map(|l| serde_json::from_str::<String>(l).expect("json string"))
        .collect();
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| l.chars().take(20 + (i * 37) % 600).collect())
        .collect()
}

/// label -> score for each text of one request, and the batch size the server reports.
async fn classify(server: &Server, texts: &[String]) -> (Vec<BTreeMap<String, f64>>, usize) {
    let response = server.predict(json!({ "inputs": texts })).await;
    assert_eq!(response.status(), 200);
    let batch: usize = response.headers()["x-batch-size"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number");
    let body: Vec<Vec<Value>> = response.json().await.expect("json");
    let scores = body
        .iter()
        .map(|labels| {
            labels
                .iter()
                .map(|l| {
                    (
                        l["label"].as_str().expect("label").to_string(),
                        l["score"].as_f64().expect("score"),
                    )
                })
                .collect()
        })
        .collect();
    (scores, batch)
}

fn top(scores: &BTreeMap<String, f64>) -> &str {
    scores
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(label, _)| label.as_str())
        .expect("labels")
}

#[tokio::test]
async fn scores_do_not_depend_on_batch_mates() {
    // One request = one batch: room for 32 full texts, and no other traffic.
    let server = Server::start(
        &["--max-batch-size", "32"],
        &[("NEWSCLS__BATCHING__MAX_BATCH_TOKENS", "8192")],
    );
    let golden = golden_texts();
    let fillers = fillers();
    let mut alone = Vec::new();
    for text in &golden {
        let (scores, batch) = classify(&server, std::slice::from_ref(text)).await;
        assert_eq!(batch, 1);
        alone.push(scores.into_iter().next().expect("one answer"));
    }
    let mut worst = 0.0f64;
    for size in [2, 8, 32] {
        for (index, text) in golden.iter().enumerate() {
            // The golden text at a varying position among fillers that vary per case.
            let mut texts: Vec<String> = (0..size - 1)
                .map(|k| fillers[(index * 7 + k * 3) % fillers.len()].clone())
                .collect();
            let position = index % size;
            texts.insert(position, text.clone());
            let (scores, batch) = classify(&server, &texts).await;
            assert_eq!(batch, size, "the request was computed as one batch");
            let got = &scores[position];
            assert_eq!(
                top(got),
                top(&alone[index]),
                "case {index}, batch of {size}"
            );
            for (label, score) in got {
                let diff = (score - alone[index][label]).abs();
                worst = worst.max(diff);
                assert!(
                    diff <= BOUND,
                    "case {index}, batch of {size}: {label} {score} vs {} alone",
                    alone[index][label]
                );
            }
        }
    }
    eprintln!("largest score change with batch-mates: {worst:.2e}");
}
