//! Property tests ("fuzzing" with proptest) for request decoding, validation and tokenization.
//!
//! Bounded by default (proptest's 256 cases per property) so the suite stays fast. A longer run:
//! `PROPTEST_CASES=20000 cargo test --release --test integration fuzz`.

use newscls::frontends::http::predict::PredictRequest;
use newscls::pipeline::model::ModelSpec;
use newscls::pipeline::tokenize::{TextTokenizer, TokenizeError, TruncationSide};
use proptest::prelude::*;

use crate::support::{repo_path, test_split, MODEL_DIR};

/// JSON-ish documents: valid JSON of every shape, with the request's field names likely.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        let key = prop_oneof![
            Just("inputs".to_string()),
            Just("top_k".to_string()),
            Just("truncate".to_string()),
            any::<String>()
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(key, inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<PredictRequest>(&bytes);
    }

    #[test]
    fn decoding_arbitrary_json_yields_a_request_or_a_data_error(value in json_value()) {
        let text = value.to_string();
        match serde_json::from_str::<PredictRequest>(&text) {
            Ok(_) => prop_assert!(value.get("inputs").is_some(), "decoded without inputs: {text}"),
            Err(e) => prop_assert!(e.is_data(), "valid JSON must be a 422 (data) error, got {e} for {text}"),
        }
    }
}

#[test]
fn tokenizing_arbitrary_text_stays_within_the_model_limits() {
    let spec = ModelSpec::load(&repo_path(MODEL_DIR)).expect("model dir");
    let tokenizer =
        TextTokenizer::load(&spec.tokenizer_path(), spec.max_length).expect("tokenizer");
    let vocab = tokenizer.vocab_size() as i64;
    let max = tokenizer.max_length();
    proptest!(|(texts in prop::collection::vec(any::<String>(), 1..4), truncate in any::<bool>())| {
        match tokenizer.encode(&texts, truncate) {
            Ok(encoded) => {
                prop_assert_eq!(encoded.len(), texts.len());
                for seq in encoded {
                    prop_assert!(seq.len() <= max);
                    prop_assert!(seq.input_ids.iter().all(|&id| (0..vocab).contains(&id)));
                }
            }
            Err(e) => prop_assert!(!truncate, "with truncation on, any text tokenizes: {e}"),
        }
    });
}

/// The tokenizer the bundled model was trained with (`tokenizers` 0.22), truncating whole
/// texts from either end: the ids the service must reproduce.
struct TrainingTokenizer {
    right: tokenizers_v0::Tokenizer,
    left: tokenizers_v0::Tokenizer,
}

impl TrainingTokenizer {
    fn load(path: &std::path::Path, max_length: usize) -> Self {
        use tokenizers_v0::{TruncationDirection, TruncationParams};
        let with = |direction| {
            let mut tokenizer = tokenizers_v0::Tokenizer::from_file(path).expect("tokenizer 0.22");
            tokenizer.with_padding(None);
            tokenizer
                .with_truncation(Some(TruncationParams {
                    max_length,
                    direction,
                    ..TruncationParams::default()
                }))
                .expect("truncation");
            tokenizer
        };
        Self {
            right: with(TruncationDirection::Right),
            left: with(TruncationDirection::Left),
        }
    }

