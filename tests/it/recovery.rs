//! Divergence recovery end to end on real ELs: the follower EL holds a rival branch; lightcl
//! finds the common ancestor, resets, replays, and never crosses finality.

use std::time::Duration;

use alloy_primitives::B256;
use lightcl_testbed::chains::cached_source;
use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::proxy::{Proxy, Route};
use lightcl_testbed::{ChainKind, ElClient, ElNode, NodeOptions, Producer, TxMix};

use crate::follow::{
    label_hashes, lightcl_bin, op_follower, tail, wait_labels, wait_labels_healing,
};

/// A source chain and a follower EL on a rival branch.
pub struct Diverged {
    pub src: ElNode,
    pub main: Producer,
    pub local: ElNode,
    pub rival: Producer,
}

/// The source (geth or op-geth) builds `ancestor` blocks; the follower EL (`follower`) gets them
/// and then builds `depth` rival blocks itself (its finalized label at `local_fin`); the source
/// then builds past the rival's height.
pub async fn diverged(follower: ElClient, ancestor: u64, depth: u64, local_fin: u64) -> Diverged {
    diverged_on(NodeOptions::of(follower, "local"), ancestor, depth, local_fin).await
}

/// [`diverged`] with the follower EL started from `local` (its genesis is the source's).
pub async fn diverged_on(
    local: NodeOptions,
    ancestor: u64,
    depth: u64,
    local_fin: u64,
) -> Diverged {
    let mix = TxMix::new(1, 0);
    // The source's whole chain is built once and cached between runs (lightcl_testbed::chains):
    // its blocks do not depend on the rival branch, which is built here on the local EL.
    let key = format!("diverged-tx1-0-{ancestor}-{depth}");
    let client = ElClient::default_for(local.client.chain());
    let (src, main) = cached_source(client, &key, async |main: &mut Producer| {
        main.build_many(ancestor + depth + 10, mix).await?;
        let tip = main.head().number;
        let labels = main.set_labels(tip, tip - 5).await?;
        assert!(labels.is_valid(), "{labels:?}");
        Ok(())
    })
    .await
    .expect("source chain");
    let local = ElNode::spawn_with(NodeOptions { genesis: src.genesis().clone(), ..local })
        .await
        .expect("spawn local");
    let mut rival = main.fork_onto(&local, ancestor, 77).await.expect("fork");
    rival.build_many(depth, mix).await.expect("rival branch");
    let rival_safe = local_fin.max(ancestor);
    assert!(rival.set_labels(rival_safe, local_fin).await.expect("labels").is_valid());
    Diverged { src, main, local, rival }
}

fn h(p: &Producer, n: u64) -> B256 {
    p.hash_at(n).expect("hash")
}

