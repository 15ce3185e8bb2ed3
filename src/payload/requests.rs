//! Rebuilding a Prague block's execution requests (EIP-7685) from what a JSON-RPC source
//! serves, since no method returns the list itself (pure; the reads are the caller's).
//!
//! - Deposits (EIP-6110, type 0): the `DepositEvent` logs of the chain's deposit contract in the
//!   block's receipts, in log order, each turned into its 192 request bytes.
//! - Withdrawal requests (EIP-7002, type 1) and consolidation requests (EIP-7251, type 2): the
//!   system contracts keep a queue in storage and, at the end of every block, a system call
//!   takes up to 16 (withdrawals) or 2 (consolidations) from its head. The requests taken are the
//!   queue as it stood at the parent block (its head and tail indices and its first entries,
//!   from `eth_getStorageAt` at the parent) followed by the requests added during the block,
//!   which the contracts log (an anonymous log of exactly the request's bytes) as they queue
//!   them.
//!
//! The header's `requestsHash` proves the result: [`Rebuilt::check`] compares the commitment,
//! so a source that tampers with a log or a storage answer is caught before the EL sees the
//! payload. Storage is read by the parent's hash (EIP-1898), never its number. Prague's three
//! request types only: blocks of later forks with more types fail the commitment (safely).

use alloy_eips::eip6110::DEPOSIT_REQUEST_TYPE;
use alloy_eips::eip7002::{
    MAX_WITHDRAWAL_REQUESTS_PER_BLOCK, WITHDRAWAL_REQUEST_PREDEPLOY_ADDRESS,
    WITHDRAWAL_REQUEST_TYPE,
};
use alloy_eips::eip7251::{
    CONSOLIDATION_REQUEST_PREDEPLOY_ADDRESS, CONSOLIDATION_REQUEST_TYPE,
    MAX_CONSOLIDATION_REQUESTS_PER_BLOCK,
};
use alloy_eips::eip7685::Requests;
use alloy_primitives::{Address, B256, Bytes, U256, b256};

/// `DepositEvent(bytes,bytes,bytes,bytes,bytes)`'s topic.
pub const DEPOSIT_EVENT_TOPIC: B256 =
    b256!("0x649bbc62d0e31342afea4e5cd82d4049e7e1ee912fc0889aa790803be39038c5");
/// A deposit log's data: five ABI-encoded byte strings.
const DEPOSIT_LOG_LEN: usize = 576;
/// A deposit request: pubkey 48, withdrawal credentials 32, amount 8, signature 96, index 8.
const DEPOSIT_REQUEST_LEN: usize = 192;

/// The queue slots of both system contracts (EIP-7002, EIP-7251).
const QUEUE_HEAD_SLOT: u64 = 2;
const QUEUE_TAIL_SLOT: u64 = 3;
const QUEUE_STORAGE_OFFSET: u64 = 4;

/// What a log is to the rebuild: who emitted it, its topics, its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The emitting contract.
    pub address: Address,
    /// Its topics.
    pub topics: Vec<B256>,
    /// Its data.
    pub data: Bytes,
}

/// Why a block's requests could not be rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestsError {
    /// A deposit log of the wrong length.
    #[error("a DepositEvent log has {len} bytes of data, not {DEPOSIT_LOG_LEN}")]
    DepositLog {
        /// Its length.
        len: usize,
    },
    /// A queued request log of the wrong length.
    #[error("the {queue} contract logged {len} bytes for a request, not {want}")]
    QueueLog {
        /// Which queue.
        queue: &'static str,
        /// Its length.
        len: usize,
        /// The request's size.
        want: usize,
    },
    /// The storage answers do not describe a queue (tail before head, entries missing).
    #[error("the {queue} queue's storage is inconsistent: {what}")]
    QueueStorage {
        /// Which queue.
        queue: &'static str,
        /// What is wrong.
        what: String,
    },
    /// The rebuilt requests do not hash to the header's commitment.
    #[error("the rebuilt execution requests hash to {rebuilt}, but the header commits to {header}")]
    Commitment {
        /// What was rebuilt.
        rebuilt: B256,
        /// What the header says.
        header: B256,
    },
}

