//! The real controller binary against the in-memory API server (with the local Job executor) and the AWS
//! emulator, building with the real Packer.

use std::{collections::BTreeMap, path::Path, time::Duration};

use ami_tags_keys::*;
use api_types::{PackerBuilder, conditions::get_condition};
use aws_sim::{Account, AwsEmulator, SeedImage};
use control_plane::{
    cluster::{ClusterOptions, TestCluster},
    process::Controllers,
};
use k8s_openapi::api::{batch::v1::Job, core::v1::Secret};
use kube::{
    Api, Client, CustomResourceExt, ResourceExt,
    api::{ListParams, PostParams},
};
use kube_sim::executor::ExecutorOptions;
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

/// Messages received by the fake Slack Web API: (channel, text).
type SlackInbox = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

const SLACK_TOKEN: &str = "xoxb-sentinel-slack";

/// A local `chat.postMessage` that checks the bot token and records what it receives.
async fn fake_slack() -> (String, SlackInbox) {
    let inbox = SlackInbox::default();
    let recorded = inbox.clone();
    let app = axum::Router::new().route(
        "/api/chat.postMessage",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let inbox = recorded.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                if auth != format!("Bearer {SLACK_TOKEN}") {
                    return json!({"ok": false, "error": "invalid_auth"}).to_string();
                }
                let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let channel = value["channel"].as_str().unwrap_or_default().to_owned();
                let text = value["text"].as_str().unwrap_or_default().to_owned();
                inbox.lock().expect("inbox").push((channel, text));
                json!({"ok": true}).to_string()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (format!("http://{addr}/api"), inbox)
}

struct Harness {
    aws: AwsEmulator,
    cluster: TestCluster,
    /// The test's namespace (`default` on kube-sim).
    ns: String,
    client: Client,
    kubeconfig: tempfile::NamedTempFile,
    repo: tempfile::TempDir,
    controllers: Controllers,
    slack_api: String,
    slack: SlackInbox,
}

impl Harness {
    async fn start() -> Self {
        let aws = AwsEmulator::start().await.expect("emulator");
        let env = aws.packer_job_env(REGION);
        let cluster = TestCluster::start(ClusterOptions {
            pods: Some(ExecutorOptions {
                extra_env: env,
                ..ExecutorOptions::default()
            }),
        })
        .await
        .expect("api server");
        let kubeconfig = tempfile::NamedTempFile::new().expect("kubeconfig");
        cluster.write_kubeconfig(kubeconfig.path()).expect("write kubeconfig");
        let client = cluster.client().await.expect("client");
        cluster
            .install_crds(&client, &[PackerBuilder::crd()])
            .await
            .expect("CRD");
        let ns = cluster.namespace().to_owned();
        create_secrets(&cluster, &client, &ns).await;
        let repo = tempfile::tempdir().expect("repo");
        aws_sim::sample_packer_repo(repo.path(), "packer/generic-fips").expect("sample repo");
        let (slack_api, slack) = fake_slack().await;
        Self {
            aws,
            cluster,
            ns,
            client,
            kubeconfig,
            repo,
            controllers: Controllers::new(),
            slack_api,
            slack,
        }
    }
}

/// The namespace (as a real API server needs it) and the Secrets the seed PackerBuilder names, in `namespace`.
async fn create_secrets(cluster: &TestCluster, client: &Client, namespace: &str) {
    cluster.create_namespace(client, namespace).await.expect("namespace");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for (name, data) in [
        (
            "aws-creds",
            json!({"AWS_ACCESS_KEY_ID": "dGVzdGluZw==", "AWS_SECRET_ACCESS_KEY": "dGVzdGluZw=="}),
        ),
        ("git-sync", json!({"username": "Ym90", "token": "c2VudGluZWw="})),
        ("slack-token", json!({"token": "eG94Yi1zZW50aW5lbC1zbGFjaw=="})),
    ] {
        let s: Secret = serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).expect("secret");
        secrets.create(&PostParams::default(), &s).await.expect("secret");
    }
}

impl Harness {
    fn start_controller(&mut self) {
        self.start_controller_with(&[]);
    }

    /// Starts the binary; what it logs goes to the common log (`controller_log`).
    fn start_controller_with(&mut self, env: &[(&str, &str)]) {
        let mut vars: Vec<(String, String)> = vec![
            ("KUBECONFIG".into(), self.kubeconfig.path().display().to_string()),
            ("SLACK_API_URL".into(), self.slack_api.clone()),
        ];
        vars.extend(self.aws.child_env(REGION));
        vars.extend(self.cluster.controller_env(&[]));
        vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self.controllers
            .spawn(env!("CARGO_BIN_EXE_packer-build-controller"), vars);
    }

    fn controller_log(&self) -> String {
        self.controllers.log()
    }

    async fn base_lookups(&self, filter_value: &str) -> usize {
        let calls = self.aws.calls(&Account(DEFAULT_ACCOUNT.into())).await.expect("calls");
        calls
            .iter()
            .filter(|c| c.action == "DescribeImages" && c.has_param_value(filter_value))
            .count()
    }

    /// Waits for the last started controller process to exit by itself (a failpoint) and returns its status.
    async fn controller_exited(&mut self) -> std::process::ExitStatus {
        self.controllers.exited(Duration::from_secs(120)).await
    }

    async fn stop_controller(&mut self) {
        self.controllers.stop().await;
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
        self.aws.seed_image(&account, REGION, image).await.expect("seed")
    }

    /// The base AMI most tests build from: the seed filters match it.
    async fn seed_default_base(&self) -> String {
        self.seed_base(
            "amazon-eks-node-al2023-x86_64-standard-1.30-v20261001",
            "2026-10-01T00:00:00Z",
        )
        .await
    }

