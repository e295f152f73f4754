//! When a batch closes: pure, so it is unit-tested without threads or clocks.
//!
//! Work-conserving: the device should never sit idle while texts wait, and a batch should not
//! close early while the device could not start it anyway. FIFO, and in this order:
//! - a batch closes at once when the texts at the head of the queue fill it (by count, or by
//!   padded tokens, i.e. texts x longest text), or reach the device's preferred size, or the
//!   queue is draining for shutdown;
//! - while the device is busy with an earlier batch, the next one keeps growing, with no timer:
//!   it closes when the device is ready for it (the worker says so) or when it fills;
//! - on an idle device, a batch below the preferred size closes when its oldest text has waited
//!   `max_wait`: the only timer, a short wait for company where one text costs what several do.
//!
//! A single text larger than the token budget still forms a batch of one: it was admitted, so
//! it must be answered.

use std::time::Duration;

use crate::infra::config::BatchingConfig;
use crate::infra::device::Device;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRule {
    pub max_batch_size: usize,
    pub max_batch_tokens: usize,
    /// A batch this large goes without waiting, busy device or not.
    pub preferred_batch_size: usize,
    pub max_wait: Duration,
}

/// Whether the inference worker the batch is for still has an earlier batch on its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    Idle,
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Take this many jobs from the head of the queue now.
    Take(usize),
    /// Nothing to do until this much more time has passed (or new work arrives).
    Wait(Duration),
    /// Nothing to do until the device is ready or new work arrives: no timer.
    WaitForDevice,
}

impl BatchRule {
    pub fn new(config: &BatchingConfig, device: Device) -> Self {
        let limits = config.limits(device);
        Self {
            max_batch_size: limits.max_batch_size,
            max_batch_tokens: limits.max_batch_tokens,
            preferred_batch_size: config.preferred_batch_size(device),
            max_wait: config.max_wait(),
        }
    }

    /// `lengths`: token counts of the queued texts, oldest first (non-empty).
    pub fn decide(
        &self,
        lengths: impl IntoIterator<Item = usize>,
        oldest_wait: Duration,
        worker: WorkerState,
        draining: bool,
    ) -> Decision {
        let (count, full) = self.fitting_prefix(lengths);
        if full || draining || count >= self.preferred_batch_size {
            return Decision::Take(count);
        }
        match worker {
            WorkerState::Busy => Decision::WaitForDevice,
            WorkerState::Idle if oldest_wait >= self.max_wait => Decision::Take(count),
            WorkerState::Idle => Decision::Wait(self.max_wait - oldest_wait),
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
    use WorkerState::{Busy, Idle};

    const RULE: BatchRule = BatchRule {
        max_batch_size: 4,
        max_batch_tokens: 100,
        preferred_batch_size: 3,
        max_wait: Duration::from_millis(5),
    };

    #[test]
    fn on_an_idle_device_a_small_batch_waits_for_company_while_the_oldest_is_young() {
        assert_eq!(
            RULE.decide([10, 10], Duration::from_millis(2), Idle, false),
            Decision::Wait(Duration::from_millis(3))
        );
    }

    #[test]
    fn on_an_idle_device_a_small_batch_closes_when_the_oldest_has_waited_long_enough() {
        assert_eq!(
            RULE.decide([10, 10], Duration::from_millis(5), Idle, false),
            Decision::Take(2)
        );
    }

    #[test]
    fn no_timer_while_the_device_is_busy_however_long_the_oldest_has_waited() {
        for waited in [0, 5, 50, 5_000] {
            assert_eq!(
                RULE.decide([10, 10], Duration::from_millis(waited), Busy, false),
                Decision::WaitForDevice
            );
        }
    }

    #[test]
    fn the_preferred_size_goes_at_once_busy_or_idle() {
        for worker in [Idle, Busy] {
            assert_eq!(
                RULE.decide([10; 3], Duration::ZERO, worker, false),
                Decision::Take(3)
            );
        }
    }

    #[test]
    fn a_full_batch_goes_at_once_by_count_or_by_padded_tokens() {
        let no_preference = BatchRule {
            preferred_batch_size: usize::MAX,
            ..RULE
        };
        for worker in [Idle, Busy] {
            assert_eq!(
                no_preference.decide([1; 4], Duration::ZERO, worker, false),
                Decision::Take(4)
            );
            assert_eq!(
                no_preference.decide([1; 9], Duration::ZERO, worker, false),
                Decision::Take(4)
            );
            // 2 x 40 = 80 fits; a third text of 50 would pad all three to 50 = 150 > 100.
            assert_eq!(
                no_preference.decide([40, 40, 50], Duration::ZERO, worker, false),
                Decision::Take(2)
            );
        }
    }

    #[test]
    fn a_preferred_size_of_one_takes_every_text_at_once() {
        let cpu = BatchRule {
            preferred_batch_size: 1,
            ..RULE
        };
        assert_eq!(
            cpu.decide([10], Duration::ZERO, Idle, false),
            Decision::Take(1)
        );
        assert_eq!(
            cpu.decide([10, 10, 10], Duration::ZERO, Idle, false),
            Decision::Take(3)
        );
    }

    #[test]
    fn an_oversized_text_still_forms_a_batch_of_one() {
        assert_eq!(
            RULE.decide([500, 10], Duration::ZERO, Busy, false),
            Decision::Take(1)
        );
    }

    #[test]
    fn draining_takes_what_is_there_without_waiting() {
        for worker in [Idle, Busy] {
            assert_eq!(
                RULE.decide([10], Duration::ZERO, worker, true),
                Decision::Take(1)
            );
        }
    }
}
