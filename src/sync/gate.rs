//! The forkchoice gate: every write that can move the EL's chain or labels leaves through it:
//! forkchoiceUpdated through [`Gate::forkchoice`], `debug_setHead` through [`Gate::set_head`].
//! It checks each against the finality floor first and refuses (an error, no write) anything
//! that breaks I1-I3, whoever asked for it:
//!
//! - I1: finalized <= safe <= head, each on the head's branch (checked by hash);
//! - I2: finalized is at or above the floor, and the head's branch holds the floor's hash;
//! - I3: the head descends from the floor;
//! - a roll-back never goes below the floor.
//!
//! The branch a forkchoice is checked against is a [`Proven`] stretch: blocks lightcl read from
//! the EL or fetched by hash and verified, linked by parent hash; below it only the EL's own
//! canonical chain counts, and only where the EL holds the stretch's lowest block. A caller's
//! word or a by-number answer (a load-balanced source can answer two heights from two
//! branches) never enters it.
//!
//! The floor is the highest finalized block lightcl ever sent or read back from the EL. It only
//! moves forward and is written to the state file before the forkchoice that carries it is
//! sent, so an EL that comes back from a crash with an older finalized block cannot make
//! lightcl forget it.
//!
//! The one exception is an EL that lost blocks below the floor (a crash took it back to
//! genesis): while the driver says so ([`Gate::set_refilling`]), a head below the floor may be
//! sent, with its labels left unset, if it is on the chain through the floor. That chain is
//! proven by a walk down from the floor by parent hash ([`Gate::set_floor_lineage`]; blocks
//! fetched by hash cannot come from another branch), at most [`REFILL_PROOF_DEPTH`] blocks deep;
//! a head below the floor that the walk covers and does not hold is refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use alloy_primitives::B256;
use tracing::{error, info};

pub use crate::chain::Proven;
use crate::chain::{BlockRef, Heads, Label};
use crate::engine::{BlockAt, Engine, EngineError, PayloadStatus};
use crate::payload::FcuVersion;
use crate::state::{StateError, StateFile};

/// How far below the floor the chain through it is proven before a refill (the walk fetches one
/// block at a time). A refill from further down sends heads below that depth unproven until the
/// fed chain reaches the proven part (which must then link) — stated in the operators guide.
pub const REFILL_PROOF_DEPTH: u64 = 4096;

/// Most blocks a walk down by parent hash (the refill proof, bootstrap's proof) adds in one
/// round; the next round resumes it.
pub const WALK_PER_ROUND: u64 = 4096;

/// What the gate knows of the branch a forkchoice is on: the proven stretch `chain`, and below
/// its lowest block the EL's canonical chain, but only where the EL holds that lowest block
/// (checked by the gate itself). Above the stretch nothing is known.
#[derive(Debug, Clone, Copy)]
pub struct Lineage<'a> {
    /// The proven stretch the head is on.
    pub chain: &'a Proven,
}

/// Why the gate sent nothing.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// The forkchoice breaks an invariant: nothing was sent.
    #[error("forkchoice refused by the finality gate (nothing sent to the EL): {0}")]
    Refused(String),
    /// Talking to the EL failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The floor could not be persisted.
    #[error(transparent)]
    State(#[from] StateError),
}

/// The gate and the floor it guards.
#[derive(Debug)]
pub struct Gate {
    engine: Arc<dyn Engine>,
    floor: std::sync::Mutex<Option<BlockRef>>,
    store: Option<StateFile>,
    refilling: AtomicBool,
    /// The chain through the floor, proven below it (its top is the floor it was proven for).
    lineage: std::sync::Mutex<Option<Proven>>,
}

impl Gate {
    /// A gate in front of `engine` starting from `floor` (read from `store`, if any).
    pub fn new(engine: Arc<dyn Engine>, floor: Option<BlockRef>, store: Option<StateFile>) -> Self {
        Self {
            engine,
            floor: std::sync::Mutex::new(floor),
            store,
            refilling: AtomicBool::new(false),
            lineage: std::sync::Mutex::new(None),
        }
    }

