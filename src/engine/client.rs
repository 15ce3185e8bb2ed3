//! Engine API client (HS256 JWT per request, per-method timeouts) and EL JSON-RPC reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use alloy_primitives::B256;
use serde_json::{Value, json};

use super::{BoxFuture, Engine, EngineError, PayloadStatus};
use crate::chain::output::{MESSAGE_PASSER, OutputParts};
use crate::chain::{BlockRef, Heads, Label};
use crate::config::EngineConfig;
use crate::http::{is_unset_label, parse_quantity};
use crate::jwt::JwtSecret;
use crate::payload::{FcuVersion, Payload};
use crate::redact::RedactedUrl;

/// A JSON-RPC request borrowing its params.
#[derive(serde::Serialize)]
struct Request<'a, P: ?Sized> {
    jsonrpc: &'static str,
    id: u64,
    method: &'a str,
    params: &'a P,
}

/// A block as the EL reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalBlock {
    /// Height and hash.
    pub block: BlockRef,
    /// Parent hash.
    pub parent_hash: B256,
    /// The forkchoiceUpdated version for a head at this block.
    pub fcu: FcuVersion,
    /// Timestamp.
    pub timestamp: u64,
}

/// Talks to one EL. Its Debug output shows the URLs redacted.
pub struct EngineClient {
    http: reqwest::Client,
    /// Parsed once: parsing a URL per request was a visible share of lightcl's CPU.
    engine_url: reqwest::Url,
    rpc_url: reqwest::Url,
    shown_engine: RedactedUrl,
    shown_rpc: RedactedUrl,
    secret: JwtSecret,
    new_payload_timeout: Duration,
    forkchoice_timeout: Duration,
    call_timeout: Duration,
    next_id: AtomicU64,
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
    max_response_mib: usize,
}

impl std::fmt::Debug for EngineClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineClient")
            .field("engine_url", &self.shown_engine)
            .field("rpc_url", &self.shown_rpc)
            .finish_non_exhaustive()
    }
}

impl EngineClient {
    /// A client from the engine settings (reads the JWT secret file).
    pub fn new(cfg: &EngineConfig) -> Result<Self, EngineError> {
        let secret = JwtSecret::from_file(&cfg.jwt_secret_file)?;
        let parse = |url: &str| {
            reqwest::Url::parse(url).map_err(|e| EngineError::Unreachable {
                url: RedactedUrl::new(url).to_string(),
                method: "connect".into(),
                message: format!("not a URL: {e}"),
            })
        };
        Ok(Self {
            // The EL is local: compressing its answers would only cost both sides CPU.
            http: reqwest::Client::builder().no_gzip().build().unwrap_or_default(),
            engine_url: parse(&cfg.url)?,
            rpc_url: parse(&cfg.rpc_url)?,
            shown_engine: RedactedUrl::new(&cfg.url),
            shown_rpc: RedactedUrl::new(&cfg.rpc_url),
            secret,
            new_payload_timeout: Duration::from_millis(cfg.new_payload_timeout_ms),
            forkchoice_timeout: Duration::from_millis(cfg.forkchoice_timeout_ms),
            call_timeout: Duration::from_millis(cfg.call_timeout_ms),
            next_id: AtomicU64::new(1),
            metrics: None,
            max_response_mib: crate::http::DEFAULT_MAX_RESPONSE_MIB,
        })
    }

    /// Bounds the size of one answer (`max_response_mib`).
    pub fn with_max_response_mib(mut self, mib: usize) -> Self {
        self.max_response_mib = mib;
        self
    }