    /// The seed PackerBuilder of the original README, pointed at the local sample project.
    /// An AMI of `builder` tagged as the Go operator tagged them (no `created-by-namespace`), created at `created`
    /// (`%Y-%m-%dT%H:%M:%SZ`) from `base`.
    async fn seed_go_operator_ami(&self, builder: &PackerBuilder, base: &str, created: &str) -> String {
        let tags: BTreeMap<String, String> = [
            ("brought-to-you-by", "opsy-the-ami-operator"),
            ("cluster-name", builder.spec.cluster_name.as_str()),
            ("created-by", "packer-builder-local"),
            ("packer-repo", builder.spec.builder.repo_url.as_str()),
            ("packer-repo-branch", builder.spec.builder.branch.as_str()),
            ("build-id", "728d7a64-ca85-42c9-9acd-60c681d4efe3"),
            ("job-id", "3cb1b"),
            ("base-ami", base),
            ("create-timestamp", created),
            ("status", "active"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let image = SeedImage {
            name: format!("go-operator-built-{created}").replace(':', "-"),
            owner_id: DEFAULT_ACCOUNT.into(),
            creation_date: created.to_owned(),
            tags,
            public: false,
            ..SeedImage::default()
        };
        self.aws
            .seed_image(&Account(DEFAULT_ACCOUNT.into()), REGION, image)
            .await
            .expect("seed")
    }

    fn seed_builder(&self) -> PackerBuilder {
        let text = std::fs::read_to_string(workspace().join("examples/seed/packerbuilder-000.yaml")).expect("seed");
        let mut doc: serde_json::Value = serde_norway::from_str(&text).expect("yaml");
        doc["spec"]["builder"]["repoURL"] = json!(format!("file://{}", self.repo.path().display()));
        doc["spec"]["builder"]["dir"] = json!("packer/generic-fips");
        doc["spec"]["builder"]["commands"][0]["variables"] = json!({"ec2_endpoint": self.aws.endpoint()});
        doc["metadata"]["namespace"] = json!(self.ns);
        serde_json::from_value(doc).expect("typed")
    }

    async fn wait_for(&self, name: &str, what: &str, done: impl Fn(&PackerBuilder) -> bool) -> PackerBuilder {
        self.wait_for_in(&self.ns, name, what, done).await
    }

    async fn wait_for_in(
        &self,
        namespace: &str,
        name: &str,
        what: &str,
        done: impl Fn(&PackerBuilder) -> bool,
    ) -> PackerBuilder {
        let api: Api<PackerBuilder> = Api::namespaced(self.client.clone(), namespace);
        let every = Duration::from_millis(250);
        match control_plane::cluster::wait_for_object(&api, name, WAIT, every, done).await {
            Ok(pb) => pb,
            Err(last) => {
                let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(self.client.clone(), namespace);
                let containers: Vec<_> = pods
                    .list(&ListParams::default())
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| {
                        let status = p.status.unwrap_or_default();
                        let states: Vec<_> = status
                            .init_container_statuses
                            .unwrap_or_default()
                            .into_iter()
                            .chain(status.container_statuses.unwrap_or_default())
                            .map(|c| (c.name, c.state))
                            .collect();
                        (p.metadata.name, status.phase, states)
                    })
                    .collect();
                panic!(
                    "{name} did not reach {what}; status: {:#?}\npods: {containers:#?}",
                    last.and_then(|pb| pb.status)
                )
            }
        }
    }

    /// Waits until the seed PackerBuilder is Ready from a successful build.
    async fn wait_built(&self) -> PackerBuilder {
        self.wait_for("packer-builder-local", "Ready", |pb| {
            ready_reason(pb).as_deref() == Some("BuildSucceeded")
        })
        .await
    }

    async fn jobs(&self) -> Vec<Job> {
        self.jobs_in(&self.ns).await
    }

    async fn jobs_in(&self, namespace: &str) -> Vec<Job> {
        Api::<Job>::namespaced(self.client.clone(), namespace)
            .list(&ListParams::default())
            .await
            .expect("jobs")
            .items
    }

    /// The value of an SSM parameter (checked to have data type `aws:ec2:image`) and how many versions its history
    /// has.
    async fn published(&self, name: &str) -> (String, usize) {
        let sdk = self.aws.sdk_config(REGION).await;
        let ssm = self.aws.ssm(&sdk, &Account(DEFAULT_ACCOUNT.into()));
        let parameter = ssm.get_parameter().name(name).send().await.expect("parameter");
        let parameter = parameter.parameter().expect("parameter");
        assert_eq!(parameter.data_type(), Some("aws:ec2:image"));
        let history = ssm.get_parameter_history().name(name).send().await.expect("history");
        (
            parameter.value().unwrap_or_default().to_owned(),
            history.parameters().len(),
        )
    }

    /// One AMI as DescribeImages shows it to the default account.
    async fn describe_image(&self, ami: &str) -> aws_sdk_ec2::types::Image {
        let sdk = self.aws.sdk_config(REGION).await;
        let out = self
            .aws
            .ec2(&sdk, &Account(DEFAULT_ACCOUNT.into()))
            .describe_images()
            .image_ids(ami)
            .send()
            .await
            .expect("describe");
        out.images()[0].clone()
    }

    /// EC2's `DeprecationTime` of an AMI.
    async fn image_deprecation(&self, ami: &str) -> Option<jiff::Timestamp> {
        self.describe_image(ami)
            .await
            .deprecation_time()
            .and_then(|t| t.parse().ok())
    }

    async fn image_tags(&self, ami: &str) -> BTreeMap<String, String> {
        self.describe_image(ami)
            .await
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
            .collect()
    }
}

impl Harness {
    /// The seed PackerBuilder notifying an SNS topic named `topic` and sending e-mail from `from` to `to`; the topic
    /// and the sender identity are created in the emulator.
    async fn builder_notifying_aws(&self, topic: &str, from: &str, to: &str) -> PackerBuilder {
        let account = Account(DEFAULT_ACCOUNT.into());
        let sdk = self.aws.sdk_config(REGION).await;
        let topic_arn = self
            .aws
            .sns(&sdk, &account)
            .create_topic()
            .name(topic)
            .send()
            .await
            .expect("topic")
            .topic_arn
            .expect("arn");
        self.aws
            .sesv2(&sdk, &account)
            .create_email_identity()
            .email_identity(from)
            .send()
            .await
            .expect("identity");
        let mut builder = self.seed_builder();
        let notifier = builder.spec.notifier.get_or_insert_with(Default::default);
        notifier.sns = Some(api_types::packer_builder::SnsSpec { topic_arn });
        notifier.ses = Some(api_types::packer_builder::SesSpec {
            from: from.into(),
            to: vec![to.into()],
        });
        builder
    }
}

/// Polls `probe` until it returns `Some` (at most 30 s): for what the controller does in the background, such as
/// delivering queued notifications.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut probe: impl FnMut() -> F) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
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
    h.seed_default_base().await;
    h.start_controller();
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &h.seed_builder())
        .await
        .expect("apply");

    let pb = h.wait_built().await;
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
    assert_eq!(tags["created-by-namespace"], h.ns);
    assert_eq!(tags["base-ami"], base);
    assert_eq!(tags["status"], "active");
    assert_eq!(tags["build-id"], status.build_id.clone().expect("build id"));
    assert_eq!(
        tags.get("build-config"),
        status.build_config_hash.as_ref(),
        "the build configuration recorded at build start is on the AMI"
    );
    assert!(!tags["packer-repo"].is_empty());

    let jobs = h.jobs().await;
    assert_eq!(jobs.len(), 1, "exactly one build Job");
    // Requeues after Ready must not announce anything again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = h.controller_log();
    let notifications: Vec<&str> = log.lines().filter(|l| l.contains(" notification: ")).collect();
    assert_eq!(
        notifications.len(),
        2,
        "one notification per transition (Building, Ready): {notifications:#?}"
    );
    assert!(notifications[0].contains("reason=BuildStarted") && notifications[1].contains("reason=BuildSucceeded"));
    // Delivery is queued outside the reconcile: wait for it, then check nothing more arrives.
    eventually("two Slack messages", || async {
        (h.slack.lock().expect("inbox").len() >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let slack = h.slack.lock().expect("inbox").clone();
    assert_eq!(slack.len(), 2, "one Slack message per transition: {slack:?}");
    assert!(slack.iter().all(|(channel, _)| channel == "SLACK_CHANNEL_IDS"));
    assert!(
        slack[0].1.contains("BuildStarted") && slack[1].1.contains("BuildSucceeded"),
        "{slack:?}"
    );
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
    let existing = h.seed_go_operator_ami(&builder, &base, &created).await;
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
    assert_eq!(tags["created-by-namespace"], h.ns);
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

const BASE_NAME_FILTER: &str = "amazon-eks-node-al2023-x86_64-standard-1.30*";

fn job_names(jobs: &[Job]) -> Vec<String> {
    jobs.iter().map(ResourceExt::name_any).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_world_causes_no_rebuild_and_a_newer_base_ami_causes_exactly_one() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    h.start_controller_with(&[("BASE_AMI_CACHE_TTL", "1s"), ("RESYNC_INTERVAL", "1s")]);
    let mut builder = h.seed_builder();
    builder.spec.publish = Some(api_types::packer_builder::PublishSpec {
        ssm_parameter: "/opsy/ami/test/latest".into(),
    });
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &builder).await.expect("apply");
    let first = h.wait_built().await;
    let first_ami = first.status.and_then(|s| s.last_run_built_image_id).expect("ami");
    assert_eq!(h.published("/opsy/ami/test/latest").await, (first_ami.clone(), 1));

    // Several resync periods (RESYNC_INTERVAL=1s) of an unchanged world: re-checks, but no build.
    let lookups_before = h.base_lookups(BASE_NAME_FILTER).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(h.jobs().await.len(), 1, "an unchanged world must not rebuild");
    let lookups_after = h.base_lookups(BASE_NAME_FILTER).await;
    assert!(
        lookups_after > lookups_before,
        "the base AMI is re-checked every resync period ({lookups_before} -> {lookups_after})"
    );
    let calls = h.aws.calls(&Account(DEFAULT_ACCOUNT.into())).await.expect("calls");
    assert_eq!(calls.iter().filter(|c| c.action == "CreateImage").count(), 1);
    // Re-checked every second, published once: the parameter's history has one version per AMI.
    assert_eq!(h.published("/opsy/ami/test/latest").await, (first_ami.clone(), 1));

    let newer = h
        .seed_base(
            "amazon-eks-node-al2023-x86_64-standard-1.30-v20261115",
            "2026-11-15T00:00:00Z",
        )
        .await;
    let rebuilt = h
        .wait_for("packer-builder-local", "a rebuild from the newer base", |pb| {
            let built_from_newer = pb.status.as_ref().is_some_and(|s| {
                s.last_run_base_image_id.as_deref() == Some(newer.as_str())
                    && s.job_status.as_deref() == Some("completed")
            });
            built_from_newer && ready_reason(pb).as_deref() == Some("BuildSucceeded")
        })
        .await;
    let second_ami = rebuilt.status.and_then(|s| s.last_run_built_image_id).expect("ami");
    assert_ne!(first_ami, second_ami);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let jobs = h.jobs().await;
    assert_eq!(
        jobs.len(),
        2,
        "exactly one rebuild for one new base AMI: {:?}",
        job_names(&jobs)
    );
    assert_eq!(
        h.image_tags(&first_ami).await["status"],
        "deprecated",
        "the older AMI is deprecated"
    );
    assert_eq!(h.image_tags(&second_ami).await["status"], "active");
    // The parameter follows the rollover.
    assert_eq!(h.published("/opsy/ami/test/latest").await, (second_ami.clone(), 2));
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn same_named_builders_in_two_namespaces_each_build_once_and_never_deprecate_each_other() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    let team_b_ns = h.cluster.scoped("team-b");
    create_secrets(&h.cluster, &h.client, &team_b_ns).await;
    h.cluster.run_pods_in(&h.client, &team_b_ns).await.expect("pods");
    // On the real server the controller watches this test's two namespaces (on kube-sim: all).
    let watch = h.cluster.controller_env(&[&team_b_ns]);
    let mut env: Vec<(&str, &str)> = watch.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.push(("BASE_AMI_CACHE_TTL", "1s"));
    env.push(("RESYNC_INTERVAL", "1s"));
    h.start_controller_with(&env);
    // Same name, cluster, repository and branch; only the namespace differs.
    let team_a = h.seed_builder();
    let mut team_b = team_a.clone();
    team_b.metadata.namespace = Some(team_b_ns.clone());
    // Tenants name their AMIs apart: EC2 refuses two AMIs with the same name in one account and region, and the
    // sample project names them by the second they were made in.
    team_b.spec.builder.commands[0]
        .variables
        .insert("ami_name_prefix".into(), "team-b".into());
    for builder in [&team_a, &team_b] {
        let ns = builder.metadata.namespace.clone().expect("namespace");
        Api::<PackerBuilder>::namespaced(h.client.clone(), &ns)
            .create(&PostParams::default(), builder)
            .await
            .expect("apply");
    }
    let built = |pb: &PackerBuilder| ready_reason(pb).as_deref() == Some("BuildSucceeded");
    let a = h.wait_for_in(&h.ns, "packer-builder-local", "Ready", built).await;
    let b = h.wait_for_in(&team_b_ns, "packer-builder-local", "Ready", built).await;
    let ami_a = a.status.and_then(|s| s.last_run_built_image_id).expect("ami");
    let ami_b = b.status.and_then(|s| s.last_run_built_image_id).expect("ami");
    assert_ne!(ami_a, ami_b);

    // Several resync periods: before the fix, each build deprecated the other's AMI and both rebuilt.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for namespace in [h.ns.as_str(), team_b_ns.as_str()] {
        let jobs = h.jobs_in(namespace).await;
        let outcomes: Vec<_> = jobs
            .iter()
            .map(|j| {
                (
                    j.metadata.name.clone(),
                    j.status.as_ref().and_then(|s| s.conditions.clone()),
                )
            })
            .collect();
        assert_eq!(
            jobs.len(),
            1,
            "{namespace} built once: {outcomes:#?}\ncontroller log tail:\n{}",
            h.controller_log().lines().rev().take(60).collect::<Vec<_>>().join("\n")
        );
    }
    let calls = h.aws.calls(&Account(DEFAULT_ACCOUNT.into())).await.expect("calls");
    assert_eq!(calls.iter().filter(|c| c.action == "CreateImage").count(), 2);
    for (ami, namespace) in [(&ami_a, h.ns.as_str()), (&ami_b, team_b_ns.as_str())] {
        let tags = h.image_tags(ami).await;
        assert_eq!(
            tags["status"], "active",
            "{ami} of {namespace} was not touched by the other"
        );
        assert_eq!(tags["created-by-namespace"], namespace);
    }
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_create_tags_after_a_good_build_is_retried_and_never_counted_as_a_failed_build() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    h.start_controller();
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &h.seed_builder())
        .await
        .expect("apply");
    let running = h
        .wait_for("packer-builder-local", "a running build", |pb| {
            pb.status.as_ref().and_then(|s| s.job_status.as_deref()) == Some("running")
        })
        .await;
    // Stop the controller while Packer builds, so the throttling below hits the controller's calls, not Packer's.
    h.stop_controller().await;
    let job = running.status.and_then(|s| s.job_name).expect("job name");
    let jobs: Api<Job> = Api::default_namespaced(h.client.clone());
    let complete = async {
        loop {
            let done = jobs
                .get(&job)
                .await
                .expect("job")
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Complete" && c.status == "True"));
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::time::timeout(WAIT, complete)
        .await
        .expect("the build Job completes");
    // The next ten CreateTags are throttled: three times the SDK's own three attempts and one more, so three
    // reconciles in a row fail.
    h.aws
        .inject(&aws_sim::Fault::error(
            "ec2",
            "CreateTags",
            400,
            "RequestLimitExceeded",
            10,
        ))
        .await
        .expect("fault");
    h.start_controller_with(&[("RETRY_BASE_DELAY", "200ms")]);
    let pb = h.wait_built().await;
    let status = pb.status.expect("status");
    assert_eq!(status.failed_job_count, 0, "a throttled call is not a failed build");
    assert_eq!(status.last_run_status.as_deref(), Some("succeeded"));
    assert_eq!(h.jobs().await.len(), 1, "no second build");
    let ami = status.last_run_built_image_id.expect("ami");
    let tags = h.image_tags(&ami).await;
    assert_eq!(tags["status"], "active");
    assert_eq!(tags["build-id"], status.build_id.expect("build id"));
    // Each failed reconcile waited twice as long as the one before (200 ms doubling), in the controller's own words.
    let delays = control_plane::process::retry_delays(&h.controller_log(), "AWSThrottled");
    assert!(delays.len() >= 3, "three throttled reconciles: {delays:?}");
    assert_eq!(
        delays[..3],
        [200, 400, 800].map(Duration::from_millis),
        "growing back-off"
    );
    assert!(
        h.event_notes("BuildFailed").await.is_empty(),
        "no failed build announced"
    );
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_of_what_shapes_the_image_builds_once_and_a_cosmetic_change_does_not() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    h.start_controller_with(&[("BASE_AMI_CACHE_TTL", "1s"), ("RESYNC_INTERVAL", "1s")]);
    let builder = h.seed_builder();
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &builder).await.expect("apply");
    let first = h.wait_built().await;
    let first_ami = first.status.and_then(|s| s.last_run_built_image_id).expect("ami");

    // Colour of Packer's output changes logs, not the image: no build.
    let patch =
        |commands: serde_json::Value| kube::api::Patch::Merge(json!({"spec": {"builder": {"commands": commands}}}));
    let mut commands = serde_json::to_value(&builder.spec.builder.commands).expect("commands");
    commands[0]["color"] = json!(true);
    api.patch(
        "packer-builder-local",
        &kube::api::PatchParams::default(),
        &patch(commands.clone()),
    )
    .await
    .expect("patch");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(h.jobs().await.len(), 1, "a cosmetic change builds nothing");

    // A Packer variable shapes the image: exactly one build.
    commands[0]["variables"]["ami_name_prefix"] = json!("changed");
    api.patch(
        "packer-builder-local",
        &kube::api::PatchParams::default(),
        &patch(commands),
    )
    .await
    .expect("patch");
    let rebuilt = h
        .wait_for("packer-builder-local", "a rebuild for the new configuration", |pb| {
            pb.status.as_ref().is_some_and(|s| {
                s.last_run_built_image_id.as_deref().is_some_and(|a| a != first_ami)
                    && s.job_status.as_deref() == Some("completed")
            })
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(h.jobs().await.len(), 2, "{:?}", job_names(&h.jobs().await));
    let second_ami = rebuilt
        .status
        .as_ref()
        .and_then(|s| s.last_run_built_image_id.clone())
        .expect("ami");
    let (old_tags, new_tags) = (h.image_tags(&first_ami).await, h.image_tags(&second_ami).await);
    assert_ne!(old_tags["build-config"], new_tags["build-config"]);
    assert_eq!(old_tags["status"], "deprecated");
    assert_eq!(new_tags["status"], "active");
    // EC2's own deprecation: the new AMI at its expiry (create-timestamp + expiresIn 48h, on a whole minute), the
    // superseded one from the next minute.
    let created: jiff::Timestamp = new_tags["create-timestamp"].parse().expect("create-timestamp");
    let new_at = h.image_deprecation(&second_ami).await.expect("new AMI DeprecationTime");
    let expiry = created + jiff::SignedDuration::from_hours(48);
    assert!(
        new_at >= expiry && new_at < expiry + jiff::SignedDuration::from_secs(60),
        "{new_at} vs {expiry}"
    );
    let old_at = h.image_deprecation(&first_ami).await.expect("old AMI DeprecationTime");
    assert!(
        old_at <= jiff::Timestamp::now() + jiff::SignedDuration::from_secs(61),
        "superseded: deprecated now, not at its expiry: {old_at}"
    );
    h.stop_controller().await;
}

/// `expiresIn` is at least 1h (refused at apply time below that), so the test does not wait for an expiry: it
/// seeds an adoptable AMI that expires a few seconds after the controller adopts it. With `controllerTimer: 1h` the
/// rebuild can only come from the re-check the controller schedules at the AMI's expiry.
#[tokio::test(flavor = "multi_thread")]
async fn a_kept_ami_is_rebuilt_once_at_its_expiry_not_at_the_next_controller_timer() {
    let mut h = Harness::start().await;
    let base = h.seed_default_base().await;
    let mut builder = h.seed_builder();
    builder.spec.time_outs.controller_timer = api_types::HumanDuration::new("1h");
    builder.spec.time_outs.expires_in = api_types::HumanDuration::new("1h");
    let created = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_secs(3600 - 15))
        .expect("time")
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let adopted = h.seed_go_operator_ami(&builder, &base, &created).await;
    h.start_controller();
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &builder).await.expect("apply");
    let pb = h
        .wait_for("packer-builder-local", "Ready", |pb| ready_reason(pb).is_some())
        .await;
    assert_eq!(ready_reason(&pb).as_deref(), Some("AMIAdopted"), "{:?}", pb.status);
    assert!(h.jobs().await.is_empty(), "a fresh AMI is kept, not rebuilt");
    let second = h
        .wait_for("packer-builder-local", "a rebuild after expiry", |pb| {
            pb.status
                .as_ref()
                .and_then(|s| s.last_run_built_image_id.as_deref())
                .is_some_and(|a| a != adopted)
                && ready_reason(pb).as_deref() == Some("BuildSucceeded")
        })
        .await;
    let message = second.status.and_then(|s| s.last_run_message).unwrap_or_default();
    assert!(message.contains("built and verified"), "{message}");
    assert_eq!(h.jobs().await.len(), 1, "exactly one rebuild");
    assert_eq!(h.image_tags(&adopted).await["status"], "deprecated");
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_builds_count_up_retry_with_packer_log_stop_at_max_and_resume_after_a_spec_change() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    h.start_controller_with(&[("BUILD_RETRY_BASE_DELAY", "1s")]);
    let mut builder = h.seed_builder();
    builder.spec.builder.commands[0].debug = false;
    builder.spec.builder.dir = "packer/does-not-exist".into();
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &builder).await.expect("apply");

    let degraded = h
        .wait_for("packer-builder-local", "Degraded", |pb| {
            pb.status.as_ref().is_some_and(|s| s.failed_job_count >= 3)
        })
        .await;
    let status = degraded.status.expect("status");
    assert_eq!(status.failed_job_count, 3);
    let degraded_condition = get_condition(&status.conditions, "Degraded").expect("Degraded");
    assert_eq!(
        (degraded_condition.status.as_str(), degraded_condition.reason.as_str()),
        ("True", "MaxFailedJobsReached")
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut jobs = h.jobs().await;
    assert_eq!(jobs.len(), 3, "no build after maxFailedJobs: {:?}", job_names(&jobs));
    jobs.sort_by_key(|j| j.metadata.creation_timestamp.clone().map(|t| t.0));
    let packer_log = |job: &Job| {
        job.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .is_some_and(|p| {
                p.containers
                    .iter()
                    .chain(p.init_containers.iter().flatten())
                    .filter(|c| c.name.starts_with("packer-"))
                    .all(|c| {
                        c.env
                            .iter()
                            .flatten()
                            .any(|e| e.name == "PACKER_LOG" && e.value.as_deref() == Some("1"))
                    })
            })
    };
    let debug: Vec<bool> = jobs.iter().map(packer_log).collect();
    assert_eq!(debug, [false, true, true], "retries run with PACKER_LOG=1");

    // Fixing the spec (a new generation) resets the count and builds again.
    let mut fixed = api.get("packer-builder-local").await.expect("get");
    fixed.spec.builder.dir = "packer/generic-fips".into();
    api.replace("packer-builder-local", &PostParams::default(), &fixed)
        .await
        .expect("fix");
    let ok = h
        .wait_for("packer-builder-local", "Ready after the fix", |pb| {
            ready_reason(pb).as_deref() == Some("BuildSucceeded")
        })
        .await;
    assert_eq!(ok.status.map(|s| s.failed_job_count), Some(0));
    assert_eq!(h.jobs().await.len(), 4);
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_builders_share_one_base_lookup_and_one_managed_lookup_per_cluster() {
    let mut h = Harness::start().await;
    let base = h
        .seed_base(
            "amazon-eks-node-al2023-x86_64-standard-1.30-v20261001",
            "2026-10-01T00:00:00Z",
        )
        .await;
    let template = h.seed_builder();
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    // 40 builders for the seed's cluster, 10 for another.
    let cluster = |i: usize| if i < 40 { "opsy-gitops" } else { "opsy-other" };
    let mut images = Vec::new();
    for i in 0..50 {
        let tags: BTreeMap<String, String> = [
            ("brought-to-you-by", "opsy-the-ami-operator".to_owned()),
            ("cluster-name", cluster(i).to_owned()),
            ("created-by", format!("builder-{i}")),
            ("created-by-namespace", h.ns.clone()),
            ("packer-repo", template.spec.builder.repo_url.clone()),
            ("packer-repo-branch", "main".to_owned()),
            ("base-ami", base.clone()),
            ("create-timestamp", now.clone()),
            ("status", "active".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        images.push(SeedImage {
            name: format!("built-{i}"),
            owner_id: DEFAULT_ACCOUNT.into(),
            creation_date: now.clone(),
            tags,
            ..SeedImage::default()
        });
    }
    h.aws
        .seed_images(&Account(DEFAULT_ACCOUNT.into()), REGION, &images)
        .await
        .expect("seed managed AMIs");
    h.start_controller();
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    for i in 0..50 {
        let mut pb = template.clone();
        pb.metadata.name = Some(format!("builder-{i}"));
        pb.spec.cluster_name = cluster(i).to_owned();
        api.create(&PostParams::default(), &pb).await.expect("create");
    }
    let all_ready = async {
        loop {
            let list = api.list(&ListParams::default()).await.expect("list");
            if list.items.iter().filter(|pb| ready_reason(pb).is_some()).count() == 50 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::time::timeout(WAIT, all_ready).await.expect("all 50 Ready");
    assert!(h.jobs().await.is_empty(), "every builder already had its AMI");
    assert_eq!(
        h.base_lookups(BASE_NAME_FILTER).await,
        1,
        "one DescribeImages for 50 builders within the TTL"
    );
    for (name, builders) in [("opsy-gitops", 40), ("opsy-other", 10)] {
        assert_eq!(
            h.base_lookups(name).await,
            1,
            "one managed-AMI DescribeImages for the {builders} builders of cluster {name} within the TTL"
        );
    }
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_value_reaches_logs_status_or_events() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    h.start_controller();
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &h.seed_builder())
        .await
        .expect("apply");
    let pb = h.wait_built().await;
    h.stop_controller().await;
    // The Secrets of the harness hold "sentinel" (git token) and "testing" (AWS keys, base64 in the Secret).
    let status = serde_json::to_string(&pb.status).expect("status");
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(h.client.clone());
    let events =
        serde_json::to_string(&events.list(&ListParams::default()).await.expect("events").items).expect("events");
    let log = h.controller_log();
    assert!(log.contains("packer-build-controller starting"), "the log was captured");
    for (place, text) in [("status", &status), ("events", &events), ("controller log", &log)] {
        assert!(!text.contains("sentinel"), "a Secret value leaked into the {place}");
        assert!(!text.contains(SLACK_TOKEN), "the Slack token leaked into the {place}");
        assert!(!text.contains("c2VudGluZWw="), "a Secret value leaked into the {place}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_controller_restart_during_a_build_follows_the_same_job() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    // Slow the build down so the controller can be killed while the Job runs.
    h.aws
        .inject(&aws_sim::Fault {
            service: "ec2".into(),
            action: "CreateImage".into(),
            status: 200,
            code: None,
            count: 1,
            delay_ms: 4000,
            account: None,
            message: None,
        })
        .await
        .expect("delay");
    h.start_controller();
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &h.seed_builder())
        .await
        .expect("apply");
    h.wait_for("packer-builder-local", "Building", |pb| {
        matches!(
            pb.status.as_ref().and_then(|s| s.job_status.as_deref()),
            Some("pending" | "running")
        )
    })
    .await;
    // Notifications are delivered from an in-memory queue: one still queued when the process is killed is lost
    // (documented). Kill only once BuildStarted was delivered, so the test checks what a restart promises: it
    // neither resends nor skips a transition that was announced.
    eventually("the BuildStarted Slack message", || async {
        (!h.slack.lock().expect("inbox").is_empty()).then_some(())
    })
    .await;
    // Killed while building: either before the Job was created (the restart creates it) or after (the restart
    // follows it). Either way there must be exactly one Job in the end.
    h.stop_controller().await;
    assert!(h.jobs().await.len() <= 1);
    h.start_controller();
    let pb = h.wait_built().await;
    let jobs = h.jobs().await;
    assert_eq!(
        jobs.len(),
        1,
        "the restarted controller followed the running Job: {:?}",
        job_names(&jobs)
    );
    assert_eq!(
        jobs[0].name_any(),
        pb.status.and_then(|s| s.job_name).expect("job name")
    );
    eventually("two Slack messages", || async {
        (h.slack.lock().expect("inbox").len() >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let slack = h.slack.lock().expect("inbox").clone();
    let texts: Vec<&str> = slack.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        texts.len(),
        2,
        "a restart neither resends nor skips notifications: {texts:?}"
    );
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_secret_is_reported_without_building_or_hot_looping() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    h.start_controller();
    let mut builder = h.seed_builder();
    builder.spec.builder.secret = Some("no-such-secret".into());
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &builder).await.expect("apply");
    let pb = h
        .wait_for("packer-builder-local", "SecretNotFound", |pb| {
            pb.status
                .as_ref()
                .and_then(|s| get_condition(&s.conditions, "Ready"))
                .is_some_and(|c| c.reason == "SecretNotFound")
        })
        .await;
    let ready = get_condition(&pb.status.as_ref().expect("status").conditions, "Ready")
        .cloned()
        .expect("Ready");
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("no-such-secret"), "{}", ready.message);
    let calls_then = h
        .aws
        .calls(&Account(DEFAULT_ACCOUNT.into()))
        .await
        .expect("calls")
        .len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(h.jobs().await.is_empty(), "nothing is built for an invalid spec");
    let calls_now = h
        .aws
        .calls(&Account(DEFAULT_ACCOUNT.into()))
        .await
        .expect("calls")
        .len();
    assert_eq!(
        calls_now, calls_then,
        "no AWS call while the spec is invalid (no hot loop)"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(h.client.clone());
    let warnings: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter_map(|e| e.reason)
        .collect();
    assert_eq!(warnings, ["SecretNotFound"], "one Warning Event, not one per reconcile");
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_packer_builder_deletes_its_running_job_and_leaves_amis_alone() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    h.start_controller();
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &h.seed_builder())
        .await
        .expect("apply");
    let pb = h.wait_built().await;
    let ami = pb.status.and_then(|s| s.last_run_built_image_id).expect("ami");
    assert_eq!(h.jobs().await.len(), 1);
    api.delete("packer-builder-local", &Default::default())
        .await
        .expect("delete");
    let gone = async {
        while !h.jobs().await.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(WAIT, gone)
        .await
        .expect("the Job is garbage-collected with its owner");
    assert_eq!(h.image_tags(&ami).await["status"], "active", "AMIs are left alone");
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_controller_processes_without_leader_election_start_one_build_per_packer_builder() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    // Two processes that both believe they lead (leader election off): both see every new PackerBuilder at once.
    h.start_controller_with(&[("POD_NAME", "a"), ("LEADER_ELECT", "false")]);
    h.start_controller_with(&[("POD_NAME", "b"), ("LEADER_ELECT", "false")]);
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    let names: Vec<String> = (0..6).map(|i| format!("pb-{i}")).collect();
    for name in &names {
        let mut builder = h.seed_builder();
        builder.metadata.name = Some(name.clone());
        // Distinct AMI names: EC2 refuses two AMIs with one name, and the sample names them by the second.
        builder.spec.builder.commands[0]
            .variables
            .insert("ami_name_prefix".into(), name.clone());
        api.create(&PostParams::default(), &builder).await.expect("apply");
    }
    for name in &names {
        let pb = h
            .wait_for(name, "Ready", |pb| {
                ready_reason(pb).as_deref() == Some("BuildSucceeded")
            })
            .await;
        let failed = pb.status.map(|s| s.failed_job_count).unwrap_or_default();
        assert_eq!(failed, 0, "{name}: no build failed, so every extra Job is a duplicate");
    }
    let jobs = h.jobs().await;
    assert_eq!(
        jobs.len(),
        names.len(),
        "one Job per PackerBuilder: {:?}",
        job_names(&jobs)
    );
    let calls = h.aws.calls(&Account(DEFAULT_ACCOUNT.into())).await.expect("calls");
    assert_eq!(
        calls.iter().filter(|c| c.action == "CreateImage").count(),
        names.len(),
        "one AMI per PackerBuilder"
    );
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_elect_one_leader_build_once_and_serve_health_and_metrics() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    h.start_controller_with(&[("POD_NAME", "replica-a")]);
    h.start_controller_with(&[("POD_NAME", "replica-b")]);
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &h.seed_builder())
        .await
        .expect("apply");
    h.wait_built().await;
    assert_eq!(h.jobs().await.len(), 1, "one build, however many replicas");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::default_namespaced(h.client.clone());
    let holder = leases
        .get("packer-build-controller")
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity)
        .expect("holder");
    assert!(holder == "replica-a" || holder == "replica-b", "{holder}");

    let log = h.controller_log();
    let addrs: Vec<String> = log
        .lines()
        .filter(|l| l.contains("packer-build-controller starting"))
        .filter_map(|l| {
            l.split("health=")
                .nth(1)
                .map(|a| a.split_whitespace().next().unwrap_or_default().to_owned())
        })
        .collect();
    assert_eq!(addrs.len(), 2, "{log}");
    let mut reconciled = 0;
    for addr in &addrs {
        for path in ["healthz", "readyz"] {
            let status = reqwest::get(format!("http://{addr}/{path}"))
                .await
                .expect("health")
                .status();
            assert!(status.is_success(), "{addr}/{path}: {status}");
        }
        let metrics = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if metrics.contains(r#"packer_build_controller_reconcile_total{result="ok"}"#) {
            reconciled += 1;
        }
    }
    assert_eq!(reconciled, 1, "only the leader reconciles");
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_scoped_controller_never_reads_other_namespaces() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    let elsewhere = h.cluster.scoped("elsewhere");
    h.cluster
        .create_namespace(&h.client, &elsewhere)
        .await
        .expect("namespace");
    let watched = format!("{},kube-public", h.ns);
    h.start_controller_with(&[("WATCH_NAMESPACE", watched.as_str())]);
    let mut outside = h.seed_builder();
    outside.metadata.namespace = Some(elsewhere.clone());
    Api::<PackerBuilder>::namespaced(h.client.clone(), &elsewhere)
        .create(&PostParams::default(), &outside)
        .await
        .expect("outside");
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &h.seed_builder())
        .await
        .expect("inside");
    h.wait_for("packer-builder-local", "Ready", |pb| ready_reason(pb).is_some())
        .await;
    let untouched = Api::<PackerBuilder>::namespaced(h.client.clone(), &elsewhere)
        .get("packer-builder-local")
        .await
        .expect("get");
    assert!(
        untouched.status.is_none(),
        "a PackerBuilder outside the watched namespaces was reconciled"
    );
    // kube-sim records every request; the real server keeps no such record (its RBAC test covers the real case).
    let cluster_wide: Vec<_> = h
        .cluster
        .requests()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| {
            (r.verb == "list" || r.verb == "watch")
                && r.namespace.is_empty()
                && r.resource != "customresourcedefinitions"
        })
        .collect();
    assert!(
        cluster_wide.is_empty(),
        "cluster-wide reads by a namespaced controller: {cluster_wide:?}"
    );
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_slack_token_becomes_a_warning_event_and_the_build_still_succeeds() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    let secrets: Api<Secret> = Api::default_namespaced(h.client.clone());
    let revoked: Secret = serde_json::from_value(
        json!({"metadata": {"name": "revoked-slack"}, "stringData": {}, "data": {"token": "eG94Yi1yZXZva2Vk"}}),
    )
    .expect("secret");
    secrets.create(&PostParams::default(), &revoked).await.expect("secret");
    let mut builder = h.seed_builder();
    if let Some(slack) = builder.spec.notifier.as_mut().and_then(|n| n.slack.as_mut()) {
        slack.secret = "revoked-slack".into();
    }
    h.start_controller();
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &builder).await.expect("apply");
    h.wait_built().await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(h.client.clone());
    let failed: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("NotificationFailed"))
        .filter_map(|e| e.note)
        .collect();
    assert!(
        !failed.is_empty() && failed.iter().all(|n| n.contains("invalid_auth")),
        "{failed:?}"
    );
    assert!(
        h.slack.lock().expect("inbox").is_empty(),
        "nothing was accepted with a revoked token"
    );
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transitions_are_published_to_sns_and_sent_with_ses() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    let account = Account(DEFAULT_ACCOUNT.into());
    let builder = h
        .builder_notifying_aws("ami-builds", "ami-bot@example.com", "platform@example.com")
        .await;
    // Allowlisted by pattern: delivered.
    h.start_controller_with(&[
        ("SNS_TOPIC_ALLOWLIST", "arn:aws:sns:*:*:ami-*"),
        ("SES_SENDER_ALLOWLIST", "*@example.com"),
    ]);
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &builder).await.expect("apply");
    h.wait_built().await;
    let sent = eventually("two SNS and two SES messages", || async {
        let sent = h.aws.sent(&account, REGION).await.expect("sent");
        let count = |kind: &str| sent[kind].as_array().map_or(0, Vec::len);
        (count("sns") >= 2 && count("ses") >= 2).then_some(sent)
    })
    .await;
    let subjects = |kind: &str| -> Vec<String> {
        sent[kind]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["subject"].as_str().map(str::to_owned))
            .collect()
    };
    let sns = subjects("sns");
    let ses = subjects("ses");
    assert_eq!(sns.len(), 2, "{sns:?}");
    assert!(
        sns[0].contains("BuildStarted") && sns[1].contains("BuildSucceeded"),
        "{sns:?}"
    );
    assert_eq!(ses.len(), 2, "{ses:?}");
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_of_a_build_is_allowed_by_the_chart_rbac() {
    const USER: &str = "system:serviceaccount:opsy-system:opsy-packer-build-controller";
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    let system = h.cluster.scoped("opsy-system");
    h.cluster.create_namespace(&h.client, &system).await.expect("ns");
    let chart = workspace().join("charts/opsy-ami-operator");
    let kubeconfig = tempfile::NamedTempFile::new().expect("kubeconfig");
    match h.cluster.sim() {
        // kube-sim records the requests as the chart's ServiceAccount; they are judged below.
        Some(server) => server.write_kubeconfig_as(kubeconfig.path(), USER).expect("kubeconfig"),
        // The real server judges each request against the chart's RBAC as it is made.
        None => {
            let yaml = h
                .cluster
                .chart_service_account_kubeconfig(&h.client, &chart, &[], &system, "opsy-packer-build-controller")
                .await
                .expect("the chart's RBAC applies to the real server");
            std::fs::write(kubeconfig.path(), yaml).expect("kubeconfig");
        }
    }
    let path = kubeconfig.path().to_string_lossy().into_owned();
    h.start_controller_with(&[
        ("KUBECONFIG", path.as_str()),
        ("LEADER_ELECT", "true"),
        // The Lease name the chart gives release `opsy` (its full name).
        ("LEASE_NAME", "opsy-packer-build-controller"),
        ("POD_NAMESPACE", system.as_str()),
        ("POD_NAME", "pbc-0"),
        ("RESYNC_INTERVAL", "2s"),
        ("BASE_AMI_CACHE_TTL", "1s"),
    ]);
    // With retention, so its requests (the AMIRefresher list before anything is deregistered) are judged too; the
    // kind is installed, as in a cluster running both controllers (kube-sim does not record requests for unknown kinds).
    h.cluster
        .install_crds(&h.client, &[api_types::AMIRefresher::crd()])
        .await
        .expect("AMIRefresher CRD");
    let mut builder = h.seed_builder();
    builder.spec.retention = Some(api_types::packer_builder::RetentionSpec {
        keep: Some(1),
        max_age: None,
        delete_snapshots: true,
        dry_run: false,
    });
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &builder).await.expect("apply");
    let first = h
        .wait_built()
        .await
        .status
        .and_then(|s| s.last_run_built_image_id)
        .expect("ami");
    h.seed_base(
        "amazon-eks-node-al2023-x86_64-standard-1.30-v20261115",
        "2026-11-15T00:00:00Z",
    )
    .await;
    h.wait_for("packer-builder-local", "the second build", |pb| {
        pb.status
            .as_ref()
            .is_some_and(|s| s.last_run_built_image_id.as_ref().is_some_and(|a| a != &first))
            && ready_reason(pb).as_deref() == Some("BuildSucceeded")
    })
    .await;
    eventually("the first AMI deregistered by retention", || async {
        h.image_in(REGION, DEFAULT_ACCOUNT, &first)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    h.stop_controller().await;
    let Some(records) = h.cluster.requests() else {
        let log = h.controller_log();
        let refused: Vec<&str> = log.lines().filter(|l| l.contains("forbidden")).collect();
        assert!(
            refused.is_empty(),
            "the real server refused requests:\n{}",
            refused.join("\n")
        );
        return;
    };
    match kube_sim::rbac::check_chart(
        &chart,
        &[],
        "opsy-system",
        "opsy-packer-build-controller",
        USER,
        &records,
    ) {
        Ok(unused) => eprintln!("rules never used in this run: {unused:#?}"),
        Err(denied) => panic!("requests the chart does not allow:\n{denied}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn access_denied_becomes_status_and_one_warning_event_and_clears_when_access_returns() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    // Every DescribeImages is denied until the policy is fixed (no retry can help).
    h.aws
        .inject(&aws_sim::Fault::error(
            "ec2",
            "DescribeImages",
            403,
            "UnauthorizedOperation",
            10_000,
        ))
        .await
        .expect("fault");
    h.start_controller_with(&[("RETRY_BASE_DELAY", "200ms")]);
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &h.seed_builder())
        .await
        .expect("apply");
    let pb = h
        .wait_for("packer-builder-local", "Ready=False AWSAccessDenied", |pb| {
            pb.status
                .as_ref()
                .and_then(|s| get_condition(&s.conditions, "Ready"))
                .is_some_and(|c| c.status == "False" && c.reason == "AWSAccessDenied")
        })
        .await;
    let ready = get_condition(&pb.status.as_ref().expect("status").conditions, "Ready")
        .expect("Ready")
        .clone();
    assert!(ready.message.contains("UnauthorizedOperation"), "{}", ready.message);
    assert!(
        h.jobs().await.is_empty(),
        "nothing is built while AWS denies the lookups"
    );
    // Several back-off retries later: still one Warning Event for the one state.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(h.client.clone());
    let denied = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("AWSAccessDenied"))
        .count();
    assert_eq!(denied, 1, "one Warning Event, not one per retry");
    h.aws.clear_faults().await.expect("clear");
    h.wait_built().await;
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sns_topic_or_ses_sender_outside_the_allowlists_is_never_used() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    let account = Account(DEFAULT_ACCOUNT.into());
    let builder = h
        .builder_notifying_aws("payments-alerts", "ceo@example.com", "everyone@example.com")
        .await;
    h.start_controller_with(&[
        ("SNS_TOPIC_ALLOWLIST", "arn:aws:sns:*:*:ami-*"),
        ("SES_SENDER_ALLOWLIST", "*@platform.example.com"),
    ]);
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &builder).await.expect("apply");
    h.wait_built().await;
    let sent = h.aws.sent(&account, REGION).await.expect("sent");
    for kind in ["sns", "ses"] {
        assert!(
            sent[kind].as_array().is_none_or(Vec::is_empty),
            "{kind} used outside its allowlist: {sent}"
        );
    }
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::default_namespaced(h.client.clone());
    // The refusal is found by the delivery worker, after the reconcile.
    let notes: Vec<String> = eventually("a NotificationFailed Event naming the SNS allowlist", || async {
        let notes: Vec<String> = events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("NotificationFailed"))
            .filter_map(|e| e.note)
            .collect();
        notes
            .iter()
            .any(|n| n.contains("--sns-topic-allowlist"))
            .then_some(notes)
    })
    .await;
    assert!(notes.iter().any(|n| n.contains("--sns-topic-allowlist")), "{notes:?}");
    // kube's Event recorder folds a second NotificationFailed of the same object into the first Event's series,
    // so the SES refusal is checked in the controller's log.
    eventually("the SES refusal in the log", || async {
        h.controller_log().contains("--ses-sender-allowlist").then_some(())
    })
    .await;
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_build_pod_gets_the_specs_pod_settings_over_the_controllers_defaults() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    let defaults = json!({
        "annotations": {"team": "platform", "karpenter.sh/do-not-disrupt": "false"},
        "resources": {"requests": {"cpu": "100m"}},
    })
    .to_string();
    h.start_controller_with(&[("BUILD_POD_DEFAULTS", defaults.as_str())]);
    let mut builder = h.seed_builder();
    builder.spec.builder.pod = Some(
        serde_json::from_value(json!({
            "annotations": {"karpenter.sh/do-not-disrupt": "true"},
            "resources": {"limits": {"memory": "2Gi"}},
        }))
        .expect("pod"),
    );
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &builder).await.expect("apply");
    h.wait_built().await;
    let jobs = h.jobs().await;
    assert_eq!(jobs.len(), 1);
    let template = jobs[0].spec.clone().expect("spec").template;
    let annotations = template.metadata.and_then(|m| m.annotations).expect("annotations");
    assert_eq!(annotations["karpenter.sh/do-not-disrupt"], "true", "the spec wins");
    assert_eq!(annotations["team"], "platform", "the controller's default is merged in");
    let pod = template.spec.expect("pod spec");
    assert_eq!(pod.automount_service_account_token, Some(false));
    let build = pod
        .containers
        .iter()
        .find(|c| c.name == "packer-build")
        .expect("build container");
    let resources = build.resources.clone().expect("resources");
    assert_eq!(
        resources.limits.expect("limits")["memory"].0,
        "2Gi",
        "the spec's resources replace the default as a whole"
    );
    assert!(
        !resources.requests.unwrap_or_default().contains_key("cpu"),
        "the default cpu request is replaced, not merged"
    );
    h.stop_controller().await;
}

