//! The local Job executor: plays kubelet and the Job controller for `batch/v1` Jobs by running each Pod's init
//! containers and then its main container as local processes.
//!
//! - Pods: one per attempt, named `<job>-<5 chars>`, labelled `job-name`/`batch.kubernetes.io/job-name`, owned by the
//!   Job (so deleting the Job collects them); status written like the kubelet (phase, container states, exit
//!   codes, `terminationMessagePath` contents in `state.terminated.message`).
//! - Jobs: `startTime`, `active`/`succeeded`/`failed`, `Complete`/`Failed` conditions, `backoffLimit`,
//!   `activeDeadlineSeconds` and pod deletion (as the kubelet: SIGTERM to the container's main process, up to
//!   `terminationGracePeriodSeconds` (default 30) to exit, then SIGKILL to everything it started),
//!   `ttlSecondsAfterFinished` (the Job is deleted).
//! - Images cannot run here, so each container's `command`+`args` run on the host, except images in the
//!   image table: the git-sync image becomes a `git clone` honouring the git-sync flags/env the controller sets.
//! - Volumes: every `emptyDir` becomes a temporary directory. **Path rewriting**: wherever a container's command,
//!   args, env values or workingDir start with a mount path (or contain `<mountPath>/`), that prefix is replaced by
//!   the host directory; `terminationMessagePath` is mapped to a per-container host file the same way.
//! - `env` with `value`, `secretKeyRef`, `configMapKeyRef`, `fieldRef` (`metadata.name`, `metadata.namespace`) and
//!   `envFrom` with `secretRef`/`configMapRef` are resolved from the stored objects; extra environment (e.g. AWS
//!   endpoint settings) can be injected for every child process.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::Command,
};

use crate::{
    Shared,
    logs::LogKey,
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
        let result = run_pod(shared, options, &pods, &pod, remaining).await?;
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

enum PodResult {
    Succeeded,
    Failed,
    DeadlineExceeded,
    Gone,
}

async fn run_pod(
    shared: &Arc<Shared>,
    options: &ExecutorOptions,
    pods: &ResourceType,
    pod: &Value,
    deadline: Option<Duration>,
) -> anyhow::Result<PodResult> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
    let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let base = options.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::Builder::new()
        .prefix(&format!("kube-sim-{name}-"))
        .tempdir_in(base)?;
    // emptyDir volumes and termination-message files become host paths.
    let mut volumes = HashMap::new();
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let vname = volume["name"].as_str().unwrap_or_default();
        let dir = scratch.path().join("volumes").join(vname);
        std::fs::create_dir_all(&dir)?;
        volumes.insert(vname.to_owned(), dir);
    }
    let start = tokio::time::Instant::now();
    merge_status(
        shared,
        pods,
        &ns,
        &name,
        &json!({"phase": "Pending", "startTime": now_string()}),
    );

    let init: Vec<Value> = pod["spec"]["initContainers"].as_array().cloned().unwrap_or_default();
    let main: Vec<Value> = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
    let mut init_statuses = Vec::new();
    for container in &init {
        let remaining = deadline.map(|d| d.saturating_sub(start.elapsed()));
        let outcome = run_container(shared, options, pod, container, &volumes, scratch.path(), remaining).await?;
        init_statuses.push(outcome.status.clone());
        merge_status(
            shared,
            pods,
            &ns,
            &name,
            &json!({"initContainerStatuses": init_statuses}),
        );
        match outcome.exit {
            Exit::Code(0) => {}
            Exit::Gone => return Ok(PodResult::Gone),
            Exit::Deadline => {
                return Ok(finish_pod(
                    shared,
                    pods,
                    &ns,
                    &name,
                    "Failed",
                    PodResult::DeadlineExceeded,
                ));
            }
            Exit::Code(_) => return Ok(finish_pod(shared, pods, &ns, &name, "Failed", PodResult::Failed)),
        }
    }
    merge_status(shared, pods, &ns, &name, &json!({"phase": "Running"}));
    // Containers of a Pod run side by side; this project's Pods have one main container, so run them in order.
    let mut statuses = Vec::new();
    let mut result = PodResult::Succeeded;
    for container in &main {
        let remaining = deadline.map(|d| d.saturating_sub(start.elapsed()));
        let outcome = run_container(shared, options, pod, container, &volumes, scratch.path(), remaining).await?;
        statuses.push(outcome.status.clone());
        merge_status(shared, pods, &ns, &name, &json!({"containerStatuses": statuses}));
        match outcome.exit {
            Exit::Code(0) => {}
            Exit::Gone => return Ok(PodResult::Gone),
            Exit::Deadline => {
                result = PodResult::DeadlineExceeded;
                break;
            }
            Exit::Code(_) => {
                result = PodResult::Failed;
                break;
            }
        }
    }
    let phase = if matches!(result, PodResult::Succeeded) {
        "Succeeded"
    } else {
        "Failed"
    };
    Ok(finish_pod(shared, pods, &ns, &name, phase, result))
}

