//! Output roots and the L1 contracts that settle them: the v0 formula and the ABI of the reads
//! lightcl makes (pure).
//!
//! - Output root v0 = keccak256(32 zero bytes || state root || L2ToL1MessagePasser storage root
//!   || block hash). Since Isthmus the header's withdrawalsRoot is that storage root; before, it
//!   comes from `eth_getProof` of the message passer on the local EL.
//! - AnchorStateRegistry: `getAnchorRoot() returns (bytes32 root, uint256 l2SequenceNumber)`
//!   (contracts from v3), or `anchors(uint32 gameType) returns (bytes32, uint256)` (older).
//! - DisputeGameFactory: `gameCount() returns uint256`, `gameAtIndex(uint256) returns (uint32
//!   gameType, uint64 timestamp, address proxy)`.
//! - A dispute game: `rootClaim() returns bytes32`, `l2BlockNumber() returns uint256`,
//!   `status() returns uint8` (0 in progress, 1 challenger wins, 2 defender wins).

use alloy_primitives::{Address, B256, Bytes, keccak256};

pub use crate::chain::output::{MESSAGE_PASSER, OutputParts, output_root};

/// The 4-byte selector of a function signature.
pub fn selector(signature: &str) -> [u8; 4] {
    let h = keccak256(signature.as_bytes());
    [h[0], h[1], h[2], h[3]]
}

/// Calldata: the selector of `signature` and its arguments as 32-byte words.
pub fn calldata(signature: &str, args: &[B256]) -> Bytes {
    let mut d = selector(signature).to_vec();
    for a in args {
        d.extend_from_slice(a.as_slice());
    }
    d.into()
}

/// A number as an ABI word.
pub fn word_of(n: u64) -> B256 {
    B256::left_padding_from(&n.to_be_bytes())
}

/// Word `i` of an ABI answer.
pub fn word(data: &[u8], i: usize) -> Option<B256> {
    data.get(i * 32..(i + 1) * 32).map(B256::from_slice)
}

/// Word `i` as a number that must fit in 64 bits.
pub fn word_u64(data: &[u8], i: usize) -> Option<u64> {
    let w = word(data, i)?;
    if w[..24].iter().any(|b| *b != 0) {
        return None;
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&w[24..]);
    Some(u64::from_be_bytes(n))
}

/// Word `i` as an address (its high 12 bytes zero).
pub fn word_address(data: &[u8], i: usize) -> Option<Address> {
    let w = word(data, i)?;
    if w[..12].iter().any(|b| *b != 0) {
        return None;
    }
    Some(Address::from_slice(&w[12..]))
}

/// A dispute game's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GameStatus {
    /// Open: its root is a claim, not a fact.
    InProgress,
    /// Resolved against the claim.
    ChallengerWins,
    /// Resolved for the claim: L1 settled it.
    DefenderWins,
}

impl GameStatus {
    /// From the contract's enum value.
    pub fn from_u8(v: u64) -> Option<Self> {
        match v {
            0 => Some(Self::InProgress),
            1 => Some(Self::ChallengerWins),
            2 => Some(Self::DefenderWins),
            _ => None,
        }
    }

    /// As shown in logs and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::ChallengerWins => "challenger_wins",
            Self::DefenderWins => "defender_wins",
        }
    }
}

/// A root L1 holds for an L2 block: the anchor, or a dispute game's claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Root {
    /// The L2 block number it is the output root of.
    pub l2_number: u64,
    /// The output root.
    pub root: B256,
}

/// Reads a `(bytes32, uint256)` answer (the anchor).
pub fn decode_anchor(data: &[u8]) -> Option<L1Root> {
    Some(L1Root { root: word(data, 0)?, l2_number: word_u64(data, 1)? })
}

/// Reads `gameAtIndex`'s `(uint32 gameType, uint64 timestamp, address proxy)`.
pub fn decode_game_at(data: &[u8]) -> Option<(u32, u64, Address)> {
    let ty = u32::try_from(word_u64(data, 0)?).ok()?;
    Some((ty, word_u64(data, 1)?, word_address(data, 2)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_the_contracts() {
        // Checked against the published ABIs.
        assert_eq!(selector("gameCount()"), [0x4d, 0x19, 0x75, 0xb4]);
        assert_eq!(selector("status()"), [0x20, 0x0d, 0x2e, 0xd2]);
        assert_eq!(selector("rootClaim()"), [0xbc, 0xef, 0x3b, 0x55]);
        assert_eq!(selector("l2BlockNumber()"), [0x8b, 0x85, 0x90, 0x2b]);
        assert_eq!(selector("gameAtIndex(uint256)"), [0xbb, 0x8a, 0xa1, 0xfc]);
        assert_eq!(selector("getAnchorRoot()"), [0xd8, 0x3e, 0xf2, 0x67]);
        assert_eq!(selector("anchors(uint32)"), [0x72, 0x58, 0xa8, 0x07]);
        assert_eq!(selector("respectedGameType()"), [0x3c, 0x9f, 0x39, 0x7c]);
        assert_eq!(selector("isGameClaimValid(address)"), [0x6c, 0x4f, 0x44, 0x67]);
        assert_eq!(selector("disputeGameFactory()"), [0xf2, 0xb4, 0xe6, 0x17]);
        assert_eq!(selector("anchorStateRegistry()"), [0x5c, 0x0c, 0xba, 0x33]);
    }

    #[test]
    fn words_decode_strictly() {
        let mut d = vec![0u8; 96];
        d[31] = 7;
        d[63] = 9;
        d[95] = 0x11;
        assert_eq!(decode_game_at(&d), Some((7, 9, Address::with_last_byte(0x11))));
        d[40] = 1; // the timestamp does not fit 64 bits
        assert_eq!(decode_game_at(&d), None);
        assert_eq!(decode_anchor(&d[..40]), None);
        assert_eq!(word_of(258), B256::left_padding_from(&[1, 2]));
    }
}
