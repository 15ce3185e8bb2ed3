//! One replica's follower: the loop (observe, plan, one match that dispatches the step) and what
//! it does about a fault (one match on its severity). What each step does lives in `task/`;
//! every forkchoice leaves through `forkchoice/`; what the replica shows, through `report.rs`.

use std::time::Duration;

use alloy_primitives::B256;
use tracing::{debug, error, info, warn};

use super::ctx::Ctx;
use super::error::{Fault, Outcome, RunError, Severity};
use super::forkchoice::Forkchoice;
use super::plan::{Step, View, plan};
use super::report::mode_for;
use super::task::el_sync::ElSync;
use super::task::l1::L1Task;
use super::task::stuck::{STUCK_RECHECK, StuckEl};
use super::task::{catch_up, recover};
use crate::api::Mode;
use crate::backoff::Backoff;
use crate::chain::{BlockRef, Heads};
use crate::engine::{BlockAt, check, read_heads};
use crate::payload::FcuVersion;
use crate::source::set::Agreed;
use crate::util::sleep_or_cancel;

/// How often a halted follower repeats why it is halted.
pub(crate) const HALT_REMINDER: Duration = Duration::from_secs(60);
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
    Stop(RunError),
}

/// What a round saw before it planned: the EL's heads (floor applied), the agreed heads, and
/// the highest block known to be final with the quorum's hash there.
#[derive(Debug, Clone, Copy)]
struct Seen {
    local: Heads,
    version: FcuVersion,
    head_time: u64,
    agreed: Heads,
    target: BlockRef,
    checkpoint: BlockRef,
    source_at_checkpoint: Option<B256>,
}

/// One replica's follower.
pub(crate) struct Follower {
    ctx: Ctx,
    fc: Forkchoice,
    el_sync: ElSync,
    stuck: StuckEl,
    l1: L1Task,
}

