//! The safety check on every `newPayload` the simulated EL receives: I5, only the genuine block
//! may reach the EL (and nothing at all once lightcl halted).

use alloy_eips::eip4895::Withdrawal;
use lightcl::payload::Payload;

use crate::sim::World;

/// What the check concluded about one payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PayloadVerdict {
    /// Violations, in the order they are recorded.
    pub violations: Vec<String>,
    /// The payload is the world's block of its hash, intact (an EL refuses anything else: its
    /// hash does not match what it carries).
    pub genuine: bool,
}

/// The checks on a payload `p`; `halted`: lightcl halted and must stay quiet.
pub fn new_payload(w: &World, p: &Payload, halted: bool) -> PayloadVerdict {
    let mut violations = Vec::new();
    if halted {
        violations.push(format!("newPayload {} after lightcl halted", p.block));
    }
    // I5: only the genuine block may reach the EL.
    let genuine = w.block(&p.block.hash);
    let params = p.params_value();
    let sent_ws: Option<Vec<Withdrawal>> =
        serde_json::from_value(params[0]["withdrawals"].clone()).ok();
    // Prague: the execution requests must be the block's own (its header commits to them, so
    // an EL refuses any other list).
    let sent_requests: Option<Vec<alloy_primitives::Bytes>> =
        serde_json::from_value(params[3].clone()).ok();
    let intact = genuine.is_some_and(|g| {
        g.id == p.block
            && g.parent == p.parent_hash
            && sent_ws.as_ref() == Some(&g.withdrawals)
            && params[0]["gasUsed"] == "0x0"
            && (p.method != "engine_newPayloadV4"
                || sent_requests.as_ref() == Some(&g.requests.requests))
    });
    if !intact {
        violations.push(format!("I5: payload {} is not the genuine block", p.block));
    }
    PayloadVerdict { violations, genuine: intact }
}
