//! One simulated history: a world, an EL, sources, lightcl (restarted when the history says),
//! events on a timeline, then a healing phase; and what the checkers saw (the EL's at every
//! write, [`super::check::liveness`] at the end, on what the history measured).
//! Everything is a function of [`Setup`], and a random `Setup` is a function of a seed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lightcl::Config;
use lightcl::api::{Mode, Shared, SourceStatus};
use lightcl::chain::BlockRef;
use lightcl::config::{Bootstrap, ChainKind, Follow, SourceEntry, VerifyMode};
use lightcl::engine::Engine;
use lightcl::source::Source;
use lightcl::source::quorum::{Quorum, QuorumName};
use lightcl::state::StateFile;
use lightcl::{Parts, RunError, run_with};
use tokio::time::Instant;

use super::check::{Record, liveness};
use super::el::{Faults, P2p, Profile, SimEl};
use super::source::{Behaviour, SimSource, Tamper};
use super::{Rng, SharedWorld, World, lock};

/// How the EL starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefill {
    /// Fresh, at genesis.
    Genesis,
    /// The honest chain up to this height, labels `(safe, finalized)` (None: unset).
    Honest { head: u64, safe: Option<u64>, finalized: Option<u64> },
    /// A branch of its own: the honest chain up to `keep`, then `extra` blocks of its own; its
    /// finalized label at `finalized` (may be above `keep`: a finalized divergence).
    Rival { keep: u64, extra: u64, finalized: Option<u64> },
}

/// Something that happens at a time in a history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    /// The honest chain reorgs this deep (above its finalized block).
    Reorg(u64),
    /// The honest chain reorgs below its finalized block (lightcl must halt if it had it).
    FinalityReorg,
    /// The honest chain is rebuilt from this height up (a finalized divergence far below its
    /// finalized block); the old chain becomes the rival branch that flapping sources serve.
    Rebuild(u64),
    /// The EL crashes and restarts.
    ElCrash,
    /// The EL crashes and comes back with its state rewound below blocks it keeps (op-geth).
    ElCrashKeepingBlocks,
    /// The EL crashes, keeps the blocks above its state and comes back in snap-sync mode,
    /// ignoring every payload until restarted (geth, op-geth).
    ElCrashIntoSnapSync,
    /// The EL's debug API goes away (debug_setHead fails).
    NoDebugApi,
    /// The EL is unreachable for this long (ms).
    ElDown(u64),
    /// The EL's label reads fail with this probability for this long (ms).
    LabelReadErrors(f64, u64),
    /// lightcl is stopped and started again.
    LightclRestart,
    /// A source changes behaviour.
    Behave(usize, Behaviour),
    /// L1 reorgs above its finalized block; the L2 chain built on the dropped blocks reorgs too.
    L1Reorg,
}

