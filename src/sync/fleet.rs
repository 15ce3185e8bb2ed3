//! A fleet: the replicas one lightcl drives. Each replica runs its own follower (local view,
//! feed, recovery, finality floor, health); what they share lives here: the wake-ups, the
//! shared fetch ([`BlockCache`]), a common poll clock (so that idle replicas read the sources
//! together and their reads coalesce), and, under `labels = "lockstep"`, each replica's head so
//! that safe and finalized move only to blocks every replica that counts already holds.
//!
//! The lockstep rule: a replica counts while it is ready (what `/readyz/<name>` says: EL
//! answering, not halted, not recovering, within `ready_max_lag_blocks` of the target) and has
//! reported within [`LOCKSTEP_STALE`]. A replica that goes down or falls behind stops counting
//! at once; one whose follower stops reporting, after [`LOCKSTEP_STALE`]. The others never wait
//! for a replica that does not come back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::cache::BlockCache;
use crate::chain::BlockRef;
use crate::config::LabelMode;

/// How long a replica's last report counts for lockstep.
pub const LOCKSTEP_STALE: Duration = Duration::from_secs(30);
/// How long a block fetched for one replica is handed to the others.
pub const SHARED_FETCH_TTL: Duration = Duration::from_secs(30);

/// What one replica last reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaView {
    /// Its EL's head.
    pub head: Option<BlockRef>,
    /// Its EL's finalized block.
    pub finalized: Option<BlockRef>,
    /// Ready for traffic.
    pub ready: bool,
    /// When it reported.
    pub at: Option<Instant>,
}

/// The height up to which replica `me` may move its safe and finalized labels under lockstep:
/// the lowest among the other replicas that count (ready, reported within `stale`) of what
/// each holds of the agreed chain: its head where `on_agreed(head)` (the quorum holds that very
/// block, so it holds every agreed block below it), otherwise only its finalized block (a
/// replica still on a branch the sources left, after a reorg at the tip, holds the agreed
/// blocks only up to where the branches part, which is at or above its finalized block).
/// `None`: no other replica counts, nothing holds it back.
pub fn lockstep_cap(
    views: &[ReplicaView],
    me: usize,
    now: Instant,
    stale: Duration,
    on_agreed: impl Fn(BlockRef) -> bool,
) -> Option<u64> {
    counting(views, me, now, stale)
        .map(|v| match v.head {
            Some(h) if on_agreed(h) => h.number,
            _ => v.finalized.map_or(0, |f| f.number),
        })
        .min()
}

/// The other replicas that count for lockstep.
fn counting(
    views: &[ReplicaView],
    me: usize,
    now: Instant,
    stale: Duration,
) -> impl Iterator<Item = &ReplicaView> {
    views.iter().enumerate().filter_map(move |(j, v)| {
        let fresh = v.at.is_some_and(|t| now.saturating_duration_since(t) < stale);
        (j != me && v.ready && fresh && v.head.is_some()).then_some(v)
    })
}

/// What the replicas of one lightcl share.
#[derive(Debug)]
pub struct Fleet {
    names: Vec<String>,
    mode: LabelMode,
    wakes: Vec<Arc<Notify>>,
    views: Mutex<Vec<ReplicaView>>,
    cache: Option<BlockCache>,
    epoch: Instant,
    poll: Duration,
}

impl Fleet {
    /// A fleet of the replicas `names`, polling every `poll`; the shared fetch keeps at most
    /// `prefetch` heights (only with more than one replica).
    pub fn new(names: Vec<String>, mode: LabelMode, poll: Duration, prefetch: usize) -> Self {
        let n = names.len();
        let cache = (n > 1).then(|| BlockCache::new(prefetch, SHARED_FETCH_TTL));
        Self {
            names,
            mode,
            wakes: (0..n).map(|_| Arc::new(Notify::new())).collect(),
            views: Mutex::new(vec![ReplicaView::default(); n]),
            cache,
            epoch: Instant::now(),
            poll: poll.max(Duration::from_millis(1)),
        }
    }

    /// Number of replicas.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Replica `i`'s name.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Replica `i`'s wake-up.
    pub fn wake(&self, i: usize) -> Arc<Notify> {
        self.wakes[i].clone()
    }

    /// Wakes every replica (a source announced a new head).
    pub fn wake_all(&self) {
        for w in &self.wakes {
            w.notify_one();
        }
    }

    /// The shared fetch (fleets of more than one replica).
    pub fn cache(&self) -> Option<&BlockCache> {
        self.cache.as_ref()
    }

    /// Records replica `i`'s head and readiness. Under lockstep a head that moved wakes the
    /// others: their labels may be free to move now.
    pub fn report(&self, i: usize, head: BlockRef, finalized: BlockRef, ready: bool) {
        let moved = {
            let mut views = crate::util::lock(&self.views);
            let Some(v) = views.get_mut(i) else { return };
            let moved = v.head != Some(head) || v.ready != ready;
            *v = ReplicaView {
                head: Some(head),
                finalized: Some(finalized),
                ready,
                at: Some(Instant::now()),
            };
            moved
        };
        if moved && self.mode == LabelMode::Lockstep {
            for (j, w) in self.wakes.iter().enumerate() {
                if j != i {
                    w.notify_one();
                }
            }
        }
    }

