//! One L1 JSON-RPC endpoint over HTTP.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy_primitives::{Address, B256, Bytes};
use serde_json::{Value, json};

use super::{L1, L1Error, L1Heads};
use crate::chain::BlockRef;
use crate::http::parse_quantity;
use crate::redact::{RedactedUrl, scrub};
use crate::util::BoxFuture;

/// An L1 node reached over HTTP JSON-RPC. Debug and logs show its URL redacted.
pub struct L1Rpc {
    http: reqwest::Client,
    url: reqwest::Url,
    raw: String,
    shown: String,
    timeout: Duration,
    next_id: AtomicU64,
}

impl std::fmt::Debug for L1Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L1Rpc").field("url", &self.shown).finish_non_exhaustive()
    }
}

impl L1Rpc {
    /// A client of `url` (checked by the configuration) with a per-call `timeout`.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, L1Error> {
        let shown = RedactedUrl::new(url).to_string();
        let parsed = reqwest::Url::parse(url).map_err(|e| L1Error::Unreachable {
            name: shown.clone(),
            method: "connect".into(),
            message: format!("not a URL: {e}"),
        })?;
        Ok(Self {
            http: reqwest::Client::new(),
            url: parsed,
            raw: url.to_string(),
            shown,
            timeout,
            next_id: AtomicU64::new(1),
        })
    }

    async fn call_rpc(&self, method: &str, params: Value) -> Result<Value, L1Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let fail = |message: String| L1Error::Unreachable {
            name: self.shown.clone(),
            method: method.to_string(),
            message: scrub(&message, &self.raw, &self.shown),
        };
        let resp = self
            .http
            .post(self.url.clone())
            .json(&body)
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| fail(crate::http::error_chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(fail(format!("HTTP {status}")));
        }
        let v: Value = resp.json().await.map_err(|e| L1Error::Malformed {
            name: self.shown.clone(),
            method: method.to_string(),
            message: e.to_string(),
        })?;
        if let Some(err) = v.get("error") {
            let message = err.get("message").and_then(Value::as_str).unwrap_or("?").to_string();
            return Err(L1Error::Rpc { name: self.shown.clone(), method: method.into(), message });
        }
        Ok(v.get("result").cloned().unwrap_or(Value::Null))
    }

    fn malformed(&self, method: &str, message: impl Into<String>) -> L1Error {
        L1Error::Malformed {
            name: self.shown.clone(),
            method: method.to_string(),
            message: message.into(),
        }
    }

    /// `eth_getBlockByNumber(tag, false)`; `None` for no block (or a label not set yet).
    async fn get_block(&self, tag: Value) -> Result<Option<Value>, L1Error> {
        match self.call_rpc("eth_getBlockByNumber", json!([tag, false])).await {
            Ok(v) if v.is_null() => Ok(None),
            Ok(v) => Ok(Some(v)),
            // geth before a finalized block exists: "finalized block not found".
            Err(L1Error::Rpc { message, .. }) if crate::http::is_unset_label(&message) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn block(&self, tag: Value) -> Result<Option<BlockRef>, L1Error> {
        const M: &str = "eth_getBlockByNumber";
        let Some(v) = self.get_block(tag).await? else { return Ok(None) };
        block_ref(&v).map(Some).ok_or_else(|| self.malformed(M, "no number or hash"))
    }
}

/// `{number, hash}` of a JSON-RPC block.
fn block_ref(v: &Value) -> Option<BlockRef> {
    let number = parse_quantity(v.get("number")?)?;
    let hash = v.get("hash")?.as_str()?.parse().ok()?;
    Some(BlockRef::new(number, hash))
}

impl L1 for L1Rpc {
    fn name(&self) -> &str {
        &self.shown
    }

    fn chain_id(&self) -> BoxFuture<'_, Result<u64, L1Error>> {
        Box::pin(async move {
            let v = self.call_rpc("eth_chainId", json!([])).await?;
            parse_quantity(&v).ok_or_else(|| self.malformed("eth_chainId", v.to_string()))
        })
    }

    fn block_at(&self, number: u64) -> BoxFuture<'_, Result<Option<BlockRef>, L1Error>> {
        Box::pin(async move {
            let b = self.block(json!(format!("{number:#x}"))).await?;
            match b {
                Some(b) if b.number != number => Err(self.malformed(
                    "eth_getBlockByNumber",
                    format!("asked for block {number}, got {b}"),
                )),
                b => Ok(b),
            }
        })
    }

    fn heads(&self) -> BoxFuture<'_, Result<L1Heads, L1Error>> {
        Box::pin(async move {
            let (latest, finalized) =
                tokio::join!(self.block(json!("latest")), self.block(json!("finalized")));
            Ok(L1Heads { latest: latest?, finalized: finalized? })
        })
    }

    fn header(&self, at: super::L1At) -> BoxFuture<'_, Result<Option<super::L1Header>, L1Error>> {
        Box::pin(async move {
            let tag = match at {
                super::L1At::Tag(t) => json!(t),
                super::L1At::Number(n) => json!(format!("{n:#x}")),
            };
            let Some(v) = self.get_block(tag).await? else { return Ok(None) };
            let parent = v.get("parentHash").and_then(|p| p.as_str()?.parse().ok());
            let timestamp = v.get("timestamp").and_then(parse_quantity);
            match (block_ref(&v), parent, timestamp) {
                (Some(block), Some(parent_hash), Some(timestamp)) => {
                    Ok(Some(super::L1Header { block, parent_hash, timestamp }))
                }
                _ => Err(self
                    .malformed("eth_getBlockByNumber", "no number, hash, parentHash or timestamp")),
            }
        })
    }

    fn call(&self, to: Address, data: Bytes, at: B256) -> BoxFuture<'_, Result<Bytes, L1Error>> {
        Box::pin(async move {
            const M: &str = "eth_call";
            let params = json!([{"to": to, "data": data}, {"blockHash": at}]);
            let v = self.call_rpc(M, params).await?;
            serde_json::from_value::<Bytes>(v.clone())
                .map_err(|e| self.malformed(M, format!("{e}: {v}")))
        })
    }
}