/// Everything a history is made of.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The seed it came from (for the replay command).
    pub seed: u64,
    /// EL profile.
    pub profile: Profile,
    /// What the head follows.
    pub follow: Follow,
    /// Quorum.
    pub quorum: Quorum,
    /// One behaviour per source.
    pub sources: Vec<Behaviour>,
    /// Error rate of every source.
    pub error_rate: f64,
    /// One source is slow by this much (ms; 0: none).
    pub slow_ms: u64,
    /// The last source hangs on this share of requests for this long (ms) and then times out,
    /// as a source does that stops answering past `source_timeout_ms`.
    pub hang: Option<(f64, u64)>,
    /// Honest chain length at start.
    pub initial_len: u64,
    /// How the EL starts.
    pub prefill: Prefill,
    /// Events, by time in ms.
    pub events: Vec<(u64, Event)>,
    /// The honest chain grows a block this often (ms) during the adversarial phase.
    pub block_ms: u64,
    /// Length of the adversarial phase (ms); then everything heals and the chain stops.
    pub duration_ms: u64,
    /// How long after healing lightcl has to converge (ms).
    pub heal_ms: u64,
    /// lightcl's prefetch window.
    pub prefetch: usize,
    /// The EL's P2P peers (`None`: it has none).
    pub p2p: Option<P2p>,
    /// lightcl's bootstrap mode and its `bootstrap_min_gap_blocks`.
    pub bootstrap: (Bootstrap, u64),
    /// Which sources serve raw blocks (bit i: source i), the others JSON.
    pub raw_sources: u64,
    /// lightcl's `fetch_batch`.
    pub fetch_batch: usize,
    /// lightcl starts with this honest block as its finality floor (a state file kept from an
    /// earlier run), if any.
    pub initial_floor: Option<u64>,
    /// lightcl's `source_timeout_ms` (`None`: 2 s, or the hang's length if longer).
    pub source_timeout_ms: Option<u64>,
    /// Source `i` fails this share of its requests for the whole history, healing included (a
    /// flaky provider).
    pub flaky: Option<(usize, f64)>,
    /// The faults of this history leave progress possible (a slow or flaky source, nothing
    /// else): the EL may never lag more than this many blocks behind the honest tip during them.
    pub live_lag: Option<u64>,
    /// Source `i` is on a provider's plan of this many calls per second for the whole history,
    /// healing included, and says `Retry-After` over it or not (a rate-limiting provider).
    pub rate_limited: Option<(usize, u32, bool)>,
    /// Verification against a simulated L1, in this mode (every source then serves raw blocks:
    /// the simulated JSON blocks carry no transactions).
    pub l1: Option<VerifyMode>,
    /// Blocks carry execution requests (deposits, withdrawal requests queued across blocks),
    /// which lightcl rebuilds from the sources' logs and storage.
    pub requests: bool,
}

/// What a history showed.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Invariant and liveness violations (empty: passed).
    pub violations: Vec<String>,
    /// lightcl halted.
    pub halted: bool,
    /// The L1-origin verdicts `/status` showed, as `label:result` (with an L1).
    pub l1_seen: Vec<String>,
    /// The EL reached the honest target with the honest labels.
    pub converged: bool,
    /// The checker's counts.
    pub record: Record,
    /// Source health at the end (from the last lightcl run).
    pub sources: Vec<SourceStatus>,
    /// The EL's head height when the sources healed (progress made under the faults).
    pub head_at_heal: u64,
    /// Most blocks served by the sources between two payloads given to the EL.
    pub max_in_flight: i64,
    /// Blocks the sources served more than once (each counted once).
    pub served_twice: usize,
    /// Every mode `/status` showed (sampled every 500 ms).
    pub modes: Vec<Mode>,
    /// Why lightcl halted, as `/status` said.
    pub halted_why: Option<String>,
    /// The largest lag (honest tip minus EL head, in blocks) seen just before a new block, from
    /// a third of the adversarial phase until it ends.
    pub max_lag: u64,
}

impl Setup {
    /// A history with one honest source, an EL at genesis, and no events.
    pub fn quiet(seed: u64) -> Self {
        Self {
            seed,
            profile: Profile::Geth,
            follow: Follow::Safe,
            quorum: Quorum::Named(QuorumName::All),
            sources: vec![Behaviour::Honest],
            error_rate: 0.0,
            slow_ms: 0,
            hang: None,
            initial_len: 40,
            prefill: Prefill::Genesis,
            events: Vec::new(),
            block_ms: 2_000,
            duration_ms: 30_000,
            heal_ms: 600_000,
            prefetch: 32,
            p2p: None,
            bootstrap: (Bootstrap::Auto, 10_000),
            raw_sources: 0,
            fetch_batch: lightcl::config::DEFAULT_FETCH_BATCH,
            initial_floor: None,
            source_timeout_ms: None,
            flaky: None,
            live_lag: None,
            rate_limited: None,
            l1: None,
            requests: false,
        }
    }

