//! The L1 origin of an OP block: its first transaction is the L1 attributes deposit, whose
//! calldata names the L1 block (number and hash) the L2 block was built on. Pure decoding.
//!
//! The calldata layouts by fork (selector, length; the origin's number and hash sit at the same
//! offsets in all four):
//! - Bedrock `setL1BlockValues` (ABI-encoded, 8 words, 260 bytes): number in word 0, hash in
//!   word 3.
//! - Ecotone `setL1BlockValuesEcotone` (packed, 164 bytes), Isthmus `setL1BlockValuesIsthmus`
//!   (176) and Jovian `setL1BlockValuesJovian` (178): base fee scalar (4), blob base fee scalar
//!   (4), sequence number (8), timestamp (8), number (8), base fee (32), blob base fee (32),
//!   hash (32), batcher hash (32), then the fields each later fork appends.

use alloy_eips::eip2718::Decodable2718;
use alloy_primitives::{Address, B256, Bytes, TxKind, address};
use op_alloy_consensus::TxDeposit;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::chain::BlockRef;
use crate::payload::Payload;

/// The L1Block predeploy: the L1 attributes deposit calls it.
pub const L1_BLOCK_PREDEPLOY: Address = address!("4200000000000000000000000000000000000015");
/// The depositor account that sends the L1 attributes deposit.
pub const L1_INFO_DEPOSITOR: Address = address!("deaddeaddeaddeaddeaddeaddeaddeaddead0001");

/// One fork's calldata layout.
struct Layout {
    fork: &'static str,
    selector: [u8; 4],
    len: usize,
}

const LAYOUTS: [Layout; 4] = [
    Layout { fork: "bedrock", selector: [0x01, 0x5d, 0x8e, 0xb9], len: 260 },
    Layout { fork: "ecotone", selector: [0x44, 0x0a, 0x5e, 0x20], len: 164 },
    Layout { fork: "isthmus", selector: [0x09, 0x89, 0x99, 0xbe], len: 176 },
    Layout { fork: "jovian", selector: [0x3d, 0xb6, 0xbe, 0x2b], len: 178 },
];

/// Where the origin's number (its last 8 bytes for Bedrock's word) and hash are in the calldata.
const NUMBER_AT: std::ops::Range<usize> = 28..36;
const HASH_AT: std::ops::Range<usize> = 100..132;

/// The L1 block an L2 block names as its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Origin {
    /// The L1 block.
    pub block: BlockRef,
    /// The fork whose layout the calldata has.
    pub fork: &'static str,
    /// The L2 block's sequence number within its origin's epoch.
    pub sequence_number: u64,
}

/// Why no origin could be read: the block is not an OP block built on an L1, or a source
/// served something else in its place (the payload was verified, so its transactions are the
/// ones the header commits to).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// The block has no transactions.
    #[error("the block has no transactions, so no L1 attributes deposit")]
    NoTransactions,
    /// The first transaction is not a deposit (type 0x7e).
    #[error("its first transaction is of type {0:#04x}, not an L1 attributes deposit (0x7e)")]
    NotDeposit(u8),
    /// The deposit does not decode.
    #[error("its first transaction does not decode as a deposit: {0}")]
    Undecodable(String),
    /// A deposit, but not the L1 attributes deposit.
    #[error(
        "its first transaction is a deposit from {from} to {to}, not the L1 attributes deposit"
    )]
    NotL1Info {
        /// Sender.
        from: Address,
        /// Recipient (`create` for a contract creation).
        to: String,
    },
    /// Calldata of no known layout.
    #[error(
        "the L1 attributes calldata ({len} bytes, selector {selector}) matches no known fork's \
         layout (Bedrock, Ecotone, Isthmus, Jovian)"
    )]
    UnknownLayout {
        /// Its length.
        len: usize,
        /// Its first four bytes, hex.
        selector: String,
    },
}

