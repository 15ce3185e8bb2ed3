//! What every task of one replica's follower reads and never owns: configuration, the EL, the
//! sources, the fleet, cancellation, and the reporter. Tasks take `&Ctx` beside the one piece
//! of mutable safety state, `&mut Forkchoice`, so that fetch (`&Ctx`) and feed (`&Ctx`,
//! `&mut Forkchoice`) run side by side without locks.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::B256;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::error::{Fault, RunError};
use super::fleet::Fleet;
use super::report::Reporter;
use crate::backoff::LOOP_MAX;
use crate::chain::{BlockRef, Heads};
use crate::config::Config;
use crate::engine::Engine;
use crate::source::{SourceError, SourceSet};

/// One replica's handles.
pub(crate) struct Ctx {
    pub config: Config,
    pub engine: Arc<dyn Engine>,
    pub sources: Arc<SourceSet>,
    /// The fleet this replica belongs to (a fleet of one for a lone EL).
    pub fleet: Arc<Fleet>,
    /// This replica's place in the fleet.
    pub index: usize,
    pub token: CancellationToken,
    /// Tasks spawned on this replica's behalf (the shared fetches), awaited on shutdown.
    pub tasks: TaskTracker,
    /// Woken by new-head notifications.
    pub wake: Arc<Notify>,
    /// The only writer of this replica's status and gauges.
    pub report: Reporter,
    /// Verification against L1 (shared by the fleet), with an `[l1]` section.
    pub l1: Option<Arc<crate::l1::Verification>>,
}

/// Which of two sources serving adjacent blocks broke the chain between them.
pub(crate) enum Culprit {
    /// The lower block's source: the quorum holds another block (`agreed`) there.
    Lower(usize, B256),
    /// The upper block's source: the lower block is the agreed one.
    Upper(usize),
}

/// Wait after a rate limit when no source says how long is left.
const QUOTA_POLL: Duration = Duration::from_millis(250);

impl Ctx {
    /// The agreed block the local head follows.
    pub fn target(&self, agreed: &Heads) -> BlockRef {
        self.config.follow.target(agreed)
    }

    /// Waits for the next poll (just after the next block is due where the block time is known,
    /// else on the fixed clock; a fleet's idle replicas wake together, so their reads coalesce)
    /// or a new-head notification; false when cancelled.
    pub async fn wait_for_tick(&self) -> bool {
        let now = tokio::time::Instant::now();
        let aligned =
            self.config.poll_aligned.then(|| self.sources.next_poll(self.config.poll_interval()));
        let until = match aligned.flatten() {
            // Every replica of a fleet reads the same schedule, so their reads coalesce too.
            Some(wait) => now + wait,
            None if self.fleet.len() > 1 => self.fleet.next_tick(),
            None => now + self.config.poll_interval(),
        };
        tokio::select! {
            _ = self.token.cancelled() => false,
            _ = tokio::time::sleep_until(until) => true,
            _ = self.wake.notified() => true,
        }
    }

    /// How long to wait for a source's quota after a rate limit: the shortest wait left among
    /// the sources that are rate limiting lightcl, bounded (requests in flight may still come
    /// back "over the limit" just after it ends).
    pub fn quota_wait(&self) -> Duration {
        self.sources.rate_limit_wait().unwrap_or(QUOTA_POLL).clamp(QUOTA_POLL / 5, LOOP_MAX)
    }

    /// Under lockstep, the height this replica's safe and finalized may move up to: the other
    /// replicas that count hold the agreed chain up to there, checked by hash (their heads
    /// against the quorum's blocks at those heights).
    pub async fn label_cap(&self) -> Option<u64> {
        let heads = self.fleet.lockstep_heads(self.index)?;
        let mut agreed = Vec::with_capacity(heads.len());
        for h in heads {
            if self.sources.agreed_at(h.number).await.hash() == Some(h.hash) {
                agreed.push(h);
            }
        }
        self.fleet.label_cap(self.index, |h| agreed.contains(&h))
    }

    /// Drops the fleet's shared fetch from height `from` up, and the source reads the replicas
    /// share (a block there is not on the agreed chain, or not yet known to be: the sources may
    /// have reorganised, and what was shared may predate it).
    pub fn forget_shared_from(&self, from: u64) {
        if let Some(cache) = self.fleet.cache() {
            cache.forget_from(from);
            self.sources.forget_reads();
        }
    }

    /// Blames `served_by` for `what` and returns the fault. The fleet's shared fetch forgets
    /// what it holds: a block there may be off the agreed chain.
    pub fn off_chain(&self, served_by: usize, what: String) -> Fault {
        self.forget_shared_from(0);
        let e = SourceError::inconsistent(self.sources.name(served_by), what);
        self.sources.blame(served_by, &e);
        Fault::Source(e)
    }

    /// `lower` (served by `lower_by`) and the block above it (served by `upper_by`) do not link:
    /// the quorum decides which is off the agreed chain. `None`: it holds nothing at `lower`'s
    /// height (no evidence either way).
    pub async fn culprit(
        &self,
        lower: BlockRef,
        lower_by: Option<usize>,
        upper_by: usize,
    ) -> Option<Culprit> {
        match (self.sources.agreed_at(lower.number).await.hash(), lower_by) {
            (Some(h), Some(before)) if h != lower.hash => Some(Culprit::Lower(before, h)),
            (Some(_), _) => Some(Culprit::Upper(upper_by)),
            (None, _) => None,
        }
    }
}

/// Admits the sources that answer with the right chain id; how many are admitted. A source of
/// another chain is an error.
pub(crate) async fn admit(sources: &SourceSet, chain_id: u64) -> Result<usize, RunError> {
    use crate::source::set::WrongChain;
    sources.admit().await.map_err(|w| match w {
        WrongChain::ChainId { source, got } => {
            RunError::ChainIdMismatch { who: format!("source {source}"), expected: chain_id, got }
        }
        WrongChain::Genesis { source, got, expected, named_by, learned } => {
            RunError::GenesisMismatch(Box::new(super::error::GenesisMismatch {
                who: format!("source {source}"),
                got,
                expected,
                named_by,
                who_fix: if learned {
                    "no network or genesis_hash is set, so the first source to answer named the \
                     genesis: one of the two serves another deployment of this chain id; set \
                     `network` (or `genesis_hash`) to name the right chain, then remove the \
                     source that differs"
                } else {
                    "the source serves another deployment of this chain id: remove it, or fix \
                     `network` / `genesis_hash` if the configuration is what is wrong"
                },
            }))
        }
    })
}
