//! Which EL program a node runs: geth and op-geth (built from the Go module proxy) or reth and
//! op-reth (unpacked from the shared folder: op-reth on two lines, 1.10.2 from the reth
//! repository and the production 2.x from the optimism monorepo), and where each binary is found.

use std::path::PathBuf;

use crate::genesis::ChainKind;
use crate::{Error, repo_root};

/// Set (to anything) when op-reth 2.x must be the OP follower: its absence then fails the test
/// instead of letting op-geth stand in ([`ElClient::follower_for`]).
pub const REQUIRE_OP_RETH_2: &str = "TESTBED_REQUIRE_OP_RETH_2";

/// An EL implementation the test bed can spawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElClient {
    /// go-ethereum (Ethereum chain).
    Geth,
    /// op-geth (OP Stack chain).
    OpGeth,
    /// reth (Ethereum chain).
    Reth,
    /// op-reth 1.10.2 (OP Stack chain), the last release from the reth repository.
    OpReth,
    /// op-reth 2.x (OP Stack chain), the production line from the optimism monorepo
    /// (`OP_RETH_2_VERSION` in `scripts/els.env`): the OP follower of the end-to-end tests.
    OpReth2,
}

impl ElClient {
    /// Every client, geth family first.
    pub const ALL: [ElClient; 5] =
        [Self::Geth, Self::OpGeth, Self::Reth, Self::OpReth, Self::OpReth2];

    /// The geth-family client for `kind` (the test bed's default).
    pub fn default_for(kind: ChainKind) -> Self {
        match kind {
            ChainKind::Ethereum => Self::Geth,
            ChainKind::Optimism => Self::OpGeth,
        }
    }

    /// The reth-family client for `kind` (op-reth 1.10.2 for OP: the line the sources' tests
    /// were written on; [`Self::follower_for`] picks the production line).
    pub fn reth_for(kind: ChainKind) -> Self {
        match kind {
            ChainKind::Ethereum => Self::Reth,
            ChainKind::Optimism => Self::OpReth,
        }
    }

    /// The EL that follows in the end-to-end tests of `kind`: geth for Ethereum, and for OP the
    /// production op-reth 2.x. Where op-reth 2.x is not installed at all (no shared folder, no
    /// `TESTBED_OP_RETH_2_BIN`), op-geth stands in, and the test says so on stderr: the tests of
    /// lightcl's own behaviour still run, on the EL that is there. Never silently: a
    /// `TESTBED_OP_RETH_2_BIN` that names no file, or a missing binary while
    /// `TESTBED_REQUIRE_OP_RETH_2` is set (the test command sets it whenever the shared folder
    /// holds op-reth 2.x), panics with the reason instead.
    pub fn follower_for(kind: ChainKind) -> Self {
        match (kind, Self::OpReth2.binary()) {
            (ChainKind::Ethereum, _) => Self::Geth,
            (ChainKind::Optimism, Ok(_)) => Self::OpReth2,
            (ChainKind::Optimism, Err(e)) => {
                let named = std::env::var_os(Self::OpReth2.env_var()).is_some();
                if named || std::env::var_os(REQUIRE_OP_RETH_2).is_some() {
                    panic!(
                        "op-reth 2.x must follow in this run ({REQUIRE_OP_RETH_2} or its binary variable is set): {e}"
                    );
                }
                eprintln!(
                    "SUBSTITUTED: op-reth 2.x is not installed (scripts/install-els.sh unpacks it \
                     from ../shared/els, or set {}): op-geth follows instead",
                    Self::OpReth2.env_var()
                );
                Self::OpGeth
            }
        }
    }

    /// The chain this client runs.
    pub fn chain(self) -> ChainKind {
        match self {
            Self::Geth | Self::Reth => ChainKind::Ethereum,
            Self::OpGeth | Self::OpReth | Self::OpReth2 => ChainKind::Optimism,
        }
    }

    /// Whether this is reth or op-reth (different flags, no `debug_setHead`).
    pub fn is_reth(self) -> bool {
        matches!(self, Self::Reth | Self::OpReth | Self::OpReth2)
    }

    /// Whether this is op-reth, either line.
    pub fn is_op_reth(self) -> bool {
        matches!(self, Self::OpReth | Self::OpReth2)
    }

    /// The program's name, also the file name in the EL cache.
    pub fn name(self) -> &'static str {
        match self {
            Self::Geth => "geth",
            Self::OpGeth => "op-geth",
            Self::Reth => "reth",
            Self::OpReth => "op-reth",
            Self::OpReth2 => "op-reth-2",
        }
    }

    /// The variable that points the test bed at an installed binary instead of the cache.
    pub fn env_var(self) -> &'static str {
        match self {
            Self::Geth => "TESTBED_GETH_BIN",
            Self::OpGeth => "TESTBED_OP_GETH_BIN",
            Self::Reth => "TESTBED_RETH_BIN",
            Self::OpReth => "TESTBED_OP_RETH_BIN",
            Self::OpReth2 => "TESTBED_OP_RETH_2_BIN",
        }
    }

    /// Parses `geth`, `op-geth`, `reth`, `op-reth` (1.10.2) or `op-reth-2` (2.x).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == s)
    }

    /// Path of the binary: the client's variable if set, else the cache that
    /// `scripts/install-els.sh` fills (`TESTBED_EL_CACHE` or `.cache/els`).
    pub fn binary(self) -> Result<PathBuf, Error> {
        let path = match std::env::var_os(self.env_var()) {
            Some(p) => PathBuf::from(p),
            None => std::env::var_os("TESTBED_EL_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join(".cache").join("els"))
                .join(self.name()),
        };
        if path.is_file() {
            Ok(path.canonicalize().unwrap_or(path))
        } else {
            Err(Error::MissingBinary {
                kind: self.name(),
                path: path.display().to_string(),
                env: self.env_var(),
                hint: if self.is_reth() {
                    "scripts/install-els.sh unpacks it from ../shared/els when that folder is \
                     there"
                } else {
                    "run scripts/install-els.sh"
                },
            })
        }
    }

    /// Whether the binary is there; when not, prints why the calling test does nothing. The
    /// reth family is not buildable from the registries, so on a machine without the shared
    /// folder its tests skip (loudly) rather than fail.
    pub fn available_or_skip(self, test: &str) -> bool {
        match self.binary() {
            Ok(_) => true,
            Err(e) if self.is_reth() => {
                eprintln!("SKIPPED {test}: {e}");
                false
            }
            // geth and op-geth are always installable: let the test fail on the spawn error.
            Err(_) => true,
        }
    }
}

impl std::fmt::Display for ElClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}
