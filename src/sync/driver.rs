//! The follower loop: read the local heads back from the EL, read the agreed source heads,
//! plan, execute. Start-up checks live in `startup.rs`, what the API and metrics show in
//! `publish.rs`, the catch-up pipeline in `pipeline.rs`, divergence recovery in `recover.rs`;
//! every forkchoice leaves through the gate (`gate.rs`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::B256;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::gate::{Gate, GateError, Lineage, Proven, REFILL_PROOF_DEPTH, WALK_PER_ROUND};
use super::pipeline::FeedKind::CatchUp;
use super::plan::{Step, View, plan};
use crate::api::metrics as m;
use crate::api::{self, Mode, Shared};
use crate::backoff::Backoff;
use crate::chain::{BlockRef, Heads, Label};
use crate::config::{ChainKind, Config};
use crate::engine::{BlockAt, Engine, EngineClient, EngineError, Verdict, classify, read_heads};
use crate::payload::FcuVersion;
use crate::source::set::Agreed;
use crate::source::set::WALK_BATCH;
use crate::source::{RpcSource, Source, SourceError, SourceSet};
use crate::state::{StateError, StateFile, StateLock, carry_over};

/// How often a halted follower repeats why it is halted.
const HALT_REMINDER: Duration = Duration::from_secs(60);
/// How often a fleet replica halted for a stuck EL checks whether its EL restarted.
const RESTART_PROBE: Duration = Duration::from_millis(500);

/// How long a fleet replica halted for a stuck EL waits before it tries the EL again (an EL
/// restarted between two probes is not seen to go away).
const STUCK_RETRY: Duration = Duration::from_secs(30);

/// How a halt ended.
enum Halted {
    /// The EL restarted: follow it again.
    Resume,
    /// lightcl is stopping: the halt's error.
    Stop(Result<(), RunError>),
}

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
    /// The state file cannot be used.
    #[error("{0}")]
    State(StateError),
    /// The operations API cannot start.
    #[error("{0}")]
    Api(String),
    /// The sources disagree with the local finalized block (or the remembered floor); nothing
    /// more was sent to the EL.
    #[error(
        "finalized divergence at height {number}: lightcl's finalized block there is {local}, the \
         sources say {sources_hash}. lightcl halted and sent nothing more to the EL. Check the \
         sources first; if they are right, the EL must be rebuilt or rolled back below {number} \
         by hand and the state file removed (see the runbook, \"Finalized divergence\")"
    )]
    FinalizedDivergence {
        /// Height.
        number: u64,
        /// Local hash.
        local: B256,
        /// Sources' hash.
        sources_hash: B256,
    },
    /// The EL's own chain does not hold the finality floor lightcl remembers.
    #[error(
        "the EL's chain holds {el:?} at height {number}, but lightcl remembers {floor} as \
         finalized there (state file): the EL was moved across finality by something else, or \
         rebuilt. lightcl halted and sent nothing to the EL. If the EL's chain is the right one, \
         remove the state file (see the runbook, \"State file\")"
    )]
    ElLeftFloor {
        /// Height of the floor.
        number: u64,
        /// The floor.
        floor: BlockRef,
        /// What the EL holds there.
        el: Option<B256>,
    },
    /// The EL does not advance past its head although it accepts the blocks above it, and it
    /// could not be repaired through its APIs.
    #[error(
        "the EL does not advance past its head {have}: {symptom}. {tried}. lightcl halted its \
         writes to the EL. Restart the EL, then lightcl: geth and op-geth that lost their state \
         in a crash can stay in snap-sync mode, ignoring every block fed to them, until they \
         restart (their log says \"Ignoring payload while snap syncing\"). If it is still stuck \
         after that, roll it back by hand (debug_setHead to {have} or below) or resync it (see \
         the runbook, \"EL stuck below the blocks it accepted\")"
    )]
    ElStuck {
        /// Where the EL's head stays.
        have: BlockRef,
        /// What the EL does.
        symptom: String,
        /// What lightcl tried.
        tried: String,
    },
}

