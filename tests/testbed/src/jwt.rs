//! Engine API JWT: HS256 tokens minted per request from a 32-byte secret.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde::Serialize;

/// A 32-byte Engine API secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct JwtSecret(pub [u8; 32]);

impl std::fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtSecret(<redacted>)")
    }
}

#[derive(Serialize)]
struct Claims {
    iat: u64,
}

impl JwtSecret {
    /// A fresh random secret (from the OS, falling back to a hash of a unique seed).
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        let from_os = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
        if from_os.is_err() {
            bytes = alloy_primitives::keccak256(crate::unique_seed().to_be_bytes()).0;
        }
        Self(bytes)
    }

    /// The secret as the hex file geth reads (`--authrpc.jwtsecret`).
    pub fn to_hex(&self) -> String {
        alloy_primitives::hex::encode(self.0)
    }

    /// A token valid now (`iat` = the current time).
    pub fn token(&self) -> String {
        let iat = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        encode(&Header::new(Algorithm::HS256), &Claims { iat }, &EncodingKey::from_secret(&self.0))
            .unwrap_or_default()
    }
}
