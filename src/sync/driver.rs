//! The follower loop: read the local heads back from the EL, read the agreed source heads,
//! plan, execute. Catch-up runs as a bounded prefetch pipeline so the EL never waits on the
//! network.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::plan::{Step, View, labels, plan};
use crate::chain::{BlockRef, Heads, Label};
use crate::config::{ChainKind, Config};
use crate::engine::client::BlockAt;
use crate::engine::{EngineClient, EngineError, Verdict, classify};
use crate::payload::{FcuVersion, Payload};
use crate::source::{RpcSource, SourceError};

/// Blocks fed per pipeline run before the loop re-plans (keeps the target fresh).
const MAX_BATCH: u64 = 8_192;
/// A forkchoice update at least every this many inserted blocks during catch-up. geth and
/// op-geth keep 128 state layers above their head; payloads fed further ahead than that are
/// ignored (SYNCING) until the head moves (docs/engines.md).
const FCU_EVERY_BLOCKS: u64 = 64;
/// First retry delay after an error; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Why the follower stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A source or the EL serves another chain.
    #[error(
        "chain id mismatch: {who} reports chain id {got}, the configuration says {expected}; \
         point lightcl at endpoints of the same chain or fix chain_id"
    )]
    ChainIdMismatch {
        /// Which endpoint.
        who: String,
        /// Configured.
        expected: u64,
        /// Reported.
        got: u64,
    },
    /// The EL refused our JWT.
    #[error("{0}")]
    Unauthorized(EngineError),
    /// The EL cannot be used (setup).
    #[error("engine setup: {0}")]
    Engine(EngineError),
    /// The sources disagree with the local finalized block; nothing more was sent to the EL.
    #[error(
        "finalized divergence at height {number}: the EL's finalized block is {local}, the sources \
         say {sources_hash}. lightcl halted and sent nothing more to the EL. Check the sources first; if \
         they are right, the EL must be rebuilt or rolled back below {number} by hand (see the \
         runbook)"
    )]
    FinalizedDivergence {
        /// Height.
        number: u64,
        /// Local hash.
        local: B256,
        /// Sources' hash.
        sources_hash: B256,
    },
}

/// Doubling backoff between [`MIN_BACKOFF`] and [`MAX_BACKOFF`].
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: MIN_BACKOFF }
    }
}

impl Backoff {
    /// The delay to wait now; the next one doubles (bounded).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        d
    }

    /// Back to the shortest delay after a success.
    pub fn reset(&mut self) {
        self.next = MIN_BACKOFF;
    }
}

/// Sleeps `d` unless cancelled first; false when cancelled.
async fn sleep_or_cancel(token: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = token.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Runs the follower until `shutdown` resolves or a fatal error.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let token = CancellationToken::new();
    let follower = async {
        let res = Follower::start(config, token.clone()).await;
        match res {
            Ok(Some(mut f)) => f.follow().await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        }
    };
    tokio::pin!(follower);
    tokio::pin!(shutdown);
    tokio::select! {
        res = &mut follower => res,
        _ = &mut shutdown => {
            info!(target: "lightcl", "shutdown requested; finishing the current engine call");
            token.cancel();
            follower.await
        }
    }
}

/// The follower's state: clients and what it last sent.
struct Follower {
    config: Config,
    engine: EngineClient,
    sources: Vec<RpcSource>,
    token: CancellationToken,
    wake: Arc<Notify>,
    tasks: tokio::task::JoinSet<()>,
}

