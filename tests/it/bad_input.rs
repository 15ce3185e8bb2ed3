//! Bad input end to end: each case gets a clear message, a non-zero exit or a logged refusal,
//! and no engine write.

use std::time::{Duration, Instant};

use lightcl::payload::{OpaqueTx, raw};
use lightcl_testbed::lightcl::{FollowerConfig, Lightcl};
use lightcl_testbed::proxy::{Proxy, Tamper};
use lightcl_testbed::{ChainKind, ElNode};
use serde_json::Value;

use crate::follow::{label_hashes, lightcl_bin, source_chain, tail, wait_labels};

const EXIT_CONFIG: i32 = 2;
const EXIT_STARTUP: i32 = 3;

/// The follower EL must still be at genesis: nothing was written.
async fn assert_untouched(el: &ElNode) {
    let head = el.head().await.expect("head");
    assert_eq!(head.number, 0, "the EL was written to");
}

async fn exits_with(lc: &mut Lightcl, code: i32, needle: &str) {
    let st = lc.wait_exit(Duration::from_secs(60)).await.expect("lightcl should exit");
    let log = lc.log();
    assert_eq!(st.code(), Some(code), "exit status; log:\n{}", tail(&log, 20));
    assert!(log.contains(needle), "log lacks {needle:?}:\n{}", tail(&log, 20));
}

#[tokio::test]
async fn wrong_jwt_secret_exits_without_writing() {
    let (src, _p) = source_chain(ChainKind::Optimism, 5, 4, 3).await;
    let el = src.follower("follower").await.expect("spawn follower");
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("wrong.hex");
    std::fs::write(&wrong, "cd".repeat(32)).expect("write");
    let cfg = FollowerConfig { jwt_file: wrong, ..FollowerConfig::new(&src, &el) };
    let mut lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    exits_with(&mut lc, EXIT_STARTUP, "refused our Engine API token").await;
    assert_untouched(&el).await;
}

#[tokio::test]
async fn chain_id_mismatch_exits_without_writing() {
    let (src, _p) = source_chain(ChainKind::Optimism, 5, 4, 3).await;
    let el = src.follower("follower").await.expect("spawn follower");
    let cfg = FollowerConfig { chain_id: 12345, ..FollowerConfig::new(&src, &el) };
    let mut lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    exits_with(&mut lc, EXIT_STARTUP, "reports chain id 901901, the configuration says 12345")
        .await;
    assert_untouched(&el).await;

    // The EL on another chain than the sources.
    let other = ElNode::spawn(ChainKind::Ethereum, "other-chain").await.expect("spawn");
    let cfg = FollowerConfig {
        engine_url: other.auth_url(),
        el_rpc_url: other.http_url(),
        jwt_file: other.jwt_path(),
        ..FollowerConfig::new(&src, &el)
    };
    let mut lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    exits_with(&mut lc, EXIT_STARTUP, "the local EL reports chain id").await;
    assert_untouched(&other).await;
}

#[tokio::test]
async fn unknown_config_key_exits_with_its_name() {
    let (src, _p) = source_chain(ChainKind::Optimism, 1, 1, 1).await;
    let el = src.follower("follower").await.expect("spawn follower");
    let cfg =
        FollowerConfig { extra: "pol_interval_ms = 5".into(), ..FollowerConfig::new(&src, &el) };
    let mut lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    exits_with(&mut lc, EXIT_CONFIG, "unknown key `pol_interval_ms`").await;
    assert!(lc.log().contains("lightcl.toml"), "the message names the file");
    assert_untouched(&el).await;
}

#[tokio::test]
async fn unreachable_source_at_start_is_retried_then_followed() {
    let (src, p) = source_chain(ChainKind::Optimism, 10, 8, 6).await;
    let el = src.follower("follower").await.expect("spawn follower");
    let proxy = Proxy::start(vec![src.http_url()]).await.expect("proxy");
    proxy.set_down(true);
    let cfg =
        FollowerConfig { sources: vec![proxy.url().to_string()], ..FollowerConfig::new(&src, &el) };
    let lc = Lightcl::start(lightcl_bin(), &cfg).expect("start");
    assert!(lc.wait_log("source not usable yet", Duration::from_secs(30)).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        lc.log().matches("retrying").count() >= 2,
        "retries with backoff:\n{}",
        tail(&lc.log(), 10)
    );
    assert_untouched(&el).await;
    proxy.set_down(false);
    let want = (p.hash_at(8).expect("h"), p.hash_at(8).expect("h"), p.hash_at(6).expect("h"));
    wait_labels(&el, want, Duration::from_secs(60), &lc).await;
}

