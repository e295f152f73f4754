//! Models from a real MLflow registry: start from an alias, swap versions under continuous load
//! with nothing lost, refuse a broken version, start from the cache when the registry is down,
//! and fail clearly on wrong credentials.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::mlflow::{bin, Mlflow};
use crate::support::{repo_path, run_to_exit, startup_error, Server, TempDir, MODEL_DIR};

pub const NAME: &str = "news-topic";

pub fn versions_are_served_swapped_and_refused() {
    tokio::runtime::Runtime::new()
        .expect("a tokio runtime")
        .block_on(run());
}

/// A servable copy of the bundled model (CPU variant only, to keep uploads small); `broken`
/// truncates its ONNX file, `examples` adds the examples a version is checked with.
pub fn model_copy(broken: bool, examples: bool) -> TempDir {
    let dir = TempDir::new("registry-model");
    for file in ["model_quantized.onnx", "tokenizer.json", "config.json"] {
        std::fs::copy(repo_path(MODEL_DIR).join(file), dir.path().join(file)).expect("copy");
    }
    if broken {
        let model = std::fs::read(dir.path().join("model_quantized.onnx")).expect("read");
        std::fs::write(
            dir.path().join("model_quantized.onnx"),
            &model[..model.len() / 2],
        )
        .expect("truncate");
    }
    if examples {
        let examples = json!([
            {"text": "The striker scored twice as the home side won the cup final.", "label": "sport"},
            {"text": "Shares of the carmaker fell 5% after it cut its profit forecast.", "label": "business"}
        ]);
        std::fs::write(dir.path().join("examples.json"), examples.to_string()).expect("write");
    }
    dir
}

/// training/publish_model.py, the data scientist's way, with MLflow's Python package.
fn publish(mlflow: &Mlflow, dir: &TempDir, alias: Option<&str>) -> String {
    publish_with(mlflow, dir, alias, &[])
}

/// [`publish`] with more environment for MLflow's client (e.g. a CA for a TLS server).
pub fn publish_with(
    mlflow: &Mlflow,
    dir: &TempDir,
    alias: Option<&str>,
    env: &[(&str, &str)],
) -> String {
    let mut command = Command::new(bin().join("python"));
    command.envs(env.iter().copied());
    command
        .arg(repo_path("training/publish_model.py"))
        .arg(dir.path())
        .args(["--name", NAME])
        .env("MLFLOW_TRACKING_URI", &mlflow.url)
        .env("MLFLOW_DISABLE_TELEMETRY", "true");
    if let Some(alias) = alias {
        command.args(["--alias", alias]);
    }
    let output = command.output().expect("run publish_model.py");
    assert!(
        output.status.success(),
        "publish_model.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(
        output
            .stdout
            .split(|b| *b == b'\n')
            .rfind(|l| l.starts_with(b"{"))
            .expect("a JSON line"),
    )
    .expect("json");
    printed["version"].as_str().expect("version").to_string()
}

async fn move_alias(mlflow: &Mlflow, version: &str) {
    mlflow
        .post(
            "/api/2.0/mlflow/registered-models/alias",
            json!({"name": NAME, "alias": "champion", "version": version}),
        )
        .await;
}

/// Classifies until `stop`, recording (started, finished, status, model version) per request.
type Record = (Instant, Instant, u16, String);

async fn load(server: &Server, stop: Arc<AtomicBool>) -> Arc<Mutex<Vec<Record>>> {
    let records = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for client in 0..8 {
        let (http, url, stop, records) = (
            server.client.clone(),
            server.url("/predict"),
            stop.clone(),
            records.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let text = format!("Parliament debates the budget, part {client}-{i}.");
                let response = http.post(&url).json(&json!({"inputs": text})).send().await;
                let (status, version) = match response {
                    Ok(r) => (
                        r.status().as_u16(),
                        r.headers()
                            .get("x-model-version")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string(),
                    ),
                    Err(_) => (0, String::new()),
                };
                records
                    .lock()
                    .expect("lock")
                    .push((started, Instant::now(), status, version));
                i += 1;
            }
        }));
    }
    // Detached: the caller stops them with `stop` and reads `records`.
    tokio::spawn(async move {
        for client in clients {
            let _ = client.await;
        }
    });
    records
}

