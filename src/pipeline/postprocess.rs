//! Logits to answers: a score function (softmax by default), then labels ranked by score.
//! Pure functions.

/// How logits become scores. Softmax for a single-label classifier; sigmoid scores each label on
/// its own (Hugging Face's `function_to_apply`); `None` returns the logits themselves (TEI's
/// `raw_scores`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScoreFunction {
    #[default]
    Softmax,
    Sigmoid,
    None,
}

impl ScoreFunction {
    /// Scores of `logits` divided by the model's `temperature` (its calibration; 1 leaves them
    /// as they are). `None` returns the logits untouched, whatever the temperature.
    pub fn apply(self, logits: &[f32], temperature: f32) -> Vec<f32> {
        let scaled = || logits.iter().map(move |&x| x / temperature);
        match self {
            ScoreFunction::Softmax => softmax(&scaled().collect::<Vec<f32>>()),
            ScoreFunction::Sigmoid => scaled().map(|x| 1.0 / (1.0 + (-x).exp())).collect(),
            ScoreFunction::None => logits.to_vec(),
        }
    }
}

/// Numerically stable softmax (shifts by the max so `exp` cannot overflow).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// `(label index, probability)` pairs, best first, cut to `top_k` when given.
pub fn ranked(probabilities: &[f32], top_k: Option<usize>) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = probabilities.iter().copied().enumerate().collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(top_k.unwrap_or(ranked.len()));
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let p = softmax(&[1.0, 3.0, 2.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[1] > p[2] && p[2] > p[0]);
    }

    #[test]
    fn softmax_survives_huge_logits() {
        let p = softmax(&[1000.0, 0.0]);
        assert!(p.iter().all(|x| x.is_finite()));
        assert!((p[0] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn sigmoid_scores_each_label_alone_and_none_keeps_logits() {
        let s = ScoreFunction::Sigmoid.apply(&[0.0, 100.0], 1.0);
        assert!((s[0] - 0.5).abs() < 1e-6 && (s[1] - 1.0).abs() < 1e-6);
        assert_eq!(
            ScoreFunction::None.apply(&[1.5, -2.0], 1.0),
            vec![1.5, -2.0]
        );
    }

    #[test]
    fn a_temperature_softens_the_scores_and_keeps_the_ranking() {
        let logits = [2.0, 0.0, 1.0];
        let plain = ScoreFunction::Softmax.apply(&logits, 1.0);
        let softer = ScoreFunction::Softmax.apply(&logits, 2.0);
        assert_eq!(softer, softmax(&[1.0, 0.0, 0.5]));
        assert!(softer[0] < plain[0], "{softer:?} vs {plain:?}");
        assert_eq!(ranked(&softer, None)[0].0, ranked(&plain, None)[0].0);
        let sigmoid = ScoreFunction::Sigmoid.apply(&[2.0], 2.0);
        assert!((sigmoid[0] - 1.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
        assert_eq!(
            ScoreFunction::None.apply(&logits, 2.0),
            logits.to_vec(),
            "raw scores stay raw"
        );
    }

    #[test]
    fn ranked_is_best_first_and_cut_to_top_k() {
        assert_eq!(ranked(&[0.2, 0.5, 0.3], Some(2)), vec![(1, 0.5), (2, 0.3)]);
        assert_eq!(ranked(&[0.2, 0.5, 0.3], None).len(), 3);
    }
}
