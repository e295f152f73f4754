//! Hostile clients of the inference protocols: a small request must not buy a large response or
//! a large error, over HTTP or gRPC. Each case is answered with a clear 4xx (INVALID_ARGUMENT over
//! gRPC) while the server's peak memory stays where it was.

use newscls::frontends::grpc::proto::ModelInferRequest;
use serde_json::{json, Value};

use crate::support::{grpc_client, grpc_request_of, peak_rss_kb, Server};

/// A body of about 2 MiB, the default `limits.max_body_bytes`.
const BODY_BYTES: usize = 2 * 1024 * 1024;
/// How much the server's peak RSS may grow while it refuses a hostile request.
const GROWTH_LIMIT_KB: u64 = 50 * 1024;
/// How long an error message may be, whatever the request echoed into it.
const ERROR_LIMIT_BYTES: usize = 400;

fn texts() -> Vec<String> {
    (0..32)
        .map(|i| format!("Stocks rallied for the {i}th session as the central bank held rates."))
        .collect()
}

/// Peak RSS (kB) of the server, which must be readable.
fn peak(server: &Server) -> u64 {
    peak_rss_kb(server.pid()).expect("the server's VmHWM")
}

#[tokio::test]
async fn repeated_outputs_over_http_are_refused_without_building_them() {
    let server = Server::start(&[], &[]);
    let name = server.model_name().await;
    let url = server.url(&format!("/v2/models/{name}/infer"));
    let texts = texts();
    let input = json!({"name": "text", "shape": [texts.len()], "datatype": "BYTES", "data": texts});
    // Warm up, so the peak below is the serving peak and not the first request's allocations.
    let warm = server
        .client
        .post(&url)
        .json(&json!({"inputs": [input]}))
        .send()
        .await
        .expect("request");
    assert_eq!(warm.status(), 200);
    let before = peak(&server);

    let one = r#"{"name":"probabilities"},"#;
    let copies = (BODY_BYTES - 4096) / one.len();
    let body = format!(
        r#"{{"inputs": [{input}], "outputs": [{}{{"name":"label"}}]}}"#,
        one.repeat(copies)
    );
    assert!(body.len() <= BODY_BYTES, "{} bytes", body.len());
    let response = server
        .client
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    let text = response.text().await.expect("body");
    assert!(
        text.len() < ERROR_LIMIT_BYTES,
        "{} bytes: {text}",
        text.len()
    );
    let error: Value = serde_json::from_str(&text).expect("json");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("\"probabilities\" is requested more than once")),
        "{error}"
    );
    let growth = peak(&server).saturating_sub(before);
    eprintln!("{copies} repeated outputs over HTTP: 400, peak RSS +{growth} kB");
    assert!(growth < GROWTH_LIMIT_KB, "peak RSS grew by {growth} kB");

    // Each output once, in any order, is still what clients ask for.
    let response = server
        .client
        .post(&url)
        .json(
            &json!({"inputs": [input], "outputs": [{"name": "probabilities"}, {"name": "label"}]}),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["outputs"][0]["name"], "probabilities");
    assert_eq!(body["outputs"][1]["name"], "label");
}

#[tokio::test]
async fn echoed_input_in_errors_is_cut_short() {
    let server = Server::start(&[], &[]);
    let name = server.model_name().await;
    let url = server.url(&format!("/v2/models/{name}/infer"));
    let huge = "X".repeat(1 << 20);
    let cases = [
        (
            "a 1 MiB datatype",
            json!({"inputs": [{"name": "text", "shape": [1], "datatype": huge, "data": ["a"]}]}),
        ),
        (
            "a 1 MiB input name",
            json!({"inputs": [{"name": huge, "shape": [1], "datatype": "BYTES", "data": ["a"]}]}),
        ),
        (
            "a 1 MiB output name",
            json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a"]}],
                   "outputs": [{"name": huge}]}),
        ),
        (
            "a 1 MiB object where strings go",
            json!({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [{"a": huge}]}]}),
        ),
        (
            "a 1 MiB string where a number goes",
            json!({"inputs": [{"name": "text", "shape": [huge], "datatype": "BYTES", "data": ["a"]}]}),
        ),
    ];
    for (what, body) in cases {
        let response = server
            .client
            .post(&url)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 400, "{what}");
        let text = response.text().await.expect("body");
        assert!(
            text.len() < ERROR_LIMIT_BYTES,
            "{what}: a {} byte error: {}",
            text.len(),
            &text[..200]
        );
        let error: Value = serde_json::from_str(&text).expect("json");
        let echoed = error["error"].as_str().expect("error").matches('X').count();
        assert!(echoed <= 100, "{what}: {echoed} bytes echoed: {text}");
    }
    // The same over the vLLM and TEI-style routes that name a model.
    let response = server
        .client
        .post(server.url("/classify"))
        .json(&json!({"model": huge, "input": "a"}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 404);
    let text = response.text().await.expect("body");
    assert!(
        text.len() < ERROR_LIMIT_BYTES,
        "/classify: {} bytes",
        text.len()
    );
}

