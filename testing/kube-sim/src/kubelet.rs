//! A local kubelet for any API server (the real `kube-apiserver` of `testing/control-plane`, or kube-sim itself):
//! it registers a Node, binds every unscheduled Pod to it (there is no scheduler), and runs the Pods bound to it
//! as local processes with [`crate::pods::run_pod`] (the same path rewriting and git-sync emulation as kube-sim's
//! Job executor). With a real API server the Job controller of `kube-controller-manager` creates the Pods.
//!
//! As the kubelet does:
//! - status (phase, container states, exit codes, termination messages) is written through `pods/status`;
//! - a Pod being deleted (`deletionTimestamp` set by the API server's graceful deletion) has its containers stopped
//!   with SIGTERM, up to `terminationGracePeriodSeconds`, then SIGKILL, and is then deleted with grace period 0;
//!   a finished Pod being deleted is deleted with grace period 0 at once.
//!
//! Deliberate simplifications: containers are never restarted (`restartPolicy` is treated as `Never`, which is what
//! Job Pods of this project use); Node status is written once (Ready) with no heartbeats, so nothing should run the
//! node-lifecycle controller; container logs are kept in memory ([`Kubelet::logs`]) and the kubelet's HTTPS log
//! endpoint is not served, so `kubectl logs` (the API server's `pods/log` proxy) answers with an error. The
//! controllers read a build's result from the termination message first and only fall back to the log.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions},
    runtime::watcher,
};
use serde_json::{Value, json};

use crate::{
    executor::ExecutorOptions,
    logs::{LogKey, Logs},
    pods::{PodHost, decoded_data, run_pod},
};

/// Kubelet settings.
#[derive(Clone, Debug)]
pub struct KubeletOptions {
    /// The Node this kubelet registers and runs Pods for.
    pub node_name: String,
    /// Only Pods of this namespace (one test's namespace on a shared control plane); `None`: all.
    pub namespace: Option<String>,
    /// How containers run (extra environment, image table, scratch directory).
    pub executor: ExecutorOptions,
}

impl KubeletOptions {
    /// A kubelet for one namespace, on a Node named after it.
    pub fn for_namespace(namespace: &str) -> Self {
        Self {
            node_name: format!("node-{namespace}"),
            namespace: Some(namespace.to_owned()),
            executor: ExecutorOptions::default(),
        }
    }

    /// The same, with extra environment for every container (e.g. the AWS emulator's endpoint).
    #[must_use]
    pub fn with_env(mut self, env: BTreeMap<String, String>) -> Self {
        self.executor.extra_env = env;
        self
    }
}

/// A running kubelet; stops when dropped.
#[derive(Debug)]
pub struct Kubelet {
    logs: Logs,
    task: tokio::task::JoinHandle<()>,
}

impl Kubelet {
    /// Registers the Node and starts taking Pods.
    pub async fn start(client: Client, options: KubeletOptions) -> anyhow::Result<Self> {
        register_node(&client, &options.node_name).await?;
        let logs = Logs::default();
        let host = ClientHost {
            client,
            logs: logs.clone(),
            stopping: Arc::default(),
        };
        let options = Arc::new(options);
        let task = tokio::spawn(async move {
            if let Err(error) = watch_pods(host, options).await {
                tracing::error!(%error, "kubelet stopped");
            }
        });
        Ok(Self { logs, task })
    }

    /// What a container wrote so far.
    pub fn logs(&self, namespace: &str, pod: &str, container: &str) -> String {
        self.logs
            .snapshot(
                &LogKey {
                    namespace: namespace.to_owned(),
                    pod: pod.to_owned(),
                    container: container.to_owned(),
                },
                None,
            )
            .0
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn register_node(client: &Client, name: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    if nodes.get_opt(name).await?.is_none() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        }))?;
        nodes.create(&PostParams::default(), &node).await?;
    }
    let now = jiff::Timestamp::now().to_string();
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "local test kubelet", "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

type PodId = (String, String);

/// A real API server as a Pod's world.
#[derive(Clone)]
struct ClientHost {
    client: Client,
    logs: Logs,
    /// Pods whose deletion has begun (or that are gone).
    stopping: Arc<Mutex<HashSet<PodId>>>,
}

impl ClientHost {
    fn stop(&self, id: PodId) {
        self.stopping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id);
    }
}

