//! Inference backends behind one small synchronous trait.
//!
//! A backend turns a padded batch of token ids into logits. It runs on a dedicated inference
//! thread (see `batching::worker`), never on the async executor, so it may block. `ort` types
//! stay inside `onnx.rs`; everything else sees only [`PaddedBatch`] and [`Logits`].

pub mod graph;
pub mod graph_capture;
pub mod onnx;
pub mod rescore;

use std::path::PathBuf;

use crate::infra::device::{Device, ShapeBuckets};
use crate::pipeline::tokenize::TokenizedText;

/// Sequences padded to the longest one in the batch, row-major `[rows, width]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedBatch {
    /// Rows holding real texts; rows past them are fillers (see [`PaddedBatch::bucketed`]).
    pub texts: usize,
    pub rows: usize,
    pub width: usize,
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    /// All zeros: every text is a single segment. Built once per batch, not per text.
    pub type_ids: Vec<i64>,
}

impl PaddedBatch {
    pub fn new<'a>(sequences: impl IntoIterator<Item = &'a TokenizedText>, pad_id: i64) -> Self {
        Self::bucketed(sequences, pad_id, ShapeBuckets::EXACT)
    }

    /// Like [`PaddedBatch::new`], with rows and width rounded up to the buckets' multiples.
    /// Filler rows hold one visible pad token (a row with nothing to attend to would be NaN);
    /// their outputs are ignored, since each text's answer is read from its own row.
    pub fn bucketed<'a>(
        sequences: impl IntoIterator<Item = &'a TokenizedText>,
        pad_id: i64,
        buckets: ShapeBuckets,
    ) -> Self {
        let sequences: Vec<&TokenizedText> = sequences.into_iter().collect();
        let texts = sequences.len();
        let rows = texts.next_multiple_of(buckets.rows.max(1));
        let longest = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        let width = longest.next_multiple_of(buckets.width.max(1));
        let mut batch = Self {
            texts,
            rows,
            width,
            input_ids: vec![pad_id; rows * width],
            attention_mask: vec![0; rows * width],
            type_ids: vec![0; rows * width],
        };
        for (row, seq) in sequences.into_iter().enumerate() {
            let start = row * width;
            batch.input_ids[start..start + seq.len()].copy_from_slice(&seq.input_ids);
            batch.attention_mask[start..start + seq.len()].fill(1);
        }
        for row in texts..rows {
            batch.attention_mask[row * width] = 1;
        }
        batch
    }

    /// Token slots including padding: what the model actually computes.
    pub fn padded_tokens(&self) -> usize {
        self.rows * self.width
    }

    /// Real tokens, without padding.
    pub fn real_tokens(&self) -> usize {
        self.attention_mask.iter().filter(|&&m| m == 1).count()
    }
}

/// Model output, row-major `[rows, num_labels]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    pub num_labels: usize,
    pub values: Vec<f32>,
    /// Rows answered by a precise variant after a close call (see [`rescore`]); 0 otherwise.
    pub rescored: usize,
}

impl Logits {
    pub fn rows(&self) -> impl Iterator<Item = &[f32]> {
        self.values.chunks(self.num_labels.max(1))
    }
}

/// Why a backend could not be set up for a model file: the runtime library, the file itself, or
/// a graph that does not fit what the service feeds it.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("ONNX Runtime library {path}: {reason} (run `make setup`, or set model.onnxruntime_library / ORT_DYLIB_PATH)")]
    Runtime { path: PathBuf, reason: String },
    #[error("model file {path}: {reason}")]
    ModelFile { path: PathBuf, reason: String },
    #[error("model {dir} is inconsistent: {reason}")]
    Mismatch { dir: PathBuf, reason: String },
}

/// Why one batch failed; only that batch's texts see it.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0}")]
    Run(String),
    #[error("model returned {got} values for {rows} rows of {num_labels} labels")]
    OutputShape {
        got: usize,
        rows: usize,
        num_labels: usize,
    },
}

pub trait Backend: Send {
    /// The device this backend runs on: how its batches are shaped and scheduled follows.
    fn device(&self) -> Device;
    fn infer(&mut self, batch: &PaddedBatch) -> Result<Logits, BackendError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(ids: &[i64]) -> TokenizedText {
        TokenizedText {
            input_ids: ids.to_vec(),
        }
    }

    #[test]
    fn pads_only_to_the_longest_sequence_in_the_batch() {
        let seqs = [seq(&[0, 5, 2]), seq(&[0, 7, 8, 9, 2])];
        let batch = PaddedBatch::new(seqs.iter(), 1);
        assert_eq!((batch.rows, batch.width), (2, 5));
        assert_eq!(batch.input_ids, vec![0, 5, 2, 1, 1, 0, 7, 8, 9, 2]);
        assert_eq!(batch.attention_mask, vec![1, 1, 1, 0, 0, 1, 1, 1, 1, 1]);
        assert_eq!((batch.real_tokens(), batch.padded_tokens()), (8, 10));
    }

    #[test]
    fn gpu_buckets_round_the_shape_and_filler_rows_see_one_token() {
        let seqs = [seq(&[0, 5, 2]), seq(&[0, 7, 8, 9, 2])];
        let batch = PaddedBatch::bucketed(seqs.iter(), 1, ShapeBuckets { rows: 4, width: 8 });
        assert_eq!((batch.texts, batch.rows, batch.width), (2, 4, 8));
        assert_eq!(&batch.input_ids[..8], &[0, 5, 2, 1, 1, 1, 1, 1]);
        assert_eq!(
            &batch.attention_mask[16..],
            &[1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
        );
        let exact = PaddedBatch::bucketed(seqs.iter(), 1, ShapeBuckets { rows: 2, width: 5 });
        assert_eq!(
            (exact.rows, exact.width),
            (2, 5),
            "already on the multiples"
        );
    }
}
