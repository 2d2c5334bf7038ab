//! The real controller binary against the in-memory API server (with the local Job executor) and the AWS
//! emulator, building with the real Packer.

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use ami_tags_keys::*;
use api_types::{PackerBuilder, conditions::get_condition};
use aws_sim::{Account, AwsEmulator, SeedImage};
use k8s_openapi::{
    api::{batch::v1::Job, core::v1::Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Config, CustomResourceExt, ResourceExt,
    api::{ListParams, PostParams},
};
use kube_sim::{ApiServer, ServerOptions, executor::ExecutorOptions};
use serde_json::json;

/// Tag keys, spelled out here so the test does not trust the code under test for them.
mod ami_tags_keys {
    pub const TAGS: [&str; 11] = [
        "brought-to-you-by",
        "cluster-name",
        "created-by",
        "created-by-namespace",
        "packer-repo",
        "packer-repo-branch",
        "build-id",
        "job-id",
        "base-ami",
        "create-timestamp",
        "status",
    ];
}

const REGION: &str = "us-west-2";
const DEFAULT_ACCOUNT: &str = "123456789012";
const WAIT: Duration = Duration::from_secs(120);

fn workspace() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Harness {
    aws: AwsEmulator,
    _server: ApiServer,
    client: Client,
    kubeconfig: tempfile::NamedTempFile,
    repo: tempfile::TempDir,
    controller: Option<tokio::process::Child>,
}

impl Harness {
    async fn start() -> Self {
        let aws = AwsEmulator::start().await.expect("emulator");
        let shim = workspace().join("crates/aws-sim/packer-shim");
        let mut env: BTreeMap<String, String> = aws.child_env(REGION).into_iter().collect();
        env.insert(
            "PATH".into(),
            format!("{}:{}", shim.display(), std::env::var("PATH").unwrap_or_default()),
        );
        let server = ApiServer::start(ServerOptions {
            executor: Some(ExecutorOptions {
                extra_env: env,
                ..ExecutorOptions::default()
            }),
            ..ServerOptions::default()
        })
        .await
        .expect("api server");
        let kubeconfig = tempfile::NamedTempFile::new().expect("kubeconfig");
        server.write_kubeconfig(kubeconfig.path()).expect("write kubeconfig");
        let client = Client::try_from(Config::new(server.url().parse().expect("url"))).expect("client");
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        crds.create(&PostParams::default(), &PackerBuilder::crd())
            .await
            .expect("CRD");
        let secrets: Api<Secret> = Api::default_namespaced(client.clone());
        for (name, data) in [
            (
                "aws-creds",
                json!({"AWS_ACCESS_KEY_ID": "dGVzdGluZw==", "AWS_SECRET_ACCESS_KEY": "dGVzdGluZw=="}),
            ),
            ("git-sync", json!({"username": "Ym90", "token": "c2VudGluZWw="})),
        ] {
            let s: Secret = serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).expect("secret");
            secrets.create(&PostParams::default(), &s).await.expect("secret");
        }
        let repo = tempfile::tempdir().expect("repo");
        packer_repo(repo.path());
        Self {
            aws,
            _server: server,
            client,
            kubeconfig,
            repo,
            controller: None,
        }
    }

    fn start_controller(&mut self) {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_packer-build-controller"));
        command
            .env("KUBECONFIG", self.kubeconfig.path())
            .env("RUST_LOG", "info,kube=warn")
            .envs(self.aws.child_env(REGION))
            .kill_on_drop(true);
        self.controller = Some(command.spawn().expect("controller starts"));
    }

    async fn stop_controller(&mut self) {
        if let Some(mut child) = self.controller.take() {
            let _ = child.kill().await;
        }
    }

    async fn seed_base(&self, name: &str, date: &str) -> String {
        let account = Account(DEFAULT_ACCOUNT.into());
        let image = SeedImage {
            name: name.into(),
            owner_id: "602401143452".into(),
            creation_date: date.into(),
            public: true,
            ..SeedImage::default()
        };
        self.aws
            .seed_images(&account, REGION, &[image])
            .await
            .expect("seed")
            .remove(0)
    }

    /// The seed PackerBuilder of the original README, pointed at the local sample project.
    fn seed_builder(&self) -> PackerBuilder {
        let text = std::fs::read_to_string(workspace().join("examples/seed/packerbuilder-000.yaml")).expect("seed");
        let mut doc: serde_json::Value = serde_norway::from_str(&text).expect("yaml");
        doc["spec"]["builder"]["repoURL"] = json!(format!("file://{}", self.repo.path().display()));
        doc["spec"]["builder"]["dir"] = json!("packer/generic-fips");
        doc["spec"]["builder"]["commands"][0]["variables"] = json!({"ec2_endpoint": self.aws.endpoint()});
        doc["metadata"]["namespace"] = json!("default");
        serde_json::from_value(doc).expect("typed")
    }

    async fn wait_for(&self, name: &str, what: &str, done: impl Fn(&PackerBuilder) -> bool) -> PackerBuilder {
        let api: Api<PackerBuilder> = Api::default_namespaced(self.client.clone());
        let wait = async {
            loop {
                if let Some(pb) = api.get_opt(name).await.expect("get")
                    && done(&pb)
                {
                    return pb;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        };
        match tokio::time::timeout(WAIT, wait).await {
            Ok(pb) => pb,
            Err(_) => {
                let pb = api.get(name).await.expect("get");
                panic!("{name} did not reach {what}; status: {:#?}", pb.status)
            }
        }
    }

    async fn jobs(&self) -> Vec<Job> {
        Api::<Job>::default_namespaced(self.client.clone())
            .list(&ListParams::default())
            .await
            .expect("jobs")
            .items
    }

    async fn image_tags(&self, ami: &str) -> BTreeMap<String, String> {
        let sdk = self.aws.sdk_config(REGION).await;
        let out = self
            .aws
            .ec2(&sdk, &Account(DEFAULT_ACCOUNT.into()))
            .describe_images()
            .image_ids(ami)
            .send()
            .await
            .expect("describe");
        out.images()[0]
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
            .collect()
    }
}

/// A git repository with the sample Packer project at `packer/generic-fips` (the seed's `dir`).
fn packer_repo(dir: &Path) {
    let project = dir.join("packer/generic-fips");
    std::fs::create_dir_all(&project).expect("mkdir");
    std::fs::copy(
        workspace().join("examples/packer/eks-node/eks-node.pkr.hcl"),
        project.join("eks-node.pkr.hcl"),
    )
    .expect("copy");
    for args in [
        &["init", "--quiet"][..],
        &["add", "."],
        &["commit", "--quiet", "-m", "sample"],
    ] {
        let status = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@example.com",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .status()
            .expect("git");
        assert!(status.success());
    }
}

fn ready_reason(pb: &PackerBuilder) -> Option<String> {
    let status = pb.status.as_ref()?;
    get_condition(&status.conditions, "Ready")
        .filter(|c| c.status == "True")
        .map(|c| c.reason.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_packer_builder_goes_from_apply_to_ready_with_a_fully_tagged_ami() {
    let mut h = Harness::start().await;
    let base = h
        .seed_base(
            "amazon-eks-node-al2023-x86_64-standard-1.30-v20261101",
            "2026-11-01T00:00:00Z",
        )
        .await;
    h.seed_base(
        "amazon-eks-node-al2023-x86_64-standard-1.30-v20261001",
        "2026-10-01T00:00:00Z",
    )
    .await;
    h.start_controller();
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &h.seed_builder())
        .await
        .expect("apply");

    let pb = h
        .wait_for("packer-builder-local", "Ready", |pb| {
            ready_reason(pb).as_deref() == Some("BuildSucceeded")
        })
        .await;
    let status = pb.status.clone().expect("status");
    assert_eq!(
        status.last_run_base_image_id.as_deref(),
        Some(base.as_str()),
        "the newest base AMI was used"
    );
    assert_eq!(status.job_status.as_deref(), Some("completed"));
    assert_eq!(status.last_run_status.as_deref(), Some("succeeded"));
    assert_eq!(status.failed_job_count, 0);
    let command = status.command.clone().expect("command");
    assert!(
        command.contains("-force") && command.contains(&format!("ami_id={base}")),
        "{command}"
    );
    assert!(
        command.starts_with("(cd packer/generic-fips && packer init .)"),
        "{command}"
    );
    let ami = status.last_run_built_image_id.clone().expect("built AMI");

    let tags = h.image_tags(&ami).await;
    for key in TAGS {
        assert!(tags.contains_key(key), "tag {key} missing: {tags:?}");
    }
    assert_eq!(tags["brought-to-you-by"], "opsy-the-ami-operator");
    assert_eq!(tags["cluster-name"], "opsy-gitops");
    assert_eq!(tags["created-by"], "packer-builder-local");
    assert_eq!(tags["created-by-namespace"], "default");
    assert_eq!(tags["base-ami"], base);
    assert_eq!(tags["status"], "active");
    assert_eq!(tags["build-id"], status.build_id.clone().expect("build id"));
    assert!(!tags["packer-repo"].is_empty());

    let jobs = h.jobs().await;
    assert_eq!(jobs.len(), 1, "exactly one build Job");
    assert_eq!(jobs[0].name_any(), status.job_name.clone().expect("job name"));
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ami_tagged_by_the_original_operator_is_adopted_without_a_build_and_keeps_its_timestamp() {
    let mut h = Harness::start().await;
    let base = h
        .seed_base(
            "amazon-eks-node-al2023-x86_64-standard-1.30-v20261101",
            "2026-11-01T00:00:00Z",
        )
        .await;
    let created = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_hours(2))
        .expect("time");
    let created = created.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let builder = h.seed_builder();
    // Tags as the Go operator wrote them: no created-by-namespace.
    let go_tags: BTreeMap<String, String> = [
        ("brought-to-you-by", "opsy-the-ami-operator"),
        ("cluster-name", "opsy-gitops"),
        ("created-by", "packer-builder-local"),
        ("packer-repo", builder.spec.builder.repo_url.as_str()),
        ("packer-repo-branch", "main"),
        ("build-id", "728d7a64-ca85-42c9-9acd-60c681d4efe3"),
        ("job-id", "3cb1b"),
        ("base-ami", base.as_str()),
        ("create-timestamp", created.as_str()),
        ("status", "active"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let account = Account(DEFAULT_ACCOUNT.into());
    let existing = h
        .aws
        .seed_images(
            &account,
            REGION,
            &[SeedImage {
                name: "go-operator-built".into(),
                owner_id: DEFAULT_ACCOUNT.into(),
                creation_date: created.clone(),
                tags: go_tags,
                public: false,
                ..SeedImage::default()
            }],
        )
        .await
        .expect("seed")
        .remove(0);
    h.start_controller();
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &builder).await.expect("apply");
    let pb = h
        .wait_for("packer-builder-local", "Ready", |pb| ready_reason(pb).is_some())
        .await;
    assert_eq!(ready_reason(&pb).as_deref(), Some("AMIAdopted"));
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(h.client.clone());
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.contains(&"AMIAdopted".to_owned()),
        "an AMIAdopted Event: {reasons:?}"
    );
    assert_eq!(
        pb.status.and_then(|s| s.last_run_built_image_id).as_deref(),
        Some(existing.as_str())
    );
    assert!(h.jobs().await.is_empty(), "adoption must not build");
    let tags = h.image_tags(&existing).await;
    assert_eq!(
        tags["create-timestamp"], created,
        "adoption never resets create-timestamp"
    );
    assert_eq!(tags["created-by-namespace"], "default");
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_args_and_variables_reach_packer_as_literal_arguments() {
    let mut h = Harness::start().await;
    h.seed_base(
        "amazon-eks-node-al2023-x86_64-standard-1.30-v20261101",
        "2026-11-01T00:00:00Z",
    )
    .await;
    let marker = tempfile::tempdir().expect("tmp");
    let pwned = marker.path().join("pwned");
    let mut builder = h.seed_builder();
    let hostile = format!("; touch {}", pwned.display());
    builder.spec.builder.commands[0]
        .variables
        .insert("ami_name_prefix".into(), format!("x$(touch {})'\"", pwned.display()));
    builder.spec.builder.commands[0].args = vec!["-force".into(), format!("-var=unused={hostile}")];
    h.start_controller();
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &builder).await.expect("apply");
    let pb = h
        .wait_for("packer-builder-local", "a finished build", |pb| {
            pb.status
                .as_ref()
                .and_then(|s| s.job_status.as_deref())
                .is_some_and(|s| s == "completed" || s == "failed")
        })
        .await;
    assert!(!pwned.exists(), "a value was executed by a shell");
    let command = pb.status.and_then(|s| s.command).expect("command");
    assert!(command.contains(&format!("'-var=unused={hostile}'")), "{command}");
    h.stop_controller().await;
}
