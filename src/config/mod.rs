//! Configuration: built-in defaults < TOML file < `LIGHTCL_*` environment (nested keys with `__`)
//! < command-line flags, merged with figment. [`Config::load`] returns typed errors that name the
//! key and where its value came from.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Serialize};

use crate::redact::RedactedUrl;

mod l1;
pub mod network;
pub mod quorum;
mod replicas;
pub use l1::{DEFAULT_AUDIT_INTERVAL_SECS, DEFAULT_L1_TIMEOUT_MS, L1Config, VerifyMode};
pub use replicas::{DEFAULT_REPLICA_NAME, EngineEntry, LabelMode, Replica, check_name};

/// Default of `max_response_mib`: well above the largest blocks of today's chains as JSON
/// (a 30M-gas block of calldata is about 15 MiB of hex), far below what would hurt the host.
pub const DEFAULT_MAX_RESPONSE_MIB: usize = 64;

/// Default poll interval of the sources.
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 1_000;
/// Default number of blocks fetched ahead of the EL.
pub const DEFAULT_PREFETCH: usize = 256;
/// Default number of concurrent block requests to the sources.
pub const DEFAULT_FETCH_CONCURRENCY: usize = 16;
/// Default timeout of one source request.
pub const DEFAULT_SOURCE_TIMEOUT_MS: u64 = 10_000;
/// Default of `quorum_grace_ms`: once a quorum read is decidable, how long the other sources
/// still get before it goes on without them.
pub const DEFAULT_QUORUM_GRACE_MS: u64 = 200;
/// Default timeout of engine_newPayload (execution of one block).
pub const DEFAULT_NEW_PAYLOAD_TIMEOUT_MS: u64 = 60_000;
/// Default timeout of engine_forkchoiceUpdated (a reorg may take a while).
pub const DEFAULT_FORKCHOICE_TIMEOUT_MS: u64 = 60_000;
/// Default timeout of other EL calls (capabilities, JSON-RPC reads).
pub const DEFAULT_EL_CALL_TIMEOUT_MS: u64 = 10_000;
/// Default Engine API URL.
pub const DEFAULT_ENGINE_URL: &str = "http://127.0.0.1:8551";
/// Default EL JSON-RPC URL.
pub const DEFAULT_EL_RPC_URL: &str = "http://127.0.0.1:8545";
/// Default JWT secret file.
pub const DEFAULT_JWT_SECRET_FILE: &str = "/etc/lightcl/jwt.hex";
/// Default folder of the state file (systemd's `StateDirectory=lightcl`).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/lightcl";
/// Default interval of the catch-up progress log.
pub const DEFAULT_PROGRESS_INTERVAL_MS: u64 = 5_000;
/// Default of `block_cache_mib`: verified blocks held in memory for reuse (a few thousand blocks
/// of a busy chain, far more of a quiet one).
pub const DEFAULT_BLOCK_CACHE_MIB: usize = 64;
/// Default of `fetch_batch`: blocks asked for in one JSON-RPC batch while catching up.
pub const DEFAULT_FETCH_BATCH: usize = 16;
/// Default of `bootstrap_min_gap_blocks`: in `auto`, how far behind the agreed target the EL
/// must be before it is asked to sync from its own peers. Below it replay is quicker: an EL
/// needs tens of seconds to find its peers and start a sync, in which replay does thousands of
/// blocks (see the operators guide for the figures).
pub const DEFAULT_BOOTSTRAP_MIN_GAP_BLOCKS: u64 = 10_000;
/// Default of `bootstrap_stall_secs`: how long an EL sync may show no progress before `auto`
/// falls back to replay.
pub const DEFAULT_BOOTSTRAP_STALL_SECS: u64 = 300;

/// Which kind of chain the EL runs: decides payload versions and transaction decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainKind {
    /// OP Stack (op-geth, op-reth).
    Optimism,
    /// Post-merge Ethereum-style (geth, reth).
    Ethereum,
}

/// Which source label the local head follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Follow {
    /// The head follows the sources' `safe` block (default: no unsafe blocks reach the EL).
    Safe,
    /// The head follows the sources' `latest` block.
    Latest,
}

impl Follow {
    /// The agreed block the local head follows.
    pub fn target(self, agreed: &crate::chain::Heads) -> crate::chain::BlockRef {
        match self {
            Self::Safe => agreed.safe,
            Self::Latest => agreed.head,
        }
    }
}

/// How a far-behind EL is brought up to the sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bootstrap {
    /// EL sync when the EL is more than `bootstrap_min_gap_blocks` behind and has peers;
    /// replay otherwise, and after a stalled EL sync.
    Auto,
    /// Always let the EL sync from its peers when it is behind; never fall back.
    ElSync,
    /// Always replay every block through newPayload.
    Replay,
}

