//! Verification against L1, end to end: a real L1 (geth, produced by the test bed, with a
//! minimal AnchorStateRegistry in its genesis: `lightcl_testbed::l1`), an OP L2 (op-geth) whose
//! L1 attributes deposits name that L1's blocks, a follower EL and the lightcl binary.
//!
//! - Labels whose L1 origins are not on L1 (a): enforce never lets them reach the EL's labels,
//!   alarm applies them and counts them false.
//! - A finalized block whose origin L1 has not finalized (b): enforce waits for L1's finality.
//! - An output root that differs from the anchor L1 settled (c): enforce halts (exit code 5,
//!   nothing more written), alarm reports it; a matching anchor is reported verified.
//! - An honest run follows at the same pace with verification on as without (printed).

use std::time::{Duration, Instant};

use alloy_primitives::B256;
use lightcl_testbed::l1::{
    FACTORY, GAMES, REGISTRY, add_game, set_anchor, set_game, set_game_claim_valid, with_registry,
};
use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::{ChainKind, ElNode, NodeOptions, Producer, TxMix};
use serde_json::{Value, json};

use crate::follow::{label_hashes, lightcl_bin, op_follower, tail};
use crate::ops::{api_url, get};

/// An L1, an OP L2 built on it, and which L1 block each L2 block names.
struct Chains {
    l1: ElNode,
    p1: Producer,
    l2: ElNode,
    p2: Producer,
    /// (L2 number, L1 origin number), in order.
    origins: Vec<(u64, u64)>,
}

impl Chains {
    async fn new() -> Self {
        let mut opts = NodeOptions::new(ChainKind::Ethereum, "l1");
        opts.genesis = with_registry(opts.genesis);
        let l1 = ElNode::spawn_with(opts).await.expect("spawn L1");
        let p1 = Producer::new(&l1).await.expect("L1 producer");
        let l2 = ElNode::spawn(ChainKind::Optimism, "l2-source").await.expect("spawn L2");
        let p2 = Producer::new(&l2).await.expect("L2 producer");
        Self { l1, p1, l2, p2, origins: Vec::new() }
    }

    /// `l1_blocks` L1 blocks, each followed by `per` L2 blocks naming it as their origin.
    async fn grow(&mut self, l1_blocks: u64, per: u64) {
        for _ in 0..l1_blocks {
            self.p1.build(TxMix::new(1, 0)).await.expect("L1 block");
            let o = self.p1.head();
            self.p2.set_l1_origin(Some((o.number, o.hash, o.timestamp)));
            for _ in 0..per {
                let b = self.p2.build(TxMix::new(0, 0)).await.expect("L2 block");
                self.origins.push((b.number, o.number));
            }
        }
    }

    /// L2 blocks naming an L1 origin L1 never had: L1's finalized height with a made-up hash.
    async fn grow_false(&mut self, n: u64) {
        let fin = self.l1_finalized().await;
        self.p2.set_l1_origin(Some((fin, B256::repeat_byte(0xfa), 0)));
        for _ in 0..n {
            let b = self.p2.build(TxMix::new(0, 0)).await.expect("L2 block");
            self.origins.push((b.number, fin));
        }
    }

    async fn l1_finalized(&self) -> u64 {
        self.l1.block("finalized").await.expect("L1 finalized").map_or(0, |b| b.number)
    }

    /// The highest L2 block whose origin is at or below L1 block `n`.
    fn l2_on_l1(&self, n: u64) -> u64 {
        self.origins.iter().filter(|(_, o)| *o <= n).map(|(l2, _)| *l2).max().unwrap_or(0)
    }

    /// Sets L1's labels (safe = finalized = `finalized` unless given) and L2's.
    async fn labels(&mut self, l1_finalized: u64, l2_safe: u64, l2_finalized: u64) {
        let head = self.p1.head().number;
        assert!(self.p1.set_labels(head, l1_finalized).await.expect("L1 labels").is_valid());
        assert!(self.p2.set_labels(l2_safe, l2_finalized).await.expect("L2 labels").is_valid());
    }

