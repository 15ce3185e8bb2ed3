//! Verification against L1, one replica's side: the agreed labels' L1 origins checked before
//! the round plans with them (in `enforce` a label that fails waits), and the output roots of
//! the EL's own blocks compared with the roots L1 holds (in `enforce` a settled root that
//! differs halts: nothing more is written to the EL).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use alloy_primitives::B256;
use tracing::{debug, error, info, warn};

use super::super::ctx::Ctx;
use super::super::error::{Fault, OutputMismatch, RunError};
use crate::chain::{BlockRef, Heads};
use crate::config::VerifyMode;
use crate::l1::audit::{Compared, Comparison, Held};
use crate::l1::verify::{Checked, LabelCheck, Verdict, Which};
use crate::metrics as m;

/// How long an output root the EL could not give (a block whose state it pruned) is left
/// before it is asked again.
const UNAVAILABLE_RETRY: Duration = Duration::from_secs(600);

/// One replica's verification state.
#[derive(Debug, Default)]
pub(crate) struct L1Task {
    compared: Compared,
    /// Roots whose output the EL could not give, and when.
    unavailable: HashMap<(u64, B256), Instant>,
    /// The last verdict said per label: (block, result), so each is logged once.
    said: HashMap<&'static str, (B256, &'static str)>,
    /// The highest label verified.
    verified: Option<BlockRef>,
    /// The audit's read failure last said (each said once).
    audit_error: Option<String>,
}

impl L1Task {
    /// The agreed heads the round follows: checked against L1 (in `enforce`, a label that fails
    /// replaced by the EL's own).
    pub async fn labels(
        &mut self,
        ctx: &Ctx,
        agreed: Heads,
        local: Heads,
        floor: Option<BlockRef>,
    ) -> Result<Heads, Fault> {
        let Some(v) = &ctx.l1 else { return Ok(agreed) };
        chain_ok(v).await?;
        // In enforce, finalized moves only once the roots L1 settled were read (a settled root
        // that differs halts before the EL finalizes more of a chain L1 did not settle).
        let hold =
            (v.verifier.mode() == VerifyMode::Enforce && v.audit.enabled() && !v.audit.read_once())
                .then_some("waits for the first read of the output roots L1 settled");
        let checked = v.verifier.labels(&ctx.sources, agreed, local, floor, hold).await;
        self.report(ctx, &checked, v.verifier.mode());
        Ok(checked.heads)
    }

    fn report(&mut self, ctx: &Ctx, c: &Checked, mode: VerifyMode) {
        if mode == VerifyMode::Off {
            return;
        }
        ctx.report.gauge(m::L1_UP, &[], if c.l1.is_some() { 1.0 } else { 0.0 });
        for (which, check) in [(Which::Safe, &c.safe), (Which::Finalized, &c.finalized)] {
            let label = which.as_str();
            let Some((lc, verdict)) = check else {
                ctx.report.gauge(m::L1_ORIGIN_UNVERIFIED, &[("label", label)], 0.0);
                continue;
            };
            ctx.report.count(
                m::L1_ORIGIN_CHECKS,
                &[("label", label), ("result", verdict.as_str())],
                1.0,
            );
            let ok = matches!(verdict, Verdict::Ok(_));
            ctx.report.gauge(
                m::L1_ORIGIN_UNVERIFIED,
                &[("label", label)],
                if ok { 0.0 } else { 1.0 },
            );
            if ok && self.verified.is_none_or(|v| v.number < lc.block.number) {
                self.verified = Some(lc.block);
                let n = lc.block.number as f64;
                ctx.report.gauge(m::L1_VERIFIED_BLOCK, &[("check", "origin")], n);
            }
            self.say(label, lc, verdict, mode);
        }
        let verified = self.verified;
        ctx.report.l1(|s| {
            s.verify = mode.as_str();
            if let Some(h) = c.l1 {
                s.l1_latest = h.latest;
                s.l1_finalized = h.finalized;
                s.l1_error = None;
            } else {
                s.l1_error = Some("the L1 endpoints could not be read (see the log)".into());
            }
            if let Some((lc, _)) = &c.safe {
                s.safe = Some(lc.clone());
            }
            if let Some((lc, _)) = &c.finalized {
                s.finalized = Some(lc.clone());
            }
            s.origin_verified = verified;
        });
    }

