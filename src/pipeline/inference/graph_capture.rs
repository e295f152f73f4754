//! Captured CUDA graphs: which batch shapes get one, and how a capture is checked.
//!
//! A small batch on a GPU is launch-bound: the model is a few hundred kernels, and launching
//! them one by one costs more than running them. ONNX Runtime can capture a run's kernels as
//! one CUDA graph and replay it with a single launch, but a graph is fixed to its shape and to
//! the device addresses of its inputs and outputs. So each worker keeps one graph per batch
//! shape (rows and width, already rounded to the device's buckets), bound to its own device
//! buffers, captured the first time that shape runs; shapes past the limits run as usual.
//!
//! A replay that read stale inputs would answer every text with another batch's scores, with
//! no error. So a capture is only kept after a check: the same shape filled with other texts
//! (the [`canary`]) must give the same scores replayed as in a plain run. This module holds the
//! decisions, the check and the fallbacks ([`GraphCapture`]), free of ONNX Runtime types, so
//! they are unit-tested without a GPU against a fake [`GraphSession`]; `onnx::cuda_graphs` is
//! the real one (binding, copying, running). Anything that fails turns graphs off for the
//! worker (a warning in the log, a count in `/info`) and the batch runs the usual way: a failed
//! capture costs time, never an answer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;

use super::{BackendError, Logits, PaddedBatch};
use crate::infra::device::GraphLimits;

/// Graph id for ONNX Runtime's `gpu_graph_id` run option. 0 is its default graph and -1 means
/// "no graph", so the ids handed out start at 1.
pub type GraphId = i32;

/// The first id handed out.
const FIRST_ID: GraphId = 1;

/// How far a replayed score (a logit) may be from the plain run's. The kernels are the same,
/// so the scores should be identical, but a library may pick another algorithm for a captured
/// stream: this leaves room for fp16 rounding (a few thousandths at these magnitudes) and none
/// for a stale input, which puts a filler row's scores where a text's belong (units apart).
const REPLAY_TOLERANCE: f32 = 0.05;

/// What to do with one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphStep {
    /// Its shape has a checked graph: copy the inputs in, replay.
    Replay(GraphId),
    /// A new shape within the limits: capture a graph under this id.
    Capture(GraphId),
    /// Run it as usual: too large, past the number of graphs, or graphs are off.
    Plain,
}

/// One worker's graphs, by batch shape.
#[derive(Debug)]
pub struct GraphPlan {
    limits: GraphLimits,
    by_shape: HashMap<(usize, usize), GraphId>,
    next_id: GraphId,
    enabled: bool,
}

impl GraphPlan {
    pub fn new(limits: GraphLimits) -> Self {
        Self {
            limits,
            by_shape: HashMap::new(),
            next_id: FIRST_ID,
            enabled: true,
        }
    }

    /// What to do with a batch of `rows` x `width`.
    pub fn step(&self, rows: usize, width: usize) -> GraphStep {
        if !self.enabled || rows > self.limits.max_rows {
            return GraphStep::Plain;
        }
        match self.by_shape.get(&(rows, width)) {
            Some(&id) => GraphStep::Replay(id),
            None if self.by_shape.len() >= self.limits.max_graphs => GraphStep::Plain,
            None => GraphStep::Capture(self.next_id),
        }
    }

    /// The graph `id` for `rows` x `width` was captured and checked: replay it from now on.
    pub fn captured(&mut self, rows: usize, width: usize, id: GraphId) {
        self.by_shape.insert((rows, width), id);
        self.next_id = self.next_id.max(id) + 1;
    }

    /// Every batch runs as usual from now on (a capture or a replay failed: whatever went
    /// wrong would likely go wrong again).
    pub fn disable(&mut self) {
        self.enabled = false;
        self.by_shape.clear();
    }

    pub fn graphs(&self) -> usize {
        self.by_shape.len()
    }
}

/// What capturing needs from a session: ONNX Runtime's CUDA session in the service
/// (`onnx::cuda_graphs`), a fake in the tests.
pub trait GraphSession {
    /// The device buffers one graph is captured with and bound to.
    type Buffers;
    /// Makes and binds the buffers for graph `id` of `rows` x `width`.
    fn bind(&mut self, rows: usize, width: usize, id: GraphId) -> Result<Self::Buffers, String>;
    /// Copies the batch into the buffers, runs their graph (the first run captures it), and
    /// copies the scores out.
    fn run_graph(
        &mut self,
        buffers: &mut Self::Buffers,
        batch: &PaddedBatch,
    ) -> Result<Logits, String>;
    /// Runs the batch the usual way, no graph.
    fn run_plain(&mut self, batch: &PaddedBatch) -> Result<Logits, BackendError>;
}

