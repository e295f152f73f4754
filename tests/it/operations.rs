//! Health, info, metrics, OpenAPI and Swagger UI, configuration layers, and graceful shutdown.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{run_to_exit, send_signal, startup_error, Server, TempDir};

#[tokio::test]
async fn operational_endpoints_answer() {
    let server = Server::start(&[], &[]);
    assert_eq!(server.get("/livez").await.status(), 200);
    let ready: Value = server.get_json("/readyz").await;
    assert_eq!(ready["status"], "ready");

    let info: Value = server.get_json("/info").await;
    assert_eq!(info["model"]["name"], "news-topic-e5-small");
    assert_eq!(info["model"]["provider"], "cpu");
    assert!(info["model"]["labels"].as_array().expect("labels").len() >= 2);
    assert_eq!(info["batching"]["max_batch_size"], 32);
    // The CPU's defaults: one worker, exact shapes, no pipelining, no waiting for company.
    assert_eq!(info["model"]["inference_workers"], 1);
    assert_eq!(
        info["model"]["shape_buckets"],
        json!({"rows": 1, "width": 1})
    );
    assert_eq!(info["model"]["pipelined"], false);
    assert!(info["model"]["cuda_graphs"].is_null(), "no graphs on a CPU");
    assert_eq!(info["batching"]["preferred_batch_size"], 1);
    assert_eq!(info["onnxruntime_version"], "1.31.1");

    server
        .predict(json!({"inputs": "Oil prices rose on Monday."}))
        .await;
    let metrics = server.get("/metrics").await.text().await.expect("text");
    for name in [
        "newscls_http_requests_total{route=\"/predict\",status=\"200\"} 1",
        "newscls_http_request_duration_seconds_bucket",
        "newscls_queue_depth{role=\"champion\"} 0",
        "newscls_queue_wait_seconds_bucket",
        "newscls_batch_size_bucket",
        "newscls_batch_tokens_bucket",
        "newscls_tokenize_duration_seconds_bucket",
        "newscls_inference_duration_seconds_bucket",
        "newscls_http_requests_in_flight",
        "newscls_grpc_requests_in_flight 0",
        "newscls_tokens_total{kind=\"padded\",role=\"champion\"}",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
}

#[tokio::test]
async fn openapi_documents_every_route_with_errors_and_examples_and_swagger_ui_is_served() {
    let server = Server::start(&[], &[]);
    let spec: Value = server.get_json("/openapi.json").await;
    assert!(spec["openapi"]
        .as_str()
        .expect("version")
        .starts_with("3.1"));
    for path in ["/predict", "/livez", "/readyz", "/info", "/metrics"] {
        assert!(spec["paths"][path].is_object(), "{path} undocumented");
    }
    let predict = &spec["paths"]["/predict"]["post"];
    for status in [
        "200", "400", "413", "415", "422", "429", "500", "503", "504",
    ] {
        assert!(
            predict["responses"][status].is_object(),
            "/predict {status} undocumented"
        );
    }
    // Error responses come from the one error table: the same words everywhere, in each
    // protocol's body.
    assert_eq!(
        predict["responses"]["429"]["description"],
        spec["paths"]["/classify"]["post"]["responses"]["429"]["description"]
    );
    let body = |path: &str, method: &str, status: &str| {
        spec["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
            ["$ref"]
            .clone()
    };
    assert_eq!(
        body("/predict", "post", "422"),
        "#/components/schemas/ErrorBody"
    );
    assert_eq!(
        body("/v2/models/{name}/infer", "post", "400"),
        "#/components/schemas/V2ErrorBody"
    );
    assert_eq!(
        body("/admin/reload", "post", "401"),
        "#/components/schemas/ErrorBody"
    );
    assert_eq!(
        body("/readyz", "get", "503"),
        "#/components/schemas/ErrorBody"
    );
    let examples = &predict["requestBody"]["content"]["application/json"]["examples"];
    assert!(
        examples["English"].is_object() && examples["Korean"].is_object(),
        "{examples}"
    );

    let docs = server.get("/docs/").await;
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.expect("html").contains("swagger-ui"));
    let bundle = server.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(
        bundle.status(),
        200,
        "Swagger UI assets are served from the binary"
    );
}

#[tokio::test]
async fn environment_overrides_the_file_and_flags_override_the_environment() {
    let env = [
        ("NEWSCLS__BATCHING__MAX_BATCH_SIZE", "7"),
        ("NEWSCLS__SERVER__TIMEOUT", "4.5"),
    ];
    let server = Server::start(&[], &env);
    let info: Value = server.get_json("/info").await;
    assert_eq!(info["batching"]["max_batch_size"], 7);
    assert_eq!(info["timeout_seconds"], 4.5);
    drop(server);

    let server = Server::start(&["--max-batch-size", "5"], &env);
    let info: Value = server.get_json("/info").await;
    assert_eq!(info["batching"]["max_batch_size"], 5);
}

#[tokio::test]
async fn config_file_is_taken_from_newscls_config() {
    let dir = TempDir::new("it-config");
    let path = dir.path().join("custom.yaml");
    std::fs::write(
        &path,
        "batching:\n  max_wait_ms: 9\nlimits:\n  max_client_batch_size: 3\n",
    )
    .expect("write");
    let server = Server::start(
        &[],
        &[("NEWSCLS_CONFIG", path.to_str().expect("utf-8 path"))],
    );
    let info: Value = server.get_json("/info").await;
    assert_eq!(info["batching"]["max_wait_ms"], 9);
    assert_eq!(info["limits"]["max_client_batch_size"], 3);
}

#[tokio::test]
async fn sigterm_finishes_accepted_requests_then_exits_zero() {
    // Requests wait 1 s in the queue, so they are surely in flight when SIGTERM arrives.
    let server = Server::start(
        &["--preferred-batch-size", "1000", "--max-wait-ms", "1000"],
        &[],
    );
    let bodies: Vec<Value> = (0..4)
        .map(|i| json!({"inputs": format!("Parliament votes on the budget, part {i}.")}))
        .collect();
    let in_flight = {
        let client = server.client.clone();
        let url = server.url("/predict");
        tokio::spawn(async move {
            let mut handles = Vec::new();
            for body in bodies {
                let request = client.post(&url).json(&body);
                handles.push(tokio::spawn(async move {
                    request.send().await.map(|r| r.status().as_u16())
                }));
            }
            let mut statuses = Vec::new();
            for handle in handles {
                statuses.push(handle.await.expect("task"));
            }
            statuses
        })
    };
    server.wait_for_queue_depth(4.0).await;
    send_signal(server.pid(), "TERM");
    let statuses = in_flight.await.expect("requests");
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(200))),
        "accepted requests were lost: {statuses:?}"
    );
    let status = server
        .wait_exit(Duration::from_secs(30))
        .expect("exited after draining");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn every_front_door_drains_within_one_deadline() {
    // HTTP and gRPC work held in the queue for 6 s; the drain window is 2 s. The doors drain
    // side by side under one deadline, so the process is gone soon after 2 s, not after a window
    // for HTTP and then another for gRPC.
    let server = Server::start(
        &[
            "--preferred-batch-size",
            "1000",
            "--max-wait-ms",
            "6000",
            "--grpc-port",
            "0",
        ],
        &[("NEWSCLS__SERVER__DRAIN_TIMEOUT", "2")],
    );
    let name = server.model_name().await;
    let request = server
        .client
        .post(server.url("/predict"))
        .json(&json!({"inputs": "Stocks fell."}));
    let http = tokio::spawn(async move { request.send().await.map(|r| r.status()) });
    let mut client = crate::support::grpc_client(&server).await;
    let call = crate::support::grpc_request_of(&name, 1, vec!["Rates rose.".into()]);
    let grpc = tokio::spawn(async move { client.model_infer(call).await.map(|_| ()) });
    server.wait_for_queue_depth(2.0).await;
    let signalled = std::time::Instant::now();
    send_signal(server.pid(), "TERM");
    server
        .wait_exit(Duration::from_secs(20))
        .expect("exited after the drain window");
    let took = signalled.elapsed();
    eprintln!("drain: HTTP and gRPC work past a 2 s window: exited {took:?} after SIGTERM");
    assert!(
        took < Duration::from_millis(3500),
        "exited {took:?} after SIGTERM with a 2 s drain window"
    );
    let _ = (http.await, grpc.await);
}

