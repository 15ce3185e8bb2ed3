//! Several sources that must agree, end to end: two honest sources on branch A and a third on
//! branch B (or down, or lying), behind test proxies.

use std::time::Duration;

use alloy_primitives::B256;
use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::producer::replay;
use lightcl_testbed::proxy::{Proxy, Route};
use lightcl_testbed::{ChainKind, ElNode, Producer, TxMix};

use crate::follow::{label_hashes, lightcl_bin, tail, wait_labels};

const MIX: TxMix = TxMix::new(1, 0);

/// Branch A on two ELs (a1 produces, a2 mirrors), branch B forking after `fork` on a third.
struct Sources {
    a1: ElNode,
    a2: ElNode,
    b: ElNode,
    main: Producer,
    mirrored: u64,
}

impl Sources {
    async fn new(kind: ChainKind, blocks: u64, fork: u64, b_blocks: u64) -> Self {
        let a1 = ElNode::spawn(kind, "a1").await.expect("spawn a1");
        let mut main = Producer::new(&a1).await.expect("producer");
        main.build_many(blocks, MIX).await.expect("build");
        assert!(main.set_labels(blocks, blocks - 10).await.expect("labels").is_valid());
        let a2 = a1.sibling("a2").await.expect("spawn a2");
        let b = a1.sibling("b").await.expect("spawn b");
        let mut rival = main.fork_onto(&b, fork, 5).await.expect("fork b");
        rival.build_many(b_blocks, MIX).await.expect("b blocks");
        let tip = rival.head().number;
        assert!(rival.set_labels(tip, fork + 5).await.expect("b labels").is_valid());
        let mut s = Self { a1, a2, b, main, mirrored: 0 };
        s.mirror().await;
        s
    }

    /// Copies branch A's new blocks and labels to a2.
    async fn mirror(&mut self) {
        let tip = self.main.head().number;
        let (safe, fin) = self.main.labels();
        replay(&self.a2, &self.main.blocks(self.mirrored + 1, tip), safe, fin)
            .await
            .expect("mirror");
        self.mirrored = tip;
    }

    fn want(&self) -> (B256, B256, B256) {
        let (safe, fin) = self.main.labels();
        (self.main.head().hash, safe, fin)
    }
}

fn cfg(el: &ElNode, sources: Vec<String>, quorum: &str) -> FollowerConfig {
    let mut c = FollowerConfig::new(el, el);
    c.sources = sources;
    c.extra = format!("quorum = {quorum}");
    c
}

#[tokio::test]
async fn majority_follows_the_two_and_all_holds_until_they_agree() {
    let s = Sources::new(ChainKind::Optimism, 60, 40, 25).await;
    // The lying source answers fastest: the honest ones sit behind a latency proxy.
    let slow_a1 = Proxy::start(vec![s.a1.http_url()]).await.expect("proxy");
    let slow_a2 = Proxy::start(vec![s.a2.http_url()]).await.expect("proxy");
    slow_a1.set_delay(Duration::from_millis(80));
    slow_a2.set_delay(Duration::from_millis(80));
    let b = Proxy::start(vec![s.b.http_url(), s.a1.http_url()]).await.expect("proxy");
    let urls = vec![slow_a1.url().to_string(), slow_a2.url().to_string(), b.url().to_string()];

    let el = s.a1.follower("majority").await.expect("spawn");
    let lc = Lightcl::start(lightcl_bin(), &cfg(&el, urls.clone(), "\"majority\"")).expect("start");
    wait_labels(&el, s.want(), Duration::from_secs(90), &lc).await;
    drop(lc);

    let el = s.a1.follower("all").await.expect("spawn");
    let lc = Lightcl::start(lightcl_bin(), &cfg(&el, urls, "\"all\"")).expect("start");
    let fork = s.main.hash_at(40).expect("h40");
    wait_labels(&el, (fork, fork, fork), Duration::from_secs(90), &lc).await;
    assert!(
        lc.wait_log("sources do not agree", Duration::from_secs(10)).await,
        "{}",
        tail(&lc.log(), 20)
    );
    let log = lc.log();
    let line = log.lines().find(|l| l.contains("sources do not agree")).unwrap_or_default();
    // The report says which source reports what: B's latest #65, the others' #60.
    assert!(line.contains("=#65 ") && line.contains("=#60 "), "{line}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(label_hashes(&el).await.0, fork, "holds at the last block all three agree on");
    // B's operator fixes it: it now serves branch A.
    b.set_route(Route::Fixed(1));
    wait_labels(&el, s.want(), Duration::from_secs(90), &lc).await;
}

#[tokio::test]
async fn a_down_source_is_reported_and_readmitted() {
    let mut s = Sources::new(ChainKind::Optimism, 30, 20, 5).await;
    let c = Proxy::start(vec![s.a1.http_url()]).await.expect("proxy");
    let urls = vec![s.a1.http_url(), s.a2.http_url(), c.url().to_string()];
    let el = s.a1.follower("follower").await.expect("spawn");
    let lc = Lightcl::start(lightcl_bin(), &cfg(&el, urls, "\"majority\"")).expect("start");
    wait_labels(&el, s.want(), Duration::from_secs(60), &lc).await;

    c.set_down(true);
    assert!(
        lc.wait_log("source failing", Duration::from_secs(30)).await,
        "{}",
        tail(&lc.log(), 20)
    );
    s.main.build_many(10, MIX).await.expect("more");
    let tip = s.main.head().number;
    assert!(s.main.set_labels(tip, tip - 10).await.expect("labels").is_valid());
    s.mirror().await;
    wait_labels(&el, s.want(), Duration::from_secs(60), &lc).await;

    c.set_down(false);
    assert!(lc.wait_log("re-admitted", Duration::from_secs(90)).await, "{}", tail(&lc.log(), 20));
}

#[tokio::test]
async fn a_single_source_that_starts_lying_never_crosses_finality() {
    // The follower tracks one source; the source then serves branch B, which forks above the
    // follower's finalized block: a divergence, recovered above finality, never below it.
    let s = Sources::new(ChainKind::Optimism, 60, 55, 20).await;
    let p = Proxy::start(vec![s.a1.http_url(), s.b.http_url()]).await.expect("proxy");
    let el = s.a1.follower("follower").await.expect("spawn");
    let lc = Lightcl::start(lightcl_bin(), &cfg(&el, vec![p.url().to_string()], "\"all\""))
        .expect("start");
    wait_labels(&el, s.want(), Duration::from_secs(60), &lc).await;
    let fin = el.block("finalized").await.expect("fin").expect("set");
    assert_eq!(fin.number, 50);
    p.set_route(Route::Fixed(1));
    assert!(lc.wait_log(" recovered", Duration::from_secs(60)).await, "{}", tail(&lc.log(), 20));
    let after = el.block("finalized").await.expect("fin").expect("set");
    assert!(after.number >= 50, "finalized moved back");
    assert_eq!(
        el.block_at(50).await.expect("b50").map(|b| b.hash),
        Some(fin.hash),
        "finalized history rewritten"
    );
}
