//! `newscls eval`: a model's accuracy on a labelled file, and two versions side by side.
//!
//! The file goes through the same pipeline as `classify` ([`super::run`]) into a tally instead
//! of an output file. The figures follow scikit-learn's definitions (macro-F1 is the mean of the
//! per-label F1 over the labels that occur in the gold or the predicted labels, a label never
//! predicted has precision 0), so they reproduce the model card's. Calibration (whether a score
//! of 0.9 is right nine times in ten) is measured on the scores the service answers with:
//! expected calibration error over 15 equal-width confidence bins, and the multi-class Brier
//! score.
//!
//! A multi-label model is scored on label sets: each row's true labels (a JSON list, or names
//! joined by commas) against the labels it was given. Accuracy is then the share of rows whose
//! set is exactly right; per-label precision, recall and F1 count each label's decisions, and
//! micro-F1 pools them (scikit-learn's `average="micro"`). Its calibration is not measured: a
//! row has no single confidence to bin.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::format::{Chunk, ChunkWriter, Fields, FileError, RowResult};
use super::{open_reader, resolve_format, FilesError, Outcome, Pipeline};
use crate::infra::config::{Config, EvalArgs};
use crate::infra::device::{FloatKernels, IntegerKernels};
use crate::pipeline::postprocess::{ranked, softmax};

/// Characters of a differing text shown in the comparison.
const EXCERPT_CHARS: usize = 100;

/// Gold and predicted label per row, in file order.
#[derive(Debug, Default)]
struct Tally {
    gold: Vec<String>,
    /// `None` where the row got an error.
    predicted: Vec<Option<String>>,
    /// Every label's score, in the model's label order; `None` where the row got an error.
    scores: Vec<Option<Vec<f32>>>,
    /// A multi-label model's labels per row; `None` where the row got an error (or the model is
    /// single-label).
    assigned: Vec<Option<Vec<String>>>,
    ids: Vec<String>,
    excerpts: Vec<String>,
    errors: Vec<String>,
}

impl Tally {
    /// Row `i`'s answer: its label, or a multi-label model's labels joined by commas.
    fn answer(&self, i: usize) -> Option<String> {
        match self.assigned.get(i).cloned().flatten() {
            Some(labels) => Some(labels.join(",")),
            None => self.predicted.get(i).cloned().flatten(),
        }
    }
}

/// Collects a run's rows; shared with the caller, which reads it once the run ends.
struct Collector(Arc<Mutex<Tally>>, bool);

impl ChunkWriter for Collector {
    fn write(&mut self, chunk: &Chunk, results: &[RowResult]) -> Result<(), FileError> {
        let mut tally = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for (row, result) in chunk.rows.iter().zip(results) {
            tally.gold.push(row.extra.clone().unwrap_or_default());
            tally
                .predicted
                .push(result.top.as_ref().map(|(label, _)| label.clone()));
            tally.scores.push(result.scores.clone());
            tally.assigned.push(result.labels.clone());
            tally.ids.push(row.id.clone());
            if let Some(error) = &result.error {
                tally.errors.push(format!("{}: {error}", row.id));
            }
            // Kept for the comparison's listing only.
            if self.1 {
                let text = row.text.as_deref().unwrap_or_default();
                tally.excerpts.push(excerpt(text));
            }
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), FileError> {
        Ok(())
    }
}

/// The start of a text on one line.
fn excerpt(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(EXCERPT_CHARS)
        .collect()
}

/// The scores of one model on one file.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub model: String,
    pub version: String,
    /// The ONNX file and device: `model_quantized.onnx on cpu`.
    pub served_by: String,
    /// ONNX Runtime's integer kernels on this CPU: an int8 model's figures can depend on them
    /// (`device::IntegerKernels`).
    pub integer_kernels: IntegerKernels,
    /// ONNX Runtime's float kernel family on this CPU (`device::FloatKernels`).
    pub float_kernels: FloatKernels,
    pub rows: usize,
    /// Rows without a usable text or label; they count as wrong.
    pub errors: usize,
    /// For a multi-label model: rows whose label set is exactly right.
    pub accuracy: f64,
    pub macro_f1: f64,
    /// A multi-label model's F1 over every label decision pooled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub micro_f1: Option<f64>,
    pub labels: Vec<LabelReport>,
    /// Rows: gold label; columns: predicted label, both in `confusion_labels` order.
    pub confusion_labels: Vec<String>,
    pub confusion: Vec<Vec<u64>>,
    /// The model's calibration temperature the scores were computed with (1: none).
    pub temperature: f32,
    pub calibration: Calibration,
    /// With `--fit-temperature`: the temperature these rows call for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature_fit: Option<TemperatureFit>,
}

