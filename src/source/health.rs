//! Per-source health: latency, consecutive errors by kind, exponential backoff. A source in
//! backoff counts as not agreeing; it is tried again when its backoff ends and is re-admitted on
//! its first success.
//!
//! Lies (a block that fails verification, breaks the agreed chain, or that the EL rejects as
//! INVALID) are counted apart from transport errors: a later successful request does not clear
//! them, so a source that answers quickly but keeps lying stays benched for longer and longer.
//! The lie backoff starts over only after [`LIE_FORGIVEN_AFTER`] without a new lie.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;

/// First backoff after a failure; doubles per consecutive failure.
/// Shortest time a rate-limited source is left alone, whatever it said.
pub const MIN_LIMIT_WAIT: Duration = Duration::from_millis(250);

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First bench after a lie; doubles per lie.
const FIRST_LIE_BACKOFF: Duration = Duration::from_secs(5);
/// Longest bench after lies.
const MAX_LIE_BACKOFF: Duration = Duration::from_secs(600);
/// A source whose last lie is this old starts again from the first lie backoff.
pub const LIE_FORGIVEN_AFTER: Duration = Duration::from_secs(3600);

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
    /// The source started rate limiting lightcl: left alone for `wait`, not failing.
    RateLimited {
        /// How long it is left alone.
        wait: Duration,
        /// Whether the source said so (`Retry-After`) or the backoff chose it.
        asked: bool,
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
    /// Answers a quorum read stopped waiting for (slower than the quorum plus the grace).
    pub late: u64,
    /// The last inconsistent answer, said in words.
    pub last_problem: Option<String>,
    /// Whether it is left alone now because it is rate limiting lightcl.
    pub rate_limited: bool,
    /// Seconds it was left alone for rate limiting, in all.
    pub rate_limited_secs: f64,
}

