//! An L1 for the verification tests: a geth chain the test bed produces, with a minimal
//! AnchorStateRegistry in its genesis.
//!
//! The registry is not the OP contract (that needs the whole OP deployment and a Solidity
//! compiler): it is a few hand-assembled bytes of EVM code with exactly the read functions
//! lightcl calls, `getAnchorRoot() returns (bytes32, uint256)` and `anchors(uint32) returns
//! (bytes32, uint256)`, plus a test-only `setAnchor(bytes32,uint256)` that anyone may call.
//! Storage slot 0 holds the root, slot 1 the L2 block number. Every other call reverts, as the
//! real registry's `respectedGameType()` would not (lightcl then counts games of every type;
//! this registry has none).

use alloy_primitives::{Address, B256, Bytes, address, keccak256};
use serde_json::{Value, json};

/// The registry's address in the L1 genesis.
pub const REGISTRY: Address = address!("0x00000000000000000000000000000000a5a5a5a5");

/// The first four bytes of keccak256 of a signature.
fn selector(sig: &str) -> [u8; 4] {
    let h = keccak256(sig.as_bytes());
    [h[0], h[1], h[2], h[3]]
}

/// The registry's runtime code.
pub fn registry_code() -> Bytes {
    const PUSH1: u8 = 0x60;
    const PUSH2: u8 = 0x61;
    const PUSH4: u8 = 0x63;
    const CALLDATALOAD: u8 = 0x35;
    const SHR: u8 = 0x1c;
    const DUP1: u8 = 0x80;
    const EQ: u8 = 0x14;
    const JUMPI: u8 = 0x57;
    const REVERT: u8 = 0xfd;
    const JUMPDEST: u8 = 0x5b;
    const SLOAD: u8 = 0x54;
    const MSTORE: u8 = 0x52;
    const SSTORE: u8 = 0x55;
    const RETURN: u8 = 0xf3;
    const STOP: u8 = 0x00;
    let mut c = vec![PUSH1, 0, CALLDATALOAD, PUSH1, 0xe0, SHR];
    // Dispatch: each entry jumps to a label patched in below.
    let mut patches = Vec::new();
    for (sig, to_get) in [
        ("getAnchorRoot()", true),
        ("anchors(uint32)", true),
        ("setAnchor(bytes32,uint256)", false),
    ] {
        c.extend([DUP1, PUSH4]);
        c.extend(selector(sig));
        c.extend([EQ, PUSH2, 0, 0, JUMPI]);
        patches.push((c.len() - 3, to_get));
    }
    c.extend([PUSH1, 0, DUP1, REVERT]);
    let get = c.len();
    c.extend([JUMPDEST, PUSH1, 0, SLOAD, PUSH1, 0, MSTORE, PUSH1, 1, SLOAD, PUSH1, 0x20, MSTORE]);
    c.extend([PUSH1, 0x40, PUSH1, 0, RETURN]);
    let set = c.len();
    c.extend([JUMPDEST, PUSH1, 4, CALLDATALOAD, PUSH1, 0, SSTORE, PUSH1, 0x24, CALLDATALOAD]);
    c.extend([PUSH1, 1, SSTORE, STOP]);
    for (at, to_get) in patches {
        let target = if to_get { get } else { set } as u16;
        c[at..at + 2].copy_from_slice(&target.to_be_bytes());
    }
    c.into()
}

/// Calldata of `setAnchor(root, l2_number)`.
pub fn set_anchor(root: B256, l2_number: u64) -> Bytes {
    let mut d = selector("setAnchor(bytes32,uint256)").to_vec();
    d.extend_from_slice(root.as_slice());
    d.extend_from_slice(B256::left_padding_from(&l2_number.to_be_bytes()).as_slice());
    d.into()
}

/// `genesis` with the registry in its alloc.
pub fn with_registry(mut genesis: Value) -> Value {
    if let Some(alloc) = genesis.get_mut("alloc").and_then(Value::as_object_mut) {
        alloc.insert(
            format!("{REGISTRY:x}"),
            json!({"balance": "0x0", "code": registry_code().to_string()}),
        );
    }
    genesis
}
