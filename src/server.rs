//! The HTTP endpoint for Prometheus and the kubelet's probes.
//!
//! - `GET /metrics`: [`Metrics::render`] as OpenMetrics text.
//! - `GET /healthz`: `200 ok` while the process is live, else `503`.
//! - `GET /readyz`: `200 ok` once [`Health::set_ready`]`(true)` was called, else `503`. A replica
//!   waiting for the leader lease is ready too: it is a healthy standby.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE};

/// Liveness and readiness flags shared by the operator and the probe handlers.
#[derive(Debug)]
pub struct Health {
    /// Answered on `/healthz`; `true` from the start.
    pub live: AtomicBool,
    /// Answered on `/readyz`; `false` until the operator says otherwise.
    pub ready: AtomicBool,
    /// Versori refuses the API token: `/readyz` answers 503 and says so.
    pub token_refused: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Live, not ready.
    pub fn new() -> Self {
        Self {
            live: AtomicBool::new(true),
            ready: AtomicBool::new(false),
            token_refused: AtomicBool::new(false),
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn set_token_refused(&self, refused: bool) {
        self.token_refused.store(refused, Ordering::SeqCst);
    }

    pub fn is_token_refused(&self) -> bool {
        self.token_refused.load(Ordering::SeqCst)
    }

    pub fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::SeqCst);
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The routes, for serving on a listener of one's own.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health })
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)],
        state.metrics.render(),
    )
}

fn probe(ok: bool) -> (StatusCode, &'static str) {
    if ok {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    probe(state.health.is_live())
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.health.is_ready() && state.health.is_token_refused() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: Versori refuses the API token (HTTP 401); check VERSORI_API_TOKEN or VERSORI_API_TOKEN_FILE\n",
        );
    }
    probe(state.health.is_ready())
}

/// Binds the listening socket (so that "address in use" is reported before anything starts).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the routes on `listener` until `shutdown` resolves.
pub async fn serve_on(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    axum::serve(listener, router(metrics, health))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn metrics_healthz_and_readyz_answer() {
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new());
        metrics.reconcile_started("System").finish(None);

        let listener = bind("127.0.0.1:0".parse().expect("address"))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(
            listener,
            Arc::clone(&metrics),
            Arc::clone(&health),
            async move {
                let _ = stop_rx.await;
            },
        ));

        let http = reqwest::Client::new();
        let base = format!("http://{addr}");

        let response = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), 200);
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        assert_eq!(content_type.as_deref(), Some(OPENMETRICS_CONTENT_TYPE));
        let body = response.text().await.expect("body");
        assert!(
            body.contains(r#"versori_operator_reconciliations_total{kind="System"} 1"#),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"));

        let status = |path: &'static str| {
            let http = http.clone();
            let url = format!("{base}{path}");
            async move { http.get(url).send().await.expect("GET").status().as_u16() }
        };
        assert_eq!(status("/healthz").await, 200);
        assert_eq!(status("/readyz").await, 503);
        health.set_ready(true);
        assert_eq!(status("/readyz").await, 200);
        health.set_token_refused(true);
        assert_eq!(status("/readyz").await, 503);
        let body = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .expect("GET")
            .text()
            .await
            .expect("body");
        assert!(body.contains("API token"), "{body}");
        health.set_token_refused(false);
        assert_eq!(status("/readyz").await, 200);
        health.set_ready(false);
        assert_eq!(status("/readyz").await, 503);
        health.set_live(false);
        assert_eq!(status("/healthz").await, 503);
        assert_eq!(status("/nope").await, 404);

        stop_tx.send(()).expect("server still running");
        server.await.expect("join").expect("serve");
    }
}
