//! When to poll the sources next: just after the next block is due, not on a fixed clock.
//!
//! A chain makes a block every `block time`; the block after the latest one is due at the
//! latest's timestamp plus that time, and appears at the sources a little after (the sequencer
//! seals and gossips it, the provider indexes it). Polling then, plus a learned offset, finds
//! it at the first try; a fixed clock finds it up to a whole interval late, or polls in vain.
//!
//! The block time is learned from the latest blocks seen (timestamps over heights), so nothing
//! is configured. The offset is learned from the polls themselves: a poll after the due time
//! that finds the block moves the next ones slightly earlier, one that does not moves them later
//! (and the poll is repeated soon, backing off towards the fixed interval). Clocks that differ
//! (ours and the sequencer's) end up in the offset. What a source says about time only decides
//! when to ask next, never what is trusted, and no wait is longer than the fixed interval.

use std::collections::VecDeque;
use std::time::Duration;

/// Latest blocks remembered to learn the block time from.
const WINDOW: usize = 32;
/// First retry after a poll that did not find a due block, doubled on each further miss.
const RETRY: Duration = Duration::from_millis(50);
/// Where the offset starts: a block sealed at its timestamp reaches a provider's RPC in tens of
/// milliseconds.
const START_OFFSET_MS: i64 = 50;
/// How much earlier the next polls go after a first-try hit.
const EARLIER_MS: i64 = 5;
/// How much later they go after each miss.
const LATER_MS: i64 = 25;

/// The learned poll schedule.
#[derive(Debug, Clone)]
pub struct Pace {
    /// (height, timestamp in seconds) of the latest blocks seen, oldest first.
    recent: VecDeque<(u64, u64)>,
    /// Added to the due time, ms (negative where our clock is behind the sequencer's).
    offset_ms: i64,
    /// Polls after the due time that did not find the next block.
    misses: u32,
}

impl Default for Pace {
    fn default() -> Self {
        Self { recent: VecDeque::with_capacity(WINDOW), offset_ms: START_OFFSET_MS, misses: 0 }
    }
}

impl Pace {
    /// Notes a poll at `now_ms` (Unix time, ms) whose highest latest block was `number` with
    /// `timestamp` (seconds).
    pub fn observe(&mut self, number: u64, timestamp: u64, now_ms: u64) {
        let newest = self.recent.back().copied();
        match newest {
            Some((n, _)) if number < n => {
                // Behind what was seen (a lagging source, a reorg): no news either way.
            }
            Some((n, _)) if number == n => {
                if self.due_ms().is_some_and(|due| now_ms as i64 >= due) {
                    self.misses += 1;
                    self.offset_ms += LATER_MS;
                }
            }
            _ => {
                if newest.is_some() {
                    if self.misses == 0 && self.due_ms().is_some_and(|due| now_ms as i64 >= due) {
                        self.offset_ms -= EARLIER_MS;
                    }
                    self.misses = 0;
                }
                if let Some((n, t)) = newest
                    && (timestamp < t || number > n + WINDOW as u64)
                {
                    // Time went backwards or a long gap: start learning afresh.
                    self.recent.clear();
                }
                if self.recent.len() == WINDOW {
                    self.recent.pop_front();
                }
                self.recent.push_back((number, timestamp));
            }
        }
        let bound = self.block_time().map_or(500, |b| b.as_millis() as i64 / 2);
        self.offset_ms = self.offset_ms.clamp(-bound, bound);
    }

    /// The chain's block time, learned from the latest blocks (at least a second: timestamps
    /// count seconds, so a faster chain's schedule cannot be told from them).
    pub fn block_time(&self) -> Option<Duration> {
        let (&(n0, t0), &(n1, t1)) = (self.recent.front()?, self.recent.back()?);
        // Over the whole window: a chain faster than a block a second shows it here.
        if n1 <= n0 || t1 <= t0 || (t1 - t0) * 1000 / (n1 - n0) < 1000 {
            return None;
        }
        // The median step: one odd gap (a restart, a halted sequencer) does not skew it.
        let mut steps: Vec<u64> = self
            .recent
            .iter()
            .zip(self.recent.iter().skip(1))
            .filter(|((a, _), (b, _))| b > a)
            .map(|((a, ta), (b, tb))| tb.saturating_sub(*ta) * 1000 / (b - a))
            .collect();
        steps.sort_unstable();
        let ms = *steps.get(steps.len() / 2)?;
        (ms >= 1000).then(|| Duration::from_millis(ms))
    }

    /// When the next block is due plus the offset, Unix ms.
    fn due_ms(&self) -> Option<i64> {
        let (_, t) = *self.recent.back()?;
        let bt = self.block_time()?;
        Some(t as i64 * 1000 + bt.as_millis() as i64 + self.offset_ms)
    }