fn field(line: &str, name: &str) -> Option<u64> {
    let rest = line.split(&format!(" {name}=")).nth(1)?;
    rest.trim_start_matches('#').split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// Converges (restarting the EL if it dies by itself, which lightcl must heal); returns the
/// lookups the recovery reported.
pub async fn recovers(follower: ElClient, ancestor: u64, depth: u64, local_fin: u64) -> u64 {
    recovers_with(follower, ancestor, depth, local_fin, "").await.0
}

/// [`recovers`] with `extra` lines in lightcl's configuration; returns lightcl too.
pub async fn recovers_with(
    follower: ElClient,
    ancestor: u64,
    depth: u64,
    local_fin: u64,
    extra: &str,
) -> (u64, Lightcl) {
    let mut d = diverged(follower, ancestor, depth, local_fin).await;
    let cfg = FollowerConfig { extra: extra.to_string(), ..FollowerConfig::new(&d.src, &d.local) };
    let lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    let tip = d.main.head().number;
    let deaths = wait_labels_healing(
        &mut d.local,
        (h(&d.main, tip), h(&d.main, tip), h(&d.main, tip - 5)),
        Duration::from_secs(180),
        &lc,
    )
    .await;
    // The reset names the ancestor the search found; the EL converges a moment before lightcl
    // logs the recovery. An EL that died during the replay came back below the replayed blocks
    // (op-reth: at the ancestor), and lightcl finished by catching up instead.
    let reset = "reset to the common ancestor";
    assert!(lc.wait_log(reset, Duration::from_secs(10)).await, "{}", tail(&lc.log(), 30));
    let log = lc.log();
    let line = log.lines().find(|l| l.contains(reset)).unwrap_or_default();
    assert_eq!(field(line, "ancestor"), Some(ancestor), "{line}");
    assert_eq!(field(line, "depth"), Some(depth), "{line}");
    let lookups = field(line, "lookups").expect("lookups in the log");
    let range = ancestor + depth - local_fin;
    let bound = 2 * (64 - (range - 1).leading_zeros() as u64) + 4;
    assert!(lookups <= bound, "{lookups} lookups for range {range} (bound {bound})");
    if deaths.is_empty() {
        assert!(
            lc.wait_log(" recovered", Duration::from_secs(10)).await,
            "{}",
            tail(&lc.log(), 30)
        );
        let log = lc.log();
        let done = log.lines().find(|l| l.contains(" recovered")).unwrap_or_default();
        eprintln!("RECOVERY {follower} depth {depth}: {done}");
    } else {
        eprintln!("RECOVERY {follower} depth {depth}: the EL died {deaths:?}; lightcl healed it");
    }
    // The rival branch is gone from the canonical chain.
    assert_eq!(
        d.local.block_at(ancestor + 1).await.expect("b").map(|b| b.hash),
        Some(h(&d.main, ancestor + 1))
    );
    assert_ne!(h(&d.rival, ancestor + 1), h(&d.main, ancestor + 1));
    (lookups, lc)
}

#[tokio::test]
async fn op_reth_2_recovers_depth_3() {
    recovers(op_follower(), 40, 3, 30).await;
}

#[tokio::test]
async fn geth_recovers_depth_3() {
    recovers(ElClient::Geth, 40, 3, 30).await;
}

#[tokio::test]
async fn op_reth_2_recovers_depth_200() {
    recovers(op_follower(), 50, 200, 40).await;
}

#[tokio::test]
async fn geth_recovers_depth_200_past_its_rewind_limit() {
    recovers(ElClient::Geth, 50, 200, 40).await;
}

/// Deeper than a replay's forkchoice cadence (64) and than geth's 32-block rewind, but within its
/// 128 recent states: no roll-back, and no forkchoice until the replay passes the branch geth
/// held (docs/engines.md, op-reth and SIGBUS); geth must still execute the whole replay.
#[tokio::test]
async fn geth_recovers_depth_100_without_a_roll_back() {
    recovers(ElClient::Geth, 50, 100, 40).await;
}

#[tokio::test]
async fn divergence_right_above_local_finalized_recovers() {
    recovers_right_above_finalized(op_follower()).await;
}

/// The follower's finalized block is the common ancestor (the fork is at finalized+1).
pub async fn recovers_right_above_finalized(follower: ElClient) {
    let d = diverged(follower, 40, 5, 40).await;
    let fin_before = d.local.block("finalized").await.expect("fin").expect("set");
    let cfg = FollowerConfig::new(&d.src, &d.local);
    let lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    let tip = d.main.head().number;
    wait_labels(
        &d.local,
        (h(&d.main, tip), h(&d.main, tip), h(&d.main, tip - 5)),
        Duration::from_secs(120),
        &lc,
    )
    .await;
    assert_eq!(fin_before.hash, h(&d.main, 40), "local finalized was the common block");
    assert!(lc.wait_log(" recovered", Duration::from_secs(10)).await);
}

#[tokio::test]
async fn divergence_below_local_finalized_halts_without_writes() {
    halts_below_finalized(op_follower()).await;
}

/// The follower finalized block 45 of the rival branch, which forks after 40: halt, no writes.
pub async fn halts_below_finalized(follower: ElClient) {
    let d = diverged(follower, 40, 10, 45).await;
    let before = label_hashes(&d.local).await;
    let cfg = FollowerConfig::new(&d.src, &d.local);
    let mut lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    assert!(
        lc.wait_log("finalized divergence at height 45", Duration::from_secs(60)).await,
        "{}",
        tail(&lc.log(), 20)
    );
    let log = lc.log();
    assert!(
        log.contains(&h(&d.rival, 45).to_string()) && log.contains(&h(&d.main, 45).to_string()),
        "both hashes named:\n{}",
        tail(&log, 10)
    );
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(label_hashes(&d.local).await, before, "the EL changed after the halt");
    }
    assert!(
        lc.wait_exit(Duration::from_millis(10)).await.is_none(),
        "lightcl stays up while halted"
    );
    let st = lc.stop().await.expect("exits on SIGTERM");
    assert_eq!(st.code(), Some(4), "halted exit code");
}

