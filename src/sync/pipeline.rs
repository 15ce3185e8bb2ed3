//! Fetching and feeding: a bounded prefetch of verified payloads from the sources, and the
//! in-order feed into the EL that checks continuity and every answer (I5, I6) and moves the
//! forkchoice as it goes.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::cache::{self, Claim};
use super::driver::{Follower, StepError};
use super::gate::{Lineage, Proven};
use super::plan::labels;
use crate::api::metrics as m;
use crate::chain::{BlockRef, Heads};
use crate::engine::{Verdict, classify};
use crate::payload::{FcuVersion, Payload};
use crate::source::{BlockId, SourceError};

/// A forkchoice update at least every this many fed blocks. geth and op-geth keep 128 state
/// layers above their head; payloads fed further ahead than that are ignored (SYNCING) until the
/// head moves (docs/engines.md).
pub const FCU_EVERY_BLOCKS: u64 = 64;
/// Blocks fed per catch-up round before the loop re-plans (keeps the target fresh). Memory is
/// bounded by the prefetch window, not by this.
pub const MAX_BATCH: u64 = 8_192;

/// What a run of fed payloads is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FeedKind {
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

/// A payload and the index of the source that served it.
pub type Fetched = (usize, Payload);

/// A stream of payloads in height order, ending early at the first error.
pub type PayloadRx = mpsc::Receiver<Result<Fetched, StepError>>;

/// What a feed achieved.
#[derive(Debug, Clone, Copy)]
pub struct Fed {
    /// The last block the EL accepted (the base head when none).
    pub last: BlockRef,
    /// Blocks fed.
    pub blocks: u64,
}

impl Follower {
    /// How the prefetch window is spent: blocks per batch request, batch requests in flight, and
    /// the capacity of the channel to the feed. Blocks held at once (in flight plus ready) never
    /// exceed `prefetch`: half of it may be in flight, the rest waits in the channel.
    pub(super) fn fetch_shape(&self) -> (u64, usize, usize) {
        let prefetch = self.config.prefetch.max(2);
        let batch = self.config.fetch_batch.clamp(1, prefetch / 2);
        let requests = (prefetch / 2 / batch).clamp(1, self.config.fetch_concurrency.max(1));
        (batch as u64, requests, (prefetch - batch * requests).max(1))
    }

