//! The simulation: lightcl's real follower loop (`lightcl::run_with`) against a simulated EL and
//! simulated sources, in one process, on a paused tokio clock, so that thousands of seeded
//! adversarial histories run in seconds and any failing seed replays exactly.
//!
//! - [`World`]: every block that exists (real Ethereum-shaped blocks whose headers hash and
//!   whose withdrawals root match, so lightcl's verification runs for real), the honest chain
//!   and what it has ever called safe and finalized.
//! - [`el::SimEl`]: an EL with the behaviour profiles of docs/engines.md (geth, op-geth, reth);
//!   it reports every write lightcl makes to the checkers before applying it.
//! - [`check`]: the invariant checkers, one per family: every write that breaks I1-I5 (or
//!   rewinds needlessly, rolls back below finality, comes after a halt), the lockstep rule of a
//!   fleet, and the liveness judgement at a history's end.
//! - [`source::SimSource`]: sources that are honest, lag, flap between branches, serve a sibling
//!   or a tampered block, lie about labels, fail at a rate, are slow, or down.
//! - [`history`]: seeded random histories, judged for liveness at their end.
//! - [`l1`]: the simulated L1 under a quarter of the histories: every block then carries an L1
//!   attributes deposit naming its origin, L1 finalizes and reorgs (the L2 chain with it), and
//!   settles an anchor; the checker fails any label that moves past a failed origin check in
//!   `enforce`.
//! - [`fleet`]: fleet histories, one lightcl driving several replica ELs.

pub mod check;
pub mod el;
pub mod fleet;
pub mod history;
pub mod l1;
pub mod requests;
pub mod source;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use alloy_consensus::proofs::calculate_withdrawals_root;
use alloy_eips::eip4895::Withdrawal;
use alloy_eips::eip7685::EMPTY_REQUESTS_HASH;
use alloy_primitives::{Address, B256, Bytes};
use lightcl::chain::BlockRef;

/// A small deterministic generator (splitmix64): the whole simulation is a function of a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo { lo } else { lo + self.next_u64() % (hi - lo + 1) }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// One of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// One block of the simulated world.
#[derive(Debug)]
pub struct SimBlock {
    /// Height and hash.
    pub id: BlockRef,
    /// Parent hash.
    pub parent: B256,
    /// Its full JSON-RPC form (`eth_getBlockByNumber(n, true)`).
    pub json: Arc<str>,
    /// Its RLP (`debug_getRawBlock`).
    pub rlp: Bytes,
    /// Its withdrawals (what a payload must carry).
    pub withdrawals: Vec<Withdrawal>,
    /// Its state root.
    pub state_root: B256,
    /// Its withdrawals root (read as the message passer's storage root, as after Isthmus).
    pub withdrawals_root: B256,
    /// Its logs, its execution requests and the request queue it leaves (empty unless the
    /// world makes requests).
    pub requests: requests::BlockRequests,
}

impl SimBlock {
    /// Its logs of the request contracts.
    pub fn logs(&self) -> &[lightcl::payload::requests::LogEntry] {
        &self.requests.logs
    }

    /// The storage word of `contract` at `slot` after this block (only the withdrawal-request
    /// queue holds anything).
    pub fn storage(&self, contract: Address, slot: alloy_primitives::U256) -> B256 {
        if contract == requests::WITHDRAWAL_QUEUE {
            self.requests.queue.word(slot)
        } else {
            B256::ZERO
        }
    }

    /// What its output root is made of.
    pub fn output_parts(&self) -> lightcl::chain::output::OutputParts {
        lightcl::chain::output::OutputParts {
            block: self.id,
            state_root: self.state_root,
            message_passer_root: self.withdrawals_root,
        }
    }
}

