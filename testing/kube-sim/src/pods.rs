//! Running one Pod's containers as local processes, the part of a kubelet that both the in-memory server's Job
//! executor ([`crate::executor`]) and the kubelet for a real API server ([`crate::kubelet`]) share. Where the Pod's
//! world lives (status writes, Secrets, ConfigMaps, whether the Pod is being deleted) is behind [`PodHost`].
//!
//! - Volumes: every volume becomes a temporary directory (this project's Pods use `emptyDir` only; a projected
//!   ServiceAccount token volume is an empty directory here). **Path rewriting**: wherever a container's command,
//!   args, env values or workingDir start with a mount path (or contain `<mountPath>/`), that prefix is replaced by
//!   the host directory; `terminationMessagePath` is mapped to a per-container host file the same way.
//! - Images cannot run here, so each container's `command`+`args` run on the host, except images in the image
//!   table: the git-sync image becomes a `git clone` honouring the git-sync flags/env the controller sets.
//! - Status is written as the kubelet writes it: phase, `startTime`, container states with exit codes and the
//!   termination message; a Pod being deleted gets SIGTERM to each running container's main process, up to
//!   `terminationGracePeriodSeconds` (default 30) to exit, then SIGKILL to everything it started.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::Command,
};

use crate::{
    executor::{ExecutorOptions, ImageAction},
    logs::{LogKey, Logs},
    store::now_string,
};

/// Where a running Pod's world lives: the in-memory store or a real API server.
pub trait PodHost: Clone + Send + Sync + 'static {
    /// Merges `patch` into the Pod's `status` (a status-subresource write).
    fn patch_status(&self, ns: &str, name: &str, patch: Value) -> impl Future<Output = ()> + Send;
    /// True once the Pod is gone or being deleted: its containers must stop.
    fn stopping(&self, ns: &str, name: &str) -> impl Future<Output = bool> + Send;
    /// A Secret's or ConfigMap's (`plural`) decoded string data, when it exists.
    fn data(&self, ns: &str, plural: &str, name: &str)
    -> impl Future<Output = Option<BTreeMap<String, String>>> + Send;
    /// Where container output goes.
    fn logs(&self) -> &Logs;
}

/// Decodes a Secret's (`data` base64, `stringData`) or a ConfigMap's (`data`) values.
pub fn decoded_data(plural: &str, object: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in object["data"].as_object().into_iter().flatten() {
        let Some(raw) = value.as_str() else { continue };
        let decoded = if plural == "secrets" {
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
        } else {
            Some(raw.to_owned())
        };
        if let Some(decoded) = decoded {
            out.insert(key.clone(), decoded);
        }
    }
    if plural == "secrets" {
        for (key, value) in object["stringData"].as_object().into_iter().flatten() {
            if let Some(v) = value.as_str() {
                out.insert(key.clone(), v.to_owned());
            }
        }
    }
    out
}

/// How a Pod ended.
#[derive(Debug)]
pub enum PodResult {
    /// Every container exited 0.
    Succeeded,
    /// A container failed (or could not start).
    Failed,
    /// The deadline passed; its containers were stopped.
    DeadlineExceeded,
    /// The Pod was deleted while running; its containers were stopped.
    Gone,
}

/// Runs `pod`'s init containers and then its containers, writing status as it goes. `deadline` bounds the whole
/// Pod (the Job's `activeDeadlineSeconds` left). A Pod that is deleted stops and reports [`PodResult::Gone`]
/// without a final phase, as the kubelet does not write status for a Pod it tears down for deletion.
pub async fn run_pod<H: PodHost>(
    host: &H,
    options: &ExecutorOptions,
    pod: &Value,
    deadline: Option<Duration>,
) -> anyhow::Result<PodResult> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
    let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let base = options.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::Builder::new()
        .prefix(&format!("kube-sim-{name}-"))
        .tempdir_in(base)?;
    let mut volumes = HashMap::new();
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let vname = volume["name"].as_str().unwrap_or_default();
        let dir = scratch.path().join("volumes").join(vname);
        std::fs::create_dir_all(&dir)?;
        volumes.insert(vname.to_owned(), dir);
    }
    let start = tokio::time::Instant::now();
    host.patch_status(&ns, &name, json!({"phase": "Pending", "startTime": now_string()}))
        .await;

    let mut result = PodResult::Succeeded;
    'groups: for (key, phase_before) in [("initContainers", None), ("containers", Some("Running"))] {
        if let Some(phase) = phase_before {
            host.patch_status(&ns, &name, json!({"phase": phase})).await;
        }
        let status_key = if key == "initContainers" {
            "initContainerStatuses"
        } else {
            "containerStatuses"
        };
        let mut statuses: Vec<Value> = Vec::new();
        // Containers of a Pod run side by side; this project's Pods have one main container, so run them in order.
        for container in pod["spec"][key].as_array().into_iter().flatten() {
            let remaining = deadline.map(|d| d.saturating_sub(start.elapsed()));
            let run = Run {
                host,
                options,
                pod,
                volumes: &volumes,
                scratch: scratch.path(),
            };
            let exit = run.container(container, remaining, &mut statuses, status_key).await?;
            match exit {
                Exit::Code(0) => {}
                Exit::Gone => return Ok(PodResult::Gone),
                Exit::Deadline => {
                    result = PodResult::DeadlineExceeded;
                    break 'groups;
                }
                Exit::Code(_) => {
                    result = PodResult::Failed;
                    break 'groups;
                }
            }
        }
    }
    let phase = if matches!(result, PodResult::Succeeded) {
        "Succeeded"
    } else {
        "Failed"
    };
    host.patch_status(&ns, &name, json!({"phase": phase})).await;
    Ok(result)
}