#[derive(Debug)]
struct State {
    consecutive: u32,
    backoff: Backoff,
    errors: BTreeMap<&'static str, u64>,
    retry_at: Option<Instant>,
    latency: Option<Duration>,
    head: Option<u64>,
    lies: u32,
    lie_backoff: Backoff,
    benched_until: Option<Instant>,
    last_lie: Option<Instant>,
    late: u64,
    last_problem: Option<String>,
    /// When an inconsistency was last logged, and how many came since.
    problem_logged: Option<Instant>,
    problems_since_log: u64,
    /// Left alone until then: the source is rate limiting lightcl. A success of a request sent
    /// before does not lift it.
    limited_until: Option<Instant>,
    /// Without a `Retry-After`, how long to leave it alone (doubles per limit in a row).
    limit_backoff: Backoff,
    /// Time left alone for rate limiting in waits that are over.
    limited_total: Duration,
    /// When the wait under way (or the last one) began.
    limited_since: Option<Instant>,
    /// It answered a request since its last rate limit: the next limit starts the backoff over.
    answered_since_limit: bool,
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
            lies: 0,
            lie_backoff: Backoff::new(FIRST_LIE_BACKOFF, MAX_LIE_BACKOFF),
            benched_until: None,
            last_lie: None,
            late: 0,
            last_problem: None,
            problem_logged: None,
            problems_since_log: 0,
            limited_until: None,
            limit_backoff: Backoff::new(FIRST_BACKOFF, MAX_BACKOFF),
            limited_total: Duration::ZERO,
            limited_since: None,
            answered_since_limit: false,
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
        crate::util::lock(&self.state)
    }

    /// Whether the source may be asked now (not in backoff, not benched for lying).
    pub fn available(&self, now: Instant) -> bool {
        let s = self.lock();
        s.retry_at.is_none_or(|t| now >= t)
            && s.benched_until.is_none_or(|t| now >= t)
            && s.limited_until.is_none_or(|t| now >= t)
    }

    /// Whether its answers about labels and hashes count now: not backing off after a failure.
    /// A bench for lies keeps it from serving blocks only: a vote cannot make a block agreed
    /// without the rest of the quorum, and with `all` benching its vote would stall the
    /// follower for as long as the bench lasts.
    pub fn can_vote(&self, now: Instant) -> bool {
        let s = self.lock();
        s.retry_at.is_none_or(|t| now >= t) && s.limited_until.is_none_or(|t| now >= t)
    }

    /// How long it is still left alone for rate limiting lightcl at `now` (None: it is not).
    pub fn limited_for(&self, now: Instant) -> Option<Duration> {
        self.lock().limited_until.filter(|t| *t > now).map(|t| t - now)
    }

    /// Records that the source is rate limiting lightcl at `now`: it is left alone for exactly
    /// `retry_after` when it said, else for a backoff that doubles while it keeps saying so
    /// (from 1 s up to 30 s). Not a failure: its failure count and backoff stay as they were.
    pub fn rate_limited(&self, retry_after: Option<Duration>, now: Instant) -> Transition {
        let mut s = self.lock();
        *s.errors.entry("rate_limited").or_default() += 1;
        let asked = retry_after.is_some();
        let was = s.limited_until.filter(|t| *t > now);
        // Answers to requests already in flight extend a wait under way; only a new wait
        // advances the backoff.
        let wait = match (retry_after, was) {
            // "Retry-After: 0" (or a date already past) still leaves it alone a moment: asking
            // again at once would only spin.
            (Some(d), _) => d.max(MIN_LIMIT_WAIT),
            (None, Some(t)) => t.saturating_duration_since(now),
            (None, None) => {
                if std::mem::take(&mut s.answered_since_limit) {
                    s.limit_backoff.reset();
                }
                s.limit_backoff.next_delay()
            }
        };
        let until = now + wait;
        if was.is_none() {
            // The last wait is over: fold it into the total, start a new one.
            if let (Some(since), Some(end)) = (s.limited_since, s.limited_until) {
                s.limited_total += end.saturating_duration_since(since);
            }
            s.limited_since = Some(now);
        }
        s.limited_until = Some(was.map_or(until, |t| t.max(until)));
        if was.is_none() { Transition::RateLimited { wait, asked } } else { Transition::None }
    }

    /// Time left alone for rate limiting up to `now` (the wait under way counted as it passes).
    fn limited_secs(s: &State, now: Instant) -> f64 {
        let current = match (s.limited_since, s.limited_until) {
            (Some(since), Some(end)) => end.min(now).saturating_duration_since(since),
            _ => Duration::ZERO,
        };
        (s.limited_total + current).as_secs_f64()
    }

    /// Records a lie of kind `reason` at `now`: the source is benched; successes do not clear
    /// it. Returns how long.
    pub fn lie(&self, reason: &'static str, now: Instant) -> Duration {
        let mut s = self.lock();
        *s.errors.entry(reason).or_default() += 1;
        if s.last_lie.is_some_and(|t| now.duration_since(t) >= LIE_FORGIVEN_AFTER) {
            s.lie_backoff.reset();
        }
        s.lies += 1;
        s.last_lie = Some(now);
        let d = s.lie_backoff.next_delay();
        s.benched_until = Some(now + d);
        d
    }

    /// Counts an error of kind `reason` without a backoff: a single source's bad block, where
    /// there is nobody better to ask and its answers at other heights are still needed.
    pub fn record(&self, reason: &'static str) {
        *self.lock().errors.entry(reason).or_default() += 1;
    }

    /// Counts an answer that was not waited for.
    pub fn late(&self) {
        self.lock().late += 1;
    }

    /// Counts an inconsistent answer of kind `reason` described by `what`. Returns how many
    /// there were since the last one logged when it is time to log again (`every`), else None.
    pub fn problem(
        &self,
        reason: &'static str,
        what: &str,
        now: Instant,
        every: Duration,
    ) -> Option<u64> {
        let mut s = self.lock();
        *s.errors.entry(reason).or_default() += 1;
        s.last_problem = Some(format!("{reason}: {what}"));
        s.problems_since_log += 1;
        if s.problem_logged.is_some_and(|t| now.duration_since(t) < every) {
            return None;
        }
        s.problem_logged = Some(now);
        Some(std::mem::take(&mut s.problems_since_log))
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
        s.answered_since_limit = true;
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

    /// Smoothed request latency (cheap: no copy of the error counts).
    pub fn latency(&self) -> Option<Duration> {
        self.lock().latency
    }

    /// A copy for status output.
    pub fn snapshot(&self, now: Instant) -> HealthSnapshot {
        let s = self.lock();
        HealthSnapshot {
            up: (s.consecutive == 0 || s.retry_at.is_none_or(|t| now >= t))
                && s.benched_until.is_none_or(|t| now >= t),
            consecutive_errors: s.consecutive,
            errors: s.errors.clone(),
            latency: s.latency,
            head: s.head,
            late: s.late,
            last_problem: s.last_problem.clone(),
            rate_limited: s.limited_until.is_some_and(|t| now < t),
            rate_limited_secs: Self::limited_secs(&s, now),
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

    #[test]
    fn a_rate_limit_leaves_the_source_alone_exactly_as_long_as_it_asked() {
        let h = Health::default();
        let t0 = Instant::now();
        let ten = Duration::from_secs(10);
        assert_eq!(
            h.rate_limited(Some(ten), t0),
            Transition::RateLimited { wait: ten, asked: true }
        );
        assert!(!h.available(t0 + ten - Duration::from_millis(1)) && !h.can_vote(t0));
        h.success(Duration::from_millis(5));
        assert!(
            !h.available(t0 + Duration::from_secs(1)),
            "an earlier request's success does not lift it"
        );
        assert!(h.available(t0 + ten) && h.can_vote(t0 + ten), "and not a moment longer");
        let snap = h.snapshot(t0 + Duration::from_secs(3));
        assert!(snap.rate_limited && snap.up, "limited, but not failing: {snap:?}");
        assert_eq!((snap.consecutive_errors, snap.errors.get("rate_limited")), (0, Some(&1)));
        assert_eq!(snap.rate_limited_secs, 3.0, "counted as it passes, not in advance");
        // A second answer inside the wait extends it without counting the overlap twice.
        assert_eq!(h.rate_limited(Some(ten), t0 + Duration::from_secs(4)), Transition::None);
        assert_eq!(h.snapshot(t0 + ten * 2).rate_limited_secs, 14.0);
        assert!(!h.snapshot(t0 + ten * 2).rate_limited);
        // A later wait adds to the total.
        h.rate_limited(Some(Duration::from_secs(2)), t0 + ten * 3);
        assert_eq!(h.snapshot(t0 + ten * 4).rate_limited_secs, 16.0);
        // Without Retry-After: a backoff that doubles, and a failure backoff is not touched.
        let h = Health::default();
        let w1 = h.rate_limited(None, t0);
        assert_eq!(w1, Transition::RateLimited { wait: FIRST_BACKOFF, asked: false });
        // Sixteen answers to requests already in flight do not run the backoff up.
        for _ in 0..16 {
            assert_eq!(h.rate_limited(None, t0), Transition::None);
        }
        assert!(h.available(t0 + FIRST_BACKOFF), "still the first wait");
        let w2 = h.rate_limited(None, t0 + FIRST_BACKOFF);
        assert_eq!(w2, Transition::RateLimited { wait: FIRST_BACKOFF * 2, asked: false });
        assert_eq!(h.snapshot(t0).consecutive_errors, 0);
        // An answer after the wait ended resets the backoff.
        h.success(Duration::from_millis(1));
        let w3 = h.rate_limited(None, t0 + FIRST_BACKOFF * 10);
        assert_eq!(w3, Transition::RateLimited { wait: FIRST_BACKOFF, asked: false });
    }

    #[test]
    fn lies_are_not_cleared_by_successes() {
        let h = Health::default();
        let t0 = Instant::now();
        assert_eq!(h.lie("bad_block", t0), FIRST_LIE_BACKOFF);
        h.success(Duration::from_millis(1));
        assert!(!h.available(t0), "a success does not lift the bench");
        let second = h.lie("bad_block", t0 + FIRST_LIE_BACKOFF);
        assert_eq!(second, FIRST_LIE_BACKOFF * 2, "a repeated lie benches for longer");
        h.success(Duration::from_millis(1));
        let third = h.lie("bad_block", t0 + FIRST_LIE_BACKOFF * 3);
        assert_eq!(third, FIRST_LIE_BACKOFF * 4);
        let much_later = t0 + LIE_FORGIVEN_AFTER * 2;
        assert_eq!(h.lie("bad_block", much_later), FIRST_LIE_BACKOFF, "old lies are forgiven");
        assert_eq!(h.snapshot(much_later).errors.get("bad_block"), Some(&4));
    }
}
