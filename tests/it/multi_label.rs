//! Multi-label models, served as their exporters meant: `problem_type:
//! multi_label_classification` in config.json gives a sigmoid per label by default, and every
//! label over its threshold (`label_thresholds`, 0.5 by default) on each surface that answers
//! with labels: `/predict` (TEI's shape, every label with its score), `/classify`, KServe v2 over
//! HTTP and gRPC, `newscls classify` and `newscls eval`. A head newscls does not serve
//! (regression) is refused at load.

use serde_json::{json, Value};

use crate::support::{
    command, fast_model_dir_with_config, grpc_client, startup_error, Server, TempDir,
};
use newscls::frontends::grpc::proto::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use newscls::frontends::grpc::proto::{InferTensorContents, ModelInferRequest};
use newscls::pipeline::model::ModelSpec;

const TEXTS: [&str; 3] = [
    "The striker scored twice in the derby.",
    "Shares fell 5% after the company cut its forecast.",
    "Parliament passed the budget after a long night of talks.",
];

/// A fast model directory (the bundled tokenizer and labels, a generated graph) whose
/// config.json says `problem_type` (and `label_thresholds`, when given).
fn model_dir(name: &str, problem_type: &str, thresholds: Option<Value>) -> TempDir {
    fast_model_dir_with_config(name, |config| {
        config["problem_type"] = problem_type.into();
        if let Some(thresholds) = thresholds {
            config["label_thresholds"] = thresholds;
        }
    })
}

/// The model's labels, in logit order.
fn labels_of(dir: &TempDir) -> Vec<String> {
    ModelSpec::load(dir.path())
        .expect("the model directory")
        .labels
}