/// One replica EL and what lightcl keeps for it.
#[derive(Debug)]
pub struct ReplicaParts {
    /// Its name (metrics, `/status`, `/readyz/<name>`).
    pub name: String,
    /// The EL.
    pub engine: Arc<dyn Engine>,
    /// Where its floor is kept, and the floor it held at start.
    pub state: (StateFile, Option<crate::chain::BlockRef>),
    /// Its API state (a fresh one when `None`).
    pub shared: Option<Arc<Shared>>,
}

/// What the follower runs against: the sources and one or more replica ELs.
#[derive(Debug)]
pub struct Parts {
    /// The sources, in configuration order.
    pub sources: Vec<Arc<dyn Source>>,
    /// The replicas, in configuration order (at least one).
    pub replicas: Vec<ReplicaParts>,
}

impl Parts {
    /// One EL, named [`crate::config::DEFAULT_REPLICA_NAME`].
    pub fn single(
        engine: Arc<dyn Engine>,
        sources: Vec<Arc<dyn Source>>,
        state: (StateFile, Option<crate::chain::BlockRef>),
        shared: Option<Arc<Shared>>,
    ) -> Self {
        let name = shared
            .as_ref()
            .map_or_else(|| crate::config::DEFAULT_REPLICA_NAME.to_string(), |s| s.name.clone());
        Self { sources, replicas: vec![ReplicaParts { name, engine, state, shared }] }
    }
}

/// Sleeps `d` unless cancelled first; false when cancelled.
pub(super) async fn sleep_or_cancel(token: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = token.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Runs the follower with the configured endpoints until `shutdown` resolves or a fatal error.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let timeout = Duration::from_millis(config.source_timeout_ms);
    let sources: Vec<Arc<dyn Source>> = config
        .sources
        .iter()
        .map(|e| {
            let s = RpcSource::new(e, timeout)
                .with_max_response_mib(config.max_response_mib)
                .with_fetch(config.fetch);
            Arc::new(s) as Arc<dyn Source>
        })
        .collect();
    let names: Vec<String> = sources.iter().map(|s| s.name().to_string()).collect();
    let metrics = crate::api::Metrics::new(&names);
    // Held until run ends: a second lightcl on the same folder would overwrite the floor.
    let _lock = StateLock::acquire(&config.state_dir).map_err(RunError::State)?;
    let mut replicas = Vec::new();
    for r in config.replicas() {
        let dir = config.replica_state_dir(&r.name);
        if let Some((from, floor)) =
            carry_over(&config.state_dir, &dir, config.chain_id).map_err(RunError::State)?
        {
            info!(target: "lightcl", replica = %r.name, floor = %floor, from = %from.display(),
                to = %dir.display(), "finality floor carried over from another state file in \
                state_dir (one [engine] before, or another replica): the floor is the chain's, \
                whichever EL lightcl drives");
        }
        let state = StateFile::open(&dir, config.chain_id).map_err(RunError::State)?;
        let shared = Arc::new(Shared::replica(&r.name, &metrics, config.api.ready_max_lag_blocks));
        let engine = EngineClient::new(&r.engine)
            .map_err(RunError::Engine)?
            .with_metrics(shared.metrics.clone())
            .with_max_response_mib(config.max_response_mib);
        replicas.push(ReplicaParts {
            name: r.name,
            engine: Arc::new(engine),
            state,
            shared: Some(shared),
        });
    }
    run_with(config, Parts { sources, replicas }, shutdown).await
}