fn finish_pod(shared: &Shared, pods: &ResourceType, ns: &str, name: &str, phase: &str, result: PodResult) -> PodResult {
    merge_status(shared, pods, ns, name, &json!({"phase": phase}));
    result
}

enum Exit {
    Code(i32),
    Deadline,
    Gone,
}

struct ContainerOutcome {
    exit: Exit,
    status: Value,
}

async fn run_container(
    shared: &Arc<Shared>,
    options: &ExecutorOptions,
    pod: &Value,
    container: &Value,
    volumes: &HashMap<String, PathBuf>,
    scratch: &Path,
    deadline: Option<Duration>,
) -> anyhow::Result<ContainerOutcome> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let cname = container["name"].as_str().unwrap_or_default().to_owned();
    let image = container["image"].as_str().unwrap_or_default().to_owned();
    let key = LogKey {
        namespace: ns.clone(),
        pod: pod_name.clone(),
        container: cname.clone(),
    };

    // Mount path -> host path, longest first so nested mounts win.
    let mut mounts: Vec<(String, PathBuf)> = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let host = volumes.get(m["name"].as_str()?)?;
            let sub = m["subPath"].as_str().map_or_else(|| host.clone(), |s| host.join(s));
            Some((m["mountPath"].as_str()?.trim_end_matches('/').to_owned(), sub))
        })
        .collect();
    let termination_path = container["terminationMessagePath"]
        .as_str()
        .unwrap_or("/dev/termination-log")
        .to_owned();
    let termination_host = scratch.join(format!("termination-{cname}"));
    mounts.push((termination_path, termination_host.clone()));
    mounts.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
    let rewrite = |s: &str| -> String { rewrite_paths(s, &mounts) };

    let mut env = resolve_env(shared, &ns, pod, container);
    for value in env.values_mut() {
        *value = rewrite(value);
    }
    env.extend(options.extra_env.clone());

    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(&rewrite)).collect())
            .unwrap_or_default()
    };
    let mut argv: Vec<String> = strings(&container["command"]);
    argv.extend(strings(&container["args"]));
    let action = image_action(&image, options);
    let working_dir = container["workingDir"].as_str().map(|w| PathBuf::from(rewrite(w)));

    let started_at = now_string();
    let mut running = json!({"name": cname, "image": image, "ready": true, "restartCount": 0,
        "state": {"running": {"startedAt": started_at}}});
    let status_key = if pod["spec"]["initContainers"]
        .as_array()
        .is_some_and(|i| i.iter().any(|c| c["name"] == cname))
    {
        "initContainerStatuses"
    } else {
        "containerStatuses"
    };
    if let Some(pods) = pod_type(shared) {
        let current = shared.lock().get(&pods, &ns, &pod_name).ok();
        let mut list: Vec<Value> = current
            .and_then(|p| p["status"][status_key].as_array().cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|s| s["name"] != cname)
            .collect();
        list.push(running.clone());
        merge_status(shared, &pods, &ns, &pod_name, &json!({status_key: list}));
    }

    let (mut command, tool_env) = match action {
        Some(ImageAction::GitSync) => git_sync_command(&argv, &env)?,
        None => {
            let Some((program, rest)) = argv.split_first() else {
                anyhow::bail!("container {cname} of pod {pod_name} has no command: images cannot run here");
            };
            let mut c = Command::new(program);
            c.args(rest);
            (c, BTreeMap::new())
        }
    };
    command.env_clear();
    command.env("PATH", std::env::var("PATH").unwrap_or_default());
    command.env("HOME", std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()));
    command.envs(&env);
    command.envs(&tool_env);
    if let Some(dir) = &working_dir {
        command.current_dir(dir);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group, so a deadline or deletion kills the whole tree (a shell and its children).
    command.process_group(0);
    let spawned = command.spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            shared
                .logs
                .append(&key, &format!("failed to start container: {error}\n"));
            shared.logs.finish(&key);
            let now = now_string();
            running["state"] = json!({"terminated": {"exitCode": 128, "reason": "StartError",
                "message": error.to_string(), "startedAt": started_at, "finishedAt": now}});
            running["ready"] = json!(false);
            return Ok(ContainerOutcome {
                exit: Exit::Code(128),
                status: running,
            });
        }
    };
    let out = pump(child.stdout.take(), shared.clone(), key.clone());
    let err = pump(child.stderr.take(), shared.clone(), key.clone());
    let sleep = tokio::time::sleep(deadline.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(sleep);
    let mut gone_check = tokio::time::interval(Duration::from_millis(250));
    let grace = Duration::from_secs(pod["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap_or(30));
    let exit = loop {
        tokio::select! {
            status = child.wait() => break Exit::Code(status.map_or(128, |s| s.code().unwrap_or(137))),
            () = &mut sleep => {
                terminate(&mut child, grace).await;
                break Exit::Deadline;
            }
            _ = gone_check.tick() => {
                let exists = pod_type(shared).is_some_and(|pods| shared.lock().get(&pods, &ns, &pod_name).is_ok());
                if !exists {
                    terminate(&mut child, grace).await;
                    break Exit::Gone;
                }
            }
        }
    };
    let _ = out.await;
    let _ = err.await;
    shared.logs.finish(&key);
    let message = std::fs::read_to_string(&termination_host).unwrap_or_default();
    let (code, reason) = match exit {
        Exit::Code(0) => (0, "Completed"),
        Exit::Code(c) => (c, "Error"),
        Exit::Deadline => (137, "DeadlineExceeded"),
        Exit::Gone => (137, "Killed"),
    };
    let mut terminated =
        json!({"exitCode": code, "reason": reason, "startedAt": started_at, "finishedAt": now_string()});
    if !message.is_empty() {
        terminated["message"] = json!(message);
    }
    running["state"] = json!({"terminated": terminated});
    running["ready"] = json!(false);
    Ok(ContainerOutcome { exit, status: running })
}

/// What the kubelet does to a container that must stop (deadline, pod deleted): SIGTERM to its main process (PID 1
/// in a container; here the process the container started), up to `grace` for it to exit, then SIGKILL to
/// everything it started.
async fn terminate(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            // The main process is gone; like the kubelet tearing down the container, nothing it started survives.
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            return;
        }
    }
    kill_tree(child).await;
}

