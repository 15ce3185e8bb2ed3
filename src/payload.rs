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
    /// The withdrawals list does not match what the header commits to (missing, or present
    /// where the header has none, or any on an OP chain).
    #[error("block {number}: {what}; every field sent to the EL must be committed by the header")]
    Withdrawals {
        /// Height.
        number: u64,
        /// What is wrong.
        what: &'static str,
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

/// Builds the payload for a full block as `eth_getBlockByNumber(n, true)` returns it.
pub fn from_rpc_block(kind: ChainKind, what: &str, json: Value) -> Result<Payload, PayloadError> {
    from_rpc_block_str(kind, what, &json.to_string())
}

/// The same from the JSON text (decoded straight into typed blocks, no intermediate tree).
pub fn from_rpc_block_str(
    kind: ChainKind,
    what: &str,
    json: &str,
) -> Result<Payload, PayloadError> {
    match kind {
        ChainKind::Optimism => op_payload(what, json),
        ChainKind::Ethereum => eth_payload(what, json),
    }
}

fn op_payload(what: &str, json: &str) -> Result<Payload, PayloadError> {
    let kind = ChainKind::Optimism;
    let rpc: alloy_rpc_types_eth::Block<op_alloy_rpc_types::Transaction> =
        serde_json::from_str(json).map_err(|e| decode_err(what, kind, e))?;
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

/// Whether a Cancun-shaped Ethereum block goes to newPayloadV4 (Prague: it has a requests hash).
/// Only an empty requests list can be rebuilt from JSON-RPC.
fn is_prague(number: u64, requests_hash: Option<B256>) -> Result<bool, PayloadError> {
    match requests_hash {
        None => Ok(false),
        Some(h) if h == EMPTY_REQUESTS_HASH => Ok(true),
        Some(h) => Err(PayloadError::RequestsUnavailable { number, requests_hash: h }),
    }
}

fn eth_payload(what: &str, json: &str) -> Result<Payload, PayloadError> {
    let kind = ChainKind::Ethereum;
    let rpc: alloy_rpc_types_eth::Block =
        serde_json::from_str(json).map_err(|e| decode_err(what, kind, e))?;
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
        ExecutionPayload::V3(p) => {
            if is_prague(number, requests_hash)? {
                let requests = Vec::<Value>::new();
                ("engine_newPayloadV4", json!([p, hashes, beacon_root, requests]), FcuVersion::V3)
            } else {
                ("engine_newPayloadV3", json!([p, hashes, beacon_root]), FcuVersion::V3)
            }
        }
        ExecutionPayload::V4(_) => {
            return Err(PayloadError::Unsupported { number, what: "Amsterdam (V4)" });
        }
    };
    Ok(Payload { block: block_ref, parent_hash, timestamp, tx_count, method, params, fcu })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(kind: ChainKind) -> Value {
        let text = match kind {
            ChainKind::Optimism => include_str!("../testdata/op-block.json"),
            ChainKind::Ethereum => include_str!("../testdata/eth-block.json"),
        };
        serde_json::from_str(text).expect("fixture is JSON")
    }

    #[test]
    fn real_blocks_convert_with_the_right_method() {
        for (kind, method) in [
            (ChainKind::Optimism, "engine_newPayloadV4"),
            (ChainKind::Ethereum, "engine_newPayloadV4"),
        ] {
            let json = fixture(kind);
            let claimed: B256 = json["hash"].as_str().expect("hash").parse().expect("b256");
            let p = from_rpc_block(kind, "3", json).expect("converts");
            assert_eq!(
                (p.block.number, p.block.hash, p.method, p.fcu),
                (3, claimed, method, FcuVersion::V3)
            );
            assert_eq!(p.params[0]["blockHash"], Value::from(claimed.to_string()));
            assert_eq!(p.params.as_array().map(Vec::len), Some(4));
        }
        let op =
            from_rpc_block(ChainKind::Optimism, "3", fixture(ChainKind::Optimism)).expect("op");
        assert!(
            op.params[0].get("withdrawalsRoot").is_some(),
            "OP V4 payload carries withdrawalsRoot"
        );
        assert_eq!(op.tx_count, 4, "deposit + 3 user transactions");
    }

    #[test]
    fn tampering_is_caught() {
        type Edit = fn(&mut Value);
        let cases: [(ChainKind, &str, Edit); 8] = [
            (ChainKind::Optimism, "hash", |j| j["gasUsed"] = Value::from("0x1")),
            (ChainKind::Optimism, "txroot", |j| {
                j["transactions"][1]["value"] = Value::from("0x2a")
            }),
            (ChainKind::Optimism, "txroot", |j| {
                if let Some(a) = j["transactions"].as_array_mut() {
                    a.pop();
                }
            }),
            (ChainKind::Ethereum, "hash", |j| {
                j["stateRoot"] = Value::from(B256::repeat_byte(1).to_string())
            }),
            (ChainKind::Ethereum, "txroot", |j| {
                j["transactions"][0]["nonce"] = Value::from("0x99")
            }),
            (ChainKind::Ethereum, "withdrawals-list", |j| {
                if let Some(o) = j.as_object_mut() {
                    o.remove("withdrawals");
                }
            }),
            (ChainKind::Optimism, "withdrawals-list", |j| {
                j["withdrawals"] = serde_json::json!([{
                    "index": "0x0", "validatorIndex": "0x1",
                    "address": "0x0000000000000000000000000000000000000001", "amount": "0x5"
                }]);
            }),
            (ChainKind::Ethereum, "withdrawals", |j| {
                j["withdrawals"] = serde_json::json!([{
                    "index": "0x0", "validatorIndex": "0x1",
                    "address": "0x0000000000000000000000000000000000000001", "amount": "0x5"
                }]);
            }),
        ];
        for (kind, want, edit) in cases {
            let mut json = fixture(kind);
            edit(&mut json);
            let err = from_rpc_block(kind, "3", json).expect_err("tampered block must fail");
            let got = match err {
                PayloadError::HashMismatch { .. } => "hash",
                PayloadError::TransactionsRootMismatch { .. } => "txroot",
                PayloadError::WithdrawalsRootMismatch { .. } => "withdrawals",
                PayloadError::Withdrawals { .. } => "withdrawals-list",
                other => panic!("{kind}: unexpected {other}"),
            };
            assert_eq!(got, want, "{kind}");
        }
    }

    #[test]
    fn malformed_and_wrong_kind_are_decode_errors() {
        let mut json = fixture(ChainKind::Optimism);
        json["transactions"] = Value::from("garbage");
        assert!(matches!(
            from_rpc_block(ChainKind::Optimism, "3", json),
            Err(PayloadError::Decode { .. })
        ));
        // An OP block (deposit transaction) is not an Ethereum block.
        assert!(matches!(
            from_rpc_block(ChainKind::Ethereum, "3", fixture(ChainKind::Optimism)),
            Err(PayloadError::Decode { .. })
        ));
    }

    #[test]
    fn prague_requests_classification() {
        assert_eq!(is_prague(1, None), Ok(false));
        assert_eq!(is_prague(1, Some(EMPTY_REQUESTS_HASH)), Ok(true));
        let other = B256::repeat_byte(7);
        assert_eq!(
            is_prague(9, Some(other)),
            Err(PayloadError::RequestsUnavailable { number: 9, requests_hash: other })
        );
    }
}
