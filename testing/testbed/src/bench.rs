//! `cargo xtask bench` (`testbed bench`): cost and scale of both controllers (release binaries, separate processes) against the
//! in-memory API server and the AWS emulator. Counts come from the emulator's call log and the API server's request
//! record (the controllers run as their own user, so the bench's own requests are excluded); the controllers'
//! `/metrics` are reported beside them as a cross-check. Writes `target/bench/report.json` and `report.md`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use api_types::{AMIRefresher, PackerBuilder};
use aws_sim::{Account, AwsEmulator, SeedImage};
use futures::StreamExt;
use k8s_openapi::{
    api::{batch::v1::Job, core::v1::Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config, CustomResourceExt,
    api::{ListParams, PostParams},
};
use kube_sim::{ApiServer, RequestRecord, ServerOptions};
use serde_json::{Value, json};

const REGION: &str = "us-west-2";
const ACCOUNT: &str = "123456789012";
const EKS_OWNER: &str = "602401143452";
const USER: &str = "bench-controller";
const FILTER_SETS: usize = 5;
/// Clusters the PackerBuilders of the steady-state scenarios build for.
const CLUSTERS: usize = 10;
const REPO: &str = "https://example.com/bench/packer.git";

/// One measured scenario.
#[derive(Debug, Default, serde::Serialize)]
struct Scenario {
    name: String,
    objects: usize,
    settings: BTreeMap<String, String>,
    seconds_to_ready: Option<f64>,
    window_seconds: f64,
    aws_calls_in_window: BTreeMap<String, usize>,
    api_requests_in_window: BTreeMap<String, usize>,
    controller_peak_rss_mib: f64,
    controller_cpu_seconds: f64,
    extra: BTreeMap<String, Value>,
    controller_metrics: BTreeMap<String, f64>,
}

struct World {
    aws: AwsEmulator,
    server: ApiServer,
    client: Client,
    kubeconfig: PathBuf,
    ec2: aws_sdk_ec2::Client,
    eks: aws_sdk_eks::Client,
}

impl World {
    async fn start(work: &Path) -> Result<Self> {
        let aws = AwsEmulator::start().await?;
        aws.set_progress(false, std::time::Duration::from_secs(1)).await?;
        let sdk = aws.sdk_config(REGION).await;
        let account = Account(ACCOUNT.into());
        let server = ApiServer::start(ServerOptions::default()).await?;
        let kubeconfig = work.join("kubeconfig");
        server.write_kubeconfig_as(&kubeconfig, USER)?;
        let client = Client::try_from(Config::new(server.url().parse()?))?;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for crd in [PackerBuilder::crd(), AMIRefresher::crd()] {
            crds.create(&PostParams::default(), &crd).await?;
        }
        let secret: Secret = serde_json::from_value(
            json!({"metadata": {"name": "aws-creds"}, "stringData": {"AWS_ACCESS_KEY_ID": "x"}}),
        )?;
        Api::<Secret>::default_namespaced(client.clone())
            .create(&PostParams::default(), &secret)
            .await?;
        Ok(Self {
            ec2: aws.ec2(&sdk, &account),
            eks: aws.eks(&sdk, &account),
            aws,
            server,
            client,
            kubeconfig,
        })
    }

    async fn calls(&self) -> Result<Vec<aws_sim::Call>> {
        Ok(self.aws.calls(&Account(ACCOUNT.into())).await?)
    }

    fn requests(&self) -> Vec<RequestRecord> {
        self.server.requests().into_iter().filter(|r| r.user == USER).collect()
    }
}

fn stamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn base_image(set: usize, version: &str) -> SeedImage {
    SeedImage {
        name: format!("bench-base-{set}-{version}"),
        owner_id: EKS_OWNER.into(),
        creation_date: format!("2026-{version}-01T00:00:00Z"),
        public: true,
        ..SeedImage::default()
    }
}

fn managed_image(name: &str, cluster: &str, base: &str, created_by: &str) -> SeedImage {
    let created = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let tags: BTreeMap<String, String> = [
        ("brought-to-you-by", "opsy-the-ami-operator"),
        ("cluster-name", cluster),
        ("created-by", created_by),
        ("created-by-namespace", "default"),
        ("packer-repo", REPO),
        ("packer-repo-branch", "main"),
        ("status", "active"),
        ("base-ami", base),
        ("build-id", "00000000-0000-0000-0000-000000000000"),
        ("job-id", "bench"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain([("create-timestamp".to_owned(), stamp(created))])
    .collect();
    SeedImage {
        name: name.into(),
        owner_id: ACCOUNT.into(),
        creation_date: stamp(created),
        tags,
        public: false,
        ..SeedImage::default()
    }
}

fn builder(name: &str, set: usize, cluster: &str, timer: &str) -> Result<PackerBuilder> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "ami.refresh.ops/v1alpha1", "kind": "PackerBuilder",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "amiFilters": [{"name": "name", "values": [format!("bench-base-{set}-*")]}, {"name": "owner-id", "values": [EKS_OWNER]}],
            "clusterName": cluster, "region": REGION,
            "timeOuts": {"expiresIn": "30d", "controllerTimer": timer},
            "builder": {"repoURL": REPO, "branch": "main", "image": "hashicorp/packer:1.11", "dir": "packer",
                        "secret": "aws-creds", "commands": [{"subCommand": "build"}]}
        }
    }))?)
}