enum Exit {
    Code(i32),
    Deadline,
    Gone,
}

/// One Pod's running context.
struct Run<'a, H> {
    host: &'a H,
    options: &'a ExecutorOptions,
    pod: &'a Value,
    volumes: &'a HashMap<String, PathBuf>,
    scratch: &'a Path,
}

impl<H: PodHost> Run<'_, H> {
    /// Runs one container; its status is appended to `statuses` (running, then terminated) and written.
    async fn container(
        &self,
        container: &Value,
        deadline: Option<Duration>,
        statuses: &mut Vec<Value>,
        status_key: &str,
    ) -> anyhow::Result<Exit> {
        let (host, pod) = (self.host, self.pod);
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
                let host = self.volumes.get(m["name"].as_str()?)?;
                let sub = m["subPath"].as_str().map_or_else(|| host.clone(), |s| host.join(s));
                Some((m["mountPath"].as_str()?.trim_end_matches('/').to_owned(), sub))
            })
            .collect();
        let termination_path = container["terminationMessagePath"]
            .as_str()
            .unwrap_or("/dev/termination-log")
            .to_owned();
        let termination_host = self.scratch.join(format!("termination-{cname}"));
        mounts.push((termination_path, termination_host.clone()));
        mounts.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
        let rewrite = |s: &str| -> String { rewrite_paths(s, &mounts) };

        let mut env = resolve_env(host, &ns, pod, container).await;
        for value in env.values_mut() {
            *value = rewrite(value);
        }
        env.extend(self.options.extra_env.clone());

        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str().map(&rewrite)).collect())
                .unwrap_or_default()
        };
        let mut argv: Vec<String> = strings(&container["command"]);
        argv.extend(strings(&container["args"]));
        let action = image_action(&image, self.options);
        let working_dir = container["workingDir"].as_str().map(|w| PathBuf::from(rewrite(w)));

        let started_at = now_string();
        statuses.push(json!({"name": cname, "image": image, "ready": true, "restartCount": 0,
            "state": {"running": {"startedAt": started_at}}}));
        host.patch_status(&ns, &pod_name, json!({status_key: statuses})).await;

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
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => {
                host.logs()
                    .append(&key, &format!("failed to start container: {error}\n"));
                host.logs().finish(&key);
                let terminated = json!({"terminated": {"exitCode": 128, "reason": "StartError",
                    "message": error.to_string(), "startedAt": started_at, "finishedAt": now_string()}});
                self.finish(statuses, status_key, terminated).await;
                return Ok(Exit::Code(128));
            }
        };
        let out = pump(child.stdout.take(), host.logs().clone(), key.clone());
        let err = pump(child.stderr.take(), host.logs().clone(), key.clone());
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
                    if host.stopping(&ns, &pod_name).await {
                        terminate(&mut child, grace).await;
                        break Exit::Gone;
                    }
                }
            }
        };
        let _ = out.await;
        let _ = err.await;
        host.logs().finish(&key);
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
        if !matches!(exit, Exit::Gone) {
            self.finish(statuses, status_key, json!({ "terminated": terminated }))
                .await;
        }
        Ok(exit)
    }

    /// Replaces the last (this container's) status with its terminated state and writes the list.
    async fn finish(&self, statuses: &mut [Value], status_key: &str, state: Value) {
        let ns = self.pod["metadata"]["namespace"].as_str().unwrap_or_default();
        let name = self.pod["metadata"]["name"].as_str().unwrap_or_default();
        if let Some(last) = statuses.last_mut() {
            last["state"] = state;
            last["ready"] = json!(false);
        }
        self.host.patch_status(ns, name, json!({ status_key: statuses })).await;
    }
}

fn pump<R: AsyncRead + Unpin + Send + 'static>(
    reader: Option<R>,
    logs: Logs,
    key: LogKey,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(reader) = reader else { return };
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            logs.append(&key, &format!("{line}\n"));
        }
    })
}

/// The container's environment: `envFrom` (with prefix), then `env` (`value`, `secretKeyRef`, `configMapKeyRef`,
/// `fieldRef`), resolved through `host`.
async fn resolve_env<H: PodHost>(host: &H, ns: &str, pod: &Value, container: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        for (plural, field) in [("secrets", "secretRef"), ("configmaps", "configMapRef")] {
            let Some(name) = source[field]["name"].as_str() else {
                continue;
            };
            let prefix = source["prefix"].as_str().unwrap_or_default();
            for (key, value) in host.data(ns, plural, name).await.unwrap_or_default() {
                env.insert(format!("{prefix}{key}"), value);
            }
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let Some(name) = var["name"].as_str() else { continue };
        let from = |plural: &'static str, field: &str| {
            var["valueFrom"][field].as_object().map(|r| {
                (
                    plural,
                    r["name"].as_str().unwrap_or_default(),
                    r["key"].as_str().unwrap_or_default(),
                )
            })
        };
        let value = if let Some(v) = var["value"].as_str() {
            Some(v.to_owned())
        } else if let Some((plural, object, key)) =
            from("secrets", "secretKeyRef").or_else(|| from("configmaps", "configMapKeyRef"))
        {
            host.data(ns, plural, object).await.and_then(|mut d| d.remove(key))
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

pub(crate) fn image_action(image: &str, options: &ExecutorOptions) -> Option<ImageAction> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{ExecutorOptions, ImageAction};

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
