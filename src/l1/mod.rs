//! Verification against L1 (optional, with an `[l1]` section): the L1 origin of every agreed
//! safe and finalized block must be canonical on L1 (finalized: at or below L1's finalized
//! block), and the local EL's output roots must match the roots L1 settled.
//!
//! ```text
//!  L1 RPCs (1..n)      l1::rpc (JSON-RPC), l1::set (the quorum over them, as for L2 sources)
//!  origins             l1::info: the L1 attributes deposit of an OP block (pure)
//!                      l1::verify: per agreed label, ok / waits (transient) / false
//!  output roots        l1::output: the v0 formula and the contracts' ABI (pure)
//!                      l1::audit: anchor root and dispute games vs the local EL
//! ```
//!
//! Every L1 read is taken at L1's finalized block where it can be (contract state), so what
//! lightcl compares with can no longer be reorged away; an origin is looked up by number and
//! compared by hash.

pub mod audit;
pub mod check;
pub mod info;
pub mod output;
pub mod rpc;
pub mod set;
pub mod verify;

use std::fmt;

use alloy_primitives::{Address, B256, Bytes};

use crate::chain::BlockRef;
use crate::util::BoxFuture;

pub use set::L1Set;
pub use verify::{Verdict, Verifier};

/// An L1 JSON-RPC endpoint as verification uses it. [`rpc::L1Rpc`] speaks to a real node; the
/// test bed's simulated L1 stands in for it in the simulation.
pub trait L1: Send + Sync + fmt::Debug {
    /// Its name in logs and `/status` (the URL, redacted).
    fn name(&self) -> &str;
    /// eth_chainId.
    fn chain_id(&self) -> BoxFuture<'_, Result<u64, L1Error>>;
    /// The canonical block at `number` (`None`: none there yet).
    fn block_at(&self, number: u64) -> BoxFuture<'_, Result<Option<BlockRef>, L1Error>>;
    /// Its latest and finalized blocks (`None` for a label not set yet).
    fn heads(&self) -> BoxFuture<'_, Result<L1Heads, L1Error>>;
    /// A block's header fields by label ("latest", "safe", "finalized") or height, as the
    /// rollup RPC shows L1 blocks (`None`: no such block).
    fn header(&self, at: L1At) -> BoxFuture<'_, Result<Option<L1Header>, L1Error>>;
    /// eth_call of `data` to `to` at L1 block `at` (by hash, so every endpoint reads the same
    /// state).
    fn call(&self, to: Address, data: Bytes, at: B256) -> BoxFuture<'_, Result<Bytes, L1Error>>;
}

/// Which L1 block to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L1At {
    /// By label: "latest", "safe" or "finalized".
    Tag(&'static str),
    /// By height.
    Number(u64),
}

/// An L1 block's header fields that the rollup RPC shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Header {
    /// Height and hash.
    pub block: BlockRef,
    /// Parent hash.
    pub parent_hash: B256,
    /// Timestamp.
    pub timestamp: u64,
}

/// An L1 endpoint's latest and finalized blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct L1Heads {
    /// Latest.
    pub latest: Option<BlockRef>,
    /// Finalized.
    pub finalized: Option<BlockRef>,
}

impl L1Error {
    /// Whether the call reverted (the contract has no such function, or refused): a fact about
    /// the contract, unlike a failed request (a rate limit, a timeout), which is asked again.
    pub fn is_revert(&self) -> bool {
        matches!(self, Self::Rpc { message, .. } if message.to_lowercase().contains("revert"))
    }
}

/// An L1 read that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum L1Error {
    /// Not reachable, timed out, or an HTTP error.
    #[error("L1 RPC {name}: {method} failed: {message}")]
    Unreachable {
        /// The endpoint.
        name: String,
        /// The method.
        method: String,
        /// What happened.
        message: String,
    },
    /// A JSON-RPC error answer (an eth_call that reverted too).
    #[error("L1 RPC {name}: {method} answered an error: {message}")]
    Rpc {
        /// The endpoint.
        name: String,
        /// The method.
        method: String,
        /// Its message.
        message: String,
    },
    /// An answer of the wrong shape.
    #[error("L1 RPC {name}: {method} answered something malformed: {message}")]
    Malformed {
        /// The endpoint.
        name: String,
        /// The method.
        method: String,
        /// What is wrong.
        message: String,
    },
    /// The L1 endpoints did not agree (fewer than the quorum gave one answer).
    #[error("the L1 RPCs do not agree on {what}: {answers}")]
    NoQuorum {
        /// What was read.
        what: String,
        /// What each said.
        answers: String,
    },
}

/// Verification as a fleet shares it: the label checks and the output-root audit over one set
/// of L1 endpoints.
#[derive(Debug)]
pub struct Verification {
    /// The origin checks.
    pub verifier: Verifier,
    /// The output-root audit.
    pub audit: audit::Audit,
    expected_chain: Option<u64>,
    chain_checked: std::sync::atomic::AtomicBool,
    /// When the chain id could not be read last (it is asked again 30 s later, not every round).
    chain_failed_at: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Verification {
    /// Verification over `l1` as `config` says.
    pub fn new(l1: L1Set, config: &crate::config::L1Config) -> Self {
        let contracts = audit::Contracts {
            anchor_state_registry: config.anchor_state_registry,
            dispute_game_factory: config.dispute_game_factory,
            game_type: config.game_type,
            portal: config.portal,
        };
        let every = std::time::Duration::from_secs(config.audit_interval_secs);
        Self {
            verifier: Verifier::new(l1, config.verify),
            audit: audit::Audit::new(contracts, every),
            expected_chain: config.chain_id,
            chain_checked: Default::default(),
            chain_failed_at: Default::default(),
        }
    }

    /// Checks the L1 chain id once (when configured). `Err(got)`: the L1 endpoints serve
    /// another chain. An L1 that cannot be read is checked again on the next call.
    pub async fn check_chain(&self) -> Result<(), u64> {
        use std::sync::atomic::Ordering;
        let Some(want) = self.expected_chain else { return Ok(()) };
        if self.chain_checked.load(Ordering::Relaxed) {
            return Ok(());
        }
        let failed_at = *crate::util::lock(&self.chain_failed_at);
        if failed_at.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(30)) {
            return Ok(());
        }
        match self.verifier.l1().chain_id().await {
            Ok(got) if got == want => {
                self.chain_checked.store(true, Ordering::Relaxed);
                Ok(())
            }
            Ok(got) => Err(got),
            Err(_) => {
                *crate::util::lock(&self.chain_failed_at) = Some(tokio::time::Instant::now());
                Ok(())
            }
        }
    }

    /// Whether the L1 endpoints are known to serve the configured L1 chain (always, when no
    /// `chain_id` is configured).
    pub fn chain_confirmed(&self) -> bool {
        self.expected_chain.is_none()
            || self.chain_checked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The configured L1 chain id.
    pub fn expected_chain(&self) -> Option<u64> {
        self.expected_chain
    }
}
