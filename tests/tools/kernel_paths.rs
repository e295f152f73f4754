//! The CPU variant computes the same numbers on every x86 CPU.
//!
//! ONNX Runtime chooses its integer matrix kernels by instruction set, and they do not all sum
//! alike: AVX2 and AVX-512 without VNNI add pairs of uint8 × int8 products into saturating
//! 16-bit integers, AVX-512 VNNI and SSE4.1 sum exactly (`device::IntegerKernels`). The bundled
//! CPU variant is exported with weights that no pair can saturate (`training/export.py`); the
//! model before it answered 0.098 apart in logits on an AVX2 and an AVX-512 VNNI machine.
//!
//! One machine shows several kernel paths: Debian's `qemu-x86_64` runs a program as another
//! x86 CPU — `-cpu Haswell` gets the AVX2 kernels, `-cpu Nehalem` the SSE4.1 ones — beside the
//! host's own (AVX2, AVX-512 or AVX-512 VNNI). QEMU emulates no AVX-512, so an AVX-512 VNNI
//! path is seen only natively on such a host.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use newscls::infra::device::FloatKernels;
use serde_json::Value;

use crate::support::{command, repo_path, TempDir, MODEL_DIR};

/// CPUs to emulate, with the integer kernels ONNX Runtime picks on each.
const EMULATED: [(&str, &str); 2] = [
    ("Haswell", "AVX2: pairs saturate"),
    ("Nehalem", "SSE4.1: exact"),
];

fn python() -> PathBuf {
    repo_path(".cache/kernel-paths/bin/python")
}

/// Why the kernel-path tests cannot run here, if they cannot.
pub fn missing() -> Option<String> {
    let qemu = Command::new("qemu-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !qemu {
        return Some("qemu-x86_64 is not installed (scripts/setup-kernel-paths.sh)".into());
    }
    (!python().is_file()).then(|| {
        "the probe's venv .cache/kernel-paths is missing (scripts/setup-kernel-paths.sh)".into()
    })
}

/// Runs `program` natively (`cpu` None) or under `qemu-x86_64 -cpu CPU`.
fn run_as(cpu: Option<&str>, program: Command) -> Output {
    let mut command = match cpu {
        None => program,
        Some(cpu) => emulated(cpu, &program),
    };
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", command.get_program()))
}

/// The same program, arguments, directory and environment under `qemu-x86_64 -cpu CPU`.
fn emulated(cpu: &str, program: &Command) -> Command {
    let mut qemu = Command::new("qemu-x86_64");
    qemu.args(["-cpu", cpu])
        .arg(program.get_program())
        .args(program.get_args());
    if let Some(dir) = program.get_current_dir() {
        qemu.current_dir(dir);
    }
    for (key, value) in program.get_envs() {
        match value {
            Some(value) => qemu.env(key, value),
            None => qemu.env_remove(key),
        };
    }
    qemu
}

fn what(cpu: Option<&str>) -> String {
    match cpu {
        None => "this CPU".into(),
        Some(cpu) => format!("an emulated {cpu}"),
    }
}

/// Every integer MatMul of the shipped CPU variant, with its own weights and activations that
/// push each pair of products to its extreme, gives the exact product on this CPU, as an AVX2
/// CPU and as an SSE4.1 CPU (tests/tools/kernel_paths.py). The variant before this one failed
/// here on 72 of 72 MatMuls on the AVX2 path.
pub fn the_cpu_variants_integer_products_are_exact_on_every_kernel_path() {
    let model = repo_path(MODEL_DIR).join("model_quantized.onnx");
    for cpu in [None, Some(EMULATED[0].0), Some(EMULATED[1].0)] {
        let mut probe = Command::new(python());
        probe
            .arg(repo_path("tests/tools/kernel_paths.py"))
            .arg(&model);
        let output = run_as(cpu, probe);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "the probe failed on {}: {}",
            what(cpu),
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value = serde_json::from_str(stdout.trim()).expect("the probe's JSON");
        eprintln!("integer products on {}: {report}", what(cpu));
        assert!(
            report["probed"].as_u64().unwrap_or(0) > 0,
            "no integer MatMul found in {model:?}: {report}"
        );
        assert_eq!(
            report["inexact"],
            Value::Array(vec![]),
            "integer products that are not exact on {}",
            what(cpu)
        );
    }
}

