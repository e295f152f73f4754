//! Text to token ids: pure, synchronous, and the only module that touches `tokenizers`.
//!
//! The tokenizer comes from the model directory's `tokenizer.json`, so ids match what the model
//! was trained with. Truncation is applied here (to `max_length`, special tokens included);
//! padding is not: each batch is padded later, only to its own longest sequence.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::StartupError;

/// One text, tokenized and ready to be batched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedText {
    pub input_ids: Vec<i64>,
    pub type_ids: Vec<i64>,
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
    #[error("input {index} is longer than the model's {max_length}-token limit; send \"truncate\": true to cut it")]
    TooLong { index: usize, max_length: usize },
    #[error("input {index} could not be tokenized: {reason}")]
    Failed { index: usize, reason: String },
}

pub struct TextTokenizer {
    inner: Tokenizer,
    max_length: usize,
    pad_id: i64,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`. `max_length` overrides the file's own truncation length.
    pub fn load(path: &Path, max_length: Option<usize>) -> Result<Self, StartupError> {
        let mut inner = Tokenizer::from_file(path).map_err(|e| StartupError::ModelFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let max_length = max_length
            .or_else(|| inner.get_truncation().map(|t| t.max_length))
            .ok_or_else(|| StartupError::ModelFile {
                path: path.to_path_buf(),
                reason: "no truncation length in the tokenizer; set model.max_length".into(),
            })?;
        let pad_id = pad_token_id(&inner);
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| StartupError::ModelFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        inner.with_padding(None);
        Ok(Self {
            inner,
            max_length,
            pad_id,
        })
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
        texts
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let encoding =
                    self.inner
                        .encode(text.as_str(), true)
                        .map_err(|e| TokenizeError::Failed {
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
                    type_ids: encoding
                        .get_type_ids()
                        .iter()
                        .map(|&id| i64::from(id))
                        .collect(),
                })
            })
            .collect()
    }
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
