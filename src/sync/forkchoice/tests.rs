//! The gate and the floor against a small fake EL: every refusal of I1-I3 and the floor writes
//! nothing, the floor is stored before the send, roll-backs stop at the floor, and a refill
//! below the floor follows only the chain through it.

use std::sync::{Arc, Mutex};

use alloy_primitives::B256;

use super::gate::{self, Lineage};
use super::{Floor, Forkchoice};
use crate::chain::{BlockRef, Heads, Label, Proven};
use crate::config::ChainKind;
use crate::engine::{
    BlockAt, BoxFuture, Engine, EngineError, LocalBlock, PayloadStatus, Status, SyncStatus,
};
use crate::metrics::Metrics;
use crate::payload::{FcuVersion, Payload};
use crate::state::StateFile;
use crate::sync::error::{Fault, GateError, RunError};

/// Block `n` of branch `branch` (0: the EL's chain).
fn blk(n: u64, branch: u8) -> BlockRef {
    let mut h = [0u8; 32];
    h[0] = branch + 1;
    h[24..].copy_from_slice(&n.to_be_bytes());
    BlockRef::new(n, B256::from(h))
}

fn b(n: u64) -> BlockRef {
    blk(n, 0)
}

fn heads(h: BlockRef, s: BlockRef, f: BlockRef) -> Heads {
    Heads { head: h, safe: s, finalized: f }
}

/// A fake EL: a canonical chain of branch-0 blocks up to its head; it records every write and,
/// for each forkchoice, the floor in the state cell at the moment it arrived.
#[derive(Debug)]
struct FakeEl {
    head: Mutex<u64>,
    cell: Arc<Mutex<Option<BlockRef>>>,
    sent: Mutex<Vec<(Heads, Option<BlockRef>)>>,
    set_heads: Mutex<Vec<u64>>,
}

impl FakeEl {
    fn new(head: u64, cell: Arc<Mutex<Option<BlockRef>>>) -> Arc<Self> {
        Arc::new(Self {
            head: Mutex::new(head),
            cell,
            sent: Mutex::default(),
            set_heads: Mutex::default(),
        })
    }

    fn sent(&self) -> Vec<(Heads, Option<BlockRef>)> {
        self.sent.lock().expect("lock").clone()
    }
}

fn local(n: u64) -> LocalBlock {
    LocalBlock {
        block: b(n),
        parent_hash: b(n.saturating_sub(1)).hash,
        fcu: FcuVersion::V3,
        timestamp: n,
    }
}

impl Engine for FakeEl {
    fn chain_id(&self) -> BoxFuture<'_, Result<u64, EngineError>> {
        Box::pin(async { Ok(1) })
    }
    fn capabilities(&self) -> BoxFuture<'_, Result<Vec<String>, EngineError>> {
        Box::pin(async { Ok(vec![]) })
    }
    fn block(&self, at: BlockAt) -> BoxFuture<'_, Result<Option<LocalBlock>, EngineError>> {
        let head = *self.head.lock().expect("lock");
        Box::pin(async move {
            Ok(match at {
                BlockAt::Label(Label::Latest) => Some(local(head)),
                BlockAt::Label(_) => None,
                BlockAt::Number(n) => (n <= head).then(|| local(n)),
            })
        })
    }
    fn new_payload<'a>(
        &'a self,
        _: &'a Payload,
    ) -> BoxFuture<'a, Result<PayloadStatus, EngineError>> {
        Box::pin(async { Ok(valid()) })
    }
    fn forkchoice_updated<'a>(
        &'a self,
        _: FcuVersion,
        heads: &'a Heads,
    ) -> BoxFuture<'a, Result<PayloadStatus, EngineError>> {
        let stored = *self.cell.lock().expect("lock");
        self.sent.lock().expect("lock").push((*heads, stored));
        Box::pin(async { Ok(valid()) })
    }
    fn set_head(&self, number: u64) -> BoxFuture<'_, Result<(), EngineError>> {
        self.set_heads.lock().expect("lock").push(number);
        *self.head.lock().expect("lock") = number;
        Box::pin(async { Ok(()) })
    }
    fn sync_status(&self) -> BoxFuture<'_, Result<SyncStatus, EngineError>> {
        Box::pin(async { Ok(SyncStatus::default()) })
    }

    fn output_parts(
        &self,
        _number: u64,
    ) -> BoxFuture<'_, Result<Option<crate::chain::output::OutputParts>, EngineError>> {
        Box::pin(async { Ok(None) })
    }
}

fn valid() -> PayloadStatus {
    PayloadStatus { status: Status::Valid, latest_valid_hash: None, validation_error: None }
}

