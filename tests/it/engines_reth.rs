//! Characterisation of reth 1.10.2 and of op-reth on both its lines, 1.10.2 and the production
//! 2.x (all from the shared folder): the same rows as the geth and op-geth tests in `engines.rs`,
//! with what these ELs actually answer. Every op-reth row runs on both lines (`op_reth_*` and
//! `op_reth_2_*`). Skipped, with a message, when the binaries are not installed.
//! `docs/engines.md` holds the matrix.

use alloy_primitives::keccak256;
use lightcl_testbed::chains::cached_source;
use lightcl_testbed::producer::new_payload;
use lightcl_testbed::{ElClient, ElNode, Producer, TxMix};
use serde_json::{Value, json};

use crate::engines::{
    Answer, fcu, fcu_below_finalized, fcu_rewind_limit, fcu_to_canonical_ancestor, h, heads,
    payloads_ahead_of_head, producer_with, producer_with_args, reorg_across_finalized,
    side_branch_reorg, status, unknown_parent,
};

const UNWIND: &str = "--engine.allow-unwind-canonical-header";

/// Whether `client` is installed (else the test prints why it does nothing and returns).
fn have(client: ElClient, test: &str) -> bool {
    client.available_or_skip(test)
}

/// Two tests of one row: `$one` on op-reth 1.10.2 and `$two` on op-reth 2.x, each calling
/// `$check(client)` when that line is installed.
macro_rules! op_reth_lines {
    ($one:ident, $two:ident, $check:expr) => {
        #[tokio::test]
        async fn $one() {
            if have(ElClient::OpReth, stringify!($one)) {
                $check(ElClient::OpReth).await;
            }
        }

        #[tokio::test]
        async fn $two() {
            if have(ElClient::OpReth2, stringify!($two)) {
                $check(ElClient::OpReth2).await;
            }
        }
    };
}

// --- forkchoiceUpdated to a canonical ancestor ----------------------------------------------

async fn check_fcu_to_ancestor(client: ElClient) {
    // Without the unwind flag a forkchoice to a canonical ancestor is VALID and changes nothing:
    // the head stays, and unlike op-geth the safe and finalized labels in it are not applied
    // either (they stay at genesis, where the producer left them).
    let got = fcu_to_canonical_ancestor(client).await;
    assert_eq!(got, (status("VALID"), (10, Some(0), Some(0))), "{client}");
    // With the flag op-reth unwinds its head to the ancestor (labels still not applied); reth
    // 1.10.2 answers the same VALID and does not move.
    let (node, p) = producer_with_args(client, 10, &[UNWIND]).await;
    let answer = fcu(&node, h(&p, 5), h(&p, 5), h(&p, 3)).await;
    let head = if client.is_op_reth() { 5 } else { 10 };
    assert_eq!(
        (answer, heads(&node).await),
        (status("VALID"), (head, Some(0), Some(0))),
        "{client} with {UNWIND}"
    );
}

op_reth_lines!(
    op_reth_fcu_to_canonical_ancestor_moves_head_only_with_unwind_flag,
    op_reth_2_fcu_to_canonical_ancestor_moves_head_only_with_unwind_flag,
    check_fcu_to_ancestor
);

#[tokio::test]
async fn reth_fcu_to_canonical_ancestor_never_moves_head() {
    if have(ElClient::Reth, "reth_fcu_to_canonical_ancestor") {
        check_fcu_to_ancestor(ElClient::Reth).await;
    }
}

async fn check_fcu_deep_ancestor(client: ElClient) {
    let got = fcu_rewind_limit(client).await;
    assert_eq!(got, [(status("VALID"), 40), (status("VALID"), 40)], "{client}");
}

op_reth_lines!(
    op_reth_fcu_deep_ancestor_is_valid_without_rewind,
    op_reth_2_fcu_deep_ancestor_is_valid_without_rewind,
    check_fcu_deep_ancestor
);

#[tokio::test]
async fn reth_fcu_deep_ancestor_is_valid_without_rewind() {
    if have(ElClient::Reth, "reth_fcu_deep_ancestor") {
        check_fcu_deep_ancestor(ElClient::Reth).await;
    }
}

async fn check_op_fcu_below_finalized(client: ElClient) {
    // VALID and ignored, labels included (as geth; op-geth moves the labels back). op-reth 2.3.2
    // still answers VALID, not the -38006 of later reth.
    let got = fcu_below_finalized(client).await;
    assert_eq!(got, (status("VALID"), (20, Some(15), Some(15))), "{client}");
}

op_reth_lines!(
    op_reth_fcu_below_finalized,
    op_reth_2_fcu_below_finalized,
    check_op_fcu_below_finalized
);

