//! The shadow challenger with a real MLflow registry: the champion at `@champion`, a perturbed
//! retrain at `@challenger`. Live texts change nothing for callers, the live confusion matrix
//! equals an offline comparison of the two versions, the challenger follows its alias, and
//! promoting the challenger's version downloads nothing again.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::mlflow::Mlflow;
use crate::registry::{model_copy, publish_with};
use crate::support::{
    repo_path, run_to_exit, shadow_settled, test_split, wait_for_info, write_perturbed_model_dir,
    Server, TempDir,
};

const NAME: &str = "news-topic";
const TEXTS: usize = 500;

pub fn challenger_on_live_traffic_with_a_real_registry() {
    tokio::runtime::Runtime::new()
        .expect("a tokio runtime")
        .block_on(run());
}

async fn move_alias(mlflow: &Mlflow, alias: &str, version: &str) {
    mlflow
        .post(
            "/api/2.0/mlflow/registered-models/alias",
            json!({"name": NAME, "alias": alias, "version": version}),
        )
        .await;
}

/// 500 real articles: the test split, then the validation and training splits.
fn articles() -> Vec<String> {
    let mut texts: Vec<String> = test_split()
        .iter()
        .map(|row| row["text"].as_str().expect("text").to_string())
        .collect();
    for split in ["val", "train"] {
        let path = repo_path(&format!("training/.cache/data/{split}.jsonl"));
        let rows = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{} (training/test_split.sh writes it): {e}", path.display())
        });
        texts.extend(rows.lines().map(|line| {
            let row: Value = serde_json::from_str(line).expect("jsonl");
            row["text"].as_str().expect("text").to_string()
        }));
    }
    assert!(texts.len() >= TEXTS, "{} articles", texts.len());
    texts.truncate(TEXTS);
    texts
}

/// Every text through `/predict`, one per request, `concurrency` at a time; the bodies, in
/// order.
async fn answers(server: &Server, texts: &[String], concurrency: usize) -> Vec<String> {
    let mut bodies = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(concurrency) {
        let responses = server
            .predict_concurrently(chunk.iter().map(|t| json!({ "inputs": t })).collect())
            .await;
        for response in responses {
            assert_eq!(response.status(), 200);
            bodies.push(response.text().await.expect("body"));
        }
    }
    bodies
}

/// `newscls classify` of `texts` with the model in `dir`: each text's label.
fn offline_labels(dir: &TempDir, texts: &[String], work: &TempDir, name: &str) -> Vec<String> {
    let input = work.path().join(format!("{name}-in.jsonl"));
    let output = work.path().join(format!("{name}-out.jsonl"));
    let lines: Vec<String> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": i, "text": t}).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").expect("write input");
    let out = run_to_exit(
        &[
            "classify",
            input.to_str().expect("utf-8"),
            "-o",
            output.to_str().expect("utf-8"),
            "--model-dir",
            dir.path().to_str().expect("utf-8"),
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&output)
        .expect("read output")
        .lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).expect("jsonl");
            row["label"].as_str().expect("label").to_string()
        })
        .collect()
}

/// `newscls_shadow_label_pairs_total` as (champion, challenger) -> texts.
async fn live_pairs(server: &Server) -> BTreeMap<(String, String), u64> {
    let text = server.get("/metrics").await.text().await.expect("metrics");
    text.lines()
        .filter_map(|line| line.strip_prefix("newscls_shadow_label_pairs_total{"))
        .map(|rest| {
            let (labels, value) = rest.split_once("} ").expect("a sample");
            let label = |key: &str| {
                let start = labels.find(&format!("{key}=\"")).expect(key) + key.len() + 2;
                labels[start..]
                    .split('"')
                    .next()
                    .expect("value")
                    .to_string()
            };
            (
                (label("champion"), label("challenger")),
                value.trim().parse::<f64>().expect("count") as u64,
            )
        })
        .collect()
}

/// Waits until `/info` says `path` is `version`.
async fn wait_for_version(server: &Server, path: &[&str], version: &str) {
    let what = format!("{path:?} is {version}");
    wait_for_info(server, &what, |info| {
        path.iter().fold(info, |value, key| &value[*key]) == version
    })
    .await;
}

