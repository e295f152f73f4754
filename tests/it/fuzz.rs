//! Property tests ("fuzzing" with proptest) for request decoding, validation and tokenization.
//!
//! Bounded by default (proptest's 256 cases per property) so the suite stays fast. A longer run:
//! `PROPTEST_CASES=20000 cargo test --release --test integration fuzz`.

use newscls::api::predict::PredictRequest;
use newscls::model::ModelSpec;
use newscls::tokenize::{TextTokenizer, TruncationSide};
use proptest::prelude::*;

use crate::support::{repo_path, MODEL_DIR};

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

#[test]
fn prefix_and_suffix_shortcuts_give_the_same_ids_as_tokenizing_the_whole_text() {
    let spec = ModelSpec::load(&repo_path(MODEL_DIR)).expect("model dir");
    let fast = TextTokenizer::load(&spec.tokenizer_path(), spec.max_length).expect("tokenizer");
    let reference = TextTokenizer::load(&spec.tokenizer_path(), spec.max_length)
        .expect("tokenizer")
        .without_prefix_shortcut();
    // Long texts from real news (English and Korean openings from the JMeter fixture).
    let lines: Vec<String> = std::fs::read_to_string(repo_path("jmeter/news.tsv"))
        .expect("news.tsv")
        .lines()
        .map(|l| serde_json::from_str::<String>(l).expect("json string"))
        .collect();
    let mut texts: Vec<String> = lines.windows(4).map(|w| w.join(" ")).collect();
    texts.extend(lines.iter().map(|l| l.repeat(3)));
    let sides = [TruncationSide::Right, TruncationSide::Left];
    for truncate in [true, false] {
        for side in sides {
            for text in &texts {
                let a = fast.encode_with(std::slice::from_ref(text), truncate, side);
                let b = reference.encode_with(std::slice::from_ref(text), truncate, side);
                assert_eq!(a, b, "{side:?}: {:.80}", text);
            }
        }
    }
    // And arbitrary word soups, including newlines, tabs and odd spaces between words.
    let word = "[a-zA-Z가-힣0-9.,'\"()\\-]{1,20}";
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
                    fast.encode_with(std::slice::from_ref(&text), truncate, side),
                    reference.encode_with(std::slice::from_ref(&text), truncate, side)
                );
            }
        }
    });
}
