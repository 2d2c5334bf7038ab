//! kube-sim: **test infrastructure, not a product component.** An in-memory Kubernetes API server that speaks the
//! real REST protocol over HTTP on 127.0.0.1 (so kube-rs, kube-runtime and kubectl work against it unchanged) and
//! a local Job executor that plays kubelet for Jobs by running their containers as local processes.
//!
//! State lives in memory only and is lost when the server stops. There is no authentication or authorization:
//! the request record ([`ApiServer::requests`]) lets tests compare what a controller did with what its RBAC allows.
//!
//! Known simplifications, on purpose: one storage version per resource (no conversion); `limit`/`continue` are
//! ignored (lists return everything, which clients must accept); server-side apply merges without tracking field
//! ownership; foreground deletion behaves like background; a watch with a selector does not turn "left the
//! selector" into DELETED; protobuf only for Namespace bodies; OpenAPI v3 documents list operations without
//! schemas (enough for `kubectl apply` to use server-side validation, not for `kubectl explain`).

pub mod error;
pub mod executor;
pub mod kubelet;
pub mod logs;
pub mod patch;
pub mod pods;
mod protobuf;
pub mod rbac;
pub mod resources;
pub mod selectors;
mod server;
pub mod store;

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
};

pub use server::RequestRecord;
use store::Store;

/// Start-up settings.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Watch events kept for resuming watches; older resourceVersions get 410 Gone.
    pub event_log_capacity: usize,
    /// Run Jobs as local processes ([`executor`]); `None` leaves Jobs untouched.
    pub executor: Option<executor::ExecutorOptions>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            port: 0,
            event_log_capacity: 100_000,
            executor: None,
        }
    }
}

/// State shared by the HTTP handlers, the executor and tests.
#[derive(Debug)]
pub struct Shared {
    store: Mutex<Store>,
    requests: Mutex<Vec<RequestRecord>>,
    /// Container logs.
    pub logs: logs::Logs,
}

impl Shared {
    /// The store, locked. Never hold it across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record(&self, record: RequestRecord) {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(record);
    }

    /// Every request served so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A running API server. Dropping it stops it.
#[derive(Debug)]
pub struct ApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    executor: Option<tokio::task::JoinHandle<()>>,
}

impl ApiServer {
    /// Binds 127.0.0.1 and starts serving on the current tokio runtime.
    pub async fn start(options: ServerOptions) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(options.event_log_capacity)),
            requests: Mutex::new(Vec::new()),
            logs: logs::Logs::default(),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port)).await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new().fallback(server::handle).with_state(shared.clone());
        let executor = options.executor.map(|opts| executor::spawn(shared.clone(), opts));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            shared,
            shutdown: Some(tx),
            executor,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shared state (store, logs, request record).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The store, locked. Never hold it across an `.await`.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.shared.lock()
    }

    /// Every request served so far.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests()
    }

    /// A kubeconfig pointing at this server (no credentials; plain HTTP on loopback).
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig_for(&self.url())
    }

    /// Writes a kubeconfig whose requests are recorded as `user` (sent as a bearer token; the server does not
    /// authenticate, it only records who asked).
    pub fn write_kubeconfig_as(&self, path: &Path, user: &str) -> std::io::Result<()> {
        let yaml = self
            .kubeconfig_yaml()
            .replace("  user: {}\n", &format!("  user:\n    token: {user:?}\n"));
        std::fs::write(path, yaml)
    }

    /// Writes [`ApiServer::kubeconfig_yaml`] to a file.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(executor) = self.executor.take() {
            executor.abort();
        }
    }
}

/// A kubeconfig for a server URL, context `kube-sim`, namespace `default`.
pub fn kubeconfig_for(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-sim\n  cluster:\n    server: {url}\n\
         contexts:\n- name: kube-sim\n  context:\n    cluster: kube-sim\n    user: kube-sim\n    namespace: default\n\
         current-context: kube-sim\nusers:\n- name: kube-sim\n  user: {{}}\n"
    )
}
