//! The finality floor: the highest finalized block lightcl ever sent or read back from the EL,
//! kept in the state file so that it survives restarts of lightcl and crashes of the EL. It only
//! moves forward, and it is written before the forkchoice that carries it is sent (gate.rs).
//!
//! The one exception to "nothing below the floor": an EL that lost blocks below it (a crash
//! took it back to genesis) is being refilled. While it is, a head below the floor may be sent,
//! with its labels left unset, if it is on the chain through the floor; that chain is proven by
//! a walk down from the floor by parent hash ([`prove_lineage`]), at most
//! [`REFILL_PROOF_DEPTH`] blocks deep.

use alloy_primitives::B256;
use tracing::{info, warn};

use crate::chain::{BlockRef, Heads, Proven};
use crate::engine::{BlockAt, Engine};
use crate::source::SourceSet;
use crate::source::set::WALK_BATCH;
use crate::state::{StateError, StateFile};

use super::super::error::{Fault, RunError};

/// How far below the floor the chain through it is proven before a refill (the walk fetches one
/// block at a time). A refill from further down sends heads below that depth unproven until the
/// fed chain reaches the proven part (which must then link) — stated in the operators guide.
pub const REFILL_PROOF_DEPTH: u64 = 4096;

/// Most blocks a walk down by parent hash (the refill proof, bootstrap's proof) adds in one
/// round; the next round resumes it.
pub const WALK_PER_ROUND: u64 = 4096;

/// The floor, where it is kept, and the refill state below it.
#[derive(Debug)]
pub struct Floor {
    value: Option<BlockRef>,
    store: Option<StateFile>,
    refilling: bool,
    /// The chain through the floor, proven below it (its top is the floor it was proven for).
    lineage: Option<Proven>,
}

impl Floor {
    /// A floor starting at `value` (read from `store`, if any).
    pub fn new(value: Option<BlockRef>, store: Option<StateFile>) -> Self {
        Self { value, store, refilling: false, lineage: None }
    }

    /// The floor.
    pub fn get(&self) -> Option<BlockRef> {
        self.value
    }

    /// Whether the EL is being refilled below the floor.
    pub fn refilling(&self) -> bool {
        self.refilling
    }

    /// Whether `head` is below the floor during a refill: a forkchoice there carries no labels.
    pub fn below_during_refill(&self, head: BlockRef) -> bool {
        self.refilling && self.get().is_some_and(|f| head.number < f.number)
    }

    /// Says whether the EL lost blocks below the floor and is being refilled. The proof of the
    /// chain below the floor is dropped when the refill ends.
    pub(super) fn set_refilling(&mut self, on: bool) {
        self.refilling = on;
        if !on {
            self.lineage = None;
        }
    }

    /// Records the chain through the floor, proven below it. Ignored unless it ends at the
    /// current floor.
    pub(super) fn set_lineage(&mut self, chain: Proven) {
        if self.get() == Some(chain.top()) {
            self.lineage = Some(chain);
        }
    }

    /// The proof so far of the chain through the current floor, if any.
    fn lineage(&self) -> Option<&Proven> {
        let floor = self.get()?;
        self.lineage.as_ref().filter(|l| l.top() == floor)
    }

    /// The hash the chain through the floor holds at `n`, where the proof covers it.
    pub fn lineage_at(&self, n: u64) -> Option<B256> {
        self.lineage()?.get(n)
    }

    /// Why a head below the floor may not be sent during a refill (`None`: it may).
    pub(super) fn refill_refusal(&self, head: BlockRef) -> Option<String> {
        let h = self.lineage_at(head.number)?;
        (h != head.hash).then(|| {
            format!(
                "head {head} is not on the chain through the finality floor (that chain holds \
                 {h} there)"
            )
        })
    }

    /// Raises the floor to `finalized` if it is higher (the caller has checked that it descends
    /// from the floor), persisting it first.
    pub(super) fn raise(&mut self, finalized: BlockRef) -> Result<(), StateError> {
        if self.get().is_some_and(|f| f.number >= finalized.number) {
            return Ok(());
        }
        if let Some(store) = &self.store {
            store.store(finalized)?;
        }
        if self.value.is_none_or(|f| finalized.number > f.number + 1000) {
            info!(target: "lightcl::gate", floor = %finalized, "finality floor raised");
        }
        self.value = Some(finalized);
        Ok(())
    }

