//! What a replica shows: heads, lag, mode and source health in `/status`, `/readyz` and the
//! metrics, and its place in the fleet's lockstep. [`Reporter`] is the only writer of the
//! replica's status and gauges; nothing here talks to the EL or the sources.

use std::sync::Arc;

use super::fleet::Fleet;
use super::plan::Step;
use crate::api::{Mode, Shared, SourceStatus};
use crate::chain::{BlockRef, Heads};
use crate::metrics as m;
use crate::source::SourceSet;

/// The mode a round shows, from the step it planned and the lag to the target (pure).
pub(crate) fn mode_for(step: &Step, lag: u64, ready_max_lag: u64) -> Mode {
    match step {
        Step::Diverged { .. } => Mode::Recovering,
        Step::FinalizedDivergence { .. } | Step::Conflict { .. } => Mode::Holding,
        _ if lag > ready_max_lag => Mode::CatchingUp,
        _ => Mode::Following,
    }
}

/// Writes one replica's status, gauges and counters.
#[derive(Debug)]
pub(crate) struct Reporter {
    shared: Arc<Shared>,
    fleet: Arc<Fleet>,
    index: usize,
    ready_max_lag: u64,
}

impl Reporter {
    /// The reporter of replica `index` of `fleet`, writing to `shared`.
    pub fn new(shared: Arc<Shared>, fleet: Arc<Fleet>, index: usize, ready_max_lag: u64) -> Self {
        Self { shared, fleet, index, ready_max_lag }
    }

    /// Adds `n` to counter `name`.
    pub fn count(&self, name: &'static str, labels: &[(&str, &str)], n: f64) {
        self.shared.metrics.add(name, labels, n);
    }

    /// Sets gauge `name`.
    pub fn gauge(&self, name: &'static str, labels: &[(&str, &str)], v: f64) {
        self.shared.metrics.set(name, labels, v);
    }

    /// Changes what `/status` shows of the verification against L1.
    pub fn l1(&self, f: impl FnOnce(&mut crate::api::L1Status)) {
        self.shared.update(|s| f(s.l1.get_or_insert_with(Default::default)));
    }

    /// The loop is alive (for `/healthz`) during long work.
    pub fn tick(&self) {
        self.shared.tick();
    }

    /// Publishes the sources' health.
    pub fn sources(&self, set: &SourceSet) {
        let mx = &self.shared.metrics;
        let sources: Vec<SourceStatus> = (0..set.len())
            .map(|i| {
                let name = set.name(i);
                let h = set.health(i);
                let l = [("source", name)];
                mx.set(m::SOURCE_UP, &l, if h.up { 1.0 } else { 0.0 });
                mx.set(m::SOURCE_LATENCY, &l, h.latency.map_or(0.0, |d| d.as_secs_f64()));
                mx.set(m::SOURCE_HEAD, &l, h.head.unwrap_or(0) as f64);
                mx.set(m::SOURCE_LATE, &l, h.late as f64);
                mx.set(m::SOURCE_RATE_LIMITED, &l, if h.rate_limited { 1.0 } else { 0.0 });
                mx.set(m::SOURCE_RATE_LIMITED_SECONDS, &l, h.rate_limited_secs);
                mx.set(m::SOURCE_CALLS, &l, set.calls(i) as f64);
                for (reason, n) in &h.errors {
                    mx.set(m::SOURCE_ERRORS, &[("source", name), ("reason", reason)], *n as f64);
                }
                SourceStatus {
                    name: name.to_string(),
                    up: h.up,
                    latency_ms: h.latency.map(|d| d.as_secs_f64() * 1e3),
                    consecutive_errors: h.consecutive_errors,
                    errors: h.errors,
                    head: h.head,
                    late_answers: h.late,
                    last_problem: h.last_problem,
                    rate_limited: h.rate_limited,
                    rate_limited_secs: h.rate_limited_secs,
                    calls: set.calls(i),
                }
            })
            .collect();
        let (blocks, bytes) = set.held().size();
        mx.set(m::HELD_BLOCKS, &[], blocks as f64);
        mx.set(m::HELD_BYTES, &[], bytes as f64);
        self.shared.update(|s| s.sources = sources);
    }

