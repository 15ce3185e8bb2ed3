//! Execution requests rebuilt from what a JSON-RPC source serves, checked against real geth: a
//! Prague chain whose blocks carry deposits, withdrawal requests and consolidation requests,
//! more than the per-block limits so that requests stay queued across blocks. For every block,
//! the requests rebuilt from its receipts and the system contracts' storage at the parent
//! (`lightcl::payload::requests`) must hash to the header's requestsHash; a tampered log or
//! storage slot must not.

use alloy_primitives::{B256, Bytes, U256};
use lightcl::payload::requests::{LogEntry, Queue, Rebuilt, RequestsError, deposits};
use lightcl_testbed::genesis::{DEPOSIT_EMITTER, ETH_CHAIN_ID, deposit_calldata, requests_genesis};
use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::proxy::{Proxy, Tamper};
use lightcl_testbed::{ElClient, ElNode, NodeOptions, Producer, TxMix};
use std::time::{Duration, Instant};

use crate::follow::{lightcl_bin, tail, wait_labels};
use crate::ops::{api_url, get};
use serde_json::{Value, json};

/// What the source serves for block `n`: the header's requestsHash, the logs of its successful
/// transactions, and each queue's head, tail and first entries at the parent.
struct Served {
    requests_hash: B256,
    logs: Vec<LogEntry>,
    queues: Vec<(U256, U256, Vec<B256>)>,
}

async fn served(node: &ElNode, n: u64) -> Served {
    let block: Value = node
        .rpc
        .call("eth_getBlockByNumber", json!([format!("{n:#x}"), false]))
        .await
        .expect("block");
    let parent_hash: B256 = serde_json::from_value(block["parentHash"].clone()).expect("parent");
    let requests_hash: B256 =
        serde_json::from_value(block["requestsHash"].clone()).expect("a Prague header");
    let receipts: Vec<Value> =
        node.rpc.call("eth_getBlockReceipts", json!([format!("{n:#x}")])).await.expect("receipts");
    let mut logs = Vec::new();
    for r in receipts.iter().filter(|r| r["status"] == "0x1") {
        for l in r["logs"].as_array().expect("logs") {
            logs.push(LogEntry {
                address: serde_json::from_value(l["address"].clone()).expect("address"),
                topics: serde_json::from_value(l["topics"].clone()).expect("topics"),
                data: serde_json::from_value(l["data"].clone()).expect("data"),
            });
        }
    }
    // By the parent's hash (EIP-1898), as lightcl must read it.
    let parent = json!({ "blockHash": parent_hash });
    let slot = async |q: Queue, s: U256| -> B256 {
        let params = json!([q.address(), format!("{s:#x}"), parent]);
        node.rpc.call("eth_getStorageAt", params).await.expect("storage")
    };
    let mut queues = Vec::new();
    for q in Queue::ALL {
        let [h, t] = Queue::index_slots();
        let head = U256::from_be_bytes(slot(q, h).await.0);
        let tail = U256::from_be_bytes(slot(q, t).await.0);
        let mut entries = Vec::new();
        for s in q.entry_slots(head, tail) {
            entries.push(slot(q, s).await);
        }
        queues.push((head, tail, entries));
    }
    Served { requests_hash, logs, queues }
}

/// The requests rebuilt from `s`, checked against its header: the bytes per kind.
fn rebuild(s: &Served) -> Result<[usize; 3], RequestsError> {
    let d = deposits(DEPOSIT_EMITTER, &s.logs)?;
    let mut taken = Vec::new();
    for (q, (head, tail, entries)) in Queue::ALL.into_iter().zip(&s.queues) {
        taken.push(q.taken(*head, *tail, entries, &s.logs)?);
    }
    let lens = [d.len(), taken[0].len(), taken[1].len()];
    let [w, c] = [taken.remove(0), taken.remove(0)];
    Rebuilt::new(d, w, c).check(s.requests_hash)?;
    Ok(lens)
}

