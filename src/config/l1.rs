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