    /// Logs a label's verdict when it changed (per block and result).
    fn say(&mut self, label: &'static str, lc: &LabelCheck, verdict: &Verdict, mode: VerifyMode) {
        let key = (lc.block.hash, verdict.as_str());
        if self.said.get(label) == Some(&key) {
            return;
        }
        self.said.insert(label, key);
        let block = lc.block;
        let origin = lc.origin.map(|o| o.to_string());
        let waits = mode == VerifyMode::Enforce;
        match verdict {
            Verdict::Ok(_) => {
                debug!(target: "lightcl::l1", label, %block, origin, "L1 origin verified")
            }
            Verdict::Pending(why) if waits => info!(target: "lightcl::l1", label, %block, origin,
                reason = %why, "agreed label waits: its L1 origin is not verified yet; the EL keeps its label"),
            Verdict::Pending(why) => info!(target: "lightcl::l1", label, %block, origin,
                reason = %why, "agreed label's L1 origin is not verified yet (alarm mode: the label moves)"),
            Verdict::False(why) if waits => error!(target: "lightcl::l1", label, %block, origin,
                reason = %why, "the sources' agreed label was not built on this L1; it is not \
                applied (the EL keeps its label). Check the sources (see the runbook, \"L1 origin \
                check failed\")"),
            Verdict::False(why) => error!(target: "lightcl::l1", label, %block, origin,
                reason = %why, "the sources' agreed label was not built on this L1, and alarm \
                mode applies it anyway. Check the sources (see the runbook, \"L1 origin check \
                failed\")"),
        }
    }

    /// Compares the EL's output roots with the roots L1 holds at heights the EL finalized
    /// (above them the EL's chain may still be reorganised onto the agreed one, which the
    /// rest of the round does). In `enforce`, a settled root that differs halts.
    pub async fn audit(&mut self, ctx: &Ctx, local_finalized: BlockRef) -> Result<(), Fault> {
        let Some(v) = &ctx.l1 else { return Ok(()) };
        let mode = v.verifier.mode();
        if mode == VerifyMode::Off || !v.audit.enabled() {
            return Ok(());
        }
        // Another L1's contracts are never read, nor compared with.
        chain_ok(v).await?;
        // L1's contracts are read in the background, at most once per interval (shared by a
        // fleet), and only from an L1 whose chain id was confirmed: the round compares with
        // what the last read found and never waits on them.
        if v.chain_confirmed() && v.audit.take_due() {
            let v = v.clone();
            let token = ctx.token.clone();
            ctx.tasks.spawn(async move {
                use futures_util::FutureExt;
                let read = async {
                    match v.verifier.heads().await {
                        Ok(h) => match h.finalized {
                            Some(f) => v.audit.refresh_kept(v.verifier.l1(), f).await,
                            None => v.audit.abandon("L1 has no finalized block yet".into()),
                        },
                        Err(e) => v.audit.abandon(e.to_string()),
                    }
                };
                // A read that panics ends its claim too (else no replica would read again).
                let read = std::panic::AssertUnwindSafe(read).catch_unwind();
                tokio::select! {
                    () = token.cancelled() => v.audit.abandon("stopped".into()),
                    r = read => if r.is_err() {
                        v.audit.abandon("the read of L1's contracts failed unexpectedly".into());
                    }
                }
            });
        }
        let error = v.audit.error();
        if error != self.audit_error {
            if let Some(e) = &error {
                warn!(target: "lightcl::l1", error = %e, "could not read the roots L1 holds (check \
                    the [l1] contract addresses and RPCs); trying again after audit_interval_secs");
            }
            self.audit_error = error.clone();
        }
        ctx.report.l1(|s| s.audit_error = error);
        let held = v.audit.held();
        for h in &held {
            if h.root.l2_number > local_finalized.number || self.compared.get(h).is_some() {
                continue;
            }
            let key = (h.root.l2_number, h.root.root);
            if self.unavailable.get(&key).is_some_and(|t| t.elapsed() < UNAVAILABLE_RETRY) {
                continue;
            }
            let parts = match ctx.engine.output_parts(h.root.l2_number).await {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                // The EL busy or away: the round finds out on its own; compared next time.
                Err(e) if e.is_retryable() => {
                    debug!(target: "lightcl::l1", error = %e, "the EL's output root could not be read now");
                    continue;
                }
                Err(e) => {
                    warn!(target: "lightcl::l1", l2_block = h.root.l2_number, error = %e,
                        "the EL could not give its output root at a height L1 holds a root for \
                         (pruned state?); that root is not compared");
                    if self.unavailable.len() >= 1_024 {
                        self.unavailable.retain(|_, t| t.elapsed() < UNAVAILABLE_RETRY);
                    }
                    self.unavailable.insert(key, Instant::now());
                    continue;
                }
            };
            let local_root = parts.root();
            let c = Comparison {
                l2_number: h.root.l2_number,
                local_block: parts.block.hash,
                l1_root: h.root.root,
                local_root,
                matched: local_root == h.root.root,
                source: h.source,
            };
            self.compared.insert(h, c.clone());
            self.found(ctx, h, &c, mode)?;
        }
        let mismatches: Vec<Comparison> = held
            .iter()
            .filter_map(|h| self.compared.get(h))
            .filter(|c| !c.matched)
            .cloned()
            .collect();
        for kind in ["settled", "claim"] {
            let n = mismatches.iter().filter(|c| kind_of(c) == kind).count();
            ctx.report.gauge(m::L1_OUTPUT_MISMATCHES, &[("kind", kind)], n as f64);
        }
        ctx.report.l1(|s| s.mismatches = mismatches);
        Ok(())
    }

