//! Startup faults end the process with one clear line and a non-zero exit.

use std::path::Path;

use crate::support::{repo_path, startup_error, TempDir, MODEL_DIR};

fn assert_fails_with(args: &[&str], env: &[(&str, &str)], expected: &[&str]) {
    let line = startup_error(args, env);
    for part in expected {
        assert!(line.contains(part), "{line:?} should mention {part:?}");
    }
}

/// A copy of the bundled model directory with one file replaced (or removed).
fn broken_model(name: &str, file: &str, contents: Option<&[u8]>) -> TempDir {
    let copy = TempDir::new(&format!("broken-{name}"));
    let dir = copy.path();
    for entry in std::fs::read_dir(repo_path(MODEL_DIR)).expect("model dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
    }
    match contents {
        Some(bytes) => std::fs::write(dir.join(file), bytes).expect("write"),
        None => std::fs::remove_file(dir.join(file)).expect("remove"),
    }
    copy
}

fn utf8(dir: &TempDir) -> &str {
    dir.path().to_str().expect("utf-8 temp path")
}

#[test]
fn missing_model_directory() {
    assert_fails_with(
        &["--model-dir", "/nonexistent/model"],
        &[],
        &["/nonexistent/model", "not found"],
    );
}

#[test]
fn missing_tokenizer() {
    let dir = broken_model("no-tokenizer", "tokenizer.json", None);
    assert_fails_with(
        &["--model-dir", utf8(&dir)],
        &[],
        &["tokenizer.json", "missing"],
    );
}

#[test]
fn truncated_onnx_file() {
    let file = "model_quantized.onnx";
    let model = std::fs::read(repo_path(MODEL_DIR).join(file)).expect("model");
    let dir = broken_model("truncated", file, Some(&model[..model.len() / 3]));
    assert_fails_with(
        &["--model-dir", utf8(&dir), "--device", "cpu"],
        &[],
        &[file],
    );
}

#[test]
fn a_directory_without_any_onnx_file() {
    let dir = broken_model("no-onnx", "model_quantized.onnx", None);
    std::fs::remove_file(dir.path().join("model_fp16.onnx")).expect("remove");
    assert_fails_with(
        &["--model-dir", utf8(&dir)],
        &[],
        &["no ONNX file", "model.onnx"],
    );
}

#[test]
fn labels_that_do_not_match_the_model() {
    let config = r#"{"id2label": {"0": "only", "1": "two"}}"#;
    let dir = broken_model("labels", "config.json", Some(config.as_bytes()));
    assert_fails_with(
        &["--model-dir", utf8(&dir)],
        &[],
        &["inconsistent", "2 labels"],
    );
}

#[test]
fn a_problem_type_newscls_does_not_serve_is_refused_by_name() {
    let shipped: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo_path(MODEL_DIR).join("config.json")).expect("config.json"),
    )
    .expect("json");
    let mut config = shipped.clone();
    config["problem_type"] = "regression".into();
    let bytes = serde_json::to_vec(&config).expect("json");
    let dir = broken_model("regression", "config.json", Some(&bytes));
    assert_fails_with(
        &["--model-dir", utf8(&dir)],
        &[],
        &[
            "problem_type",
            "\"regression\"",
            "single_label_classification",
            "multi_label_classification",
        ],
    );
}

#[test]
fn wrong_onnxruntime_library() {
    assert_fails_with(
        &[],
        &[(
            "NEWSCLS__MODEL__ONNXRUNTIME_LIBRARY",
            "/nonexistent/libonnxruntime.so",
        )],
        &["ONNX Runtime", "/nonexistent/libonnxruntime.so"],
    );
    // A file that exists but is not ONNX Runtime.
    let not_a_library = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    assert_fails_with(
        &[],
        &[("ORT_DYLIB_PATH", not_a_library.to_str().expect("utf-8"))],
        &["ONNX Runtime"],
    );
}

#[test]
fn bad_configuration_names_the_key() {
    assert_fails_with(
        &[],
        &[("NEWSCLS__SERVER__TIMEOUT", "-1")],
        &["server.timeout"],
    );
    assert_fails_with(
        &[],
        &[("NEWSCLS__BATCHING__MAX_BATCH_SIZ", "4")],
        &["max_batch_siz"],
    );
    assert_fails_with(
        &["--config", "/nonexistent.yaml"],
        &[],
        &["/nonexistent.yaml"],
    );
}
