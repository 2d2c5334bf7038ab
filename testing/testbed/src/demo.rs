//! `cargo xtask demo` (`testbed demo`): the whole loop on one machine. The in-memory API server (with its Job executor) and the AWS
//! emulator run inside this process; the two controller binaries run as separate processes through a
//! kubeconfig, as in a cluster; Packer really builds against the emulator.
//!
//! World: public EKS-optimized base AMIs (owner 602401143452, us-west-2), an EKS cluster `opsy-demo` with three
//! managed node groups on launch templates (`ingress-dev`, `workers-a`, `workers-b`) running the older base AMI,
//! and `examples/demo/` (a PackerBuilder on the sample Packer project in a local git repository, an AMIRefresher
//! that follows it and excludes `ingress-dev`).

use std::{
    collections::BTreeMap,
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use api_types::{AMIRefresher, PackerBuilder};
use aws_sim::{Account, AwsEmulator, SeedImage};
use k8s_openapi::{
    api::core::v1::{Pod, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config,
    api::{ListParams, LogParams, PostParams},
};
use kube_sim::{ApiServer, ServerOptions, executor::ExecutorOptions};

const REGION: &str = "us-west-2";
const CLUSTER: &str = "opsy-demo";
const ACCOUNT: &str = "123456789012";
const NODE_GROUPS: [&str; 3] = ["ingress-dev", "workers-a", "workers-b"];
const EXCLUDED: &str = "ingress-dev";

/// Options of the demo.
#[derive(Debug, Clone)]
pub struct Options {
    /// Build the controllers in the dev profile (faster after `cargo xtask test`) instead of release.
    pub debug: bool,
    /// Leave everything running after the summary until Ctrl-C.
    pub keep: bool,
    /// Give up after this long.
    pub timeout: Duration,
    /// Use the controller binaries in this directory instead of building them (the test build's, in the test).
    pub bin_dir: Option<std::path::PathBuf>,
}

struct Stage {
    started: Instant,
}

impl Stage {
    fn say(&self, what: impl std::fmt::Display) {
        println!("[{:>6.1}s] {what}", self.started.elapsed().as_secs_f64());
    }
}

/// A failed step: which, and why.
fn step_failed(step: &str, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("step \"{step}\" failed: {why}")
}

async fn image_of(ec2: &aws_sdk_ec2::Client, eks: &aws_sdk_eks::Client, node_group: &str) -> Result<String> {
    let ng = eks
        .describe_nodegroup()
        .cluster_name(CLUSTER)
        .nodegroup_name(node_group)
        .send()
        .await?;
    let lt = ng
        .nodegroup()
        .and_then(|n| n.launch_template())
        .context("node group without launch template")?;
    let versions = ec2
        .describe_launch_template_versions()
        .launch_template_id(lt.id().unwrap_or_default())
        .versions(lt.version().unwrap_or("$Default"))
        .send()
        .await?;
    Ok(versions
        .launch_template_versions()
        .first()
        .and_then(|v| v.launch_template_data())
        .and_then(|d| d.image_id())
        .unwrap_or_default()
        .to_owned())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs the demo; `Ok` only when the loop completed (AMI built and tagged, node groups rolled, excluded one
/// untouched).
pub fn run(root: &Path, target: &Path, tools: &Path, options: &Options) -> Result<()> {
    if let Some(bin_dir) = &options.bin_dir {
        println!("==> using the controllers in {}", bin_dir.display());
        return tokio::runtime::Runtime::new()?.block_on(run_loop(root, target, tools, bin_dir, options));
    }
    let mut build = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.current_dir(root).args([
        "build",
        "--quiet",
        "--package",
        "packer-build-controller",
        "--package",
        "ami-refresh-controller",
    ]);
    if !options.debug {
        build.arg("--release");
    }
    println!(
        "==> building the controllers ({})",
        if options.debug { "dev profile" } else { "release" }
    );
    if !build.status().context("running cargo build")?.success() {
        bail!("step \"build the controllers\" failed: cargo build");
    }
    let bin_dir = target.join(if options.debug { "debug" } else { "release" });
    tokio::runtime::Runtime::new()?.block_on(run_loop(root, target, tools, &bin_dir, options))
}

async fn run_loop(root: &Path, target: &Path, tools: &Path, bin_dir: &Path, options: &Options) -> Result<()> {
    let stage = Stage {
        started: Instant::now(),
    };
    let work = target.join("demo");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let work = work.canonicalize()?;

    stage.say("starting the AWS emulator (moto + extension)");
    let aws = AwsEmulator::start()
        .await
        .map_err(|e| step_failed("start the AWS emulator", e))?;
    aws.set_progress(false, std::time::Duration::from_secs(3))
        .await
        .map_err(|e| step_failed("configure the emulator", e))?;
    let sdk = aws.sdk_config(REGION).await;
    let account = Account(ACCOUNT.into());
    let (ec2, eks) = (aws.ec2(&sdk, &account), aws.eks(&sdk, &account));
    stage.say("seeding: public EKS-optimized base AMIs (owner 602401143452), cluster opsy-demo, 3 node groups");
    let seeded = seed_world(&aws, &account, &ec2, &eks).await?;

    stage.say("starting the in-memory Kubernetes API server with the local Job executor");
    let (_server, kubeconfig, client) = start_api_server(&aws, &work).await?;
    stage.say("installing the CRDs from deploy/crds/");
    install_crds(root, &client).await?;
    let repo = work.join("packer-repo");
    aws_sim::sample_packer_repo(&repo, "packer/eks-node")
        .map_err(|e| step_failed("prepare the Packer repository", e))?;
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let controllers = start_controllers(&stage, &aws, bin_dir, &kubeconfig, &logs)?;
    stage.say("applying examples/demo/");
    apply_examples(root, &client, &format!("file://{}", repo.display()), aws.endpoint()).await?;

    let (built, amr) = match watch(&stage, &client, &ec2, &eks, &seeded.before, options.timeout).await {
        Ok(done) => done,
        Err(error) => {
            eprintln!("\n{error:#}");
            for name in CONTROLLERS {
                let path = logs.join(format!("{name}.log"));
                eprintln!("\n--- last lines of {} ---\n{}", path.display(), tail(&path, 15));
            }
            eprintln!("\nlogs: {}", logs.display());
            return Err(error);
        }
    };
    summarize(&stage, &ec2, &eks, &seeded, &built, &amr).await?;
    println!("\nThe loop completed: base AMI -> Packer build -> tagged AMI -> node groups rolled.");
    if options.keep {
        keep_running(tools, &kubeconfig, &aws, &controllers.metrics, &logs).await?;
    }
    for mut child in controllers.children {
        let _ = child.kill().await;
    }
    Ok(())
}

/// The two controllers, in the order they are started.
const CONTROLLERS: [&str; 2] = ["packer-build-controller", "ami-refresh-controller"];

/// What the demo seeded.
struct Seeded {
    new_base: String,
    /// The AMI each node group ran before.
    before: BTreeMap<&'static str, String>,
}

/// Two public EKS base AMIs, the cluster, and its node groups on launch templates carrying the older base.
async fn seed_world(
    aws: &AwsEmulator,
    account: &Account,
    ec2: &aws_sdk_ec2::Client,
    eks: &aws_sdk_eks::Client,
) -> Result<Seeded> {
    let base_images = ["v20261001", "v20261101"].map(|v| SeedImage {
        name: format!("amazon-eks-node-al2023-x86_64-standard-1.30-{v}"),
        owner_id: "602401143452".into(),
        creation_date: format!("2026-{}-01T00:00:00Z", &v[5..7]),
        public: true,
        ..SeedImage::default()
    });
    let bases = aws
        .seed_images(account, REGION, &base_images)
        .await
        .map_err(|e| step_failed("seed base AMIs", e))?;
    aws_sim::eks::cluster(eks, CLUSTER)
        .await
        .map_err(|e| step_failed("create the EKS cluster", e))?;
    for ng in NODE_GROUPS {
        let template = aws_sim::eks::TemplateSeed {
            name: &format!("{ng}-lt"),
            image: &bases[0],
            instance_type: Some(aws_sdk_ec2::types::InstanceType::M5Large),
            user_data: None,
        };
        let lt_id = aws_sim::eks::launch_template(ec2, &template)
            .await
            .map_err(|e| step_failed("create launch templates", e))?;
        aws_sim::eks::nodegroup(eks, CLUSTER, ng, &lt_id, None, 2)
            .await
            .map_err(|e| step_failed("create node groups", e))?;
    }
    let mut before = BTreeMap::new();
    for ng in NODE_GROUPS {
        before.insert(ng, image_of(ec2, eks, ng).await?);
    }
    Ok(Seeded {
        new_base: bases[1].clone(),
        before,
    })
}

/// kube-sim with its Job executor (build Pods run Packer locally against the emulator); its kubeconfig and a client.
async fn start_api_server(aws: &AwsEmulator, work: &Path) -> Result<(ApiServer, std::path::PathBuf, Client)> {
    let server = ApiServer::start(ServerOptions {
        executor: Some(ExecutorOptions {
            extra_env: aws.packer_job_env(REGION),
            work_dir: Some(work.join("jobs")),
            ..ExecutorOptions::default()
        }),
        ..ServerOptions::default()
    })
    .await
    .map_err(|e| step_failed("start the API server", e))?;
    std::fs::create_dir_all(work.join("jobs"))?;
    let kubeconfig = work.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig)?;
    let client = Client::try_from(Config::new(server.url().parse()?))?;
    Ok((server, kubeconfig, client))
}

/// The generated CRDs of `deploy/crds/`, as a user installs them.
async fn install_crds(root: &Path, client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for entry in std::fs::read_dir(root.join("deploy/crds"))? {
        let text = std::fs::read_to_string(entry?.path())?;
        let crd: CustomResourceDefinition = serde_norway::from_str(&text)?;
        crds.create(&PostParams::default(), &crd)
            .await
            .map_err(|e| step_failed("install the CRDs", e))?;
    }
    Ok(())
}

/// The controller processes and their metrics ports.
struct Controllers {
    children: Vec<tokio::process::Child>,
    metrics: [u16; 2],
}

/// Starts both controller binaries of `bin_dir`, each logging to `logs/<name>.log`.
fn start_controllers(
    stage: &Stage,
    aws: &AwsEmulator,
    bin_dir: &Path,
    kubeconfig: &Path,
    logs: &Path,
) -> Result<Controllers> {
    let metrics = [free_port()?, free_port()?];
    let mut children = Vec::new();
    for (i, name) in CONTROLLERS.into_iter().enumerate() {
        let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
        let child = tokio::process::Command::new(bin_dir.join(name))
            .env("KUBECONFIG", kubeconfig)
            .envs(aws.child_env(REGION))
            .env("METRICS_ADDR", format!("127.0.0.1:{}", metrics[i]))
            .env("POD_NAME", format!("{name}-demo"))
            .env("POLL_INTERVAL", "1s")
            .env("RESYNC_INTERVAL", "15s")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| step_failed(&format!("start {name}"), e))?;
        stage.say(format!(
            "started {name} (pid {}, metrics http://127.0.0.1:{}/metrics)",
            child.id().unwrap_or_default(),
            metrics[i]
        ));
        children.push(child);
    }
    Ok(Controllers { children, metrics })
}

/// Applies `examples/demo/` with the sample repository and the emulator's endpoint filled in.
async fn apply_examples(root: &Path, client: &Client, repo_url: &str, endpoint: &str) -> Result<()> {
    for file in ["aws-creds.yaml", "packerbuilder.yaml", "amirefresher.yaml"] {
        let text = std::fs::read_to_string(root.join("examples/demo").join(file))?
            .replace("file:///opsy-demo/packer-repo", repo_url)
            .replace("http://aws-emulator.invalid", endpoint);
        let doc: serde_json::Value = serde_norway::from_str(&text)?;
        let pp = PostParams::default();
        let created = match doc["kind"].as_str() {
            Some("Secret") => Api::<Secret>::default_namespaced(client.clone())
                .create(&pp, &serde_json::from_value(doc)?)
                .await
                .map(|_| ()),
            Some("PackerBuilder") => Api::<PackerBuilder>::default_namespaced(client.clone())
                .create(&pp, &serde_json::from_value(doc)?)
                .await
                .map(|_| ()),
            Some("AMIRefresher") => Api::<AMIRefresher>::default_namespaced(client.clone())
                .create(&pp, &serde_json::from_value(doc)?)
                .await
                .map(|_| ()),
            other => bail!("unexpected kind {other:?} in {file}"),
        };
        created.map_err(|e| step_failed(&format!("apply examples/demo/{file}"), e))?;
    }
    Ok(())
}

/// Prints the built AMI with its tags and each node group before and after; fails when a group that should run
/// the built AMI does not, or the excluded one was touched.
async fn summarize(
    stage: &Stage,
    ec2: &aws_sdk_ec2::Client,
    eks: &aws_sdk_eks::Client,
    seeded: &Seeded,
    built: &str,
    amr: &AMIRefresher,
) -> Result<()> {
    let tags = ec2
        .describe_images()
        .image_ids(built)
        .send()
        .await?
        .images()
        .first()
        .map(|i| {
            let mut t: Vec<String> = i
                .tags()
                .iter()
                .map(|t| format!("{}={}", t.key().unwrap_or_default(), t.value().unwrap_or_default()))
                .collect();
            t.sort();
            t
        })
        .unwrap_or_default();
    let mut after = BTreeMap::new();
    for ng in NODE_GROUPS {
        after.insert(ng, image_of(ec2, eks, ng).await?);
    }
    let before = &seeded.before;
    println!("\nSummary");
    println!("  base AMI (newest of 2 public EKS AMIs): {}", seeded.new_base);
    println!("  built AMI:                              {built}");
    for t in &tags {
        println!("      {t}");
    }
    println!("  node groups of {CLUSTER}:");
    println!("    {:<12} {:<23}    {:<23} RESULT", "NAME", "BEFORE", "AFTER");
    let mut ok = true;
    for ng in NODE_GROUPS {
        let result = if ng == EXCLUDED {
            if after[ng] == before[ng] {
                "skipped (spec.exclude)".to_owned()
            } else {
                ok = false;
                "TOUCHED despite exclude".to_owned()
            }
        } else {
            let state = amr
                .status
                .as_ref()
                .and_then(|s| s.node_groups.iter().find(|n| n.name == ng))
                .map(|n| format!("{:?}", n.state))
                .unwrap_or_default();
            if after[ng] != built {
                ok = false;
            }
            state
        };
        println!("    {ng:<12} {:<23} -> {:<23} {result}", before[ng], after[ng]);
    }
    println!("  elapsed: {:.1}s", stage.started.elapsed().as_secs_f64());
    if !ok {
        bail!("step \"verify the node groups\" failed: see the table");
    }
    Ok(())
}

/// `--keep`: prints how to look at the running system and waits for Ctrl-C.
async fn keep_running(
    tools: &Path,
    kubeconfig: &Path,
    aws: &AwsEmulator,
    metrics: &[u16; 2],
    logs: &Path,
) -> Result<()> {
    let kubectl = tools.join("kubectl");
    println!("\nEverything keeps running; Ctrl-C stops it.\n");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  {} get pb,amr -w", kubectl.display());
    println!("  {} get pb demo-builder -o yaml", kubectl.display());
    println!("  # publish a newer base AMI: the PackerBuilder rebuilds, the AMIRefresher rolls again");
    println!(
        "  curl -s -X POST {}/_ext/seed/images -H 'content-type: application/json' -d '{{\"account\":\"{ACCOUNT}\",\"region\":\"{REGION}\",\"images\":[{{\"name\":\"amazon-eks-node-al2023-x86_64-standard-1.30-v20261201\",\"ownerId\":\"602401143452\",\"creationDate\":\"2026-12-01T00:00:00Z\",\"public\":true}}]}}'",
        aws.endpoint()
    );
    println!(
        "  curl -s http://127.0.0.1:{}/metrics   # packer-build-controller",
        metrics[0]
    );
    println!(
        "  curl -s http://127.0.0.1:{}/metrics   # ami-refresh-controller",
        metrics[1]
    );
    println!("  logs: {}", logs.display());
    tokio::signal::ctrl_c().await?;
    println!("stopping");
    Ok(())
}

/// Prints the last lines of the build Pod's Packer output.
async fn show_packer_tail(stage: &Stage, pods: &Api<Pod>, job: &str) -> Result<()> {
    let Some(pod) = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await?
        .items
        .into_iter()
        .next()
    else {
        return Ok(());
    };
    let name = pod.metadata.name.unwrap_or_default();
    let params = LogParams {
        container: Some("packer-build".into()),
        tail_lines: Some(4),
        ..LogParams::default()
    };
    if let Ok(text) = pods.logs(&name, &params).await {
        stage.say("Packer output (tail):");
        for l in text.lines() {
            println!("           | {l}");
        }
    }
    Ok(())
}

/// Prints the AMIRefresher's line and each node group's state change since the last call.
fn show_rollout(
    stage: &Stage,
    s: &api_types::AMIRefresherStatus,
    last_amr: &mut String,
    last_groups: &mut BTreeMap<String, String>,
) {
    let line = format!(
        "AMIRefresher demo-refresher: phase={} target={} progress={}",
        s.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "-".into()),
        s.target_ami.as_deref().unwrap_or("-"),
        s.progress.as_deref().unwrap_or("-")
    );
    if line != *last_amr {
        stage.say(&line);
        *last_amr = line;
    }
    for n in &s.node_groups {
        let state = format!("{:?}", n.state);
        if last_groups.get(&n.name) != Some(&state) {
            let update = n
                .update_id
                .as_deref()
                .map(|u| format!(" update {u}"))
                .unwrap_or_default();
            stage.say(format!(
                "  node group {}: {} -> {state}{update}",
                n.name,
                last_groups.get(&n.name).map_or("-", String::as_str)
            ));
            last_groups.insert(n.name.clone(), state);
        }
    }
}

/// Prints progress until the loop completes; returns the built AMI and the final AMIRefresher.
async fn watch(
    stage: &Stage,
    client: &Client,
    ec2: &aws_sdk_ec2::Client,
    eks: &aws_sdk_eks::Client,
    before: &BTreeMap<&str, String>,
    timeout: Duration,
) -> Result<(String, AMIRefresher)> {
    let builders: Api<PackerBuilder> = Api::default_namespaced(client.clone());
    let refreshers: Api<AMIRefresher> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let deadline = Instant::now() + timeout;
    let mut last_pb = String::new();
    let mut last_groups: BTreeMap<String, String> = BTreeMap::new();
    let mut last_amr = String::new();
    let mut shown_log = false;
    loop {
        if Instant::now() > deadline {
            let step = if last_pb.contains("Ready") {
                "roll the node groups"
            } else {
                "build the AMI"
            };
            return Err(step_failed(step, format!("not done within {timeout:?}")));
        }
        let pb = builders.get("demo-builder").await?;
        let status = pb.status.clone().unwrap_or_default();
        let line = format!(
            "PackerBuilder demo-builder: phase={} job={} ({})",
            status.phase.map(|p| format!("{p:?}")).unwrap_or_else(|| "-".into()),
            status.job_name.as_deref().unwrap_or("-"),
            status.job_status.as_deref().unwrap_or("-"),
        );
        if line != last_pb {
            stage.say(&line);
            last_pb = line;
        }
        if let Some(phase) = status.phase
            && matches!(
                phase,
                api_types::packer_builder::PackerBuilderPhase::Degraded
                    | api_types::packer_builder::PackerBuilderPhase::Invalid
            )
        {
            return Err(step_failed(
                "build the AMI",
                status.last_run_message.unwrap_or_else(|| format!("{phase:?}")),
            ));
        }
        if !shown_log
            && status.job_status.as_deref() == Some("completed")
            && let Some(job) = &status.job_name
        {
            shown_log = true;
            show_packer_tail(stage, &pods, job).await?;
            if let Some(ami) = &status.last_run_built_image_id {
                stage.say(format!("AMI {ami} built, verified and tagged status=active"));
            }
        }
        if let Some(amr) = refreshers.get_opt("demo-refresher").await? {
            let s = amr.status.clone().unwrap_or_default();
            show_rollout(stage, &s, &mut last_amr, &mut last_groups);
            if s.phase == Some(api_types::ami_refresher::AMIRefresherPhase::Degraded) {
                return Err(step_failed("roll the node groups", "the rollout failed (Degraded)"));
            }
            let built = status.last_run_built_image_id.clone();
            if s.phase == Some(api_types::ami_refresher::AMIRefresherPhase::Ready)
                && built.is_some()
                && s.target_ami == built
            {
                let built = built.unwrap_or_default();
                let mut rolled = true;
                for ng in before.keys().filter(|ng| **ng != EXCLUDED) {
                    rolled &= image_of(ec2, eks, ng).await? == built;
                }
                if rolled {
                    return Ok((built, amr));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