    /// Sets L1's anchor to `root` for L2 block `n` (one L1 block, then L1 finalizes it).
    async fn anchor(&mut self, root: B256, n: u64) {
        self.p1.call_in_next_block(REGISTRY, set_anchor(root, n));
        self.p1.build(TxMix::new(1, 0)).await.expect("L1 block with the anchor");
        let head = self.p1.head().number;
        assert!(self.p1.set_labels(head, head).await.expect("L1 labels").is_valid());
        let call = json!([{"to": REGISTRY, "data": "0xd83ef267"}, "finalized"]);
        let got: String = self.l1.rpc.call("eth_call", call).await.expect("getAnchorRoot");
        assert!(got.contains(&root.to_string()[2..]), "anchor not set: {got}");
    }

    /// Sends these L1 calls in one L1 block, which L1 then finalizes.
    async fn l1_calls(&mut self, calls: Vec<(alloy_primitives::Address, alloy_primitives::Bytes)>) {
        for (to, data) in calls {
            self.p1.call_in_next_block(to, data);
        }
        self.p1.build(TxMix::new(1, 0)).await.expect("L1 block with the calls");
        let head = self.p1.head().number;
        assert!(self.p1.set_labels(head, head).await.expect("L1 labels").is_valid());
    }

    /// The output root of the source's block `n`, from its header (Isthmus: withdrawalsRoot is
    /// the message passer's storage root), checked against `eth_getProof` of the message
    /// passer (the formula before Isthmus).
    async fn output_root(&self, n: u64) -> B256 {
        let b: Value = self
            .l2
            .rpc
            .call("eth_getBlockByNumber", json!([format!("{n:#x}"), false]))
            .await
            .expect("block");
        let field = |k: &str| -> B256 { b[k].as_str().expect(k).parse().expect(k) };
        let proof: Value = self
            .l2
            .rpc
            .call(
                "eth_getProof",
                json!([lightcl::chain::output::MESSAGE_PASSER, [], format!("{n:#x}")]),
            )
            .await
            .expect("eth_getProof");
        let storage: B256 = proof["storageHash"].as_str().expect("storageHash").parse().unwrap();
        assert_eq!(storage, field("withdrawalsRoot"), "the message passer's root, two ways");
        lightcl::chain::output::output_root(field("stateRoot"), storage, field("hash"))
    }
}

fn config(c: &Chains, el: &ElNode, verify: &str) -> FollowerConfig {
    FollowerConfig {
        follow: "latest",
        extra: format!(
            "[l1]\nurls = [{:?}]\nverify = \"{verify}\"\nanchor_state_registry = \"{REGISTRY}\"\n\
             dispute_game_factory = \"{FACTORY}\"\naudit_interval_secs = 1\nchain_id = {}",
            c.l1.http_url(),
            c.l1.chain_id()
        ),
        ..FollowerConfig::new(&c.l2, el)
    }
}

/// The value of metric line `name` (labels as written).
fn metric(text: &str, name: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0.0)
}

async fn metrics(lc: &Lightcl) -> String {
    get(&format!("{}/metrics", api_url(lc).await)).await.1
}