#[tokio::test]
async fn reth_fcu_below_finalized() {
    if have(ElClient::Reth, "reth_fcu_below_finalized") {
        // reth 1.10.2 predates the -38006 answer below finalized (reth #26567): VALID, ignored.
        let got = fcu_below_finalized(ElClient::Reth).await;
        assert_eq!(got, (status("VALID"), (20, Some(15), Some(15))));
    }
}

// --- newPayload with an unknown parent -------------------------------------------------------

async fn check_unknown_parent_buffered(client: ElClient) {
    // reth keeps a block whose parent it lacks (SYNCING) and connects it once the parents come:
    // the forkchoice to it then succeeds without resending it.
    let (early, parents, fcu_early, head, resent, fcu_after) = unknown_parent(client).await;
    assert_eq!(early, status("SYNCING"), "{client}: newPayload with an unknown parent");
    assert_eq!(parents, vec![status("VALID"); 4], "{client}: the missing parents, in order");
    assert_eq!((fcu_early, head), (status("VALID"), 5), "{client}: buffered block connected");
    assert_eq!((resent, fcu_after), (status("VALID"), status("VALID")), "{client}");
}

op_reth_lines!(
    op_reth_new_payload_unknown_parent_is_buffered,
    op_reth_2_new_payload_unknown_parent_is_buffered,
    check_unknown_parent_buffered
);

#[tokio::test]
async fn reth_new_payload_unknown_parent_is_buffered() {
    if have(ElClient::Reth, "reth_new_payload_unknown_parent") {
        check_unknown_parent_buffered(ElClient::Reth).await;
    }
}

// --- side branches and reorgs ---------------------------------------------------------------

op_reth_lines!(
    op_reth_side_branch_then_fcu_reorgs,
    op_reth_2_side_branch_then_fcu_reorgs,
    side_branch_reorg
);

#[tokio::test]
async fn reth_side_branch_then_fcu_reorgs() {
    if have(ElClient::Reth, "reth_side_branch_then_fcu_reorgs") {
        side_branch_reorg(ElClient::Reth).await;
    }
}

async fn check_reorg_across_finalized(client: ElClient) {
    // Unlike geth (-38002 after reorging), reth answers VALID: the head moves to the branch that
    // does not contain the finalized block. Read right after, the finalized label is either
    // still the old block 15 (no longer canonical) or unset; both were seen. The EL does not
    // protect finality; lightcl must (I3).
    let (answer, head, _, fin) = reorg_across_finalized(client).await;
    assert_eq!((&answer, head), (&status("VALID"), 22), "{client}");
    assert!(matches!(fin, None | Some(15)), "{client}: finalized {fin:?}");
}

op_reth_lines!(
    op_reth_reorg_across_finalized_moves_head_and_answers_valid,
    op_reth_2_reorg_across_finalized_moves_head_and_answers_valid,
    check_reorg_across_finalized
);

#[tokio::test]
async fn reth_reorg_across_finalized_moves_head_and_answers_valid() {
    if have(ElClient::Reth, "reth_reorg_across_finalized") {
        check_reorg_across_finalized(ElClient::Reth).await;
    }
}

/// The EL holds a 200-block branch above block 50 (canonical, persisted); the other branch's
/// 210 blocks arrive with no rewind of any kind. Returns (answers, deduplicated, to 51..=260,
/// answer to the forkchoice to 260, head).
async fn deep_side_branch_without_rewind(client: ElClient) -> (Vec<String>, Answer, u64) {
    // An Ethereum producer waits for its pool on every block with user transactions; the
    // system contracts change state in every block anyway, so reth's branches go without.
    let mix = if client.is_reth() && client.chain() == lightcl_testbed::ChainKind::Ethereum {
        TxMix::NONE
    } else {
        TxMix::new(1, 0)
    };
    // The source's 260 blocks come from the chain cache; the rival from block 50 is built here.
    let key = format!("deep-tx{}-{}-260", mix.transfers, mix.calls);
    let (src, main) =
        cached_source(client, &key, async |p: &mut Producer| p.build_many(260, mix).await)
            .await
            .expect("source");
    let local = src.sibling("local").await.expect("spawn local");
    let mut rival = main.fork_onto(&local, 50, 7).await.expect("fork");
    rival.build_many(200, mix).await.expect("rival");
    let g = main.genesis().hash;
    let mut answers = Vec::new();
    for n in 51..=260 {
        answers
            .push(new_payload(&local.engine, main.block(n).expect("b")).await.expect("np").status);
    }
    answers.dedup();
    let f = fcu(&local, h(&main, 260), g, g).await;
    (answers, f, local.head().await.expect("head").number)
}

