//! The L1-origin check of the agreed labels: the L1 block an agreed safe or finalized block
//! names as its origin must be L1's canonical block at that height, and for finalized, at or
//! below L1's finalized block.
//!
//! An origin that is not on L1's chain is told apart from an L1 reorg by L1's finality: above
//! L1's finalized block a mismatch may be a reorg that dropped the origin (the L2 chain built on
//! it reorgs too, and its sources move on): it waits, transient. At or below L1's finalized
//! block no reorg can change L1's answer: the origin is false, proven.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use alloy_primitives::B256;
use serde::Serialize;

use super::info::{L1Origin, OriginError, origin_of};
use super::{L1Error, L1Heads, L1Set};
use crate::chain::{BlockRef, Heads};
use crate::source::set::SourceSet;

/// How long L1's heads, read once, serve every check (every replica of a fleet, every label).
const HEADS_FRESH: Duration = Duration::from_millis(500);
/// How long a non-final L1 lookup of a height serves before it is read again.
const UNSAFE_LOOKUP_FRESH: Duration = Duration::from_secs(2);
/// How long a failed read of L1's heads is remembered (the round does not wait on an L1 that
/// does not answer again before then; the labels stay pending).
const HEADS_RETRY: Duration = Duration::from_secs(30);
/// Most L2 blocks whose origin is remembered.
const REMEMBERED: usize = 4_096;

pub use crate::config::VerifyMode;

/// Which label is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Which {
    /// The agreed safe block.
    Safe,
    /// The agreed finalized block.
    Finalized,
}

impl Which {
    /// As in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Safe => "safe",
            Self::Finalized => "finalized",
        }
    }
}

/// The result of one label's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its origin is L1's canonical block (finalized, for a finalized label).
    Ok(L1Origin),
    /// Not decided yet; the label waits in `enforce`. Why, in words.
    Pending(String),
    /// Proven false: not built on this L1. Why, in words.
    False(String),
}

impl Verdict {
    /// As in metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ok(_) => "ok",
            Self::Pending(_) => "pending",
            Self::False(_) => "false",
        }
    }
}

/// Decides one label from its origin, L1's block at the origin's height and L1's heads (pure).
pub fn judge(which: Which, origin: L1Origin, canonical: Option<BlockRef>, l1: L1Heads) -> Verdict {
    let o = origin.block;
    let finalized = l1.finalized.map_or(0, |f| f.number);
    let Some(canonical) = canonical else {
        return Verdict::Pending(format!(
            "its L1 origin {o} is above the L1 RPC's head ({}): the L1 RPC lags, or the origin \
             does not exist",
            l1.latest.map_or("none".into(), |b| b.to_string())
        ));
    };
    if canonical.hash != o.hash {
        if o.number <= finalized {
            return Verdict::False(format!(
                "its L1 origin {o} is not on L1: L1's block {} is {}, and L1 finalized it",
                o.number, canonical.hash
            ));
        }
        return Verdict::Pending(format!(
            "its L1 origin {o} is not on L1's chain now (L1 has {} there): an L1 reorg the L2 \
             chain has not followed yet, or a false origin; decided once L1 finalizes block {}",
            canonical.hash, o.number
        ));
    }
    if which == Which::Finalized && o.number > finalized {
        return Verdict::Pending(format!(
            "its L1 origin {o} is not finalized on L1 yet (L1 finalized: {finalized})"
        ));
    }
    Verdict::Ok(origin)
}

/// A label's check as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelCheck {
    /// The agreed block checked.
    pub block: BlockRef,
    /// Its L1 origin, when it names one.
    pub origin: Option<BlockRef>,
    /// ok, pending or false.
    pub result: &'static str,
    /// Why, when not ok.
    pub reason: Option<String>,
}

/// The checks of one round: what the labels became, and what each check said.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The agreed heads to follow (in `enforce`, a label that failed replaced by the EL's own).
    pub heads: Heads,
    /// Safe's check (`None`: not checked, genesis).
    pub safe: Option<(LabelCheck, Verdict)>,
    /// Finalized's check.
    pub finalized: Option<(LabelCheck, Verdict)>,
    /// L1's heads as read.
    pub l1: Option<L1Heads>,
}

#[derive(Debug, Default)]
struct Memory {
    /// L2 block hash -> its origin (a function of the block's content: kept).
    origins: HashMap<B256, Result<L1Origin, OriginError>>,
    /// L1 height -> L1's block there, when read, and whether L1 had finalized that height
    /// then (only those are kept for good).
    l1_blocks: HashMap<u64, (Option<BlockRef>, Instant, bool)>,
    heads: Option<(Result<L1Heads, L1Error>, Instant)>,
}