/// How blocks are fetched from the sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fetch {
    /// Raw blocks from every source that serves `debug_getRawBlock`, JSON from the others
    /// (decided per source, from its first answer).
    Auto,
    /// Raw blocks only: a source without the debug API cannot serve blocks.
    Raw,
    /// JSON blocks with typed transactions only (`eth_getBlockBy*`).
    Json,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// One source: a URL, or a table with a name. Debug output redacts credentials.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SourceEntry {
    /// Just the URL.
    Url(String),
    /// URL with a name for logs, and the source's own limits.
    Named {
        /// http(s):// or ws(s):// JSON-RPC URL.
        url: String,
        /// Name used in logs (defaults to the URL's host).
        name: Option<String>,
        /// At most this many JSON-RPC calls per second to it (each call of a batch counts;
        /// HTTP sources), for a provider plan's rate limit. Unlimited when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_requests_per_second: Option<u32>,
        /// At most this many blocks in one JSON-RPC batch to it (lowers the global
        /// `fetch_batch` for this source: a provider's batch cap). Learned anyway when the
        /// source refuses a batch for its size; setting it skips the refusals.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fetch_batch: Option<usize>,
    },
}

impl fmt::Debug for SourceEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceEntry")
            .field("url", &RedactedUrl::new(self.url()))
            .field("name", &self.name())
            .finish()
    }
}

impl SourceEntry {
    /// The URL.
    pub fn url(&self) -> &str {
        match self {
            Self::Url(u) | Self::Named { url: u, .. } => u,
        }
    }

    /// The configured name, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Url(_) => None,
            Self::Named { name, .. } => name.as_deref(),
        }
    }

    /// Its own `fetch_batch`, if set.
    pub fn fetch_batch(&self) -> Option<usize> {
        match self {
            Self::Url(_) => None,
            Self::Named { fetch_batch, .. } => *fetch_batch,
        }
    }

    /// Its `max_requests_per_second`, if set.
    pub fn max_requests_per_second(&self) -> Option<u32> {
        match self {
            Self::Url(_) => None,
            Self::Named { max_requests_per_second, .. } => *max_requests_per_second,
        }
    }
}

/// Engine API and EL JSON-RPC settings. Debug output redacts credentials in the URLs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Authenticated Engine API URL.
    pub url: String,
    /// File holding the 32-byte hex JWT secret shared with the EL.
    pub jwt_secret_file: PathBuf,
    /// The EL's JSON-RPC URL (local heads are read back from it).
    pub rpc_url: String,
    /// Timeout of engine_newPayload, ms.
    pub new_payload_timeout_ms: u64,
    /// Timeout of engine_forkchoiceUpdated, ms.
    pub forkchoice_timeout_ms: u64,
    /// Timeout of other calls to the EL, ms.
    pub call_timeout_ms: u64,
}

impl fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineConfig")
            .field("url", &RedactedUrl::new(&self.url))
            .field("jwt_secret_file", &self.jwt_secret_file)
            .field("rpc_url", &RedactedUrl::new(&self.rpc_url))
            .field("new_payload_timeout_ms", &self.new_payload_timeout_ms)
            .field("forkchoice_timeout_ms", &self.forkchoice_timeout_ms)
            .field("call_timeout_ms", &self.call_timeout_ms)
            .finish()
    }
}

/// Operations API settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of /metrics, /healthz, /readyz, /status ("" disables the API).
    pub listen: String,
    /// /readyz answers ready only within this many blocks of the sources' target.
    pub ready_max_lag_blocks: u64,
}

/// Default API address.
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:9301";
/// Default readiness lag bound.
pub const DEFAULT_READY_MAX_LAG_BLOCKS: u64 = 4;

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// text or json.
    pub format: LogFormat,
    /// A tracing filter: a level (`info`) or directives (`lightcl=debug,info`).
    pub level: String,
}