/// The temperature fitted on a file's rows, and what it changes there.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TemperatureFit {
    /// For `calibration.temperature` in config.json (it replaces the one in use).
    pub temperature: f32,
    pub rows: usize,
    /// Mean negative log-likelihood of the true labels, at the temperature in use and fitted.
    pub nll_before: f64,
    pub nll_after: f64,
    /// The calibration the fitted temperature gives on the same rows.
    pub calibration_after: Calibration,
}

/// Fits the temperature that maximizes the likelihood of the true labels (Guo et al., 2017:
/// one scalar, accuracy unchanged). Works from the scores the model answered with at
/// `temperature`: their logarithms are the logits over `temperature` up to a constant per row,
/// so a further scale `s` is the temperature `temperature / s`. The likelihood is convex in `s`;
/// a golden-section search over `s` in [0.05, 20] finds it. `None` without usable rows.
pub fn fit_temperature(
    labels: &[String],
    gold: &[String],
    scores: &[Option<Vec<f32>>],
    temperature: f32,
) -> Option<TemperatureFit> {
    // Per row: the log-scores and the true label's index.
    let rows: Vec<(Vec<f64>, usize)> = gold
        .iter()
        .zip(scores)
        .filter_map(|(truth, scores)| {
            let truth = labels.iter().position(|l| l == truth)?;
            let scores = scores.as_deref().filter(|s| s.len() == labels.len())?;
            let logs = scores
                .iter()
                .map(|&p| f64::from(p).max(1e-30).ln())
                .collect();
            Some((logs, truth))
        })
        .collect();
    if rows.is_empty() {
        return None;
    }
    let nll = |scale: f64| {
        rows.iter()
            .map(|(logs, truth)| {
                let max = logs
                    .iter()
                    .fold(f64::NEG_INFINITY, |m, &x| m.max(scale * x));
                let sum: f64 = logs.iter().map(|&x| (scale * x - max).exp()).sum();
                max + sum.ln() - scale * logs[*truth]
            })
            .sum::<f64>()
            / rows.len() as f64
    };
    let (mut low, mut high) = (0.05f64.ln(), 20f64.ln());
    let ratio = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..100 {
        let a = high - ratio * (high - low);
        let b = low + ratio * (high - low);
        if nll(a.exp()) <= nll(b.exp()) {
            high = b;
        } else {
            low = a;
        }
    }
    let scale = ((low + high) / 2.0).exp();
    let rescaled: Vec<Option<Vec<f32>>> = scores
        .iter()
        .map(|row| {
            row.as_ref().map(|scores| {
                let logs: Vec<f32> = scores
                    .iter()
                    .map(|&p| (f64::from(p).max(1e-30).ln() * scale) as f32)
                    .collect();
                softmax(&logs)
            })
        })
        .collect();
    Some(TemperatureFit {
        temperature: (f64::from(temperature) / scale) as f32,
        rows: rows.len(),
        nll_before: nll(1.0),
        nll_after: nll(scale),
        calibration_after: calibration(labels, gold, &rescaled),
    })
}

/// How far the scores are from being probabilities, over the rows that got scores.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Calibration {
    /// Expected calibration error: over [`CALIBRATION_BINS`] equal-width bins of the top score,
    /// the mean gap between a bin's accuracy and its mean top score, weighted by its rows. 0 is
    /// perfect.
    pub ece: f64,
    /// Multi-class Brier score: the mean over rows of Σ_label (score − 1 if it is the true
    /// label else 0)². 0 is perfect, 2 the worst.
    pub brier: f64,
    /// The reliability diagram's points, one per bin that holds rows.
    pub bins: Vec<CalibrationBin>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CalibrationBin {
    /// The bin's top-score range: `(lower, upper]` (the first includes 0).
    pub lower: f64,
    pub upper: f64,
    pub rows: u64,
    /// Mean top score of its rows.
    pub confidence: f64,
    /// Share of its rows whose top label is the true one.
    pub accuracy: f64,
}

