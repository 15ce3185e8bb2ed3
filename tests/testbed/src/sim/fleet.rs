//! Fleet histories: one lightcl driving several simulated replica ELs from the same simulated
//! sources. Each EL reports its writes to its own checkers; on top, every forkchoice goes to the
//! fleet checker ([`super::check::fleet::Watch`]) for the lockstep rule (a safe or finalized
//! label moves only to a block every ready replica holds, by hash), and the sources count what
//! they were asked, so that a test can compare the cost of three replicas with the cost of one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use lightcl::api::Shared;
use lightcl::chain::Heads;
use lightcl::config::{Bootstrap, ChainKind, Config, Follow, LabelMode, SourceEntry};
use lightcl::engine::{BlockAt, Engine, EngineError, LocalBlock, SyncStatus};
use lightcl::payload::{FcuVersion, Payload};
use lightcl::source::Source;
use lightcl::state::StateFile;
use lightcl::{Parts, ReplicaParts, run_with};
use tokio::time::Instant;

use super::check::fleet::Watch;
use super::check::liveness;
use super::el::{Faults, P2p, Profile, SimEl};
use super::source::{Behaviour, SimSource};
use super::{SharedWorld, World, lock};

/// One replica of a fleet history.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaSetup {
    /// Its EL's profile.
    pub profile: Profile,
    /// Each newPayload takes this long (ms).
    pub payload_ms: u64,
    /// Goes down at this time (ms) and never comes back.
    pub dies_at: Option<u64>,
    /// Goes down at this time (ms) for this long (ms), keeping its chain.
    pub outage: Option<(u64, u64)>,
    /// Starts on a rival branch of this many blocks above height 2 (a diverged replica).
    pub rival: Option<u64>,
    /// Its P2P peers (`None`: none), for a bootstrap by EL sync.
    pub p2p: Option<P2p>,
}

impl ReplicaSetup {
    /// A healthy replica of `profile`.
    pub fn healthy(profile: Profile) -> Self {
        Self { profile, payload_ms: 0, dies_at: None, outage: None, rival: None, p2p: None }
    }
}

/// A fleet history.
#[derive(Debug, Clone)]
pub struct FleetSetup {
    /// Seed.
    pub seed: u64,
    /// The replicas.
    pub replicas: Vec<ReplicaSetup>,
    /// Honest sources.
    pub sources: usize,
    /// The sources serve raw blocks.
    pub raw: bool,
    /// Honest chain length at start.
    pub initial_len: u64,
    /// A block this often (ms) until `duration_ms`; then the chain stops.
    pub block_ms: u64,
    /// Length of the growing phase (ms).
    pub duration_ms: u64,
    /// How long after it the live replicas have to converge (ms).
    pub settle_ms: u64,
    /// independent or lockstep.
    pub labels: LabelMode,
    /// `ready_max_lag_blocks`.
    pub ready_max_lag: u64,
    /// lightcl's prefetch window.
    pub prefetch: usize,
    /// Reorgs of the honest chain: (time ms, depth), in order.
    pub reorgs: Vec<(u64, u64)>,
    /// Watch every label move for the lockstep rule (whatever `labels` says: a test shows that
    /// the watch catches independent labels).
    pub watch_lockstep: bool,
    /// lightcl's bootstrap mode and its `bootstrap_min_gap_blocks`.
    pub bootstrap: (Bootstrap, u64),
}

impl FleetSetup {
    /// `replicas` healthy replicas of the given profiles following one honest source: a 300-block
    /// chain to catch up, then a block every 500 ms for 10 s.
    pub fn healthy(seed: u64, profiles: &[Profile]) -> Self {
        Self {
            seed,
            replicas: profiles.iter().map(|p| ReplicaSetup::healthy(*p)).collect(),
            sources: 1,
            raw: true,
            initial_len: 300,
            block_ms: 500,
            duration_ms: 10_000,
            settle_ms: 20_000,
            labels: LabelMode::Independent,
            ready_max_lag: 4,
            prefetch: 64,
            reorgs: Vec::new(),
            watch_lockstep: false,
            bootstrap: (Bootstrap::Auto, 10_000),
        }
    }
}