    /// Fetches `from..=to` into `tx` in batches of `fetch_batch` blocks, several batch requests
    /// in flight ([`Self::fetch_shape`]), spread over the sources that hold the target. The feed
    /// checks every block against the agreed chain. Stops at the first error or when `tx`
    /// closes.
    pub(super) async fn fetch_range(
        &self,
        from: u64,
        to: u64,
        target: BlockRef,
        tx: mpsc::Sender<Result<Fetched, StepError>>,
    ) {
        let usable = self.sources.holders_of(target).await;
        if usable.is_empty() {
            let _ = tx.send(Err(StepError::NoSource)).await;
            return;
        }
        let usable = &usable;
        let (batch, requests, _) = self.fetch_shape();
        let chunks =
            (from..=to).step_by(batch as usize).map(|start| (start, batch.min(to - start + 1)));
        let mut stream = futures_util::stream::iter(chunks)
            .map(|(start, count)| {
                // Spread over the holders, across chunks and across rounds.
                let first = (from + (start - from) / batch) as usize % usable.len();
                self.fetch_chunk(start, count, usable, first)
            })
            .buffered(requests);
        while let Some(items) = stream.next().await {
            for item in items {
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    return;
                }
            }
        }
    }

    /// Blocks `start..start + count`, through the fleet's shared fetch when there is one: the
    /// heights another replica fetches or fetched recently are taken from it; the rest are
    /// claimed and fetched in a task of their own (one batch request), so a replica waiting on
    /// a claim never waits on another replica's feed. A height whose fetch failed is fetched
    /// here, block by block with hedging.
    async fn fetch_chunk(
        &self,
        start: u64,
        count: u64,
        usable: &[usize],
        first: usize,
    ) -> Vec<Result<Fetched, StepError>> {
        let Some(cache) = self.fleet.cache() else {
            return self.fetch_chunk_direct(start, count, usable, first).await;
        };
        let claims = cache.claim(start, count);
        let hits = claims.iter().filter(|c| matches!(c, Claim::Wait(_))).count();
        self.shared.metrics.add(m::BLOCK_CACHE, &[("result", "hit")], hits as f64);
        let mut waits = Vec::with_capacity(claims.len());
        let mut run: Vec<tokio::sync::watch::Sender<cache::Entry>> = Vec::new();
        let mut run_start = start;
        for (k, claim) in claims.into_iter().enumerate() {
            match claim {
                Claim::Wait(rx) => {
                    if !run.is_empty() {
                        self.spawn_shared_fetch(run_start, std::mem::take(&mut run), usable, first);
                    }
                    waits.push(rx);
                }
                Claim::Own(tx) => {
                    if run.is_empty() {
                        run_start = start + k as u64;
                    }
                    waits.push(tx.subscribe());
                    run.push(tx);
                }
            }
        }
        if !run.is_empty() {
            self.spawn_shared_fetch(run_start, run, usable, first);
        }
        let mut out = Vec::with_capacity(waits.len());
        for (k, rx) in waits.into_iter().enumerate() {
            let item = match cache::wait(rx).await {
                Some(fetched) => Ok(fetched),
                None => self.fetch_block(start + k as u64, usable, first).await,
            };
            let stop = item.is_err();
            out.push(item);
            if stop {
                break;
            }
        }
        out
    }

    /// Fetches the claimed heights from `run_start` (one per sender) in one batch request to
    /// `usable[first]`, in a task of its own, and publishes each block it got. A height it did
    /// not get is released (its sender dropped) for the waiters to fetch themselves.
    fn spawn_shared_fetch(
        &self,
        run_start: u64,
        senders: Vec<tokio::sync::watch::Sender<cache::Entry>>,
        usable: &[usize],
        first: usize,
    ) {
        let i = usable[first];
        let sources = self.sources.clone();
        let token = self.token.clone();
        let hedge = (usable.len() > 1).then(|| self.sources.hedge_after(i) * 2);
        let mx = self.shared.metrics.clone();
        mx.add(m::BLOCK_CACHE, &[("result", "miss")], senders.len() as f64);
        tokio::spawn(async move {
            let count = senders.len() as u64;
            let batch = sources.payloads(i, run_start, count);
            let answer = tokio::select! {
                _ = token.cancelled() => None,
                a = batch => Some(a),
                () = tokio::time::sleep(hedge.unwrap_or(Duration::MAX)), if hedge.is_some() => None,
            };
            if let Some(Ok(payloads)) = answer {
                for (tx, p) in senders.iter().zip(payloads) {
                    if let Some(p) = p {
                        tx.send_replace(Some((i, p)));
                    }
                }
            }
        });
    }

    /// Blocks `start..start + count`: one batch request to `usable[first]`; the blocks it did not
    /// serve (an error, a gap, or no answer within twice its hedge delay while other holders
    /// exist) are fetched one by one from the holders after it.
    async fn fetch_chunk_direct(
        &self,
        start: u64,
        count: u64,
        usable: &[usize],
        first: usize,
    ) -> Vec<Result<Fetched, StepError>> {
        let i = usable[first];
        let mut got: Vec<Option<Payload>> = Vec::new();
        if count > 1 {
            let batch = self.sources.payloads(i, start, count);
            let hedge = self.sources.hedge_after(i) * 2;
            let answer = if usable.len() > 1 {
                tokio::select! {
                    a = batch => Some(a),
                    () = tokio::time::sleep(hedge) => None,
                }
            } else {
                Some(batch.await)
            };
            if let Some(Ok(payloads)) = answer {
                got = payloads;
            }
        }
        let mut out = Vec::with_capacity(count as usize);
        for (k, n) in (start..start + count).enumerate() {
            match got.get_mut(k).and_then(Option::take) {
                Some(p) => out.push(Ok((i, p))),
                None => {
                    let next = if count > 1 { (first + 1) % usable.len() } else { first };
                    let item = self.fetch_block(n, usable, next).await;
                    let stop = item.is_err();
                    out.push(item);
                    if stop {
                        break;
                    }
                }
            }
        }
        out
    }

    /// Block `n` from the holders in `usable`, starting with `usable[first]`. A holder that
    /// fails or lacks the block is passed over at once; one that has not answered within its
    /// hedge delay gets company (the next holder is asked too) and the first verified answer
    /// wins, so a hanging source costs a hedge delay, not its timeout.
    async fn fetch_block(
        &self,
        n: u64,
        usable: &[usize],
        first: usize,
    ) -> Result<Fetched, StepError> {
        let order: Vec<usize> =
            (0..usable.len()).map(|k| usable[(first + k) % usable.len()]).collect();
        let ask = |i: usize| async move { (i, self.sources.payload(i, BlockId::Number(n)).await) };
        let mut in_flight = FuturesUnordered::new();
        let mut asked = 0;
        let mut failure = StepError::Missing { number: n };
        loop {
            if in_flight.is_empty() {
                let Some(&i) = order.get(asked) else { return Err(failure) };
                in_flight.push(ask(i));
                asked += 1;
            }
            let answer = match order.get(asked) {
                Some(&next) => {
                    let hedge = self.sources.hedge_after(order[asked - 1]);
                    tokio::select! {
                        a = in_flight.next() => a,
                        () = tokio::time::sleep(hedge) => {
                            in_flight.push(ask(next));
                            asked += 1;
                            continue;
                        }
                    }
                }
                None => in_flight.next().await,
            };
            match answer {
                Some((i, Ok(Some(p)))) => return Ok((i, p)),
                Some((_, Ok(None))) | None => {}
                Some((_, Err(e))) => failure = StepError::Source(e),
            }
        }
    }

    /// Drops the fleet's shared fetch from height `from` up, and the source reads the replicas
    /// share (a block there is not on the agreed chain, or not yet known to be: the sources may
    /// have reorganised, and what was shared may predate it).
    pub(super) fn forget_shared_from(&self, from: u64) {
        if let Some(cache) = self.fleet.cache() {
            cache.forget_from(from);
            self.sources.forget_reads();
        }
    }

    /// Blames `served_by` for `what` and returns the error for the step. The fleet's shared
    /// fetch forgets what it holds: a block there may be off the agreed chain.
    fn off_chain(&self, served_by: usize, what: String) -> StepError {
        self.forget_shared_from(0);
        let e = SourceError::inconsistent(self.sources.name(served_by), what);
        self.sources.blame(served_by, &e);
        StepError::Source(e)
    }

    /// `upper` (served by `upper_by`) does not name `lower` (served by `lower_by`) as its parent:
    /// the quorum decides which of the two is off the agreed chain, and its source is blamed.
    async fn broken_link(
        &self,
        lower: BlockRef,
        lower_by: Option<usize>,
        upper: &Payload,
        upper_by: usize,
    ) -> StepError {
        match (self.sources.agreed_at(lower.number).await.hash(), lower_by) {
            (Some(h), Some(before)) if h != lower.hash => {
                self.off_chain(before, format!("served {lower}, the agreed chain holds {h} there"))
            }
            (Some(_), _) => self.off_chain(
                upper_by,
                format!("block {} has parent {}, not {lower}", upper.block, upper.parent_hash),
            ),
            (None, _) => StepError::NoAgreement { number: lower.number },
        }
    }

    /// Whether `block` is on the agreed chain: the target itself, or the quorum holds it.
    /// `Ok(None)`: the quorum holds nothing there (not evidence either way).
    async fn is_agreed(&self, block: BlockRef, target: BlockRef) -> Option<bool> {
        if block.number == target.number {
            return Some(block.hash == target.hash);
        }
        self.sources.agreed_at(block.number).await.hash().map(|h| h == block.hash)
    }

    /// Feeds payloads in order on top of `base.head`. Every block must link to the one before
    /// it, and a block at the height of an agreed label, the target or the floor must be that
    /// block. Unless a replay (recovery: the whole range was checked to link to the pinned
    /// target before), a head is sent only once the quorum holds it, so every head sent is the
    /// agreed block or an agreed ancestor of it. Returns what was fed and the first error.
    pub(super) async fn feed(
        &self,
        rx: &mut PayloadRx,
        base: &Heads,
        agreed: &Heads,
        version: FcuVersion,
        kind: FeedKind,
        total: u64,
    ) -> (Fed, Result<(), StepError>) {
        let target = self.config.follow.target(agreed);
        let pinned = matches!(kind, FeedKind::Replay { .. });
        let hold_through = match kind {
            FeedKind::Replay { hold_through } => hold_through,
            FeedKind::CatchUp => 0,
        };
        let floor = self.gate.floor();
        let mut prev = base.head;
        let mut prev_served_by = None;
        let mut fcu = version;
        let mut progress = Progress::new(
            base.head.number + 1,
            base.head.number + total,
            self.config.progress_interval_ms,
        );
        let mut since_fcu = 0u64;
        // The highest fed block known to be on the agreed chain, and its forkchoice version.
        // The base head is the EL's own: a forkchoice to it is always allowed (the repair below
        // uses it when the very first block answers SYNCING, as geth does after a restart).
        let mut sendable: Option<(BlockRef, FcuVersion)> = Some((base.head, version));
        // Set while the EL answers SYNCING/ACCEPTED (state it lacks): keep feeding in order (reth
        // buffers them); the head moves only to blocks it executed (I6).
        let mut pending = false;
        let mut fed = 0u64;
        let mut executed = 0u64;
        // The fed branch, proven from the EL's head up by parent hash.
        let mut known = Proven::at(base.head);
        // Checks of fixed heights: agreed labels, the target, the floor.
        let mut fixed: Vec<BlockRef> = vec![agreed.safe, agreed.finalized, target];
        fixed.extend(floor);
        let mut result = Ok(());
        // The next block, received early to check that it names the current one as its parent.
        let mut ahead: Option<Result<Fetched, StepError>> = None;
        loop {
            let item = match ahead.take() {
                Some(item) => item,
                None => match rx.recv().await {
                    Some(item) => item,
                    None => break,
                },
            };
            if self.token.is_cancelled() {
                break;
            }
            let (served_by, p) = match item {
                Ok(x) => x,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            if let Some(want) =
                fixed.iter().find(|b| b.number == p.block.number && b.hash != p.block.hash)
            {
                result = Err(self.off_chain(
                    served_by,
                    format!("served {} where the agreed chain holds {want}", p.block),
                ));
                break;
            }
            if let Some(h) = self.gate.floor_lineage_at(p.block.number)
                && h != p.block.hash
            {
                result = Err(self.off_chain(
                    served_by,
                    format!(
                        "served {} where the chain through the finality floor holds {h}",
                        p.block
                    ),
                ));
                break;
            }
            if p.parent_hash != prev.hash {
                result = Err(if fed > 0 {
                    self.broken_link(prev, prev_served_by, &p, served_by).await
                } else {
                    StepError::Discontinuity {
                        block: p.block,
                        parent: p.parent_hash,
                        local: prev,
                        served_by,
                    }
                });
                break;
            }
            // I5 for a raw block asked for by number: it claims no hash, so only its place in the
            // chain vouches for it. It goes to the EL once the block above it names it as
            // parent, or it is the target (whose hash the quorum agreed), or, with no block
            // above it this round, the quorum holds it; otherwise it waits. A replay's range was
            // linked to its pinned target before.
            if !pinned && !p.claimed && p.block.number != target.number {
                let next = rx.recv().await;
                let vouched = match &next {
                    Some(Ok((by, child))) if child.parent_hash != p.block.hash => {
                        result = Err(self.broken_link(p.block, Some(served_by), child, *by).await);
                        break;
                    }
                    Some(Ok(_)) => true,
                    // No block above it this round: the quorum vouches for it, or it waits.
                    _ => self.sources.agreed_at(p.block.number).await.hash() == Some(p.block.hash),
                };
                match next {
                    Some(Err(e)) if !vouched => {
                        result = Err(e);
                        break;
                    }
                    _ if !vouched => {
                        // Not (yet) on the agreed chain: the shared fetch may hold it from
                        // before a reorg; the next round fetches it afresh.
                        self.forget_shared_from(p.block.number);
                        break;
                    }
                    next => ahead = next,
                }
            }
            let mut verdict = match self.engine.new_payload(&p).await {
                Ok(s) => classify(&s),
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            };
            // The repair goes to the last block the EL executed (geth recovers the state of a
            // block it holds when the forkchoice names it), if the quorum holds it.
            let repair_to = if verdict != Verdict::Pending || pending {
                None
            } else if prev != base.head
                && self.agreed_head(prev, target, pinned).await == Some(true)
            {
                Some((prev, fcu))
            } else {
                sendable
            };
            if let Some((head, v)) = repair_to {
                // The EL may have flattened away the state below a head that fell too far
                // behind: move the head to the last agreed VALID block and resend once.
                debug!(target: "lightcl::engine", block = %p.block, "SYNCING; moving the head to the last agreed block and resending");
                let heads = self.heads_for(head, base, agreed, &known).await;
                let lineage = Lineage { chain: &known };
                let again = match self.forkchoice(v, &heads, &lineage).await {
                    Ok(()) => self
                        .engine
                        .new_payload(&p)
                        .await
                        .map(|s| classify(&s))
                        .map_err(StepError::from),
                    Err(e) => Err(e),
                };
                match again {
                    Ok(Verdict::Pending) if head == base.head && !pinned => {
                        // The block right on top of the EL's own head, after a forkchoice to
                        // it: the EL lacks its head's state; nothing later can execute either.
                        result = Err(StepError::CannotExtendHead { head });
                        break;
                    }
                    Ok(v) => {
                        verdict = v;
                        since_fcu = 0;
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            match verdict {
                Verdict::Advance => {
                    executed += 1;
                    self.shared.metrics.add(m::PAYLOADS, &[], 1.0)
                }
                Verdict::Pending => {
                    if !pending {
                        debug!(target: "lightcl::engine", block = %p.block, "EL cannot execute yet; feeding on in order");
                    }
                    pending = true;
                }
                Verdict::Reject(reason) => {
                    self.shared.metrics.add(m::INVALID, &[], 1.0);
                    let e = SourceError::InvalidBlock {
                        source_name: self.sources.name(served_by).to_string(),
                        block: p.block,
                        reason: reason.clone(),
                    };
                    self.sources.blame(served_by, &e);
                    result = Err(StepError::Invalid { block: p.block, reason });
                    break;
                }
            }
            prev = p.block;
            prev_served_by = Some(served_by);
            fcu = p.fcu;
            let linked = known.push(&p);
            debug_assert!(linked, "a fed block links to the one before (checked above)");
            self.fleet.touch(self.index);
            since_fcu += 1;
            fed += 1;
            if let Some(rate) = progress.tick(p.block.number) {
                self.shared.metrics.set(m::CATCHUP_RATE, &[], rate);
                self.shared.tick();
            }
            if since_fcu >= FCU_EVERY_BLOCKS && !pending && prev.number > hold_through {
                match self.agreed_head(prev, target, pinned).await {
                    Some(true) => sendable = Some((prev, fcu)),
                    Some(false) => {
                        result = Err(self.off_chain(
                            served_by,
                            format!("served {prev}, which the quorum does not hold"),
                        ));
                        break;
                    }
                    None => continue,
                }
                let heads = self.heads_for(prev, base, agreed, &known).await;
                let lineage = Lineage { chain: &known };
                if let Err(e) = self.forkchoice(fcu, &heads, &lineage).await {
                    result = Err(e);
                    break;
                }
                self.publish_progress(&heads, agreed);
                since_fcu = 0;
            }
        }
        if since_fcu > 0 {
            // Never a head the EL could not execute: a forkchoice to a block above ones it
            // answered SYNCING for sends geth into beacon sync towards it, which without peers
            // never ends. The next round feeds again from the last block it executed.
            if fed > 0 && !pending {
                match self.agreed_head(prev, target, pinned).await {
                    Some(true) => sendable = Some((prev, fcu)),
                    Some(false) => {
                        if result.is_ok()
                            && let Some(by) = prev_served_by
                        {
                            result = Err(self.off_chain(
                                by,
                                format!("served {prev}, which the quorum does not hold"),
                            ));
                        }
                    }
                    None => {}
                }
            }
            let last = sendable.filter(|(b, _)| b.number > base.head.number);
            let (head, v) = last.unwrap_or((base.head, version));
            let heads = self.heads_for(head, base, agreed, &known).await;
            let lineage = Lineage { chain: &known };
            let fcu_res = self.forkchoice(v, &heads, &lineage).await;
            let moved = fcu_res.is_ok() && head != base.head;
            if fcu_res.is_ok() {
                self.publish_progress(&heads, agreed);
            }
            if result.is_ok() {
                result = fcu_res;
            }
            if fed > 0 && moved {
                progress.done(&heads);
            }
            prev = head;
        }
        if fed > 0 && executed == 0 && pending && result.is_ok() && !pinned {
            // Not one block executed on top of the EL's own head, even after a forkchoice to
            // it: the EL lacks the state of its head (geth after a crash). Feeding again would
            // change nothing.
            result = Err(StepError::CannotExtendHead { head: base.head });
        }
        (Fed { last: prev, blocks: fed }, result)
    }

    /// Whether a fed head may be sent: pinned ranges always, otherwise only a head the quorum
    /// holds (`None`: it holds nothing there yet).
    async fn agreed_head(&self, head: BlockRef, target: BlockRef, pinned: bool) -> Option<bool> {
        if pinned { Some(true) } else { self.is_agreed(head, target).await }
    }

    /// The forkchoice for `head` on the fed branch: safe and finalized move to the agreed ones
    /// where the branch holds them by hash, and to the floor where the branch reaches it (an EL
    /// refilled after losing blocks).
    async fn heads_for(
        &self,
        head: BlockRef,
        base: &Heads,
        agreed: &Heads,
        known: &Proven,
    ) -> Heads {
        let mut below = *base;
        if let Some(f) = self.gate.floor()
            && f.number > below.finalized.number
            && head.number >= f.number
            && (known.get(f.number) == Some(f.hash) || f.number <= base.head.number)
        {
            below.finalized = f;
            if below.safe.number < f.number {
                below.safe = f;
            }
        }
        let cap = self.label_cap().await;
        let on_branch = |b: &BlockRef| {
            (known.get(b.number) == Some(b.hash)
                || (b.number <= base.head.number && base_labels_hold(base, b)))
                && cap.is_none_or(|c| b.number <= c)
        };
        labels(head, &below, agreed, on_branch)
    }
}

/// Whether `b` is one of the base's own labels (known to be on its chain).
fn base_labels_hold(base: &Heads, b: &BlockRef) -> bool {
    *b == base.head || *b == base.safe || *b == base.finalized
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