#[tokio::test]
async fn probe_flag_reports_health_for_container_checks() {
    let server = Server::start(&[], &[]);
    let probe = |path: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_newscls"))
            .args(["--probe", &server.url(path)])
            .output()
            .expect("run probe")
            .status
            .success()
    };
    assert!(probe("/livez"));
    assert!(probe("/readyz"));
    assert!(!probe("/nope"), "a 404 is unhealthy");
    drop(server);
    let closed = std::process::Command::new(env!("CARGO_BIN_EXE_newscls"))
        .args(["--probe", "http://127.0.0.1:1/livez"])
        .output()
        .expect("run probe");
    assert!(!closed.status.success(), "nothing listening is unhealthy");
}

#[tokio::test]
async fn a_second_signal_exits_without_waiting_for_the_drain() {
    // Requests wait 5 s in the queue; a drain would take that long, a second signal must not.
    let server = Server::start(
        &["--preferred-batch-size", "1000", "--max-wait-ms", "5000"],
        &[],
    );
    let request = server
        .client
        .post(server.url("/predict"))
        .json(&json!({"inputs": "Stocks fell."}));
    let pending = tokio::spawn(async move { request.send().await });
    server.wait_for_queue_depth(1.0).await;
    send_signal(server.pid(), "TERM");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    send_signal(server.pid(), "TERM");
    let status = server
        .wait_exit(Duration::from_secs(3))
        .expect("exited promptly after the second signal");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_ne!(
        status.code(),
        Some(0),
        "an interrupted drain is not a clean exit"
    );
    let _ = pending.await;
}

