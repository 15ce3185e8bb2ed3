//! End to end: lightcl (the real binary) follows a source EL into a fresh EL, both real.

use std::path::Path;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use lightcl_testbed::chains::cached_source;
use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::{ChainKind, ElClient, ElNode, Producer, TxMix};

pub fn lightcl_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lightcl"))
}

/// (head, safe, finalized) hashes of a node.
pub async fn label_hashes(n: &ElNode) -> (B256, Option<B256>, Option<B256>) {
    let head = n.head().await.expect("head").hash;
    let safe = n.block("safe").await.expect("safe").map(|b| b.hash);
    let fin = n.block("finalized").await.expect("fin").map(|b| b.hash);
    (head, safe, fin)
}

/// Waits until `el` has exactly these head, safe and finalized hashes.
pub async fn wait_labels(el: &ElNode, want: (B256, B256, B256), timeout: Duration, lc: &Lightcl) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = label_hashes(el).await;
        if got == (want.0, Some(want.1), Some(want.2)) {
            return;
        }
        if Instant::now() > deadline {
            let n = el.head().await.map(|b| b.number).unwrap_or(0);
            panic!(
                "EL did not converge: got {got:?} (head #{n}), want {want:?}\nlightcl log tail:\n{}",
                tail(&lc.log(), 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// As [`wait_labels`], but an EL found dead (it crashed by itself, as op-reth 1.10.2 sometimes
/// does with SIGBUS after a deep reorg) is restarted on its datadir and lightcl must heal it.
/// Returns how the EL ended each time it died.
pub async fn wait_labels_healing(
    el: &mut ElNode,
    want: (B256, B256, B256),
    timeout: Duration,
    lc: &Lightcl,
) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut deaths = Vec::new();
    loop {
        restart_if_died(el, &mut deaths).await;
        if label_hashes_now(el).await == Some((want.0, Some(want.1), Some(want.2))) {
            return deaths;
        }
        if Instant::now() > deadline {
            let got = label_hashes_now(el).await;
            panic!(
                "EL did not converge: got {got:?}, want {want:?}\nlightcl log tail:\n{}",
                tail(&lc.log(), 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What op-reth logs, at every start, when a crash left its storage inconsistent.
const DAMAGED_STORAGE: &str = "Persistence service failed";

/// Handles an EL that died by itself as the runbook says, recording how it ended in `deaths`:
/// restart it on its datadir, or, when its storage is damaged (op-reth 1.10.2 after a SIGKILL
/// during its first persistence: "Persistence service failed ... UnexpectedStaticFileTxNumber"
/// at every start), resync it from scratch. lightcl must then fill it again by itself.
pub async fn restart_if_died(el: &mut ElNode, deaths: &mut Vec<String>) {
    let Some(status) = el.reap() else { return };
    let damaged = el.log_tail(40).contains(DAMAGED_STORAGE);
    eprintln!(
        "{} '{}' died by itself ({status}, storage damaged: {damaged}); log tail:\n{}",
        el.client(),
        el.name(),
        el.log_tail(15)
    );
    deaths.push(format!("{status}{}", if damaged { " (damaged storage)" } else { "" }));
    assert!(deaths.len() <= 3, "the EL died {} times: {deaths:?}", deaths.len());
    if damaged {
        el.wipe().await.expect("resync the EL from scratch");
    } else {
        el.start().await.expect("restart the EL after it died");
    }
}

/// [`label_hashes`], or `None` when the EL does not answer (it may have just died).
pub async fn label_hashes_now(n: &ElNode) -> Option<(B256, Option<B256>, Option<B256>)> {
    let head = n.head().await.ok()?.hash;
    let safe = n.block("safe").await.ok()?.map(|b| b.hash);
    let fin = n.block("finalized").await.ok()?.map(|b| b.hash);
    Some((head, safe, fin))
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A source with `blocks` blocks carrying transactions, safe and finalized as given.
/// Built once and cached between runs (`lightcl_testbed::chains`); each call gets its own copy.
pub async fn source_chain(kind: ChainKind, blocks: u64, safe: u64, fin: u64) -> (ElNode, Producer) {
    let key = format!("tx1-1-{blocks}-{safe}-{fin}");
    cached_source(ElClient::default_for(kind), &key, async |p: &mut Producer| {
        p.build_many(blocks, TxMix::new(1, 1)).await?;
        let labels = p.set_labels(safe, fin).await?;
        assert!(labels.is_valid(), "labels {safe}/{fin}: {labels:?}");
        Ok(())
    })
    .await
    .expect("source chain")
}

/// The follower EL of the OP end-to-end tests: op-reth 2.x, or op-geth where it is not installed
/// ([`ElClient::follower_for`]).
pub fn op_follower() -> ElClient {
    ElClient::follower_for(ChainKind::Optimism)
}

fn h(p: &Producer, n: u64) -> B256 {
    p.hash_at(n).expect("hash")
}

/// A geth-family source with 300 blocks; lightcl fills a fresh `follower` EL (safe), follows it,
/// then follows latest.
pub async fn follows_safe_then_latest(follower: ElClient) {
    let (src, mut p) = source_chain(follower.chain(), 300, 250, 200).await;
    let el = src.sibling_as(follower, "follower").await.expect("spawn follower");
    let cfg = FollowerConfig::new(&src, &el);
    let mut lc = Lightcl::start(lightcl_bin(), &cfg).expect("start lightcl");
    wait_labels(&el, (h(&p, 250), h(&p, 250), h(&p, 200)), Duration::from_secs(120), &lc).await;

    // The producer moves on; lightcl follows.
    p.build_many(20, TxMix::new(1, 1)).await.expect("more blocks");
    assert!(p.set_labels(310, 290).await.expect("labels").is_valid());
    wait_labels(&el, (h(&p, 310), h(&p, 310), h(&p, 290)), Duration::from_secs(60), &lc).await;
    let status = lc.stop().await.expect("lightcl exits on SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(lc.log().contains("catching up") || lc.log().contains("inserted"), "no progress log");

    // Following latest: the head reaches the source's latest.
    let latest = FollowerConfig { follow: "latest", ..cfg };
    let lc = Lightcl::start(lightcl_bin(), &latest).expect("start lightcl");
    wait_labels(&el, (h(&p, 320), h(&p, 310), h(&p, 290)), Duration::from_secs(60), &lc).await;
}

#[tokio::test]
async fn op_reth_2_follows_safe_then_latest() {
    follows_safe_then_latest(op_follower()).await;
}

#[tokio::test]
async fn geth_follows_safe_then_latest() {
    follows_safe_then_latest(ElClient::Geth).await;
}

#[tokio::test]
async fn check_command_against_real_endpoints() {
    let (src, _p) = source_chain(ChainKind::Optimism, 3, 3, 1).await;
    let el = src.follower("follower").await.expect("spawn follower");
    let cfg = FollowerConfig::new(&src, &el);
    let mut ok =
        Lightcl::start_with_args(lightcl_bin(), &cfg.to_toml(), &["check"]).expect("check");
    let st = ok.wait_exit(Duration::from_secs(60)).await.expect("check exits");
    assert!(st.success(), "check failed:\n{}", ok.log());
    assert!(
        ok.log().contains("EL Engine API: ok, JWT accepted") && ok.log().contains("check passed")
    );
    assert!(ok.log().contains("blocks: raw, block #3"), "{}", ok.log());

    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("wrong.hex");
    std::fs::write(&wrong, "cd".repeat(32)).expect("write");
    let bad = FollowerConfig { jwt_file: wrong, chain_id: 7, ..cfg };
    let mut lc =
        Lightcl::start_with_args(lightcl_bin(), &bad.to_toml(), &["check"]).expect("check");
    let st = lc.wait_exit(Duration::from_secs(60)).await.expect("check exits");
    assert_eq!(st.code(), Some(3), "{}", lc.log());
    let log = lc.log();
    assert!(log.contains("WRONG CHAIN") && log.contains("refused our Engine API token"), "{log}");
    assert_eq!(el.head().await.expect("head").number, 0, "check never writes");
}