impl Follower {
    /// Checks the EL (chain id, JWT) before the first write, retrying while it is unreachable.
    /// `Ok(None)`: cancelled first.
    pub async fn connect(ctx: Ctx, fc: Forkchoice) -> Result<Option<Self>, RunError> {
        let mut backoff = Backoff::default();
        loop {
            match check::check(ctx.engine.as_ref(), ctx.config.chain_id)
                .await
                .map_err(RunError::from)
            {
                Ok(caps) => {
                    info!(target: "lightcl::engine", capabilities = caps, "EL connected, JWT accepted");
                    break;
                }
                Err(RunError::Engine(e)) if e.is_retryable() => {
                    let d = backoff.next_delay();
                    ctx.report.el_unreachable_at_start();
                    warn!(target: "lightcl::engine", error = %e, retry_in = ?d, "EL not reachable at start; retrying");
                    if !sleep_or_cancel(&ctx.token, d).await {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e),
            }
        }
        // Before the first write: the EL holds the chain's genesis block (the sources were
        // admitted first, so the genesis is known).
        let mut backoff = Backoff::default();
        loop {
            match el_genesis(&ctx).await? {
                true => break,
                false => {
                    let d = backoff.next_delay();
                    warn!(target: "lightcl::engine", retry_in = ?d, "the EL's genesis block cannot \
                        be checked yet (the EL or the sources do not answer for it); nothing is \
                        written to the EL until it is");
                    if !sleep_or_cancel(&ctx.token, d).await {
                        return Ok(None);
                    }
                }
            }
        }
        Ok(Some(Self {
            ctx,
            fc,
            el_sync: ElSync::default(),
            stuck: StuckEl::default(),
            l1: L1Task::default(),
        }))
    }

    /// The main loop, until cancelled or a fault that stops it.
    pub async fn run(mut self) -> Result<(), RunError> {
        let mut backoff = Backoff::default();
        while !self.ctx.token.is_cancelled() {
            let fault = match self.round().await {
                Ok(Outcome::Progress) => {
                    backoff.reset();
                    continue;
                }
                Ok(Outcome::Idle | Outcome::Diverged { .. }) => {
                    backoff.reset();
                    if !self.ctx.wait_for_tick().await {
                        break;
                    }
                    continue;
                }
                Err(fault) => fault,
            };
            let wait = match (fault.severity(), fault) {
                (Severity::Repair(sign), _) => {
                    match self.stuck.repair(&self.ctx, &mut self.fc, sign).await {
                        Ok(()) => STUCK_RECHECK,
                        Err(Fault::Halt(why)) => match self.halt(why).await {
                            Halted::Resume => continue,
                            Halted::Stop(e) => return Err(e),
                        },
                        Err(e) => {
                            warn!(target: "lightcl::engine", error = %e, "could not repair the EL yet; retrying");
                            // The repair counts its own tries; a growing backoff would only slow it.
                            STUCK_RECHECK
                        }
                    }
                }
                (_, Fault::Halt(why)) => match self.halt(why).await {
                    Halted::Resume => continue,
                    Halted::Stop(e) => return Err(e),
                },
                (_, Fault::Exit(why)) => {
                    self.ctx.token.cancel();
                    return Err(why);
                }
                (Severity::Throttled, fault) => {
                    // Not a failure: the round goes on once the quota allows, the backoff stays.
                    let d = self.ctx.quota_wait();
                    debug!(target: "lightcl", reason = %fault, resume_in = ?d,
                        "waiting for a source's quota");
                    d
                }
                (severity, fault) => self.retry_later(&fault, severity, backoff.next_delay()),
            };
            if !sleep_or_cancel(&self.ctx.token, wait).await {
                break;
            }
        }
        self.ctx.token.cancel();
        info!(target: "lightcl", "stopped");
        Ok(())
    }

    /// Says why a round failed and how long the loop waits before the next.
    fn retry_later(&mut self, fault: &Fault, severity: Severity, d: Duration) -> Duration {
        self.ctx.report.error(fault.to_string());
        match severity {
            Severity::ElDown => {
                self.fc.el_down();
                self.ctx.report.el_down();
                warn!(target: "lightcl::engine", error = %fault, retry_in = ?d, "EL unavailable; waiting for it")
            }
            Severity::Unauthorized => {
                error!(target: "lightcl::engine", error = %fault, retry_in = ?d, "EL refused our token")
            }
            _ => warn!(target: "lightcl", error = %fault, retry_in = ?d, "step failed; retrying"),
        }
        d
    }

    /// One round: observe, plan, dispatch the step.
    async fn round(&mut self) -> Result<Outcome, Fault> {
        let Some(seen) = self.observe().await? else { return Ok(Outcome::Idle) };
        let Seen { local, version, head_time, agreed, target, .. } = seen;
        let ctx = &self.ctx;
        let (checkpoint, at_checkpoint) = (seen.checkpoint, seen.source_at_checkpoint);
        let boot = self.el_sync.round(
            ctx,
            &mut self.fc,
            local,
            agreed,
            checkpoint,
            at_checkpoint,
            version,
        );
        if let Some(out) = boot.await? {
            let floor = self.fc.floor().get();
            ctx.report.round(&local, Some((&agreed, target)), head_time, Mode::ElSyncing, floor);
            return Ok(out);
        }
        let view = self.view(&seen).await?;
        let step = plan(&view);
        let lag = target.number.saturating_sub(local.head.number);
        let mode = mode_for(&step, lag, ctx.config.api.ready_max_lag_blocks);
        let floor = self.fc.floor().get();
        ctx.report.round(&local, Some((&agreed, target)), head_time, mode, floor);
        let fc = &mut self.fc;
        let out = match step {
            Step::Idle => Outcome::Idle,
            Step::Conflict { local, source } => {
                warn!(target: "lightcl::sync", height = local.number, finalized = %local.hash,
                    sources = %source, sources_finalized = %agreed.finalized,
                    "the sources hold another block at the height of lightcl's finalized block, \
                     without calling it final; not following them, holding (a finalized \
                     divergence if they finalize it)");
                return Err(Fault::NoAgreement { number: local.number });
            }
            Step::Promote(next) => {
                fc.promote(local.head, &next, version).await?;
                Outcome::Progress
            }
            Step::Insert { from, to } => {
                let stuck = &mut self.stuck;
                catch_up::run(ctx, fc, stuck, from, to, local, agreed, version).await?
            }
            Step::Diverged { at } => Outcome::Diverged { at },
            Step::FinalizedDivergence { local, .. } => {
                return Err(recover::confirm_halt(ctx, local, agreed).await);
            }
        };
        // Recovery is dispatched here, in one place, whoever found the divergence.
        match out {
            Outcome::Diverged { at } => recover::run(ctx, fc, at, local, agreed, version).await,
            out => Ok(out),
        }
    }

    /// Reads the EL's heads (floor applied) and the agreed heads; re-asserts the EL's
    /// forkchoice after it came back. `None`: the sources do not agree (holding).
    async fn observe(&mut self) -> Result<Option<Seen>, Fault> {
        let ctx = &self.ctx;
        if ctx.sources.admitted() < ctx.sources.len() {
            admit(ctx).await?;
        }
        let (el, version, head_time) = read_heads(ctx.engine.as_ref()).await?;
        let local = self.fc.reconcile(el, self.el_sync.syncing()).await?;
        self.stuck.head_moved(ctx, local.head);
        ctx.report.sources(&ctx.sources);
        self.fc.reassert_if_needed(&local, version).await?;
        // Before anything is planned: a settled output root that differs halts here (L1 is
        // read in the background; in enforce, finalized waits for the first read).
        self.l1.audit(ctx, local.finalized).await?;
        let Some(agreed) = ctx.sources.agreed_heads(local.finalized.number).await else {
            ctx.report.agreement(false);
            ctx.report.round(&local, None, head_time, Mode::Holding, self.fc.floor().get());
            return Ok(None);
        };
        ctx.report.agreement(true);
        // Checked against L1 before any step plans with them (in enforce a label that fails
        // waits).
        let agreed = self.l1.labels(ctx, agreed, local, self.fc.floor().get()).await?;
        // The checkpoint: the highest block lightcl knows to be final, from the EL or the floor.
        let checkpoint = match self.fc.floor().get() {
            Some(f) if f.number > local.finalized.number => f,
            _ => local.finalized,
        };
        let source_at_checkpoint = if checkpoint.number == 0 {
            None
        } else {
            ctx.sources.agreed_at(checkpoint.number).await.hash()
        };
        let target = ctx.target(&agreed);
        Ok(Some(Seen {
            local,
            version,
            head_time,
            agreed,
            target,
            checkpoint,
            source_at_checkpoint,
        }))
    }

    /// The planner's view: `seen` and the hash lookups it needs.
    async fn view(&self, seen: &Seen) -> Result<View, Fault> {
        let Seen { local, agreed, target, .. } = *seen;
        // A local head above the target must still be on the sources' chain; a quorum that has
        // no block there yet (lagging replicas) is not evidence either way.
        let local_head_on_source = if local.head.number <= target.number {
            Some(true)
        } else {
            match self.ctx.sources.agreed_at(local.head.number).await {
                Agreed::Hash(h) => Some(h == local.head.hash),
                Agreed::Unknown => None,
            }
        };
        Ok(View {
            local,
            agreed,
            follow: self.ctx.config.follow,
            checkpoint: seen.checkpoint,
            source_at_checkpoint: seen.source_at_checkpoint,
            local_at_target: self.local_hash(target.number, local.head).await?,
            local_at_safe: self.local_hash(agreed.safe.number, local.head).await?,
            local_at_finalized: self.local_hash(agreed.finalized.number, local.head).await?,
            local_head_on_source,
            label_cap: self.ctx.label_cap().await,
        })
    }

    /// The EL's canonical hash at `n`, if `n` is at or below its head.
    async fn local_hash(&self, n: u64, head: BlockRef) -> Result<Option<B256>, Fault> {
        if n > head.number {
            return Ok(None);
        }
        if n == head.number {
            return Ok(Some(head.hash));
        }
        Ok(self.ctx.engine.block(BlockAt::Number(n)).await?.map(|b| b.block.hash))
    }

    /// Halted: no more engine writes. Stays up saying why (so monitoring sees it) until the
    /// operator stops it; then the error is returned (exit code 4). A replica of a fleet halted
    /// because its EL was stuck tries it again once its EL restarts (it went away and came back)
    /// and every [`STUCK_RETRY`]: the runbook's "restart the EL, then lightcl" without stopping
    /// the other replicas. The halt was reached after the repair rolled the EL back as far as it
    /// could, so a try on an EL still stuck changes nothing and halts again.
    async fn halt(&mut self, e: RunError) -> Halted {
        self.ctx.report.halted(e.to_string());
        let resumable = self.ctx.fleet.len() > 1 && matches!(e, RunError::ElStuck { .. });
        let retry_at = tokio::time::Instant::now() + STUCK_RETRY;
        let mut el_went_away = false;
        let mut last_said = None::<tokio::time::Instant>;
        loop {
            if last_said.is_none_or(|t| t.elapsed() >= HALT_REMINDER) {
                error!(target: "lightcl", error = %e, "HALTED: no more writes to the EL until an operator intervenes");
                last_said = Some(tokio::time::Instant::now());
            }
            let wait = if resumable { RESTART_PROBE } else { HALT_REMINDER };
            if !sleep_or_cancel(&self.ctx.token, wait).await {
                break;
            }
            if !resumable {
                continue;
            }
            let retry = tokio::time::Instant::now() >= retry_at;
            match self.ctx.engine.chain_id().await {
                Err(_) => el_went_away = true,
                Ok(_) if el_went_away || retry => {
                    info!(target: "lightcl", restarted = el_went_away,
                        "trying the EL again after lightcl halted its writes to it for being stuck \
                         (it restarted, or {}s passed)", STUCK_RETRY.as_secs());
                    self.ctx.report.resumed();
                    if el_went_away {
                        self.stuck.forget();
                    } else {
                        self.stuck.retry();
                    }
                    self.fc.el_down();
                    return Halted::Resume;
                }
                Ok(_) => {}
            }
        }
        self.ctx.token.cancel();
        Halted::Stop(e)
    }
}

/// Whether the EL holds the chain's genesis block; `false`: not decidable yet (asked again).
/// An EL with no block at the genesis height yet (a chain whose genesis is above block 0) is
/// held to the sources' block 0 instead. Another block there stops lightcl.
async fn el_genesis(ctx: &Ctx) -> Result<bool, RunError> {
    let Some(g) = ctx.sources.genesis() else { return Ok(false) };
    let mismatch = |got: BlockRef, expected: BlockRef, named_by: String, learned: bool| {
        RunError::GenesisMismatch(Box::new(super::error::GenesisMismatch {
            who: "the local EL".into(),
            got,
            expected,
            named_by,
            who_fix: if learned {
                "no network or genesis_hash is set, so the first source to answer named the \
                 genesis: either the EL's datadir was initialised for another chain or that \
                 source serves another deployment; set `network` (or `genesis_hash`) to name the \
                 right chain"
            } else {
                "its datadir was initialised for another chain or deployment: point lightcl at \
                 the right EL, or initialise the datadir with this chain's genesis"
            },
        }))
    };
    match ctx.engine.block(BlockAt::Number(g.block.number)).await {
        Ok(Some(b)) if b.block == g.block => {
            info!(target: "lightcl::engine", genesis = %g.block, named_by = g.named_by,
                "the EL holds the chain's genesis block");
            Ok(true)
        }
        Ok(Some(b)) => Err(mismatch(b.block, g.block, g.named_by, g.learned)),
        Ok(None) => {
            let Some(h0) = ctx.sources.agreed_at(0).await.hash() else { return Ok(false) };
            match ctx.engine.block(BlockAt::Number(0)).await {
                Ok(Some(b)) if b.block.hash == h0 => {
                    info!(target: "lightcl::engine", block0 = %b.block, genesis = %g.block,
                        "the EL has no block at the genesis height yet; its block 0 is the \
                         sources' block 0");
                    Ok(true)
                }
                Ok(Some(b)) => Err(mismatch(
                    b.block,
                    BlockRef::new(0, h0),
                    "the sources' block 0 (the EL has no block at the genesis height yet)".into(),
                    false,
                )),
                Ok(None) | Err(_) => Ok(false),
            }
        }
        Err(e) => {
            debug!(target: "lightcl::engine", error = %e, "the EL's genesis block could not be read");
            Ok(false)
        }
    }
}

/// Admits the sources that answer with the right chain id (some may have been down at start);
/// a source of another chain stops lightcl.
async fn admit(ctx: &Ctx) -> Result<usize, Fault> {
    super::ctx::admit(&ctx.sources, ctx.config.chain_id).await.map_err(Fault::Exit)
}
