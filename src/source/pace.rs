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
//! (ours and the sequencer's) by up to a block time end up in the offset. What the sources say
//! about time only decides when to ask next, never what is trusted; the time is taken from the
//! report the quorum backs, so one source alone cannot steer it; and no wait is longer than four
//! fixed intervals.

use std::collections::VecDeque;
use std::time::Duration;

/// Latest blocks remembered to learn the block time from.
const WINDOW: usize = 32;
/// First retry after a poll that did not find a due block, doubled on each further miss.
const RETRY: Duration = Duration::from_millis(25);
/// Where the offset starts: a block sealed at its timestamp reaches a provider's RPC in tens of
/// milliseconds.
const START_OFFSET_MS: i64 = 50;
/// How much earlier the next polls go after a first-try hit.
const EARLIER_MS: i64 = 2;
/// How much later they go after each miss.
const LATER_MS: i64 = 10;
/// How much longer than usual (beyond twice the usual time) a read that brought the due block
/// may take before it counts as having waited for it, ms.
const SLOW_MS: u64 = 10;
/// First-try finds in a row after which the steps earlier double.
const HITS_BEFORE_FASTER: u32 = 4;
/// Timestamps above this (the year 36812) are not times.
const MAX_TIMESTAMP: u64 = 1 << 40;
/// The longest wait for a due block, in fixed intervals.
const LONGEST: u32 = 4;
/// Block times past due after which the chain counts as not following the wall clock.
const BEHIND: i64 = 4;

/// The learned poll schedule.
#[derive(Debug, Clone)]
pub struct Pace {
    /// (height, timestamp in seconds) of the latest blocks seen, oldest first.
    recent: VecDeque<(u64, u64)>,
    /// Added to the due time, ms (negative where our clock is behind the sequencer's).
    offset_ms: i64,
    /// Polls after the due time that did not find the next block.
    misses: u32,
    /// First-try finds in a row (each moves the next polls earlier, faster after a few: an
    /// offset learned in a bad minute comes back down in a few blocks, not hundreds).
    hits: u32,
    /// How long a label read takes when it brings nothing new (smoothed), ms.
    read_ms: Option<u64>,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            recent: VecDeque::with_capacity(WINDOW),
            offset_ms: START_OFFSET_MS,
            misses: 0,
            hits: 0,
            read_ms: None,
        }
    }
}