/// A system contract's request queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// EIP-7002 withdrawal requests.
    Withdrawals,
    /// EIP-7251 consolidation requests.
    Consolidations,
}

impl Queue {
    /// Both, in request-type order.
    pub const ALL: [Queue; 2] = [Queue::Withdrawals, Queue::Consolidations];

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Withdrawals => "withdrawal request",
            Self::Consolidations => "consolidation request",
        }
    }

    /// The contract.
    pub fn address(self) -> Address {
        match self {
            Self::Withdrawals => WITHDRAWAL_REQUEST_PREDEPLOY_ADDRESS,
            Self::Consolidations => CONSOLIDATION_REQUEST_PREDEPLOY_ADDRESS,
        }
    }

    /// The request type.
    pub fn request_type(self) -> u8 {
        match self {
            Self::Withdrawals => WITHDRAWAL_REQUEST_TYPE,
            Self::Consolidations => CONSOLIDATION_REQUEST_TYPE,
        }
    }

    /// Most requests taken per block.
    pub fn max_per_block(self) -> usize {
        match self {
            Self::Withdrawals => MAX_WITHDRAWAL_REQUESTS_PER_BLOCK,
            Self::Consolidations => MAX_CONSOLIDATION_REQUESTS_PER_BLOCK,
        }
    }

    /// A request's bytes: source address 20, validator pubkey 48, amount 8 (withdrawals);
    /// source address 20, source pubkey 48, target pubkey 48 (consolidations).
    pub fn request_len(self) -> usize {
        match self {
            Self::Withdrawals => 76,
            Self::Consolidations => 116,
        }
    }

    /// Storage slots per queued request.
    pub fn slots_per_request(self) -> u64 {
        match self {
            Self::Withdrawals => 3,
            Self::Consolidations => 4,
        }
    }

    /// The head and tail index slots, read first at the parent block.
    pub fn index_slots() -> [U256; 2] {
        [U256::from(QUEUE_HEAD_SLOT), U256::from(QUEUE_TAIL_SLOT)]
    }

    /// How many of the parent's queued requests a block takes (the queue's length, at most the
    /// per-block limit); none when the tail is below the head.
    fn queued(self, head: U256, tail: U256) -> usize {
        let len = tail.checked_sub(head).unwrap_or_default();
        usize::try_from(len).unwrap_or(usize::MAX).min(self.max_per_block())
    }

    /// The slots of the queue entries a block can take, given the parent's head and tail
    /// (storage words): the first `max_per_block` entries from the head (fewer when the queue
    /// is shorter). Computed modulo 2^256, as the contract does, so no answer can overflow.
    pub fn entry_slots(self, head: U256, tail: U256) -> Vec<U256> {
        let per = U256::from(self.slots_per_request());
        (0..self.queued(head, tail))
            .flat_map(|i| {
                let index = head.wrapping_add(U256::from(i));
                let first = U256::from(QUEUE_STORAGE_OFFSET).wrapping_add(index.wrapping_mul(per));
                (0..self.slots_per_request()).map(move |k| first.wrapping_add(U256::from(k)))
            })
            .collect()
    }

    /// A queued request's bytes from its storage slots, as the contract's system call returns
    /// them: the address right-aligned in the first slot, then the rest packed left-aligned as
    /// the caller sent it, except a withdrawal's amount, which the call returns little-endian
    /// (it was sent, stored and logged big-endian).
    fn entry(self, slots: &[B256]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.request_len());
        out.extend_from_slice(&slots[0][12..]);
        match self {
            Self::Withdrawals => {
                out.extend_from_slice(slots[1].as_slice());
                out.extend_from_slice(&slots[2][..16]);
                out.extend(slots[2][16..24].iter().rev());
            }
            Self::Consolidations => {
                out.extend_from_slice(slots[1].as_slice());
                out.extend_from_slice(slots[2].as_slice());
                out.extend_from_slice(slots[3].as_slice());
            }
        }
        out
    }

    /// A queued request's bytes from the contract's log of it (the caller and its calldata),
    /// in the system call's form (a withdrawal's amount little-endian).
    fn logged(self, data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        if self == Self::Withdrawals {
            out[68..76].reverse();
        }
        out
    }

    /// The requests the block's system call took: the parent's queue (`head`, `tail`, and the
    /// storage at [`Self::entry_slots`], in that order) followed by the requests the block's
    /// receipts show the contract queueing, up to the per-block limit.
    pub fn taken(
        self,
        head: U256,
        tail: U256,
        entry_storage: &[B256],
        logs: &[LogEntry],
    ) -> Result<Vec<u8>, RequestsError> {
        if tail < head {
            return Err(RequestsError::QueueStorage {
                queue: self.name(),
                what: format!("tail index {tail} below head index {head}"),
            });
        }
        let per = self.slots_per_request() as usize;
        let queued = self.queued(head, tail);
        if entry_storage.len() != queued * per {
            return Err(RequestsError::QueueStorage {
                queue: self.name(),
                what: format!("{} slots given for {queued} queued requests", entry_storage.len()),
            });
        }
        let mut out = Vec::new();
        for entry in entry_storage.chunks_exact(per) {
            out.extend(self.entry(entry));
        }
        // The block's own requests queue behind the parent's; the system call takes what fits.
        let room = self.max_per_block() - queued;
        let added = logs.iter().filter(|l| l.address == self.address() && l.topics.is_empty());
        for log in added.take(room) {
            if log.data.len() != self.request_len() {
                return Err(RequestsError::QueueLog {
                    queue: self.name(),
                    len: log.data.len(),
                    want: self.request_len(),
                });
            }
            out.extend_from_slice(&self.logged(&log.data));
        }
        Ok(out)
    }
}

