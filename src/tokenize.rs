//! Text to token ids: pure, synchronous, and the only module that touches `tokenizers`.
//!
//! The tokenizer comes from the model directory's `tokenizer.json`, so ids match what the model
//! was trained with. Truncation is applied here (to `max_length`, special tokens included);
//! padding is not: each batch is padded later, only to its own longest sequence.
//!
//! News articles are long and the model reads only their first `max_length` tokens, so a long
//! text is first tokenized up to a word boundary past which the window is surely full. Words
//! are tokenized independently (the pre-tokenizer splits on spaces), so when that prefix alone
//! overflows the window its tokens are exactly the full text's; otherwise the full text is
//! tokenized. Same ids, a fraction of the work (a median article is ~4x the window).

use std::path::{Path, PathBuf};

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

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
    inner: Tokenizer,
    /// The same tokenizer truncating from the left.
    inner_left: Tokenizer,
    max_length: usize,
    pad_id: i64,
    /// Long texts are tried on prefixes of these many bytes first, shortest first; empty
    /// disables the shortcut.
    prefix_bytes: Vec<usize>,
    /// The reference path: whole texts, with character offsets, as `tokenizers` does by
    /// default. The service path must give the same ids (property-tested).
    reference: bool,
}

/// Bytes of text per token that the prefixes get, tried in order: English averages ~4.5
/// characters per token here and Korean ~5 bytes, so 5 fills the window in most English
/// articles and 10 in almost all the rest; when neither does, the full text is tokenized, and
/// the result is the same. Measured on the test articles (benches/tokenize.rs, one thread):
/// [8] 97 µs per article, [4, 8] 117, [6, 12] 70, [5, 10] 58.
const PREFIX_BYTES_PER_TOKEN: &[usize] = &[5, 10];

impl TextTokenizer {
    /// Loads `tokenizer.json`. `max_length` overrides the file's own truncation length.
    pub fn load(path: &Path, max_length: Option<usize>) -> Result<Self, TokenizerLoadError> {
        let fail = |reason: String| TokenizerLoadError {
            path: path.to_path_buf(),
            reason,
        };
        let mut inner = Tokenizer::from_file(path).map_err(|e| fail(e.to_string()))?;
        let max_length = max_length
            .or_else(|| inner.get_truncation().map(|t| t.max_length))
            .ok_or_else(|| {
                fail("no truncation length in the tokenizer; set model.max_length".into())
            })?;
        let pad_id = pad_token_id(&inner);
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| fail(e.to_string()))?;
        inner.with_padding(None);
        let mut inner_left = inner.clone();
        inner_left
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Left,
            }))
            .map_err(|e| fail(e.to_string()))?;
        let prefix_bytes = PREFIX_BYTES_PER_TOKEN
            .iter()
            .map(|per_token| max_length.saturating_mul(*per_token))
            .collect();
        Ok(Self {
            inner,
            inner_left,
            max_length,
            pad_id,
            prefix_bytes,
            reference: false,
        })
    }

    /// Always tokenizes whole texts with offsets: the reference the service path (prefix
    /// shortcut, no offsets) is tested against.
    pub fn without_prefix_shortcut(mut self) -> Self {
        self.prefix_bytes.clear();
        self.reference = true;
        self
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The id that fills padded positions (masked out, but it must be a valid id).
    pub fn pad_id(&self) -> i64 {
        self.pad_id
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
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
        texts
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let encoding = match side {
                    TruncationSide::Right => self.encode_window(text),
                    TruncationSide::Left => self.encode_window_end(text),
                };
                let encoding = encoding.map_err(|e| TokenizeError::Failed {
                    index,
                    reason: e.to_string(),
                })?;
                if !truncate && !encoding.get_overflowing().is_empty() {
                    return Err(TokenizeError::TooLong {
                        index,
                        max_length: self.max_length,
                    });
                }
                Ok(TokenizedText {
                    input_ids: encoding.get_ids().iter().map(|&id| i64::from(id)).collect(),
                })
            })
            .collect()
    }
}

impl TextTokenizer {
    /// The encoding of the first `max_length` tokens, with `overflowing` set when the text is
    /// longer (truncation is on).
    fn encode_window(&self, text: &str) -> tokenizers::Result<tokenizers::Encoding> {
        if self.reference {
            return self.inner.encode(text, true);
        }
        // `encode_fast` skips character offsets, which the service never reads: same ids.
        for prefix in self
            .prefix_bytes
            .iter()
            .filter_map(|&limit| word_prefix(text, limit))
        {
            let encoding = self.inner.encode_fast(prefix, true)?;
            if !encoding.get_overflowing().is_empty() {
                return Ok(encoding);
            }
        }
        self.inner.encode_fast(text, true)
    }
}

impl TextTokenizer {
    /// The encoding of the last `max_length` tokens (left truncation): the mirror image of
    /// [`TextTokenizer::encode_window`], from a suffix that starts at a word, so a long text
    /// costs the same whichever end is kept.
    fn encode_window_end(&self, text: &str) -> tokenizers::Result<tokenizers::Encoding> {
        if self.reference {
            return self.inner_left.encode(text, true);
        }
        for suffix in self
            .prefix_bytes
            .iter()
            .filter_map(|&limit| word_suffix(text, limit))
        {
            let encoding = self.inner_left.encode_fast(suffix, true)?;
            if !encoding.get_overflowing().is_empty() {
                return Ok(encoding);
            }
        }
        self.inner_left.encode_fast(text, true)
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
fn pad_token_id(tokenizer: &Tokenizer) -> i64 {
    if let Some(padding) = tokenizer.get_padding() {
        return i64::from(padding.pad_id);
    }
    ["<pad>", "[PAD]", "<|pad|>"]
        .iter()
        .find_map(|token| tokenizer.token_to_id(token))
        .map_or(0, i64::from)
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
