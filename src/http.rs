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

/// A source that said it is over its rate limit: HTTP 429, or 503 with a `Retry-After`. Carried
/// through alloy's transport error as a custom error and recognised by the source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("over its rate limit (HTTP {status}{})", wait_text(*retry_after))]
pub struct RateLimited {
    /// The HTTP status (429 or 503).
    pub status: u16,
    /// How long it asked to be left alone (`Retry-After`), when it said.
    pub retry_after: Option<std::time::Duration>,
}

fn wait_text(d: Option<std::time::Duration>) -> String {
    d.map(|d| format!(", retry after {} s", d.as_secs_f64())).unwrap_or_default()
}

/// The longest `Retry-After` taken as given: a longer one (or a date far ahead) is capped, so a
/// misconfigured provider cannot silence a source for hours.
pub const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// A `Retry-After` value: delay seconds, or an HTTP date (`Wed, 21 Oct 2026 07:28:00 GMT`)
/// counted from `now`; a date already past is zero. Capped at [`MAX_RETRY_AFTER`]; None when
/// it is neither.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<std::time::Duration> {
    let value = value.trim();
    let d = match value.parse::<u64>() {
        Ok(secs) => std::time::Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            at.duration_since(now).unwrap_or_default()
        }
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// Whether a transport error is a [`RateLimited`] answer.
pub fn rate_limited(e: &TransportError) -> Option<RateLimited> {
    match e {
        alloy_provider::transport::RpcError::Transport(TransportErrorKind::Custom(c)) => {
            c.downcast_ref::<RateLimited>().cloned()
        }
        _ => None,
    }
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

/// A request rate a source allows: a token per call, refilled at the configured rate, with a
/// burst of one second's worth.
pub type CallLimiter = governor::DefaultDirectRateLimiter;

/// A limiter of `per_second` calls per second, evenly spaced (a burst of one call): a provider
/// that counts calls in any one-second window then never sees more than its plan, however the
/// requests fall on its clock. A batch waits for a token per call and goes out at once.
pub fn call_limiter(per_second: std::num::NonZeroU32) -> std::sync::Arc<CallLimiter> {
    let quota = governor::Quota::per_second(per_second).allow_burst(std::num::NonZeroU32::MIN);
    std::sync::Arc::new(governor::RateLimiter::direct(quota))
}

/// Waits until `limiter` allows `calls` more calls: a batch costs what it holds (one token per
/// call, so a batch larger than the burst waits for the refill instead of failing).
pub async fn take_calls(limiter: &CallLimiter, calls: usize) {
    for _ in 0..calls {
        limiter.until_ready().await;
    }
}

/// An alloy transport over HTTP whose answers are bounded by [`read_capped`] (decompressed
/// bytes: a small compressed answer that inflates past the bound is cut off too), that asks for
/// compressed answers and turns a "slow down" answer into [`RateLimited`].
#[derive(Clone, Debug)]
pub struct CappedHttp {
    client: reqwest::Client,
    url: reqwest::Url,
    limit_mib: usize,
}

impl CappedHttp {
    /// A transport to `url` with answers of at most `limit_mib` MiB (after decompression).
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
        let asked_to_wait = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, std::time::SystemTime::now()));
        if status.as_u16() == 429 || (status.as_u16() == 503 && asked_to_wait.is_some()) {
            return Err(TransportErrorKind::custom(RateLimited {
                status: status.as_u16(),
                retry_after: asked_to_wait,
            }));
        }
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
pub(crate) mod tests {
    use crate::config::SourceEntry;
    use crate::source::{RpcSource, Source, SourceError};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads one HTTP request from `conn`: headers, then the body (Content-Length from the
    /// client). None when the connection ends first.
    async fn request_body(conn: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = Vec::new();
        loop {
            let n = conn.read(&mut buf).await.ok().filter(|&n| n > 0)?;
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
                return Some(got[end + 4..end + 4 + len].to_vec());
            }
        }
    }

    /// A JSON-RPC server answering every request with a quantity `pad` hex digits long, the
    /// request's id echoed; `chunked`: no Content-Length (the bound must hold while reading).
    async fn server(pad: usize, chunked: bool) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Some(body) = request_body(&mut conn).await else { return };
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

