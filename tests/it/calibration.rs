//! Scores that mean what they say: a model directory's calibration temperature divides the
//! logits before softmax or sigmoid (raw scores stay logits), and `newscls eval` measures
//! calibration (ECE over 15 bins, Brier) and fits the temperature on held-out rows.

use serde_json::{json, Value};

use crate::support::{
    command, fast_model_dir_with_config, repo_path, startup_error, test_split, Server, TempDir,
};

/// A fast model directory whose config.json carries `calibration`.
fn calibrated_model(name: &str, calibration: Value) -> TempDir {
    fast_model_dir_with_config(name, |config| config["calibration"] = calibration)
}

/// `/predict`'s scores of `text` by label, with extra request fields.
async fn scores(server: &Server, text: &str, extra: Value) -> Vec<(String, f64)> {
    let mut body = json!({ "inputs": text });
    for (key, value) in extra.as_object().expect("an object") {
        body[key] = value.clone();
    }
    let response = server.predict(body).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    // TEI's form answers a flat list; Hugging Face's (with `parameters`) a list per text.
    let list = match &body[0] {
        Value::Array(first) => first.clone(),
        _ => body.as_array().expect("a list").clone(),
    };
    let mut pairs: Vec<(String, f64)> = list
        .iter()
        .map(|s| {
            (
                s["label"].as_str().expect("label").to_string(),
                s["score"].as_f64().expect("score"),
            )
        })
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs
}

#[tokio::test]
async fn a_models_temperature_divides_its_logits_before_softmax_and_sigmoid() {
    let dir = calibrated_model("calibrated", json!({"temperature": 2.0}));
    let server = Server::start(&["--model-dir", dir.path().to_str().expect("utf-8")], &[]);
    let text = "Shares rallied after the central bank held rates.";
    let logits = scores(&server, text, json!({"raw_scores": true})).await;
    let softmax = scores(&server, text, json!({})).await;
    let sigmoid = scores(
        &server,
        text,
        json!({"parameters": {"function_to_apply": "sigmoid"}}),
    )
    .await;
    let max = logits.iter().map(|l| l.1 / 2.0).fold(f64::MIN, f64::max);
    let sum: f64 = logits.iter().map(|l| (l.1 / 2.0 - max).exp()).sum();
    for ((label, logit), ((_, p), (_, s))) in logits.iter().zip(softmax.iter().zip(&sigmoid)) {
        let want = (logit / 2.0 - max).exp() / sum;
        assert!((p - want).abs() < 1e-5, "{label}: softmax {p} vs {want}");
        let want = 1.0 / (1.0 + (-logit / 2.0).exp());
        assert!((s - want).abs() < 1e-5, "{label}: sigmoid {s} vs {want}");
    }
    // Logits that differ: softmax at temperature 1 and 2 differ too, so the check above tells
    // them apart.
    let spread = logits.iter().map(|l| l.1).fold(f64::MIN, f64::max)
        - logits.iter().map(|l| l.1).fold(f64::MAX, f64::min);
    assert!(spread > 0.5, "logits {logits:?}");
}

#[test]
fn a_temperature_that_is_not_a_positive_number_is_refused_at_load() {
    for temperature in [json!(0.0), json!(-1.5)] {
        let dir = calibrated_model("bad-temperature", json!({ "temperature": temperature }));
        let line = startup_error(&["--model-dir", dir.path().to_str().expect("utf-8")], &[]);
        assert!(
            line.contains("calibration.temperature") && line.contains("positive"),
            "{line}"
        );
    }
}

#[test]
fn eval_measures_calibration_and_fits_a_temperature() {
    test_split();
    let split = repo_path("training/.cache/data/test.jsonl");
    let output = command(
        &[
            "eval",
            split.to_str().expect("utf-8"),
            "--json",
            "--fit-temperature",
        ],
        &[],
    )
    .output()
    .expect("run newscls eval");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("json report");
    let calibration = &report["calibration"];
    let (ece, brier) = (
        calibration["ece"].as_f64().expect("ece"),
        calibration["brier"].as_f64().expect("brier"),
    );
    // The bins are the reliability diagram: they hold every row, and the ECE is their
    // row-weighted gap between accuracy and confidence.
    let bins = calibration["bins"].as_array().expect("bins");
    let rows: u64 = bins.iter().map(|b| b["rows"].as_u64().expect("rows")).sum();
    assert_eq!(rows, 215);
    let from_bins: f64 = bins
        .iter()
        .map(|b| {
            let share = b["rows"].as_f64().expect("rows") / 215.0;
            share
                * (b["accuracy"].as_f64().expect("acc") - b["confidence"].as_f64().expect("conf"))
                    .abs()
        })
        .sum();
    assert!((ece - from_bins).abs() < 1e-9, "{ece} vs {from_bins}");
    assert!(
        (0.0..0.2).contains(&ece) && (0.0..1.0).contains(&brier),
        "{calibration}"
    );
    assert_eq!(
        report["temperature"], 1.0,
        "the bundled model ships no temperature"
    );
    // Fitted on the test split itself (an oracle, for this check only): the shipped scores are
    // already close to their best likelihood, which is why no temperature ships (README).
    let fit = &report["temperature_fit"];
    let temperature = fit["temperature"].as_f64().expect("temperature");
    assert!((0.8..1.25).contains(&temperature), "{fit}");
    assert!(
        fit["nll_after"].as_f64() <= fit["nll_before"].as_f64(),
        "{fit}"
    );
    assert_eq!(fit["rows"], 215);
}