/// A request for the 32 texts of [`texts`], asking for `outputs` copies of
/// the probabilities.
fn grpc_request(name: &str, outputs: usize) -> ModelInferRequest {
    grpc_request_of(name, outputs, texts())
}

#[tokio::test]
async fn repeated_outputs_and_huge_names_over_grpc_are_refused() {
    let server = Server::start(&["--grpc-port", "0"], &[]);
    let name = server.model_name().await;
    let mut client = grpc_client(&server).await;
    let answer = client
        .model_infer(grpc_request(&name, 1))
        .await
        .expect("one output");
    assert_eq!(answer.get_ref().outputs.len(), 1);
    let before = peak(&server);

    // Nearly 2 MiB (the server's message limit) of requested outputs, all the same: about 18
    // bytes each.
    let copies = (BODY_BYTES - 16 * 1024) / 18;
    let status = client
        .model_infer(grpc_request(&name, copies))
        .await
        .expect_err("repeated outputs are refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(
        status.message().contains("requested more than once"),
        "{status}"
    );
    let growth = peak(&server).saturating_sub(before);
    eprintln!("{copies} repeated outputs over gRPC: INVALID_ARGUMENT, peak RSS +{growth} kB");
    assert!(growth < GROWTH_LIMIT_KB, "peak RSS grew by {growth} kB");

    // A 1 MiB model name is not echoed back whole.
    let mut request = grpc_request(&name, 1);
    request.model_name = "X".repeat(1 << 20);
    let status = client
        .model_infer(request)
        .await
        .expect_err("unknown model");
    assert_eq!(status.code(), tonic::Code::NotFound, "{status}");
    assert!(
        status.message().len() < ERROR_LIMIT_BYTES,
        "a {} byte status message",
        status.message().len()
    );
}

/// The SETTINGS_MAX_CONCURRENT_STREAMS the gRPC listener sends, after one call on a raw HTTP/2
/// connection (the settings arrive with the first round trip).
async fn advertised_stream_limit(addr: &str) -> usize {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (send, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut send = send.ready().await.expect("ready");
    let request = http::Request::post("/inference.GRPCInferenceService/ServerLive")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut body) = send.send_request(request, false).expect("send");
    // An empty ServerLiveRequest: no compression, length 0.
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .expect("body");
    let response = response.await.expect("response");
    assert_eq!(response.status(), 200);
    send.current_max_send_streams()
}

#[tokio::test]
async fn a_thousand_streams_on_one_connection_are_held_to_the_limit() {
    let server = Server::start(&["--grpc-port", "0"], &[]);
    let name = server.model_name().await;
    let url = server.grpc.clone().expect("the gRPC address is printed");
    let limit = advertised_stream_limit(url.trim_start_matches("http://")).await;
    assert_eq!(limit, 64, "SETTINGS_MAX_CONCURRENT_STREAMS (server.grpc)");

    // One connection, 1,000 calls of one text at once: the client may open 64 streams, the
    // rest wait (with the queue's 1,024 texts the calls themselves are within the limits).
    let one = || grpc_request_of(&name, 1, texts()[..1].to_vec());
    let client = grpc_client(&server).await;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let mut client = client.clone();
        let request = one();
        let done = done.clone();
        calls.spawn(async move {
            let answer = client.model_infer(request).await.map(|_| ());
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            answer
        });
    }
    // A second client is answered meanwhile, on a connection of its own.
    let mut other = grpc_client(&server).await;
    other
        .model_infer(one())
        .await
        .expect("a second client is answered while the first holds its streams");
    let outstanding = 1000 - done.load(std::sync::atomic::Ordering::SeqCst);
    let mut answered = 0;
    while let Some(call) = calls.join_next().await {
        call.expect("task")
            .expect("each call is answered, none refused");
        answered += 1;
    }
    eprintln!(
        "gRPC: 1,000 streams on one connection (limit {limit}): all answered; the second \
         client's call returned with {outstanding} still outstanding"
    );
    assert_eq!(answered, 1000);
}
