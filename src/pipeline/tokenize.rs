//! Text to token ids: pure, synchronous, and the only module that touches `tokenizers`.
//!
//! The tokenizer comes from the model directory's `tokenizer.json`, so ids match what the model
//! was trained with. `tokenizers` 1.0's encode-only pipeline does the work: it tokenizes into a
//! reused buffer with no per-call allocation, 3.2× cheaper per article than 0.22 with the same
//! prefix rule (27 vs 88 µs on the test articles, one thread; benches/tokenize.rs). Its ids are
//! tested equal to 0.22's, the version the models were trained with (tests/it/fuzz.rs).
//!
//! Truncation is applied here, not by the library: a text's tokens are cut to the window and
//! then wrapped in the template's special tokens (`<s> … </s>`, `[CLS] … [SEP]`), which is what
//! `LongestFirst` truncation of one sequence does, and tells us whether the text was cut.
//! Padding is not applied here: each batch is padded later, only to its own longest sequence.
//!
//! News articles are long and the model reads only their first `max_length` tokens, so a long
//! text is first tokenized up to a word boundary past which the window is surely full. Words
//! are tokenized independently (the pre-tokenizer splits on spaces), so when that prefix alone
//! overflows the window its tokens are exactly the full text's; otherwise the full text is
//! tokenized. Same ids, a fraction of the work (a median article is ~4x the window).

use std::path::{Path, PathBuf};

use tokenizers::pipeline::{EncodeOptions, Override, PipelineToken, PipelineTokenizer};

/// One text, tokenized and ready to be batched. Only ids: the texts are single segments, so
/// token types are all zero and the batch writes them once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedText {
    pub input_ids: Vec<i64>,
}

impl TokenizedText {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenizeError {
    #[error("input {index} is longer than the model's {max_length}-token limit; allow truncation to cut it")]
    TooLong { index: usize, max_length: usize },
    #[error("input {index} could not be tokenized: {reason}")]
    Failed { index: usize, reason: String },
}

/// `tokenizer.json` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("model file {path}: {reason}")]
pub struct TokenizerLoadError {
    pub path: PathBuf,
    pub reason: String,
}

/// Which end of a long text is kept. News puts the essentials first, so `Right` (cut the end)
/// is the default; `Left` keeps the end (TEI's `truncation_direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TruncationSide {
    #[default]
    Right,
    Left,
}

pub struct TextTokenizer {
    inner: PipelineTokenizer,
    /// The special tokens the template puts before and after a text (`<s>`, `</s>`).
    prefix_ids: Vec<i64>,
    suffix_ids: Vec<i64>,
    max_length: usize,
    pad_id: i64,
    /// One past the highest id the tokenizer can produce.
    vocab_size: usize,
    /// Long texts are tried on prefixes of these many bytes first, shortest first; empty
    /// disables the shortcut.
    prefix_bytes: Vec<usize>,
    /// SHA-256 of the tokenizer's JSON and the window: two tokenizers with the same
    /// fingerprint give the same ids for every text.
    fingerprint: [u8; 32],
}

/// Bytes of text per token that the prefixes get, tried in order: English averages ~4.5
/// characters per token here and Korean ~5 bytes, so 5 fills the window in most English
/// articles and 10 in almost all the rest; when neither does, the full text is tokenized, and
/// the result is the same. Measured on the test articles (benches/tokenize.rs, one thread):
/// [8] 97 µs per article, [4, 8] 117, [6, 12] 70, [5, 10] 58.
const PREFIX_BYTES_PER_TOKEN: &[usize] = &[5, 10];

/// A text's own tokens, without special tokens, never truncated by the library: this module
/// truncates them itself.
const SEQUENCE_ONLY: EncodeOptions = EncodeOptions {
    add_special_tokens: false,
    encode_special_tokens: false,
    padding: Override::Off,
    truncation: Override::Off,
};

