//! The service's own tokenizer and inference reproduce the training pipeline's outputs.
//!
//! `tests/golden/<model>.json` is written by `training/export.py` from onnxruntime in Python:
//! English test articles and Korean sentences, one at a time and as one padded batch, and the
//! family of float kernels ONNX Runtime used there (`device::FloatKernels`).
//!
//! What is guaranteed, and checked: the CPU variant's integer products are exact on every x86
//! kernel path (`training/export.py`, `integer_kernels_exact`; `tests/tools/kernel_paths.rs`
//! probes them), so on a host of the golden file's float family its logits are bit-identical
//! (within [`SAME_FAMILY_TOLERANCE`]) and its labels the same. ONNX Runtime's float kernels differ
//! in their last bits between families (AVX-512F vs FMA3), and a statically quantized graph
//! re-rounds activations between layers, which can turn such a bit into a step of one quantum:
//! across families the logits are held to [`OTHER_FAMILY_TOLERANCE`], and the labels to the
//! golden file's wherever its two best labels are further apart than that could move. (The
//! variant before this one, with int8 weights whose 16-bit pair sums saturate on AVX2, came out
//! 0.098 from its golden file on an AVX2 host and changed labels: its integer sums were wrong,
//! which the kernel-path probe catches on any host.) The golden file also holds the fp32
//! export's top label for every article of the test split, which every shipped variant is held to.

use std::collections::BTreeMap;
use std::path::Path;

use newscls::infra::config::{DeviceChoice, ModelConfig, RescoreChoice};
use newscls::infra::device::FloatKernels;
use newscls::pipeline::inference::onnx::default_library_path;
use newscls::pipeline::inference::rescore::top_two_margin;
use newscls::pipeline::inference::{Logits, PaddedBatch};
use newscls::pipeline::model;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::support::{repo_path, test_split, Server, MODEL_DIR};

#[derive(Deserialize)]
struct Golden {
    labels: Vec<String>,
    /// The float kernel family of the machine that wrote the file (`device::FloatKernels`).
    float_kernels: Option<String>,
    cases: Vec<Case>,
    padded_batch: Batch,
    /// The fp32 export's top label for each test-split article, by the article's id.
    test_split_fp32_labels: BTreeMap<String, String>,
    /// The CPU variant's logits as other float families compute them, by family
    /// (`training/golden_family.py` run on such a host).
    #[serde(default)]
    other_float_kernels: BTreeMap<String, FamilyLogits>,
    /// What re-scoring the CPU variant's close calls was chosen on (`training/rescore_margin.py`).
    rescore: Rescore,
}

#[derive(Deserialize)]
struct Rescore {
    below_margin: f32,
    /// Articles per set (`val`, `unlabelled`, `test`).
    articles: BTreeMap<String, usize>,
    /// Every article whose quantized top label differs from the reference's.
    flips: Vec<Flip>,
}

#[derive(Deserialize)]
struct Flip {
    set: String,
    text: String,
    /// The reference's label.
    label: String,
    quantized_margin: f32,
}

#[derive(Deserialize)]
struct FamilyLogits {
    cases: Vec<Vec<f32>>,
    padded_batch: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    label: String,
    logits: Vec<f32>,
    /// The fp32 export's answer: what the fp16 GPU variant is held to.
    fp32_label: String,
    fp32_logits: Vec<f32>,
}

#[derive(Deserialize)]
struct Batch {
    texts: Vec<String>,
    logits: Vec<Vec<f32>>,
}

/// The CPU variant's logits against the golden file's on a host of its float family: exact
/// integer sums and the same float kernels leave nothing but the order of a few float sums.
const SAME_FAMILY_TOLERANCE: f32 = 1e-5;
/// The same on a host of a float family the golden file does not record: last-bit differences
/// re-rounded between layers into steps of one quantum. Measured on the bundled CPU variant with
/// exact integer sums on both sides: SSE4.1 floats (qemu) vs FMA3 up to 0.072, AVX-512F vs FMA3
/// up to 0.281 on the golden texts (no top label changed).
const OTHER_FAMILY_TOLERANCE: f32 = 0.4;