    /// Keeps replica `i`'s last report fresh while it works through a long round (a slow EL
    /// feeding for longer than [`LOCKSTEP_STALE`] still holds what it reported, and still
    /// counts).
    pub fn touch(&self, i: usize) {
        let mut views = crate::util::lock(&self.views);
        if let Some(v) = views.get_mut(i).filter(|v| v.head.is_some()) {
            v.at = Some(Instant::now());
        }
    }

    /// Records that replica `i` is not ready (its EL is down, it halted).
    pub fn report_down(&self, i: usize) {
        let mut views = crate::util::lock(&self.views);
        if let Some(v) = views.get_mut(i) {
            v.ready = false;
            v.at = Some(Instant::now());
        }
    }

    /// Under lockstep, the heads of the other replicas that count for replica `i` (to check
    /// against the agreed chain); `None` when not in lockstep.
    pub fn lockstep_heads(&self, i: usize) -> Option<Vec<BlockRef>> {
        if self.mode != LabelMode::Lockstep {
            return None;
        }
        let views = crate::util::lock(&self.views);
        Some(counting(&views, i, Instant::now(), LOCKSTEP_STALE).filter_map(|v| v.head).collect())
    }

    /// Under lockstep, the height replica `i`'s safe and finalized may move up to, given which
    /// of the other replicas' heads the quorum holds ([`lockstep_cap`]); `None` otherwise or
    /// when nothing holds them back.
    pub fn label_cap(&self, i: usize, on_agreed: impl Fn(BlockRef) -> bool) -> Option<u64> {
        if self.mode != LabelMode::Lockstep {
            return None;
        }
        let views = crate::util::lock(&self.views);
        lockstep_cap(&views, i, Instant::now(), LOCKSTEP_STALE, on_agreed)
    }

    /// The next tick of the fleet's poll clock after now: idle replicas wake together, so their
    /// source reads coalesce.
    pub fn next_tick(&self) -> Instant {
        let now = Instant::now();
        let since = now.duration_since(self.epoch).as_nanos();
        let poll = self.poll.as_nanos();
        let next = (since / poll + 1) * poll;
        self.epoch + Duration::from_nanos(u64::try_from(next).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use alloy_primitives::B256;

    use super::*;

    fn v(head: u64, ready: bool, ago_s: u64, now: Instant) -> ReplicaView {
        ReplicaView {
            head: Some(BlockRef::new(head, B256::ZERO)),
            finalized: Some(BlockRef::new(head.saturating_sub(5), B256::ZERO)),
            ready,
            at: Some(now - Duration::from_secs(ago_s)),
        }
    }

    /// A replica on a branch the sources left (another hash at its head).
    fn off(head: u64, now: Instant) -> ReplicaView {
        ReplicaView {
            head: Some(BlockRef::new(head, B256::repeat_byte(0xee))),
            ..v(head, true, 0, now)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lockstep_cap_table() {
        tokio::time::advance(Duration::from_secs(100)).await;
        let now = Instant::now();
        let stale = Duration::from_secs(30);
        let cases: Vec<(&str, Vec<ReplicaView>, Option<u64>)> = vec![
            ("alone", vec![v(10, true, 0, now)], None),
            (
                "the slowest ready other decides",
                vec![v(10, true, 0, now), v(7, true, 1, now), v(9, true, 0, now)],
                Some(7),
            ),
            (
                "a replica not ready does not count",
                vec![v(10, true, 0, now), v(2, false, 0, now), v(9, true, 0, now)],
                Some(9),
            ),
            ("nor one not heard from", vec![v(10, true, 0, now), v(2, true, 31, now)], None),
            (
                "nor one that never reported",
                vec![v(10, true, 0, now), ReplicaView::default()],
                None,
            ),
            ("own head does not cap", vec![v(3, true, 0, now), v(9, true, 0, now)], Some(9)),
            (
                "a replica on a branch the sources left holds only its finalized block",
                vec![v(10, true, 0, now), off(12, now), v(11, true, 0, now)],
                Some(7),
            ),
        ];
        let agreed = |b: BlockRef| b.hash == B256::ZERO;
        for (what, views, want) in cases {
            assert_eq!(lockstep_cap(&views, 0, now, stale, agreed), want, "{what}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_lockstep_caps_and_wakes() {
        let b = |n| BlockRef::new(n, B256::ZERO);
        for mode in [LabelMode::Independent, LabelMode::Lockstep] {
            let f = Fleet::new(vec!["a".into(), "b".into()], mode, Duration::from_secs(1), 16);
            f.report(1, b(5), b(1), true);
            let cap = f.label_cap(0, |_| true);
            assert_eq!(cap, (mode == LabelMode::Lockstep).then_some(5), "{mode:?}");
            let cap = f.label_cap(0, |_| false);
            assert_eq!(cap, (mode == LabelMode::Lockstep).then_some(1), "{mode:?}");
            let woken = tokio::time::timeout(Duration::from_millis(1), f.wake(0).notified()).await;
            assert_eq!(woken.is_ok(), mode == LabelMode::Lockstep, "{mode:?}");
            f.report_down(1);
            assert_eq!(f.label_cap(0, |_| true), None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_are_common() {
        let f = Fleet::new(vec!["a".into()], LabelMode::Independent, Duration::from_secs(2), 16);
        tokio::time::advance(Duration::from_millis(2500)).await;
        assert_eq!(f.next_tick() - f.epoch, Duration::from_secs(4));
    }
}
