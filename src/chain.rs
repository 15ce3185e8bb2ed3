//! Small chain types shared by every module.

use std::fmt;

use alloy_primitives::B256;
use serde::{Deserialize, Serialize};

/// A block by height and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockRef {
    /// Height.
    pub number: u64,
    /// Hash.
    pub hash: B256,
}

impl BlockRef {
    /// A reference.
    pub const fn new(number: u64, hash: B256) -> Self {
        Self { number, hash }
    }
}

impl fmt::Display for BlockRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {}", self.number, self.hash)
    }
}

/// A block label a source or the EL reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Label {
    /// The newest block.
    Latest,
    /// The newest safe block.
    Safe,
    /// The newest finalized block.
    Finalized,
}

impl Label {
    /// The JSON-RPC block tag.
    pub const fn tag(self) -> &'static str {
        match self {
            Self::Latest => "latest",
            Self::Safe => "safe",
            Self::Finalized => "finalized",
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

/// The three labels of one chain view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Heads {
    /// Latest (the EL's head).
    pub head: BlockRef,
    /// Safe.
    pub safe: BlockRef,
    /// Finalized.
    pub finalized: BlockRef,
}