/// What the CPU variant is held to on this host: the golden logits of this host's float family
/// (1e-5) when the file records it, else the writer's family's (the cross-family tolerance), and
/// whether they are this family's.
fn cpu_expectation(golden: &Golden) -> (Vec<Vec<f32>>, Vec<Vec<f32>>, f32, bool) {
    let here = FloatKernels::detect().name();
    eprintln!(
        "float kernels: {here} here; the golden file records {:?} and {:?}",
        golden.float_kernels,
        golden.other_float_kernels.keys().collect::<Vec<_>>()
    );
    if golden.float_kernels.as_deref() == Some(here) {
        let cases = golden.cases.iter().map(|c| c.logits.clone()).collect();
        return (
            cases,
            golden.padded_batch.logits.clone(),
            SAME_FAMILY_TOLERANCE,
            true,
        );
    }
    if let Some(family) = golden.other_float_kernels.get(here) {
        assert_eq!(
            family.cases.len(),
            golden.cases.len(),
            "{here}: one row per case"
        );
        return (
            family.cases.clone(),
            family.padded_batch.clone(),
            SAME_FAMILY_TOLERANCE,
            true,
        );
    }
    let cases = golden.cases.iter().map(|c| c.logits.clone()).collect();
    (
        cases,
        golden.padded_batch.logits.clone(),
        OTHER_FAMILY_TOLERANCE,
        false,
    )
}

fn assert_within(got: &[f32], want: &[f32], tolerance: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: label count");
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff <= tolerance,
        "{what}: max |diff| {diff} > {tolerance}\n got {got:?}\nwant {want:?}"
    );
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .expect("non-empty")
}

fn golden() -> Golden {
    let name = repo_path(MODEL_DIR)
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let golden_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(golden_path).expect("golden file")).expect("json")
}

/// One of the bundled model's files on the CPU, one thread (the GPU variant too: ONNX Runtime's
/// CPU provider has its fp16 fused kernels), alone: no re-scoring.
fn load_variant(file: &str) -> model::LoadedModel {
    load_cpu(Some(file), RescoreChoice::Off)
}

/// The bundled model on the CPU, one thread: `file` (else the CPU's choice), with or without
/// re-scoring its close calls.
fn load_cpu(file: Option<&str>, rescore: RescoreChoice) -> model::LoadedModel {
    let loaded = model::load(&ModelConfig {
        dir: repo_path(MODEL_DIR),
        file: file.map(Into::into),
        device: DeviceChoice::Cpu,
        intra_op_threads: 1,
        intra_op_spinning: false,
        rescore,
        onnxruntime_library: Some(repo_path(&default_library_path().to_string_lossy())),
        ..ModelConfig::default()
    })
    .unwrap_or_else(|e| panic!("{file:?} loads on the CPU: {e}"));
    if let Some(file) = file {
        assert_eq!(loaded.file, Path::new(file));
    }
    loaded
}

/// The texts as one padded batch through the service's own tokenizer and inference.
fn infer(loaded: &mut model::LoadedModel, texts: &[String]) -> Logits {
    let tokenized = loaded.tokenizer.encode(texts, true).expect("tokenize");
    loaded.backends[0]
        .infer(&PaddedBatch::new(
            tokenized.iter(),
            loaded.tokenizer.pad_id(),
        ))
        .expect("infer")
}