/// A template with two sources (as a multi-architecture project has) reports two AMIs: both are verified, tagged as
/// this build's and listed in status; neither retires the other.
#[tokio::test(flavor = "multi_thread")]
async fn a_template_with_two_sources_records_and_tags_both_amis() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    let template = h.repo.path().join("packer/generic-fips/eks-node.pkr.hcl");
    let text = std::fs::read_to_string(&template).expect("template");
    // A second source: a copy of the sample's `node` source with its own AMI name (Packer 1.6 cannot override a
    // source's set fields inside the build block).
    let start = text
        .find("source \"amazon-ebs\" \"node\" {")
        .expect("the sample's source");
    let end = start + text[start..].find("\n}\n").expect("its end") + 3;
    let second = text[start..end]
        .replace("\"node\"", "\"arm64\"")
        .replace("${var.ami_name_prefix}-", "${var.ami_name_prefix}-arm64-");
    let single = "sources = [\"source.amazon-ebs.node\"]";
    assert!(text.contains(single), "the sample's build block");
    let two = format!(
        "{}{second}",
        text.replace(
            single,
            "sources = [\"source.amazon-ebs.node\", \"source.amazon-ebs.arm64\"]"
        )
    );
    std::fs::write(&template, two).expect("write");
    let git = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "--quiet",
            "-am",
            "two sources",
        ])
        .current_dir(h.repo.path())
        .status()
        .expect("git");
    assert!(git.success());
    h.start_controller();
    let builder = h.seed_builder();
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &builder).await.expect("apply");
    let pb = h.wait_built().await;
    let status = pb.status.expect("status");
    assert_eq!(status.last_run_built_image_ids.len(), 2, "{status:?}");
    assert_eq!(
        status.last_run_built_image_id.as_ref(),
        Some(&status.last_run_built_image_ids[0])
    );
    let build_id = status.build_id.clone().expect("build id");
    let mut names = Vec::new();
    for ami in &status.last_run_built_image_ids {
        let tags = h.image_tags(ami).await;
        assert_eq!(tags["build-id"], build_id, "{ami}: {tags:?}");
        assert_eq!(
            tags["status"], "active",
            "{ami}: neither AMI of the build retires the other"
        );
        names.push(ami.clone());
    }
    assert_ne!(names[0], names[1]);
    let message = status.last_run_message.unwrap_or_default();
    assert!(message.contains(&names[0]) && message.contains(&names[1]), "{message}");
    // A later re-check keeps both and writes nothing new.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.jobs().await.len(), 1);
    h.stop_controller().await;
}