/// Bins of the expected calibration error (Guo et al., 2017, use 15).
pub const CALIBRATION_BINS: usize = 15;

/// Calibration of `scores` (per row, in `labels` order; `None` rows are left out) against
/// `gold`.
pub fn calibration(labels: &[String], gold: &[String], scores: &[Option<Vec<f32>>]) -> Calibration {
    let mut sums = vec![(0u64, 0.0f64, 0u64); CALIBRATION_BINS];
    let (mut rows, mut brier) = (0u64, 0.0f64);
    for (truth, scores) in gold.iter().zip(scores) {
        let Some(scores) = scores.as_deref().filter(|s| !s.is_empty()) else {
            continue;
        };
        let truth = labels.iter().position(|l| l == truth);
        // The label the row was answered with: the service's own ranking, best first.
        let (top, confidence) = ranked(scores, Some(1))[0];
        let confidence = f64::from(confidence).clamp(0.0, 1.0);
        let bin =
            ((confidence * CALIBRATION_BINS as f64).ceil() as usize).clamp(1, CALIBRATION_BINS) - 1;
        let (count, total, correct) = &mut sums[bin];
        *count += 1;
        *total += confidence;
        *correct += u64::from(truth == Some(top));
        rows += 1;
        brier += scores
            .iter()
            .enumerate()
            .map(|(k, &score)| {
                let target = if truth == Some(k) { 1.0 } else { 0.0 };
                (f64::from(score) - target).powi(2)
            })
            .sum::<f64>();
    }
    if rows == 0 {
        return Calibration::default();
    }
    let width = 1.0 / CALIBRATION_BINS as f64;
    let bins: Vec<CalibrationBin> = sums
        .iter()
        .enumerate()
        .filter(|(_, (count, _, _))| *count > 0)
        .map(|(b, &(count, total, correct))| CalibrationBin {
            lower: b as f64 * width,
            upper: (b + 1) as f64 * width,
            rows: count,
            confidence: total / count as f64,
            accuracy: correct as f64 / count as f64,
        })
        .collect();
    let ece = bins
        .iter()
        .map(|bin| bin.rows as f64 / rows as f64 * (bin.accuracy - bin.confidence).abs())
        .sum();
    Calibration {
        ece,
        brier: brier / rows as f64,
        bins,
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LabelReport {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

/// Accuracy, per-label precision/recall/F1, macro-F1 and the confusion matrix, with the model's
/// labels first (then any other gold label, in order of appearance).
pub fn score(model_labels: &[String], gold: &[String], predicted: &[Option<String>]) -> Report {
    let mut labels: Vec<String> = model_labels.to_vec();
    for label in gold {
        if !labels.contains(label) {
            labels.push(label.clone());
        }
    }
    let index = |label: &str| labels.iter().position(|l| l == label);
    let mut confusion = vec![vec![0u64; labels.len()]; labels.len()];
    let mut correct = 0usize;
    for (g, p) in gold.iter().zip(predicted) {
        if p.as_deref() == Some(g.as_str()) {
            correct += 1;
        }
        if let (Some(gi), Some(pi)) = (index(g), p.as_deref().and_then(index)) {
            confusion[gi][pi] += 1;
        }
    }
    let occurring: BTreeSet<usize> = gold
        .iter()
        .map(String::as_str)
        .chain(predicted.iter().flatten().map(String::as_str))
        .filter_map(index)
        .collect();
    let per_label: Vec<LabelReport> = (0..labels.len())
        .map(|k| {
            let tp = confusion[k][k] as f64;
            let predicted_k: u64 = confusion.iter().map(|row| row[k]).sum();
            let support = gold.iter().filter(|g| **g == labels[k]).count() as u64;
            let (precision, recall) = (ratio(tp, predicted_k as f64), ratio(tp, support as f64));
            LabelReport {
                label: labels[k].clone(),
                precision,
                recall,
                f1: f1(precision, recall),
                support,
            }
        })
        .collect();
    let macro_f1 = if occurring.is_empty() {
        0.0
    } else {
        occurring.iter().map(|&k| per_label[k].f1).sum::<f64>() / occurring.len() as f64
    };
    Report {
        model: String::new(),
        version: String::new(),
        served_by: String::new(),
        integer_kernels: IntegerKernels::detect(),
        float_kernels: FloatKernels::detect(),
        rows: gold.len(),
        errors: predicted.iter().filter(|p| p.is_none()).count(),
        accuracy: if gold.is_empty() {
            0.0
        } else {
            correct as f64 / gold.len() as f64
        },
        macro_f1,
        micro_f1: None,
        labels: per_label,
        confusion_labels: labels,
        confusion,
        temperature: 1.0,
        calibration: Calibration::default(),
        temperature_fit: None,
    }
}

/// `a / b`, 0 when `b` is 0 (scikit-learn's `zero_division=0`).
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// The harmonic mean of a precision and a recall; 0 when both are.
fn f1(precision: f64, recall: f64) -> f64 {
    ratio(2.0 * precision * recall, precision + recall)
}

/// A row's true labels for a multi-label model: a JSON list of names, or names joined by commas
/// (a CSV cell); blanks dropped.
pub fn gold_set(field: &str) -> BTreeSet<String> {
    match serde_json::from_str::<Vec<String>>(field) {
        Ok(list) => list.into_iter().filter(|l| !l.trim().is_empty()).collect(),
        Err(_) => field
            .split(',')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
    }
}

/// A multi-label model's figures: exact-set accuracy, per-label precision/recall/F1 over each
/// label's decisions, macro-F1 over the labels that occur (in the gold or the predicted sets)
/// and micro-F1 over all decisions pooled. A row with an error (`None`) counts as no label
/// predicted.
pub fn score_multi_label(
    model_labels: &[String],
    gold: &[BTreeSet<String>],
    predicted: &[Option<Vec<String>>],
) -> Report {
    let mut labels: Vec<String> = model_labels.to_vec();
    for label in gold.iter().flatten() {
        if !labels.contains(label) {
            labels.push(label.clone());
        }
    }
    let errors = predicted.iter().filter(|p| p.is_none()).count();
    let predicted: Vec<BTreeSet<String>> = predicted
        .iter()
        .map(|p| p.iter().flatten().cloned().collect())
        .collect();
    let (mut pooled_tp, mut pooled_predicted, mut pooled_gold) = (0u64, 0u64, 0u64);
    let mut occurring = 0usize;
    let mut f1_sum = 0.0;
    let per_label: Vec<LabelReport> = labels
        .iter()
        .map(|label| {
            let in_gold = gold.iter().filter(|g| g.contains(label)).count() as u64;
            let in_predicted = predicted.iter().filter(|p| p.contains(label)).count() as u64;
            let tp = gold
                .iter()
                .zip(&predicted)
                .filter(|(g, p)| g.contains(label) && p.contains(label))
                .count() as u64;
            pooled_tp += tp;
            pooled_predicted += in_predicted;
            pooled_gold += in_gold;
            let precision = ratio(tp as f64, in_predicted as f64);
            let recall = ratio(tp as f64, in_gold as f64);
            let report = LabelReport {
                label: label.clone(),
                precision,
                recall,
                f1: f1(precision, recall),
                support: in_gold,
            };
            if in_gold + in_predicted > 0 {
                occurring += 1;
                f1_sum += report.f1;
            }
            report
        })
        .collect();
    let exact = gold.iter().zip(&predicted).filter(|(g, p)| g == p).count();
    let micro_precision = ratio(pooled_tp as f64, pooled_predicted as f64);
    let micro_recall = ratio(pooled_tp as f64, pooled_gold as f64);
    Report {
        rows: gold.len(),
        errors,
        accuracy: ratio(exact as f64, gold.len() as f64),
        macro_f1: ratio(f1_sum, occurring as f64),
        micro_f1: Some(f1(micro_precision, micro_recall)),
        labels: per_label,
        confusion_labels: Vec::new(),
        confusion: Vec::new(),
        ..score(&[], &[], &[])
    }
}

/// Runs `file` through the model `config` names and tallies it.
fn evaluate(
    config: &Config,
    args: &EvalArgs,
    keep_text: bool,
) -> Result<(Report, Tally), FilesError> {
    let format = resolve_format(Some(&args.file), args.format)?;
    let fields = Fields {
        text: args.text_field.clone(),
        id: "id".into(),
        extra: Some(args.label_field.clone()),
    };
    let reader = open_reader(Some(&args.file), format, fields, &config.limits)?;
    let pipeline = Arc::new(Pipeline::load(config)?);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let outcome = super::run(
        &pipeline,
        reader,
        Box::new(Collector(tally.clone(), keep_text)),
        HashSet::new(),
        "eval",
    );
    pipeline.shutdown();
    if let Outcome::Interrupted(signal) = outcome? {
        return Err(FilesError::Usage(format!("interrupted by signal {signal}")));
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(|p| p.into_inner()));
    if let Some(missing) = tally.gold.iter().position(String::is_empty) {
        return Err(FilesError::Usage(format!(
            "row {} has no `{}` field: eval needs a true label on every row",
            tally.ids[missing], args.label_field
        )));
    }
    for error in tally.errors.iter().take(3) {
        eprintln!("newscls eval: row {error} (counted as wrong)");
    }
    let mut report = if pipeline.head.is_multi_label() {
        if args.fit_temperature {
            return Err(FilesError::Usage(
                "--fit-temperature fits a single-label model's softmax; this model is \
                 multi-label"
                    .into(),
            ));
        }
        let gold: Vec<BTreeSet<String>> = tally.gold.iter().map(|g| gold_set(g)).collect();
        score_multi_label(&pipeline.labels, &gold, &tally.assigned)
    } else {
        let mut report = score(&pipeline.labels, &tally.gold, &tally.predicted);
        report.calibration = calibration(&pipeline.labels, &tally.gold, &tally.scores);
        report
    };
    report.temperature = pipeline.temperature;
    if args.fit_temperature {
        report.temperature_fit = fit_temperature(
            &pipeline.labels,
            &tally.gold,
            &tally.scores,
            pipeline.temperature,
        );
    }
    report.model = pipeline.name.clone();
    report.version = pipeline.version.clone();
    report.served_by = pipeline.served_by.clone();
    Ok((report, tally))
}

/// The configuration for the model a `--compare-uri` names: a registry URI or a directory.
fn compare_config(config: &Config, uri: &str) -> Config {
    let mut other = config.clone();
    if uri.contains(":/") {
        other.model.uri = Some(uri.to_string());
    } else {
        other.model.uri = None;
        other.model.dir = uri.into();
    }
    other
}

/// `newscls eval`: prints the report (or two, side by side) and returns it.
pub fn eval(config: &Config, args: &EvalArgs) -> Result<Vec<Report>, FilesError> {
    let compare = args.compare_uri.as_deref();
    if compare.is_some() && args.file == Path::new("-") {
        return Err(FilesError::Usage(
            "--compare-uri reads the file once per model, and standard input can be read only \
             once: pass a file"
                .into(),
        ));
    }
    let (first, first_tally) = evaluate(config, args, compare.is_some())?;

    let Some(uri) = compare else {
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&first).unwrap_or_default()
            );
        } else {
            print!("{}", render(&first));
        }
        return Ok(vec![first]);
    };
    let (second, second_tally) = evaluate(&compare_config(config, uri), args, false)?;
    // The file is read once per model: one that changed in between is not compared row by row.
    if second_tally.predicted.len() != first_tally.predicted.len() {
        return Err(FilesError::Usage(format!(
            "{} had {} rows for the first model and {} for the second: it changed while it was \
             read",
            args.file.display(),
            first_tally.predicted.len(),
            second_tally.predicted.len()
        )));
    }
    let differing: Vec<usize> = (0..first_tally.predicted.len())
        .filter(|&i| first_tally.answer(i) != second_tally.answer(i))
        .collect();
    let shown: Vec<serde_json::Value> = differing
        .iter()
        .take(args.show)
        .map(|&i| {
            serde_json::json!({
                "id": first_tally.ids[i],
                "gold": first_tally.gold[i],
                "first": first_tally.answer(i),
                "second": second_tally.answer(i),
                "text": first_tally.excerpts[i],
            })
        })
        .collect();
    if args.json {
        let document = serde_json::json!({
            "first": first,
            "second": second,
            "differing": differing.len(),
            "differences": shown,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&document).unwrap_or_default()
        );
    } else {
        print!("{}", render_side_by_side(&first, &second));
        println!(
            "\n{} of {} texts are labelled differently (A → B){}",
            differing.len(),
            first.rows,
            if differing.is_empty() { "." } else { ":" }
        );
        for row in &shown {
            let text = |k: &str| row[k].as_str().unwrap_or("error").to_string();
            println!(
                "- {} (true {}): {} → {}: {}",
                text("id"),
                text("gold"),
                text("first"),
                text("second"),
                text("text")
            );
        }
    }
    Ok(vec![first, second])
}

