//! OpenTelemetry traces reach a real OTLP backend (the MLflow server's `/v1/traces`) with the
//! caller's trace id and the pipeline's stages; with the backend gone, requests still succeed
//! and the lost spans are counted.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::mlflow::Mlflow;
use crate::support::Server;

pub fn requests_are_traced_into_an_otlp_backend() {
    tokio::runtime::Runtime::new()
        .expect("a tokio runtime")
        .block_on(run());
}

/// Span names and attributes of every span MLflow stored under `trace_id`.
async fn stored_spans(mlflow: &Mlflow, trace_id: &str) -> Vec<Value> {
    let response = mlflow
        .http
        .get(format!("{}/api/3.0/mlflow/traces/get", mlflow.url))
        .query(&[("trace_id", format!("tr-{trace_id}"))])
        .send()
        .await
        .expect("mlflow request");
    if !response.status().is_success() {
        return Vec::new();
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    body["trace"]["spans"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn run() {
    let mlflow = Mlflow::start().await;
    let experiment = mlflow.create_experiment("newscls-traces").await;
    let endpoint = format!("{}/v1/traces", mlflow.url);
    let headers = format!("x-mlflow-experiment-id={experiment}");
    let server = Server::start(
        &["--log-format", "json", "--log-level", "info"],
        &[
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_HEADERS", headers.as_str()),
            ("OTEL_SERVICE_NAME", "newscls-test"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("NEWSCLS__SERVER__GRPC_PORT", "0"),
        ],
    );
    let trace_id = format!(
        "{:032x}",
        0x4bf92f3577b34da6a3ce929d0e0e4736u128 ^ u128::from(std::process::id())
    );
    let caller_span = "00f067aa0ba902b7";
    let response = server
        .client
        .post(server.url("/predict"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({"inputs": "The striker scored twice as the home side won the cup final."}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);

    let deadline = Instant::now() + Duration::from_secs(30);
    let wanted = [
        "request",
        "decode",
        "tokenize",
        "queue_wait",
        "answer",
        "inference_batch",
    ];
    let spans = loop {
        let spans = stored_spans(&mlflow, &trace_id).await;
        let names: Vec<&str> = spans.iter().filter_map(|s| s["name"].as_str()).collect();
        if wanted.iter().all(|w| names.contains(w)) {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "MLflow never held all of {wanted:?} under trace {trace_id}; it has {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let by_name = |name: &str| {
        spans
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name} span"))
    };
    // MLflow stores ids base64-encoded: 00f067aa0ba902b7 is "APBnqgupArc=".
    let request = by_name("request");
    assert_eq!(
        request["parent_span_id"], "APBnqgupArc=",
        "the request span is a child of the caller's span: {request}"
    );
    let batch = by_name("inference_batch");
    let attributes: Vec<&str> = batch["attributes"]
        .as_array()
        .expect("attributes")
        .iter()
        .filter_map(|a| a["key"].as_str())
        .collect();
    for attribute in ["batch_size", "padded_tokens", "provider"] {
        assert!(
            attributes.contains(&attribute),
            "inference_batch lacks {attribute}: {batch}"
        );
    }
    let linked: Vec<&Value> = batch["links"]
        .as_array()
        .expect("inference_batch has links")
        .iter()
        .map(|l| &l["span_id"])
        .collect();
    assert!(
        linked.contains(&&request["span_id"]),
        "the batch span links to the request it served: {batch}"
    );
    assert!(
        server.log_shows(&trace_id, Duration::from_secs(10)).await,
        "the JSON request log carries the trace id"
    );

    // A gRPC call with a traceparent in its metadata continues the caller's trace too.
    let grpc_trace = format!(
        "{:032x}",
        u128::from_str_radix(&trace_id, 16).expect("hex") ^ 1
    );
    let grpc = server.grpc.clone().expect("the gRPC address");
    let called =
        std::process::Command::new(crate::support::repo_path(".cache/pyclients/bin/python"))
            .args([
                "-c",
                "import sys, numpy as np, tritonclient.grpc as t\n\
             c = t.InferenceServerClient(url=sys.argv[1])\n\
             x = t.InferInput('text', [1], 'BYTES')\n\
             x.set_data_from_numpy(np.array(['The striker scored twice.'], dtype=object))\n\
             c.infer('news-topic-e5-small', [x], headers={'traceparent': sys.argv[2]})",
                grpc.trim_start_matches("http://"),
                &format!("00-{grpc_trace}-{caller_span}-01"),
            ])
            .output()
            .expect("run tritonclient.grpc");
    assert!(
        called.status.success(),
        "{}",
        String::from_utf8_lossy(&called.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans = stored_spans(&mlflow, &grpc_trace).await;
        let request = spans.iter().find(|s| s["name"] == "request");
        if let Some(request) = request {
            assert_eq!(request["parent_span_id"], "APBnqgupArc=", "{request}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no gRPC request span under trace {grpc_trace}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The backend goes away: requests still succeed, and the spans it missed are counted.
    mlflow.stop();
    for _ in 0..5 {
        let response = server
            .predict(json!({"inputs": "Parliament passed the budget."}))
            .await;
        assert_eq!(response.status(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.metric("newscls_trace_spans_dropped_total").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "dropped spans were never counted"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
