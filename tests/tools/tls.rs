//! TLS to the service's peers with a private CA: a real MLflow server behind TLS (uvicorn's
//! own) serves a model version and takes OTLP traces. `https://` works with the CA named by
//! `MLFLOW_TRACKING_SERVER_CERT_PATH` (and `OTEL_EXPORTER_OTLP_CERTIFICATE` for traces), fails
//! with a clear error without it, and works with `MLFLOW_TRACKING_INSECURE_TLS=true`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::mlflow::Mlflow;
use crate::registry::{model_copy, publish_with};
use crate::support::{startup_error, Server, TempDir};

/// Why these tests cannot run here, if they cannot.
pub fn missing() -> Option<String> {
    crate::mlflow::missing().or_else(|| {
        let found = Command::new("openssl").arg("version").output();
        (!found.is_ok_and(|o| o.status.success()))
            .then(|| "openssl (to make the test CA) is not installed".to_string())
    })
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in a temp dir.
pub struct Certificates {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    _dir: TempDir,
}

impl Certificates {
    pub fn new() -> Self {
        let dir = TempDir::new("tls");
        let path = |name: &str| dir.path().join(name);
        let openssl = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509", "-days", "2", "-subj", "/CN=newscls test CA"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req", "-subj", "/CN=127.0.0.1"][..],
                &ec,
                &["-keyout", "server.key", "-out", "server.csr"],
            ]
            .concat(),
        );
        std::fs::write(
            path("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write");
        openssl(&[
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-extfile",
            "server.ext",
        ]);
        Self {
            ca: path("ca.pem"),
            server_cert: path("server.pem"),
            server_key: path("server.key"),
            _dir: dir,
        }
    }
}