    /// Records every call's latency and result in `metrics`.
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    async fn call<P: serde::Serialize + ?Sized>(
        &self,
        authed: bool,
        method: &str,
        params: &P,
        timeout: Duration,
    ) -> Result<Value, EngineError> {
        let started = std::time::Instant::now();
        let res = self.call_inner(authed, method, params, timeout).await;
        if let Some(m) = &self.metrics {
            use crate::metrics::{EL_UP, ENGINE_DURATION, ENGINE_REQUESTS, ENGINE_SECONDS};
            let result = match &res {
                Ok(_) => "ok",
                Err(EngineError::Unreachable { .. }) => "unreachable",
                Err(EngineError::Timeout { .. }) => "timeout",
                Err(EngineError::Unauthorized { .. }) => "unauthorized",
                Err(EngineError::Rpc { .. }) => "rpc_error",
                Err(_) => "error",
            };
            let l = [("method", method), ("result", result)];
            let took = started.elapsed().as_secs_f64();
            m.add(ENGINE_REQUESTS, &l, 1.0);
            m.add(ENGINE_SECONDS, &l, took);
            m.observe(ENGINE_DURATION, &[("method", method)], took);
            let up = !matches!(result, "unreachable" | "timeout");
            m.set(EL_UP, &[], if up { 1.0 } else { 0.0 });
        }
        res
    }

    async fn call_inner<P: serde::Serialize + ?Sized>(
        &self,
        authed: bool,
        method: &str,
        params: &P,
        timeout: Duration,
    ) -> Result<Value, EngineError> {
        let (url, shown) = if authed {
            (&self.engine_url, &self.shown_engine)
        } else {
            (&self.rpc_url, &self.shown_rpc)
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Serialised straight from the borrowed params: a payload is never copied.
        let body = Request { jsonrpc: "2.0", id, method, params };
        let mut req = self.http.post(url.clone()).json(&body).timeout(timeout);
        if authed {
            req = req.bearer_auth(self.secret.token()?);
        }
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                EngineError::Timeout { method: method.to_string(), after: timeout }
            } else {
                EngineError::Unreachable {
                    url: shown.to_string(),
                    method: method.to_string(),
                    message: crate::redact::scrub(
                        &crate::http::error_chain(&e),
                        url.as_str(),
                        &shown.to_string(),
                    ),
                }
            }
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let body =
            crate::http::read_capped(resp, self.max_response_mib).await.map_err(|e| match e {
                crate::http::ReadError::TooLarge(error) => {
                    EngineError::TooLarge { method: method.to_string(), error }
                }
                crate::http::ReadError::Transport(e) => transport(e),
            })?;
        let text = String::from_utf8_lossy(&body);
        if authed && (status == 401 || status == 403) {
            return Err(EngineError::Unauthorized { status });
        }
        if !(200..300).contains(&status) {
            let body: String = text.chars().take(200).collect();
            return Err(EngineError::Http { method: method.to_string(), status, body });
        }
        let mut v: Value = serde_json::from_str(&text).map_err(|e| EngineError::Decode {
            method: method.to_string(),
            message: format!("not JSON: {e}"),
        })?;
        if let Some(err) = v.get("error") {
            return Err(EngineError::Rpc {
                method: method.to_string(),
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
            });
        }
        Ok(v.get_mut("result").map(Value::take).unwrap_or(Value::Null))
    }

    /// engine_exchangeCapabilities: proves the JWT and lists the EL's methods.
    pub async fn exchange_capabilities(&self) -> Result<Vec<String>, EngineError> {
        let ours = [
            "engine_newPayloadV1",
            "engine_newPayloadV2",
            "engine_newPayloadV3",
            "engine_newPayloadV4",
            "engine_forkchoiceUpdatedV1",
            "engine_forkchoiceUpdatedV2",
            "engine_forkchoiceUpdatedV3",
        ];
        let v = self
            .call(true, "engine_exchangeCapabilities", &json!([ours]), self.call_timeout)
            .await?;
        serde_json::from_value(v).map_err(|e| EngineError::Decode {
            method: "engine_exchangeCapabilities".into(),
            message: e.to_string(),
        })
    }

    /// engine_newPayloadVn for a verified payload.
    pub async fn new_payload(&self, p: &Payload) -> Result<PayloadStatus, EngineError> {
        let v = self.call(true, p.method, &p.params, self.new_payload_timeout).await?;
        serde_json::from_value(v)
            .map_err(|e| EngineError::Decode { method: p.method.into(), message: e.to_string() })
    }

