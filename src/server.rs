//! The HTTP endpoint for Prometheus and the kubelet's probes.
//!
//! - `GET /metrics`: [`Metrics::render`] as OpenMetrics text.
//! - `GET /healthz`: `200 ok` while the process is live, else `503`.
//! - `GET /readyz`: `200 ok` once [`Health::set_ready`]`(true)` was called, else `503`. A replica
//!   waiting for the leader lease is ready too: it is a healthy standby. `503` too while Versori
//!   refuses the API token.
//!
//! [`serve_hardened`] serves a router with the limits every listener of the operator has (this
//! endpoint and the public OAuth 2.0 callback): a header-read timeout (hyper needs a timer for it,
//! which `axum::serve` does not set, so a client that never finishes its headers would be held
//! forever), a whole-request timeout, a body limit and caps on concurrent connections and
//! requests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

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
    serve_hardened(
        listener,
        router(metrics, health),
        Limits::default(),
        shutdown,
    )
    .await
}

/// What one listener accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A client must send its request headers within this (slowloris).
    pub header_read_timeout: Duration,
    /// A request must be answered within this (`408` otherwise).
    pub request_timeout: Duration,
    /// The largest request body accepted (`413` otherwise).
    pub max_body_bytes: usize,
    /// Requests handled at once; more wait for a slot (within the request timeout).
    pub max_concurrent_requests: usize,
    /// Open connections; more are closed at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_body_bytes: 16 * 1024,
            max_concurrent_requests: 32,
            max_connections: 256,
        }
    }
}

/// How long open connections may take to finish once `shutdown` resolved.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` with `limits` (see the module docs) until `shutdown` resolves,
/// then lets open connections finish for a few seconds.
pub async fn serve_hardened(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app.layer(
        ServiceBuilder::new()
            .layer(RequestBodyLimitLayer::new(limits.max_body_bytes))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                limits.request_timeout,
            ))
            .layer(GlobalConcurrencyLimitLayer::new(
                limits.max_concurrent_requests.max(1),
            )),
    );
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_read_timeout))
        .keep_alive_timeout(limits.header_read_timeout)
        .max_concurrent_streams(u32::try_from(limits.max_concurrent_requests).unwrap_or(u32::MAX));
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::debug!("too many open connections; closing a new one");
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone().map_request(
            |request: axum::http::Request<hyper::body::Incoming>| request.map(Body::new),
        ));
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("open connections did not finish in time");
    }
    Ok(())
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