    /// Sets the local head gauges.
    fn local_heads(&self, heads: &Heads) {
        let mx = &self.shared.metrics;
        for (label, b) in
            [("latest", heads.head), ("safe", heads.safe), ("finalized", heads.finalized)]
        {
            mx.set(m::LOCAL_HEAD, &[("label", label)], b.number as f64);
        }
    }

    /// Publishes the heads a feed just moved the EL to (during a long catch-up).
    pub fn progress(&self, heads: &Heads, target: BlockRef) {
        self.local_heads(heads);
        let lag = target.number.saturating_sub(heads.head.number);
        self.shared.metrics.set(m::LAG_BLOCKS, &[], lag as f64);
        let heads = *heads;
        let behind = lag > self.ready_max_lag;
        let ready = self.shared.update(|s| {
            s.local = Some(heads);
            s.lag_blocks = Some(lag);
            if matches!(s.mode, Mode::CatchingUp | Mode::Following) {
                s.mode = if behind { Mode::CatchingUp } else { Mode::Following };
            }
        });
        self.fleet.report(self.index, heads.head, heads.finalized, ready);
    }

    /// Whether the quorum agrees on the labels this round.
    pub fn agreement(&self, yes: bool) {
        self.shared.metrics.set(m::SOURCES_AGREE, &[], if yes { 1.0 } else { 0.0 });
    }

    /// Publishes a round: heads, lag and mode (`agreed`: the agreed heads and the target, when
    /// the sources agree).
    pub fn round(
        &self,
        local: &Heads,
        agreed: Option<(&Heads, BlockRef)>,
        head_time: u64,
        mode: Mode,
        floor: Option<BlockRef>,
    ) {
        let mx = &self.shared.metrics;
        self.local_heads(local);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let lag_seconds = now.saturating_sub(head_time);
        mx.set(m::LAG_SECONDS, &[], lag_seconds as f64);
        let lag = agreed.map(|(a, target)| {
            for (label, b) in [("latest", a.head), ("safe", a.safe), ("finalized", a.finalized)] {
                mx.set(m::AGREED_HEAD, &[("label", label)], b.number as f64);
            }
            target.number.saturating_sub(local.head.number)
        });
        if let Some(l) = lag {
            mx.set(m::LAG_BLOCKS, &[], l as f64);
        }
        let (local, agreed) = (*local, agreed.map(|(a, _)| *a));
        let ready = self.shared.update(|s| {
            s.local = Some(local);
            s.floor = floor;
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
        // Where this replica's head is and whether it is ready (lockstep).
        self.fleet.report(self.index, local.head, local.finalized, ready);
    }

    /// A divergence is being recovered: not ready, and lockstep stops counting this replica.
    pub fn recovering(&self) {
        self.set_mode(Mode::Recovering);
        self.fleet.report_down(self.index);
    }

    /// A round failed with `error` (shown until a round follows again).
    pub fn error(&self, error: String) {
        self.shared.update(|s| s.last_error = Some(error));
    }

    /// The EL is unreachable.
    pub fn el_down(&self) {
        self.fleet.report_down(self.index);
        self.shared.update(|s| s.el_up = false);
        self.set_mode(Mode::ElDown);
    }

    /// The EL did not answer at start.
    pub fn el_unreachable_at_start(&self) {
        self.shared.update(|s| s.el_up = false);
    }

    /// Halted: no more writes to the EL, saying why.
    pub fn halted(&self, why: String) {
        self.shared.metrics.set(m::HALTED, &[], 1.0);
        self.shared.update(|s| {
            s.mode = Mode::Halted;
            s.halted = Some(why);
        });
        self.fleet.report_down(self.index);
    }

    /// A halted replica tries its EL again.
    pub fn resumed(&self) {
        self.shared.metrics.set(m::HALTED, &[], 0.0);
        self.shared.update(|s| {
            s.mode = Mode::Starting;
            s.halted = None;
        });
    }

    /// Sets the mode, unless halted (a halt is only lifted by [`Self::resumed`]).
    fn set_mode(&self, mode: Mode) {
        self.shared.update(|s| {
            if s.mode != Mode::Halted {
                s.mode = mode;
            }
        });
    }
}
