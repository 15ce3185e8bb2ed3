//! An L1 for the verification tests: a geth chain the test bed produces, with minimal OP
//! contracts in its genesis.
//!
//! These are not the OP contracts (those need the whole OP deployment and a Solidity
//! compiler): each is a few bytes of EVM code assembled here, with exactly the read functions
//! and ABI lightcl calls on the real ones, plus test-only setters anyone may call.
//! - AnchorStateRegistry ([`REGISTRY`]): `getAnchorRoot()` and `anchors(uint32)` return
//!   `(bytes32 root, uint256 l2BlockNumber)` (slots 0 and 1); `isGameClaimValid(address)`
//!   returns the slot the address names. Setters: `setAnchor(bytes32,uint256)`,
//!   `setGameClaimValid(address,bool)`. `respectedGameType()` reverts (no type filter).
//! - DisputeGameFactory ([`FACTORY`]): `gameCount()` (slot 0), `gameAtIndex(uint256)` returns
//!   `(uint32 0, uint64 0, address)` from slot 0x100 + index. Setter: `addGame(address)`.
//! - Dispute games ([`GAMES`], the same code at each address): `rootClaim()`,
//!   `l2BlockNumber()`, `status()` (slots 0, 1, 2). Setter: `setGame(bytes32,uint256,uint8)`.

use alloy_primitives::{Address, B256, Bytes, address, keccak256};
use serde_json::{Value, json};

/// The registry's address in the L1 genesis.
pub const REGISTRY: Address = address!("0x00000000000000000000000000000000a5a5a5a5");
/// The factory's address in the L1 genesis.
pub const FACTORY: Address = address!("0x00000000000000000000000000000000fac70000");
/// Dispute games in the L1 genesis (not in the factory until added).
pub const GAMES: [Address; 2] = [
    address!("0x000000000000000000000000000000009a3e0001"),
    address!("0x000000000000000000000000000000009a3e0002"),
];

const PUSH1: u8 = 0x60;
const PUSH2: u8 = 0x61;
const PUSH4: u8 = 0x63;
const ADD: u8 = 0x01;
const SHR: u8 = 0x1c;
const CALLDATALOAD: u8 = 0x35;
const MSTORE: u8 = 0x52;
const SLOAD: u8 = 0x54;
const SSTORE: u8 = 0x55;
const JUMPI: u8 = 0x57;
const JUMPDEST: u8 = 0x5b;
const DUP1: u8 = 0x80;
const EQ: u8 = 0x14;
const RETURN: u8 = 0xf3;
const REVERT: u8 = 0xfd;
const STOP: u8 = 0x00;

/// The first four bytes of keccak256 of a signature.
fn selector(sig: &str) -> [u8; 4] {
    let h = keccak256(sig.as_bytes());
    [h[0], h[1], h[2], h[3]]
}

/// Pushes `n` (up to two bytes).
fn push(n: u16) -> Vec<u8> {
    if n < 256 { vec![PUSH1, n as u8] } else { [vec![PUSH2], n.to_be_bytes().to_vec()].concat() }
}

/// Returns the storage slots `slots` as consecutive words.
fn getter(slots: &[u16]) -> Vec<u8> {
    let mut b = Vec::new();
    for (i, s) in slots.iter().enumerate() {
        b.extend(push(*s));
        b.push(SLOAD);
        b.extend(push(32 * i as u16));
        b.push(MSTORE);
    }
    b.extend(push(32 * slots.len() as u16));
    b.extend(push(0));
    b.push(RETURN);
    b
}

/// Stores the call's argument words in `slots`, in order.
fn setter(slots: &[u16]) -> Vec<u8> {
    let mut b = Vec::new();
    for (i, s) in slots.iter().enumerate() {
        b.extend(push(4 + 32 * i as u16));
        b.push(CALLDATALOAD);
        b.extend(push(*s));
        b.push(SSTORE);
    }
    b.push(STOP);
    b
}

/// Code that runs `body` for the call whose selector is `sig`, and reverts for any other.
fn contract(entries: &[(&str, Vec<u8>)]) -> Bytes {
    let mut c = vec![PUSH1, 0, CALLDATALOAD, PUSH1, 0xe0, SHR];
    let mut patches = Vec::new();
    for (sig, _) in entries {
        c.extend([DUP1, PUSH4]);
        c.extend(selector(sig));
        c.extend([EQ, PUSH2, 0, 0, JUMPI]);
        patches.push(c.len() - 3);
    }
    c.extend([PUSH1, 0, DUP1, REVERT]);
    for ((_, body), at) in entries.iter().zip(patches) {
        let target = (c.len() as u16).to_be_bytes();
        c[at..at + 2].copy_from_slice(&target);
        c.push(JUMPDEST);
        c.extend(body);
    }
    c.into()
}

