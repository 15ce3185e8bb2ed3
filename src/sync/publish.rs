//! What the follower shows: heads, lag, mode and source health, to the operations API and the
//! metrics. Nothing here talks to the EL or the sources.

use super::driver::Follower;
use crate::api::metrics as m;
use crate::api::{Mode, SourceStatus};
use crate::chain::{BlockRef, Heads};

impl Follower {
    /// Publishes the sources' health to the API and metrics.
    pub(super) fn publish_sources(&self) {
        let sources: Vec<SourceStatus> = (0..self.sources.len())
            .map(|i| {
                let name = self.sources.name(i);
                let h = self.sources.health(i);
                let l = [("source", name)];
                let mx = &self.shared.metrics;
                mx.set(m::SOURCE_UP, &l, if h.up { 1.0 } else { 0.0 });
                mx.set(m::SOURCE_LATENCY, &l, h.latency.map_or(0.0, |d| d.as_secs_f64()));
                mx.set(m::SOURCE_HEAD, &l, h.head.unwrap_or(0) as f64);
                mx.set(m::SOURCE_LATE, &l, h.late as f64);
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
            mx.set(m::LOCAL_HEAD, &[("label", label)], b.number as f64);
        }
        let lag = target.number.saturating_sub(heads.head.number);
        mx.set(m::LAG_BLOCKS, &[], lag as f64);
        let heads = *heads;
        let behind = lag > self.config.api.ready_max_lag_blocks;
        let ready = self.shared.update(|s| {
            s.local = Some(heads);
            s.lag_blocks = Some(lag);
            if matches!(s.mode, Mode::CatchingUp | Mode::Following) {
                s.mode = if behind { Mode::CatchingUp } else { Mode::Following };
            }
        });
        self.fleet.report(self.index, heads.head, heads.finalized, ready);
    }

    /// Under lockstep, the height this replica's safe and finalized may move up to: the other
    /// replicas that count hold the agreed chain up to there, checked by hash (their heads
    /// against the quorum's blocks at those heights).
    pub(super) async fn label_cap(&self) -> Option<u64> {
        let heads = self.fleet.lockstep_heads(self.index)?;
        let mut agreed = Vec::with_capacity(heads.len());
        for h in heads {
            if self.sources.agreed_at(h.number).await.hash() == Some(h.hash) {
                agreed.push(h);
            }
        }
        self.fleet.label_cap(self.index, |h| agreed.contains(&h))
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
            mx.set(m::LOCAL_HEAD, &[("label", label)], b.number as f64);
        }
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
        let floor = self.gate.floor();
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
}