/// One inference worker's graphs: answers each batch by replaying its shape's graph, by
/// capturing one, or the usual way.
pub struct GraphCapture<B> {
    plan: GraphPlan,
    buffers: HashMap<(usize, usize), B>,
    stats: Arc<GraphStats>,
}

impl<B> GraphCapture<B> {
    pub fn new(limits: GraphLimits, stats: Arc<GraphStats>) -> Self {
        Self {
            plan: GraphPlan::new(limits),
            buffers: HashMap::new(),
            stats,
        }
    }

    pub fn infer<S: GraphSession<Buffers = B>>(
        &mut self,
        session: &mut S,
        batch: &PaddedBatch,
    ) -> Result<Logits, BackendError> {
        let shape = (batch.rows, batch.width);
        match self.plan.step(batch.rows, batch.width) {
            GraphStep::Plain => session.run_plain(batch),
            GraphStep::Replay(_) => {
                let replayed = match self.buffers.get_mut(&shape) {
                    Some(buffers) => session.run_graph(buffers, batch),
                    None => Err("no buffers for a captured shape".to_string()),
                };
                match replayed {
                    Ok(logits) => {
                        self.stats.record_replay();
                        Ok(logits)
                    }
                    Err(reason) => {
                        self.give_up("replaying a CUDA graph failed", &reason);
                        session.run_plain(batch)
                    }
                }
            }
            GraphStep::Capture(id) => match self.capture(session, batch, id) {
                Ok(Some(logits)) => Ok(logits),
                Ok(None) => session.run_plain(batch),
                Err(reason) => {
                    self.give_up("capturing a CUDA graph failed", &reason);
                    session.run_plain(batch)
                }
            },
        }
    }

    /// Captures graph `id` for the batch's shape and answers the batch with it, once the
    /// [`canary`] gave the same scores replayed as in a plain run. Ok(None): the batch has no
    /// canary; the shape is tried again with a later batch.
    fn capture<S: GraphSession<Buffers = B>>(
        &mut self,
        session: &mut S,
        batch: &PaddedBatch,
        id: GraphId,
    ) -> Result<Option<Logits>, String> {
        let Some(canary) = canary(batch) else {
            return Ok(None);
        };
        let mut buffers = session.bind(batch.rows, batch.width, id)?;
        let logits = session.run_graph(&mut buffers, batch)?;
        let replayed = session.run_graph(&mut buffers, &canary)?;
        let plain = session.run_plain(&canary).map_err(|e| e.to_string())?;
        if !same_scores(&replayed, &plain) {
            return Err(format!(
                "a replay of the graph for {} x {} tokens did not give a plain run's scores",
                batch.rows, batch.width
            ));
        }
        tracing::debug!(
            rows = batch.rows,
            width = batch.width,
            graph_id = id,
            "captured a CUDA graph"
        );
        self.buffers.insert((batch.rows, batch.width), buffers);
        self.plan.captured(batch.rows, batch.width, id);
        self.stats.record_capture();
        Ok(Some(logits))
    }

    fn give_up(&mut self, what: &str, reason: &str) {
        tracing::warn!(
            %reason,
            "{what}; this inference worker runs every batch without graphs from now on"
        );
        self.stats.record_give_up(self.plan.graphs());
        self.plan.disable();
        self.buffers.clear();
    }
}

/// A batch of the same shape as `batch` with other contents: the rows in reverse order, and the
/// tokens between each row's first and last reversed. Filler rows stay filler rows (one visible
/// pad token). None when that changes nothing (every row the same, and each a palindrome), so
/// it could not tell a replay that reads its inputs from one that does not.
pub fn canary(batch: &PaddedBatch) -> Option<PaddedBatch> {
    let width = batch.width;
    let mut canary = batch.clone();
    for row in 0..batch.rows {
        let from = (batch.rows - 1 - row) * width;
        let to = row * width;
        let mask = &batch.attention_mask[from..from + width];
        let ids = &batch.input_ids[from..from + width];
        canary.input_ids[to..to + width].copy_from_slice(ids);
        canary.attention_mask[to..to + width].copy_from_slice(mask);
        let len = mask.iter().take_while(|&&m| m == 1).count();
        if len > 2 {
            canary.input_ids[to + 1..to + len - 1].reverse();
        }
    }
    (canary.input_ids != batch.input_ids || canary.attention_mask != batch.attention_mask)
        .then_some(canary)
}

