//! A source over HTTP or WebSocket JSON-RPC (alloy provider as transport).

mod batching;
mod blocks;
mod state;

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use alloy_primitives::B256;
use alloy_provider::{Provider, RootProvider};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Value, json};
use tracing::info;

use super::{BlockId, BoxFuture, LabelReport, Source, SourceBlock, SourceError};
use crate::chain::{BlockRef, Label};
use crate::config::SourceEntry;
use crate::http::{error_chain, is_unset_label, parse_quantity};
use crate::redact::RedactedUrl;

/// One source. Its Debug output and every error it returns show the URL redacted.
#[derive(Clone)]
pub struct RpcSource {
    name: String,
    url: String,
    shown: String,
    /// Connected on first use (a WebSocket source may be down at start), and again after a
    /// WebSocket connection died for good (alloy renews a dropped socket by itself a few
    /// times, then gives up: without this the source would stay dead until a restart).
    provider: std::sync::Arc<std::sync::Mutex<Option<RootProvider>>>,
    /// One connection attempt at a time; counts the connections made.
    connecting: std::sync::Arc<tokio::sync::Mutex<u64>>,
    /// WebSocket connections opened, alloy's own renewals of a dropped socket included.
    connects: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// JSON-RPC calls sent, each call of a batch counted.
    calls: std::sync::Arc<std::sync::atomic::AtomicU64>,
    timeout: Duration,
    websocket: bool,
    max_response_mib: usize,
    /// How blocks are fetched, and what this source turned out to serve.
    fetch: blocks::FetchState,
    /// Its `max_requests_per_second`, shared by every request (HTTP sources).
    limiter: Option<std::sync::Arc<crate::http::CallLimiter>>,
    /// The batch size it takes and what it refused in batches.
    batching: batching::Batching,
}

impl fmt::Debug for RpcSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcSource")
            .field("name", &self.name)
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

impl RpcSource {
    /// A source for `entry`; it connects on first use (HTTP connects per request anyway).
    pub fn new(entry: &SourceEntry, timeout: Duration) -> Self {
        let shown = RedactedUrl::new(entry.url()).to_string();
        let name = entry.name().map(str::to_string).unwrap_or_else(|| shown.clone());
        Self {
            name,
            url: entry.url().to_string(),
            shown,
            provider: std::sync::Arc::default(),
            connecting: std::sync::Arc::default(),
            connects: std::sync::Arc::default(),
            calls: std::sync::Arc::default(),
            timeout,
            websocket: entry.url().starts_with("ws"),
            max_response_mib: crate::http::DEFAULT_MAX_RESPONSE_MIB,
            fetch: blocks::FetchState::new(crate::config::Fetch::Auto),
            limiter: entry
                .max_requests_per_second()
                .and_then(std::num::NonZeroU32::new)
                .map(crate::http::call_limiter),
            batching: batching::Batching::new(entry.fetch_batch(), entry.max_requests_per_second()),
        }
    }

    /// Bounds the size of one answer (`max_response_mib`).
    pub fn with_max_response_mib(mut self, mib: usize) -> Self {
        self.max_response_mib = mib;
        self
    }

    /// Fetches blocks as `mode` says (default: auto).
    pub fn with_fetch(mut self, mode: crate::config::Fetch) -> Self {
        self.fetch = blocks::FetchState::new(mode);
        self
    }

    /// A client whose answers are bounded: over HTTP through [`crate::http::CappedHttp`], over
    /// WebSocket by the socket's message size limit.
    async fn connect(&self) -> Result<RootProvider, alloy_provider::transport::TransportError> {
        let limit = self.max_response_mib.saturating_mul(1 << 20);
        if self.websocket {
            let config = alloy_provider::WebSocketConfig::default()
                .max_message_size(Some(limit))
                .max_frame_size(Some(limit));
            let ws = CountedWs {
                inner: alloy_provider::WsConnect::new(self.url.clone()).with_config(config),
                connects: self.connects.clone(),
            };
            let client = alloy_rpc_client::ClientBuilder::default().pubsub(ws).await?;
            return Ok(RootProvider::new(client));
        }
        let url = reqwest::Url::parse(&self.url).map_err(|e| {
            alloy_provider::transport::TransportErrorKind::custom_str(&format!("bad URL: {e}"))
        })?;
        let local = url.host_str().is_some_and(|h| h == "localhost" || h.starts_with("127."));
        let transport = crate::http::CappedHttp::new(url, self.max_response_mib);
        Ok(RootProvider::new(alloy_rpc_client::RpcClient::new(transport, local)))
    }

    /// Whether the source is a WebSocket (can push new heads).
    pub fn is_websocket(&self) -> bool {
        self.websocket
    }

