//! End to end: a fresh EL bootstraps through its own P2P sync from a peered EL, pinned to the
//! head lightcl hands it, then follows by replay; the fallbacks when it cannot.

use std::time::{Duration, Instant};

use lightcl_testbed::chains::cached_source;

use alloy_primitives::B256;
use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::proxy::{Exchange, Proxy, block_fetches, source_requests};
use lightcl_testbed::{ElClient, ElNode, NodeOptions, Producer, TxMix};

use crate::follow::{label_hashes, lightcl_bin, wait_labels};

fn h(p: &Producer, n: u64) -> B256 {
    p.hash_at(n).expect("hash")
}

/// A source of `client` with `blocks` blocks (safe 20 below the tip, finalized 40 below); one
/// block in ten carries transactions (blocks with transactions take the producer longer). Built
/// once and cached between runs (`lightcl_testbed::chains`); each call gets its own copy.
async fn source(client: ElClient, blocks: u64) -> (ElNode, Producer) {
    let key = format!("bootstrap-every10th-tx2-1-{blocks}-labels-20-40");
    cached_source(client, &key, async |p: &mut Producer| {
        for _ in 0..blocks / 10 {
            p.build_many(9, TxMix::NONE).await?;
            p.build_many(1, TxMix::new(2, 1)).await?;
        }
        p.build_many(blocks % 10, TxMix::NONE).await?;
        let labels = p.set_labels(blocks - 20, blocks - 40).await?;
        assert!(labels.is_valid(), "{labels:?}");
        Ok(())
    })
    .await
    .expect("bootstrap source")
}

/// A fresh EL of `client` on `src`'s genesis with extra flags.
async fn fresh(src: &ElNode, client: ElClient, args: &[&str]) -> ElNode {
    let opts = NodeOptions {
        genesis: src.genesis().clone(),
        extra_args: args.iter().map(|s| s.to_string()).collect(),
        ..NodeOptions::of(client, "follower")
    };
    ElNode::spawn_with(opts).await.expect("spawn follower")
}

/// lightcl following `src` into `el` with these bootstrap settings.
fn config(src: &ElNode, el: &ElNode, mode: &str, min_gap: u64, stall_secs: u64) -> FollowerConfig {
    let extra = format!(
        "bootstrap = \"{mode}\"\nbootstrap_min_gap_blocks = {min_gap}\nbootstrap_stall_secs = {stall_secs}"
    );
    FollowerConfig { extra, ..FollowerConfig::new(src, el) }
}

