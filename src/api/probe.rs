//! `lightcl probe`: one fleet replica's readiness on a port of its own, for a sidecar beside
//! that replica's EL (a Kubernetes pod's readiness probe can only ask its own pod). It answers
//! `/readyz` with what the lightcl driving the fleet says at `/readyz/<replica>`, and `/healthz`
//! with that lightcl's `/healthz`; an unreachable lightcl is not ready (503).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where the answers come from.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// The driving lightcl's API base URL.
    pub api: String,
    /// The replica this probe speaks for.
    pub replica: String,
    client: reqwest::Client,
}

impl Upstream {
    /// A probe of `replica` of the lightcl at `api`.
    pub fn new(api: &str, replica: &str) -> Self {
        Self {
            api: api.trim_end_matches('/').to_string(),
            replica: replica.to_string(),
            client: reqwest::Client::new(),
        }
    }

    async fn ask(&self, path: &str) -> (StatusCode, String) {
        let url = format!("{}{path}", self.api);
        let answer = self.client.get(&url).timeout(Duration::from_secs(4)).send().await;
        match answer {
            Ok(r) => {
                let status = StatusCode::from_u16(r.status().as_u16())
                    .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                (status, r.text().await.unwrap_or_default())
            }
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the lightcl driving this replica does not answer at {url}: {e}\n"),
            ),
        }
    }
}

/// The probe's routes.
pub fn router(up: Arc<Upstream>) -> Router {
    Router::new()
        .route(
            "/readyz",
            get(|State(up): State<Arc<Upstream>>| async move {
                let path = format!("/readyz/{}", up.replica);
                up.ask(&path).await
            }),
        )
        .route(
            "/healthz",
            get(|State(up): State<Arc<Upstream>>| async move { up.ask("/healthz").await }),
        )
        .with_state(up)
}

/// Serves the probe on `listener` until `token` is cancelled.
pub async fn serve(listener: TcpListener, up: Upstream, token: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(target: "lightcl::api", %addr, replica = up.replica, upstream = up.api,
            "serving /readyz and /healthz for one replica");
    }
    if let Err(e) = axum::serve(listener, router(Arc::new(up)))
        .with_graceful_shutdown(token.cancelled_owned())
        .await
    {
        warn!(target: "lightcl::api", error = %e, "the probe stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn spawn(router: Router) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(l, router).await });
        format!("http://{addr}")
    }

    async fn fetch(url: &str) -> (u16, String) {
        let r = reqwest::get(url).await.expect("answer");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    #[tokio::test]
    async fn a_replica_probe_answers_what_the_driving_lightcl_says_of_it() {
        let upstream = Router::new()
            .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
            .route("/readyz/a", get(|| async { (StatusCode::OK, "ready\n") }))
            .route("/readyz/b", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "lagging\n") }));
        let api = spawn(upstream).await;
        let a = spawn(router(Arc::new(Upstream::new(&api, "a")))).await;
        let b = spawn(router(Arc::new(Upstream::new(&format!("{api}/"), "b")))).await;
        assert_eq!(fetch(&format!("{a}/readyz")).await, (200, "ready\n".into()));
        assert_eq!(fetch(&format!("{b}/readyz")).await, (503, "lagging\n".into()));
        assert_eq!(fetch(&format!("{b}/healthz")).await.0, 200);
        // The driving lightcl away: not ready, and the answer says where it was asked.
        let gone = spawn(router(Arc::new(Upstream::new("http://127.0.0.1:1", "a")))).await;
        let (code, body) = fetch(&format!("{gone}/readyz")).await;
        assert_eq!(code, 503);
        assert!(body.contains("http://127.0.0.1:1/readyz/a"), "{body}");
    }
}
