//! A hostile model registry: a small HTTP server that speaks MLflow's REST routes and answers,
//! case by case, what an attacker on the path or a broken registry could send. For each case the
//! service must keep every file inside its cache, stay up and answer `/predict` from the serving
//! model, log the case, and count the right reload outcome. Everything happens inside the
//! test's own temp dir; the cases that would name `/` or the cache itself are unit tests of the
//! validation (src/source/cache.rs), never run end to end.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{repo_path, Server, TempDir, MODEL_DIR};

const NAME: &str = "news";
const TOKEN: &str = "hostile-registry-admin-token";
/// In listing order: config.json, the file the hostile cases tamper with, comes first, so a case
/// is decided before the 37 MB model is downloaded, however loaded the machine.
const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model_quantized.onnx"];

/// What the registry answers for the version the alias names.
#[derive(Clone)]
enum Case {
    /// The real model's files under this version.
    Good(&'static str),
    /// The alias resolves to this version string.
    Version(&'static str),
    /// The listing of the version's folder holds these raw entries.
    Listing(Value),
    /// Every file is listed with this size.
    ListedSize(u64),
    /// config.json's body is longer than listed.
    LongerBody,
    /// config.json's body never ends.
    EndlessBody,
    /// config.json drips one byte per second.
    Drip,
    /// Every route answers 302 to another host.
    Redirect,
    /// The listing answers 500 once, then the real model under this version.
    FlakyThenGood(&'static str),
    /// Every route answers 401.
    Unauthorized,
    /// Every route answers 503.
    Down,
}

struct Registry {
    case: Mutex<Case>,
    /// Requests per route since the case was set.
    hits: Mutex<HashMap<String, usize>>,
    files: HashMap<&'static str, Vec<u8>>,
}

impl Registry {
    fn version(&self) -> String {
        match &*self.case.lock().expect("lock") {
            Case::Good(v) | Case::FlakyThenGood(v) => v.to_string(),
            Case::Version(v) => v.to_string(),
            _ => "9".into(),
        }
    }
}

/// Starts the registry on a free loopback port; serves until the test process ends.
fn start(case: Case) -> (String, Arc<Registry>) {
    let files = FILES
        .iter()
        .map(|f| {
            (
                *f,
                std::fs::read(repo_path(MODEL_DIR).join(f)).expect("model file"),
            )
        })
        .collect();
    let registry = Arc::new(Registry {
        case: Mutex::new(case),
        hits: Mutex::new(HashMap::new()),
        files,
    });
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let shared = registry.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let registry = shared.clone();
            std::thread::spawn(move || {
                let _ = serve(stream, &registry);
            });
        }
    });
    (url, registry)
}

fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    headers: &str,
    body: &[u8],
) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: {}\r\n{headers}\r\n",
        body.len()
    )?;
    stream.write_all(body)
}

fn json_response(stream: &mut TcpStream, body: Value) -> std::io::Result<()> {
    respond(
        stream,
        "200 OK",
        "content-type: application/json\r\n",
        body.to_string().as_bytes(),
    )
}