/// The controller is down while the build finishes and the Job is collected (`jobTtl`, or someone deleted it): on
/// restart the AMI is recovered by its `build-id` tag, not counted as a failed build, and nothing is rebuilt.
#[tokio::test(flavor = "multi_thread")]
async fn a_build_whose_job_is_gone_after_it_succeeded_is_recovered_by_its_build_id_tag() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    // Slow the build down so the controller is surely stopped before the Job ends.
    h.aws
        .inject(&aws_sim::Fault {
            service: "ec2".into(),
            action: "CreateImage".into(),
            status: 200,
            code: None,
            count: 1,
            delay_ms: 3000,
            account: None,
            message: None,
        })
        .await
        .expect("delay");
    h.start_controller();
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &h.seed_builder())
        .await
        .expect("apply");
    h.wait_for("packer-builder-local", "running", |pb| {
        pb.status.as_ref().and_then(|s| s.job_status.as_deref()) == Some("running")
    })
    .await;
    h.stop_controller().await;
    let jobs_api: Api<Job> = Api::default_namespaced(h.client.clone());
    let job = h.jobs().await.pop().expect("the build Job").name_any();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done = jobs_api
            .get(&job)
            .await
            .expect("job")
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Complete" && c.status == "True"));
        if done {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the build Job never completed");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // What ttlSecondsAfterFinished does: the Job and its pods go, with the termination message and the log.
    jobs_api
        .delete(&job, &kube::api::DeleteParams::background())
        .await
        .expect("delete job");
    while jobs_api.get_opt(&job).await.expect("get").is_some() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.start_controller();
    let pb = h
        .wait_for("packer-builder-local", "Ready", |pb| ready_reason(pb).is_some())
        .await;
    let status = pb.status.clone().expect("status");
    assert_eq!(ready_reason(&pb).as_deref(), Some("BuildSucceeded"), "{status:?}");
    assert_eq!(status.failed_job_count, 0);
    let ami = status.last_run_built_image_id.clone().expect("ami");
    let tags = h.image_tags(&ami).await;
    assert_eq!(Some(&tags["build-id"]), status.build_id.as_ref());
    assert_eq!(tags["status"], "active");
    assert_eq!(tags["created-by"], "packer-builder-local", "tagged as this builder's");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(h.jobs().await.is_empty(), "nothing was rebuilt");
    h.stop_controller().await;
}

