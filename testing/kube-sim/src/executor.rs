//! The local Job executor of the in-memory server: plays the Job controller for `batch/v1` Jobs and runs each Pod
//! with [`crate::pods::run_pod`] (the part of a kubelet shared with [`crate::kubelet`]).
//!
//! - Pods: one per attempt, named `<job>-<5 chars>`, labelled `job-name`/`batch.kubernetes.io/job-name`, owned by the
//!   Job (so deleting the Job collects them).
//! - Jobs: `startTime`, `active`/`succeeded`/`failed`, `Complete`/`Failed` conditions, `backoffLimit`,
//!   `activeDeadlineSeconds` and pod deletion (SIGTERM, `terminationGracePeriodSeconds`, SIGKILL),
//!   `ttlSecondsAfterFinished` (the Job is deleted). Unlike the real Job controller, a failed Pod is replaced at
//!   once (no exponential back-off of 10 s, 20 s, ...).
//! - `env` with `value`, `secretKeyRef`, `configMapKeyRef`, `fieldRef` (`metadata.name`, `metadata.namespace`) and
//!   `envFrom` with `secretRef`/`configMapRef` are resolved from the stored objects; extra environment (e.g. AWS
//!   endpoint settings) can be injected for every child process.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use serde_json::{Value, json};

pub use crate::pods::rewrite_paths;
use crate::{
    Shared,
    logs::Logs,
    pods::{PodHost, PodResult, decoded_data, run_pod},
    resources::ResourceType,
    store::{DeleteOptions, EventType, WriteOptions, now_string},
};

/// How images map to host commands.
#[derive(Clone, Debug)]
pub enum ImageAction {
    /// Emulate git-sync `--one-time` with `git clone`.
    GitSync,
}

/// Executor settings.
#[derive(Clone, Debug, Default)]
pub struct ExecutorOptions {
    /// Extra environment for every child process (after the Pod's own env, so it wins).
    pub extra_env: BTreeMap<String, String>,
    /// Image name prefixes (before the tag) with a special meaning; the git-sync image is always known.
    pub image_actions: Vec<(String, ImageAction)>,
    /// Where temporary volume directories are made (default: the system temp dir).
    pub work_dir: Option<PathBuf>,
}

