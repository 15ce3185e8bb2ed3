//! Source block -> Engine API payload, with the checks of invariant I5: the header hashes to the
//! claimed hash, the transactions hash to the header's transactions root, and (Ethereum) the
//! withdrawals to its withdrawals root. Parent-hash continuity is checked where blocks are put in
//! order (the sync pipeline).
//!
//! Two inputs, one output. A raw block ([`raw`], `debug_getRawBlock`) is decoded down to its
//! header and its transactions as opaque EIP-2718 bytes; a JSON block ([`json`],
//! `eth_getBlockByNumber(n, true)`) is decoded into typed transactions and encoded back to the
//! same bytes. Both become a `Block<OpaqueTx>`, verified and turned into the payload by the same
//! code, so a transaction type lightcl does not know passes through the raw path untouched, and
//! whatever the JSON decoder accepts is held to the header's transactions root.

pub mod json;
pub mod raw;
pub mod requests;

use alloy_consensus::proofs::{calculate_transaction_root, calculate_withdrawals_root};
use alloy_consensus::{Block, EMPTY_OMMER_ROOT_HASH};
use alloy_eips::eip7685::{EMPTY_REQUESTS_HASH, Requests, RequestsOrHash};
use alloy_primitives::{B256, Bytes};
use alloy_rpc_types_engine::{
    ExecutionPayloadInputV2, ExecutionPayloadV1, ExecutionPayloadV2, ExecutionPayloadV3,
};
use op_alloy_rpc_types_engine::OpExecutionPayloadV4;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

pub use raw::OpaqueTx;

use crate::chain::BlockRef;
use crate::config::ChainKind;

/// engine_forkchoiceUpdated version that goes with a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FcuVersion {
    /// Pre-Shanghai (Ethereum only).
    V1,
    /// Shanghai / Canyon.
    V2,
    /// Cancun / Ecotone and later.
    V3,
}

impl FcuVersion {
    /// The method name.
    pub const fn method(self) -> &'static str {
        match self {
            Self::V1 => "engine_forkchoiceUpdatedV1",
            Self::V2 => "engine_forkchoiceUpdatedV2",
            Self::V3 => "engine_forkchoiceUpdatedV3",
        }
    }
}

/// A block as a source served it, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceBlock {
    /// `eth_getBlockBy*` with full transactions, as JSON text.
    Json(Box<str>),
    /// `debug_getRawBlock`: the block's RLP.
    Rlp(Bytes),
}

/// A block ready for engine_newPayload: the method and its params, and what we know of it.
#[derive(Debug, Clone)]
pub struct Payload {
    /// Height and (verified) hash.
    pub block: BlockRef,
    /// Parent hash.
    pub parent_hash: B256,
    /// Timestamp.
    pub timestamp: u64,
    /// Number of transactions.
    pub tx_count: usize,
    /// engine_newPayloadVn.
    pub method: &'static str,
    /// Its params, serialised once (the payload is sent as this text).
    pub params: Box<RawValue>,
    /// The forkchoiceUpdated version for a head at this block.
    pub fcu: FcuVersion,
    /// Whether its hash was claimed before it was checked (the hash a JSON block states, or the
    /// hash it was asked for by): `false` for a raw block asked for by number, which only the
    /// chain around it can vouch for.
    pub claimed: bool,
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        (self.block, self.parent_hash, self.timestamp, self.tx_count, self.method, self.fcu)
            == (
                other.block,
                other.parent_hash,
                other.timestamp,
                other.tx_count,
                other.method,
                other.fcu,
            )
            && self.claimed == other.claimed
            && self.params.get() == other.params.get()
    }
}

impl Payload {
    /// The params as a JSON tree (for tests and checks; the client sends the text).
    pub fn params_value(&self) -> Value {
        serde_json::from_str(self.params.get()).unwrap_or(Value::Null)
    }
}

/// A transaction of a JSON block that does not decode: which one, and where it stops.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "block {what}: transaction {index} (type {tx_type}) does not decode as a {kind} \
     transaction: field `{field}`: {message}; lightcl never needs to understand a \
     transaction, and raw blocks pass it through untouched: turn on the source's debug API \
     (debug_getRawBlock) and keep fetch = \"auto\" (or set \"raw\")"
)]
pub struct TxDecodeError {
    /// Which block.
    pub what: String,
    /// Chain kind.
    pub kind: ChainKind,
    /// Its index in the block.
    pub index: usize,
    /// Its `type` as the source wrote it.
    pub tx_type: String,
    /// The field the decoder stopped at (`type` for a type it does not know).
    pub field: String,
    /// Decoder message.
    pub message: String,
}

