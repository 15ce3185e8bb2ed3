//! Source block (JSON-RPC, full transactions) -> Engine API payload, with the checks of
//! invariant I5: the header hashes to the claimed hash, the transactions hash to the header's
//! transactions root, and (Ethereum) the withdrawals to its withdrawals root. Parent-hash
//! continuity is checked where blocks are put in order (the sync pipeline).

use alloy_consensus::Block;
use alloy_consensus::proofs::{calculate_transaction_root, calculate_withdrawals_root};
use alloy_eips::eip7685::EMPTY_REQUESTS_HASH;
use alloy_primitives::B256;
use alloy_rpc_types_engine::{ExecutionPayload, ExecutionPayloadInputV2};
use op_alloy_rpc_types_engine::{OpExecutionData, OpExecutionPayload};
use serde_json::{Value, json};

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

/// A block ready for engine_newPayload: the method and its params, and what we know of it.
#[derive(Debug, Clone, PartialEq)]
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
    /// Its params.
    pub params: Value,
    /// The forkchoiceUpdated version for a head at this block.
    pub fcu: FcuVersion,
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
    /// A Prague block with execution requests, which eth_getBlockByNumber does not return.
    #[error(
        "block {number} carries execution requests (requestsHash {requests_hash}), which JSON-RPC \
         does not return, so its payload cannot be rebuilt"
    )]
    RequestsUnavailable {
        /// Height.
        number: u64,
        /// The header's requests hash.
        requests_hash: B256,
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

fn decode_err(what: &str, kind: ChainKind, e: impl std::fmt::Display) -> PayloadError {
    PayloadError::Decode { what: what.to_string(), kind, message: e.to_string() }
}

/// Checks the header hash and the roots, returning (number, hash).
fn verify<T: alloy_eips::eip2718::Encodable2718>(
    claimed: B256,
    block: &Block<T>,
    check_withdrawals: bool,
) -> Result<BlockRef, PayloadError> {
    let number = block.header.number;
    let computed = block.header.hash_slow();
    if computed != claimed {
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
    if check_withdrawals
        && let (Some(ws), Some(root)) = (&block.body.withdrawals, block.header.withdrawals_root)
    {
        let computed = calculate_withdrawals_root(ws);
        if computed != root {
            return Err(PayloadError::WithdrawalsRootMismatch { number, header: root, computed });
        }
    }
    Ok(BlockRef::new(number, computed))
}

/// Builds the payload for a full block as `eth_getBlockByNumber(n, true)` returns it.
pub fn from_rpc_block(kind: ChainKind, what: &str, json: Value) -> Result<Payload, PayloadError> {
    match kind {
        ChainKind::Optimism => op_payload(what, json),
        ChainKind::Ethereum => eth_payload(what, json),
    }
}

fn op_payload(what: &str, json: Value) -> Result<Payload, PayloadError> {
    let kind = ChainKind::Optimism;
    let rpc: alloy_rpc_types_eth::Block<op_alloy_rpc_types::Transaction> =
        serde_json::from_value(json).map_err(|e| decode_err(what, kind, e))?;
    let claimed = rpc.header.hash;
    let block = rpc.into_consensus().map_transactions(|t| t.inner.into_inner());
    // On OP (Isthmus) the withdrawals root is the message passer's storage root, not a root of
    // the (always empty) withdrawals list.
    let block_ref = verify(claimed, &block, false)?;
    let header = &block.header;
    let (parent_hash, timestamp, tx_count) =
        (header.parent_hash, header.timestamp, block.body.transactions.len());
    let beacon_root = header.parent_beacon_block_root.unwrap_or_default();
    let data = OpExecutionData::from_block_unchecked(block_ref.hash, &block);
    let (method, params, fcu) = match data.payload {
        OpExecutionPayload::V1(p) => (
            "engine_newPayloadV2",
            json!([ExecutionPayloadInputV2 { execution_payload: p, withdrawals: None }]),
            FcuVersion::V2,
        ),
        OpExecutionPayload::V2(p) => ("engine_newPayloadV2", json!([p]), FcuVersion::V2),
        OpExecutionPayload::V3(p) => {
            ("engine_newPayloadV3", json!([p, Vec::<B256>::new(), beacon_root]), FcuVersion::V3)
        }
        OpExecutionPayload::V4(p) => (
            "engine_newPayloadV4",
            json!([p, Vec::<B256>::new(), beacon_root, Vec::<Value>::new()]),
            FcuVersion::V3,
        ),
    };
    Ok(Payload { block: block_ref, parent_hash, timestamp, tx_count, method, params, fcu })
}

fn eth_payload(what: &str, json: Value) -> Result<Payload, PayloadError> {
    let kind = ChainKind::Ethereum;
    let rpc: alloy_rpc_types_eth::Block =
        serde_json::from_value(json).map_err(|e| decode_err(what, kind, e))?;
    let claimed = rpc.header.hash;
    let block = rpc.into_consensus().map_transactions(|t| t.inner.into_inner());
    let block_ref = verify(claimed, &block, true)?;
    let header = &block.header;
    let number = block_ref.number;
    let (parent_hash, timestamp, tx_count) =
        (header.parent_hash, header.timestamp, block.body.transactions.len());
    let beacon_root = header.parent_beacon_block_root.unwrap_or_default();
    let requests_hash = header.requests_hash;
    let (payload, sidecar) = ExecutionPayload::from_block_unchecked(block_ref.hash, &block);
    let hashes: Vec<B256> = sidecar.versioned_hashes().cloned().unwrap_or_default();
    let (method, params, fcu) = match payload {
        ExecutionPayload::V1(p) => ("engine_newPayloadV1", json!([p]), FcuVersion::V1),
        ExecutionPayload::V2(p) => ("engine_newPayloadV2", json!([p]), FcuVersion::V2),
        ExecutionPayload::V3(p) => match requests_hash {
            None => ("engine_newPayloadV3", json!([p, hashes, beacon_root]), FcuVersion::V3),
            Some(h) if h == EMPTY_REQUESTS_HASH => (
                "engine_newPayloadV4",
                json!([p, hashes, beacon_root, Vec::<Value>::new()]),
                FcuVersion::V3,
            ),
            Some(h) => return Err(PayloadError::RequestsUnavailable { number, requests_hash: h }),
        },
        ExecutionPayload::V4(_) => {
            return Err(PayloadError::Unsupported { number, what: "Amsterdam (V4)" });
        }
    };
    Ok(Payload { block: block_ref, parent_hash, timestamp, tx_count, method, params, fcu })
}