impl LogConfig {
    /// The tracing filter for `level`, with the HTTP transport's spans held at info: at debug
    /// they carry the full request URL, API keys included, into every event inside them.
    pub fn filter(&self) -> tracing_subscriber::EnvFilter {
        let filter = tracing_subscriber::EnvFilter::try_new(&self.level)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        match "alloy_transport_http=info".parse() {
            Ok(d) => filter.add_directive(d),
            Err(_) => filter,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A named network (`lightcl networks` lists them): sets `chain`, `chain_id`, the genesis
    /// block and, with an `[l1]` section, its L1 chain id and contracts; keys given override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// optimism or ethereum.
    pub chain: ChainKind,
    /// The chain id every source and the EL must report.
    pub chain_id: u64,
    /// The hash every source and the EL must hold at `genesis_number` (from the network preset;
    /// unset without one: learned from the first source that answers, then required of the EL
    /// and the other sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis_hash: Option<alloy_primitives::B256>,
    /// The height of that genesis block (0 for nearly every chain).
    #[serde(default)]
    pub genesis_number: u64,
    /// Ethereum chains: the deposit contract whose `DepositEvent` logs are a Prague block's
    /// deposit requests (from the network preset; mainnet's when unset). Not for OP chains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deposit_contract: Option<alloy_primitives::Address>,
    /// Ethereum chains: send a Prague block's `requestsHash` in engine_newPayloadV4 in place of
    /// its requests list, which then is not rebuilt. Only for ELs that accept it: reth started
    /// with `--engine.accept-execution-requests-hash` (every EL lightcl drives). Off by default.
    #[serde(default)]
    pub send_requests_hash: bool,
    /// Source RPCs (one or more).
    pub sources: Vec<SourceEntry>,
    /// How many sources must agree (by hash) before a label moves: all, majority, or a number.
    pub quorum: quorum::Quorum,
    /// safe or latest.
    pub follow: Follow,
    /// Poll interval of the sources, ms.
    pub poll_interval_ms: u64,
    /// Poll just after the next block is due (learned from the latest blocks' timestamps), the
    /// interval above being the longest wait; false: poll on the fixed interval.
    pub poll_aligned: bool,
    /// Blocks fetched ahead of the EL while catching up.
    pub prefetch: usize,
    /// Concurrent block requests while catching up.
    pub fetch_concurrency: usize,
    /// auto, raw or json.
    pub fetch: Fetch,
    /// Blocks per JSON-RPC batch request while catching up and recovering (1: no batches; at
    /// most half of `prefetch` is used).
    pub fetch_batch: usize,
    /// Verified blocks held in memory for reuse, MiB (0: none): a block needed again (a stuck
    /// EL fed again, a bootstrap falling back to replay, a recovery) is not fetched twice.
    pub block_cache_mib: usize,
    /// Timeout of one source request, ms.
    pub source_timeout_ms: u64,
    /// Once enough sources answered a quorum read, how long the others still get, ms.
    pub quorum_grace_ms: u64,
    /// Largest answer accepted from a source or the EL, MiB.
    pub max_response_mib: usize,
    /// Interval of the catch-up progress log, ms.
    pub progress_interval_ms: u64,
    /// Folder of the state file (the finality floor lightcl remembers across restarts).
    pub state_dir: PathBuf,
    /// auto, el-sync or replay.
    pub bootstrap: Bootstrap,
    /// In `auto`: EL sync only when the EL is more than this many blocks behind.
    pub bootstrap_min_gap_blocks: u64,
    /// No EL sync progress for this long: `auto` falls back to replay, seconds.
    pub bootstrap_stall_secs: u64,
    /// Engine API and EL settings (with `[[engines]]`: the timeouts every replica uses).
    pub engine: EngineConfig,
    /// The replica ELs of a fleet, each with a name (empty: the one EL of `[engine]`).
    pub engines: Vec<EngineEntry>,
    /// independent or lockstep: how the safe and finalized labels of a fleet's replicas move.
    pub labels: LabelMode,
    /// Operations API.
    pub api: ApiConfig,
    /// Logging.
    pub log: LogConfig,
    /// Verification against L1 (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l1: Option<L1Config>,
    /// Address of the read-only rollup RPC (`optimism_syncStatus`, `optimism_outputAtBlock`,
    /// op-node's shapes); "" (the default) serves none.
    #[serde(default)]
    pub rollup_rpc_listen: String,
}

/// Ethereum mainnet's deposit contract (EIP-6110), the default for `deposit_contract`.
pub const MAINNET_DEPOSIT_CONTRACT: alloy_primitives::Address =
    alloy_eips::eip6110::MAINNET_DEPOSIT_CONTRACT_ADDRESS;

impl Config {
    /// The deposit contract of an Ethereum chain: as configured, else the known network's of
    /// its chain id (validation requires one of the two), else mainnet's.
    pub fn deposit_contract(&self) -> alloy_primitives::Address {
        self.deposit_contract
            .or_else(|| network::deposit_contract_of(self.chain_id))
            .unwrap_or(MAINNET_DEPOSIT_CONTRACT)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            network: None,
            chain: ChainKind::Optimism,
            chain_id: 0,
            genesis_hash: None,
            genesis_number: 0,
            deposit_contract: None,
            send_requests_hash: false,
            sources: Vec::new(),
            quorum: quorum::Quorum::default(),
            follow: Follow::Safe,
            poll_interval_ms: DEFAULT_POLL_INTERVAL_MS,
            poll_aligned: true,
            prefetch: DEFAULT_PREFETCH,
            fetch_concurrency: DEFAULT_FETCH_CONCURRENCY,
            fetch: Fetch::Auto,
            fetch_batch: DEFAULT_FETCH_BATCH,
            block_cache_mib: DEFAULT_BLOCK_CACHE_MIB,
            source_timeout_ms: DEFAULT_SOURCE_TIMEOUT_MS,
            quorum_grace_ms: DEFAULT_QUORUM_GRACE_MS,
            max_response_mib: DEFAULT_MAX_RESPONSE_MIB,
            progress_interval_ms: DEFAULT_PROGRESS_INTERVAL_MS,
            state_dir: DEFAULT_STATE_DIR.into(),
            bootstrap: Bootstrap::Auto,
            bootstrap_min_gap_blocks: DEFAULT_BOOTSTRAP_MIN_GAP_BLOCKS,
            bootstrap_stall_secs: DEFAULT_BOOTSTRAP_STALL_SECS,
            engine: EngineConfig {
                url: DEFAULT_ENGINE_URL.into(),
                jwt_secret_file: DEFAULT_JWT_SECRET_FILE.into(),
                rpc_url: DEFAULT_EL_RPC_URL.into(),
                new_payload_timeout_ms: DEFAULT_NEW_PAYLOAD_TIMEOUT_MS,
                forkchoice_timeout_ms: DEFAULT_FORKCHOICE_TIMEOUT_MS,
                call_timeout_ms: DEFAULT_EL_CALL_TIMEOUT_MS,
            },
            engines: Vec::new(),
            labels: LabelMode::Independent,
            api: ApiConfig {
                listen: DEFAULT_API_LISTEN.into(),
                ready_max_lag_blocks: DEFAULT_READY_MAX_LAG_BLOCKS,
            },
            log: LogConfig { format: LogFormat::Text, level: "info".into() },
            l1: None,
            rollup_rpc_listen: String::new(),
        }
    }
}

/// A configuration error: which key, where its value came from, what is wrong, what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file, the environment or a flag could not be read or has a wrong or unknown key.
    #[error("configuration: {0}")]
    Load(String),
    /// A value is present but not acceptable.
    #[error("configuration key `{key}` (from {origin}): {problem}")]
    Invalid {
        /// Dotted key.
        key: String,
        /// Where the value came from.
        origin: String,
        /// What is wrong and what to do.
        problem: String,
    },
}

