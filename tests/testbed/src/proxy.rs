//! A JSON-RPC HTTP proxy for tests: forwards to one of several upstream ELs and can delay,
//! refuse, alternate between upstreams, tamper with answers (a lying or broken source), or
//! behave like a commercial provider ([`ProviderRules`]: a rate limit answered with HTTP 429 and
//! `Retry-After` or inside the batch, a batch cap, no debug calls in batches, gzip).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::Error;

/// Rewrites one answer: (method, params, result) -> new result.
pub type Tamper = Box<dyn Fn(&str, &Value, &mut Value) + Send + Sync>;

/// One request and its answer as the proxy saw them, with when the request arrived and when the
/// answer was back from the upstream.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The request (a JSON-RPC object).
    pub request: Value,
    /// The answer (a JSON-RPC object; null if it was not JSON).
    pub response: Value,
    /// When the request arrived.
    pub sent: std::time::Instant,
    /// When the upstream's answer was back.
    pub answered: std::time::Instant,
}

/// What a source was asked in `recorded`, each element of a batch counted: (blocks, other
/// requests). A block is `debug_getRawBlock` or `eth_getBlockBy*` with full transactions.
pub fn source_requests(recorded: &[Exchange]) -> (u64, u64) {
    let mut blocks = 0;
    let mut other = 0;
    let mut count = |r: &Value| {
        let method = r["method"].as_str().unwrap_or("");
        let full = r["params"][1].as_bool() == Some(true);
        if method == "debug_getRawBlock" || (method.starts_with("eth_getBlockBy") && full) {
            blocks += 1;
        } else {
            other += 1;
        }
    };
    for e in recorded {
        match &e.request {
            Value::Array(items) => items.iter().for_each(&mut count),
            r => count(r),
        }
    }
    (blocks, other)
}

/// How often each block was fetched in `recorded` (each element of a batch counted), keyed by
/// what it was asked for by (a height or a hash, as sent): a block asked for twice by the same
/// key was paid for twice.
pub fn block_fetches(recorded: &[Exchange]) -> std::collections::BTreeMap<String, u32> {
    let mut out = std::collections::BTreeMap::new();
    let mut count = |r: &Value| {
        let method = r["method"].as_str().unwrap_or("");
        let full = r["params"][1].as_bool() == Some(true);
        if method == "debug_getRawBlock" || (method.starts_with("eth_getBlockBy") && full) {
            let at = match &r["params"][0] {
                Value::String(s) => s.to_lowercase(),
                v => v.to_string(),
            };
            *out.entry(at).or_insert(0) += 1;
        }
    };
    for e in recorded {
        match &e.request {
            Value::Array(items) => items.iter().for_each(&mut count),
            r => count(r),
        }
    }
    out
}

/// What a commercial provider does, each rule named after the behaviour it copies (all off by
/// default: the proxy then forwards everything as it is).
#[derive(Debug, Clone, Default)]
pub struct ProviderRules {
    /// At most this many JSON-RPC calls in any second (each call of a batch counts); a request
    /// that would pass it is refused whole.
    pub calls_per_second: Option<usize>,
    /// Over the limit, answer HTTP 200 with a JSON-RPC error 429 for each call (as providers do
    /// inside batches) instead of HTTP 429 with `Retry-After: 1`.
    pub limit_inside_batch: bool,
    /// A batch of more calls than this gets geth's answer to an oversized batch: one error,
    /// -32600 "batch too large", for the first call only.
    pub batch_cap: Option<usize>,
    /// `debug_*` calls inside a batch are each refused (-32600), as Alchemy does; alone they
    /// are served.
    pub no_debug_in_batch: bool,
    /// Answers are gzip-compressed for a client that accepts it.
    pub gzip: bool,
}

/// Which upstream answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Always this one.
    Fixed(usize),
    /// Round robin, one request each.
    Alternate,
}

