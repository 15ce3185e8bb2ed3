//! What a Prague block's execution requests are rebuilt from: the logs of a block and storage
//! words at a block, both read by block hash (EIP-1898 / EIP-234), never by number.

use alloy_primitives::{Address, B256, U256};
use serde_json::{Value, json};

use super::RpcSource;
use super::batching::{self, Verdict};
use super::blocks::method_missing;
use crate::http::parse_quantity;
use crate::payload::requests::LogEntry;
use crate::source::{LogsFrom, SourceError};

impl RpcSource {
    /// The logs `addresses` emitted in block `block`, in log order, from the log index or from
    /// the receipts (also when the source does not serve `eth_getLogs`).
    pub(super) async fn read_logs(
        &self,
        block: B256,
        addresses: Vec<Address>,
        from: LogsFrom,
    ) -> Result<Vec<LogEntry>, SourceError> {
        if from == LogsFrom::Index {
            let filter = json!([{ "blockHash": block, "address": addresses }]);
            match self.request::<Vec<Value>>("eth_getLogs", filter).await {
                Ok(logs) => return self.logs_of(block, "eth_getLogs", logs.iter(), &addresses),
                Err(e) if method_missing(&e) => {}
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
        let ok = receipts.iter().filter(|r| r.get("status").and_then(parse_quantity) == Some(1));
        let logs = ok.filter_map(|r| r.get("logs").and_then(Value::as_array)).flatten();
        self.logs_of(block, method, logs, &addresses)
    }

    /// Logs from an answer, checked to be of `block`, sorted by log index, those of
    /// `addresses` only.
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
                l.get("logIndex").and_then(parse_quantity),
            );
            let (Ok(address), Ok(topics), Ok(data), Some(index)) = parsed else {
                return Err(self.malformed(method, format!("a log that does not decode: {l}")));
            };
            if addresses.contains(&address) {
                out.push((index, LogEntry { address, topics, data }));
            }
        }
        out.sort_by_key(|(index, _)| *index);
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
