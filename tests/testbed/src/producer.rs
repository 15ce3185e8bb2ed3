//! A block producer that drives an EL through the Engine API, as a sequencer's CL would:
//! forkchoiceUpdated with payload attributes -> getPayload -> newPayload -> forkchoiceUpdated.

use std::collections::BTreeMap;
use std::time::Duration;

use alloy_primitives::{Address, B256, Bytes, U256, address, keccak256};
use serde_json::{Value, json};

use crate::genesis::{
    ChainKind, GAS_LIMIT, OP_EIP1559_DENOMINATOR, OP_EIP1559_ELASTICITY, TestAccount, test_accounts,
};
use crate::node::ElNode;
use crate::rpc::RpcClient;
use crate::txs::{TxAction, l1_info_deposit, signed_tx};
use crate::{BlockInfo, Error, now_secs, parse_hex_u64};

/// Fee recipient of produced blocks.
pub const FEE_RECIPIENT: Address = address!("0x000000000000000000000000000000000000fee5");

/// How many signed transactions of each kind go in a block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxMix {
    /// Value transfers between test accounts.
    pub transfers: usize,
    /// Calls to the counter contract.
    pub calls: usize,
}

impl TxMix {
    /// No user transactions (OP blocks still carry the L1-info deposit).
    pub const NONE: Self = Self { transfers: 0, calls: 0 };

    /// `transfers` transfers and `calls` contract calls per block.
    pub const fn new(transfers: usize, calls: usize) -> Self {
        Self { transfers, calls }
    }
}

/// A block the producer built, with everything needed to send it to another EL.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BuiltBlock {
    /// Height.
    pub number: u64,
    /// Hash.
    pub hash: B256,
    /// Parent hash.
    pub parent_hash: B256,
    /// The `executionPayload` object from getPayload.
    pub payload: Value,
    /// parentBeaconBlockRoot sent with the payload.
    pub beacon_root: B256,
    /// executionRequests (Prague; always empty on OP).
    pub requests: Value,
    /// Number of transactions (OP: including the deposit).
    pub tx_count: usize,
}

impl BuiltBlock {
    /// The params of `engine_newPayloadV4` for this block.
    pub fn new_payload_params(&self) -> Value {
        json!([self.payload, [], self.beacon_root, self.requests])
    }
}

/// A payload status as the EL reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadStatus {
    /// VALID, INVALID, SYNCING, ACCEPTED or INVALID_BLOCK_HASH.
    pub status: String,
    /// latestValidHash, when given.
    pub latest_valid_hash: Option<B256>,
    /// validationError, when given.
    pub validation_error: Option<String>,
}

impl PayloadStatus {
    fn from_json(v: &Value) -> Self {
        Self {
            status: v.get("status").and_then(Value::as_str).unwrap_or("").to_string(),
            latest_valid_hash: v
                .get("latestValidHash")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok()),
            validation_error: v.get("validationError").and_then(Value::as_str).map(str::to_string),
        }
    }

    /// Whether the status is VALID.
    pub fn is_valid(&self) -> bool {
        self.status == "VALID"
    }
}

/// Sends `engine_newPayloadV4` for `block`.
pub async fn new_payload(engine: &RpcClient, block: &BuiltBlock) -> Result<PayloadStatus, Error> {
    let v: Value = engine.call("engine_newPayloadV4", block.new_payload_params()).await?;
    Ok(PayloadStatus::from_json(&v))
}

/// Sends `engine_forkchoiceUpdatedV3` without attributes.
pub async fn forkchoice(
    engine: &RpcClient,
    head: B256,
    safe: B256,
    finalized: B256,
) -> Result<PayloadStatus, Error> {
    let state =
        json!({ "headBlockHash": head, "safeBlockHash": safe, "finalizedBlockHash": finalized });
    let v: Value = engine.call("engine_forkchoiceUpdatedV3", json!([state, null])).await?;
    Ok(PayloadStatus::from_json(v.get("payloadStatus").unwrap_or(&Value::Null)))
}

/// Sends every block with newPayload, in order, then a forkchoiceUpdated to the last one (safe
/// and finalized as given). Fails on the first answer that is not VALID.
pub async fn replay(
    node: &ElNode,
    blocks: &[BuiltBlock],
    safe: B256,
    finalized: B256,
) -> Result<(), Error> {
    for b in blocks {
        let status = new_payload(&node.engine, b).await?;
        if !status.is_valid() {
            return Err(Error::Status {
                method: format!("engine_newPayloadV4 (block {})", b.number),
                status: status.status,
                validation_error: status.validation_error,
            });
        }
    }
    if let Some(last) = blocks.last() {
        let status = forkchoice(&node.engine, last.hash, safe, finalized).await?;
        if !status.is_valid() {
            return Err(Error::Status {
                method: "engine_forkchoiceUpdatedV3".into(),
                status: status.status,
                validation_error: status.validation_error,
            });
        }
    }
    Ok(())
}

