//! Run-time pieces shared by both controller binaries:
//!
//! - [`serve`]: `/healthz` (the process is alive), `/readyz` (the controller may serve: it is the leader, or a
//!   standby ready to take over) and `/metrics` (Prometheus text format);
//! - [`Metrics`]: reconcile counters and durations labelled by result and error category;
//! - [`leader`]: leader election on a `coordination.k8s.io/v1` Lease, so only one replica reconciles.

pub mod leader;
pub mod metrics;
pub mod notify;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
pub use metrics::Metrics;

/// Readiness flag shared with the health server.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the controller ready (or not).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether the controller is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct AppState {
    readiness: Readiness,
    metrics: Arc<Metrics>,
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `addr` until the process ends. Returns the bound address
/// (useful with port 0).
pub async fn serve(addr: SocketAddr, readiness: Readiness, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { readiness, metrics });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "health/metrics server stopped");
        }
    });
    Ok(bound)
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.readiness.get() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}