async fn wait_log(lc: &Lightcl, needle: &str, timeout: Duration) {
    assert!(lc.wait_log(needle, timeout).await, "no {needle:?} in the log:\n{}", tail(&lc.log()));
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Fresh `client` ELs peered with one source, one per entry of `modes` (its sync-mode flags),
/// each with its own lightcl, bootstrap `blocks` blocks by EL sync side by side, are handed
/// over, then follow new blocks by replay.
async fn bootstraps_by_el_sync(client: ElClient, blocks: u64, modes: &[&[&str]]) {
    if !client.available_or_skip(&format!("{client}_bootstraps_by_el_sync")) {
        return;
    }
    let (src, mut p) = source(client, blocks).await;
    let mut followers = Vec::new();
    for args in modes {
        let el = fresh(&src, client, args).await;
        el.add_peer(&src).await.expect("peer");
        let lc =
            Lightcl::start(lightcl_bin(), &config(&src, &el, "auto", 200, 120)).expect("lightcl");
        followers.push((el, lc, *args, Instant::now()));
    }
    let (safe, fin) = (blocks - 20, blocks - 40);
    for (el, lc, args, started) in &followers {
        let want = (h(&p, safe), h(&p, safe), h(&p, fin));
        wait_labels(el, want, Duration::from_secs(600), lc).await;
        // The EL applies the handed labels itself; lightcl logs the hand-over at its next round.
        wait_log(lc, "synced from its peers to the handed head", Duration::from_secs(30)).await;
        let log = lc.log();
        assert!(
            log.contains("handing it the agreed head"),
            "{args:?}: no EL sync:\n{}",
            tail(&log)
        );
        assert!(!log.contains("falling back"), "{args:?}: fell back:\n{}", tail(&log));
        eprintln!(
            "{client} {args:?}: {blocks} blocks bootstrapped by EL sync within {:?}",
            started.elapsed()
        );
    }
    // After the hand-over lightcl follows by replay.
    p.build_many(10, TxMix::new(1, 1)).await.expect("more");
    assert!(p.set_labels(blocks + 10, blocks).await.expect("labels").is_valid());
    let want = (h(&p, blocks + 10), h(&p, blocks + 10), h(&p, blocks));
    for (el, mut lc, args, _) in followers {
        wait_labels(&el, want, Duration::from_secs(120), &lc).await;
        assert!(lc.stop().await.expect("stops").success(), "{args:?}");
    }
}

#[tokio::test]
async fn geth_bootstraps_by_full_and_snap_sync_then_follows() {
    bootstraps_by_el_sync(ElClient::Geth, 2_000, &[&[], &["--syncmode", "snap"]]).await;
}

#[tokio::test]
async fn op_geth_bootstraps_by_full_and_snap_sync_then_follows() {
    bootstraps_by_el_sync(ElClient::OpGeth, 2_000, &[&[], &["--syncmode", "snap"]]).await;
}

#[tokio::test]
async fn op_reth_bootstraps_by_el_sync_then_follows() {
    bootstraps_by_el_sync(ElClient::OpReth, 2_000, &[&[]]).await;
}

#[tokio::test]
async fn op_reth_2_bootstraps_by_el_sync_then_follows() {
    bootstraps_by_el_sync(ElClient::OpReth2, 2_000, &[&[]]).await;
}

#[tokio::test]
async fn reth_bootstraps_by_el_sync_then_follows() {
    bootstraps_by_el_sync(ElClient::Reth, 2_000, &[&[]]).await;
}

/// A follower without peers: `auto` says so and replays; `el-sync` says nothing can progress
/// and writes no block.
#[tokio::test]
async fn without_peers_auto_replays_and_el_sync_says_nothing_can_progress() {
    let (src, p) = source(ElClient::Geth, 300).await;
    let el = fresh(&src, ElClient::Geth, &[]).await;
    let lc = Lightcl::start(lightcl_bin(), &config(&src, &el, "el-sync", 50, 3)).expect("lightcl");
    wait_log(&lc, "Nothing can progress", Duration::from_secs(60)).await;
    assert!(lc.log().contains("peers=Some(0)"), "{}", tail(&lc.log()));
    assert_eq!(el.head().await.expect("head").number, 0, "el-sync without peers wrote blocks");
    drop(lc);

    let lc = Lightcl::start(lightcl_bin(), &config(&src, &el, "auto", 50, 3)).expect("lightcl");
    wait_log(&lc, "has no P2P peers", Duration::from_secs(60)).await;
    wait_labels(&el, (h(&p, 280), h(&p, 280), h(&p, 260)), Duration::from_secs(120), &lc).await;
}

/// The follower's only peer holds another branch than the sources' from block 100: the head
/// lightcl hands it is not there, the EL sync makes no progress, and lightcl falls back to
/// replay; the EL ends on the sources' chain.
#[tokio::test]
async fn a_head_the_peers_do_not_hold_is_not_synced_from_them() {
    let (src, p) = source(ElClient::Geth, 300).await;
    let other = src.sibling("other-branch").await.expect("spawn peer");
    let mut rival = p.fork_onto(&other, 100, 7).await.expect("fork");
    rival.build_many(250, TxMix::new(1, 0)).await.expect("rival");
    assert!(rival.set_labels(330, 320).await.expect("labels").is_valid());
    let el = fresh(&src, ElClient::Geth, &[]).await;
    el.add_peer(&other).await.expect("peer");
    // Through a recording proxy: the blocks the walk proved are replayed from memory.
    let proxy = Proxy::start(vec![src.http_url()]).await.expect("proxy");
    proxy.record();
    let cfg = FollowerConfig {
        sources: vec![proxy.url().to_string()],
        ..config(&src, &el, "auto", 50, 5)
    };
    let lc = Lightcl::start(lightcl_bin(), &cfg).expect("lightcl");
    wait_log(&lc, "handing it the agreed head", Duration::from_secs(60)).await;
    wait_log(&lc, "falling back", Duration::from_secs(90)).await;
    wait_labels(&el, (h(&p, 280), h(&p, 280), h(&p, 260)), Duration::from_secs(120), &lc).await;
    let (head, _, _) = label_hashes(&el).await;
    assert_ne!(Some(head), rival.hash_at(280));
    assert_eq!(el.block_at(150).await.expect("read").map(|b| b.hash), p.hash_at(150));
    assert_fetched_once(&proxy.recorded(), 280, &lc);
}

/// Each block was fetched from the source at most once (blocks held in memory are reused), and
/// every block up to `imported` was fetched at least once. Prints the cost per block imported.
pub fn assert_fetched_once(recorded: &[Exchange], imported: u64, lc: &Lightcl) {
    let blocks = source_cost(recorded, imported);
    let twice = fetched_twice(recorded);
    assert!(twice.is_empty(), "blocks fetched more than once: {twice:?}\n{}", tail(&lc.log()));
    assert!(blocks >= imported, "{blocks} fetches cannot have carried {imported} blocks");
}

/// Prints what `recorded` cost the source per block imported; returns the block fetches.
pub fn source_cost(recorded: &[Exchange], imported: u64) -> u64 {
    let (blocks, other) = source_requests(recorded);
    eprintln!(
        "source cost: {blocks} block fetches and {other} other calls for {imported} blocks \
         imported ({:.2} block fetches and {:.2} calls per block)",
        blocks as f64 / imported.max(1) as f64,
        (blocks + other) as f64 / imported.max(1) as f64
    );
    blocks
}

/// The blocks `recorded` fetched more than once, and how often.
pub fn fetched_twice(recorded: &[Exchange]) -> Vec<(String, u32)> {
    block_fetches(recorded).into_iter().filter(|(_, n)| *n > 1).collect()
}
