//! The shadow challenger: a second model version that sees (a sample of) the texts the champion
//! answers, answers no one, and is compared with the champion text by text.
//!
//! A data scientist points `shadow.uri` at a new version (`models:/news@challenger`) and
//! watches how often it agrees with the serving one, and on which labels it differs, on live
//! traffic, before anyone moves the champion's alias. Rules:
//! - The champion is never slowed or changed: mirroring starts once the champion's answers are
//!   in, and costs the caller a sample draw, a copy of the drawn texts' token ids and a task
//!   spawn; everything else runs after the caller is answered.
//! - The challenger has its own bounded queue (`shadow.max_queue`) and one inference worker at
//!   the operating system's lowest priority; a mirrored text that finds the queue full (or
//!   would not be computed within [`MIRROR_DEADLINE`]) is dropped and counted, never waited
//!   for.
//! - A mirrored text reuses the champion's token ids when the two tokenizers give the same ids
//!   (the same file and window); otherwise it is tokenized again on the blocking pool.
//! - Labels are compared by name, so a challenger may reorder or add labels.
//!
//! What it measures goes to the `newscls_shadow_*` metrics and to a [`Summary`] (`GET /shadow`),
//! which starts over whenever the challenger or the champion changes version.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::ServingModel;
use crate::infra::config::{BatchingConfig, ShadowConfig};
use crate::infra::events::{Role, ShadowAnswered, ShadowText};
use crate::infra::metrics::Metrics;
use crate::pipeline::batching::{Job, JobError, JobOutput, Priority};
use crate::pipeline::model::{Head, LoadedModel};
use crate::pipeline::tokenize::{TokenizedText, TruncationSide};

/// A mirrored text the challenger has not computed by then is dropped: the queue bound is what
/// limits the backlog, and a late comparison is as good as a prompt one, but one stuck behind a
/// starved worker for this long only holds memory.
pub const MIRROR_DEADLINE: Duration = Duration::from_secs(600);
/// Characters of a text kept with a disagreement (`shadow.keep_disagreements`).
const EXCERPT_CHARS: usize = 200;

/// The challenger slot and what has been measured since it was filled.
pub struct Shadow {
    settings: ShadowConfig,
    /// The champion's batching rules with the challenger's queue bound.
    batching: BatchingConfig,
    challenger: RwLock<Option<Arc<ServingModel>>>,
    /// The challenger's queue and worker count into these, never exported: the champion's
    /// queue depth and batch figures stay the champion's.
    metrics: Arc<Metrics>,
    comparison: Mutex<Comparison>,
    /// Draws so far, for the sampling sequence.
    draws: AtomicU64,
}

/// What has been compared since the current champion/challenger pair began.
struct Comparison {
    /// Which pair this is: a text mirrored to an earlier pair is not counted in this one.
    epoch: u64,
    since: SystemTime,
    /// (champion's top label, challenger's top label) -> texts.
    pairs: BTreeMap<(String, String), u64>,
    dropped: u64,
    failed: u64,
    recent: VecDeque<Disagreement>,
}

impl Comparison {
    fn new(epoch: u64) -> Self {
        Self {
            epoch,
            since: SystemTime::now(),
            pairs: BTreeMap::new(),
            dropped: 0,
            failed: 0,
            recent: VecDeque::new(),
        }
    }
}

/// One text the two models labelled differently.
#[derive(Debug, Clone)]
pub struct Disagreement {
    /// The text's first 200 characters.
    pub excerpt: String,
    pub champion: (String, f32),
    pub challenger: (String, f32),
    pub at: SystemTime,
}

/// A text picked for mirroring, with what the champion made of it.
pub(super) struct Pick {
    /// The champion's ids, when the challenger's tokenizer gives the same ones.
    pub ids: Option<TokenizedText>,
    /// The text, when it is needed: to tokenize again, or to keep as a disagreement.
    pub text: Option<String>,
    pub champion_logits: Vec<f32>,
}

/// How one mirrored text ended.
enum Outcome {
    Compared {
        champion: (String, f32),
        challenger: (String, f32),
        /// |champion's score - challenger's score| for the champion's top label.
        difference: f32,
    },
    Dropped,
    Failed,
}

