//! The images as users deploy them: the repository's own Dockerfile built by a real engine and
//! run the way the README tells operators to run it.
//!
//! The engine is Debian's Docker Engine, started by `scripts/engine.sh` on a socket and data root
//! of its own (never a system engine) and stopped by its pid file when the test ends. Docker
//! rather than podman: it runs an image's HEALTHCHECK by itself (podman 4.3 needs systemd
//! timers for that) and docker-compose 1.29 talks to it as it is. Base images that cannot be
//! pulled here are made from Debian packages by `scripts/base-images.sh` under the names the
//! `FROM` lines use; the Dockerfile itself is the one users build. Test traffic goes only to
//! ports published on 127.0.0.1.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{repo_path, test_split, Server};

/// The tag the README's `docker build` gives the CPU image.
const IMAGE: &str = "newscls:cpu";

/// Why the container tests cannot run here, if they cannot.
pub fn missing() -> Option<String> {
    let absent: Vec<&str> = [
        "dockerd",
        "docker",
        "docker-compose",
        "podman",
        "runc",
        "mmdebstrap",
    ]
    .into_iter()
    .filter(|tool| {
        !Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .collect();
    (!absent.is_empty()).then(|| {
        format!(
            "{} not installed (scripts/engine.sh install)",
            absent.join(", ")
        )
    })
}

/// How many tests use the engine now: the first starts it, the last stops it (by its pid file).
static ENGINE_USERS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);
/// One image build at a time; a second test's build then reuses every cached layer.
static BUILDS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The project's own Docker Engine, running while any test holds one of these.
struct Engine {
    host: String,
}

impl Engine {
    fn start() -> Engine {
        let mut users = ENGINE_USERS.lock().unwrap_or_else(|p| p.into_inner());
        let output = Command::new(repo_path("scripts/engine.sh"))
            .arg(if *users == 0 { "start" } else { "env" })
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/engine.sh");
        assert!(
            output.status.success(),
            "the engine did not start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        *users += 1;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let host = stdout
            .lines()
            .find_map(|l| l.strip_prefix("DOCKER_HOST="))
            .expect("scripts/engine.sh prints DOCKER_HOST")
            .to_string();
        Engine { host }
    }

    /// `PROGRAM ARGS` (docker, docker-compose) against this engine, run to completion.
    fn tool(&self, program: &str, args: &[&str]) -> Output {
        Command::new(program)
            .args(args)
            .current_dir(repo_path(""))
            .env("DOCKER_HOST", &self.host)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"))
    }

    /// `docker ARGS` against this engine, run to completion.
    fn docker(&self, args: &[&str]) -> Output {
        self.tool("docker", args)
    }

    /// `docker ARGS`, which must succeed; its standard output, trimmed.
    fn ok(&self, args: &[&str]) -> String {
        succeeded("docker", args, self.docker(args))
    }

    /// The base images the Dockerfile names (made from Debian packages where missing), then the
    /// image of `target`, exactly as a user builds it; seconds taken.
    fn build(&self, target: &str, tag: &str) -> f64 {
        let _one_at_a_time = BUILDS.lock().unwrap_or_else(|p| p.into_inner());
        let images = Command::new(repo_path("scripts/base-images.sh"))
            .env("DOCKER_HOST", &self.host)
            .env("ENGINE", "docker")
            .status()
            .expect("run scripts/base-images.sh");
        assert!(images.success(), "scripts/base-images.sh failed");
        let started = Instant::now();
        let args = [
            "build",
            "--network",
            "host",
            "--target",
            target,
            "-t",
            tag,
            ".",
        ];
        let output = self.docker(&args);
        if !output.status.success() {
            let log = String::from_utf8_lossy(&output.stdout);
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "docker build --target {target} failed:\n{}\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        started.elapsed().as_secs_f64()
    }
}

/// A tool's standard output, trimmed, after checking it succeeded.
fn succeeded(program: &str, args: &[&str], output: Output) -> String {
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

impl Drop for Engine {
    fn drop(&mut self) {
        let mut users = ENGINE_USERS.lock().unwrap_or_else(|p| p.into_inner());
        *users -= 1;
        if *users == 0 {
            let _ = Command::new(repo_path("scripts/engine.sh"))
                .arg("stop")
                .stdin(Stdio::null())
                .status();
        }
    }
}

/// A container of the image; removed when dropped.
struct Container<'a> {
    engine: &'a Engine,
    name: String,
    base: String,
}

impl<'a> Container<'a> {
    /// `docker run -d` as the README shows it (read-only, no capabilities, no privilege
    /// escalation; the image's own user), the port published on 127.0.0.1 only.
    fn run(engine: &'a Engine, name: &str) -> Container<'a> {
        let _ = engine.docker(&["rm", "-f", name]);
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "-p",
            "127.0.0.1::8080",
        ];
        args.push(IMAGE);
        engine.ok(&args);
        let port = engine.ok(&["port", name, "8080/tcp"]);
        let address = port
            .lines()
            .find(|l| l.starts_with("127.0.0.1:"))
            .unwrap_or_else(|| panic!("published on 127.0.0.1: {port}"))
            .to_string();
        Container {
            engine,
            name: name.to_string(),
            base: format!("http://{address}"),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn health(&self) -> String {
        self.engine
            .ok(&["inspect", "-f", "{{.State.Health.Status}}", &self.name])
    }

    /// Waits for the image's own HEALTHCHECK to say healthy; the seconds it took.
    fn wait_healthy(&self, since: Instant, limit: Duration) -> f64 {
        while self.health() != "healthy" {
            assert!(
                since.elapsed() < limit,
                "not healthy after {limit:?}: {}\n{}",
                self.health(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        since.elapsed().as_secs_f64()
    }

    fn logs(&self) -> String {
        let output = self.engine.docker(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self.engine.docker(&["rm", "-f", &self.name]);
    }
}

/// `newscls_http_requests_in_flight` from a `/metrics` page.
/// Where the server's /predict requests stand, from its /metrics page: how many it has accepted
/// (answered or not) and how many of those it is still handling. The /metrics request itself is in
/// flight while the page is rendered and is not counted.
async fn predict_progress(client: &reqwest::Client, url: &str) -> (f64, f64) {
    let page = client
        .get(url)
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let in_flight = page
        .lines()
        .find(|l| l.starts_with("newscls_http_requests_in_flight "))
        .and_then(value)
        .unwrap_or(0.0)
        - 1.0;
    let answered: f64 = page
        .lines()
        .filter(|l| {
            l.starts_with("newscls_http_requests_total{") && l.contains("route=\"/predict\"")
        })
        .filter_map(value)
        .sum();
    (answered + in_flight, in_flight)
}

/// The top label of each text, in requests of 32.
async fn top_labels(client: &reqwest::Client, url: &str, texts: &[String]) -> Vec<String> {
    let mut labels = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(32) {
        let response = client
            .post(url)
            .json(&json!({ "inputs": chunk, "top_k": 1 }))
            .send()
            .await
            .expect("POST /predict");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("json");
        for ranked in body.as_array().expect("one list per text") {
            labels.push(ranked[0]["label"].as_str().expect("label").to_string());
        }
    }
    labels
}

/// Build the CPU image from the repository as a user does, run it read-only (as its own uid
/// 10001) with every capability dropped, wait for its HEALTHCHECK, and check it answers as the host-built
/// binary does, serves the demo page and Swagger UI, and drains in-flight requests on
/// `docker stop`.
pub fn the_cpu_image_builds_and_runs_hardened_and_drains() {
    let engine = Engine::start();
    let build_seconds = engine.build("runtime-cpu", IMAGE);
    let size: f64 = engine
        .ok(&["image", "inspect", "-f", "{{.Size}}", IMAGE])
        .parse()
        .expect("image size");
    let started = Instant::now();
    let container = Container::run(&engine, "newscls-image-test");
    let healthy_seconds = container.wait_healthy(started, Duration::from_secs(120));
    eprintln!(
        "image {IMAGE}: built in {build_seconds:.0} s, {:.0} MB; healthy {healthy_seconds:.1} s after `docker run`",
        size / 1e6
    );
    // The image's own numeric user, not root.
    let uid = engine.ok(&["exec", &container.name, "id", "-u"]);
    assert_eq!(uid, "10001");

    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        // The same labels as the binary built on this machine, on the whole test split.
        let texts: Vec<String> = test_split()
            .iter()
            .map(|row| row["text"].as_str().expect("text").to_string())
            .collect();
        let host = Server::start(&[], &[]);
        let want = top_labels(&host.client, &host.url("/predict"), &texts).await;
        drop(host);
        let got = top_labels(&client, &container.url("/predict"), &texts).await;
        let differing = want.iter().zip(&got).filter(|(a, b)| a != b).count();
        assert_eq!(
            differing,
            0,
            "the image labels {differing} of {} test articles differently from the host binary",
            texts.len()
        );

        for (path, marker) in [("/", "newscls"), ("/docs/", "swagger")] {
            let response = client
                .get(container.url(path))
                .send()
                .await
                .expect("GET");
            assert_eq!(response.status(), 200, "GET {path}");
            let body = response.text().await.expect("body").to_lowercase();
            assert!(body.contains(marker), "GET {path}: {body:.300}");
        }

        // Drain: 50 requests in flight when `docker stop` sends SIGTERM; every one is answered.
        // Counted from before the first is sent.
        let before = predict_progress(&client, &container.url("/metrics")).await.0;
        let requests: Vec<_> = (0..50)
            .map(|i| {
                let batch: Vec<String> = texts.iter().cycle().skip(i * 4).take(4).cloned().collect();
                let request = client
                    .post(container.url("/predict"))
                    .json(&json!({ "inputs": batch }));
                tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
            })
            .collect();
        // SIGTERM once the server has accepted all 50 and still handles at least 10 of them. Not
        // "all 50 at once": on a fast CPU the first answers leave before the last requests arrive.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut most_in_flight = 0.0_f64;
        loop {
            let (accepted, in_flight) =
                predict_progress(&client, &container.url("/metrics")).await;
            most_in_flight = most_in_flight.max(in_flight);
            if accepted - before >= 50.0 {
                assert!(
                    in_flight >= 10.0,
                    "all 50 accepted, but only {in_flight} still in flight (at most {most_in_flight})"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the server accepted {} of 50 requests in 10 s",
                accepted - before
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let stop = tokio::task::spawn_blocking({
            let host = engine.host.clone();
            let name = container.name.clone();
            move || {
                let started = Instant::now();
                let status = Command::new("docker")
                    .args(["stop", "-t", "30", &name])
                    .env("DOCKER_HOST", host)
                    .stdout(Stdio::null())
                    .status()
                    .expect("docker stop");
                (status.success(), started.elapsed().as_secs_f64())
            }
        });
        let mut statuses = Vec::new();
        for request in requests {
            statuses.push(request.await.expect("request task"));
        }
        let (stopped, stop_seconds) = stop.await.expect("docker stop task");
        assert!(stopped, "docker stop failed");
        let answered = statuses.iter().filter(|s| matches!(s, Ok(200))).count();
        eprintln!("drain: {answered} of 50 in-flight requests answered 200; `docker stop` took {stop_seconds:.1} s");
        assert_eq!(answered, 50, "statuses: {statuses:?}\n{}", container.logs());
        let exit = engine.ok(&["inspect", "-f", "{{.State.ExitCode}}", &container.name]);
        assert_eq!(exit, "0", "exit code after SIGTERM\n{}", container.logs());
    });
}

/// A compose project of the repository's docker-compose.yml; taken down (volumes too) when dropped.
struct Compose<'a> {
    engine: &'a Engine,
    project: String,
    env: Vec<(&'static str, String)>,
}

impl<'a> Compose<'a> {
    fn new(engine: &'a Engine, env: Vec<(&'static str, String)>) -> Compose<'a> {
        Compose {
            engine,
            project: format!("newscls-test-{}", std::process::id()),
            env,
        }
    }

    /// `docker-compose -p PROJECT ARGS`, which must succeed; its standard output.
    fn run(&self, args: &[&str]) -> String {
        let mut all = vec!["-p", self.project.as_str()];
        all.extend_from_slice(args);
        let mut command = Command::new("docker-compose");
        command
            .args(&all)
            .current_dir(repo_path(""))
            .env("DOCKER_HOST", &self.engine.host)
            .stdin(Stdio::null());
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let output = command.output().expect("run docker-compose");
        succeeded("docker-compose", &all, output)
    }

    /// The containers of one service, by id.
    fn containers(&self, service: &str) -> Vec<String> {
        self.run(&["ps", "-q", service])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Compose<'_> {
    fn drop(&mut self) {
        let mut command = Command::new("docker-compose");
        command
            .args(["-p", &self.project, "down", "-v", "--timeout", "5"])
            .current_dir(repo_path(""))
            .env("DOCKER_HOST", &self.engine.host)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let _ = command.status();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("address")
        .port()
}

/// `docker-compose up --scale newscls=3` as the README shows it: nginx spreads requests over all
/// three replicas and passes only the public routes; each replica runs read-only with no
/// capabilities and a memory limit; Prometheus (monitoring profile) scrapes every replica; one
/// replica killed under load costs no request (nginx tries the next).
pub fn compose_scales_out_behind_nginx_with_public_routes_only() {
    let engine = Engine::start();
    engine.build("runtime-cpu", IMAGE);
    let (lb_port, prometheus_port) = (free_port(), free_port());
    let compose = Compose::new(
        &engine,
        vec![
            ("NEWSCLS_PORT", format!("127.0.0.1:{lb_port}")),
            ("PROMETHEUS_PORT", prometheus_port.to_string()),
        ],
    );
    let started = Instant::now();
    compose.run(&[
        "--profile",
        "monitoring",
        "up",
        "-d",
        "--no-build",
        "--scale",
        "newscls=3",
        "newscls",
        "lb",
        "prometheus",
    ]);
    let replicas = compose.containers("newscls");
    assert_eq!(replicas.len(), 3, "{replicas:?}");
    for id in &replicas {
        let hardening = engine.ok(&[
            "inspect",
            "-f",
            "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}} {{.HostConfig.SecurityOpt}} {{.HostConfig.Memory}}",
            id,
        ]);
        assert_eq!(
            hardening,
            format!("true [ALL] [no-new-privileges:true] {}", 768 * 1024 * 1024),
            "replica {id}"
        );
    }
    let base = format!("http://127.0.0.1:{lb_port}");
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let ready = client.get(format!("{base}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the load balancer never answered /readyz"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!(
            "compose: 3 replicas behind nginx ready {:.1} s after `up`",
            started.elapsed().as_secs_f64()
        );

        // Round-robin: every replica answers some of 60 requests (nginx names it in X-Upstream).
        let mut by_replica: std::collections::BTreeMap<String, usize> = Default::default();
        for i in 0..60 {
            let response = client
                .post(format!("{base}/predict"))
                .json(&json!({ "inputs": format!("The striker scored twice in match {i}.") }))
                .send()
                .await
                .expect("POST /predict");
            assert_eq!(response.status(), 200);
            let upstream = response.headers()["x-upstream"]
                .to_str()
                .expect("x-upstream")
                .to_string();
            *by_replica.entry(upstream).or_default() += 1;
        }
        eprintln!("compose: requests per replica {by_replica:?}");
        assert_eq!(by_replica.len(), 3, "{by_replica:?}");

        // Only the public routes pass the load balancer.
        for (method, path) in [
            ("GET", "/"),
            ("GET", "/docs/"),
            ("GET", "/openapi.json"),
            ("GET", "/livez"),
            ("GET", "/readyz"),
            ("GET", "/info"),
            ("GET", "/v2"),
            ("GET", "/v2/health/ready"),
        ] {
            let response = client
                .request(method.parse().expect("method"), format!("{base}{path}"))
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 200, "{method} {path} through nginx");
        }
        for (method, path) in [
            ("POST", "/admin/reload"),
            ("GET", "/metrics"),
            ("GET", "/shadow"),
            ("GET", "/metricsx"),
        ] {
            let response = client
                .request(method.parse().expect("method"), format!("{base}{path}"))
                .send()
                .await
                .expect("request");
            assert_eq!(
                response.status(),
                404,
                "{method} {path} must not pass nginx"
            );
            let body: Value = response.json().await.expect("a JSON 404");
            assert_eq!(body["error_type"], "not_found");
        }

        // Monitoring: Prometheus finds and scrapes every replica through the engine's DNS.
        let query = format!(
            "http://127.0.0.1:{prometheus_port}/api/v1/query?query=sum(up%7Bjob%3D%22newscls%22%7D)"
        );
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let up = match client.get(&query).send().await {
                Ok(response) => response.json::<Value>().await.ok().and_then(|v| {
                    v["data"]["result"][0]["value"][1]
                        .as_str()
                        .map(str::to_string)
                }),
                Err(_) => None,
            };
            if up.as_deref() == Some("3") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never saw 3 replicas up (last: {up:?})"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        eprintln!("compose: Prometheus scrapes 3 replicas (up = 3)");

        // One replica killed under load: nginx sends what it did not answer to another one.
        // Eight clients at a time, 240 requests.
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
        let requests: Vec<_> = (0..240)
            .map(|i| {
                let gate = gate.clone();
                let request = client
                    .post(format!("{base}/predict"))
                    .json(&json!({ "inputs": format!("Shares of the carmaker fell {i}%.") }));
                tokio::spawn(async move {
                    let _turn = gate.acquire_owned().await.expect("semaphore");
                    request.send().await.map(|r| r.status().as_u16())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        engine.ok(&["kill", &replicas[0]]);
        let mut statuses = Vec::new();
        for request in requests {
            statuses.push(request.await.expect("request task"));
        }
        let failed: Vec<_> = statuses.iter().filter(|s| !matches!(s, Ok(200))).collect();
        eprintln!(
            "compose: one replica killed under load; {} of {} requests failed",
            failed.len(),
            statuses.len()
        );
        assert!(failed.is_empty(), "{failed:?}");
    });
}

/// Why the registry-mode container test cannot run here, if it cannot.
pub fn missing_with_registry() -> Option<String> {
    missing().or_else(crate::mlflow::missing)
}

/// Registry mode in the image: serving `models:/news-topic@champion` from a real MLflow server,
/// read-only, the one write is the downloaded version in the cache volume. (Host networking
/// reaches the MLflow server on 127.0.0.1; the service listens on 127.0.0.1 only.)
pub fn registry_mode_writes_only_to_the_cache_volume() {
    let engine = Engine::start();
    engine.build("runtime-cpu", IMAGE);
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let mlflow = crate::mlflow::Mlflow::start().await;
        let model = crate::registry::model_copy(false, false);
        let version = crate::registry::publish_with(&mlflow, &model, Some("champion"), &[]);
        let volume = format!("newscls-cache-{}", std::process::id());
        let name = format!("newscls-registry-{}", std::process::id());
        let port = free_port().to_string();
        struct Cleanup<'a>(&'a Engine, String, String);
        impl Drop for Cleanup<'_> {
            fn drop(&mut self) {
                let _ = self.0.docker(&["rm", "-f", &self.1]);
                let _ = self.0.docker(&["volume", "rm", "-f", &self.2]);
            }
        }
        let _cleanup = Cleanup(&engine, name.clone(), volume.clone());
        engine.ok(&["volume", "create", &volume]);
        engine.ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--network",
            "host",
            "-v",
            &format!("{volume}:/var/cache/newscls"),
            "-e",
            &format!("MLFLOW_TRACKING_URI={}", mlflow.url),
            "-e",
            &format!(
                "NEWSCLS__MODEL__URI=models:/{}@champion",
                crate::registry::NAME
            ),
            "-e",
            "NEWSCLS__SERVER__HOST=127.0.0.1",
            "-e",
            &format!("NEWSCLS__SERVER__PORT={port}"),
            IMAGE,
        ]);
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ready = client.get(format!("{base}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            let logs = engine.docker(&["logs", &name]);
            assert!(
                Instant::now() < deadline,
                "registry mode never became ready:\n{}",
                String::from_utf8_lossy(&logs.stderr)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let info: Value = client
            .get(format!("{base}/info"))
            .send()
            .await
            .expect("GET /info")
            .json()
            .await
            .expect("json");
        let source = info["model"]["source"].as_str().expect("source");
        assert!(
            source.contains("models:/") && source.contains(&format!("version {version}")),
            "{source}"
        );
        let answer: Value = client
            .post(format!("{base}/predict"))
            .json(&json!({ "inputs": "The striker scored twice in the cup final." }))
            .send()
            .await
            .expect("POST /predict")
            .json()
            .await
            .expect("json");
        assert_eq!(answer[0]["label"], "sport", "{answer}");
        // Nothing changed in the container's own file system; the version is in the volume.
        assert_eq!(
            engine.ok(&["diff", &name]),
            "",
            "writes outside the cache volume"
        );
        let cached = engine.ok(&[
            "run",
            "--rm",
            "-v",
            &format!("{volume}:/cache:ro"),
            "debian:bookworm-slim",
            "find",
            "/cache",
            "-name",
            "model_quantized.onnx",
        ]);
        assert!(
            !cached.is_empty(),
            "no downloaded version in the cache volume"
        );
        eprintln!("registry mode: version {version} served read-only; cached at {cached}");
    });
}

/// `scripts/podman.sh ARGS` (podman with the project's own storage), which must succeed; its
/// standard output.
fn podman(args: &[&str]) -> String {
    let output = Command::new(repo_path("scripts/podman.sh"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/podman.sh");
    succeeded("podman", args, output)
}

/// A pod started by `podman kube play`; taken down when dropped.
struct KubePod {
    manifest: std::path::PathBuf,
}

impl Drop for KubePod {
    fn drop(&mut self) {
        let _ = Command::new(repo_path("scripts/podman.sh"))
            .args(["kube", "down"])
            .arg(&self.manifest)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The manifests a cluster would get, as one file for `podman kube play`: the ConfigMap and the
/// Deployment of deploy/kubernetes, with the two changes a single engine without a cluster needs:
/// one replica, and the container port published on 127.0.0.1 (a cluster's Service does that).
fn kube_manifest(port: u16) -> String {
    let read = |name: &str| {
        std::fs::read_to_string(repo_path(&format!("deploy/kubernetes/{name}")))
            .unwrap_or_else(|e| panic!("deploy/kubernetes/{name}: {e}"))
    };
    let deployment = read("deployment.yaml");
    let replicas = "  replicas: 2\n";
    assert!(deployment.contains(replicas), "deployment.yaml: {replicas}");
    let container_port = "- {name: http, containerPort: 8080}";
    assert!(
        deployment.contains(container_port),
        "deployment.yaml: {container_port}"
    );
    let deployment = deployment.replace(replicas, "  replicas: 1\n").replace(
        container_port,
        &format!("- {{name: http, containerPort: 8080, hostPort: {port}, hostIP: 127.0.0.1}}"),
    );
    format!("{}\n---\n{deployment}", read("configmap.yaml"))
}

/// The Kubernetes Deployment and ConfigMap as far as an engine can run them without a cluster
/// (no kubelet, k3s, kind or k0s is reachable from this kind of machine): `podman kube play` with
/// the image the other tests built. The pod runs as uid 10001 with a read-only root, the
/// ConfigMap is its config (JSON logs, two HTTP workers), the emptyDir is its one writable path,
/// and `/predict` answers.
pub fn the_kubernetes_pod_spec_runs_under_podman_kube_play() {
    let engine = Engine::start();
    engine.build("runtime-cpu", IMAGE);
    let dir = crate::support::TempDir::new("kube-play");
    let archive = dir.path().join("image.tar");
    let archive = archive.to_str().expect("utf-8 path");
    engine.ok(&["save", "-o", archive, IMAGE]);
    podman(&["load", "-q", "-i", archive]);
    let port = free_port();
    let manifest = dir.path().join("newscls.yaml");
    std::fs::write(&manifest, kube_manifest(port)).expect("write the manifest");
    let started = Instant::now();
    let pod = KubePod { manifest };
    podman(&[
        "kube",
        "play",
        "--replace",
        pod.manifest.to_str().expect("utf-8 path"),
    ]);
    // podman names a Deployment's pods `newscls-pod-<n>` and their containers
    // `<pod>-<container>`.
    let names = podman(&["ps", "--format", "{{.Names}}"]);
    let container = names
        .lines()
        .find(|n| n.starts_with("newscls-pod") && n.ends_with("-newscls"))
        .unwrap_or_else(|| panic!("no container of the newscls pod among {names:?}"))
        .to_string();
    let container = container.as_str();
    let base = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ready = client.get(format!("{base}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the pod was not ready within 2 minutes: {}",
                podman(&["logs", container])
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        eprintln!(
            "kubernetes: pod ready {:.1} s after `podman kube play`",
            started.elapsed().as_secs_f64()
        );
        let response = client
            .post(format!("{base}/predict"))
            .json(&json!({"inputs": "The central bank raised interest rates again."}))
            .send()
            .await
            .expect("POST /predict");
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.expect("json");
        assert!(answer[0]["label"].is_string(), "{answer}");
    });
    // runAsUser and readOnlyRootFilesystem as written; the emptyDir is writable.
    assert_eq!(podman(&["exec", container, "id", "-u"]), "10001");
    let write = |path: &str| {
        Command::new(repo_path("scripts/podman.sh"))
            .args(["exec", container, "touch", path])
            .stdin(Stdio::null())
            .output()
            .expect("podman exec")
            .status
            .success()
    };
    assert!(!write("/app/written"), "the root filesystem is read-only");
    assert!(
        write("/var/cache/newscls/written"),
        "the emptyDir model cache is writable"
    );
    // The ConfigMap is the config: JSON log lines (on the container's stderr), the `ready` one
    // among them.
    let output = Command::new(repo_path("scripts/podman.sh"))
        .args(["logs", container])
        .stdin(Stdio::null())
        .output()
        .expect("podman logs");
    let logs = String::from_utf8_lossy(&output.stderr).into_owned();
    let ready = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "ready")
        .unwrap_or_else(|| {
            panic!("no JSON `ready` line (the ConfigMap's logging.format):\n{logs}")
        });
    eprintln!("kubernetes: {ready}");
}
