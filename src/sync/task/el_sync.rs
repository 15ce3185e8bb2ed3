//! Bootstrap by the EL's own P2P sync. An EL far behind the agreed target is handed the agreed
//! head (forkchoiceUpdated with head, safe and finalized all agreed by the quorum, through the
//! gate), repeated as the agreed head moves, as a consensus client does; the EL fetches the
//! chain from its peers (snap sync skips executing history). The agreed hash pins what it
//! syncs to: peers cannot choose the chain. When the EL's head reaches the handed head,
//! lightcl checks the EL's hashes there and at finalized and goes back to replay for the rest.
//! No progress for `bootstrap_stall_secs`, or no peers, and `auto` replays instead.
//!
//! What the forkchoice carries is proven like any other, by hash, never by a by-number answer:
//! the sources' chain is walked down by parent hash from the handed head to lightcl's finalized
//! block (the checkpoint; the handed finalized block when lightcl has none), so safe, finalized
//! and the checkpoint are on the handed head's chain. The walk is resumable (what it proved
//! stays proven, the next round goes on from there, a flaky source costs retries), and it
//! counts as progress for the stall watch, so that `auto` falls back to replay when it cannot
//! finish. Under `labels = "lockstep"` the handed labels stay within the fleet's cap.

use std::time::Duration;

use alloy_primitives::B256;
use tokio::time::Instant;
use tracing::{info, warn};

use super::super::ctx::Ctx;
use super::super::error::{Fault, Outcome};
use super::super::forkchoice::labels::handed;
use super::super::forkchoice::{Forkchoice, WALK_PER_ROUND};
use crate::chain::{BlockRef, Heads, Proven};
use crate::config::Bootstrap;
use crate::engine::{BlockAt, SyncStatus, Verdict};
use crate::metrics as m;
use crate::payload::FcuVersion;
use crate::source::BlockId;
use crate::source::set::WALK_BATCH;

/// How many handed forkchoices are remembered for the hand-over check.
const HANDED_KEPT: usize = 256;

/// What to do about a far-behind EL this round (pure; see [`choose`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Replay through newPayload (the normal planner decides).
    Replay,
    /// Replay, and say once why the EL is not asked to sync itself.
    ReplayBecause(&'static str),
    /// Hand the EL the agreed head.
    ElSync,
}

/// Whether to start an EL sync: `lag` blocks behind the follow target, `peers` as the EL
/// reports them, `fell_back` when an EL sync of this gap already stalled.
pub fn choose(
    mode: Bootstrap,
    lag: u64,
    min_gap: u64,
    peers: Option<u64>,
    fell_back: bool,
) -> Choice {
    match mode {
        Bootstrap::Replay => Choice::Replay,
        _ if lag <= min_gap => Choice::Replay,
        Bootstrap::ElSync => Choice::ElSync,
        Bootstrap::Auto if fell_back => Choice::Replay,
        Bootstrap::Auto if peers == Some(0) => Choice::ReplayBecause("no_peers"),
        Bootstrap::Auto => Choice::ElSync,
    }
}

/// What the EL sync does this round.
enum Decision {
    /// Replay (the planner goes on).
    Replay,
    /// The EL reached this handed forkchoice: check it and hand over to replay.
    HandOver(Heads),
    /// Sync (or keep syncing), with the EL's sync status if it was read to decide.
    Sync(Option<SyncStatus>),
}

/// An EL sync under way.
#[derive(Debug)]
struct Active {
    /// The forkchoices handed, oldest first (the last few hundred): the EL's head may reach
    /// one of them while a newer one is on its way.
    handed: std::collections::VecDeque<Heads>,
    /// The head whose payload the EL was last given (so it knows the header).
    announced: Option<B256>,
    started: Instant,
    start_head: u64,
    /// The most work the EL has shown, and when it grew.
    work: u64,
    progressed: Instant,
    logged: Instant,
    warned: Option<Instant>,
}

/// Bootstrap by EL sync for one replica: its state, and the round it runs.
#[derive(Debug, Default)]
pub(crate) struct ElSync {
    active: Option<Active>,
    /// `auto` gave up on EL sync for this gap (it stalled, or there were no peers): replay
    /// until the EL is within the gap again.
    fell_back: bool,
    /// The sources' chain proven by hash from the last handed head down (resumed each round).
    proof: Option<Proven>,
}

impl ElSync {
    /// Whether an EL sync is under way.
    pub fn syncing(&self) -> bool {
        self.active.is_some()
    }