/// The deposit requests of a block: its logs (of successful transactions, in order) that the
/// deposit contract emitted as `DepositEvent`.
pub fn deposits(contract: Address, logs: &[LogEntry]) -> Result<Vec<u8>, RequestsError> {
    let mut out = Vec::new();
    for log in logs {
        if log.address != contract || log.topics.first() != Some(&DEPOSIT_EVENT_TOPIC) {
            continue;
        }
        out.extend(deposit_request(&log.data)?);
    }
    Ok(out)
}

/// One `DepositEvent`'s request bytes. The event's five byte strings sit at fixed places (the
/// contract always emits the same layout; ELs read them there).
fn deposit_request(data: &[u8]) -> Result<[u8; DEPOSIT_REQUEST_LEN], RequestsError> {
    if data.len() != DEPOSIT_LOG_LEN {
        return Err(RequestsError::DepositLog { len: data.len() });
    }
    let mut r = [0u8; DEPOSIT_REQUEST_LEN];
    // (place in the log after the offsets and the field's length word, place in the request,
    // length): pubkey, withdrawal credentials, amount, signature, index.
    for (from, to, len) in [(192, 0, 48), (288, 48, 32), (352, 80, 8), (416, 88, 96), (544, 184, 8)]
    {
        r[to..to + len].copy_from_slice(&data[from..from + len]);
    }
    Ok(r)
}

/// A system contract's queue as it stood at the parent block: its head and tail indices and the
/// storage words at [`Queue::entry_slots`] (in that order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueAtParent {
    /// The head index (slot 2).
    pub head: U256,
    /// The tail index (slot 3).
    pub tail: U256,
    /// The storage of the entries the block could take.
    pub entries: Vec<B256>,
}

impl QueueAtParent {
    /// Whether requests were waiting in it.
    pub fn is_empty(&self) -> bool {
        self.tail <= self.head
    }
}