/// A geth source whose Prague chain carries all three kinds of requests, queued across blocks:
/// block 1: 3 deposits, 40 withdrawal requests (16 taken, 24 stay queued), 3 consolidation
/// requests (2 taken, 1 stays), and a withdrawal request without its fee (it reverts: no
/// request); block 2: a new withdrawal request behind 24 queued (16 come from storage, it
/// waits), two consolidation requests behind the queued one (only one fits); block 3: the 9
/// and 1 left; then `empty` blocks with none.
async fn requests_source(name: &str, empty: u64) -> (ElNode, Producer) {
    let mut opts = NodeOptions::of(ElClient::Geth, name);
    let ts = u64::from_str_radix(
        opts.genesis["timestamp"].as_str().expect("timestamp").trim_start_matches("0x"),
        16,
    )
    .expect("hex");
    opts.genesis = requests_genesis(ETH_CHAIN_ID, ts);
    let node = ElNode::spawn_with(opts).await.expect("geth");
    let mut p = Producer::new(&node).await.expect("producer");
    let fee = U256::from(1_000_000_000u64);
    for n in 1..=3u8 {
        p.call_in_next_block(DEPOSIT_EMITTER, deposit_calldata(n));
    }
    p.call_in_next_block(Queue::Withdrawals.address(), Bytes::from(vec![7u8; 56]));
    for n in 0..40u8 {
        let mut data = vec![n; 48];
        data.extend(u64::from(n).to_be_bytes());
        p.paid_call_in_next_block(Queue::Withdrawals.address(), data.into(), fee);
    }
    for n in 0..3u8 {
        let data = [[n; 48], [n.wrapping_add(50); 48]].concat();
        p.paid_call_in_next_block(Queue::Consolidations.address(), data.into(), fee);
    }
    let b1 = p.build(TxMix::NONE).await.expect("block 1");
    assert_eq!(b1.requests.as_array().map(Vec::len), Some(3), "geth made all three kinds");
    p.paid_call_in_next_block(Queue::Withdrawals.address(), Bytes::from(vec![99u8; 56]), fee);
    for n in 10..12u8 {
        let data = [[n; 48], [n + 50; 48]].concat();
        p.paid_call_in_next_block(Queue::Consolidations.address(), data.into(), fee);
    }
    p.build(TxMix::NONE).await.expect("block 2");
    p.build(TxMix::NONE).await.expect("block 3");
    p.build_many(empty, TxMix::NONE).await.expect("empty blocks");
    (node, p)
}

#[tokio::test]
async fn requests_rebuilt_from_receipts_and_storage_hash_to_geths_commitment() {
    let (node, _p) = requests_source("requests", 1).await;
    let want = [[3 * 192, 16 * 76, 2 * 116], [0, 16 * 76, 2 * 116], [0, 9 * 76, 116], [0, 0, 0]];
    for (n, want) in (1..=4u64).zip(want) {
        let s = served(&node, n).await;
        let got = rebuild(&s).unwrap_or_else(|e| panic!("block {n}: {e}"));
        assert_eq!(got, want, "block {n}: request bytes per kind");
    }
    let s = served(&node, 4).await;
    assert_eq!(s.requests_hash, alloy_eips::eip7685::EMPTY_REQUESTS_HASH);

    // A source that tampers with a deposit log, or with a queued entry's storage, is caught.
    let mut s = served(&node, 1).await;
    let i = s.logs.iter().position(|l| l.address == DEPOSIT_EMITTER).expect("a deposit");
    let mut data = s.logs[i].data.to_vec();
    data[200] ^= 1;
    s.logs[i].data = data.into();
    assert!(matches!(rebuild(&s), Err(RequestsError::Commitment { .. })));
    let mut s = served(&node, 2).await;
    assert!(!s.queues[0].2.is_empty(), "block 2 takes queued withdrawal requests");
    s.queues[0].2[1] = B256::repeat_byte(7);
    assert!(matches!(rebuild(&s), Err(RequestsError::Commitment { .. })));
}

const REBUILT: &str = "lightcl_execution_requests_rebuilt_total";

