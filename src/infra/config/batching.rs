//! `batching` (how texts from concurrent requests are grouped) and `limits` (what one
//! request may ask).

use crate::infra::device::{BatchLimits, Device};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// A batch closes at once when it holds this many texts (null: by device, see
    /// [`Device::batch_limits`])...
    pub max_batch_size: Option<usize>,
    /// ...or when its padded size (texts x longest text) would pass this many tokens (null: by
    /// device)...
    pub max_batch_tokens: Option<usize>,
    /// ...or when it holds this many texts (null: by device, see
    /// [`Device::preferred_batch_size`]), or the device is ready for it: a worker that is free
    /// takes what is queued; while the device is busy the batch grows, with no timer.
    pub preferred_batch_size: Option<usize>,
    /// Only while the device is idle and the batch is below the preferred size: how long its
    /// oldest text may wait for company.
    pub max_wait_ms: u64,
    /// Texts waiting in the queue; past it a request is refused with 429 at once.
    pub max_queue_size: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest accepted request body; past it 413.
    pub max_body_bytes: usize,
    /// Most texts in one request.
    pub max_client_batch_size: usize,
    /// Most characters in one text, checked before tokenization.
    pub max_input_chars: usize,
    /// Most bytes of one row of a file (`newscls classify`/`eval`: a JSONL line, a CSV record, a
    /// Parquet text; a Parquet page may hold 16 times it); a longer line, record or Parquet page
    /// gets a row error without being held in memory. Null: 12 bytes per allowed character
    /// (the longest JSON escape of one) plus 64 KiB for the other fields.
    pub max_row_bytes: Option<usize>,
}

impl LimitsConfig {
    /// [`LimitsConfig::max_row_bytes`], or what it defaults to.
    pub fn row_bytes(&self) -> usize {
        self.max_row_bytes.unwrap_or(
            self.max_input_chars
                .saturating_mul(12)
                .saturating_add(64 * 1024),
        )
    }
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            max_batch_size: None,
            max_batch_tokens: None,
            preferred_batch_size: None,
            max_wait_ms: 2,
            max_queue_size: 1024,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 2 * 1024 * 1024,
            max_client_batch_size: 32,
            max_input_chars: 100_000,
            max_row_bytes: None,
        }
    }
}

impl BatchingConfig {
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(self.max_wait_ms)
    }

    /// The limits in force on `device`: the configured ones, else the device's defaults.
    pub fn limits(&self, device: Device) -> BatchLimits {
        let defaults = device.batch_limits();
        BatchLimits {
            max_batch_size: self.max_batch_size.unwrap_or(defaults.max_batch_size),
            max_batch_tokens: self.max_batch_tokens.unwrap_or(defaults.max_batch_tokens),
        }
    }

    /// The batch size worth waiting for on `device`.
    pub fn preferred_batch_size(&self, device: Device) -> usize {
        self.preferred_batch_size
            .unwrap_or_else(|| device.preferred_batch_size())
    }
}