/// Starts the executor for a server's store; runs until the runtime stops.
pub fn spawn(shared: Arc<Shared>, options: ExecutorOptions) -> tokio::task::JoinHandle<()> {
    let options = Arc::new(options);
    tokio::spawn(async move {
        let mut events = shared.lock().subscribe();
        // Jobs that existed before the executor started are picked up too.
        let existing: Vec<Value> = {
            let store = shared.lock();
            store.registry.get("batch", "v1", "jobs").map_or_else(Vec::new, |t| {
                store.list(t, None, &Default::default(), &Default::default())
            })
        };
        for job in existing {
            start_job(&shared, &options, job);
        }
        loop {
            match events.recv().await {
                Ok(event) => match (event.key.group.as_str(), event.key.plural.as_str(), event.kind) {
                    ("batch", "jobs", EventType::Added) => start_job(&shared, &options, event.object.clone()),
                    ("", "pods", EventType::Deleted) => {
                        let name = event.object["metadata"]["name"].as_str().unwrap_or_default();
                        shared.logs.remove_pod(&event.namespace, name);
                    }
                    _ => {}
                },
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

fn start_job(shared: &Arc<Shared>, options: &Arc<ExecutorOptions>, job: Value) {
    let finished = job["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
    });
    if finished {
        return;
    }
    let shared = shared.clone();
    let options = options.clone();
    tokio::spawn(async move {
        if let Err(error) = run_job(&shared, &options, &job).await {
            tracing::warn!(%error, "job executor error");
        }
    });
}

fn job_type(shared: &Shared) -> Option<ResourceType> {
    shared.lock().registry.get("batch", "v1", "jobs").cloned()
}

fn pod_type(shared: &Shared) -> Option<ResourceType> {
    shared.lock().registry.get("", "v1", "pods").cloned()
}

/// Writes `status` fields with a merge, as a status-subresource update.
fn merge_status(shared: &Shared, t: &ResourceType, ns: &str, name: &str, patch: &Value) -> Option<Value> {
    let mut store = shared.lock();
    let mut obj = store.get(t, ns, name).ok()?;
    json_patch::merge(&mut obj["status"], patch);
    store.update(t, ns, name, obj, true, &WriteOptions::default()).ok()
}

async fn run_job(shared: &Arc<Shared>, options: &ExecutorOptions, job: &Value) -> anyhow::Result<()> {
    let (Some(jobs), Some(pods)) = (job_type(shared), pod_type(shared)) else {
        return Ok(());
    };
    let ns = job["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
    let name = job["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let uid = job["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
    let backoff_limit = job["spec"]["backoffLimit"].as_i64().unwrap_or(6);
    let deadline = job["spec"]["activeDeadlineSeconds"].as_u64().map(Duration::from_secs);
    let ttl = job["spec"]["ttlSecondsAfterFinished"].as_u64().map(Duration::from_secs);
    let started = tokio::time::Instant::now();
    merge_status(
        shared,
        &jobs,
        &ns,
        &name,
        &json!({"startTime": now_string(), "active": 0}),
    );

    let mut failed = 0i64;
    let outcome = loop {
        let pod_name = format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..5]);
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": pod_name, "namespace": ns,
                "labels": {"job-name": name, "batch.kubernetes.io/job-name": name, "controller-uid": uid,
                           "batch.kubernetes.io/controller-uid": uid},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                                     "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": job["spec"]["template"]["spec"].clone(),
        });
        if let Some(labels) = job["spec"]["template"]["metadata"]["labels"].as_object() {
            for (k, v) in labels {
                pod["metadata"]["labels"][k] = v.clone();
            }
        }
        let pod = shared.lock().create(&pods, &ns, pod, &WriteOptions::default())?;
        merge_status(shared, &jobs, &ns, &name, &json!({"active": 1}));
        let remaining = deadline.map(|d| d.saturating_sub(started.elapsed()));
        let result = run_pod(&StoreHost(shared.clone()), options, &pod, remaining).await?;
        match result {
            PodResult::Succeeded => {
                merge_status(shared, &jobs, &ns, &name, &json!({"active": 0, "succeeded": 1}));
                break ("Complete", "Completed", "Job completed".to_owned());
            }
            PodResult::Gone => return Ok(()),
            PodResult::DeadlineExceeded => {
                failed += 1;
                merge_status(shared, &jobs, &ns, &name, &json!({"active": 0, "failed": failed}));
                break (
                    "Failed",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline".to_owned(),
                );
            }
            PodResult::Failed => {
                failed += 1;
                merge_status(shared, &jobs, &ns, &name, &json!({"active": 0, "failed": failed}));
                if failed > backoff_limit {
                    break (
                        "Failed",
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit".to_owned(),
                    );
                }
            }
        }
        if shared.lock().get(&jobs, &ns, &name).is_err() {
            return Ok(());
        }
    };
    let (condition, reason, message) = outcome;
    let now = now_string();
    let mut status = json!({"conditions": [{"type": condition, "status": "True", "reason": reason, "message": message,
        "lastProbeTime": now, "lastTransitionTime": now}]});
    if condition == "Complete" {
        status["completionTime"] = json!(now);
    }
    merge_status(shared, &jobs, &ns, &name, &status);
    if let Some(ttl) = ttl {
        tokio::time::sleep(ttl).await;
        let _ = shared.lock().delete(&jobs, &ns, &name, &DeleteOptions::default());
    }
    Ok(())
}

/// The in-memory store as a Pod's world.
#[derive(Clone)]
struct StoreHost(Arc<Shared>);

impl PodHost for StoreHost {
    async fn patch_status(&self, ns: &str, name: &str, patch: Value) {
        if let Some(pods) = pod_type(&self.0) {
            merge_status(&self.0, &pods, ns, name, &patch);
        }
    }

    async fn stopping(&self, ns: &str, name: &str) -> bool {
        pod_type(&self.0).is_none_or(|pods| self.0.lock().get(&pods, ns, name).is_err())
    }

    async fn data(&self, ns: &str, plural: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let store = self.0.lock();
        let t = store.registry.get("", "v1", plural)?;
        let object = store.get(t, ns, name).ok()?;
        Some(decoded_data(plural, &object))
    }

    fn logs(&self) -> &Logs {
        &self.0.logs
    }
}
