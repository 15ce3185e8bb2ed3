//! The local EL: Engine API (JWT) for writes, JSON-RPC for reading the local heads back.

pub mod check;
pub mod client;

use std::fmt;
use std::time::Duration;

use alloy_primitives::B256;
use serde::Deserialize;

pub use client::{BlockAt, EngineClient, LocalBlock};

use crate::chain::Heads;
use crate::payload::{FcuVersion, Payload};

pub use crate::util::BoxFuture;

/// The local EL as the follower uses it: reads over JSON-RPC, writes over the Engine API. The
/// follower is written against this trait; [`EngineClient`] speaks to a real EL, and the test
/// bed's simulated EL stands in for it in the simulation tests.
///
/// Forkchoice updates are sent only by the forkchoice writer (`crate::sync::forkchoice`), which checks every one
/// against the finality floor first.
pub trait Engine: Send + Sync + fmt::Debug {
    /// eth_chainId.
    fn chain_id(&self) -> BoxFuture<'_, Result<u64, EngineError>>;
    /// engine_exchangeCapabilities: proves the JWT, lists the EL's Engine API methods.
    fn capabilities(&self) -> BoxFuture<'_, Result<Vec<String>, EngineError>>;
    /// A block of the EL's canonical chain by label or height (`None`: it has none there).
    /// An unset label (geth answers "safe block not found") is `None`; any other error is an
    /// error, never "unset".
    fn block(&self, at: BlockAt) -> BoxFuture<'_, Result<Option<LocalBlock>, EngineError>>;
    /// engine_newPayloadVn for a verified payload.
    fn new_payload<'a>(
        &'a self,
        p: &'a Payload,
    ) -> BoxFuture<'a, Result<PayloadStatus, EngineError>>;
    /// engine_forkchoiceUpdatedVn without attributes. Call only through the gate.
    fn forkchoice_updated<'a>(
        &'a self,
        version: FcuVersion,
        heads: &'a Heads,
    ) -> BoxFuture<'a, Result<PayloadStatus, EngineError>>;
    /// debug_setHead: rolls chain and state back to `number` (geth, op-geth; a no-op on reth).
    fn set_head(&self, number: u64) -> BoxFuture<'_, Result<(), EngineError>>;
    /// What the EL says of its own P2P sync: `net_peerCount` and `eth_syncing`.
    fn sync_status(&self) -> BoxFuture<'_, Result<SyncStatus, EngineError>>;
    /// What the output root of the EL's canonical block at `number` is made of (`None`: it
    /// has no block there): its state root, and the L2ToL1MessagePasser's storage root (the
    /// header's withdrawalsRoot since Isthmus, `eth_getProof` before).
    fn output_parts(
        &self,
        number: u64,
    ) -> BoxFuture<'_, Result<Option<crate::chain::output::OutputParts>, EngineError>>;
}

/// The EL's own view of its P2P sync, as it reports it over JSON-RPC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    /// P2P peers (`None`: the EL does not serve `net_peerCount`).
    pub peers: Option<u64>,
    /// `eth_syncing`: `None` when the EL says it is not syncing.
    pub progress: Option<SyncProgress>,
}

/// The EL's sync progress (`eth_syncing` as an object).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncProgress {
    /// currentBlock: the highest block it has fully imported.
    pub current: u64,
    /// highestBlock: the highest block it knows of (0 when it does not say).
    pub highest: u64,
    /// The stage with the most work left, with the block it reached (reth reports stages;
    /// geth reports state-sync counters instead: shown as "state").
    pub stage: Option<(String, u64)>,
    /// A number that grows while the EL does anything useful (blocks imported, headers,
    /// bodies, state entries fetched): what stall detection watches.
    pub work: u64,
}

impl SyncProgress {
    /// Reads an `eth_syncing` answer (`false`, or an object of quantities; reth adds
    /// `stages: [{name, block}]`, geth adds snap-sync counters).
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        use crate::http::parse_quantity;
        let obj = v.as_object()?;
        let q = |k: &str| obj.get(k).and_then(parse_quantity).unwrap_or(0);
        let mut work = q("currentBlock");
        // geth's snap-sync counters (accounts, slots, bytecodes, trie nodes healed).
        for k in [
            "syncedAccounts",
            "syncedStorage",
            "syncedBytecodes",
            "healedTrienodes",
            "healedBytecodes",
            "txIndexFinishedBlocks",
        ] {
            work = work.saturating_add(q(k));
        }
        let mut stage = None;
        if let Some(stages) = obj.get("stages").and_then(|s| s.as_array()) {
            for st in stages {
                let name = st.get("name").and_then(|n| n.as_str()).unwrap_or("?");
                let block = st.get("block").and_then(parse_quantity).unwrap_or(0);
                work = work.saturating_add(block);
                if stage.as_ref().is_none_or(|(_, b)| block < *b) {
                    stage = Some((name.to_string(), block));
                }
            }
        } else if q("syncedAccounts") > 0 || q("healedTrienodes") > 0 {
            stage = Some(("state".to_string(), q("syncedAccounts")));
        }
        Some(Self { current: q("currentBlock"), highest: q("highestBlock"), stage, work })
    }
}

