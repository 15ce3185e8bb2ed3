//! The optional `[l1]` section: an L1 RPC (or several, agreeing by quorum) to verify the agreed
//! labels' L1 origins and the local EL's output roots against.

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};

use super::quorum::Quorum;

/// Default of `l1.audit_interval_secs`: how often the L1 contracts are read for new roots.
pub const DEFAULT_AUDIT_INTERVAL_SECS: u64 = 60;
/// Default of `l1.timeout_ms`.
pub const DEFAULT_L1_TIMEOUT_MS: u64 = 10_000;

/// What verification does with a check that fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// No check (L1 is still read for `optimism_syncStatus`).
    Off,
    /// Labels move as the sources say; a failed check is logged, counted, shown in `/status`
    /// and alerted.
    Alarm,
    /// A safe or finalized label whose origin check fails waits (the EL keeps its earlier
    /// label); an output root that differs from one L1 settled halts lightcl.
    #[default]
    Enforce,
}

impl VerifyMode {
    /// As in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Alarm => "alarm",
            Self::Enforce => "enforce",
        }
    }
}

/// The `[l1]` section.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct L1Config {
    /// http(s):// JSON-RPC URLs of L1 nodes (or providers).
    pub urls: Vec<String>,
    /// How many of them must agree ("all", "majority" or a number).
    #[serde(default)]
    pub quorum: Quorum,
    /// The L1 chain id; checked at start when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<u64>,
    /// off, alarm or enforce.
    #[serde(default)]
    pub verify: VerifyMode,
    /// The chain's OptimismPortal: names the DisputeGameFactory (and, from v3 contracts, the
    /// AnchorStateRegistry) when those are not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal: Option<Address>,
    /// The chain's AnchorStateRegistry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_state_registry: Option<Address>,
    /// The chain's DisputeGameFactory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispute_game_factory: Option<Address>,
    /// The dispute game type whose games count (default: the registry's respected type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub game_type: Option<u32>,
    /// How often the contracts are read for a new anchor and new games, seconds.
    #[serde(default = "default_audit_interval")]
    pub audit_interval_secs: u64,
    /// Timeout of one L1 call, ms.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_audit_interval() -> u64 {
    DEFAULT_AUDIT_INTERVAL_SECS
}

fn default_timeout() -> u64 {
    DEFAULT_L1_TIMEOUT_MS
}

impl std::fmt::Debug for L1Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<_> = self.urls.iter().map(|u| crate::redact::RedactedUrl::new(u)).collect();
        f.debug_struct("L1Config")
            .field("urls", &urls)
            .field("quorum", &self.quorum)
            .field("chain_id", &self.chain_id)
            .field("verify", &self.verify)
            .field("portal", &self.portal)
            .field("anchor_state_registry", &self.anchor_state_registry)
            .field("dispute_game_factory", &self.dispute_game_factory)
            .field("game_type", &self.game_type)
            .field("audit_interval_secs", &self.audit_interval_secs)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl L1Config {
    /// Checks the section; `(key, problem)` for the first thing wrong.
    pub fn check(&self, chain: super::ChainKind) -> Result<(), (String, String)> {
        if chain != super::ChainKind::Optimism {
            return Err((
                "l1".into(),
                "verification against L1 reads OP Stack L1 attributes and output roots; it \
                 needs chain = \"optimism\". Remove the [l1] section for an Ethereum chain"
                    .into(),
            ));
        }
        if self.urls.is_empty() {
            return Err((
                "l1.urls".into(),
                "no L1 RPC given; list at least one http(s):// URL of an L1 node, or remove the \
                 [l1] section"
                    .into(),
            ));
        }
        for (i, u) in self.urls.iter().enumerate() {
            super::check_url(u, &["http", "https"]).map_err(|p| (format!("l1.urls[{i}]"), p))?;
        }
        self.quorum.check(self.urls.len()).map_err(|p| ("l1.quorum".to_string(), p))?;
        for (key, v) in [
            ("l1.audit_interval_secs", self.audit_interval_secs),
            ("l1.timeout_ms", self.timeout_ms),
        ] {
            if v == 0 {
                return Err((key.into(), "must be greater than 0".into()));
            }
        }
        if self.chain_id == Some(0) {
            return Err((
                "l1.chain_id".into(),
                "is 0; give the L1's chain id (1 for Ethereum mainnet) or leave it out".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ChainKind;

    fn good() -> L1Config {
        L1Config {
            urls: vec!["http://l1:8545".into()],
            quorum: Quorum::default(),
            chain_id: Some(1),
            verify: VerifyMode::Enforce,
            portal: None,
            anchor_state_registry: None,
            dispute_game_factory: None,
            game_type: None,
            audit_interval_secs: 60,
            timeout_ms: 1_000,
        }
    }

    #[test]
    fn bad_sections_name_the_key() {
        assert_eq!(good().check(ChainKind::Optimism), Ok(()));
        let key = |c: L1Config, kind| c.check(kind).err().map(|(k, _)| k);
        assert_eq!(key(good(), ChainKind::Ethereum), Some("l1".into()));
        assert_eq!(
            key(L1Config { urls: vec![], ..good() }, ChainKind::Optimism),
            Some("l1.urls".into())
        );
        let ws = L1Config { urls: vec!["ws://l1".into()], ..good() };
        assert_eq!(key(ws, ChainKind::Optimism), Some("l1.urls[0]".into()));
        let half = L1Config {
            urls: vec!["http://a".into(), "http://b".into()],
            quorum: Quorum::Count(1),
            ..good()
        };
        assert_eq!(key(half, ChainKind::Optimism), Some("l1.quorum".into()));
        let zero = L1Config { audit_interval_secs: 0, ..good() };
        assert_eq!(key(zero, ChainKind::Optimism), Some("l1.audit_interval_secs".into()));
        assert_eq!(
            key(L1Config { chain_id: Some(0), ..good() }, ChainKind::Optimism),
            Some("l1.chain_id".into())
        );
    }

    #[test]
    fn the_section_parses_from_toml() {
        let text = r#"
            urls = ["https://l1.example/v2/KEY0123456789abcdefghij"]
            verify = "alarm"
            anchor_state_registry = "0x1c68ECfbf9C8B1E6C0677965b3B9Ecf9A104305b"
            game_type = 1
        "#;
        use figment::providers::Format;
        let c: L1Config = figment::Figment::from(figment::providers::Toml::string(text))
            .extract()
            .expect("parses");
        assert_eq!(c.verify, VerifyMode::Alarm);
        assert_eq!(c.audit_interval_secs, DEFAULT_AUDIT_INTERVAL_SECS);
        assert!(c.anchor_state_registry.is_some() && c.game_type == Some(1));
        // Debug output hides the key in the URL.
        assert!(!format!("{c:?}").contains("KEY0123456789abcdefghij"));
    }
}