/// Kills the controller (abort, as SIGKILL: no cleanup) at `step` of a build, restarts it, and checks the end state:
/// exactly one Job, one AMI made and tagged as this build's, status Ready with that AMI and no failure counted.
async fn a_build_survives_a_crash_at(step: &str) {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    h.start_controller_with(&[("OPSY_FAILPOINT", step)]);
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &h.seed_builder())
        .await
        .expect("apply");
    let exit = h.controller_exited().await;
    assert!(!exit.success(), "{step}: {exit:?}");
    assert!(
        h.controller_log().contains(&format!("failpoint {step}")),
        "{step}: the crash was at the step"
    );
    h.controllers.children.clear();
    let before = api
        .get("packer-builder-local")
        .await
        .expect("get")
        .status
        .unwrap_or_default();
    h.start_controller();
    let pb = h.wait_built().await;
    let status = pb.status.clone().expect("status");
    assert_eq!(
        ready_reason(&pb).as_deref(),
        Some("BuildSucceeded"),
        "{step}: {status:?}"
    );
    assert_eq!(status.failed_job_count, 0, "{step}");
    if before.build_id.is_some() {
        assert_eq!(
            status.build_id, before.build_id,
            "{step}: the recorded build was continued, not replaced"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let jobs = h.jobs().await;
    assert_eq!(jobs.len(), 1, "{step}: {:?}", job_names(&jobs));
    let calls = h.aws.calls(&Account(DEFAULT_ACCOUNT.into())).await.expect("calls");
    assert_eq!(
        calls.iter().filter(|c| c.action == "CreateImage").count(),
        1,
        "{step}: one AMI made"
    );
    let ami = status.last_run_built_image_id.clone().expect("ami");
    let tags = h.image_tags(&ami).await;
    assert_eq!(Some(&tags["build-id"]), status.build_id.as_ref(), "{step}");
    assert_eq!(tags["status"], "active", "{step}");
    assert!(tags.contains_key("create-timestamp"), "{step}");
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_build_is_recorded_and_before_the_job_is_created_ends_with_one_build() {
    a_build_survives_a_crash_at("build-recorded").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_right_after_the_job_is_created_ends_with_one_build() {
    a_build_survives_a_crash_at("job-created").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_the_job_ended_and_before_tagging_ends_with_one_build() {
    a_build_survives_a_crash_at("build-verified").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_tagging_and_before_the_status_write_ends_with_one_build() {
    a_build_survives_a_crash_at("build-tagged").await;
}

/// Delivery runs outside the reconcile: with a webhook that never answers (each attempt times out after 5 s, three
/// attempts), the PackerBuilder still reaches Ready before its BuildSucceeded notification has been tried three
/// times. When delivery ran inside the reconcile, the status was written only after every attempt had failed.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_that_never_answers_does_not_hold_the_build_status() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    // Records each request's reason and never answers.
    let received: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let recorded = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let recorded = recorded.clone();
            async move {
                let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let reason = value["reason"].as_str().unwrap_or_default().to_owned();
                recorded.lock().expect("received").push(reason);
                std::future::pending::<&'static str>().await
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(json!({"metadata": {"name": "hook"}, "stringData": {"url": url}})).expect("secret");
    Api::<k8s_openapi::api::core::v1::Secret>::default_namespaced(h.client.clone())
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    h.start_controller_with(&[("WEBHOOK_ALLOW_HTTP", "true"), ("WEBHOOK_ALLOW_PRIVATE", "true")]);
    let mut builder = h.seed_builder();
    builder.spec.notifier = Some(serde_json::from_value(json!({"webhook": {"secret": "hook"}})).expect("notifier"));
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &builder).await.expect("apply");
    h.wait_built().await;
    let attempts = |reason: &str| {
        received
            .lock()
            .expect("received")
            .iter()
            .filter(|r| *r == reason)
            .count()
    };
    assert!(
        attempts("BuildSucceeded") < 3,
        "Ready was written before the delivery of BuildSucceeded gave up: {:?}",
        received.lock().expect("received")
    );
    // The worker keeps trying in the background: every attempt reaches the webhook.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while attempts("BuildSucceeded") < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the queued delivery was never attempted three times"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    h.stop_controller().await;
}

// ------------------------------------------------------------------------------------------------------------------
// Image lifecycle: distribution, sharing, retention (issue #17)
// ------------------------------------------------------------------------------------------------------------------

const COPY_REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];
const FRIEND: &str = "210987654321";

impl Harness {
    async fn ec2_in(&self, region: &str, account: &str) -> aws_sdk_ec2::Client {
        let sdk = self.aws.sdk_config(region).await;
        self.aws.ec2(&sdk, &Account(account.into()))
    }

    /// The AMI as `account` sees it in `region`, or `None` when DescribeImages does not show it.
    async fn image_in(&self, region: &str, account: &str, ami: &str) -> Option<aws_sdk_ec2::types::Image> {
        let ec2 = self.ec2_in(region, account).await;
        ec2.describe_images()
            .image_ids(ami)
            .send()
            .await
            .ok()
            .and_then(|out| out.images().first().cloned())
    }

    async fn snapshot_exists(&self, region: &str, snapshot: &str) -> bool {
        let ec2 = self.ec2_in(region, DEFAULT_ACCOUNT).await;
        ec2.describe_snapshots().snapshot_ids(snapshot).send().await.is_ok()
    }

    async fn parameter_in(&self, region: &str, name: &str) -> String {
        let sdk = self.aws.sdk_config(region).await;
        let ssm = self.aws.ssm(&sdk, &Account(DEFAULT_ACCOUNT.into()));
        let out = ssm.get_parameter().name(name).send().await.expect("parameter");
        out.parameter().and_then(|p| p.value()).unwrap_or_default().to_owned()
    }

    async fn event_notes(&self, reason: &str) -> Vec<String> {
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), &self.ns);
        events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.note)
            .collect()
    }

    /// Builds again from a newer base AMI (seeded `day` of November) and waits until the new build is Ready with
    /// its copies; returns the PackerBuilder.
    async fn rebuild_from_base_of(&self, day: u32) -> PackerBuilder {
        let newer = self
            .seed_base(
                &format!("amazon-eks-node-al2023-x86_64-standard-1.30-v202611{day:02}"),
                &format!("2026-11-{day:02}T00:00:00Z"),
            )
            .await;
        self.wait_for("packer-builder-local", "a distributed rebuild", |pb| {
            // Ready stays True from the previous build while this one runs: wait for this build's own copies.
            pb.status.as_ref().is_some_and(|s| {
                s.last_run_base_image_id.as_deref() == Some(newer.as_str())
                    && s.job_status.as_deref() == Some("completed")
                    && !s.distributed_images.is_empty()
                    && s.distributed_images.iter().all(|e| {
                        Some(&e.source_image_id) == s.last_run_built_image_id.as_ref() && e.state == "available"
                    })
            }) && ready_reason(pb).as_deref() == Some("ImagesDistributed")
        })
        .await
    }
}