/// A block's execution requests from its logs and, when given, the two queues at its parent
/// ([`Queue::ALL`] order), checked against the header's `requests_hash`. Without the queues,
/// they are taken as empty at the parent (the common case: then the block's logs alone decide,
/// and the commitment says whether that was right).
pub fn rebuild(
    deposit_contract: Address,
    requests_hash: B256,
    logs: &[LogEntry],
    queues: Option<&[QueueAtParent; 2]>,
) -> Result<Requests, RequestsError> {
    let empty = QueueAtParent::default();
    let d = deposits(deposit_contract, logs)?;
    let mut taken = [Vec::new(), Vec::new()];
    for (k, q) in Queue::ALL.into_iter().enumerate() {
        let at = queues.map_or(&empty, |qs| &qs[k]);
        taken[k] = q.taken(at.head, at.tail, &at.entries, logs)?;
    }
    let [w, c] = taken;
    Rebuilt::new(d, w, c).check(requests_hash)
}

/// A block's rebuilt requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt(pub Requests);

impl Rebuilt {
    /// The list from the three request kinds' bytes (a kind without requests is left out, as
    /// EIP-7685 says).
    pub fn new(deposits: Vec<u8>, withdrawals: Vec<u8>, consolidations: Vec<u8>) -> Self {
        let mut r = Requests::default();
        for (ty, data) in [
            (DEPOSIT_REQUEST_TYPE, deposits),
            (WITHDRAWAL_REQUEST_TYPE, withdrawals),
            (CONSOLIDATION_REQUEST_TYPE, consolidations),
        ] {
            if !data.is_empty() {
                r.push_request_with_type(ty, data);
            }
        }
        Self(r)
    }

    /// The list, if it is the one the header commits to.
    pub fn check(self, requests_hash: B256) -> Result<Requests, RequestsError> {
        let rebuilt = self.0.requests_hash();
        if rebuilt == requests_hash {
            Ok(self.0)
        } else {
            Err(RequestsError::Commitment { rebuilt, header: requests_hash })
        }
    }
}

#[cfg(test)]
mod tests {
    use alloy_eips::eip6110::MAINNET_DEPOSIT_CONTRACT_ADDRESS;
    use alloy_eips::eip7685::EMPTY_REQUESTS_HASH;

    use super::*;

    /// A DepositEvent's data as the deposit contract encodes it.
    fn deposit_log(pubkey: u8, wc: u8, amount: u64, sig: u8, index: u64) -> Bytes {
        let mut d = Vec::new();
        for off in [160u64, 256, 320, 384, 512] {
            d.extend_from_slice(&U256::from(off).to_be_bytes::<32>());
        }
        let field = |d: &mut Vec<u8>, bytes: &[u8]| {
            d.extend_from_slice(&U256::from(bytes.len()).to_be_bytes::<32>());
            d.extend_from_slice(bytes);
            d.resize(d.len().div_ceil(32) * 32, 0);
        };
        field(&mut d, &[pubkey; 48]);
        field(&mut d, &[wc; 32]);
        field(&mut d, &amount.to_le_bytes());
        field(&mut d, &[sig; 96]);
        field(&mut d, &index.to_le_bytes());
        d.into()
    }

    fn log(address: Address, topics: Vec<B256>, data: Bytes) -> LogEntry {
        LogEntry { address, topics, data }
    }

    #[test]
    fn deposits_come_from_the_contracts_deposit_events_in_order() {
        let c = MAINNET_DEPOSIT_CONTRACT_ADDRESS;
        let logs = [
            log(c, vec![DEPOSIT_EVENT_TOPIC], deposit_log(1, 2, 32_000_000_000, 3, 7)),
            // Another contract's event of the same shape, and another event of the contract.
            log(Address::repeat_byte(9), vec![DEPOSIT_EVENT_TOPIC], deposit_log(9, 9, 9, 9, 9)),
            log(c, vec![B256::repeat_byte(1)], deposit_log(9, 9, 9, 9, 9)),
            log(c, vec![DEPOSIT_EVENT_TOPIC], deposit_log(4, 5, 1, 6, 8)),
        ];
        let d = deposits(c, &logs).expect("deposits");
        assert_eq!(d.len(), 2 * DEPOSIT_REQUEST_LEN);
        let first = &d[..DEPOSIT_REQUEST_LEN];
        assert_eq!(&first[..48], &[1; 48]);
        assert_eq!(&first[48..80], &[2; 32]);
        assert_eq!(&first[80..88], &32_000_000_000u64.to_le_bytes());
        assert_eq!(&first[88..184], &[3; 96]);
        assert_eq!(&first[184..], &7u64.to_le_bytes());
        assert_eq!(&d[DEPOSIT_REQUEST_LEN + 184..], &8u64.to_le_bytes());
        let short = [log(c, vec![DEPOSIT_EVENT_TOPIC], Bytes::from(vec![0u8; 575]))];
        assert_eq!(deposits(c, &short), Err(RequestsError::DepositLog { len: 575 }));
    }

