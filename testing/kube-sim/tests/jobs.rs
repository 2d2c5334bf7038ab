//! The local Job executor: Jobs run as local processes, with git-sync emulated by `git clone`, and report status
//! and logs through the API like a real cluster.

use std::{path::Path, process::Command, time::Duration};

use futures::TryStreamExt;
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Pod, Secret},
};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{ListParams, LogParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use kube_sim::{ApiServer, ServerOptions, executor::ExecutorOptions};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

async fn start() -> (ApiServer, Client) {
    let server = ApiServer::start(ServerOptions {
        executor: Some(ExecutorOptions::default()),
        ..Default::default()
    })
    .await
    .expect("server starts");
    let client = Client::try_from(Config::new(server.url().parse().expect("url"))).expect("client");
    (server, client)
}

/// A local git repository with one commit on `main`.
fn test_repo(dir: &Path) {
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args([
                "-c",
                "user.name=test",
                "-c",
                "user.email=test@example.com",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "--quiet"]);
    std::fs::create_dir_all(dir.join("packer")).expect("mkdir");
    std::fs::write(dir.join("packer/hello.txt"), "hello from the repo\n").expect("write");
    git(&["add", "."]);
    git(&["commit", "--quiet", "-m", "init"]);
}

fn job(name: &str, repo_url: &str, script: &str, extra: serde_json::Value) -> Job {
    let mut spec = json!({
        "backoffLimit": 0,
        "template": {"spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "git", "emptyDir": {}}],
            "initContainers": [{
                "name": "git-sync",
                "image": "registry.k8s.io/git-sync/git-sync:v4.2.3",
                "args": [format!("--repo={repo_url}"), "--ref=main", "--depth=1", "--one-time", "--root=/git", "--link=repo"],
                "volumeMounts": [{"name": "git", "mountPath": "/git"}]
            }],
            "containers": [{
                "name": "main",
                "image": "busybox:1.36",
                "command": ["sh", "-c", script],
                "workingDir": "/git/repo/packer",
                "env": [{"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}],
                "volumeMounts": [{"name": "git", "mountPath": "/git"}]
            }]
        }}
    });
    json_patch::merge(&mut spec, &extra);
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("job")
}

async fn wait_for_job(client: &Client, name: &str, condition: &str) -> Job {
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = Box::pin(watcher::watcher(jobs, config).applied_objects());
    let wait = async {
        while let Some(job) = stream.try_next().await.expect("watch") {
            let done = job
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == condition && c.status == "True"));
            if done {
                return job;
            }
        }
        panic!("watch ended");
    };
    match tokio::time::timeout(WAIT, wait).await {
        Ok(job) => job,
        Err(_) => panic!(
            "job {name} not {condition} in time; pods and logs:\n{}",
            describe_pods(client, name).await
        ),
    }
}

/// Pod statuses and every container's log of a Job, for failure messages.
async fn describe_pods(client: &Client, job: &str) -> String {
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let mut out = String::new();
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await;
    for pod in list.map(|l| l.items).unwrap_or_default() {
        let status = pod
            .status
            .as_ref()
            .map(|s| (&s.phase, &s.init_container_statuses, &s.container_statuses));
        out.push_str(&format!("{}: {status:?}\n", pod.name_any()));
        for container in ["git-sync", "main"] {
            let params = LogParams {
                container: Some(container.into()),
                ..LogParams::default()
            };
            let logs = pods.logs(&pod.name_any(), &params).await.unwrap_or_default();
            out.push_str(&format!("--- {container}:\n{logs}\n"));
        }
    }
    out
}

async fn secret(client: &Client) {
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "creds"}, "stringData": {}, "data": {"token": "c2VudGluZWw="}}),
    )
    .expect("secret");
    secrets.create(&PostParams::default(), &s).await.expect("secret");
}

