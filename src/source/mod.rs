//! Sources: the trusted JSON-RPC endpoints whose canonical chain the EL must hold.

pub mod health;
pub mod held;
mod memo;
pub mod pace;
pub mod quorum;
pub mod requests;
pub mod rpc;
pub mod set;

use std::fmt;

use alloy_primitives::{Address, B256, U256};
use futures_util::stream::BoxStream;

pub use rpc::RpcSource;
pub use set::SourceSet;

use crate::chain::BlockRef;
use crate::payload::PayloadError;
pub use crate::payload::SourceBlock;
use crate::payload::requests::LogEntry;
pub use crate::util::BoxFuture;

/// Which block to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockId {
    /// The source's canonical block at this height.
    Number(u64),
    /// The block with this hash.
    Hash(B256),
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "#{n}"),
            Self::Hash(h) => write!(f, "{h}"),
        }
    }
}

/// Where a source's logs of a block are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogsFrom {
    /// `eth_getLogs` by block hash and address: a small answer, but served from a log index
    /// that some providers fill after the block (an empty answer for a block just made).
    Index,
    /// The block's receipts (`eth_getBlockReceipts`): every log of the block, from the block.
    Receipts,
}

/// A source's latest, safe and finalized blocks, read together (`None`: not set there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabelReport {
    /// latest.
    pub latest: Option<BlockRef>,
    /// safe.
    pub safe: Option<BlockRef>,
    /// finalized.
    pub finalized: Option<BlockRef>,
    /// The latest block's timestamp (seconds), where the source said: when to poll next, never
    /// what to trust.
    pub latest_time: Option<u64>,
}

impl LabelReport {
    /// Whether it carries all three labels (a report whose labels were out of order keeps
    /// only latest).
    pub fn complete(r: &Self) -> bool {
        r.latest.is_some() && r.safe.is_some() && r.finalized.is_some()
    }

    /// The block reported for `label`.
    pub fn get(&self, label: crate::chain::Label) -> Option<BlockRef> {
        use crate::chain::Label;
        match label {
            Label::Latest => self.latest,
            Label::Safe => self.safe,
            Label::Finalized => self.finalized,
        }
    }
}

/// One trusted source as the follower uses it. [`RpcSource`] speaks JSON-RPC; the test bed's
/// simulated sources stand in for it in the simulation tests. A source only answers: its health,
/// penalties and agreement with the others are the business of [`SourceSet`], and every block
/// it serves is verified there (I5) before anything else sees it.
pub trait Source: Send + Sync + fmt::Debug {
    /// The name used in logs (never a URL with credentials).
    fn name(&self) -> &str;
    /// eth_chainId.
    fn chain_id(&self) -> BoxFuture<'_, Result<u64, SourceError>>;
    /// latest, safe and finalized, each number and hash from one block read.
    fn labels(&self) -> BoxFuture<'_, Result<LabelReport, SourceError>>;
    /// The hash of its canonical block at `number` (`None`: it has no block there yet).
    fn hash_at(&self, number: u64) -> BoxFuture<'_, Result<Option<B256>, SourceError>>;
    /// A full block (transactions included), raw or as JSON, unverified (`None`: unknown).
    fn block(&self, at: BlockId) -> BoxFuture<'_, Result<Option<SourceBlock>, SourceError>>;
    /// The canonical blocks `from..from + count`, in as few requests as the transport allows
    /// (JSON-RPC batches). One entry per height, in order; a prefix when the source stopped
    /// answering partway (a rate limit), the rest to be asked for again.
    fn blocks(
        &self,
        from: u64,
        count: u64,
    ) -> BoxFuture<'_, Result<Vec<Option<SourceBlock>>, SourceError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(count as usize);
            for n in from..from + count {
                match self.block(BlockId::Number(n)).await {
                    Ok(b) => out.push(b),
                    // Cut short by a rate limit: what came is kept.
                    Err(e) if e.rate_limit().is_some() && !out.is_empty() => break,
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        })
    }
    /// The logs `addresses` emitted in the block with hash `block`, in log order (successful
    /// transactions only: a reverted one logs nothing): what a Prague block's execution requests
    /// are rebuilt from. Empty when none; an error when the source does not hold the block.
    fn logs(
        &self,
        block: B256,
        addresses: Vec<Address>,
        from: LogsFrom,
    ) -> BoxFuture<'_, Result<Vec<LogEntry>, SourceError>>;
    /// Storage words at the block with hash `at` (by hash, never by number), one per
    /// (contract, slot), in order, in as few requests as the transport allows.
    fn storage(
        &self,
        at: B256,
        slots: Vec<(Address, U256)>,
    ) -> BoxFuture<'_, Result<Vec<B256>, SourceError>>;
    /// New-head notifications, where the transport can push them (`None`: poll only), each
    /// with the new head's number when the notification carries it.
    fn subscribe_heads(
        &self,
    ) -> BoxFuture<'_, Result<Option<BoxStream<'static, Option<u64>>>, SourceError>>;
    /// How many push connections it has opened so far (a WebSocket renewed after a drop
    /// counts again; 0 for a source that cannot push).
    fn connections(&self) -> u64 {
        0
    }
    /// JSON-RPC calls sent so far, each call of a batch counted (0 where not counted).
    fn calls(&self) -> u64 {
        0
    }
}

