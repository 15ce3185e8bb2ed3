//! Divergence recovery: the EL holds another branch than the sources above its finalized block.
//!
//! 1. Search the highest common block in `[local finalized, divergence)` ([`AncestorSearch`]);
//!    disagreement at local finalized is a finalized divergence: halt.
//! 2. Pin: the target's hash was captured before the search; fetch the blocks from the ancestor
//!    to the target and accept the ancestor only if they link by parent hash from it to the
//!    pinned hash. Otherwise (a load-balanced source answering from different branches) search
//!    again, within a budget of attempts and time.
//! 3. Reset: a forkchoice to the ancestor ([`Forkchoice::reset_to`]) (head = ancestor, safe = min(ancestor, safe), finalized
//!    unchanged). ELs differ (geth rewinds up to 32 blocks, op-geth never does), so nothing
//!    depends on it.
//! 4. Replay the source blocks with newPayload and move the forkchoice to them: an ordinary reorg
//!    on every EL; then read the head back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::super::ctx::{Ctx, Culprit};
use super::super::error::{Fault, GateError, Outcome, RunError};
use super::super::forkchoice::Forkchoice;
use super::feed::{Fed, Feed, FeedKind};
use super::fetch::{self, Fetched};
use crate::chain::ancestor::{AncestorSearch, SearchState};
use crate::chain::{BlockRef, Heads, Label};
use crate::engine::{BlockAt, Verdict, classify};
use crate::metrics as m;
use crate::payload::FcuVersion;
use crate::source::set::Agreed;

/// Searches per recovery before giving up for this round.
const MAX_ATTEMPTS: u32 = 3;
/// Time per recovery before giving up for this round.
const TIME_BUDGET: Duration = Duration::from_secs(120);

/// What the blocks fetched for a candidate ancestor show.
enum Pin {
    /// The fetched blocks link the ancestor to the pinned hash.
    Linked(Vec<Fetched>),
    /// They do not: the sources answered from more than one branch.
    Broken(String),
}

/// Brings the EL from its branch back onto the sources' chain (see the module doc).
pub(crate) async fn run(
    ctx: &Ctx,
    fc: &mut Forkchoice,
    diverged_at: u64,
    local: Heads,
    agreed: Heads,
    version: FcuVersion,
) -> Result<Outcome, Fault> {
    let target = ctx.target(&agreed);
    let started = Instant::now();
    // What the fleet shares may predate the sources' reorg: the search reads afresh. Not
    // ready while recovering (a divergence found mid-catch-up comes here directly), so that
    // lockstep stops counting this replica's head.
    ctx.forget_shared_from(0);
    ctx.report.recovering();
    // The search covers [local finalized, diverged): at least the finalized block itself,
    // which is checked first (a head equal to finalized is no evidence of anything).
    let diverged_at = diverged_at.min(local.head.number).max(local.finalized.number + 1);
    let mut lookups = 0u32;
    if !fc.prove_refill_lineage(&ctx.sources, local.head).await? {
        return Ok(Outcome::Progress);
    }
    ctx.report.count(m::DIVERGENCES, &[], 1.0);
    warn!(target: "lightcl::recovery", diverged_at, local_head = %local.head, target = %target,
        local_finalized = %local.finalized, "the EL's chain differs from the sources'; recovering");
    for attempt in 1..=MAX_ATTEMPTS {
        if started.elapsed() > TIME_BUDGET {
            break;
        }
        // 1. Search.
        let ancestor = search(ctx, &local, agreed, diverged_at, &mut lookups).await?;
        if target.number <= ancestor.number {
            // The sources' chain is a prefix of ours up to the target: nothing to replay
            // yet. Ask for the rewind (geth honours it); otherwise wait for newer blocks.
            fc.reset_to(&local, ancestor, version).await?;
            info!(target: "lightcl::recovery", ancestor = %ancestor, target = %target,
                "nothing to replay above the common ancestor yet; waiting for the sources");
            return Ok(Outcome::Idle);
        }
        // 2. Pin.
        // At most one prefetch window of payloads is held in memory; a deeper recovery
        // continues as ordinary catch-up from the replayed head.
        let end = target.number.min(ancestor.number + ctx.config.prefetch as u64);
        let pinned = if end == target.number {
            target.hash
        } else {
            ctx.sources.agreed_at(end).await.hash().ok_or(Fault::NoAgreement { number: end })?
        };
        let payloads = match pin(ctx, ancestor, end, pinned).await? {
            Pin::Linked(p) => p,
            Pin::Broken(why) => {
                warn!(target: "lightcl::recovery", attempt, candidate = %ancestor, pinned_height = end,
                    pinned = %pinned, why, "the replay blocks do not link the candidate ancestor to \
                    the pinned target (sources answering from different branches?); searching again");
                continue;
            }
        };
        // 3. Reset.
        let base = fc.reset_to(&local, ancestor, version).await?;
        info!(target: "lightcl::recovery", ancestor = %ancestor, depth = local.head.number - ancestor.number,
            lookups, replay = payloads.len(), "reset to the common ancestor; replaying the sources' blocks");
        // 4. Replay.
        let fed = replay(ctx, fc, &local, agreed, base, ancestor, payloads, version).await?;
        let depth = local.head.number - ancestor.number;
        ctx.report.count(m::RECOVERIES, &[], 1.0);
        ctx.report.gauge(m::RECOVERY_DEPTH, &[], depth as f64);
        info!(target: "lightcl::recovery", diverged_at, ancestor = %ancestor,
            depth, lookups, replayed = fed.blocks,
            attempts = attempt, seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
            head = %fed.last, "recovered");
        return Ok(Outcome::Progress);
    }
    warn!(target: "lightcl::recovery", lookups, seconds = started.elapsed().as_secs(),
        "recovery gave up for now (budget spent); holding and trying again later");
    Err(Fault::RecoveryBudget)
}

