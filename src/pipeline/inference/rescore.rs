//! Margin-gated re-scoring: exact labels at int8 speed on a CPU.
//!
//! A quantized variant gives the full-precision model's top label on all but a few texts, and
//! those few are close calls: their top two logits are close, so int8's rounding can swap them
//! (Dutta et al., "Accuracy is Not All You Need", 2024). [`RescoringBackend`] runs every batch
//! on the fast variant, then runs each text whose top-two margin is below the model's threshold
//! again on a precise variant, alone, and answers it from there (the big/little cascade of Park
//! et al., 2015). Alone, padded to its own length: a re-scored text's answer cannot depend on
//! what else was in its batch. The threshold is chosen at export from data
//! (`training/rescore_margin.py`) and read from config.json's `rescore` block.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Backend, BackendError, Logits, PaddedBatch};
use crate::infra::device::Device;
use crate::pipeline::tokenize::TokenizedText;

/// How many texts a model's re-scoring backends saw, and how many they re-scored.
#[derive(Debug, Default)]
pub struct RescoreStats {
    texts: AtomicU64,
    rescored: AtomicU64,
}

impl RescoreStats {
    pub fn texts(&self) -> u64 {
        self.texts.load(Ordering::Relaxed)
    }

    pub fn rescored(&self) -> u64 {
        self.rescored.load(Ordering::Relaxed)
    }
}

/// The gap between the best and the second-best logit; NaN when a logit is NaN, infinite with
/// fewer than two labels.
pub fn top_two_margin(logits: &[f32]) -> f32 {
    let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in logits {
        if x.is_nan() {
            return f32::NAN;
        }
        if x > first {
            second = first;
            first = x;
        } else if x > second {
            second = x;
        }
    }
    first - second
}

/// A fast backend whose close calls are answered by a precise one.
pub struct RescoringBackend {
    fast: Box<dyn Backend>,
    precise: Box<dyn Backend>,
    /// Texts whose fast top-two margin is below this are re-scored.
    below_margin: f32,
    /// The tokenizer's pad id, to pad a re-scored text on its own.
    pad_id: i64,
    stats: Arc<RescoreStats>,
}

impl RescoringBackend {
    pub fn new(
        fast: Box<dyn Backend>,
        precise: Box<dyn Backend>,
        below_margin: f32,
        pad_id: i64,
        stats: Arc<RescoreStats>,
    ) -> Self {
        Self {
            fast,
            precise,
            below_margin,
            pad_id,
            stats,
        }
    }
}

impl Backend for RescoringBackend {
    fn device(&self) -> Device {
        self.fast.device()
    }

    fn infer(&mut self, batch: &PaddedBatch) -> Result<Logits, BackendError> {
        let mut logits = self.fast.infer(batch)?;
        let labels = logits.num_labels;
        let mut rescored = 0;
        for row in 0..batch.texts {
            let span = row * labels..(row + 1) * labels;
            let Some(values) = logits.values.get(span.clone()) else {
                break;
            };
            // NaN compares false: a row the fast variant could not score is re-scored too.
            if top_two_margin(values) >= self.below_margin {
                continue;
            }
            let precise = self.precise.infer(&batch.row_alone(row, self.pad_id))?;
            let answer = precise
                .values
                .get(..labels)
                .ok_or(BackendError::OutputShape {
                    got: precise.values.len(),
                    rows: 1,
                    num_labels: labels,
                })?;
            logits.values[span].copy_from_slice(answer);
            rescored += 1;
        }
        self.stats
            .texts
            .fetch_add(batch.texts as u64, Ordering::Relaxed);
        self.stats
            .rescored
            .fetch_add(rescored as u64, Ordering::Relaxed);
        logits.rescored = rescored;
        Ok(logits)
    }
}

impl PaddedBatch {
    /// Row `row`'s text as a batch of its own, padded to nothing but its own length.
    pub fn row_alone(&self, row: usize, pad_id: i64) -> PaddedBatch {
        let start = row * self.width;
        let mask = &self.attention_mask[start..start + self.width];
        let ids = &self.input_ids[start..start + self.width];
        let text = TokenizedText {
            input_ids: ids
                .iter()
                .zip(mask)
                .filter(|(_, &m)| m == 1)
                .map(|(&id, _)| id)
                .collect(),
        };
        PaddedBatch::new([&text], pad_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits from the ids: each label's logit is `weight[label] * (sum of the row's ids)`, so
    /// rows differ in margin by their ids. Counts the rows it is asked for.
    struct Sums {
        weights: Vec<f32>,
        rows_seen: Vec<usize>,
    }

    impl Backend for Sums {
        fn device(&self) -> Device {
            Device::Cpu
        }

        fn infer(&mut self, batch: &PaddedBatch) -> Result<Logits, BackendError> {
            self.rows_seen.push(batch.rows);
            let mut values = Vec::new();
            for row in 0..batch.rows {
                let start = row * batch.width;
                let sum: i64 = (start..start + batch.width)
                    .filter(|&i| batch.attention_mask[i] == 1)
                    .map(|i| batch.input_ids[i])
                    .sum();
                values.extend(self.weights.iter().map(|w| w * sum as f32));
            }
            Ok(Logits {
                num_labels: self.weights.len(),
                values,
                rescored: 0,
            })
        }
    }

    #[test]
    fn only_close_calls_are_run_again_each_alone() {
        let fast = Sums {
            weights: vec![1.0, 0.0],
            rows_seen: vec![],
        };
        let precise = Sums {
            weights: vec![0.0, 1.0],
            rows_seen: vec![],
        };
        let stats = Arc::new(RescoreStats::default());
        let mut backend =
            RescoringBackend::new(Box::new(fast), Box::new(precise), 2.5, 0, stats.clone());
        // Margins 1 (close), 5 (clear), 2 (close).
        let texts = [
            TokenizedText { input_ids: vec![1] },
            TokenizedText {
                input_ids: vec![2, 3],
            },
            TokenizedText {
                input_ids: vec![1, 1],
            },
        ];
        let batch = PaddedBatch::new(texts.iter(), 0);
        let logits = backend.infer(&batch).expect("runs");
        assert_eq!(logits.rescored, 2);
        let rows: Vec<&[f32]> = logits.rows().collect();
        assert_eq!(rows[0], &[0.0, 1.0], "the precise answer");
        assert_eq!(rows[1], &[5.0, 0.0], "the fast answer");
        assert_eq!(rows[2], &[0.0, 2.0]);
        assert_eq!((stats.texts(), stats.rescored()), (3, 2));
    }

    #[test]
    fn a_row_alone_keeps_its_tokens_and_drops_the_padding() {
        let texts = [
            TokenizedText {
                input_ids: vec![5, 6],
            },
            TokenizedText {
                input_ids: vec![7, 8, 9],
            },
        ];
        let batch = PaddedBatch::new(texts.iter(), 1);
        let alone = batch.row_alone(0, 1);
        assert_eq!(alone, PaddedBatch::new([&texts[0]], 1));
        assert_eq!((alone.rows, alone.width), (1, 2));
    }

    #[test]
    fn margins_are_top_two_gaps_and_nan_is_never_clear() {
        assert_eq!(top_two_margin(&[1.0, 3.0, 2.5]), 0.5);
        assert!(top_two_margin(&[1.0, f32::NAN]).is_nan());
        assert!(top_two_margin(&[1.0]).is_infinite());
    }
}