/// Which file, device and integer kernels produced a report's figures.
fn served_by(report: &Report) -> String {
    let pairs = if report.integer_kernels.saturating_pairs() {
        "pairs of products saturate at 16 bits"
    } else {
        "exact sums"
    };
    format!(
        "served by {}; CPU integer kernels {} ({pairs}), float kernels {}",
        report.served_by,
        report.integer_kernels.name(),
        report.float_kernels.name()
    )
}

/// One model's report as Markdown tables.
pub fn render(report: &Report) -> String {
    let mut out = format!(
        "model {} {}: {} rows, {} errors\n{}\naccuracy {:.3}  macro-F1 {:.3}\n\
         calibration (temperature {}): ECE {:.4} ({CALIBRATION_BINS} bins)  Brier {:.4}\n",
        report.model,
        report.version,
        report.rows,
        report.errors,
        served_by(report),
        report.accuracy,
        report.macro_f1,
        report.temperature,
        report.calibration.ece,
        report.calibration.brier
    );
    if let Some(micro_f1) = report.micro_f1 {
        out += &format!(
            "multi-label: accuracy is exact label sets; micro-F1 {micro_f1:.3} (calibration \
             not measured)\n"
        );
    }
    if let Some(fit) = &report.temperature_fit {
        out += &format!(
            "fitted temperature {:.4} on {} rows (calibration.temperature in config.json): \
             NLL {:.4} -> {:.4}, ECE {:.4} -> {:.4}, Brier {:.4} -> {:.4}\n",
            fit.temperature,
            fit.rows,
            fit.nll_before,
            fit.nll_after,
            report.calibration.ece,
            fit.calibration_after.ece,
            report.calibration.brier,
            fit.calibration_after.brier
        );
    }
    out += "\n";
    out += "| label | precision | recall | F1 | support |\n|---|---:|---:|---:|---:|\n";
    for label in &report.labels {
        out += &format!(
            "| {} | {:.3} | {:.3} | {:.3} | {} |\n",
            label.label, label.precision, label.recall, label.f1, label.support
        );
    }
    if report.confusion.is_empty() {
        return out;
    }
    out += "\nConfusion matrix (rows: true label, columns: predicted):\n\n| true \\ predicted | ";
    out += &report.confusion_labels.join(" | ");
    out += " |\n|---|";
    out += &"---:|".repeat(report.confusion_labels.len());
    out += "\n";
    for (label, row) in report.confusion_labels.iter().zip(&report.confusion) {
        let cells: Vec<String> = row.iter().map(u64::to_string).collect();
        out += &format!("| {label} | {} |\n", cells.join(" | "));
    }
    out
}