/// Builds blocks on one EL and keeps every block of its chain, so they can be replayed
/// elsewhere and rival branches can be built from any ancestor.
#[derive(Debug)]
pub struct Producer {
    kind: ChainKind,
    chain_id: u64,
    engine: RpcClient,
    rpc: RpcClient,
    genesis: BlockInfo,
    head: BlockInfo,
    safe: B256,
    finalized: B256,
    chain: BTreeMap<u64, BuiltBlock>,
    accounts: Vec<(TestAccount, u64)>,
    salt: u64,
    realtime: bool,
    next_recipient: usize,
    /// The L1 block OP blocks name as their origin (`None`: made up from the L2 number).
    l1_origin: Option<crate::txs::L1Origin>,
    /// Calls sent with the next block (Ethereum: through the pool).
    calls: Vec<(alloy_primitives::Address, Bytes, U256)>,
}

impl Producer {
    /// A producer for `node`, starting at the node's head; nonces read from the node.
    pub async fn new(node: &ElNode) -> Result<Self, Error> {
        let genesis = node.block_at(0).await?.ok_or_else(|| Error::Decode {
            method: "eth_getBlockByNumber".into(),
            message: "no genesis block".into(),
        })?;
        let head = node.head().await?;
        let mut accounts = Vec::new();
        for acct in test_accounts() {
            let n: String =
                node.rpc.call("eth_getTransactionCount", json!([acct.address, "latest"])).await?;
            accounts.push((acct, parse_hex_u64(&n)?));
        }
        Ok(Self {
            kind: node.kind(),
            chain_id: node.chain_id(),
            engine: RpcClient::new(node.auth_url(), Some(node.jwt_secret())),
            rpc: RpcClient::new(node.http_url(), None),
            genesis,
            head,
            safe: genesis.hash,
            finalized: genesis.hash,
            chain: BTreeMap::new(),
            accounts,
            salt: 0,
            realtime: false,
            next_recipient: 0,
            l1_origin: None,
            calls: Vec::new(),
        })
    }

    /// What [`Producer::resume`] needs to go on building this chain on a copy of its EL.
    pub(crate) fn record(&self) -> crate::chains::ProducerRecord {
        crate::chains::ProducerRecord {
            chain: self.chain.values().cloned().collect(),
            safe: self.safe,
            finalized: self.finalized,
            salt: self.salt,
            next_recipient: self.next_recipient,
        }
    }

    /// A producer for `node`, which holds the chain of `record` (a copy of the EL it was built
    /// on, at the same head): nonces and head read from the node, blocks and labels from the
    /// record.
    pub(crate) async fn resume(
        node: &ElNode,
        record: crate::chains::ProducerRecord,
    ) -> Result<Self, Error> {
        let mut p = Self::new(node).await?.with_salt(record.salt);
        let top = record.chain.last().map_or(0, |b| b.number);
        if p.head.number != top {
            return Err(Error::Spawn(format!(
                "the copied EL is at block {} after the refeed, not at the recorded {top}",
                p.head.number
            )));
        }
        p.chain = record.chain.into_iter().map(|b| (b.number, b)).collect();
        p.safe = record.safe;
        p.finalized = record.finalized;
        p.next_recipient = record.next_recipient;
        Ok(p)
    }

    /// Sets the salt that makes this producer's blocks differ from another's at the same height.
    pub fn with_salt(mut self, salt: u64) -> Self {
        self.salt = salt;
        self
    }

    /// Timestamps follow the wall clock (for a live devnet) instead of parent + 1.
    pub fn with_realtime(mut self, realtime: bool) -> Self {
        self.realtime = realtime;
        self
    }

    /// The L1 block the next OP blocks name as their origin (`None`: made up).
    pub fn set_l1_origin(&mut self, origin: Option<crate::txs::L1Origin>) {
        self.l1_origin = origin;
    }

    /// Sends a call of `to` with `data` (from the first test account) in the next block.
    pub fn call_in_next_block(&mut self, to: alloy_primitives::Address, data: Bytes) {
        self.calls.push((to, data, U256::ZERO));
    }