async fn check_deep_side_branch(client: ElClient) {
    // reth executes a side branch 200 blocks deep from its own history: every block VALID, and
    // one forkchoice reorgs onto it. No debug_setHead (which reth ignores) is needed.
    let got = deep_side_branch_without_rewind(client).await;
    assert_eq!(got, (vec!["VALID".to_string()], status("VALID"), 260), "{client}");
}

op_reth_lines!(
    op_reth_deep_side_branch_executes_without_rewind,
    op_reth_2_deep_side_branch_executes_without_rewind,
    check_deep_side_branch
);

#[tokio::test]
async fn reth_deep_side_branch_executes_without_rewind() {
    if have(ElClient::Reth, "reth_deep_side_branch") {
        check_deep_side_branch(ElClient::Reth).await;
    }
}

// --- payloads far ahead of the head --------------------------------------------------------

async fn check_payloads_ahead(client: ElClient) {
    // Unlike geth (SYNCING from 130 on), all 300 blocks execute without a forkchoice.
    let got = payloads_ahead_of_head(client).await;
    assert_eq!(got, (None, status("-"), status("-")), "{client}");
}

op_reth_lines!(
    op_reth_accepts_payloads_far_ahead_of_head,
    op_reth_2_accepts_payloads_far_ahead_of_head,
    check_payloads_ahead
);

#[tokio::test]
async fn reth_accepts_payloads_far_ahead_of_head() {
    if have(ElClient::Reth, "reth_payloads_ahead") {
        check_payloads_ahead(ElClient::Reth).await;
    }
}

// --- debug_setHead -------------------------------------------------------------------------

async fn check_set_head_is_a_no_op(client: ElClient) {
    // reth 1.10.2 declares the number as a plain JSON integer: geth's hex form (what lightcl
    // sends) is refused with -32602 "Invalid params". op-reth 2.x takes the hex form (a quantity)
    // and answers null. Either way the integer form answers null too, and nothing happens: the
    // head stays at 10 and block 8 is still there.
    let (node, p) = producer_with(client, 10).await;
    let hex: Result<Value, _> = node.rpc.call("debug_setHead", json!(["0x5"])).await;
    if client == ElClient::OpReth2 {
        assert!(matches!(hex, Ok(Value::Null)), "{client}: {hex:?}");
    } else {
        assert!(
            matches!(hex, Err(lightcl_testbed::Error::Rpc { code: -32602, .. })),
            "{client}: {hex:?}"
        );
    }
    let int: Result<Value, _> = node.rpc.call("debug_setHead", json!([5])).await;
    assert!(matches!(int, Ok(Value::Null)), "{client}: the integer form: {int:?}");
    let head = node.head().await.expect("head").number;
    let kept = node.block_by_hash(h(&p, 8)).await.expect("by hash").is_some();
    assert_eq!((head, kept), (10, true), "{client}");
}

op_reth_lines!(
    op_reth_debug_set_head_does_nothing,
    op_reth_2_debug_set_head_does_nothing,
    check_set_head_is_a_no_op
);

#[tokio::test]
async fn reth_debug_set_head_does_nothing() {
    if have(ElClient::Reth, "reth_debug_set_head") {
        check_set_head_is_a_no_op(ElClient::Reth).await;
    }
}

// --- restarts -------------------------------------------------------------------------------

/// Graceful restart (SIGTERM): (head and labels after it, answer to a forkchoice to the old
/// head, head after refeeding the lost blocks and a forkchoice, whether the producer goes on).
async fn graceful_restart(
    client: ElClient,
) -> ((u64, Option<u64>, Option<u64>), Answer, (u64, Option<u64>, Option<u64>), bool) {
    let (mut node, mut p) = producer_with(client, 20).await;
    assert!(p.set_labels(15, 10).await.expect("labels").is_valid());
    node.restart().await.expect("restart");
    let after = heads(&node).await;
    let to_old_head = fcu(&node, h(&p, 20), h(&p, 15), h(&p, 10)).await;
    let (_, converged) = crate::engines::refeed(&node, &p).await;
    let refed = heads(&node).await;
    let goes_on = converged && p.build_many(2, TxMix::new(1, 1)).await.is_ok();
    (after, to_old_head, refed, goes_on)
}