    /// A random adversarial history for `seed`. At most a minority of the quorum lies about
    /// labels, so the honest chain is what any quorum agrees on.
    pub fn random(seed: u64) -> Self {
        let mut r = Rng::new(seed);
        let mut s = Self::quiet(seed);
        s.profile = r.pick(&[Profile::Geth, Profile::OpGeth, Profile::Reth]);
        s.follow = r.pick(&[Follow::Safe, Follow::Latest]);
        let n = r.range(1, 3) as usize;
        s.quorum = match n {
            1 => Quorum::Named(QuorumName::All),
            2 => Quorum::Named(QuorumName::All),
            _ => r.pick(&[Quorum::Named(QuorumName::All), Quorum::Named(QuorumName::Majority)]),
        };
        let required = s.quorum.required(n);
        s.sources = vec![Behaviour::Honest; n];
        // Liars: payload liars anywhere (verification and linking must catch them); label and
        // branch liars only where the honest sources still make a quorum without them.
        let payload_liars = [
            Behaviour::SiblingAtTarget,
            Behaviour::SiblingBlocks,
            Behaviour::Tamper(Tamper::DropWithdrawals),
            Behaviour::Tamper(Tamper::ChangeWithdrawal),
            Behaviour::Tamper(Tamper::ChangeHeader),
            Behaviour::WrongParent,
        ];
        let label_liars =
            [Behaviour::LabelLies, Behaviour::Flapping, Behaviour::Lagging(7), Behaviour::Down];
        if n > 1 && r.chance(0.6) {
            let i = r.range(0, n as u64 - 1) as usize;
            s.sources[i] = if n > required && r.chance(0.5) {
                r.pick(&label_liars)
            } else {
                r.pick(&payload_liars)
            };
        } else if r.chance(0.3) {
            s.sources[0] = r.pick(&[Behaviour::Lagging(3), Behaviour::Flapping]);
        } else if n == 1 && r.chance(0.2) {
            // A single source with one bad block: nobody else to ask, hold right below it.
            s.sources[0] = Behaviour::TamperAt(Tamper::ChangeHeader, r.range(1, 60));
        }
        if r.chance(0.3) {
            s.error_rate = r.pick(&[0.05, 0.2]);
        }
        if r.chance(0.2) {
            s.slow_ms = r.pick(&[300, 3_000]);
        }
        s.initial_len = r.range(0, 40);
        let len = s.initial_len;
        s.prefill = match r.range(0, 3) {
            0 => Prefill::Genesis,
            1 | 2 => {
                let head = r.range(0, len);
                let fin = len.saturating_sub(12).min(head);
                let f = r.chance(0.8).then(|| r.range(0, fin));
                let safe = f.map(|f| r.range(f, head.min(len.saturating_sub(4)).max(f)));
                Prefill::Honest { head, safe, finalized: f }
            }
            _ => {
                let keep = r.range(len.saturating_sub(12), len);
                let extra = r.range(1, 16);
                Prefill::Rival { keep, extra, finalized: Some(keep.min(len.saturating_sub(12))) }
            }
        };
        s.duration_ms = r.range(8_000, 30_000);
        let kinds = r.range(0, 4);
        for _ in 0..kinds {
            let t = r.range(0, s.duration_ms);
            let e = match r.range(0, 8) {
                0 | 1 => Event::Reorg(r.range(1, 10)),
                2 => Event::ElCrash,
                3 => Event::ElDown(r.range(1_000, 20_000)),
                4 => Event::LabelReadErrors(r.pick(&[0.3, 1.0]), r.range(1_000, 10_000)),
                5 => Event::LightclRestart,
                6 if r.chance(0.2) => Event::FinalityReorg,
                _ => Event::Reorg(r.range(1, 4)),
            };
            s.events.push((t, e));
        }
        s.events.sort_by_key(|(t, _)| *t);
        s.prefetch = r.pick(&[8, 32, 256]);
        // A third of the histories bootstrap through the EL's own P2P sync when it is more than
        // 8 blocks behind: peers that serve the chain, none, an EL that never syncs on a
        // forkchoice, or peers on a branch of their own.
        if r.chance(0.33) {
            let diverge = r.chance(0.2).then(|| r.range(0, s.initial_len));
            let p2p = P2p {
                peers: r.pick(&[0, 1, 5]),
                syncs: r.chance(0.85),
                blocks_per_sec: r.pick(&[1, 5, 50]),
                peers_diverge_at: diverge,
            };
            // "el-sync" never falls back: only where the peers can serve the chain.
            let works = p2p.peers > 0 && p2p.syncs && diverge.is_none();
            let mode = if works && r.chance(0.3) { Bootstrap::ElSync } else { Bootstrap::Auto };
            s.bootstrap = (mode, 8);
            s.p2p = Some(p2p);
        }
        // Raw blocks from any subset of the sources, fetched in batches of any size.
        s.raw_sources = r.range(0, (1 << n) - 1);
        s.fetch_batch = r.pick(&[1, 4, 16]);
        // A flaky provider: one source fails 1 % of its requests for the whole history.
        if r.chance(0.15) {
            s.flaky = Some((r.range(0, n as u64 - 1) as usize, 0.01));
        }
        if r.chance(0.012) {
            s.long_chain(&mut r);
        } else if r.chance(0.08) {
            s.live_during_faults(&mut r);
        }
        // A provider's plan on one source (drawn last: the draws above stay as they were).
        if r.chance(0.15) {
            let i = r.range(0, n as u64 - 1) as usize;
            s.rate_limited = Some((i, r.pick(&[8, 20, 60]), r.chance(0.5)));
        }
        // Verification against L1 in a quarter of the histories (drawn last): L1 reorgs, and a
        // source of a chain not built on this L1 or one that finalizes too early, where the
        // honest sources still make the quorum without it.
        if r.chance(0.25) {
            s.with_l1(r.pick(&[VerifyMode::Enforce, VerifyMode::Alarm]));
            let honest: Vec<usize> =
                (0..n).filter(|&i| s.sources[i] == Behaviour::Honest).collect();
            // (Not in the histories judged for their lag during faults: their bound was set
            // for the liars they draw themselves.)
            if honest.len() > required && r.chance(0.5) && s.live_lag.is_none() {
                let i = honest[r.range(0, honest.len() as u64 - 1) as usize];
                s.sources[i] = r.pick(&[Behaviour::FalseOrigins, Behaviour::EagerFinal]);
            }
            // An L1 reorg takes the honest safe block back with the L2 blocks built on the
            // dropped L1 blocks: not in the histories judged for their lag during faults.
            for _ in 0..r.range(0, 2) {
                let t = r.range(0, s.duration_ms);
                if s.live_lag.is_none() {
                    s.events.push((t, Event::L1Reorg));
                }
            }
            s.events.sort_by_key(|(t, _)| *t);
        }
        // Execution requests in a quarter of the others (drawn last), with a source that
        // tampers with what they are rebuilt from, or whose log index lags, now and then.
        if s.l1.is_none() && r.chance(0.25) {
            s.requests = true;
            let honest: Vec<usize> =
                (0..n).filter(|&i| s.sources[i] == Behaviour::Honest).collect();
            if honest.len() > 1 && r.chance(0.5) && s.live_lag.is_none() {
                let i = honest[r.range(0, honest.len() as u64 - 1) as usize];
                s.sources[i] = r.pick(&[
                    Behaviour::Tamper(Tamper::DepositLog),
                    Behaviour::Tamper(Tamper::QueueSlot),
                    Behaviour::LaggingLogIndex,
                ]);
            }
        }
        s
    }