/// Two reports on the same rows, side by side: A (the configured model) and B (--compare-uri).
pub fn render_side_by_side(first: &Report, second: &Report) -> String {
    let mut out = format!(
        "A: {} {} ({})\nB: {} {} ({})\n{} rows\n\n| | A | B |\n|---|---:|---:|\n",
        first.model,
        first.version,
        served_by(first),
        second.model,
        second.version,
        served_by(second),
        first.rows,
    );
    out += &format!(
        "| accuracy | {:.3} | {:.3} |\n",
        first.accuracy, second.accuracy
    );
    out += &format!(
        "| macro-F1 | {:.3} | {:.3} |\n",
        first.macro_f1, second.macro_f1
    );
    out += &format!(
        "| ECE ({CALIBRATION_BINS} bins) | {:.4} | {:.4} |\n",
        first.calibration.ece, second.calibration.ece
    );
    out += &format!(
        "| Brier | {:.4} | {:.4} |\n",
        first.calibration.brier, second.calibration.brier
    );
    out += &format!("| errors | {} | {} |\n", first.errors, second.errors);
    for label in &first.labels {
        let other = second.labels.iter().find(|l| l.label == label.label);
        out += &format!(
            "| F1 {} | {:.3} | {} |\n",
            label.label,
            label.f1,
            other.map_or("-".to_string(), |l| format!("{:.3}", l.f1))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn multi_label_rows_are_scored_on_label_sets() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|l| l.to_string()).collect();
        assert_eq!(gold_set(r#"["b", "a"]"#), gold_set("a, b"));
        assert_eq!(gold_set(""), BTreeSet::new());
        let gold = vec![gold_set("a,b"), gold_set("c"), gold_set("a")];
        let predicted = vec![
            Some(vec!["b".to_string(), "a".to_string()]),
            Some(vec!["c".to_string(), "a".to_string()]),
            None,
        ];
        let report = score_multi_label(&labels, &gold, &predicted);
        // Exact: the first row only. Pooled: 3 right of 4 given, of 4 true.
        assert!((report.accuracy - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(report.micro_f1, Some(0.75));
        let a = &report.labels[0];
        assert_eq!((a.precision, a.recall, a.support), (0.5, 0.5, 2));
        assert_eq!(report.labels[2].f1, 1.0);
        // Macro: the mean of a (0.5), b (1.0) and c (1.0).
        assert!((report.macro_f1 - 2.5 / 3.0).abs() < 1e-12);
        assert!(report.confusion.is_empty());
        assert_eq!((report.rows, report.errors), (3, 1));
    }

    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn scores_follow_scikit_learn() {
        // sklearn: accuracy 0.6; per label (a, b, c) precision 2/3, 1/2, 0; recall 1, 1/2, 0;
        // F1 0.8, 0.5, 0; macro 0.433.
        let labels = strings(&["a", "b", "c"]);
        let gold = strings(&["a", "a", "b", "b", "c"]);
        let predicted: Vec<Option<String>> = ["a", "a", "b", "a", "b"]
            .iter()
            .map(|s| Some(s.to_string()))
            .collect();
        let report = score(&labels, &gold, &predicted);
        assert!((report.accuracy - 0.6).abs() < 1e-12);
        let f1: Vec<f64> = report.labels.iter().map(|l| l.f1).collect();
        assert!((f1[0] - 0.8).abs() < 1e-12 && (f1[1] - 0.5).abs() < 1e-12 && f1[2] == 0.0);
        assert!((report.macro_f1 - 1.3 / 3.0).abs() < 1e-12);
        assert_eq!(
            report.confusion,
            vec![vec![2, 0, 0], vec![1, 1, 0], vec![0, 1, 0]]
        );
    }

    #[test]
    fn calibration_is_the_gap_between_confidence_and_accuracy() {
        let labels = strings(&["a", "b"]);
        let gold = strings(&["a", "a", "b", "a"]);
        // Top scores 0.9, 0.9 (right, wrong), 0.6 (right), and an error row left out.
        let scores = vec![
            Some(vec![0.9, 0.1]),
            Some(vec![0.1, 0.9]),
            Some(vec![0.4, 0.6]),
            None,
        ];
        let c = calibration(&labels, &gold, &scores);
        // Bin (13/15, 14/15]: confidence 0.9, accuracy 0.5; bin (8/15, 9/15]: 0.6 and 1.
        assert_eq!(c.bins.len(), 2);
        let ece = 2.0 / 3.0 * (0.9f64 - 0.5).abs() + 1.0 / 3.0 * (1.0f64 - 0.6).abs();
        assert!((c.ece - ece).abs() < 1e-6, "{c:?}");
        // Brier: (0.01 + 0.01), (0.81 + 0.81), (0.16 + 0.16); mean over 3 rows.
        let brier = (0.02 + 1.62 + 0.32) / 3.0;
        assert!((c.brier - brier).abs() < 1e-6, "{c:?}");
        let perfect = calibration(&labels, &strings(&["a"]), &[Some(vec![1.0, 0.0])]);
        assert_eq!((perfect.ece, perfect.brier), (0.0, 0.0));
    }

    #[test]
    fn the_fitted_temperature_undoes_an_overconfident_one() {
        // Logits drawn so that softmax at temperature 2 is calibrated; answered at temperature
        // 1 they are over-confident. The fit finds 2 again.
        let labels = strings(&["a", "b", "c"]);
        let mut gold = Vec::new();
        let mut scores = Vec::new();
        let mut state = 7u64;
        let mut uniform = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64) / ((1u64 << 53) as f64)
        };
        for _ in 0..20_000 {
            let logits: Vec<f32> = (0..3).map(|_| (uniform() * 8.0 - 4.0) as f32).collect();
            let calibrated = softmax(&logits.iter().map(|x| x / 2.0).collect::<Vec<f32>>());
            let draw = uniform() as f32;
            let truth = if draw < calibrated[0] {
                0
            } else if draw < calibrated[0] + calibrated[1] {
                1
            } else {
                2
            };
            gold.push(labels[truth].clone());
            scores.push(Some(softmax(&logits)));
        }
        let fit = fit_temperature(&labels, &gold, &scores, 1.0).expect("rows");
        assert!((fit.temperature - 2.0).abs() < 0.1, "{fit:?}");
        assert!(fit.nll_after < fit.nll_before);
        let before = calibration(&labels, &gold, &scores);
        assert!(
            fit.calibration_after.ece < before.ece / 2.0,
            "{fit:?} vs {before:?}"
        );
        // Scores already answered at a temperature: the fit replaces it, it does not stack.
        let at_two: Vec<Option<Vec<f32>>> = scores
            .iter()
            .map(|row| {
                row.as_ref().map(|p| {
                    let logs: Vec<f32> = p.iter().map(|x| x.ln() / 2.0).collect();
                    softmax(&logs)
                })
            })
            .collect();
        let refit = fit_temperature(&labels, &gold, &at_two, 2.0).expect("rows");
        assert!(
            (refit.temperature - fit.temperature).abs() < 0.01,
            "{refit:?}"
        );
    }

    #[test]
    fn two_reports_read_side_by_side() {
        let labels = strings(&["a", "b"]);
        let gold = strings(&["a", "b"]);
        let mut first = score(&labels, &gold, &[Some("a".into()), Some("b".into())]);
        let mut second = score(&labels, &gold, &[Some("a".into()), Some("a".into())]);
        (first.model, first.version) = ("m".into(), "1".into());
        (second.model, second.version) = ("m".into(), "2".into());
        first.served_by = "model_quantized.onnx on cpu".into();
        second.served_by = "model.onnx on cpu".into();
        let table = render_side_by_side(&first, &second);
        // Which file, device and kernels produced each column's figures.
        let kernels = format!("CPU integer kernels {}", IntegerKernels::detect().name());
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("A: m 1 (served by model_quantized.onnx on cpu; ")
                && lines[0].contains(&kernels),
            "{table}"
        );
        assert!(
            lines[1].starts_with("B: m 2 (served by model.onnx on cpu; ")
                && lines[1].contains(&kernels),
            "{table}"
        );
        assert_eq!(lines[2], "2 rows", "{table}");
        assert!(table.contains("| accuracy | 1.000 | 0.500 |"), "{table}");
        assert!(table.contains("| F1 b | 1.000 | 0.000 |"), "{table}");
        assert_eq!(excerpt("two\nlines  and\tspaces"), "two lines and spaces");
    }

    #[test]
    fn errors_count_as_wrong_and_labels_outside_both_lists_are_left_out_of_the_macro_mean() {
        let labels = strings(&["a", "b", "unused"]);
        let gold = strings(&["a", "b"]);
        let predicted = vec![Some("a".to_string()), None];
        let report = score(&labels, &gold, &predicted);
        assert_eq!((report.rows, report.errors), (2, 1));
        assert!((report.accuracy - 0.5).abs() < 1e-12);
        // a: F1 1; b: never predicted, F1 0; "unused" occurs nowhere.
        assert!((report.macro_f1 - 0.5).abs() < 1e-12);
    }
}