/// The block as `eth_getBlockByNumber(n, true)` returns it, written directly (the generic
/// serialiser is slow in unoptimised test builds, and this runs for every simulated block).
fn block_json(h: &alloy_consensus::Header, hash: B256, w: &Withdrawal) -> String {
    let z = B256::ZERO;
    format!(
        concat!(
            r#"{{"hash":"{hash}","parentHash":"{parent}","sha3Uncles":"{ommers}","miner":"{miner}","#,
            r#""stateRoot":"{state}","transactionsRoot":"{txroot}","receiptsRoot":"{rroot}","#,
            r#""logsBloom":"{bloom}","difficulty":"{diff:#x}","number":"{number:#x}","gasLimit":"{gl:#x}","#,
            r#""gasUsed":"0x0","timestamp":"{ts:#x}","extraData":"{extra}","mixHash":"{mix}","#,
            r#""nonce":"{nonce}","baseFeePerGas":"0x7","withdrawalsRoot":"{wroot}","#,
            r#""blobGasUsed":"0x0","excessBlobGas":"0x0","parentBeaconBlockRoot":"{z}","#,
            r#""requestsHash":"{reqs}","uncles":[],"transactions":[],"#,
            r#""withdrawals":[{{"index":"{wi:#x}","validatorIndex":"{wv:#x}","address":"{wa}","amount":"{wm:#x}"}}]}}"#
        ),
        hash = hash,
        parent = h.parent_hash,
        ommers = h.ommers_hash,
        miner = h.beneficiary,
        z = z,
        txroot = h.transactions_root,
        state = h.state_root,
        rroot = h.receipts_root,
        diff = h.difficulty,
        mix = h.mix_hash,
        nonce = h.nonce,
        bloom = h.logs_bloom,
        number = h.number,
        gl = h.gas_limit,
        ts = h.timestamp,
        extra = h.extra_data,
        wroot = h.withdrawals_root.unwrap_or_default(),
        reqs = h.requests_hash.unwrap_or_default(),
        wi = w.index,
        wv = w.validator_index,
        wa = w.address,
        wm = w.amount,
    )
}

/// A chain: block hashes by height, from genesis.
pub type Chain = Vec<B256>;

/// Every block, the honest chain and its label history.
#[derive(Debug, Default)]
pub struct World {
    blocks: HashMap<B256, Arc<SimBlock>>,
    /// The chain honest sources serve now.
    pub honest: Chain,
    /// Its safe height.
    pub safe: u64,
    /// Its finalized height.
    pub finalized: u64,
    /// Blocks that were ever on the honest chain.
    pub ever_honest: HashSet<B256>,
    /// Blocks the honest chain ever called safe (or below safe).
    pub ever_safe: HashSet<B256>,
    /// Blocks the honest chain ever called finalized (or below).
    pub ever_final: HashSet<B256>,
    /// A second branch for flapping sources and siblings (forks off the honest chain).
    pub rival: Chain,
    /// The rival branch's safe and finalized heights (what it said when it was honest).
    pub rival_labels: (u64, u64),
    foreign: Chain,
    next_salt: u64,
    /// Blocks served by the sources since the EL last received a payload: an upper bound on
    /// what lightcl buffers (it also counts blocks lightcl fetched and dropped).
    pub in_flight: i64,
    /// The most `in_flight` ever was.
    pub max_in_flight: i64,
    /// How often each block was served by the sources, by hash.
    pub served: HashMap<B256, u32>,
    /// The L1 the chain is built on (histories that verify against L1).
    pub l1: Option<L1Chain>,
    /// Each block's L1 origin (with an L1).
    pub origins: HashMap<B256, BlockRef>,
    /// A branch from genesis whose blocks name L1 origins L1 never had (with an L1).
    pub false_chain: Chain,
    making_false: bool,
    /// Blocks carry execution requests (deposits, withdrawal requests queued across blocks).
    pub with_requests: bool,
}

/// L2 blocks per L1 block: block `n`'s origin is L1's block `n / L2_PER_L1`.
pub const L2_PER_L1: u64 = 3;
/// How far L1's finalized block trails its tip.
pub const L1_FINALITY_DEPTH: u64 = 3;
/// The anchor (the settled output root) is at heights that are multiples of this.
pub const ANCHOR_EVERY: u64 = 16;

