//! A small JSON-RPC client over HTTP, with optional Engine API JWT auth.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{Error, jwt::JwtSecret};

/// JSON-RPC over HTTP. With a secret, every request carries a freshly minted JWT.
#[derive(Debug)]
pub struct RpcClient {
    http: reqwest::Client,
    url: String,
    jwt: Option<JwtSecret>,
    next_id: AtomicU64,
}

impl RpcClient {
    /// A client for `url`; `jwt` set for the authenticated Engine API port.
    pub fn new(url: impl Into<String>, jwt: Option<JwtSecret>) -> Self {
        // Uncompressed: the ELs are local (lightcl's sources ask for gzip; the test bed need not).
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_gzip()
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { http, url: url.into(), jwt, next_id: AtomicU64::new(1) }
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Calls `method` with `params` and decodes the result.
    pub async fn call<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T, Error> {
        let raw = self.call_raw(method, params).await?;
        serde_json::from_value(raw)
            .map_err(|e| Error::Decode { method: method.to_string(), message: e.to_string() })
    }

    /// Calls `method` and returns the raw `result` value.
    pub async fn call_raw(&self, method: &str, params: Value) -> Result<Value, Error> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
        let mut req = self.http.post(&self.url).json(&body);
        if let Some(secret) = &self.jwt {
            req = req.bearer_auth(secret.token());
        }
        let resp = req.send().await.map_err(|e| Error::Transport {
            url: self.url.clone(),
            method: method.to_string(),
            message: e.to_string(),
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| Error::Transport {
            url: self.url.clone(),
            method: method.to_string(),
            message: e.to_string(),
        })?;
        if !status.is_success() {
            return Err(Error::Http {
                method: method.to_string(),
                status: status.as_u16(),
                body: text,
            });
        }
        let mut v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Decode { method: method.to_string(), message: e.to_string() })?;
        if let Some(err) = v.get("error") {
            return Err(Error::Rpc {
                method: method.to_string(),
                code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: err.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
            });
        }
        Ok(v.get_mut("result").map(Value::take).unwrap_or(Value::Null))
    }
}
