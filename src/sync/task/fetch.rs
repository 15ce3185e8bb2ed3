//! Fetching: a bounded prefetch of verified payloads from the sources into the feed's channel,
//! in batches, several requests in flight, spread over the sources that hold the target,
//! through the fleet's shared fetch when there is one, with hedged single-block fallbacks.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

use super::super::cache::{self, Claim};
use super::super::ctx::Ctx;
use super::super::error::{Fault, Severity};
use crate::chain::BlockRef;
use crate::config::Config;
use crate::metrics as m;
use crate::payload::Payload;
use crate::source::BlockId;
use crate::util::sleep_or_cancel;

/// A payload and the index of the source that served it.
pub type Fetched = (usize, Payload);

/// A stream of payloads in height order, ending early at the first error.
pub(crate) type PayloadRx = mpsc::Receiver<Result<Fetched, Fault>>;

/// How the prefetch window is spent. Blocks held at once (in flight plus ready) never exceed
/// `prefetch`: half of it may be in flight, the rest waits in the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FetchShape {
    /// Blocks per batch request.
    pub batch: u64,
    /// Batch requests in flight.
    pub requests: usize,
    /// Capacity of the channel to the feed.
    pub channel: usize,
}

impl FetchShape {
    /// The shape for `config`.
    pub fn of(config: &Config) -> Self {
        let prefetch = config.prefetch.max(2);
        let batch = config.fetch_batch.clamp(1, prefetch / 2);
        let requests = (prefetch / 2 / batch).clamp(1, config.fetch_concurrency.max(1));
        Self { batch: batch as u64, requests, channel: (prefetch - batch * requests).max(1) }
    }
}

/// Fetches `from..=to` into `tx` in batches of `fetch_batch` blocks, several batch requests
/// in flight ([`FetchShape`]), spread over the sources that hold the target. The feed
/// checks every block against the agreed chain. Stops at the first error or when `tx`
/// closes.
pub(crate) async fn range(
    ctx: &Ctx,
    from: u64,
    to: u64,
    target: BlockRef,
    by_quorum: bool,
    tx: mpsc::Sender<Result<Fetched, Fault>>,
) {
    // Blocks held from an earlier fetch are not paid for again.
    let held = held_run(ctx, from, to, target, by_quorum).await;
    let (held_from, held_to) = match (held.first(), held.last()) {
        (Some(lo), Some(hi)) => (lo.1.block.number, hi.1.block.number),
        _ => (to + 1, to),
    };
    ctx.sources.count_reused(held.len() as u64);
    let usable = if held_from == from && held_to == to {
        Vec::new()
    } else {
        let usable = ctx.sources.holders_of(target).await;
        if usable.is_empty() {
            // Every source waiting out a rate limit is a wait for the quota, not a failure.
            let fault = if ctx.sources.rate_limit_wait().is_some() {
                Fault::Throttled { number: from }
            } else {
                Fault::NoSource
            };
            let _ = tx.send(Err(fault)).await;
            return;
        }
        usable
    };
    let usable = &usable;
    let FetchShape { batch, requests, .. } = FetchShape::of(&ctx.config);
    // Heights `lo..hi` in batches.
    let fetched = |lo: u64, hi: u64| {
        (lo..hi)
            .step_by(batch as usize)
            .map(move |start| Piece::Fetch(start, batch.min(hi - start)))
    };
    let pieces = fetched(from, held_from)
        .chain((!held.is_empty()).then_some(Piece::Held(held)))
        .chain(fetched(held_to + 1, to + 1));
    // Once the feed stops (or a fetch failed), no new request goes out, but the ones in flight
    // are let finish for a moment: what they bring is verified and held, not paid for again.
    let stopped = std::sync::atomic::AtomicBool::new(false);
    let stopped = &stopped;
    let mut stream = futures_util::stream::iter(pieces)
        .map(|piece| async move {
            if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                return Vec::new();
            }
            match piece {
                Piece::Held(blocks) => blocks.into_iter().map(Ok).collect(),
                Piece::Fetch(start, count) => {
                    // Spread over the holders, across chunks and across rounds.
                    let first = (from + (start - from) / batch) as usize % usable.len();
                    patient(ctx, start, count, usable, first).await
                }
            }
        })
        .buffered(requests);
    'feed: while let Some(items) = stream.next().await {
        for item in items {
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break 'feed;
            }
        }
    }
    stopped.store(true, std::sync::atomic::Ordering::Relaxed);
    let drain = async { while stream.next().await.is_some() {} };
    let _ = tokio::time::timeout(IN_FLIGHT_GRACE, drain).await;
}

/// How long requests in flight may still finish after the feed stopped.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(2);

/// A part of a range: fetched from the sources, or held already.
enum Piece {
    Fetch(u64, u64),
    Held(Vec<Fetched>),
}

/// The held blocks of `from..=to` on the chain of `target`, lowest first, proven by hash: linked
/// down from the target itself where it is held, or else (`by_quorum`: the target is the agreed
/// one, not a hash pinned on another branch) from the block the quorum holds at the highest
/// held height below the target. Empty when nothing fits.
async fn held_run(
    ctx: &Ctx,
    from: u64,
    to: u64,
    target: BlockRef,
    by_quorum: bool,
) -> Vec<Fetched> {
    let held = ctx.sources.held();
    let Some(high) = held.highest_in(from, to) else { return Vec::new() };
    let top = if held.get(target.hash).is_some() {
        Some(target.hash)
    } else if by_quorum && high < target.number {
        // One hash read of the quorum (a header's worth) in place of a block fetch or more.
        ctx.sources.agreed_at(high).await.hash()
    } else {
        None
    };
    top.map(|top| held.chain_down(top, from, to)).unwrap_or_default()
}