/// The simulated L1: its canonical chain, what it finalized, and the root it settled.
#[derive(Debug, Default)]
pub struct L1Chain {
    /// Canonical block hashes by height.
    pub chain: Vec<B256>,
    /// Its finalized height.
    pub finalized: u64,
    /// Every block ever on its chain.
    pub ever: HashSet<B256>,
    /// lightcl runs in `enforce`: the checker holds every label to its origin.
    pub enforce: bool,
    /// The settled anchor: L2 height and output root.
    pub anchor: Option<(u64, B256)>,
    salt: u64,
}

impl L1Chain {
    fn push(&mut self) {
        let n = self.chain.len() as u64;
        let h = alloy_primitives::keccak256([n.to_be_bytes(), self.salt.to_be_bytes()].concat());
        self.chain.push(h);
        self.ever.insert(h);
        self.finalized = self.finalized.max(n.saturating_sub(L1_FINALITY_DEPTH));
    }

    /// L1's block at `n`.
    pub fn at(&self, n: u64) -> Option<BlockRef> {
        self.chain.get(n as usize).map(|h| BlockRef::new(n, *h))
    }
}

/// The world, shared by the simulated EL and sources.
pub type SharedWorld = Arc<Mutex<World>>;

/// Locks the world (a poisoned lock is still usable: the test fails on its own).
pub fn lock(w: &SharedWorld) -> MutexGuard<'_, World> {
    w.lock().unwrap_or_else(|p| p.into_inner())
}

impl World {
    /// A world with a genesis block and an honest chain of `len` blocks above it.
    pub fn new(len: u64) -> Self {
        let mut w = Self::default();
        let genesis = w.make_block(B256::ZERO, 0);
        w.honest = vec![genesis];
        w.grow(len);
        w.rival = w.honest.clone();
        w.rival_labels = (w.safe, w.finalized);
        w
    }

    /// A world like [`Self::new`] whose blocks carry execution requests.
    pub fn with_requests(len: u64) -> Self {
        let mut w = Self { with_requests: true, ..Self::default() };
        let genesis = w.make_block(B256::ZERO, 0);
        w.honest = vec![genesis];
        w.grow(len);
        w.rival = w.honest.clone();
        w.rival_labels = (w.safe, w.finalized);
        w
    }

    /// A world like [`Self::new`] whose blocks are built on a simulated L1 (each carries the L1
    /// attributes deposit naming its origin); `enforce`: the checker holds labels to origins.
    pub fn with_l1(len: u64, enforce: bool) -> Self {
        let mut w = Self { l1: Some(L1Chain { enforce, ..L1Chain::default() }), ..Self::default() };
        let genesis = w.make_block(B256::ZERO, 0);
        w.honest = vec![genesis];
        w.grow(len);
        w.rival = w.honest.clone();
        w.rival_labels = (w.safe, w.finalized);
        w.making_false = true;
        let genesis_chain = vec![genesis];
        w.false_chain = w.branch(&genesis_chain, 0, len);
        w.making_false = false;
        w
    }

    /// The origin `make_block` gives block `number` (L1 grows to hold it); a made-up L1 block
    /// while building the false chain.
    fn origin_for(&mut self, number: u64, salt: u64) -> Option<BlockRef> {
        let making_false = self.making_false;
        let l1 = self.l1.as_mut()?;
        let n = number / L2_PER_L1;
        while l1.chain.len() as u64 <= n {
            l1.push();
        }
        if making_false {
            let fake = alloy_primitives::keccak256(
                [n.to_be_bytes(), salt.to_be_bytes(), [0xfa; 8]].concat(),
            );
            return Some(BlockRef::new(n, fake));
        }
        l1.at(n)
    }

    /// Reorgs L1 above its finalized block (new blocks there), and the L2 chain from the first
    /// block whose origin it dropped.
    pub fn l1_reorg(&mut self) {
        let Some(l1) = self.l1.as_mut() else { return };
        let keep = l1.finalized;
        let top = l1.chain.len() as u64 - 1;
        l1.chain.truncate(keep as usize + 1);
        l1.salt += 1;
        for _ in keep..top {
            l1.push();
        }
        // The L2 blocks built on dropped L1 blocks go too.
        let first_dropped = (keep + 1) * L2_PER_L1;
        let tip = (self.honest.len() - 1) as u64;
        if first_dropped <= tip {
            self.reorg(tip - first_dropped + 1);
        }
    }

