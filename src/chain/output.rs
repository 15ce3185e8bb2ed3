//! The output root of an OP block (version 0): what L1's dispute games and anchor commit to.

use alloy_primitives::{Address, B256, address, keccak256};

/// The L2ToL1MessagePasser predeploy, whose storage root goes into the output root.
pub const MESSAGE_PASSER: Address = address!("4200000000000000000000000000000000000016");

/// The output root (version 0) of an L2 block.
pub fn output_root(state_root: B256, message_passer_root: B256, block_hash: B256) -> B256 {
    let mut buf = [0u8; 128];
    buf[32..64].copy_from_slice(state_root.as_slice());
    buf[64..96].copy_from_slice(message_passer_root.as_slice());
    buf[96..128].copy_from_slice(block_hash.as_slice());
    keccak256(buf)
}

/// What an output root is made of, read from the local EL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputParts {
    /// The block.
    pub block: super::BlockRef,
    /// Its state root.
    pub state_root: B256,
    /// The message passer's storage root at it.
    pub message_passer_root: B256,
}

impl OutputParts {
    /// The output root.
    pub fn root(&self) -> B256 {
        output_root(self.state_root, self.message_passer_root, self.block.hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> B256 {
        s.parse().expect("test vector")
    }

    /// Published output roots (`optimism_outputAtBlock` answers of real nodes).
    #[test]
    fn real_output_roots() {
        // OP Sepolia block 27,982,526 (after Isthmus: the header's withdrawalsRoot is the
        // message passer's storage root).
        let post_isthmus = output_root(
            h("0xeef23eb186808bb06e74b915cd0cc028fad7fbff016b9d5f3fb75cd2098b4ff9"),
            h("0x086887b2594a26b67d79630404998a03636eb5be95b5422079fff0856cc436e8"),
            h("0x2b8e886f2ba10fbb12c56917bd7d645149e80a6b63ed3a22706ff77f4f68b31f"),
        );
        assert_eq!(
            post_isthmus,
            h("0xd13f0fb77010a8d8d000694b290607e961a96679a5f95dd2729dbd8449d61f71")
        );
        // OP Mainnet block 118,818,299 (before Isthmus: the storage root from eth_getProof).
        let pre_isthmus = output_root(
            h("0x16849c0a93d00bb2d7ceacda11a1478854d2bbb0a377b4d6793b67a3f05eb6fe"),
            h("0x5c9a29a8ad2ecf97fb4bdea74c715fd2c13fa87d4861414478bc4579601c3585"),
            h("0x6d39c46aabc847f5f2664a22bbc5f65a57286603095a9ebc946d1ed19ef4925c"),
        );
        assert_eq!(
            pre_isthmus,
            h("0xf1119e7d0fef8c54ab799be80fc61f503cea4e5c0aa1cf7ac104ef3a104f3bd1")
        );
        // Any input changed changes the root.
        assert_ne!(output_root(B256::ZERO, B256::ZERO, B256::ZERO), pre_isthmus);
    }
}
