//! A simulated EL with the behaviour profiles of docs/engines.md. It is only the model: every
//! write lightcl makes (payload, forkchoice, `debug_setHead`) is first reported to the checkers
//! in [`super::check`], with the EL's chain as it was, and then applied.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use alloy_primitives::B256;
use lightcl::chain::{BlockRef, Heads, Label};
use lightcl::engine::{
    BlockAt, BoxFuture, Engine, EngineError, LocalBlock, PayloadStatus, Status, SyncProgress,
    SyncStatus,
};
use lightcl::payload::{FcuVersion, Payload};

pub use super::check::Record;
use super::check::forkchoice::{self, Context, ElView};
use super::check::payload;
use super::{Rng, SharedWorld, lock};

/// How an EL treats the Engine API calls lightcl relies on (docs/engines.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Rewinds up to 32 blocks on a forkchoice to a canonical ancestor (not below its finalized
    /// block), keeps 128 recent states, comes back at genesis after a crash.
    Geth,
    /// Never rewinds on a forkchoice; applies labels even backwards; keeps 128 states.
    OpGeth,
    /// A forkchoice to a canonical ancestor changes nothing, labels included; `debug_setHead`
    /// is refused or does nothing; side branches execute from historical state.
    Reth,
}

/// The EL's chain and labels.
#[derive(Debug)]
struct Chain {
    /// Canonical hashes by height.
    canonical: Vec<B256>,
    /// Blocks it has executed (hash).
    executed: HashSet<B256>,
    safe: Option<BlockRef>,
    finalized: Option<BlockRef>,
}

/// Faults the test switches on and off.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Every call fails as unreachable.
    pub down: bool,
    /// Probability that a label read fails with a JSON-RPC error.
    pub label_read_errors: f64,
    /// debug_setHead is not served (the debug API is off).
    pub no_debug: bool,
    /// Each newPayload takes this long (a slow replica), ms.
    pub payload_ms: u64,
}

/// The EL's P2P side: peers that can serve it the chain when a forkchoice names a head it does
/// not have (geth, op-geth and reth sync from their peers then).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct P2p {
    /// Peers it reports.
    pub peers: u64,
    /// Whether a forkchoice to an unknown head starts a sync (false: an EL that never does).
    pub syncs: bool,
    /// Blocks per second it imports from its peers.
    pub blocks_per_sec: u64,
    /// The peers hold the honest chain only up to this height and a branch of their own above
    /// it (a source whose head is not on the peers' chain): heads above it cannot be synced.
    pub peers_diverge_at: Option<u64>,
}

/// An EL sync under way: towards `target`, from height `from` at `since`, with the labels of
/// the forkchoice that asked for it.
#[derive(Debug, Clone, Copy)]
struct Syncing {
    target: BlockRef,
    labels: (BlockRef, BlockRef),
    since: tokio::time::Instant,
    from: u64,
}

#[derive(Debug)]
struct Inner {
    profile: Profile,
    chain: Chain,
    faults: Faults,
    /// The checker's record (what the checkers found, and the EL's counts).
    record: Record,
    rng: Rng,
    /// For the checker: lightcl halted, so any write is a violation.
    writes_forbidden: bool,
    /// For the checker: the honest sources alone make the quorum, so the agreed chain is the
    /// honest one and a rewind of an honest head is needless.
    strict: bool,
    /// Blocks kept without their state after a crash (op-geth): answered VALID as already
    /// known, but a forkchoice to them does not move the head, until debug_setHead.
    ghosts: HashSet<B256>,
    /// Back from a crash in snap-sync mode (geth and op-geth whose snap-sync marker is above
    /// their head): every payload it has not executed is ignored (SYNCING) until a restart.
    snap_sync: bool,
    p2p: Option<P2p>,
    syncing: Option<Syncing>,
    /// The P2P sync moved the head since the last forkchoice.
    p2p_moved: bool,
}

impl Inner {
    /// The EL's chain as the checkers see it before a write.
    fn view(&self) -> ElView<'_> {
        let c = &self.chain;
        ElView { canonical: &c.canonical, safe: c.safe, finalized: c.finalized }
    }

    /// What the checkers know besides the EL's chain and the write.
    fn context(&self) -> Context {
        Context {
            max_finalized: self.record.max_finalized,
            strict: self.strict,
            halted: self.writes_forbidden,
            p2p_moved: self.p2p_moved,
        }
    }
}

/// The simulated EL. Clones share it.
#[derive(Debug, Clone)]
pub struct SimEl {
    world: SharedWorld,
    inner: Arc<Mutex<Inner>>,
}

