//! Block fetches of one RPC source: raw (`debug_getRawBlock`) or JSON (`eth_getBlockBy*` with
//! full transactions), one block per request or several in a JSON-RPC batch.
//!
//! In `fetch = "auto"` the source's first answer to `debug_getRawBlock` decides: a source whose
//! debug API is off (method not found, or refused by a proxy) gets JSON requests from then on;
//! any other answer, a block or "not found", shows it serves raw blocks.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use alloy_json_rpc::RpcRecv;
use alloy_primitives::Bytes;
use alloy_provider::Provider;
use alloy_rpc_client::BatchRequest;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tracing::info;

use super::RpcSource;
use crate::config::Fetch;
use crate::source::{BlockId, SourceBlock, SourceError};

const UNKNOWN: u8 = 0;
const SERVES_RAW: u8 = 1;
const JSON_ONLY: u8 = 2;

/// The configured fetch mode and what the source turned out to serve.
#[derive(Debug, Clone)]
pub(super) struct FetchState {
    mode: Fetch,
    serves: Arc<AtomicU8>,
}

impl FetchState {
    pub(super) fn new(mode: Fetch) -> Self {
        Self { mode, serves: Arc::new(AtomicU8::new(UNKNOWN)) }
    }

    fn raw(&self) -> bool {
        match self.mode {
            Fetch::Json => false,
            Fetch::Raw => true,
            Fetch::Auto => self.serves.load(Ordering::Relaxed) != JSON_ONLY,
        }
    }

    fn known(&self) -> bool {
        self.mode != Fetch::Auto || self.serves.load(Ordering::Relaxed) != UNKNOWN
    }
}

/// Whether an answer to `debug_getRawBlock` says the method is not served (debug API off, or a
/// proxy that refuses it), rather than that something went wrong.
fn method_missing(e: &SourceError) -> bool {
    match e {
        SourceError::Rpc { code, message, .. } => {
            let m = message.to_lowercase();
            *code == -32601
                || (m.contains("method")
                    && (m.contains("not exist")
                        || m.contains("not available")
                        || m.contains("not found")
                        || m.contains("not allowed")
                        || m.contains("not supported")))
        }
        SourceError::Http { status, .. } => matches!(status, 403..=405),
        _ => false,
    }
}

/// Whether an error answer means "no such block" (geth: "block #... not found").
fn block_not_found(e: &SourceError) -> bool {
    matches!(e, SourceError::Rpc { message, .. } if message.contains("not found"))
        && !method_missing(e)
}

fn id_param(at: BlockId) -> Value {
    match at {
        BlockId::Number(n) => Value::from(format!("{n:#x}")),
        BlockId::Hash(h) => Value::from(h.to_string()),
    }
}

fn from_raw(bytes: Bytes) -> Option<SourceBlock> {
    (!bytes.is_empty()).then_some(SourceBlock::Rlp(bytes))
}

fn from_json(raw: Box<RawValue>) -> Option<SourceBlock> {
    (raw.get() != "null").then(|| SourceBlock::Json(raw.into()))
}

impl RpcSource {
    /// One block, raw where the source serves it.
    pub(super) async fn read_block(&self, at: BlockId) -> Result<Option<SourceBlock>, SourceError> {
        if self.fetch.raw() {
            match self.request::<Bytes>("debug_getRawBlock", json!([id_param(at)])).await {
                Ok(bytes) => {
                    self.learned(true);
                    return Ok(from_raw(bytes));
                }
                Err(e) if block_not_found(&e) => {
                    self.learned(true);
                    return Ok(None);
                }
                Err(e) if method_missing(&e) => self.no_raw(e)?,
                Err(e) => return Err(e),
            }
        }
        let raw: Box<RawValue> = match at {
            BlockId::Number(n) => {
                self.request("eth_getBlockByNumber", json!([format!("{n:#x}"), true])).await?
            }
            BlockId::Hash(h) => self.request("eth_getBlockByHash", json!([h, true])).await?,
        };
        Ok(from_json(raw))
    }