    /// Runs the bootstrap for this round: `None` when the normal planner should go on (replay,
    /// or the EL sync just handed over), `Some` when the round was spent on the EL sync.
    #[allow(clippy::too_many_arguments)]
    pub async fn round(
        &mut self,
        ctx: &Ctx,
        fc: &mut Forkchoice,
        local: Heads,
        agreed: Heads,
        checkpoint: BlockRef,
        source_at_checkpoint: Option<B256>,
        version: FcuVersion,
    ) -> Result<Option<Outcome>, Fault> {
        let target = ctx.config.follow.target(&agreed);
        // Only from a checkpoint the quorum holds (otherwise the planner halts or holds), and
        // towards labels at or above it: checked every round, as the sources may change.
        let held = checkpoint.number == 0 || source_at_checkpoint == Some(checkpoint.hash);
        if !held || agreed.finalized.number < checkpoint.number {
            self.stop(ctx, "the sources no longer hold lightcl's finalized block");
            return Ok(None);
        }
        let status = match self.decide(ctx, local, target).await? {
            Decision::Replay => return Ok(None),
            Decision::HandOver(sent) => {
                return self.hand_over(ctx, local, sent).await.map(|()| None);
            }
            Decision::Sync(status) => status,
        };
        let Some(heads) = handed(target, &agreed, checkpoint, ctx.label_cap().await) else {
            // Lockstep: the fleet's cap is below even lightcl's finalized block; wait for the
            // other replicas.
            return Ok(Some(Outcome::Idle));
        };
        if self.active.is_none() {
            self.start(ctx, local, target, status.as_ref());
        }
        // The chain is proven by hash down to the checkpoint (or the handed finalized block
        // when lightcl has none): resumed each round, counted as progress while it grows.
        let low = if checkpoint.number > 0 { checkpoint.number } else { heads.finalized.number };
        let chain = match self.prove_handed(ctx, &heads, low).await {
            Ok(Some(chain)) => chain,
            // Not proven yet (or the sources could not serve the walk this round): the stall
            // watch decides whether `auto` gives up for replay.
            walking => {
                let status = match status {
                    Some(s) => s,
                    None => ctx.engine.sync_status().await?,
                };
                if self.watch(ctx, &local, target, &status) {
                    return Ok(None);
                }
                return walking.map(|_| Some(Outcome::Progress));
            }
        };
        if checkpoint.number > 0 && chain.get(checkpoint.number) != Some(checkpoint.hash) {
            self.stop(
                ctx,
                "the agreed head's chain does not pass through lightcl's finalized block",
            );
            return Ok(None);
        }
        // The EL's own head must be on that chain: an EL on another branch is recovery's job.
        let on_chain = el_on_chain(ctx, local.head, low, &chain, heads.head).await?;
        if !on_chain {
            self.stop(
                ctx,
                "the EL's head is not on the sources' chain (divergence recovery first)",
            );
            return Ok(None);
        }
        let status = match status {
            Some(s) => s,
            None => ctx.engine.sync_status().await?,
        };
        if self.watch(ctx, &local, target, &status) {
            return Ok(None);
        }
        self.hand_head(ctx, fc, heads, &chain, version).await?;
        ctx.report.gauge(m::EL_SYNCING, &[], 1.0);
        Ok(Some(Outcome::Idle))
    }

    /// Whether this round replays, hands over (the EL reached a handed head), or syncs (with
    /// the EL's sync status when it was read to decide).
    async fn decide(
        &mut self,
        ctx: &Ctx,
        local: Heads,
        target: BlockRef,
    ) -> Result<Decision, Fault> {
        let lag = target.number.saturating_sub(local.head.number);
        let min_gap = ctx.config.bootstrap_min_gap_blocks;
        if self.active.is_none() {
            if lag <= min_gap {
                self.fell_back = false;
            }
            let fell_back = self.fell_back;
            if choose(ctx.config.bootstrap, lag, min_gap, None, fell_back) == Choice::Replay {
                return Ok(Decision::Replay);
            }
            let st = ctx.engine.sync_status().await?;
            match choose(ctx.config.bootstrap, lag, min_gap, st.peers, fell_back) {
                Choice::Replay => return Ok(Decision::Replay),
                Choice::ReplayBecause(reason) => {
                    self.fell_back = true;
                    ctx.report.count(m::EL_SYNC_FALLBACKS, &[("reason", reason)], 1.0);
                    warn!(target: "lightcl::bootstrap", el_head = %local.head, target = %target, lag,
                        "the EL is far behind but has no P2P peers, so it cannot sync itself; \
                         replaying every block instead. To bootstrap faster, give the EL peers \
                         (bootnodes, static or trusted peers) and restart lightcl");
                    return Ok(Decision::Replay);
                }
                Choice::ElSync => {}
            }
            return Ok(Decision::Sync(Some(st)));
        } else {
            let reached = self.active.as_ref().and_then(|a| {
                a.handed.iter().rev().find(|h| h.head.number <= local.head.number).copied()
            });
            if let Some(sent) = reached {
                return Ok(Decision::HandOver(sent));
            }
        }
        Ok(Decision::Sync(None))
    }