    /// The L1 origin of block `hash`, if it was built on the simulated L1.
    pub fn origin(&self, hash: &B256) -> Option<BlockRef> {
        self.origins.get(hash).copied()
    }

    /// A block by hash.
    pub fn block(&self, hash: &B256) -> Option<&Arc<SimBlock>> {
        self.blocks.get(hash)
    }

    /// The honest chain's tip.
    pub fn tip(&self) -> BlockRef {
        self.at(&self.honest, (self.honest.len() - 1) as u64)
            .unwrap_or(BlockRef::new(0, B256::ZERO))
    }

    /// `chain`'s block at `n`.
    pub fn at(&self, chain: &Chain, n: u64) -> Option<BlockRef> {
        chain.get(n as usize).map(|h| BlockRef::new(n, *h))
    }

    /// Builds a block on `parent` (height from the parent); `salt` makes siblings differ.
    fn make_block(&mut self, parent: B256, salt: u64) -> B256 {
        let number = self.blocks.get(&parent).map_or(0, |p| p.id.number + 1);
        let ws = vec![Withdrawal {
            index: number,
            validator_index: salt,
            address: Address::with_last_byte(1),
            amount: number + 1,
        }];
        let origin = self.origin_for(number, salt);
        let reqs = match self.blocks.get(&parent) {
            Some(p) if self.with_requests => requests::make(number, salt, &p.requests.queue),
            _ => requests::BlockRequests { hash: EMPTY_REQUESTS_HASH, ..Default::default() },
        };
        let txs: Vec<lightcl::payload::OpaqueTx> = origin
            .map(|o| {
                let data = lightcl::l1::info::jovian_calldata(o, number, 1_000 + number * 2);
                let tx = lightcl::l1::info::l1_info_deposit(data, B256::with_last_byte(1));
                lightcl::payload::OpaqueTx::new(tx).expect("a typed transaction")
            })
            .into_iter()
            .collect();
        let header = alloy_consensus::Header {
            transactions_root: alloy_consensus::proofs::calculate_transaction_root(&txs),
            parent_hash: parent,
            number,
            gas_limit: 30_000_000,
            timestamp: 1_000 + number * 2,
            extra_data: Bytes::from(salt.to_be_bytes().to_vec()),
            base_fee_per_gas: Some(7),
            withdrawals_root: Some(calculate_withdrawals_root(&ws)),
            blob_gas_used: Some(0),
            excess_blob_gas: Some(0),
            parent_beacon_block_root: Some(B256::ZERO),
            requests_hash: Some(reqs.hash),
            ..Default::default()
        };
        let hash = header.hash_slow();
        let json = block_json(&header, hash, &ws[0]);
        let (state_root, withdrawals_root) =
            (header.state_root, header.withdrawals_root.unwrap_or_default());
        let rlp = lightcl::payload::raw::encode(&alloy_consensus::Block {
            header,
            body: alloy_consensus::BlockBody {
                transactions: txs,
                ommers: Vec::new(),
                withdrawals: Some(ws.clone().into()),
            },
        });
        let block = SimBlock {
            id: BlockRef::new(number, hash),
            parent,
            json: json.into(),
            rlp,
            withdrawals: ws,
            state_root,
            withdrawals_root,
            requests: reqs,
        };
        self.blocks.insert(hash, Arc::new(block));
        if let Some(o) = origin {
            self.origins.insert(hash, o);
        }
        hash
    }

    fn salt(&mut self) -> u64 {
        self.next_salt += 1;
        self.next_salt
    }

    /// `base` up to height `keep`, then `extra` new blocks.
    pub fn branch(&mut self, base: &Chain, keep: u64, extra: u64) -> Chain {
        let mut c: Chain = base[..=(keep as usize).min(base.len() - 1)].to_vec();
        let salt = self.salt();
        for _ in 0..extra {
            let parent = c[c.len() - 1];
            c.push(self.make_block(parent, salt));
        }
        c
    }

    /// Length of the chain of another genesis (built on demand).
    pub fn foreign_len(&self) -> u64 {
        self.foreign.len() as u64
    }