fn copy_in(status: &api_types::PackerBuilderStatus, region: &str) -> String {
    status
        .distributed_images
        .iter()
        .find(|e| e.region == region)
        .and_then(|e| e.image_id.clone())
        .unwrap_or_else(|| panic!("no copy in {region}: {:?}", status.distributed_images))
}

fn tag_map(image: &aws_sdk_ec2::types::Image) -> BTreeMap<String, String> {
    image
        .tags()
        .iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_is_copied_to_two_regions_shared_and_published_and_a_restart_mid_copy_makes_no_extra_copy() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    // Copies stay pending long enough for the restart to happen while the first one is in progress.
    h.aws
        .set_copy_duration(Duration::from_secs(3))
        .await
        .expect("copy duration");
    h.start_controller_with(&[("OPSY_FAILPOINT", "copy-started")]);
    let mut builder = h.seed_builder();
    builder.spec.distribution = Some(api_types::packer_builder::DistributionSpec {
        regions: COPY_REGIONS.map(str::to_owned).to_vec(),
        launch_permissions: Some(api_types::packer_builder::LaunchPermissionsSpec {
            account_ids: vec![FRIEND.into()],
            share_snapshots: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    builder.spec.publish = Some(api_types::packer_builder::PublishSpec {
        ssm_parameter: "/opsy/ami/test/latest".into(),
    });
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &builder).await.expect("apply");
    // The controller stops right after its first CopyImage answered, before it recorded the copy anywhere.
    let exit = h.controller_exited().await;
    assert!(!exit.success(), "{exit:?}");
    assert!(h.controller_log().contains("failpoint copy-started"));
    h.controllers.children.clear();
    let calls = h.aws.calls(&Account(DEFAULT_ACCOUNT.into())).await.expect("calls");
    assert_eq!(
        calls.iter().filter(|c| c.action == "CopyImage").count(),
        1,
        "stopped after one copy"
    );
    h.start_controller();
    let pb = h
        .wait_for("packer-builder-local", "Ready with every copy", |pb| {
            ready_reason(pb).as_deref() == Some("ImagesDistributed")
        })
        .await;
    let status = pb.status.clone().expect("status");
    assert_eq!(status.distributed_images.len(), 2, "{:?}", status.distributed_images);
    assert!(status.distributed_images.iter().all(|e| e.state == "available"));
    let calls = h.aws.calls(&Account(DEFAULT_ACCOUNT.into())).await.expect("calls");
    assert_eq!(
        calls.iter().filter(|c| c.action == "CopyImage").count(),
        2,
        "one copy per region: the copy made before the restart was found, not made again"
    );

    let source = status.last_run_built_image_id.clone().expect("ami");
    let source_image = h.image_in(REGION, DEFAULT_ACCOUNT, &source).await.expect("source");
    let source_tags = tag_map(&source_image);
    for region in COPY_REGIONS {
        let copy = copy_in(&status, region);
        let image = h.image_in(region, DEFAULT_ACCOUNT, &copy).await.expect("copy");
        assert_eq!(image.state().map(|s| s.as_str()), Some("available"), "{region}");
        assert_eq!(image.name(), source_image.name(), "{region}: same name");
        let mut tags = tag_map(&image);
        assert_eq!(
            tags.remove("source-image").as_deref(),
            Some(format!("{REGION}/{source}").as_str()),
            "{region}"
        );
        assert_eq!(tags, source_tags, "{region}: the copy carries the source's tags");
        // Shared: the other account finds it with its own client (without the tags, as EC2 shows shared AMIs).
        let seen = h
            .image_in(region, FRIEND, &copy)
            .await
            .expect("visible to the friend account");
        assert!(seen.tags().is_empty());
        let snapshot = image.block_device_mappings()[0]
            .ebs()
            .and_then(|e| e.snapshot_id())
            .expect("snapshot")
            .to_owned();
        let ec2 = h.ec2_in(region, DEFAULT_ACCOUNT).await;
        let permissions = ec2
            .describe_snapshot_attribute()
            .snapshot_id(&snapshot)
            .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
            .send()
            .await
            .expect("snapshot attribute");
        let accounts: Vec<_> = permissions
            .create_volume_permissions()
            .iter()
            .filter_map(|p| p.user_id())
            .collect();
        assert_eq!(accounts, [FRIEND], "{region}: the snapshot is shared too");
        assert_eq!(h.parameter_in(region, "/opsy/ami/test/latest").await, copy, "{region}");
        // EC2's deprecation time of the copy is the source's (its expiry).
        assert_eq!(image.deprecation_time(), source_image.deprecation_time(), "{region}");
    }
    assert!(
        h.image_in(REGION, FRIEND, &source).await.is_some(),
        "the source is shared too"
    );
    assert!(
        h.image_in(REGION, "333333333333", &source).await.is_none(),
        "nobody else sees it"
    );
    assert_eq!(h.parameter_in(REGION, "/opsy/ami/test/latest").await, source);

    // Removing an account from the spec removes its launch permission.
    let mut edited = api.get("packer-builder-local").await.expect("get");
    edited
        .spec
        .distribution
        .as_mut()
        .and_then(|d| d.launch_permissions.as_mut())
        .expect("permissions")
        .account_ids = vec!["333333333333".into()];
    api.replace("packer-builder-local", &PostParams::default(), &edited)
        .await
        .expect("edit");
    let copy = copy_in(&status, COPY_REGIONS[0]);
    eventually("the share follows the spec", || async {
        let friend = h.image_in(COPY_REGIONS[0], FRIEND, &copy).await;
        let third = h.image_in(COPY_REGIONS[0], "333333333333", &copy).await;
        (friend.is_none() && third.is_some()).then_some(())
    })
    .await;
    assert_eq!(h.jobs().await.len(), 1, "sharing never rebuilds");
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_keeps_two_builds_per_region_deletes_snapshots_and_never_an_ami_a_node_group_uses() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    h.aws
        .set_copy_duration(Duration::from_millis(300))
        .await
        .expect("copy duration");
    h.start_controller_with(&[("RESYNC_INTERVAL", "2s"), ("BASE_AMI_CACHE_TTL", "1s")]);
    let mut builder = h.seed_builder();
    builder.spec.distribution = Some(api_types::packer_builder::DistributionSpec {
        regions: vec![COPY_REGIONS[0].to_owned()],
        ..Default::default()
    });
    builder.spec.retention = Some(api_types::packer_builder::RetentionSpec {
        keep: Some(2),
        max_age: None,
        delete_snapshots: true,
        dry_run: false,
    });
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &builder).await.expect("apply");
    let first = h
        .wait_for("packer-builder-local", "Ready with its copy", |pb| {
            ready_reason(pb).as_deref() == Some("ImagesDistributed")
        })
        .await
        .status
        .expect("status");
    let (b1, b1_copy) = (
        first.last_run_built_image_id.clone().expect("ami"),
        copy_in(&first, COPY_REGIONS[0]),
    );

    // A node group in the copy region launches build 1's copy through its launch template.
    let sdk = h.aws.sdk_config(COPY_REGIONS[0]).await;
    let account = Account(DEFAULT_ACCOUNT.into());
    let ec2 = h.aws.ec2(&sdk, &account);
    let template = aws_sim::eks::TemplateSeed {
        name: "workers",
        image: &b1_copy,
        ..Default::default()
    };
    let lt_id = aws_sim::eks::launch_template(&ec2, &template)
        .await
        .expect("launch template");
    let eks = h.aws.eks(&sdk, &account);
    aws_sim::eks::cluster(&eks, "workloads").await.expect("cluster");
    aws_sim::eks::nodegroup(&eks, "workloads", "pinned", &lt_id, Some("1"), 1)
        .await
        .expect("node group");

    let snapshot_of = |image: &aws_sdk_ec2::types::Image| {
        image.block_device_mappings()[0]
            .ebs()
            .and_then(|e| e.snapshot_id())
            .expect("snapshot")
            .to_owned()
    };
    let b1_snapshot = snapshot_of(&h.image_in(REGION, DEFAULT_ACCOUNT, &b1).await.expect("b1"));
    let second = h.rebuild_from_base_of(10).await.status.expect("status");
    let (b2, b2_copy) = (
        second.last_run_built_image_id.clone().expect("ami"),
        copy_in(&second, COPY_REGIONS[0]),
    );
    let b2_snapshot = snapshot_of(&h.image_in(REGION, DEFAULT_ACCOUNT, &b2).await.expect("b2"));
    let b2_copy_snapshot = snapshot_of(
        &h.image_in(COPY_REGIONS[0], DEFAULT_ACCOUNT, &b2_copy)
            .await
            .expect("b2 copy"),
    );
    let third = h.rebuild_from_base_of(20).await.status.expect("status");
    let (b3, b3_copy) = (
        third.last_run_built_image_id.clone().expect("ami"),
        copy_in(&third, COPY_REGIONS[0]),
    );
    let fourth = h.rebuild_from_base_of(25).await.status.expect("status");
    let (b4, b4_copy) = (
        fourth.last_run_built_image_id.clone().expect("ami"),
        copy_in(&fourth, COPY_REGIONS[0]),
    );

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = [
            h.image_in(REGION, DEFAULT_ACCOUNT, &b1).await,
            h.image_in(REGION, DEFAULT_ACCOUNT, &b2).await,
            h.image_in(COPY_REGIONS[0], DEFAULT_ACCOUNT, &b2_copy).await,
        ];
        if left.iter().all(Option::is_none) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let log = h.controller_log();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("packer_build_controller") && !l.contains("DEBUG"))
                .collect();
            let left: Vec<_> = left.iter().flatten().map(|i| (i.image_id(), i.state())).collect();
            panic!(
                "builds 1 and 2 were not deregistered ({b1}, {b2}, {b2_copy}); left: {left:?}; controller log:\n{}",
                lines.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (region, ami) in [
        (REGION, &b3),
        (REGION, &b4),
        (COPY_REGIONS[0], &b3_copy),
        (COPY_REGIONS[0], &b4_copy),
    ] {
        assert!(
            h.image_in(region, DEFAULT_ACCOUNT, ami).await.is_some(),
            "{ami} in {region} is kept"
        );
    }
    let kept = h
        .image_in(COPY_REGIONS[0], DEFAULT_ACCOUNT, &b1_copy)
        .await
        .expect("the copy a node group's launch template uses stays");
    assert_eq!(tag_map(&kept)["status"], "deprecated");
    for (region, snapshot) in [
        (REGION, &b1_snapshot),
        (REGION, &b2_snapshot),
        (COPY_REGIONS[0], &b2_copy_snapshot),
    ] {
        assert!(
            !h.snapshot_exists(region, snapshot).await,
            "{snapshot} in {region} is deleted"
        );
    }
    let in_use = h.event_notes("ImageInUse").await;
    assert!(
        in_use
            .iter()
            .any(|n| n.contains(&b1_copy) && n.contains("workloads/pinned")),
        "an Event names the kept AMI and its user: {in_use:?}"
    );
    let deregistered = h.event_notes("ImageDeregistered").await;
    for ami in [&b1, &b2, &b2_copy] {
        assert!(
            deregistered.iter().any(|n| n.contains(ami.as_str())),
            "{ami}: {deregistered:?}"
        );
    }
    let status = api
        .get("packer-builder-local")
        .await
        .expect("get")
        .status
        .expect("status");
    let retention = status.retention.expect("retention status");
    assert_eq!(retention.in_use.len(), 1, "{retention:?}");
    assert_eq!(retention.in_use[0].image_id, b1_copy);
    assert!(retention.pending_snapshots.is_empty());
    // The superseded copies carry EC2's deprecation time; the parameter-free spec published nothing.
    let b3_copy_image = h
        .image_in(COPY_REGIONS[0], DEFAULT_ACCOUNT, &b3_copy)
        .await
        .expect("b3 copy");
    assert_eq!(tag_map(&b3_copy_image)["status"], "deprecated");
    assert!(
        b3_copy_image.deprecation_time().is_some(),
        "EC2 deprecation time on a superseded copy"
    );
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_or_failed_copy_is_a_warning_with_the_aws_message_and_is_retried_and_a_retention_dry_run_deletes_nothing()
 {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    h.aws
        .set_copy_duration(Duration::from_millis(300))
        .await
        .expect("copy duration");
    // EC2 refuses the first two copies (as it does for a KMS key the role may not use).
    let mut fault = aws_sim::Fault::error("ec2", "CopyImage", 400, "InvalidParameterValue", 2);
    fault.message = Some("KMS key alias/ami is not accessible".into());
    h.aws.inject(&fault).await.expect("fault");
    // The copy EC2 then accepts ends `failed`: it is deregistered and made again.
    h.aws.fail_next_copies(1).await.expect("failing copy");
    h.start_controller_with(&[
        ("BUILD_RETRY_BASE_DELAY", "1s"),
        ("RESYNC_INTERVAL", "2s"),
        ("BASE_AMI_CACHE_TTL", "1s"),
    ]);
    let mut builder = h.seed_builder();
    builder.spec.distribution = Some(api_types::packer_builder::DistributionSpec {
        regions: vec![COPY_REGIONS[0].to_owned()],
        encrypted: true,
        kms_key_ids: [(COPY_REGIONS[0].to_owned(), "alias/ami".to_owned())].into(),
        ..Default::default()
    });
    builder.spec.retention = Some(api_types::packer_builder::RetentionSpec {
        keep: Some(1),
        max_age: None,
        delete_snapshots: true,
        dry_run: true,
    });
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &builder).await.expect("apply");
    let failed = h
        .wait_for("packer-builder-local", "a CopyFailed condition", |pb| {
            pb.status
                .as_ref()
                .and_then(|s| get_condition(&s.conditions, "Ready"))
                .is_some_and(|c| c.status == "False" && c.reason == "CopyFailed")
        })
        .await;
    let status = failed.status.clone().expect("status");
    let ready = get_condition(&status.conditions, "Ready").expect("ready");
    assert!(
        ready.message.contains("InvalidParameterValue")
            && ready.message.contains("KMS key alias/ami is not accessible"),
        "{}",
        ready.message
    );
    assert_eq!(format!("{:?}", status.phase), "Some(Distributing)");
    let entry = &status.distributed_images[0];
    assert_eq!(
        (entry.state.as_str(), entry.failures >= 1),
        ("failed", true),
        "{entry:?}"
    );
    let first = h
        .wait_for("packer-builder-local", "Ready after the retries", |pb| {
            ready_reason(pb).as_deref() == Some("ImagesDistributed")
        })
        .await
        .status
        .expect("status");
    let warnings = h.event_notes("CopyFailed").await;
    assert!(!warnings.is_empty(), "a CopyFailed Event");
    let calls = h.aws.calls(&Account(DEFAULT_ACCOUNT.into())).await.expect("calls");
    let copies: Vec<_> = calls.iter().filter(|c| c.action == "CopyImage").collect();
    assert_eq!(copies.len(), 4, "two refused, one failed in EC2, one made");
    let deregistered: Vec<_> = calls
        .iter()
        .filter(|c| c.action == "DeregisterImage" && c.region == COPY_REGIONS[0])
        .collect();
    assert_eq!(
        deregistered.len(),
        1,
        "the failed copy is deregistered: {deregistered:?}"
    );
    let failures = h.event_notes("CopyFailed").await;
    assert!(!failures.is_empty());
    assert!(
        copies.iter().all(|c| c.has_param_value("alias/ami")),
        "the region's KMS key is used"
    );
    let copy = copy_in(&first, COPY_REGIONS[0]);
    let image = h.image_in(COPY_REGIONS[0], DEFAULT_ACCOUNT, &copy).await.expect("copy");
    let ebs = image.block_device_mappings()[0].ebs().expect("ebs").clone();
    assert_eq!((ebs.encrypted(), ebs.kms_key_id()), (Some(true), Some("alias/ami")));

    // Dry run: a second build makes the first one a candidate in both regions; nothing is deregistered.
    let b1 = first.last_run_built_image_id.clone().expect("ami");
    let second = h.rebuild_from_base_of(12).await;
    let candidates = h
        .wait_for("packer-builder-local", "dry-run candidates", |pb| {
            pb.status
                .as_ref()
                .and_then(|s| s.retention.as_ref())
                .is_some_and(|r| r.candidates.len() == 2)
        })
        .await
        .status
        .and_then(|s| s.retention)
        .expect("retention");
    let listed: Vec<(&str, &str)> = candidates
        .candidates
        .iter()
        .map(|c| (c.region.as_str(), c.image_id.as_str()))
        .collect();
    assert!(
        listed.contains(&(REGION, b1.as_str())) && listed.contains(&(COPY_REGIONS[0], copy.as_str())),
        "{listed:?}"
    );
    assert!(h.image_in(REGION, DEFAULT_ACCOUNT, &b1).await.is_some());
    assert!(h.image_in(COPY_REGIONS[0], DEFAULT_ACCOUNT, &copy).await.is_some());
    let notes = h.event_notes("RetentionDryRun").await;
    assert!(
        notes.iter().any(|n| n.contains(&b1)) && notes.iter().any(|n| n.contains(&copy)),
        "one Event per listed AMI: {notes:?}"
    );
    assert!(h.event_notes("ImageDeregistered").await.is_empty());
    assert_ne!(second.status.and_then(|s| s.last_run_built_image_id), Some(b1));
    h.stop_controller().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_between_deregistering_an_ami_and_deleting_its_snapshots_is_finished_after_the_restart() {
    let mut h = Harness::start().await;
    h.seed_default_base().await;
    h.start_controller_with(&[
        ("OPSY_FAILPOINT", "image-deregistered"),
        ("RESYNC_INTERVAL", "2s"),
        ("BASE_AMI_CACHE_TTL", "1s"),
    ]);
    let mut builder = h.seed_builder();
    builder.spec.retention = Some(api_types::packer_builder::RetentionSpec {
        keep: Some(1),
        max_age: None,
        delete_snapshots: true,
        dry_run: false,
    });
    let api: Api<PackerBuilder> = Api::default_namespaced(h.client.clone());
    api.create(&PostParams::default(), &builder).await.expect("apply");
    let first = h.wait_built().await.status.expect("status");
    let b1 = first.last_run_built_image_id.clone().expect("ami");
    let b1_image = h.image_in(REGION, DEFAULT_ACCOUNT, &b1).await.expect("b1");
    let snapshot = b1_image.block_device_mappings()[0]
        .ebs()
        .and_then(|e| e.snapshot_id())
        .expect("snapshot")
        .to_owned();
    // A newer base AMI: the second build makes the first one retention's to deregister, and the controller stops
    // right after DeregisterImage, before DeleteSnapshot.
    h.seed_base(
        "amazon-eks-node-al2023-x86_64-standard-1.30-v20261115",
        "2026-11-15T00:00:00Z",
    )
    .await;
    let exit = h.controller_exited().await;
    assert!(!exit.success(), "{exit:?}");
    assert!(h.controller_log().contains("failpoint image-deregistered"));
    h.controllers.children.clear();
    assert!(
        h.image_in(REGION, DEFAULT_ACCOUNT, &b1).await.is_none(),
        "deregistered before the crash"
    );
    assert!(
        h.snapshot_exists(REGION, &snapshot).await,
        "its snapshot is still there"
    );
    let journal = api
        .get("packer-builder-local")
        .await
        .expect("get")
        .status
        .expect("status");
    let pending = journal.retention.map(|r| r.pending_snapshots).unwrap_or_default();
    assert_eq!(
        pending.len(),
        1,
        "the snapshot was journalled before the deregistration"
    );
    assert_eq!(pending[0].snapshot_ids, std::slice::from_ref(&snapshot));

    h.start_controller_with(&[("RESYNC_INTERVAL", "2s")]);
    eventually("the journalled snapshot deleted", || async {
        (!h.snapshot_exists(REGION, &snapshot).await).then_some(())
    })
    .await;
    let pb = h
        .wait_for("packer-builder-local", "an empty journal", |pb| {
            pb.status.as_ref().is_some_and(|s| s.retention.is_none())
        })
        .await;
    let status = pb.status.expect("status");
    assert_ne!(status.last_run_built_image_id.as_deref(), Some(b1.as_str()));
    // The field that stopped being true is gone from the stored object, not kept or left as null.
    let stored = control_plane::cluster::stored_status::<PackerBuilder>(&h.client, &h.ns, "packer-builder-local").await;
    assert!(stored.get("lastRunBuiltImageID").is_some(), "{stored}");
    assert!(stored.get("retention").is_none(), "status.retention removed: {stored}");
    assert_eq!(h.jobs().await.len(), 2, "two builds, none added by the restart");
    h.stop_controller().await;
}
