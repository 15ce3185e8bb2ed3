//! The forkchoice writer: the one place a forkchoice (or a roll-back) leaves lightcl for the EL.
//! Every forkchoice has an [`Origin`], one method here, and labels from one pure function in
//! [`labels`]; each goes through the gate ([`gate`]: I1-I3 against the finality floor, the
//! floor raised and persisted before the send) and is counted by origin in
//! `lightcl_forkchoice_updates_total{origin, result}`.
//!
//! | origin | method | labels |
//! |---|---|---|
//! | `reassert`: the EL restarted or came back | [`Forkchoice::reassert_if_needed`] | the EL's own |
//! | `promote`: the planner moves labels over blocks the EL holds | [`Forkchoice::promote`] | `plan` via [`labels::labels`] |
//! | `feed_resync`, `feed_checkpoint`, `feed_end`: the feed moves the head | [`Forkchoice::fed`] | [`labels::for_fed_head`] |
//! | `recovery_reset`: courtesy reset to the common ancestor | [`Forkchoice::reset_to`] | [`labels::for_reset`] |
//! | `el_sync_hand`: the head handed to an EL syncing from peers | [`Forkchoice::hand`] | [`labels::handed`] |
//!
//! Each send is checked by what its origin needs: `reassert`, `promote` and the feed's want
//! VALID and the head read back (I6); the reset tolerates a refusal (ELs differ, recovery
//! replays anyway); the hand-over expects SYNCING (the EL fetches the chain itself).

mod floor;
mod gate;
pub mod labels;

use std::sync::Arc;

use tracing::{debug, info};

pub use floor::{Floor, WALK_PER_ROUND};

use super::error::{Fault, GateError};
use crate::chain::{BlockRef, Heads, Label, Proven};
use crate::config::ChainKind;
use crate::engine::{BlockAt, Engine, PayloadStatus, Verdict, classify};
use crate::metrics::{self as m, Metrics};
use crate::payload::FcuVersion;
use crate::source::SourceSet;
use crate::state::StateFile;

/// Why a forkchoice was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The EL's own heads again, after it restarted or came back (geth treats itself as not
    /// synced after a restart until a forkchoice succeeds).
    Reassert,
    /// The planner moves the labels (or the head) over blocks the EL already holds.
    Promote,
    /// The feed moves the head to the last agreed block the EL executed because it answered
    /// SYNCING (it may have flattened the state below a head that fell behind).
    FeedResync,
    /// The feed moves the head every [`super::task::feed::FCU_EVERY_BLOCKS`] blocks.
    FeedCheckpoint,
    /// The feed moves the head to the last block it fed (catch-up and replay).
    FeedEnd,
    /// Recovery asks the EL to go back to the common ancestor (a courtesy: ELs differ).
    RecoveryReset,
    /// Bootstrap hands the agreed head to an EL that syncs from its peers.
    ElSyncHand,
}

impl Origin {
    /// The metric label.
    pub fn label(self) -> &'static str {
        let k = match self {
            Self::Reassert => 0,
            Self::Promote => 1,
            Self::FeedResync => 2,
            Self::FeedCheckpoint => 3,
            Self::FeedEnd => 4,
            Self::RecoveryReset => 5,
            Self::ElSyncHand => 6,
        };
        m::FORKCHOICE_ORIGINS[k]
    }
}

/// The forkchoice writer of one replica: its EL, its finality floor, and whether the EL's own
/// forkchoice must be re-asserted first.
#[derive(Debug)]
pub struct Forkchoice {
    engine: Arc<dyn Engine>,
    floor: Floor,
    chain: ChainKind,
    metrics: Arc<Metrics>,
    /// Set at start and whenever the EL was unreachable or lightcl halted: the next round
    /// re-asserts the EL's own forkchoice before anything else.
    reassert: bool,
}

impl Forkchoice {
    /// The writer for `engine`, starting from `floor` (read from `store`, if any).
    pub fn new(
        engine: Arc<dyn Engine>,
        chain: ChainKind,
        floor: Option<BlockRef>,
        store: Option<StateFile>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { engine, floor: Floor::new(floor, store), chain, metrics, reassert: true }
    }

    /// The finality floor.
    pub fn floor(&self) -> &Floor {
        &self.floor
    }

    /// The EL went away (or lightcl stopped writing to it): re-assert its forkchoice first when
    /// it is back.
    pub fn el_down(&mut self) {
        self.reassert = true;
    }

    /// Origin `reassert`: the EL's own heads (floor applied), once after it came back.
    pub async fn reassert_if_needed(
        &mut self,
        local: &Heads,
        version: FcuVersion,
    ) -> Result<(), Fault> {
        if !self.reassert {
            return Ok(());
        }
        self.checked(Origin::Reassert, version, local, &Proven::at(local.head)).await?;
        info!(target: "lightcl::engine", head = %local.head, safe = %local.safe,
            finalized = %local.finalized, "EL forkchoice re-asserted");
        self.reassert = false;
        Ok(())
    }

    /// Origin `promote`: `next` (from the planner) over blocks on the EL's chain up to
    /// `local_head`.
    pub async fn promote(
        &mut self,
        local_head: BlockRef,
        next: &Heads,
        version: FcuVersion,
    ) -> Result<(), Fault> {
        self.checked(Origin::Promote, version, next, &Proven::at(local_head)).await?;
        debug!(target: "lightcl::sync", head = %next.head, safe = %next.safe,
            finalized = %next.finalized, "labels moved");
        Ok(())
    }

