//! Run-time pieces shared by both controller binaries:
//!
//! - [`serve`]: `/healthz` (the reconcile loop makes progress, see [`liveness`]), `/readyz` (the controller may serve: it is the leader, or a
//!   standby ready to take over) and `/metrics` (Prometheus text format);
//! - [`Metrics`]: reconcile counters and durations labelled by result and error category;
//! - [`leader`]: leader election on a `coordination.k8s.io/v1` Lease, so only one replica reconciles.

pub mod args;
pub mod aws;
pub mod backoff;
pub mod clock;
pub mod failpoint;
pub mod leader;
pub mod liveness;
pub mod metrics;
pub mod notify;
pub mod report;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

pub use args::RuntimeArgs;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
pub use liveness::Liveness;
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
    liveness: Liveness,
    metrics: Arc<Metrics>,
}

/// Serves `/healthz`, `/readyz` and `/metrics` on `addr` until the process ends. Returns the bound address
/// (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    readiness: Readiness,
    liveness: Liveness,
    metrics: Arc<Metrics>,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState {
            readiness,
            liveness,
            metrics,
        });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "health/metrics server stopped");
        }
    });
    Ok(bound)
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.liveness.check() {
        Ok(()) => (StatusCode::OK, "ok".to_owned()),
        Err(stall) => {
            tracing::error!(%stall, "liveness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("stalled: {stall}"))
        }
    }
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

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (the default in a cluster).
    Json,
    /// Human-readable text; colours only on a terminal.
    Text,
}

/// Installs the global `tracing` subscriber: `RUST_LOG` (default `info,kube=warn`) in the given format.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into());
    match format {
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).init(),
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
            tracing_subscriber::fmt().with_ansi(ansi).with_env_filter(filter).init();
        }
    }
}

/// Runs `controllers` (which end on SIGTERM/SIGINT) once this replica holds the Lease, when `election` is set.
/// On a clean end the Lease is released at once so a standby takes over; on losing the Lease the controllers are
/// cancelled and the process exits with status 1 so it never acts next to a new leader (Kubernetes restarts it as
/// a standby).
pub async fn run_as_leader(
    client: kube::Client,
    election: Option<leader::LeaderConfig>,
    controllers: impl std::future::Future<Output = ()>,
) {
    let Some(config) = election else {
        controllers.await;
        return;
    };
    let leadership = tokio::select! {
        leadership = leader::acquire(client, config) => leadership,
        () = shutdown_signal() => return,
    };
    if leadership.run(controllers).await == leader::Outcome::Lost {
        tracing::error!("lost leadership; exiting so a fresh process can stand by");
        std::process::exit(1);
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// A JSON merge patch for `{"status": new}` that also removes the status fields `new` no longer has, at every depth
/// of nested objects (a plain merge patch merges objects key by key and would leave them behind; arrays are replaced
/// whole).
pub fn status_merge_patch(old: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    let mut status = new.clone();
    null_removed(old, &mut status);
    serde_json::json!({ "status": status })
}

fn null_removed(old: &serde_json::Value, new: &mut serde_json::Value) {
    if let (Some(old), Some(new)) = (old.as_object(), new.as_object_mut()) {
        for (key, old_value) in old {
            match new.get_mut(key) {
                None => {
                    new.insert(key.clone(), serde_json::Value::Null);
                }
                Some(new_value) => null_removed(old_value, new_value),
            }
        }
    }
}

/// Writes `new` as the object's status when it differs from `old` (the status the decision started from), with
/// [`status_merge_patch`] so fields that stopped being true are removed, not left behind. The one status write of
/// both controllers.
pub async fn write_status<K, S>(api: &kube::Api<K>, name: &str, old: &S, new: &S) -> kube::Result<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    write_status_at(api, name, None, old, new).await
}

/// [`write_status`] that succeeds only while the object is still at `resource_version` (the version the decision
/// was made on): a second controller process that decided on the same version gets 409 Conflict instead of
/// overwriting the first one's decision. Used where two writers must not both act (starting a build).
pub async fn write_status_at<K, S>(
    api: &kube::Api<K>,
    name: &str,
    resource_version: Option<&str>,
    old: &S,
    new: &S,
) -> kube::Result<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    if old == new {
        return Ok(false);
    }
    let mut patch = status_merge_patch(
        &serde_json::to_value(old).map_err(kube::Error::SerdeError)?,
        &serde_json::to_value(new).map_err(kube::Error::SerdeError)?,
    );
    if let Some(rv) = resource_version {
        patch["metadata"] = serde_json::json!({ "resourceVersion": rv });
    }
    api.patch_status(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod patch_tests {
    use serde_json::json;

    #[test]
    fn fields_removed_inside_a_nested_status_object_are_nulled_too() {
        let old = json!({"retention": {"inUse": [1], "pendingSnapshots": [2]}, "phase": "Ready"});
        let new = json!({"retention": {"inUse": [1]}, "phase": "Ready"});
        assert_eq!(
            super::status_merge_patch(&old, &new),
            json!({"status": {"retention": {"inUse": [1], "pendingSnapshots": null}, "phase": "Ready"}})
        );
    }

    #[test]
    fn removed_status_fields_are_nulled_and_kept_ones_replaced() {
        let old = json!({"phase": "Ready", "targetAMI": "ami-1", "progress": "1/1"});
        let new = json!({"phase": "NoEligibleAMI", "progress": "0/1"});
        assert_eq!(
            super::status_merge_patch(&old, &new),
            json!({"status": {"phase": "NoEligibleAMI", "progress": "0/1", "targetAMI": null}})
        );
    }
}