    async fn provider(&self) -> Result<RootProvider, SourceError> {
        if let Some(p) = self.connection() {
            return Ok(p);
        }
        let mut made = self.connecting.lock().await;
        if let Some(p) = self.connection() {
            return Ok(p);
        }
        let p = match tokio::time::timeout(self.timeout, self.connect()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                return Err(SourceError::Unreachable {
                    source_name: self.name.clone(),
                    message: self.redact(&error_chain(&e)),
                });
            }
            Err(_) => {
                return Err(SourceError::Timeout {
                    source_name: self.name.clone(),
                    method: "connect".into(),
                });
            }
        };
        *made += 1;
        if *made > 1 {
            info!(target: "lightcl::source", source = %self.name, connections = *made,
                "connected to the source again after its WebSocket connection died; polls filled \
                 what its subscription missed meanwhile");
        }
        *self.provider.lock().unwrap_or_else(|p| p.into_inner()) = Some(p.clone());
        Ok(p)
    }

    fn connection(&self) -> Option<RootProvider> {
        self.provider.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn request<R: alloy_json_rpc::RpcRecv>(
        &self,
        method: &'static str,
        params: Value,
    ) -> Result<R, SourceError> {
        let provider = self.provider().await?;
        self.spend(1).await;
        let fut = provider.raw_request::<Value, R>(Cow::Borrowed(method), params);
        match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => {
                Err(SourceError::Timeout { source_name: self.name.clone(), method: method.into() })
            }
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.classify(method, e)),
        }
    }

    /// Waits for `calls` tokens of the source's `max_requests_per_second`, if it has one. Taken
    /// before a request's timeout starts: waiting for the quota is not the source being slow.
    pub(super) async fn spend(&self, calls: usize) {
        self.calls.fetch_add(calls as u64, std::sync::atomic::Ordering::Relaxed);
        if let Some(limiter) = &self.limiter {
            crate::http::take_calls(limiter, calls).await;
        }
    }

    /// Removes the URL (as given, and as a URL parser normalises it) and any password from a
    /// message: transport errors print the URL they were sending to.
    fn redact(&self, message: &str) -> String {
        crate::redact::scrub(message, &self.url, &self.shown)
    }

    fn classify(&self, method: &str, e: alloy_provider::transport::TransportError) -> SourceError {
        use alloy_provider::transport::{RpcError, TransportErrorKind};
        // The WebSocket service stopped for good: the next request connects afresh.
        if self.websocket
            && matches!(
                &e,
                RpcError::Transport(
                    TransportErrorKind::BackendGone | TransportErrorKind::PubsubUnavailable
                )
            )
        {
            *self.provider.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        if let Some(error) = crate::http::too_large(&e) {
            return SourceError::TooLarge {
                source_name: self.name.clone(),
                method: method.into(),
                error,
            };
        }
        if let Some(limited) = crate::http::rate_limited(&e) {
            return SourceError::RateLimited {
                source_name: self.name.clone(),
                method: method.into(),
                retry_after: limited.retry_after,
                detail: limited.to_string(),
            };
        }
        match e {
            // Providers over their limit answer a JSON-RPC error instead (inside a batch the
            // HTTP status is 200): 429, or -32005 "limit exceeded".
            RpcError::ErrorResp(p) if matches!(p.code, 429 | -32005) => SourceError::RateLimited {
                source_name: self.name.clone(),
                method: method.into(),
                retry_after: None,
                detail: format!("JSON-RPC error {}: {}", p.code, self.redact(&p.message)),
            },
            RpcError::ErrorResp(p) => SourceError::Rpc {
                source_name: self.name.clone(),
                method: method.into(),
                code: p.code,
                message: self.redact(&p.message),
            },
            RpcError::DeserError { err, .. } => SourceError::Malformed {
                source_name: self.name.clone(),
                method: method.into(),
                message: err.to_string(),
            },
            RpcError::Transport(TransportErrorKind::HttpError(h)) => SourceError::Http {
                source_name: self.name.clone(),
                method: method.into(),
                status: h.status,
            },
            other => SourceError::Unreachable {
                source_name: self.name.clone(),
                message: self.redact(&error_chain(&other)),
            },
        }
    }

    fn malformed(&self, method: &str, message: impl Into<String>) -> SourceError {
        SourceError::Malformed {
            source_name: self.name.clone(),
            method: method.into(),
            message: message.into(),
        }
    }

    async fn header_ref(&self, tag: String) -> Result<Option<BlockRef>, SourceError> {
        Ok(self.header(tag).await?.map(|(b, _)| b))
    }

    /// The block at `tag` (a label or a height) as (number, hash) and its timestamp.
    async fn header(&self, tag: String) -> Result<Option<(BlockRef, Option<u64>)>, SourceError> {
        let method = "eth_getBlockByNumber";
        let v: Value = self.request(method, json!([tag, false])).await?;
        if v.is_null() {
            return Ok(None);
        }
        let number = v.get("number").and_then(parse_quantity);
        let hash = v.get("hash").and_then(Value::as_str).and_then(|s| s.parse::<B256>().ok());
        let time = v.get("timestamp").and_then(parse_quantity);
        match (number, hash) {
            (Some(n), Some(h)) => Ok(Some((BlockRef::new(n, h), time))),
            _ => Err(self.malformed(method, format!("block {tag} without number or hash"))),
        }
    }

    async fn read_labels(&self) -> Result<LabelReport, SourceError> {
        let read = |l: Label| self.header_ref(l.tag().to_string());
        let (latest, safe, finalized) = tokio::join!(
            self.header(Label::Latest.tag().to_string()),
            read(Label::Safe),
            read(Label::Finalized)
        );
        // A label the node has not set yet is an error on geth ("safe block not found").
        let unset = |r: Result<Option<BlockRef>, SourceError>| match r {
            Err(SourceError::Rpc { message, .. }) if is_unset_label(&message) => Ok(None),
            other => other,
        };
        let latest = latest?;
        Ok(LabelReport {
            latest: latest.map(|(b, _)| b),
            latest_time: latest.and_then(|(_, t)| t),
            safe: unset(safe)?,
            finalized: unset(finalized)?,
        })
    }

    async fn subscribe(&self) -> Result<Option<BoxStream<'static, Option<u64>>>, SourceError> {
        if !self.websocket {
            return Ok(None);
        }
        let provider = self.provider().await?;
        let sub = provider.subscribe::<_, Value>(("newHeads",));
        match tokio::time::timeout(self.timeout, sub).await {
            Ok(Ok(s)) => Ok(Some(
                s.into_stream()
                    .map(|head: Value| head.get("number").and_then(parse_quantity))
                    .boxed(),
            )),
            Ok(Err(e)) => Err(self.classify("eth_subscribe", e)),
            Err(_) => Err(SourceError::Timeout {
                source_name: self.name.clone(),
                method: "eth_subscribe".into(),
            }),
        }
    }
}