/// Two labels always given (threshold 0.001), one almost never (0.999), the rest at 0.5.
fn thresholds(labels: &[String]) -> (Value, Vec<f64>) {
    let mut chosen = vec![0.5; labels.len()];
    chosen[0] = 0.001;
    chosen[1] = 0.001;
    chosen[2] = 0.999;
    let map = labels
        .iter()
        .zip(&chosen)
        .take(3)
        .map(|(l, t)| (l.clone(), json!(t)))
        .collect::<serde_json::Map<_, _>>();
    (Value::Object(map), chosen)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Each text's logits in label order, from `/predict`'s `raw_scores`.
async fn logits(server: &Server, labels: &[String]) -> Vec<Vec<f64>> {
    let response = server
        .predict(json!({ "inputs": TEXTS, "raw_scores": true }))
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    body.as_array()
        .expect("one list per text")
        .iter()
        .map(|text| {
            labels
                .iter()
                .map(|label| {
                    let entry = text
                        .as_array()
                        .expect("scores")
                        .iter()
                        .find(|s| s["label"] == label.as_str())
                        .expect("every label");
                    entry["score"].as_f64().expect("score")
                })
                .collect()
        })
        .collect()
}

/// The labels a text should be given: sigmoid over threshold, best first.
fn expected_labels(logits: &[f64], labels: &[String], thresholds: &[f64]) -> Vec<String> {
    let mut over: Vec<(f64, &String)> = logits
        .iter()
        .zip(labels)
        .zip(thresholds)
        .filter(|((l, _), t)| sigmoid(**l) >= **t - 1e-6)
        .map(|((l, name), _)| (*l, name))
        .collect();
    over.sort_by(|a, b| b.0.total_cmp(&a.0));
    over.into_iter().map(|(_, name)| name.clone()).collect()
}

#[tokio::test]
async fn a_multi_label_model_answers_a_sigmoid_per_label_and_the_labels_over_their_thresholds() {
    let dir = model_dir("multi-label", "multi_label_classification", None);
    let labels = labels_of(&dir);
    let (map, chosen) = thresholds(&labels);
    let dir = model_dir("multi-label", "multi_label_classification", Some(map));
    let server = Server::start(
        &["--model-dir", dir.path().to_str().expect("utf-8")],
        &[("NEWSCLS__SERVER__GRPC_PORT", "0")],
    );
    let name = server.model_name().await;

    let info = server.get_json("/info").await;
    assert_eq!(info["model"]["problem_type"], "multi_label_classification");
    let served: Vec<f64> = info["model"]["label_thresholds"]
        .as_array()
        .expect("thresholds in label order")
        .iter()
        .map(|t| t.as_f64().expect("number"))
        .collect();
    assert_eq!(served.len(), labels.len());
    for (got, want) in served.iter().zip(&chosen) {
        assert!((got - want).abs() < 1e-6, "{served:?} vs {chosen:?}");
    }

    let logits = logits(&server, &labels).await;
    let expected: Vec<Vec<String>> = logits
        .iter()
        .map(|l| expected_labels(l, &labels, &chosen))
        .collect();
    assert!(
        expected.iter().all(|e| e.len() >= 2),
        "two labels are always given: {expected:?}"
    );

    // /predict, TEI's shape: every label with its own sigmoid, which need not sum to 1.
    let response = server.predict(json!({ "inputs": TEXTS[1] })).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let scores = body.as_array().expect("every label");
    assert_eq!(scores.len(), labels.len());
    let mut sum = 0.0;
    for entry in scores {
        let index = labels
            .iter()
            .position(|l| entry["label"] == l.as_str())
            .expect("a model label");
        let score = entry["score"].as_f64().expect("score");
        assert!((score - sigmoid(logits[1][index])).abs() < 1e-5, "{entry}");
        sum += score;
    }
    assert!((sum - 1.0).abs() > 0.01, "not a softmax: {body}");

    // vLLM's /classify: the labels over their thresholds, best first.
    let response = server
        .client
        .post(server.url("/classify"))
        .json(&json!({ "input": TEXTS }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    for (i, want) in expected.iter().enumerate() {
        let data = &body["data"][i];
        assert_eq!(data["labels"], json!(want), "{data}");
        assert_eq!(data["label"], want[0].as_str(), "the best label");
    }

    // KServe v2 over HTTP: `label` holds the labels joined by commas.
    let response = server
        .client
        .post(server.url(&format!("/v2/models/{name}/infer")))
        .json(&json!({
            "inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": TEXTS}],
            "outputs": [{"name": "label"}]
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let joined: Vec<String> = expected.iter().map(|e| e.join(",")).collect();
    assert_eq!(body["outputs"][0]["data"], json!(joined), "{body}");

    // And over gRPC.
    let mut client = grpc_client(&server).await;
    let answer = client
        .model_infer(ModelInferRequest {
            model_name: name.clone(),
            inputs: vec![InferInputTensor {
                name: "text".into(),
                datatype: "BYTES".into(),
                shape: vec![TEXTS.len() as i64],
                contents: Some(InferTensorContents {
                    bytes_contents: TEXTS.iter().map(|t| t.as_bytes().to_vec()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            outputs: vec![InferRequestedOutputTensor {
                name: "label".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("ModelInfer")
        .into_inner();
    let got: Vec<String> = answer.outputs[0]
        .contents
        .as_ref()
        .expect("typed contents")
        .bytes_contents
        .iter()
        .map(|b| String::from_utf8(b.clone()).expect("utf-8"))
        .collect();
    assert_eq!(got, joined);
}

#[test]
fn classify_writes_and_eval_scores_label_sets() {
    let dir = model_dir("multi-label-files", "multi_label_classification", None);
    let labels = labels_of(&dir);
    let (map, _) = thresholds(&labels);
    let dir = model_dir("multi-label-files", "multi_label_classification", Some(map));
    let model = dir.path().to_str().expect("utf-8").to_string();
    let input = dir.path().join("rows.jsonl");
    // Gold sets: the two labels always given, then one of them only (a missed label costs
    // precision), then a label list as a CSV cell would write it.
    let gold = [
        json!([labels[0], labels[1]]),
        json!([labels[0]]),
        json!(format!("{},{}", labels[1], labels[0])),
    ];
    let rows: String = TEXTS
        .iter()
        .zip(&gold)
        .enumerate()
        .map(|(i, (text, gold))| format!("{}\n", json!({"id": i, "text": text, "label": gold})))
        .collect();
    std::fs::write(&input, rows).expect("rows");

    let output = dir.path().join("out.jsonl");
    let status = command(
        &[
            "classify",
            input.to_str().expect("utf-8"),
            "--output",
            output.to_str().expect("utf-8"),
            "--model-dir",
            &model,
        ],
        &[],
    )
    .status()
    .expect("newscls classify");
    assert!(status.success());
    let written: Vec<Value> = std::fs::read_to_string(&output)
        .expect("output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("jsonl"))
        .collect();
    assert_eq!(written.len(), TEXTS.len());
    for row in &written {
        let given = row["labels"].as_array().expect("labels: a list");
        assert!(given.len() >= 2, "{row}");
        assert!(given.contains(&json!(labels[0])) && given.contains(&json!(labels[1])));
        assert_eq!(row["label"], given[0], "the best label first: {row}");
    }

    let report = command(
        &[
            "eval",
            input.to_str().expect("utf-8"),
            "--json",
            "--model-dir",
            &model,
        ],
        &[],
    )
    .output()
    .expect("newscls eval");
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let report: Value = serde_json::from_slice(&report.stdout).expect("json report");
    // Exactly right sets, and the pooled F1, from what classify wrote.
    let sets: Vec<Vec<String>> = written
        .iter()
        .map(|row| {
            let mut set: Vec<String> = row["labels"]
                .as_array()
                .expect("labels")
                .iter()
                .map(|l| l.as_str().expect("label").to_string())
                .collect();
            set.sort();
            set
        })
        .collect();
    let gold_sets: Vec<Vec<String>> = [
        vec![labels[0].clone(), labels[1].clone()],
        vec![labels[0].clone()],
        vec![labels[1].clone(), labels[0].clone()],
    ]
    .into_iter()
    .map(|mut s| {
        s.sort();
        s
    })
    .collect();
    let exact = sets.iter().zip(&gold_sets).filter(|(p, g)| p == g).count();
    let (mut tp, mut predicted, mut true_labels) = (0, 0, 0);
    for (p, g) in sets.iter().zip(&gold_sets) {
        tp += p.iter().filter(|l| g.contains(l)).count();
        predicted += p.len();
        true_labels += g.len();
    }
    let (precision, recall) = (tp as f64 / predicted as f64, tp as f64 / true_labels as f64);
    let micro = 2.0 * precision * recall / (precision + recall);
    assert!(
        (report["accuracy"].as_f64().expect("accuracy") - exact as f64 / 3.0).abs() < 1e-9,
        "{report}"
    );
    assert!(
        (report["micro_f1"].as_f64().expect("micro_f1") - micro).abs() < 1e-9,
        "{report}"
    );
    assert!(
        exact < 3 && micro < 1.0,
        "the second row's set is wrong: {report}"
    );
    let first = report["labels"]
        .as_array()
        .expect("per label")
        .iter()
        .find(|l| l["label"] == labels[0].as_str())
        .expect("the first label");
    assert_eq!(first["support"], 3);
    assert_eq!(first["recall"], 1.0);
    assert!(report["macro_f1"].as_f64().expect("macro_f1") > 0.0);
}

#[test]
fn a_regression_head_and_thresholds_that_are_not_labels_are_refused_at_load() {
    let dir = model_dir("regression", "regression", None);
    let line = startup_error(&["--model-dir", dir.path().to_str().expect("utf-8")], &[]);
    assert!(
        line.contains("problem_type") && line.contains("regression"),
        "{line}"
    );
    let dir = model_dir(
        "bad-thresholds",
        "multi_label_classification",
        Some(json!({"no-such-label": 0.3})),
    );
    let line = startup_error(&["--model-dir", dir.path().to_str().expect("utf-8")], &[]);
    assert!(
        line.contains("label_thresholds") && line.contains("no-such-label"),
        "{line}"
    );
}