/// The highest block the EL's chain and the sources' share in `[local finalized, diverged_at)`
/// (binary search, [`AncestorSearch`]); a finalized divergence confirmed by the quorum's
/// finalized chain is a halt.
async fn search(
    ctx: &Ctx,
    local: &Heads,
    agreed: Heads,
    diverged_at: u64,
    lookups: &mut u32,
) -> Result<BlockRef, Fault> {
    let mut search = AncestorSearch::new(local.finalized.number, diverged_at);
    let mut local_hashes = HashMap::new();
    // The sources' hash at the floor, kept for the halt message (no second lookup).
    let mut floor_theirs = None;
    loop {
        match search.next() {
            SearchState::Probe(n) => {
                let mine = ctx.engine.block(BlockAt::Number(n)).await?.map(|b| b.block.hash);
                *lookups += 2;
                // No agreed answer (sources down, lagging, backing off or split) is not
                // evidence of disagreement: try again later.
                let Some(theirs) = ctx.sources.agreed_at(n).await.hash() else {
                    return Err(Fault::NoAgreement { number: n });
                };
                if n == local.finalized.number {
                    floor_theirs = Some(theirs);
                }
                if let Some(h) = mine {
                    local_hashes.insert(n, h);
                }
                search.answer(n, mine == Some(theirs));
            }
            SearchState::Found(a) => match local_hashes.get(&a) {
                Some(h) => return Ok(BlockRef::new(a, *h)),
                None => return Err(Fault::Missing { number: a }),
            },
            SearchState::FinalizedDiverged(n) => {
                // Halt only on positive evidence: the quorum agrees on another hash.
                // The floor's answer is reused when it was probed.
                let floor = match floor_theirs {
                    Some(h) => Some(h),
                    None => ctx.sources.agreed_at(n).await.hash(),
                };
                let Some(sources_hash) = floor else {
                    return Err(Fault::NoAgreement { number: n });
                };
                if sources_hash == local.finalized.hash {
                    return Err(Fault::NoAgreement { number: n });
                }
                return Err(confirm_halt(ctx, local.finalized, agreed).await);
            }
        }
    }
}

/// Replays the pinned `payloads` on top of the reset `base` (rolling the EL back to the
/// `ancestor` first when it lacks the ancestor's state) and reads the head back.
#[allow(clippy::too_many_arguments)]
async fn replay(
    ctx: &Ctx,
    fc: &mut Forkchoice,
    local: &Heads,
    agreed: Heads,
    base: Heads,
    ancestor: BlockRef,
    payloads: Vec<Fetched>,
    version: FcuVersion,
) -> Result<Fed, Fault> {
    // The first block tells whether the EL still has the ancestor's state.
    // Until a roll-back, the EL's head stays at the tip of the branch it held.
    let mut hold_through = local.head.number;
    if let Some((_, first)) = payloads.first() {
        match classify(&ctx.engine.new_payload(first).await?) {
            Verdict::Advance => {}
            Verdict::Pending => {
                rewind_for_state(ctx, fc, ancestor).await?;
                hold_through = ancestor.number;
            }
            Verdict::Reject(reason) => {
                return Err(Fault::Invalid { block: first.block, reason });
            }
        }
    }
    let total = payloads.len() as u64;
    let (tx, mut rx) = mpsc::channel(payloads.len().max(1));
    for p in payloads {
        if tx.try_send(Ok(p)).is_err() {
            break;
        }
    }
    drop(tx);
    let kind = FeedKind::Replay { hold_through };
    let (fed, result) = Feed::new(ctx, fc, base, agreed, version, kind, total).run(&mut rx).await;
    result?;
    let head = ctx.engine.block(BlockAt::Label(Label::Latest)).await?.map(|b| b.block);
    if head != Some(fed.last) {
        return Err(Fault::HeadDidNotMove { wanted: fed.last, have: head });
    }
    Ok(fed)
}