    /// How many simulated L1 endpoints verification reads (two, agreeing, for odd seeds).
    pub fn l1_endpoints(&self) -> usize {
        1 + (self.seed % 2) as usize
    }

    /// Verifies against a simulated L1 in `mode`; every source serves raw blocks.
    pub fn with_l1(&mut self, mode: VerifyMode) {
        self.l1 = Some(mode);
        self.raw_sources = (1 << self.sources.len()) - 1;
    }

    /// A long chain (hundreds to a thousand blocks) far above the EL, where bootstrap's proof
    /// walk and the refill proof below the floor run: an EL far behind (or crashed later), with
    /// or without peers, lightcl's floor kept from an earlier run, load-balanced sources that
    /// flip between branches through every phase, and sometimes the chain rebuilt far below
    /// that floor (the halt is then the right end).
    fn long_chain(&mut self, r: &mut Rng) {
        let len = r.range(400, 1_200);
        self.initial_len = len;
        let head = r.range(0, len / 3);
        let fin = head.saturating_sub(r.range(0, 8));
        self.prefill = if r.chance(0.2) {
            Prefill::Genesis
        } else {
            Prefill::Honest { head, safe: Some(fin), finalized: Some(fin) }
        };
        self.initial_floor = (fin > 0 && r.chance(0.6)).then_some(fin);
        self.events.clear();
        if r.chance(0.25) && fin > 4 {
            self.events.push((r.range(0, 2_000), Event::Rebuild(r.range(1, fin - 1))));
        }
        if r.chance(0.3) {
            self.events.push((r.range(2_000, 8_000), Event::ElCrash));
        }
        if r.chance(0.4) {
            self.events.push((r.range(500, 6_000), Event::Reorg(r.range(2, 10))));
        }
        self.events.sort_by_key(|(t, _)| *t);
        // A flapping source alone, or beside an honest majority.
        let n = self.sources.len();
        if n == 1 || (n > self.quorum.required(n) && r.chance(0.5)) {
            self.sources[0] = Behaviour::Flapping;
        }
        self.p2p = r.chance(0.6).then(|| P2p {
            peers: r.pick(&[1, 5]),
            syncs: true,
            blocks_per_sec: r.pick(&[50, 400]),
            peers_diverge_at: None,
        });
        self.bootstrap = (r.pick(&[Bootstrap::Auto, Bootstrap::Replay]), 20);
        self.duration_ms = r.range(8_000, 20_000);
        self.block_ms = 1_000;
    }

