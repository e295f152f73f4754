//! The OpenAPI document is the contract on every route: schemathesis (PyPI, pinned; see
//! scripts/setup-schemathesis.sh) generates requests from `/openapi.json` — valid ones that
//! must be accepted, invalid ones that must be refused — and checks every answer against the
//! document, on all operations, the admin route with its token and the KServe routes with the
//! served model's name (tests/contract/schemathesis.toml). A fixed seed and no example database
//! keep a failure reproducible; scripts/schemathesis.sh runs longer with a random seed.

use std::process::Command;

use crate::support::{challenger_loaded, repo_path, Server, MODEL_DIR};

const TOKEN: &str = "contract-test-token";

fn schemathesis() -> std::path::PathBuf {
    repo_path(".cache/schemathesis/bin/schemathesis")
}

/// Why this test cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    (!schemathesis().is_file()).then(|| {
        "schemathesis is not installed in .cache/schemathesis (scripts/setup-schemathesis.sh installs it)"
            .to_string()
    })
}

pub fn every_operation_keeps_the_openapi_contract() {
    // With a shadow challenger (the bundled model again), so `GET /shadow` and
    // `x-model-version: challenger` answer, and their answers are checked too. Nothing is
    // mirrored and the challenger has the champion's threads: a request asking it directly
    // with schemathesis's shortest `x-request-timeout` (0.1 s) must not queue behind mirrored
    // texts or a single-threaded run of a long one.
    let bundled = repo_path(MODEL_DIR);
    let server = Server::start(
        &["--shadow-uri", bundled.to_str().expect("utf-8")],
        &[
            ("NEWSCLS__SERVER__ADMIN_TOKEN", TOKEN),
            ("NEWSCLS__SHADOW__SAMPLE", "0"),
            ("NEWSCLS__SHADOW__INTRA_OP_THREADS", "0"),
        ],
    );
    tokio::runtime::Runtime::new()
        .expect("a tokio runtime")
        .block_on(challenger_loaded(&server));
    let output = Command::new(schemathesis())
        .current_dir(repo_path("."))
        .args(["--config-file", "tests/contract/schemathesis.toml", "run"])
        .arg(server.url("/openapi.json"))
        .args([
            "--checks",
            "all",
            "--workers",
            "1",
            "--max-examples",
            "100",
            "--seed",
            "1",
        ])
        // No example database: every run, here or in CI, generates the same cases.
        .args(["--generation-database", "none", "--no-color"])
        .env("NEWSCLS_ADMIN_TOKEN", TOKEN)
        .env("NEWSCLS_MODEL_NAME", "news-topic-e5-small")
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .rsplit_once("SUMMARY")
        .map_or(stdout.as_ref(), |(_, summary)| summary);
    println!("schemathesis:{summary}");
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("Tested: 16"),
        "every operation is tested:\n{stdout}"
    );
}