fn serve(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        if header.trim().is_empty() {
            break;
        }
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (route, query) = target.split_once('?').unwrap_or((&target, ""));
    let query: HashMap<String, String> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();
    let hits = {
        let mut hits = registry.hits.lock().expect("lock");
        let count = hits.entry(route.to_string()).or_default();
        *count += 1;
        *count
    };
    let case = registry.case.lock().expect("lock").clone();
    match case {
        Case::Redirect => {
            return respond(
                &mut stream,
                "302 Found",
                "location: http://198.51.100.7/steal\r\n",
                b"",
            )
        }
        Case::Unauthorized => return respond(&mut stream, "401 Unauthorized", "", b"{}"),
        Case::Down => return respond(&mut stream, "503 Service Unavailable", "", b"down"),
        _ => {}
    }
    let version = registry.version();
    match route {
        "/api/2.0/mlflow/registered-models/alias" => json_response(
            &mut stream,
            json!({"model_version": {
                "name": NAME, "version": version, "run_id": "run",
                "source": "mlflow-artifacts:/1/run/artifacts/model"}}),
        ),
        "/api/2.0/mlflow/artifacts/list" => {
            if matches!(case, Case::FlakyThenGood(_)) && hits == 1 {
                return respond(&mut stream, "500 Internal Server Error", "", b"busy");
            }
            let size = |file: &str| match case {
                Case::ListedSize(size) => size,
                _ => registry.files[file].len() as u64,
            };
            let files = match case {
                Case::Listing(entries) => entries,
                _ => json!(FILES
                    .iter()
                    .map(|f| json!({"path": format!("model/{f}"), "is_dir": false, "file_size": size(f)}))
                    .collect::<Vec<_>>()),
            };
            json_response(&mut stream, json!({"root_uri": "x", "files": files}))
        }
        "/model-versions/get-artifact" => {
            let file = query.get("path").cloned().unwrap_or_default();
            let Some(body) = registry.files.get(file.as_str()) else {
                return respond(&mut stream, "404 Not Found", "", b"{}");
            };
            match (&case, file.as_str()) {
                (Case::LongerBody, "config.json") => {
                    let mut longer = body.clone();
                    longer.extend_from_slice(&[b' '; 4096]);
                    // Claims the listed length, sends more.
                    write!(stream, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")?;
                    stream.write_all(&longer)
                }
                (Case::EndlessBody, "config.json") => {
                    write!(stream, "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n")?;
                    let chunk = [b'x'; 65536];
                    loop {
                        stream.write_all(&chunk)?;
                    }
                }
                (Case::Drip, "config.json") => {
                    write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    )?;
                    for byte in body {
                        stream.write_all(&[*byte])?;
                        stream.flush()?;
                        std::thread::sleep(Duration::from_secs(1));
                    }
                    Ok(())
                }
                _ => respond(&mut stream, "200 OK", "", body),
            }
        }
        _ => respond(&mut stream, "404 Not Found", "", b"{}"),
    }
}