    /// Faults that leave progress possible (one source far away or flaky, a majority with a
    /// liar it can outvote), and nothing else: lightcl must keep up during them, not only after
    /// they heal.
    fn live_during_faults(&mut self, r: &mut Rng) {
        let n = self.sources.len();
        self.sources = vec![Behaviour::Honest; n];
        if n == 3 && r.chance(0.5) {
            self.quorum = Quorum::Named(QuorumName::Majority);
            self.sources[1] =
                r.pick(&[Behaviour::LabelLies, Behaviour::Down, Behaviour::WrongParent]);
        }
        self.events.clear();
        self.error_rate = 0.0;
        self.hang = None;
        self.p2p = None;
        self.bootstrap = (Bootstrap::Auto, 10_000);
        self.prefill = Prefill::Genesis;
        self.initial_len = r.range(0, 40);
        self.slow_ms = r.pick(&[0, 300]);
        self.flaky = Some((r.range(0, n as u64 - 1) as usize, 0.01));
        self.duration_ms = r.range(20_000, 40_000);
        self.live_lag = Some(12);
    }

    fn config(&self) -> Config {
        Config {
            chain: ChainKind::Ethereum,
            chain_id: 1337,
            sources: (0..self.sources.len())
                .map(|i| SourceEntry::Url(format!("http://sim{i}")))
                .collect(),
            quorum: self.quorum,
            follow: self.follow,
            poll_interval_ms: 1_000,
            prefetch: self.prefetch,
            fetch_concurrency: 4.min(self.prefetch),
            fetch_batch: self.fetch_batch,
            source_timeout_ms: self
                .source_timeout_ms
                .unwrap_or_else(|| self.hang.map_or(2_000, |(_, ms)| ms.max(2_000))),
            api: lightcl::config::ApiConfig { listen: String::new(), ready_max_lag_blocks: 4 },
            bootstrap: self.bootstrap.0,
            bootstrap_min_gap_blocks: self.bootstrap.1,
            bootstrap_stall_secs: 20,
            l1: self.l1.map(|verify| lightcl::config::L1Config {
                // Odd seeds: two L1 endpoints that must agree.
                urls: (0..self.l1_endpoints()).map(|i| format!("http://sim-l1-{i}")).collect(),
                quorum: Quorum::default(),
                chain_id: Some(900),
                verify,
                portal: None,
                anchor_state_registry: Some(super::l1::REGISTRY),
                dispute_game_factory: None,
                game_type: None,
                audit_interval_secs: 5,
                timeout_ms: 2_000,
            }),
            ..Config::default()
        }
    }
}

/// Runs one history on a paused clock in a fresh single-threaded runtime.
pub fn run(setup: &Setup) -> Outcome {
    crate::timing::test_started();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build();
    match rt {
        Ok(rt) => rt.block_on(run_async(setup)),
        Err(e) => Outcome {
            violations: vec![format!("cannot build a runtime: {e}")],
            halted: false,
            l1_seen: Vec::new(),
            converged: false,
            record: Record::default(),
            sources: Vec::new(),
            head_at_heal: 0,
            max_in_flight: 0,
            served_twice: 0,
            max_lag: 0,
            modes: Vec::new(),
            halted_why: None,
        },
    }
}