/// Reads the L1 origin from an L1 attributes calldata.
pub fn origin_from_calldata(data: &[u8]) -> Result<L1Origin, OriginError> {
    let unknown = || OriginError::UnknownLayout {
        len: data.len(),
        selector: alloy_primitives::hex::encode_prefixed(&data[..data.len().min(4)]),
    };
    let layout = LAYOUTS
        .iter()
        // Later forks may append fields: a layout is matched by its selector and a length at
        // least its own (Bedrock's ABI encoding is exact).
        .find(|l| {
            data.len() >= 4
                && data[..4] == l.selector
                && (data.len() == l.len || (l.fork != "bedrock" && data.len() > l.len))
        })
        .ok_or_else(unknown)?;
    if layout.fork == "bedrock" && data[4..NUMBER_AT.start].iter().any(|b| *b != 0) {
        return Err(unknown());
    }
    let u64_at = |at: std::ops::Range<usize>| {
        let mut n = [0u8; 8];
        n.copy_from_slice(&data[at]);
        u64::from_be_bytes(n)
    };
    let hash = B256::from_slice(&data[HASH_AT]);
    // Bedrock: word 4 (its last 8 bytes); the packed layouts: bytes 12..20.
    let sequence_number =
        if layout.fork == "bedrock" { u64_at(4 + 4 * 32 + 24..4 + 5 * 32) } else { u64_at(12..20) };
    Ok(L1Origin {
        block: BlockRef::new(u64_at(NUMBER_AT), hash),
        fork: layout.fork,
        sequence_number,
    })
}

/// Reads the L1 origin from a block's first transaction (EIP-2718 bytes).
pub fn origin_from_tx(tx: &[u8]) -> Result<L1Origin, OriginError> {
    let ty = *tx.first().ok_or(OriginError::NoTransactions)?;
    if ty != 0x7e {
        return Err(OriginError::NotDeposit(ty));
    }
    let dep = TxDeposit::decode_2718(&mut &tx[..])
        .map_err(|e| OriginError::Undecodable(e.to_string()))?;
    if dep.from != L1_INFO_DEPOSITOR || dep.to != TxKind::Call(L1_BLOCK_PREDEPLOY) {
        let to = match dep.to {
            TxKind::Call(a) => a.to_string(),
            TxKind::Create => "create".into(),
        };
        return Err(OriginError::NotL1Info { from: dep.from, to });
    }
    origin_from_calldata(&dep.input)
}

/// The first transaction of a verified payload, as EIP-2718 bytes.
pub fn first_tx(p: &Payload) -> Result<Bytes, OriginError> {
    #[derive(Deserialize)]
    struct Txs<'a> {
        #[serde(borrow)]
        transactions: Vec<&'a RawValue>,
    }
    let undecodable = |e: serde_json::Error| OriginError::Undecodable(e.to_string());
    let params: Vec<&RawValue> = serde_json::from_str(p.params.get()).map_err(undecodable)?;
    let first = params.first().ok_or(OriginError::NoTransactions)?;
    let txs: Txs<'_> = serde_json::from_str(first.get()).map_err(undecodable)?;
    let tx = txs.transactions.first().ok_or(OriginError::NoTransactions)?;
    serde_json::from_str::<Bytes>(tx.get()).map_err(undecodable)
}

/// The L1 origin of a verified payload.
pub fn origin_of(p: &Payload) -> Result<L1Origin, OriginError> {
    origin_from_tx(&first_tx(p)?)
}

/// The calldata of a Jovian L1 attributes deposit naming `origin` (for tests and the test bed):
/// the other fields are zero.
pub fn jovian_calldata(origin: BlockRef, sequence_number: u64, timestamp: u64) -> Vec<u8> {
    let mut d = vec![0u8; 178];
    d[..4].copy_from_slice(&LAYOUTS[3].selector);
    d[12..20].copy_from_slice(&sequence_number.to_be_bytes());
    d[20..28].copy_from_slice(&timestamp.to_be_bytes());
    d[NUMBER_AT].copy_from_slice(&origin.number.to_be_bytes());
    d[HASH_AT].copy_from_slice(origin.hash.as_slice());
    d
}

