//! Verified blocks held for reuse, keyed by hash. Every payload a source serves passes I5 once
//! ([`super::set::SourceSet`] checks it) and lands here, so a path that needs the same block
//! again (a stuck EL fed the same range round after round, a bootstrap that proved a chain by
//! hash and falls back to replaying it, a recovery that replays what a catch-up fetched) takes
//! it from memory instead of paying a source for it twice.
//!
//! Only a hash picks a block out of the store: a caller names the top of the chain it wants by
//! hash (a block the quorum agrees on) and gets the held blocks that link down from it by parent
//! hash, so a block of another branch held at the same height can never be handed out. Memory is
//! bounded by the payloads' size; the oldest go first.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use alloy_primitives::B256;

use crate::payload::Payload;

/// A held payload and the index of the source that served it.
pub type HeldBlock = (usize, Payload);

/// Bytes counted for a payload besides its serialised params (the struct, the maps' entries).
const OVERHEAD: usize = 256;

/// The store of verified blocks.
#[derive(Debug)]
pub struct Held {
    inner: Mutex<Inner>,
    budget: usize,
}

#[derive(Debug, Default)]
struct Inner {
    by_hash: HashMap<B256, HeldBlock>,
    by_number: BTreeMap<u64, Vec<B256>>,
    /// Hashes in the order they came: the oldest go first when the budget is full (a walk down
    /// keeps what it fetched last, the lowest blocks, which a replay needs first).
    order: std::collections::VecDeque<B256>,
    bytes: usize,
}

impl Held {
    /// A store of at most `budget` bytes of payloads (0: holds nothing).
    pub fn new(budget: usize) -> Self {
        Self { inner: Mutex::new(Inner::default()), budget }
    }

    /// Holds `payload`, served by source `source`, dropping the oldest past the budget.
    pub fn insert(&self, source: usize, payload: &Payload) {
        let size = size_of(payload);
        if size > self.budget {
            return;
        }
        let mut inner = crate::util::lock(&self.inner);
        let hash = payload.block.hash;
        if inner.by_hash.contains_key(&hash) {
            return;
        }
        inner.by_hash.insert(hash, (source, payload.clone()));
        inner.by_number.entry(payload.block.number).or_default().push(hash);
        inner.order.push_back(hash);
        inner.bytes += size;
        while inner.bytes > self.budget {
            let Some(old) = inner.order.pop_front() else { break };
            let Some((_, p)) = inner.by_hash.remove(&old) else { continue };
            inner.bytes -= size_of(&p);
            let number = p.block.number;
            if let Some(hashes) = inner.by_number.get_mut(&number) {
                hashes.retain(|h| *h != old);
                if hashes.is_empty() {
                    inner.by_number.remove(&number);
                }
            }
        }
    }

    /// The held block with `hash`.
    pub fn get(&self, hash: B256) -> Option<HeldBlock> {
        crate::util::lock(&self.inner).by_hash.get(&hash).cloned()
    }

    /// The held blocks at heights `low..=high` that link down by parent hash from the block
    /// `top`, lowest first: empty when `top` is not held, shorter (starting above `low`) where
    /// a link is missing.
    pub fn chain_down(&self, top: B256, low: u64, high: u64) -> Vec<HeldBlock> {
        let inner = crate::util::lock(&self.inner);
        let mut out = Vec::new();
        let mut next = top;
        while let Some(held) = inner.by_hash.get(&next) {
            if held.1.block.number < low {
                break;
            }
            next = held.1.parent_hash;
            if held.1.block.number <= high {
                out.push(held.clone());
            }
            if held.1.block.number == low {
                break;
            }
        }
        out.reverse();
        out
    }

    /// The highest height in `from..=to` with a block held.
    pub fn highest_in(&self, from: u64, to: u64) -> Option<u64> {
        if from > to {
            return None;
        }
        crate::util::lock(&self.inner).by_number.range(from..=to).next_back().map(|(n, _)| *n)
    }

    /// Blocks and bytes held now.
    pub fn size(&self) -> (usize, usize) {
        let inner = crate::util::lock(&self.inner);
        (inner.by_hash.len(), inner.bytes)
    }
}