/// Golden texts, English and Korean, through `newscls classify` (the quantized variant alone)
/// natively and as an emulated AVX2 CPU: the same scores. On an AVX2 host both runs take the same kernels and must agree to
/// the last bits; on an AVX-512 host the integer sums are still exact on both, but ONNX Runtime's
/// float kernels are another family there (`device::FloatKernels`), whose last-bit differences the
/// quantized graph can re-round into a step of one quantum, so the scores are held to
/// [`OTHER_FAMILY_SCORE_TOLERANCE`] and the top labels to each other.
pub fn the_service_scores_alike_natively_and_as_an_avx2_cpu() {
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_path("tests/golden/news-topic-e5-small.json"))
            .expect("the golden file"),
    )
    .expect("json");
    let cases = golden["cases"].as_array().expect("cases");
    let korean = |case: &&Value| {
        case["text"]
            .as_str()
            .is_some_and(|t| t.chars().any(|c| ('가'..='힣').contains(&c)))
    };
    let texts: Vec<&str> = cases
        .iter()
        .filter(|c| !korean(c))
        .take(2)
        .chain(cases.iter().filter(korean).take(2))
        .map(|case| case["text"].as_str().expect("text"))
        .collect();
    let dir = TempDir::new("kernel-paths");
    let input = dir.path().join("texts.jsonl");
    let lines: Vec<String> = texts
        .iter()
        .map(|text| serde_json::json!({ "text": text }).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").expect("write the texts");
    let scores = |cpu: Option<&str>| -> Vec<Value> {
        let output_path = dir
            .path()
            .join(format!("{}.jsonl", cpu.unwrap_or("native")));
        let classify = command(
            &[
                "classify",
                &input.to_string_lossy(),
                "-o",
                &output_path.to_string_lossy(),
                "--all-scores",
                // The quantized variant's own kernels: a text re-scored on one side and not on
                // the other (a margin near the threshold, moved by the float family) would
                // compare two files.
                "--rescore",
                "off",
            ],
            &[],
        );
        let output = run_as(cpu, classify);
        assert!(
            output.status.success(),
            "newscls classify on {}: {}",
            what(cpu),
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::read_to_string(&output_path)
            .expect("the classified rows")
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).expect("jsonl")["scores"].clone())
            .collect()
    };
    let native = scores(None);
    let emulated = scores(Some(EMULATED[0].0));
    // qemu's Haswell has AVX2 and FMA3, no AVX-512: the FMA3 float family.
    let tolerance = if FloatKernels::detect() == FloatKernels::Fma3 {
        SAME_FAMILY_SCORE_TOLERANCE
    } else {
        OTHER_FAMILY_SCORE_TOLERANCE
    };
    assert_eq!(native.len(), texts.len());
    for (row, (a, b)) in native.iter().zip(&emulated).enumerate() {
        let a = a.as_object().expect("scores by label");
        let b = b.as_object().expect("scores by label");
        assert_eq!(a.len(), b.len());
        let top = |scores: &serde_json::Map<String, Value>| {
            scores
                .iter()
                .max_by(|x, y| {
                    let score = |v: &Value| v.as_f64().unwrap_or(f64::MIN);
                    score(x.1).total_cmp(&score(y.1))
                })
                .map(|(label, _)| label.clone())
        };
        assert_eq!(
            top(a),
            top(b),
            "row {row}: top label natively and as an AVX2 CPU"
        );
        for (label, score) in a {
            let (x, y) = (
                score.as_f64().expect("score"),
                b[label].as_f64().expect("score"),
            );
            assert!(
                (x - y).abs() <= tolerance,
                "row {row} {label}: {x} natively, {y} as an AVX2 CPU"
            );
        }
    }
}

/// How far a probability may move between two runs on the same kernels: none but the order of
/// a few float sums.
const SAME_FAMILY_SCORE_TOLERANCE: f64 = 1e-5;
/// The same across float kernel families: a logit step of up to ~0.15 (measured 0.07, SSE vs
/// FMA3 floats) moves a probability by at most a few hundredths.
const OTHER_FAMILY_SCORE_TOLERANCE: f64 = 0.05;