fn unreachable(method: &str) -> EngineError {
    EngineError::Unreachable { url: "sim-el".into(), method: method.into(), message: "down".into() }
}

impl SimEl {
    /// An EL of `profile` holding the honest chain's genesis.
    pub fn new(world: SharedWorld, profile: Profile, seed: u64) -> Self {
        let genesis = lock(&world).honest[0];
        let chain = Chain {
            canonical: vec![genesis],
            executed: HashSet::from([genesis]),
            safe: None,
            finalized: None,
        };
        let inner = Inner {
            profile,
            chain,
            faults: Faults::default(),
            record: Record::default(),
            rng: Rng::new(seed ^ 0xe1),
            writes_forbidden: false,
            strict: true,
            ghosts: HashSet::new(),
            snap_sync: false,
            p2p: None,
            syncing: None,
            p2p_moved: false,
        };
        Self { world, inner: Arc::new(Mutex::new(inner)) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fills the EL with `chain[1..=head]` as if it had executed it, with these labels.
    pub fn prefill(&self, chain: &[B256], head: u64, safe: Option<u64>, finalized: Option<u64>) {
        let mut me = self.lock();
        let c = &mut me.chain;
        c.canonical = chain[..=head as usize].to_vec();
        c.executed.extend(c.canonical.iter().copied());
        c.safe = safe.map(|n| BlockRef::new(n, chain[n as usize]));
        c.finalized = finalized.map(|n| BlockRef::new(n, chain[n as usize]));
    }

    /// Gives the EL P2P peers.
    pub fn set_p2p(&self, p2p: Option<P2p>) {
        self.lock().p2p = p2p;
    }

    /// Changes the faults.
    pub fn set_faults(&self, f: Faults) {
        self.lock().faults = f;
    }

    /// Says whether the honest sources alone make the quorum (then a rewind of an honest head
    /// is a violation; with a lone flapping source it is what the quorum asked for).
    pub fn set_strict(&self, on: bool) {
        self.lock().strict = on;
    }

    /// From now on any write is a violation (lightcl halted and must stay quiet).
    pub fn forbid_writes(&self) {
        self.lock().writes_forbidden = true;
    }

    /// A crash and restart: what survives depends on the profile (geth: back at genesis;
    /// op-geth and reth: back a few blocks, labels forgotten; op-geth half the time keeps the
    /// blocks above without their state).
    pub fn crash(&self) {
        let ghosts = {
            let mut me = self.lock();
            me.profile == Profile::OpGeth && me.rng.chance(0.5)
        };
        self.crash_keeping(ghosts);
    }

    /// A crash and restart; `ghosts`: the blocks lost from the state stay known (op-geth).
    pub fn crash_keeping(&self, ghosts: bool) {
        let mut me = self.lock();
        let back = me.rng.range(1, 40) as usize;
        let profile = me.profile;
        let keep = match profile {
            Profile::Geth => 1,
            Profile::OpGeth | Profile::Reth => me.chain.canonical.len().saturating_sub(back).max(1),
        };
        if ghosts {
            let above: Vec<B256> = me.chain.canonical[keep..].to_vec();
            me.ghosts.extend(above);
        }
        me.syncing = None;
        let c = &mut me.chain;
        c.canonical.truncate(keep);
        c.executed = c.canonical.iter().copied().collect();
        c.safe = None;
        c.finalized = None;
    }

    /// A crash after which the EL keeps the blocks above its state and stays in snap-sync
    /// mode, ignoring every payload, for the rest of the run (only a restart of the process
    /// ends it, which lightcl cannot do).
    pub fn crash_into_snap_sync(&self) {
        self.crash_keeping(true);
        self.lock().snap_sync = true;
    }

    /// Tells the checker that lightcl finalized `b` before this history (its state file).
    pub fn seen_finalized(&self, b: BlockRef) {
        let mut me = self.lock();
        if me.record.max_finalized.is_none_or(|m| m.number < b.number) {
            me.record.max_finalized = Some(b);
        }
    }

    /// Whether the EL's canonical chain holds `b`.
    pub fn holds(&self, b: BlockRef) -> bool {
        self.lock().chain.canonical.get(b.number as usize) == Some(&b.hash)
    }

    /// The checker's record.
    pub fn record(&self) -> Record {
        self.lock().record.clone()
    }

    /// The EL's heads now (unset labels as `None`).
    pub fn heads(&self) -> (BlockRef, Option<BlockRef>, Option<BlockRef>) {
        let me = self.lock();
        let c = &me.chain;
        let n = c.canonical.len() - 1;
        (BlockRef::new(n as u64, c.canonical[n]), c.safe, c.finalized)
    }

    fn local_block(&self, b: BlockRef) -> Option<LocalBlock> {
        let w = lock(&self.world);
        let blk = w.block(&b.hash)?;
        Some(LocalBlock {
            block: b,
            parent_hash: blk.parent,
            fcu: FcuVersion::V3,
            timestamp: 1_000 + b.number * 2,
        })
    }

    /// Whether the EL's peers hold `b`.
    fn peers_hold(w: &super::World, p2p: &P2p, b: BlockRef) -> bool {
        w.ever_honest.contains(&b.hash) && p2p.peers_diverge_at.is_none_or(|x| b.number <= x)
    }

    /// Moves an EL sync on by the time passed: the target's chain up to the height reached
    /// becomes canonical and executed; at the target the forkchoice's labels apply.
    fn advance_sync(&self) {
        let w = lock(&self.world);
        let mut me = self.lock();
        let (Some(s), Some(p2p)) = (me.syncing, me.p2p) else { return };
        if me.faults.down {
            return;
        }
        let secs = s.since.elapsed().as_millis() as u64;
        let reach = (s.from + p2p.blocks_per_sec * secs / 1_000).min(s.target.number);
        // The target's chain down to where it meets the EL's canonical chain.
        let mut path = Vec::new();
        let mut cur = s.target.hash;
        while let Some(b) = w.block(&cur) {
            if me.chain.canonical.get(b.id.number as usize) == Some(&cur) {
                break;
            }
            path.push(b.id);
            if b.id.number == 0 {
                break;
            }
            cur = b.parent;
        }
        path.reverse();
        let Some(first) = path.first().copied() else {
            me.syncing = None;
            return;
        };
        let new: Vec<BlockRef> = path.into_iter().filter(|b| b.number <= reach).collect();
        if new.is_empty() {
            return;
        }
        me.record.p2p_synced += new.len() as u64;
        me.p2p_moved = true;
        let c = &mut me.chain;
        c.canonical.truncate(first.number as usize);
        for b in &new {
            c.canonical.push(b.hash);
            c.executed.insert(b.hash);
        }
        for l in [&mut c.safe, &mut c.finalized] {
            if l.is_some_and(|b| c.canonical.get(b.number as usize) != Some(&b.hash)) {
                *l = None;
            }
        }
        if reach >= s.target.number {
            let (safe, finalized) = s.labels;
            if w.descends(s.target, safe) && w.descends(s.target, finalized) {
                c.safe = Some(safe);
                c.finalized = Some(finalized);
            }
            me.syncing = None;
        }
    }

    fn read(&self, at: BlockAt) -> Result<Option<LocalBlock>, EngineError> {
        self.advance_sync();
        let found = {
            let mut me = self.lock();
            if me.faults.down {
                return Err(unreachable("eth_getBlockByNumber"));
            }
            let c = &me.chain;
            let tip =
                BlockRef::new((c.canonical.len() - 1) as u64, c.canonical[c.canonical.len() - 1]);
            match at {
                BlockAt::Number(n) => c.canonical.get(n as usize).map(|h| BlockRef::new(n, *h)),
                BlockAt::Label(Label::Latest) => Some(tip),
                BlockAt::Label(l) => {
                    let p = me.faults.label_read_errors;
                    if p > 0.0 && me.rng.chance(p) {
                        return Err(EngineError::Rpc {
                            method: "eth_getBlockByNumber".into(),
                            code: -32000,
                            message: "internal error: database read failed".into(),
                        });
                    }
                    // An unset label reads as `None` at this level (EngineClient maps geth's
                    // "safe block not found" error to it).
                    let c = &me.chain;
                    if l == Label::Safe { c.safe } else { c.finalized }
                }
            }
        };
        Ok(found.and_then(|b| self.local_block(b)))
    }

    fn new_payload_now(&self, p: &Payload) -> Result<PayloadStatus, EngineError> {
        let mut w = lock(&self.world);
        w.in_flight = 0;
        let mut me = self.lock();
        if me.faults.down {
            return Err(unreachable("engine_newPayloadV4"));
        }
        me.record.payloads += 1;
        let verdict = payload::new_payload(&w, p, me.writes_forbidden);
        me.record.violations.extend(verdict.violations);
        // A block that is not what its hash says is invalid to any EL.
        if !verdict.genuine {
            return Ok(status(Status::Invalid));
        }
        if me.ghosts.contains(&p.block.hash) {
            return Ok(status(Status::Valid));
        }
        let snap_sync = me.snap_sync;
        let c = &mut me.chain;
        if c.executed.contains(&p.block.hash) {
            return Ok(status(Status::Valid));
        }
        if !c.executed.contains(&p.parent_hash) || snap_sync {
            return Ok(status(Status::Syncing));
        }
        // geth and op-geth keep the state of the last 128 blocks only.
        let tip = (c.canonical.len() - 1) as u64;
        let parent_number = p.block.number - 1;
        if me.profile != Profile::Reth && tip > parent_number + 128 {
            return Ok(status(Status::Syncing));
        }
        me.chain.executed.insert(p.block.hash);
        Ok(status(Status::Valid))
    }

    fn forkchoice_now(&self, heads: &Heads) -> Result<PayloadStatus, EngineError> {
        // The sync moves on as lightcl reads the EL (not here): a forkchoice decides on what
        // lightcl last saw, and one to a block the EL has ends the sync (see advance_sync).
        let w = lock(&self.world);
        let mut me = self.lock();
        if me.faults.down {
            return Err(unreachable("engine_forkchoiceUpdatedV3"));
        }
        me.record.forkchoices += 1;
        // The checker judges the forkchoice against the EL's chain before it applies.
        let verdict = forkchoice::update(&w, &me.view(), heads, &me.context());
        if verdict.p2p_race {
            me.record.p2p_races += 1;
        }
        me.p2p_moved = false;
        me.record.max_finalized = verdict.max_finalized;
        me.record.violations.extend(verdict.violations);
        let Heads { head, safe, finalized } = *heads;
        let unset = forkchoice::labels_unset(heads);
        // The EL's own behaviour.
        if me.ghosts.contains(&head.hash) {
            return Ok(status(Status::Valid));
        }
        if !me.chain.executed.contains(&head.hash) {
            // An unknown head: an EL with peers that hold it syncs towards it.
            if let Some(p2p) = me.p2p
                && p2p.syncs
                && p2p.peers > 0
                && Self::peers_hold(&w, &p2p, head)
            {
                let tip = (me.chain.canonical.len() - 1) as u64;
                let s = me.syncing.get_or_insert(Syncing {
                    target: head,
                    labels: (safe, finalized),
                    since: tokio::time::Instant::now(),
                    from: tip,
                });
                s.target = head;
                s.labels = (safe, finalized);
            }
            return Ok(status(Status::Syncing));
        }
        // A forkchoice to a block it has supersedes any sync towards an older target.
        me.syncing = None;
        let c = &me.chain;
        for l in [safe, finalized] {
            if !l.hash.is_zero() && (!c.executed.contains(&l.hash) || !w.descends(head, l)) {
                return Err(EngineError::Rpc {
                    method: "engine_forkchoiceUpdatedV3".into(),
                    code: -38002,
                    message: "Invalid forkchoice state".into(),
                });
            }
        }
        let tip = (c.canonical.len() - 1) as u64;
        let is_canonical = c.canonical.get(head.number as usize) == Some(&head.hash);
        let stored_final = c.finalized.map_or(0, |f| f.number);
        let profile = me.profile;
        if is_canonical && head.number < tip {
            match profile {
                Profile::Geth if head.number <= stored_final => return Ok(status(Status::Valid)),
                Profile::Geth if tip - head.number > 32 => {
                    return Err(EngineError::Rpc {
                        method: "engine_forkchoiceUpdatedV3".into(),
                        code: -38006,
                        message: "too deep reorg".into(),
                    });
                }
                Profile::Geth => me.chain.canonical.truncate(head.number as usize + 1),
                Profile::OpGeth => {}
                Profile::Reth => return Ok(status(Status::Valid)),
            }
        } else if !is_canonical {
            // A reorg (or extension) to an executed block: its ancestry becomes canonical.
            let mut path = Vec::new();
            let mut cur = head.hash;
            while let Some(b) = w.block(&cur) {
                let n = b.id.number as usize;
                if me.chain.canonical.get(n) == Some(&cur) {
                    break;
                }
                path.push(cur);
                if n == 0 {
                    break;
                }
                cur = b.parent;
            }
            let base = head.number as usize + 1 - path.len();
            if path.iter().any(|h| !me.chain.executed.contains(h)) {
                return Ok(status(Status::Syncing));
            }
            // A reorg onto a branch shorter than the one held: op-reth cuts the blocks above off
            // its files, the moment it can die under concurrent reads (docs/engines.md).
            if head.number < tip {
                me.record.head_lowering_reorgs += 1;
            }
            me.chain.canonical.truncate(base);
            me.chain.canonical.extend(path.into_iter().rev());
        }
        if !unset {
            me.chain.safe = Some(safe);
            me.chain.finalized = Some(finalized);
        }
        Ok(status(Status::Valid))
    }

    fn set_head_now(&self, number: u64) -> Result<(), EngineError> {
        let mut me = self.lock();
        if me.faults.down {
            return Err(unreachable("debug_setHead"));
        }
        // The checker judges the call against the EL's chain before it (whatever the EL then
        // does with it).
        let bad = forkchoice::set_head(&me.view(), number, &me.context());
        me.record.violations.extend(bad);
        if me.faults.no_debug {
            return Err(EngineError::Rpc {
                method: "debug_setHead".into(),
                code: -32601,
                message: "the method debug_setHead does not exist/is not available".into(),
            });
        }
        // reth 1.10.2 refuses the hex number lightcl sends (its parameter is a JSON integer);
        // later versions take it and do nothing. Either one, at random.
        if me.profile == Profile::Reth {
            if me.rng.chance(0.5) {
                return Err(EngineError::Rpc {
                    method: "debug_setHead".into(),
                    code: -32602,
                    message: "Invalid params".into(),
                });
            }
            return Ok(());
        }
        me.record.set_heads += 1;
        me.ghosts.clear();
        let c = &mut me.chain;
        if (number as usize) < c.canonical.len() {
            c.canonical.truncate(number as usize + 1);
            let keep: HashSet<B256> = c.canonical.iter().copied().collect();
            c.executed.retain(|h| keep.contains(h));
            for l in [&mut c.safe, &mut c.finalized] {
                if l.is_some_and(|b| b.number > number) {
                    *l = None;
                }
            }
        }
        Ok(())
    }
}

fn status(s: Status) -> PayloadStatus {
    PayloadStatus { status: s, latest_valid_hash: None, validation_error: None }
}

impl Engine for SimEl {
    fn chain_id(&self) -> BoxFuture<'_, Result<u64, EngineError>> {
        Box::pin(async move {
            if self.lock().faults.down { Err(unreachable("eth_chainId")) } else { Ok(1337) }
        })
    }

    fn capabilities(&self) -> BoxFuture<'_, Result<Vec<String>, EngineError>> {
        Box::pin(async move {
            if self.lock().faults.down {
                Err(unreachable("engine_exchangeCapabilities"))
            } else {
                Ok(vec!["engine_newPayloadV4".into(), "engine_forkchoiceUpdatedV3".into()])
            }
        })
    }

