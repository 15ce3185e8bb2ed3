//! Per-source health: latency, consecutive errors by kind, exponential backoff. A source in
//! backoff counts as not agreeing; it is tried again when its backoff ends and is re-admitted on
//! its first success.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::backoff::Backoff;

/// First backoff after a failure; doubles per consecutive failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What changed with a recorded outcome (for logging transitions once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Nothing worth a log line.
    None,
    /// The source just started failing (or failed again after a retry): backing off.
    Failing {
        /// Consecutive failures.
        consecutive: u32,
        /// Until the next try.
        retry_in: Duration,
    },
    /// The source answered again after failing.
    Recovered {
        /// Failures before it recovered.
        after: u32,
    },
}

/// A snapshot for status output.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthSnapshot {
    /// Whether the source is usable now.
    pub up: bool,
    /// Consecutive failures.
    pub consecutive_errors: u32,
    /// Errors so far by reason.
    pub errors: BTreeMap<&'static str, u64>,
    /// Smoothed request latency.
    pub latency: Option<Duration>,
    /// The last reported latest block height.
    pub head: Option<u64>,
}

#[derive(Debug)]
struct State {
    consecutive: u32,
    backoff: Backoff,
    errors: BTreeMap<&'static str, u64>,
    retry_at: Option<Instant>,
    latency: Option<Duration>,
    head: Option<u64>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            consecutive: 0,
            backoff: Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
            errors: BTreeMap::new(),
            retry_at: None,
            latency: None,
            head: None,
        }
    }
}

/// Health of one source, shared by its clones.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<State>,
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the source may be asked now (not in backoff).
    pub fn available(&self, now: Instant) -> bool {
        self.lock().retry_at.is_none_or(|t| now >= t)
    }

    /// Records a successful request that took `latency`.
    pub fn success(&self, latency: Duration) -> Transition {
        let mut s = self.lock();
        s.latency = Some(match s.latency {
            None => latency,
            Some(prev) => (prev * 7 + latency) / 8,
        });
        let before = s.consecutive;
        s.consecutive = 0;
        s.backoff.reset();
        s.retry_at = None;
        if before > 0 { Transition::Recovered { after: before } } else { Transition::None }
    }

    /// Records a failure of kind `reason` at `now`; the source backs off.
    pub fn failure(&self, reason: &'static str, now: Instant) -> Transition {
        let mut s = self.lock();
        *s.errors.entry(reason).or_default() += 1;
        s.consecutive += 1;
        let retry_in = s.backoff.next_delay();
        s.retry_at = Some(now + retry_in);
        // Log the first failure and then every tenth, not every retry.
        if s.consecutive == 1 || s.consecutive.is_multiple_of(10) {
            Transition::Failing { consecutive: s.consecutive, retry_in }
        } else {
            Transition::None
        }
    }

    /// Records the source's reported latest height.
    pub fn set_head(&self, head: u64) {
        self.lock().head = Some(head);
    }

    /// A copy for status output.
    pub fn snapshot(&self, now: Instant) -> HealthSnapshot {
        let s = self.lock();
        HealthSnapshot {
            up: s.consecutive == 0 || s.retry_at.is_none_or(|t| now >= t),
            consecutive_errors: s.consecutive,
            errors: s.errors.clone(),
            latency: s.latency,
            head: s.head,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backs_off_exponentially_and_recovers() {
        let h = Health::default();
        let t0 = Instant::now();
        assert!(h.available(t0));
        assert_eq!(
            h.failure("timeout", t0),
            Transition::Failing { consecutive: 1, retry_in: FIRST_BACKOFF }
        );
        assert!(!h.available(t0));
        assert!(h.available(t0 + FIRST_BACKOFF));
        assert_eq!(h.failure("timeout", t0), Transition::None);
        assert!(!h.available(t0 + FIRST_BACKOFF), "second failure doubles the backoff");
        assert!(h.available(t0 + FIRST_BACKOFF * 2));
        for _ in 0..20 {
            h.failure("unreachable", t0);
        }
        assert!(h.available(t0 + MAX_BACKOFF), "backoff is bounded");
        assert_eq!(h.snapshot(t0).errors.get("unreachable"), Some(&20));
        assert_eq!(h.success(Duration::from_millis(5)), Transition::Recovered { after: 22 });
        assert!(h.available(t0));
        assert_eq!(h.success(Duration::from_millis(5)), Transition::None);
    }
}
