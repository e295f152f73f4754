//! The in-process ceiling: ONNX Runtime on pre-tokenized texts, no HTTP, no queue.
//!
//! `cargo bench --bench ceiling -- [texts.jsonl] [seconds-per-size] [intra-op-threads] [cpu|cuda]
//! [batch sizes, e.g. 1,8,32]`
//! Loads the variant the service would load for that device (model::load), tokenizes the texts
//! once (not timed), then for each batch size runs back-to-back batches of real texts, each
//! padded as the service pads it, for a fixed time, and prints texts/s. Writes
//! `bench/results/ceiling.json` (or `$CEILING_OUT`). This is what the service is measured against.
//! `CUDA_GRAPHS=on|off` sets `model.cuda_graphs` (on a GPU: each batch shape's first batch,
//! the untimed warm-up one, captures its graph). `RESCORE=off` sets `model.rescore` (on a CPU,
//! the quantized variant alone); it prints the share of texts re-scored and the peak RSS.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use newscls::infra::config::{DeviceChoice, ModelConfig, RescoreChoice};
use newscls::pipeline::inference::PaddedBatch;
use newscls::pipeline::model;

const CPU_BATCH_SIZES: &[usize] = &[1, 4, 8, 16, 32, 64];
const GPU_BATCH_SIZES: &[usize] = &[1, 8, 32, 64, 128, 256];

#[path = "common/mod.rs"]
mod common;

fn main() {
    let args = common::args();
    let texts_path = PathBuf::from(
        args.first()
            .cloned()
            .unwrap_or_else(|| "bench/texts.jsonl".into()),
    );
    let seconds: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let threads: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let device = match args.get(3).map(String::as_str) {
        None | Some("cpu") => DeviceChoice::Cpu,
        Some("cuda") => DeviceChoice::Cuda,
        Some(other) => panic!("device must be cpu or cuda, not {other}"),
    };
    let sizes: Vec<usize> = match args.get(4) {
        Some(list) => list
            .split(',')
            .map(|s| s.parse().expect("batch size"))
            .collect(),
        None if device == DeviceChoice::Cuda => GPU_BATCH_SIZES.to_vec(),
        None => CPU_BATCH_SIZES.to_vec(),
    };
    let texts = common::texts(&texts_path);

    let mut loaded = model::load(&ModelConfig {
        // Another model directory (e.g. an older version, side by side): $MODEL_DIR.
        dir: std::env::var_os("MODEL_DIR").map_or(ModelConfig::default().dir, Into::into),
        device,
        // One session: the ceiling is one device's pace.
        inference_workers: Some(1),
        cuda_graphs: std::env::var("CUDA_GRAPHS").ok().map(|v| match v.as_str() {
            "on" => true,
            "off" => false,
            other => panic!("CUDA_GRAPHS must be on or off, not {other}"),
        }),
        intra_op_threads: threads,
        // RESCORE=off: the quantized variant alone, without re-running close calls.
        rescore: match std::env::var("RESCORE").as_deref() {
            Ok("off") => RescoreChoice::Off,
            Ok("auto") | Err(_) => RescoreChoice::Auto,
            Ok(other) => panic!("RESCORE must be auto or off, not {other}"),
        },
        ..ModelConfig::default()
    })
    .expect("the bundled model loads");
    let tokenizer = &loaded.tokenizer;
    let backend = &mut loaded.backends[0];
    let tokenized = tokenizer.encode(&texts, true).expect("tokenize");
    let mean_tokens =
        tokenized.iter().map(|t| t.len()).sum::<usize>() as f64 / tokenized.len() as f64;
    let graphs = if loaded.graphs.is_some() { "on" } else { "off" };
    // Re-scoring in force (on a CPU, where config.json asks for it and RESCORE is not off).
    let rescoring = loaded.rescoring.clone();
    if let Some(r) = &rescoring {
        println!(
            "re-scoring close calls (margin below {}) on {}",
            r.spec.below_margin,
            r.spec.file.display()
        );
    }
    println!(
        "ceiling: {} on {}, CUDA graphs {graphs}, {} texts (mean {mean_tokens:.0} tokens), intra-op threads {}, {seconds} s per batch size",
        loaded.file.display(),
        loaded.device.name(),
        texts.len(),
        if threads == 0 { "auto".to_string() } else { threads.to_string() }
    );
    println!("| batch | texts/s | ms/batch | padded-token share |");
    println!("|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    let buckets = loaded.device.shape_buckets();
    for &size in &sizes {
        let mut done = 0usize;
        let mut batches = 0usize;
        let (mut real, mut padded) = (0usize, 0usize);
        let mut cursor = 0usize;
        let warm = PaddedBatch::bucketed(tokenized.iter().take(size), tokenizer.pad_id(), buckets);
        backend.infer(&warm).expect("warm-up");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs_f64(seconds) {
            let chunk: Vec<_> = (0..size)
                .map(|i| &tokenized[(cursor + i) % tokenized.len()])
                .collect();
            cursor = (cursor + size) % tokenized.len();
            let batch = PaddedBatch::bucketed(chunk, tokenizer.pad_id(), buckets);
            real += batch.real_tokens();
            padded += batch.padded_tokens();
            backend.infer(&batch).expect("infer");
            done += size;
            batches += 1;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let throughput = done as f64 / elapsed;
        let padding = 1.0 - real as f64 / padded as f64;
        println!(
            "| {size} | {throughput:.1} | {:.1} | {:.1}% |",
            elapsed * 1000.0 / batches as f64,
            padding * 100.0
        );
        rows.push(
            serde_json::json!({"batch_size": size, "texts_per_second": throughput,
            "ms_per_batch": elapsed * 1000.0 / batches as f64, "padded_share": padding}),
        );
    }
    let best = rows
        .iter()
        .map(|r| r["texts_per_second"].as_f64().unwrap_or(0.0))
        .fold(0.0, f64::max);
    println!("best: {best:.1} texts/s");
    let rescored_share = rescoring
        .as_ref()
        .map(|r| r.stats.rescored() as f64 / r.stats.texts().max(1) as f64);
    if let Some(share) = rescored_share {
        println!("re-scored: {:.3} of the texts", share);
    }
    // Peak resident memory: both sessions' weights and arenas when re-scoring.
    let peak_rss_mib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib / 1024.0)
        });
    if let Some(mib) = peak_rss_mib {
        println!("peak RSS: {mib:.0} MiB");
    }
    // Whether graphs were actually used: ONNX Runtime may refuse them for a model, and a worker
    // whose capture fails its check gives them up (both logged).
    let graph_counts = loaded.graphs.as_ref().map(|stats| stats.counts());
    if let Some(counts) = graph_counts {
        println!(
            "CUDA graphs: {} captured, {} replays, {} workers gave up",
            counts.captured, counts.replays, counts.workers_given_up
        );
    }
    let out = std::env::var("CEILING_OUT").unwrap_or_else(|_| "bench/results/ceiling.json".into());
    if let Some(dir) = std::path::Path::new(&out).parent() {
        std::fs::create_dir_all(dir).expect("results dir");
    }
    let report = serde_json::json!({"file": loaded.file, "provider": loaded.device.name(),
        "cuda_graphs": graphs, "graph_counts": graph_counts, "texts": texts.len(),
        "mean_tokens": mean_tokens, "intra_op_threads": threads,
        "seconds_per_size": seconds, "rows": rows, "best_texts_per_second": best,
        "rescored_share": rescored_share, "peak_rss_mib": peak_rss_mib});
    std::fs::write(&out, serde_json::to_string_pretty(&report).expect("json")).expect("write");
}
