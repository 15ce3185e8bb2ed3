//! The quorum policy: how many of the configured sources must agree (the agreement rules
//! themselves are in `source::quorum`).

use serde::{Deserialize, Serialize};

/// How many sources must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Quorum {
    /// "all" or "majority".
    Named(QuorumName),
    /// k of n.
    Count(usize),
}

/// The named policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuorumName {
    /// Every configured source.
    All,
    /// More than half of them.
    Majority,
}

impl Default for Quorum {
    fn default() -> Self {
        Self::Named(QuorumName::All)
    }
}

impl Quorum {
    /// Sources required out of `n`.
    pub fn required(self, n: usize) -> usize {
        match self {
            Self::Named(QuorumName::All) => n,
            Self::Named(QuorumName::Majority) => n / 2 + 1,
            Self::Count(k) => k,
        }
    }

    /// Checks the policy against `n` sources: 1..=n, and a strict majority so that two groups of
    /// sources that disagree can never both reach it.
    pub fn check(self, n: usize) -> Result<(), String> {
        let k = self.required(n);
        if k == 0 || k > n {
            return Err(format!(
                "requires {k} of {n} sources; use a number from {} to {n}",
                n / 2 + 1
            ));
        }
        if k * 2 <= n {
            return Err(format!(
                "{k} of {n} sources is not a majority: two groups of sources that disagree could \
                 both reach it; use at least {}",
                n / 2 + 1
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Named(QuorumName::All) => f.write_str("all"),
            Self::Named(QuorumName::Majority) => f.write_str("majority"),
            Self::Count(k) => write!(f, "{k}"),
        }
    }
}