/// A verified Prague block whose execution requests are to be read from its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestsNeeded {
    /// Height.
    pub number: u64,
    /// Its (verified) hash.
    pub hash: B256,
    /// Its parent's hash.
    pub parent_hash: B256,
    /// The header's commitment.
    pub requests_hash: B256,
}

/// Why a source block cannot become a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The JSON does not decode as a block of this chain kind.
    #[error("block {what} does not decode as a {kind} block: {message}")]
    Decode {
        /// Which block (number or tag).
        what: String,
        /// Chain kind.
        kind: ChainKind,
        /// Decoder message.
        message: String,
    },
    /// One transaction of a JSON block does not decode.
    #[error(transparent)]
    Transaction(Box<TxDecodeError>),
    /// A raw block that is not valid RLP of a block.
    #[error("block {what}: the raw block (RLP) does not decode: {message}")]
    Rlp {
        /// Which block.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The header does not hash to the hash the source claims.
    #[error("block {number}: the header hashes to {computed}, but the source claims {claimed}")]
    HashMismatch {
        /// Height.
        number: u64,
        /// Claimed hash.
        claimed: B256,
        /// Recomputed hash.
        computed: B256,
    },
    /// The transactions do not hash to the header's transactions root.
    #[error(
        "block {number}: the transactions hash to root {computed}, but the header says {header}"
    )]
    TransactionsRootMismatch {
        /// Height.
        number: u64,
        /// Header's root.
        header: B256,
        /// Recomputed root.
        computed: B256,
    },
    /// The withdrawals do not hash to the header's withdrawals root.
    #[error(
        "block {number}: the withdrawals hash to root {computed}, but the header says {header}"
    )]
    WithdrawalsRootMismatch {
        /// Height.
        number: u64,
        /// Header's root.
        header: B256,
        /// Recomputed root.
        computed: B256,
    },
    /// The withdrawals list does not match what the header commits to (missing, or present
    /// where the header has none, or any on an OP chain).
    #[error("block {number}: {what}; every field sent to the EL must be committed by the header")]
    Withdrawals {
        /// Height.
        number: u64,
        /// What is wrong.
        what: &'static str,
    },
    /// Uncles, which no post-merge payload can carry.
    #[error("block {number}: it has uncles (or an ommers hash of a list that is not empty)")]
    Ommers {
        /// Height.
        number: u64,
    },
    /// A Prague block with execution requests, which no JSON-RPC method returns: they are to be
    /// rebuilt from the source's logs and storage ([`requests`]) and the block built again with
    /// them.
    #[error(
        "block {} carries execution requests (requestsHash {}), which JSON-RPC does not return: \
         they must be rebuilt from the source's logs and storage",
        .0.number, .0.requests_hash
    )]
    RequestsUnavailable(Box<RequestsNeeded>),
    /// The execution requests rebuilt from the source do not match the header's commitment.
    #[error("block {number}: {error}")]
    Requests {
        /// Height.
        number: u64,
        /// What is wrong.
        error: Box<requests::RequestsError>,
    },
    /// The payload could not be serialised (never expected).
    #[error("block {number}: its payload cannot be serialised: {message}")]
    Encode {
        /// Height.
        number: u64,
        /// Serialiser message.
        message: String,
    },
    /// A payload version this build does not send.
    #[error("block {number}: {what} payloads are not supported by this lightcl version")]
    Unsupported {
        /// Height.
        number: u64,
        /// What.
        what: &'static str,
    },
}

/// Builds the payload of a block as a source served it. `asked`: the hash the block was fetched
/// by, if it was (a raw block claims no hash of its own; it must hash to the one asked for).
pub fn from_source_block(
    kind: ChainKind,
    what: &str,
    asked: Option<B256>,
    block: &SourceBlock,
) -> Result<Payload, PayloadError> {
    with_requests(kind, what, asked, block, None)
}

/// The same, with the block's execution requests as rebuilt from the source (a Prague block
/// whose header commits to some: [`PayloadError::RequestsUnavailable`] without them). The list
/// is sent only if it hashes to the header's commitment.
pub fn with_requests(
    kind: ChainKind,
    what: &str,
    asked: Option<B256>,
    block: &SourceBlock,
    requests: Option<&RequestsOrHash>,
) -> Result<Payload, PayloadError> {
    match block {
        SourceBlock::Json(text) => {
            let (claimed, block, blob_hashes) = json::decode(kind, what, text)?;
            finish(kind, Some(claimed), &block, blob_hashes, requests)
        }
        SourceBlock::Rlp(bytes) => {
            let (block, blob_hashes) = raw::decode(kind, what, bytes)?;
            let p = finish(kind, asked, &block, blob_hashes, requests)?;
            Ok(Payload { claimed: asked.is_some(), ..p })
        }
    }
}

