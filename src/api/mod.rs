//! Operations API: Prometheus `/metrics`, `/healthz` (the loop is alive), `/readyz` (EL
//! reachable, not halted, lag within bound: what a load balancer needs), `/status` (JSON).

pub mod metrics;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State as Ctx;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::chain::Heads;
pub use metrics::Metrics;

/// How long the loop may go without a tick before `/healthz` fails.
const LIVENESS: Duration = Duration::from_secs(120);

/// What the follower is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Connecting and checking.
    #[default]
    Starting,
    /// Far behind the target, inserting.
    CatchingUp,
    /// Far behind: the EL syncs from its own P2P peers towards the agreed head lightcl handed
    /// it (bootstrap); lightcl checks the hashes and replays the rest when it gets there.
    ElSyncing,
    /// At (or within the lag bound of) the target.
    Following,
    /// The sources agree on nothing newer; holding.
    Holding,
    /// Bringing the EL back from another branch.
    Recovering,
    /// The EL does not answer; waiting for it.
    ElDown,
    /// Halted (finalized divergence, or an EL that cannot be repaired): no engine writes.
    Halted,
}

/// One source, as status shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceStatus {
    /// Name (credentials redacted).
    pub name: String,
    /// Usable now.
    pub up: bool,
    /// Smoothed latency in ms.
    pub latency_ms: Option<f64>,
    /// Consecutive errors.
    pub consecutive_errors: u32,
    /// Errors by reason.
    pub errors: std::collections::BTreeMap<&'static str, u64>,
    /// Latest height it reported.
    pub head: Option<u64>,
    /// Answers a quorum read stopped waiting for (too slow to count).
    pub late_answers: u64,
    /// Its last inconsistent answer (labels out of order, answers from two branches), in words.
    pub last_problem: Option<String>,
}

/// The follower's state as the API reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct State {
    /// Mode.
    pub mode: Mode,
    /// Local heads.
    pub local: Option<Heads>,
    /// Agreed heads.
    pub agreed: Option<Heads>,
    /// The finality floor lightcl remembers (state file).
    pub floor: Option<crate::chain::BlockRef>,
    /// Blocks behind the follow target.
    pub lag_blocks: Option<u64>,
    /// Seconds since the local head's timestamp.
    pub lag_seconds: Option<u64>,
    /// The EL answered the last call.
    pub el_up: bool,
    /// Why lightcl is halted.
    pub halted: Option<String>,
    /// The last step error.
    pub last_error: Option<String>,
    /// Sources.
    pub sources: Vec<SourceStatus>,
    #[serde(skip)]
    last_tick: Option<Instant>,
}

/// State shared between the follower and the API server.
#[derive(Debug)]
pub struct Shared {
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    state: Mutex<State>,
    ready_max_lag: u64,
}

impl Shared {
    /// New shared state for these sources.
    pub fn new(sources: &[String], ready_max_lag: u64) -> Self {
        Self { metrics: Arc::new(Metrics::new(sources)), state: Mutex::default(), ready_max_lag }
    }

    /// Changes the state (and marks the loop alive).
    pub fn update(&self, f: impl FnOnce(&mut State)) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        s.last_tick = Some(Instant::now());
    }

    /// Marks the loop alive (for /healthz) without changing anything else.
    pub fn tick(&self) {
        self.update(|_| {});
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> State {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Ready for traffic: the EL answers, not halted, in sync within the lag bound.
    pub fn readiness(&self) -> Result<(), String> {
        let s = self.snapshot();
        if let Some(why) = s.halted {
            return Err(format!("halted: {why}"));
        }
        if !s.el_up {
            return Err("the EL is not answering".into());
        }
        if s.mode == Mode::ElSyncing {
            return Err("the EL is syncing from its peers (bootstrap)".into());
        }
        match s.lag_blocks {
            None => Err("not synced yet".into()),
            Some(lag) if lag > self.ready_max_lag => Err(format!(
                "{lag} blocks behind the sources (ready within {})",
                self.ready_max_lag
            )),
            Some(_) if s.mode == Mode::Recovering => Err("recovering from a divergence".into()),
            Some(_) => Ok(()),
        }
    }

    /// Alive: the loop ticked recently.
    pub fn alive(&self) -> bool {
        self.snapshot().last_tick.is_none_or(|t| t.elapsed() < LIVENESS)
    }

    /// The `/status` document.
    pub fn status_json(&self) -> Value {
        let s = self.snapshot();
        let ready = self.readiness();
        json!({
            "version": crate::VERSION,
            "ready": ready.is_ok(),
            "not_ready_because": ready.err(),
            "state": s,
        })
    }
}

/// Serves the API on `listener` until `token` is cancelled.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, token: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(target: "lightcl::api", %addr, "serving /metrics /healthz /readyz /status");
    }
    if let Err(e) =
        axum::serve(listener, router(shared)).with_graceful_shutdown(token.cancelled_owned()).await
    {
        warn!(target: "lightcl::api", error = %e,
            "the operations API stopped; following goes on without /metrics and /status");
    }
}

/// The routes of the operations API.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .fallback(|| async {
            (StatusCode::NOT_FOUND, "try /metrics, /healthz, /readyz or /status\n")
        })
        .with_state(shared)
}

/// OpenMetrics to a scraper that asks for it (Prometheus does), the classic text format to
/// everyone else.
async fn metrics_page(Ctx(shared): Ctx<Arc<Shared>>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], shared.metrics.render())
    } else {
        ([(header::CONTENT_TYPE, metrics::CLASSIC_CONTENT_TYPE)], shared.metrics.render_classic())
    }
}

async fn healthz(Ctx(shared): Ctx<Arc<Shared>>) -> (StatusCode, &'static str) {
    if shared.alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "the follow loop is stuck\n")
    }
}

async fn readyz(Ctx(shared): Ctx<Arc<Shared>>) -> (StatusCode, String) {
    match shared.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

async fn status(Ctx(shared): Ctx<Arc<Shared>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], shared.status_json().to_string())
}

/// Binds the API address, with an error that says what to change.
pub async fn bind(listen: &str) -> Result<TcpListener, String> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| format!("api.listen `{listen}` is not an address:port ({e})"))?;
    TcpListener::bind(addr).await.map_err(|e| {
        warn!(target: "lightcl::api", %addr, error = %e, "cannot bind the API address");
        format!("cannot listen on api.listen {addr}: {e}; choose a free address or set api.listen = \"\" to disable")
    })
}