/// Whether a replay's scores are the plain run's, every row (fillers included).
pub fn same_scores(replayed: &Logits, plain: &Logits) -> bool {
    replayed.num_labels == plain.num_labels
        && replayed.values.len() == plain.values.len()
        && replayed
            .values
            .iter()
            .zip(&plain.values)
            .all(|(a, b)| (a - b).abs() <= REPLAY_TOLERANCE)
}

/// One loaded model's graphs, all its workers together, for `/info`.
#[derive(Debug, Default)]
pub struct GraphStats {
    captured: AtomicUsize,
    replays: AtomicU64,
    workers_given_up: AtomicUsize,
}

/// What `/info` shows of [`GraphStats`].
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct GraphCounts {
    /// Graphs captured and checked, all inference workers together.
    pub captured: usize,
    /// Batches answered by replaying one.
    pub replays: u64,
    /// Workers without graphs although they were asked for: ONNX Runtime refused them for
    /// the model, or a capture or replay failed (the log says which).
    pub workers_given_up: usize,
}

impl GraphStats {
    pub fn record_capture(&self) {
        self.captured.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_replay(&self) {
        self.replays.fetch_add(1, Ordering::Relaxed);
    }

    /// A worker gave up on its `graphs` graphs.
    pub fn record_give_up(&self, graphs: usize) {
        self.captured.fetch_sub(graphs, Ordering::Relaxed);
        self.workers_given_up.fetch_add(1, Ordering::Relaxed);
    }

    pub fn counts(&self) -> GraphCounts {
        GraphCounts {
            captured: self.captured.load(Ordering::Relaxed),
            replays: self.replays.load(Ordering::Relaxed),
            workers_given_up: self.workers_given_up.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::device::ShapeBuckets;
    use crate::pipeline::tokenize::TokenizedText;

    const LIMITS: GraphLimits = GraphLimits {
        max_rows: 16,
        max_graphs: 3,
    };

    fn batch(texts: &[&[i64]], buckets: ShapeBuckets) -> PaddedBatch {
        let texts: Vec<TokenizedText> = texts
            .iter()
            .map(|ids| TokenizedText {
                input_ids: ids.to_vec(),
            })
            .collect();
        PaddedBatch::bucketed(texts.iter(), 1, buckets)
    }

    #[test]
    fn a_new_shape_is_captured_once_then_replayed() {
        let mut plan = GraphPlan::new(LIMITS);
        assert_eq!(plan.step(8, 32), GraphStep::Capture(1));
        plan.captured(8, 32, 1);
        assert_eq!(plan.step(8, 32), GraphStep::Replay(1));
        assert_eq!(plan.step(8, 64), GraphStep::Capture(2), "another width");
        plan.captured(8, 64, 2);
        assert_eq!(
            plan.step(16, 32),
            GraphStep::Capture(3),
            "another row count"
        );
        assert_eq!(plan.graphs(), 2);
    }

    #[test]
    fn a_capture_that_was_not_kept_is_tried_again_under_a_fresh_id() {
        let mut plan = GraphPlan::new(LIMITS);
        assert_eq!(plan.step(8, 32), GraphStep::Capture(1));
        // Not recorded (e.g. no canary for that batch): the next batch of the shape tries again.
        assert_eq!(plan.step(8, 32), GraphStep::Capture(1));
        plan.captured(8, 32, 1);
        assert_eq!(plan.step(8, 64), GraphStep::Capture(2));
    }

    #[test]
    fn large_batches_and_shapes_past_the_limit_run_plain() {
        let mut plan = GraphPlan::new(LIMITS);
        assert_eq!(
            plan.step(24, 32),
            GraphStep::Plain,
            "more rows than max_rows"
        );
        for (id, width) in [(1, 32), (2, 64), (3, 96)] {
            assert_eq!(plan.step(8, width), GraphStep::Capture(id));
            plan.captured(8, width, id);
        }
        assert_eq!(plan.step(8, 128), GraphStep::Plain, "max_graphs reached");
        assert_eq!(
            plan.step(8, 96),
            GraphStep::Replay(3),
            "kept ones still replay"
        );
    }

    #[test]
    fn ids_are_never_onnx_runtimes_reserved_0_or_minus_1() {
        let mut plan = GraphPlan::new(GraphLimits {
            max_rows: 64,
            max_graphs: 100,
        });
        for width in 1..=100 {
            let GraphStep::Capture(id) = plan.step(8, width) else {
                panic!("expected a capture")
            };
            assert!(id >= 1);
            plan.captured(8, width, id);
        }
    }

    #[test]
    fn after_a_failure_every_batch_runs_plain() {
        let mut plan = GraphPlan::new(LIMITS);
        plan.captured(8, 32, 1);
        plan.disable();
        assert_eq!(plan.step(8, 32), GraphStep::Plain);
        assert_eq!(plan.step(8, 64), GraphStep::Plain);
        assert_eq!(plan.graphs(), 0);
    }

    #[test]
    fn the_canary_has_the_shape_and_other_contents() {
        let buckets = ShapeBuckets { rows: 4, width: 8 };
        let original = batch(&[&[0, 5, 6, 7, 2], &[0, 9, 2]], buckets);
        let canary = canary(&original).expect("differs");
        assert_eq!((canary.rows, canary.width, canary.texts), (4, 8, 2));
        // Rows reversed: two fillers first, then the second text, then the first with its
        // interior reversed.
        assert_eq!(&canary.input_ids[..8], &[1; 8]);
        assert_eq!(&canary.attention_mask[..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&canary.input_ids[16..24], &[0, 9, 2, 1, 1, 1, 1, 1]);
        assert_eq!(&canary.input_ids[24..], &[0, 7, 6, 5, 2, 1, 1, 1]);
        assert_eq!(&canary.attention_mask[24..], &[1, 1, 1, 1, 1, 0, 0, 0]);
    }

    #[test]
    fn no_canary_when_reversing_changes_nothing() {
        let exact = ShapeBuckets::EXACT;
        assert!(canary(&batch(&[&[0, 5, 2], &[0, 5, 2]], exact)).is_none());
        assert!(canary(&batch(&[&[0, 5, 6, 2]], exact)).is_some());
        assert!(canary(&batch(&[&[0, 5, 2], &[0, 6, 2]], exact)).is_some());
    }

    #[test]
    fn scores_must_match_in_every_row() {
        let plain = Logits {
            num_labels: 2,
            values: vec![0.5, -1.0, 2.0, 0.25],
            rescored: 0,
        };
        let mut replayed = plain.clone();
        assert!(same_scores(&replayed, &plain));
        replayed.values[3] += 0.5 * REPLAY_TOLERANCE;
        assert!(same_scores(&replayed, &plain));
        replayed.values[3] += 2.0 * REPLAY_TOLERANCE;
        assert!(!same_scores(&replayed, &plain), "one score off");
        let swapped = Logits {
            num_labels: 2,
            values: vec![2.0, 0.25, 0.5, -1.0],
            rescored: 0,
        };
        assert!(!same_scores(&swapped, &plain), "another row's scores");
        let short = Logits {
            num_labels: 2,
            values: vec![0.5, -1.0],
            rescored: 0,
        };
        assert!(!same_scores(&short, &plain));
    }

    /// A model whose scores are simple functions of each row: [sum of visible ids, visible
    /// tokens]. Its "graphs" behave as `mode` says.
    struct FakeSession {
        mode: Mode,
        plain_runs: usize,
        graph_runs: usize,
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        /// A replay reads its inputs, as it should.
        Faithful,
        /// A replay answers with the scores of the batch the graph was captured with.
        Stale,
        /// Binding fails (e.g. no pinned memory).
        BindFails,
        /// Replays fail after the capture.
        ReplayFails,
    }

    /// What a graph remembers: the scores of its first batch.
    struct FakeBuffers {
        captured: Option<Logits>,
    }

    fn scores(batch: &PaddedBatch) -> Logits {
        let mut values = Vec::new();
        for row in 0..batch.rows {
            let span = row * batch.width..(row + 1) * batch.width;
            let ids = &batch.input_ids[span.clone()];
            let mask = &batch.attention_mask[span];
            let visible: i64 = ids.iter().zip(mask).map(|(i, m)| i * m).sum();
            // Position-weighted, so that reordering a row's tokens changes its scores.
            let weighted: i64 = ids
                .iter()
                .zip(mask)
                .enumerate()
                .map(|(p, (i, m))| p as i64 * i * m)
                .sum();
            values.extend([visible as f32, weighted as f32]);
        }
        Logits {
            num_labels: 2,
            values,
            rescored: 0,
        }
    }

    impl FakeSession {
        fn new(mode: Mode) -> Self {
            Self {
                mode,
                plain_runs: 0,
                graph_runs: 0,
            }
        }
    }

    impl GraphSession for FakeSession {
        type Buffers = FakeBuffers;

        fn bind(&mut self, _: usize, _: usize, id: GraphId) -> Result<FakeBuffers, String> {
            assert!(id >= FIRST_ID);
            match self.mode {
                Mode::BindFails => Err("no pinned memory".into()),
                _ => Ok(FakeBuffers { captured: None }),
            }
        }

        fn run_graph(
            &mut self,
            buffers: &mut FakeBuffers,
            batch: &PaddedBatch,
        ) -> Result<Logits, String> {
            self.graph_runs += 1;
            let first = buffers.captured.is_none();
            let fresh = scores(batch);
            let remembered = buffers.captured.get_or_insert(fresh.clone()).clone();
            match self.mode {
                Mode::ReplayFails if !first && self.graph_runs > 2 => {
                    Err("cudaGraphLaunch failed".into())
                }
                Mode::Stale => Ok(remembered),
                _ => Ok(fresh),
            }
        }

        fn run_plain(&mut self, batch: &PaddedBatch) -> Result<Logits, BackendError> {
            self.plain_runs += 1;
            Ok(scores(batch))
        }
    }

    /// One worker's graphs over a fake session, and the counts they keep.
    fn worker(mode: Mode) -> (GraphCapture<FakeBuffers>, FakeSession, Arc<GraphStats>) {
        let stats = Arc::new(GraphStats::default());
        let graphs = GraphCapture::new(LIMITS, stats.clone());
        (graphs, FakeSession::new(mode), stats)
    }

    fn articles(first: i64) -> PaddedBatch {
        batch(
            &[&[0, first, first + 1, first + 2, 2], &[0, first + 7, 2]],
            ShapeBuckets { rows: 8, width: 8 },
        )
    }

    #[test]
    fn a_faithful_graph_is_kept_and_later_batches_replay_it() {
        let (mut graphs, mut session, stats) = worker(Mode::Faithful);
        let (first, second) = (articles(10), articles(20));
        assert_eq!(
            graphs.infer(&mut session, &first).ok(),
            Some(scores(&first))
        );
        // The capture ran the canary plain once, to check the replay against.
        assert_eq!((session.plain_runs, session.graph_runs), (1, 2));
        assert_eq!(
            graphs.infer(&mut session, &second).ok(),
            Some(scores(&second))
        );
        assert_eq!(
            (session.plain_runs, session.graph_runs),
            (1, 3),
            "replayed, no plain run"
        );
        let counts = stats.counts();
        assert_eq!((counts.captured, counts.replays), (1, 1));
    }

    #[test]
    fn a_graph_that_ignores_new_inputs_is_refused_and_every_answer_stays_right() {
        let (mut graphs, mut session, stats) = worker(Mode::Stale);
        let (first, second) = (articles(10), articles(20));
        assert_eq!(
            graphs.infer(&mut session, &first).ok(),
            Some(scores(&first))
        );
        assert_eq!(
            graphs.infer(&mut session, &second).ok(),
            Some(scores(&second))
        );
        assert_eq!(session.graph_runs, 2, "no graph run after the failed check");
        let counts = stats.counts();
        assert_eq!(
            (counts.captured, counts.replays, counts.workers_given_up),
            (0, 0, 1)
        );
    }

    #[test]
    fn a_failed_capture_or_replay_answers_the_batch_the_usual_way() {
        for mode in [Mode::BindFails, Mode::ReplayFails] {
            let (mut graphs, mut session, stats) = worker(mode);
            for start in [10, 20, 30] {
                let batch = articles(start);
                assert_eq!(
                    graphs.infer(&mut session, &batch).ok(),
                    Some(scores(&batch))
                );
            }
            let counts = stats.counts();
            assert_eq!((counts.captured, counts.workers_given_up), (0, 1));
        }
    }

    #[test]
    fn a_batch_without_a_canary_runs_plain_and_the_shape_is_captured_later() {
        let (mut graphs, mut session, stats) = worker(Mode::Faithful);
        let twins = batch(&[&[0, 5, 2], &[0, 5, 2]], ShapeBuckets::EXACT);
        assert_eq!(
            graphs.infer(&mut session, &twins).ok(),
            Some(scores(&twins))
        );
        assert_eq!((session.graph_runs, stats.counts().captured), (0, 0));
        let other = batch(&[&[0, 5, 2], &[0, 6, 2]], ShapeBuckets::EXACT);
        assert_eq!(
            graphs.infer(&mut session, &other).ok(),
            Some(scores(&other))
        );
        assert_eq!(stats.counts().captured, 1);
    }

    #[test]
    fn stats_count_captures_replays_and_give_ups() {
        let stats = GraphStats::default();
        stats.record_capture();
        stats.record_capture();
        stats.record_replay();
        stats.record_give_up(2);
        let counts = stats.counts();
        assert_eq!(
            (counts.captured, counts.replays, counts.workers_given_up),
            (0, 1, 1)
        );
    }
}