/// Builds the payload for a full block as `eth_getBlockByNumber(n, true)` returns it.
pub fn from_rpc_block(kind: ChainKind, what: &str, json: Value) -> Result<Payload, PayloadError> {
    from_rpc_block_str(kind, what, &json.to_string())
}

/// The same from the JSON text.
pub fn from_rpc_block_str(
    kind: ChainKind,
    what: &str,
    json: &str,
) -> Result<Payload, PayloadError> {
    let (claimed, block, blob_hashes) = json::decode(kind, what, json)?;
    finish(kind, Some(claimed), &block, blob_hashes, None)
}

/// Verifies `block` against `claimed` (or takes its own hash) and builds its payload.
fn finish(
    kind: ChainKind,
    claimed: Option<B256>,
    block: &Block<OpaqueTx>,
    blob_hashes: Vec<B256>,
    requests: Option<&RequestsOrHash>,
) -> Result<Payload, PayloadError> {
    let block_ref = verify(claimed, block, kind == ChainKind::Ethereum)?;
    match kind {
        ChainKind::Optimism => op_payload(block_ref, block),
        ChainKind::Ethereum => eth_payload(block_ref, block, blob_hashes, requests),
    }
}

/// Checks the header hash (against `claimed`, when there is a claim) and the roots, returning
/// (number, hash).
fn verify(
    claimed: Option<B256>,
    block: &Block<OpaqueTx>,
    check_withdrawals: bool,
) -> Result<BlockRef, PayloadError> {
    let number = block.header.number;
    let computed = block.header.hash_slow();
    if let Some(claimed) = claimed.filter(|c| *c != computed) {
        return Err(PayloadError::HashMismatch { number, claimed, computed });
    }
    let tx_root = calculate_transaction_root(&block.body.transactions);
    if tx_root != block.header.transactions_root {
        return Err(PayloadError::TransactionsRootMismatch {
            number,
            header: block.header.transactions_root,
            computed: tx_root,
        });
    }
    if !block.body.ommers.is_empty() || block.header.ommers_hash != EMPTY_OMMER_ROOT_HASH {
        return Err(PayloadError::Ommers { number });
    }
    let body = block.body.withdrawals.as_ref();
    if check_withdrawals {
        match (body, block.header.withdrawals_root) {
            (Some(ws), Some(root)) => {
                let computed = calculate_withdrawals_root(ws);
                if computed != root {
                    return Err(PayloadError::WithdrawalsRootMismatch {
                        number,
                        header: root,
                        computed,
                    });
                }
            }
            (None, Some(_)) => {
                return Err(PayloadError::Withdrawals {
                    number,
                    what: "the header has a withdrawals root but the block carries no withdrawals list",
                });
            }
            (Some(_), None) => {
                return Err(PayloadError::Withdrawals {
                    number,
                    what: "the block carries withdrawals but the header has no withdrawals root",
                });
            }
            (None, None) => {}
        }
    } else if body.is_some_and(|ws| !ws.is_empty()) {
        // OP chains have no withdrawals; their withdrawalsRoot (Isthmus) is a storage root.
        return Err(PayloadError::Withdrawals {
            number,
            what: "an OP block carries withdrawals, which OP chains never have",
        });
    }
    Ok(BlockRef::new(number, computed))
}

fn payload(
    block_ref: BlockRef,
    block: &Block<OpaqueTx>,
    method: &'static str,
    params: impl Serialize,
    fcu: FcuVersion,
) -> Result<Payload, PayloadError> {
    let h = &block.header;
    let params = serde_json::value::to_raw_value(&params)
        .map_err(|e| PayloadError::Encode { number: block_ref.number, message: e.to_string() })?;
    Ok(Payload {
        block: block_ref,
        parent_hash: h.parent_hash,
        timestamp: h.timestamp,
        tx_count: block.body.transactions.len(),
        method,
        params,
        fcu,
        claimed: true,
    })
}