/// The sum of the series of metric `family` whose labels contain each of `labels`.
fn metric_sum(metrics: &str, family: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.strip_prefix(family).is_some_and(|r| r.starts_with(['{', ' '])))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What the lying sources change: a deposit log (in eth_getLogs and in the receipts alike), or
/// a queued request's storage word.
fn liar(what: &'static str) -> Tamper {
    Box::new(move |method: &str, params: &Value, result: &mut Value| match (what, method) {
        ("log", "eth_getLogs" | "eth_getBlockReceipts") => {
            let logs: Vec<&mut Value> = match result.as_array_mut() {
                Some(items) if method == "eth_getLogs" => items.iter_mut().collect(),
                Some(items) => {
                    items.iter_mut().filter_map(|r| r["logs"].as_array_mut()).flatten().collect()
                }
                None => Vec::new(),
            };
            for l in logs {
                let deposit = l["address"]
                    .as_str()
                    .is_some_and(|a| a.eq_ignore_ascii_case(&DEPOSIT_EMITTER.to_string()));
                if let (true, Some(d)) = (deposit, l["data"].as_str()) {
                    // A byte of the first deposit's public key.
                    let mut d = d.to_string();
                    let at = 2 + 2 * 200;
                    let flipped = if &d[at..at + 1] == "0" { "1" } else { "0" };
                    d.replace_range(at..at + 1, flipped);
                    l["data"] = Value::from(d);
                    break;
                }
            }
        }
        ("slot", "eth_getStorageAt") => {
            let slot = params[1]
                .as_str()
                .and_then(|s| U256::from_str_radix(s.trim_start_matches("0x"), 16).ok());
            if slot.is_some_and(|s| s >= U256::from(4)) {
                *result = Value::from(B256::repeat_byte(0x5a).to_string());
            }
        }
        _ => {}
    })
}