async fn kill_tree(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    let _ = child.kill().await;
}

fn pump<R: AsyncRead + Unpin + Send + 'static>(
    reader: Option<R>,
    shared: Arc<Shared>,
    key: LogKey,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(reader) = reader else { return };
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            shared.logs.append(&key, &format!("{line}\n"));
        }
    })
}

/// Replaces mount paths with host paths wherever they stand as a path: a whole value (`/git`), a prefix
/// (`/git/repo`), a flag value (`--root=/git`) or inside a script (`echo x > /dev/termination-log`). A mount path
/// counts only at a boundary: preceded by the start, whitespace, `=`, `:`, `>`, `<` or a quote, and followed by the
/// end, `/`, whitespace, `;`, `&`, `|`, `)` or a quote; so `/gitx` is left alone.
pub fn rewrite_paths(text: &str, mounts: &[(String, PathBuf)]) -> String {
    let before_ok = |c: Option<char>| c.is_none_or(|c| c.is_whitespace() || "=:><'\"(".contains(c));
    let after_ok = |c: Option<char>| c.is_none_or(|c| c.is_whitespace() || "/;&|)'\"".contains(c));
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'scan: while !rest.is_empty() {
        let prev = out.chars().last();
        if before_ok(prev) {
            for (mount, host) in mounts {
                if let Some(after) = rest.strip_prefix(mount.as_str())
                    && after_ok(after.chars().next())
                {
                    out.push_str(&host.to_string_lossy());
                    rest = after;
                    continue 'scan;
                }
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

fn image_action(image: &str, options: &ExecutorOptions) -> Option<ImageAction> {
    let repo = image.split('@').next().unwrap_or_default();
    let repo = repo
        .rsplit_once(':')
        .filter(|(_, tag)| !tag.contains('/'))
        .map_or(repo, |(r, _)| r);
    if let Some((_, action)) = options.image_actions.iter().find(|(prefix, _)| repo == prefix) {
        return Some(action.clone());
    }
    repo.ends_with("/git-sync").then_some(ImageAction::GitSync)
}

/// git-sync `--one-time` as `git clone --depth N --branch REF REPO ROOT/LINK`, from flags or `GITSYNC_*` env.
fn git_sync_command(
    argv: &[String],
    env: &BTreeMap<String, String>,
) -> anyhow::Result<(Command, BTreeMap<String, String>)> {
    let mut flags: HashMap<String, String> = HashMap::new();
    for arg in argv {
        if let Some((k, v)) = arg.trim_start_matches('-').split_once('=') {
            flags.insert(k.to_owned(), v.to_owned());
        }
    }
    let get = |flag: &str, envs: &[&str]| -> Option<String> {
        flags
            .get(flag)
            .cloned()
            .or_else(|| envs.iter().find_map(|e| env.get(*e).cloned()))
    };
    let repo = get("repo", &["GITSYNC_REPO", "GIT_SYNC_REPO"])
        .ok_or_else(|| anyhow::anyhow!("git-sync: --repo is required"))?;
    let root = get("root", &["GITSYNC_ROOT", "GIT_SYNC_ROOT"])
        .ok_or_else(|| anyhow::anyhow!("git-sync: --root is required"))?;
    let reference = get("ref", &["GITSYNC_REF", "GIT_SYNC_REF", "GIT_SYNC_BRANCH"]).unwrap_or_else(|| "HEAD".into());
    let depth = get("depth", &["GITSYNC_DEPTH", "GIT_SYNC_DEPTH"]).unwrap_or_else(|| "1".into());
    let link = get("link", &["GITSYNC_LINK", "GIT_SYNC_DEST"]).unwrap_or_else(|| {
        repo.trim_end_matches('/')
            .trim_end_matches(".git")
            .rsplit('/')
            .next()
            .unwrap_or("repo")
            .to_owned()
    });
    let username = get("username", &["GITSYNC_USERNAME", "GIT_SYNC_USERNAME"]);
    let password = get("password", &["GITSYNC_PASSWORD", "GIT_SYNC_PASSWORD"]).or_else(|| {
        get("password-file", &["GITSYNC_PASSWORD_FILE"])
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|p| p.trim().to_owned())
    });
    let target = Path::new(&root).join(&link);
    std::fs::create_dir_all(&root)?;
    let mut command = Command::new("git");
    command.arg("clone").arg("--quiet").arg("--no-tags");
    if depth != "0" {
        command.arg("--depth").arg(&depth);
    }
    if reference != "HEAD" {
        command.arg("--branch").arg(&reference);
    }
    command.arg("--").arg(&repo).arg(&target);
    let mut git_env = BTreeMap::from([("GIT_TERMINAL_PROMPT".to_owned(), "0".to_owned())]);
    if let (Some(user), Some(pass)) = (username, password) {
        // Credentials go through git's environment config, never argv.
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        git_env.insert("GIT_CONFIG_COUNT".into(), "1".into());
        git_env.insert("GIT_CONFIG_KEY_0".into(), "http.extraHeader".into());
        git_env.insert("GIT_CONFIG_VALUE_0".into(), format!("Authorization: Basic {basic}"));
    }
    Ok((command, git_env))
}

fn resolve_env(shared: &Shared, ns: &str, pod: &Value, container: &Value) -> BTreeMap<String, String> {
    let store = shared.lock();
    let lookup = |plural: &str, name: &str, key: &str| -> Option<String> {
        let t = store.registry.get("", "v1", plural)?;
        let obj = store.get(t, ns, name).ok()?;
        if plural == "secrets" {
            if let Some(s) = obj["stringData"][key].as_str() {
                return Some(s.to_owned());
            }
            let raw = obj["data"][key].as_str()?;
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(raw).ok()?).ok()
        } else {
            obj["data"][key].as_str().map(str::to_owned)
        }
    };
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        for (plural, field) in [("secrets", "secretRef"), ("configmaps", "configMapRef")] {
            let Some(name) = source[field]["name"].as_str() else {
                continue;
            };
            let Some(t) = store.registry.get("", "v1", plural) else {
                continue;
            };
            let Ok(obj) = store.get(t, ns, name) else { continue };
            let prefix = source["prefix"].as_str().unwrap_or_default();
            for key in obj["data"]
                .as_object()
                .map(|m| m.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                if let Some(value) = lookup(plural, name, &key) {
                    env.insert(format!("{prefix}{key}"), value);
                }
            }
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let Some(name) = var["name"].as_str() else { continue };
        let value = if let Some(v) = var["value"].as_str() {
            Some(v.to_owned())
        } else if let Some(r) = var["valueFrom"]["secretKeyRef"].as_object() {
            lookup(
                "secrets",
                r["name"].as_str().unwrap_or_default(),
                r["key"].as_str().unwrap_or_default(),
            )
        } else if let Some(r) = var["valueFrom"]["configMapKeyRef"].as_object() {
            lookup(
                "configmaps",
                r["name"].as_str().unwrap_or_default(),
                r["key"].as_str().unwrap_or_default(),
            )
        } else if let Some(path) = var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            path.split('.')
                .try_fold(pod, |v, seg| v.get(seg))
                .and_then(Value::as_str)
                .map(str::to_owned)
        } else {
            None
        };
        if let Some(value) = value {
            env.insert(name.to_owned(), value);
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_rewritten_in_values_and_flags() {
        let mounts = vec![
            ("/git/sub".to_owned(), PathBuf::from("/h/sub")),
            ("/git".to_owned(), PathBuf::from("/h/git")),
        ];
        assert_eq!(rewrite_paths("/git", &mounts), "/h/git");
        assert_eq!(rewrite_paths("/git/repo/dir", &mounts), "/h/git/repo/dir");
        assert_eq!(rewrite_paths("/git/sub/x", &mounts), "/h/sub/x");
        assert_eq!(rewrite_paths("--root=/git", &mounts), "--root=/h/git");
        assert_eq!(rewrite_paths("/gitx", &mounts), "/gitx");
        assert_eq!(rewrite_paths("-var=x=/git", &mounts), "-var=x=/h/git");
        assert_eq!(
            rewrite_paths("cd /git/sub && echo x > /git/out", &mounts),
            "cd /h/sub && echo x > /h/git/out"
        );
        assert_eq!(rewrite_paths("a/git", &mounts), "a/git");
    }

    #[test]
    fn git_sync_images_are_recognised_by_repository() {
        let options = ExecutorOptions::default();
        assert!(matches!(
            image_action("registry.k8s.io/git-sync/git-sync:v4.2.3", &options),
            Some(ImageAction::GitSync)
        ));
        assert!(image_action("hashicorp/packer:1.11.2", &options).is_none());
        assert!(image_action("localhost:5000/git-sync:v4", &options).is_some());
    }
}
