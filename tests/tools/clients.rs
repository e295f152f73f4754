//! huggingface_hub's InferenceClient and tritonclient (HTTP and gRPC), unchanged, against the
//! real server.

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

/// Runs tests/tools/grpc_clients.py in `mode` and returns what it printed.
fn grpc_clients(server: &Server, mode: &str, texts: &[&str]) -> Value {
    let grpc = server.grpc.clone().expect("the gRPC address");
    let mut child = Command::new(python())
        .arg(repo_path("tests/tools/grpc_clients.py"))
        .args([
            grpc.trim_start_matches("http://"),
            server.base.as_str(),
            "news-topic-e5-small",
        ])
        .arg(server.pid().to_string())
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the gRPC client");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(json!(texts).to_string().as_bytes())
        .expect("send texts");
    let output = child.wait_with_output().expect("the client finishes");
    assert!(
        output.status.success(),
        "grpc_clients.py {mode} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the client prints JSON")
}

pub fn triton_grpc_client_works_with_its_defaults() {
    tokio::runtime::Runtime::new()
        .expect("a tokio runtime")
        .block_on(grpc());
}

async fn grpc() {
    let texts = [SPORT, BUSINESS, ECONOMY];
    // Generous timeouts: the SIGTERM case below must not depend on this machine's speed (CI runs
    // the tool tests side by side on two cores).
    let server = Server::start(
        &[],
        &[
            ("NEWSCLS__SERVER__GRPC_PORT", "0"),
            ("NEWSCLS__SERVER__TIMEOUT", "60"),
            ("NEWSCLS__SERVER__DRAIN_TIMEOUT", "60"),
        ],
    );
    let reference: Vec<Vec<Value>> = server
        .predict(json!({ "inputs": texts }))
        .await
        .json()
        .await
        .expect("json");
    let labels: Vec<String> = server.get_json("/info").await["model"]["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l.as_str().expect("label").to_string())
        .collect();
    let got = grpc_clients(&server, "infer", &texts);
    assert_eq!(
        (&got["live"], &got["ready"], &got["model_ready"]),
        (&json!(true), &json!(true), &json!(true))
    );
    assert_eq!(got["server_metadata"]["name"], "newscls");
    assert_eq!(got["model_metadata"]["name"], "news-topic-e5-small");
    let infer = &got["infer"];
    assert_eq!(infer["status"], "OK", "{infer}");
    for (i, want) in reference.iter().enumerate() {
        assert_eq!(infer["labels"][i], want[0]["label"], "text {i}");
        for (label, p) in labels
            .iter()
            .zip(infer["probabilities"][i].as_array().expect("row"))
        {
            let expected = want
                .iter()
                .find(|s| s["label"] == label.as_str())
                .and_then(|s| s["score"].as_f64())
                .expect("scored");
            assert!(
                (p.as_f64().expect("p") - expected).abs() < 1e-6,
                "text {i} {label}"
            );
        }
    }
    assert_eq!(got["unknown_model"], "StatusCode.NOT_FOUND");
    assert_eq!(
        got["deadline"]["status"], "StatusCode.DEADLINE_EXCEEDED",
        "{}",
        got["deadline"]
    );
    assert!(
        server
            .metric("newscls_grpc_requests_total{code=\"Ok\",method=\"ModelInfer\"}")
            .await
            >= 1.0
    );
    assert_eq!(
        server
            .metric("newscls_grpc_requests_total{code=\"NotFound\",method=\"ModelInfer\"}")
            .await,
        1.0
    );

    // Calls in flight at SIGTERM are all answered.
    // Articles long enough to fill the model's window: 8 calls of 16 take seconds on a CPU.
    let long = [SPORT, BUSINESS, ECONOMY].join(" ").repeat(4);
    let got = grpc_clients(&server, "sigterm", &[long.as_str(); 16]);
    println!(
        "grpc: {} texts queued at SIGTERM; statuses {}",
        got["queued_at_sigterm"], got["statuses"]
    );
    assert!(
        got["queued_at_sigterm"].as_f64().expect("depth") > 0.0,
        "nothing was in flight: {got}"
    );
    assert!(
        got["statuses"]
            .as_array()
            .expect("statuses")
            .iter()
            .all(|s| s == "OK"),
        "{got}"
    );
    assert!(server
        .wait_exit(std::time::Duration::from_secs(90))
        .is_some_and(|s| s.success()));

    // A tiny queue under 32 concurrent callers: refusals are RESOURCE_EXHAUSTED, the rest answered.
    let server = Server::start(
        &[],
        &[
            ("NEWSCLS__SERVER__GRPC_PORT", "0"),
            ("NEWSCLS__BATCHING__MAX_QUEUE_SIZE", "4"),
            ("NEWSCLS__LIMITS__MAX_CLIENT_BATCH_SIZE", "4"),
        ],
    );
    let got = grpc_clients(&server, "overload", &texts);
    let statuses: Vec<&str> = got["statuses"]
        .as_array()
        .expect("statuses")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let refused = statuses
        .iter()
        .filter(|s| **s == "StatusCode.RESOURCE_EXHAUSTED")
        .count();
    let answered = statuses.iter().filter(|s| **s == "OK").count();
    println!("grpc: 96 calls at a 4-text queue: {answered} answered, {refused} refused");
    assert!(
        refused > 0 && answered > 0 && refused + answered == statuses.len(),
        "{statuses:?}"
    );
}
