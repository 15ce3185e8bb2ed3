//! Transactions the producer puts in blocks: signed EIP-1559 transfers and counter-contract
//! calls, and (OP) the L1-info deposit every block must start with.

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::{Address, B256, Bytes, TxKind, U256, address, keccak256};
use alloy_rlp::{Encodable, Header};
use alloy_signer::SignerSync;

use crate::Error;
use crate::genesis::{COUNTER_ADDRESS, TestAccount};

/// The L1Block predeploy the L1-info deposit calls.
pub const L1_BLOCK_ADDRESS: Address = address!("0x4200000000000000000000000000000000000015");
/// The depositor account of the L1-info deposit.
pub const L1_INFO_DEPOSITOR: Address = address!("0xDeaDDEaDDeAdDeAdDEAdDEaddeAddEAdDEAd0001");
/// Selector of `setL1BlockValuesJovian()`.
pub const JOVIAN_L1_INFO_SELECTOR: [u8; 4] = [0x3d, 0xb6, 0xbe, 0x2b];
/// Length of the Jovian L1-info calldata.
pub const JOVIAN_L1_INFO_LEN: usize = 178;

/// Fee cap used by test transactions (base fee starts at 1 gwei and falls on empty blocks).
const MAX_FEE_PER_GAS: u128 = 100_000_000_000;
const MAX_PRIORITY_FEE_PER_GAS: u128 = 1_000_000_000;

/// An L1 block an L2 block is built on: number, hash, timestamp.
pub type L1Origin = (u64, B256, u64);

/// Jovian L1-info calldata for L2 block `l2_number`: `origin`, or a made-up L1 origin derived
/// from the L2 number.
pub fn jovian_l1_info_calldata(
    l2_number: u64,
    l2_timestamp: u64,
    origin: Option<L1Origin>,
) -> Vec<u8> {
    let made_up = 1_000_000 + l2_number / 6;
    let (l1_number, l1_hash, l1_time) = origin.unwrap_or((
        made_up,
        keccak256(made_up.to_be_bytes()),
        l2_timestamp.saturating_sub(12),
    ));
    let mut d = Vec::with_capacity(JOVIAN_L1_INFO_LEN);
    d.extend_from_slice(&JOVIAN_L1_INFO_SELECTOR);
    d.extend_from_slice(&0u32.to_be_bytes()); // baseFeeScalar
    d.extend_from_slice(&0u32.to_be_bytes()); // blobBaseFeeScalar
    d.extend_from_slice(&(l2_number % 6).to_be_bytes()); // sequenceNumber
    d.extend_from_slice(&l1_time.to_be_bytes()); // L1 timestamp
    d.extend_from_slice(&l1_number.to_be_bytes()); // L1 number
    d.extend_from_slice(&U256::from(1_000_000_000u64).to_be_bytes::<32>()); // L1 base fee
    d.extend_from_slice(&U256::from(1u64).to_be_bytes::<32>()); // blob base fee
    d.extend_from_slice(l1_hash.as_slice()); // L1 hash
    d.extend_from_slice(B256::ZERO.as_slice()); // batcher hash
    d.extend_from_slice(&0u32.to_be_bytes()); // operatorFeeScalar
    d.extend_from_slice(&0u64.to_be_bytes()); // operatorFeeConstant
    d.extend_from_slice(&0u16.to_be_bytes()); // daFootprintGasScalar (0: the default applies)
    d
}

/// The EIP-2718 bytes of the L1-info deposit (type 0x7E) for L2 block `l2_number`.
pub fn l1_info_deposit(
    l2_number: u64,
    l2_timestamp: u64,
    salt: u64,
    origin: Option<L1Origin>,
) -> Bytes {
    let data = Bytes::from(jovian_l1_info_calldata(l2_number, l2_timestamp, origin));
    // Source hash: domain 1 (L1 info) over a made-up L1 hash and the sequence number; the salt
    // keeps rival branches' deposits distinct.
    let mut inner = [0u8; 64];
    inner[..32].copy_from_slice(
        keccak256([l2_number.to_be_bytes(), salt.to_be_bytes()].concat()).as_slice(),
    );
    inner[56..].copy_from_slice(&l2_number.to_be_bytes());
    let mut outer = [0u8; 64];
    outer[31] = 1;
    outer[32..].copy_from_slice(keccak256(inner).as_slice());
    let source_hash = keccak256(outer);

    let mint: u128 = 0;
    let value = U256::ZERO;
    let gas: u64 = 1_000_000;
    let is_system = false;
    let fields_len = source_hash.length()
        + L1_INFO_DEPOSITOR.length()
        + L1_BLOCK_ADDRESS.length()
        + mint.length()
        + value.length()
        + gas.length()
        + is_system.length()
        + data.length();
    let mut out = vec![0x7e];
    Header { list: true, payload_length: fields_len }.encode(&mut out);
    source_hash.encode(&mut out);
    L1_INFO_DEPOSITOR.encode(&mut out);
    L1_BLOCK_ADDRESS.encode(&mut out);
    mint.encode(&mut out);
    value.encode(&mut out);
    gas.encode(&mut out);
    is_system.encode(&mut out);
    data.encode(&mut out);
    Bytes::from(out)
}

/// What a signed test transaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxAction {
    /// Sends 1 gwei to `to`.
    Transfer(Address),
    /// Calls the counter contract (one SSTORE).
    CounterCall,
}

/// Signs an EIP-1559 call of `to` with `data` from `from` with `nonce` (EIP-2718 bytes).
pub fn signed_call(
    chain_id: u64,
    from: &TestAccount,
    nonce: u64,
    to: Address,
    data: Bytes,
) -> Result<Bytes, Error> {
    sign(chain_id, from, nonce, to, U256::ZERO, 200_000, data)
}

/// Signs an EIP-1559 call of `to` with `data` and `value` (a fee the contract asks, as the
/// EIP-7002 and EIP-7251 system contracts do) from `from` with `nonce`.
pub fn signed_paid_call(
    chain_id: u64,
    from: &TestAccount,
    nonce: u64,
    to: Address,
    value: U256,
    data: Bytes,
) -> Result<Bytes, Error> {
    sign(chain_id, from, nonce, to, value, 400_000, data)
}

/// Signs an EIP-1559 transaction from `from` with `nonce`, returning its EIP-2718 bytes.
pub fn signed_tx(
    chain_id: u64,
    from: &TestAccount,
    nonce: u64,
    action: TxAction,
) -> Result<Bytes, Error> {
    let (to, value, gas_limit) = match action {
        TxAction::Transfer(to) => (to, U256::from(1_000_000_000u64), 21_000),
        TxAction::CounterCall => (COUNTER_ADDRESS, U256::ZERO, 60_000),
    };
    sign(chain_id, from, nonce, to, value, gas_limit, Bytes::new())
}

fn sign(
    chain_id: u64,
    from: &TestAccount,
    nonce: u64,
    to: Address,
    value: U256,
    gas_limit: u64,
    input: Bytes,
) -> Result<Bytes, Error> {
    let tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit,
        max_fee_per_gas: MAX_FEE_PER_GAS,
        max_priority_fee_per_gas: MAX_PRIORITY_FEE_PER_GAS,
        to: TxKind::Call(to),
        value,
        access_list: Default::default(),
        input,
    };
    let sig = from
        .signer
        .sign_hash_sync(&tx.signature_hash())
        .map_err(|e| Error::Spawn(format!("signing a test transaction failed: {e}")))?;
    let envelope = TxEnvelope::from(tx.into_signed(sig));
    Ok(Bytes::from(envelope.encoded_2718()))
}