/// Everything under `root`, as paths relative to it.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            out.push(
                path.strip_prefix(root)
                    .expect("inside")
                    .display()
                    .to_string(),
            );
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_hostile_registry_cannot_escape_the_cache_stop_the_service_or_hold_a_reload_forever() {
    let dir = TempDir::new("hostile-registry");
    // Deep enough that `../../escape` from the version folder lands inside the temp dir.
    let cache = dir.path().join("a").join("cache");
    let (url, registry) = start(Case::Good("1"));
    let cache_arg = cache.display().to_string();
    let env = [
        ("MLFLOW_TRACKING_URI", url.as_str()),
        ("NEWSCLS__MODEL__URI", "models:/news@champion"),
        ("NEWSCLS__MODEL__CACHE_DIR", cache_arg.as_str()),
        ("NEWSCLS__MODEL__POLL_INTERVAL", "0"),
        ("NEWSCLS__MODEL__DOWNLOAD_TIMEOUT", "8"),
        ("NEWSCLS__MODEL__MAX_DOWNLOAD_BYTES", "100000000"),
        ("NEWSCLS__SERVER__ADMIN_TOKEN", TOKEN),
    ];
    let args = ["--log-level", "info", "--device", "cpu"];
    let server = Server::start(&args, &env);
    let listed = |name: &str| json!([{"path": name, "is_dir": false, "file_size": 10}]);
    // (case, the reload outcome, the HTTP status of /admin/reload, a text the log must show).
    // The drip lasts the whole download_timeout (8 s); the rest are decided at once.
    let cases: Vec<(&str, Case, &str, u16, &str)> = vec![
        (
            "version ../../escape",
            Case::Version("../../escape"),
            "refused",
            409,
            "../../escape",
        ),
        (
            "version with a NUL",
            Case::Version("3\u{0}"),
            "refused",
            409,
            "a version must be 1-20 digits",
        ),
        (
            "version with a backslash",
            Case::Version("..\\..\\x"),
            "refused",
            409,
            "a version must be 1-20 digits",
        ),
        (
            "artifact path ../x",
            Case::Listing(listed("model/../x")),
            "refused",
            409,
            "model/../x",
        ),
        (
            "artifact path /abs",
            Case::Listing(listed("/abs")),
            "refused",
            409,
            "/abs",
        ),
        (
            "a listing that contains itself",
            Case::Listing(json!([{"path": "model", "is_dir": true}])),
            "refused",
            409,
            "not a plain name inside it",
        ),
        (
            "a size of 2^63",
            Case::ListedSize(1 << 63),
            "refused",
            409,
            "max_download_bytes",
        ),
        (
            "a body longer than listed",
            Case::LongerBody,
            "refused",
            409,
            "longer than",
        ),
        (
            "an endless body",
            Case::EndlessBody,
            "refused",
            409,
            "longer than",
        ),
        (
            "a body dripping a byte a second",
            Case::Drip,
            "unavailable",
            502,
            "download_timeout",
        ),
        (
            "a 302 to another host",
            Case::Redirect,
            "refused",
            409,
            "redirects are not followed",
        ),
        (
            "401",
            Case::Unauthorized,
            "unavailable",
            502,
            "refused the credentials",
        ),
        (
            "500 then 200",
            Case::FlakyThenGood("7"),
            "swapped",
            200,
            "transient failure, retrying",
        ),
    ];
    for (name, case, outcome, status, logged) in cases {
        *registry.case.lock().expect("lock") = case;
        registry.hits.lock().expect("lock").clear();
        let counted = format!("newscls_model_reloads_total{{outcome=\"{outcome}\"}}");
        let before = server.metric(&counted).await;
        let started = Instant::now();
        let response = server
            .client
            .post(server.url("/admin/reload"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("reload request");
        let code = response.status().as_u16();
        let answer: Value = response.json().await.expect("JSON outcome");
        let took = started.elapsed();
        assert_eq!(
            (code, answer["outcome"].as_str()),
            (status, Some(outcome)),
            "{name}: {answer}"
        );
        assert!(
            took < Duration::from_secs(20),
            "{name}: the reload took {took:?}"
        );
        assert_eq!(
            server.metric(&counted).await,
            before + 1.0,
            "{name}: outcome counted"
        );
        assert!(
            server.log_shows(logged, Duration::from_secs(10)).await,
            "{name}: no log line with {logged:?}"
        );
        let predicted = server
            .predict(json!({"inputs": "The striker scored twice."}))
            .await;
        assert_eq!(predicted.status(), 200, "{name}: /predict still answers");
        let expected_version = if outcome == "swapped" { "7" } else { "1" };
        assert_eq!(
            predicted.headers()["x-model-version"],
            expected_version,
            "{name}: the serving version"
        );
        assert_eq!(
            predicted.headers()["x-model-name"],
            NAME,
            "{name}: the name stays"
        );
        let everything = tree(dir.path());
        assert!(
            everything
                .iter()
                .all(|p| p == "a" || p.starts_with("a/cache")),
            "{name}: a file outside the cache: {everything:?}"
        );
        assert!(
            !everything.iter().any(|p| p.contains(".partial-")),
            "{name}: a partial download left behind: {everything:?}"
        );
        println!("hostile registry: {name}: {outcome} ({code}) in {took:.1?}");
    }
    // Only the versions that served are cached.
    let versions: Vec<String> = tree(&cache.join(NAME))
        .into_iter()
        .filter(|p| !p.contains('/') && p != "aliases")
        .collect();
    assert_eq!(versions, ["1", "7"]);
    drop(server);

    // A registry that answers 401 or 5xx at startup is an outage, not a verdict on the
    // version: the service starts from the version cached last, with a warning.
    for (name, case) in [("401", Case::Unauthorized), ("503", Case::Down)] {
        *registry.case.lock().expect("lock") = case;
        let server = Server::start(&args, &env);
        assert_eq!(
            server.get_json("/info").await["model"]["version"],
            "7",
            "startup with a registry answering {name}"
        );
        assert!(
            server
                .log_shows("starting from the cached version", Duration::from_secs(10))
                .await,
            "{name}: {}",
            server.log()
        );
    }
}