/// What a fleet history showed.
#[derive(Debug, Clone, Default)]
pub struct FleetOutcome {
    /// Invariant, lockstep and liveness violations (empty: passed).
    pub violations: Vec<String>,
    /// Per replica: whether it holds the honest target and labels at the end (dead ones: false).
    pub converged: Vec<bool>,
    /// Per replica: payloads it received.
    pub payloads: Vec<u64>,
    /// Label moves the lockstep watch checked.
    pub lockstep_checks: u64,
    /// Source requests, all sources together: label reads, hash lookups, blocks.
    pub label_reads: u64,
    /// Hash lookups.
    pub hash_reads: u64,
    /// Blocks served.
    pub blocks_served: u64,
    /// The honest tip at the end.
    pub tip: u64,
}

/// A replica's EL as lightcl sees it: the simulated EL, its forkchoices watched.
#[derive(Debug, Clone)]
struct Watched {
    i: usize,
    el: SimEl,
    watch: Arc<Watch>,
}

impl Engine for Watched {
    fn chain_id(&self) -> BoxFuture<'_, Result<u64, EngineError>> {
        self.el.chain_id()
    }
    fn capabilities(&self) -> BoxFuture<'_, Result<Vec<String>, EngineError>> {
        self.el.capabilities()
    }
    fn block(&self, at: BlockAt) -> BoxFuture<'_, Result<Option<LocalBlock>, EngineError>> {
        self.el.block(at)
    }
    fn new_payload<'a>(
        &'a self,
        p: &'a Payload,
    ) -> BoxFuture<'a, Result<lightcl::engine::PayloadStatus, EngineError>> {
        self.el.new_payload(p)
    }
    fn forkchoice_updated<'a>(
        &'a self,
        version: FcuVersion,
        heads: &'a Heads,
    ) -> BoxFuture<'a, Result<lightcl::engine::PayloadStatus, EngineError>> {
        Box::pin(async move {
            self.watch.check(self.i, heads);
            #[allow(clippy::disallowed_methods)] // a wrapper that passes the write on
            self.el.forkchoice_updated(version, heads).await
        })
    }
    #[allow(clippy::disallowed_methods)] // a wrapper that passes the write on
    fn set_head(&self, number: u64) -> BoxFuture<'_, Result<(), EngineError>> {
        self.el.set_head(number)
    }
    fn sync_status(&self) -> BoxFuture<'_, Result<SyncStatus, EngineError>> {
        self.el.sync_status()
    }

    fn output_parts(
        &self,
        number: u64,
    ) -> BoxFuture<'_, Result<Option<lightcl::chain::output::OutputParts>, EngineError>> {
        self.el.output_parts(number)
    }
}

impl FleetSetup {
    fn config(&self) -> Config {
        Config {
            chain: ChainKind::Ethereum,
            chain_id: 1337,
            sources: (0..self.sources)
                .map(|i| SourceEntry::Url(format!("http://sim{i}")))
                .collect(),
            follow: Follow::Latest,
            poll_interval_ms: 1_000,
            prefetch: self.prefetch,
            fetch_concurrency: 4.min(self.prefetch),
            source_timeout_ms: 2_000,
            labels: self.labels,
            bootstrap: self.bootstrap.0,
            bootstrap_min_gap_blocks: self.bootstrap.1,
            bootstrap_stall_secs: 20,
            api: lightcl::config::ApiConfig {
                listen: String::new(),
                ready_max_lag_blocks: self.ready_max_lag,
            },
            ..Config::default()
        }
    }
}

/// Runs one fleet history on a paused clock.
pub fn run_fleet(setup: &FleetSetup) -> FleetOutcome {
    crate::timing::test_started();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build();
    match rt {
        Ok(rt) => rt.block_on(run_async(setup)),
        Err(e) => FleetOutcome {
            violations: vec![format!("cannot build a runtime: {e}")],
            ..FleetOutcome::default()
        },
    }
}

/// Whether `el` holds the honest tip and labels (what following latest converges on).
fn converged(world: &SharedWorld, el: &SimEl) -> bool {
    liveness::converged(&lock(world), el.heads(), Follow::Latest)
}

