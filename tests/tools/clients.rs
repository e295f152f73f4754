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

/// What `/predict` answers for `texts` (ranked lists), and the model's name and labels in
/// their order: the reference every client's answer is compared with.
struct Reference {
    name: String,
    labels: Vec<String>,
    answers: Vec<Vec<Value>>,
}

async fn reference(server: &Server, texts: &[&str]) -> Reference {
    let info = server.get_json("/info").await;
    let labels = info["model"]["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l.as_str().expect("label").to_string())
        .collect();
    let answers = server
        .predict(json!({ "inputs": texts }))
        .await
        .json()
        .await
        .expect("json");
    Reference {
        name: info["model"]["name"].as_str().expect("name").to_string(),
        labels,
        answers,
    }
}

impl Reference {
    /// A tensor client's `label` and `probabilities` (rows in label order) are /predict's.
    fn assert_same(&self, what: &str, labels: &Value, rows: &Value) {
        for (i, want) in self.answers.iter().enumerate() {
            assert_eq!(labels[i], want[0]["label"], "{what}: text {i}");
            let row = rows[i].as_array().expect("a row of probabilities");
            assert_eq!(row.len(), self.labels.len(), "{what}: text {i}");
            for (label, p) in self.labels.iter().zip(row) {
                let expected = want
                    .iter()
                    .find(|s| s["label"] == label.as_str())
                    .and_then(|s| s["score"].as_f64())
                    .expect("scored");
                assert!(
                    (p.as_f64().expect("p") - expected).abs() < 1e-6,
                    "{what}: text {i} {label}"
                );
            }
        }
    }
}

/// Runs a client script from tests/tools with `args`, `texts` as JSON on its stdin; returns
/// the JSON object it prints.
fn run_client(script: &str, args: &[&str], texts: &[&str]) -> Value {
    let mut child = Command::new(python())
        .arg(repo_path(&format!("tests/tools/{script}")))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the client");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(json!(texts).to_string().as_bytes())
        .expect("send texts");
    let output = child.wait_with_output().expect("the client finishes");
    assert!(
        output.status.success(),
        "{script} {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the client prints JSON")
}

async fn run() {
    let server = Server::start(&[], &[]);
    let texts = [SPORT, BUSINESS, ECONOMY];
    let expected = reference(&server, &texts).await;
    let (name, labels, reference) = (&expected.name, &expected.labels, &expected.answers);
    let got = run_client("clients.py", &[server.base.as_str(), name.as_str()], &texts);

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
    // JSON tensors, the client's defaults (binary tensors both ways), and binary outputs asked
    // for by name: the same labels and probabilities as /predict.
    for form in ["triton", "triton_default", "triton_binary"] {
        let answered = got[format!("{form}_labels")].as_array().map(Vec::len);
        assert_eq!(answered, Some(texts.len()), "{form}");
        expected.assert_same(
            form,
            &got[format!("{form}_labels")],
            &got[format!("{form}_probabilities")],
        );
    }
    let unknown = got["triton_unknown_model"].as_str().expect("an error");
    assert!(unknown.contains("no-such-model"), "{unknown}");
}

/// Runs tests/tools/grpc_clients.py in `mode` and returns what it printed.
fn grpc_clients(server: &Server, mode: &str, texts: &[&str]) -> Value {
    let grpc = server.grpc.clone().expect("the gRPC address");
    let pid = server.pid().to_string();
    run_client(
        "grpc_clients.py",
        &[
            grpc.trim_start_matches("http://"),
            server.base.as_str(),
            "news-topic-e5-small",
            &pid,
            mode,
        ],
        texts,
    )
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
    let expected = reference(&server, &texts).await;
    let got = grpc_clients(&server, "infer", &texts);
    assert_eq!(
        (&got["live"], &got["ready"], &got["model_ready"]),
        (&json!(true), &json!(true), &json!(true))
    );
    assert_eq!(got["server_metadata"]["name"], "newscls");
    assert_eq!(got["model_metadata"]["name"], expected.name.as_str());
    let infer = &got["infer"];
    assert_eq!(infer["status"], "OK", "{infer}");
    assert_eq!(infer["labels"].as_array().map(Vec::len), Some(texts.len()));
    expected.assert_same("grpc", &infer["labels"], &infer["probabilities"]);
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
