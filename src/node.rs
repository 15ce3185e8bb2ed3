//! The process wiring: sources and replica ELs from the configuration, the operations API, the
//! fleet and its coalesced source reads, new-head subscriptions, one follower per replica, and
//! shutdown (one cancellation token; every spawned task tracked and awaited).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::api::{self, Shared};
use crate::backoff::Backoff;
use crate::config::Config;
use crate::engine::{Engine, EngineClient};
use crate::metrics::Metrics;
use crate::source::{RpcSource, Source, SourceSet};
use crate::state::{ReplicaState, StateFile, StateLock, carry_over};
use crate::sync::RunError;
use crate::sync::ctx::{Ctx, admit};
use crate::sync::fleet::Fleet;
use crate::sync::follower::{Follower, HALT_REMINDER};
use crate::sync::forkchoice::Forkchoice;
use crate::sync::report::Reporter;
use crate::util::sleep_or_cancel;

/// One replica EL and what lightcl keeps for it.
#[derive(Debug)]
pub struct ReplicaParts {
    /// Its name (metrics, `/status`, `/readyz/<name>`).
    pub name: String,
    /// The EL.
    pub engine: Arc<dyn Engine>,
    /// Where its floor is kept, and the floor it held at start.
    pub state: ReplicaState,
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
    /// The L1 endpoints of `[l1]` (none without the section).
    pub l1: Vec<Arc<dyn crate::l1::L1>>,
}

impl Parts {
    /// One EL, named [`crate::config::DEFAULT_REPLICA_NAME`].
    pub fn single(
        engine: Arc<dyn Engine>,
        sources: Vec<Arc<dyn Source>>,
        state: impl Into<ReplicaState>,
        shared: Option<Arc<Shared>>,
    ) -> Self {
        let name = shared
            .as_ref()
            .map_or_else(|| crate::config::DEFAULT_REPLICA_NAME.to_string(), |s| s.name.clone());
        let state = state.into();
        Self {
            sources,
            replicas: vec![ReplicaParts { name, engine, state, shared }],
            l1: Vec::new(),
        }
    }

    /// With the L1 endpoints verification reads (`[l1]`).
    pub fn with_l1(mut self, l1: Vec<Arc<dyn crate::l1::L1>>) -> Self {
        self.l1 = l1;
        self
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
    let metrics = Metrics::new(&names);
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
            state: state.into(),
            shared: Some(shared),
        });
    }
    let mut l1: Vec<Arc<dyn crate::l1::L1>> = Vec::new();
    if let Some(c) = &config.l1 {
        for url in &c.urls {
            let t = Duration::from_millis(c.timeout_ms);
            let rpc =
                crate::l1::rpc::L1Rpc::new(url, t).map_err(|e| RunError::Api(e.to_string()))?;
            l1.push(Arc::new(rpc));
        }
    }
    run_with(config, Parts { sources, replicas, l1 }, shutdown).await
}