/// A floor at `floor` kept in a memory cell, and an EL at `head` sharing the cell.
fn setup(head: u64, floor: Option<BlockRef>) -> (Arc<FakeEl>, Floor, Arc<Mutex<Option<BlockRef>>>) {
    let cell = Arc::new(Mutex::new(floor));
    let (store, floor) = StateFile::memory(cell.clone());
    (FakeEl::new(head, cell.clone()), Floor::new(floor, Some(store)), cell)
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
}

/// A forkchoice through the gate, on the EL's own chain below `heads.head`.
async fn send(el: &FakeEl, floor: &mut Floor, h: Heads) -> Result<PayloadStatus, GateError> {
    send_on(el, floor, h, &Proven::at(h.head)).await
}

/// A forkchoice through the gate, claiming the branch `chain`.
async fn send_on(
    el: &FakeEl,
    floor: &mut Floor,
    h: Heads,
    chain: &Proven,
) -> Result<PayloadStatus, GateError> {
    gate::forkchoice(el, floor, FcuVersion::V3, &h, &Lineage { chain }).await
}

/// I1-I3 and the floor: each refusal sends nothing and leaves the floor (and its file) as it was.
#[test]
fn refusals_write_nothing() {
    let cases: Vec<(&str, Heads)> = vec![
        ("labels out of order", heads(b(10), b(12), b(5))),
        ("head of another branch", heads(blk(10, 1), b(8), b(5))),
        ("safe of another branch", heads(b(10), blk(8, 1), b(5))),
        ("finalized of another branch", heads(b(10), b(8), blk(5, 1))),
        ("head below the floor", heads(b(4), b(4), b(4))),
        ("finalized below the floor", heads(b(10), b(8), b(5))),
    ];
    for (what, h) in cases {
        let (el, mut floor, cell) = setup(20, Some(b(6)));
        let res = run(send(&el, &mut floor, h));
        assert!(matches!(res, Err(GateError::Refused(_))), "{what}: {res:?}");
        assert!(el.sent().is_empty(), "{what}: something was sent");
        assert_eq!(floor.get(), Some(b(6)), "{what}: the floor moved");
        assert_eq!(*cell.lock().expect("lock"), Some(b(6)), "{what}: the file changed");
    }
}

/// A head that is not on the branch it claims is refused; so are labels left unset outside a
/// refill below the floor.
#[test]
fn a_head_off_its_claimed_branch_and_stray_unset_labels_are_refused() {
    let (el, mut floor, _) = setup(20, Some(b(6)));
    // The claimed branch holds block 12 of branch 1; the head is the EL's block 12.
    let chain = Proven::at(blk(12, 1));
    let res = run(send_on(&el, &mut floor, heads(b(12), b(10), b(8)), &chain));
    assert!(
        matches!(res, Err(GateError::Refused(ref why)) if why.contains("not on the branch it claims")),
        "{res:?}"
    );
    let unset = BlockRef::new(0, B256::ZERO);
    let res = run(send(&el, &mut floor, heads(b(12), unset, unset)));
    assert!(
        matches!(res, Err(GateError::Refused(ref why)) if why.contains("labels unset outside a refill")),
        "{res:?}"
    );
    assert!(el.sent().is_empty());
    assert_eq!(floor.get(), Some(b(6)));
}

/// A head whose branch holds another block at the floor's height is refused (I3).
#[test]
fn a_head_off_the_floor_is_refused() {
    let (el, mut floor, _) = setup(20, Some(blk(6, 1)));
    let res = run(send(&el, &mut floor, heads(b(10), b(8), b(7))));
    assert!(
        matches!(res, Err(GateError::Refused(ref why)) if why.contains("does not descend")),
        "{res:?}"
    );
    assert!(el.sent().is_empty());
}

/// An accepted forkchoice raises the floor, and the file holds it before the EL sees it.
#[test]
fn the_floor_is_stored_before_the_send() {
    let (el, mut floor, cell) = setup(20, Some(b(6)));
    run(send(&el, &mut floor, heads(b(12), b(10), b(9)))).expect("sent");
    assert_eq!(el.sent(), vec![(heads(b(12), b(10), b(9)), Some(b(9)))]);
    assert_eq!(floor.get(), Some(b(9)));
    assert_eq!(*cell.lock().expect("lock"), Some(b(9)));
    // A lower finalized block later never lowers it.
    let res = run(send(&el, &mut floor, heads(b(12), b(10), b(7))));
    assert!(matches!(res, Err(GateError::Refused(_))), "{res:?}");
    assert_eq!(floor.get(), Some(b(9)));
}

