//! Operations API: Prometheus `/metrics`, `/healthz` (every replica's loop is alive), `/readyz`
//! (at least one replica ready: EL reachable, not halted, lag within bound), `/readyz/<name>`
//! (that replica ready: a load balancer's per-backend check), `/status` (JSON, every replica).

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

pub mod probe;
pub mod rollup;

use crate::chain::Heads;
use crate::metrics;
pub use crate::metrics::Metrics;

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
    /// Left alone now because it is rate limiting lightcl.
    pub rate_limited: bool,
    /// Seconds it was left alone for rate limiting, in all.
    pub rate_limited_secs: f64,
    /// JSON-RPC calls sent to it so far, each call of a batch counted.
    pub calls: u64,
}

/// Verification against L1, as `/status` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct L1Status {
    /// off, alarm or enforce.
    pub verify: &'static str,
    /// L1's latest block, as the quorum of L1 endpoints reached.
    pub l1_latest: Option<crate::chain::BlockRef>,
    /// L1's finalized block, as the quorum reached.
    pub l1_finalized: Option<crate::chain::BlockRef>,
    /// Why L1 could not be read, last time it could not.
    pub l1_error: Option<String>,
    /// The last check of the agreed safe block.
    pub safe: Option<crate::l1::verify::LabelCheck>,
    /// The last check of the agreed finalized block.
    pub finalized: Option<crate::l1::verify::LabelCheck>,
    /// The highest agreed label whose L1 origin was verified.
    pub origin_verified: Option<crate::chain::BlockRef>,
    /// The last root L1 settled that was compared with the EL's.
    pub last_settled: Option<crate::l1::audit::Comparison>,
    /// Roots L1 holds that differ from the EL's output roots (settled ones, and open claims).
    pub mismatches: Vec<crate::l1::audit::Comparison>,
    /// Why the audit could not run, last time it could not.
    pub audit_error: Option<String>,
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
    /// Verification against L1 (with an `[l1]` section).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l1: Option<L1Status>,
    #[serde(skip)]
    last_tick: Option<Instant>,
}

/// One replica's state, shared between its follower and the API server.
#[derive(Debug)]
pub struct Shared {
    /// The replica's name.
    pub name: String,
    /// Metrics, as this replica's handle (per-replica metrics carry its name).
    pub metrics: Arc<Metrics>,
    state: Mutex<State>,
    ready_max_lag: u64,
}

impl Shared {
    /// New state for a lone replica (named [`crate::config::DEFAULT_REPLICA_NAME`]) following
    /// these sources, with a registry of its own.
    pub fn new(sources: &[String], ready_max_lag: u64) -> Self {
        Self::replica(crate::config::DEFAULT_REPLICA_NAME, &Metrics::new(sources), ready_max_lag)
    }

    /// New state for replica `name`, its metrics in the fleet's registry `metrics`.
    pub fn replica(name: &str, metrics: &Metrics, ready_max_lag: u64) -> Self {
        Self {
            name: name.to_string(),
            metrics: Arc::new(metrics.replica(name)),
            state: Mutex::default(),
            ready_max_lag,
        }
    }

    /// Changes the state (and marks the loop alive); returns whether the replica is ready now.
    pub fn update(&self, f: impl FnOnce(&mut State)) -> bool {
        let ready = {
            let mut s = crate::util::lock(&self.state);
            f(&mut s);
            s.last_tick = Some(Instant::now());
            self.readiness_of(&s).is_ok()
        };
        self.metrics.set(metrics::REPLICA_READY, &[], if ready { 1.0 } else { 0.0 });
        ready
    }

