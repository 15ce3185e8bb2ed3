//! lightcl end to end on reth and op-reth (from the shared folder), with geth or op-geth as the
//! source chain. op-reth 2.x, the production line and the OP follower of the end-to-end tests,
//! runs the whole set: catch-up and following, recovery at depth 3 and 200 and right above
//! finalized, the finalized-divergence halt, lightcl killed mid-recovery, the EL killed
//! mid-catch-up and mid-recovery, and a full disk (the OP recovery and halt tests in
//! `recovery.rs` run on it too, through [`crate::follow::op_follower`]). op-reth 1.10.2 and reth
//! 1.10.2 keep following and the deep recovery. Skipped, with a message, when the binaries are
//! absent. Where op-reth dies by itself (SIGBUS after a deep reorg, docs/engines.md) the tests
//! restart it on its datadir and require lightcl to heal it; they never skip the check.

use lightcl_testbed::ElClient;

use crate::el_crash::{killed_mid_catch_up, killed_mid_recovery};
use crate::follow::follows_safe_then_latest;
use crate::recovery::{lightcl_killed_mid_recovery, recovers};

const OP_RETH: ElClient = ElClient::OpReth;
const OP_RETH_2: ElClient = ElClient::OpReth2;
const RETH: ElClient = ElClient::Reth;

#[tokio::test]
async fn op_reth_follows_safe_then_latest() {
    if OP_RETH.available_or_skip("op_reth_follows_safe_then_latest") {
        follows_safe_then_latest(OP_RETH).await;
    }
}

#[tokio::test]
async fn op_reth_recovers_depth_200() {
    if OP_RETH.available_or_skip("op_reth_recovers_depth_200") {
        recovers(OP_RETH, 50, 200, 40).await;
    }
}

#[tokio::test]
async fn op_reth_2_lightcl_killed_mid_recovery_converges() {
    if OP_RETH_2.available_or_skip("op_reth_2_lightcl_killed_mid_recovery") {
        lightcl_killed_mid_recovery(OP_RETH_2).await;
    }
}

#[tokio::test]
async fn op_reth_2_killed_at_three_points_of_a_catch_up_converges() {
    if OP_RETH_2.available_or_skip("op_reth_2_killed_mid_catch_up") {
        killed_mid_catch_up(OP_RETH_2, &[40, 110, 180]).await;
    }
}

#[tokio::test]
async fn op_reth_2_killed_mid_recovery_converges() {
    if OP_RETH_2.available_or_skip("op_reth_2_killed_mid_recovery") {
        killed_mid_recovery(OP_RETH_2).await;
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

/// What kills op-reth with SIGBUS: the filesystem holding its datadir runs out of room while
/// MDBX grows its memory-mapped file (a write to a mapped page the filesystem cannot back). Here
/// the datadir sits on a small tmpfs that is filled up once the branches are built; the 200-deep
/// recovery's writes, or the blocks after it once MDBX's reserve is used up, then kill the EL. Restarting it does not help while the disk is full; once
/// room is made it comes back and lightcl must converge without any other help. Needs root (to
/// mount the tmpfs); skipped with the reason otherwise.
#[tokio::test]
async fn op_reth_2_out_of_disk_dies_and_lightcl_heals_it_once_room_is_made() {
    use std::time::{Duration, Instant};

    use lightcl_testbed::NodeOptions;
    use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
    use lightcl_testbed::tmpfs::Tmpfs;

    use crate::follow::{lightcl_bin, tail, wait_labels_healing};
    use crate::recovery::diverged_on;

    const TEST: &str = "op_reth_2_out_of_disk_dies_and_lightcl_heals_it_once_room_is_made";
    if !OP_RETH_2.available_or_skip(TEST) {
        return;
    }
    let fs = match Tmpfs::mount("64m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("SKIPPED {TEST}: {why}");
            return;
        }
    };
    let opts = NodeOptions {
        datadir_in: Some(fs.path().to_path_buf()),
        ..NodeOptions::of(OP_RETH_2, "local")
    };
    let mut d = diverged_on(opts, 50, 200, 40).await;
    fs.fill_leaving(64 * 1024).expect("fill the tmpfs");
    let cfg = FollowerConfig::new(&d.src, &d.local);
    let lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    // The recovery's writes may still fit in what MDBX had already reserved; the source goes on
    // producing (and lightcl feeding) until op-reth has to grow its files.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = d.local.reap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "op-reth did not die with a full disk; lightcl log:\n{}",
            tail(&lc.log(), 20)
        );
        d.main.build_many(5, lightcl_testbed::TxMix::new(4, 2)).await.expect("source goes on");
        let tip = d.main.head().number;
        assert!(d.main.set_labels(tip, tip - 5).await.expect("labels").is_valid());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = d.local.log_tail(60);
    eprintln!("op-reth with a full disk ended: {status}; log tail:\n{}", d.local.log_tail(8));
    use std::os::unix::process::ExitStatusExt;
    assert!(
        status.signal() == Some(lightcl_testbed::tmpfs::SIGBUS)
            || log.contains("No space left on device"),
        "op-reth ended {status} for another reason:\n{log}"
    );
    fs.free_up().expect("make room");
    d.local.start().await.expect("restart op-reth once there is room");
    let tip = d.main.head().number;
    let h = |n| d.main.hash_at(n).expect("hash");
    let want = (h(tip), h(tip), h(tip - 5));
    let deaths = wait_labels_healing(&mut d.local, want, Duration::from_secs(180), &lc).await;
    assert!(deaths.is_empty(), "op-reth died again with room to spare: {deaths:?}");
}