async fn run() {
    let mlflow = Mlflow::start().await;
    let champion_dir = model_copy(false, false);
    // A "retrain" that leans towards world: some texts change label, most do not.
    let challenger_dir = TempDir::new("shadow-v2");
    write_perturbed_model_dir(challenger_dir.path(), 5, 1.0, None);
    let publish = |dir: &TempDir, alias: &str| publish_with(&mlflow, dir, Some(alias), &[]);
    assert_eq!(publish(&champion_dir, "champion"), "1");
    assert_eq!(publish(&challenger_dir, "challenger"), "2");

    let cache = TempDir::new("shadow-cache");
    let env = [
        ("MLFLOW_TRACKING_URI", mlflow.url.as_str()),
        ("NEWSCLS__MODEL__POLL_INTERVAL", "1"),
        (
            "NEWSCLS__MODEL__CACHE_DIR",
            cache.path().to_str().expect("utf-8"),
        ),
        ("NEWSCLS__SHADOW__MAX_QUEUE", "1000"),
        // Spinning ONNX Runtime threads would leave the lowest-priority challenger no idle CPU
        // on this machine's shared cores (README: "Trying a new version on live traffic").
        ("NEWSCLS__MODEL__INTRA_OP_SPINNING", "false"),
        ("NEWSCLS__SHADOW__KEEP_DISAGREEMENTS", "5"),
    ];
    // One text per batch on both servers: padding to a batch-mate's length changes the float
    // sums in the last bits, and the two servers' answers are compared byte for byte.
    let server = Server::start(
        &[
            "--max-batch-size",
            "1",
            "--model-uri",
            &format!("models:/{NAME}@champion"),
            "--shadow-uri",
            &format!("models:/{NAME}@challenger"),
        ],
        &env,
    );
    wait_for_version(&server, &["shadow", "challenger", "version"], "2").await;
    assert_eq!(server.get_json("/info").await["model"]["version"], "1");
    // The same version without a shadow, for the champion-only answers.
    let reference = Server::start(
        &[
            "--max-batch-size",
            "1",
            "--model-dir",
            champion_dir.path().to_str().expect("utf-8"),
        ],
        &[],
    );

    let texts = articles();
    let alone = answers(&reference, &texts, 4).await;
    drop(reference);
    // One request at a time, 25 texts, then until the challenger has caught up: it runs at the
    // lowest priority and keeps up only with idle CPU, which a machine running other tests in
    // parallel may not leave it (under saturation it drops texts: see the overload test).
    let mut shadowed = Vec::with_capacity(texts.len());
    for (done, chunk) in texts.chunks(25).enumerate() {
        shadowed.extend(answers(&server, chunk, 1).await);
        shadow_settled(&server, Some(((done + 1) * 25).min(TEXTS) as f64)).await;
    }
    let differing = shadowed.iter().zip(&alone).position(|(a, b)| a != b);
    assert_eq!(
        differing, None,
        "every answer is the champion's, byte for byte"
    );

    let (agree, disagree, dropped, failed) = shadow_settled(&server, Some(TEXTS as f64)).await;
    eprintln!("shadow on {TEXTS} articles: {agree} agree, {disagree} disagree, {dropped} dropped, {failed} failed");
    assert_eq!(
        (agree + disagree, dropped, failed),
        (TEXTS as f64, 0.0, 0.0)
    );
    assert!(agree > 0.0 && disagree > 0.0, "{agree} / {disagree}");

    // The live confusion matrix is the offline comparison of the two versions.
    let work = TempDir::new("shadow-offline");
    let champion_labels = offline_labels(&champion_dir, &texts, &work, "champion");
    let challenger_labels = offline_labels(&challenger_dir, &texts, &work, "challenger");
    let mut offline: BTreeMap<(String, String), u64> = BTreeMap::new();
    for pair in champion_labels.into_iter().zip(challenger_labels) {
        *offline.entry(pair).or_default() += 1;
    }
    let live = live_pairs(&server).await;
    assert_eq!(live.values().sum::<u64>(), TEXTS as u64);
    assert_eq!(
        live, offline,
        "live label pairs vs newscls classify with each version"
    );

    let report = server.get_json("/shadow").await;
    assert_eq!(report["compared"], json!(TEXTS));
    assert_eq!(report["agreed"], json!(agree as u64));
    assert_eq!(report["champion_version"], "1");
    let kept = report["disagreements"].as_array().expect("disagreements");
    assert_eq!(kept.len(), 5, "shadow.keep_disagreements: 5");
    for d in kept {
        let text = d["text"].as_str().expect("text");
        assert!(text.chars().count() <= 200, "{text}");
        assert!(texts.iter().any(|t| t.starts_with(text)), "{text}");
        assert_ne!(d["champion"]["label"], d["challenger"]["label"]);
    }

    // The challenger's alias moves: the challenger swaps, the champion is untouched.
    let v3_dir = TempDir::new("shadow-v3");
    write_perturbed_model_dir(v3_dir.path(), 0, 1.0, None);
    assert_eq!(publish_with(&mlflow, &v3_dir, None, &[]), "3");
    move_alias(&mlflow, "challenger", "3").await;
    wait_for_version(&server, &["shadow", "challenger", "version"], "3").await;
    assert_eq!(server.get_json("/info").await["model"]["version"], "1");
    assert_eq!(
        server
            .metric("newscls_model_reloads_total{outcome=\"swapped\"}")
            .await,
        0.0
    );
    assert_eq!(
        server
            .metric("newscls_shadow_reloads_total{outcome=\"swapped\"}")
            .await,
        2.0,
        "the first load and the alias move"
    );
    assert_eq!(
        server.get_json("/shadow").await["compared"],
        0,
        "a new pair is compared from scratch"
    );

    // The champion's alias moves to the challenger's version: no second download.
    let downloads = |version: &str| {
        mlflow.requests(&["model-versions/get-artifact", &format!("version={version}")])
    };
    let v3_downloads = downloads("3");
    assert!(v3_downloads > 0, "the challenger downloaded version 3");
    move_alias(&mlflow, "champion", "3").await;
    wait_for_version(&server, &["model", "version"], "3").await;
    assert_eq!(
        downloads("3"),
        v3_downloads,
        "promoting the challenger's version reuses its files"
    );
    let response = server.predict(json!({"inputs": texts[0]})).await;
    assert_eq!(response.headers()["x-model-version"], "3");
    // Now both sides are version 3: they agree on everything (these 20 and the one above).
    answers(&server, &texts[1..21], 1).await;
    shadow_settled(&server, Some(TEXTS as f64 + 21.0)).await;
    let report = server.get_json("/shadow").await;
    assert_eq!(report["compared"], 21);
    assert_eq!(report["agreement"], 1.0);
}
