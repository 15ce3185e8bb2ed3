//! Replica fleets end to end: one lightcl process driving three real replica ELs (op-geth, and
//! op-reth where its binary is present) from one source. Each block is fetched from the source
//! once however many replicas there are (counted at a recording proxy in front of the source);
//! a replica killed mid-catch-up comes back and catches up while the others follow; a replica on
//! a rival branch is recovered alone; under `labels = "lockstep"` a fast replica's safe label
//! waits for the slow replica.

use std::time::{Duration, Instant};

use alloy_primitives::B256;
use lightcl_testbed::chains::cached_source;
use lightcl_testbed::lightcl::Lightcl;
use lightcl_testbed::proxy::{Proxy, source_requests};
use lightcl_testbed::{ElClient, ElNode, Producer, TxMix};
use serde_json::Value;

use crate::follow::{lightcl_bin, op_follower, tail, wait_labels};
use crate::ops::{api_url, get};

/// The config of a lightcl driving `replicas` (name, EL) from `source`, with `extra` top-level
/// lines.
fn fleet_toml(source: &str, replicas: &[(&str, &ElNode)], extra: &str) -> String {
    lightcl_testbed::lightcl::fleet_toml(source, replicas, extra, 4)
}

fn h(p: &Producer, n: u64) -> B256 {
    p.hash_at(n).expect("hash")
}

/// The client of the third replica: op-reth 1.10.2 where its binary is present (a fleet mid-way
/// through an upgrade: two replicas on op-reth 2.x, one on the older line), op-geth otherwise.
fn third_client() -> ElClient {
    if ElClient::OpReth.available_or_skip("op-reth 1.10.2 as a fleet replica (op-geth stands in)") {
        ElClient::OpReth
    } else {
        ElClient::OpGeth
    }
}

/// A source with `n` blocks of transactions, safe `n`, finalized `n - 20` (built once and cached
/// between runs, `lightcl_testbed::chains`; each call gets its own copy).
async fn source(n: u64) -> (ElNode, Producer) {
    cached_source(ElClient::OpGeth, &format!("fleet-tx2-1-{n}"), async |p: &mut Producer| {
        p.build_many(n, TxMix::new(2, 1)).await?;
        let labels = p.set_labels(n, n - 20).await?;
        assert!(labels.is_valid(), "{labels:?}");
        Ok(())
    })
    .await
    .expect("fleet source")
}

/// Follows the source with `replicas` fresh ELs until every one holds its labels; returns the
/// seconds it took and what the source was asked.
async fn follow_once(
    src: &ElNode,
    p: &Producer,
    clients: &[ElClient],
    tag: &str,
) -> (f64, (u64, u64)) {
    let proxy = Proxy::start(vec![src.http_url()]).await.expect("proxy");
    proxy.record();
    let mut els = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        els.push(src.sibling_as(*c, &format!("{tag}{i}")).await.expect("spawn replica"));
    }
    let names: Vec<String> = (0..els.len()).map(|i| format!("r{i}")).collect();
    let replicas: Vec<(&str, &ElNode)> = names.iter().map(String::as_str).zip(els.iter()).collect();
    let started = Instant::now();
    let lc =
        Lightcl::start_with_args(lightcl_bin(), &fleet_toml(proxy.url(), &replicas, ""), &["run"])
            .expect("start");
    let n = p.head().number;
    let want = (h(p, n), h(p, n), h(p, n - 20));
    for el in &els {
        wait_labels(el, want, Duration::from_secs(300), &lc).await;
    }
    let secs = started.elapsed().as_secs_f64();
    (secs, source_requests(&proxy.recorded()))
}

/// One replica and three, side by side on the same source: the same blocks fetched from it,
/// and the catch-up rate of three against one.
#[tokio::test]
async fn three_replicas_fetch_each_block_once() {
    let n = 300;
    let (src, p) = source(n).await;
    let (one_s, (one_blocks, one_other)) = follow_once(&src, &p, &[op_follower()], "solo").await;
    let three = [op_follower(), op_follower(), third_client()];
    let (three_s, (three_blocks, three_other)) = follow_once(&src, &p, &three, "fleet").await;
    eprintln!(
        "FLEET {n} blocks: one replica {one_s:.1} s ({:.0} blocks/s), {one_blocks} blocks and \
         {one_other} other requests from the source ({:.3} per block); three replicas ({three:?}) \
         {three_s:.1} s ({:.0} blocks/s), {three_blocks} blocks and {three_other} other requests \
         ({:.3} per block); rate three/one {:.2}",
        n as f64 / one_s,
        (one_blocks + one_other) as f64 / n as f64,
        n as f64 / three_s,
        (three_blocks + three_other) as f64 / n as f64,
        one_s / three_s
    );
    assert!(one_blocks >= n, "one replica fetched every block: {one_blocks}");
    // Each block once: the three replicas cost the source the blocks one does (a few refetched
    // where a replica fell more than the shared window behind).
    assert!(three_blocks <= one_blocks + one_blocks / 20 + 5, "{three_blocks} vs {one_blocks}");
}

