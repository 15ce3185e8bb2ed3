//! The follower loop: read the local heads back from the EL, read the agreed source heads,
//! plan, execute. Catch-up runs as a bounded prefetch pipeline so the EL never waits on the
//! network.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::B256;
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::plan::{Step, View, plan};
use crate::api::metrics::{self as m, labels};
use crate::api::{self, Mode, Shared, SourceStatus};
use crate::backoff::Backoff;
use crate::chain::{BlockRef, Heads, Label};
use crate::config::{ChainKind, Config};
use crate::engine::client::BlockAt;
use crate::engine::{EngineClient, EngineError, Verdict, classify};
use crate::payload::FcuVersion;
use crate::redact::RedactedUrl;
use crate::source::{RpcSource, SourceError};

/// Blocks fed per pipeline run before the loop re-plans (keeps the target fresh).
const MAX_BATCH: u64 = 8_192;
/// How often a halted follower repeats why it is halted.
const HALT_REMINDER: Duration = Duration::from_secs(60);

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
    /// The operations API cannot start.
    #[error("{0}")]
    Api(String),
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
    let names: Vec<String> = config
        .sources
        .iter()
        .map(|e| {
            e.name().map(str::to_string).unwrap_or_else(|| RedactedUrl::new(e.url()).to_string())
        })
        .collect();
    let shared = Arc::new(Shared::new(&names, config.api.ready_max_lag_blocks));
    let api = if config.api.listen.is_empty() {
        None
    } else {
        let listener = api::bind(&config.api.listen).await.map_err(RunError::Api)?;
        Some(tokio::spawn(api::serve(listener, shared.clone(), token.clone())))
    };
    let follower = async {
        let res = Follower::start(config, token.clone(), shared.clone()).await;
        match res {
            Ok(Some(mut f)) => f.follow().await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        }
    };
    tokio::pin!(follower);
    tokio::pin!(shutdown);
    let res = tokio::select! {
        res = &mut follower => res,
        _ = &mut shutdown => {
            info!(target: "lightcl", "shutdown requested; finishing the current engine call");
            token.cancel();
            follower.await
        }
    };
    token.cancel();
    if let Some(task) = api {
        let _ = task.await;
    }
    res
}

/// The follower's state: clients, cancellation, background tasks.
pub(super) struct Follower {
    pub(super) config: Config,
    pub(super) engine: EngineClient,
    pub(super) sources: Vec<RpcSource>,
    pub(super) token: CancellationToken,
    wake: Arc<Notify>,
    tasks: tokio::task::JoinSet<()>,
    /// The last disagreement logged and when (to log a persisting one only now and then).
    pub(super) last_disagreement: std::sync::Mutex<Option<(std::time::Instant, String)>>,
    /// What the API reports.
    pub(super) shared: Arc<Shared>,
}

