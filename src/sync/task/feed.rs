//! Feeding: payloads in order into the EL, checking continuity and every answer (I5, I6), and
//! moving the forkchoice as it goes (origins `feed_resync`, `feed_checkpoint`, `feed_end`).
//!
//! Per block: [`Feed::check`] (the agreed blocks at fixed heights, the chain through the floor,
//! the parent link), [`Feed::vouch`] (a raw block asked for by number claims no hash: the block
//! above it, the target or the quorum must vouch for it), [`Feed::execute`] (newPayload, and the
//! SYNCING repair), then every [`FCU_EVERY_BLOCKS`] a checkpoint, and at the end
//! [`Feed::finish`].

use std::time::{Duration, Instant};

use tracing::{debug, info};

use super::super::ctx::{Ctx, Culprit};
use super::super::error::Fault;
use super::super::forkchoice::{Forkchoice, Origin};
use super::fetch::{Fetched, PayloadRx};
use crate::chain::{BlockRef, Heads, Proven};
use crate::engine::{Verdict, classify};
use crate::metrics as m;
use crate::payload::{FcuVersion, Payload};
use crate::source::SourceError;

/// A forkchoice update at least every this many fed blocks. geth and op-geth keep 128 state
/// layers above their head; payloads fed further ahead than that are ignored (SYNCING) until the
/// head moves (docs/engines.md).
pub const FCU_EVERY_BLOCKS: u64 = 64;
/// Blocks fed per catch-up round before the loop re-plans (keeps the target fresh). Memory is
/// bounded by the prefetch window, not by this.
pub const MAX_BATCH: u64 = 8_192;

/// What a run of fed payloads is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FeedKind {
    /// Catch-up on top of the EL's head: a head is sent only once the quorum holds it.
    CatchUp,
    /// A recovery's replay of a range checked to link to the pinned target. No forkchoice on the
    /// way names a head at or below `hold_through` (the tip of the branch the EL held, unless it
    /// was rolled back): a reorg onto a branch shorter than the one held makes op-reth cut blocks
    /// off its files, where it can die under concurrent reads (docs/engines.md). The forkchoice
    /// held back goes out with the first block above it.
    Replay {
        /// The highest head an intermediate forkchoice may not name.
        hold_through: u64,
    },
}

/// What a feed achieved.
#[derive(Debug, Clone, Copy)]
pub struct Fed {
    /// The last block the EL accepted (the base head when none).
    pub last: BlockRef,
    /// Blocks fed.
    pub blocks: u64,
}

/// What the feed does after a block.
enum Flow {
    /// Next block.
    Next,
    /// Stop feeding (without an error: the rest waits for the next round).
    Stop,
}

/// One feed on top of `base.head`. Every block must link to the one before it, and a block at
/// the height of an agreed label, the target or the floor must be that block. Unless a replay
/// (recovery: the whole range was checked to link to the pinned target before), a head is sent
/// only once the quorum holds it, so every head sent is the agreed block or an agreed ancestor
/// of it.
pub(crate) struct Feed<'a> {
    ctx: &'a Ctx,
    fc: &'a mut Forkchoice,
    base: Heads,
    agreed: Heads,
    target: BlockRef,
    version: FcuVersion,
    pinned: bool,
    hold_through: u64,
    /// Checks of fixed heights: agreed labels, the target, the floor.
    fixed: Vec<BlockRef>,
    /// The last block fed, who served it, and its forkchoice version.
    prev: BlockRef,
    prev_served_by: Option<usize>,
    fcu: FcuVersion,
    /// The highest fed block known to be on the agreed chain, and its forkchoice version. The
    /// base head is the EL's own: a forkchoice to it is always allowed (the repair uses it when
    /// the very first block answers SYNCING, as geth does after a restart).
    sendable: Option<(BlockRef, FcuVersion)>,
    /// Set while the EL answers SYNCING/ACCEPTED (state it lacks): keep feeding in order (reth
    /// buffers them); the head moves only to blocks it executed (I6).
    pending: bool,
    since_fcu: u64,
    fed: u64,
    executed: u64,
    /// The fed branch, proven from the EL's head up by parent hash.
    known: Proven,
    progress: Progress,
}