/// Runs the follower against `parts` (the simulation tests pass simulated ones): one follower
/// per replica, sharing the sources, their agreed view and the fetch. Every task spawned on the
/// way (the API server, subscriptions, shared fetches) is awaited before it returns.
pub async fn run_with(
    config: Config,
    parts: Parts,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let token = CancellationToken::new();
    let tasks = TaskTracker::new();
    let source_names: Vec<String> = parts.sources.iter().map(|s| s.name().to_string()).collect();
    let root = parts
        .replicas
        .iter()
        .find_map(|r| r.shared.as_ref().map(|s| (*s.metrics).clone()))
        .unwrap_or_else(|| Metrics::new(&source_names));
    let max_lag = config.api.ready_max_lag_blocks;
    let replicas: Vec<(ReplicaParts, Arc<Shared>)> = parts
        .replicas
        .into_iter()
        .map(|r| {
            let shared = r.shared.clone();
            let shared =
                shared.unwrap_or_else(|| Arc::new(Shared::replica(&r.name, &root, max_lag)));
            (r, shared)
        })
        .collect();
    let board = Arc::new(api::Board::new(replicas.iter().map(|(_, s)| s.clone()).collect()));
    if !config.api.listen.is_empty() {
        let listener = api::bind(&config.api.listen).await.map_err(RunError::Api)?;
        tasks.spawn(api::serve(listener, board, token.clone()));
    }
    let fleet = Arc::new(Fleet::new(
        replicas.iter().map(|(r, _)| r.name.clone()).collect(),
        config.labels,
        config.poll_interval(),
        config.prefetch,
    ));
    let mut sources = SourceSet::new(parts.sources, config.chain, config.chain_id, config.quorum)
        .with_grace(Duration::from_millis(config.quorum_grace_ms))
        .with_metrics(Arc::new(root.clone()))
        .with_held(config.block_cache_mib.saturating_mul(1 << 20))
        .with_genesis(config.genesis_number, config.genesis_hash, &config.genesis_named_by())
        .with_deposit_contract(config.deposit_contract())
        .with_requests_hash(config.send_requests_hash);
    if fleet.len() > 1 {
        sources = sources.with_coalescing(coalescing_window(&config));
    }
    let sources = Arc::new(sources);
    let l1 = match &config.l1 {
        Some(c) if !parts.l1.is_empty() => {
            let set = crate::l1::L1Set::new(parts.l1, c.quorum.required(c.urls.len()));
            Some(Arc::new(crate::l1::Verification::new(set, c)))
        }
        _ => None,
    };
    if !config.rollup_rpc_listen.is_empty() {
        let listener = api::bind(&config.rollup_rpc_listen).await.map_err(RunError::Api)?;
        if let Some((r, shared)) = replicas.first() {
            let view = api::rollup::RollupView {
                shared: shared.clone(),
                engine: r.engine.clone(),
                sources: sources.clone(),
                l1: l1.clone(),
                refs: Default::default(),
            };
            tasks.spawn(api::rollup::serve(listener, view, token.clone()));
        }
    }
    let followers = async {
        info!(target: "lightcl", config = %config.summary(), version = crate::VERSION, "starting");
        if !admit_at_start(&sources, config.chain_id, &token).await? {
            return Ok(());
        }
        spawn_subscriptions(&sources, &fleet, &root, &token, &tasks);
        let many = replicas.len() > 1;
        let runs = replicas.into_iter().enumerate().map(|(index, (r, shared))| {
            let with = FleetParts {
                sources: sources.clone(),
                fleet: fleet.clone(),
                tasks: tasks.clone(),
                l1: l1.clone(),
            };
            // In a fleet a replica's error stops that replica alone.
            let token = if many { token.child_token() } else { token.clone() };
            let span = tracing::info_span!("replica", name = %r.name);
            let run = replica(config.clone(), r, shared, index, with, token, many);
            if many {
                futures_util::future::Either::Left(tracing::Instrument::instrument(run, span))
            } else {
                futures_util::future::Either::Right(run)
            }
        });
        let results = futures_util::future::join_all(runs).await;
        results.into_iter().find(Result::is_err).unwrap_or(Ok(()))
    };
    tokio::pin!(followers);
    tokio::pin!(shutdown);
    let res = tokio::select! {
        res = &mut followers => res,
        _ = &mut shutdown => {
            info!(target: "lightcl", "shutdown requested; finishing the current engine call");
            token.cancel();
            followers.await
        }
    };
    token.cancel();
    tasks.close();
    tasks.wait().await;
    res
}

/// What a fleet's replicas share.
struct FleetParts {
    sources: Arc<SourceSet>,
    fleet: Arc<Fleet>,
    tasks: TaskTracker,
    l1: Option<Arc<crate::l1::Verification>>,
}