impl Follower {
    /// Connects and checks everything before the first engine write. `Ok(None)`: cancelled.
    async fn start(
        config: Config,
        token: CancellationToken,
        shared: Arc<Shared>,
    ) -> Result<Option<Self>, RunError> {
        info!(target: "lightcl", config = %config.summary(), version = crate::VERSION, "starting");
        let engine = EngineClient::new(&config.engine)
            .map_err(RunError::Engine)?
            .with_metrics(shared.metrics.clone());
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
            last_disagreement: std::sync::Mutex::new(None),
            shared,
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
                Ok(StepOutcome::Halt(e)) => return self.halted(e).await,
                Err(e) => {
                    let d = backoff.next_delay();
                    let text = e.to_string();
                    self.shared.update(|s| s.last_error = Some(text));
                    match &e {
                        StepError::Engine(err) if err.is_retryable() => {
                            reassert = true;
                            self.shared.update(|s| s.el_up = false);
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

    /// Halted: no more engine writes. Stays up saying why (so monitoring sees it) until the
    /// operator stops it; then the error is returned (exit code 4).
    async fn halted(&mut self, e: RunError) -> Result<(), RunError> {
        self.shared.metrics.set(m::HALTED, "", 1.0);
        let why = e.to_string();
        self.shared.update(|s| {
            s.mode = Mode::Halted;
            s.halted = Some(why);
        });
        loop {
            error!(target: "lightcl", error = %e, "HALTED: no more writes to the EL until an operator intervenes");
            if !sleep_or_cancel(&self.token, HALT_REMINDER).await {
                break;
            }
        }
        while self.tasks.join_next().await.is_some() {}
        Err(e)
    }

    pub(super) fn fcu_version(&self, v: FcuVersion) -> FcuVersion {
        match self.config.chain {
            ChainKind::Optimism => v.max(FcuVersion::V2),
            ChainKind::Ethereum => v,
        }
    }

    /// Publishes the sources' health to the API and metrics.
    fn publish_sources(&self) {
        let sources: Vec<SourceStatus> = self
            .sources
            .iter()
            .map(|s| {
                let h = s.health();
                let l = labels(&[("source", s.name())]);
                let mx = &self.shared.metrics;
                mx.set(m::SOURCE_UP, &l, if h.up { 1.0 } else { 0.0 });
                mx.set(m::SOURCE_LATENCY, &l, h.latency.map_or(0.0, |d| d.as_secs_f64()));
                mx.set(m::SOURCE_HEAD, &l, h.head.unwrap_or(0) as f64);
                for (reason, n) in &h.errors {
                    mx.set(
                        m::SOURCE_ERRORS,
                        &labels(&[("source", s.name()), ("reason", reason)]),
                        *n as f64,
                    );
                }
                SourceStatus {
                    name: s.name().to_string(),
                    up: h.up,
                    latency_ms: h.latency.map(|d| d.as_secs_f64() * 1e3),
                    consecutive_errors: h.consecutive_errors,
                    errors: h.errors,
                    head: h.head,
                }
            })
            .collect();
        self.shared.update(|s| s.sources = sources);
    }

    /// Publishes the heads a feed just moved the EL to (during a long catch-up).
    pub(super) fn publish_progress(&self, heads: &Heads, agreed: &Heads) {
        let target = self.config.follow.target(agreed);
        let mx = &self.shared.metrics;
        for (label, b) in
            [("latest", heads.head), ("safe", heads.safe), ("finalized", heads.finalized)]
        {
            mx.set(m::LOCAL_HEAD, &labels(&[("label", label)]), b.number as f64);
        }
        let lag = target.number.saturating_sub(heads.head.number);
        mx.set(m::LAG_BLOCKS, "", lag as f64);
        let heads = *heads;
        let behind = lag > self.config.api.ready_max_lag_blocks;
        self.shared.update(|s| {
            s.local = Some(heads);
            s.lag_blocks = Some(lag);
            if matches!(s.mode, Mode::CatchingUp | Mode::Following) {
                s.mode = if behind { Mode::CatchingUp } else { Mode::Following };
            }
        });
    }

    /// Publishes heads, lag and mode to the API and metrics.
    pub(super) fn publish(
        &self,
        local: &Heads,
        agreed: Option<(&Heads, BlockRef)>,
        head_time: u64,
        mode: Mode,
    ) {
        let mx = &self.shared.metrics;
        for (label, b) in
            [("latest", local.head), ("safe", local.safe), ("finalized", local.finalized)]
        {
            mx.set(m::LOCAL_HEAD, &labels(&[("label", label)]), b.number as f64);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let lag_seconds = now.saturating_sub(head_time);
        mx.set(m::LAG_SECONDS, "", lag_seconds as f64);
        let lag = agreed.map(|(a, target)| {
            for (label, b) in [("latest", a.head), ("safe", a.safe), ("finalized", a.finalized)] {
                mx.set(m::AGREED_HEAD, &labels(&[("label", label)]), b.number as f64);
            }
            target.number.saturating_sub(local.head.number)
        });
        if let Some(l) = lag {
            mx.set(m::LAG_BLOCKS, "", l as f64);
        }
        let (local, agreed) = (*local, agreed.map(|(a, _)| *a));
        self.shared.update(|s| {
            s.local = Some(local);
            if agreed.is_some() {
                s.agreed = agreed;
                s.lag_blocks = lag;
            }
            s.lag_seconds = Some(lag_seconds);
            s.el_up = true;
            if s.mode != Mode::Halted {
                s.mode = mode;
            }
            if mode == Mode::Following {
                s.last_error = None;
            }
        });
    }

    /// Sends a forkchoice update and checks it took effect (I6): VALID, and the head reads back.
    pub(super) async fn forkchoice(
        &self,
        version: FcuVersion,
        heads: &Heads,
    ) -> Result<(), StepError> {
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

    /// One round: read, plan, execute.
    async fn step(&mut self, reassert: &mut bool) -> Result<StepOutcome, StepError> {
        let (local, version, head_time) = self.engine.heads().await?;
        self.publish_sources();
        if *reassert {
            self.forkchoice(version, &local).await?;
            info!(target: "lightcl::engine", head = %local.head, safe = %local.safe,
                finalized = %local.finalized, "EL forkchoice re-asserted");
            *reassert = false;
        }
        let Some(agreed) = self.agreed_heads(local.finalized.number).await? else {
            self.shared.metrics.set(m::SOURCES_AGREE, "", 0.0);
            self.publish(&local, None, head_time, Mode::Holding);
            return Ok(StepOutcome::Idle);
        };
        self.shared.metrics.set(m::SOURCES_AGREE, "", 1.0);
        let follow = self.config.follow;
        let target = follow.target(&agreed);
        let local_at_target = if target.number <= local.head.number {
            self.engine.block(BlockAt::Number(target.number)).await?.map(|b| b.block.hash)
        } else {
            None
        };
        let source_at_local_finalized = if local.finalized.number == 0 {
            None
        } else {
            self.agreed_hash_at(local.finalized.number).await?
        };
        // A local head above the target must still be on the sources' chain.
        let local_head_on_source = local.head.number <= target.number
            || self.agreed_hash_at(local.head.number).await? == Some(local.head.hash);
        let view = View {
            local,
            agreed,
            follow,
            local_at_target,
            source_at_local_finalized,
            local_head_on_source,
        };
        let step = plan(&view);
        let lag = target.number.saturating_sub(local.head.number);
        let mode = match &step {
            Step::Diverged { .. } => Mode::Recovering,
            Step::FinalizedDivergence { .. } => Mode::Halted,
            _ if lag > self.config.api.ready_max_lag_blocks => Mode::CatchingUp,
            _ => Mode::Following,
        };
        self.publish(&local, Some((&agreed, target)), head_time, mode);
        match step {
            Step::Idle => Ok(StepOutcome::Idle),
            Step::Promote(next) => {
                self.forkchoice(version, &next).await?;
                debug!(target: "lightcl::sync", head = %next.head, safe = %next.safe,
                    finalized = %next.finalized, "labels moved");
                Ok(StepOutcome::Progress)
            }
            Step::Insert { from, to } => self.insert(from, to, local, agreed, version).await,
            Step::Diverged { at } => self.recover(at, local, agreed, target, version).await,
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
    /// feeds them in order. A first block that does not link to the local head is a divergence.
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
        let mut known = HashMap::new();
        for b in [agreed.safe, agreed.finalized] {
            if b.number <= local.head.number
                && self.engine.block(BlockAt::Number(b.number)).await?.map(|l| l.block) == Some(b)
            {
                known.insert(b.number, b.hash);
            }
        }
        let (tx, mut rx) = mpsc::channel(self.config.prefetch);
        let target = self.config.follow.target(&agreed);
        let fetch = self.fetch_range(from, end, target, tx);
        let feed = async {
            let out = self.feed(&mut rx, &local, &agreed, version, known, end - from + 1).await;
            drop(rx);
            out
        };
        let ((), (fed, result)) = tokio::join!(fetch, feed);
        match result {
            Ok(()) => Ok(StepOutcome::Progress),
            Err(StepError::Discontinuity { block, parent, local: below }) if fed.blocks == 0 => {
                // The sources' next block does not sit on our head: our head is not on their
                // chain. Recover from the height of our head.
                info!(target: "lightcl::sync", block = %block, parent = %parent, local_head = %below,
                    "the sources' next block does not link to the EL's head: divergence");
                self.recover(local.head.number, local, agreed, target, version).await
            }
            Err(StepError::Discontinuity { block, parent, local: below }) => {
                warn!(target: "lightcl::sync", block = %block, parent = %parent, below = %below,
                    "the sources' chain changed during catch-up; planning again");
                Ok(StepOutcome::Progress)
            }
            Err(e) => Err(e),
        }
    }
}

/// Outcome of one step.
pub(super) enum StepOutcome {
    /// Something was done; run again at once.
    Progress,
    /// Nothing to do (or holding); wait for the next poll or wake-up.
    Idle,
    /// Stop: no more engine writes.
    Halt(RunError),
}

/// Errors within one step; the loop logs and retries them with backoff.
#[derive(Debug, thiserror::Error)]
pub(super) enum StepError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("the sources have no block {number} yet")]
    Missing { number: u64 },
    #[error("no source is available (all are backing off after errors)")]
    NoSource,
    #[error(
        "the sources give no agreed block at height {number} (down, backing off or split); cannot compare yet"
    )]
    NoAgreement { number: u64 },
    #[error("block {block} has parent {parent}, but the block below it here is {local}")]
    Discontinuity { block: BlockRef, parent: B256, local: BlockRef },
    #[error(
        "the EL answered SYNCING for {head}: it cannot execute it yet (missing parent or state). \
         If this repeats after an EL crash, the EL came back in snap-sync mode: see the runbook"
    )]
    Pending { head: BlockRef },
    #[error("the EL rejected block {block} as INVALID: {reason}; this branch is not followed")]
    Invalid { block: BlockRef, reason: String },
    #[error("divergence recovery spent its budget of searches and time; trying again later")]
    RecoveryBudget,
    #[error(
        "the EL cannot execute the sources' branch on top of {ancestor} (its state is gone) and \
         could not be rolled back there ({reason}); enable the debug API on the EL's JSON-RPC \
         (geth: --http.api ...,debug) or run it with historical state"
    )]
    CannotRewind { ancestor: BlockRef, reason: String },
    #[error("forkchoiceUpdated answered VALID but the EL head is {have:?}, not {wanted}")]
    HeadDidNotMove { wanted: BlockRef, have: Option<BlockRef> },
}
