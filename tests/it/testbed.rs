//! Tests that prove the test bed itself on both ELs.

use lightcl_testbed::producer::replay;
use lightcl_testbed::{ChainKind, ElNode, NodeOptions, Producer, TxMix};

/// Produces 50 blocks with transactions on A, replays them into a fresh B, and checks B's head
/// and A's safe/finalized labels.
async fn produce_and_replay(kind: ChainKind) {
    let a = ElNode::spawn(kind, "producer").await.expect("spawn A");
    let mut producer = Producer::new(&a).await.expect("producer");
    producer.build_many(50, TxMix::new(2, 2)).await.expect("build 50 blocks");
    assert_eq!(a.head().await.unwrap().number, 50);
    let with_txs = producer.blocks(1, 50).iter().filter(|b| b.tx_count >= 4).count();
    assert!(with_txs >= 45, "only {with_txs} of 50 blocks carry the transactions asked for");

    let status = producer.set_labels(40, 30).await.expect("set labels");
    assert!(status.is_valid(), "labels: {status:?}");
    let safe = a.block("safe").await.unwrap().expect("safe label");
    let finalized = a.block("finalized").await.unwrap().expect("finalized label");
    assert_eq!((safe.number, safe.hash), (40, producer.hash_at(40).unwrap()));
    assert_eq!((finalized.number, finalized.hash), (30, producer.hash_at(30).unwrap()));

    // B shares A's genesis (same options) and receives the payloads through the Engine API.
    let opts = NodeOptions { name: "replica".into(), ..NodeOptions::new(kind, "") };
    let opts = NodeOptions { genesis: a.genesis().clone(), ..opts };
    let b = ElNode::spawn_with(opts).await.expect("spawn B");
    let (s, f) = (producer.hash_at(40).unwrap(), producer.hash_at(30).unwrap());
    replay(&b, &producer.blocks(1, 50), s, f).await.expect("replay into B");
    let (ha, hb) = (a.head().await.unwrap(), b.head().await.unwrap());
    assert_eq!(ha, hb, "B's head must equal A's");
    assert_eq!(b.block("safe").await.unwrap().map(|x| x.hash), Some(s));
    assert_eq!(b.block("finalized").await.unwrap().map(|x| x.hash), Some(f));

    // The contract calls changed state: the counter holds the number of calls made.
    let counter = lightcl_testbed::genesis::COUNTER_ADDRESS;
    let (ca, cb) = (a.storage(counter, 0).await.unwrap(), b.storage(counter, 0).await.unwrap());
    assert_eq!(ca, cb);
    assert!(!ca.is_zero(), "the counter contract was never called");
}
#[tokio::test]
async fn op_geth_produce_and_replay_50_blocks() {
    produce_and_replay(ChainKind::Optimism).await;
}

#[tokio::test]
async fn geth_produce_and_replay_50_blocks() {
    produce_and_replay(ChainKind::Ethereum).await;
}