impl Pace {
    /// Notes a poll answered at `now_ms` (Unix time, ms) whose latest block was `number` with
    /// `timestamp` (seconds); `took_ms`: how long the read took, where that says something about
    /// the source (not when answers were shared or waited for a quota).
    pub fn observe(&mut self, number: u64, timestamp: u64, took_ms: Option<u64>, now_ms: u64) {
        if timestamp > MAX_TIMESTAMP {
            // Not a time (a source that lies): nothing to learn, and no arithmetic overflows.
            return;
        }
        let newest = self.recent.back().copied();
        match newest {
            Some((n, _)) if number <= n => {
                // No new block (a read behind what was seen counts the same: a lagging source,
                // a reorg). How long a read takes when nothing is being made:
                if number == n
                    && let Some(took) = took_ms
                {
                    self.read_ms = Some(self.read_ms.map_or(took, |r| (3 * r + took) / 4));
                }
                if self.overdue(now_ms).is_some_and(|late| !late) {
                    self.misses += 1;
                    self.hits = 0;
                    self.offset_ms += LATER_MS;
                }
            }
            _ => {
                if newest.is_some() {
                    let waited = matches!((self.read_ms, took_ms),
                        (Some(r), Some(took)) if took > 2 * r + SLOW_MS);
                    if self.misses == 0 && waited {
                        // The answer waited for the block (a node that makes it and answers
                        // reads after): it was not there when asked, a miss that cost nothing.
                        self.hits = 0;
                        self.offset_ms += LATER_MS;
                    } else if self.misses == 0 && self.overdue(now_ms).is_some_and(|late| !late) {
                        // 2 ms a block, doubling after a few first-try finds in a row.
                        self.hits += 1;
                        let doublings = self.hits.saturating_sub(HITS_BEFORE_FASTER).min(8);
                        self.offset_ms -= EARLIER_MS << doublings;
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
        let bound = self.block_time().map_or(1_000, |b| b.as_millis() as i64);
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

    /// The learned offset after the due time, ms.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }

    /// Polls since the due time that did not find the next block.
    pub fn misses(&self) -> u32 {
        self.misses
    }

    /// `None` before the due time; `Some(false)` after it, `Some(true)` when the chain is far
    /// behind the wall clock (more than [`BEHIND`] block times past due: a sequencer that
    /// stopped, or timestamps that do not follow the clock), where the schedule means nothing.
    fn overdue(&self, now_ms: u64) -> Option<bool> {
        let due = self.due_ms()?;
        let bt = self.block_time()?.as_millis() as i64;
        let now = now_ms as i64;
        (now >= due).then_some(now - due > BEHIND * bt)
    }

    /// How long to wait from `now_ms` before the next poll: until the next block is due (plus the
    /// offset), at most [`LONGEST`] times `fallback` (the fixed interval: a poll between two
    /// blocks would find nothing new, but the labels and the EL are looked at now and then);
    /// soon again while a due block has not come, at most `fallback`; `fallback` while the block
    /// time is not known or the chain does not follow the clock.
    pub fn next_poll(&self, now_ms: u64, fallback: Duration) -> Duration {
        let Some(due) = self.due_ms() else { return fallback };
        if self.overdue(now_ms) == Some(true) {
            return fallback;
        }
        let now = now_ms as i64;
        if self.misses > 0 {
            // The due block has not come: ask again soon, less often the later it is.
            return (RETRY * 2u32.saturating_pow((self.misses - 1).min(5))).min(fallback);
        }
        if due > now {
            Duration::from_millis((due - now) as u64).min(fallback * LONGEST)
        } else {
            RETRY.min(fallback)
        }
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
            p.observe(k, k * bt, Some(1), k * bt * 1000 + 40);
        }
        p
    }

    #[test]
    fn waits_for_the_next_block_and_never_longer_than_the_fixed_clock() {
        let p = seen(10, 2);
        assert_eq!(p.block_time(), Some(2 * S));
        // Block 10 at t=20 s, seen at 20.04 s: 11 is due at 22 s, polled 50 ms after.
        assert_eq!(p.next_poll(20_040, 5 * S), Duration::from_millis(2_010));
        assert_eq!(p.next_poll(20_040, S), Duration::from_millis(2_010));
        // Four fixed intervals bound it.
        assert_eq!(p.next_poll(20_040, S / 2), 2 * S);
        // Unknown block time: the fixed interval.
        assert_eq!(Pace::default().next_poll(20_040, S), S);
        assert_eq!(seen(1, 2).next_poll(2_040, S), S);
    }

    #[test]
    fn a_late_block_is_polled_for_soon_then_less_often() {
        let mut p = seen(10, 1);
        let due = 11_000 + START_OFFSET_MS as u64;
        // Polled at the due time, not there: again in 25 ms, then 50, 100 ms ...
        p.observe(10, 10, Some(1), due);
        assert_eq!(p.next_poll(due, 5 * S), RETRY);
        p.observe(10, 10, Some(1), due + 25);
        assert_eq!(p.next_poll(due + 25, 5 * S), RETRY * 2);
        for k in 0..10 {
            p.observe(10, 10, Some(1), due + 75 + k * 100);
        }
        // Backed off to the fixed interval at most, and the offset bounded by half a block.
        assert_eq!(p.next_poll(due + 2_000, S / 2), S / 2);
        assert!(p.offset_ms <= 1_000, "{}", p.offset_ms);
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
                    p.observe(n, n, Some(1), now);
                    late.push(now - appears);
                    break;
                }
                p.observe(n - 1, n - 1, Some(1), now);
            }
        }
        // Settled: found within tens of ms of appearing, in under two polls a block.
        let tail = &late[late.len() - 50..];
        let worst = *tail.iter().max().unwrap_or(&0);
        assert!(worst <= 60, "late by up to {worst} ms: {tail:?}");
        assert!(polls * 100 <= 196 * 135, "{polls} polls for 196 blocks");
    }

    #[test]
    fn an_offset_learned_in_a_bad_minute_comes_back_down_in_a_few_blocks() {
        let mut p = seen(3, 2);
        p.offset_ms = 1_000;
        // Blocks appear 60 ms after their timestamp; every poll finds one at the first try.
        let mut now = 6_100;
        let mut n = 4;
        while p.offset_ms > 100 && n < 40 {
            now += p.next_poll(now, 5 * S).as_millis() as u64;
            p.observe(n, 2 * n, Some(1), now.max(2_000 * n + 60));
            n += 1;
        }
        assert!(n < 20, "offset {} after {} blocks", p.offset_ms, n - 4);
    }

    #[test]
    fn an_answer_that_waited_for_the_block_moves_the_polls_later() {
        // The source makes the block and answers reads only once it is in (a node that is its
        // own sequencer): blocks are in 80 ms after their timestamp, reads otherwise take 2 ms.
        let mut p = seen(3, 1);
        let mut now = 3_100;
        for n in 4..60u64 {
            let appears = n * 1000 + 80;
            loop {
                let sent = now + p.next_poll(now, S).as_millis() as u64;
                // A read sent while the block is being made comes back when it is in.
                now = if sent + 100 >= appears && sent < appears { appears } else { sent + 2 };
                if now >= appears {
                    p.observe(n, n, Some(now - sent), now);
                    break;
                }
                p.observe(n - 1, n - 1, Some(now - sent), now);
            }
        }
        assert!((60..=110).contains(&p.offset_ms), "offset {}", p.offset_ms);
    }

    #[test]
    fn a_lagging_answer_or_a_gap_teaches_nothing_wrong() {
        let mut p = seen(10, 2);
        let before = p.clone();
        p.observe(7, 14, Some(1), 20_500);
        assert_eq!(p.due_ms(), before.due_ms());
        // Far ahead (lightcl was down): learning starts again from there.
        p.observe(500, 1_000, Some(1), 1_000_040);
        assert_eq!(p.block_time(), None);
        p.observe(501, 1_002, Some(1), 1_002_040);
        assert_eq!(p.block_time(), Some(2 * S));
        // A jump in time (a chain that stood still, or started from an old genesis) is one odd
        // step among many.
        let mut jumped = Pace::default();
        jumped.observe(1, 100, Some(0), 0);
        for k in 2..=6 {
            jumped.observe(k, 1_000_000 + 2 * k, Some(0), 0);
        }
        assert_eq!(jumped.block_time(), Some(2 * S));
        // Timestamps far behind the clock (a stopped sequencer, a test chain): the fixed clock,
        // and nothing learned from the polls.
        let mut behind = seen(10, 2);
        let offset = behind.offset_ms;
        assert_eq!(behind.next_poll(20_000 + 2_000 * 6, S), S);
        behind.observe(10, 20, Some(1), 20_000 + 2_000 * 6);
        assert_eq!((behind.offset_ms, behind.misses), (offset, 0));
        // Sub-second chains: the timestamps cannot tell, the fixed clock is used.
        let mut fast = Pace::default();
        for k in 1..=8 {
            fast.observe(k, k / 4, Some(1), k * 250);
        }
        assert_eq!(fast.block_time(), None);
    }
}