impl Follower {
    /// Connects and checks everything before the first engine write. `Ok(None)`: cancelled.
    async fn start(config: Config, token: CancellationToken) -> Result<Option<Self>, RunError> {
        info!(target: "lightcl", config = %config.summary(), version = crate::VERSION, "starting");
        let engine = EngineClient::new(&config.engine).map_err(RunError::Engine)?;
        let timeout = Duration::from_millis(config.source_timeout_ms);
        let mut sources = Vec::new();
        for entry in &config.sources {
            let mut backoff = Backoff::default();
            let source = loop {
                let attempt = async {
                    let s = RpcSource::connect(entry, config.chain, timeout).await?;
                    let id = s.chain_id().await?;
                    Ok::<_, SourceError>((s, id))
                };
                match attempt.await {
                    Ok((s, id)) if id == config.chain_id => break s,
                    Ok((s, id)) => {
                        return Err(RunError::ChainIdMismatch {
                            who: format!("source {}", s.name()),
                            expected: config.chain_id,
                            got: id,
                        });
                    }
                    Err(e) => {
                        let d = backoff.next_delay();
                        warn!(target: "lightcl::source", error = %e, retry_in = ?d,
                            "source not usable at start; retrying");
                        if !sleep_or_cancel(&token, d).await {
                            return Ok(None);
                        }
                    }
                }
            };
            info!(target: "lightcl::source", source = source.name(), chain_id = config.chain_id,
                websocket = source.is_websocket(), "source connected");
            sources.push(source);
        }
        let mut backoff = Backoff::default();
        loop {
            let check = async {
                let id = engine.chain_id().await?;
                let caps = engine.exchange_capabilities().await?;
                Ok::<_, EngineError>((id, caps))
            };
            match check.await {
                Ok((id, _)) if id != config.chain_id => {
                    return Err(RunError::ChainIdMismatch {
                        who: "the local EL".into(),
                        expected: config.chain_id,
                        got: id,
                    });
                }
                Ok((_, caps)) => {
                    info!(target: "lightcl::engine", capabilities = caps.len(), "EL connected, JWT accepted");
                    break;
                }
                Err(e @ EngineError::Unauthorized { .. }) => return Err(RunError::Unauthorized(e)),
                Err(e) if e.is_retryable() => {
                    let d = backoff.next_delay();
                    warn!(target: "lightcl::engine", error = %e, retry_in = ?d, "EL not reachable at start; retrying");
                    if !sleep_or_cancel(&token, d).await {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(RunError::Engine(e)),
            }
        }
        let mut f = Self {
            config,
            engine,
            sources,
            token,
            wake: Arc::new(Notify::new()),
            tasks: tokio::task::JoinSet::new(),
        };
        f.spawn_subscriptions();
        Ok(Some(f))
    }

    /// One task per WebSocket source turning new-head notifications into wake-ups.
    fn spawn_subscriptions(&mut self) {
        let websockets: Vec<RpcSource> =
            self.sources.iter().filter(|s| s.is_websocket()).cloned().collect();
        for s in websockets {
            let (wake, token) = (self.wake.clone(), self.token.clone());
            self.tasks.spawn(async move {
                let mut backoff = Backoff::default();
                while !token.is_cancelled() {
                    match s.subscribe_heads().await {
                        Ok(Some(mut stream)) => {
                            backoff.reset();
                            loop {
                                tokio::select! {
                                    _ = token.cancelled() => return,
                                    item = stream.next() => match item {
                                        Some(_) => wake.notify_one(),
                                        None => break,
                                    },
                                }
                            }
                            warn!(target: "lightcl::source", source = s.name(), "newHeads subscription ended; resubscribing");
                        }
                        Ok(None) => return,
                        Err(e) => warn!(target: "lightcl::source", source = s.name(), error = %e, "cannot subscribe to newHeads; polling only"),
                    }
                    if !sleep_or_cancel(&token, backoff.next_delay()).await {
                        return;
                    }
                }
            });
        }
    }

    /// The main loop.
    async fn follow(&mut self) -> Result<(), RunError> {
        let mut backoff = Backoff::default();
        // geth treats itself as not synced after a restart until a forkchoice succeeds.
        let mut reassert = true;
        while !self.token.is_cancelled() {
            match self.step(&mut reassert).await {
                Ok(StepOutcome::Progress) => {
                    backoff.reset();
                    continue;
                }
                Ok(StepOutcome::Idle) => {
                    backoff.reset();
                    let wait = self.config.poll_interval();
                    tokio::select! {
                        _ = self.token.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.wake.notified() => {}
                    }
                }
                Ok(StepOutcome::Halt(e)) => {
                    error!(target: "lightcl", error = %e, "halted");
                    self.token.cancel();
                    return Err(e);
                }
                Err(e) => {
                    let d = backoff.next_delay();
                    match &e {
                        StepError::Engine(err) if err.is_retryable() => {
                            reassert = true;
                            warn!(target: "lightcl::engine", error = %err, retry_in = ?d, "EL unavailable; waiting for it")
                        }
                        StepError::Engine(EngineError::Unauthorized { .. }) => {
                            error!(target: "lightcl::engine", error = %e, retry_in = ?d, "EL refused our token")
                        }
                        _ => {
                            warn!(target: "lightcl", error = %e, retry_in = ?d, "step failed; retrying")
                        }
                    }
                    if !sleep_or_cancel(&self.token, d).await {
                        break;
                    }
                }
            }
        }
        self.token.cancel();
        while self.tasks.join_next().await.is_some() {}
        info!(target: "lightcl", "stopped");
        Ok(())
    }

    fn fcu_version(&self, v: FcuVersion) -> FcuVersion {
        match self.config.chain {
            ChainKind::Optimism => v.max(FcuVersion::V2),
            ChainKind::Ethereum => v,
        }
    }

    /// Sends a forkchoice update and checks it took effect (I6): VALID, and the head reads back.
    async fn forkchoice(&self, version: FcuVersion, heads: &Heads) -> Result<(), StepError> {
        let status = self.engine.forkchoice_updated(self.fcu_version(version), heads).await?;
        match classify(&status) {
            Verdict::Advance => {}
            Verdict::Pending => return Err(StepError::Pending { head: heads.head }),
            Verdict::Reject(reason) => {
                return Err(StepError::Invalid { block: heads.head, reason });
            }
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
                Err(StepError::HeadDidNotMove { wanted: heads.head, have: other.map(|b| b.block) })
            }
        }
    }

    /// Reads every source's label and returns the one they all agree on (by hash), if any.
    async fn agreed_label(&self, label: Label) -> Result<Option<BlockRef>, StepError> {
        let mut reported = Vec::new();
        for s in &self.sources {
            match s.label(label).await? {
                Some(b) => reported.push(b),
                None => return Ok(None),
            }
        }
        let Some(lowest) = reported.iter().min_by_key(|b| b.number).copied() else {
            return Ok(None);
        };
        for (s, r) in self.sources.iter().zip(&reported) {
            let hash = if r.number == lowest.number {
                Some(r.hash)
            } else {
                s.hash_at(lowest.number).await?
            };
            if hash != Some(lowest.hash) {
                warn!(target: "lightcl::source", %label, source = s.name(), height = lowest.number,
                    theirs = ?hash, others = %lowest.hash, "sources disagree; holding this label");
                return Ok(None);
            }
        }
        Ok(Some(lowest))
    }

    async fn agreed_heads(&self) -> Result<Option<Heads>, StepError> {
        let head = self.agreed_label(Label::Latest).await?;
        let safe = self.agreed_label(Label::Safe).await?;
        let finalized = self.agreed_label(Label::Finalized).await?;
        Ok(match (head, safe, finalized) {
            (Some(head), Some(safe), Some(finalized)) => Some(Heads { head, safe, finalized }),
            _ => None,
        })
    }

    /// One round: read, plan, execute.
    async fn step(&mut self, reassert: &mut bool) -> Result<StepOutcome, StepError> {
        let (local, version) = self.engine.heads().await?;
        if *reassert {
            self.forkchoice(version, &local).await?;
            info!(target: "lightcl::engine", head = %local.head, safe = %local.safe,
                finalized = %local.finalized, "EL forkchoice re-asserted");
            *reassert = false;
        }
        let Some(agreed) = self.agreed_heads().await? else {
            return Ok(StepOutcome::Idle);
        };
        let follow = self.config.follow;
        let target = match follow {
            crate::config::Follow::Safe => agreed.safe,
            crate::config::Follow::Latest => agreed.head,
        };
        let local_at_target = if target.number <= local.head.number {
            self.engine.block(BlockAt::Number(target.number)).await?.map(|b| b.block.hash)
        } else {
            None
        };
        let source_at_local_finalized = if local.finalized.number == 0 {
            None
        } else {
            self.sources[0].hash_at(local.finalized.number).await?
        };
        let view = View { local, agreed, follow, local_at_target, source_at_local_finalized };
        match plan(&view) {
            Step::Idle => Ok(StepOutcome::Idle),
            Step::Promote(next) => {
                self.forkchoice(version, &next).await?;
                debug!(target: "lightcl::sync", head = %next.head, safe = %next.safe,
                    finalized = %next.finalized, "labels moved");
                Ok(StepOutcome::Progress)
            }
            Step::Insert { from, to } => self.insert(from, to, local, agreed, version).await,
            Step::Diverged { at } => {
                warn!(target: "lightcl::sync", height = at, local_head = %local.head,
                    "the EL's chain differs from the sources' above local finalized; holding (no \
                     writes). Automatic recovery is not available in this version");
                Ok(StepOutcome::Idle)
            }
            Step::FinalizedDivergence { local, source } => {
                Ok(StepOutcome::Halt(RunError::FinalizedDivergence {
                    number: local.number,
                    local: local.hash,
                    sources_hash: source,
                }))
            }
        }
    }

    /// Fetches blocks `from..=to` (at most [`MAX_BATCH`]) with a bounded prefetch window and
    /// feeds them in order, checking continuity, each answer, and moving the forkchoice as it
    /// goes.
    async fn insert(
        &self,
        from: u64,
        to: u64,
        local: Heads,
        agreed: Heads,
        version: FcuVersion,
    ) -> Result<StepOutcome, StepError> {
        let end = to.min(from + MAX_BATCH - 1);
        // Agreed labels already on the local chain may be used in the batch's forkchoices.
        let mut known_local = HashMap::new();
        for b in [agreed.safe, agreed.finalized] {
            if b.number <= local.head.number
                && self.engine.block(BlockAt::Number(b.number)).await?.map(|l| l.block) == Some(b)
            {
                known_local.insert(b.number, b.hash);
            }
        }
        let window = self.config.prefetch;
        let concurrency = self.config.fetch_concurrency;
        let (tx, mut rx) = mpsc::channel::<Result<Payload, StepError>>(window);
        let sources = &self.sources;
        let fetcher = async move {
            let mut stream = futures_util::stream::iter(from..=end)
                .map(|n| {
                    let s = &sources[(n as usize) % sources.len()];
                    async move {
                        match s.payload(n).await {
                            Ok(Some(p)) => Ok(p),
                            Ok(None) => Err(StepError::Missing { number: n }),
                            Err(e) => Err(StepError::Source(e)),
                        }
                    }
                })
                .buffered(concurrency);
            while let Some(item) = stream.next().await {
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    break;
                }
            }
        };
        let inserter = async {
            let mut prev = local.head;
            let mut fcu = version;
            let mut inserted: HashMap<u64, B256> = known_local;
            let mut progress = Progress::new(from, to, self.config.progress_interval_ms);
            let mut since_fcu = 0u64;
            let mut result: Result<(), StepError> = Ok(());
            while let Some(item) = rx.recv().await {
                if self.token.is_cancelled() {
                    break;
                }
                let p = match item {
                    Ok(p) => p,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                };
                if p.parent_hash != prev.hash {
                    result = Err(StepError::Discontinuity {
                        block: p.block,
                        parent: p.parent_hash,
                        local: prev,
                    });
                    break;
                }
                if p.block.number == agreed.safe.number && p.block.hash != agreed.safe.hash
                    || p.block.number == agreed.finalized.number
                        && p.block.hash != agreed.finalized.hash
                {
                    result = Err(StepError::Discontinuity {
                        block: p.block,
                        parent: p.parent_hash,
                        local: prev,
                    });
                    break;
                }
                let mut status = match self.engine.new_payload(&p).await {
                    Ok(s) => s,
                    Err(e) => {
                        result = Err(e.into());
                        break;
                    }
                };
                if classify(&status) == Verdict::Pending && prev != local.head {
                    // The EL may have lost the state below the head it still has: moving the
                    // head to the last VALID block and resending fixes that (docs/engines.md).
                    let heads =
                        labels(prev, &local, &agreed, |b| inserted.get(&b.number) == Some(&b.hash));
                    debug!(target: "lightcl::engine", block = %p.block, "SYNCING; moving the head to the last VALID block and resending");
                    let again = match self.forkchoice(fcu, &heads).await {
                        Ok(()) => self.engine.new_payload(&p).await.map_err(StepError::from),
                        Err(e) => Err(e),
                    };
                    match again {
                        Ok(s) => {
                            status = s;
                            since_fcu = 0;
                        }
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                match classify(&status) {
                    Verdict::Advance => {}
                    Verdict::Pending => {
                        result = Err(StepError::Pending { head: p.block });
                        break;
                    }
                    Verdict::Reject(reason) => {
                        result = Err(StepError::Invalid { block: p.block, reason });
                        break;
                    }
                }
                prev = p.block;
                fcu = p.fcu;
                inserted.insert(p.block.number, p.block.hash);
                since_fcu += 1;
                progress.tick(p.block.number);
                if since_fcu >= FCU_EVERY_BLOCKS {
                    let heads =
                        labels(prev, &local, &agreed, |b| inserted.get(&b.number) == Some(&b.hash));
                    if let Err(e) = self.forkchoice(fcu, &heads).await {
                        result = Err(e);
                        break;
                    }
                    since_fcu = 0;
                }
            }
            drop(rx);
            if since_fcu > 0 {
                let heads =
                    labels(prev, &local, &agreed, |b| inserted.get(&b.number) == Some(&b.hash));
                let fcu_res = self.forkchoice(fcu, &heads).await;
                if result.is_ok() {
                    result = fcu_res;
                }
                if prev != local.head {
                    progress.done(&heads);
                }
            }
            result
        };
        let ((), result) = tokio::join!(fetcher, inserter);
        match result {
            Ok(()) => Ok(StepOutcome::Progress),
            Err(StepError::Discontinuity { block, parent, local: at }) => {
                warn!(target: "lightcl::sync", block = %block, parent = %parent, local = %at,
                    "source block does not link to the local chain; holding (no writes past it)");
                Ok(StepOutcome::Idle)
            }
            Err(e) => Err(e),
        }
    }
}

/// Outcome of one step.
enum StepOutcome {
    /// Something was done; run again at once.
    Progress,
    /// Nothing to do (or holding); wait for the next poll or wake-up.
    Idle,
    /// Stop: no more engine writes.
    Halt(RunError),
}

/// Errors within one step; the loop logs and retries them with backoff.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("the sources have no block {number} yet")]
    Missing { number: u64 },
    #[error("block {block} has parent {parent}, but the block below it here is {local}")]
    Discontinuity { block: BlockRef, parent: B256, local: BlockRef },
    #[error(
        "the EL answered SYNCING for {head}: it cannot execute it yet (missing parent or state). \
         If this repeats after an EL crash, the EL came back in snap-sync mode: see the runbook"
    )]
    Pending { head: BlockRef },
    #[error("the EL rejected block {block} as INVALID: {reason}; this branch is not followed")]
    Invalid { block: BlockRef, reason: String },
    #[error("forkchoiceUpdated answered VALID but the EL head is {have:?}, not {wanted}")]
    HeadDidNotMove { wanted: BlockRef, have: Option<BlockRef> },
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

    fn tick(&mut self, height: u64) {
        self.done += 1;
        if self.last_log.elapsed() < self.interval {
            return;
        }
        self.last_log = Instant::now();
        let rate = self.done as f64 / self.start.elapsed().as_secs_f64().max(1e-3);
        let left = self.target.saturating_sub(height);
        let eta = Duration::from_secs_f64(left as f64 / rate.max(1e-3));
        info!(target: "lightcl::sync", height, target = self.target, blocks_per_sec = format!("{rate:.1}"),
            eta = ?Duration::from_secs(eta.as_secs()), "catching up");
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