    /// How long to wait from `now_ms` before the next poll: until the next block is due (plus the
    /// offset), or soon again while a due block has not come, never longer than `fallback` (the
    /// fixed interval, also used while the block time is not known).
    pub fn next_poll(&self, now_ms: u64, fallback: Duration) -> Duration {
        let Some(due) = self.due_ms() else { return fallback };
        let now = now_ms as i64;
        let wait = if self.misses > 0 {
            // The due block has not come: ask again soon, less often the later it is.
            RETRY * 2u32.saturating_pow((self.misses - 1).min(5))
        } else if due > now {
            Duration::from_millis((due - now) as u64)
        } else {
            RETRY
        };
        wait.min(fallback)
    }
}

/// Now as Unix time in ms.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// A pace that saw blocks 1..=`n` of a chain with `bt` s blocks (timestamps `bt * k`).
    fn seen(n: u64, bt: u64) -> Pace {
        let mut p = Pace::default();
        for k in 1..=n {
            p.observe(k, k * bt, k * bt * 1000 + 40);
        }
        p
    }

    #[test]
    fn waits_for_the_next_block_and_never_longer_than_the_fixed_clock() {
        let p = seen(10, 2);
        assert_eq!(p.block_time(), Some(2 * S));
        // Block 10 at t=20 s, seen at 20.04 s: 11 is due at 22 s, polled 50 ms after.
        assert_eq!(p.next_poll(20_040, 5 * S), Duration::from_millis(2_010));
        // The fixed interval bounds it.
        assert_eq!(p.next_poll(20_040, S), S);
        // Unknown block time: the fixed interval.
        assert_eq!(Pace::default().next_poll(20_040, S), S);
        assert_eq!(seen(1, 2).next_poll(2_040, S), S);
    }

    #[test]
    fn a_late_block_is_polled_for_soon_then_less_often() {
        let mut p = seen(10, 1);
        let due = 11_000 + START_OFFSET_MS as u64;
        // Polled at the due time, not there: again in 50 ms, then 100, 200 ms ...
        p.observe(10, 10, due);
        assert_eq!(p.next_poll(due, 5 * S), Duration::from_millis(50));
        p.observe(10, 10, due + 50);
        assert_eq!(p.next_poll(due + 50, 5 * S), Duration::from_millis(100));
        for k in 0..10 {
            p.observe(10, 10, due + 300 + k * 100);
        }
        // Backed off to the fixed interval at most, and the offset bounded by half a block.
        assert_eq!(p.next_poll(due + 2_000, S / 2), S / 2);
        assert!(p.offset_ms <= 500, "{}", p.offset_ms);
    }

    #[test]
    fn the_offset_learns_when_blocks_appear() {
        // Blocks appear 300 ms after their timestamp; polls that come earlier miss and retry.
        let mut p = seen(3, 1);
        let mut polls = 0;
        let mut late = Vec::new();
        let mut now = 3_100;
        for n in 4..200u64 {
            let appears = n * 1000 + 300;
            loop {
                now += p.next_poll(now, S).as_millis() as u64;
                polls += 1;
                if now >= appears {
                    p.observe(n, n, now);
                    late.push(now - appears);
                    break;
                }
                p.observe(n - 1, n - 1, now);
            }
        }
        // Settled: found within tens of ms of appearing, in under two polls a block.
        let tail = &late[late.len() - 50..];
        let worst = *tail.iter().max().unwrap_or(&0);
        assert!(worst <= 60, "late by up to {worst} ms: {tail:?}");
        assert!(polls * 10 <= 196 * 13, "{polls} polls for 196 blocks");
    }

    #[test]
    fn a_lagging_answer_or_a_gap_teaches_nothing_wrong() {
        let mut p = seen(10, 2);
        let before = p.clone();
        p.observe(7, 14, 20_500);
        assert_eq!(p.due_ms(), before.due_ms());
        // Far ahead (lightcl was down): learning starts again from there.
        p.observe(500, 1_000, 1_000_040);
        assert_eq!(p.block_time(), None);
        p.observe(501, 1_002, 1_002_040);
        assert_eq!(p.block_time(), Some(2 * S));
        // A jump in time (a chain that stood still, or started from an old genesis) is one odd
        // step among many.
        let mut jumped = Pace::default();
        jumped.observe(1, 100, 0);
        for k in 2..=6 {
            jumped.observe(k, 1_000_000 + 2 * k, 0);
        }
        assert_eq!(jumped.block_time(), Some(2 * S));
        // Sub-second chains: the timestamps cannot tell, the fixed clock is used.
        let mut fast = Pace::default();
        for k in 1..=8 {
            fast.observe(k, k / 4, k * 250);
        }
        assert_eq!(fast.block_time(), None);
    }
}