    /// Reports one comparison; the halt in `enforce` for a settled root that differs.
    fn found(
        &mut self,
        ctx: &Ctx,
        h: &Held,
        c: &Comparison,
        mode: VerifyMode,
    ) -> Result<(), Fault> {
        let kind = kind_of(c);
        let result = if c.matched { "match" } else { "mismatch" };
        ctx.report.count(m::L1_OUTPUTS_COMPARED, &[("kind", kind), ("result", result)], 1.0);
        let held_by = describe(h);
        if c.matched {
            if kind == "settled" {
                info!(target: "lightcl::l1", l2_block = c.l2_number, root = %c.l1_root, held_by,
                    "the EL's output root matches the root L1 settled");
                ctx.report.gauge(m::L1_VERIFIED_BLOCK, &[("check", "output")], c.l2_number as f64);
                let c = c.clone();
                ctx.report.l1(|s| s.last_settled = Some(c));
            } else {
                debug!(target: "lightcl::l1", l2_block = c.l2_number, held_by, "an open claim on L1 matches the EL's output root");
            }
            return Ok(());
        }
        if kind == "claim" {
            warn!(target: "lightcl::l1", l2_block = c.l2_number, claim = %c.l1_root,
                local = %c.local_root, held_by, "L1 holds a claim of another output root than the \
                EL's (an open dispute game, or an older registry's anchor); a claim is not a fact \
                (anyone may make one), so lightcl goes on; it acts if L1 settles it");
            return Ok(());
        }
        let c2 = c.clone();
        ctx.report.l1(|s| s.last_settled = Some(c2));
        if mode == VerifyMode::Enforce {
            return Err(Fault::Halt(RunError::OutputRootMismatch(Box::new(OutputMismatch {
                number: c.l2_number,
                local_block: c.local_block,
                local_root: c.local_root,
                settled_root: c.l1_root,
                held_by,
            }))));
        }
        error!(target: "lightcl::l1", l2_block = c.l2_number, settled = %c.l1_root,
            local = %c.local_root, held_by, "the EL's output root differs from the root L1 \
            settled: the EL follows a chain L1 did not settle. Alarm mode goes on; see the \
            runbook, \"Output root mismatch\"");
        Ok(())
    }
}

/// The L1 endpoints serve the configured L1 chain (checked once; an L1 that does not answer is
/// asked again later, see [`crate::l1::Verification::check_chain`]).
async fn chain_ok(v: &crate::l1::Verification) -> Result<(), Fault> {
    v.check_chain().await.map_err(|got| {
        Fault::Exit(RunError::ChainIdMismatch {
            who: "the [l1] RPCs".into(),
            expected: v.expected_chain().unwrap_or_default(),
            got,
        })
    })
}

fn kind_of(c: &Comparison) -> &'static str {
    if c.source.settled() { "settled" } else { "claim" }
}

fn describe(h: &Held) -> String {
    match h.source {
        crate::l1::audit::RootSource::Anchor => "the AnchorStateRegistry's anchor".into(),
        crate::l1::audit::RootSource::LegacyAnchor => {
            "the anchor of a registry before v3 (anchors(uint32): a claim, not settled)".into()
        }
        crate::l1::audit::RootSource::Game { index, address, status, settled } => format!(
            "dispute game {index} at {address}, {status}{}",
            if settled { ", settled" } else { "" }
        ),
    }
}
