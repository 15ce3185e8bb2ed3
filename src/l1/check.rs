//! `lightcl check`, L1 side: each L1 endpoint (chain id, heads), the contracts (the anchor and
//! games read as verification reads them), and whether the anchor L1 settled is on the local
//! EL's chain where the EL has that block.

use std::sync::Arc;
use std::time::Duration;

use super::audit::RootSource;
use super::rpc::L1Rpc;
use super::{L1, L1Set, Verification};
use crate::config::L1Config;
use crate::engine::Engine;

/// One line of the report, and whether it passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// False: the check fails.
    pub ok: bool,
    /// What to print.
    pub text: String,
}

fn line(ok: bool, text: String) -> Line {
    Line { ok, text }
}

/// Checks the `[l1]` section against the endpoints and the replicas' ELs (`(name, EL)`).
pub async fn check(cfg: &L1Config, els: &[(String, Arc<dyn Engine>)]) -> Vec<Line> {
    let mut out = Vec::new();
    let timeout = Duration::from_millis(cfg.timeout_ms);
    let mut members: Vec<Arc<dyn L1>> = Vec::new();
    for url in &cfg.urls {
        let rpc = match L1Rpc::new(url, timeout) {
            Ok(r) => r,
            Err(e) => {
                out.push(line(
                    false,
                    format!("L1 {}: FAILED: {e}", crate::redact::RedactedUrl::new(url)),
                ));
                continue;
            }
        };
        match (rpc.chain_id().await, rpc.heads().await) {
            (Ok(id), _) if cfg.chain_id.is_some_and(|want| want != id) => out.push(line(
                false,
                format!(
                    "L1 {}: WRONG CHAIN: chain id {id}, [l1] chain_id says {}",
                    rpc.name(),
                    cfg.chain_id.unwrap_or_default()
                ),
            )),
            (Ok(id), Ok(h)) => out.push(line(
                true,
                format!(
                    "L1 {}: ok, chain id {id}, latest {}, finalized {}",
                    rpc.name(),
                    h.latest.map_or("none".into(), |b| b.to_string()),
                    h.finalized.map_or("none yet".into(), |b| b.to_string())
                ),
            )),
            (Err(e), _) | (_, Err(e)) => {
                out.push(line(false, format!("L1 {}: FAILED: {e}", rpc.name())))
            }
        }
        members.push(Arc::new(rpc));
    }
    if members.is_empty() {
        return out;
    }
    let v = Verification::new(L1Set::new(members, cfg.quorum.required(cfg.urls.len())), cfg);
    out.push(line(true, format!("L1 verification: {}", cfg.verify.as_str())));
    if !v.audit.enabled() {
        out.push(line(
            true,
            "L1 contracts: none configured; only the labels' L1 origins are checked (give \
             anchor_state_registry, dispute_game_factory or portal to audit output roots)"
                .into(),
        ));
        return out;
    }
    let heads = match v.verifier.heads().await {
        Ok(h) => h,
        Err(e) => {
            out.push(line(false, format!("L1 heads: FAILED: {e}")));
            return out;
        }
    };
    let Some(fin) = heads.finalized else {
        out.push(line(true, "L1 contracts: not read: L1 has no finalized block yet".into()));
        return out;
    };
    let roots = match v.audit.roots(v.verifier.l1(), fin).await {
        Ok(r) => r,
        Err(e) => {
            out.push(line(false, format!("L1 contracts: FAILED: {e}; check the [l1] addresses")));
            return out;
        }
    };
    let games = roots.iter().filter(|r| matches!(r.source, RootSource::Game { .. })).count();
    let anchor = roots
        .iter()
        .find(|r| matches!(r.source, RootSource::Anchor | RootSource::LegacyAnchor))
        .map(|r| (r.root, r.source.settled()));
    out.push(line(
        true,
        format!(
            "L1 contracts: ok at L1 block {fin}; anchor {}; {games} dispute games followed",
            anchor.map_or("none".into(), |(a, settled)| format!(
                "L2 #{} root {}{}",
                a.l2_number,
                a.root,
                if settled { "" } else { " (a registry before v3: a claim, not settled)" }
            ))
        ),
    ));
    let Some((anchor, settled)) = anchor else { return out };
    for (name, el) in els {
        let who = if els.len() > 1 { format!("[{name}] ") } else { String::new() };
        match el.output_parts(anchor.l2_number).await {
            Ok(Some(p)) if p.root() == anchor.root => out.push(line(
                true,
                format!(
                    "{who}EL: its block #{} matches the anchor {}",
                    anchor.l2_number,
                    if settled { "L1 settled" } else { "the older registry claims" }
                ),
            )),
            // An older registry's anchor is a claim: a difference is reported, not failed.
            Ok(Some(p)) if !settled => out.push(line(
                true,
                format!(
                    "{who}EL: its block {} has output root {}, but the older registry's anchor \
                     claims {} (not settled on L1: reported, never acted on; see the runbook, \
                     \"An open dispute game disagrees with the EL\")",
                    p.block,
                    p.root(),
                    anchor.root
                ),
            )),
            Ok(Some(p)) => out.push(line(
                false,
                format!(
                    "{who}EL: its block {} has output root {}, but L1 settled {}: the EL is on \
                     another chain than L1 settled (see the runbook, \"Output root mismatch\")",
                    p.block,
                    p.root(),
                    anchor.root
                ),
            )),
            Ok(None) => out.push(line(
                true,
                format!(
                    "{who}EL: has no block #{} yet; the anchor is compared once it has",
                    anchor.l2_number
                ),
            )),
            Err(e) => out.push(line(
                true,
                format!("{who}EL: could not give its output root at #{}: {e}", anchor.l2_number),
            )),
        }
    }
    out
}
