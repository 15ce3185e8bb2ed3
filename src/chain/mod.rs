//! Small chain types shared by every module, and the ancestor search over two chains.

pub mod ancestor;
pub mod output;

use std::collections::VecDeque;
use std::fmt;

use alloy_primitives::B256;
use serde::{Deserialize, Serialize};

/// A block by height and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockRef {
    /// Height.
    pub number: u64,
    /// Hash.
    pub hash: B256,
}

impl BlockRef {
    /// A reference.
    pub const fn new(number: u64, hash: B256) -> Self {
        Self { number, hash }
    }
}

impl fmt::Display for BlockRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {}", self.number, self.hash)
    }
}

/// A block label a source or the EL reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Label {
    /// The newest block.
    Latest,
    /// The newest safe block.
    Safe,
    /// The newest finalized block.
    Finalized,
}

impl Label {
    /// The JSON-RPC block tag.
    pub const fn tag(self) -> &'static str {
        match self {
            Self::Latest => "latest",
            Self::Safe => "safe",
            Self::Finalized => "finalized",
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

/// The three labels of one chain view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Heads {
    /// Latest (the EL's head).
    pub head: BlockRef,
    /// Safe.
    pub safe: BlockRef,
    /// Finalized.
    pub finalized: BlockRef,
}

/// A stretch of one chain proven by hash: the blocks `low..=top`, each the parent of the next.
/// It starts at a block lightcl read itself (the EL's own block, or a block fetched by its hash
/// and verified) and grows only by verified payloads that link to it, so nothing in it is a
/// caller's word or a by-number answer (a load balancer over replicas on two branches can answer
/// two heights from two branches; a wrong one does not link).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    low: u64,
    hashes: VecDeque<B256>,
    /// The parent hash the lowest block names, once its verified payload was seen.
    below: Option<B256>,
}

impl Proven {
    /// Just `b`: a block lightcl read from the EL, or fetched by its hash and verified.
    pub fn at(b: BlockRef) -> Self {
        Self { low: b.number, hashes: VecDeque::from([b.hash]), below: None }
    }

    /// The lowest block.
    pub fn low(&self) -> BlockRef {
        BlockRef::new(self.low, self.hashes[0])
    }

    /// The highest block.
    pub fn top(&self) -> BlockRef {
        let k = self.hashes.len() - 1;
        BlockRef::new(self.low + k as u64, self.hashes[k])
    }

    /// How many blocks it holds.
    pub fn len(&self) -> u64 {
        self.hashes.len() as u64
    }

    /// Never empty: it always holds the block it started at.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The hash the chain holds at `n`, where it reaches.
    pub fn get(&self, n: u64) -> Option<B256> {
        self.hashes.get(usize::try_from(n.checked_sub(self.low)?).ok()?).copied()
    }

    /// The parent hash the lowest block names, if its payload was seen.
    pub fn below(&self) -> Option<B256> {
        self.below
    }

    /// Adds `block` (whose parent is `parent_hash`) on top if it is the child of the highest
    /// block; false (nothing added) if not.
    pub fn push(&mut self, block: BlockRef, parent_hash: B256) -> bool {
        let top = self.top();
        let fits = block.number == top.number + 1 && parent_hash == top.hash;
        if fits {
            self.hashes.push_back(block.hash);
        }
        fits
    }

    /// Learns the lowest block's parent (`parent_hash`, from that block's verified payload);
    /// false if `block` is not the lowest block.
    pub fn learn_below(&mut self, block: BlockRef, parent_hash: B256) -> bool {
        let fits = block == self.low();
        if fits {
            self.below = Some(parent_hash);
        }
        fits
    }

    /// Adds `block` (whose parent is `parent_hash`) below the lowest block if it is that
    /// block's parent; false (nothing added) if not, or if the lowest block's parent is not
    /// known yet ([`Proven::learn_below`]).
    pub fn push_below(&mut self, block: BlockRef, parent_hash: B256) -> bool {
        let fits = self.low > 0 && block.number + 1 == self.low && self.below == Some(block.hash);
        if fits {
            self.hashes.push_front(block.hash);
            self.low -= 1;
            self.below = Some(parent_hash);
        }
        fits
    }

    /// Adds `more` on top, where it starts at this chain's highest block; false (nothing added)
    /// if it does not.
    pub fn extend(&mut self, more: &Proven) -> bool {
        let fits = more.low() == self.top();
        if fits {
            self.hashes.extend(more.hashes.iter().skip(1).copied());
        }
        fits
    }

    /// Forgets the blocks above `n` (keeps at least the lowest block).
    pub fn truncate_above(&mut self, n: u64) {
        let keep = n.saturating_sub(self.low).saturating_add(1).min(self.len());
        self.hashes.truncate(keep as usize);
    }

    /// Forgets the blocks below `n` (keeps at least the highest block).
    pub fn trim_below(&mut self, n: u64) {
        let skip = n.saturating_sub(self.low).min(self.len() - 1);
        if skip > 0 {
            // The last block dropped is the parent of the new lowest one.
            self.below = Some(self.hashes[skip as usize - 1]);
            self.hashes.drain(..skip as usize);
            self.low += skip;
        }
    }
}
