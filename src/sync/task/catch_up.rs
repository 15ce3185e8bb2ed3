//! Catch-up (`Step::Insert`): fetch and feed side by side, up to [`MAX_BATCH`] blocks a round,
//! then the triage of a first block that does not sit on the EL's head: the source lied (blamed),
//! the sources reorganised during the round (plan again), or the EL's head is not on the sources'
//! chain (a divergence, which the follower hands to recovery).

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::super::ctx::Ctx;
use super::super::error::{Fault, Outcome};
use super::super::forkchoice::Forkchoice;
use super::feed::{Feed, FeedKind, MAX_BATCH};
use super::fetch::{self, FetchShape};
use super::stuck::StuckEl;
use crate::chain::Heads;
use crate::payload::FcuVersion;
use crate::source::SourceError;
use crate::source::set::Agreed;

/// Fetches blocks `from..=to` (at most [`MAX_BATCH`] per round; memory is bounded by the
/// prefetch window) and feeds them in order on top of `local`. A first block that does not link
/// to the local head is a divergence only if the quorum says the local head is not theirs.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    ctx: &Ctx,
    fc: &mut Forkchoice,
    stuck: &mut StuckEl,
    from: u64,
    to: u64,
    local: Heads,
    agreed: Heads,
    version: FcuVersion,
) -> Result<Outcome, Fault> {
    let end = to.min(from + MAX_BATCH - 1);
    if !fc.prove_refill_lineage(&ctx.sources, local.head).await? {
        // The proof advanced and goes on next round (what it proved stays proven).
        return Ok(Outcome::Progress);
    }
    let (tx, mut rx) = mpsc::channel(FetchShape::of(&ctx.config).channel);
    let target = ctx.target(&agreed);
    // One block more than is fed, where there is one: the block above the last one fed
    // vouches for it (see the feed).
    let fetch_to = if end < target.number { end + 1 } else { end };
    let fetch = fetch::range(ctx, from, fetch_to, target, true, tx);
    let feed = async {
        let feed = Feed::new(ctx, fc, local, agreed, version, FeedKind::CatchUp, end - from + 1);
        let out = feed.run(&mut rx).await;
        drop(rx);
        out
    };
    let ((), (fed, result)) = tokio::join!(fetch, feed);
    // Rounds that ended in an error are the other detectors' business.
    if fed.blocks > 0 && result.is_ok() {
        stuck.watch_progress(local.head)?;
    }
    match result {
        Ok(()) => Ok(Outcome::Progress),
        Err(Fault::Discontinuity { block, parent, local: below, served_by }) if fed.blocks == 0 => {
            ctx.forget_shared_from(block.number);
            // The block offered next does not sit on our head. Either our head is not on
            // the sources' chain, or the source that served it lies: ask the quorum.
            match ctx.sources.agreed_at(local.head.number).await {
                Agreed::Hash(h) if h == local.head.hash => {
                    let e = SourceError::inconsistent(
                        ctx.sources.name(served_by),
                        format!(
                            "block {block} has parent {parent}, but the agreed block below it is {below}"
                        ),
                    );
                    ctx.sources.blame(served_by, &e);
                    Err(Fault::Source(e))
                }
                Agreed::Hash(_) => {
                    info!(target: "lightcl::sync", block = %block, parent = %parent, local_head = %below,
                        "the sources' chain does not hold the EL's head: divergence");
                    Ok(Outcome::Diverged { at: local.head.number })
                }
                Agreed::Unknown => Err(Fault::NoAgreement { number: local.head.number }),
            }
        }
        Err(Fault::Discontinuity { block, parent, local: below, .. }) => {
            ctx.forget_shared_from(block.number);
            warn!(target: "lightcl::sync", block = %block, parent = %parent, below = %below,
                "the sources' chain changed during catch-up; planning again");
            Ok(Outcome::Progress)
        }
        Err(e) => Err(e),
    }
}