/// A provider for values given as command-line flags (only the flags that were set).
#[derive(Debug, Clone, Default)]
pub struct FlagValues(pub Dict);

impl Provider for FlagValues {
    fn metadata(&self) -> Metadata {
        Metadata::named("command-line flag")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut map = Map::new();
        map.insert(Profile::Default, self.0.clone());
        Ok(map)
    }
}

/// The environment variables lightcl reads itself (not configuration keys).
const NON_CONFIG_ENV: [&str; 1] = ["config"];

impl Config {
    /// Merges defaults, the file (if any), `LIGHTCL_*` variables and flags, then validates.
    pub fn load(file: Option<&Path>, flags: FlagValues) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file
            && !path.is_file()
        {
            return Err(ConfigError::Load(format!(
                "config file {} does not exist or is not a file; pass an existing TOML file \
                     with --config (see config.example.toml)",
                path.display()
            )));
        }
        // The layers the operator gave, lowest first; a network preset goes below them all.
        let given = |fig: Figment| {
            let fig = match file {
                Some(path) => fig.merge(Toml::file_exact(path)),
                None => fig,
            };
            fig.merge(Env::prefixed("LIGHTCL_").split("__").ignore(&NON_CONFIG_ENV))
                .merge(flags.clone())
        };
        let probe = given(Figment::new());
        if let Ok(name) = probe.extract_inner::<String>("network")
            && !name.is_empty()
        {
            let Some(network) = network::find(&name) else {
                let near = network::suggest(&name);
                return Err(ConfigError::Invalid {
                    key: "network".into(),
                    origin: origin(&probe, "network"),
                    problem: format!(
                        "`{name}` is not a known network{}; `lightcl networks` lists them (or \
                         leave `network` out and set chain and chain_id)",
                        if near.is_empty() {
                            String::new()
                        } else {
                            format!(" (did you mean {}?)", near.join(", "))
                        }
                    ),
                });
            };
            let values = network.values(probe.contains("l1"));
            fig = fig.merge(network::Preset { network, values });
        }
        fig = given(fig);
        let config: Config = fig.extract().map_err(|e| ConfigError::Load(describe(e)))?;
        config.validate(&fig)?;
        Ok(config)
    }

    /// Who names the genesis block lightcl checks, for messages.
    pub fn genesis_named_by(&self) -> String {
        match &self.network {
            Some(n) => format!("the network preset {n} (or genesis_hash)"),
            None => "genesis_hash in the configuration".into(),
        }
    }

    /// Checks every value that deserialised but may still be unusable.
    pub fn validate(&self, fig: &Figment) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| ConfigError::Invalid {
            key: key.to_string(),
            origin: origin(fig, key),
            problem,
        };
        if let Some(name) = &self.network
            && let Some(n) = network::find(name)
            && (n.chain_id != self.chain_id || n.kind != self.chain)
        {
            let key = if n.chain_id != self.chain_id { "chain_id" } else { "chain" };
            return Err(bad(
                key,
                format!(
                    "contradicts `network = \"{name}\"` ({}, chain id {}): remove one of them",
                    n.kind, n.chain_id
                ),
            ));
        }
        if self.deposit_contract.is_some() && self.chain != ChainKind::Ethereum {
            return Err(bad(
                "deposit_contract",
                "is for Ethereum chains (chain = \"ethereum\"), whose Prague blocks carry \
                 deposit requests; OP chains have none: remove it"
                    .into(),
            ));
        }
        if self.send_requests_hash && self.chain != ChainKind::Ethereum {
            return Err(bad(
                "send_requests_hash",
                "is for Ethereum chains (chain = \"ethereum\") followed by reth started with \
                 --engine.accept-execution-requests-hash; OP chains send no requests: remove it"
                    .into(),
            ));
        }
        if self.chain == ChainKind::Ethereum
            && self.chain_id != 0
            && self.deposit_contract.is_none()
            && network::deposit_contract_of(self.chain_id).is_none()
        {
            return Err(bad(
                "deposit_contract",
                format!(
                    "is needed for chain id {} (not a network lightcl knows): from Prague on, \
                     blocks carry deposit requests rebuilt from that contract's logs; set it to \
                     the address in the chain's genesis config.depositContractAddress",
                    self.chain_id
                ),
            ));
        }
        if self.chain_id == 0 {
            return Err(bad(
                "chain_id",
                "is missing or 0; set it to the chain id the sources and the EL serve \
                 (for example 10 for OP Mainnet)"
                    .into(),
            ));
        }
        if self.sources.is_empty() {
            return Err(bad(
                "sources",
                "no source configured; give at least one http(s):// or ws(s):// JSON-RPC URL"
                    .into(),
            ));
        }
        for (i, s) in self.sources.iter().enumerate() {
            check_url(s.url(), &["http", "https", "ws", "wss"])
                .map_err(|p| bad(&format!("sources[{i}]"), p))?;
            match s.max_requests_per_second() {
                Some(0) => {
                    return Err(bad(
                        &format!("sources[{i}].max_requests_per_second"),
                        "is 0, which would never send a request; give the calls per second the \
                         provider's plan allows, or leave it out for no limit"
                            .into(),
                    ));
                }
                Some(_) if s.url().starts_with("ws") => {
                    return Err(bad(
                        &format!("sources[{i}].max_requests_per_second"),
                        "is only applied to http(s) sources so far; use the provider's \
                         https:// URL for a rate-limited source, or leave the key out"
                            .into(),
                    ));
                }
                _ => {}
            }
            if s.fetch_batch() == Some(0) {
                return Err(bad(
                    &format!("sources[{i}].fetch_batch"),
                    "is 0; give the most blocks the provider takes in one batch (1 for no \
                     batches), or leave it out"
                        .into(),
                ));
            }
        }
        self.quorum.check(self.sources.len()).map_err(|p| bad("quorum", p))?;
        check_url(&self.engine.url, &["http", "https"]).map_err(|p| bad("engine.url", p))?;
        check_url(&self.engine.rpc_url, &["http", "https"])
            .map_err(|p| bad("engine.rpc_url", p))?;
        if self.engines.is_empty() {
            crate::jwt::JwtSecret::from_file(&self.engine.jwt_secret_file)
                .map_err(|e| bad("engine.jwt_secret_file", e.to_string()))?;
        }
        self.check_replicas().map_err(|(key, problem)| bad(&key, problem))?;
        if let Some(l1) = &self.l1 {
            l1.check(self.chain).map_err(|(key, problem)| bad(&key, problem))?;
        }
        let positive = [
            ("poll_interval_ms", self.poll_interval_ms),
            ("prefetch", self.prefetch as u64),
            ("fetch_concurrency", self.fetch_concurrency as u64),
            ("fetch_batch", self.fetch_batch as u64),
            ("source_timeout_ms", self.source_timeout_ms),
            ("max_response_mib", self.max_response_mib as u64),
            ("progress_interval_ms", self.progress_interval_ms),
            ("bootstrap_min_gap_blocks", self.bootstrap_min_gap_blocks),
            ("bootstrap_stall_secs", self.bootstrap_stall_secs),
            ("engine.new_payload_timeout_ms", self.engine.new_payload_timeout_ms),
            ("engine.forkchoice_timeout_ms", self.engine.forkchoice_timeout_ms),
            ("engine.call_timeout_ms", self.engine.call_timeout_ms),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(bad(key, "must be greater than 0".into()));
            }
        }
        if !self.api.listen.is_empty() && self.api.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(bad(
                "api.listen",
                format!(
                    "`{}` is not an address:port (e.g. 127.0.0.1:9301); \"\" disables the API",
                    self.api.listen
                ),
            ));
        }
        if !self.rollup_rpc_listen.is_empty()
            && self.rollup_rpc_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(bad(
                "rollup_rpc_listen",
                format!(
                    "`{}` is not an address:port (e.g. 127.0.0.1:9545); \"\" serves none",
                    self.rollup_rpc_listen
                ),
            ));
        }
        if self.fetch_concurrency > self.prefetch {
            return Err(bad(
                "fetch_concurrency",
                format!("({}) may not exceed prefetch ({})", self.fetch_concurrency, self.prefetch),
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(bad(
                "log.level",
                format!(
                    "`{}` is not a level or filter (try info, debug, or lightcl=debug)",
                    self.log.level
                ),
            ));
        }
        Ok(())
    }

    /// The poll interval.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// A one-screen summary with credentials redacted.
    pub fn summary(&self) -> String {
        let sources: Vec<String> =
            self.sources.iter().map(|s| RedactedUrl::new(s.url()).to_string()).collect();
        let engines: Vec<String> = self
            .replicas()
            .iter()
            .map(|r| {
                format!(
                    "{}: engine={} el_rpc={} jwt_secret_file={}",
                    r.name,
                    RedactedUrl::new(&r.engine.url),
                    RedactedUrl::new(&r.engine.rpc_url),
                    r.engine.jwt_secret_file.display()
                )
            })
            .collect();
        format!(
            "chain={:?} chain_id={} follow={:?} bootstrap={:?} fetch={:?} sources=[{}] quorum={} replicas=[{}] labels={:?} state_dir={}",
            self.chain,
            self.chain_id,
            self.follow,
            self.bootstrap,
            self.fetch,
            sources.join(", "),
            self.quorum,
            engines.join("; "),
            self.labels,
            self.state_dir.display()
        )
    }
}