/// The OP payload version follows the header: a withdrawals root and a requests hash (Isthmus)
/// -> V4 with the withdrawals root in the payload; a parent beacon root (Ecotone) -> V3; a
/// withdrawals root (Canyon) -> V2; none -> V1, sent through newPayloadV2 without withdrawals.
fn op_payload(block_ref: BlockRef, block: &Block<OpaqueTx>) -> Result<Payload, PayloadError> {
    let h = &block.header;
    let hash = block_ref.hash;
    let beacon_root = h.parent_beacon_block_root.unwrap_or_default();
    let no_hashes: [B256; 0] = [];
    let no_requests: [Bytes; 0] = [];
    match (h.withdrawals_root, h.parent_beacon_block_root) {
        (Some(root), Some(_)) if h.requests_hash.is_some() => {
            let p = OpExecutionPayloadV4::from_v3_with_withdrawals_root(
                ExecutionPayloadV3::from_block_unchecked(hash, block),
                root,
            );
            let params = (p, no_hashes, beacon_root, no_requests);
            payload(block_ref, block, "engine_newPayloadV4", params, FcuVersion::V3)
        }
        (Some(_), Some(_)) => {
            let p = ExecutionPayloadV3::from_block_unchecked(hash, block);
            let params = (p, no_hashes, beacon_root);
            payload(block_ref, block, "engine_newPayloadV3", params, FcuVersion::V3)
        }
        (Some(_), None) => {
            let p = ExecutionPayloadV2::from_block_unchecked(hash, block);
            payload(block_ref, block, "engine_newPayloadV2", [p], FcuVersion::V2)
        }
        (None, _) => {
            let p = ExecutionPayloadV1::from_block_unchecked(hash, block);
            let input = ExecutionPayloadInputV2 { execution_payload: p, withdrawals: None };
            payload(block_ref, block, "engine_newPayloadV2", [input], FcuVersion::V2)
        }
    }
}

/// The execution requests of a Cancun-shaped Ethereum block: `None` before Prague (no requests
/// hash: newPayloadV3), else what newPayloadV4 carries: the empty list for the empty
/// commitment; else the list rebuilt from the source, if it hashes to the commitment, or the
/// commitment itself (`send_requests_hash`, for a reth that accepts it in place of the list).
fn prague_requests(
    block_ref: BlockRef,
    parent_hash: B256,
    requests_hash: Option<B256>,
    requests: Option<&RequestsOrHash>,
) -> Result<Option<RequestsOrHash>, PayloadError> {
    let number = block_ref.number;
    match (requests_hash, requests) {
        (None, _) => Ok(None),
        (Some(h), _) if h == EMPTY_REQUESTS_HASH => {
            Ok(Some(RequestsOrHash::Requests(Requests::default())))
        }
        (Some(h), Some(r)) => {
            let rebuilt = r.requests_hash();
            if rebuilt != h {
                let error = requests::RequestsError::Commitment { rebuilt, header: h };
                return Err(PayloadError::Requests { number, error: Box::new(error) });
            }
            Ok(Some(r.clone()))
        }
        (Some(h), None) => Err(PayloadError::RequestsUnavailable(Box::new(RequestsNeeded {
            number,
            hash: block_ref.hash,
            parent_hash,
            requests_hash: h,
        }))),
    }
}

/// The Ethereum payload version follows the header: a block access list hash (Amsterdam) is not
/// supported; a parent beacon root -> V3 (V4 from Prague, with the blob versioned hashes of the
/// block's blob transactions); withdrawals -> V2; none -> V1.
fn eth_payload(
    block_ref: BlockRef,
    block: &Block<OpaqueTx>,
    blob_hashes: Vec<B256>,
    requests: Option<&RequestsOrHash>,
) -> Result<Payload, PayloadError> {
    let h = &block.header;
    let (hash, number) = (block_ref.hash, block_ref.number);
    if h.block_access_list_hash.is_some() {
        return Err(PayloadError::Unsupported { number, what: "Amsterdam (V4)" });
    }
    match h.parent_beacon_block_root {
        Some(beacon_root) => {
            let p = ExecutionPayloadV3::from_block_unchecked(hash, block);
            if let Some(requests) =
                prague_requests(block_ref, h.parent_hash, h.requests_hash, requests)?
            {
                let params = (p, blob_hashes, beacon_root, requests);
                payload(block_ref, block, "engine_newPayloadV4", params, FcuVersion::V3)
            } else {
                let params = (p, blob_hashes, beacon_root);
                payload(block_ref, block, "engine_newPayloadV3", params, FcuVersion::V3)
            }
        }
        None if block.body.withdrawals.is_some() => {
            let p = ExecutionPayloadV2::from_block_unchecked(hash, block);
            payload(block_ref, block, "engine_newPayloadV2", [p], FcuVersion::V2)
        }
        None => {
            let p = ExecutionPayloadV1::from_block_unchecked(hash, block);
            payload(block_ref, block, "engine_newPayloadV1", [p], FcuVersion::V1)
        }
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