/// op-reth 2.x with the proofs-history ExEx on (`--proofs-history`: trie history in its own
/// database, for `eth_getProof` over the fault-proof window), through lightcl's 200-deep
/// recovery. The ExEx follows every reorg the engine commits, so a deep one is where it would
/// break (optimism #20934 reports a SIGBUS on deep rewinds). lightcl must converge, healing the
/// EL if it dies; how it ended is printed for docs/engines.md.
#[tokio::test]
async fn op_reth_2_with_proofs_history_recovers_depth_200() {
    use std::time::Duration;

    use lightcl_testbed::NodeOptions;
    use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};

    use crate::follow::{lightcl_bin, wait_labels_healing};
    use crate::recovery::diverged_on;

    if !OP_RETH_2.available_or_skip("op_reth_2_with_proofs_history_recovers_depth_200") {
        return;
    }
    // Storage schema v2: `proofs init` refuses v1 (the default) unless told to skip its backfill.
    let v2 = ["--proofs-history.storage-version", "v2"].map(String::from);
    let opts = NodeOptions {
        extra_args: [vec!["--proofs-history".to_string()], v2.to_vec()].concat(),
        after_init: [vec!["proofs".to_string(), "init".to_string()], v2.to_vec()].concat(),
        ..NodeOptions::of(OP_RETH_2, "local")
    };
    let mut d = diverged_on(opts, 50, 200, 40).await;
    let log_path = d.local.log_path();
    let el_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        el_log().contains("exex{id=\"proofs-history\"}: ExEx started"),
        "the proofs-history ExEx did not start:\n{}",
        d.local.log_tail(30)
    );
    let cfg = FollowerConfig::new(&d.src, &d.local);
    let lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    let tip = d.main.head().number;
    let h = |n| d.main.hash_at(n).expect("hash");
    let want = (h(tip), h(tip), h(tip - 5));
    let deaths = wait_labels_healing(&mut d.local, want, Duration::from_secs(180), &lc).await;
    assert!(lc.wait_log("reset to the common ancestor", Duration::from_secs(10)).await);
    let exex_errors: Vec<String> = el_log()
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN") || l.contains("panicked"))
        .map(str::to_string)
        .collect();
    eprintln!(
        "op-reth 2.x with --proofs-history, 200-deep recovery: converged; died {deaths:?}; \
         errors in its log: {exex_errors:#?}"
    );
}