/// What a payload costs to hold, about.
fn size_of(p: &Payload) -> usize {
    p.params.get().len() + OVERHEAD
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::BlockRef;
    use crate::payload::FcuVersion;

    fn h(n: u64, branch: u8) -> B256 {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_be_bytes());
        b[31] = branch;
        B256::from(b)
    }

    /// Block `n` of `branch`, whose parent is block n-1 of `parent_branch`, padded to `pad`.
    fn block(n: u64, branch: u8, parent_branch: u8, pad: usize) -> Payload {
        let text = format!("[\"{}\"]", "0".repeat(pad));
        Payload {
            block: BlockRef::new(n, h(n, branch)),
            parent_hash: h(n.saturating_sub(1), parent_branch),
            timestamp: n,
            tx_count: 0,
            method: "engine_newPayloadV3",
            params: serde_json::value::RawValue::from_string(text).expect("json"),
            fcu: FcuVersion::V3,
            claimed: true,
        }
    }

    #[test]
    fn a_chain_is_picked_by_its_top_hash_never_by_height() {
        let held = Held::new(1 << 20);
        for n in 1..=10 {
            held.insert(0, &block(n, 0, 0, 10));
        }
        // A branch from 6 up, held beside the main chain.
        held.insert(1, &block(6, 1, 0, 10));
        held.insert(1, &block(7, 1, 1, 10));
        let main: Vec<u64> =
            held.chain_down(h(10, 0), 3, 10).iter().map(|b| b.1.block.number).collect();
        assert_eq!(main, (3..=10).collect::<Vec<_>>());
        let side = held.chain_down(h(7, 1), 1, 9);
        assert_eq!(
            side.iter().map(|b| (b.0, b.1.block.hash)).collect::<Vec<_>>()[5..],
            [(1, h(6, 1)), (1, h(7, 1))]
        );
        assert_eq!(side[0].1.block.number, 1);
        // Only the heights asked for are handed out.
        let part: Vec<u64> =
            held.chain_down(h(10, 0), 2, 5).iter().map(|b| b.1.block.number).collect();
        assert_eq!(part, [2, 3, 4, 5]);
        // Not held: nothing, whatever is held at that height.
        assert!(held.chain_down(h(11, 0), 1, 11).is_empty());
        assert!(held.chain_down(h(7, 2), 1, 7).is_empty());
        assert_eq!(held.highest_in(3, 100), Some(10));
        assert_eq!(held.highest_in(11, 100), None);
    }

    #[test]
    fn a_gap_ends_the_chain_and_the_budget_drops_the_oldest_first() {
        let one = size_of(&block(1, 0, 0, 100));
        let held = Held::new(one * 5);
        for n in (1..=8).filter(|&n| n != 4) {
            held.insert(0, &block(n, 0, 0, 100));
        }
        // 7 inserted, 5 fit: 1 and 2 went.
        assert_eq!(held.size(), (5, one * 5));
        assert!(held.get(h(2, 0)).is_none());
        let got: Vec<u64> =
            held.chain_down(h(8, 0), 1, 8).iter().map(|b| b.1.block.number).collect();
        assert_eq!(got, [5, 6, 7, 8]);
        // A walk down keeps what it fetched last: the lowest blocks.
        let walk = Held::new(one * 3);
        for n in (1..=6).rev() {
            walk.insert(0, &block(n, 0, 0, 100));
        }
        let kept: Vec<u64> =
            walk.chain_down(h(3, 0), 1, 3).iter().map(|b| b.1.block.number).collect();
        assert_eq!(kept, [1, 2, 3]);
        assert_eq!(walk.highest_in(1, 10), Some(3));
        // A block larger than the whole budget is not held, and evicts nothing.
        held.insert(0, &block(9, 0, 0, one * 6));
        assert_eq!(held.size().0, 5);
        // No budget, nothing held.
        let none = Held::new(0);
        none.insert(0, &block(1, 0, 0, 1));
        assert_eq!(none.size(), (0, 0));
    }
}