/// A replica killed mid-catch-up: the others keep following, its own readiness says it is down,
/// the process stays ready; restarted, it catches up from the shared fetch.
#[tokio::test]
async fn a_replica_killed_mid_catch_up_catches_up_while_the_others_follow() {
    let n = 300;
    let (src, mut p) = source(n).await;
    let mut els: Vec<ElNode> = Vec::new();
    for (i, c) in [op_follower(), op_follower(), third_client()].into_iter().enumerate() {
        els.push(src.sibling_as(c, &format!("r{i}")).await.expect("spawn replica"));
    }
    let toml = {
        let replicas: Vec<(&str, &ElNode)> = vec![("a", &els[0]), ("b", &els[1]), ("c", &els[2])];
        fleet_toml(&src.http_url(), &replicas, "")
    };
    let lc = Lightcl::start_with_args(lightcl_bin(), &toml, &["run"]).expect("start");
    let api = api_url(&lc).await;
    // Kill b once it is under way.
    let deadline = Instant::now() + Duration::from_secs(120);
    while els[1].head().await.map(|b| b.number).unwrap_or(0) < 60 {
        assert!(Instant::now() < deadline, "b never started: {}", tail(&lc.log(), 20));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = els[1].head().await.map(|b| b.number).unwrap_or(0);
    assert!(before < n, "b reached the tip before the kill; the test proves nothing");
    els[1].kill();
    let at = els[1].datadir();
    eprintln!("killed replica b mid-catch-up ({})", at.display());
    let want = (h(&p, n), h(&p, n), h(&p, n - 20));
    wait_labels(&els[0], want, Duration::from_secs(300), &lc).await;
    wait_labels(&els[2], want, Duration::from_secs(300), &lc).await;
    // The chain goes on; a and c follow it while b is down.
    p.build_many(5, TxMix::new(1, 0)).await.expect("build");
    assert!(p.set_labels(n + 5, n - 10).await.expect("labels").is_valid());
    let want = (h(&p, n + 5), h(&p, n + 5), h(&p, n - 10));
    wait_labels(&els[0], want, Duration::from_secs(60), &lc).await;
    wait_labels(&els[2], want, Duration::from_secs(60), &lc).await;
    let (code, body) = get(&format!("{api}/readyz/b")).await;
    assert!(code == 503 && body.contains("not answering"), "b while down: {code} {body}");
    assert_eq!(get(&format!("{api}/readyz/a")).await.0, 200);
    assert_eq!(get(&format!("{api}/readyz")).await.0, 200, "ready while one replica is");
    let (_, status) = get(&format!("{api}/status")).await;
    let v: Value = serde_json::from_str(&status).expect("status json");
    let modes: Vec<&str> = v["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .map(|r| r["state"]["mode"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(modes[1], "el_down", "{status}");
    // b comes back on its datadir and catches up. op-geth killed before it flushed its state
    // can come back in snap-sync mode, ignoring every block: lightcl halts that replica alone,
    // and the runbook for a replica (restart its EL) resumes it without touching the others.
    els[1].start().await.expect("restart b");
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut runbook = 0;
    // op-reth killed early in a catch-up can die again at its restart, or every time with its
    // storage damaged (both lines, engines.md): the runbook restarts or resyncs it.
    let mut deaths = Vec::new();
    loop {
        crate::follow::restart_if_died(&mut els[1], &mut deaths).await;
        if crate::follow::label_hashes_now(&els[1]).await
            == Some((want.0, Some(want.1), Some(want.2)))
        {
            break;
        }
        assert!(Instant::now() < deadline, "b did not catch up: {}", tail(&lc.log(), 30));
        let (code, body) = get(&format!("{api}/readyz/b")).await;
        if code == 503 && body.contains("halted") && runbook < 3 {
            runbook += 1;
            eprintln!("replica b halted ({body}); restarting its EL (runbook)");
            els[1].kill();
            els[1].start().await.expect("restart b");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "replica b caught up after its restart; runbook followed {runbook} times, the EL died \
         by itself {} times: {deaths:?}",
        deaths.len()
    );
    let (_, m) = get(&format!("{api}/metrics")).await;
    for r in ["a", "b", "c"] {
        assert!(
            m.contains(&format!("lightcl_local_head_block{{replica=\"{r}\",label=\"latest\"}}")),
            "{m}"
        );
    }
}

/// A replica on a rival branch is recovered alone: the reset and replay happen on it, the
/// others only follow.
#[tokio::test]
async fn a_diverged_replica_is_recovered_alone() {
    let d = crate::recovery::diverged(op_follower(), 40, 10, 30).await;
    let fresh = d.src.follower("fresh").await.expect("spawn");
    let other = d.src.sibling_as(third_client(), "other").await.expect("spawn");
    let replicas: Vec<(&str, &ElNode)> =
        vec![("fresh", &fresh), ("rival", &d.local), ("other", &other)];
    let lc = Lightcl::start_with_args(
        lightcl_bin(),
        &fleet_toml(&d.src.http_url(), &replicas, ""),
        &["run"],
    )
    .expect("start");
    let tip = d.main.head().number;
    let want = (h(&d.main, tip), h(&d.main, tip), h(&d.main, tip - 5));
    for el in [&fresh, &d.local, &other] {
        wait_labels(el, want, Duration::from_secs(180), &lc).await;
    }
    assert!(
        lc.wait_log("reset to the common ancestor", Duration::from_secs(10)).await,
        "{}",
        tail(&lc.log(), 30)
    );
    let log = lc.log();
    let resets: Vec<&str> =
        log.lines().filter(|l| l.contains("reset to the common ancestor")).collect();
    assert!(
        !resets.is_empty() && resets.iter().all(|l| l.contains("name=rival")),
        "only the rival replica was reset: {resets:#?}"
    );
    assert_eq!(d.local.block_at(41).await.expect("b").map(|b| b.hash), Some(h(&d.main, 41)));
}

/// Lockstep: a replica whose Engine API answers slowly holds the others' safe label back until
/// it has the block; at no sample is the fast replica's safe above the slow one's head.
#[tokio::test]
async fn lockstep_holds_labels_until_the_slow_replica_has_the_block() {
    let (src, mut p) = source(20).await;
    let fast = src.follower("fast").await.expect("spawn");
    let slow = src.follower("slow").await.expect("spawn");
    let slow_engine = Proxy::start(vec![slow.auth_url()]).await.expect("proxy");
    // The slow replica stays ready (and so counts) up to 100 blocks behind.
    let toml = lightcl_testbed::lightcl::fleet_toml(
        &src.http_url(),
        &[("fast", &fast), ("slow", &slow)],
        "labels = \"lockstep\"\nfollow = \"latest\"",
        100,
    )
    .replace(
        &format!("url = {:?}\nrpc_url = {:?}", slow.auth_url(), slow.http_url()),
        &format!("url = {:?}\nrpc_url = {:?}", slow_engine.url(), slow.http_url()),
    );
    assert!(toml.contains(slow_engine.url()), "{toml}");
    let lc = Lightcl::start_with_args(lightcl_bin(), &toml, &["run"]).expect("start");
    let want = (h(&p, 20), h(&p, 20), h(&p, 0));
    wait_labels(&fast, want, Duration::from_secs(60), &lc).await;
    wait_labels(&slow, want, Duration::from_secs(60), &lc).await;
    // From now on every engine call to the slow replica takes 400 ms: it falls behind.
    slow_engine.set_delay(Duration::from_millis(400));
    let mut held = 0;
    let mut samples = 0;
    for i in 0..30u64 {
        p.build_many(1, TxMix::new(1, 0)).await.expect("build");
        let tip = p.head().number;
        assert!(p.set_labels(tip - 1, tip.saturating_sub(6)).await.expect("labels").is_valid());
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            // Fast's safe first, then slow's head: slow's head only grows in between.
            let fast_safe = fast.block("safe").await.expect("safe").map_or(0, |b| b.number);
            let fast_head = fast.head().await.expect("head").number;
            let slow_head = slow.head().await.expect("head").number;
            samples += 1;
            assert!(
                fast_safe <= slow_head,
                "sample {i}: the fast replica's safe #{fast_safe} is above the slow replica's \
                 head #{slow_head}\n{}",
                tail(&lc.log(), 30)
            );
            if fast_head > slow_head && fast_safe < tip - 1 {
                held += 1;
            }
        }
    }
    eprintln!("LOCKSTEP {samples} samples, {held} with the fast replica's safe held back");
    assert!(held > 0, "the slow replica never fell behind: nothing was tested");
    // Once the slow replica catches up, both hold the source's labels.
    slow_engine.set_delay(Duration::ZERO);
    let tip = p.head().number;
    let want = (h(&p, tip), h(&p, tip - 1), h(&p, tip - 6));
    wait_labels(&slow, want, Duration::from_secs(60), &lc).await;
    wait_labels(&fast, want, Duration::from_secs(60), &lc).await;
}
