//! When a batch closes: pure, so it is unit-tested without threads or clocks.
//!
//! FIFO. A batch closes as soon as the texts at the head of the queue fill it (by count or by
//! padded tokens, i.e. texts x longest text), or when the oldest has waited `max_wait`, or when
//! the queue is draining for shutdown. Otherwise the worker waits for the rest of `max_wait`.
//! A single text larger than the token budget still forms a batch of one: it was admitted, so
//! it must be answered.

use std::time::Duration;

use crate::config::{BatchLimits, BatchingConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRule {
    pub max_batch_size: usize,
    pub max_batch_tokens: usize,
    pub max_wait: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Take this many jobs from the head of the queue now.
    Take(usize),
    /// Nothing to do until this much more time has passed (or new work arrives).
    Wait(Duration),
}

impl BatchRule {
    pub fn new(config: &BatchingConfig, limits: BatchLimits) -> Self {
        Self {
            max_batch_size: limits.max_batch_size,
            max_batch_tokens: limits.max_batch_tokens,
            max_wait: config.max_wait(),
        }
    }

    /// `lengths`: token counts of the queued texts, oldest first (non-empty).
    pub fn decide(
        &self,
        lengths: impl IntoIterator<Item = usize>,
        oldest_wait: Duration,
        draining: bool,
    ) -> Decision {
        let (count, full) = self.fitting_prefix(lengths);
        if full || draining || oldest_wait >= self.max_wait {
            Decision::Take(count)
        } else {
            Decision::Wait(self.max_wait - oldest_wait)
        }
    }

    /// How many texts from the head fit one batch, and whether more are waiting behind them.
    fn fitting_prefix(&self, lengths: impl IntoIterator<Item = usize>) -> (usize, bool) {
        let mut count = 0;
        let mut width = 0;
        for len in lengths {
            let next_width = width.max(len);
            let over_size = count + 1 > self.max_batch_size;
            let over_tokens = (count + 1) * next_width > self.max_batch_tokens;
            if count > 0 && (over_size || over_tokens) {
                return (count, true);
            }
            count += 1;
            width = next_width;
        }
        (count, count >= self.max_batch_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: BatchRule = BatchRule {
        max_batch_size: 4,
        max_batch_tokens: 100,
        max_wait: Duration::from_millis(5),
    };

    #[test]
    fn waits_for_more_work_while_the_oldest_is_young() {
        assert_eq!(
            RULE.decide([10, 10], Duration::from_millis(2), false),
            Decision::Wait(Duration::from_millis(3))
        );
    }

    #[test]
    fn closes_when_the_oldest_has_waited_long_enough() {
        assert_eq!(
            RULE.decide([10, 10], Duration::from_millis(5), false),
            Decision::Take(2)
        );
    }

    #[test]
    fn closes_at_once_when_full_by_count() {
        assert_eq!(
            RULE.decide([1; 4], Duration::ZERO, false),
            Decision::Take(4)
        );
        assert_eq!(
            RULE.decide([1; 9], Duration::ZERO, false),
            Decision::Take(4)
        );
    }

    #[test]
    fn closes_at_once_when_full_by_padded_tokens() {
        // 3 x 30 = 90 fits; a fourth text of 40 would pad all four to 40 = 160 > 100.
        assert_eq!(
            RULE.decide([30, 30, 30, 40], Duration::ZERO, false),
            Decision::Take(3)
        );
    }

    #[test]
    fn an_oversized_text_still_forms_a_batch_of_one() {
        assert_eq!(
            RULE.decide([500, 10], Duration::ZERO, false),
            Decision::Take(1)
        );
    }

    #[test]
    fn draining_takes_what_is_there_without_waiting() {
        assert_eq!(RULE.decide([10], Duration::ZERO, true), Decision::Take(1));
    }
}