/// The source's WebSocket connector, counting the connections it opens: alloy renews a dropped
/// socket (and its subscriptions) by itself, and this count is how lightcl sees that it did.
#[derive(Clone, Debug)]
struct CountedWs {
    inner: alloy_provider::WsConnect,
    connects: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl alloy_pubsub::PubSubConnect for CountedWs {
    fn is_local(&self) -> bool {
        self.inner.is_local()
    }

    async fn connect(
        &self,
    ) -> alloy_provider::transport::TransportResult<alloy_pubsub::ConnectionHandle> {
        let handle = self.inner.connect().await?;
        self.connects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(handle)
    }
}

impl Source for RpcSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn chain_id(&self) -> BoxFuture<'_, Result<u64, SourceError>> {
        Box::pin(async move {
            let v: Value = self.request("eth_chainId", json!([])).await?;
            parse_quantity(&v)
                .ok_or_else(|| self.malformed("eth_chainId", format!("not a quantity: {v}")))
        })
    }

    fn labels(&self) -> BoxFuture<'_, Result<LabelReport, SourceError>> {
        Box::pin(self.read_labels())
    }

    fn hash_at(&self, number: u64) -> BoxFuture<'_, Result<Option<B256>, SourceError>> {
        Box::pin(async move { Ok(self.header_ref(format!("{number:#x}")).await?.map(|b| b.hash)) })
    }

    fn block(&self, at: BlockId) -> BoxFuture<'_, Result<Option<SourceBlock>, SourceError>> {
        Box::pin(self.read_block(at))
    }

    fn blocks(
        &self,
        from: u64,
        count: u64,
    ) -> BoxFuture<'_, Result<Vec<Option<SourceBlock>>, SourceError>> {
        Box::pin(self.read_blocks(from, count))
    }

    fn subscribe_heads(
        &self,
    ) -> BoxFuture<'_, Result<Option<BoxStream<'static, Option<u64>>>, SourceError>> {
        Box::pin(self.subscribe())
    }

    fn logs(
        &self,
        block: B256,
        addresses: Vec<alloy_primitives::Address>,
        from: super::LogsFrom,
    ) -> BoxFuture<'_, Result<Vec<crate::payload::requests::LogEntry>, SourceError>> {
        Box::pin(self.read_logs(block, addresses, from))
    }

    fn storage(
        &self,
        at: B256,
        slots: Vec<(alloy_primitives::Address, alloy_primitives::U256)>,
    ) -> BoxFuture<'_, Result<Vec<B256>, SourceError>> {
        Box::pin(self.read_storage(at, slots))
    }

    fn connections(&self) -> u64 {
        self.connects.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_debug_never_show_the_key() {
        let key = "abcdef0123456789abcdef0123456789";
        let entry = SourceEntry::Url(format!("https://user:pw@rpc.example.com/v2/{key}?token=zz9"));
        let s = RpcSource::new(&entry, Duration::from_secs(1));
        let msg = format!(
            "error sending request for url (https://rpc.example.com/v2/{key}?token=zz9): pw {key}"
        );
        let shown = s.redact(&msg);
        for secret in [key, "zz9", ":pw@", " pw "] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        let dbg = format!("{s:?}");
        assert!(!dbg.contains(key) && !dbg.contains("pw"), "{dbg}");
    }
}