/// The cluster of steady-state PackerBuilder `i`.
fn cluster_of(i: usize) -> String {
    format!("bench-{}", i % CLUSTERS)
}

/// Seeds `n` PackerBuilders over [`FILTER_SETS`] base filter sets and [`CLUSTERS`] clusters, each with an eligible
/// managed AMI built from the current base; returns the base AMI IDs.
async fn seed_builders(w: &World, n: usize, timer: &str) -> Result<Vec<String>> {
    let account = Account(ACCOUNT.into());
    let bases = w
        .aws
        .seed_images(
            &account,
            REGION,
            &(0..FILTER_SETS).map(|s| base_image(s, "10")).collect::<Vec<_>>(),
        )
        .await?;
    let managed: Vec<SeedImage> = (0..n)
        .map(|i| {
            managed_image(
                &format!("bench-managed-{i}"),
                &cluster_of(i),
                &bases[i % FILTER_SETS],
                &format!("pb-{i}"),
            )
        })
        .collect();
    for chunk in managed.chunks(250) {
        w.aws.seed_images(&account, REGION, chunk).await?;
    }
    let api: Api<PackerBuilder> = Api::default_namespaced(w.client.clone());
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let pb = builder(&format!("pb-{i}"), i % FILTER_SETS, &cluster_of(i), timer)?;
                api.create(&PostParams::default(), &pb).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    Ok(bases)
}

struct Controller {
    child: tokio::process::Child,
    metrics_port: u16,
    log: PathBuf,
}

impl Controller {
    fn start(bin: &Path, w: &World, work: &Path, env: &[(&str, &str)]) -> Result<Self> {
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let name = bin.file_name().and_then(|n| n.to_str()).unwrap_or("controller");
        let log = work.join(format!("{name}-{metrics_port}.log"));
        let file = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(bin)
            .env("KUBECONFIG", &w.kubeconfig)
            .envs(w.aws.child_env(REGION))
            .env("METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("LEADER_ELECT", "false")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Self {
            child,
            metrics_port,
            log,
        })
    }

    /// (peak RSS in MiB, CPU seconds) from /proc.
    fn usage(&self) -> (f64, f64) {
        let Some(pid) = self.child.id() else { return (0.0, 0.0) };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let hwm_kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the command name (which ends with ')'): utime and stime are fields 14 and 15 (1-based).
        let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
            .sum();
        // Linux reports CPU time in USER_HZ ticks, 100 per second on every mainstream architecture.
        (hwm_kib / 1024.0, ticks / 100.0)
    }

    async fn metrics(&self, prefix: &str) -> BTreeMap<String, f64> {
        let text = match reqwest::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let mut out = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((key, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let name = key.split('{').next().unwrap_or(key);
            if [format!("{prefix}_reconcile_total"), format!("{prefix}_aws_calls_total")].contains(&name.to_owned()) {
                *out.entry(name.to_owned()).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
            }
        }
        out
    }
}

