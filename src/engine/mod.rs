//! The local EL: Engine API (JWT) for writes, JSON-RPC for reading the local heads back.

pub mod client;
pub mod jwt;

use std::time::Duration;

use alloy_primitives::B256;
use serde::Deserialize;

pub use client::EngineClient;

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
    /// A token could not be minted.
    #[error(transparent)]
    Jwt(#[from] jwt::JwtError),
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