impl TextTokenizer {
    /// Loads `tokenizer.json`. `max_length` overrides the file's own truncation length.
    pub fn load(path: &Path, max_length: Option<usize>) -> Result<Self, TokenizerLoadError> {
        let fail = |reason: String| TokenizerLoadError {
            path: path.to_path_buf(),
            reason,
        };
        // Files written by `tokenizers` 0.x are upgraded in memory to the form 1.0 reads.
        let json = tokenizers::canonicalize_file(path).map_err(|e| fail(e.to_string()))?;
        let inner = tokenizers::from_json(&json).map_err(|e| fail(e.to_string()))?;
        let max_length = max_length
            .or_else(|| inner.get_truncation().map(|t| t.max_length))
            .ok_or_else(|| {
                fail("no truncation length in the tokenizer; set model.max_length".into())
            })?;
        let template = &inner.get_post_processor().single;
        // The model is fed token type 0 everywhere: a template that sets other types would
        // silently get different inputs than in training.
        if template.has_type_ids() {
            return Err(fail(
                "the post-processor sets token type ids, which this service does not send".into(),
            ));
        }
        let special_ids = |run: &[(PipelineToken, u8)]| -> Vec<i64> {
            run.iter().map(|(token, _)| i64::from(token.id())).collect()
        };
        let (prefix_ids, suffix_ids) =
            (special_ids(&template.prefix), special_ids(&template.suffix));
        if prefix_ids.len() + suffix_ids.len() >= max_length {
            return Err(fail(format!(
                "a {max_length}-token window leaves no room between the special tokens"
            )));
        }
        let prefix_bytes = PREFIX_BYTES_PER_TOKEN
            .iter()
            .map(|per_token| max_length.saturating_mul(*per_token))
            .collect();
        let pad_id = pad_token_id(&inner);
        let vocab_size = vocab_size(&inner);
        let fingerprint = {
            use sha2::{Digest, Sha256};
            let mut hasher = Sha256::new();
            hasher.update(json.as_bytes());
            hasher.update(max_length.to_le_bytes());
            hasher.finalize().into()
        };
        Ok(Self {
            inner,
            prefix_ids,
            suffix_ids,
            max_length,
            pad_id,
            vocab_size,
            prefix_bytes,
            fingerprint,
        })
    }

    /// Always tokenizes whole texts: the reference the prefix and suffix shortcuts are tested
    /// and benchmarked against.
    pub fn without_prefix_shortcut(mut self) -> Self {
        self.prefix_bytes.clear();
        self
    }

    /// Whether `other` gives the same ids as this tokenizer for every text (the same file and
    /// window), so one's ids can be fed to the other's model.
    pub fn same_ids_as(&self, other: &TextTokenizer) -> bool {
        self.fingerprint == other.fingerprint
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The id that fills padded positions (masked out, but it must be a valid id).
    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Tokenizes every text; with `truncate` false, a text over the limit is an error.
    pub fn encode(
        &self,
        texts: &[String],
        truncate: bool,
    ) -> Result<Vec<TokenizedText>, TokenizeError> {
        self.encode_with(texts, truncate, TruncationSide::Right)
    }

    /// Like [`TextTokenizer::encode`], keeping the given end of long texts.
    pub fn encode_with(
        &self,
        texts: &[String],
        truncate: bool,
        side: TruncationSide,
    ) -> Result<Vec<TokenizedText>, TokenizeError> {
        // One buffer for every text's raw tokens; only the kept window is copied out.
        let mut tokens = Vec::with_capacity(self.max_length * 2);
        texts
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let overflows = self.encode_window(text, side, &mut tokens).map_err(|e| {
                    TokenizeError::Failed {
                        index,
                        reason: e.to_string(),
                    }
                })?;
                if overflows && !truncate {
                    return Err(TokenizeError::TooLong {
                        index,
                        max_length: self.max_length,
                    });
                }
                Ok(self.wrap(&tokens, side))
            })
            .collect()
    }
}

impl TextTokenizer {
    /// How many of a text's own tokens fit in the window beside the special tokens.
    fn body_length(&self) -> usize {
        self.max_length - self.prefix_ids.len() - self.suffix_ids.len()
    }

    /// Tokenizes `text` into `tokens` (replacing what was there) and says whether the text is
    /// longer than the window.
    fn tokenize(&self, text: &str, tokens: &mut Vec<PipelineToken>) -> tokenizers::Result<bool> {
        tokens.clear();
        self.inner.encode_into(text, &SEQUENCE_ONLY, tokens)?;
        Ok(tokens.len() > self.body_length())
    }

    /// The tokens of at least the window `side` keeps of `text`: from the shortest word prefix
    /// (right truncation) or word suffix (left) that overflows the window, else from the whole
    /// text, so a long text costs the same whichever end is kept.
    fn encode_window(
        &self,
        text: &str,
        side: TruncationSide,
        tokens: &mut Vec<PipelineToken>,
    ) -> tokenizers::Result<bool> {
        let cut = match side {
            TruncationSide::Right => word_prefix,
            TruncationSide::Left => word_suffix,
        };
        for part in self
            .prefix_bytes
            .iter()
            .filter_map(|&limit| cut(text, limit))
        {
            if self.tokenize(part, tokens)? {
                return Ok(true);
            }
        }
        self.tokenize(text, tokens)
    }

