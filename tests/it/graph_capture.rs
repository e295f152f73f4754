//! The CUDA-graph path (bound device buffers, staged copies, the capture check, replays) with
//! the bundled model on the CPU, where ONNX Runtime captures nothing but every other step runs
//! as on a GPU: its answers must be the plain path's, bit for bit, and its counts right.

use std::collections::HashMap;
use std::sync::Arc;

use newscls::infra::config::{DeviceChoice, ModelConfig, RescoreChoice};
use newscls::infra::device::{Device, GraphLimits};
use newscls::pipeline::inference::graph_capture::GraphStats;
use newscls::pipeline::inference::onnx::{
    default_library_path, init_runtime, OnnxBackend, OnnxOptions,
};
use newscls::pipeline::inference::{Backend, PaddedBatch};
use newscls::pipeline::model;

use crate::support::{repo_path, MODEL_DIR};

#[test]
fn batches_through_graph_buffers_answer_exactly_as_plain_runs() {
    let library = repo_path(&default_library_path().to_string_lossy());
    let mut plain = model::load(&ModelConfig {
        dir: repo_path(MODEL_DIR),
        device: DeviceChoice::Cpu,
        intra_op_threads: 1,
        intra_op_spinning: false,
        // The graph runs one file: compare it with that file alone.
        rescore: RescoreChoice::Off,
        onnxruntime_library: Some(library.clone()),
        ..ModelConfig::default()
    })
    .expect("the bundled model loads");
    let limits = GraphLimits {
        max_rows: 16,
        max_graphs: 3,
    };
    let stats = Arc::new(GraphStats::default());
    let env = init_runtime(&library).expect("runtime");
    let mut graphs = OnnxBackend::load(
        &env,
        &repo_path(MODEL_DIR).join(&plain.file),
        &OnnxOptions {
            device: Device::Cpu,
            intra_op_threads: 1,
            intra_op_spinning: false,
            cuda_graphs: Some(limits),
            graph_stats: stats.clone(),
        },
        plain.spec.labels.len(),
    )
    .expect("the same file with graph buffers");

    let texts = [
        "Oil prices rose on Monday after the OPEC meeting.",
        "The striker scored twice in the final minutes.",
        "코스피가 외국인 매수에 힘입어 상승 마감했다.",
        "Parliament passed the budget after a long debate.",
        "Shares of the chipmaker fell 5% on weak guidance.",
        "The president met the prime minister in Berlin.",
        "삼성전자 실적 발표",
        "Central bank holds rates steady",
        "A long article about the economy. ".repeat(20).leak(),
    ];
    let tokenized = plain
        .tokenizer
        .encode(&texts.map(String::from), true)
        .expect("tokenize");
    let pad = plain.tokenizer.pad_id();
    let buckets = Device::Cuda.shape_buckets();
    // Text counts chosen to repeat shapes, to pass max_rows (24 rows) and max_graphs.
    let mut shapes_seen: Vec<(usize, usize)> = Vec::new();
    let mut expected_replays = 0;
    let mut batches_per_shape: HashMap<(usize, usize), usize> = HashMap::new();
    for (round, count) in [1, 3, 2, 9, 16, 20, 5, 8, 1, 3, 9].into_iter().enumerate() {
        let chosen: Vec<_> = (0..count)
            .map(|i| &tokenized[(round + i) % tokenized.len()])
            .collect();
        let batch = PaddedBatch::bucketed(chosen, pad, buckets);
        let shape = (batch.rows, batch.width);
        let want = plain.backends[0].infer(&batch).expect("plain run");
        let got = graphs.infer(&batch).expect("run through graph buffers");
        assert_eq!(
            got, want,
            "round {round}: {count} texts as {shape:?} differ from a plain run"
        );
        if batch.rows <= limits.max_rows {
            match shapes_seen.iter().position(|s| *s == shape) {
                Some(_) => expected_replays += 1,
                None if shapes_seen.len() < limits.max_graphs => shapes_seen.push(shape),
                None => {}
            }
        }
        *batches_per_shape.entry(shape).or_default() += 1;
    }
    let counts = stats.counts();
    assert_eq!(counts.workers_given_up, 0, "no capture was refused");
    assert_eq!(counts.captured, shapes_seen.len(), "one graph per shape");
    assert_eq!(counts.replays, expected_replays, "{batches_per_shape:?}");
    assert!(
        counts.replays >= 2,
        "the rounds replay some shapes: {batches_per_shape:?}"
    );
}
