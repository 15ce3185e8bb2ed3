//! What a Prague block's execution requests are rebuilt from: the logs of a block and storage
//! words at a block, both read by block hash (EIP-1898 / EIP-234), never by number.

use alloy_primitives::{Address, B256, U256};
use serde_json::{Value, json};
use tracing::debug;

use super::RpcSource;
use super::batching::{self, Verdict};
use crate::http::parse_quantity;
use crate::payload::requests::LogEntry;
use crate::source::{LogsFrom, SourceError};

impl RpcSource {
    /// The logs `addresses` emitted in block `block`, in log order, from the log index or from
    /// the receipts. The log index's answer gives way to the receipts when it is an error
    /// answer (the method not served, or a backend whose index does not hold the block yet) or
    /// the logs of another block (a known fault of log indexes); a transport failure or a rate
    /// limit is returned as it is.
    pub(super) async fn read_logs(
        &self,
        block: B256,
        addresses: Vec<Address>,
        from: LogsFrom,
    ) -> Result<Vec<LogEntry>, SourceError> {
        if from == LogsFrom::Index {
            let filter = json!([{ "blockHash": block, "address": addresses }]);
            match self.request::<Vec<Value>>("eth_getLogs", filter).await {
                Ok(logs) => match self.logs_of(block, "eth_getLogs", logs.iter(), &addresses) {
                    Ok(logs) => return Ok(logs),
                    Err(e) => debug!(target: "lightcl::source", source = %self.name, error = %e,
                        "the log index's answer is not usable; reading the block's receipts"),
                },
                Err(e @ (SourceError::Rpc { .. } | SourceError::Malformed { .. }))
                    if e.rate_limit().is_none() =>
                {
                    debug!(target: "lightcl::source", source = %self.name, error = %e,
                        "eth_getLogs refused; reading the block's receipts");
                }
                Err(e) => return Err(e),
            }
        }
        let method = "eth_getBlockReceipts";
        let receipts: Option<Vec<Value>> = self.request(method, json!([block])).await?;
        let Some(receipts) = receipts else {
            return Err(SourceError::Rpc {
                source_name: self.name.clone(),
                method: method.into(),
                code: 0,
                message: format!("no receipts for block {block}"),
            });
        };
        // A reverted transaction logs nothing; a source that shows logs for one is wrong, and
        // they are left out as an EL leaves them out.
        let ok = receipts.iter().filter(|r| r.get("status").and_then(parse_quantity) != Some(0));
        let logs = ok.filter_map(|r| r.get("logs").and_then(Value::as_array)).flatten();
        self.logs_of(block, method, logs, &addresses)
    }

    /// Logs from an answer, checked to be of `block`, in block order (by transaction, then log
    /// index: some servers number logs per transaction), those of `addresses` only.
    fn logs_of<'a>(
        &self,
        block: B256,
        method: &str,
        logs: impl Iterator<Item = &'a Value>,
        addresses: &[Address],
    ) -> Result<Vec<LogEntry>, SourceError> {
        let mut out = Vec::new();
        for l in logs {
            let field = |k: &str| l.get(k).cloned().unwrap_or(Value::Null);
            let of_block = serde_json::from_value::<Option<B256>>(field("blockHash"))
                .ok()
                .flatten()
                .is_none_or(|h| h == block);
            if !of_block {
                let message = format!("asked for the logs of block {block}, got another block's");
                return Err(SourceError::inconsistent(&self.name, message));
            }
            if l.get("removed").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let parsed = (
                serde_json::from_value::<Address>(field("address")),
                serde_json::from_value::<Vec<B256>>(field("topics")),
                serde_json::from_value::<alloy_primitives::Bytes>(field("data")),
                l.get("transactionIndex").and_then(parse_quantity),
                l.get("logIndex").and_then(parse_quantity),
            );
            let (Ok(address), Ok(topics), Ok(data), Some(tx), Some(index)) = parsed else {
                return Err(self.malformed(method, format!("a log that does not decode: {l}")));
            };
            if addresses.contains(&address) {
                out.push(((tx, index), LogEntry { address, topics, data }));
            }
        }
        out.sort_by_key(|(at, _)| *at);
        Ok(out.into_iter().map(|(_, l)| l).collect())
    }

    /// Storage words at block `at`, in batches of the size the source takes.
    pub(super) async fn read_storage(
        &self,
        at: B256,
        slots: Vec<(Address, U256)>,
    ) -> Result<Vec<B256>, SourceError> {
        let method = "eth_getStorageAt";
        let params: Vec<Value> =
            slots.iter().map(|(a, s)| json!([a, format!("{s:#x}"), { "blockHash": at }])).collect();
        let mut out = Vec::with_capacity(params.len());
        let mut rest = &params[..];
        while !rest.is_empty() {
            let size = self.batching.size().min(rest.len());
            let answer = self.batch::<B256>(method, rest[..size].to_vec()).await;
            match batching::verdict(&answer) {
                Verdict::TooBig if self.batching.too_big(&self.name, size, "storage batch") => {
                    continue;
                }
                Verdict::RateLimited => self.batching.rate_limited(&self.name, size),
                _ => self.batching.answered(&self.name, size),
            }
            for word in answer? {
                out.push(word?);
            }
            rest = &rest[size..];
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::SourceEntry;

    fn source() -> RpcSource {
        RpcSource::new(&SourceEntry::Url("http://127.0.0.1:1".into()), Duration::from_secs(1))
    }

    fn log(block: B256, address: Address, tx: u64, index: u64, data: u8) -> Value {
        json!({
            "address": address, "topics": [], "data": format!("0x{data:02x}"),
            "blockHash": block, "transactionIndex": format!("{tx:#x}"),
            "logIndex": format!("{index:#x}"), "removed": false,
        })
    }

    #[test]
    fn logs_come_in_block_order_of_the_asked_contracts_and_the_asked_block_only() {
        let s = source();
        let (block, a, b) =
            (B256::repeat_byte(1), Address::repeat_byte(0xa), Address::repeat_byte(0xb));
        // Numbered per transaction (as some servers do), out of order, one of another contract,
        // one removed.
        let mut removed = log(block, a, 0, 5, 9);
        removed["removed"] = Value::from(true);
        let answer = [
            log(block, a, 1, 0, 3),
            log(block, Address::repeat_byte(0xc), 0, 1, 7),
            log(block, b, 0, 2, 2),
            log(block, a, 0, 0, 1),
            removed,
        ];
        let got = s.logs_of(block, "eth_getLogs", answer.iter(), &[a, b]).expect("logs");
        let data: Vec<u8> = got.iter().map(|l| l.data[0]).collect();
        assert_eq!(data, vec![1, 2, 3]);
        // Another block's logs are an inconsistency, not logs of this block.
        let other = [log(B256::repeat_byte(2), a, 0, 0, 1)];
        let e = s.logs_of(block, "eth_getLogs", other.iter(), &[a]).expect_err("another block");
        assert!(matches!(e, SourceError::Inconsistent { .. }), "{e}");
        // A log without its place in the block does not decode.
        let mut bare = log(block, a, 0, 0, 1);
        bare.as_object_mut().expect("object").remove("logIndex");
        let e = s.logs_of(block, "eth_getLogs", [bare].iter(), &[a]).expect_err("no index");
        assert!(matches!(e, SourceError::Malformed { .. }), "{e}");
    }
}