    /// Starts an EL sync, saying so.
    fn start(&mut self, ctx: &Ctx, local: Heads, target: BlockRef, status: Option<&SyncStatus>) {
        let lag = target.number.saturating_sub(local.head.number);
        info!(target: "lightcl::bootstrap", el_head = %local.head, target = %target, lag,
                peers = ?status.and_then(|s| s.peers), "the EL is far behind: handing \
                it the agreed head to sync from its P2P peers (bootstrap = {:?}); lightcl checks \
                the hashes when it gets there and replays the rest", ctx.config.bootstrap);
        let now = Instant::now();
        self.active = Some(Active {
            handed: Default::default(),
            announced: None,
            started: now,
            start_head: local.head.number,
            work: local.head.number,
            progressed: now,
            logged: now,
            warned: None,
        });
    }

    /// Ends an EL sync under way (if any), saying why; the planner takes over.
    fn stop(&mut self, ctx: &Ctx, why: &str) {
        if self.active.take().is_some() {
            ctx.report.gauge(m::EL_SYNCING, &[], 0.0);
            warn!(target: "lightcl::bootstrap", why, "EL sync stopped; the planner takes over");
        }
    }

    /// The EL reached the handed head: its hashes there and at the handed finalized block must
    /// be the agreed ones. Either way the EL sync ends; a mismatch is the planner's divergence.
    async fn hand_over(&mut self, ctx: &Ctx, local: Heads, sent: Heads) -> Result<(), Fault> {
        let at_head = ctx.engine.block(BlockAt::Number(sent.head.number)).await?;
        let at_final = ctx.engine.block(BlockAt::Number(sent.finalized.number)).await?;
        let ok = at_head.map(|b| b.block.hash) == Some(sent.head.hash)
            && at_final.map(|b| b.block.hash) == Some(sent.finalized.hash);
        let took = self.active.as_ref().map(|a| a.started.elapsed()).unwrap_or_default();
        self.active = None;
        ctx.report.gauge(m::EL_SYNCING, &[], 0.0);
        if ok {
            info!(target: "lightcl::bootstrap", el_head = %local.head, checked = %sent.head,
                finalized = %sent.finalized, seconds = took.as_secs(),
                "the EL synced from its peers to the handed head and holds the agreed blocks \
                 there and at finalized; following by replay from here");
        } else {
            warn!(target: "lightcl::bootstrap", el_head = %local.head, handed = %sent.head,
                el_there = ?at_head.map(|b| b.block.hash), "the EL's chain at the handed head \
                is not the agreed one; divergence recovery takes over");
        }
        Ok(())
    }