/// An L1 attributes deposit transaction (EIP-2718 bytes) with `calldata`, as the sequencer
/// makes it (for tests and the test bed).
pub fn l1_info_deposit(calldata: Vec<u8>, source_hash: B256) -> Bytes {
    use alloy_eips::eip2718::Encodable2718;
    let tx = TxDeposit {
        source_hash,
        from: L1_INFO_DEPOSITOR,
        to: TxKind::Call(L1_BLOCK_PREDEPLOY),
        mint: 0,
        value: Default::default(),
        gas_limit: 1_000_000,
        is_system_transaction: false,
        input: calldata.into(),
    };
    tx.encoded_2718().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> BlockRef {
        BlockRef::new(0x0123_4567, B256::repeat_byte(0xab))
    }

    #[test]
    fn every_layout_gives_the_origin() {
        let o = origin();
        let jovian = jovian_calldata(o, 3, 1_700_000_000);
        let mut isthmus = jovian[..176].to_vec();
        isthmus[..4].copy_from_slice(&[0x09, 0x89, 0x99, 0xbe]);
        let mut ecotone = jovian[..164].to_vec();
        ecotone[..4].copy_from_slice(&[0x44, 0x0a, 0x5e, 0x20]);
        let mut bedrock = vec![0u8; 260];
        bedrock[..4].copy_from_slice(&[0x01, 0x5d, 0x8e, 0xb9]);
        bedrock[28..36].copy_from_slice(&o.number.to_be_bytes());
        bedrock[100..132].copy_from_slice(o.hash.as_slice());
        for (data, fork) in
            [(jovian, "jovian"), (isthmus, "isthmus"), (ecotone, "ecotone"), (bedrock, "bedrock")]
        {
            let got = origin_from_calldata(&data).expect(fork);
            let sequence_number = if fork == "bedrock" { 0 } else { 3 };
            assert_eq!(got, L1Origin { block: o, fork, sequence_number }, "{fork}");
        }
    }

    #[test]
    fn wrong_calldata_is_refused() {
        let o = origin();
        let jovian = jovian_calldata(o, 0, 0);
        // Too short for its selector's layout.
        assert!(matches!(
            origin_from_calldata(&jovian[..170]),
            Err(OriginError::UnknownLayout { len: 170, .. })
        ));
        // Unknown selector.
        let mut other = jovian.clone();
        other[0] = 0xff;
        assert!(origin_from_calldata(&other).is_err());
        // Bedrock's number word with high bytes set is not a uint64.
        let mut bedrock = vec![0u8; 260];
        bedrock[..4].copy_from_slice(&[0x01, 0x5d, 0x8e, 0xb9]);
        bedrock[5] = 1;
        assert!(origin_from_calldata(&bedrock).is_err());
        assert!(origin_from_calldata(&[]).is_err());
    }

    #[test]
    fn only_the_l1_info_deposit_names_an_origin() {
        let o = origin();
        let tx = l1_info_deposit(jovian_calldata(o, 0, 0), B256::ZERO);
        assert_eq!(origin_from_tx(&tx).map(|x| x.block), Ok(o));
        // A user deposit to another address, with the same calldata.
        let other = TxDeposit {
            from: Address::with_last_byte(7),
            to: TxKind::Call(L1_BLOCK_PREDEPLOY),
            input: jovian_calldata(o, 0, 0).into(),
            ..Default::default()
        };
        use alloy_eips::eip2718::Encodable2718;
        let other = other.encoded_2718();
        assert!(matches!(origin_from_tx(&other), Err(OriginError::NotL1Info { .. })));
        assert_eq!(origin_from_tx(&[0x02, 0xc0]), Err(OriginError::NotDeposit(2)));
        assert_eq!(origin_from_tx(&[]), Err(OriginError::NoTransactions));
        assert!(matches!(origin_from_tx(&[0x7e, 0x01]), Err(OriginError::Undecodable(_))));
    }
}
