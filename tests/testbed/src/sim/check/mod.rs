//! The invariant checkers, one per invariant family. The models (the simulated EL in
//! [`super::el`], the fleet in [`super::fleet`], the history's clock in [`super::history`]) only
//! report what happens to them: each write lightcl makes, with the EL's chain just before it,
//! and how a history ended. The checkers judge, and say what broke in the words the tests and
//! their replays print.
//!
//! - [`forkchoice`]: every forkchoice update and `debug_setHead` the EL receives. I1 finalized
//!   <= safe <= head on one chain, I2 finalized never moves back or changes hash, I3 the head
//!   descends from finalized, I4 only agreed blocks are labelled; no head that was never
//!   honest, no needless rewind of an honest head, no roll-back below the finalized block sent,
//!   no write after lightcl halted.
//! - [`payload`]: every payload the EL receives. I5 only the genuine block reaches the EL.
//! - [`fleet`]: across replicas, the lockstep rule (a label moves only to a block every ready
//!   replica holds, by hash).
//! - [`liveness`]: over a whole history, converged or rightly halted, and kept up under faults
//!   that leave progress possible.
//!
//! The EL's checks leave what they find in its [`Record`], which belongs to the checker rather
//! than to the EL's state, so it survives the EL's crashes.

pub mod fleet;
pub mod forkchoice;
pub mod liveness;
pub mod payload;

use lightcl::chain::BlockRef;

pub use fleet::Watch;
pub use forkchoice::{Context, ElView, Verdict};
pub use liveness::{ElHeads, End};
pub use payload::PayloadVerdict;

/// What the checker found and counted.
#[derive(Debug, Default, Clone)]
pub struct Record {
    /// Invariant violations, in order (empty: the run was safe).
    pub violations: Vec<String>,
    /// Forkchoice updates received.
    pub forkchoices: u64,
    /// Payloads received.
    pub payloads: u64,
    /// debug_setHead calls that rolled the EL back.
    pub set_heads: u64,
    /// The highest finalized block ever sent (survives EL crashes: it is the checker's).
    pub max_finalized: Option<BlockRef>,
    /// Forkchoice updates that reorged the EL onto a branch whose head is lower than the tip it
    /// held (on op-reth: blocks cut off its files, see docs/engines.md).
    pub head_lowering_reorgs: u64,
    /// Blocks the EL imported from its P2P peers (an EL sync lightcl started).
    pub p2p_synced: u64,
    /// Forkchoices to an ancestor of a head the EL had just reached by its own P2P sync, after
    /// lightcl read it (the race between a sync still running and lightcl's replay: geth rewinds
    /// a few blocks, lightcl feeds them again). Counted, not a violation.
    pub p2p_races: u64,
}
