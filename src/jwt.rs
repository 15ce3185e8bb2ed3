//! The Engine API secret and the HS256 tokens minted from it, one per request (the EL accepts
//! an `iat` within 60 s of its clock).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

/// Why a JWT secret file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The file cannot be read.
    #[error(
        "cannot read JWT secret file {path}: {source}; create it with 32 random bytes as hex (`openssl rand -hex 32`) and give the EL the same file"
    )]
    Read {
        /// File path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The contents are not 32 bytes of hex.
    #[error(
        "JWT secret file {path} must hold exactly 64 hex characters (32 bytes, optional 0x prefix): {problem}"
    )]
    Format {
        /// File path.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// Token signing failed (should not happen with HS256).
    #[error("cannot sign an Engine API token: {0}")]
    Sign(String),
}

/// A 32-byte Engine API secret. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSecret([u8; 32]);

impl std::fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtSecret(<redacted>)")
    }
}

#[derive(serde::Serialize)]
struct Claims {
    iat: u64,
}

impl JwtSecret {
    /// Reads a hex secret (64 hex characters, optional `0x`, surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Self, JwtError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| JwtError::Read { path: shown.clone(), source })?;
        Self::from_hex(&text).map_err(|problem| JwtError::Format { path: shown, problem })
    }

    /// Parses 64 hex characters (optional `0x`).
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let t = t.strip_prefix("0x").unwrap_or(t);
        if t.len() != 64 {
            return Err(format!("found {} characters", t.len()));
        }
        let bytes = alloy_primitives::hex::decode(t).map_err(|e| format!("not hex ({e})"))?;
        let mut out = [0u8; 32];
        out.copy_from_slice(&bytes);
        Ok(Self(out))
    }

    /// A token for a request sent now.
    pub fn token(&self) -> Result<String, JwtError> {
        let iat = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        encode(&Header::new(Algorithm::HS256), &Claims { iat }, &EncodingKey::from_secret(&self.0))
            .map_err(|e| JwtError::Sign(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hex_forms_and_rejects_others() {
        let hex = "11".repeat(32);
        assert!(JwtSecret::from_hex(&hex).is_ok());
        assert!(JwtSecret::from_hex(&format!("0x{hex}\n")).is_ok());
        assert!(JwtSecret::from_hex(&"1".repeat(63)).is_err());
        assert!(JwtSecret::from_hex(&"zz".repeat(32)).is_err());
        assert!(JwtSecret::from_hex("").is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = JwtSecret::from_hex(&"ab".repeat(32)).expect("hex");
        assert!(!format!("{s:?}").contains("abab"));
    }

    #[test]
    fn token_is_hs256_with_current_iat() {
        let s = JwtSecret::from_hex(&"ab".repeat(32)).expect("hex");
        let token = s.token().expect("token");
        let mut v = jsonwebtoken::Validation::new(Algorithm::HS256);
        v.required_spec_claims.clear();
        v.validate_exp = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(&s.0),
            &v,
        )
        .expect("decodes");
        let iat = data.claims["iat"].as_u64().expect("iat");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs();
        assert!(now.abs_diff(iat) <= 5);
    }
}