impl<'a> Feed<'a> {
    /// A feed of up to `total` blocks (for the progress log) on top of `base`.
    pub fn new(
        ctx: &'a Ctx,
        fc: &'a mut Forkchoice,
        base: Heads,
        agreed: Heads,
        version: FcuVersion,
        kind: FeedKind,
        total: u64,
    ) -> Self {
        let target = ctx.target(&agreed);
        let (pinned, hold_through) = match kind {
            FeedKind::Replay { hold_through } => (true, hold_through),
            FeedKind::CatchUp => (false, 0),
        };
        let mut fixed: Vec<BlockRef> = vec![agreed.safe, agreed.finalized, target];
        fixed.extend(fc.floor().get());
        let interval = ctx.config.progress_interval_ms;
        Self {
            ctx,
            fc,
            base,
            agreed,
            target,
            version,
            pinned,
            hold_through,
            fixed,
            prev: base.head,
            prev_served_by: None,
            fcu: version,
            sendable: Some((base.head, version)),
            pending: false,
            since_fcu: 0,
            fed: 0,
            executed: 0,
            known: Proven::at(base.head),
            progress: Progress::new(base.head.number + 1, base.head.number + total, interval),
        }
    }

    /// Feeds what `rx` delivers; returns what was fed and the first error.
    pub async fn run(mut self, rx: &mut PayloadRx) -> (Fed, Result<(), Fault>) {
        let mut result = Ok(());
        // The next block, received early to check that it names the current one as its parent.
        let mut ahead: Option<Result<Fetched, Fault>> = None;
        loop {
            let item = match ahead.take() {
                Some(item) => item,
                None => match rx.recv().await {
                    Some(item) => item,
                    None => break,
                },
            };
            if self.ctx.token.is_cancelled() {
                break;
            }
            match self.one(item, rx, &mut ahead).await {
                Ok(Flow::Next) => {}
                Ok(Flow::Stop) => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.finish(result).await
    }

    /// One block: checked, vouched for, executed, and a checkpoint when one is due.
    async fn one(
        &mut self,
        item: Result<Fetched, Fault>,
        rx: &mut PayloadRx,
        ahead: &mut Option<Result<Fetched, Fault>>,
    ) -> Result<Flow, Fault> {
        let (served_by, p) = item?;
        self.check(served_by, &p).await?;
        if !self.pinned && !p.claimed && p.block.number != self.target.number {
            match self.vouch(served_by, &p, rx).await? {
                Some(next) => *ahead = next,
                None => return Ok(Flow::Stop),
            }
        }
        self.execute(served_by, &p).await?;
        self.prev = p.block;
        self.prev_served_by = Some(served_by);
        self.fcu = p.fcu;
        let linked = self.known.push(p.block, p.parent_hash);
        debug_assert!(linked, "a fed block links to the one before (checked above)");
        self.ctx.fleet.touch(self.ctx.index);
        self.since_fcu += 1;
        self.fed += 1;
        if let Some(rate) = self.progress.tick(p.block.number) {
            self.ctx.report.gauge(m::CATCHUP_RATE, &[], rate);
            self.ctx.report.tick();
        }
        if self.since_fcu >= FCU_EVERY_BLOCKS
            && !self.pending
            && self.prev.number > self.hold_through
        {
            self.checkpoint(served_by).await?;
        }
        Ok(Flow::Next)
    }

    /// The block at a fixed height must be the agreed one, below the floor the one of the chain
    /// through it, and every block must name the one before as its parent.
    async fn check(&mut self, served_by: usize, p: &Payload) -> Result<(), Fault> {
        let fixed = &self.fixed;
        if let Some(want) =
            fixed.iter().find(|b| b.number == p.block.number && b.hash != p.block.hash)
        {
            return Err(self.ctx.off_chain(
                served_by,
                format!("served {} where the agreed chain holds {want}", p.block),
            ));
        }
        if let Some(h) = self.fc.floor().lineage_at(p.block.number)
            && h != p.block.hash
        {
            return Err(self.ctx.off_chain(
                served_by,
                format!("served {} where the chain through the finality floor holds {h}", p.block),
            ));
        }
        if p.parent_hash != self.prev.hash {
            return Err(if self.fed > 0 {
                self.broken_link(self.prev, self.prev_served_by, p, served_by).await
            } else {
                Fault::Discontinuity {
                    block: p.block,
                    parent: p.parent_hash,
                    local: self.prev,
                    served_by,
                }
            });
        }
        Ok(())
    }

    /// I5 for a raw block asked for by number: it claims no hash, so only its place in the
    /// chain vouches for it. It goes to the EL once the block above it names it as parent, or
    /// it is the target (whose hash the quorum agreed), or, with no block above it this round,
    /// the quorum holds it; otherwise it waits. A replay's range was linked to its pinned target
    /// before. `Some(next)`: vouched for (`next` is the block received early); `None`: not yet.
    async fn vouch(
        &mut self,
        served_by: usize,
        p: &Payload,
        rx: &mut PayloadRx,
    ) -> Result<Option<Option<Result<Fetched, Fault>>>, Fault> {
        let next = rx.recv().await;
        let vouched = match &next {
            Some(Ok((by, child))) if child.parent_hash != p.block.hash => {
                return Err(self.broken_link(p.block, Some(served_by), child, *by).await);
            }
            Some(Ok(_)) => true,
            // No block above it this round: the quorum vouches for it, or it waits.
            _ => self.ctx.sources.agreed_at(p.block.number).await.hash() == Some(p.block.hash),
        };
        match next {
            Some(Err(e)) if !vouched => Err(e),
            _ if !vouched => {
                // Not (yet) on the agreed chain: the shared fetch may hold it from before a
                // reorg; the next round fetches it afresh.
                self.ctx.forget_shared_from(p.block.number);
                Ok(None)
            }
            next => Ok(Some(next)),
        }
    }

    /// newPayload, and the SYNCING repair: the EL may have flattened away the state below a
    /// head that fell too far behind; the head moves to the last agreed block it executed (geth
    /// recovers the state of a block it holds when the forkchoice names it) and the block is
    /// sent once more.
    async fn execute(&mut self, served_by: usize, p: &Payload) -> Result<(), Fault> {
        let mut verdict = classify(&self.ctx.engine.new_payload(p).await?);
        let repair_to = if verdict != Verdict::Pending || self.pending {
            None
        } else if self.prev != self.base.head && self.agreed_head(self.prev).await == Some(true) {
            Some((self.prev, self.fcu))
        } else {
            self.sendable
        };
        if let Some((head, v)) = repair_to {
            debug!(target: "lightcl::engine", block = %p.block, "SYNCING; moving the head to the last agreed block and resending");
            self.send(Origin::FeedResync, head, v).await?;
            let again = classify(&self.ctx.engine.new_payload(p).await?);
            if again == Verdict::Pending && head == self.base.head && !self.pinned {
                // The block right on top of the EL's own head, after a forkchoice to it: the EL
                // lacks its head's state; nothing later can execute either.
                return Err(Fault::CannotExtendHead { head });
            }
            verdict = again;
            self.since_fcu = 0;
        }
        match verdict {
            Verdict::Advance => {
                self.executed += 1;
                self.ctx.report.count(m::PAYLOADS, &[], 1.0);
            }
            Verdict::Pending => {
                if !self.pending {
                    debug!(target: "lightcl::engine", block = %p.block, "EL cannot execute yet; feeding on in order");
                }
                self.pending = true;
            }
            Verdict::Reject(reason) => {
                self.ctx.report.count(m::INVALID, &[], 1.0);
                let e = SourceError::InvalidBlock {
                    source_name: self.ctx.sources.name(served_by).to_string(),
                    block: p.block,
                    reason: reason.clone(),
                };
                self.ctx.sources.blame(served_by, &e);
                return Err(Fault::Invalid { block: p.block, reason });
            }
        }
        Ok(())
    }

    /// Every [`FCU_EVERY_BLOCKS`]: the head moves to the last block fed, once the quorum holds
    /// it (a block it does not hold is its source's lie; none there yet: later).
    async fn checkpoint(&mut self, served_by: usize) -> Result<(), Fault> {
        let prev = self.prev;
        match self.agreed_head(prev).await {
            Some(true) => self.sendable = Some((prev, self.fcu)),
            Some(false) => {
                return Err(self.ctx.off_chain(
                    served_by,
                    format!("served {prev}, which the quorum does not hold"),
                ));
            }
            None => return Ok(()),
        }
        let heads = self.send(Origin::FeedCheckpoint, prev, self.fcu).await?;
        self.ctx.report.progress(&heads, self.target);
        self.since_fcu = 0;
        Ok(())
    }

    /// The last forkchoice of the feed, and what the feed achieved. Never a head the EL could
    /// not execute: a forkchoice to a block above ones it answered SYNCING for sends geth into
    /// beacon sync towards it, which without peers never ends. The next round feeds again from
    /// the last block it executed.
    async fn finish(mut self, mut result: Result<(), Fault>) -> (Fed, Result<(), Fault>) {
        let mut last = self.prev;
        if self.since_fcu > 0 {
            if self.fed > 0 && !self.pending {
                match self.agreed_head(self.prev).await {
                    Some(true) => self.sendable = Some((self.prev, self.fcu)),
                    Some(false) => {
                        if result.is_ok()
                            && let Some(by) = self.prev_served_by
                        {
                            let prev = self.prev;
                            result = Err(self.ctx.off_chain(
                                by,
                                format!("served {prev}, which the quorum does not hold"),
                            ));
                        }
                    }
                    None => {}
                }
            }
            let above = self.sendable.filter(|(b, _)| b.number > self.base.head.number);
            let (head, v) = above.unwrap_or((self.base.head, self.version));
            let sent = self.send(Origin::FeedEnd, head, v).await;
            if let Ok(heads) = &sent {
                self.ctx.report.progress(heads, self.target);
                if self.fed > 0 && head != self.base.head {
                    self.progress.done(heads);
                }
            }
            if result.is_ok() {
                result = sent.map(|_| ());
            }
            last = head;
        }
        if self.fed > 0 && self.executed == 0 && self.pending && result.is_ok() && !self.pinned {
            // Not one block executed on top of the EL's own head, even after a forkchoice to
            // it: the EL lacks the state of its head (geth after a crash). Feeding again would
            // change nothing.
            result = Err(Fault::CannotExtendHead { head: self.base.head });
        }
        (Fed { last, blocks: self.fed }, result)
    }

    /// Sends the forkchoice for fed `head` (origin `origin`) with the labels the fed branch
    /// allows; the heads sent.
    async fn send(
        &mut self,
        origin: Origin,
        head: BlockRef,
        v: FcuVersion,
    ) -> Result<Heads, Fault> {
        let cap = self.ctx.label_cap().await;
        self.fc.fed(origin, head, &self.base, &self.agreed, &self.known, cap, v).await
    }

    /// Whether a fed head may be sent: pinned ranges always, otherwise only a head the quorum
    /// holds (`None`: it holds nothing there yet).
    async fn agreed_head(&self, head: BlockRef) -> Option<bool> {
        if self.pinned { Some(true) } else { self.is_agreed(head).await }
    }

    /// Whether `block` is on the agreed chain: the target itself, or the quorum holds it
    /// (`None`: the quorum holds nothing there, not evidence either way).
    async fn is_agreed(&self, block: BlockRef) -> Option<bool> {
        if block.number == self.target.number {
            return Some(block.hash == self.target.hash);
        }
        self.ctx.sources.agreed_at(block.number).await.hash().map(|h| h == block.hash)
    }

    /// `upper` (served by `upper_by`) does not name `lower` (served by `lower_by`) as its parent:
    /// the quorum decides which of the two is off the agreed chain, and its source is blamed.
    async fn broken_link(
        &self,
        lower: BlockRef,
        lower_by: Option<usize>,
        upper: &Payload,
        upper_by: usize,
    ) -> Fault {
        match self.ctx.culprit(lower, lower_by, upper_by).await {
            Some(Culprit::Lower(before, h)) => self
                .ctx
                .off_chain(before, format!("served {lower}, the agreed chain holds {h} there")),
            Some(Culprit::Upper(by)) => self.ctx.off_chain(
                by,
                format!("block {} has parent {}, not {lower}", upper.block, upper.parent_hash),
            ),
            None => Fault::NoAgreement { number: lower.number },
        }
    }
}

/// The catch-up progress log: height, target, rate, ETA every few seconds.
struct Progress {
    start: Instant,
    last_log: Instant,
    interval: Duration,
    from: u64,
    target: u64,
    done: u64,
}

impl Progress {
    fn new(from: u64, target: u64, interval_ms: u64) -> Self {
        let now = Instant::now();
        Self {
            start: now,
            last_log: now,
            interval: Duration::from_millis(interval_ms),
            from,
            target,
            done: 0,
        }
    }

    /// Counts a block; every interval logs progress and returns the rate.
    fn tick(&mut self, height: u64) -> Option<f64> {
        self.done += 1;
        if self.last_log.elapsed() < self.interval {
            return None;
        }
        self.last_log = Instant::now();
        let rate = self.done as f64 / self.start.elapsed().as_secs_f64().max(1e-3);
        let left = self.target.saturating_sub(height);
        let eta = Duration::from_secs((left as f64 / rate.max(1e-3)) as u64);
        info!(target: "lightcl::sync", height, target = self.target,
            blocks_per_sec = format!("{rate:.1}"), eta = ?eta, "catching up");
        Some(rate)
    }

    fn done(&self, heads: &Heads) {
        let secs = format!("{:.1}", self.start.elapsed().as_secs_f64());
        if self.done > 1 {
            info!(target: "lightcl::sync", head = %heads.head, safe = %heads.safe, finalized = %heads.finalized,
                blocks = self.done, from = self.from, seconds = secs, "inserted");
        } else {
            debug!(target: "lightcl::sync", head = %heads.head, safe = %heads.safe, finalized = %heads.finalized,
                blocks = self.done, from = self.from, seconds = secs, "inserted");
        }
    }
}
