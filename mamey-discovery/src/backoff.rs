//! Exponential backoff with full jitter, for calls to a registry.

use std::time::Duration;

/// The pause before each retry: a random share of a ceiling that doubles
/// from `initial` up to `max`, and starts over after [`reset`](Self::reset).
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            failures: 0,
        }
    }

    /// The pause before the next try; at least a tenth of the ceiling, so
    /// a registry that is down is not hammered.
    pub(crate) fn next(&mut self) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1 << self.failures.min(16))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        ceiling.mul_f64(0.1 + 0.9 * fastrand::f64())
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_the_cap_and_start_over_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let ceilings = [100, 200, 400, 400];
        for ceiling in ceilings {
            let pause = backoff.next();
            assert!(pause <= Duration::from_millis(ceiling), "{pause:?}");
            assert!(pause >= Duration::from_millis(ceiling / 10), "{pause:?}");
        }
        backoff.reset();
        assert!(backoff.next() <= Duration::from_millis(100));
    }
}