impl Certificates {
    /// A self-signed certificate for 127.0.0.1 that is its own CA (`CA:TRUE`), as
    /// `openssl req -x509` makes it: the common internal MLflow setup.
    pub fn self_signed() -> Self {
        let dir = TempDir::new("tls-self-signed");
        let path = |name: &str| dir.path().join(name);
        let output = Command::new("openssl")
            .args(["req", "-x509", "-days", "2", "-subj", "/CN=127.0.0.1"])
            .args([
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
            ])
            .args(["-keyout", "server.key", "-out", "server.pem"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:TRUE"])
            .current_dir(dir.path())
            .output()
            .expect("run openssl");
        assert!(
            output.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Self {
            ca: path("server.pem"),
            server_cert: path("server.pem"),
            server_key: path("server.key"),
            _dir: dir,
        }
    }
}

/// The server's own self-signed certificate as `MLFLOW_TRACKING_SERVER_CERT_PATH` (which
/// MLflow's Python client accepts): trusted as pinned; another self-signed certificate is not.
pub fn a_self_signed_registry_certificate_is_trusted_when_named() {
    tokio::runtime::Runtime::new()
        .expect("a tokio runtime")
        .block_on(self_signed());
}

async fn self_signed() {
    let certs = Certificates::self_signed();
    let mlflow = Mlflow::start_with_tls(&certs).await;
    let pinned = certs.ca.display().to_string();
    let model = model_copy(false, false);
    let version = publish_with(
        &mlflow,
        &model,
        Some("champion"),
        &[("MLFLOW_TRACKING_SERVER_CERT_PATH", pinned.as_str())],
    );
    let uri = "models:/news-topic@champion";
    let tracking = mlflow.url.clone();

    // Another self-signed certificate for the same address is not the one named: refused.
    let other = Certificates::self_signed();
    let other_pem = other.ca.display().to_string();
    let empty = TempDir::new("tls-cache-other");
    let empty_cache = empty.path().display().to_string();
    let line = startup_error(
        &["--model-uri", uri],
        &[
            ("MLFLOW_TRACKING_URI", tracking.as_str()),
            ("MLFLOW_TRACKING_SERVER_CERT_PATH", other_pem.as_str()),
            ("NEWSCLS__MODEL__CACHE_DIR", empty_cache.as_str()),
        ],
    );
    assert!(line.contains("certificate"), "{line}");

    let cache = TempDir::new("tls-cache-pinned");
    let cache_dir = cache.path().display().to_string();
    let server = Server::start(
        &["--model-uri", uri],
        &[
            ("MLFLOW_TRACKING_URI", tracking.as_str()),
            ("MLFLOW_TRACKING_SERVER_CERT_PATH", pinned.as_str()),
            ("NEWSCLS__MODEL__CACHE_DIR", cache_dir.as_str()),
        ],
    );
    assert_eq!(server.get_json("/info").await["model"]["version"], version);
    println!(
        "tls: a self-signed registry certificate named as the CA file serves version {version}"
    );
}

pub fn registry_and_traces_over_tls_with_a_private_ca() {
    tokio::runtime::Runtime::new()
        .expect("a tokio runtime")
        .block_on(run());
}

async fn run() {
    let certs = Certificates::new();
    let mlflow = Mlflow::start_with_tls(&certs).await;
    let ca = certs.ca.display().to_string();
    let model = model_copy(false, false);
    let version = publish_with(
        &mlflow,
        &model,
        Some("champion"),
        &[("MLFLOW_TRACKING_SERVER_CERT_PATH", ca.as_str())],
    );
    let experiment = mlflow.create_experiment("newscls-tls-traces").await;
    let uri = "models:/news-topic@champion";
    let tracking = mlflow.url.clone();
    assert!(tracking.starts_with("https://"), "{tracking}");
    let endpoint = format!("{tracking}/v1/traces");
    let headers = format!("x-mlflow-experiment-id={experiment}");

    // Without the CA: the certificate is not trusted, and the error says so.
    let empty = TempDir::new("tls-cache-none");
    let empty_cache = empty.path().display().to_string();
    let line = startup_error(
        &["--model-uri", uri],
        &[
            ("MLFLOW_TRACKING_URI", tracking.as_str()),
            ("NEWSCLS__MODEL__CACHE_DIR", empty_cache.as_str()),
        ],
    );
    assert!(
        line.contains("certificate") && line.contains(&tracking),
        "{line}"
    );
    println!("tls: without the CA: {line}");

    // With the CA: the version is served, and traces reach the https collector.
    let cache = TempDir::new("tls-cache");
    let cache_dir = cache.path().display().to_string();
    let server = Server::start(
        &["--model-uri", uri],
        &[
            ("MLFLOW_TRACKING_URI", tracking.as_str()),
            ("MLFLOW_TRACKING_SERVER_CERT_PATH", ca.as_str()),
            ("NEWSCLS__MODEL__CACHE_DIR", cache_dir.as_str()),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_HEADERS", headers.as_str()),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    );
    assert_eq!(server.get_json("/info").await["model"]["version"], version);
    let trace_id = format!(
        "{:032x}",
        0x7d3c_u128 << 64 | u128::from(std::process::id())
    );
    let response = server
        .client
        .post(server.url("/predict"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"inputs": "The striker scored twice."}))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored = mlflow
            .http
            .get(format!("{tracking}/api/3.0/mlflow/traces/get"))
            .query(&[("trace_id", format!("tr-{trace_id}"))])
            .send()
            .await
            .expect("mlflow request");
        let body: Value = stored.json().await.unwrap_or(Value::Null);
        if body["trace"]["spans"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no span reached the https collector; dropped: {}",
            server.metric("newscls_trace_spans_dropped_total").await
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(server);

    // Verification off, as MLflow's own client allows: works, and says so.
    let insecure = TempDir::new("tls-cache-insecure");
    let insecure_cache = insecure.path().display().to_string();
    let server = Server::start(
        &["--model-uri", uri, "--log-level", "warn"],
        &[
            ("MLFLOW_TRACKING_URI", tracking.as_str()),
            ("MLFLOW_TRACKING_INSECURE_TLS", "true"),
            ("NEWSCLS__MODEL__CACHE_DIR", insecure_cache.as_str()),
        ],
    );
    assert_eq!(server.get_json("/info").await["model"]["version"], version);
    assert!(
        server
            .log_shows("verification is off", Duration::from_secs(10))
            .await,
        "{}",
        server.log()
    );
}
