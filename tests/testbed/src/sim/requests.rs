//! Execution requests in the simulated world: Prague blocks with deposits and withdrawal
//! requests, some queued across blocks, described here from the EIPs on their own (not with
//! lightcl's rebuild) so that the checker compares lightcl's list with an independent truth.

use alloy_eips::eip7685::Requests;
use alloy_primitives::{Address, B256, Bytes, U256};
use lightcl::payload::requests::{DEPOSIT_EVENT_TOPIC, LogEntry};

/// The deposit contract of the simulated chain (mainnet's, lightcl's default).
pub const DEPOSIT_CONTRACT: Address = alloy_eips::eip6110::MAINNET_DEPOSIT_CONTRACT_ADDRESS;
/// EIP-7002's queue contract.
pub const WITHDRAWAL_QUEUE: Address = alloy_eips::eip7002::WITHDRAWAL_REQUEST_PREDEPLOY_ADDRESS;
/// Requests the system call takes per block (EIP-7002).
const MAX_PER_BLOCK: usize = 16;

/// One withdrawal request waiting in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    source: Address,
    pubkey: [u8; 48],
    amount: u64,
}

/// The withdrawal-request queue after a block: the index of its head and what waits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueState {
    head: u64,
    waiting: Vec<Waiting>,
}

impl QueueState {
    /// The contract's storage word at `slot` (EIP-7002: head at 2, tail at 3, three slots per
    /// entry from 4: the address right-aligned, the first 32 bytes of the key, then its last
    /// 16 and the amount big-endian).
    pub fn word(&self, slot: U256) -> B256 {
        let tail = self.head + self.waiting.len() as u64;
        let Ok(slot) = u64::try_from(slot) else { return B256::ZERO };
        let mut w = [0u8; 32];
        match slot {
            2 => w[24..].copy_from_slice(&self.head.to_be_bytes()),
            3 => w[24..].copy_from_slice(&tail.to_be_bytes()),
            4.. => {
                let (index, k) = ((slot - 4) / 3, (slot - 4) % 3);
                let Some(e) =
                    index.checked_sub(self.head).and_then(|i| self.waiting.get(i as usize))
                else {
                    return B256::ZERO;
                };
                match k {
                    0 => w[12..].copy_from_slice(e.source.as_slice()),
                    1 => w.copy_from_slice(&e.pubkey[..32]),
                    _ => {
                        w[..16].copy_from_slice(&e.pubkey[32..]);
                        w[16..24].copy_from_slice(&e.amount.to_be_bytes());
                    }
                }
            }
            _ => {}
        }
        B256::from(w)
    }
}

/// What a block carries: its logs, its requests (each type-prefixed, as newPayloadV4 takes
/// them) and the queue it leaves.
#[derive(Debug, Clone, Default)]
pub struct BlockRequests {
    /// Logs of the deposit contract and the queue contract, in order.
    pub logs: Vec<LogEntry>,
    /// The requests list.
    pub requests: Vec<Bytes>,
    /// The header's commitment.
    pub hash: B256,
    /// The queue after it.
    pub queue: QueueState,
}

/// The requests of block `number` (on a parent whose queue is `parent`); `salt` makes siblings
/// differ. About one block in four has deposits; every seventh adds 20 withdrawal requests
/// (more than a block takes: some wait for the next blocks), some add one.
pub fn make(number: u64, salt: u64, parent: &QueueState) -> BlockRequests {
    let mut logs = Vec::new();
    let mut deposits = Vec::new();
    let seed = (number.wrapping_mul(31) ^ salt) as u8;
    let n_deposits = if number % 4 == 1 { 1 + (salt % 2) as usize } else { 0 };
    for k in 0..n_deposits {
        let b = seed.wrapping_add(k as u8);
        let (pubkey, creds, sig) = ([b; 48], [b ^ 0x11; 32], [b ^ 0x22; 96]);
        let (amount, index) = (32_000_000_000 + u64::from(b), number * 4 + k as u64);
        logs.push(LogEntry {
            address: DEPOSIT_CONTRACT,
            topics: vec![DEPOSIT_EVENT_TOPIC],
            data: crate::genesis::deposit_event_data(&pubkey, &creds, amount, &sig, index),
        });
        deposits.extend_from_slice(&pubkey);
        deposits.extend_from_slice(&creds);
        deposits.extend_from_slice(&amount.to_le_bytes());
        deposits.extend_from_slice(&sig);
        deposits.extend_from_slice(&index.to_le_bytes());
    }
    let n_new = match number % 7 {
        3 => 20,
        5 => 1,
        _ => 0,
    };
    let mut queue = parent.waiting.clone();
    for k in 0..n_new {
        let e = Waiting {
            source: Address::with_last_byte(seed.wrapping_add(k)),
            pubkey: [seed ^ k; 48],
            amount: u64::from(k) + number,
        };
        // The contract logs the caller and the calldata as sent (amount big-endian).
        let data = [e.source.as_slice(), &e.pubkey, &e.amount.to_be_bytes()].concat();
        logs.push(LogEntry { address: WITHDRAWAL_QUEUE, topics: Vec::new(), data: data.into() });
        queue.push(e);
    }
    let take = queue.len().min(MAX_PER_BLOCK);
    let mut withdrawals = Vec::new();
    for e in &queue[..take] {
        // The system call returns the amount little-endian.
        withdrawals.extend_from_slice(e.source.as_slice());
        withdrawals.extend_from_slice(&e.pubkey);
        withdrawals.extend_from_slice(&e.amount.to_le_bytes());
    }
    let mut r = Requests::default();
    for (ty, data) in [(0u8, deposits), (1u8, withdrawals)] {
        if !data.is_empty() {
            r.push_request_with_type(ty, data);
        }
    }
    let after = QueueState { head: parent.head + take as u64, waiting: queue[take..].to_vec() };
    BlockRequests { logs, hash: r.requests_hash(), requests: r.take(), queue: after }
}