    /// A server answering every request with `status`, `headers` and `body(request)`; counts
    /// the requests it got.
    /// A server answering each request with `status`, extra `headers` and `body(request)`;
    /// returns its URL and a count of the requests it answered.
    pub(crate) async fn answering(
        status: &'static str,
        headers: &'static str,
        body: impl Fn(&serde_json::Value) -> serde_json::Value + Send + Sync + 'static,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let body = std::sync::Arc::new(body);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (seen, body) = (seen.clone(), body.clone());
                tokio::spawn(async move {
                    let Some(sent) = request_body(&mut conn).await else { return };
                    let req: serde_json::Value = serde_json::from_slice(&sent).unwrap_or_default();
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let answer = body(&req).to_string();
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n",
                        answer.len()
                    );
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(answer.as_bytes()).await;
                });
            }
        });
        (format!("http://{addr}/"), count)
    }

    /// Each call of `req` (one, or a batch) answered with JSON-RPC error `code`.
    fn rpc_error(req: &serde_json::Value, code: i64) -> serde_json::Value {
        let one = |r: &serde_json::Value| serde_json::json!({"jsonrpc": "2.0", "id": r["id"], "error": {"code": code, "message": "limit exceeded"}});
        match req.as_array() {
            Some(calls) => calls.iter().map(one).collect(),
            None => one(req),
        }
    }

    /// A server answering every request with a gzip-compressed JSON-RPC answer whose result is a
    /// quantity `pad` hex digits long (it compresses to a few KiB).
    async fn gzip_server(pad: usize) -> String {
        use std::io::Write;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answer = format!(r#"{{"jsonrpc":"2.0","id":0,"result":"0x1{}"}}"#, "0".repeat(pad));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(answer.as_bytes()).expect("gzip");
        let body = gz.finish().expect("gzip");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let _ = conn.read(&mut buf).await;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(&body).await;
                });
            }
        });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn a_compressed_answer_is_bounded_by_its_decompressed_size() {
        let small = source(gzip_server(10).await);
        assert!(small.chain_id().await.is_ok(), "a small gzip answer is decompressed and read");
        let bomb = source(gzip_server(2 << 20).await);
        let e = bomb.chain_id().await.expect_err("2 MiB inflated from a few KiB, 1 MiB bound");
        assert!(matches!(e, SourceError::TooLarge { .. }), "{e:?}");
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_is_capped() {
        use std::time::{Duration, SystemTime};
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(super::retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(super::retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(42));
        assert_eq!(super::retry_after(&later, now), Some(Duration::from_secs(42)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(42));
        assert_eq!(super::retry_after(&past, now), Some(Duration::ZERO), "a date gone by");
        assert_eq!(super::retry_after("86400", now), Some(super::MAX_RETRY_AFTER));
        assert_eq!(super::retry_after("soon", now), None);
        assert_eq!(super::retry_after("-3", now), None);
    }

    #[tokio::test]
    async fn http_429_and_503_with_retry_after_are_rate_limits_not_failures() {
        use std::time::Duration;
        let cases: [(&str, &str, Option<Duration>); 3] = [
            ("429 Too Many Requests", "retry-after: 7\r\n", Some(Duration::from_secs(7))),
            ("429 Too Many Requests", "", None),
            ("503 Service Unavailable", "retry-after: 2\r\n", Some(Duration::from_secs(2))),
        ];
        for (status, headers, want) in cases {
            let (url, _) = answering(status, headers, |_| serde_json::json!({})).await;
            let e = source(url).chain_id().await.expect_err("limited");
            assert_eq!(e.rate_limit(), Some(want), "{status} {headers:?}: {e:?}");
            assert_eq!(e.reason(), "rate_limited");
            assert!(!e.is_lie(), "a rate limit is not a lie");
            assert!(e.to_string().contains("max_requests_per_second"), "{e}");
        }
        // 503 without Retry-After is an ordinary server error.
        let (url, _) = answering("503 Service Unavailable", "", |_| serde_json::json!({})).await;
        let e = source(url).chain_id().await.expect_err("down");
        assert_eq!((e.rate_limit(), e.reason()), (None, "http_5xx"));
    }

    #[tokio::test]
    async fn json_rpc_limit_errors_are_rate_limits_and_a_limited_batch_is_not_asked_again_call_by_call()
     {
        for code in [429, -32005] {
            let (url, _) = if code == 429 {
                answering("200 OK", "", |r| rpc_error(r, 429)).await
            } else {
                answering("200 OK", "", |r| rpc_error(r, -32005)).await
            };
            let e = source(url).chain_id().await.expect_err("limited");
            assert_eq!(e.rate_limit(), Some(None), "code {code}: {e:?}");
        }
        // A batch whose every call is refused that way: one request, not one more per block.
        let (url, count) = answering("200 OK", "", |r| rpc_error(r, -32005)).await;
        let s = source(url).with_fetch(crate::config::Fetch::Json);
        let e = s.blocks(1, 8).await.expect_err("limited");
        assert_eq!(e.rate_limit(), Some(None), "{e:?}");
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1, "asked again call by call");
    }

    #[tokio::test]
    async fn a_call_limit_counts_every_call_of_a_batch_and_spaces_them() {
        let limiter = super::call_limiter(std::num::NonZeroU32::new(5).expect("5"));
        assert!(limiter.check().is_ok(), "one call at once");
        assert!(limiter.check().is_err(), "evenly spaced: no burst past one call");
        // Through a source at 20/s: a batch of 8 blocks spends 8 tokens (the first at once, then
        // one every 50 ms), so it goes out no sooner than 350 ms after it was asked for. A lower
        // bound only: a slow machine cannot make it fail.
        let (url, count) = answering("200 OK", "", |r| {
            let one = |c: &serde_json::Value| serde_json::json!({"jsonrpc": "2.0", "id": c["id"], "result": null});
            match r.as_array() {
                Some(calls) => calls.iter().map(one).collect(),
                None => one(r),
            }
        })
        .await;
        let entry: SourceEntry =
            serde_json::from_value(serde_json::json!({"url": url, "max_requests_per_second": 20}))
                .expect("entry");
        let s = RpcSource::new(&entry, std::time::Duration::from_secs(10))
            .with_fetch(crate::config::Fetch::Json);
        let t0 = std::time::Instant::now();
        s.blocks(1, 8).await.expect("blocks");
        let took = t0.elapsed();
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1, "one batch");
        assert!(took >= std::time::Duration::from_millis(340), "8 calls at 20/s in {took:?}");
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