/// Checks agreed labels against L1; shared by a fleet's replicas.
#[derive(Debug)]
pub struct Verifier {
    l1: L1Set,
    mode: VerifyMode,
    memory: std::sync::Mutex<Memory>,
}

impl Verifier {
    /// A verifier over `l1`.
    pub fn new(l1: L1Set, mode: VerifyMode) -> Self {
        Self { l1, mode, memory: Default::default() }
    }

    /// The mode.
    pub fn mode(&self) -> VerifyMode {
        self.mode
    }

    /// The L1 endpoints.
    pub fn l1(&self) -> &L1Set {
        &self.l1
    }

    /// L1's heads, read at most every [`HEADS_FRESH`] (after a failure, every
    /// [`HEADS_RETRY`]).
    pub async fn heads(&self) -> Result<L1Heads, L1Error> {
        if let Some((h, at)) = &crate::util::lock(&self.memory).heads {
            let fresh = if h.is_ok() { HEADS_FRESH } else { HEADS_RETRY };
            if at.elapsed() < fresh {
                return h.clone();
            }
        }
        let h = self.l1.heads().await;
        crate::util::lock(&self.memory).heads = Some((h.clone(), Instant::now()));
        h
    }

    /// L1's canonical block at `n` (final answers kept, others read again after a while).
    async fn l1_block(&self, n: u64, finalized: u64) -> Result<Option<BlockRef>, L1Error> {
        if let Some((b, at, was_final)) = crate::util::lock(&self.memory).l1_blocks.get(&n).copied()
            // A read taken before L1 finalized the height is never used at or below L1's
            // finalized block: there only a final answer counts.
            && (was_final && b.is_some() || n > finalized && at.elapsed() < UNSAFE_LOOKUP_FRESH)
        {
            return Ok(b);
        }
        let b = self.l1.block_at(n).await?;
        let mut m = crate::util::lock(&self.memory);
        if m.l1_blocks.len() >= REMEMBERED {
            m.l1_blocks.retain(|k, _| *k <= finalized);
            if m.l1_blocks.len() >= REMEMBERED {
                m.l1_blocks.clear();
            }
        }
        m.l1_blocks.insert(n, (b, Instant::now(), n <= finalized));
        Ok(b)
    }

    /// The origin of the agreed block `b` (fetched by hash, verified, when not held).
    async fn origin(
        &self,
        sources: &SourceSet,
        b: BlockRef,
    ) -> Option<Result<L1Origin, OriginError>> {
        if let Some(o) = crate::util::lock(&self.memory).origins.get(&b.hash) {
            return Some(o.clone());
        }
        let p = sources.block_by_hash(b.hash).await?;
        let o = origin_of(&p);
        let mut m = crate::util::lock(&self.memory);
        if m.origins.len() >= REMEMBERED {
            m.origins.clear();
        }
        m.origins.insert(b.hash, o.clone());
        Some(o)
    }

    /// Checks one agreed label.
    async fn check(
        &self,
        sources: &SourceSet,
        which: Which,
        b: BlockRef,
        l1: &Result<L1Heads, L1Error>,
    ) -> (LabelCheck, Verdict) {
        let verdict = match self.origin(sources, b).await {
            None => (
                None,
                Verdict::Pending(format!("no source served block {b} to read its L1 origin from")),
            ),
            Some(Err(e)) => (None, Verdict::False(format!("it names no L1 origin: {e}"))),
            Some(Ok(origin)) => {
                let v = match l1 {
                    Err(e) => Verdict::Pending(format!("L1 could not be read: {e}")),
                    Ok(heads) => {
                        let finalized = heads.finalized.map_or(0, |f| f.number);
                        let above = heads.latest.is_none_or(|l| origin.block.number > l.number);
                        let canonical = if above {
                            Ok(None)
                        } else {
                            self.l1_block(origin.block.number, finalized).await
                        };
                        match canonical {
                            Ok(c) => judge(which, origin, c, *heads),
                            Err(e) => Verdict::Pending(format!("L1 could not be read: {e}")),
                        }
                    }
                };
                (Some(origin.block), v)
            }
        };
        let (origin, v) = verdict;
        let reason = match &v {
            Verdict::Ok(_) => None,
            Verdict::Pending(r) | Verdict::False(r) => Some(r.clone()),
        };
        (LabelCheck { block: b, origin, result: v.as_str(), reason }, v)
    }