    /// A withdrawal request as the contract logs and stores it (caller ++ calldata: the amount
    /// big-endian).
    fn withdrawal(n: u8) -> Vec<u8> {
        let mut r = vec![n; 20];
        r.extend([n.wrapping_add(100); 48]);
        r.extend((u64::from(n) << 8 | 1).to_be_bytes());
        r
    }

    /// The same request as the system call returns it (the amount little-endian).
    fn taken_form(n: u8) -> Vec<u8> {
        let mut r = withdrawal(n);
        r[68..].reverse();
        r
    }

    /// The storage slots the contract writes for `request` (as `add` stores it).
    fn slots_of(q: Queue, request: &[u8]) -> Vec<B256> {
        let mut slots = vec![B256::left_padding_from(&request[..20])];
        let mut rest = request[20..].to_vec();
        rest.resize(32 * (q.slots_per_request() as usize - 1), 0);
        slots.extend(rest.chunks(32).map(B256::from_slice));
        slots
    }

    #[test]
    fn a_queue_gives_the_parents_entries_then_the_blocks_new_ones_up_to_the_limit() {
        let q = Queue::Withdrawals;
        // 10 queued at the parent (indices 5..15), 10 added in the block: 16 are taken.
        let parent: Vec<Vec<u8>> = (0..10).map(withdrawal).collect();
        let storage: Vec<B256> = parent.iter().flat_map(|r| slots_of(q, r)).collect();
        let w = |n: u64| U256::from(n);
        assert_eq!(q.entry_slots(w(5), w(15)).len(), storage.len());
        assert_eq!(q.entry_slots(w(5), w(15))[0], U256::from(4 + 5 * 3));
        let added: Vec<LogEntry> =
            (10..20).map(|n| log(q.address(), vec![], withdrawal(n).into())).collect();
        let taken = q.taken(w(5), w(15), &storage, &added).expect("taken");
        let want: Vec<u8> = (0..16).flat_map(taken_form).collect();
        assert_eq!(taken, want);
        // A queue longer than the limit: only the first 16 entries are read and taken.
        assert_eq!(q.entry_slots(w(0), w(40)).len(), 16 * 3);
        // Hostile answers: huge indices wrap as the contract's 256-bit arithmetic does, no panic.
        assert_eq!(q.entry_slots(U256::MAX - w(1), U256::MAX).len(), 3);
        assert_eq!(q.entry_slots(w(0), U256::MAX).len(), 16 * 3);
        // An empty parent queue: the block's own requests.
        let taken = q.taken(w(7), w(7), &[], &added[..2]).expect("taken");
        assert_eq!(taken, [taken_form(10), taken_form(11)].concat());
        // Inconsistent storage answers are refused.
        assert!(q.taken(w(9), w(3), &[], &[]).is_err());
        assert!(q.taken(w(0), w(2), &storage[..3], &[]).is_err());
        let bad = [log(q.address(), vec![], Bytes::from(vec![0u8; 75]))];
        assert!(matches!(q.taken(w(0), w(0), &[], &bad), Err(RequestsError::QueueLog { .. })));
    }

    #[test]
    fn consolidations_are_two_per_block_from_four_slots_each() {
        let q = Queue::Consolidations;
        let c = |n: u8| {
            let mut r = vec![n; 20];
            r.extend([n + 1; 48]);
            r.extend([n + 2; 48]);
            r
        };
        let storage: Vec<B256> = [c(1), c(4), c(7)].iter().flat_map(|r| slots_of(q, r)).collect();
        let w = |n: u64| U256::from(n);
        assert_eq!(q.entry_slots(w(0), w(3)).len(), 8, "two entries of four slots");
        let taken = q.taken(w(0), w(3), &storage[..8], &[]).expect("taken");
        assert_eq!(taken, [c(1), c(4)].concat());
    }