    /// engine_forkchoiceUpdatedVn without payload attributes (sent only through the gate, via
    /// the [`Engine`] trait).
    async fn fcu_call(
        &self,
        version: FcuVersion,
        heads: &Heads,
    ) -> Result<PayloadStatus, EngineError> {
        let state = json!({
            "headBlockHash": heads.head.hash,
            "safeBlockHash": heads.safe.hash,
            "finalizedBlockHash": heads.finalized.hash,
        });
        let method = version.method();
        let v = self.call(true, method, &json!([state, null]), self.forkchoice_timeout).await?;
        serde_json::from_value(v.get("payloadStatus").cloned().unwrap_or(Value::Null))
            .map_err(|e| EngineError::Decode { method: method.into(), message: e.to_string() })
    }

    /// `debug_setHead(number)` on the EL's JSON-RPC: rolls chain and state back to `number`
    /// (geth and op-geth; it deletes the blocks above). Used only above local finalized.
    pub async fn set_head(&self, number: u64) -> Result<(), EngineError> {
        self.call(false, "debug_setHead", &json!([format!("{number:#x}")]), self.forkchoice_timeout)
            .await
            .map(|_| ())
    }

    /// Whether the EL's JSON-RPC serves the `debug` namespace (`rpc_modules`).
    pub async fn has_debug_api(&self) -> Result<bool, EngineError> {
        let v = self.call(false, "rpc_modules", &json!([]), self.call_timeout).await?;
        Ok(v.get("debug").is_some())
    }

    /// `net_peerCount` and `eth_syncing`. An EL without the `net` namespace reports no peer
    /// count; a failed `eth_syncing` is an error.
    pub async fn sync_status(&self) -> Result<super::SyncStatus, EngineError> {
        let peers = match self.call(false, "net_peerCount", &json!([]), self.call_timeout).await {
            Ok(v) => parse_quantity(&v),
            Err(EngineError::Rpc { .. }) => None,
            Err(e) => return Err(e),
        };
        let v = self.call(false, "eth_syncing", &json!([]), self.call_timeout).await?;
        Ok(super::SyncStatus { peers, progress: super::SyncProgress::from_json(&v) })
    }

    /// eth_chainId of the EL.
    pub async fn chain_id(&self) -> Result<u64, EngineError> {
        let v = self.call(false, "eth_chainId", &json!([]), self.call_timeout).await?;
        parse_quantity(&v).ok_or_else(|| EngineError::Decode {
            method: "eth_chainId".into(),
            message: format!("not a quantity: {v}"),
        })
    }

    /// A block of the EL's canonical chain by label or height (`None`: it has none there).
    pub async fn block(&self, at: BlockAt) -> Result<Option<LocalBlock>, EngineError> {
        let tag = match at {
            BlockAt::Label(l) => l.tag().to_string(),
            BlockAt::Number(n) => format!("{n:#x}"),
        };
        let params = json!([tag, false]);
        let res = self.call(false, "eth_getBlockByNumber", &params, self.call_timeout);
        let v = match res.await {
            Ok(v) => v,
            // geth answers an error ("finalized block not found"), not null, for a label it has
            // not set yet. Any other error stays an error: never read as "unset" (that would
            // move finalized back to genesis).
            Err(EngineError::Rpc { message, .. })
                if matches!(at, BlockAt::Label(_)) && is_unset_label(&message) =>
            {
                Value::Null
            }
            Err(e) => return Err(e),
        };
        if v.is_null() {
            return Ok(None);
        }
        local_block(&v).map(Some).ok_or_else(|| EngineError::Decode {
            method: "eth_getBlockByNumber".into(),
            message: "block without number/hash/parentHash".into(),
        })
    }
}