impl Shadow {
    pub fn new(settings: &ShadowConfig, batching: &BatchingConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            settings: settings.clone(),
            batching: BatchingConfig {
                max_queue_size: settings.max_queue,
                ..batching.clone()
            },
            challenger: RwLock::new(None),
            metrics,
            comparison: Mutex::new(Comparison::new(0)),
            draws: AtomicU64::new(0),
        }
    }

    pub fn settings(&self) -> &ShadowConfig {
        &self.settings
    }

    /// The challenger in service, if one is loaded.
    pub fn challenger(&self) -> Option<Arc<ServingModel>> {
        self.challenger
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `model` in as the challenger: its own queue and one background worker. The old
    /// challenger finishes what it holds and is freed; the comparison starts over.
    pub fn swap(&self, model: LoadedModel) {
        let new = Arc::new(ServingModel::start(
            model,
            &self.batching,
            &self.metrics,
            Role::Challenger,
        ));
        let old = self
            .challenger
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .replace(new);
        self.reset();
        if let Some(old) = old {
            // Its mirrored texts would only be compared with a pair that no longer serves.
            super::retire(old, ServingModel::stop_dropping_background);
        }
    }

    /// Starts the comparison over (the champion or the challenger changed).
    pub fn reset(&self) {
        let mut comparison = self.lock();
        *comparison = Comparison::new(comparison.epoch + 1);
    }

    /// Stops the challenger's worker, dropping the mirrored texts it has not started: shutdown
    /// does not wait for work no caller waits for. Blocks.
    pub fn shutdown(&self) {
        if let Some(challenger) = self.challenger() {
            challenger.stop_dropping_background();
        }
    }

    /// Which of `count` texts to mirror: each with probability `shadow.sample`, drawn from a
    /// deterministic sequence (SplitMix64 over a counter), so no lock and no RNG state.
    pub(super) fn draw(&self, count: usize) -> Vec<usize> {
        let sample = self.settings.sample;
        if sample <= 0.0 {
            return Vec::new();
        }
        if sample >= 1.0 {
            return (0..count).collect();
        }
        let first = self.draws.fetch_add(count as u64, Ordering::Relaxed);
        (0..count)
            .filter(|i| unit_interval(splitmix64(first + *i as u64)) < sample)
            .collect()
    }

    /// Whether mirrored texts must keep their text (to tokenize it again, or to show it).
    pub(super) fn needs_text(&self, reuses_ids: bool) -> bool {
        !reuses_ids || self.settings.keep_disagreements > 0
    }

    /// Sends `picks` to `challenger` and compares its answers with the champion's, in a task of
    /// its own. Returns at once; called once the champion's answers are in.
    /// `tokenize_permits` are the champion's: a text the challenger must tokenize again takes
    /// one only when one is free (background priority), so mirroring never makes a request wait
    /// for the tokenizer; when none is free, the texts are dropped and counted.
    pub(super) fn mirror(
        self: &Arc<Self>,
        challenger: Arc<ServingModel>,
        (champion_labels, champion_temperature, champion_head): (Arc<[String]>, f32, Head),
        picks: Vec<Pick>,
        side: TruncationSide,
        tokenize_permits: Arc<tokio::sync::Semaphore>,
    ) {
        if picks.is_empty() {
            return;
        }
        let shadow = self.clone();
        let mirrored = Instant::now();
        let epoch = self.lock().epoch;
        tokio::spawn(async move {
            let picks = match shadow
                .ensure_ids(&challenger, picks, side, epoch, &tokenize_permits)
                .await
            {
                Some(picks) => picks,
                None => return,
            };
            let deadline = mirrored + MIRROR_DEADLINE;
            let mut waiting = Vec::with_capacity(picks.len());
            for (ids, pick) in picks {
                let (mut job, reply) = Job::new(ids, deadline);
                job.priority = Priority::Background;
                // One text at a time: a full queue drops only the texts that do not fit.
                match challenger.queue.admit(vec![job]) {
                    Ok(()) => waiting.push((reply, pick)),
                    Err(_) => shadow.record(Outcome::Dropped, None, epoch),
                }
            }
            for (reply, pick) in waiting {
                let outcome = match reply.await {
                    Ok(Ok(output)) => {
                        shadow.metrics.emit(ShadowAnswered {
                            elapsed: mirrored.elapsed(),
                        });
                        compare(
                            (&champion_labels, champion_temperature, &champion_head),
                            &pick.champion_logits,
                            (
                                &challenger.labels,
                                challenger.spec.temperature,
                                &challenger.spec.head,
                            ),
                            &output,
                        )
                    }
                    Ok(Err(JobError::Inference(_))) => Outcome::Failed,
                    // The queue drops a job only once its deadline has passed (or it closed).
                    Err(_) => Outcome::Dropped,
                };
                shadow.record(outcome, pick.text, epoch);
            }
        });
    }

    /// Every pick with ids for the challenger: the champion's, or its text tokenized again.
    async fn ensure_ids(
        &self,
        challenger: &Arc<ServingModel>,
        picks: Vec<Pick>,
        side: TruncationSide,
        epoch: u64,
        tokenize_permits: &Arc<tokio::sync::Semaphore>,
    ) -> Option<Vec<(TokenizedText, Pick)>> {
        if picks.iter().all(|p| p.ids.is_some()) {
            return Some(
                picks
                    .into_iter()
                    .filter_map(|mut p| p.ids.take().map(|ids| (ids, p)))
                    .collect(),
            );
        }
        let Ok(_permit) = tokenize_permits.clone().try_acquire_owned() else {
            for pick in picks {
                self.record(Outcome::Dropped, pick.text, epoch);
            }
            return None;
        };
        let model = challenger.clone();
        let tokenized = tokio::task::spawn_blocking(move || {
            let texts: Vec<String> = picks
                .iter()
                .map(|p| p.text.clone().unwrap_or_default())
                .collect();
            let ids = model.tokenizer.encode_with(&texts, true, side);
            (picks, ids)
        })
        .await;
        match tokenized {
            Ok((picks, Ok(ids))) => Some(ids.into_iter().zip(picks).collect()),
            Ok((picks, Err(e))) => {
                tracing::warn!(error = %e, "shadow: the challenger's tokenizer failed");
                for pick in picks {
                    self.record(Outcome::Failed, pick.text, epoch);
                }
                None
            }
            Err(_) => None,
        }
    }

    /// Counts one mirrored text in the metrics, and in the summary if it was mirrored to the
    /// pair now compared (`epoch`).
    fn record(&self, outcome: Outcome, text: Option<String>, epoch: u64) {
        let mut guard = self.lock();
        // Texts mirrored to an earlier pair count in the metrics only.
        let mut stale = Comparison::new(epoch);
        let comparison = if guard.epoch == epoch {
            &mut *guard
        } else {
            &mut stale
        };
        match outcome {
            Outcome::Compared {
                champion,
                challenger,
                difference,
            } => {
                let agree = champion.0 == challenger.0;
                self.metrics.emit(ShadowText::Compared {
                    champion: &champion.0,
                    challenger: &challenger.0,
                    difference,
                });
                *comparison
                    .pairs
                    .entry((champion.0.clone(), challenger.0.clone()))
                    .or_default() += 1;
                let keep = self.settings.keep_disagreements;
                if !agree && keep > 0 {
                    if comparison.recent.len() == keep {
                        comparison.recent.pop_front();
                    }
                    comparison.recent.push_back(Disagreement {
                        excerpt: text
                            .unwrap_or_default()
                            .chars()
                            .take(EXCERPT_CHARS)
                            .collect(),
                        champion,
                        challenger,
                        at: SystemTime::now(),
                    });
                }
            }
            Outcome::Dropped => {
                self.metrics.emit(ShadowText::Dropped);
                comparison.dropped += 1;
            }
            Outcome::Failed => {
                self.metrics.emit(ShadowText::Failed);
                comparison.failed += 1;
            }
        }
    }

    /// What has been measured since the current pair began.
    pub fn summary(&self) -> Summary {
        let comparison = self.lock();
        Summary {
            since: comparison.since,
            pairs: comparison
                .pairs
                .iter()
                .map(|((a, b), n)| (a.clone(), b.clone(), *n))
                .collect(),
            dropped: comparison.dropped,
            failed: comparison.failed,
            disagreements: comparison.recent.iter().rev().cloned().collect(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Comparison> {
        self.comparison.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One version's side of a comparison: its labels, calibration temperature and head.
type Side<'a> = (&'a [String], f32, &'a Head);

/// What one version answered for a text, as the comparison reads it.
struct Answer {
    /// Its label, or a multi-label model's labels over their thresholds, sorted by name and
    /// joined by commas (so that equal sets read equal): what agreement is judged on.
    name: String,
    /// Its best label by score, and that score.
    top: (String, f32),
    /// Every label's score, as this version would answer.
    scores: Vec<f32>,
}

impl Answer {
    fn of((labels, temperature, head): Side<'_>, logits: &[f32]) -> Option<Self> {
        let scores = head.default_scores().apply(logits, temperature);
        let best = best(&scores)?;
        let top = (labels.get(best)?.clone(), scores[best]);
        let name = match head {
            Head::SingleLabel => top.0.clone(),
            Head::MultiLabel { .. } => {
                let mut names: Vec<&str> = head
                    .assign(logits, temperature)
                    .into_iter()
                    .filter_map(|i| labels.get(i).map(String::as_str))
                    .collect();
                names.sort_unstable();
                names.join(",")
            }
        };
        Some(Self { name, top, scores })
    }
}

/// The comparison of one text: labels (label sets for a multi-label head) by name, and the
/// score difference on the champion's best label. The scores compared are the ones each
/// version would answer with (its head's function, its calibration temperature).
fn compare(
    champion: Side<'_>,
    champion_logits: &[f32],
    challenger: Side<'_>,
    output: &JobOutput,
) -> Outcome {
    let challenger_labels = challenger.0;
    let (Some(c), Some(d)) = (
        Answer::of(champion, champion_logits),
        Answer::of(challenger, &output.logits),
    ) else {
        return Outcome::Failed;
    };
    // The challenger's score for the champion's best label (0 when it does not have that label).
    let same_label = challenger_labels
        .iter()
        .position(|l| *l == c.top.0)
        .map_or(0.0, |i| d.scores[i]);
    Outcome::Compared {
        champion: (c.name, c.top.1),
        challenger: (d.name, d.top.1),
        difference: (c.top.1 - same_label).abs(),
    }
}

fn best(scores: &[f32]) -> Option<usize> {
    scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

/// What `GET /shadow` reports, from the comparison since `since`.
#[derive(Debug, Clone)]
pub struct Summary {
    pub since: SystemTime,
    /// (champion's label, challenger's label, texts), every pair seen.
    pub pairs: Vec<(String, String, u64)>,
    pub dropped: u64,
    pub failed: u64,
    /// Newest first.
    pub disagreements: Vec<Disagreement>,
}

/// One label's figures, taking the champion's labels as the reference.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelAgreement {
    pub label: String,
    /// Texts the champion gave this label.
    pub champion: u64,
    /// Texts the challenger gave this label.
    pub challenger: u64,
    /// Of the challenger's texts with this label, the share the champion labelled so too.
    pub precision: Option<f64>,
    /// Of the champion's texts with this label, the share the challenger labelled so too.
    pub recall: Option<f64>,
}

impl Summary {
    /// Texts both models answered.
    pub fn compared(&self) -> u64 {
        self.pairs.iter().map(|p| p.2).sum()
    }

    pub fn agreed(&self) -> u64 {
        self.pairs.iter().filter(|p| p.0 == p.1).map(|p| p.2).sum()
    }

    /// Agreed / compared; `None` before the first comparison.
    pub fn agreement(&self) -> Option<f64> {
        let compared = self.compared();
        (compared > 0).then(|| self.agreed() as f64 / compared as f64)
    }

    /// Every text sent to the challenger, whatever became of it.
    pub fn mirrored(&self) -> u64 {
        self.compared() + self.dropped + self.failed
    }

    /// Per label (every label either model gave), sorted by name.
    pub fn per_label(&self) -> Vec<LabelAgreement> {
        let mut labels: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
        for (champion, challenger, n) in &self.pairs {
            labels.entry(champion).or_default().0 += n;
            labels.entry(challenger).or_default().1 += n;
            if champion == challenger {
                labels.entry(champion).or_default().2 += n;
            }
        }
        let share = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
        labels
            .into_iter()
            .map(|(label, (champion, challenger, both))| LabelAgreement {
                label: label.to_string(),
                champion,
                challenger,
                precision: share(both, challenger),
                recall: share(both, champion),
            })
            .collect()
    }
}

/// SplitMix64: a well-mixed 64-bit value for each counter value.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `x` as a number in [0, 1).
fn unit_interval(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(pairs: &[(&str, &str, u64)]) -> Summary {
        Summary {
            since: SystemTime::now(),
            pairs: pairs
                .iter()
                .map(|(a, b, n)| (a.to_string(), b.to_string(), *n))
                .collect(),
            dropped: 2,
            failed: 1,
            disagreements: Vec::new(),
        }
    }

    #[test]
    fn agreement_and_per_label_precision_recall_follow_the_pairs() {
        // Champion says sport 10 times: the challenger agrees 8, says world 2.
        // Champion says world 5 times: the challenger agrees 4, says sport 1.
        let s = summary(&[
            ("sport", "sport", 8),
            ("sport", "world", 2),
            ("world", "world", 4),
            ("world", "sport", 1),
        ]);
        assert_eq!((s.compared(), s.agreed(), s.mirrored()), (15, 12, 18));
        assert_eq!(s.agreement(), Some(12.0 / 15.0));
        let labels = s.per_label();
        assert_eq!(
            labels[0],
            LabelAgreement {
                label: "sport".into(),
                champion: 10,
                challenger: 9,
                precision: Some(8.0 / 9.0),
                recall: Some(8.0 / 10.0),
            }
        );
        assert_eq!(labels[1].precision, Some(4.0 / 6.0));
        assert_eq!(labels[1].recall, Some(4.0 / 5.0));
        assert_eq!(summary(&[]).agreement(), None);
    }

    fn output(logits: Vec<f32>) -> JobOutput {
        JobOutput {
            logits,
            batch_size: 1,
            queue_time: Duration::ZERO,
            inference_time: Duration::ZERO,
        }
    }

    #[test]
    fn labels_are_compared_by_name_not_position() {
        let champion = ["a".to_string(), "b".to_string()];
        // The challenger lists the same labels in the other order.
        let challenger = ["b".to_string(), "a".to_string()];
        let Outcome::Compared {
            champion: c,
            challenger: d,
            difference,
        } = compare(
            (&champion, 1.0, &Head::SingleLabel),
            &[2.0, 0.0],
            (&challenger, 1.0, &Head::SingleLabel),
            &output(vec![0.0, 2.0]),
        )
        else {
            panic!("compared");
        };
        assert_eq!((c.0.as_str(), d.0.as_str()), ("a", "a"));
        assert!(difference < 1e-6, "same scores for a: {difference}");
        let Outcome::Compared { challenger: d, .. } = compare(
            (&champion, 1.0, &Head::SingleLabel),
            &[2.0, 0.0],
            (&challenger, 1.0, &Head::SingleLabel),
            &output(vec![2.0, 0.0]),
        ) else {
            panic!("compared");
        };
        assert_eq!(d.0, "b");
    }

    #[test]
    fn multi_label_versions_are_compared_on_their_label_sets() {
        let labels = ["a".to_string(), "b".to_string(), "c".to_string()];
        let head = Head::MultiLabel {
            thresholds: vec![0.5, 0.5, 0.5],
        };
        let compared = |champion: &[f32], challenger: Vec<f32>| match compare(
            (&labels, 1.0, &head),
            champion,
            (&labels, 1.0, &head),
            &output(challenger),
        ) {
            Outcome::Compared {
                champion,
                challenger,
                ..
            } => (champion.0, challenger.0),
            _ => panic!("compared"),
        };
        // The same set, in another order of scores: they agree.
        assert_eq!(
            compared(&[3.0, 1.0, -2.0], vec![1.0, 3.0, -2.0]),
            ("a,b".to_string(), "a,b".to_string())
        );
        // Same best label, another set: they disagree.
        let (c, d) = compared(&[3.0, 1.0, -2.0], vec![3.0, -1.0, -2.0]);
        assert_ne!(c, d);
        assert_eq!(d, "a");
        // No label over its threshold is an answer too: the empty set.
        assert_eq!(compared(&[-3.0, -1.0, -2.0], vec![3.0, -1.0, -2.0]).0, "");
    }

    #[test]
    fn a_text_mirrored_to_an_earlier_pair_counts_in_the_metrics_only() {
        let metrics = Arc::new(Metrics::new());
        let shadow = Shadow::new(
            &ShadowConfig::default(),
            &BatchingConfig::default(),
            metrics.clone(),
        );
        let compared = || Outcome::Compared {
            champion: ("a".into(), 0.9),
            challenger: ("b".into(), 0.8),
            difference: 0.5,
        };
        shadow.record(compared(), None, 0);
        assert_eq!(shadow.summary().compared(), 1);
        shadow.reset();
        // Mirrored before the swap, answered after it.
        shadow.record(compared(), None, 0);
        shadow.record(Outcome::Dropped, None, 0);
        let summary = shadow.summary();
        assert_eq!((summary.compared(), summary.dropped), (0, 0));
        shadow.record(compared(), None, 1);
        assert_eq!(shadow.summary().compared(), 1);
        let disagreed = metrics.sample("newscls_shadow_texts_total{outcome=\"disagree\"}");
        assert_eq!(disagreed, 3.0, "the metrics count every text");
    }

    #[test]
    fn sampling_takes_about_the_share_asked_for() {
        let settings = ShadowConfig {
            sample: 0.1,
            ..ShadowConfig::default()
        };
        let shadow = Shadow::new(
            &settings,
            &BatchingConfig::default(),
            Arc::new(Metrics::new()),
        );
        let picked: usize = (0..1000).map(|_| shadow.draw(10).len()).sum();
        // 10,000 draws at p = 0.1: mean 1,000, standard deviation 30; 5 deviations either way.
        assert!((850..=1150).contains(&picked), "{picked} of 10000");
        let all = Shadow::new(
            &ShadowConfig::default(),
            &BatchingConfig::default(),
            Arc::new(Metrics::new()),
        );
        assert_eq!(all.draw(5), vec![0, 1, 2, 3, 4]);
    }
}