/// Whether the EL holds the honest target and labels.
fn converged(world: &SharedWorld, el: &SimEl, follow: Follow) -> bool {
    liveness::converged(&lock(world), el.heads(), follow)
}

async fn run_async(setup: &Setup) -> Outcome {
    let world = match setup.l1 {
        Some(mode) => World::with_l1(setup.initial_len, mode == VerifyMode::Enforce),
        None if setup.requests => World::with_requests(setup.initial_len),
        None => World::new(setup.initial_len),
    };
    let world: SharedWorld = Arc::new(Mutex::new(world));
    let el = SimEl::new(world.clone(), setup.profile, setup.seed);
    el.set_p2p(setup.p2p);
    let honest = setup.sources.iter().filter(|b| !matches!(b, Behaviour::Flapping)).count();
    el.set_strict(honest >= setup.quorum.required(setup.sources.len()));
    {
        let mut w = lock(&world);
        match setup.prefill {
            Prefill::Genesis => {}
            Prefill::Honest { head, safe, finalized } => {
                let c = w.honest.clone();
                el.prefill(&c, head, safe, finalized);
            }
            Prefill::Rival { keep, extra, finalized } => {
                let honest = w.honest.clone();
                let c = w.branch(&honest, keep, extra);
                let head = (c.len() - 1) as u64;
                el.prefill(&c, head, finalized, finalized);
            }
        }
    }
    let sources: Vec<SimSource> = setup
        .sources
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let s =
                SimSource::new(world.clone(), &format!("s{i}"), *b, setup.seed ^ (i as u64 + 7));
            s.set_error_rate(setup.error_rate);
            s.set_raw(setup.raw_sources & (1 << i) != 0);
            if i == 0 && setup.slow_ms > 0 {
                s.set_slow(Duration::from_millis(setup.slow_ms));
            }
            if let Some((p, ms)) = setup.hang.filter(|_| i + 1 == setup.sources.len()) {
                s.set_hang(p, Duration::from_millis(ms));
            }
            if let Some((_, p)) = setup.flaky.filter(|(f, _)| *f == i) {
                s.set_error_rate(p);
            }
            if let Some((_, calls, says_when)) = setup.rate_limited.filter(|(r, ..)| *r == i) {
                s.set_rate_limit(Some((calls, says_when)));
            }
            s
        })
        .collect();
    let start = Instant::now();
    let heal_at = start + Duration::from_millis(setup.duration_ms);
    let end_at = heal_at + Duration::from_millis(setup.heal_ms);
    // The world's own clock: blocks, events, healing.
    let head_at_heal = Arc::new(Mutex::new(0u64));
    let max_lag = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // The largest lag once the EL first caught up (within 6 blocks of the tip) before the heal:
    // what the liveness check during faults judges (the first catch-up runs at the sources'
    // pace).
    let live_lag = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let driver = {
        let max_lag = max_lag.clone();
        let live_lag = live_lag.clone();
        let (world, el, sources, setup) =
            (world.clone(), el.clone(), sources.clone(), setup.clone());
        let head_at_heal = head_at_heal.clone();
        tokio::spawn(async move {
            let mut events: std::collections::VecDeque<(u64, Event)> =
                setup.events.iter().copied().filter(|(_, e)| *e != Event::LightclRestart).collect();
            let mut next_block = start + Duration::from_millis(setup.block_ms);
            let mut ends: Vec<(Instant, Faults)> = Vec::new();
            let mut healed = false;
            let mut caught_up = false;
            loop {
                let next_event = events.front().map(|(t, _)| start + Duration::from_millis(*t));
                let heal = (!healed).then_some(heal_at);
                let wake = [Some(next_block), next_event, ends.first().map(|e| e.0), heal]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(heal_at);
                tokio::time::sleep_until(wake).await;
                let now = Instant::now();
                if now >= heal_at && !healed {
                    // Everything heals; the chain keeps growing (as real chains do, which is
                    // also what lets an EL that never rewinds leave a stale branch).
                    healed = true;
                    *head_at_heal.lock().unwrap_or_else(|p| p.into_inner()) = el.heads().0.number;
                    for (i, s) in sources.iter().enumerate() {
                        s.set_behaviour(Behaviour::Honest);
                        // A flaky provider stays flaky.
                        s.set_error_rate(setup.flaky.filter(|(f, _)| *f == i).map_or(0.0, |f| f.1));
                        s.set_slow(Duration::ZERO);
                        s.set_hang(0.0, Duration::ZERO);
                    }
                    el.set_faults(Faults::default());
                    events.clear();
                    ends.clear();
                }
                ends.retain(|(t, f)| {
                    if *t <= now {
                        el.set_faults(*f);
                        false
                    } else {
                        true
                    }
                });
                if now >= next_block {
                    if !healed {
                        let lag = lock(&world).tip().number.saturating_sub(el.heads().0.number);
                        caught_up |= lag <= 6;
                        if caught_up {
                            live_lag.fetch_max(lag, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    let lag_from = start + Duration::from_millis(setup.duration_ms / 3);
                    if now >= lag_from && !healed {
                        let lag = lock(&world).tip().number.saturating_sub(el.heads().0.number);
                        max_lag.fetch_max(lag, std::sync::atomic::Ordering::Relaxed);
                    }
                    lock(&world).grow(1);
                    next_block = now + Duration::from_millis(setup.block_ms);
                }
                while let Some(&(t, e)) = events.front() {
                    if start + Duration::from_millis(t) > now {
                        break;
                    }
                    match e {
                        Event::Reorg(d) => lock(&world).reorg(d),
                        Event::FinalityReorg => {
                            let mut w = lock(&world);
                            let keep = w.finalized.saturating_sub(3);
                            w.reorg_below_finality(keep);
                        }
                        Event::Rebuild(keep) => lock(&world).reorg_below_finality(keep),
                        Event::ElCrash => el.crash(),
                        Event::ElCrashKeepingBlocks => el.crash_keeping(true),
                        Event::ElCrashIntoSnapSync => el.crash_into_snap_sync(),
                        Event::NoDebugApi => {
                            el.set_faults(Faults { no_debug: true, ..Faults::default() });
                        }
                        Event::ElDown(ms) => {
                            el.set_faults(Faults { down: true, ..Faults::default() });
                            ends.push((now + Duration::from_millis(ms), Faults::default()));
                        }
                        Event::LabelReadErrors(p, ms) => {
                            el.set_faults(Faults { label_read_errors: p, ..Faults::default() });
                            ends.push((now + Duration::from_millis(ms), Faults::default()));
                        }
                        Event::Behave(i, b) => {
                            if let Some(s) = sources.get(i) {
                                s.set_behaviour(b);
                            }
                        }
                        Event::LightclRestart => {}
                        Event::L1Reorg => lock(&world).l1_reorg(),
                    }
                    events.pop_front();
                }
                ends.sort_by_key(|e| e.0);
            }
        })
    };
    // lightcl, restarted at the restart events, with its floor kept across restarts.
    let floor_cell: Arc<Mutex<Option<BlockRef>>> = {
        let w = lock(&world);
        let floor = setup.initial_floor.and_then(|n| w.at(&w.honest, n));
        // lightcl finalized it in an earlier run: the checker holds every write to it.
        if let Some(f) = floor {
            el.seen_finalized(f);
        }
        Arc::new(Mutex::new(floor))
    };
    let mut segment_ends: Vec<Instant> = setup
        .events
        .iter()
        .filter(|(_, e)| *e == Event::LightclRestart)
        .map(|(t, _)| start + Duration::from_millis(*t))
        .collect();
    segment_ends.push(end_at);
    let mut halted = false;
    let mut violations = Vec::new();
    let mut last_sources = Vec::new();
    let names: Vec<String> = (0..sources.len()).map(|i| format!("s{i}")).collect();
    // Set when the EL is seen to hold the honest target after healing (the chain keeps
    // growing, so this is judged at the moment, not after lightcl stopped).
    let converged_seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let modes: Arc<Mutex<Vec<Mode>>> = Arc::default();
    let l1_seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut halted_why = None;
    for seg_end in segment_ends {
        let shared = Arc::new(Shared::new(&names, 4));
        let parts = Parts::single(
            Arc::new(el.clone()) as Arc<dyn Engine>,
            sources.iter().map(|s| Arc::new(s.clone()) as Arc<dyn Source>).collect(),
            StateFile::memory(floor_cell.clone()),
            Some(shared.clone()),
        );
        let parts = match setup.l1 {
            Some(_) => parts.with_l1(
                (0..setup.l1_endpoints())
                    .map(|_| {
                        Arc::new(super::l1::SimL1::new(world.clone())) as Arc<dyn lightcl::l1::L1>
                    })
                    .collect(),
            ),
            None => parts,
        };
        let stop = {
            let (shared, el, world) = (shared.clone(), el.clone(), world.clone());
            let seen = converged_seen.clone();
            let follow = setup.follow;
            let modes = modes.clone();
            let l1_seen = l1_seen.clone();
            async move {
                let mut halted_since = None;
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let mode = shared.snapshot().mode;
                    if let Some(l1) = shared.snapshot().l1 {
                        let mut seen = l1_seen.lock().unwrap_or_else(|p| p.into_inner());
                        for (label, c) in [("safe", l1.safe), ("finalized", l1.finalized)] {
                            if let Some(c) = c {
                                let r = format!("{label}:{}", c.result);
                                if !seen.contains(&r) {
                                    seen.push(r);
                                }
                            }
                        }
                    }
                    {
                        let mut m = modes.lock().unwrap_or_else(|p| p.into_inner());
                        if !m.contains(&mode) {
                            m.push(mode);
                        }
                    }
                    let now = Instant::now();
                    if now >= seg_end {
                        return;
                    }
                    if shared.snapshot().mode == Mode::Halted {
                        el.forbid_writes();
                        let since = *halted_since.get_or_insert(now);
                        if now >= since + Duration::from_secs(30) {
                            return;
                        }
                    } else if now >= heal_at + Duration::from_secs(1)
                        && converged(&world, &el, follow)
                    {
                        seen.store(true, std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                }
            }
        };
        let res = run_with(setup.config(), parts, stop).await;
        last_sources = shared.snapshot().sources;
        halted_why = halted_why.or(shared.snapshot().halted);
        match res {
            Ok(()) => {}
            Err(
                RunError::FinalizedDivergence { .. }
                | RunError::ElLeftFloor { .. }
                | RunError::ElStuck { .. }
                | RunError::OutputRootMismatch(_),
            ) => {
                halted = true;
            }
            Err(e) => violations.push(format!("lightcl stopped with an error: {e}")),
        }
        if halted || converged_seen.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
    }
    driver.abort();
    let record = el.record();
    violations.extend(record.violations.iter().cloned());
    let is_converged = converged_seen.load(std::sync::atomic::Ordering::Relaxed);
    // The liveness judgement, on what the history measured (the world's lock is let go before
    // the outcome reads it again).
    {
        let w = lock(&world);
        let heads = el.heads();
        let floor = *floor_cell.lock().unwrap_or_else(|p| p.into_inner());
        let end = liveness::End {
            halted,
            converged: is_converged,
            lost_finality: liveness::lost_finality(&w, &[record.max_finalized, heads.2, floor]),
            el: heads,
            lag: live_lag.load(std::sync::atomic::Ordering::Relaxed),
            lag_bound: setup.live_lag,
        };
        violations.extend(liveness::judge(&w, &end));
    }
    let (max_in_flight, served_twice) = {
        let w = lock(&world);
        (w.max_in_flight, w.served.values().filter(|&&n| n > 1).count())
    };
    Outcome {
        violations,
        halted,
        l1_seen: l1_seen.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        converged: is_converged,
        record,
        sources: last_sources,
        head_at_heal: *head_at_heal.lock().unwrap_or_else(|p| p.into_inner()),
        max_in_flight,
        served_twice,
        max_lag: max_lag.load(std::sync::atomic::Ordering::Relaxed),
        modes: modes.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        halted_why,
    }
}