/// What went wrong with one source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Connection refused, DNS, TLS, closed socket.
    #[error("source {source_name} unreachable: {message}")]
    Unreachable {
        /// Source name.
        source_name: String,
        /// Cause.
        message: String,
    },
    /// No answer in time.
    #[error("source {source_name} did not answer {method} in time")]
    Timeout {
        /// Source name.
        source_name: String,
        /// Method.
        method: String,
    },
    /// A JSON-RPC error.
    #[error("source {source_name} answered {method} with error {code}: {message}")]
    Rpc {
        /// Source name.
        source_name: String,
        /// Method.
        method: String,
        /// Code.
        code: i64,
        /// Message.
        message: String,
    },
    /// The answer has the wrong shape.
    #[error("source {source_name} answered {method} with malformed data: {message}")]
    Malformed {
        /// Source name.
        source_name: String,
        /// Method.
        method: String,
        /// What.
        message: String,
    },
    /// An HTTP status other than 2xx (a proxy or the node itself failing), not unreachable.
    #[error("source {source_name} answered {method} with HTTP {status}")]
    Http {
        /// Source name.
        source_name: String,
        /// Method.
        method: String,
        /// Status.
        status: u16,
    },
    /// The source said it is over its rate limit (HTTP 429, 503 with `Retry-After`, or a
    /// JSON-RPC error 429 or -32005): not a failure and not a lie; it is left alone for as long
    /// as it asked.
    #[error(
        "source {source_name} is rate limiting lightcl ({method}: {detail}); it is left alone \
         {} and is not counted as failing; if this lasts, give it max_requests_per_second (its https \
         URL) as its plan allows (docs/operators.md, \"Using a commercial provider\")",
        match retry_after { Some(d) => format!("for {} s, as it asked", d.as_secs_f64()), None => "for a short backoff (it did not say how long)".to_string() }
    )]
    RateLimited {
        /// Source name.
        source_name: String,
        /// The method.
        method: String,
        /// How long it asked to be left alone, when it said.
        retry_after: Option<std::time::Duration>,
        /// What it answered.
        detail: String,
    },
    /// `fetch = "raw"`, and the source does not serve `debug_getRawBlock`.
    #[error(
        "source {source_name} does not serve raw blocks (debug_getRawBlock: {message}), and \
         fetch = \"raw\": turn on its debug API (geth, op-geth, reth: add debug to --http.api or \
         --ws.api) or set fetch = \"auto\" to fetch JSON blocks from it"
    )]
    NoRawBlocks {
        /// Source name.
        source_name: String,
        /// What it answered.
        message: String,
    },
    /// A block that breaks the agreed chain (I4).
    #[error("source {source_name} served a block off the agreed chain: {message}")]
    Inconsistent {
        /// Source name.
        source_name: String,
        /// What did not match.
        message: String,
    },
    /// The EL found a block this source served INVALID.
    #[error(
        "source {source_name} served block {block}, which the EL rejected as INVALID: {reason}"
    )]
    InvalidBlock {
        /// Source name.
        source_name: String,
        /// The block.
        block: BlockRef,
        /// The EL's reason.
        reason: String,
    },
    /// An answer larger than `max_response_mib`.
    #[error("source {source_name} answered {method} with too much data: {error}")]
    TooLarge {
        /// Which source.
        source_name: String,
        /// The method.
        method: String,
        /// The bound it broke.
        error: crate::http::TooLarge,
    },
    /// A block that is not what it claims to be (I5): a lying or broken source.
    #[error("source {source_name} served a block that fails verification: {error}")]
    BadBlock {
        /// Source name.
        source_name: String,
        /// The check that failed.
        error: PayloadError,
    },
}

impl SourceError {
    /// A block that breaks the chain the quorum agreed on (a sibling at the target, a block
    /// that does not link), served by this source.
    pub fn inconsistent(source_name: &str, message: String) -> Self {
        Self::Inconsistent { source_name: source_name.to_string(), message }
    }

    /// Whether the source itself is to blame for what it served (a lie, not a transport
    /// problem): such errors cost it more than a timeout does.
    pub fn is_lie(&self) -> bool {
        matches!(
            self,
            Self::BadBlock { .. } | Self::Inconsistent { .. } | Self::InvalidBlock { .. }
        )
    }

    /// Some(how long it asked to wait, if it said) when the source is rate limiting lightcl.
    pub fn rate_limit(&self) -> Option<Option<std::time::Duration>> {
        match self {
            Self::RateLimited { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Stable short reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable { message, .. } if message.to_lowercase().contains("refused") => {
                "refused"
            }
            Self::Unreachable { .. } => "unreachable",
            Self::Timeout { .. } => "timeout",
            Self::Rpc { .. } => "rpc_error",
            Self::Malformed { .. } => "malformed",
            Self::BadBlock { .. } => "bad_block",
            Self::Inconsistent { .. } => "inconsistent_chain",
            Self::InvalidBlock { .. } => "invalid_block",
            Self::Http { status: 429, .. } => "http_429",
            Self::Http { status: 500..=599, .. } => "http_5xx",
            Self::Http { status: 400..=499, .. } => "http_4xx",
            Self::Http { .. } => "http_error",
            Self::TooLarge { .. } => "too_large",
            Self::NoRawBlocks { .. } => "no_raw_blocks",
            Self::RateLimited { .. } => "rate_limited",
        }
    }
}
