//! The forkchoice gate: every write that can move the EL's chain or labels leaves through it,
//! forkchoiceUpdated through [`forkchoice`] and `debug_setHead` through [`set_head`], and only
//! [`super::Forkchoice`] calls them. It checks each against the finality floor first and refuses
//! (an error, no write) anything that breaks I1-I3, whoever asked for it:
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
//! branches) never enters it. The floor is raised (and persisted) before the send.

use alloy_primitives::B256;
use tracing::error;

use super::super::error::GateError;
use super::floor::Floor;
use crate::chain::{BlockRef, Heads, Label, Proven};
use crate::engine::{BlockAt, Engine, EngineError, PayloadStatus};
use crate::payload::FcuVersion;

/// What the gate knows of the branch a forkchoice is on: the proven stretch `chain`, and below
/// its lowest block the EL's canonical chain, but only where the EL holds that lowest block
/// (checked by the gate itself). Above the stretch nothing is known.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lineage<'a> {
    /// The proven stretch the head is on.
    pub chain: &'a Proven,
}

/// The hash of the branch at `n` per `lineage` (`None`: unknown). Below the proven stretch
/// the branch is the EL's canonical chain only if the EL holds the stretch's lowest block.
async fn hash_on_branch(
    engine: &dyn Engine,
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
        let at_low = engine.block(BlockAt::Number(low.number)).await?;
        if at_low.map(|b| b.block.hash) != Some(low.hash) {
            return Ok(None);
        }
        *base_checked = true;
    }
    Ok(engine.block(BlockAt::Number(n)).await?.map(|b| b.block.hash))
}

/// Checks `heads` against I1-I3 and the floor; the reason when refused.
async fn check(
    engine: &dyn Engine,
    floor: &Floor,
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
        if !floor.below_during_refill(head) {
            return Ok(Some("labels unset outside a refill below the floor".into()));
        }
        if let Some(why) = floor.refill_refusal(head) {
            return Ok(Some(why));
        }
        let on = hash_on_branch(engine, head.number, lineage, &mut base_checked).await?;
        if on != Some(head.hash) {
            return Ok(Some(format!("head {head} is not on the branch it claims")));
        }
        return Ok(None);
    }
    let on = hash_on_branch(engine, head.number, lineage, &mut base_checked).await?;
    if on != Some(head.hash) {
        return Ok(Some(format!("head {head} is not on the branch it claims")));
    }
    for (what, b) in [("safe", safe), ("finalized", finalized)] {
        if b == head {
            continue;
        }
        let on = hash_on_branch(engine, b.number, lineage, &mut base_checked).await?;
        if on != Some(b.hash) {
            return Ok(Some(format!(
                "{what} {b} is not an ancestor of head {head} (the branch holds {on:?} there)"
            )));
        }
    }
    let refusal_below = floor.refill_refusal(head);
    let refilling = floor.refilling();
    let Some(floor) = floor.get() else { return Ok(None) };
    if head.number < floor.number {
        if refilling {
            return Ok(refusal_below);
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
        hash_on_branch(engine, floor.number, lineage, &mut base_checked).await?
    };
    if at_floor.is_none() && floor.number == 0 {
        // A floor at genesis: every block of this chain descends from the EL's own block 0,
        // which must be the floor's.
        at_floor = engine.block(BlockAt::Number(0)).await?.map(|b| b.block.hash);
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
pub(super) async fn forkchoice(
    engine: &dyn Engine,
    floor: &mut Floor,
    version: FcuVersion,
    heads: &Heads,
    lineage: &Lineage<'_>,
) -> Result<PayloadStatus, GateError> {
    // Below the floor (an EL refilled after losing blocks) the labels are sent unset (zero
    // hash, as the Engine API allows): the EL keeps its own, and nothing below the floor is
    // ever called safe or final again.
    let unset = BlockRef::new(0, B256::ZERO);
    let below_floor = floor.below_during_refill(heads.head);
    let heads = &if below_floor {
        Heads { head: heads.head, safe: unset, finalized: unset }
    } else {
        *heads
    };
    if let Some(why) = check(engine, floor, heads, lineage).await? {
        error!(target: "lightcl::gate", head = %heads.head, safe = %heads.safe,
            finalized = %heads.finalized, floor = ?floor.get().map(|f| f.to_string()), why,
            "forkchoice refused by the finality gate; nothing sent");
        return Err(GateError::Refused(why));
    }
    // The floor is the highest finalized block ever *sent*: written before the send, so
    // that whatever the EL does with it (apply it, crash, answer SYNCING) it is never
    // sent lower again.
    if !below_floor {
        floor.raise(heads.finalized)?;
    }
    #[allow(clippy::disallowed_methods)] // the one place a forkchoice is sent
    let status = engine.forkchoice_updated(version, heads).await?;
    Ok(status)
}

/// Rolls the EL back to height `number` with `debug_setHead`, unless that would take it
/// below the floor: the EL keeps the floor's block (outside a refill below the floor, where
/// the EL lost it already and a roll-back cannot lose anything final).
pub(super) async fn set_head(
    engine: &dyn Engine,
    floor: &Floor,
    number: u64,
) -> Result<(), GateError> {
    // A refill is the last read's word: read the EL's head again.
    let refilling = floor.refilling()
        && match floor.get() {
            Some(f) => engine
                .block(BlockAt::Label(Label::Latest))
                .await?
                .is_none_or(|b| b.block.number < f.number),
            None => true,
        };
    if let Some(floor) = floor.get()
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
    #[allow(clippy::disallowed_methods)] // the one place a roll-back is sent
    let done = engine.set_head(number).await;
    Ok(done?)
}
