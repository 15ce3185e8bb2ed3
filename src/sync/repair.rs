//! An EL stuck below blocks it accepted. After a crash, op-geth can come back with its state
//! rewound to an old block while keeping the headers and bodies above it: it answers VALID
//! ("already known") to those blocks and to a forkchoice naming them, but its head never moves.
//! geth can come back with a head whose state it lacks: it answers SYNCING to every block on
//! top of it, even after a forkchoice to it. Either way feeding again changes nothing. Repair: roll the EL back to its own head with
//! `debug_setHead`, which deletes the stateless blocks above it (and rewinds further, to a
//! block whose state it has, where the head's own state is gone), and feed them again. The head
//! itself is the EL's own canonical block, so nothing at or below it changes and no forkchoice
//! is involved; the refill that follows goes through the gate like any catch-up. Where the EL
//! has no such API, or the repair does not take, lightcl halts its writes and says what to do.

use tracing::{info, warn};

use super::driver::{Follower, RunError, StepError};
use crate::chain::{BlockRef, Label};
use crate::engine::BlockAt;

/// How many times in a row the head must stay put before lightcl repairs: once can be a race
/// with the EL's own processing.
const STUCK_BEFORE_REPAIR: u32 = 2;

/// How long to wait before feeding a stuck EL again.
pub(super) const STUCK_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// The head an EL is stuck at and what it does, if `e` says it cannot advance: VALID answers
/// with a head below the one asked for (op-geth), or SYNCING on top of its own head (geth).
pub(super) fn stuck_symptom(e: &StepError) -> Option<(BlockRef, &'static str)> {
    match e {
        StepError::HeadDidNotMove { have: Some(h), wanted } if h.number < wanted.number => Some((
            *h,
            "it answers VALID to the blocks above its head and to forkchoice updates, but its \
             head does not move",
        )),
        StepError::CannotExtendHead { head } => Some((
            *head,
            "it answers SYNCING to every block on top of its head, even after a forkchoice to it",
        )),
        _ => None,
    }
}

/// Where the EL's head stays although it answered VALID.
#[derive(Debug, Default)]
pub(super) struct Stuck {
    /// The head that does not move, and how many times in a row.
    at: Option<(BlockRef, u32)>,
    /// The head lightcl rolled the EL back to last.
    repaired: Option<BlockRef>,
    /// Roll-backs in a row without the head passing the last one: each goes twice as far.
    rounds: u32,
}

impl Follower {
    /// Counts one more forkchoice to `wanted` that the EL answered VALID while its head stayed
    /// at `have`; repairs on the second in a row, and halts if a repair at the same head did
    /// not take or is impossible.
    pub(super) async fn repair_stuck(
        &mut self,
        have: BlockRef,
        symptom: &str,
    ) -> Result<(), StepError> {
        let count = match self.stuck.at {
            Some((b, n)) if b == have => n + 1,
            _ => 1,
        };
        self.stuck.at = Some((have, count));
        self.shared.metrics.set(crate::api::metrics::EL_STUCK, &[], 1.0);
        warn!(target: "lightcl::engine", head = %have, times = count,
            "the EL does not advance past its head: {symptom}");
        if count < STUCK_BEFORE_REPAIR {
            return Ok(());
        }
        let halt = |tried: String| {
            StepError::Fatal(RunError::ElStuck { have, symptom: symptom.to_string(), tried })
        };
        if self.stuck.repaired == Some(have) && have.number == 0 {
            return Err(halt(
                "lightcl rolled it back to genesis with debug_setHead and it is stuck there".into(),
            ));
        }
        warn!(target: "lightcl::engine", head = %have,
            "the EL lacks state it claims (seen after a crash of geth or op-geth); rolling it \
             back to its own head with debug_setHead, which also drops blocks above it that have \
             no state, so that it executes them again (runbook: \"EL stuck below the blocks it \
             accepted\")");
        // geth refuses a target above the block it really executes to ("not allowed to rewind
        // to a future block") when the head it reports lacks its state: step down until it
        // accepts. A lower target only means more blocks fed again.
        let rounds = self.stuck.rounds;
        let mut target = have.number.saturating_sub((1u64 << rounds.min(40)) - 1);
        let mut step = 1;
        loop {
            match self.engine.set_head(target).await {
                Ok(()) => break,
                Err(e) if e.is_retryable() => return Err(e.into()),
                Err(e) if e.to_string().contains("future block") && target > 0 => {
                    target = target.saturating_sub(step);
                    step *= 2;
                }
                Err(e) => {
                    return Err(halt(format!("debug_setHead({target}) failed: {e}")));
                }
            }
        }
        let now_head = self.engine.block(BlockAt::Label(Label::Latest)).await?.map(|b| b.block);
        self.stuck = Stuck { at: None, repaired: now_head, rounds: rounds + 1 };
        info!(target: "lightcl::engine", head = ?now_head.map(|b| b.to_string()),
            "EL rolled back to its own head; feeding the blocks above it again");
        Ok(())
    }

    /// Forgets a stuck head once the head moves again.
    pub(super) fn head_moved(&mut self, head: BlockRef) {
        if self.stuck.at.is_some_and(|(b, _)| b != head) {
            self.stuck.at = None;
        }
        if self.stuck.repaired.is_some_and(|b| b.number < head.number) {
            self.stuck.repaired = None;
            self.stuck.rounds = 0;
        }
        if self.stuck.at.is_none() && self.stuck.repaired.is_none() {
            self.shared.metrics.set(crate::api::metrics::EL_STUCK, &[], 0.0);
        }
    }
}