    fn block(&self, at: BlockAt) -> BoxFuture<'_, Result<Option<LocalBlock>, EngineError>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            self.read(at)
        })
    }

    fn new_payload<'a>(
        &'a self,
        p: &'a Payload,
    ) -> BoxFuture<'a, Result<PayloadStatus, EngineError>> {
        Box::pin(async move {
            let delay = self.lock().faults.payload_ms;
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            tokio::task::yield_now().await;
            self.new_payload_now(p)
        })
    }

    fn forkchoice_updated<'a>(
        &'a self,
        _version: FcuVersion,
        heads: &'a Heads,
    ) -> BoxFuture<'a, Result<PayloadStatus, EngineError>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            self.forkchoice_now(heads)
        })
    }

    fn set_head(&self, number: u64) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(async move { self.set_head_now(number) })
    }

    fn output_parts(
        &self,
        number: u64,
    ) -> BoxFuture<'_, Result<Option<lightcl::chain::output::OutputParts>, EngineError>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            let Some(b) = self.read(BlockAt::Number(number))? else { return Ok(None) };
            let w = lock(&self.world);
            Ok(w.block(&b.block.hash).map(|blk| blk.output_parts()))
        })
    }

    fn sync_status(&self) -> BoxFuture<'_, Result<SyncStatus, EngineError>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            self.advance_sync();
            let me = self.lock();
            if me.faults.down {
                return Err(unreachable("eth_syncing"));
            }
            let tip = (me.chain.canonical.len() - 1) as u64;
            let progress = me.syncing.map(|s| SyncProgress {
                current: tip,
                highest: s.target.number,
                stage: None,
                work: tip,
            });
            Ok(SyncStatus { peers: Some(me.p2p.map_or(0, |p| p.peers)), progress })
        })
    }
}
