//! Fetching and feeding: a bounded prefetch of verified payloads from the sources, and the
//! in-order feed into the EL that checks continuity and every answer (I5, I6) and moves the
//! forkchoice as it goes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::driver::{Follower, StepError};
use super::plan::labels;
use crate::api::metrics as m;
use crate::chain::{BlockRef, Heads};
use crate::engine::{Verdict, classify};
use crate::payload::{FcuVersion, Payload};

/// A forkchoice update at least every this many fed blocks. geth and op-geth keep 128 state
/// layers above their head; payloads fed further ahead than that are ignored (SYNCING) until the
/// head moves (docs/engines.md).
pub const FCU_EVERY_BLOCKS: u64 = 64;

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
    /// A source served a block of another branch than its neighbours: it backs off, unless it
    /// is the only source (then there is nothing better to ask, and the budgeted search and
    /// pinning deal with it).
    pub(super) fn penalise_inconsistent(&self, served_by: usize) {
        if self.sources.len() > 1
            && let Some(s) = self.sources.get(served_by)
        {
            s.penalise("inconsistent_chain");
        }
    }

    /// The available sources whose chain holds `target` (so every block below it is theirs too):
    /// the only ones payloads are fetched from.
    pub(super) async fn holders_of(&self, target: BlockRef) -> Vec<usize> {
        let checks = futures_util::future::join_all(self.sources.iter().enumerate().map(
            |(i, s)| async move {
                (s.available()
                    && s.hash_at(target.number).await.ok().flatten() == Some(target.hash))
                .then_some(i)
            },
        ))
        .await;
        checks.into_iter().flatten().collect()
    }

    /// Fetches `from..=to` with `fetch_concurrency` requests in flight, spread over the sources
    /// that hold the target (see [`Self::holders_of`]), into `tx` (capacity: the prefetch
    /// window). The feed checks every block against the agreed chain. Stops at the first error
    /// or when `tx` closes.
    pub(super) async fn fetch_range(
        &self,
        from: u64,
        to: u64,
        target: BlockRef,
        tx: mpsc::Sender<Result<Fetched, StepError>>,
    ) {
        let usable = self.holders_of(target).await;
        if usable.is_empty() {
            let _ = tx.send(Err(StepError::NoSource)).await;
            return;
        }
        let sources = &self.sources;
        let usable = &usable;
        let mut stream = futures_util::stream::iter(from..=to)
            .map(|n| {
                let i = usable[(n as usize) % usable.len()];
                async move {
                    match sources[i].payload(n).await {
                        Ok(Some(p)) => Ok((i, p)),
                        Ok(None) => Err(StepError::Missing { number: n }),
                        Err(e) => Err(StepError::Source(e)),
                    }
                }
            })
            .buffered(self.config.fetch_concurrency);
        while let Some(item) = stream.next().await {
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    }

    /// Feeds payloads in order on top of `base.head`. `known` holds (height -> hash) of blocks
    /// known to be on the chain being built below the base, so agreed labels there may be used.
    /// Returns what was fed and the first error.
    pub(super) async fn feed(
        &self,
        rx: &mut PayloadRx,
        base: &Heads,
        agreed: &Heads,
        version: FcuVersion,
        mut known: HashMap<u64, B256>,
        total: u64,
    ) -> (Fed, Result<(), StepError>) {
        let mut prev = base.head;
        let mut fcu = version;
        let mut progress = Progress::new(
            base.head.number + 1,
            base.head.number + total,
            self.config.progress_interval_ms,
        );
        let mut since_fcu = 0u64;
        // Set while the EL answers SYNCING/ACCEPTED (state it lacks): keep feeding in order and
        // let the final forkchoice make it execute them (I6).
        let mut pending = false;
        let mut fed = 0u64;
        let heads_for = |prev: BlockRef, known: &HashMap<u64, B256>| {
            labels(prev, base, agreed, |b| known.get(&b.number) == Some(&b.hash))
        };
        let mut result = Ok(());
        while let Some(item) = rx.recv().await {
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
            let off_label = (p.block.number == agreed.safe.number
                && p.block.hash != agreed.safe.hash)
                || (p.block.number == agreed.finalized.number
                    && p.block.hash != agreed.finalized.hash);
            if p.parent_hash != prev.hash || off_label {
                if fed > 0 || off_label {
                    // Mid-chain: this source served a block of another branch than the blocks
                    // before it (or than the agreed labels).
                    self.penalise_inconsistent(served_by);
                }
                result = Err(StepError::Discontinuity {
                    block: p.block,
                    parent: p.parent_hash,
                    local: prev,
                });
                break;
            }
            let mut verdict = match self.engine.new_payload(&p).await {
                Ok(s) => classify(&s),
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            };
            if verdict == Verdict::Pending && !pending && prev != base.head {
                // The EL may have flattened away the state below a head that fell too far
                // behind: move the head to the last VALID block and resend once.
                debug!(target: "lightcl::engine", block = %p.block, "SYNCING; moving the head to the last VALID block and resending");
                let again = match self.forkchoice(fcu, &heads_for(prev, &known)).await {
                    Ok(()) => self
                        .engine
                        .new_payload(&p)
                        .await
                        .map(|s| classify(&s))
                        .map_err(StepError::from),
                    Err(e) => Err(e),
                };
                match again {
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
                Verdict::Advance => self.shared.metrics.add(m::PAYLOADS, "", 1.0),
                Verdict::Pending => {
                    if !pending {
                        debug!(target: "lightcl::engine", block = %p.block, "EL cannot execute yet; feeding on in order");
                    }
                    pending = true;
                }
                Verdict::Reject(reason) => {
                    self.shared.metrics.add(m::INVALID, "", 1.0);
                    result = Err(StepError::Invalid { block: p.block, reason });
                    break;
                }
            }
            prev = p.block;
            fcu = p.fcu;
            known.insert(p.block.number, p.block.hash);
            since_fcu += 1;
            fed += 1;
            if let Some(rate) = progress.tick(p.block.number) {
                self.shared.metrics.set(m::CATCHUP_RATE, "", rate);
                self.shared.tick();
            }
            if since_fcu >= FCU_EVERY_BLOCKS && !pending {
                let heads = heads_for(prev, &known);
                if let Err(e) = self.forkchoice(fcu, &heads).await {
                    result = Err(e);
                    break;
                }
                self.publish_progress(&heads, agreed);
                since_fcu = 0;
            }
        }
        if since_fcu > 0 {
            let heads = heads_for(prev, &known);
            let fcu_res = self.forkchoice(fcu, &heads).await;
            if fcu_res.is_ok() {
                self.publish_progress(&heads, agreed);
            }
            if result.is_ok() {
                result = fcu_res;
            }
            if fed > 0 {
                progress.done(&heads);
            }
        }
        (Fed { last: prev, blocks: fed }, result)
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
