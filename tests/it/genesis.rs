//! The genesis check end to end on real geth: an EL whose datadir was initialised from another
//! genesis of the same chain id, a source of another deployment of the chain id, and a
//! configured genesis the sources do not hold are each refused with exit code 3, naming both
//! hashes, before anything is written to the EL; `lightcl check` says the same.

use std::time::Duration;

use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::{ChainKind, ElClient, ElNode, NodeOptions};
use serde_json::Value;

use crate::follow::{lightcl_bin, source_chain};

/// Runs lightcl with `cfg` (and `args`) to its exit; its exit code and log.
async fn exit_of(cfg: &FollowerConfig, args: &[&str]) -> (Option<i32>, String) {
    let mut lc = Lightcl::start_with_args(lightcl_bin(), &cfg.to_toml(), args).expect("start");
    let st = lc.wait_exit(Duration::from_secs(60)).await.expect("lightcl exits");
    (st.code(), lc.log())
}

/// A geth on `genesis` (the same chain id as the source chain, another block 0).
async fn geth_on(genesis: Value, name: &str) -> ElNode {
    ElNode::spawn_with(NodeOptions { genesis, ..NodeOptions::of(ElClient::Geth, name) })
        .await
        .expect("spawn geth")
}

#[tokio::test]
async fn another_genesis_is_refused_in_the_el_and_in_a_source() {
    let (src, p) = source_chain(ChainKind::Ethereum, 20, 10, 5).await;
    let genesis = p.genesis().hash;
    let mut other = src.genesis().clone();
    other["extraData"] = Value::from("0x6f74686572");

    // An EL datadir initialised from another genesis.
    let wrong_el = geth_on(other.clone(), "wrong-datadir").await;
    let wrong = wrong_el.block("0x0").await.expect("block 0").expect("block 0").hash;
    assert_ne!(wrong, genesis);
    let cfg = FollowerConfig::new(&src, &wrong_el);
    let (code, log) = exit_of(&cfg, &["run"]).await;
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("genesis mismatch: the local EL"), "{log}");
    assert!(log.contains(&wrong.to_string()) && log.contains(&genesis.to_string()), "{log}");
    assert_eq!(wrong_el.head().await.expect("head").number, 0, "nothing was written");
    let (code, log) = exit_of(&cfg, &["check"]).await;
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("EL genesis: WRONG GENESIS"), "{log}");

    // A second source of another deployment of the chain id.
    let deployment = geth_on(other, "other-deployment").await;
    let el = src.follower("follower").await.expect("follower");
    let mut cfg = FollowerConfig::new(&src, &el);
    cfg.sources.push(deployment.http_url());
    let (code, log) = exit_of(&cfg, &["run"]).await;
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("genesis mismatch: source"), "{log}");
    assert!(log.contains(&wrong.to_string()) && log.contains(&genesis.to_string()), "{log}");
    assert!(log.contains("the first to answer"), "the first source named it: {log}");
    assert_eq!(el.head().await.expect("head").number, 0, "nothing was written");
    let (code, log) = exit_of(&cfg, &["check"]).await;
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("WRONG GENESIS: it holds"), "{log}");

    // A configured genesis that the (right) source does not hold: the configuration is named.
    let mut cfg = FollowerConfig::new(&src, &el);
    cfg.extra = format!("genesis_hash = \"{wrong}\"\n");
    let (code, log) = exit_of(&cfg, &["run"]).await;
    assert_eq!(code, Some(3), "{log}");
    assert!(log.contains("genesis_hash in the configuration"), "{log}");
    assert_eq!(el.head().await.expect("head").number, 0, "nothing was written");

    // The right EL and source: the genesis is learned and checked, and lightcl follows.
    let mut lc = Lightcl::start(lightcl_bin(), &FollowerConfig::new(&src, &el)).expect("start");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while el.head().await.expect("head").number < 10 {
        assert!(tokio::time::Instant::now() < deadline, "no progress: {}", lc.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(lc.log().contains("the EL holds the chain's genesis block"), "{}", lc.log());
    lc.stop().await;
}