impl PodHost for ClientHost {
    async fn patch_status(&self, ns: &str, name: &str, patch: Value) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let body = json!({ "status": patch });
        if let Err(error) = pods
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            tracing::warn!(%error, ns, name, "kubelet: writing pod status failed");
        }
    }

    async fn stopping(&self, ns: &str, name: &str) -> bool {
        self.stopping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&(ns.to_owned(), name.to_owned()))
    }

    async fn data(&self, ns: &str, plural: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let object = if plural == "secrets" {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
            serde_json::to_value(api.get_opt(name).await.ok()??).ok()?
        } else {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
            serde_json::to_value(api.get_opt(name).await.ok()??).ok()?
        };
        Some(decoded_data(plural, &object))
    }

    fn logs(&self) -> &Logs {
        &self.logs
    }
}

async fn watch_pods(host: ClientHost, options: Arc<KubeletOptions>) -> anyhow::Result<()> {
    let pods: Api<Pod> = match &options.namespace {
        Some(ns) => Api::namespaced(host.client.clone(), ns),
        None => Api::all(host.client.clone()),
    };
    // Pods this kubelet has started (by uid), so a re-list does not start them twice.
    let started: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut events = watcher(pods, watcher::Config::default()).boxed();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
            Ok(watcher::Event::Delete(pod)) => {
                host.stop((pod.namespace().unwrap_or_default(), pod.name_any()));
                continue;
            }
            Ok(_) => continue,
            Err(error) => {
                tracing::debug!(%error, "kubelet: pod watch error (retrying)");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        handle_pod(&host, &options, &started, pod);
    }
    Ok(())
}

fn handle_pod(host: &ClientHost, options: &Arc<KubeletOptions>, started: &Arc<Mutex<HashSet<String>>>, pod: Pod) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let uid = pod.uid().unwrap_or_default();
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    let finished = phase == "Succeeded" || phase == "Failed";
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let is_running = started
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .contains(&uid);
    match node {
        None if !deleting => {
            let host = host.clone();
            let node_name = options.node_name.clone();
            tokio::spawn(async move { bind(&host.client, &ns, &name, &node_name).await });
        }
        Some(node) if node == options.node_name => {
            if deleting {
                host.stop((ns.clone(), name.clone()));
                if !is_running {
                    let client = host.client.clone();
                    tokio::spawn(async move { delete_now(&client, &ns, &name, &uid).await });
                }
            } else if !is_running && !finished {
                started
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(uid.clone());
                let (host, options) = (host.clone(), options.clone());
                tokio::spawn(async move {
                    let object = serde_json::to_value(&pod).unwrap_or_default();
                    let outcome = run_pod(&host, &options.executor, &object, None).await;
                    if matches!(outcome, Ok(crate::pods::PodResult::Failed)) {
                        // `kubectl logs` cannot reach this kubelet: show what failed where a test's output shows it.
                        for container in containers(&object) {
                            let key = LogKey {
                                namespace: ns.clone(),
                                pod: name.clone(),
                                container: container.clone(),
                            };
                            let (text, _) = host.logs.snapshot(&key, Some(20));
                            if !text.is_empty() {
                                eprintln!("kubelet: {ns}/{name} container {container} (last lines):\n{text}");
                            }
                        }
                    }
                    if let Err(error) = outcome {
                        tracing::warn!(%error, ns, name, "kubelet: pod could not run");
                        host.patch_status(
                            &ns,
                            &name,
                            json!({"phase": "Failed", "reason": "RunError",
                            "message": error.to_string()}),
                        )
                        .await;
                    }
                    if host.stopping(&ns, &name).await {
                        delete_now(&host.client, &ns, &name, &uid).await;
                    }
                });
            }
        }
        _ => {}
    }
}

fn containers(pod: &Value) -> Vec<String> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|key| pod["spec"][key].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect()
}

/// What the scheduler would do: bind the Pod to our Node.
async fn bind(client: &Client, ns: &str, name: &str, node: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    let bound: Result<Value, _> = pods
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await;
    if let Err(error) = bound {
        tracing::debug!(%error, ns, name, "kubelet: binding failed (already bound or gone)");
    }
}

/// The kubelet's last word on a Pod being deleted: delete it with grace period 0 (this uid only).
async fn delete_now(client: &Client, ns: &str, name: &str, uid: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    if let Err(error) = pods.delete(name, &params).await {
        tracing::debug!(%error, ns, name, "kubelet: final delete failed (already gone)");
    }
}