/// Waits until lightcl's log, past `from`, names source `name` refusing a block for its
/// execution requests.
async fn wait_refusal(lc: &Lightcl, from: usize, name: &str) {
    let refused = format!("source {name} served a block that fails verification");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = lc.log();
        let hit = log.get(from..).is_some_and(|l| {
            l.lines().any(|l| l.contains(&refused) && l.contains("execution requests"))
        });
        if hit {
            return;
        }
        assert!(Instant::now() < deadline, "{name} not refused by name:\n{}", tail(&log, 30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// lightcl catches up and follows the requests chain into a fresh `follower` EL. While the
/// honest source serves no blocks, the other tampers first with a deposit log (block 1, whose requests
/// come from its logs), then with a queued request's storage slot (block 2, which takes requests
/// queued at its parent): each is refused by name and never reaches the EL, which stays below
/// it. Once the honest source serves blocks, the blocks come from it and the EL holds every block.
async fn follows_a_chain_with_requests(follower: ElClient) {
    let (src, mut p) = requests_source("requests-src", 6).await;
    let labels = p.set_labels(9, 5).await.expect("labels");
    assert!(labels.is_valid(), "{labels:?}");
    let el = src.sibling_as(follower, "requests-follower").await.expect("follower");
    let liar_proxy = Proxy::start(vec![src.http_url()]).await.expect("proxy");
    let honest = Proxy::start(vec![src.http_url()]).await.expect("proxy");
    // At first the honest source reports its labels (they agree with the liar's) but serves no
    // block, so that the blocks are asked of the liar.
    honest.set_tamper(Some(Box::new(|method: &str, params: &Value, result: &mut Value| {
        let full =
            matches!(method, "eth_getBlockByNumber" | "eth_getBlockByHash") && params[1] == true;
        if full || method == "debug_getRawBlock" {
            *result = Value::Null;
        }
    })));
    liar_proxy.set_tamper(Some(liar("log")));
    let entry = |name: &str, p: &Proxy| format!("{{ url = {:?}, name = {name:?} }}", p.url());
    let cfg = FollowerConfig {
        sources: vec![entry("liar", &liar_proxy), entry("honest", &honest)],
        extra: "quorum = \"all\"".into(),
        ..FollowerConfig::new(&src, &el)
    };
    let lc = Lightcl::start(lightcl_bin(), &cfg).expect("start lightcl");
    let head = async || el.head().await.expect("head").number;
    wait_refusal(&lc, 0, "liar").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(head().await, 0, "block 1's tampered deposit must not reach the EL");

    let from = lc.log().len();
    liar_proxy.set_tamper(Some(liar("slot")));
    wait_refusal(&lc, from, "liar").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(head().await <= 1, "block 2's tampered queue slot must not reach the EL");

    // The honest source now serves blocks, but its log index lags (eth_getLogs answers
    // nothing): its receipts decide, and it is never blamed.
    honest.set_tamper(Some(Box::new(|method: &str, _: &Value, result: &mut Value| {
        if method == "eth_getLogs" {
            *result = json!([]);
        }
    })));
    let h = |p: &Producer, n: u64| p.hash_at(n).expect("hash");
    wait_labels(&el, (h(&p, 9), h(&p, 9), h(&p, 5)), Duration::from_secs(120), &lc).await;
    for n in 1..=9 {
        let got: Value = el
            .rpc
            .call("eth_getBlockByNumber", json!([format!("{n:#x}"), false]))
            .await
            .expect("block");
        assert_eq!(got["hash"].as_str(), Some(h(&p, n).to_string().as_str()), "block {n}");
    }
    let log = lc.log();
    assert!(
        !log.contains("source honest served a block that fails verification"),
        "the honest source was blamed:\n{}",
        tail(&log, 30)
    );
    let metrics = get(&format!("{}/metrics", api_url(&lc).await)).await.1;
    let rebuilt = metric_sum(&metrics, REBUILT, &["source=\"honest\"", "read=\"receipts\""]);
    assert!(rebuilt >= 1.0, "{metrics}");
    // No wrong list ever reached the EL (which would have answered INVALID).
    assert_eq!(metric_sum(&metrics, "lightcl_payloads_invalid_total", &[]), 0.0, "{metrics}");
    honest.set_tamper(None);
    // Then it follows: a new block with a deposit.
    p.call_in_next_block(DEPOSIT_EMITTER, deposit_calldata(9));
    p.build(TxMix::NONE).await.expect("block 10");
    p.set_labels(10, 6).await.expect("labels");
    wait_labels(&el, (h(&p, 10), h(&p, 10), h(&p, 6)), Duration::from_secs(60), &lc).await;
}

#[tokio::test]
async fn geth_follows_a_prague_chain_with_requests_past_lying_sources() {
    follows_a_chain_with_requests(ElClient::Geth).await;
}

#[tokio::test]
async fn reth_follows_a_prague_chain_with_requests_past_lying_sources() {
    follows_a_chain_with_requests(ElClient::Reth).await;
}

/// reth started with `--engine.accept-execution-requests-hash` and lightcl with
/// `send_requests_hash = true`: each Prague block's commitment goes in place of its list, reth
/// checks the block's requests against it itself, and nothing is read to rebuild them.
#[tokio::test]
async fn reth_that_accepts_the_requests_hash_is_sent_the_hash_and_nothing_is_read() {
    let (src, mut p) = requests_source("requests-hash-src", 2).await;
    let labels = p.set_labels(5, 3).await.expect("labels");
    assert!(labels.is_valid(), "{labels:?}");
    let el = ElNode::spawn_with(NodeOptions {
        genesis: src.genesis().clone(),
        extra_args: vec!["--engine.accept-execution-requests-hash".into()],
        ..NodeOptions::of(ElClient::Reth, "requests-hash-reth")
    })
    .await
    .expect("reth");
    let proxy = Proxy::start(vec![src.http_url()]).await.expect("proxy");
    proxy.record();
    let cfg = FollowerConfig {
        sources: vec![proxy.url().to_string()],
        extra: "send_requests_hash = true".into(),
        ..FollowerConfig::new(&src, &el)
    };
    let lc = Lightcl::start(lightcl_bin(), &cfg).expect("start lightcl");
    let h = |n: u64| p.hash_at(n).expect("hash");
    wait_labels(&el, (h(5), h(5), h(3)), Duration::from_secs(90), &lc).await;
    let reads: Vec<String> = proxy
        .recorded()
        .iter()
        .flat_map(|x| match &x.request {
            Value::Array(calls) => calls.clone(),
            one => vec![one.clone()],
        })
        .filter_map(|c| c["method"].as_str().map(str::to_string))
        .filter(|m| {
            matches!(m.as_str(), "eth_getLogs" | "eth_getStorageAt" | "eth_getBlockReceipts")
        })
        .collect();
    assert!(reads.is_empty(), "nothing is read to rebuild the requests: {reads:?}");
    let metrics = get(&format!("{}/metrics", api_url(&lc).await)).await.1;
    let sent = metric_sum(&metrics, REBUILT, &["read=\"hash_sent\""]);
    assert!(sent >= 3.0, "blocks 1 to 3 carry requests: {metrics}");
}