struct Shared {
    upstreams: Vec<String>,
    http: reqwest::Client,
    route: Mutex<Route>,
    next: AtomicUsize,
    delay_ms: AtomicU64,
    down: AtomicBool,
    tamper: Mutex<Option<Tamper>>,
    requests: AtomicU64,
    /// Every exchange, when recording.
    recorded: Mutex<Option<Vec<Exchange>>>,
    /// The provider's rules.
    rules: Mutex<ProviderRules>,
    /// Answer body bytes written (compressed where they were).
    bytes_out: AtomicU64,
    /// When each call let through arrived (the last seconds' worth, for the rule).
    calls: Mutex<CallLog>,
}

/// The calls let through, for the rate rule and the figures a test checks.
#[derive(Debug, Default)]
struct CallLog {
    /// Arrival times within the last second.
    recent: std::collections::VecDeque<std::time::Instant>,
    /// Every arrival time.
    all: Vec<std::time::Instant>,
    /// Calls refused with 429.
    refused: u64,
}

/// A running proxy; stops when dropped.
pub struct Proxy {
    url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").field("url", &self.url).finish()
    }
}

impl Proxy {
    /// Starts a proxy on a free loopback port in front of `upstreams` (JSON-RPC HTTP URLs).
    pub async fn start(upstreams: Vec<String>) -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(Error::Io)?;
        let url = format!("http://{}", listener.local_addr().map_err(Error::Io)?);
        let shared = Arc::new(Shared {
            upstreams,
            // Upstream answers uncompressed: the proxy reads and may rewrite them.
            http: reqwest::Client::builder().no_gzip().build().unwrap_or_default(),
            route: Mutex::new(Route::Fixed(0)),
            next: AtomicUsize::new(0),
            delay_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
            tamper: Mutex::new(None),
            requests: AtomicU64::new(0),
            recorded: Mutex::new(None),
            rules: Mutex::new(ProviderRules::default()),
            bytes_out: AtomicU64::new(0),
            calls: Mutex::new(CallLog::default()),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, s).await;
                });
            }
        });
        Ok(Self { url, shared, task })
    }

    /// The proxy's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Chooses the upstream(s).
    pub fn set_route(&self, route: Route) {
        *self.shared.route.lock().unwrap_or_else(|p| p.into_inner()) = route;
    }

    /// Delays every answer.
    pub fn set_delay(&self, d: Duration) {
        self.shared.delay_ms.store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// When down, every request gets HTTP 503.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::Relaxed);
    }

    /// Installs (or removes) an answer rewriter.
    pub fn set_tamper(&self, t: Option<Tamper>) {
        *self.shared.tamper.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }

    /// Starts recording every exchange (the `Authorization` header is forwarded either way, so
    /// the proxy can stand in front of an Engine API).
    pub fn record(&self) {
        *self.shared.recorded.lock().unwrap_or_else(|p| p.into_inner()) = Some(Vec::new());
    }

    /// The exchanges recorded so far.
    pub fn recorded(&self) -> Vec<Exchange> {
        self.shared.recorded.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default()
    }

    /// Requests served so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Enforces a provider's rate limit of `calls` JSON-RPC calls per second (each call of a
    /// batch counts): a request that would pass it gets HTTP 429 with `Retry-After: 1`. None
    /// lifts it. Calls are counted either way ([`Proxy::call_figures`]).
    pub fn set_calls_per_second(&self, calls: Option<usize>) {
        self.shared.rules.lock().unwrap_or_else(|p| p.into_inner()).calls_per_second = calls;
    }

    /// Behaves like a provider with these rules from now on.
    pub fn set_rules(&self, rules: ProviderRules) {
        *self.shared.rules.lock().unwrap_or_else(|p| p.into_inner()) = rules;
    }

    /// Answer body bytes sent so far (after compression).
    pub fn bytes_out(&self) -> u64 {
        self.shared.bytes_out.load(Ordering::Relaxed)
    }

    /// Seconds from the first call let through to the last.
    pub fn call_span(&self) -> f64 {
        let log = self.shared.calls.lock().unwrap_or_else(|p| p.into_inner());
        match (log.all.first(), log.all.last()) {
            (Some(a), Some(b)) => b.duration_since(*a).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// (calls let through, the most of them in any one second, calls refused with 429).
    pub fn call_figures(&self) -> (usize, usize, u64) {
        let log = self.shared.calls.lock().unwrap_or_else(|p| p.into_inner());
        let second = Duration::from_secs(1);
        let mut most = 0;
        let mut from = 0;
        for (k, t) in log.all.iter().enumerate() {
            while t.duration_since(log.all[from]) >= second {
                from += 1;
            }
            most = most.max(k + 1 - from);
        }
        (log.all.len(), most, log.refused)
    }
}

/// The number of JSON-RPC calls in a request body (a batch counts what it holds).
fn calls_in(body: &[u8]) -> usize {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Array(calls)) => calls.len(),
        _ => 1,
    }
}

