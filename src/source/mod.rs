//! Sources: the trusted JSON-RPC endpoints whose canonical chain the EL must hold.

pub mod health;
pub mod quorum;
pub mod rpc;

pub use rpc::RpcSource;

use crate::payload::PayloadError;

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
    /// Stable short reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::Timeout { .. } => "timeout",
            Self::Rpc { .. } => "rpc_error",
            Self::Malformed { .. } => "malformed",
            Self::BadBlock { .. } => "bad_block",
        }
    }
}