/// One replica: its follower, connected and run; in a fleet, a replica that stopped with an
/// error is held (see [`hold_failed`]).
async fn replica(
    config: Config,
    r: ReplicaParts,
    shared: Arc<Shared>,
    index: usize,
    with: FleetParts,
    token: CancellationToken,
    many: bool,
) -> Result<(), RunError> {
    let FleetParts { sources, fleet, tasks, l1 } = with;
    let ReplicaParts { engine, state: ReplicaState { file: store, floor }, .. } = r;
    if let Some(f) = floor {
        info!(target: "lightcl::gate", floor = %f, file = %store.path().display(),
            "finality floor read from the state file");
    }
    let max_lag = config.api.ready_max_lag_blocks;
    let report = Reporter::new(shared.clone(), fleet.clone(), index, max_lag);
    let metrics = shared.metrics.clone();
    let fc = Forkchoice::new(engine.clone(), config.chain, floor, Some(store), metrics);
    let wake = fleet.wake(index);
    let ctx = Ctx {
        config,
        engine,
        sources,
        fleet: fleet.clone(),
        index,
        token: token.clone(),
        tasks,
        wake,
        report,
        l1,
    };
    let res = match Follower::connect(ctx, fc).await {
        Ok(Some(f)) => f.run().await,
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    match res {
        Err(e) if many => {
            hold_failed(
                Reporter::new(shared, fleet.clone(), index, max_lag),
                &fleet,
                index,
                &token,
                e,
            )
            .await
        }
        res => res,
    }
}

/// How long a fleet's replicas share one source read: half a poll, at most half a second.
fn coalescing_window(config: &Config) -> Duration {
    (config.poll_interval() / 2).min(Duration::from_millis(500))
}

/// A replica of a fleet that stopped with an error: the others go on; it stays in `/status` and
/// `/readyz/<name>` as halted, saying why, until lightcl stops; then the error is returned.
async fn hold_failed(
    report: Reporter,
    fleet: &Fleet,
    i: usize,
    token: &CancellationToken,
    e: RunError,
) -> Result<(), RunError> {
    if token.is_cancelled() {
        return Err(e);
    }
    report.halted(e.to_string());
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

/// Admits the sources before any replica starts: as soon as the quorum can be met (the rest are
/// admitted when they answer). `Ok(false)`: cancelled first. A source of another chain is fatal.
async fn admit_at_start(
    sources: &SourceSet,
    chain_id: u64,
    token: &CancellationToken,
) -> Result<bool, RunError> {
    let mut backoff = Backoff::default();
    loop {
        match admit(sources, chain_id).await? {
            n if n >= sources.required() => return Ok(true),
            n => {
                let d = backoff.next_delay();
                warn!(target: "lightcl::source", admitted = n, required = sources.required(),
                    configured = sources.len(), retry_in = ?d,
                    "not enough sources answer yet to meet the quorum; retrying");
                if !sleep_or_cancel(token, d).await {
                    return Ok(false);
                }
            }
        }
    }
}

/// One task per push-capable source turning new-head notifications into wake-ups of every
/// replica. A subscription that ends (a dropped connection) is renewed after a jittered backoff,
/// and one that skips heads is said: either way the replicas poll at once, so the blocks the
/// subscription missed are fetched like any others. The tasks end when `token` is cancelled.
fn spawn_subscriptions(
    sources: &SourceSet,
    fleet: &Arc<Fleet>,
    metrics: &Metrics,
    token: &CancellationToken,
    tasks: &TaskTracker,
) {
    let sources: Vec<_> = sources.sources().cloned().collect();
    for s in sources {
        let (fleet, token, metrics) = (fleet.clone(), token.clone(), metrics.clone());
        tasks.spawn(async move {
            let gap = |what: &str, missed: u64| {
                metrics.add(crate::metrics::SOURCE_SUBSCRIPTION_GAPS, &[("source", s.name())], 1.0);
                info!(target: "lightcl::source", source = s.name(), missed,
                    "new-head subscription {what}; polling now, so no block is missed");
                fleet.wake_all();
            };
            let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
            while !token.is_cancelled() {
                match s.subscribe_heads().await {
                    Ok(Some(mut stream)) => {
                        backoff.reset();
                        let mut last: Option<u64> = None;
                        let mut connections = s.connections();
                        loop {
                            tokio::select! {
                                _ = token.cancelled() => return,
                                item = stream.next() => match item {
                                    Some(head) => {
                                        if let (Some(l), Some(n)) = (last, head)
                                            && n > l + 1
                                        {
                                            gap("skipped heads", n - l - 1);
                                        }
                                        last = head.or(last);
                                        if s.connections() > connections {
                                            connections = s.connections();
                                            gap("renewed after its connection dropped", 0);
                                        }
                                        fleet.wake_all();
                                    }
                                    None => break,
                                },
                            }
                        }
                        gap("ended (connection dropped?); renewing it", 0);
                    }
                    Ok(None) => return,
                    Err(e) => warn!(target: "lightcl::source", source = s.name(), error = %e,
                        "cannot subscribe to new heads; polling only until it can"),
                }
                if !sleep_or_cancel(&token, jittered(backoff.next_delay())).await {
                    return;
                }
            }
        });
    }
}

/// `d` plus up to half of it again, so that many clients dropped together do not reconnect in
/// step.
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |t| u64::from(t.subsec_nanos()));
    let half = (d.as_millis() as u64 / 2).max(1);
    d + Duration::from_millis(nanos % half)
}