#[tokio::test]
async fn flapping_source_never_resets_to_a_non_common_block() {
    // Source A: main chain. Source B: a second branch forking from A after 60. The follower:
    // a third branch forking after 50, finalized at 45. A proxy alternates between A and B.
    let d = diverged(op_follower(), 50, 20, 45).await;
    let b_node = d.src.sibling("branch-b").await.expect("spawn B");
    let mut b = d.main.fork_onto(&b_node, 60, 99).await.expect("fork B");
    b.build_many(30, TxMix::new(1, 0)).await.expect("B blocks");
    let tip = b.head().number;
    assert!(b.set_labels(tip, tip - 5).await.expect("labels").is_valid());
    let proxy = Proxy::start(vec![d.src.http_url(), b_node.http_url()]).await.expect("proxy");
    proxy.set_route(Route::Alternate);
    let cfg = FollowerConfig {
        sources: vec![proxy.url().to_string()],
        ..FollowerConfig::new(&d.src, &d.local)
    };
    let lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    let fin45 = h(&d.main, 45);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let fin = d.local.block("finalized").await.expect("fin").expect("set");
        assert!(fin.number >= 45, "finalized moved back: {fin:?}");
        if fin.number == 45 {
            assert_eq!(fin.hash, fin45, "finalized changed hash");
        }
    }
    proxy.set_route(Route::Fixed(0));
    let main_tip = d.main.head().number;
    wait_labels(
        &d.local,
        (h(&d.main, main_tip), h(&d.main, main_tip), h(&d.main, main_tip - 5)),
        Duration::from_secs(120),
        &lc,
    )
    .await;
    // Every reset named a block common to the follower's branch and both source branches.
    for line in lc.log().lines().filter(|l| l.contains("reset to the common ancestor")) {
        let n = field(line, "ancestor").expect("ancestor height");
        assert!((45..=50).contains(&n), "reset to #{n}, not a common ancestor in [45, 50]: {line}");
        assert!(line.contains(&h(&d.main, n).to_string()), "{line}");
    }
}

#[tokio::test]
async fn killed_during_replay_then_converges() {
    lightcl_killed_mid_recovery(ElClient::Geth).await;
}

/// lightcl SIGKILLed right after its reset to the common ancestor, then started again.
pub async fn lightcl_killed_mid_recovery(follower: ElClient) {
    let d = diverged(follower, 30, 150, 20).await;
    let proxy = Proxy::start(vec![d.src.http_url()]).await.expect("proxy");
    let cfg = FollowerConfig {
        sources: vec![proxy.url().to_string()],
        // One recovery window of 64 blocks (the rest of the 150 follows as catch-up).
        extra: "prefetch = 64\nfetch_concurrency = 1".into(),
        ..FollowerConfig::new(&d.src, &d.local)
    };
    let mut lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    assert!(
        lc.wait_log("reset to the common ancestor", Duration::from_secs(120)).await,
        "{}",
        tail(&lc.log(), 20)
    );
    lc.kill();
    let tip = d.main.head().number;
    // Killed after the reset and before the EL reached the sources' tip: mid-replay, or (on a
    // slow poll of the log) in the catch-up right after it. Either way an interrupted recovery.
    let at_kill = d.local.head().await.expect("head").number;
    assert!(
        at_kill < tip,
        "the EL was at the tip ({at_kill}) before the kill; the test proves nothing"
    );
    lc.restart().expect("restart");
    wait_labels(
        &d.local,
        (h(&d.main, tip), h(&d.main, tip), h(&d.main, tip - 5)),
        Duration::from_secs(180),
        &lc,
    )
    .await;
}