/// The EL's heads as read back: head, safe and finalized (labels it has not set yet read as
/// genesis), the forkchoice version for its head, and the head's timestamp. A failed read is an
/// error, never "unset".
pub async fn read_heads(engine: &dyn Engine) -> Result<(Heads, FcuVersion, u64), EngineError> {
    use crate::chain::Label;
    let missing = |what: &str| EngineError::Decode {
        method: "eth_getBlockByNumber".into(),
        message: format!("no {what} block"),
    };
    let head =
        engine.block(BlockAt::Label(Label::Latest)).await?.ok_or_else(|| missing("latest"))?;
    let safe = engine.block(BlockAt::Label(Label::Safe)).await?.map(|b| b.block);
    let finalized = engine.block(BlockAt::Label(Label::Finalized)).await?.map(|b| b.block);
    // Genesis stands in for unset labels; read only then (not on every poll).
    let genesis = if safe.is_none() || finalized.is_none() {
        engine.block(BlockAt::Number(0)).await?.ok_or_else(|| missing("genesis"))?.block
    } else {
        head.block
    };
    let (safe, finalized) = (safe.unwrap_or(genesis), finalized.unwrap_or(genesis));
    Ok((Heads { head: head.block, safe, finalized }, head.fcu, head.timestamp))
}

/// What went wrong talking to the EL. "The EL said INVALID" is not an error here: it is a
/// [`PayloadStatus`] the caller classifies.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Connection refused, reset, DNS: the EL is down or restarting.
    #[error("EL unreachable at {url} ({method}): {message}")]
    Unreachable {
        /// Endpoint (redacted).
        url: String,
        /// Method.
        method: String,
        /// Cause.
        message: String,
    },
    /// The call did not answer in time.
    #[error("EL did not answer {method} within {after:?}")]
    Timeout {
        /// Method.
        method: String,
        /// The timeout.
        after: Duration,
    },
    /// HTTP 401/403 on the Engine API: the JWT secret differs from the EL's.
    #[error(
        "the EL refused our Engine API token (HTTP {status}): engine.jwt_secret_file must hold the \
         same secret as the EL's --authrpc.jwtsecret file"
    )]
    Unauthorized {
        /// HTTP status.
        status: u16,
    },
    /// A JSON-RPC error object.
    #[error("EL answered {method} with error {code}: {message}")]
    Rpc {
        /// Method.
        method: String,
        /// Code.
        code: i64,
        /// Message.
        message: String,
    },
    /// Any other HTTP status.
    #[error("EL answered {method} with HTTP {status}: {body}")]
    Http {
        /// Method.
        method: String,
        /// Status.
        status: u16,
        /// Body (truncated).
        body: String,
    },
    /// The answer did not decode.
    #[error("EL answered {method} with something unexpected: {message}")]
    Decode {
        /// Method.
        method: String,
        /// What was wrong.
        message: String,
    },
    /// The answer was larger than `max_response_mib`.
    #[error("EL answered {method} with too much data: {error}")]
    TooLarge {
        /// Method.
        method: String,
        /// The bound it broke.
        error: crate::http::TooLarge,
    },
    /// A token could not be minted.
    #[error(transparent)]
    Jwt(#[from] crate::jwt::JwtError),
}

impl EngineError {
    /// Whether waiting and retrying can help (the EL is down, restarting or slow).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Timeout { .. } | Self::Http { .. })
    }
}

/// payloadStatus.status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Executed and valid.
    Valid,
    /// Executed (or checked) and invalid.
    Invalid,
    /// The EL cannot tell yet (missing parent or state).
    Syncing,
    /// Accepted on a side chain without execution.
    Accepted,
    /// The block hash does not match the payload (pre-Shanghai wording).
    InvalidBlockHash,
}

/// An engine payload status.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadStatus {
    /// Status.
    pub status: Status,
    /// latestValidHash.
    #[serde(default)]
    pub latest_valid_hash: Option<B256>,
    /// validationError.
    #[serde(default)]
    pub validation_error: Option<String>,
}

/// What the follower does with a payload status (I6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// VALID: advance.
    Advance,
    /// SYNCING / ACCEPTED: the EL has not executed it; keep feeding in order, do not label it.
    Pending,
    /// INVALID: stop this branch and report.
    Reject(String),
}

/// Classifies a payload status.
pub fn classify(s: &PayloadStatus) -> Verdict {
    match s.status {
        Status::Valid => Verdict::Advance,
        Status::Syncing | Status::Accepted => Verdict::Pending,
        Status::Invalid | Status::InvalidBlockHash => Verdict::Reject(
            s.validation_error
                .clone()
                .unwrap_or_else(|| format!("{:?} without a reason", s.status)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_table() {
        let st = |status, err: Option<&str>| PayloadStatus {
            status,
            latest_valid_hash: None,
            validation_error: err.map(str::to_string),
        };
        let cases = [
            (st(Status::Valid, None), Verdict::Advance),
            (st(Status::Syncing, None), Verdict::Pending),
            (st(Status::Accepted, None), Verdict::Pending),
            (st(Status::Invalid, Some("bad root")), Verdict::Reject("bad root".into())),
            (
                st(Status::InvalidBlockHash, None),
                Verdict::Reject("InvalidBlockHash without a reason".into()),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(classify(&input), want, "{input:?}");
        }
    }

    #[test]
    fn status_decodes_from_el_json() {
        let s: PayloadStatus = serde_json::from_str(
            r#"{"status":"INVALID_BLOCK_HASH","latestValidHash":null,"validationError":"x"}"#,
        )
        .expect("decode");
        assert_eq!(s.status, Status::InvalidBlockHash);
        assert!(EngineError::Timeout { method: "m".into(), after: Duration::ZERO }.is_retryable());
        assert!(!EngineError::Unauthorized { status: 401 }.is_retryable());
    }
}