    /// Logs progress and watches for a stall; true when `auto` gives up for replay.
    fn watch(&mut self, ctx: &Ctx, local: &Heads, target: BlockRef, status: &SyncStatus) -> bool {
        let stall = Duration::from_secs(ctx.config.bootstrap_stall_secs);
        let interval = Duration::from_millis(ctx.config.progress_interval_ms);
        let mode = ctx.config.bootstrap;
        let Some(a) = self.active.as_mut() else { return false };
        let handed = a.handed.back().map(|h| h.head.to_string());
        let now = Instant::now();
        let synced = status
            .progress
            .as_ref()
            .map_or(local.head.number, |p| p.current.max(local.head.number));
        let work = status.progress.as_ref().map_or(0, |p| p.work).max(local.head.number);
        ctx.report.gauge(m::EL_SYNC_BLOCK, &[], synced as f64);
        if work > a.work {
            a.work = work;
            a.progressed = now;
            a.warned = None;
        }
        if now.duration_since(a.logged) >= interval {
            a.logged = now;
            let secs = now.duration_since(a.started).as_secs_f64().max(1e-3);
            let rate = synced.saturating_sub(a.start_head) as f64 / secs;
            let left = target.number.saturating_sub(synced);
            let eta = (rate > 0.0).then(|| Duration::from_secs((left as f64 / rate) as u64));
            let p = status.progress.as_ref();
            info!(target: "lightcl::bootstrap", el_head = local.head.number, synced,
                highest = p.map(|p| p.highest), stage = ?p.and_then(|p| p.stage.clone()),
                peers = ?status.peers, handed = ?handed, target = target.number,
                blocks_per_sec = format!("{rate:.1}"), eta = ?eta, "EL syncing from its peers");
        }
        let idle = now.duration_since(a.progressed);
        if idle < stall {
            return false;
        }
        let why = match status.peers {
            Some(0) => "it has no P2P peers",
            _ => {
                "it shows no progress (it may not sync on a forkchoice, or its peers lack the chain)"
            }
        };
        if mode == Bootstrap::Auto {
            ctx.report.count(m::EL_SYNC_FALLBACKS, &[("reason", "stalled")], 1.0);
            ctx.report.gauge(m::EL_SYNCING, &[], 0.0);
            warn!(target: "lightcl::bootstrap", el_head = %local.head, handed = ?handed,
                idle_secs = idle.as_secs(), peers = ?status.peers, "EL sync stalled: {why}; \
                falling back to replaying every block. To bootstrap by EL sync, give the EL \
                peers that hold the chain (bootnodes, static or trusted peers), enable snap \
                sync, and check its log for sync errors");
            self.active = None;
            self.fell_back = true;
            return true;
        }
        if a.warned.is_none_or(|w| now.duration_since(w) >= stall) {
            a.warned = Some(now);
            warn!(target: "lightcl::bootstrap", el_head = %local.head, handed = ?handed,
                idle_secs = idle.as_secs(), peers = ?status.peers, "EL sync makes no progress: \
                {why}. Nothing can progress until it does (bootstrap = \"el-sync\" never falls \
                back): give the EL peers that hold the chain (admin_addPeer, bootnodes, static \
                or trusted peers), or set bootstrap = \"auto\" or \"replay\" to replay from the \
                sources");
        }
        false
    }

    /// Hands the EL the agreed head: its payload once (so the EL knows the header), then the
    /// forkchoice through the gate, with the labels proven on its chain.
    async fn hand_head(
        &mut self,
        ctx: &Ctx,
        fc: &mut Forkchoice,
        heads: Heads,
        chain: &Proven,
        version: FcuVersion,
    ) -> Result<(), Fault> {
        let announced = self.active.as_ref().and_then(|a| a.announced);
        if announced != Some(heads.head.hash) {
            announce(ctx, heads.head).await;
        }
        let verdict = fc.hand(&heads, chain, version).await?;
        if let Some(a) = self.active.as_mut() {
            if a.handed.back() != Some(&heads) {
                if a.handed.len() >= HANDED_KEPT {
                    a.handed.pop_front();
                }
                a.handed.push_back(heads);
            }
            a.announced = Some(heads.head.hash);
        }
        match verdict {
            Verdict::Advance | Verdict::Pending => Ok(()),
            Verdict::Reject(reason) => {
                self.stop(ctx, "the EL answered INVALID for the handed head");
                Err(Fault::Invalid { block: heads.head, reason })
            }
        }
    }

    /// The sources' chain from `heads.head` down to height `low`, walked by parent hash and
    /// resumed from the previous rounds' walk (extended up when the head moved up on it);
    /// `None` while the walk is not there yet (it advanced this round, or could not). Safe and
    /// finalized must be on it.
    async fn prove_handed(
        &mut self,
        ctx: &Ctx,
        heads: &Heads,
        low: u64,
    ) -> Result<Option<Proven>, Fault> {
        let Heads { head, safe, finalized } = *heads;
        let mut chain = match self.proof.take() {
            Some(c) => match rebase(ctx, c, head).await {
                Ok(c) => c,
                Err(kept) => {
                    // Keep what was proven: the next round tries the new blocks again.
                    self.proof = Some(kept);
                    return Err(Fault::NoAgreement { number: head.number });
                }
            },
            None => Proven::at(head),
        };
        chain.trim_below(low);
        if chain.low().number > low {
            let from = chain.low().number;
            let added = ctx.sources.extend_down(&mut chain, low, WALK_BATCH, WALK_PER_ROUND).await;
            let reached = chain.low().number;
            if let Some(a) = self.active.as_mut()
                && added > 0
            {
                a.progressed = Instant::now();
            }
            if reached > low {
                self.proof = Some(chain);
                info!(target: "lightcl::bootstrap", head = %head, proven_down_to = reached,
                    walked = from - reached, to = low, "proving the agreed head's chain by \
                    parent hash down to lightcl's finalized block before handing it to the EL");
                if added == 0 {
                    return Err(Fault::NoAgreement { number: reached });
                }
                return Ok(None);
            }
        }
        let at = |b: BlockRef| chain.get(b.number) == Some(b.hash);
        let on = at(finalized) && at(safe);
        self.proof = Some(chain.clone());
        if !on {
            warn!(target: "lightcl::bootstrap", head = %head, safe = %safe, finalized = %finalized,
                "the agreed safe or finalized block is not on the agreed head's chain (walked by \
                 hash); not handing it to the EL this round");
            return Err(Fault::NoAgreement { number: head.number });
        }
        Ok(Some(chain))
    }
}