impl EngineClient {
    /// See [`Engine::output_parts`].
    pub async fn output_parts(&self, number: u64) -> Result<Option<OutputParts>, EngineError> {
        const M: &str = "eth_getBlockByNumber";
        let params = json!([format!("{number:#x}"), false]);
        let v = self.call(false, M, &params, self.call_timeout).await?;
        if v.is_null() {
            return Ok(None);
        }
        let decode = |message: String| EngineError::Decode { method: M.into(), message };
        let field = |k: &str| -> Option<B256> { v.get(k)?.as_str()?.parse().ok() };
        let (Some(lb), Some(state_root)) = (local_block(&v), field("stateRoot")) else {
            return Err(decode("block without number/hash/stateRoot".into()));
        };
        if lb.block.number != number {
            return Err(decode(format!("asked for block {number}, got {}", lb.block)));
        }
        // Isthmus (which brings requestsHash to OP headers) puts the message passer's storage
        // root in withdrawalsRoot.
        let message_passer_root = match (field("requestsHash"), field("withdrawalsRoot")) {
            (Some(_), Some(w)) => w,
            _ => {
                const P: &str = "eth_getProof";
                let params = json!([MESSAGE_PASSER, [], {"blockHash": lb.block.hash}]);
                let proof = self.call(false, P, &params, self.call_timeout).await?;
                proof.get("storageHash").and_then(|h| h.as_str()?.parse().ok()).ok_or_else(
                    || EngineError::Decode {
                        method: P.into(),
                        message: "no storageHash in the answer".into(),
                    },
                )?
            }
        };
        Ok(Some(OutputParts { block: lb.block, state_root, message_passer_root }))
    }
}

/// Which block to read from the EL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockAt {
    /// By label.
    Label(Label),
    /// By height.
    Number(u64),
}

impl Engine for EngineClient {
    fn chain_id(&self) -> BoxFuture<'_, Result<u64, EngineError>> {
        Box::pin(EngineClient::chain_id(self))
    }

    fn capabilities(&self) -> BoxFuture<'_, Result<Vec<String>, EngineError>> {
        Box::pin(self.exchange_capabilities())
    }

    fn block(&self, at: BlockAt) -> BoxFuture<'_, Result<Option<LocalBlock>, EngineError>> {
        Box::pin(EngineClient::block(self, at))
    }

    fn new_payload<'a>(
        &'a self,
        p: &'a Payload,
    ) -> BoxFuture<'a, Result<PayloadStatus, EngineError>> {
        Box::pin(EngineClient::new_payload(self, p))
    }

    fn forkchoice_updated<'a>(
        &'a self,
        version: FcuVersion,
        heads: &'a Heads,
    ) -> BoxFuture<'a, Result<PayloadStatus, EngineError>> {
        Box::pin(self.fcu_call(version, heads))
    }

    fn set_head(&self, number: u64) -> BoxFuture<'_, Result<(), EngineError>> {
        Box::pin(EngineClient::set_head(self, number))
    }

    fn sync_status(&self) -> BoxFuture<'_, Result<super::SyncStatus, EngineError>> {
        Box::pin(EngineClient::sync_status(self))
    }

    fn output_parts(&self, number: u64) -> BoxFuture<'_, Result<Option<OutputParts>, EngineError>> {
        Box::pin(EngineClient::output_parts(self, number))
    }
}

fn local_block(v: &Value) -> Option<LocalBlock> {
    let number = parse_quantity(v.get("number")?)?;
    let hash: B256 = v.get("hash")?.as_str()?.parse().ok()?;
    let parent_hash: B256 = v.get("parentHash")?.as_str()?.parse().ok()?;
    let fcu = if v.get("parentBeaconBlockRoot").is_some_and(|x| !x.is_null()) {
        FcuVersion::V3
    } else if v.get("withdrawalsRoot").is_some_and(|x| !x.is_null()) {
        FcuVersion::V2
    } else {
        FcuVersion::V1
    };
    let timestamp = v.get("timestamp").and_then(parse_quantity).unwrap_or(0);
    Some(LocalBlock { block: BlockRef::new(number, hash), parent_hash, fcu, timestamp })
}