async fn run() {
    let mlflow = Mlflow::start().await;
    let (v1_dir, v2_dir, v3_dir) = (
        model_copy(false, false),
        model_copy(false, true),
        model_copy(true, false),
    );
    let v1 = publish(&mlflow, &v1_dir, Some("champion"));
    let v2 = publish(&mlflow, &v2_dir, None);
    assert_eq!((v1.as_str(), v2.as_str()), ("1", "2"));

    let cache = TempDir::new("registry-cache");
    let uri = format!("models:/{NAME}@champion");
    let tracking = mlflow.url.clone();
    let env = [
        ("MLFLOW_TRACKING_URI", tracking.as_str()),
        ("NEWSCLS__MODEL__POLL_INTERVAL", "1"),
        (
            "NEWSCLS__MODEL__CACHE_DIR",
            cache.path().to_str().expect("utf-8"),
        ),
    ];
    let server = Server::start(&["--model-uri", &uri], &env);
    let info = server.get_json("/info").await;
    assert_eq!(info["model"]["version"], "1");
    assert_identity(&server, "1").await;
    assert!(info["model"]["source"]
        .as_str()
        .expect("source")
        .contains(&uri));

    // The alias moves to v2 under 8 clients' continuous load.
    let stop = Arc::new(AtomicBool::new(false));
    let records = load(&server, stop.clone()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let moved = Instant::now();
    move_alias(&mlflow, &v2).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let first_v2 = loop {
        let seen = records
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.3 == "2")
            .map(|r| r.1)
            .min();
        if let Some(at) = seen {
            break at;
        }
        assert!(Instant::now() < deadline, "v2 never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let records = records.lock().expect("lock").clone();
    let switch = first_v2.duration_since(moved);
    eprintln!(
        "swap: {} requests during the test, v2 first answered {:.2} s after the alias moved",
        records.len(),
        switch.as_secs_f64()
    );
    assert!(records.len() > 40, "load ran: {} requests", records.len());
    for (started, _, status, version) in &records {
        assert_eq!(*status, 200, "every request succeeds during the swap");
        assert!(version == "1" || version == "2", "version {version:?}");
        if *started > first_v2 {
            assert_eq!(
                version, "2",
                "no v1 answer to a request made after v2 answered"
            );
        }
    }
    assert!(
        switch < Duration::from_secs(15),
        "the swap lands within poll interval + load time: {switch:?}"
    );
    assert_eq!(
        server
            .metric("newscls_model_reloads_total{outcome=\"swapped\"}")
            .await,
        1.0
    );

    // A broken v3 behind the alias is refused; v2 keeps serving.
    let v3 = publish(&mlflow, &v3_dir, None);
    move_alias(&mlflow, &v3).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while server
        .metric("newscls_model_reloads_total{outcome=\"refused\"}")
        .await
        < 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the broken version was never refused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let response = server.predict(json!({"inputs": "Oil prices rose."})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-model-version"], "2");
    assert_eq!(server.get_json("/info").await["model"]["version"], "2");
    assert_identity(&server, "2").await;
    assert!(
        server.log_shows("refused", Duration::from_secs(10)).await,
        "the refusal is logged:\n{}",
        server.log()
    );

    // A version whose labels are in another order is refused: KServe and vLLM clients read
    // probabilities by position.
    let reordered = model_copy(false, false);
    let config_path = reordered.path().join("config.json");
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(&config_path).expect("read")).expect("json");
    let labels = config["id2label"].as_object_mut().expect("id2label");
    let (first, last) = (labels["0"].clone(), labels["5"].clone());
    labels.insert("0".into(), last.clone());
    labels.insert("5".into(), first.clone());
    std::fs::write(&config_path, config.to_string()).expect("write");
    let v4 = publish(&mlflow, &reordered, None);
    move_alias(&mlflow, &v4).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while server
        .metric("newscls_model_reloads_total{outcome=\"refused\"}")
        .await
        < 2.0
    {
        assert!(
            Instant::now() < deadline,
            "the relabelled version was never refused"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        server
            .log_shows("labels changed", Duration::from_secs(10))
            .await,
        "{}",
        server.log()
    );
    assert_eq!(server.get_json("/info").await["model"]["version"], "2");
    drop(server);

    // With model.allow_label_change it is taken, and /info shows the new order.
    move_alias(&mlflow, &v2).await;
    let mut allowing = env.to_vec();
    allowing.push(("NEWSCLS__MODEL__ALLOW_LABEL_CHANGE", "true"));
    let server = Server::start(&["--model-uri", &uri], &allowing);
    assert_eq!(server.get_json("/info").await["model"]["version"], "2");
    move_alias(&mlflow, &v4).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get_json("/info").await["model"]["version"] != v4.as_str() {
        assert!(
            Instant::now() < deadline,
            "the relabelled version was never taken"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let labels = server.get_json("/info").await["model"]["labels"].clone();
    assert_eq!((&labels[0], &labels[5]), (&last, &first), "{labels}");
    assert_identity(&server, &v4).await;
    drop(server);

    // The registry goes down: a cached copy starts (the last version that loaded, v4) with a
    // warning; with an empty cache the process exits 1 with one clear line.
    mlflow.stop();
    let server = Server::start(&["--model-uri", &uri, "--log-level", "warn"], &env);
    assert_eq!(
        server.get_json("/info").await["model"]["version"],
        v4.as_str()
    );
    assert!(
        server
            .log_shows("cached version", Duration::from_secs(10))
            .await,
        "{}",
        server.log()
    );
    drop(server);
    let empty = TempDir::new("registry-empty-cache");
    let line = startup_error(
        &["--model-uri", &uri],
        &[
            ("MLFLOW_TRACKING_URI", env[0].1),
            (
                "NEWSCLS__MODEL__CACHE_DIR",
                empty.path().to_str().expect("utf-8"),
            ),
        ],
    );
    assert!(
        line.contains("no cached copy") && line.contains(&uri),
        "{line}"
    );
}

/// Clients address the model by the registered name, whatever version serves: `/predict`'s
/// headers, KServe's model routes and vLLM's `model` do not change with the version.
async fn assert_identity(server: &Server, version: &str) {
    let response = server.predict(json!({"inputs": "Oil prices rose."})).await;
    assert_eq!(response.headers()["x-model-name"], NAME);
    assert_eq!(response.headers()["x-model-version"], version);
    let metadata = server.get_json(&format!("/v2/models/{NAME}")).await;
    assert_eq!(metadata["name"], NAME, "{metadata}");
    assert_eq!(metadata["versions"], json!([version]), "{metadata}");
    let classified = server
        .client
        .post(server.url("/classify"))
        .json(&json!({"model": NAME, "input": ["Oil prices rose."]}))
        .send()
        .await
        .expect("request");
    assert_eq!(classified.status(), 200);
    let body: Value = classified.json().await.expect("json");
    assert_eq!(body["model"], NAME, "{body}");
}

pub fn wrong_credentials_are_a_clear_error() {
    tokio::runtime::Runtime::new()
        .expect("a tokio runtime")
        .block_on(async {
            let mlflow = Mlflow::start_with_auth().await;
            let cache = TempDir::new("registry-auth-cache");
            let output = run_to_exit(
                &["--model-uri", "models:/news-topic@champion"],
                &[
                    ("MLFLOW_TRACKING_URI", mlflow.url.as_str()),
                    (
                        "NEWSCLS__MODEL__CACHE_DIR",
                        cache.path().to_str().expect("utf-8"),
                    ),
                    ("MLFLOW_TRACKING_USERNAME", "admin"),
                    ("MLFLOW_TRACKING_PASSWORD", "not-the-password"),
                ],
            );
            assert_eq!(output.status.code(), Some(1));
            let stderr = String::from_utf8_lossy(&output.stderr);
            let line = stderr
                .lines()
                .find(|l| l.starts_with("newscls: error:"))
                .unwrap_or_else(|| panic!("no `newscls: error:` line in:\n{stderr}"));
            assert!(
                line.contains("refused the credentials")
                    && line.contains("MLFLOW_TRACKING_USERNAME"),
                "{line}"
            );
            // Credentials over plain http:// are warned about, once, without the password.
            assert_eq!(
                stderr
                    .matches("credentials are sent over plain http://")
                    .count(),
                1,
                "{stderr}"
            );
            assert!(!stderr.contains("not-the-password"), "{stderr}");
        });
}