/// Whether the EL's `head` is on the sources' `chain` (proven down to `low`), or, below `low`,
/// held by the quorum; a head above the handed one counts (the EL synced past it).
async fn el_on_chain(
    ctx: &Ctx,
    head: BlockRef,
    low: u64,
    chain: &Proven,
    handed: BlockRef,
) -> Result<bool, Fault> {
    Ok(if head.number >= low {
        chain.get(head.number) == Some(head.hash) || head.number > handed.number
    } else {
        match ctx.sources.agreed_at(head.number).await.hash() {
            Some(h) => h == head.hash,
            // No agreed answer (a source failing or lagging): no evidence; ask again.
            None => return Err(Fault::NoAgreement { number: head.number }),
        }
    })
}

/// Gives the EL the handed head's payload (verified), so that it knows the header it is
/// asked to sync to; the EL answers SYNCING. Best effort: ELs also fetch it from peers.
async fn announce(ctx: &Ctx, head: BlockRef) {
    let held = ctx.sources.held().get(head.hash).map(|(_, p)| p);
    if held.is_some() {
        ctx.sources.count_reused(1);
    }
    let mut fetched = None;
    for i in (0..ctx.sources.len()).filter(|&i| ctx.sources.available(i) && held.is_none()) {
        if let Ok(Some(p)) = ctx.sources.payload(i, BlockId::Hash(head.hash)).await {
            fetched = Some(p);
            break;
        }
    }
    if let Some(p) = held.or(fetched)
        && let Err(e) = ctx.engine.new_payload(&p).await
    {
        warn!(target: "lightcl::bootstrap", head = %head, error = %e,
            "could not give the EL the handed head's payload");
    }
}

/// The proof so far (`c`), moved to `head`: cut down to it where `head` is on it, else
/// joined to a walk down from `head` where the two meet (the head moved up, or to another
/// branch after a reorg: only the blocks above the meeting point are walked). A walk that
/// does not meet `c` within a round's budget replaces it (a reorg deeper than that).
/// `Err(c)`: the sources served nothing of the walk this round; `c` is kept.
async fn rebase(ctx: &Ctx, mut c: Proven, head: BlockRef) -> Result<Proven, Proven> {
    if c.get(head.number) == Some(head.hash) {
        c.truncate_above(head.number);
        return Ok(c);
    }
    let mut more = Proven::at(head);
    let mut walked = 0;
    loop {
        let low = more.low();
        if c.get(low.number) == Some(low.hash) {
            c.truncate_above(low.number);
            c.extend(&more);
            return Ok(c);
        }
        if low.number <= c.low().number || walked >= WALK_PER_ROUND {
            return Ok(more);
        }
        let to = c.low().number;
        let added = ctx.sources.extend_down(&mut more, to, WALK_BATCH, WALK_BATCH).await;
        if added == 0 {
            return Err(c);
        }
        walked += added;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choose_table() {
        use Bootstrap::*;
        let cases = [
            ("replay never syncs", Replay, 50_000, Some(5), false, Choice::Replay),
            ("a small gap replays", Auto, 100, Some(5), false, Choice::Replay),
            ("a gap at the bound replays", Auto, 1_000, Some(5), false, Choice::Replay),
            ("a large gap with peers syncs", Auto, 1_001, Some(5), false, Choice::ElSync),
            ("unknown peers: try", Auto, 5_000, None, false, Choice::ElSync),
            (
                "no peers: replay, saying why",
                Auto,
                5_000,
                Some(0),
                false,
                Choice::ReplayBecause("no_peers"),
            ),
            ("after a stall auto replays", Auto, 5_000, Some(5), true, Choice::Replay),
            ("el-sync with no peers still syncs", ElSync, 5_000, Some(0), false, Choice::ElSync),
            ("el-sync ignores a stall", ElSync, 5_000, Some(3), true, Choice::ElSync),
            ("el-sync with a small gap replays", ElSync, 10, Some(3), false, Choice::Replay),
        ];
        for (what, mode, lag, peers, fell_back, want) in cases {
            assert_eq!(choose(mode, lag, 1_000, peers, fell_back), want, "{what}");
        }
    }
}