/// Waits until `el`'s labels are `want` (head, safe, finalized).
async fn wait_for(el: &ElNode, want: (B256, B256, B256), lc: &Lightcl, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = label_hashes(el).await;
        if got == (want.0, Some(want.1), Some(want.2)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: got {got:?}, want {want:?}\n{}",
            tail(&lc.log(), 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The count of safe labels whose L1 origin was found false.
const SAFE_FALSE: &str =
    "lightcl_l1_origin_checks_total{replica=\"el\",label=\"safe\",result=\"false\"}";

fn h(p: &Producer, n: u64) -> B256 {
    p.hash_at(n).expect("hash")
}

#[tokio::test]
async fn l1_origin_checks_hold_labels_that_l1_did_not_make() {
    let mut c = Chains::new().await;
    c.grow(12, 3).await;
    // L1 finalizes up to 8 blocks below its head; L2's finalized names an origin L1 finalized.
    let l1_fin = c.p1.head().number - 4;
    let (safe, fin) = (c.p2.head().number - 2, c.l2_on_l1(l1_fin));
    c.labels(l1_fin, safe, fin).await;
    let el = c.l2.sibling_as(op_follower(), "follower").await.expect("follower");
    let lc = Lightcl::start(lightcl_bin(), &config(&c, &el, "enforce")).expect("lightcl");
    let head = c.p2.head().number;
    wait_for(&el, (h(&c.p2, head), h(&c.p2, safe), h(&c.p2, fin)), &lc, "honest labels").await;

    // (b) The source calls its safe block finalized; its origin is above L1's finalized block:
    // the EL's finalized label waits, then moves once L1 finalizes the origin.
    c.labels(l1_fin, safe, safe).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (_, _, got_fin) = label_hashes(&el).await;
    assert_eq!(
        got_fin,
        Some(h(&c.p2, fin)),
        "finalized moved past L1's finality\n{}",
        tail(&lc.log(), 20)
    );
    let m = metrics(&lc).await;
    assert_eq!(metric(&m, "lightcl_l1_origin_unverified{replica=\"el\",label=\"finalized\"}"), 1.0);
    let l1_head = c.p1.head().number;
    c.labels(l1_head, safe, safe).await;
    wait_for(&el, (h(&c.p2, head), h(&c.p2, safe), h(&c.p2, safe)), &lc, "finalized after L1")
        .await;

    // (a) New blocks name an origin L1 never had; the source calls one of them safe: the EL's
    // head moves (follow = latest), its safe label does not.
    c.grow_false(4).await;
    let false_safe = c.p2.head().number - 1;
    c.labels(l1_head, false_safe, safe).await;
    let top = c.p2.head().number;
    let deadline = Instant::now() + Duration::from_secs(60);
    while label_hashes(&el).await.0 != h(&c.p2, top) {
        assert!(Instant::now() < deadline, "head did not follow\n{}", tail(&lc.log(), 20));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, got_safe, _) = label_hashes(&el).await;
    assert_eq!(got_safe, Some(h(&c.p2, safe)), "safe moved onto a block L1 did not make");
    let m = metrics(&lc).await;
    assert!(metric(&m, SAFE_FALSE) >= 1.0, "{m}");
    let (_, status) = get(&format!("{}/status", api_url(&lc).await)).await;
    assert!(status.contains("\"result\":\"false\""), "{status}");
    assert!(lc.log().contains("not built on this L1"), "{}", tail(&lc.log(), 20));
    drop(lc);

    // Alarm: the same label moves, counted false.
    let lc = Lightcl::start(lightcl_bin(), &config(&c, &el, "alarm")).expect("lightcl");
    wait_for(&el, (h(&c.p2, top), h(&c.p2, false_safe), h(&c.p2, safe)), &lc, "alarm").await;
    let m = metrics(&lc).await;
    assert!(metric(&m, SAFE_FALSE) >= 1.0, "{m}");

    // (b) in alarm: a finalized block whose origin L1 has not finalized moves, reported pending.
    c.grow(1, 2).await;
    let eager = c.p2.head().number;
    c.labels(l1_head, eager, eager).await;
    wait_for(&el, (h(&c.p2, eager), h(&c.p2, eager), h(&c.p2, eager)), &lc, "alarm (b)").await;
    let pending =
        "lightcl_l1_origin_checks_total{replica=\"el\",label=\"finalized\",result=\"pending\"}";
    assert!(metric(&metrics(&lc).await, pending) >= 1.0, "{}", tail(&lc.log(), 20));
}

#[tokio::test]
async fn l1_output_root_audit_verifies_a_settled_anchor_and_halts_on_another() {
    let mut c = Chains::new().await;
    c.grow(10, 3).await;
    let l1_head = c.p1.head().number;
    let fin = c.l2_on_l1(l1_head - 2);
    c.labels(l1_head, c.p2.head().number, fin).await;
    let anchor_at = fin - 3;
    let root = c.output_root(anchor_at).await;
    c.anchor(root, anchor_at).await;

    // The anchor matches the source's chain: verified, in either mode.
    let el = c.l2.sibling_as(op_follower(), "follower").await.expect("follower");
    let port = lightcl_testbed::node::free_port().expect("port");
    let mut cfg = config(&c, &el, "enforce");
    cfg.extra = format!("rollup_rpc_listen = \"127.0.0.1:{port}\"\n{}", cfg.extra);
    let lc = Lightcl::start(lightcl_bin(), &cfg).expect("lightcl");
    let head = c.p2.head().number;
    wait_for(&el, (h(&c.p2, head), h(&c.p2, head), h(&c.p2, fin)), &lc, "honest").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let verified = "lightcl_l1_verified_block{replica=\"el\",check=\"output\"}";
    while metric(&metrics(&lc).await, verified) != anchor_at as f64 {
        assert!(Instant::now() < deadline, "anchor never verified\n{}", tail(&lc.log(), 30));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The rollup RPC, in op-node's shapes: lightcl's labels with their L1 origins, L1's heads,
    // and the output root at the anchor's block.
    let rpc = format!("http://127.0.0.1:{port}");
    let status = rollup(&rpc, "optimism_syncStatus", json!([])).await;
    assert_eq!(status["finalized_l2"]["number"], json!(fin), "{status}");
    assert_eq!(status["finalized_l2"]["hash"], json!(h(&c.p2, fin)), "{status}");
    let fin_origin = c.origins.iter().find(|(l2, _)| *l2 == fin).map(|(_, o)| *o);
    assert_eq!(status["finalized_l2"]["l1origin"]["number"].as_u64(), fin_origin, "{status}");
    assert_eq!(status["unsafe_l2"]["number"], json!(head), "{status}");
    assert_eq!(status["head_l1"]["number"], json!(c.p1.head().number), "{status}");
    let out = rollup(&rpc, "optimism_outputAtBlock", json!([format!("{anchor_at:#x}")])).await;
    assert_eq!(out["outputRoot"], json!(root), "{out}");
    assert_eq!(out["blockRef"]["hash"], json!(h(&c.p2, anchor_at)), "{out}");
    assert!(out["withdrawalStorageRoot"].is_string() && out["syncStatus"].is_object(), "{out}");
    drop(lc);
    let (code, out) = check(&c, &el).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("matches the anchor L1 settled") && out.contains("L1 contracts: ok"),
        "{out}"
    );

    // (c) L1 settles another root for a block the EL finalized. `lightcl check` says so.
    c.anchor(B256::repeat_byte(0x0c), anchor_at).await;
    let (code, out) = check(&c, &el).await;
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("another chain than L1 settled"), "{out}");

    // Alarm reports it and goes on.
    let lc = Lightcl::start(lightcl_bin(), &config(&c, &el, "alarm")).expect("lightcl");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mismatches = "lightcl_l1_output_mismatches{replica=\"el\",kind=\"settled\"}";
    while metric(&metrics(&lc).await, mismatches) != 1.0 {
        assert!(Instant::now() < deadline, "mismatch not reported\n{}", tail(&lc.log(), 30));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(lc);

    // Enforce halts at once: exit code 5 on SIGTERM, and nothing more reaches the EL while the
    // source moves on.
    let mut lc = Lightcl::start(lightcl_bin(), &config(&c, &el, "enforce")).expect("lightcl");
    assert!(
        lc.wait_log("output root mismatch", Duration::from_secs(30)).await,
        "{}",
        tail(&lc.log(), 30)
    );
    let before = label_hashes(&el).await;
    c.grow(2, 3).await;
    let top = c.p2.head().number;
    c.labels(c.p1.head().number, top, fin).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(label_hashes(&el).await, before, "lightcl wrote to the EL after the halt");
    let status = lc.stop().await.expect("exit");
    assert_eq!(status.code(), Some(5), "{}", tail(&lc.log(), 20));
}

/// The result of a rollup RPC call.
async fn rollup(url: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let v: Value = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("rollup RPC")
        .json()
        .await
        .expect("JSON");
    assert!(v.get("error").is_none(), "{method}: {v}");
    v["result"].clone()
}

/// `lightcl check` with the `[l1]` section: exit code and output.
async fn check(c: &Chains, el: &ElNode) -> (Option<i32>, String) {
    let toml = config(c, el, "enforce").to_toml();
    let mut lc = Lightcl::start_with_args(lightcl_bin(), &toml, &["check"]).expect("check");
    let st = lc.wait_exit(Duration::from_secs(60)).await.expect("check exits");
    (st.code(), lc.log())
}

/// An honest chain, caught up with verification on and off, side by side (printed, not
/// asserted: machines here are shared).
#[tokio::test]
async fn l1_verification_costs_no_catch_up_pace() {
    let mut c = Chains::new().await;
    c.grow(60, 10).await;
    let l1_head = c.p1.head().number;
    let (safe, fin) = (c.p2.head().number, c.l2_on_l1(l1_head - 2));
    c.labels(l1_head, safe, fin).await;
    let want = (h(&c.p2, safe), h(&c.p2, safe), h(&c.p2, fin));
    let mut took = Vec::new();
    for (i, verify) in ["off", "enforce", "off", "enforce"].into_iter().enumerate() {
        let el = c.l2.sibling_as(op_follower(), &format!("follower-{i}")).await.expect("follower");
        let mut cfg = config(&c, &el, verify);
        if verify == "off" {
            cfg.extra = String::new();
        }
        let started = Instant::now();
        let lc = Lightcl::start(lightcl_bin(), &cfg).expect("lightcl");
        wait_for(&el, want, &lc, verify).await;
        took.push((verify, started.elapsed().as_secs_f64()));
    }
    let sum = |v: &str| took.iter().filter(|(m, _)| *m == v).map(|(_, t)| t).sum::<f64>();
    eprintln!(
        "l1 verification pace: {} blocks caught up, off {:.2} s, enforce {:.2} s (two runs each), \
         ratio enforce/off {:.2}",
        safe,
        sum("off"),
        sum("enforce"),
        sum("enforce") / sum("off")
    );
}

/// Dispute games: an open game is a claim (reported when it disagrees, never halted on); once
/// the registry says a game's claim is valid, it is a settled root: verified when it matches,
/// a halt (enforce) when it does not.
#[tokio::test]
async fn l1_dispute_games_are_claims_until_l1_settles_them() {
    let mut c = Chains::new().await;
    c.grow(10, 3).await;
    let l1_head = c.p1.head().number;
    let fin = c.l2_on_l1(l1_head - 2);
    c.labels(l1_head, c.p2.head().number, fin).await;
    let (good_at, bad_at) = (fin - 4, fin - 2);
    let good = c.output_root(good_at).await;
    let [a, b] = GAMES;
    c.l1_calls(vec![
        (a, set_game(good, good_at, 0)),
        (b, set_game(B256::repeat_byte(0xbb), bad_at, 0)),
        (FACTORY, add_game(a)),
        (FACTORY, add_game(b)),
    ])
    .await;
    let el = c.l2.sibling_as(op_follower(), "follower").await.expect("follower");
    let mut lc = Lightcl::start(lightcl_bin(), &config(&c, &el, "enforce")).expect("lightcl");
    let head = c.p2.head().number;
    wait_for(&el, (h(&c.p2, head), h(&c.p2, head), h(&c.p2, fin)), &lc, "honest").await;
    let wait_metric = async |lc: &Lightcl, name: &str, want: f64, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while metric(&metrics(lc).await, name) < want {
            assert!(Instant::now() < deadline, "{what}\n{}", tail(&lc.log(), 30));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    // Two open claims: one matches, one does not (reported, no halt).
    let claims = "lightcl_l1_output_mismatches{replica=\"el\",kind=\"claim\"}";
    wait_metric(&lc, claims, 1.0, "the disagreeing claim is reported").await;
    let matched =
        "lightcl_l1_output_roots_compared_total{replica=\"el\",kind=\"claim\",result=\"match\"}";
    wait_metric(&lc, matched, 1.0, "the matching claim is compared").await;
    assert!(
        lc.log().contains("L1 holds a claim of another output root than the EL"),
        "{}",
        tail(&lc.log(), 20)
    );
    assert!(!lc.log().contains("HALTED"), "{}", tail(&lc.log(), 20));

    // L1 settles the matching game: the EL's block there is verified against it.
    c.l1_calls(vec![(a, set_game(good, good_at, 2)), (REGISTRY, set_game_claim_valid(a, true))])
        .await;
    let verified = "lightcl_l1_verified_block{replica=\"el\",check=\"output\"}";
    wait_metric(&lc, verified, good_at as f64, "the settled game is verified").await;

    // L1 settles the other one too: a settled root that differs halts, exit code 5.
    c.l1_calls(vec![
        (b, set_game(B256::repeat_byte(0xbb), bad_at, 2)),
        (REGISTRY, set_game_claim_valid(b, true)),
    ])
    .await;
    assert!(
        lc.wait_log("output root mismatch", Duration::from_secs(30)).await,
        "{}",
        tail(&lc.log(), 30)
    );
    let status = lc.stop().await.expect("exit");
    assert_eq!(status.code(), Some(5), "{}", tail(&lc.log(), 20));
}