/// The top label of each text, in batches of 8 (the variants are batch-independent, which
/// the determinism tests check).
fn top_labels(loaded: &mut model::LoadedModel, texts: &[String]) -> Vec<String> {
    let labels = loaded.spec.labels.clone();
    texts
        .chunks(8)
        .flat_map(|chunk| {
            infer(loaded, chunk)
                .rows()
                .map(|row| labels[argmax(row)].clone())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One model whatever the hardware: a caller gets the same category from a CPU deployment
/// (`model_quantized.onnx`) and a GPU one (`model_fp16.onnx`) of the same version. The target is
/// the fp32 export's top label on at least 98 % of the test split (its labels are written at
/// export, `training/export.py`): the GPU variant meets it (1.000); the CPU variant gives 0.977
/// (5 of 215 differ, each one whose two best labels are within 0.11 in fp32), held here at 0.97;
/// the 2026.11.25 variant, which quantized every MatMul's output too, gave 0.912.
#[test]
fn every_shipped_variant_gives_the_fp32_exports_label_on_the_test_split() {
    const TARGET: f64 = 0.98;
    const CPU_AT_LEAST: f64 = 0.97;
    let fp32 = golden().test_split_fp32_labels;
    let split = test_split();
    let ids: Vec<String> = split
        .iter()
        .map(|row| row["id"].as_str().expect("id").to_string())
        .collect();
    let texts: Vec<String> = split
        .iter()
        .map(|row| row["text"].as_str().expect("text").to_string())
        .collect();
    let mut sorted_ids = ids.clone();
    sorted_ids.sort();
    assert!(
        sorted_ids.iter().eq(fp32.keys()),
        "the golden file's labels are for this test split ({} articles, {} labels)",
        ids.len(),
        fp32.len()
    );
    let reference: Vec<String> = ids.iter().map(|id| fp32[id].clone()).collect();
    let agreement = |a: &[String], b: &[String]| {
        a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
    };
    let cpu = top_labels(&mut load_variant("model_quantized.onnx"), &texts);
    let gpu = top_labels(&mut load_variant("model_fp16.onnx"), &texts);
    let cpu_fp32 = agreement(&cpu, &reference);
    let gpu_fp32 = agreement(&gpu, &reference);
    let cpu_gpu = agreement(&cpu, &gpu);
    eprintln!(
        "top-label agreement on {} articles: CPU variant vs fp32 {cpu_fp32:.3}, GPU variant vs fp32 \
         {gpu_fp32:.3}, CPU vs GPU {cpu_gpu:.3}",
        texts.len()
    );
    for (what, value, at_least) in [
        ("the GPU variant with fp32", gpu_fp32, TARGET),
        ("the CPU variant with fp32", cpu_fp32, CPU_AT_LEAST),
        (
            "the CPU variant with the GPU variant",
            cpu_gpu,
            CPU_AT_LEAST,
        ),
    ] {
        assert!(value >= at_least, "{what}: {value:.3} < {at_least}");
    }
}

/// The GPU variant, run where CI can run it: the fp32 export's top label on every golden text,
/// and logits within fp16 rounding of fp32 (7e-3 was measured at export; a broken export or
/// fusion moves them by whole units).
#[test]
fn the_gpu_variant_agrees_with_the_golden_file() {
    let golden = golden();
    let mut loaded = load_variant("model_fp16.onnx");
    for (i, case) in golden.cases.iter().enumerate() {
        let logits = infer(&mut loaded, std::slice::from_ref(&case.text));
        let row = logits.rows().next().expect("one row");
        assert_eq!(golden.labels[argmax(row)], case.fp32_label, "case {i}");
        assert_within(row, &case.fp32_logits, 0.05, &format!("fp16 case {i}"));
    }
}

#[test]
fn service_pipeline_matches_the_training_pipeline_golden_file() {
    let model_dir = repo_path(MODEL_DIR);
    let golden = golden();

    let mut loaded = model::load(&ModelConfig {
        dir: model_dir.clone(),
        device: DeviceChoice::Cpu,
        intra_op_threads: 1,
        intra_op_spinning: false,
        // The quantized variant's own logits, which the golden file records.
        rescore: RescoreChoice::Off,
        onnxruntime_library: Some(repo_path(&default_library_path().to_string_lossy())),
        ..ModelConfig::default()
    })
    .expect("the bundled model loads");
    let spec = loaded.spec.clone();
    assert_eq!(spec.labels, golden.labels);
    let korean = golden
        .cases
        .iter()
        .filter(|c| c.text.chars().any(|ch| ('가'..='힣').contains(&ch)))
        .count();
    assert!(
        korean >= 5,
        "the golden file covers Korean ({korean} cases)"
    );
    let (expected, expected_batch, tolerance, same_family) = cpu_expectation(&golden);
    let mut worst = 0.0f32;
    for (i, (case, want)) in golden.cases.iter().zip(&expected).enumerate() {
        assert_eq!(
            spec.labels[argmax(&case.logits)],
            case.label,
            "golden case {i}"
        );
        let logits = infer(&mut loaded, std::slice::from_ref(&case.text));
        let row = logits.rows().next().expect("one row");
        // Two labels closer than twice the tolerance may trade places on another family.
        if same_family || top_two_margin(want) > 2.0 * tolerance {
            assert_eq!(
                spec.labels[argmax(row)],
                spec.labels[argmax(want)],
                "case {i}: {:.60}",
                case.text
            );
        }
        assert_within(row, want, tolerance, &format!("case {i}"));
        worst = row
            .iter()
            .zip(want)
            .fold(worst, |w, (a, b)| w.max((a - b).abs()));
    }
    let logits = infer(&mut loaded, &golden.padded_batch.texts);
    for (i, (row, want)) in logits.rows().zip(&expected_batch).enumerate() {
        assert_within(row, want, tolerance, &format!("padded batch row {i}"));
    }
    eprintln!(
        "CPU variant vs the golden file: max |logit diff| {worst:e} (tolerance {tolerance:e})"
    );
}

/// Exact labels at int8 speed: the CPU deployment (the quantized variant, its close calls run
/// again on the fp16 file) gives the fp32 export's label on every article of the test split, and
/// the reference's on at least 99.5 % of the 2,426 unlabelled articles (every one the quantized
/// variant alone gets wrong is replayed; the rest it answers as before). The margin was chosen
/// on one float family: on another, a quantized margin moves by up to 0.28
/// ([`OTHER_FAMILY_TOLERANCE`]), which could lift the 3 unlabelled flips within that of the
/// margin out of re-scoring, so the unlabelled target is asserted, not every flip.
#[test]
fn the_cpu_deployment_answers_the_quantized_variants_close_calls_like_full_precision() {
    let golden = golden();
    let mut cpu = load_cpu(None, RescoreChoice::Auto);
    assert_eq!(cpu.file, Path::new("model_quantized.onnx"));
    let rescoring = cpu
        .rescoring
        .clone()
        .expect("the bundled model re-scores on the CPU");
    assert_eq!(rescoring.spec.below_margin, golden.rescore.below_margin);

    let split = test_split();
    let texts: Vec<String> = split
        .iter()
        .map(|row| row["text"].as_str().expect("text").to_string())
        .collect();
    let answered = top_labels(&mut cpu, &texts);
    let differing: Vec<String> = split
        .iter()
        .zip(&answered)
        .filter(|(row, label)| {
            golden.test_split_fp32_labels[row["id"].as_str().expect("id")] != **label
        })
        .map(|(row, label)| format!("{} answered {label}", row["id"]))
        .collect();
    let share = rescoring.stats.rescored() as f64 / rescoring.stats.texts() as f64;
    eprintln!(
        "test split: fp32's label on {}/{}, {share:.3} re-scored",
        texts.len() - differing.len(),
        texts.len()
    );
    assert!(
        differing.is_empty(),
        "the fp32 label on every article: {differing:?}"
    );

    let flips: Vec<&Flip> = golden
        .rescore
        .flips
        .iter()
        .filter(|f| f.set == "unlabelled")
        .collect();
    let texts: Vec<String> = flips.iter().map(|f| f.text.clone()).collect();
    let right = |answers: &[String]| {
        answers
            .iter()
            .zip(&flips)
            .filter(|(a, f)| **a == f.label)
            .count()
    };
    let rescored = right(&top_labels(&mut cpu, &texts));
    let alone = right(&top_labels(
        &mut load_variant("model_quantized.onnx"),
        &texts,
    ));
    let articles = golden.rescore.articles["unlabelled"];
    let agreement = 1.0 - (flips.len() - rescored) as f64 / articles as f64;
    eprintln!(
        "unlabelled: the quantized variant alone differs on {} of {articles}; re-scored, {} of \
         them right (agreement {agreement:.4}), alone {alone}",
        flips.len(),
        rescored
    );
    assert!(agreement >= 0.995, "{agreement:.4} < 0.995");
    assert!(rescored > alone, "re-scoring changes the answers");
}

/// A re-scored text runs alone on the precise file: its scores are the same bits whatever else
/// was in its batch (a clear call answered by the quantized variant, another close call, another
/// order, other padding).
#[test]
fn a_rescored_texts_scores_do_not_depend_on_its_batch_mates() {
    let golden = golden();
    let below = golden.rescore.below_margin;
    let close: Vec<String> = golden
        .rescore
        .flips
        .iter()
        .filter(|f| f.quantized_margin < below / 2.0)
        .take(2)
        .map(|f| f.text.clone())
        .collect();
    assert_eq!(close.len(), 2, "two close calls in the golden file");
    let clear = golden
        .cases
        .iter()
        .find(|c| top_two_margin(&c.logits) > 2.0 * below)
        .expect("a clear call among the golden cases")
        .text
        .clone();
    let mut cpu = load_cpu(None, RescoreChoice::Auto);
    let alone = infer(&mut cpu, std::slice::from_ref(&close[0]));
    assert_eq!(alone.rescored, 1);
    let alone = alone.rows().next().expect("one row").to_vec();
    for batch in [
        vec![clear.clone(), close[0].clone(), close[1].clone()],
        vec![close[1].clone(), clear.clone(), close[0].clone()],
    ] {
        let logits = infer(&mut cpu, &batch);
        assert_eq!(logits.rescored, 2, "the two close calls, not the clear one");
        let at = batch
            .iter()
            .position(|t| *t == close[0])
            .expect("in the batch");
        let row = logits.rows().nth(at).expect("its row");
        assert_eq!(row, alone.as_slice(), "the same bits in a batch as alone");
    }
}

/// Operators see re-scoring: `/info` names the file and margin and counts the texts, the
/// counter `newscls_rescored_texts_total` counts the re-scored ones, and `--rescore off` serves
/// the quantized variant alone (no block in `/info`, a close call answered as it computes it).
#[tokio::test]
async fn rescoring_is_reported_and_can_be_turned_off() {
    let golden = golden();
    // The test split's widest close call: another float family cannot move it back.
    let close = golden
        .rescore
        .flips
        .iter()
        .filter(|f| f.set == "test")
        .max_by(|a, b| a.quantized_margin.total_cmp(&b.quantized_margin))
        .expect("a test-split close call");
    let server = Server::start(&[], &[]);
    let response = server.predict(json!({ "inputs": [close.text] })).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer[0][0]["label"], close.label.as_str(), "{answer}");
    let info = server.get_json("/info").await;
    let rescore = &info["model"]["rescore"];
    assert_eq!(rescore["file"], "model_fp16.onnx", "{info}");
    assert!(
        (rescore["below_margin"].as_f64().expect("margin")
            - f64::from(golden.rescore.below_margin))
        .abs()
            < 1e-6
    );
    assert!(rescore["rescored"].as_u64() >= Some(1), "{rescore}");
    assert!(rescore["texts"].as_u64() >= rescore["rescored"].as_u64());
    let counted = server
        .metric("newscls_rescored_texts_total{role=\"champion\"}")
        .await;
    assert!(counted >= 1.0, "{counted}");

    let off = Server::start(&["--rescore", "off"], &[]);
    assert_eq!(off.get_json("/info").await["model"]["rescore"], Value::Null);
    let response = off.predict(json!({ "inputs": [close.text] })).await;
    let answer: Value = response.json().await.expect("json");
    assert_ne!(
        answer[0][0]["label"],
        close.label.as_str(),
        "the quantized variant alone gets this one wrong: {answer}"
    );
}