#[tokio::test]
async fn job_clones_a_local_repo_runs_its_command_and_completes_with_logs() {
    let (_server, client) = start().await;
    secret(&client).await;
    let repo = tempfile::tempdir().expect("tmp");
    test_repo(repo.path());
    let url = format!("file://{}", repo.path().display());
    let script = "cat hello.txt; echo \"token=$FROM_SECRET\"; echo artifact-id > /dev/termination-log";
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    jobs.create(&PostParams::default(), &job("ok", &url, script, json!({})))
        .await
        .expect("create");

    let done = wait_for_job(&client, "ok", "Complete").await;
    let status = done.status.expect("status");
    assert_eq!(status.succeeded, Some(1));
    assert!(status.start_time.is_some() && status.completion_time.is_some());

    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let list = pods
        .list(&ListParams::default().labels("job-name=ok"))
        .await
        .expect("pods");
    assert_eq!(list.items.len(), 1);
    let pod = &list.items[0];
    assert_eq!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded"));
    let main = &pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .expect("statuses")[0];
    let terminated = main
        .state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .expect("terminated");
    assert_eq!(terminated.exit_code, 0);
    assert_eq!(terminated.message.as_deref(), Some("artifact-id\n"));
    let logs = pods
        .logs(
            &pod.name_any(),
            &LogParams {
                container: Some("main".into()),
                ..LogParams::default()
            },
        )
        .await
        .expect("logs");
    assert!(logs.contains("hello from the repo"), "{logs}");
    assert!(logs.contains("token=sentinel"), "{logs}");
    let tail = pods
        .logs(
            &pod.name_any(),
            &LogParams {
                container: Some("main".into()),
                tail_lines: Some(1),
                ..LogParams::default()
            },
        )
        .await
        .expect("tail");
    assert_eq!(tail.trim(), "token=sentinel");
}

#[tokio::test]
async fn failing_command_fails_the_job_with_the_exit_code_after_the_backoff_limit() {
    let (_server, client) = start().await;
    secret(&client).await;
    let repo = tempfile::tempdir().expect("tmp");
    test_repo(repo.path());
    let url = format!("file://{}", repo.path().display());
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    jobs.create(
        &PostParams::default(),
        &job("bad", &url, "echo boom >&2; exit 3", json!({"backoffLimit": 1})),
    )
    .await
    .expect("create");
    let failed = wait_for_job(&client, "bad", "Failed").await;
    let status = failed.status.expect("status");
    assert_eq!(status.failed, Some(2), "backoffLimit 1 means two attempts");
    let condition = status
        .conditions
        .expect("conditions")
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .expect("Failed");
    assert_eq!(condition.reason.as_deref(), Some("BackoffLimitExceeded"));
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let list = pods
        .list(&ListParams::default().labels("job-name=bad"))
        .await
        .expect("pods");
    assert_eq!(list.items.len(), 2);
    for pod in &list.items {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .expect("statuses");
        let terminated = statuses[0]
            .state
            .as_ref()
            .and_then(|s| s.terminated.clone())
            .expect("terminated");
        assert_eq!(terminated.exit_code, 3);
        assert_eq!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Failed"));
    }
}

#[tokio::test]
async fn a_missing_branch_fails_in_the_init_container() {
    let (_server, client) = start().await;
    secret(&client).await;
    let repo = tempfile::tempdir().expect("tmp");
    test_repo(repo.path());
    let url = format!("file://{}", repo.path().display());
    let mut j = job("nobranch", &url, "true", json!({}));
    let spec = j.spec.as_mut().and_then(|s| s.template.spec.as_mut()).expect("spec");
    spec.init_containers.as_mut().expect("init")[0]
        .args
        .as_mut()
        .expect("args")[1] = "--ref=does-not-exist".into();
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    jobs.create(&PostParams::default(), &j).await.expect("create");
    wait_for_job(&client, "nobranch", "Failed").await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod = pods
        .list(&ListParams::default().labels("job-name=nobranch"))
        .await
        .expect("pods")
        .items
        .remove(0);
    let init = pod
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.clone())
        .expect("init statuses");
    let terminated = init[0]
        .state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .expect("terminated");
    assert_ne!(terminated.exit_code, 0);
    assert!(
        pod.status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .is_none_or(|c| c.is_empty())
    );
}

#[tokio::test]
async fn active_deadline_kills_a_long_job() {
    let (_server, client) = start().await;
    secret(&client).await;
    let repo = tempfile::tempdir().expect("tmp");
    test_repo(repo.path());
    let url = format!("file://{}", repo.path().display());
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    jobs.create(
        &PostParams::default(),
        &job("slow", &url, "sleep 30", json!({"activeDeadlineSeconds": 1})),
    )
    .await
    .expect("create");
    let failed = wait_for_job(&client, "slow", "Failed").await;
    let reason = failed.status.and_then(|s| s.conditions).expect("conditions")[0]
        .reason
        .clone();
    assert_eq!(reason.as_deref(), Some("DeadlineExceeded"));
}