/// Applies the rate rule to a request of `n` calls: whether it may pass (and counts it).
fn admit(s: &Shared, n: usize) -> bool {
    let limit = s.rules.lock().unwrap_or_else(|p| p.into_inner()).calls_per_second;
    let mut log = s.calls.lock().unwrap_or_else(|p| p.into_inner());
    let now = std::time::Instant::now();
    while log.recent.front().is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1)) {
        log.recent.pop_front();
    }
    if limit.is_some_and(|l| log.recent.len() + n > l) {
        log.refused += n as u64;
        return false;
    }
    for _ in 0..n {
        log.recent.push_back(now);
        log.all.push(now);
    }
    true
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(conn: TcpStream, s: Arc<Shared>) -> std::io::Result<()> {
    // Each answer goes out at once (no 40 ms wait for a delayed acknowledgement).
    conn.set_nodelay(true)?;
    let (r, mut w) = conn.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut len = 0usize;
        let mut auth = None;
        let mut gzip_ok = false;
        let mut first = true;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() && !first {
                break;
            }
            first = false;
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("authorization") {
                    auth = Some(v.trim().to_string());
                } else if k.eq_ignore_ascii_case("accept-encoding") {
                    gzip_ok = v.contains("gzip");
                }
            }
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        let (status, mut out) = answer(&s, &body, auth.as_deref()).await;
        let wait = if status.starts_with("429") { "retry-after: 1\r\n" } else { "" };
        let gzip = gzip_ok && s.rules.lock().unwrap_or_else(|p| p.into_inner()).gzip;
        let encoding = if gzip {
            use std::io::Write;
            let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(&out)?;
            out = z.finish()?;
            "content-encoding: gzip\r\n"
        } else {
            ""
        };
        s.bytes_out.fetch_add(out.len() as u64, Ordering::Relaxed);
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{wait}{encoding}content-length: {}\r\n\r\n",
            out.len()
        );
        let mut answer = head.into_bytes();
        answer.extend_from_slice(&out);
        w.write_all(&answer).await?;
    }
}

