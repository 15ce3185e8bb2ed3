//! A source over HTTP or WebSocket JSON-RPC (alloy provider as transport).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::B256;
use alloy_provider::{Provider, RootProvider};
use serde_json::{Value, json};

use super::SourceError;
use super::health::{Health, HealthSnapshot, Transition};
use crate::chain::{BlockRef, Label};
use crate::config::{ChainKind, SourceEntry};
use crate::engine::client::parse_quantity;
use crate::payload::{Payload, from_rpc_block_str};
use crate::redact::RedactedUrl;

/// One source.
#[derive(Debug, Clone)]
pub struct RpcSource {
    name: String,
    url: String,
    provider: RootProvider,
    kind: ChainKind,
    timeout: Duration,
    websocket: bool,
    health: Arc<Health>,
}

/// The message of an error and its causes, joined.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

impl RpcSource {
    /// Connects (a WebSocket handshake for ws URLs; HTTP connects lazily).
    pub async fn connect(
        entry: &SourceEntry,
        kind: ChainKind,
        timeout: Duration,
    ) -> Result<Self, SourceError> {
        let shown = RedactedUrl::new(entry.url()).to_string();
        let name = entry.name().map(str::to_string).unwrap_or_else(|| shown.clone());
        let websocket = entry.url().starts_with("ws");
        let connect = RootProvider::connect(entry.url());
        let provider = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                return Err(SourceError::Unreachable {
                    source_name: name,
                    message: redact_in(&error_chain(&e), entry.url(), &shown),
                });
            }
            Err(_) => {
                return Err(SourceError::Timeout { source_name: name, method: "connect".into() });
            }
        };
        Ok(Self {
            name,
            url: entry.url().to_string(),
            provider,
            kind,
            timeout,
            websocket,
            health: Arc::new(Health::default()),
        })
    }

    /// The name used in logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the source is a WebSocket (can push new heads).
    pub fn is_websocket(&self) -> bool {
        self.websocket
    }

    /// Whether the source may be asked now (it is not backing off after failures).
    pub fn available(&self) -> bool {
        self.health.available(Instant::now())
    }

    /// Its health, for status output.
    pub fn health(&self) -> HealthSnapshot {
        self.health.snapshot(Instant::now())
    }

    /// Records its reported latest height (for lag).
    pub fn set_head(&self, head: u64) {
        self.health.set_head(head);
    }

    /// Records a failure found by the caller (a block that does not link, a bad block).
    pub fn penalise(&self, reason: &'static str) {
        self.log_transition(self.health.failure(reason, Instant::now()), reason);
    }

    fn log_transition(&self, t: Transition, reason: &str) {
        match t {
            Transition::None => {}
            Transition::Failing { consecutive, retry_in } => tracing::warn!(
                target: "lightcl::source", source = %self.name, reason, consecutive,
                retry_in = ?retry_in,
                "source failing; it counts as not agreeing and is retried after a backoff"),
            Transition::Recovered { after } => tracing::info!(
                target: "lightcl::source", source = %self.name, failures = after,
                "source answering again; re-admitted"),
        }
    }

    async fn request(&self, method: &'static str, params: Value) -> Result<Value, SourceError> {
        self.request_as::<Value>(method, params).await
    }

    /// A request whose result stays JSON text (full blocks: decoded once, straight to types).
    async fn request_raw(
        &self,
        method: &'static str,
        params: Value,
    ) -> Result<Box<serde_json::value::RawValue>, SourceError> {
        self.request_as(method, params).await
    }

    async fn request_as<R: alloy_json_rpc::RpcRecv>(
        &self,
        method: &'static str,
        params: Value,
    ) -> Result<R, SourceError> {
        let started = Instant::now();
        let fut = self.provider.raw_request::<Value, R>(Cow::Borrowed(method), params);
        let res = match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => {
                Err(SourceError::Timeout { source_name: self.name.clone(), method: method.into() })
            }
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.classify(method, e)),
        };
        match &res {
            Ok(_) => self.log_transition(self.health.success(started.elapsed()), "ok"),
            Err(e) => {
                self.log_transition(self.health.failure(e.reason(), Instant::now()), e.reason())
            }
        }
        res
    }

    fn classify(&self, method: &str, e: alloy_provider::transport::TransportError) -> SourceError {
        use alloy_provider::transport::RpcError;
        let shown = RedactedUrl::new(&self.url).to_string();
        match e {
            RpcError::ErrorResp(p) => SourceError::Rpc {
                source_name: self.name.clone(),
                method: method.into(),
                code: p.code,
                message: p.message.to_string(),
            },
            RpcError::DeserError { err, .. } => SourceError::Malformed {
                source_name: self.name.clone(),
                method: method.into(),
                message: err.to_string(),
            },
            other => SourceError::Unreachable {
                source_name: self.name.clone(),
                message: redact_in(&error_chain(&other), &self.url, &shown),
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

    /// eth_chainId.
    pub async fn chain_id(&self) -> Result<u64, SourceError> {
        let v = self.request("eth_chainId", json!([])).await?;
        parse_quantity(&v)
            .ok_or_else(|| self.malformed("eth_chainId", format!("not a quantity: {v}")))
    }

    /// The block at `label`, number and hash from one call so they are coherent.
    pub async fn label(&self, label: Label) -> Result<Option<BlockRef>, SourceError> {
        self.header_ref(label.tag().to_string()).await
    }

    /// The hash of the source's canonical block at `number`.
    pub async fn hash_at(&self, number: u64) -> Result<Option<B256>, SourceError> {
        Ok(self.header_ref(format!("{number:#x}")).await?.map(|b| b.hash))
    }

    async fn header_ref(&self, tag: String) -> Result<Option<BlockRef>, SourceError> {
        let method = "eth_getBlockByNumber";
        let v = self.request(method, json!([tag, false])).await?;
        if v.is_null() {
            return Ok(None);
        }
        let number = v.get("number").and_then(parse_quantity);
        let hash = v.get("hash").and_then(Value::as_str).and_then(|s| s.parse::<B256>().ok());
        match (number, hash) {
            (Some(n), Some(h)) => Ok(Some(BlockRef::new(n, h))),
            _ => Err(self.malformed(method, format!("block {tag} without number or hash"))),
        }
    }

    /// The full block at `number`, verified (hash, roots) and turned into a payload.
    pub async fn payload(&self, number: u64) -> Result<Option<Payload>, SourceError> {
        let raw =
            self.request_raw("eth_getBlockByNumber", json!([format!("{number:#x}"), true])).await?;
        if raw.get() == "null" {
            return Ok(None);
        }
        from_rpc_block_str(self.kind, &number.to_string(), raw.get()).map(Some).map_err(|error| {
            self.penalise("bad_block");
            SourceError::BadBlock { source_name: self.name.clone(), error }
        })
    }

    /// A stream of new-head notifications (WebSocket sources only).
    pub async fn subscribe_heads(
        &self,
    ) -> Result<Option<futures_util::stream::BoxStream<'static, Value>>, SourceError> {
        if !self.websocket {
            return Ok(None);
        }
        let sub = self.provider.subscribe::<_, Value>(("newHeads",));
        match tokio::time::timeout(self.timeout, sub).await {
            Ok(Ok(s)) => Ok(Some(Box::pin(s.into_stream()))),
            Ok(Err(e)) => Err(self.classify("eth_subscribe", e)),
            Err(_) => Err(SourceError::Timeout {
                source_name: self.name.clone(),
                method: "eth_subscribe".into(),
            }),
        }
    }
}

/// Replaces the URL (as given, and as a URL parser normalises it) in an error message.
fn redact_in(message: &str, raw: &str, shown: &str) -> String {
    let mut out = message.replace(raw, shown);
    if let Ok(u) = url::Url::parse(raw) {
        out = out.replace(u.as_str(), shown);
        if let Some(pw) = u.password() {
            out = out.replace(pw, "***");
        }
    }
    out
}
