//! Tests that prove the test bed itself on both ELs.

use std::time::{Duration, Instant};

use lightcl_testbed::node::process_alive;
use lightcl_testbed::producer::{forkchoice, new_payload, replay};
use lightcl_testbed::{ChainKind, ElClient, ElNode, Producer, TxMix};

/// Produces 50 blocks with transactions on A (`src`), replays them into a fresh B (`replica`, same
/// genesis), and checks B's head and both nodes' safe/finalized labels.
async fn produce_and_replay(src: ElClient, replica: ElClient) {
    let test = format!("{src}_produce_and_replay_into_{replica}");
    if !src.available_or_skip(&test) || !replica.available_or_skip(&test) {
        return;
    }
    let a = ElNode::spawn_client(src, "producer").await.expect("spawn A");
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
    let b = a.sibling_as(replica, "replica").await.expect("spawn replica");
    assert_eq!(
        b.block_at(0).await.unwrap().map(|g| g.hash),
        Some(producer.genesis().hash),
        "{replica} and {src} disagree on the genesis block of the same genesis file"
    );
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
    produce_and_replay(ElClient::OpGeth, ElClient::OpGeth).await;
}

#[tokio::test]
async fn geth_produce_and_replay_50_blocks() {
    produce_and_replay(ElClient::Geth, ElClient::Geth).await;
}

#[tokio::test]
async fn op_geth_blocks_replay_into_op_reth() {
    produce_and_replay(ElClient::OpGeth, ElClient::OpReth).await;
}

#[tokio::test]
async fn geth_blocks_replay_into_reth() {
    produce_and_replay(ElClient::Geth, ElClient::Reth).await;
}

#[tokio::test]
async fn op_reth_produces_blocks_op_geth_replays_them() {
    produce_and_replay(ElClient::OpReth, ElClient::OpGeth).await;
}

#[tokio::test]
async fn op_geth_blocks_replay_into_op_reth_2() {
    produce_and_replay(ElClient::OpGeth, ElClient::OpReth2).await;
}

#[tokio::test]
async fn op_reth_2_produces_blocks_op_geth_replays_them() {
    produce_and_replay(ElClient::OpReth2, ElClient::OpGeth).await;
}

#[tokio::test]
async fn reth_produces_blocks_geth_replays_them() {
    produce_and_replay(ElClient::Reth, ElClient::Geth).await;
}

/// A node dropped while its test panics is killed (and its log tail printed).
#[tokio::test]
async fn no_el_outlives_a_panicking_test() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let node = ElNode::spawn(ChainKind::Ethereum, "doomed").await.expect("spawn");
        tx.send(node.pid().expect("pid")).expect("send pid");
        panic!("deliberate panic while an EL runs");
    });
    assert!(task.await.is_err(), "the task should have panicked");
    let pid = rx.await.expect("pid");
    assert!(!process_alive(pid), "EL {pid} outlived the panicking test");
}

/// Run by `no_el_outlives_a_killed_test_process` in a child process: starts an EL, writes its
/// pid, and waits to be killed. Does nothing when run directly.
#[tokio::test]
#[ignore = "helper: run in a child process by no_el_outlives_a_killed_test_process"]
async fn orphan_helper() {
    let Some(pid_file) = std::env::var_os("TESTBED_ORPHAN_HELPER_PIDFILE") else { return };
    let node = ElNode::spawn(ChainKind::Ethereum, "orphan").await.expect("spawn");
    std::fs::write(pid_file, node.pid().expect("pid").to_string()).expect("write pid");
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// A test process killed by SIGKILL (no unwinding, no Drop) still takes its EL down.
#[tokio::test]
async fn no_el_outlives_a_killed_test_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("el.pid");
    let log = dir.path().join("child.log");
    // A child that could not start its EL (a loaded machine, a port taken between probe and
    // bind) is started once more; its log is shown if the second one fails too.
    let mut attempt = 0;
    let (mut child, el_pid): (std::process::Child, u32) = loop {
        attempt += 1;
        let out = std::fs::File::create(&log).expect("child log");
        let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args(["testbed::orphan_helper", "--exact", "--ignored", "--nocapture"])
            .env("TESTBED_ORPHAN_HELPER_PIDFILE", &pid_file)
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn child test process");
        let deadline = Instant::now() + Duration::from_secs(90);
        let started = loop {
            if let Ok(s) = std::fs::read_to_string(&pid_file)
                && let Ok(pid) = s.trim().parse::<u32>()
            {
                break Some(pid);
            }
            if child.try_wait().ok().flatten().is_some() || Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        match started {
            Some(pid) => break (child, pid),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(attempt < 2, "child test never started its EL:\n{text}");
                eprintln!("the child test did not start its EL; once more:\n{text}");
            }
        }
    };
    assert!(process_alive(el_pid));
    child.kill().expect("SIGKILL the child test process");
    child.wait().expect("reap child");
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(el_pid) {
        assert!(Instant::now() < deadline, "EL {el_pid} outlived its killed test process");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two peered ELs: the second syncs the first's chain over devp2p once told the head.
async fn peers_sync(client: ElClient) {
    if !client.available_or_skip(&format!("{client}_peers_sync_over_p2p")) {
        return;
    }
    let a = ElNode::spawn_client(client, "seed").await.expect("spawn A");
    let mut p = Producer::new(&a).await.expect("producer");
    p.build_many(30, TxMix::new(1, 1)).await.expect("build");
    let b = a.sibling("syncer").await.expect("spawn sibling");
    b.add_peer(&a).await.expect("peer");
    // geth learns a head it may sync to from newPayload, then syncs on the forkchoice.
    let tip = p.block(30).expect("tip");
    let s = new_payload(&b.engine, tip).await.expect("newPayload tip");
    assert_eq!(s.status, "SYNCING");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let g = p.genesis().hash;
        let _ = forkchoice(&b.engine, tip.hash, g, g).await.expect("fcu");
        if b.head().await.expect("head").hash == tip.hash {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B did not sync from its peer; log:\n{}",
            b.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn geth_peers_sync_over_p2p() {
    peers_sync(ElClient::Geth).await;
}

#[tokio::test]
async fn reth_peers_sync_over_p2p() {
    peers_sync(ElClient::Reth).await;
}

#[tokio::test]
async fn op_reth_peers_sync_over_p2p() {
    peers_sync(ElClient::OpReth).await;
}

#[tokio::test]
async fn op_reth_2_peers_sync_over_p2p() {
    peers_sync(ElClient::OpReth2).await;
}

#[tokio::test]
async fn op_geth_peers_sync_over_p2p() {
    peers_sync(ElClient::OpGeth).await;
}

/// A rival branch from genesis shares only block 0.
#[tokio::test]
async fn fork_from_genesis_differs_from_block_one() {
    let a = ElNode::spawn(ChainKind::Optimism, "main").await.expect("spawn");
    let mut p = Producer::new(&a).await.expect("producer");
    p.build_many(3, TxMix::NONE).await.expect("build");
    let b = a.sibling("rival").await.expect("spawn sibling");
    let mut rival = p.fork_onto(&b, 0, 99).await.expect("fork");
    rival.build_many(3, TxMix::NONE).await.expect("rival");
    assert_eq!(rival.hash_at(0), p.hash_at(0));
    for n in 1..=3 {
        assert_ne!(rival.hash_at(n), p.hash_at(n), "height {n}");
        assert_eq!(b.block_at(n).await.expect("b").map(|x| x.hash), rival.hash_at(n));
    }
}