fn check_url(raw: &str, schemes: &[&str]) -> Result<(), String> {
    let shown = RedactedUrl::new(raw);
    let url = url::Url::parse(raw).map_err(|e| format!("`{shown}` is not a URL ({e})"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!(
            "`{shown}` has scheme `{}`; expected one of: {}",
            url.scheme(),
            schemes.join(", ")
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{shown}` has no host"));
    }
    Ok(())
}

/// Where the value of `key` came from: "file config.toml", "environment variable
/// LIGHTCL_ENGINE__URL", "command-line flag" or "built-in default".
fn origin(fig: &Figment, key: &str) -> String {
    let base = key.split('[').next().unwrap_or(key);
    match fig.find_metadata(base) {
        Some(md) => describe_metadata(md, base),
        None => "built-in default".into(),
    }
}

fn describe_metadata(md: &Metadata, key: &str) -> String {
    match &md.source {
        Some(figment::Source::File(path)) => format!("file {}", path.display()),
        _ if md.name.contains("environment") => {
            let keys: Vec<&str> = key.split('.').collect();
            format!("environment variable {}", md.interpolate(&Profile::Default, &keys))
        }
        Some(figment::Source::Code(_)) => "built-in default".into(),
        _ => md.name.to_string(),
    }
}

/// Turns a figment error into one sentence per problem, each naming key and origin.
fn describe(err: figment::Error) -> String {
    let mut out = Vec::new();
    for e in err {
        let key = e.path.join(".");
        let from = e.metadata.as_ref().map(|m| describe_metadata(m, &key));
        let what = match &e.kind {
            figment::error::Kind::UnknownField(field, _) => {
                let full = if key.is_empty() {
                    field.clone()
                } else if e.path.last() == Some(field) {
                    key.clone()
                } else {
                    format!("{key}.{field}")
                };
                let from = e
                    .metadata
                    .as_ref()
                    .map(|m| describe_metadata(m, &full))
                    .unwrap_or_else(|| "unknown origin".into());
                format!(
                    "unknown key `{full}` (from {from}); check its spelling against \
                     config.example.toml"
                )
            }
            kind => format!(
                "key `{key}` (from {}): {kind}",
                from.unwrap_or_else(|| "unknown origin".into())
            ),
        };
        out.push(what);
    }
    out.join("; ")
}

impl fmt::Display for ChainKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Optimism => "optimism",
            Self::Ethereum => "ethereum",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).expect("write");
        p
    }

    fn base(dir: &Path) -> String {
        let jwt = write(dir, "jwt.hex", &"ab".repeat(32));
        format!(
            "chain = \"optimism\"\nchain_id = 901\nsources = [\"http://127.0.0.1:9545\"]\n\
             [engine]\njwt_secret_file = \"{}\"\n",
            jwt.display()
        )
    }

    #[test]
    fn the_deposit_contract_is_known_configured_or_asked_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let eth = |rest: &str| {
            let body = base(dir.path()).replace("chain = \"optimism\"", "chain = \"ethereum\"");
            let body = body.replace("chain_id = 901", rest);
            write(dir.path(), "eth.toml", &body)
        };
        let sepolia = Config::load(Some(&eth("network = \"sepolia\"")), FlagValues::default())
            .expect("a preset names it");
        assert_eq!(
            sepolia.deposit_contract().to_string(),
            "0x7f02C3E3c98b133055B8B348B2Ac625669Ed295D"
        );
        let hoodi = Config::load(Some(&eth("chain_id = 560048")), FlagValues::default())
            .expect("a known chain id names it");
        assert_eq!(hoodi.deposit_contract(), MAINNET_DEPOSIT_CONTRACT);
        let msg = Config::load(Some(&eth("chain_id = 1337")), FlagValues::default())
            .expect_err("a devnet must name it")
            .to_string();
        assert!(
            msg.contains("`deposit_contract`") && msg.contains("depositContractAddress"),
            "{msg}"
        );
        let dev =
            "chain_id = 1337\ndeposit_contract = \"0x0000000000000000000000000000000000006110\"";
        let c = Config::load(Some(&eth(dev)), FlagValues::default()).expect("named");
        assert_eq!(c.deposit_contract().to_string(), "0x0000000000000000000000000000000000006110");
        let op = base(dir.path()).replace(
            "[engine]",
            "deposit_contract = \"0x0000000000000000000000000000000000006110\"\n[engine]",
        );
        let msg = Config::load(Some(&write(dir.path(), "op.toml", &op)), FlagValues::default())
            .map(|_| ())
            .expect_err("not for OP chains")
            .to_string();
        assert!(msg.contains("`deposit_contract`"), "{msg}");
        let op = base(dir.path()).replace("[engine]", "send_requests_hash = true\n[engine]");
        let msg = Config::load(Some(&write(dir.path(), "op2.toml", &op)), FlagValues::default())
            .map(|_| ())
            .expect_err("not for OP chains")
            .to_string();
        assert!(msg.contains("`send_requests_hash`"), "{msg}");
    }

    #[test]
    fn a_network_preset_needs_no_other_chain_key_and_given_keys_override_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jwt = write(dir.path(), "jwt.hex", &"ab".repeat(32));
        use figment::value::Value;
        let flags = |extra: &[(&str, Value)]| {
            let mut top = Dict::new();
            top.insert("network".into(), "op-mainnet".into());
            top.insert("sources".into(), vec!["http://127.0.0.1:9545".to_string()].into());
            let mut engine = Dict::new();
            engine.insert("jwt_secret_file".into(), jwt.display().to_string().into());
            top.insert("engine".into(), engine.into());
            for (k, v) in extra {
                top.insert((*k).into(), v.clone());
            }
            FlagValues(top)
        };
        let c = Config::load(None, flags(&[])).expect("a preset and a source are enough");
        assert_eq!((c.chain, c.chain_id, c.genesis_number), (ChainKind::Optimism, 10, 0));
        let op = network::find("op-mainnet").expect("preset");
        assert_eq!(c.genesis_hash, Some(op.genesis.hash));
        assert!(c.l1.is_none(), "no [l1] section is made up");
        // A key given overrides the preset (here the genesis), but one that contradicts the
        // network (another chain id) is refused.
        let other = "0x1111111111111111111111111111111111111111111111111111111111111111";
        let c = Config::load(None, flags(&[("genesis_hash", other.into())])).expect("loads");
        assert_eq!(c.genesis_hash.map(|h| h.to_string()), Some(other.to_string()));
        let msg = Config::load(None, flags(&[("chain_id", 11u64.into())]))
            .expect_err("contradicts the network")
            .to_string();
        assert!(msg.contains("`chain_id`") && msg.contains("op-mainnet"), "{msg}");
        // With an [l1] section, the preset names the L1 chain and the contracts.
        let file = write(dir.path(), "l1.toml", "[l1]\nurls = [\"http://127.0.0.1:8545\"]\n");
        let c = Config::load(Some(&file), flags(&[])).expect("loads");
        let l1 = c.l1.expect("[l1]");
        assert_eq!((l1.chain_id, l1.portal), (Some(1), op.portal));
        assert!(l1.portal.is_some() && l1.dispute_game_factory.is_some());
        // An unknown name is refused with a suggestion.
        let msg = Config::load(None, flags(&[("network", "op-mainet".into())]))
            .expect_err("unknown")
            .to_string();
        assert!(msg.contains("`network`") && msg.contains("op-mainnet"), "{msg}");
    }

    #[test]
    fn file_values_override_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "c.toml", &base(dir.path()));
        let c = Config::load(Some(&file), FlagValues::default()).expect("load");
        assert_eq!(c.chain_id, 901);
        assert_eq!(c.follow, Follow::Safe);
        assert_eq!(c.engine.url, DEFAULT_ENGINE_URL);
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "c.toml", &base(dir.path()));
        let mut flags = Dict::new();
        flags.insert("chain_id".into(), 77u64.into());
        let c = Config::load(Some(&file), FlagValues(flags)).expect("load");
        assert_eq!(c.chain_id, 77);
    }

    #[test]
    fn unknown_key_is_named_with_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = base(dir.path()).replace("[engine]", "poll_intervall_ms = 5\n[engine]");
        let file = write(dir.path(), "c.toml", &body);
        let err = Config::load(Some(&file), FlagValues::default()).expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("unknown key `poll_intervall_ms`"), "{msg}");
        assert!(msg.contains("c.toml"), "{msg}");
        // Nested keys are named with their table.
        let body = format!("{}\nurll = \"x\"\n", base(dir.path()));
        let file = write(dir.path(), "d.toml", &body);
        let msg = Config::load(Some(&file), FlagValues::default()).expect_err("fail").to_string();
        assert!(msg.contains("unknown key `engine.urll`"), "{msg}");
    }

    #[test]
    fn bad_url_names_key_and_flag_origin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), "c.toml", &base(dir.path()));
        let mut engine = Dict::new();
        engine.insert("url".into(), "ftp://x".into());
        let mut flags = Dict::new();
        flags.insert("engine".into(), engine.into());
        let msg = Config::load(Some(&file), FlagValues(flags)).expect_err("fail").to_string();
        assert!(msg.contains("`engine.url`") && msg.contains("command-line flag"), "{msg}");
    }

    #[test]
    fn a_source_rate_limit_is_read_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let with = |entry: &str| {
            let body = base(dir.path()).replace("[\"http://127.0.0.1:9545\"]", entry);
            let file = write(dir.path(), "c.toml", &body);
            Config::load(Some(&file), FlagValues::default())
        };
        let c = with("[{ url = \"https://p.example/v2/k\", max_requests_per_second = 25 }]")
            .expect("loads");
        assert_eq!(c.sources[0].max_requests_per_second(), Some(25));
        let msg = with("[{ url = \"https://p.example/v2/k\", max_requests_per_second = 0 }]")
            .expect_err("0")
            .to_string();
        assert!(
            msg.contains("sources[0].max_requests_per_second") && msg.contains("is 0"),
            "{msg}"
        );
        let msg = with("[{ url = \"wss://p.example/ws/k\", max_requests_per_second = 5 }]")
            .expect_err("ws")
            .to_string();
        assert!(msg.contains("only applied to http(s) sources"), "{msg}");
    }

    #[test]
    fn bad_jwt_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = base(dir.path());
        write(dir.path(), "jwt.hex", "not hex");
        let file = write(dir.path(), "c.toml", &body);
        let msg = Config::load(Some(&file), FlagValues::default()).expect_err("fail").to_string();
        assert!(msg.contains("engine.jwt_secret_file"), "{msg}");
    }

    #[test]
    fn missing_chain_id_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = base(dir.path()).replace("chain_id = 901\n", "");
        let file = write(dir.path(), "c.toml", &body);
        let msg = Config::load(Some(&file), FlagValues::default()).expect_err("fail").to_string();
        assert!(msg.contains("`chain_id`"), "{msg}");
    }

    #[test]
    fn wrong_enum_value_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = base(dir.path()).replace("\"optimism\"", "\"arbitrum\"");
        let file = write(dir.path(), "c.toml", &body);
        let msg = Config::load(Some(&file), FlagValues::default()).expect_err("fail").to_string();
        assert!(msg.contains("chain") && msg.contains("c.toml"), "{msg}");
    }

    #[test]
    fn debug_output_redacts_credentials() {
        let mut c = Config {
            sources: vec![SourceEntry::Url(
                "https://u:hunter2@rpc.example/v1/abcDEF1234567890abcd".into(),
            )],
            ..Config::default()
        };
        c.engine.rpc_url = "http://admin:s3cret@127.0.0.1:8545".into();
        let shown = format!("{c:?} {}", c.summary());
        assert!(!shown.contains("hunter2") && !shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("abcDEF1234567890abcd"), "{shown}");
    }

    #[test]
    fn named_sources_parse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let body = base(dir.path()).replace(
            "sources = [\"http://127.0.0.1:9545\"]",
            "sources = [{ url = \"ws://127.0.0.1:9546\", name = \"a\" }, \"http://b:1\"]",
        );
        let file = write(dir.path(), "c.toml", &body);
        let c = Config::load(Some(&file), FlagValues::default()).expect("load");
        assert_eq!(c.sources[0].name(), Some("a"));
        assert_eq!(c.sources[1].url(), "http://b:1");
    }
}
