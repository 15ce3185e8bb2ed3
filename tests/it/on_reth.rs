//! lightcl end to end on reth and op-reth (v1.10.2, from the shared folder), with geth or
//! op-geth as the source chain: catch-up and following, recovery at depth 3 and 200 and right
//! above finalized, the finalized-divergence halt, lightcl killed mid-recovery, and the EL
//! killed mid-catch-up and mid-recovery. Skipped, with a message, when the binaries are absent.
//! Where op-reth dies by itself (SIGBUS after a deep reorg, docs/engines.md) the tests restart it
//! on its datadir and require lightcl to heal it; they never skip the check.

use lightcl_testbed::ElClient;

use crate::el_crash::{killed_mid_catch_up, killed_mid_recovery};
use crate::follow::follows_safe_then_latest;
use crate::recovery::{
    halts_below_finalized, lightcl_killed_mid_recovery, recovers, recovers_right_above_finalized,
};

const OP_RETH: ElClient = ElClient::OpReth;
const RETH: ElClient = ElClient::Reth;

#[tokio::test]
async fn op_reth_follows_safe_then_latest() {
    if OP_RETH.available_or_skip("op_reth_follows_safe_then_latest") {
        follows_safe_then_latest(OP_RETH).await;
    }
}

#[tokio::test]
async fn op_reth_recovers_depth_3() {
    if OP_RETH.available_or_skip("op_reth_recovers_depth_3") {
        recovers(OP_RETH, 40, 3, 30).await;
    }
}

#[tokio::test]
async fn op_reth_recovers_depth_200() {
    if OP_RETH.available_or_skip("op_reth_recovers_depth_200") {
        recovers(OP_RETH, 50, 200, 40).await;
    }
}

#[tokio::test]
async fn op_reth_recovers_right_above_finalized() {
    if OP_RETH.available_or_skip("op_reth_recovers_right_above_finalized") {
        recovers_right_above_finalized(OP_RETH).await;
    }
}

#[tokio::test]
async fn op_reth_divergence_below_finalized_halts_without_writes() {
    if OP_RETH.available_or_skip("op_reth_divergence_below_finalized_halts") {
        halts_below_finalized(OP_RETH).await;
    }
}

#[tokio::test]
async fn op_reth_lightcl_killed_mid_recovery_converges() {
    if OP_RETH.available_or_skip("op_reth_lightcl_killed_mid_recovery") {
        lightcl_killed_mid_recovery(OP_RETH).await;
    }
}

#[tokio::test]
async fn op_reth_killed_at_three_points_of_a_catch_up_converges() {
    if OP_RETH.available_or_skip("op_reth_killed_mid_catch_up") {
        killed_mid_catch_up(OP_RETH, &[60, 170, 290]).await;
    }
}

#[tokio::test]
async fn op_reth_killed_mid_recovery_converges() {
    if OP_RETH.available_or_skip("op_reth_killed_mid_recovery") {
        killed_mid_recovery(OP_RETH).await;
    }
}

#[tokio::test]
async fn reth_follows_safe_then_latest() {
    if RETH.available_or_skip("reth_follows_safe_then_latest") {
        follows_safe_then_latest(RETH).await;
    }
}

#[tokio::test]
async fn reth_recovers_depth_200() {
    if RETH.available_or_skip("reth_recovers_depth_200") {
        recovers(RETH, 50, 200, 40).await;
    }
}
