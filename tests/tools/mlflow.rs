//! A real MLflow server for the tests (scripts/setup-mlflow.sh installs it): SQLite backend
//! and an artifact folder in a temporary directory, on a free loopback port; killed on drop.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{repo_path, TempDir};

pub fn bin() -> std::path::PathBuf {
    repo_path(".cache/mlflow/bin")
}

/// Why the MLflow tests cannot run here, if they cannot.
pub fn missing() -> Option<String> {
    (!bin().join("mlflow").is_file()).then(|| {
        "MLflow is not installed in .cache/mlflow (scripts/setup-mlflow.sh installs it)".to_string()
    })
}

const ACCESS_LOG: &str = "access.log";

pub struct Mlflow {
    pub url: String,
    process: Child,
    pub http: reqwest::Client,
    dir: TempDir,
}

impl Mlflow {
    pub async fn start() -> Mlflow {
        Self::launch(false, None).await
    }

    /// With MLflow's basic-auth app: every request needs credentials (admin / a secret).
    pub async fn start_with_auth() -> Mlflow {
        Self::launch(true, None).await
    }

    /// Behind TLS (uvicorn's own), with the certificate and key of `certs`.
    pub async fn start_with_tls(certs: &crate::tls::Certificates) -> Mlflow {
        Self::launch(false, Some(certs)).await
    }

    async fn launch(auth: bool, tls: Option<&crate::tls::Certificates>) -> Mlflow {
        let dir = TempDir::new("mlflow");
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let mut command = Command::new(bin().join("mlflow"));
        if auth {
            command
                .args(["server", "--app-name", "basic-auth"])
                .env("MLFLOW_FLASK_SERVER_SECRET_KEY", "newscls-test-secret")
                .env("MLFLOW_AUTH_ADMIN_PASSWORD", "newscls-admin-password-1");
        } else {
            command.arg("server");
        }
        if let Some(certs) = tls {
            command.arg("--uvicorn-opts").arg(format!(
                "--ssl-keyfile {} --ssl-certfile {}",
                certs.server_key.display(),
                certs.server_cert.display()
            ));
        }
        // Its own process group: `mlflow server` runs its workers as children, and stopping it
        // must stop them all.
        // In the temp dir: the basic-auth app writes its user database (basic_auth.db, an
        // admin password hash) to its working directory.
        let process = command
            .process_group(0)
            .current_dir(dir.path())
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}/mlflow.db", dir.path().display()))
            .args(["--serve-artifacts", "--artifacts-destination"])
            .arg(dir.path().join("artifacts"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--workers",
                "1",
            ])
            .env("MLFLOW_DISABLE_TELEMETRY", "true")
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            // Its access log (one line per request) goes to a file the tests can read.
            .stdout(std::fs::File::create(dir.path().join(ACCESS_LOG)).expect("access log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start mlflow server");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}");
        let mut http = reqwest::Client::builder();
        match tls {
            // The test's own client: a self-signed certificate is not a CA to reqwest's verifier
            // (what newscls itself must handle is tested through newscls).
            Some(certs) if certs.ca == certs.server_cert => {
                http = http.tls_danger_accept_invalid_certs(true);
            }
            Some(certs) => {
                let pem = std::fs::read(&certs.ca).expect("CA file");
                http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA"));
            }
            None => {}
        }
        let http = http.build().expect("client");
        // Owned from here, so a server that never answers is still stopped (by Drop).
        let mlflow = Mlflow {
            url,
            process,
            http,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(r) = mlflow
                .http
                .get(format!("{}/health", mlflow.url))
                .send()
                .await
            {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "MLflow did not answer /health within 90 s"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        mlflow
    }

    /// Requests the server has logged whose line contains every one of `parts` (its access log:
    /// method, path and query, status).
    pub fn requests(&self, parts: &[&str]) -> usize {
        std::fs::read_to_string(self.dir.path().join(ACCESS_LOG))
            .unwrap_or_default()
            .lines()
            .filter(|line| parts.iter().all(|p| line.contains(p)))
            .count()
    }

    /// POSTs JSON to an MLflow REST path and returns the JSON answer (panics on an error).
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("mlflow request");
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {value}");
        value
    }

    pub async fn create_experiment(&self, name: &str) -> String {
        self.post(
            "/api/2.0/mlflow/experiments/create",
            json!({ "name": name }),
        )
        .await["experiment_id"]
            .as_str()
            .expect("experiment id")
            .to_string()
    }

    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Mlflow {
    fn drop(&mut self) {
        let group = format!("-{}", self.process.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
