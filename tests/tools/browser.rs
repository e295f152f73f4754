//! The demo page in a real headless Chromium, driven over the W3C WebDriver protocol.
//!
//! `make test` installs Debian's chromium and chromium-driver (scripts/setup-browser.sh).
//! A screenshot is written to `target/test-artifacts/demo-page.png`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::support::{write_perturbed_model_dir, Server, TempDir};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    process: Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: TempDir,
}

impl Driver {
    async fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let process = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = TempDir::new("chromium");
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
        ];
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("session")
            .json()
            .await
            .expect("json");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        Driver {
            process,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let value: Value = request
            .send()
            .await
            .expect("webdriver call")
            .json()
            .await
            .expect("json");
        value["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Finds all elements matching a CSS selector.
    async fn find_all(&self, css: &str) -> Vec<String> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found.as_array().map_or(vec![], |a| {
            a.iter()
                .filter_map(|e| e[ELEMENT_KEY].as_str().map(String::from))
                .collect()
        })
    }

    async fn wait_for(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(id) = self.find_all(css).await.into_iter().next() {
                return id;
            }
            assert!(Instant::now() < deadline, "{css} never appeared");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        let id = self.wait_for(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn text(&self, id: &str) -> String {
        self.call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn attribute(&self, id: &str, name: &str) -> String {
        let value = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{id}/attribute/{name}"),
                None,
            )
            .await;
        value.as_str().unwrap_or_default().to_string()
    }

    async fn screenshot(&self, path: &Path) {
        let data = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().expect("base64"))
            .expect("png");
        std::fs::create_dir_all(path.parent().expect("parent")).expect("artifact dir");
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Driver {
    /// Ends the session (which closes Chromium) even when the test panicked, then stops the
    /// driver. Plain blocking HTTP: `Drop` cannot await.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let host = self.base.trim_start_matches("http://");
        if let Ok(mut stream) = std::net::TcpStream::connect(host) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            let _ = stream.write_all(request.as_bytes());
            let _ = stream.read_to_end(&mut Vec::new());
        }
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Why the browser test cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    [CHROMIUM, CHROMEDRIVER]
        .iter()
        .find(|p| !Path::new(p).exists())
        .map(|p| format!("{p} not installed (scripts/setup-browser.sh installs it as root)"))
}

pub async fn demo_page_classifies_an_example_and_shows_errors_in_a_real_browser() {
    let server = Server::start(&[], &[]);
    let driver = Driver::start().await;
    driver.goto(&server.url("/")).await;

    // The model line comes from /info.
    let model = driver.wait_for("#model").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !driver.text(&model).await.contains("news-topic-e5-small") {
        assert!(Instant::now() < deadline, "model info never shown");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Pick the English sport example and classify it.
    driver.click("#example option:nth-child(3)").await;
    driver.click("#classify").await;
    let result = driver.wait_for("#results article").await;
    assert_eq!(driver.attribute(&result, "data-top-label").await, "sport");
    let labels = server.get_json("/info").await["model"]["labels"]
        .as_array()
        .expect("labels")
        .len();
    assert_eq!(
        driver.find_all("#results .bar").await.len(),
        labels,
        "one bar per label"
    );
    assert_eq!(
        driver.find_all("#results .bars").await.len(),
        1,
        "one set of bars without a challenger"
    );
    let top = driver.wait_for("#results .label.top").await;
    assert_eq!(
        driver.text(&top).await,
        "sport",
        "the top label is highlighted"
    );
    let latency = driver.wait_for("#latency").await;
    assert!(
        driver.text(&latency).await.contains("ms"),
        "latency is shown"
    );
    driver
        .screenshot(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts/demo-page.png"),
        )
        .await;

    // Several texts, one per line: one chart each.
    driver.click("#example option:nth-child(8)").await;
    driver.click("#classify").await;
    driver.wait_for("#results article:nth-of-type(3)").await;
    assert_eq!(driver.find_all("#results article").await.len(), 3);

    // Empty input: a readable error, not a blank page.
    driver.call(reqwest::Method::POST, "/execute/sync", Some(json!({
        "script": "document.getElementById('text').value=''; document.getElementById('per-line').checked=false;",
        "args": []
    }))).await;
    driver.click("#classify").await;
    let error = driver.wait_for("#status .error").await;
    let message = driver.text(&error).await;
    assert!(
        message.contains("422") && message.contains("empty"),
        "error shown: {message:?}"
    );
    assert!(driver.find_all("#results article").await.is_empty());
    driver
        .screenshot(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/test-artifacts/demo-page-error.png"),
        )
        .await;
    drop(server);

    // With a shadow challenger: both answers side by side, and whether they agree.
    let challenger = TempDir::new("browser-challenger");
    write_perturbed_model_dir(challenger.path(), 4, -8.0, Some("challenger-1"));
    let server = Server::start(
        &["--shadow-uri", challenger.path().to_str().expect("utf-8")],
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.get_json("/info").await["shadow"]["challenger"].is_null() {
        assert!(Instant::now() < deadline, "the challenger never loaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    driver.goto(&server.url("/")).await;
    let model = driver.wait_for("#model").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !driver.text(&model).await.contains("challenger-1") {
        assert!(Instant::now() < deadline, "the challenger is never named");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    driver.click("#example option:nth-child(3)").await;
    driver.click("#classify").await;
    let result = driver.wait_for("#results article[data-agreement]").await;
    assert_eq!(driver.find_all("#results .bars").await.len(), 2);
    assert_eq!(driver.find_all("#results .bar").await.len(), 2 * labels);
    // The marks say what the two models answer through the API.
    let text = EXAMPLE_SPORT;
    let theirs = server
        .predict_from("challenger", json!({ "inputs": text }))
        .await
        .json::<Value>()
        .await
        .expect("json");
    let challenger_top = theirs[0]["label"].as_str().expect("label");
    assert_eq!(
        driver.attribute(&result, "data-challenger-top-label").await,
        challenger_top
    );
    // Sport pushed down by 3 logits: the challenger no longer says sport.
    assert_ne!(challenger_top, "sport");
    assert_eq!(
        driver.attribute(&result, "data-agreement").await,
        "disagree"
    );
    let mark = driver.wait_for("#results .agreement.disagree").await;
    assert!(driver.text(&mark).await.contains(challenger_top));
    driver
        .screenshot(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/test-artifacts/demo-page-shadow.png"),
        )
        .await;
}

/// The page's English sport example (the third option).
const EXAMPLE_SPORT: &str = "The striker scored twice as Manchester United beat Chelsea 3-1 at Old Trafford on Saturday, lifting the club to second place in the Premier League table.";
