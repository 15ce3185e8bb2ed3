//! lightcl and the EL stopped, killed and restarted mid-catch-up; a WebSocket source that wakes
//! the follower with newHeads.

use std::time::{Duration, Instant};

use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::proxy::Proxy;
use lightcl_testbed::{ChainKind, ElNode, Producer, TxMix};

use crate::follow::{lightcl_bin, source_chain, tail, wait_labels};

/// A slow source (one request at a time, each delayed) so catch-up can be interrupted.
fn slow(cfg: FollowerConfig, proxy: &Proxy) -> FollowerConfig {
    proxy.set_delay(Duration::from_millis(15));
    FollowerConfig {
        sources: vec![proxy.url().to_string()],
        extra: "prefetch = 4\nfetch_concurrency = 1".into(),
        ..cfg
    }
}

async fn wait_height(el: &ElNode, at_least: u64, lc: &Lightcl) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let n = el.head().await.map(|b| b.number).unwrap_or(0);
        if n >= at_least {
            return n;
        }
        assert!(Instant::now() < deadline, "EL stuck at {n}:\n{}", tail(&lc.log(), 30));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn want(
    p: &Producer,
    head: u64,
    safe: u64,
    fin: u64,
) -> (alloy_primitives::B256, alloy_primitives::B256, alloy_primitives::B256) {
    let h = |n| p.hash_at(n).expect("hash");
    (h(head), h(safe), h(fin))
}

#[tokio::test]
async fn lightcl_sigterm_and_sigkill_mid_catch_up_then_converges() {
    // The chain the EL kill tests use (cached once for both).
    let (src, p) = source_chain(ChainKind::Optimism, 240, 240, 190).await;
    let el = src.follower("follower").await.expect("spawn follower");
    let proxy = Proxy::start(vec![src.http_url()]).await.expect("proxy");
    let cfg = slow(FollowerConfig::new(&src, &el), &proxy);
    let mut lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    wait_height(&el, 40, &lc).await;
    let st = lc.stop().await.expect("exits on SIGTERM");
    assert!(st.success(), "SIGTERM exit {st:?}");
    let at_term = el.head().await.expect("head").number;
    assert!(at_term < 240, "catch-up finished before the SIGTERM; the test proves nothing");
    assert!(lc.log().contains("shutdown requested"));

    lc.restart().expect("restart");
    wait_height(&el, at_term + 40, &lc).await;
    lc.kill();
    let at_kill = el.head().await.expect("head").number;
    assert!(at_kill < 240, "catch-up finished before the SIGKILL");

    lc.restart().expect("restart after SIGKILL");
    wait_labels(&el, want(&p, 240, 240, 190), Duration::from_secs(120), &lc).await;
}

#[tokio::test]
async fn el_restart_mid_catch_up_is_waited_for() {
    let (src, p) = source_chain(ChainKind::Ethereum, 240, 240, 190).await;
    let mut el = src.follower("follower").await.expect("spawn follower");
    let proxy = Proxy::start(vec![src.http_url()]).await.expect("proxy");
    let cfg = slow(FollowerConfig::new(&src, &el), &proxy);
    let lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    wait_height(&el, 40, &lc).await;
    el.stop().await.expect("stop EL");
    assert!(
        lc.wait_log("EL unavailable; waiting for it", Duration::from_secs(30)).await,
        "no wait logged:\n{}",
        tail(&lc.log(), 20)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    el.start().await.expect("start EL again");
    wait_labels(&el, want(&p, 240, 240, 190), Duration::from_secs(120), &lc).await;
    assert!(
        lc.log().contains("EL forkchoice re-asserted"),
        "forkchoice re-sent after the EL came back"
    );
}

#[tokio::test]
async fn websocket_source_wakes_the_follower() {
    let (src, mut p) = source_chain(ChainKind::Optimism, 20, 20, 10).await;
    let el = src.follower("follower").await.expect("spawn follower");
    // A poll interval far beyond the test: only newHeads notifications can drive it.
    let cfg = FollowerConfig {
        sources: vec![src.ws_url()],
        follow: "latest",
        poll_interval_ms: 600_000,
        ..FollowerConfig::new(&src, &el)
    };
    let lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    wait_labels(&el, want(&p, 20, 20, 10), Duration::from_secs(60), &lc).await;
    for _ in 0..5 {
        p.build(TxMix::new(1, 0)).await.expect("build");
    }
    wait_labels(&el, want(&p, 25, 20, 10), Duration::from_secs(30), &lc).await;
}
