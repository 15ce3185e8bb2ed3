//! JSON blocks (`eth_getBlockBy*` with full transactions): decoded into typed transactions,
//! which are encoded back to their EIP-2718 bytes for the payload.
//!
//! Clients differ in small ways from the encoding alloy and op-alloy expect (a deposit's
//! `isSystemTx` as a JSON boolean, a quantity as a JSON number, an optional field as `null`).
//! A block that does not decode as sent is decoded again once those are normalised; leniency
//! costs no safety, because whatever the decoder makes of a transaction must still hash to the
//! header's transactions root. A block that still does not decode is diagnosed transaction by
//! transaction, so the error names the block, the transaction, its type and the field.

use alloy_consensus::Block;
use alloy_eips::eip2718::Encodable2718;
use alloy_primitives::B256;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{OpaqueTx, PayloadError, TxDecodeError};
use crate::config::ChainKind;

type RpcBlock<T> = alloy_rpc_types_eth::Block<T>;

/// Decodes a JSON block: the hash it claims, the block with its transactions as EIP-2718 bytes,
/// and (Ethereum) the versioned hashes of its blob transactions.
pub fn decode(
    kind: ChainKind,
    what: &str,
    text: &str,
) -> Result<(B256, Block<OpaqueTx>, Vec<B256>), PayloadError> {
    match kind {
        ChainKind::Optimism => {
            let rpc: RpcBlock<op_alloy_rpc_types::Transaction> = typed(kind, what, text)?;
            let claimed = rpc.header.hash;
            let block = rpc.into_consensus().map_transactions(|t| t.inner.into_inner());
            Ok((claimed, opaque(block), Vec::new()))
        }
        ChainKind::Ethereum => {
            let rpc: RpcBlock<alloy_rpc_types_eth::Transaction> = typed(kind, what, text)?;
            let claimed = rpc.header.hash;
            let block = rpc.into_consensus().map_transactions(|t| t.inner.into_inner());
            let blob_hashes = block.body.blob_versioned_hashes_iter().copied().collect();
            Ok((claimed, opaque(block), blob_hashes))
        }
    }
}

/// The block with its transactions as their EIP-2718 bytes (the header and withdrawals moved).
fn opaque<T: Encodable2718>(block: Block<T>) -> Block<OpaqueTx> {
    block.map_transactions(|t| OpaqueTx::from_envelope(t.encoded_2718().into()))
}

/// Decodes the text as sent; failing that, once normalised; failing that, says what is wrong.
fn typed<T: DeserializeOwned>(
    kind: ChainKind,
    what: &str,
    text: &str,
) -> Result<RpcBlock<T>, PayloadError> {
    let first = match serde_json::from_str::<RpcBlock<T>>(text) {
        Ok(b) => return Ok(b),
        Err(e) => e,
    };
    let plain = |message: String| PayloadError::Decode { what: what.to_string(), kind, message };
    let Ok(mut tree) = serde_json::from_str::<Value>(text) else {
        return Err(plain(first.to_string()));
    };
    if normalise(&mut tree)
        && let Ok(b) = serde_json::from_value::<RpcBlock<T>>(tree.clone())
    {
        return Ok(b);
    }
    Err(diagnose::<T>(kind, what, &tree).unwrap_or_else(|| plain(first.to_string())))
}

/// Rewrites the encodings some clients produce into the ones the decoders expect. Returns
/// whether anything changed.
pub fn normalise(block: &mut Value) -> bool {
    let Some(obj) = block.as_object_mut() else { return false };
    let mut changed = numbers_to_quantities(obj);
    if let Some(Value::Array(txs)) = obj.get_mut("transactions") {
        for tx in txs.iter_mut().filter_map(Value::as_object_mut) {
            changed |= normalise_tx(tx);
        }
    }
    changed
}

fn normalise_tx(tx: &mut Map<String, Value>) -> bool {
    let mut changed = numbers_to_quantities(tx);
    if let Some(Value::Bool(b)) = tx.get("isSystemTx") {
        let q = if *b { "0x1" } else { "0x0" };
        tx.insert("isSystemTx".into(), Value::from(q));
        changed = true;
    }
    // An absent optional field and a null one mean the same; `to: null` is a contract creation.
    let before = tx.len();
    tx.retain(|k, v| !v.is_null() || k == "to");
    changed |= tx.len() != before;
    if !tx.contains_key("input")
        && let Some(data) = tx.remove("data")
    {
        tx.insert("input".into(), data);
        changed = true;
    }
    changed
}

/// JSON numbers in place of hex quantity strings (every quantity in these objects is hex).
fn numbers_to_quantities(obj: &mut Map<String, Value>) -> bool {
    let mut changed = false;
    for v in obj.values_mut() {
        if let Some(n) = v.as_u64() {
            *v = Value::from(format!("{n:#x}"));
            changed = true;
        }
    }
    changed
}

/// The first transaction that does not decode, named with its index, type and field; `None`
/// when every transaction decodes on its own (the fault is in the header).
fn diagnose<T: DeserializeOwned>(
    kind: ChainKind,
    what: &str,
    block: &Value,
) -> Option<PayloadError> {
    let txs = block.get("transactions")?.as_array()?;
    txs.iter().enumerate().find_map(|(index, tx)| {
        let e = serde_json::from_value::<T>(tx.clone()).err()?;
        let tx_type = tx.get("type").and_then(Value::as_str).unwrap_or("unset").to_string();
        Some(PayloadError::Transaction(Box::new(TxDecodeError {
            what: what.to_string(),
            kind,
            index,
            tx_type,
            field: culprit::<T>(tx, &e.to_string()),
            message: e.to_string(),
        })))
    })
}

/// Which field of `tx` the decoder stops at. Serde names a missing field and an unknown type in
/// its message, and quotes the value it refused (flattened transaction types hide the path), so
/// the field holding that value is the one; failing that, the field without which the rest
/// decodes.
fn culprit<T: DeserializeOwned>(tx: &Value, message: &str) -> String {
    if let Some(field) = message.split('`').nth(1).filter(|_| message.starts_with("missing field"))
    {
        return field.to_string();
    }
    if message.contains("unknown variant") {
        return "type".into();
    }
    let Some(obj) = tx.as_object() else { return "(not an object)".into() };
    let quoted = |v: &Value| match v {
        Value::String(s) => Some(format!("string {s:?}")),
        Value::Bool(b) => Some(format!("boolean `{b}`")),
        Value::Number(n) if n.is_u64() => Some(format!("integer `{n}`")),
        Value::Number(n) => Some(format!("floating point `{n}`")),
        Value::Null => Some("invalid type: null".into()),
        _ => None,
    };
    let named: Vec<&String> = obj
        .iter()
        .filter(|(_, v)| quoted(v).is_some_and(|q| message.contains(&q)))
        .map(|(k, _)| k)
        .collect();
    if let [only] = named.as_slice() {
        return (*only).clone();
    }
    // `type` last: without it a typed transaction may decode as another type.
    let keys = obj.keys().filter(|k| *k != "type").chain(obj.keys().filter(|k| *k == "type"));
    for key in keys {
        let mut without = obj.clone();
        without.remove(key);
        if serde_json::from_value::<T>(Value::Object(without)).is_ok() {
            return key.clone();
        }
    }
    "(unknown)".into()
}