/// The remembered floor end to end: lightcl finalizes block 30 on op-geth; the EL is SIGKILLed
/// and comes back with its head and finalized block at genesis (docs/engines.md); lightcl is
/// restarted against a source whose chain forks after block 20, below the floor. lightcl must
/// refuse it as a finalized divergence and send nothing of that branch to the EL.
#[tokio::test]
async fn crashed_el_does_not_make_lightcl_forget_finality() {
    let kind = ChainKind::Optimism;
    let mix = TxMix::new(1, 0);
    let src = ElNode::spawn(kind, "source").await.expect("spawn source");
    let mut main = Producer::new(&src).await.expect("producer");
    main.build_many(40, mix).await.expect("chain");
    assert!(main.set_labels(40, 30).await.expect("labels").is_valid());
    let mut local = src.sibling("local").await.expect("spawn local");
    let cfg = FollowerConfig::new(&src, &local);
    let mut lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    wait_labels(&local, (h(&main, 40), h(&main, 40), h(&main, 30)), Duration::from_secs(120), &lc)
        .await;
    let st = lc.stop().await.expect("stops on SIGTERM");
    assert_eq!(st.code(), Some(0));
    let floor = std::fs::read_to_string(lc.state_dir().join("floor.json")).expect("state file");
    assert!(floor.contains(&h(&main, 30).to_string()), "the floor is block 30: {floor}");

    // The EL crashes and comes back at genesis.
    local.kill();
    local.start().await.expect("restart the EL");
    let genesis = main.genesis().hash;
    let back = label_hashes(&local).await;
    assert_eq!(back.0, genesis, "op-geth comes back at genesis after SIGKILL");
    // It reports genesis as finalized, or (under load) no finalized block at all.
    assert!(back.2.is_none() || back.2 == Some(genesis), "finalized after SIGKILL: {back:?}");

    // A source on a branch forking after 20, below the floor, agreed by itself as final.
    let branch_node = src.sibling("branch").await.expect("spawn branch source");
    let mut branch = main.fork_onto(&branch_node, 20, 55).await.expect("fork");
    branch.build_many(30, mix).await.expect("branch blocks");
    let tip = branch.head().number;
    assert!(branch.set_labels(tip, tip - 5).await.expect("labels").is_valid());
    let state_dir = lc.state_dir();
    let cfg = FollowerConfig {
        sources: vec![branch_node.http_url()],
        extra: format!("state_dir = {:?}", state_dir.display().to_string()),
        ..FollowerConfig::new(&branch_node, &local)
    };
    let mut lc2 = Lightcl::start(lightcl_bin(), &cfg).expect("start again");
    assert!(
        lc2.wait_log("finalized divergence at height 30", Duration::from_secs(60)).await,
        "{}",
        tail(&lc2.log(), 30)
    );
    // Nothing of the branch reached the EL: no payload, no forkchoice.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        for n in 21..=tip {
            let b = local.block_by_hash(h(&branch, n)).await.expect("read");
            assert!(b.is_none(), "branch block {n} reached the EL:\n{}", tail(&lc2.log(), 30));
        }
        let now = label_hashes(&local).await;
        assert!(now.0 != h(&branch, 21) && now.1 != Some(h(&branch, 21)), "{now:?}");
    }
    let log = lc2.log();
    assert!(
        log.contains(&h(&main, 30).to_string()),
        "names the remembered block:\n{}",
        tail(&log, 10)
    );
    let st = lc2.stop().await.expect("exits on SIGTERM");
    assert_eq!(st.code(), Some(4), "halted exit code");
}