#[tokio::test]
async fn ttl_after_finished_deletes_the_job_and_its_pods() {
    let (_server, client) = start().await;
    secret(&client).await;
    let repo = tempfile::tempdir().expect("tmp");
    test_repo(repo.path());
    let url = format!("file://{}", repo.path().display());
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    jobs.create(
        &PostParams::default(),
        &job("short-lived", &url, "true", json!({"ttlSecondsAfterFinished": 1})),
    )
    .await
    .expect("create");
    wait_for_job(&client, "short-lived", "Complete").await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let gone = async {
        loop {
            let job_gone = jobs.get_opt("short-lived").await.expect("get").is_none();
            let pods_gone = pods
                .list(&ListParams::default().labels("job-name=short-lived"))
                .await
                .expect("pods")
                .items
                .is_empty();
            if job_gone && pods_gone {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(WAIT, gone)
        .await
        .expect("job and pods deleted after the TTL");
}

/// A git smart-HTTP server for one bare repository that demands Basic credentials: `git http-backend` behind a
/// small CGI adapter. Returns its base URL.
async fn private_git_server(project_root: std::path::PathBuf, user: &'static str, password: &'static str) -> String {
    use axum::{
        body::Bytes,
        http::{HeaderMap, Method, StatusCode, Uri, header},
        response::{IntoResponse, Response},
    };
    use base64::Engine as _;

    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let root = project_root.clone();
        let expected = expected.clone();
        async move {
            let auth = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if auth != expected {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Basic realm=\"git\"")],
                    "",
                )
                    .into_response();
            }
            let mut cgi = tokio::process::Command::new("git");
            cgi.arg("http-backend")
                .env("GIT_PROJECT_ROOT", &root)
                .env("GIT_HTTP_EXPORT_ALL", "1")
                .env("REMOTE_USER", user)
                .env("PATH_INFO", uri.path())
                .env("QUERY_STRING", uri.query().unwrap_or_default())
                .env("REQUEST_METHOD", method.as_str())
                .env(
                    "CONTENT_TYPE",
                    headers
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default(),
                )
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped());
            let mut child = cgi.spawn().expect("git http-backend");
            let mut stdin = child.stdin.take().expect("stdin");
            tokio::io::AsyncWriteExt::write_all(&mut stdin, &body)
                .await
                .expect("cgi stdin");
            drop(stdin);
            let output = child.wait_with_output().await.expect("cgi output");
            let split = output
                .stdout
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| (p, 4))
                .or_else(|| output.stdout.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)));
            let (head_len, sep) = split.expect("CGI headers");
            let head = String::from_utf8_lossy(&output.stdout[..head_len]).into_owned();
            let mut response = Response::builder();
            let mut status = StatusCode::OK;
            for line in head.lines() {
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("status") {
                        status = v
                            .trim()
                            .split(' ')
                            .next()
                            .and_then(|c| c.parse().ok())
                            .map_or(StatusCode::OK, |c: u16| {
                                StatusCode::from_u16(c).unwrap_or(StatusCode::OK)
                            });
                    } else {
                        response = response.header(k.trim(), v.trim());
                    }
                }
            }
            response
                .status(status)
                .body(axum::body::Body::from(output.stdout[head_len + sep..].to_vec()))
                .expect("response")
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, axum::Router::new().fallback(handler)).await;
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn private_repository_is_cloned_with_credentials_from_a_secret_and_refused_without() {
    let (_server, client) = start().await;
    secret(&client).await;
    let work = tempfile::tempdir().expect("tmp");
    let source = work.path().join("source");
    std::fs::create_dir_all(&source).expect("mkdir");
    test_repo(&source);
    let bare = work.path().join("srv/packer.git");
    let status = Command::new("git")
        .args(["clone", "--quiet", "--bare"])
        .arg(&source)
        .arg(&bare)
        .status()
        .expect("git clone --bare");
    assert!(status.success());
    let base = private_git_server(work.path().join("srv"), "bot", "s3cr3t-sentinel").await;
    let url = format!("{base}/packer.git");

    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let creds: Secret = serde_json::from_value(json!({"metadata": {"name": "git-credentials"},
        "data": {"username": "Ym90", "token": "czNjcjN0LXNlbnRpbmVs"}}))
    .expect("secret");
    secrets.create(&PostParams::default(), &creds).await.expect("secret");
    let with_credentials = json!({"template": {"spec": {"initContainers": [{
        "name": "git-sync",
        "image": "registry.k8s.io/git-sync/git-sync:v4.2.3",
        "args": [format!("--repo={url}"), "--ref=main", "--depth=1", "--one-time", "--root=/git", "--link=repo"],
        "env": [
            {"name": "GITSYNC_USERNAME", "valueFrom": {"secretKeyRef": {"name": "git-credentials", "key": "username"}}},
            {"name": "GITSYNC_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "git-credentials", "key": "token"}}}
        ],
        "volumeMounts": [{"name": "git", "mountPath": "/git"}]
    }]}}});
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    jobs.create(
        &PostParams::default(),
        &job("private", &url, "cat hello.txt", with_credentials),
    )
    .await
    .expect("create");
    wait_for_job(&client, "private", "Complete").await;
    jobs.create(
        &PostParams::default(),
        &job("anonymous", &url, "cat hello.txt", json!({})),
    )
    .await
    .expect("create");
    wait_for_job(&client, "anonymous", "Failed").await;

    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod = pods
        .list(&ListParams::default().labels("job-name=private"))
        .await
        .expect("pods")
        .items
        .remove(0);
    let main = pods
        .logs(
            &pod.name_any(),
            &LogParams {
                container: Some("main".into()),
                ..LogParams::default()
            },
        )
        .await
        .expect("logs");
    assert!(main.contains("hello from the repo"), "{main}");
    let sync = pods
        .logs(
            &pod.name_any(),
            &LogParams {
                container: Some("git-sync".into()),
                ..LogParams::default()
            },
        )
        .await
        .expect("logs");
    assert!(
        !sync.contains("s3cr3t-sentinel"),
        "the password leaked into logs: {sync}"
    );
}

/// Starts a one-container Job running `script` with `grace` seconds of termination grace, waits until the script
/// wrote its PID to `dir/pid`, then deletes its pod, as a node drain or a Job deletion does.
async fn run_then_delete_pod(client: &Client, name: &str, dir: &Path, script: &str, grace: u64) -> i32 {
    secret(client).await;
    let repo = tempfile::tempdir().expect("tmp");
    test_repo(repo.path());
    let url = format!("file://{}", repo.path().display());
    let script = format!("echo $$ > '{}/pid'; {script}", dir.display());
    Api::<Job>::default_namespaced(client.clone())
        .create(
            &PostParams::default(),
            &job(
                name,
                &url,
                &script,
                json!({"template": {"spec": {"terminationGracePeriodSeconds": grace}}}),
            ),
        )
        .await
        .expect("create");
    let pid_file = dir.join("pid");
    let deadline = tokio::time::Instant::now() + WAIT;
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            break pid;
        }
        assert!(tokio::time::Instant::now() < deadline, "the container never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    for pod in pods
        .list(&ListParams::default().labels(&format!("job-name={name}")))
        .await
        .expect("pods")
    {
        pods.delete(&pod.name_any(), &Default::default())
            .await
            .expect("delete pod");
    }
    pid
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[tokio::test]
async fn a_deleted_pod_sends_sigterm_and_the_container_may_clean_up() {
    let (_server, client) = start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let mark = dir.path().join("cleaned-up");
    let script = format!(
        "trap 'echo cleaned > \"{}\"; exit 0' TERM; while :; do sleep 0.1; done",
        mark.display()
    );
    let pid = run_then_delete_pod(&client, "graceful", dir.path(), &script, 30).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !mark.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the container never saw SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!alive(pid), "the container exited after cleaning up");
}

#[tokio::test]
async fn a_container_that_ignores_sigterm_is_killed_after_its_grace_period() {
    let (_server, client) = start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let pid = run_then_delete_pod(
        &client,
        "stubborn",
        dir.path(),
        "trap '' TERM; while :; do sleep 0.1; done",
        2,
    )
    .await;
    let deleted = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(alive(pid), "killed before its grace period ended");
    while alive(pid) {
        assert!(
            deleted.elapsed() < Duration::from_secs(10),
            "still running long after its grace period"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        deleted.elapsed() >= Duration::from_secs(2),
        "SIGKILL came before the grace period"
    );
}