/// Fetches `ancestor+1..=end` and checks they link from the ancestor to `pinned`.
async fn pin(
    ctx: &Ctx,
    ancestor: BlockRef,
    end: u64,
    pinned: alloy_primitives::B256,
) -> Result<Pin, Fault> {
    let count = (end - ancestor.number) as usize;
    let (tx, mut rx) = mpsc::channel(count.max(1));
    fetch::range(ctx, ancestor.number + 1, end, BlockRef::new(end, pinned), false, tx).await;
    let mut payloads = Vec::with_capacity(count);
    while let Ok(item) = rx.try_recv() {
        payloads.push(item?);
    }
    let mut prev = ancestor;
    let mut prev_served_by = None;
    for (served_by, p) in &payloads {
        if p.parent_hash != prev.hash {
            // Blame the source that broke the chain: the one before if the quorum does not
            // hold its block, else this one.
            let culprit = match ctx.culprit(prev, prev_served_by, *served_by).await {
                Some(Culprit::Lower(i, _) | Culprit::Upper(i)) => Some(i),
                None => None,
            };
            ctx.forget_shared_from(prev.number);
            if let Some(i) = culprit {
                let e = crate::source::SourceError::inconsistent(
                    ctx.sources.name(i),
                    format!("block {} does not link to {prev} during recovery", p.block),
                );
                ctx.sources.blame(i, &e);
            }
            return Ok(Pin::Broken(format!(
                "block {} has parent {}, not {}",
                p.block, p.parent_hash, prev
            )));
        }
        prev = p.block;
        prev_served_by = Some(*served_by);
    }
    if payloads.len() != count || prev.hash != pinned {
        ctx.forget_shared_from(ancestor.number + 1);
        return Ok(Pin::Broken(format!("chain ends at {prev}, pinned {pinned} at #{end}")));
    }
    Ok(Pin::Linked(payloads))
}

/// The EL cannot execute on top of a deep ancestor (geth keeps 128 recent states): roll it
/// back to the ancestor with `debug_setHead`, which restores the state from its history. The
/// ancestor is at or above local finalized, so finality is never crossed.
async fn rewind_for_state(ctx: &Ctx, fc: &mut Forkchoice, ancestor: BlockRef) -> Result<(), Fault> {
    warn!(target: "lightcl::recovery", ancestor = %ancestor,
        "the EL no longer has the state of the common ancestor (too deep for its recent-state \
         window); rolling it back with debug_setHead");
    match fc.set_head(ancestor.number).await {
        Ok(()) => {}
        Err(GateError::Engine(e)) if e.is_retryable() => return Err(e.into()),
        Err(GateError::State(e)) => return Err(e.into()),
        Err(e) => return Err(Fault::CannotRewind { ancestor, reason: e.to_string() }),
    }
    let head = ctx.engine.block(BlockAt::Label(Label::Latest)).await?.map(|b| b.block);
    if head != Some(ancestor) {
        return Err(Fault::CannotRewind {
            ancestor,
            reason: format!("after debug_setHead the EL head is {head:?}"),
        });
    }
    Ok(())
}

/// Why lightcl stops at a finalized divergence at `local`: a halt only once the quorum's
/// finalized chain, walked by hash, holds another block there; otherwise it holds (the
/// by-number answer came from a stale replica).
pub(crate) async fn confirm_halt(ctx: &Ctx, local: BlockRef, agreed: Heads) -> Fault {
    match ctx.sources.confirm_at(agreed.finalized, local.number).await {
        Agreed::Hash(h) if h != local.hash => Fault::Halt(RunError::FinalizedDivergence {
            number: local.number,
            local: local.hash,
            sources_hash: h,
        }),
        confirmed => {
            warn!(target: "lightcl::sync", height = local.number, finalized = %local.hash,
                confirmed = ?confirmed, "a source answered another block at the height of \
                lightcl's finalized block, but the sources' finalized chain does not confirm \
                it; holding");
            Fault::NoAgreement { number: local.number }
        }
    }
}
