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
use futures_util::StreamExt;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tracing::info;

use super::RpcSource;
use super::batching::{self, Verdict};
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

/// The first error in a batch's answer, for the log.
fn first_error<T>(answer: &Result<Vec<Result<T, SourceError>>, SourceError>) -> String {
    match answer {
        Err(e) => e.to_string(),
        Ok(calls) => {
            calls.iter().find_map(|c| c.as_ref().err()).map(ToString::to_string).unwrap_or_default()
        }
    }
}

/// A verdict of "rate limited" always has an error to show; should that ever not hold, a rate
/// limit without a wait is the safe reading (the source is left alone briefly).
fn unreachable_limit(source: &str) -> SourceError {
    SourceError::RateLimited {
        source_name: source.to_string(),
        method: "batch".into(),
        retry_after: None,
        detail: "every call of the batch was rate limited".into(),
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

    /// Blocks `from..from + count` in batch requests of the size the source takes (the first
    /// block alone while the source's raw support is unknown). A call whose answer failed is
    /// asked again on its own; a batch refused for its size is halved and asked again; a batch
    /// the source rate limits whole ends the fetch with that rate limit (what came before it is
    /// kept), and the next batches are smaller.
    pub(super) async fn read_blocks(
        &self,
        from: u64,
        count: u64,
    ) -> Result<Vec<Option<SourceBlock>>, SourceError> {
        let end = from + count;
        let mut out = Vec::with_capacity(count as usize);
        let mut next = from;
        if count > 0 && !self.fetch.known() {
            out.push(self.read_block(BlockId::Number(from)).await?);
            next += 1;
        }
        while next < end {
            let size = (self.batching.size() as u64).min(end - next);
            if size == 1 || (self.fetch.raw() && self.batching.raw_singly()) {
                match self.read_singly(next, size).await {
                    Err(e) if out.is_empty() || e.rate_limit().is_none() => return Err(e),
                    Err(_) => return Ok(out),
                    Ok(blocks) => {
                        let whole = blocks.len() as u64 == size;
                        out.extend(blocks);
                        if !whole {
                            return Ok(out);
                        }
                        self.batching.answered(&self.name, size as usize);
                    }
                }
                next += size;
                continue;
            }
            let raw = self.fetch.raw();
            let answers = if raw {
                let params = (next..next + size).map(|n| json!([format!("{n:#x}")])).collect();
                self.batch::<Bytes>("debug_getRawBlock", params)
                    .await
                    .map(|a| a.into_iter().map(|r| r.map(from_raw)).collect::<Vec<_>>())
            } else {
                let params =
                    (next..next + size).map(|n| json!([format!("{n:#x}"), true])).collect();
                self.batch::<Box<RawValue>>("eth_getBlockByNumber", params)
                    .await
                    .map(|a| a.into_iter().map(|r| r.map(from_json)).collect::<Vec<_>>())
            };
            match batching::verdict(&answers) {
                Verdict::TooBig => {
                    let detail = first_error(&answers);
                    if self.batching.too_big(&self.name, size as usize, &detail) {
                        continue;
                    }
                }
                Verdict::RateLimited => {
                    self.batching.rate_limited(&self.name, size as usize);
                    let e = match answers {
                        Err(e) => e,
                        Ok(mut calls) => match calls.swap_remove(0) {
                            Err(e) => e,
                            Ok(_) => unreachable_limit(&self.name),
                        },
                    };
                    return if out.is_empty() { Err(e) } else { Ok(out) };
                }
                Verdict::AllFailed if raw => {
                    // Asked singly: a block that comes shows the source refuses them in
                    // batches only (and the rest of this batch goes one by one too).
                    let detail = first_error(&answers);
                    let one = self.read_block(BlockId::Number(next)).await?;
                    if self.fetch.raw() && one.is_some() {
                        self.batching.raw_only_singly(&self.name, &detail);
                    }
                    out.push(one);
                    next += 1;
                    continue;
                }
                Verdict::AllFailed | Verdict::Answered => {}
            }
            let answers = match answers {
                Ok(a) => {
                    if a.iter().all(Result::is_ok) {
                        self.batching.answered(&self.name, size as usize);
                    }
                    a
                }
                Err(e) if batching::names_batch_size(&e) => Vec::new(),
                Err(e) if out.is_empty() || e.rate_limit().is_none() => return Err(e),
                Err(_) => return Ok(out),
            };
            let mut answers = answers.into_iter();
            for n in next..next + size {
                match answers.next() {
                    Some(Ok(b)) => out.push(b),
                    Some(Err(e)) if e.rate_limit().is_some() => {
                        return if out.is_empty() { Err(e) } else { Ok(out) };
                    }
                    _ => out.push(self.read_block(BlockId::Number(n)).await?),
                }
            }
            next += size;
        }
        Ok(out)
    }

    /// Blocks `from..from + count`, one request each, a few in flight: in order, up to the
    /// first rate limit (its error when none came); any other error fails the whole.
    async fn read_singly(
        &self,
        from: u64,
        count: u64,
    ) -> Result<Vec<Option<SourceBlock>>, SourceError> {
        let mut stream = futures_util::stream::iter(from..from + count)
            .map(|n| self.read_block(BlockId::Number(n)))
            .buffered(batching::SINGLES_IN_FLIGHT);
        let mut out = Vec::with_capacity(count as usize);
        while let Some(b) = stream.next().await {
            match b {
                Ok(b) => out.push(b),
                Err(e) if out.is_empty() || e.rate_limit().is_none() => return Err(e),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    /// Sends one JSON-RPC batch of `method` calls; one result per call.
    pub(super) async fn batch<R: RpcRecv>(
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
    use std::sync::Mutex;

    use super::*;
    use crate::config::SourceEntry;
    use crate::http::tests::answering;
    use crate::source::Source;

    /// A JSON-RPC answer per call: `rule(method, calls in the request)` gives the error of a
    /// call (code, message) or None for a block. Returns the source and the size of every
    /// request it got (1 for a single call).
    async fn provider(
        rule: impl Fn(&str, usize) -> Option<(i64, &'static str)> + Send + Sync + 'static,
    ) -> (RpcSource, Arc<Mutex<Vec<usize>>>) {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let (url, _) = answering("200 OK", "", move |req| {
            let calls: Vec<Value> = match req.as_array() {
                Some(c) => c.clone(),
                None => vec![req.clone()],
            };
            seen.lock().expect("sizes").push(calls.len());
            let one = |c: &Value| match rule(c["method"].as_str().unwrap_or(""), calls.len()) {
                Some((code, message)) => json!({"jsonrpc": "2.0", "id": c["id"], "error": {"code": code, "message": message}}),
                None => json!({"jsonrpc": "2.0", "id": c["id"], "result": "0x01"}),
            };
            match req.as_array() {
                // geth's batch cap: one answer, for the first call, naming the batch.
                Some(_) if rule("batch", calls.len()).is_some() => {
                    let (code, message) = rule("batch", calls.len()).expect("rule");
                    json!([{"jsonrpc": "2.0", "id": calls[0]["id"], "error": {"code": code, "message": message}}])
                }
                Some(_) => calls.iter().map(one).collect(),
                None => one(req),
            }
        })
        .await;
        let s = RpcSource::new(&SourceEntry::Url(url), std::time::Duration::from_secs(10))
            .with_fetch(Fetch::Raw);
        (s, sizes)
    }

    fn taken(sizes: &Mutex<Vec<usize>>) -> Vec<usize> {
        std::mem::take(&mut *sizes.lock().expect("sizes"))
    }

    #[tokio::test]
    async fn a_batch_refused_for_its_size_is_halved_until_it_passes_and_remembered() {
        let (s, sizes) =
            provider(|m, n| (m == "batch" && n > 3).then_some((-32600, "batch too large"))).await;
        let got = s.blocks(1, 10).await.expect("blocks");
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(Option::is_some));
        assert_eq!(taken(&sizes), vec![10, 5, 2, 2, 2, 2, 2]);
        let got = s.blocks(11, 10).await.expect("blocks");
        assert_eq!(got.len(), 10);
        assert_eq!(taken(&sizes), vec![2; 5], "remembered: no refused batch again");
    }

    #[tokio::test]
    async fn raw_blocks_refused_in_batches_are_asked_for_singly_from_then_on() {
        let rule = |m: &str, n: usize| {
            (m == "debug_getRawBlock" && n > 1)
                .then_some((-32600, "debug methods are not supported in batch requests"))
        };
        let (s, sizes) = provider(rule).await;
        let got = s.blocks(1, 8).await.expect("blocks");
        assert_eq!((got.len(), got.iter().all(Option::is_some)), (8, true));
        assert_eq!(taken(&sizes), [vec![8], vec![1; 8]].concat());
        let got = s.blocks(9, 8).await.expect("blocks");
        assert_eq!(got.len(), 8);
        assert_eq!(taken(&sizes), vec![1; 8], "no batch of raw blocks again");
    }

    #[tokio::test]
    async fn a_batch_rate_limited_whole_is_halved_and_grows_back_after_clean_answers() {
        // A provider that counts calls per request: more than 4 at once is over its plan.
        let (s, sizes) =
            provider(|m, n| (m != "batch" && n > 4).then_some((429, "rate limit exceeded"))).await;
        let e = s.blocks(1, 16).await.expect_err("limited");
        assert_eq!(e.rate_limit(), Some(None), "{e:?}");
        let e = s.blocks(1, 16).await.expect_err("limited");
        assert!(e.rate_limit().is_some());
        assert_eq!(taken(&sizes), vec![16, 8]);
        let got = s.blocks(1, 16).await.expect("4 at a time pass");
        assert_eq!(got.len(), 16);
        assert_eq!(taken(&sizes), vec![4; 4]);
        // After enough clean batches it tries 8 again; refused, back to 4, what came is kept.
        let mut from = 17;
        while from < 17 + 4 * batching::REGROW_AFTER as u64 {
            s.blocks(from, 4).await.expect("blocks");
            from += 4;
        }
        taken(&sizes);
        let got = s.blocks(from, 16).await.expect_err("8 refused first");
        assert!(got.rate_limit().is_some());
        assert_eq!(taken(&sizes), vec![8]);
        assert_eq!(s.blocks(from, 8).await.expect("blocks").len(), 8);
        assert_eq!(taken(&sizes), vec![4, 4]);
    }

    #[tokio::test]
    async fn a_batch_of_blocks_not_there_yet_does_not_make_raw_blocks_go_singly() {
        // A lagging replica: every call of the batch "not found", and singly too.
        let (s, sizes) = provider(|m, _| {
            (m == "debug_getRawBlock").then_some((-32000, "block #0x10 not found"))
        })
        .await;
        let got = s.blocks(1, 8).await.expect("no blocks is an answer");
        assert_eq!(got.len(), 8);
        assert!(got.iter().all(Option::is_none));
        taken(&sizes);
        s.blocks(1, 8).await.expect("blocks");
        assert_eq!(taken(&sizes)[0], 8, "still one batch first: {:?}", s.batching);
    }

    #[tokio::test]
    async fn rate_halvings_stop_at_two_and_grow_back() {
        let (s, sizes) = provider(|_, _| None).await;
        let s = RpcSource { batching: batching::Batching::new(Some(8), None), ..s };
        for tried in [8, 4, 2, 2] {
            s.batching.rate_limited("s", tried);
        }
        assert_eq!(s.batching.size(), 2, "a refused small batch may only have met a full window");
        for n in 0..batching::REGROW_AFTER as u64 {
            s.blocks(1 + 2 * n, 2).await.expect("blocks");
        }
        assert_eq!(s.batching.size(), 4);
        taken(&sizes);
    }

    #[tokio::test]
    async fn a_fetch_cut_short_by_a_rate_limit_keeps_what_came() {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = calls.clone();
        // The first request passes, every later one is over the limit.
        let (s, sizes) = provider(move |m, _| {
            (m != "batch" && n.fetch_add(1, Ordering::SeqCst) >= 4)
                .then_some((-32005, "limit exceeded"))
        })
        .await;
        let s = RpcSource { batching: batching::Batching::new(Some(4), None), ..s };
        let got = s.blocks(1, 12).await.expect("the first batch came");
        assert_eq!(got.len(), 4, "a prefix: the rest is asked for again later");
        assert_eq!(taken(&sizes), vec![4, 4]);
    }

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
