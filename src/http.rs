//! JSON-RPC plumbing shared by the engine and source clients: HTTP with a bound on the size of
//! an answer (a source or EL that sends an endless or huge body costs at most
//! `max_response_mib`, never all the memory of the host), error chains, quantities, labels.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use alloy_json_rpc::{RequestPacket, ResponsePacket};
use alloy_provider::transport::{TransportError, TransportErrorKind, TransportFut};

pub use crate::config::DEFAULT_MAX_RESPONSE_MIB;

/// An answer larger than the configured bound. Carried through alloy's transport error as a
/// custom error and recognised by the source.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the answer is larger than max_response_mib ({limit_mib} MiB); if blocks of this chain \
     are really that large, raise max_response_mib (memory: up to prefetch blocks of that size)"
)]
pub struct TooLarge {
    /// The bound, MiB.
    pub limit_mib: usize,
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Larger than the bound.
    #[error(transparent)]
    TooLarge(#[from] TooLarge),
    /// The connection failed while reading.
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
}

/// Reads `resp`'s body, refusing one longer than `limit_mib` MiB (checked against the declared
/// length first, then while reading, so that a lying `Content-Length` does not help either).
pub async fn read_capped(
    mut resp: reqwest::Response,
    limit_mib: usize,
) -> Result<Vec<u8>, ReadError> {
    let limit = limit_mib.saturating_mul(1 << 20);
    let too_large = || ReadError::TooLarge(TooLarge { limit_mib });
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(resp.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An alloy transport over HTTP whose answers are bounded by [`read_capped`].
#[derive(Clone, Debug)]
pub struct CappedHttp {
    client: reqwest::Client,
    url: reqwest::Url,
    limit_mib: usize,
}

impl CappedHttp {
    /// A transport to `url` with answers of at most `limit_mib` MiB.
    pub fn new(url: reqwest::Url, limit_mib: usize) -> Self {
        Self { client: reqwest::Client::new(), url, limit_mib }
    }

    async fn send(self, req: RequestPacket) -> Result<ResponsePacket, TransportError> {
        let resp = self
            .client
            .post(self.url)
            .json(&req)
            .send()
            .await
            .map_err(TransportErrorKind::custom)?;
        let status = resp.status();
        let body = read_capped(resp, self.limit_mib).await.map_err(|e| match e {
            ReadError::TooLarge(t) => TransportErrorKind::custom(t),
            ReadError::Transport(e) => TransportErrorKind::custom(e),
        })?;
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            return Err(TransportErrorKind::http_error(status.as_u16(), text));
        }
        serde_json::from_slice(&body)
            .map_err(|e| TransportError::deser_err(e, String::from_utf8_lossy(&body)))
    }
}

impl tower_service::Service<RequestPacket> for CappedHttp {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: RequestPacket) -> Self::Future {
        let fut: Pin<Box<dyn Future<Output = _> + Send>> = Box::pin(self.clone().send(req));
        fut
    }
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

/// A JSON-RPC quantity ("0x1a") as a number.
pub fn parse_quantity(v: &serde_json::Value) -> Option<u64> {
    u64::from_str_radix(v.as_str()?.strip_prefix("0x")?, 16).ok()
}

/// Whether an error message for a label read means "this label is not set yet" (geth:
/// "safe block not found", "finalized block not found"). Any other error is an error.
pub fn is_unset_label(message: &str) -> bool {
    message.contains("block not found")
}

/// Whether a transport error is a [`TooLarge`] answer.
pub fn too_large(e: &TransportError) -> Option<TooLarge> {
    match e {
        alloy_provider::transport::RpcError::Transport(TransportErrorKind::Custom(c)) => {
            c.downcast_ref::<TooLarge>().cloned()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::SourceEntry;
    use crate::source::{RpcSource, Source, SourceError};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A JSON-RPC server answering every request with a quantity `pad` hex digits long, the
    /// request's id echoed; `chunked`: no Content-Length (the bound must hold while reading).
    async fn server(pad: usize, chunked: bool) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut got = Vec::new();
                    // Headers, then the body (Content-Length from the client).
                    let body = loop {
                        let Ok(n) = conn.read(&mut buf).await else { return };
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&got).to_string();
                        let Some(end) = text.find("\r\n\r\n") else { continue };
                        let len = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break got[end + 4..end + 4 + len].to_vec();
                        }
                    };
                    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let answer = serde_json::json!({
                        "jsonrpc": "2.0", "id": req["id"], "result": format!("0x1{}", "0".repeat(pad)),
                    })
                    .to_string();
                    let head = if chunked {
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_string()
                    } else {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                            answer.len()
                        )
                    };
                    let _ = conn.write_all(head.as_bytes()).await;
                    if chunked {
                        for part in answer.as_bytes().chunks(64 * 1024) {
                            let _ =
                                conn.write_all(format!("{:x}\r\n", part.len()).as_bytes()).await;
                            let _ = conn.write_all(part).await;
                            let _ = conn.write_all(b"\r\n").await;
                        }
                        let _ = conn.write_all(b"0\r\n\r\n").await;
                    } else {
                        let _ = conn.write_all(answer.as_bytes()).await;
                    }
                });
            }
        });
        format!("http://{addr}/")
    }

    fn source(url: String) -> RpcSource {
        RpcSource::new(&SourceEntry::Url(url), std::time::Duration::from_secs(10))
            .with_max_response_mib(1)
    }

    #[tokio::test]
    async fn a_source_answer_over_the_bound_is_refused_with_the_key_named() {
        for chunked in [false, true] {
            let small = source(server(10, chunked).await);
            assert!(small.chain_id().await.is_ok(), "a small answer passes (chunked: {chunked})");
            let big = source(server(2 << 20, chunked).await);
            let e = big.chain_id().await.expect_err("2 MiB over a 1 MiB bound");
            assert!(matches!(e, SourceError::TooLarge { .. }), "chunked {chunked}: {e:?}");
            assert_eq!(e.reason(), "too_large");
            assert!(!e.is_lie(), "a large answer is not a lie");
            assert!(e.to_string().contains("max_response_mib (1 MiB)"), "{e}");
        }
    }

    #[tokio::test]
    async fn an_el_answer_over_the_bound_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let jwt = dir.path().join("jwt.hex");
        std::fs::write(&jwt, "ab".repeat(32)).expect("jwt");
        for chunked in [false, true] {
            let url = server(2 << 20, chunked).await;
            let cfg = crate::config::EngineConfig {
                url: url.clone(),
                rpc_url: url,
                jwt_secret_file: jwt.clone(),
                ..crate::Config::default().engine
            };
            let el =
                crate::engine::EngineClient::new(&cfg).expect("client").with_max_response_mib(1);
            let e = el.exchange_capabilities().await.expect_err("over the bound");
            assert!(matches!(e, crate::engine::EngineError::TooLarge { .. }), "{e:?}");
            assert!(e.to_string().contains("max_response_mib"), "{e}");
            let roomy =
                crate::engine::EngineClient::new(&cfg).expect("client").with_max_response_mib(4);
            let e = roomy.exchange_capabilities().await.expect_err("a quantity is not a list");
            assert!(
                matches!(e, crate::engine::EngineError::Decode { .. }),
                "read in full under a larger bound: {e:?}"
            );
        }
    }
}