async fn run_async(setup: &FleetSetup) -> FleetOutcome {
    let world: SharedWorld = Arc::new(Mutex::new(World::new(setup.initial_len)));
    let els: Vec<SimEl> = setup
        .replicas
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let el = SimEl::new(world.clone(), r.profile, setup.seed ^ (i as u64 * 31 + 1));
            el.set_strict(true);
            el.set_faults(Faults { payload_ms: r.payload_ms, ..Faults::default() });
            el.set_p2p(r.p2p);
            if let Some(extra) = r.rival {
                let mut w = lock(&world);
                let honest = w.honest.clone();
                let rival = w.branch(&honest, 2, extra);
                let head = (rival.len() - 1) as u64;
                el.prefill(&rival, head, Some(1), Some(1));
            }
            el
        })
        .collect();
    let sources: Vec<SimSource> = (0..setup.sources)
        .map(|i| {
            let s = SimSource::new(
                world.clone(),
                &format!("s{i}"),
                Behaviour::Honest,
                setup.seed + i as u64,
            );
            s.set_raw(setup.raw);
            s
        })
        .collect();
    let start = Instant::now();
    let names: Vec<String> = (0..sources.len()).map(|i| format!("s{i}")).collect();
    let root = lightcl::api::Metrics::new(&names);
    let status: Vec<Arc<Shared>> = (0..els.len())
        .map(|i| Arc::new(Shared::replica(&format!("r{i}"), &root, setup.ready_max_lag)))
        .collect();
    let watch = Arc::new(Watch::new(
        els.clone(),
        status.clone(),
        setup.watch_lockstep,
        start + Duration::from_secs(3),
    ));
    let grow_until = start + Duration::from_millis(setup.duration_ms);
    let end_at = grow_until + Duration::from_millis(setup.settle_ms);
    // The world's clock: blocks, deaths and outages.
    let driver = {
        let (world, els, watch, replicas) =
            (world.clone(), els.clone(), watch.clone(), setup.replicas.clone());
        let mut reorgs: std::collections::VecDeque<(u64, u64)> =
            setup.reorgs.iter().copied().collect();
        let block_ms = setup.block_ms.max(1);
        tokio::spawn(async move {
            let mut next = start + Duration::from_millis(block_ms);
            loop {
                tokio::time::sleep_until(next).await;
                let now = Instant::now();
                let ms = now.duration_since(start).as_millis() as u64;
                if now < grow_until {
                    lock(&world).grow(1);
                }
                while let Some(&(at, depth)) = reorgs.front() {
                    if at > ms || now >= grow_until {
                        break;
                    }
                    lock(&world).reorg(depth);
                    reorgs.pop_front();
                }
                for (i, r) in replicas.iter().enumerate() {
                    let payload_ms = r.payload_ms;
                    if r.dies_at.is_some_and(|t| ms >= t) {
                        watch.set_dead(i, true);
                        els[i].set_faults(Faults { down: true, payload_ms, ..Faults::default() });
                    } else if let Some((at, len)) = r.outage {
                        let down = ms >= at && ms < at + len;
                        watch.set_dead(i, down || (ms >= at && ms < at + len + 5_000));
                        els[i].set_faults(Faults { down, payload_ms, ..Faults::default() });
                    }
                }
                next = now + Duration::from_millis(block_ms);
            }
        })
    };
    let replicas: Vec<ReplicaParts> = els
        .iter()
        .enumerate()
        .map(|(i, el)| {
            let name = format!("r{i}");
            let shared = status[i].clone();
            ReplicaParts {
                name,
                engine: Arc::new(Watched { i, el: el.clone(), watch: watch.clone() })
                    as Arc<dyn Engine>,
                state: StateFile::memory(Default::default()).into(),
                shared: Some(shared),
            }
        })
        .collect();
    let parts = Parts {
        sources: sources.iter().map(|s| Arc::new(s.clone()) as Arc<dyn Source>).collect(),
        replicas,
        l1: Vec::new(),
    };
    let stop = tokio::time::sleep_until(end_at);
    let res = run_with(setup.config(), parts, stop).await;
    driver.abort();
    let mut out = FleetOutcome::default();
    if let Err(e) = res {
        out.violations.push(format!("lightcl stopped with an error: {e}"));
    }
    for (i, el) in els.iter().enumerate() {
        let record = el.record();
        out.violations.extend(record.violations.iter().map(|v| format!("replica {i}: {v}")));
        out.payloads.push(record.payloads);
        let dead = setup.replicas[i].dies_at.is_some();
        let ok = converged(&world, el);
        if !dead && !ok {
            let w = lock(&world);
            out.violations.push(format!(
                "replica {i} did not converge: {:?}, honest tip {} safe #{} finalized #{}",
                el.heads(),
                w.tip(),
                w.safe,
                w.finalized
            ));
        }
        out.converged.push(ok);
    }
    out.violations.extend(watch.violations());
    out.lockstep_checks = watch.checks();
    for s in &sources {
        let (l, h, b) = s.counts();
        out.label_reads += l;
        out.hash_reads += h;
        out.blocks_served += b;
    }
    out.tip = lock(&world).tip().number;
    out
}