#[tokio::test]
async fn openapi_states_the_limits_this_server_enforces() {
    let server = Server::start(&[], &[("NEWSCLS__LIMITS__MAX_CLIENT_BATCH_SIZE", "7")]);
    let spec: Value = server.get_json("/openapi.json").await;
    let inputs = &spec["components"]["schemas"]["PredictInputs"]["oneOf"];
    assert_eq!(inputs[1]["maxItems"], 7, "{inputs}");
    assert_eq!(inputs[1]["minItems"], 1);
    assert_eq!(inputs[0]["minLength"], 1);
}

#[tokio::test]
async fn admin_reload_is_off_without_a_token_and_needs_it_when_on() {
    let server = Server::start(&[], &[]);
    let off = server
        .client
        .post(server.url("/admin/reload"))
        .send()
        .await
        .expect("request");
    assert_eq!(off.status(), 404);
    drop(server);

    const TOKEN: &str = "s3cret-admin-token";
    let server = Server::start(&[], &[("NEWSCLS__SERVER__ADMIN_TOKEN", TOKEN)]);
    let reload = |token: &'static str| {
        server
            .client
            .post(server.url("/admin/reload"))
            .bearer_auth(token)
            .send()
    };
    for guess in ["guess", "s3cret-admin-tokeN", "s3cret-admin-toke"] {
        let wrong = reload(guess).await.expect("request");
        assert_eq!(wrong.status(), 401, "{guess}");
        assert_eq!(wrong.headers()["www-authenticate"], "Bearer");
    }
    // Two at once: one reloads, the other is told to come back instead of queueing a thread.
    let (first, second) = tokio::join!(reload(TOKEN), reload(TOKEN));
    let mut statuses = [
        first.expect("request").status().as_u16(),
        second.expect("request").status().as_u16(),
    ];
    statuses.sort();
    assert_eq!(statuses, [200, 429], "one reload at a time");
    let right = reload(TOKEN).await.expect("request");
    assert_eq!(right.status(), 200);
    let outcome: Value = right.json().await.expect("json");
    assert_eq!(outcome["outcome"], "swapped", "{outcome}");
    // The reloaded directory serves, and answers name the model.
    let response = server.predict(json!({"inputs": "Oil prices rose."})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-model-name"], "news-topic-e5-small");
    assert!(response.headers().contains_key("x-model-version"));
    assert_eq!(
        server
            .metric("newscls_model_reloads_total{outcome=\"swapped\"}")
            .await,
        2.0
    );

    // Guessing is limited: after five wrong tokens within a minute, every admin request gets
    // 429 with Retry-After, the right token included, without the token being checked.
    for guess in ["guess-4", "guess-5"] {
        assert_eq!(reload(guess).await.expect("request").status(), 401);
    }
    let limited = reload("guess-6").await.expect("request");
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(reload(TOKEN).await.expect("request").status(), 429);
    assert_eq!(
        server
            .metric("newscls_admin_auth_failures_total{outcome=\"wrong\"}")
            .await,
        5.0
    );
    assert_eq!(
        server
            .metric("newscls_admin_auth_failures_total{outcome=\"limited\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn with_an_admin_port_reload_is_served_there_and_only_there() {
    let server = Server::start(
        &[],
        &[
            ("NEWSCLS__SERVER__ADMIN_TOKEN", "s3cret-admin-token"),
            ("NEWSCLS__SERVER__ADMIN_PORT", "0"),
        ],
    );
    let admin = server.admin.clone().expect("the admin listener's address");
    let reload = |base: &str| {
        server
            .client
            .post(format!("{base}/admin/reload"))
            .bearer_auth("s3cret-admin-token")
            .send()
    };
    assert_eq!(reload(&server.base).await.expect("request").status(), 404);
    assert_eq!(reload(&admin).await.expect("request").status(), 200);
    let predict = server
        .client
        .post(format!("{admin}/predict"))
        .json(&json!({"inputs": "Oil prices rose."}))
        .send()
        .await
        .expect("request");
    assert_eq!(
        predict.status(),
        404,
        "the admin listener serves nothing else"
    );
    let spec = server.get_json("/openapi.json").await;
    assert!(
        spec["paths"]["/admin/reload"].is_null() && spec["paths"]["/shadow"].is_null(),
        "the main listener's document lists only what it serves"
    );
    // /shadow (excerpts of other callers' texts) moves to the admin listener too: there it
    // answers for itself (no challenger configured here), the main listener knows no such route.
    let public: Value = server.get("/shadow").await.json().await.expect("json");
    assert!(
        !public["error"]
            .as_str()
            .unwrap_or("")
            .contains("shadow.uri"),
        "{public}"
    );
    let shadow: Value = server
        .client
        .get(format!("{admin}/shadow"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert!(
        shadow["error"]
            .as_str()
            .unwrap_or("")
            .contains("shadow.uri"),
        "{shadow}"
    );
    // The admin listener binds to loopback unless server.admin_host says otherwise.
    assert!(
        admin.starts_with("http://127.0.0.1:"),
        "admin listener on {admin}"
    );
    let response = server.predict(json!({"inputs": "Oil prices rose."})).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_grpc_port_is_off_unless_set_and_listens_when_set() {
    let server = Server::start(&[], &[]);
    assert!(server.grpc.is_none(), "no gRPC listener by default");
    drop(server);
    let server = Server::start(&["--grpc-port", "0", "--log-level", "info"], &[]);
    let grpc = server.grpc.clone().expect("the gRPC address is printed");
    let addr = grpc.trim_start_matches("http://");
    std::net::TcpStream::connect(addr).expect("the gRPC port accepts connections");
    assert_eq!(
        server.get("/readyz").await.status(),
        200,
        "HTTP serves beside it"
    );
    // A call is reported as an HTTP request is: counted, timed, and logged on one line.
    let mut client = crate::support::grpc_client(&server).await;
    client
        .server_live(newscls::frontends::grpc::proto::ServerLiveRequest {})
        .await
        .expect("ServerLive answers");
    assert_eq!(
        server
            .metric("newscls_grpc_requests_total{code=\"Ok\",method=\"ServerLive\"}")
            .await,
        1.0
    );
    assert_eq!(server.metric("newscls_grpc_requests_in_flight").await, 0.0);
    assert_eq!(
        server
            .metric("newscls_grpc_request_duration_seconds_count{method=\"ServerLive\"}")
            .await,
        1.0,
        "the call is timed"
    );
    assert!(
        server.log_shows("grpc_code", Duration::from_secs(10)).await,
        "no request line for the gRPC call: {}",
        server.log()
    );
    let line = server
        .log()
        .lines()
        .find(|l| l.contains("grpc_code"))
        .map(str::to_string)
        .unwrap_or_default();
    for part in ["request", "ServerLive", "Ok", "latency_ms"] {
        assert!(line.contains(part), "{part:?} missing from: {line}");
    }
}

#[tokio::test]
async fn secrets_reach_no_log_line_error_or_printed_config() {
    let admin = "admin-token-7f3a9c";
    let kafka = "kafka-password-51be0d";
    let registry = "registry-password-c40e2b";
    let tracking = format!("http://ana:{registry}@127.0.0.1:9");
    let env = [
        ("NEWSCLS__SERVER__ADMIN_TOKEN", admin),
        ("NEWSCLS__STREAM__BROKERS", "127.0.0.1:9"),
        ("MLFLOW_TRACKING_PASSWORD", registry),
    ];
    let yaml = TempDir::new("secrets");
    let config = yaml.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "stream:\n  kafka:\n    security.protocol: SASL_PLAINTEXT\n    sasl.mechanisms: PLAIN\n    sasl.username: svc\n    sasl.password: {kafka}\n"
        ),
    )
    .expect("write config");
    let config = config.display().to_string();
    let printed = run_to_exit(&["--config", &config, "--print-config"], &env);
    let printed = String::from_utf8_lossy(&printed.stdout).into_owned();
    assert!(printed.contains("\"sasl.username\": \"svc\""), "{printed}");
    assert!(printed.contains("***"), "{printed}");

    let server = Server::start(&["--config", &config, "--log-level", "debug"], &env);
    assert_eq!(server.get("/livez").await.status(), 200);
    assert!(
        server
            .log_shows("effective configuration", Duration::from_secs(10))
            .await,
        "{}",
        server.log()
    );
    let log = server.log();
    drop(server);
    // A pipe is what a container engine or a log collector reads: no colour escape codes there.
    assert!(
        !log.contains('\x1b'),
        "colour codes in a log written to a pipe: {log}"
    );

    // A registry URI with credentials in it, unreachable: the error names the server, not them.
    let error = startup_error(
        &["--model-uri", "models:/news@champion"],
        &[("MLFLOW_TRACKING_URI", tracking.as_str())],
    );
    assert!(error.contains("127.0.0.1:9"), "{error}");
    for (what, text) in [
        ("--print-config", &printed),
        ("the log", &log),
        ("the error", &error),
    ] {
        for secret in [admin, kafka, registry] {
            assert!(!text.contains(secret), "{secret} in {what}: {text}");
        }
    }
}

#[tokio::test]
async fn sighup_reloads_the_model_directory_while_serving() {
    let server = Server::start(&[], &[]);
    let loaded_at = server.get_json("/info").await["model"]["loaded_at_unix"]
        .as_f64()
        .expect("loaded_at");
    send_signal(server.pid(), "HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while server
        .metric("newscls_model_reloads_total{outcome=\"swapped\"}")
        .await
        < 1.0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = server.get_json("/info").await;
    assert!(info["model"]["loaded_at_unix"].as_f64().expect("loaded_at") > loaded_at);
    assert_eq!(server.get("/readyz").await.status(), 200);
    let response = server.predict(json!({"inputs": "Oil prices rose."})).await;
    assert_eq!(response.status(), 200);
}