async fn check_graceful_restart(client: ElClient) {
    let ((head, safe, fin), to_old_head, refed, goes_on) = graceful_restart(client).await;
    eprintln!(
        "{client} after SIGTERM: head {head}, safe {safe:?}, finalized {fin:?}; forkchoice to the \
         old head {to_old_head:?}; after the refeed {refed:?}"
    );
    if client == ElClient::OpReth2 {
        // op-reth 2.x writes its in-memory blocks on shutdown: it comes back at its head, with
        // both labels, or (seen once under load) with both back at genesis; the forkchoice to
        // that head is VALID (the refeed's forkchoice, with genesis labels, then moves both
        // labels back: the EL does not guard them).
        assert_eq!(head, 20, "{client}: head after the restart");
        assert!(
            matches!((safe, fin), (Some(15), Some(10)) | (Some(0), Some(0))),
            "{client}: safe {safe:?}, finalized {fin:?} after the restart"
        );
        assert_eq!(
            (to_old_head, refed, goes_on),
            (status("VALID"), (20, Some(0), Some(0)), true),
            "{client}"
        );
        return;
    }
    // reth 1.10.2 does not persist its in-memory blocks on SIGTERM: it comes back at least two
    // blocks behind (the default persistence threshold; more when its persistence task lags,
    // as on a loaded machine: 16 once in CI), with safe and finalized kept or back at genesis.
    // A forkchoice to the lost head answers SYNCING; the lost blocks fed again are VALID and
    // the chain goes on.
    assert!((1..=18).contains(&head), "{client}: head {head} after the restart");
    assert!(matches!(fin, Some(10) | Some(0)), "{client}: finalized {fin:?}");
    assert!(matches!(safe, Some(15) | Some(0)), "{client}: safe {safe:?}");
    assert_eq!((to_old_head, refed, goes_on), (status("SYNCING"), (20, Some(0), Some(0)), true));
}

op_reth_lines!(
    op_reth_restart_loses_unpersisted_blocks,
    op_reth_2_restart_keeps_its_blocks,
    check_graceful_restart
);

#[tokio::test]
async fn reth_restart_loses_unpersisted_blocks() {
    if have(ElClient::Reth, "reth_restart") {
        check_graceful_restart(ElClient::Reth).await;
    }
}

/// SIGKILL after 20 blocks: (head and finalized after the start, answers to blocks 1..=20 fed
/// again, whether a forkchoice to 20 then makes it the head).
async fn crash_restart(client: ElClient) -> (u64, Option<u64>, Vec<String>, bool) {
    let (mut node, mut p) = producer_with(client, 20).await;
    assert!(p.set_labels(15, 10).await.expect("labels").is_valid());
    node.kill();
    node.start().await.expect("start after kill");
    let (head, _, fin) = heads(&node).await;
    let (mut answers, converged) = crate::engines::refeed(&node, &p).await;
    answers.dedup();
    (head, fin, answers, converged)
}

async fn check_crash(client: ElClient) {
    // Unlike geth (head at genesis, snap-sync mode, needs a restart), reth comes back at its last
    // persisted block, and the blocks fed again converge without any repair. The finalized label
    // may come back at genesis (op-reth did): lightcl's floor file keeps finality, not the EL.
    let (head, fin, answers, converged) = crash_restart(client).await;
    eprintln!("{client} after SIGKILL: head {head}, finalized {fin:?}, answers {answers:?}");
    assert!((10..=20).contains(&head), "{client}: head {head}");
    assert!(matches!(fin, Some(0) | Some(10)), "{client}: finalized {fin:?}");
    assert_eq!(answers, vec!["VALID".to_string()], "{client}");
    assert!(converged, "{client}: did not converge on refeed");
}

op_reth_lines!(
    op_reth_crash_restart_converges_on_refeed,
    op_reth_2_crash_restart_converges_on_refeed,
    check_crash
);

#[tokio::test]
async fn reth_crash_restart_converges_on_refeed() {
    if have(ElClient::Reth, "reth_crash_restart") {
        check_crash(ElClient::Reth).await;
    }
}

// --- debug_getRawBlock ----------------------------------------------------------------------

/// `debug_getRawBlock` of block 5: the RLP of the whole block; its first list item is the header,
/// whose keccak is the block hash.
async fn raw_block(client: ElClient) {
    let (node, p) = producer_with(client, 5).await;
    let raw: String = node.rpc.call("debug_getRawBlock", json!(["0x5"])).await.expect("raw");
    let bytes = alloy_primitives::hex::decode(&raw).expect("hex");
    let mut rest = &bytes[..];
    let outer = alloy_rlp::Header::decode(&mut rest).expect("block list");
    assert!(outer.list, "{client}: the raw block is an RLP list");
    let after_outer = rest;
    let inner = alloy_rlp::Header::decode(&mut rest).expect("header list");
    let header_len = after_outer.len() - rest.len() + inner.payload_length;
    let header = &after_outer[..header_len];
    assert_eq!(keccak256(header), h(&p, 5), "{client}: header RLP hashes to the block hash");
    // A block tag works as well as a number.
    let latest: Value = node.rpc.call("debug_getRawBlock", json!(["latest"])).await.expect("tag");
    assert!(latest.as_str().is_some_and(|s| s.starts_with("0x")), "{client}: {latest}");
}

