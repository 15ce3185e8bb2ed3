//! An EL stuck below blocks it accepted. After a crash, op-geth can come back with its state
//! rewound to an old block while keeping the headers and bodies above it: it answers VALID
//! ("already known") to those blocks and to a forkchoice naming them, but its head never moves,
//! so feeding again changes nothing. Repair: roll the EL back to its own head with
//! `debug_setHead`, which deletes the stateless blocks above it, and feed them again. The head
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

/// Where the EL's head stays although it answered VALID.
#[derive(Debug, Default)]
pub(super) struct Stuck {
    /// The head that does not move, and how many times in a row.
    at: Option<(BlockRef, u32)>,
    /// The head lightcl rolled the EL back to last.
    repaired: Option<BlockRef>,
}

impl Follower {
    /// Counts one more forkchoice to `wanted` that the EL answered VALID while its head stayed
    /// at `have`; repairs on the second in a row, and halts if a repair at the same head did
    /// not take or is impossible.
    pub(super) async fn repair_stuck(
        &mut self,
        wanted: BlockRef,
        have: BlockRef,
    ) -> Result<(), StepError> {
        let count = match self.stuck.at {
            Some((b, n)) if b == have => n + 1,
            _ => 1,
        };
        self.stuck.at = Some((have, count));
        warn!(target: "lightcl::engine", wanted = %wanted, head = %have, times = count,
            "the EL answered VALID, but its head did not move");
        if count < STUCK_BEFORE_REPAIR {
            return Ok(());
        }
        let halt = |tried: String| StepError::Fatal(RunError::ElStuck { wanted, have, tried });
        if self.stuck.repaired == Some(have) {
            return Err(halt(format!(
                "lightcl already rolled it back to {have} with debug_setHead and it is stuck there \
                 again"
            )));
        }
        warn!(target: "lightcl::engine", head = %have, wanted = %wanted,
            "the EL holds blocks above its head without their state (it answers VALID but does \
             not execute them; seen after an op-geth crash); rolling it back to its own head \
             with debug_setHead so that it executes them again (runbook: \"EL stuck below the \
             blocks it accepted\")");
        if let Err(e) = self.engine.set_head(have.number).await {
            if e.is_retryable() {
                return Err(e.into());
            }
            return Err(halt(format!("debug_setHead({}) failed: {e}", have.number)));
        }
        self.stuck = Stuck { at: None, repaired: Some(have) };
        let now = self.engine.block(BlockAt::Label(Label::Latest)).await?.map(|b| b.block);
        info!(target: "lightcl::engine", head = ?now.map(|b| b.to_string()),
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
        }
    }
}