/// The registry's runtime code.
pub fn registry_code() -> Bytes {
    // isGameClaimValid(address): the slot the address names.
    let valid = vec![PUSH1, 4, CALLDATALOAD, SLOAD, PUSH1, 0, MSTORE, PUSH1, 32, PUSH1, 0, RETURN];
    // setGameClaimValid(address, bool): that slot := the flag.
    let set_valid = vec![PUSH1, 0x24, CALLDATALOAD, PUSH1, 4, CALLDATALOAD, SSTORE, STOP];
    contract(&[
        ("getAnchorRoot()", getter(&[0, 1])),
        ("anchors(uint32)", getter(&[0, 1])),
        ("setAnchor(bytes32,uint256)", setter(&[0, 1])),
        ("isGameClaimValid(address)", valid),
        ("setGameClaimValid(address,bool)", set_valid),
    ])
}

/// The factory's runtime code.
pub fn factory_code() -> Bytes {
    // gameAtIndex(i): (0, 0, slot 0x100 + i).
    let mut at = vec![PUSH1, 0, PUSH1, 0, MSTORE, PUSH1, 0, PUSH1, 32, MSTORE, PUSH1, 4];
    at.extend([CALLDATALOAD]);
    at.extend(push(0x100));
    at.extend([ADD, SLOAD, PUSH1, 64, MSTORE, PUSH1, 96, PUSH1, 0, RETURN]);
    // addGame(g): slot 0x100 + count := g; count += 1.
    let mut add = vec![PUSH1, 4, CALLDATALOAD, PUSH1, 0, SLOAD];
    add.extend(push(0x100));
    add.extend([ADD, SSTORE, PUSH1, 0, SLOAD, PUSH1, 1, ADD, PUSH1, 0, SSTORE, STOP]);
    contract(&[
        ("gameCount()", getter(&[0])),
        ("gameAtIndex(uint256)", at),
        ("addGame(address)", add),
    ])
}

/// A dispute game's runtime code.
pub fn game_code() -> Bytes {
    contract(&[
        ("rootClaim()", getter(&[0])),
        ("l2BlockNumber()", getter(&[1])),
        ("status()", getter(&[2])),
        ("setGame(bytes32,uint256,uint8)", setter(&[0, 1, 2])),
    ])
}

fn word(n: u64) -> [u8; 32] {
    B256::left_padding_from(&n.to_be_bytes()).0
}

/// Calldata of `sig` with `args` as words.
fn call(sig: &str, args: &[[u8; 32]]) -> Bytes {
    let mut d = selector(sig).to_vec();
    for a in args {
        d.extend_from_slice(a);
    }
    d.into()
}

/// Calldata of the registry's `setAnchor(root, l2_number)`.
pub fn set_anchor(root: B256, l2_number: u64) -> Bytes {
    call("setAnchor(bytes32,uint256)", &[root.0, word(l2_number)])
}

/// Calldata of the registry's `setGameClaimValid(game, valid)`.
pub fn set_game_claim_valid(game: Address, valid: bool) -> Bytes {
    call(
        "setGameClaimValid(address,bool)",
        &[B256::left_padding_from(game.as_slice()).0, word(valid.into())],
    )
}

/// Calldata of the factory's `addGame(game)`.
pub fn add_game(game: Address) -> Bytes {
    call("addGame(address)", &[B256::left_padding_from(game.as_slice()).0])
}

/// Calldata of a game's `setGame(root, l2_number, status)` (0 in progress, 1 challenger wins,
/// 2 defender wins).
pub fn set_game(root: B256, l2_number: u64, status: u8) -> Bytes {
    call("setGame(bytes32,uint256,uint8)", &[root.0, word(l2_number), word(status.into())])
}

/// `genesis` with the registry, the factory and the games in its alloc.
pub fn with_registry(mut genesis: Value) -> Value {
    if let Some(alloc) = genesis.get_mut("alloc").and_then(Value::as_object_mut) {
        let mut put = |a: Address, code: Bytes| {
            alloc.insert(format!("{a:x}"), json!({"balance": "0x0", "code": code.to_string()}));
        };
        put(REGISTRY, registry_code());
        put(FACTORY, factory_code());
        for g in GAMES {
            put(g, game_code());
        }
    }
    genesis
}