async fn answer(s: &Shared, body: &[u8], auth: Option<&str>) -> (&'static str, Vec<u8>) {
    s.requests.fetch_add(1, Ordering::Relaxed);
    let sent = std::time::Instant::now();
    let delay = s.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if s.down.load(Ordering::Relaxed) || s.upstreams.is_empty() {
        return ("503 Service Unavailable", b"source down".to_vec());
    }
    let rules = s.rules.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let calls: Vec<&Value> = match &request {
        Value::Array(calls) => calls.iter().collect(),
        one => vec![one],
    };
    let error = |call: &Value, code: i64, message: &str| serde_json::json!({"jsonrpc": "2.0", "id": call.get("id"), "error": {"code": code, "message": message}});
    let batch = request.is_array();
    if batch && rules.batch_cap.is_some_and(|cap| calls.len() > cap) {
        let one = serde_json::json!([error(calls[0], -32600, "batch too large")]);
        return ("200 OK", one.to_string().into_bytes());
    }
    if !admit(s, calls_in(body)) {
        if !rules.limit_inside_batch {
            return ("429 Too Many Requests", b"rate limit exceeded".to_vec());
        }
        let each: Vec<Value> =
            calls.iter().map(|c| error(c, 429, "rate limit exceeded, retry later")).collect();
        let out = if batch { Value::Array(each) } else { each[0].clone() };
        return ("200 OK", out.to_string().into_bytes());
    }
    let route = *s.route.lock().unwrap_or_else(|p| p.into_inner());
    let i = match route {
        Route::Fixed(i) => i.min(s.upstreams.len() - 1),
        Route::Alternate => s.next.fetch_add(1, Ordering::Relaxed) % s.upstreams.len(),
    };
    let mut req = s.http.post(&s.upstreams[i]).header("content-type", "application/json");
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let resp = req.body(body.to_vec()).send().await;
    let Ok(resp) = resp else { return ("502 Bad Gateway", b"upstream unreachable".to_vec()) };
    let Ok(bytes) = resp.bytes().await else { return ("502 Bad Gateway", Vec::new()) };
    if let Some(log) = s.recorded.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        log.push(Exchange {
            request: serde_json::from_slice(body).unwrap_or(Value::Null),
            response: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            sent,
            answered: std::time::Instant::now(),
        });
    }
    let refuse_debug = batch
        && rules.no_debug_in_batch
        && calls.iter().any(|c| c["method"].as_str().is_some_and(|m| m.starts_with("debug_")));
    let bytes = if refuse_debug {
        let mut resp: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if let Value::Array(answers) = &mut resp {
            for a in answers.iter_mut() {
                let call = calls.iter().find(|c| c.get("id") == a.get("id"));
                if let Some(call) =
                    call.filter(|c| c["method"].as_str().is_some_and(|m| m.starts_with("debug_")))
                {
                    *a = error(
                        call,
                        -32600,
                        "debug and trace methods are not supported in batch requests",
                    );
                }
            }
        }
        serde_json::to_vec(&resp).unwrap_or_default().into()
    } else {
        bytes
    };
    let tamper = s.tamper.lock().unwrap_or_else(|p| p.into_inner());
    let Some(t) = tamper.as_ref() else { return ("200 OK", bytes.to_vec()) };
    let (Ok(req), Ok(mut resp)) =
        (serde_json::from_slice::<Value>(body), serde_json::from_slice::<Value>(&bytes))
    else {
        return ("200 OK", bytes.to_vec());
    };
    // A batch is tampered with call by call (answers matched to calls by id).
    let calls: Vec<&Value> = match &req {
        Value::Array(calls) => calls.iter().collect(),
        one => vec![one],
    };
    let mut answers: Vec<&mut Value> = match &mut resp {
        Value::Array(answers) => answers.iter_mut().collect(),
        one => vec![one],
    };
    for call in calls {
        let method = call.get("method").and_then(Value::as_str).unwrap_or("");
        let params = call.get("params").cloned().unwrap_or(Value::Null);
        let answer = answers.iter_mut().find(|a| a.get("id") == call.get("id"));
        if let Some(result) = answer.and_then(|a| a.get_mut("result")) {
            t(method, &params, result);
        }
    }
    ("200 OK", serde_json::to_vec(&resp).unwrap_or_default())
}

/// A TCP relay in front of a WebSocket JSON-RPC endpoint that drops every connection `every`
/// after it was opened, as providers' load balancers do after minutes or hours (the client sees
/// the socket close and must reconnect and resubscribe). Stops when dropped.
pub struct DroppingRelay {
    url: String,
    drops: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for DroppingRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DroppingRelay").field("url", &self.url).finish()
    }
}

impl DroppingRelay {
    /// Starts a relay on a free loopback port to `upstream` (`ws://host:port`).
    pub async fn start(upstream: &str, every: Duration) -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(Error::Io)?;
        let url = format!("ws://{}", listener.local_addr().map_err(Error::Io)?);
        let target = upstream.trim_start_matches("ws://").trim_end_matches('/').to_string();
        let drops = Arc::new(AtomicU64::new(0));
        let counted = drops.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (target, counted) = (target.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(&target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut conn, &mut up) => {}
                        () = tokio::time::sleep(every) => {
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        Ok(Self { url, drops, task })
    }

    /// The relay's URL (`ws://`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connections dropped so far.
    pub fn drops(&self) -> u64 {
        self.drops.load(Ordering::Relaxed)
    }
}

impl Drop for DroppingRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