    /// Checks the agreed safe and finalized blocks above the EL's own labels. In `enforce`, a
    /// label that fails waits: it is replaced by the EL's own (finalized by the higher of the
    /// EL's and the finality floor, `floor`; safe by the EL's only where the quorum holds it,
    /// else by that finalized block), so the round never plans with a label off the agreed
    /// chain, and finalized never ends above safe. `hold_finalized`: finalized waits without a
    /// check, for this reason (in `enforce`, until the roots L1 settled were read once).
    pub async fn labels(
        &self,
        sources: &SourceSet,
        agreed: Heads,
        local: Heads,
        floor: Option<BlockRef>,
        hold_finalized: Option<&str>,
    ) -> Checked {
        if self.mode == VerifyMode::Off {
            return Checked { heads: agreed, safe: None, finalized: None, l1: None };
        }
        let l1 = self.heads().await;
        // A label the EL already holds was checked when it moved there (or predates the check).
        let needed = |a: BlockRef, l: BlockRef| a.number > 0 && a != l;
        let safe = if needed(agreed.safe, local.safe) {
            Some(self.check(sources, Which::Safe, agreed.safe, &l1).await)
        } else {
            None
        };
        let finalized = match hold_finalized {
            _ if !needed(agreed.finalized, local.finalized) => None,
            Some(why) => {
                let block = agreed.finalized;
                let reason = Some(why.to_string());
                let lc = LabelCheck { block, origin: None, result: "pending", reason };
                Some((lc, Verdict::Pending(why.to_string())))
            }
            None => Some(self.check(sources, Which::Finalized, agreed.finalized, &l1).await),
        };
        let mut heads = agreed;
        if self.mode == VerifyMode::Enforce {
            let failed = |c: &Option<(LabelCheck, Verdict)>| {
                c.as_ref().is_some_and(|(_, v)| !matches!(v, Verdict::Ok(_)))
            };
            let fin_kept = match floor {
                Some(f) if f.number > local.finalized.number => f,
                _ => local.finalized,
            };
            if failed(&finalized) {
                heads.finalized = fin_kept;
            }
            if failed(&safe) {
                // The EL's safe block, unless the quorum holds another block there (no quorum
                // either way is no evidence against it); else the kept finalized one.
                let replaced = local.safe.number <= fin_kept.number
                    || sources
                        .agreed_at(local.safe.number)
                        .await
                        .hash()
                        .is_some_and(|h| h != local.safe.hash);
                heads.safe = if replaced { fin_kept } else { local.safe };
            }
            if heads.finalized.number > heads.safe.number {
                // Finalized never ends above safe: a verified finalized block the kept safe one
                // lags is taken back to the kept finalized one, which safe is raised to.
                heads.finalized = fin_kept;
                if heads.safe.number < fin_kept.number {
                    heads.safe = fin_kept;
                }
            }
        }
        Checked { heads, safe, finalized, l1: l1.ok() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: u64, h: u8) -> BlockRef {
        BlockRef::new(n, B256::repeat_byte(h))
    }

    fn heads(latest: u64, finalized: u64) -> L1Heads {
        L1Heads { latest: Some(b(latest, 1)), finalized: Some(b(finalized, 1)) }
    }

    #[test]
    fn judge_table() {
        let o = L1Origin { block: b(50, 0xaa), fork: "jovian", sequence_number: 0 };
        use Which::*;
        let cases: [(Which, Option<BlockRef>, L1Heads, &str); 8] = [
            // On L1's chain and final: ok for both.
            (Safe, Some(b(50, 0xaa)), heads(100, 60), "ok"),
            (Finalized, Some(b(50, 0xaa)), heads(100, 60), "ok"),
            // On L1's chain, not final: ok for safe, waits for finalized.
            (Safe, Some(b(50, 0xaa)), heads(100, 40), "ok"),
            (Finalized, Some(b(50, 0xaa)), heads(100, 40), "pending"),
            // Another block there, final: proven false, whichever label.
            (Safe, Some(b(50, 0xbb)), heads(100, 50), "false"),
            (Finalized, Some(b(50, 0xbb)), heads(100, 55), "false"),
            // Another block there, not final: an L1 reorg or a lie, decided later.
            (Safe, Some(b(50, 0xbb)), heads(100, 49), "pending"),
            // Above L1's head.
            (Safe, None, heads(40, 30), "pending"),
        ];
        for (i, (which, canonical, l1, want)) in cases.into_iter().enumerate() {
            assert_eq!(judge(which, o, canonical, l1).as_str(), want, "case {i}");
        }
    }
}
