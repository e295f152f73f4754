//! huggingface_hub's InferenceClient and tritonclient, unchanged, against the real server.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::support::{repo_path, Server};

const SPORT: &str =
    "The striker scored twice as the home side won the cup final in front of 60,000 fans.";
const BUSINESS: &str =
    "Shares of the carmaker fell 5% after it cut its profit forecast, citing weaker demand in Europe.";
const ECONOMY: &str = "The central bank raised interest rates by half a point to curb inflation.";

/// The clients' Python, installed by scripts/setup-pyclients.sh (`make setup-test`).
fn python() -> std::path::PathBuf {
    repo_path(".cache/pyclients/bin/python")
}

/// Why the clients test cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    (!python().is_file()).then(|| {
        "the clients' venv .cache/pyclients is missing (scripts/setup-pyclients.sh installs it)"
            .to_string()
    })
}

pub fn huggingface_and_triton_clients_work_unchanged() {
    tokio::runtime::Runtime::new()
        .expect("a tokio runtime")
        .block_on(run());
}

async fn run() {
    let server = Server::start(&[], &[]);
    let info = server.get_json("/info").await;
    let name = info["model"]["name"].as_str().expect("name").to_string();
    let labels: Vec<String> = info["model"]["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l.as_str().expect("label").to_string())
        .collect();
    let texts = [SPORT, BUSINESS, ECONOMY];
    let reference: Vec<Vec<Value>> = server
        .predict(json!({ "inputs": texts }))
        .await
        .json()
        .await
        .expect("json");

    let mut child = Command::new(python())
        .arg(repo_path("tests/tools/clients.py"))
        .args([server.base.as_str(), name.as_str()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the clients");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(json!(texts).to_string().as_bytes())
        .expect("send texts");
    let output = child.wait_with_output().expect("clients finish");
    assert!(
        output.status.success(),
        "clients failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: Value = serde_json::from_slice(&output.stdout).expect("clients print JSON");

    let top = |answers: &Value, i: usize| answers[i][0][0].as_str().expect("label").to_string();
    for key in ["hf_base", "hf_predict"] {
        assert_eq!(top(&got[key], 0), "sport", "{key}");
        assert_eq!(top(&got[key], 1), "business", "{key}");
        assert_eq!(
            got[key][0].as_array().map(Vec::len),
            Some(labels.len()),
            "{key}: all labels"
        );
        for (i, want) in reference.iter().enumerate() {
            assert_eq!(got[key][i][0][0], want[0]["label"], "{key} {i}");
            let score = got[key][i][0][1].as_f64().expect("score");
            assert!((score - want[0]["score"].as_f64().expect("score")).abs() < 1e-6);
        }
    }
    assert_eq!(got["hf_base_top_k"][0].as_array().map(Vec::len), Some(2));
    assert_eq!(got["hf_predict_top_k"][1].as_array().map(Vec::len), Some(1));
    assert_eq!(top(&got["hf_predict_top_k"], 1), "business");
    let sigmoid_sum: f64 = got["hf_sigmoid"][0]
        .as_array()
        .expect("scores")
        .iter()
        .map(|p| p[1].as_f64().expect("score"))
        .sum();
    assert!(
        (sigmoid_sum - 1.0).abs() > 0.01,
        "function_to_apply=sigmoid was honoured"
    );

    assert_eq!(got["triton_live"], true);
    assert_eq!(got["triton_ready"], true);
    assert_eq!(got["triton_model_ready"], true);
    assert_eq!(got["triton_metadata"]["name"], name.as_str());
    let want_labels: Vec<&Value> = reference.iter().map(|r| &r[0]["label"]).collect();
    // JSON tensors, the client's defaults (binary tensors both ways), and binary outputs asked
    // for by name: the same labels and probabilities as /predict.
    for form in ["triton", "triton_default", "triton_binary"] {
        assert_eq!(
            got[format!("{form}_labels")]
                .as_array()
                .map(|l| l.iter().collect::<Vec<_>>()),
            Some(want_labels.clone()),
            "{form}"
        );
        for (i, row) in got[format!("{form}_probabilities")]
            .as_array()
            .expect("rows")
            .iter()
            .enumerate()
        {
            for (label, p) in labels.iter().zip(row.as_array().expect("row")) {
                let want = reference[i]
                    .iter()
                    .find(|s| s["label"] == label.as_str())
                    .and_then(|s| s["score"].as_f64())
                    .expect("scored");
                assert!(
                    (p.as_f64().expect("p") - want).abs() < 1e-6,
                    "{form}: text {i} {label}"
                );
            }
        }
    }
    let unknown = got["triton_unknown_model"].as_str().expect("an error");
    assert!(unknown.contains("no-such-model"), "{unknown}");
}
