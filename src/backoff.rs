//! Doubling retry delays, bounded: one mechanism for the follow loop and per-source health.

use std::time::Duration;

/// Shortest delay of the follow loop's retries.
pub const LOOP_MIN: Duration = Duration::from_millis(250);
/// Longest delay of the follow loop's retries.
pub const LOOP_MAX: Duration = Duration::from_secs(30);

/// Doubling backoff between a minimum and a maximum delay.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    /// The follow loop's backoff: [`LOOP_MIN`] doubling to [`LOOP_MAX`].
    fn default() -> Self {
        Self::new(LOOP_MIN, LOOP_MAX)
    }
}

impl Backoff {
    /// A backoff starting at `min`, doubling up to `max`.
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, next: min }
    }

    /// The delay to wait now; the next one doubles (bounded).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }

    /// Back to the shortest delay after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_bounded_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let got: Vec<u64> = (0..5).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }
}