/// [`chunk`], waiting out rate limits: what came before a rate limit is kept, and the rest is
/// asked for again once the quota allows, so a catch-up through a rate-limited source goes at
/// the quota's pace instead of failing and fetching its prefetched blocks again. Gives up (the
/// rate limit is the chunk's last item) after [`THROTTLED_TRIES`] waits in a row that brought
/// nothing, or when lightcl stops.
async fn patient(
    ctx: &Ctx,
    start: u64,
    count: u64,
    usable: &[usize],
    first: usize,
) -> Vec<Result<Fetched, Fault>> {
    let end = start + count;
    let mut out = Vec::with_capacity(count as usize);
    let mut from = start;
    let mut barren = 0;
    loop {
        let mut items = chunk(ctx, from, end - from, usable, first).await;
        let throttled =
            matches!(items.last(), Some(Err(f)) if matches!(f.severity(), Severity::Throttled));
        if !throttled {
            out.extend(items);
            return out;
        }
        let Some(fault) = items.pop() else { return out };
        from += items.len() as u64;
        barren = if items.is_empty() { barren + 1 } else { 0 };
        out.extend(items);
        if barren >= THROTTLED_TRIES
            || from >= end
            || !sleep_or_cancel(&ctx.token, ctx.quota_wait()).await
        {
            out.push(fault);
            return out;
        }
    }
}

/// Waits in a row, each bringing no block, before a rate-limited chunk gives up.
const THROTTLED_TRIES: u32 = 20;

/// Blocks `start..start + count`, through the fleet's shared fetch when there is one: the
/// heights another replica fetches or fetched recently are taken from it; the rest are
/// claimed and fetched in a task of their own (one batch request), so a replica waiting on
/// a claim never waits on another replica's feed. A height whose fetch failed is fetched
/// here, block by block with hedging.
async fn chunk(
    ctx: &Ctx,
    start: u64,
    count: u64,
    usable: &[usize],
    first: usize,
) -> Vec<Result<Fetched, Fault>> {
    let Some(cache) = ctx.fleet.cache() else {
        return chunk_direct(ctx, start, count, usable, first).await;
    };
    let claims = cache.claim(start, count);
    let hits = claims.iter().filter(|c| matches!(c, Claim::Wait(_))).count();
    ctx.report.count(m::BLOCK_CACHE, &[("result", "hit")], hits as f64);
    let mut waits = Vec::with_capacity(claims.len());
    let mut run: Vec<tokio::sync::watch::Sender<cache::Entry>> = Vec::new();
    let mut run_start = start;
    for (k, claim) in claims.into_iter().enumerate() {
        match claim {
            Claim::Wait(rx) => {
                if !run.is_empty() {
                    spawn_shared(ctx, run_start, std::mem::take(&mut run), usable, first);
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
        spawn_shared(ctx, run_start, run, usable, first);
    }
    let mut out = Vec::with_capacity(waits.len());
    for (k, rx) in waits.into_iter().enumerate() {
        let item = match cache::wait(rx).await {
            Some(fetched) => Ok(fetched),
            None => block(ctx, start + k as u64, usable, first).await,
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
fn spawn_shared(
    ctx: &Ctx,
    run_start: u64,
    senders: Vec<tokio::sync::watch::Sender<cache::Entry>>,
    usable: &[usize],
    first: usize,
) {
    let i = usable[first];
    let sources = ctx.sources.clone();
    let token = ctx.token.clone();
    let hedge = (usable.len() > 1).then(|| ctx.sources.hedge_after(i) * 2);
    ctx.report.count(m::BLOCK_CACHE, &[("result", "miss")], senders.len() as f64);
    ctx.tasks.spawn(async move {
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
async fn chunk_direct(
    ctx: &Ctx,
    start: u64,
    count: u64,
    usable: &[usize],
    first: usize,
) -> Vec<Result<Fetched, Fault>> {
    // A holder waiting out a rate limit is passed over for the batch when another can take it.
    let first = (0..usable.len())
        .map(|k| (first + k) % usable.len())
        .find(|&k| !ctx.sources.rate_limited(usable[k]))
        .unwrap_or(first);
    let i = usable[first];
    let mut got: Vec<Option<Payload>> = Vec::new();
    if count > 1 {
        let batch = ctx.sources.payloads(i, start, count);
        let hedge = ctx.sources.hedge_after(i) * 2;
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
                let item = block(ctx, n, usable, next).await;
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
async fn block(ctx: &Ctx, n: u64, usable: &[usize], first: usize) -> Result<Fetched, Fault> {
    // A holder that is rate limiting lightcl (it may have just refused this block's batch) is
    // not asked again until its wait is over.
    let order: Vec<usize> = (0..usable.len())
        .map(|k| usable[(first + k) % usable.len()])
        .filter(|&i| !ctx.sources.rate_limited(i))
        .collect();
    let ask = |i: usize| async move { (i, ctx.sources.payload(i, BlockId::Number(n)).await) };
    let mut in_flight = FuturesUnordered::new();
    let mut asked = 0;
    // Every holder passed over for its rate limit: the quota, not the block, is missing.
    let mut failure = if order.is_empty() && !usable.is_empty() {
        Fault::Throttled { number: n }
    } else {
        Fault::Missing { number: n }
    };
    loop {
        if in_flight.is_empty() {
            let Some(&i) = order.get(asked) else { return Err(failure) };
            in_flight.push(ask(i));
            asked += 1;
        }
        let answer = match order.get(asked) {
            Some(&next) => {
                let hedge = ctx.sources.hedge_after(order[asked - 1]);
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
            Some((_, Err(e))) => failure = Fault::Source(e),
        }
    }
}