    /// The window of `tokens` that `side` keeps, between the template's special tokens.
    fn wrap(&self, tokens: &[PipelineToken], side: TruncationSide) -> TokenizedText {
        let keep = tokens.len().min(self.body_length());
        let kept = match side {
            TruncationSide::Right => &tokens[..keep],
            TruncationSide::Left => &tokens[tokens.len() - keep..],
        };
        let mut input_ids =
            Vec::with_capacity(self.prefix_ids.len() + keep + self.suffix_ids.len());
        input_ids.extend_from_slice(&self.prefix_ids);
        input_ids.extend(kept.iter().map(|token| i64::from(token.id())));
        input_ids.extend_from_slice(&self.suffix_ids);
        TokenizedText { input_ids }
    }
}

/// The end of `text` from the first word that starts after an ASCII space within its last
/// `limit` bytes, when it is longer. A word, not a space: a run of spaces is one separator to
/// the normalizer, so the suffix must not begin inside one.
fn word_suffix(text: &str, limit: usize) -> Option<&str> {
    if text.len() <= limit {
        return None;
    }
    let bytes = text.as_bytes();
    let start = text.len() - limit;
    let space = start + bytes[start..].iter().position(|&b| b == b' ')?;
    let word = space + bytes[space..].iter().position(|&b| b != b' ')?;
    Some(&text[word..])
}

/// `text` cut before the last ASCII space at or before `limit` bytes, when it is longer.
/// Only the ASCII space: it is a word separator for every tokenizer this serves, whereas a
/// newline or another Unicode space may be normalized into a token.
fn word_prefix(text: &str, limit: usize) -> Option<&str> {
    if text.len() <= limit {
        return None;
    }
    text.as_bytes()[..limit]
        .iter()
        .rposition(|&b| b == b' ')
        .filter(|&i| i > 0)
        .map(|i| &text[..i])
}

/// The padding id from the tokenizer's padding settings, else a conventional pad token, else 0.
fn pad_token_id(tokenizer: &PipelineTokenizer) -> i64 {
    if let Some(padding) = tokenizer.get_padding() {
        return i64::from(padding.pad_id);
    }
    ["<pad>", "[PAD]", "<|pad|>"]
        .iter()
        .find_map(|token| token_id(tokenizer, token))
        .map_or(0, i64::from)
}

/// The id of `token` when the tokenizer knows it as one token.
fn token_id(tokenizer: &PipelineTokenizer, token: &str) -> Option<u32> {
    let mut ids = Vec::new();
    tokenizer
        .encode_into(token, &SEQUENCE_ONLY, &mut ids)
        .ok()?;
    match ids.as_slice() {
        [id] if tokenizer.decode_tokens(&[id.id()], false) == [token] => Some(id.id()),
        _ => None,
    }
}

/// One past the highest id that names a token. Vocabularies are numbered from 0 without gaps,
/// so the boundary is found by doubling, then bisecting.
fn vocab_size(tokenizer: &PipelineTokenizer) -> usize {
    let known = |id: u32| !tokenizer.decode_tokens(&[id], false).is_empty();
    let (mut low, mut high) = (0u32, 1u32);
    while known(high) {
        low = high;
        high = high.saturating_mul(2);
        if high == u32::MAX {
            break;
        }
    }
    // `low` is known (or 0), `high` is not: bisect to the last known id.
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if known(middle) {
            low = middle;
        } else {
            high = middle;
        }
    }
    low as usize + 1
}

#[cfg(test)]
mod tests {
    use super::{word_prefix, word_suffix};

    #[test]
    fn word_suffix_starts_at_a_word_after_a_space_and_only_for_long_texts() {
        assert_eq!(word_suffix("short text", 100), None);
        assert_eq!(word_suffix("alpha beta gamma", 12), Some("beta gamma"));
        assert_eq!(word_suffix("alpha beta   gamma", 9), Some("gamma"));
        assert_eq!(word_suffix("한국 경제 뉴스 기사", 15), Some("뉴스 기사"));
        assert_eq!(word_suffix("nospaceatallhere", 5), None);
        assert_eq!(word_suffix("ends in spaces   ", 3), None);
    }

    #[test]
    fn word_prefix_cuts_before_a_space_and_only_long_texts() {
        assert_eq!(word_prefix("short text", 100), None);
        assert_eq!(word_prefix("alpha beta gamma", 12), Some("alpha beta"));
        assert_eq!(word_prefix("한국 경제 뉴스 기사", 15), Some("한국 경제"));
        assert_eq!(word_prefix("nospaceatallhere", 5), None);
    }
}