    /// The floor.
    pub fn floor(&self) -> Option<BlockRef> {
        *self.floor.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the EL is being refilled below the floor.
    pub fn refilling(&self) -> bool {
        self.refilling.load(Ordering::Relaxed)
    }

    /// Says whether the EL lost blocks below the floor and is being refilled. The proof of the
    /// chain below the floor is dropped when the refill ends.
    pub fn set_refilling(&self, on: bool) {
        self.refilling.store(on, Ordering::Relaxed);
        if !on {
            *self.lineage.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// Records the chain through the floor, proven below it. Ignored unless it ends at the
    /// current floor.
    pub fn set_floor_lineage(&self, chain: Proven) {
        if self.floor() == Some(chain.top()) {
            *self.lineage.lock().unwrap_or_else(|p| p.into_inner()) = Some(chain);
        }
    }

    /// The proof so far of the chain through the current floor, if any.
    pub fn floor_lineage(&self) -> Option<Proven> {
        let floor = self.floor()?;
        let l = self.lineage.lock().unwrap_or_else(|p| p.into_inner());
        l.as_ref().filter(|l| l.top() == floor).cloned()
    }

    /// The hash the chain through the floor holds at `n`, where the proof covers it.
    pub fn floor_lineage_at(&self, n: u64) -> Option<B256> {
        let floor = self.floor()?;
        let l = self.lineage.lock().unwrap_or_else(|p| p.into_inner());
        l.as_ref().filter(|l| l.top() == floor)?.get(n)
    }

    /// Why a head below the floor may not be sent during a refill (`None`: it may).
    fn refill_refusal(&self, head: BlockRef) -> Option<String> {
        let h = self.floor_lineage_at(head.number)?;
        (h != head.hash).then(|| {
            format!(
                "head {head} is not on the chain through the finality floor (that chain holds                  {h} there)"
            )
        })
    }

    /// Raises the floor to `finalized` if it is higher (the caller has checked that it descends
    /// from the floor), persisting it first.
    pub fn raise(&self, finalized: BlockRef) -> Result<(), StateError> {
        let mut floor = self.floor.lock().unwrap_or_else(|p| p.into_inner());
        if floor.is_some_and(|f| f.number >= finalized.number) {
            return Ok(());
        }
        if let Some(store) = &self.store {
            store.store(finalized)?;
        }
        if floor.is_none_or(|f| finalized.number > f.number + 1000) {
            info!(target: "lightcl::gate", floor = %finalized, "finality floor raised");
        }
        *floor = Some(finalized);
        Ok(())
    }

    /// The hash of the branch at `n` per `lineage` (`None`: unknown). Below the proven stretch
    /// the branch is the EL's canonical chain only if the EL holds the stretch's lowest block.
    async fn hash_on_branch(
        &self,
        n: u64,
        lineage: &Lineage<'_>,
        base_checked: &mut bool,
    ) -> Result<Option<B256>, EngineError> {
        let chain = lineage.chain;
        if let Some(h) = chain.get(n) {
            return Ok(Some(h));
        }
        if n > chain.top().number {
            return Ok(None);
        }
        if !*base_checked {
            let low = chain.low();
            let at_low = self.engine.block(BlockAt::Number(low.number)).await?;
            if at_low.map(|b| b.block.hash) != Some(low.hash) {
                return Ok(None);
            }
            *base_checked = true;
        }
        Ok(self.engine.block(BlockAt::Number(n)).await?.map(|b| b.block.hash))
    }

    /// Checks `heads` against I1-I3 and the floor; the reason when refused.
    async fn check(
        &self,
        heads: &Heads,
        lineage: &Lineage<'_>,
    ) -> Result<Option<String>, EngineError> {
        let Heads { head, safe, finalized } = *heads;
        if !(finalized.number <= safe.number && safe.number <= head.number) {
            return Ok(Some(format!(
                "labels out of order: head {head}, safe {safe}, finalized {finalized}"
            )));
        }
        let mut base_checked = false;
        if safe.hash.is_zero() && finalized.hash.is_zero() {
            // Labels left unset: only a refill below the floor sends them so.
            let floor_above = self.floor().is_some_and(|f| head.number < f.number);
            if !(self.refilling() && floor_above) {
                return Ok(Some("labels unset outside a refill below the floor".into()));
            }
            if let Some(why) = self.refill_refusal(head) {
                return Ok(Some(why));
            }
            let on = self.hash_on_branch(head.number, lineage, &mut base_checked).await?;
            if on != Some(head.hash) {
                return Ok(Some(format!("head {head} is not on the branch it claims")));
            }
            return Ok(None);
        }
        let on = self.hash_on_branch(head.number, lineage, &mut base_checked).await?;
        if on != Some(head.hash) {
            return Ok(Some(format!("head {head} is not on the branch it claims")));
        }
        for (what, b) in [("safe", safe), ("finalized", finalized)] {
            if b == head {
                continue;
            }
            let on = self.hash_on_branch(b.number, lineage, &mut base_checked).await?;
            if on != Some(b.hash) {
                return Ok(Some(format!(
                    "{what} {b} is not an ancestor of head {head} (the branch holds {on:?} there)"
                )));
            }
        }
        let Some(floor) = self.floor() else { return Ok(None) };
        if head.number < floor.number {
            if self.refilling.load(Ordering::Relaxed) {
                return Ok(self.refill_refusal(head));
            }
            return Ok(Some(format!(
                "head {head} is below the finality floor {floor}: that would rewind across finality"
            )));
        }
        if finalized.number < floor.number {
            return Ok(Some(format!("finalized {finalized} is below the finality floor {floor}")));
        }
        let mut at_floor = if floor.number == head.number {
            Some(head.hash)
        } else {
            self.hash_on_branch(floor.number, lineage, &mut base_checked).await?
        };
        if at_floor.is_none() && floor.number == 0 {
            // A floor at genesis: every block of this chain descends from the EL's own block 0,
            // which must be the floor's.
            at_floor = self.engine.block(BlockAt::Number(0)).await?.map(|b| b.block.hash);
        }
        if at_floor != Some(floor.hash) {
            return Ok(Some(format!(
                "head {head} does not descend from the finality floor {floor} (its branch holds \
                 {at_floor:?} there)"
            )));
        }
        Ok(None)
    }

    /// Sends the forkchoice if it passes the checks, raising the floor to its finalized block
    /// first.
    pub async fn forkchoice(
        &self,
        version: FcuVersion,
        heads: &Heads,
        lineage: &Lineage<'_>,
    ) -> Result<PayloadStatus, GateError> {
        // Below the floor (an EL refilled after losing blocks) the labels are sent unset (zero
        // hash, as the Engine API allows): the EL keeps its own, and nothing below the floor is
        // ever called safe or final again.
        let unset = BlockRef::new(0, B256::ZERO);
        let below_floor =
            self.refilling() && self.floor().is_some_and(|f| heads.head.number < f.number);
        let heads = &if below_floor {
            Heads { head: heads.head, safe: unset, finalized: unset }
        } else {
            *heads
        };
        if let Some(why) = self.check(heads, lineage).await? {
            error!(target: "lightcl::gate", head = %heads.head, safe = %heads.safe,
                finalized = %heads.finalized, floor = ?self.floor().map(|f| f.to_string()), why,
                "forkchoice refused by the finality gate; nothing sent");
            return Err(GateError::Refused(why));
        }
        // The floor is the highest finalized block ever *sent*: written before the send, so
        // that whatever the EL does with it (apply it, crash, answer SYNCING) it is never
        // sent lower again.
        if !below_floor {
            self.raise(heads.finalized)?;
        }
        Ok(self.engine.forkchoice_updated(version, heads).await?)
    }

    /// Rolls the EL back to height `number` with `debug_setHead`, unless that would take it
    /// below the floor: the EL keeps the floor's block (outside a refill below the floor, where
    /// the EL lost it already and a roll-back cannot lose anything final).
    pub async fn set_head(&self, number: u64) -> Result<(), GateError> {
        // A refill is the driver's word from the last read: read the EL's head again.
        let refilling = self.refilling()
            && match self.floor() {
                Some(f) => self
                    .engine
                    .block(BlockAt::Label(Label::Latest))
                    .await?
                    .is_none_or(|b| b.block.number < f.number),
                None => true,
            };
        if let Some(floor) = self.floor()
            && number < floor.number
            && !refilling
        {
            let why = format!(
                "debug_setHead({number}) would roll the EL back below the finality floor {floor}"
            );
            error!(target: "lightcl::gate", target_height = number, floor = %floor, why,
                "roll-back refused by the finality gate; nothing sent");
            return Err(GateError::Refused(why));
        }
        Ok(self.engine.set_head(number).await?)
    }
}
