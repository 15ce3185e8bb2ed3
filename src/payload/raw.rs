//! Raw blocks: the RLP that `debug_getRawBlock` serves, decoded down to the header and the
//! transactions as opaque EIP-2718 envelopes. No transaction is decoded (Ethereum blob
//! transactions excepted: their versioned hashes go beside the payload), so a type this build
//! does not know passes through, and the transactions root is computed over exactly the bytes
//! that go to the EL.

use alloy_consensus::{Block, Header, Transaction, TxEnvelope};
use alloy_eips::eip2718::{Decodable2718, EIP4844_TX_TYPE_ID, Encodable2718, Typed2718};
use alloy_primitives::{B256, Bytes};
use alloy_rlp::{Decodable, Encodable};

use super::PayloadError;
use crate::config::ChainKind;

/// A transaction as its EIP-2718 encoding: a type byte (0x00..=0x7f) and its payload, or a
/// legacy transaction's RLP list. Never decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpaqueTx(Bytes);

impl OpaqueTx {
    /// Wraps an EIP-2718 encoding; `None` for bytes that are neither a typed envelope nor an RLP
    /// list.
    pub fn new(bytes: Bytes) -> Option<Self> {
        match bytes.first() {
            Some(&b) if b <= 0x7f || b >= 0xc0 => Some(Self(bytes)),
            _ => None,
        }
    }

    /// Wraps what an encoder of a known transaction type produced.
    pub(crate) fn from_envelope(bytes: Bytes) -> Self {
        Self(bytes)
    }

    /// The EIP-2718 bytes, as they go into the payload.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    fn is_legacy_list(&self) -> bool {
        self.0.first().is_some_and(|b| *b >= 0xc0)
    }
}

impl Typed2718 for OpaqueTx {
    fn ty(&self) -> u8 {
        match self.0.first() {
            Some(&b) if b <= 0x7f => b,
            _ => 0,
        }
    }
}

impl Encodable2718 for OpaqueTx {
    fn type_flag(&self) -> Option<u8> {
        (!self.is_legacy_list()).then(|| self.ty())
    }

    fn encode_2718_len(&self) -> usize {
        self.0.len()
    }

    fn encode_2718(&self, out: &mut dyn alloy_rlp::BufMut) {
        out.put_slice(&self.0);
    }
}

/// The block-body form: a legacy transaction is its RLP list as is, a typed one an RLP string
/// holding its envelope.
impl Decodable for OpaqueTx {
    fn decode(buf: &mut &[u8]) -> alloy_rlp::Result<Self> {
        let mut peek = *buf;
        let header = alloy_rlp::Header::decode(&mut peek)?;
        if header.list {
            let total = header.length_with_payload();
            if buf.len() < total {
                return Err(alloy_rlp::Error::InputTooShort);
            }
            let (item, rest) = buf.split_at(total);
            *buf = rest;
            return Ok(Self(Bytes::copy_from_slice(item)));
        }
        let payload = alloy_rlp::Header::decode_bytes(buf, false)?;
        Self::new(Bytes::copy_from_slice(payload))
            .filter(|t| !t.is_legacy_list())
            .ok_or(alloy_rlp::Error::Custom("a typed transaction must start with a type byte"))
    }
}

impl Encodable for OpaqueTx {
    fn encode(&self, out: &mut dyn alloy_rlp::BufMut) {
        if self.is_legacy_list() {
            out.put_slice(&self.0);
        } else {
            self.0.encode(out);
        }
    }

    fn length(&self) -> usize {
        if self.is_legacy_list() { self.0.len() } else { self.0.length() }
    }
}

/// Decodes a raw block into its header and opaque transactions, and (Ethereum) the versioned
/// hashes of its blob transactions. Nothing is verified here.
pub fn decode(
    kind: ChainKind,
    what: &str,
    bytes: &[u8],
) -> Result<(Block<OpaqueTx>, Vec<B256>), PayloadError> {
    let err = |message: String| PayloadError::Rlp { what: what.to_string(), message };
    let mut buf = bytes;
    let block = Block::<OpaqueTx, Header>::decode(&mut buf).map_err(|e| err(e.to_string()))?;
    if !buf.is_empty() {
        return Err(err(format!("{} bytes after the block", buf.len())));
    }
    let mut blob_hashes = Vec::new();
    if kind == ChainKind::Ethereum {
        for (i, tx) in block.body.transactions.iter().enumerate() {
            if tx.ty() != EIP4844_TX_TYPE_ID {
                continue;
            }
            let decoded = TxEnvelope::decode_2718(&mut tx.bytes().as_ref())
                .map_err(|e| err(format!("blob transaction {i}: {e}")))?;
            blob_hashes.extend(decoded.blob_versioned_hashes().unwrap_or_default());
        }
    }
    Ok((block, blob_hashes))
}

/// Encodes a block the way `debug_getRawBlock` serves it (for tests and the test bed).
pub fn encode(block: &Block<OpaqueTx>) -> Bytes {
    alloy_rlp::encode(block).into()
}