/// Runs the follower against `parts` (the simulation tests pass simulated ones): one follower
/// per replica, sharing the sources, their agreed view and the fetch.
pub async fn run_with(
    config: Config,
    parts: Parts,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let token = CancellationToken::new();
    let source_names: Vec<String> = parts.sources.iter().map(|s| s.name().to_string()).collect();
    let root = parts
        .replicas
        .iter()
        .find_map(|r| r.shared.as_ref().map(|s| (*s.metrics).clone()))
        .unwrap_or_else(|| crate::api::Metrics::new(&source_names));
    let mut replicas = Vec::new();
    for r in parts.replicas {
        let shared = r.shared.clone().unwrap_or_else(|| {
            Arc::new(Shared::replica(&r.name, &root, config.api.ready_max_lag_blocks))
        });
        replicas.push((r, shared));
    }
    let board = Arc::new(api::Board::new(replicas.iter().map(|(_, s)| s.clone()).collect()));
    let api = if config.api.listen.is_empty() {
        None
    } else {
        let listener = api::bind(&config.api.listen).await.map_err(RunError::Api)?;
        Some(tokio::spawn(api::serve(listener, board.clone(), token.clone())))
    };
    let fleet = Arc::new(super::fleet::Fleet::new(
        replicas.iter().map(|(r, _)| r.name.clone()).collect(),
        config.labels,
        config.poll_interval(),
        config.prefetch,
    ));
    let mut sources = SourceSet::new(parts.sources, config.chain, config.chain_id, config.quorum)
        .with_grace(Duration::from_millis(config.quorum_grace_ms))
        .with_metrics(Arc::new(root.clone()));
    if fleet.len() > 1 {
        sources = sources.with_coalescing(coalescing_window(&config));
    }
    let sources = Arc::new(sources);
    let follower = async {
        info!(target: "lightcl", config = %config.summary(), version = crate::VERSION, "starting");
        if !super::startup::admit_at_start(&sources, config.chain_id, &token).await? {
            return Ok(());
        }
        let subscriptions = super::startup::spawn_subscriptions(&sources, &fleet, &token);
        let many = replicas.len() > 1;
        let runs = replicas.into_iter().enumerate().map(|(i, (r, shared))| {
            let config = config.clone();
            let (sources, fleet) = (sources.clone(), fleet.clone());
            // In a fleet a replica's error stops that replica alone.
            let token = if many { token.child_token() } else { token.clone() };
            let span = tracing::info_span!("replica", name = %r.name);
            let run = async move {
                let res = match Follower::start(
                    config,
                    r,
                    i,
                    sources,
                    fleet.clone(),
                    token.clone(),
                    shared.clone(),
                )
                .await
                {
                    Ok(Some(mut f)) => f.follow().await,
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                };
                match res {
                    Err(e) if many => hold_failed(&shared, &fleet, i, &token, e).await,
                    res => res,
                }
            };
            if many {
                futures_util::future::Either::Left(tracing::Instrument::instrument(run, span))
            } else {
                futures_util::future::Either::Right(run)
            }
        });
        let results = futures_util::future::join_all(runs).await;
        token.cancel();
        for t in subscriptions {
            let _ = t.await;
        }
        results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
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

/// How long a fleet's replicas share one source read: half a poll, at most half a second.
fn coalescing_window(config: &Config) -> Duration {
    (config.poll_interval() / 2).min(Duration::from_millis(500))
}

/// A replica of a fleet that stopped with an error: the others go on; it stays in `/status` and
/// `/readyz/<name>` as halted, saying why, until lightcl stops; then the error is returned.
async fn hold_failed(
    shared: &Shared,
    fleet: &super::fleet::Fleet,
    i: usize,
    token: &CancellationToken,
    e: RunError,
) -> Result<(), RunError> {
    if token.is_cancelled() {
        return Err(e);
    }
    shared.metrics.set(m::HALTED, &[], 1.0);
    let why = e.to_string();
    shared.update(|s| {
        s.mode = Mode::Halted;
        s.halted = Some(why);
    });
    fleet.report_down(i);
    loop {
        error!(target: "lightcl", replica = fleet.name(i), error = %e,
            "this replica stopped: no more writes to its EL until an operator intervenes; the \
             other replicas go on");
        if !sleep_or_cancel(token, HALT_REMINDER).await {
            break;
        }
    }
    Err(e)
}

/// One replica's follower: its EL, its gate, what it shares with the fleet, cancellation.
pub(super) struct Follower {
    pub(super) config: Config,
    pub(super) engine: Arc<dyn Engine>,
    pub(super) sources: Arc<SourceSet>,
    pub(super) gate: Gate,
    pub(super) token: CancellationToken,
    pub(super) wake: Arc<Notify>,
    /// The fleet this replica belongs to (a fleet of one for a lone EL).
    pub(super) fleet: Arc<super::fleet::Fleet>,
    /// This replica's place in the fleet.
    pub(super) index: usize,
    /// What the API reports.
    pub(super) shared: Arc<Shared>,
    /// An EL head that did not move although the EL answered VALID: where, how often in a
    /// row, and whether it was rolled back there already.
    pub(super) stuck: super::repair::Stuck,
    /// Where the last catch-up rounds started (to see an EL that takes blocks and never gets
    /// past them).
    pub(super) progress_watch: std::sync::Mutex<super::repair::ProgressWatch>,
    /// An EL sync from the EL's own peers (bootstrap of a far-behind EL).
    pub(super) boot: super::bootstrap::BootstrapState,
}

impl Follower {
    /// The main loop.
    async fn follow(&mut self) -> Result<(), RunError> {
        let mut backoff = Backoff::default();
        // geth treats itself as not synced after a restart until a forkchoice succeeds.
        let mut reassert = true;
        while !self.token.is_cancelled() {
            let res = self.step(&mut reassert).await;
            if let Err(e) = &res
                && let Some(sign) = super::repair::stuck_symptom(e)
            {
                match self.repair_stuck(sign).await {
                    Ok(()) => {}
                    Err(StepError::Fatal(halt)) => match self.halted(halt).await {
                        Halted::Resume => {
                            reassert = true;
                            continue;
                        }
                        Halted::Stop(res) => return res,
                    },
                    Err(e) => warn!(target: "lightcl::engine", error = %e,
                        "could not repair the EL yet; retrying"),
                }
                // The repair counts its own tries; a growing backoff would only slow it.
                if !sleep_or_cancel(&self.token, super::repair::STUCK_RECHECK).await {
                    break;
                }
                continue;
            }
            match res {
                Ok(StepOutcome::Progress) => {
                    backoff.reset();
                    continue;
                }
                Ok(StepOutcome::Idle) => {
                    backoff.reset();
                    // A fleet's idle replicas wake on one clock, so their reads coalesce.
                    let until = if self.fleet.len() > 1 {
                        self.fleet.next_tick()
                    } else {
                        tokio::time::Instant::now() + self.config.poll_interval()
                    };
                    tokio::select! {
                        _ = self.token.cancelled() => break,
                        _ = tokio::time::sleep_until(until) => {}
                        _ = self.wake.notified() => {}
                    }
                }
                Ok(StepOutcome::Halt(e)) => match self.halted(e).await {
                    Halted::Resume => {
                        reassert = true;
                        continue;
                    }
                    Halted::Stop(res) => return res,
                },
                Err(StepError::Fatal(fatal)) => {
                    self.token.cancel();
                    return Err(fatal);
                }
                Err(e) => {
                    let d = backoff.next_delay();
                    let text = e.to_string();
                    self.shared.update(|s| s.last_error = Some(text));
                    match &e {
                        StepError::Engine(err) if err.is_retryable() => {
                            reassert = true;
                            self.fleet.report_down(self.index);
                            self.shared.update(|s| {
                                s.el_up = false;
                                if s.mode != Mode::Halted {
                                    s.mode = Mode::ElDown;
                                }
                            });
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
        info!(target: "lightcl", "stopped");
        Ok(())
    }

    /// Halted: no more engine writes. Stays up saying why (so monitoring sees it) until the
    /// operator stops it; then the error is returned (exit code 4). A replica of a fleet halted
    /// because its EL was stuck tries it again once its EL restarts (it went away and came back)
    /// and every [`STUCK_RETRY`]: the runbook's "restart the EL, then lightcl" without stopping
    /// the other replicas. The halt was reached after the repair rolled the EL back as far as it
    /// could, so a try on an EL still stuck changes nothing and halts again.
    async fn halted(&mut self, e: RunError) -> Halted {
        self.shared.metrics.set(m::HALTED, &[], 1.0);
        let why = e.to_string();
        self.shared.update(|s| {
            s.mode = Mode::Halted;
            s.halted = Some(why);
        });
        self.fleet.report_down(self.index);
        let resumable = self.fleet.len() > 1 && matches!(e, RunError::ElStuck { .. });
        let mut el_went_away = false;
        let retry_at = tokio::time::Instant::now() + STUCK_RETRY;
        let mut last_said = None::<tokio::time::Instant>;
        loop {
            if last_said.is_none_or(|t| t.elapsed() >= HALT_REMINDER) {
                error!(target: "lightcl", error = %e, "HALTED: no more writes to the EL until an operator intervenes");
                last_said = Some(tokio::time::Instant::now());
            }
            let wait = if resumable { RESTART_PROBE } else { HALT_REMINDER };
            if !sleep_or_cancel(&self.token, wait).await {
                break;
            }
            if !resumable {
                continue;
            }
            let retry = tokio::time::Instant::now() >= retry_at;
            match self.engine.chain_id().await {
                Err(_) => el_went_away = true,
                Ok(_) if el_went_away || retry => {
                    info!(target: "lightcl", restarted = el_went_away,
                        "trying the EL again after lightcl halted its writes to it for being stuck \
                         (it restarted, or {}s passed)", STUCK_RETRY.as_secs());
                    self.shared.metrics.set(m::HALTED, &[], 0.0);
                    self.shared.update(|s| {
                        s.mode = Mode::Starting;
                        s.halted = None;
                    });
                    if el_went_away {
                        self.stuck = Default::default();
                    } else {
                        self.retry_stuck();
                    }
                    *self.progress_watch.lock().unwrap_or_else(|p| p.into_inner()) =
                        Default::default();
                    return Halted::Resume;
                }
                Ok(_) => {}
            }
        }
        self.token.cancel();
        Halted::Stop(Err(e))
    }

    pub(super) fn fcu_version(&self, v: FcuVersion) -> FcuVersion {
        match self.config.chain {
            ChainKind::Optimism => v.max(FcuVersion::V2),
            ChainKind::Ethereum => v,
        }
    }

    /// Sends a forkchoice update through the gate and checks it took effect (I6): VALID, and
    /// the head reads back.
    pub(super) async fn forkchoice(
        &self,
        version: FcuVersion,
        heads: &Heads,
        lineage: &Lineage<'_>,
    ) -> Result<(), StepError> {
        let status = self.gate.forkchoice(self.fcu_version(version), heads, lineage).await?;
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

    /// The EL's canonical hash at `n`, if `n` is at or below its head.
    async fn local_hash(&self, n: u64, head: BlockRef) -> Result<Option<B256>, StepError> {
        if n > head.number {
            return Ok(None);
        }
        if n == head.number {
            return Ok(Some(head.hash));
        }
        Ok(self.engine.block(BlockAt::Number(n)).await?.map(|b| b.block.hash))
    }

    /// One round: read, plan, execute.
    async fn step(&mut self, reassert: &mut bool) -> Result<StepOutcome, StepError> {
        if self.sources.admitted() < self.sources.len() {
            self.admit_sources().await?;
        }
        let (el, version, head_time) = read_heads(self.engine.as_ref()).await?;
        let local = match self.reconcile_floor(el).await? {
            Ok(local) => local,
            Err(halt) => return Ok(StepOutcome::Halt(halt)),
        };
        self.head_moved(local.head);
        self.publish_sources();
        if *reassert {
            let chain = Proven::at(local.head);
            self.forkchoice(version, &local, &Lineage { chain: &chain }).await?;
            info!(target: "lightcl::engine", head = %local.head, safe = %local.safe,
                finalized = %local.finalized, "EL forkchoice re-asserted");
            *reassert = false;
        }
        let Some(agreed) = self.sources.agreed_heads(local.finalized.number).await else {
            self.shared.metrics.set(m::SOURCES_AGREE, &[], 0.0);
            self.publish(&local, None, head_time, Mode::Holding);
            return Ok(StepOutcome::Idle);
        };
        self.shared.metrics.set(m::SOURCES_AGREE, &[], 1.0);
        let follow = self.config.follow;
        let target = follow.target(&agreed);
        // The checkpoint: the highest block lightcl knows to be final, from the EL or the floor.
        let checkpoint = match self.gate.floor() {
            Some(f) if f.number > local.finalized.number => f,
            _ => local.finalized,
        };
        let source_at_checkpoint = if checkpoint.number == 0 {
            None
        } else {
            self.sources.agreed_at(checkpoint.number).await.hash()
        };
        if let Some(out) =
            self.bootstrap(local, agreed, checkpoint, source_at_checkpoint, version).await?
        {
            self.publish(&local, Some((&agreed, target)), head_time, Mode::ElSyncing);
            return Ok(out);
        }
        // A local head above the target must still be on the sources' chain; a quorum that has
        // no block there yet (lagging replicas) is not evidence either way.
        let local_head_on_source = if local.head.number <= target.number {
            Some(true)
        } else {
            match self.sources.agreed_at(local.head.number).await {
                Agreed::Hash(h) => Some(h == local.head.hash),
                Agreed::Unknown => None,
            }
        };
        let view = View {
            local,
            agreed,
            follow,
            checkpoint,
            source_at_checkpoint,
            local_at_target: self.local_hash(target.number, local.head).await?,
            local_at_safe: self.local_hash(agreed.safe.number, local.head).await?,
            local_at_finalized: self.local_hash(agreed.finalized.number, local.head).await?,
            local_head_on_source,
            label_cap: self.label_cap().await,
        };
        let step = plan(&view);
        let lag = target.number.saturating_sub(local.head.number);
        let mode = match &step {
            Step::Diverged { .. } => Mode::Recovering,
            Step::FinalizedDivergence { .. } => Mode::Holding,
            Step::Conflict { .. } => Mode::Holding,
            _ if lag > self.config.api.ready_max_lag_blocks => Mode::CatchingUp,
            _ => Mode::Following,
        };
        self.publish(&local, Some((&agreed, target)), head_time, mode);
        match step {
            Step::Idle => Ok(StepOutcome::Idle),
            Step::Conflict { local, source } => {
                warn!(target: "lightcl::sync", height = local.number, finalized = %local.hash,
                    sources = %source, sources_finalized = %agreed.finalized,
                    "the sources hold another block at the height of lightcl's finalized block, \
                     without calling it final; not following them, holding (a finalized \
                     divergence if they finalize it)");
                Err(StepError::NoAgreement { number: local.number })
            }
            Step::Promote(next) => {
                let chain = Proven::at(local.head);
                self.forkchoice(version, &next, &Lineage { chain: &chain }).await?;
                debug!(target: "lightcl::sync", head = %next.head, safe = %next.safe,
                    finalized = %next.finalized, "labels moved");
                Ok(StepOutcome::Progress)
            }
            Step::Insert { from, to } => self.insert(from, to, local, agreed, version).await,
            Step::Diverged { at } => self.recover(at, local, agreed, target, version).await,
            Step::FinalizedDivergence { local, .. } => self.confirm_halt(local, agreed).await,
        }
    }

    /// Halts on a finalized divergence at `local` only once the quorum's finalized chain,
    /// walked by hash, holds another block there; otherwise holds (the by-number answer came
    /// from a stale replica).
    pub(super) async fn confirm_halt(
        &self,
        local: BlockRef,
        agreed: Heads,
    ) -> Result<StepOutcome, StepError> {
        match self.sources.confirm_at(agreed.finalized, local.number).await {
            Agreed::Hash(h) if h != local.hash => {
                Ok(StepOutcome::Halt(RunError::FinalizedDivergence {
                    number: local.number,
                    local: local.hash,
                    sources_hash: h,
                }))
            }
            confirmed => {
                warn!(target: "lightcl::sync", height = local.number, finalized = %local.hash,
                    confirmed = ?confirmed, "a source answered another block at the height of \
                    lightcl's finalized block, but the sources' finalized chain does not confirm \
                    it; holding");
                Err(StepError::NoAgreement { number: local.number })
            }
        }
    }

    /// During a refill below the floor, proves the chain through the floor down to the EL's head
    /// (at most [`REFILL_PROOF_DEPTH`] blocks) before anything is fed, so that neither the feed
    /// nor the gate takes a block of another branch for it (a load-balanced source can answer
    /// by number from replicas on different branches). Resumable: each round extends the proof
    /// so far, a flaky source costs retries, not the walk. `true` once the proof reaches `base`.
    pub(super) async fn prove_floor_lineage(&self, base: BlockRef) -> Result<bool, StepError> {
        let Some(floor) =
            self.gate.floor().filter(|f| self.gate.refilling() && base.number < f.number)
        else {
            return Ok(true);
        };
        let low = base.number.max(floor.number.saturating_sub(REFILL_PROOF_DEPTH));
        let mut chain = self.gate.floor_lineage().unwrap_or_else(|| Proven::at(floor));
        if chain.low().number <= low {
            return Ok(true);
        }
        info!(target: "lightcl::gate", floor = %floor, proven_to = chain.low().number, down_to = low,
            "proving the chain through the finality floor by parent hash before refilling below it");
        let added = self.sources.extend_down(&mut chain, low, WALK_BATCH, WALK_PER_ROUND).await;
        let done = chain.low().number <= low;
        self.gate.set_floor_lineage(chain);
        if done {
            return Ok(true);
        }
        if added == 0 {
            warn!(target: "lightcl::gate", floor = %floor,
                "no source serves the chain below the finality floor by hash; holding the refill");
            return Err(StepError::NoAgreement { number: floor.number });
        }
        Ok(false)
    }

    /// Fetches blocks `from..=to` (at most `prefetch` per round, so memory stays bounded) with
    /// a bounded prefetch window and feeds them in order. A first block that does not link to
    /// the local head is a divergence only if the quorum says the local head is not theirs.
    async fn insert(
        &self,
        from: u64,
        to: u64,
        local: Heads,
        agreed: Heads,
        version: FcuVersion,
    ) -> Result<StepOutcome, StepError> {
        let end = to.min(from + super::pipeline::MAX_BATCH - 1);
        if !self.prove_floor_lineage(local.head).await? {
            // The proof advanced and goes on next round (what it proved stays proven).
            return Ok(StepOutcome::Progress);
        }
        let (tx, mut rx) = mpsc::channel(self.fetch_shape().2);
        let target = self.config.follow.target(&agreed);
        // One block more than is fed, where there is one: the block above the last one fed
        // vouches for it (see the feed).
        let fetch_to = if end < target.number { end + 1 } else { end };
        let fetch = self.fetch_range(from, fetch_to, target, tx);
        let feed = async {
            let out = self.feed(&mut rx, &local, &agreed, version, CatchUp, end - from + 1).await;
            drop(rx);
            out
        };
        let ((), (fed, result)) = tokio::join!(fetch, feed);
        // Rounds that ended in an error are the other detectors' business.
        if fed.blocks > 0 && result.is_ok() {
            super::repair::watch_progress(&self.progress_watch, local.head)?;
        }
        match result {
            Ok(()) => Ok(StepOutcome::Progress),
            Err(StepError::Discontinuity { block, parent, local: below, served_by })
                if fed.blocks == 0 =>
            {
                self.forget_shared_from(block.number);
                // The block offered next does not sit on our head. Either our head is not on
                // the sources' chain, or the source that served it lies: ask the quorum.
                match self.sources.agreed_at(local.head.number).await {
                    Agreed::Hash(h) if h == local.head.hash => {
                        let e = SourceError::inconsistent(
                            self.sources.name(served_by),
                            format!(
                                "block {block} has parent {parent}, but the agreed block below it is {below}"
                            ),
                        );
                        self.sources.blame(served_by, &e);
                        Err(StepError::Source(e))
                    }
                    Agreed::Hash(_) => {
                        info!(target: "lightcl::sync", block = %block, parent = %parent, local_head = %below,
                            "the sources' chain does not hold the EL's head: divergence");
                        self.recover(local.head.number, local, agreed, target, version).await
                    }
                    Agreed::Unknown => Err(StepError::NoAgreement { number: local.head.number }),
                }
            }
            Err(StepError::Discontinuity { block, parent, local: below, .. }) => {
                self.forget_shared_from(block.number);
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

/// Errors within one step; the loop logs and retries them with backoff (except `Fatal`).
#[derive(Debug, thiserror::Error)]
pub(super) enum StepError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Gate(GateError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Fatal(RunError),
    #[error("the sources have no block {number} yet")]
    Missing { number: u64 },
    #[error("no source is available (all are backing off after errors)")]
    NoSource,
    #[error(
        "the sources give no agreed block at height {number} (down, lagging, backing off or split); cannot compare yet"
    )]
    NoAgreement { number: u64 },
    #[error("block {block} has parent {parent}, but the block below it here is {local}")]
    Discontinuity { block: BlockRef, parent: B256, local: BlockRef, served_by: usize },
    #[error(
        "the EL answered SYNCING for {head}: it cannot execute it yet (missing parent or state). \
         If this repeats after an EL crash, the EL came back in snap-sync mode: see the runbook"
    )]
    Pending { head: BlockRef },
    #[error("the EL rejected block {block} as INVALID: {reason}; this branch is not followed")]
    Invalid { block: BlockRef, reason: String },
    #[error(
        "the EL answers SYNCING to every block on top of its own head {head}, even after a \
         forkchoice to it: it does not have the state of its head"
    )]
    CannotExtendHead { head: BlockRef },
    #[error(
        "the EL took the blocks fed to it, but its head started at or below {head} for \
         {rounds} catch-up rounds in a row"
    )]
    NoProgress { head: BlockRef, rounds: u32 },
    #[error("divergence recovery spent its budget of searches and time; trying again later")]
    RecoveryBudget,
    #[error(
        "the EL cannot execute the sources' branch on top of {ancestor} (its state is gone) and \
         could not be rolled back there ({reason}); enable the debug API on the EL's JSON-RPC \
         (geth: --http.api ...,debug) or run it with historical state"
    )]
    CannotRewind { ancestor: BlockRef, reason: String },
    #[error(
        "forkchoiceUpdated to {wanted} answered VALID, but the EL's head is {}",
        have.map_or_else(|| "unreadable".to_string(), |b| b.to_string())
    )]
    HeadDidNotMove { wanted: BlockRef, have: Option<BlockRef> },
}

impl From<GateError> for StepError {
    fn from(e: GateError) -> Self {
        match e {
            GateError::Engine(e) => Self::Engine(e),
            GateError::State(e) => Self::State(e),
            other => Self::Gate(other),
        }
    }
}