    /// The EL's heads with the floor applied. The EL's finalized block may be older than the
    /// floor (an EL back from a crash): when the EL still holds the floor block, the floor
    /// stands in for its finalized block; when it lost it, the EL is being refilled and its
    /// labels stay below the floor (`el_syncing`: it is syncing there from its peers, which is
    /// only said differently). An EL whose own chain holds another block at the floor height is
    /// a halt. A finalized block of the EL above the floor, on the floor's chain, raises it.
    pub(super) async fn reconcile(
        &mut self,
        engine: &dyn Engine,
        el: Heads,
        el_syncing: bool,
    ) -> Result<Heads, Fault> {
        let Some(floor) = self.get() else {
            self.set_refilling(false);
            if el.finalized.number > 0 {
                self.raise(el.finalized)?;
            }
            return Ok(el);
        };
        if el.head.number < floor.number {
            if !self.refilling {
                self.log_refill(el, el_syncing);
                self.set_refilling(true);
            }
            return Ok(el);
        }
        self.set_refilling(false);
        let el_at_floor = if el.finalized.number == floor.number {
            Some(el.finalized.hash)
        } else {
            engine.block(BlockAt::Number(floor.number)).await?.map(|b| b.block.hash)
        };
        if el_at_floor != Some(floor.hash) {
            return Err(Fault::Halt(RunError::ElLeftFloor {
                number: floor.number,
                floor,
                el: el_at_floor,
            }));
        }
        if el.finalized.number > floor.number {
            self.raise(el.finalized)?;
            return Ok(el);
        }
        let safe = if el.safe.number < floor.number { floor } else { el.safe };
        Ok(Heads { head: el.head, safe, finalized: floor })
    }

    /// Says (once per episode) that the EL's head is below the floor.
    fn log_refill(&self, el: Heads, el_syncing: bool) {
        let floor = self.get().map(|f| f.to_string());
        if el_syncing {
            info!(target: "lightcl::gate", el_head = %el.head, floor = ?floor,
                "the EL syncs from its peers towards the finalized block lightcl handed it");
        } else {
            warn!(target: "lightcl::gate", el_head = %el.head, floor = ?floor,
                "the EL's head is below the finality floor lightcl remembers (it lost blocks, for \
                 example in a crash); refilling it along the chain through the floor");
        }
    }

    /// During a refill below the floor, proves the chain through the floor down to the EL's
    /// head `base` (at most [`REFILL_PROOF_DEPTH`] blocks) before anything is fed, so that
    /// neither the feed nor the gate takes a block of another branch for it (a load-balanced
    /// source can answer by number from replicas on different branches). Resumable: each round
    /// extends the proof so far, a flaky source costs retries, not the walk. `true` once the
    /// proof reaches `base`.
    pub(super) async fn prove_lineage(
        &mut self,
        sources: &SourceSet,
        base: BlockRef,
    ) -> Result<bool, Fault> {
        let Some(floor) = self.get().filter(|f| self.refilling && base.number < f.number) else {
            return Ok(true);
        };
        let low = base.number.max(floor.number.saturating_sub(REFILL_PROOF_DEPTH));
        let mut chain = self.lineage().cloned().unwrap_or_else(|| Proven::at(floor));
        if chain.low().number <= low {
            return Ok(true);
        }
        info!(target: "lightcl::gate", floor = %floor, proven_to = chain.low().number, down_to = low,
            "proving the chain through the finality floor by parent hash before refilling below it");
        let added = sources.extend_down(&mut chain, low, WALK_BATCH, WALK_PER_ROUND).await;
        let done = chain.low().number <= low;
        self.set_lineage(chain);
        if done {
            return Ok(true);
        }
        if added == 0 {
            warn!(target: "lightcl::gate", floor = %floor,
                "no source serves the chain below the finality floor by hash; holding the refill");
            return Err(Fault::NoAgreement { number: floor.number });
        }
        Ok(false)
    }
}
