//! Raw blocks end to end: catch-up and divergence recovery on op-geth and geth with
//! `fetch = "raw"` (every block from `debug_getRawBlock`), and `fetch = "auto"` against a source
//! whose debug API is off (JSON from it), and `fetch = "raw"` against that source (a clear error,
//! nothing written to the EL).

use std::time::Duration;

use alloy_primitives::B256;
use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::{ChainKind, ElClient, ElNode, NodeOptions, Producer, TxMix};

use crate::follow::{lightcl_bin, tail, wait_labels};
use crate::ops::{api_url, get};
use crate::recovery::recovers_with;

/// Blocks lightcl received per format, summed over the sources.
async fn blocks_by_format(lc: &Lightcl) -> (f64, f64) {
    let (_, text) = get(&format!("{}/metrics", api_url(lc).await)).await;
    let sum = |format: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("lightcl_source_blocks_total{"))
            .filter(|l| l.contains(&format!("format=\"{format}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    (sum("raw"), sum("json"))
}

fn h(p: &Producer, n: u64) -> B256 {
    p.hash_at(n).expect("hash")
}

/// A geth-family source of `kind` (`debug_api` on or off) with 200 blocks of transactions, safe
/// 180, finalized 150, and a fresh follower EL (geth, or op-reth 2.x).
async fn source_and_follower(kind: ChainKind, debug_api: bool) -> (ElNode, Producer, ElNode) {
    let opts = NodeOptions { debug_api, ..NodeOptions::new(kind, "source") };
    let src = ElNode::spawn_with(opts).await.expect("spawn source");
    let mut p = Producer::new(&src).await.expect("producer");
    p.build_many(200, TxMix::new(2, 1)).await.expect("build");
    assert!(p.set_labels(180, 150).await.expect("labels").is_valid());
    let el = src.follower("follower").await.expect("spawn follower");
    (src, p, el)
}

async fn raw_catch_up_and_recovery(kind: ChainKind) {
    let (src, p, el) = source_and_follower(kind, true).await;
    let cfg = FollowerConfig { extra: "fetch = \"raw\"".into(), ..FollowerConfig::new(&src, &el) };
    let lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    wait_labels(&el, (h(&p, 180), h(&p, 180), h(&p, 150)), Duration::from_secs(120), &lc).await;
    let (raw, json) = blocks_by_format(&lc).await;
    assert!(raw >= 180.0 && json == 0.0, "catch-up: raw {raw}, json {json}");
    drop(lc);

    let follower = ElClient::follower_for(kind);
    let (_, lc) = recovers_with(follower, 40, 30, 30, "fetch = \"raw\"").await;
    let (raw, json) = blocks_by_format(&lc).await;
    assert!(raw >= 30.0 && json == 0.0, "recovery: raw {raw}, json {json}");
}

/// op-geth's raw blocks into op-reth 2.x.
#[tokio::test]
async fn op_reth_2_catches_up_and_recovers_with_raw_blocks() {
    raw_catch_up_and_recovery(ChainKind::Optimism).await;
}

#[tokio::test]
async fn geth_catches_up_and_recovers_with_raw_blocks() {
    raw_catch_up_and_recovery(ChainKind::Ethereum).await;
}

/// `auto` against a source without the debug API: it says so once and fetches JSON from it;
/// `raw` against the same source: every block request fails with an error that says what to do,
/// and the EL is never written to.
#[tokio::test]
async fn auto_falls_back_to_json_where_the_debug_api_is_off() {
    let (src, p, el) = source_and_follower(ChainKind::Optimism, false).await;
    // `lightcl check` says how blocks come from the source, and that they verify.
    let cfg = FollowerConfig::new(&src, &el);
    let mut check =
        Lightcl::start_with_args(lightcl_bin(), &cfg.to_toml(), &["check"]).expect("check");
    let st = check.wait_exit(Duration::from_secs(60)).await.expect("check exits");
    assert!(st.success(), "{}", check.log());
    assert!(check.log().contains("blocks: JSON (its debug API is off"), "{}", check.log());
    assert!(check.log().contains("verified"), "{}", check.log());

    let cfg = FollowerConfig { extra: "fetch = \"raw\"".into(), ..cfg };
    let lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    assert!(
        lc.wait_log("does not serve raw blocks", Duration::from_secs(30)).await,
        "{}",
        tail(&lc.log(), 20)
    );
    assert!(lc.log().contains("turn on its debug API"), "{}", tail(&lc.log(), 20));
    let head = el.block_at(1).await.expect("EL answers");
    assert!(head.is_none(), "nothing reaches the EL without raw blocks: {head:?}");
    drop(lc);

    let cfg = FollowerConfig { extra: "fetch = \"auto\"".into(), ..cfg };
    let lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    wait_labels(&el, (h(&p, 180), h(&p, 180), h(&p, 150)), Duration::from_secs(120), &lc).await;
    let (raw, json) = blocks_by_format(&lc).await;
    assert!(raw == 0.0 && json >= 180.0, "auto without debug API: raw {raw}, json {json}");
    let said = lc.log().matches("fetching JSON blocks from it").count();
    assert_eq!(said, 1, "said once: {}", tail(&lc.log(), 20));
}