/// CPU seconds (user + system) of this process, which hosts the in-memory API server.
fn self_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum::<f64>()
        / 100.0
}

fn by_action(calls: &[aws_sim::Call]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for c in calls {
        *out.entry(c.action.clone()).or_insert(0) += 1;
    }
    out
}

fn by_verb(requests: &[RequestRecord]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in requests {
        let sub = if r.subresource.is_empty() {
            String::new()
        } else {
            format!("/{}", r.subresource)
        };
        *out.entry(format!("{} {}{sub}", r.verb, r.resource)).or_insert(0) += 1;
    }
    out
}

async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut done: F) -> Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let started = Instant::now();
    loop {
        if done().await? {
            return Ok(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > timeout {
            bail!("{what}: not reached within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn is_ready(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> bool {
    api_types::conditions::is_condition_true(conditions, "Ready")
}

async fn all_builders_ready(client: &Client, n: usize) -> Result<bool> {
    let list = Api::<PackerBuilder>::default_namespaced(client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .iter()
        .filter(|pb| pb.status.as_ref().is_some_and(|s| is_ready(&s.conditions)))
        .count()
        == n)
}

/// What scenarios 1 and 4 report besides the common fields: reconciles and status writes per period, shared
/// lookups, and the Go operator's count for the same window.
fn builder_extras(
    s: &mut Scenario,
    n: usize,
    window_periods: u32,
    window: Duration,
    calls: &[aws_sim::Call],
    calls0: usize,
    requests: &[kube_sim::RequestRecord],
) {
    s.settings.insert("filter sets".into(), FILTER_SETS.to_string());
    let mutating = ["CreateImage", "CreateTags", "RunInstances", "DeregisterImage"];
    let gets = requests
        .iter()
        .filter(|r| r.verb == "get" && r.resource == "packerbuilders")
        .count();
    let status_writes = requests
        .iter()
        .filter(|r| r.resource == "packerbuilders" && r.subresource == "status")
        .count();
    let periods = f64::from(window_periods);
    s.extra.insert(
        "reconciles_per_object_per_period".into(),
        json!(gets as f64 / (n as f64 * periods)),
    );
    s.extra.insert("status_writes_in_window".into(), json!(status_writes));
    s.extra.insert(
        "mutating_aws_calls_total".into(),
        json!(calls.iter().filter(|c| mutating.contains(&c.action.as_str())).count()),
    );
    let base_lookups = calls[calls0..]
        .iter()
        .filter(|c| c.action == "DescribeImages" && c.params.values().any(|v| v.starts_with("bench-base-")))
        .count();
    s.extra
        .insert("base_describe_images_in_window".into(), json!(base_lookups));
    s.extra.insert(
        "base_describe_images_per_filter_set_per_ttl".into(),
        json!(base_lookups as f64 / (FILTER_SETS as f64 * (window.as_secs_f64() / 60.0).max(1.0))),
    );
    let managed_lookups = calls[calls0..]
        .iter()
        .filter(|c| {
            c.action == "DescribeImages"
                && c.params
                    .values()
                    .any(|v| v.starts_with("bench-") && !v.starts_with("bench-base-"))
        })
        .count();
    s.extra
        .insert("managed_describe_images_in_window".into(), json!(managed_lookups));
    s.settings.insert("clusters".into(), CLUSTERS.to_string());
    // The Go operator's pattern, from its code: every reconcile (each controllerTimer) makes two unfiltered,
    // unpaginated DescribeImages calls.
    let go_calls = 2.0 * n as f64 * periods;
    let ours = calls.len().saturating_sub(calls0);
    s.extra
        .insert("go_operator_aws_calls_in_window".into(), json!(go_calls));
    s.extra.insert("our_aws_calls_in_window".into(), json!(ours));
}

/// Scenario 1 (and 4 with a short timer): N PackerBuilders, nothing to build.
async fn steady_builders(
    bin: &Path,
    work: &Path,
    n: usize,
    timer_secs: u64,
    window_periods: u32,
    name: &str,
) -> Result<Scenario> {
    let w = World::start(work).await?;
    let timer = format!("{timer_secs}s");
    // controllerTimer has a 30 s floor (refused at apply time below that); the controller's RESYNC_INTERVAL sets
    // the shorter re-check period the bench measures.
    seed_builders(&w, n, "1h").await?;
    let cpu_before = self_cpu_seconds();
    let mut controller = Controller::start(bin, &w, work, &[("RESYNC_INTERVAL", timer.as_str())])?;
    let ready = wait_until(Duration::from_secs(900), "all PackerBuilders Ready", || {
        all_builders_ready(&w.client, n)
    })
    .await?;
    // The in-memory API server runs in this process: its CPU time (with the bench's own polling) until all were
    // Ready shows whether the controller or the test API server set the pace.
    let bench_cpu_until_ready = self_cpu_seconds() - cpu_before;
    // Let the start-up burst settle, then measure whole timer periods.
    tokio::time::sleep(Duration::from_secs(timer_secs)).await;
    let (calls0, requests0) = (w.calls().await?.len(), w.requests().len());
    let window = Duration::from_secs(timer_secs * u64::from(window_periods));
    tokio::time::sleep(window).await;
    let calls = w.calls().await?;
    let requests = w.requests();
    let (rss, cpu) = controller.usage();
    let mut s = Scenario {
        name: name.into(),
        objects: n,
        seconds_to_ready: Some(ready),
        window_seconds: window.as_secs_f64(),
        aws_calls_in_window: by_action(&calls[calls0..]),
        api_requests_in_window: by_verb(&requests[requests0..]),
        controller_peak_rss_mib: rss,
        controller_cpu_seconds: cpu,
        controller_metrics: controller.metrics("packer_build_controller").await,
        ..Scenario::default()
    };
    s.settings.insert("resyncInterval".into(), timer);
    builder_extras(
        &mut s,
        n,
        window_periods,
        window,
        &calls,
        calls0,
        &requests[requests0..],
    );
    s.extra.insert(
        "bench_process_cpu_seconds_until_ready".into(),
        json!(bench_cpu_until_ready),
    );
    let _ = controller.child.kill().await;
    eprintln!("   log: {}", controller.log.display());
    Ok(s)
}

/// M clusters of 5 node groups each, already on the newest AMI of their cluster, and one AMIRefresher per cluster.
async fn seed_refresher_clusters(w: &World, m: usize) -> Result<()> {
    let account = Account(ACCOUNT.into());
    let images: Vec<SeedImage> = (0..m)
        .map(|j| {
            managed_image(
                &format!("bench-amr-{j}"),
                &format!("c-{j}"),
                "ami-00000000000000000",
                "pb",
            )
        })
        .collect();
    let amis = w.aws.seed_images(&account, REGION, &images).await?;
    let seed_started = Instant::now();
    futures::stream::iter(0..m)
        .map(|j| {
            let (ec2, eks, ami) = (w.ec2.clone(), w.eks.clone(), amis[j].clone());
            async move {
                let cluster = format!("c-{j}");
                aws_sim::eks::cluster(&eks, &cluster).await?;
                for g in 0..5 {
                    let template = aws_sim::eks::TemplateSeed {
                        name: &format!("{cluster}-ng-{g}"),
                        image: &ami,
                        ..Default::default()
                    };
                    let id = aws_sim::eks::launch_template(&ec2, &template).await?;
                    aws_sim::eks::nodegroup(&eks, &cluster, &format!("ng-{g}"), &id, None, 1).await?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    eprintln!(
        "   seeded {m} clusters x 5 node groups in {:.1}s",
        seed_started.elapsed().as_secs_f64()
    );
    let api: Api<AMIRefresher> = Api::default_namespaced(w.client.clone());
    for j in 0..m {
        let amr: AMIRefresher = serde_json::from_value(json!({
            "apiVersion": "ami.refresh.ops/v1alpha1", "kind": "AMIRefresher",
            "metadata": {"name": format!("amr-{j}"), "namespace": "default"},
            "spec": {"region": REGION, "clusterName": format!("c-{j}"),
                     "amiFilters": [{"name": "name", "values": ["bench-amr-*"]}], "expiresIn": "30d"}
        }))?;
        api.create(&PostParams::default(), &amr).await?;
    }
    Ok(())
}

/// Scenario 2: M AMIRefreshers, each on a cluster whose 5 node groups already run the target.
async fn steady_refreshers(bin: &Path, work: &Path, m: usize, resync_secs: u64) -> Result<Scenario> {
    let w = World::start(work).await?;
    seed_refresher_clusters(&w, m).await?;
    let resync = format!("{resync_secs}s");
    let mut controller = Controller::start(
        bin,
        &w,
        work,
        &[("RESYNC_INTERVAL", resync.as_str()), ("WATCH_PACKER_BUILDERS", "false")],
    )?;
    let client = w.client.clone();
    let ready = wait_until(Duration::from_secs(600), "all AMIRefreshers Ready", || {
        let api: Api<AMIRefresher> = Api::default_namespaced(client.clone());
        async move {
            let list = api.list(&ListParams::default()).await?;
            Ok(list
                .items
                .iter()
                .filter(|a| a.status.as_ref().is_some_and(|s| is_ready(&s.conditions)))
                .count()
                == m)
        }
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(resync_secs)).await;
    let (calls0, requests0) = (w.calls().await?.len(), w.requests().len());
    let window = Duration::from_secs(resync_secs);
    tokio::time::sleep(window).await;
    let calls = w.calls().await?;
    let requests = w.requests();
    let (rss, cpu) = controller.usage();
    let mut s = Scenario {
        name: format!("steady state: {m} AMIRefreshers x 5 node groups on target"),
        objects: m,
        seconds_to_ready: Some(ready),
        window_seconds: window.as_secs_f64(),
        aws_calls_in_window: by_action(&calls[calls0..]),
        api_requests_in_window: by_verb(&requests[requests0..]),
        controller_peak_rss_mib: rss,
        controller_cpu_seconds: cpu,
        controller_metrics: controller.metrics("ami_refresh_controller").await,
        ..Scenario::default()
    };
    s.settings.insert("resyncInterval".into(), resync);
    refresher_extras(&mut s, m, &calls, calls0, &requests[requests0..]);
    let _ = controller.child.kill().await;
    Ok(s)
}

/// What scenario 2 reports besides the common fields: calls per action in the window, the Go operator's count,
/// mutations (none expected) and status writes.
fn refresher_extras(
    s: &mut Scenario,
    m: usize,
    calls: &[aws_sim::Call],
    calls0: usize,
    requests: &[kube_sim::RequestRecord],
) {
    s.settings.insert("node groups".into(), (m * 5).to_string());
    let window_calls = &calls[calls0..];
    for action in [
        "DescribeLaunchTemplateVersions",
        "DescribeNodegroup",
        "ListNodegroups",
        "DescribeImages",
    ] {
        s.extra.insert(
            format!("{action}_in_window"),
            json!(window_calls.iter().filter(|c| c.action == action).count()),
        );
    }
    // The Go operator's pattern, from its code: one DescribeImages without filters per AMIRefresher per resync
    // (a whole-region listing each time), besides its node-group calls, which are not counted here.
    let go_calls = m as f64;
    s.extra
        .insert("go_operator_describe_images_in_window".into(), json!(go_calls));
    let mutating = [
        "UpdateNodegroupVersion",
        "CreateLaunchTemplateVersion",
        "StartInstanceRefresh",
        "UpdateNodegroupConfig",
    ];
    s.extra.insert(
        "mutating_aws_calls_total".into(),
        json!(calls.iter().filter(|c| mutating.contains(&c.action.as_str())).count()),
    );
    s.extra.insert(
        "status_writes_in_window".into(),
        json!(requests.iter().filter(|r| r.subresource == "status").count()),
    );
}

/// Scenario 3: one new base AMI shared by N PackerBuilders.
async fn propagation(bin: &Path, work: &Path, n: usize) -> Result<Scenario> {
    let w = World::start(work).await?;
    let account = Account(ACCOUNT.into());
    let base = w
        .aws
        .seed_images(&account, REGION, &[base_image(0, "10")])
        .await?
        .remove(0);
    let managed: Vec<SeedImage> = (0..n)
        .map(|i| managed_image(&format!("bench-managed-{i}"), "bench", &base, &format!("pb-{i}")))
        .collect();
    w.aws.seed_images(&account, REGION, &managed).await?;
    let api: Api<PackerBuilder> = Api::default_namespaced(w.client.clone());
    for i in 0..n {
        api.create(&PostParams::default(), &builder(&format!("pb-{i}"), 0, "bench", "1h")?)
            .await?;
    }
    let ttl = "5s";
    let mut controller = Controller::start(
        bin,
        &w,
        work,
        &[("BASE_AMI_CACHE_TTL", ttl), ("RESYNC_INTERVAL", "10s")],
    )?;
    wait_until(Duration::from_secs(300), "all Ready", || {
        all_builders_ready(&w.client, n)
    })
    .await?;
    let calls0 = w.calls().await?.len();
    w.aws.seed_images(&account, REGION, &[base_image(0, "11")]).await?;
    let jobs: Api<Job> = Api::default_namespaced(w.client.clone());
    let secs = wait_until(Duration::from_secs(300), "all Jobs created", || {
        let jobs = jobs.clone();
        async move { Ok(jobs.list(&ListParams::default()).await?.items.len() >= n) }
    })
    .await?;
    let calls = w.calls().await?;
    let window = &calls[calls0..];
    let (rss, cpu) = controller.usage();
    let mut s = Scenario {
        name: format!("change propagation: a new base AMI shared by {n} PackerBuilders"),
        objects: n,
        seconds_to_ready: None,
        window_seconds: secs,
        aws_calls_in_window: by_action(window),
        api_requests_in_window: BTreeMap::new(),
        controller_peak_rss_mib: rss,
        controller_cpu_seconds: cpu,
        controller_metrics: controller.metrics("packer_build_controller").await,
        ..Scenario::default()
    };
    s.settings.insert("resyncInterval".into(), "10s".into());
    s.settings.insert("baseAmiCacheTtl".into(), ttl.into());
    s.extra.insert("seconds_until_all_jobs_exist".into(), json!(secs));
    s.extra.insert(
        "base_describe_images_until_then".into(),
        json!(
            window
                .iter()
                .filter(|c| c.action == "DescribeImages" && c.params.values().any(|v| v.starts_with("bench-base-")))
                .count()
        ),
    );
    s.extra.insert(
        "describe_images_until_then".into(),
        json!(window.iter().filter(|c| c.action == "DescribeImages").count()),
    );
    let _ = controller.child.kill().await;
    Ok(s)
}

fn markdown(scenarios: &[Scenario]) -> String {
    let mut out = String::from(
        "| Scenario | Objects | Ready after | Window | AWS calls in window | API requests in window | Peak RSS | CPU | Notes |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for s in scenarios {
        let fmt_map = |m: &BTreeMap<String, usize>| {
            if m.is_empty() {
                "-".to_owned()
            } else {
                m.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
            }
        };
        let notes = s
            .extra
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k}={}",
                    match v.as_f64() {
                        Some(f) if f.fract() != 0.0 => format!("{f:.2}"),
                        _ => v.to_string(),
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!(
            "| {} | {} | {} | {:.1} s | {} | {} | {:.1} MiB | {:.2} s | {} |\n",
            s.name,
            s.objects,
            s.seconds_to_ready.map_or("-".into(), |r| format!("{r:.2} s")),
            s.window_seconds,
            fmt_map(&s.aws_calls_in_window),
            fmt_map(&s.api_requests_in_window),
            s.controller_peak_rss_mib,
            s.controller_cpu_seconds,
            notes
        ));
    }
    out
}

/// Runs every scenario with the release binaries in `bin_dir`; `quick` uses smaller sizes (for a smoke run).
pub fn run(target: &Path, bin_dir: &Path, quick: bool, only: Option<&str>) -> Result<()> {
    let wanted = |name: &str| only.is_none_or(|o| name.contains(o));
    let out = target.join("bench");
    std::fs::create_dir_all(&out)?;
    let work = tempfile_dir(&out)?;
    let pbc = bin_dir.join("packer-build-controller");
    let arc = bin_dir.join("ami-refresh-controller");
    let rt = tokio::runtime::Runtime::new()?;
    let sizes: (usize, usize, usize, usize) = if quick { (20, 50, 20, 20) } else { (100, 1000, 200, 200) };
    let mut scenarios = Vec::new();
    let mut failures = Vec::new();
    let partial = out.join("report.partial.json");
    let mut record = |name: String, result: Result<Scenario>| {
        match result {
            Ok(s) => scenarios.push(s),
            Err(e) => {
                eprintln!("   FAILED: {e:#}");
                failures.push(format!("{name}: {e:#}"));
                scenarios.push(Scenario {
                    name: format!("{name} (FAILED: {e})"),
                    ..Scenario::default()
                });
            }
        }
        // Written after every scenario, so a long run that is stopped keeps what it measured.
        if let Ok(text) = serde_json::to_string_pretty(&scenarios) {
            let _ = std::fs::write(&partial, text);
        }
    };
    rt.block_on(async {
        for n in [sizes.0, sizes.1] {
            let name = format!(
                "steady state: {n} PackerBuilders, {FILTER_SETS} filter sets, {CLUSTERS} clusters, nothing to build"
            );
            if !wanted(&name) {
                continue;
            }
            eprintln!("==> steady state, {n} PackerBuilders");
            record(name.clone(), steady_builders(&pbc, &work, n, 10, 1, &name).await);
        }
        if only.is_some() {
            return;
        }
        eprintln!("==> steady state, {} AMIRefreshers", sizes.2);
        record(
            format!("steady state: {} AMIRefreshers", sizes.2),
            steady_refreshers(&arc, &work, sizes.2, 10).await,
        );
        eprintln!("==> change propagation, {} PackerBuilders", sizes.3);
        record(
            format!("change propagation: {} PackerBuilders", sizes.3),
            propagation(&pbc, &work, sizes.3).await,
        );
        let idle = if quick { 20 } else { 100 };
        eprintln!("==> idle, {idle} PackerBuilders, 2 s timer, 10 periods");
        let name = format!("idle: {idle} PackerBuilders, unchanged world, 2 s controllerTimer, 10 periods");
        record(name.clone(), steady_builders(&pbc, &work, idle, 2, 10, &name).await);
    });
    let report = json!({"generated_by": "cargo xtask bench", "scenarios": scenarios});
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    let md = markdown(&scenarios);
    std::fs::write(out.join("report.md"), &md)?;
    println!("{md}");
    println!(
        "wrote {} and {}",
        out.join("report.json").display(),
        out.join("report.md").display()
    );
    Ok(())
}

fn tempfile_dir(out: &Path) -> Result<PathBuf> {
    let work = out.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    Ok(work)
}