    /// The ids, or `None` for a text that truncation would cut when it is not allowed.
    fn ids(&self, text: &str, truncate: bool, side: TruncationSide) -> Option<Vec<i64>> {
        let tokenizer = match side {
            TruncationSide::Right => &self.right,
            TruncationSide::Left => &self.left,
        };
        let encoding = tokenizer.encode(text, true).expect("tokenize");
        if !truncate && !encoding.get_overflowing().is_empty() {
            return None;
        }
        Some(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }
}

/// What the service's tokenizer gives for one text, in the same form as [`TrainingTokenizer::ids`].
fn service_ids(
    tokenizer: &TextTokenizer,
    text: &str,
    truncate: bool,
    side: TruncationSide,
) -> Option<Vec<i64>> {
    match tokenizer.encode_with(&[text.to_string()], truncate, side) {
        Ok(mut encoded) => Some(encoded.remove(0).input_ids),
        Err(TokenizeError::TooLong { .. }) => None,
        Err(e) => panic!("{e}: {text:.80}"),
    }
}

#[test]
fn ids_equal_the_training_tokenizers_on_the_test_split_and_real_news() {
    let spec = ModelSpec::load(&repo_path(MODEL_DIR)).expect("model dir");
    let max = spec.max_length.expect("the bundled model sets max_length");
    let service = TextTokenizer::load(&spec.tokenizer_path(), Some(max)).expect("tokenizer");
    let whole = TextTokenizer::load(&spec.tokenizer_path(), Some(max))
        .expect("tokenizer")
        .without_prefix_shortcut();
    let training = TrainingTokenizer::load(&spec.tokenizer_path(), max);
    let mut texts: Vec<String> = test_split()
        .iter()
        .map(|row| row["text"].as_str().expect("text").to_string())
        .collect();
    assert!(
        texts.len() >= 200,
        "the test split has {} texts",
        texts.len()
    );
    // Long texts from real news (English and Korean openings from the JMeter fixture).
    let lines: Vec<String> = std::fs::read_to_string(repo_path("jmeter/news.tsv"))
        .expect("news.tsv")
        .lines()
        .map(|l| serde_json::from_str::<String>(l).expect("json string"))
        .collect();
    texts.extend(lines.windows(4).map(|w| w.join(" ")));
    texts.extend(lines.iter().map(|l| l.repeat(3)));
    texts.extend(lines);
    let mut cut = 0;
    for side in [TruncationSide::Right, TruncationSide::Left] {
        for truncate in [true, false] {
            for text in &texts {
                let expected = training.ids(text, truncate, side);
                cut += usize::from(expected.is_none());
                assert_eq!(
                    service_ids(&service, text, truncate, side),
                    expected,
                    "{side:?}: {text:.80}"
                );
                assert_eq!(
                    service_ids(&whole, text, truncate, side),
                    expected,
                    "{side:?}: {text:.80}"
                );
            }
        }
    }
    // Both kinds of text were seen: ones that fit and ones that the window cuts.
    assert!(
        cut > 0 && cut < 2 * texts.len(),
        "{cut} of {} texts too long",
        texts.len()
    );
}

#[test]
fn ids_equal_the_training_tokenizers_on_arbitrary_text() {
    let spec = ModelSpec::load(&repo_path(MODEL_DIR)).expect("model dir");
    let max = spec.max_length.expect("the bundled model sets max_length");
    let service = TextTokenizer::load(&spec.tokenizer_path(), Some(max)).expect("tokenizer");
    let training = TrainingTokenizer::load(&spec.tokenizer_path(), max);
    let sides = [TruncationSide::Right, TruncationSide::Left];
    // Word soups long enough for the shortcuts, with newlines, tabs and odd spaces between
    // words, and special tokens written in the text.
    let word = "[a-zA-Z가-힣0-9.,'\"()\\-]{1,20}|<s>|</s>|<pad>|<unk>|<mask>";
    let sep = prop_oneof![
        Just(" "),
        Just("  "),
        Just("\n"),
        Just("\t"),
        Just("\u{a0}"),
        Just("\u{3000}"),
        Just(" \n ")
    ];
    proptest!(|(words in prop::collection::vec((word, sep), 50..400))| {
        let text: String = words.iter().map(|(w, s)| format!("{w}{s}")).collect();
        for side in sides {
            for truncate in [true, false] {
                prop_assert_eq!(
                    service_ids(&service, &text, truncate, side),
                    training.ids(&text, truncate, side)
                );
            }
        }
    });
    // Any Unicode at all, short and long.
    proptest!(|(text in any::<String>(), repeat in 1usize..80)| {
        let text = text.repeat(repeat);
        for side in sides {
            prop_assert_eq!(
                service_ids(&service, &text, true, side),
                training.ids(&text, true, side)
            );
        }
    });
}
