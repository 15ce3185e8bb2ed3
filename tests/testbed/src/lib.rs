//! lightcl's test bed: real geth and op-geth processes built from the Go module proxy, and reth
//! and op-reth unpacked from the shared folder (`scripts/install-els.sh`), spawned on loopback
//! and driven through the Engine API.
//!
//! ```text
//!  genesis (OP / Ethereum) -> ElNode::spawn (init, start, wait for RPC + Engine API)
//!  Producer: forkchoiceUpdated(attrs) -> getPayload -> newPayload -> forkchoiceUpdated
//!  Producer::fork_onto(node, ancestor): replay the prefix on a second EL, build a rival branch
//! ```

pub mod bench;
pub mod chains;
pub mod client;
pub mod genesis;
pub mod jwt;
pub mod l1;
pub mod lightcl;
pub mod node;
pub mod producer;
pub mod proxy;
pub mod rpc;
pub mod sim;
pub mod timing;
pub mod tmpfs;
pub mod txs;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use alloy_primitives::B256;
use serde_json::Value;

pub use client::ElClient;
pub use genesis::ChainKind;
pub use node::{ElNode, NodeOptions};
pub use producer::{BuiltBlock, Producer, TxMix};

/// Errors of the test bed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or process operation failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// An EL could not be started.
    #[error("spawn: {0}")]
    Spawn(String),
    /// The EL binary is missing.
    #[error("{kind} binary not found at {path}: {hint} (or set {env} to a binary)")]
    MissingBinary {
        /// How to get it.
        hint: &'static str,
        /// EL name.
        kind: &'static str,
        /// Where it was looked for.
        path: String,
        /// The variable that overrides the path.
        env: &'static str,
    },
    /// Connection-level failure talking to an EL.
    #[error("{method} to {url}: {message}")]
    Transport {
        /// Endpoint.
        url: String,
        /// JSON-RPC method.
        method: String,
        /// Cause.
        message: String,
    },
    /// The EL answered with a non-2xx HTTP status (401 for a bad JWT).
    #[error("{method}: HTTP {status}: {body}")]
    Http {
        /// JSON-RPC method.
        method: String,
        /// HTTP status.
        status: u16,
        /// Body.
        body: String,
    },
    /// The EL answered with a JSON-RPC error.
    #[error("{method}: JSON-RPC error {code}: {message}")]
    Rpc {
        /// JSON-RPC method.
        method: String,
        /// Error code.
        code: i64,
        /// Error message.
        message: String,
    },
    /// An answer did not have the expected shape.
    #[error("{method}: unexpected answer: {message}")]
    Decode {
        /// JSON-RPC method.
        method: String,
        /// What was wrong.
        message: String,
    },
    /// An Engine API call answered a status other than the one the producer needs.
    #[error("{method}: status {status}{}", validation_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Status {
        /// Engine method.
        method: String,
        /// payloadStatus.status.
        status: String,
        /// payloadStatus.validationError.
        validation_error: Option<String>,
    },
    /// Something did not happen in time.
    #[error("timeout: {0}")]
    Timeout(String),
}

/// Number, hash and parent of a block as an EL reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInfo {
    /// Height.
    pub number: u64,
    /// Block hash.
    pub hash: B256,
    /// Parent hash.
    pub parent_hash: B256,
    /// Timestamp.
    pub timestamp: u64,
}

impl BlockInfo {
    /// Reads the fields from an `eth_getBlockBy*` answer.
    pub fn from_json(v: &Value) -> Result<Self, Error> {
        let field = |name: &str| {
            v.get(name).and_then(Value::as_str).ok_or_else(|| Error::Decode {
                method: "eth_getBlockByNumber".into(),
                message: format!("block without {name}"),
            })
        };
        let hash = |name: &str| -> Result<B256, Error> {
            field(name)?.parse().map_err(|e| Error::Decode {
                method: "eth_getBlockByNumber".into(),
                message: format!("bad {name}: {e}"),
            })
        };
        Ok(Self {
            number: parse_hex_u64(field("number")?)?,
            hash: hash("hash")?,
            parent_hash: hash("parentHash")?,
            timestamp: parse_hex_u64(field("timestamp")?)?,
        })
    }
}

/// Parses a `0x`-prefixed hex quantity.
pub fn parse_hex_u64(s: &str) -> Result<u64, Error> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map_err(|e| Error::Decode { method: "quantity".into(), message: format!("{s}: {e}") })
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A value unique within this process run (time and a counter).
pub(crate) fn unique_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos =
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    nanos ^ (COUNTER.fetch_add(1, Ordering::Relaxed) << 48) ^ u64::from(std::process::id())
}

/// The repository root (two folders above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("..")
}