    /// Sends a call of `to` with `data` paying `value` (from the first test account) in the
    /// next block.
    pub fn paid_call_in_next_block(
        &mut self,
        to: alloy_primitives::Address,
        data: Bytes,
        value: U256,
    ) {
        self.calls.push((to, data, value));
    }

    /// The head block.
    pub fn head(&self) -> BlockInfo {
        self.head
    }

    /// The genesis block.
    pub fn genesis(&self) -> BlockInfo {
        self.genesis
    }

    /// The safe and finalized hashes last sent.
    pub fn labels(&self) -> (B256, B256) {
        (self.safe, self.finalized)
    }

    /// A block of this producer's chain by height (genesis excluded).
    pub fn block(&self, number: u64) -> Option<&BuiltBlock> {
        self.chain.get(&number)
    }

    /// The blocks of this producer's chain in `range` (inclusive), in order.
    pub fn blocks(&self, from: u64, to: u64) -> Vec<BuiltBlock> {
        if from > to {
            return Vec::new();
        }
        self.chain.range(from..=to).map(|(_, b)| b.clone()).collect()
    }

    /// The hash at `number` on this producer's chain (genesis included).
    pub fn hash_at(&self, number: u64) -> Option<B256> {
        if number == 0 { Some(self.genesis.hash) } else { self.chain.get(&number).map(|b| b.hash) }
    }

    fn user_txs(&mut self, mix: TxMix) -> Result<Vec<Bytes>, Error> {
        let mut out = Vec::new();
        let n = self.accounts.len();
        for i in 0..mix.transfers + mix.calls {
            let sender = (self.next_recipient + i) % n;
            let action = if i < mix.transfers {
                TxAction::Transfer(self.accounts[(sender + 1) % n].0.address)
            } else {
                TxAction::CounterCall
            };
            let (acct, nonce) = &mut self.accounts[sender];
            out.push(signed_tx(self.chain_id, acct, *nonce, action)?);
            *nonce += 1;
        }
        self.next_recipient = (self.next_recipient + 1) % n;
        for (to, data, value) in std::mem::take(&mut self.calls) {
            let (acct, nonce) = &mut self.accounts[0];
            out.push(if value.is_zero() {
                crate::txs::signed_call(self.chain_id, acct, *nonce, to, data)?
            } else {
                crate::txs::signed_paid_call(self.chain_id, acct, *nonce, to, value, data)?
            });
            *nonce += 1;
        }
        Ok(out)
    }