/// A source that serves block 7 changed in one way after another (each stage a
/// [`Tamper`] and the refusal lightcl must log for it): every version is refused before the EL
/// sees it, lightcl holds right below it, and it carries on when the source is honest again.
/// One world per fetch format, the stages in turn: each stage's refusal must appear in the log
/// after its tamper was set.
async fn tampered_blocks_are_refused(fetch: &str, stages: Vec<(Tamper, &str)>) {
    let (src, p) = source_chain(ChainKind::Optimism, 12, 12, 2).await;
    let el = src.follower("follower").await.expect("spawn follower");
    let proxy = Proxy::start(vec![src.http_url()]).await.expect("proxy");
    let cfg = FollowerConfig {
        sources: vec![proxy.url().to_string()],
        extra: format!("fetch = {fetch:?}"),
        ..FollowerConfig::new(&src, &el)
    };
    let mut lc = None;
    for (tamper, needle) in stages {
        proxy.set_tamper(Some(tamper));
        let lc = lc.get_or_insert_with(|| Lightcl::start(lightcl_bin(), &cfg).expect("start"));
        let from = lc.log().len();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !lc.log().get(from..).is_some_and(|l| l.contains(needle)) {
            assert!(Instant::now() < deadline, "no {needle:?} logged:\n{}", tail(&lc.log(), 20));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let head = el.head().await.expect("head");
        assert_eq!(head.number, 6, "{needle}: the EL must stop right below the tampered block 7");
        assert_eq!(label_hashes(&el).await.0, p.hash_at(6).expect("h"));
    }
    let lc = lc.expect("at least one stage");
    proxy.set_tamper(None);
    let want = (p.hash_at(12).expect("h"), p.hash_at(12).expect("h"), p.hash_at(2).expect("h"));
    wait_labels(&el, want, Duration::from_secs(60), &lc).await;
}

fn is_full_block_7(method: &str, params: &Value) -> bool {
    method == "eth_getBlockByNumber" && params[0] == "0x7" && params[1] == true
}

fn is_raw_block_7(method: &str, params: &Value) -> bool {
    method == "debug_getRawBlock" && params[0] == "0x7"
}

/// Rewrites a `debug_getRawBlock` answer (hex RLP) through `edit` on the decoded block.
fn edit_raw(result: &mut Value, edit: impl Fn(&mut alloy_consensus::Block<OpaqueTx>)) {
    let Some(bytes) = result.as_str().and_then(|s| s.parse::<alloy_primitives::Bytes>().ok())
    else {
        return;
    };
    let mut buf = bytes.as_ref();
    let Ok(mut block) =
        <alloy_consensus::Block<OpaqueTx> as alloy_rlp::Decodable>::decode(&mut buf)
    else {
        return;
    };
    edit(&mut block);
    *result = Value::from(raw::encode(&block).to_string());
}

/// JSON blocks: a changed header field, a changed transaction, a block that does not decode.
#[tokio::test]
async fn tampered_and_malformed_json_blocks_are_refused() {
    let header: Tamper = Box::new(|method: &str, params: &Value, result: &mut Value| {
        if is_full_block_7(method, params) {
            result["gasUsed"] = Value::from("0x1");
        }
    });
    let transaction: Tamper = Box::new(|method: &str, params: &Value, result: &mut Value| {
        if is_full_block_7(method, params) {
            // The transfer after the L1-info deposit now sends a different amount.
            result["transactions"][1]["value"] = Value::from("0x2a");
        }
    });
    let malformed: Tamper = Box::new(|method: &str, params: &Value, result: &mut Value| {
        if is_full_block_7(method, params) {
            result["transactions"] = Value::from("garbage");
        }
    });
    let stages = vec![
        (header, "the header hashes to"),
        (transaction, "the transactions hash to root"),
        (malformed, "does not decode"),
    ];
    tampered_blocks_are_refused("json", stages).await;
}

/// Raw blocks. One asked for by number claims no hash: a changed header shows as a block that
/// the block above it does not name, and that the quorum does not hold.
#[tokio::test]
async fn tampered_and_malformed_raw_blocks_are_refused() {
    let header: Tamper = Box::new(|method: &str, params: &Value, result: &mut Value| {
        if is_raw_block_7(method, params) {
            edit_raw(result, |b| b.header.gas_used += 1);
        }
    });
    let transaction: Tamper = Box::new(|method: &str, params: &Value, result: &mut Value| {
        if is_raw_block_7(method, params) {
            edit_raw(result, |b| {
                let mut tx = b.body.transactions[1].bytes().to_vec();
                let last = tx.len() - 1;
                tx[last] ^= 1;
                b.body.transactions[1] = OpaqueTx::new(tx.into()).expect("typed");
            });
        }
    });
    let malformed: Tamper = Box::new(|method: &str, params: &Value, result: &mut Value| {
        if is_raw_block_7(method, params) {
            *result = Value::from("0xc0c0");
        }
    });
    let stages = vec![
        (header, "the agreed chain holds"),
        (transaction, "the transactions hash to root"),
        (malformed, "does not decode"),
    ];
    tampered_blocks_are_refused("raw", stages).await;
}
