//! Which ONNX file serves, on which device, and what the service says about it.

use serde_json::{json, Value};

use crate::support::{repo_path, startup_error, tiny_dynamic_model, Server, TempDir, MODEL_DIR};

/// A model directory with the bundled tokenizer, two labels and the given ONNX files.
fn model_dir(files: &[(&str, Vec<u8>)]) -> TempDir {
    let dir = TempDir::new("variants");
    std::fs::copy(
        repo_path(MODEL_DIR).join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .expect("copy tokenizer");
    let config = json!({"id2label": {"0": "up", "1": "down"}, "model_version": "tiny-1"});
    std::fs::write(dir.path().join("config.json"), config.to_string()).expect("config");
    for (name, bytes) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write model");
    }
    dir
}

fn path(dir: &TempDir) -> &str {
    dir.path().to_str().expect("utf-8 temp path")
}

#[tokio::test]
async fn a_dynamically_quantized_graph_is_served_with_a_warning_and_says_so() {
    let dir = model_dir(&[("model.onnx", tiny_dynamic_model(2))]);
    let server = Server::start(&["--model-dir", path(&dir)], &[]);
    let info: Value = server.get_json("/info").await;
    assert_eq!(info["model"]["file"], "model.onnx");
    assert_eq!(info["model"]["batch_independent"], false);
    let response = server.predict(json!({"inputs": "any text"})).await;
    assert_eq!(response.status(), 200, "it still serves");
    let log = server.log();
    assert!(
        log.contains("DynamicQuantizeLinear") && log.contains("depend on the other texts"),
        "the log warns that scores depend on batching:\n{log}"
    );
}

#[test]
fn cuda_refuses_a_graph_whose_quantized_operators_have_no_cuda_kernel() {
    let dir = model_dir(&[("model.onnx", tiny_dynamic_model(2))]);
    let line = startup_error(&["--model-dir", path(&dir), "--device", "cuda"], &[]);
    for part in [
        "model.onnx",
        "DynamicQuantizeLinear",
        "no CUDA kernel",
        "model_fp16.onnx",
    ] {
        assert!(line.contains(part), "{line:?} should mention {part:?}");
    }
}

#[tokio::test]
async fn a_hugging_face_layout_with_variants_under_onnx_works_as_it_is() {
    let dir = model_dir(&[
        ("onnx/model_quantized.onnx", tiny_dynamic_model(2)),
        ("onnx/model.onnx", tiny_dynamic_model(2)),
    ]);
    let server = Server::start(&["--model-dir", path(&dir), "--device", "cpu"], &[]);
    let info: Value = server.get_json("/info").await;
    assert_eq!(info["model"]["file"], "onnx/model_quantized.onnx");
    drop(server);
    let server = Server::start(
        &["--model-dir", path(&dir), "--model-file", "onnx/model.onnx"],
        &[],
    );
    let info: Value = server.get_json("/info").await;
    assert_eq!(info["model"]["file"], "onnx/model.onnx");
}

#[tokio::test]
async fn the_bundled_model_serves_a_batch_independent_variant_on_the_cpu() {
    let server = Server::start(&["--device", "cpu"], &[]);
    let info: Value = server.get_json("/info").await;
    assert_eq!(info["model"]["provider"], "cpu");
    assert_eq!(info["model"]["batch_independent"], true, "{info}");
}