    /// Origins `feed_*`: the head moves to `head`, a block the feed gave the EL on the branch
    /// `known` above `base`; the labels come from [`labels::for_fed_head`] (lockstep `cap`).
    /// Returns the heads sent.
    #[allow(clippy::too_many_arguments)]
    pub async fn fed(
        &mut self,
        origin: Origin,
        head: BlockRef,
        base: &Heads,
        agreed: &Heads,
        known: &Proven,
        cap: Option<u64>,
        version: FcuVersion,
    ) -> Result<Heads, Fault> {
        let heads = labels::for_fed_head(head, base, agreed, known, self.floor.get(), cap);
        self.checked(origin, version, &heads, known).await?;
        Ok(heads)
    }

    /// Origin `recovery_reset`: the courtesy forkchoice to the common `ancestor`. A refusal
    /// (geth's -38006 beyond its rewind limit, the gate) is expected and ignored: the replay
    /// that follows moves the EL either way. An unreachable EL is an error. Returns the heads
    /// the replay starts from.
    pub async fn reset_to(
        &mut self,
        local: &Heads,
        ancestor: BlockRef,
        version: FcuVersion,
    ) -> Result<Heads, Fault> {
        let base = labels::for_reset(local, ancestor);
        match self.send(Origin::RecoveryReset, version, &base, &Proven::at(ancestor)).await {
            Ok(status) => {
                debug!(target: "lightcl::recovery", status = ?status.status, "reset answered")
            }
            Err(GateError::Engine(e)) if e.is_retryable() => return Err(e.into()),
            Err(GateError::State(e)) => return Err(e.into()),
            Err(e) => {
                debug!(target: "lightcl::recovery", error = %e, "the reset was refused; replaying anyway")
            }
        }
        Ok(base)
    }

    /// Origin `el_sync_hand`: `heads` (from [`labels::handed`]) on the sources' `chain`, proven
    /// by hash. The EL answers SYNCING while it fetches the chain; the verdict is returned.
    pub async fn hand(
        &mut self,
        heads: &Heads,
        chain: &Proven,
        version: FcuVersion,
    ) -> Result<Verdict, Fault> {
        let status = self.send(Origin::ElSyncHand, version, heads, chain).await?;
        Ok(classify(&status))
    }

    /// Rolls the EL back to `number` with `debug_setHead`, through the gate (never below the
    /// floor).
    pub async fn set_head(&mut self, number: u64) -> Result<(), GateError> {
        gate::set_head(self.engine.as_ref(), &self.floor, number).await
    }

    /// The EL's heads with the floor applied (see [`Floor::reconcile`]); a halt when the EL's
    /// chain left the floor.
    pub async fn reconcile(&mut self, el: Heads, el_syncing: bool) -> Result<Heads, Fault> {
        self.floor.reconcile(self.engine.as_ref(), el, el_syncing).await
    }

    /// During a refill below the floor, proves the chain through it down to `base` first (see
    /// [`Floor::prove_lineage`]); `true` once proven.
    pub async fn prove_refill_lineage(
        &mut self,
        sources: &SourceSet,
        base: BlockRef,
    ) -> Result<bool, Fault> {
        self.floor.prove_lineage(sources, base).await
    }

    /// The forkchoice version for this chain.
    fn version(&self, v: FcuVersion) -> FcuVersion {
        match self.chain {
            ChainKind::Optimism => v.max(FcuVersion::V2),
            ChainKind::Ethereum => v,
        }
    }

    /// Sends through the gate and checks it took effect (I6): VALID, and the head reads back.
    async fn checked(
        &mut self,
        origin: Origin,
        version: FcuVersion,
        heads: &Heads,
        chain: &Proven,
    ) -> Result<(), Fault> {
        let status = self.send(origin, version, heads, chain).await?;
        match classify(&status) {
            Verdict::Advance => {}
            Verdict::Pending => return Err(Fault::Pending { head: heads.head }),
            Verdict::Reject(reason) => return Err(Fault::Invalid { block: heads.head, reason }),
        }
        let now = self.engine.block(BlockAt::Label(Label::Latest)).await?;
        match now {
            Some(b) if b.block == heads.head => Ok(()),
            Some(b) if b.block.number > heads.head.number => {
                // op-geth never rewinds on a forkchoice to an ancestor; recovery handles that.
                debug!(target: "lightcl::engine", wanted = %heads.head, have = %b.block, "EL head stayed ahead");
                Ok(())
            }
            other => {
                Err(Fault::HeadDidNotMove { wanted: heads.head, have: other.map(|b| b.block) })
            }
        }
    }

    /// The one caller of the gate's forkchoice: counts it by origin and result.
    async fn send(
        &mut self,
        origin: Origin,
        version: FcuVersion,
        heads: &Heads,
        chain: &Proven,
    ) -> Result<PayloadStatus, GateError> {
        let version = self.version(version);
        let lineage = gate::Lineage { chain };
        let res =
            gate::forkchoice(self.engine.as_ref(), &mut self.floor, version, heads, &lineage).await;
        let result = match &res {
            Ok(_) => "sent",
            Err(GateError::Refused(_)) => "refused",
            Err(_) => "failed",
        };
        let labels = [("origin", origin.label()), ("result", result)];
        self.metrics.add(m::FORKCHOICE_UPDATES, &labels, 1.0);
        res
    }
}

#[cfg(test)]
mod tests;