    /// Extends the chain of another genesis (its blocks link to nothing the honest chain has)
    /// by `n` blocks.
    pub fn extend_foreign(&mut self, n: u64) {
        if self.foreign.is_empty() {
            let g = self.make_block(B256::repeat_byte(0xf0), 1_000_000);
            self.foreign.push(g);
        }
        for _ in 0..n {
            let parent = self.foreign[self.foreign.len() - 1];
            let b = self.make_block(parent, 1_000_000);
            self.foreign.push(b);
        }
    }

    /// The foreign chain's block at `n`.
    pub fn foreign_at(&self, n: u64) -> Option<B256> {
        self.foreign.get(n as usize).copied()
    }

    /// Grows the honest chain by `n` blocks and moves its labels (safe 4 below the tip,
    /// finalized 12 below).
    pub fn grow(&mut self, n: u64) {
        let honest = self.honest.clone();
        let keep = (honest.len() - 1) as u64;
        self.honest = self.branch(&honest, keep, n);
        let tip = (self.honest.len() - 1) as u64;
        self.set_labels(tip.saturating_sub(4), tip.saturating_sub(12));
        if self.l1.is_some() && self.false_chain.len() > 1 {
            self.making_false = true;
            let f = self.false_chain.clone();
            self.false_chain = self.branch(&f, (f.len() - 1) as u64, n);
            self.making_false = false;
        }
    }

    /// Sets the honest labels (they never move back) and records them.
    pub fn set_labels(&mut self, safe: u64, finalized: u64) {
        self.safe = self.safe.max(safe);
        self.finalized = self.finalized.max(finalized).min(self.safe);
        // L1 settles the output root of finalized blocks at every ANCHOR_EVERY height.
        let anchor = self.finalized / ANCHOR_EVERY * ANCHOR_EVERY;
        if anchor > 0
            && let Some(root) = self.honest.get(anchor as usize).and_then(|h| self.blocks.get(h))
        {
            let root = root.output_parts().root();
            if let Some(l1) = self.l1.as_mut() {
                l1.anchor = Some((anchor, root));
            }
        }
        for (i, h) in self.honest.iter().enumerate() {
            self.ever_honest.insert(*h);
            if i as u64 <= self.safe {
                self.ever_safe.insert(*h);
            }
            if i as u64 <= self.finalized {
                self.ever_final.insert(*h);
            }
        }
    }

    /// Reorgs the honest chain `depth` blocks deep (never below its finalized block) and
    /// makes the old branch the rival.
    pub fn reorg(&mut self, depth: u64) {
        let tip = (self.honest.len() - 1) as u64;
        let keep = tip.saturating_sub(depth).max(self.finalized);
        let old = self.honest.clone();
        self.honest = self.branch(&old, keep, tip - keep + 1);
        self.rival = old;
        self.rival_labels = (self.safe, self.finalized);
        self.safe = self.safe.min(keep);
        let (s, f) = (self.safe, self.finalized);
        self.set_labels(s, f);
    }

    /// Reorgs the honest chain below its finalized block (the one history where halting is
    /// right): a finalized divergence.
    pub fn reorg_below_finality(&mut self, keep: u64) {
        let tip = (self.honest.len() - 1) as u64;
        let old = self.honest.clone();
        self.honest = self.branch(&old, keep, tip - keep + 2);
        self.rival = old;
        self.rival_labels = (self.safe, self.finalized);
        self.safe = keep;
        self.finalized = keep;
        let t = (self.honest.len() - 1) as u64;
        self.set_labels(t.saturating_sub(4), t.saturating_sub(12));
    }

    /// Whether `descendant` has `ancestor` on its parent chain (or is it).
    pub fn descends(&self, descendant: BlockRef, ancestor: BlockRef) -> bool {
        if ancestor.number > descendant.number {
            return false;
        }
        let mut cur = descendant.hash;
        loop {
            let Some(b) = self.blocks.get(&cur) else { return false };
            if b.id.number == ancestor.number {
                return b.id.hash == ancestor.hash;
            }
            cur = b.parent;
        }
    }
}