    /// Builds one block on the head with `mix` transactions, makes it the EL's head, and
    /// returns it.
    pub async fn build(&mut self, mix: TxMix) -> Result<BuiltBlock, Error> {
        let number = self.head.number + 1;
        let timestamp = if self.realtime {
            (self.head.timestamp + 1).max(now_secs())
        } else {
            self.head.timestamp + 1
        };
        let seed = [number.to_be_bytes(), self.salt.to_be_bytes()].concat();
        let prev_randao = keccak256([b"randao".as_slice(), &seed].concat());
        let beacon_root = keccak256([b"beacon".as_slice(), &seed].concat());
        let user_txs = self.user_txs(mix)?;
        let waits_for_pool = self.kind == ChainKind::Ethereum && !user_txs.is_empty();

        let mut attrs = json!({
            "timestamp": format!("{timestamp:#x}"),
            "prevRandao": prev_randao,
            "suggestedFeeRecipient": FEE_RECIPIENT,
            "withdrawals": [],
            "parentBeaconBlockRoot": beacon_root,
        });
        match self.kind {
            ChainKind::Optimism => {
                let mut txs = vec![l1_info_deposit(number, timestamp, self.salt, self.l1_origin)];
                txs.extend(user_txs);
                let mut eip1559 = OP_EIP1559_DENOMINATOR.to_be_bytes().to_vec();
                eip1559.extend_from_slice(&OP_EIP1559_ELASTICITY.to_be_bytes());
                attrs["transactions"] = json!(txs);
                attrs["noTxPool"] = json!(true);
                attrs["gasLimit"] = json!(format!("{GAS_LIMIT:#x}"));
                attrs["eip1559Params"] = json!(Bytes::from(eip1559));
                attrs["minBaseFee"] = json!(0u64); // op-geth decodes a JSON number here, not a hex quantity
            }
            ChainKind::Ethereum => {
                for tx in &user_txs {
                    let _hash: B256 = self.rpc.call("eth_sendRawTransaction", json!([tx])).await?;
                }
            }
        }
        let state = json!({
            "headBlockHash": self.head.hash,
            "safeBlockHash": self.safe,
            "finalizedBlockHash": self.finalized,
        });
        let res: Value =
            self.engine.call("engine_forkchoiceUpdatedV3", json!([state, attrs])).await?;
        let payload_id = res.get("payloadId").and_then(Value::as_str).ok_or_else(|| {
            let status = PayloadStatus::from_json(res.get("payloadStatus").unwrap_or(&Value::Null));
            Error::Status {
                method: "engine_forkchoiceUpdatedV3 (with attributes, no payloadId)".into(),
                status: status.status,
                validation_error: status.validation_error,
            }
        })?;
        if waits_for_pool {
            // geth and reth fill the block from their pool in the background (a few ms for the
            // handful of transactions sent); getPayload stops that.
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let mut env: Value = self.engine.call("engine_getPayloadV4", json!([payload_id])).await?;
        let payload = env.get_mut("executionPayload").map(Value::take).unwrap_or(Value::Null);
        let requests = env.get_mut("executionRequests").map(Value::take).unwrap_or(json!([]));
        let requests = if requests.is_null() { json!([]) } else { requests };
        let field = |name: &str| -> Result<B256, Error> {
            payload.get(name).and_then(Value::as_str).and_then(|s| s.parse().ok()).ok_or_else(
                || Error::Decode {
                    method: "engine_getPayloadV4".into(),
                    message: format!("no {name}"),
                },
            )
        };
        let block = BuiltBlock {
            number,
            hash: field("blockHash")?,
            parent_hash: field("parentHash")?,
            tx_count: payload.get("transactions").and_then(Value::as_array).map_or(0, Vec::len),
            payload,
            beacon_root,
            requests,
        };
        let status = new_payload(&self.engine, &block).await?;
        if !status.is_valid() {
            return Err(Error::Status {
                method: format!("engine_newPayloadV4 (own block {number})"),
                status: status.status,
                validation_error: status.validation_error,
            });
        }
        let status = forkchoice(&self.engine, block.hash, self.safe, self.finalized).await?;
        if !status.is_valid() {
            return Err(Error::Status {
                method: "engine_forkchoiceUpdatedV3 (new head)".into(),
                status: status.status,
                validation_error: status.validation_error,
            });
        }
        self.head =
            BlockInfo { number, hash: block.hash, parent_hash: block.parent_hash, timestamp };
        self.chain.insert(number, block.clone());
        Ok(block)
    }

    /// Builds `n` blocks with `mix` transactions each.
    pub async fn build_many(&mut self, n: u64, mix: TxMix) -> Result<(), Error> {
        for _ in 0..n {
            self.build(mix).await?;
        }
        Ok(())
    }

    /// Sets the EL's safe and finalized labels to the blocks at these heights of this chain.
    pub async fn set_labels(&mut self, safe: u64, finalized: u64) -> Result<PayloadStatus, Error> {
        let lookup = |n: u64| {
            self.hash_at(n).ok_or_else(|| {
                Error::Spawn(format!(
                    "no block {n} on this producer's chain (head {})",
                    self.head.number
                ))
            })
        };
        let (safe, finalized) = (lookup(safe)?, lookup(finalized)?);
        let status = forkchoice(&self.engine, self.head.hash, safe, finalized).await?;
        if status.is_valid() {
            self.safe = safe;
            self.finalized = finalized;
        }
        Ok(status)
    }

    /// Replays this chain's blocks 1..=`ancestor` into `node` (a fresh EL of the same genesis)
    /// and returns a producer there whose head is `ancestor`: what it builds next is a rival
    /// branch forking after `ancestor`. `salt` makes its blocks differ from this producer's.
    pub async fn fork_onto(
        &self,
        node: &ElNode,
        ancestor: u64,
        salt: u64,
    ) -> Result<Producer, Error> {
        let prefix = self.blocks(1, ancestor);
        let labels_at = |h: B256| {
            if prefix.iter().any(|b| b.hash == h) { h } else { self.genesis.hash }
        };
        let (safe, finalized) = (labels_at(self.safe), labels_at(self.finalized));
        replay(node, &prefix, safe, finalized).await?;
        let mut fork = Producer::new(node).await?.with_salt(salt).with_realtime(self.realtime);
        if fork.head.number != ancestor {
            return Err(Error::Spawn(format!(
                "fork node head is {} after replaying to {ancestor}",
                fork.head.number
            )));
        }
        fork.chain = prefix.into_iter().map(|b| (b.number, b)).collect();
        fork.safe = safe;
        fork.finalized = finalized;
        Ok(fork)
    }
}
