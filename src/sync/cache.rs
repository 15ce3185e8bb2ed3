//! The fetch a fleet's replicas share: a block fetched for one replica is handed to every other
//! replica that asks for it soon after, so each block is fetched and verified once however many
//! replicas there are.
//!
//! A height is claimed by the first replica that asks for it; that replica fetches it (batches,
//! hedging, fallbacks: the ordinary pipeline) and publishes it; the others wait for the claim and
//! take a copy. A claim the owner gives up on (its round ended, the fetch failed) releases its
//! waiters, who then fetch the block themselves. Memory is bounded: at most `capacity` heights
//! are kept, the lowest dropped first, and an entry older than `ttl` is fetched afresh. A
//! replica further behind than that does not hold blocks back for itself: it fetches again.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::payload::Payload;

/// What a published height holds: the source that served it and the verified payload.
pub type Entry = Option<(usize, Payload)>;

/// One height asked for from the shared fetch.
#[derive(Debug)]
pub enum Claim {
    /// Another replica fetches (or fetched) it: wait for it.
    Wait(watch::Receiver<Entry>),
    /// This replica fetches it and publishes it through the sender.
    Own(watch::Sender<Entry>),
}

/// The shared fetch's store of recent heights.
#[derive(Debug)]
pub struct BlockCache {
    slots: Mutex<BTreeMap<u64, (Instant, watch::Receiver<Entry>)>>,
    capacity: usize,
    ttl: Duration,
}

impl BlockCache {
    /// A store of at most `capacity` heights, each reused for at most `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self { slots: Mutex::new(BTreeMap::new()), capacity: capacity.max(1), ttl }
    }

    /// Claims heights `start..start + count`: each is waited for when another replica fetches
    /// or fetched it recently, and owned otherwise.
    pub fn claim(&self, start: u64, count: u64) -> Vec<Claim> {
        let now = Instant::now();
        let mut slots = crate::util::lock(&self.slots);
        let mut out = Vec::with_capacity(count as usize);
        for n in start..start + count {
            match slots.get(&n) {
                // A live claim or a published block, recent enough.
                Some((at, rx)) if now.duration_since(*at) < self.ttl && live(rx) => {
                    out.push(Claim::Wait(rx.clone()));
                }
                _ => {
                    let (tx, rx) = watch::channel(None);
                    slots.insert(n, (now, rx));
                    out.push(Claim::Own(tx));
                }
            }
        }
        while slots.len() > self.capacity {
            slots.pop_first();
        }
        out
    }

    /// Forgets every height from `from` up (a block there turned out to be off the agreed chain:
    /// the sources reorganised, or one of them lied).
    pub fn forget_from(&self, from: u64) {
        let mut slots = crate::util::lock(&self.slots);
        slots.split_off(&from);
    }

    /// Heights held now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        crate::util::lock(&self.slots).len()
    }
}

/// A slot is worth waiting for while its block is published or its owner still works on it.
fn live(rx: &watch::Receiver<Entry>) -> bool {
    rx.borrow().is_some() || rx.has_changed().is_ok()
}

/// Waits for a claimed height; `None` when its owner gave up on it.
pub async fn wait(mut rx: watch::Receiver<Entry>) -> Entry {
    match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone(),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(c: &[Claim]) -> Vec<bool> {
        c.iter().map(|c| matches!(c, Claim::Own(_))).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn claims_once_then_waits_and_forgets_given_up_claims() {
        let cache = BlockCache::new(8, Duration::from_secs(10));
        let first = cache.claim(1, 4);
        assert_eq!(owned(&first), [true; 4]);
        // Overlapping ask: the claimed heights are waited for, the new ones owned.
        let second = cache.claim(3, 4);
        assert_eq!(owned(&second), [false, false, true, true]);
        // The owner of 1..=4 gives up: its waiters are released, the heights free again.
        drop(first);
        let Claim::Wait(rx) = &second[0] else { panic!("waits") };
        assert!(wait(rx.clone()).await.is_none());
        assert_eq!(owned(&cache.claim(1, 2)), [true, true]);
        // Capacity: the lowest heights go first.
        let _more = cache.claim(100, 8);
        assert_eq!(cache.len(), 8);
        assert_eq!(owned(&cache.claim(5, 1)), [true]);
    }

    #[tokio::test(start_paused = true)]
    async fn old_entries_are_fetched_afresh() {
        let cache = BlockCache::new(8, Duration::from_secs(10));
        let _held = cache.claim(1, 1);
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(owned(&cache.claim(1, 1)), [true]);
        let _held = cache.claim(7, 3);
        cache.forget_from(8);
        assert_eq!(owned(&cache.claim(7, 3)), [false, true, true]);
    }
}