/// Roll-backs stop at the floor; above it they go through.
#[test]
fn set_head_never_goes_below_the_floor() {
    let (el, floor, _) = setup(20, Some(b(6)));
    let res = run(gate::set_head(el.as_ref(), &floor, 5));
    assert!(matches!(res, Err(GateError::Refused(_))), "{res:?}");
    assert!(el.set_heads.lock().expect("lock").is_empty());
    run(gate::set_head(el.as_ref(), &floor, 6)).expect("at the floor");
    assert_eq!(*el.set_heads.lock().expect("lock"), vec![6]);
}

/// An EL that lost blocks below the floor is refilled with unset labels, along the chain
/// through the floor only.
#[test]
fn a_refill_follows_only_the_chain_through_the_floor() {
    let (el, mut floor, _) = setup(3, Some(b(10)));
    run(floor.reconcile(el.as_ref(), heads(b(3), b(0), b(0)), false)).expect("refilling");
    assert!(floor.refilling());
    // The proof of the chain through the floor, down to block 2.
    let mut chain = Proven::at(b(10));
    assert!(chain.learn_below(b(10), b(9).hash));
    for n in (2..10).rev() {
        assert!(chain.push_below(b(n), b(n - 1).hash));
    }
    floor.set_lineage(chain);
    run(send(&el, &mut floor, heads(b(3), b(2), b(1)))).expect("a refill head on the chain");
    let unset = BlockRef::new(0, B256::ZERO);
    assert_eq!(el.sent().last().map(|s| s.0), Some(heads(b(3), unset, unset)), "labels unset");
    assert_eq!(floor.get(), Some(b(10)), "a refill never moves the floor");
    assert!(floor.refill_refusal(b(5)).is_none());
    // A head of another branch below the floor is refused by the gate, whatever its branch
    // claims: the proof of the chain through the floor holds another block there.
    let other = blk(3, 1);
    let chain = Proven::at(other);
    let res = run(send_on(&el, &mut floor, heads(other, b(2), b(1)), &chain));
    assert!(
        matches!(res, Err(GateError::Refused(ref why)) if why.contains("chain through the finality floor")),
        "{res:?}"
    );
    assert_eq!(el.sent().len(), 1, "nothing more was sent");
}

/// The floor applied to what the EL reports: an EL that holds another block at the floor's
/// height is a halt; one that lost its labels gets the floor's; a higher finalized raises it.
#[test]
fn reconcile_table() {
    let (el, mut floor, _) = setup(20, Some(blk(6, 1)));
    let res = run(floor.reconcile(el.as_ref(), heads(b(20), b(10), b(8)), false));
    assert!(matches!(res, Err(Fault::Halt(RunError::ElLeftFloor { number: 6, .. }))), "{res:?}");

    let (el, mut floor, _) = setup(20, Some(b(6)));
    let got = run(floor.reconcile(el.as_ref(), heads(b(20), b(0), b(0)), false)).expect("ok");
    assert_eq!(got, heads(b(20), b(6), b(6)), "an EL back from a crash keeps the floor's labels");

    let got = run(floor.reconcile(el.as_ref(), heads(b(20), b(12), b(9)), false)).expect("ok");
    assert_eq!(got, heads(b(20), b(12), b(9)));
    assert_eq!(floor.get(), Some(b(9)), "the EL's own higher finalized raises the floor");
}

/// The writer counts every send by origin and result, refusals included.
#[test]
fn forkchoices_are_counted_by_origin() {
    let cell = Arc::new(Mutex::new(Some(b(6))));
    let (store, at) = StateFile::memory(cell.clone());
    let el = FakeEl::new(20, cell);
    let metrics = Arc::new(Metrics::new(&[]).replica("r"));
    let mut fc = Forkchoice::new(el.clone(), ChainKind::Ethereum, at, Some(store), metrics.clone());
    run(fc.promote(b(20), &heads(b(20), b(10), b(8)), FcuVersion::V3)).expect("promote");
    let res = run(fc.promote(b(20), &heads(b(20), b(10), b(5)), FcuVersion::V3));
    assert!(matches!(res, Err(Fault::Gate(GateError::Refused(_)))), "{res:?}");
    let text = metrics.render();
    for want in [r#"origin="promote",result="sent"} 1"#, r#"origin="promote",result="refused"} 1"#]
    {
        assert!(
            text.lines()
                .any(|l| l.starts_with("lightcl_forkchoice_updates_total") && l.contains(want)),
            "{want} in\n{text}"
        );
    }
}