    /// Blocks `from..from + count` in one batch request (the first alone while the source's
    /// raw support is unknown). An entry whose answer failed is asked for again on its own; an
    /// answer too large for one response is split into single requests.
    pub(super) async fn read_blocks(
        &self,
        from: u64,
        count: u64,
    ) -> Result<Vec<Option<SourceBlock>>, SourceError> {
        let mut out = Vec::with_capacity(count as usize);
        let mut next = from;
        if count > 0 && !self.fetch.known() {
            out.push(self.read_block(BlockId::Number(from)).await?);
            next += 1;
        }
        let rest = from + count - next;
        if rest == 0 {
            return Ok(out);
        }
        if rest == 1 {
            out.push(self.read_block(BlockId::Number(next)).await?);
            return Ok(out);
        }
        let heights: Vec<u64> = (next..from + count).collect();
        let answers: Vec<Result<Option<SourceBlock>, SourceError>> = if self.fetch.raw() {
            let params = heights.iter().map(|n| json!([format!("{n:#x}")])).collect();
            match self.batch::<Bytes>("debug_getRawBlock", params).await {
                Ok(a) => a.into_iter().map(|r| r.map(from_raw)).collect(),
                Err(SourceError::TooLarge { .. }) => Vec::new(),
                Err(e) => return Err(e),
            }
        } else {
            let params = heights.iter().map(|n| json!([format!("{n:#x}"), true])).collect();
            match self.batch::<Box<RawValue>>("eth_getBlockByNumber", params).await {
                Ok(a) => a.into_iter().map(|r| r.map(from_json)).collect(),
                Err(SourceError::TooLarge { .. }) => Vec::new(),
                Err(e) => return Err(e),
            }
        };
        // A source that rate-limits the batch's calls would do the same to each one asked again
        // on its own: stop here, and let the source be left alone as it asked.
        let mut answers = answers;
        if let Some(i) =
            answers.iter().position(|a| matches!(a, Err(e) if e.rate_limit().is_some()))
            && let Err(e) = answers.swap_remove(i)
        {
            return Err(e);
        }
        let mut answers = answers.into_iter();
        for n in heights {
            match answers.next() {
                Some(Ok(b)) => out.push(b),
                _ => out.push(self.read_block(BlockId::Number(n)).await?),
            }
        }
        Ok(out)
    }

    /// Sends one JSON-RPC batch of `method` calls; one result per call.
    async fn batch<R: RpcRecv>(
        &self,
        method: &'static str,
        params: Vec<Value>,
    ) -> Result<Vec<Result<R, SourceError>>, SourceError> {
        let provider = self.provider().await?;
        let mut batch = BatchRequest::new(provider.client());
        let mut waiters = Vec::with_capacity(params.len());
        for p in &params {
            let w = batch
                .add_call::<_, R>(Cow::Borrowed(method), p)
                .map_err(|e| self.classify(method, e))?;
            waiters.push(w);
        }
        self.spend(params.len()).await;
        let run = async {
            batch.send().await.map_err(|e| self.classify(method, e))?;
            let mut out = Vec::with_capacity(waiters.len());
            for w in waiters {
                out.push(w.await.map_err(|e| self.classify(method, e)));
            }
            Ok(out)
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(r) => r,
            Err(_) => {
                Err(SourceError::Timeout { source_name: self.name.clone(), method: method.into() })
            }
        }
    }

    fn learned(&self, raw: bool) {
        let v = if raw { SERVES_RAW } else { JSON_ONLY };
        self.fetch.serves.store(v, Ordering::Relaxed);
    }

    /// The source does not serve raw blocks: in `auto`, JSON from now on (said once); in `raw`,
    /// an error that says what to do.
    fn no_raw(&self, e: SourceError) -> Result<(), SourceError> {
        let message = e.to_string();
        if self.fetch.mode == Fetch::Raw {
            return Err(SourceError::NoRawBlocks { source_name: self.name.clone(), message });
        }
        let before = self.fetch.serves.swap(JSON_ONLY, Ordering::Relaxed);
        if before != JSON_ONLY {
            info!(target: "lightcl::source", source = %self.name, answer = %message,
                "source does not serve raw blocks (debug_getRawBlock); fetching JSON blocks from \
                 it, which costs it and lightcl more CPU and stops at transaction types lightcl \
                 cannot decode: turn on its debug API for raw blocks");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc(code: i64, message: &str) -> SourceError {
        SourceError::Rpc {
            source_name: "s".into(),
            method: "debug_getRawBlock".into(),
            code,
            message: message.into(),
        }
    }

    #[test]
    fn answers_that_mean_no_debug_api() {
        let cases = [
            (rpc(-32601, "the method debug_getRawBlock does not exist/is not available"), true),
            (rpc(-32601, "Method not found"), true),
            (rpc(-32000, "method not allowed"), true),
            (rpc(-32000, "block #0x12 not found"), false),
            (rpc(-32000, "header not found"), false),
            (SourceError::Http { source_name: "s".into(), method: "m".into(), status: 403 }, true),
            (SourceError::Http { source_name: "s".into(), method: "m".into(), status: 502 }, false),
            (SourceError::Timeout { source_name: "s".into(), method: "m".into() }, false),
        ];
        for (e, want) in cases {
            assert_eq!(method_missing(&e), want, "{e}");
        }
        assert!(block_not_found(&rpc(-32000, "block #0x12 not found")));
        assert!(!block_not_found(&rpc(-32601, "Method not found")));
    }
}