op_reth_lines!(
    op_reth_debug_get_raw_block_is_block_rlp,
    op_reth_2_debug_get_raw_block_is_block_rlp,
    raw_block
);

#[tokio::test]
async fn reth_debug_get_raw_block_is_block_rlp() {
    if have(ElClient::Reth, "reth_debug_get_raw_block") {
        raw_block(ElClient::Reth).await;
    }
}

#[tokio::test]
async fn op_geth_debug_get_raw_block_is_block_rlp() {
    raw_block(ElClient::OpGeth).await;
}

#[tokio::test]
async fn geth_debug_get_raw_block_is_block_rlp() {
    raw_block(ElClient::Geth).await;
}

// --- a reorg below persisted blocks under reads ---------------------------------------------

/// The EL holds a 200-block branch above block 50, written to disk; the other branch is fed
/// from 51 with a forkchoice every 64 blocks, as lightcl's replay does, while `readers` tasks
/// read blocks of the old branch over JSON-RPC. `head_down`: the first forkchoice (to 114) moves
/// the head below the persisted tip (250); otherwise only the last one (to 260, above it) is
/// sent. Returns how the process ended, if it did.
async fn reorg_under_reads(
    client: ElClient,
    readers: u64,
    head_down: bool,
) -> Option<std::process::ExitStatus> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use lightcl_testbed::producer::forkchoice;
    use lightcl_testbed::rpc::RpcClient;

    let src = ElNode::spawn_client(client, "source").await.expect("spawn");
    let mut main = Producer::new(&src).await.expect("producer");
    main.build_many(50, TxMix::new(1, 0)).await.expect("prefix");
    let mut local = src.sibling("local").await.expect("spawn local");
    let mut rival = main.fork_onto(&local, 50, 7).await.expect("fork");
    rival.build_many(200, TxMix::new(1, 0)).await.expect("rival");
    main.build_many(210, TxMix::new(1, 0)).await.expect("main");
    // Let the persistence task write the rival branch.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for r in 0..readers {
        let rpc = RpcClient::new(local.http_url(), None);
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 51 + r * 37;
            while !stop.load(Ordering::Relaxed) {
                let _: Result<Value, _> =
                    rpc.call("eth_getBlockByNumber", json!([format!("{n:#x}"), true])).await;
                n = if n >= 250 { 51 } else { n + 1 };
            }
        }));
    }
    let g = main.genesis().hash;
    for n in 51..=260 {
        if new_payload(&local.engine, main.block(n).expect("b")).await.is_err() {
            break; // it died
        }
        if n == 114 && head_down {
            let _ = forkchoice(&local.engine, h(&main, n), g, g).await;
        }
    }
    let _ = forkchoice(&local.engine, h(&main, 260), g, g).await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    local.reap()
}

async fn check_dies_below_persisted(client: ElClient) {
    use std::os::unix::process::ExitStatusExt;
    // Seen here: 8 deaths in 8 runs with four readers, 5 in 6 with one (1.10.2). Up to three
    // tries.
    let mut ends = Vec::new();
    for _ in 0..3 {
        let end = reorg_under_reads(client, 4, true).await;
        ends.push(end);
        if end.is_some() {
            break;
        }
    }
    eprintln!("{client}: how the tries ended: {ends:?}");
    let sigbus = ends.iter().flatten().any(|s| s.signal() == Some(lightcl_testbed::tmpfs::SIGBUS));
    assert!(
        sigbus,
        "{client} no longer dies on a reorg below persisted blocks under reads: {ends:?}"
    );
}

op_reth_lines!(
    op_reth_dies_when_its_head_moves_below_persisted_blocks_under_reads,
    op_reth_2_dies_when_its_head_moves_below_persisted_blocks_under_reads,
    check_dies_below_persisted
);

async fn check_survives_head_moving_up(client: ElClient) {
    // Seen here: no death in 8 runs with four readers (against 8 in 8 with the head moved down).
    let end = reorg_under_reads(client, 4, false).await;
    assert!(end.is_none(), "{client} ended {end:?} although its head only moved up");
}

op_reth_lines!(
    op_reth_survives_the_same_reorg_when_its_head_only_moves_up,
    op_reth_2_survives_the_same_reorg_when_its_head_only_moves_up,
    check_survives_head_moving_up
);