    /// Marks the loop alive (for /healthz) without changing anything else.
    pub fn tick(&self) {
        self.update(|_| {});
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> State {
        crate::util::lock(&self.state).clone()
    }

    /// Ready for traffic: the EL answers, not halted, in sync within the lag bound.
    pub fn readiness(&self) -> Result<(), String> {
        self.readiness_of(&self.snapshot())
    }

    fn readiness_of(&self, s: &State) -> Result<(), String> {
        if let Some(why) = &s.halted {
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

    /// Alive: the loop ticked recently, or it halted on purpose (a halt waits for an operator;
    /// a liveness probe that restarted lightcl would clear it).
    pub fn alive(&self) -> bool {
        let s = self.snapshot();
        s.mode == Mode::Halted
            || s.halted.is_some()
            || s.last_tick.is_none_or(|t| t.elapsed() < LIVENESS)
    }

    /// The `/status` document of this replica alone.
    pub fn status_json(&self) -> Value {
        Board::new(vec![Arc::new(self.clone_state())]).status_json()
    }

    /// A copy (same name, metrics handle and state) for a one-replica board.
    fn clone_state(&self) -> Self {
        Self {
            name: self.name.clone(),
            metrics: self.metrics.clone(),
            state: Mutex::new(self.snapshot()),
            ready_max_lag: self.ready_max_lag,
        }
    }

    /// This replica's entry in `/status`.
    fn replica_json(&self) -> Value {
        let ready = self.readiness();
        json!({
            "name": self.name,
            "ready": ready.is_ok(),
            "not_ready_because": ready.err(),
            "state": self.snapshot(),
        })
    }
}

/// Every replica, as the API serves them (in configuration order).
#[derive(Debug)]
pub struct Board {
    replicas: Vec<Arc<Shared>>,
}

impl Board {
    /// A board of `replicas` (at least one).
    pub fn new(replicas: Vec<Arc<Shared>>) -> Self {
        Self { replicas }
    }

    /// The replicas.
    pub fn replicas(&self) -> &[Arc<Shared>] {
        &self.replicas
    }

    /// The replica named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Shared>> {
        self.replicas.iter().find(|r| r.name == name)
    }

    /// Ready when at least one replica is: a fleet serves while any backend can. The reasons
    /// of every replica otherwise.
    pub fn readiness(&self) -> Result<(), String> {
        let mut why = Vec::new();
        for r in &self.replicas {
            match r.readiness() {
                Ok(()) => return Ok(()),
                Err(e) if self.replicas.len() == 1 => return Err(e),
                Err(e) => why.push(format!("{}: {e}", r.name)),
            }
        }
        Err(format!("no replica is ready ({})", why.join("; ")))
    }

    /// Alive: every replica's loop ticked recently.
    pub fn alive(&self) -> bool {
        self.replicas.iter().all(|r| r.alive())
    }

    /// The `/status` document: whether any replica is ready, the first replica's state at the
    /// top (what a single-EL setup shows), and every replica under `replicas`.
    pub fn status_json(&self) -> Value {
        let ready = self.readiness();
        let first = self.replicas.first().map(|r| r.snapshot());
        let replicas: Vec<Value> = self.replicas.iter().map(|r| r.replica_json()).collect();
        json!({
            "version": crate::VERSION,
            "ready": ready.is_ok(),
            "not_ready_because": ready.err(),
            "state": first,
            "replicas": replicas,
        })
    }
}

/// Serves the API on `listener` until `token` is cancelled.
pub async fn serve(listener: TcpListener, board: Arc<Board>, token: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(target: "lightcl::api", %addr, "serving /metrics /healthz /readyz /readyz/<replica> /status");
    }
    if let Err(e) =
        axum::serve(listener, router(board)).with_graceful_shutdown(token.cancelled_owned()).await
    {
        warn!(target: "lightcl::api", error = %e,
            "the operations API stopped; following goes on without /metrics and /status");
    }
}

/// The routes of the operations API.
pub fn router(board: Arc<Board>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/readyz/{replica}", get(readyz_replica))
        .route("/status", get(status))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "try /metrics, /healthz, /readyz, /readyz/<replica> or /status\n",
            )
        })
        .with_state(board)
}

/// OpenMetrics to a scraper that asks for it (Prometheus does), the classic text format to
/// everyone else.
async fn metrics_page(Ctx(board): Ctx<Arc<Board>>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(first) = board.replicas.first() else {
        return ([(header::CONTENT_TYPE, metrics::CLASSIC_CONTENT_TYPE)], String::new());
    };
    // Every replica's handle renders the one registry.
    if accept.contains("application/openmetrics-text") {
        ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], first.metrics.render())
    } else {
        ([(header::CONTENT_TYPE, metrics::CLASSIC_CONTENT_TYPE)], first.metrics.render_classic())
    }
}

async fn healthz(Ctx(board): Ctx<Arc<Board>>) -> (StatusCode, String) {
    if board.alive() {
        return (StatusCode::OK, "ok\n".into());
    }
    let stuck: Vec<&str> =
        board.replicas.iter().filter(|r| !r.alive()).map(|r| r.name.as_str()).collect();
    (StatusCode::SERVICE_UNAVAILABLE, format!("the follow loop is stuck: {}\n", stuck.join(", ")))
}

fn ready_answer(r: Result<(), String>) -> (StatusCode, String) {
    match r {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
    }
}

async fn readyz(Ctx(board): Ctx<Arc<Board>>) -> (StatusCode, String) {
    ready_answer(board.readiness())
}

async fn readyz_replica(
    Ctx(board): Ctx<Arc<Board>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> (StatusCode, String) {
    match board.get(&name) {
        Some(r) => ready_answer(r.readiness()),
        None => {
            let names: Vec<&str> = board.replicas.iter().map(|r| r.name.as_str()).collect();
            (
                StatusCode::NOT_FOUND,
                format!("no replica named `{name}`; the replicas are: {}\n", names.join(", ")),
            )
        }
    }
}

async fn status(Ctx(board): Ctx<Arc<Board>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], board.status_json().to_string())
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

#[cfg(test)]
mod liveness_tests {
    use super::*;

    #[test]
    fn a_halted_replica_stays_alive_and_a_stalled_loop_does_not() {
        let s = Shared::new(&[], 10);
        let Some(long_ago) = Instant::now().checked_sub(LIVENESS * 2) else { return };
        crate::util::lock(&s.state).last_tick = Some(long_ago);
        assert!(!s.alive(), "a loop that stopped ticking is not alive");
        {
            let mut st = crate::util::lock(&s.state);
            st.mode = Mode::Halted;
            st.halted = Some("finalized divergence".into());
        }
        assert!(s.alive(), "a halt waits for an operator: a liveness probe must not restart it");
    }
}