    #[test]
    fn the_commitment_decides() {
        assert_eq!(Rebuilt::new(vec![], vec![], vec![]).0.requests_hash(), EMPTY_REQUESTS_HASH);
        let r = Rebuilt::new(vec![], withdrawal(1), vec![]);
        let hash = r.0.requests_hash();
        assert_ne!(hash, EMPTY_REQUESTS_HASH);
        // EIP-7685: sha256 over the sha256 of each non-empty (type ++ data).
        use sha2::Digest;
        let inner = sha2::Sha256::digest([&[1u8][..], &withdrawal(1)].concat());
        let outer = sha2::Sha256::digest(inner);
        assert_eq!(hash.as_slice(), &outer[..]);
        assert!(r.clone().check(hash).is_ok());
        assert!(matches!(r.check(EMPTY_REQUESTS_HASH), Err(RequestsError::Commitment { .. })));
    }

    /// A real mainnet fixture: the header (hash-checked), the logs of the request contracts as
    /// a node served them, and the list the header commits to.
    fn mainnet(name: &str) -> (alloy_consensus::Header, Vec<LogEntry>, Vec<Bytes>) {
        let path = format!("{}/testdata/requests/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).expect("fixture");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        let header: alloy_consensus::Header =
            serde_json::from_value(v["header"].clone()).expect("header");
        let hash: B256 = serde_json::from_value(v["header"]["hash"].clone()).expect("hash");
        assert_eq!(header.hash_slow(), hash, "{name}: the header is the block's");
        let logs = v["logs"]
            .as_array()
            .map(|ls| {
                ls.iter()
                    .map(|l| LogEntry {
                        address: serde_json::from_value(l["address"].clone()).expect("address"),
                        topics: serde_json::from_value(l["topics"].clone()).expect("topics"),
                        data: serde_json::from_value(l["data"].clone()).expect("data"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let requests = serde_json::from_value(v["requests"].clone()).expect("requests");
        (header, logs, requests)
    }

    #[test]
    fn real_mainnet_blocks_rebuild_to_their_commitment() {
        // Block 23182607: a consolidation request made and taken in the block (its logs alone).
        let (h, logs, want) = mainnet("mainnet-23182607.json");
        let committed = h.requests_hash.expect("a Prague header");
        let r = rebuild(MAINNET_DEPOSIT_CONTRACT_ADDRESS, committed, &logs, None).expect("rebuilt");
        assert_eq!(r.clone().take(), want);
        // Taken as queued at the parent instead, it is another list: refused.
        let queued = [
            QueueAtParent::default(),
            QueueAtParent {
                head: U256::from(7),
                tail: U256::from(8),
                entries: vec![B256::repeat_byte(3); 4],
            },
        ];
        assert!(matches!(
            rebuild(MAINNET_DEPOSIT_CONTRACT_ADDRESS, committed, &logs, Some(&queued)),
            Err(RequestsError::Commitment { .. })
        ));
        // A changed byte of the log, or the log missing (a lagging log index), is refused.
        let mut bad = logs.clone();
        let mut d = bad[0].data.to_vec();
        d[40] ^= 1;
        bad[0].data = d.into();
        assert!(rebuild(MAINNET_DEPOSIT_CONTRACT_ADDRESS, committed, &bad, None).is_err());
        assert!(rebuild(MAINNET_DEPOSIT_CONTRACT_ADDRESS, committed, &[], None).is_err());

        // Block 22489590: two consolidations, known from its beacon block (no public receipts):
        // the commitment of the real list.
        let (h, logs, want) = mainnet("mainnet-22489590.json");
        assert!(logs.is_empty());
        let list = Requests::new(want);
        assert_eq!(Rebuilt(list.clone()).check(h.requests_hash.expect("Prague")), Ok(list));
    }
}
