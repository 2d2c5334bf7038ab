//! The real ami-refresh-controller binary against the in-memory API server and the AWS emulator: EKS managed node
//! groups on launch templates (backed by Auto Scaling groups), self-managed groups, updates that take several
//! polls, scripted failures, throttling. What AWS saw is read from the emulator's call log.

use std::{path::Path, time::Duration};

use api_types::{
    AMIRefresher, PackerBuilder,
    ami_refresher::{AMIRefresherPhase, NodeGroupState, NodeGroupStatus, NodeGroupUpdateType},
    conditions::get_condition,
};
use aws_sdk_ec2::types::RequestLaunchTemplateData;
use aws_sdk_eks::types::LaunchTemplateSpecification as EksLaunchTemplate;
use aws_sim::{Account, AwsEmulator, Call, Fault, SeedImage, eks::TemplateSeed};
use control_plane::{
    cluster::{ClusterOptions, TestCluster},
    process::Controllers,
};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::events::v1::Event;
use kube::{
    Api, Client, CustomResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

const REGION: &str = "us-west-2";
const CLUSTER: &str = "ibeify-gitops";
const EKS_OWNER: &str = "602401143452";
/// The account the test world and the controller work in. It owns the managed AMIs, so their tags are visible to it
/// (EC2 shows an AMI's tags only to its owner), and it is the owner the seed's `owner-id` filter names.
const DEFAULT_ACCOUNT: &str = EKS_OWNER;
const NAME: &str = "node-group-ami-refresh";
const WAIT: Duration = Duration::from_secs(90);
/// Calls that change what a node group runs. The ownership claim (TagResource / CreateOrUpdateTags of
/// `ami.refresh.ops/owner`) is not among them: it is written once per group, also while paused.
const MUTATING: [&str; 6] = [
    "UpdateNodegroupVersion",
    "CreateLaunchTemplateVersion",
    "DeleteLaunchTemplateVersions",
    "UpdateNodegroupConfig",
    "StartInstanceRefresh",
    "CreateTags",
];

fn workspace() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct World {
    aws: AwsEmulator,
    ec2: aws_sdk_ec2::Client,
    eks: aws_sdk_eks::Client,
    asg: aws_sdk_autoscaling::Client,
    cluster: TestCluster,
    client: Client,
    kubeconfig: tempfile::NamedTempFile,
    controllers: Controllers,
    cluster_made: bool,
}

fn stamp(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn ago(minutes: i64) -> Timestamp {
    Timestamp::now() - SignedDuration::from_mins(minutes)
}

/// Tags of an AMI this operator built for the seed cluster.
fn managed_tags(created: Timestamp, status: &str) -> std::collections::BTreeMap<String, String> {
    [
        ("brought-to-you-by", "opsy-the-ami-operator".to_owned()),
        ("cluster-name", CLUSTER.to_owned()),
        ("created-by", "packer-builder-local".to_owned()),
        ("create-timestamp", stamp(created)),
        ("status", status.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

impl World {
    async fn start() -> Self {
        let aws = AwsEmulator::start().await.expect("emulator");
        aws.set_progress(false, Duration::from_millis(600))
            .await
            .expect("progress");
        let sdk = aws.sdk_config(REGION).await;
        let account = Account(DEFAULT_ACCOUNT.into());
        let cluster = TestCluster::start(ClusterOptions::default()).await.expect("api server");
        let kubeconfig = tempfile::NamedTempFile::new().expect("kubeconfig");
        cluster.write_kubeconfig(kubeconfig.path()).expect("write kubeconfig");
        let client = cluster.client().await.expect("client");
        cluster
            .install_crds(&client, &[AMIRefresher::crd(), PackerBuilder::crd()])
            .await
            .expect("CRDs");
        Self {
            ec2: aws.ec2(&sdk, &account),
            eks: aws.eks(&sdk, &account),
            asg: aws.autoscaling(&sdk, &account),
            aws,
            cluster,
            client,
            kubeconfig,
            controllers: Controllers::new(),
            cluster_made: false,
        }
    }

    async fn seed_ami(
        &self,
        name: &str,
        owner: &str,
        created: Timestamp,
        tags: std::collections::BTreeMap<String, String>,
    ) -> String {
        let image = SeedImage {
            name: name.into(),
            owner_id: owner.into(),
            creation_date: stamp(created),
            tags,
            public: true,
            ..SeedImage::default()
        };
        self.aws
            .seed_image(&Account(DEFAULT_ACCOUNT.into()), REGION, image)
            .await
            .expect("seed")
    }

    /// A managed AMI matching the seed filters, made `minutes` ago.
    async fn managed_ami(&self, suffix: &str, minutes: i64) -> String {
        self.seed_ami(
            &format!("amazon-eks-node-al2023-x86_64-standard-1.30-{suffix}"),
            EKS_OWNER,
            ago(minutes),
            managed_tags(ago(minutes), "active"),
        )
        .await
    }

    async fn template(&self, name: &str, image: &str) -> String {
        self.template_typed(name, image, aws_sdk_ec2::types::InstanceType::T3Medium)
            .await
    }

    async fn template_typed(&self, name: &str, image: &str, instance_type: aws_sdk_ec2::types::InstanceType) -> String {
        let seed = TemplateSeed {
            name,
            image,
            instance_type: Some(instance_type),
            user_data: Some("IyEvYmluL2Jhc2gKZWNobyBrZWVwIG1l"),
        };
        aws_sim::eks::launch_template(&self.ec2, &seed)
            .await
            .expect("launch template")
    }

    /// A managed node group on its own launch template carrying `image`; returns the template ID.
    async fn nodegroup(&mut self, name: &str, image: &str) -> String {
        self.nodegroup_typed(name, image, aws_sdk_ec2::types::InstanceType::T3Medium)
            .await
    }

    /// A managed node group on a launch template of `image` and `instance_type` (no `instanceTypes` of its own).
    async fn nodegroup_typed(
        &mut self,
        name: &str,
        image: &str,
        instance_type: aws_sdk_ec2::types::InstanceType,
    ) -> String {
        if !self.cluster_made {
            aws_sim::eks::cluster(&self.eks, CLUSTER).await.expect("cluster");
            self.cluster_made = true;
        }
        let lt = self.template_typed(&format!("lt-{name}"), image, instance_type).await;
        aws_sim::eks::nodegroup(&self.eks, CLUSTER, name, &lt, None, 1)
            .await
            .expect("nodegroup");
        lt
    }

    /// (launch template ID, version, image) of a managed node group as the emulator reports it.
    async fn nodegroup_image(&self, name: &str) -> (String, String, String) {
        let ng = self
            .eks
            .describe_nodegroup()
            .cluster_name(CLUSTER)
            .nodegroup_name(name)
            .send()
            .await
            .expect("describe");
        let lt = ng
            .nodegroup()
            .and_then(|n| n.launch_template())
            .expect("launch template");
        let (id, version) = (
            lt.id().expect("id").to_owned(),
            lt.version().expect("version").to_owned(),
        );
        (id.clone(), version.clone(), self.template_image(&id, &version).await)
    }

    async fn template_image(&self, id: &str, version: &str) -> String {
        let v = self
            .ec2
            .describe_launch_template_versions()
            .launch_template_id(id)
            .versions(version)
            .send()
            .await
            .expect("versions");
        v.launch_template_versions()[0]
            .launch_template_data()
            .and_then(|d| d.image_id())
            .expect("image")
            .to_owned()
    }

    fn start_controller(&mut self) {
        self.start_controller_with(&[]);
    }

    fn start_controller_with(&mut self, env: &[(&str, &str)]) {
        let mut vars: Vec<(String, String)> = vec![("KUBECONFIG".into(), self.kubeconfig.path().display().to_string())];
        vars.extend(self.aws.child_env_in(REGION, &Account(DEFAULT_ACCOUNT.into())));
        for (k, v) in [
            ("LEADER_ELECT", "false"),
            ("POLL_INTERVAL", "200ms"),
            ("RESYNC_INTERVAL", "1s"),
            ("RETRY_BASE_DELAY", "200ms"),
            // The fake webhook listens on http://127.0.0.1 (refused by default).
            ("WEBHOOK_ALLOW_HTTP", "true"),
            ("WEBHOOK_ALLOW_PRIVATE", "true"),
        ] {
            vars.push((k.into(), v.into()));
        }
        vars.extend(self.cluster.controller_env(&[]));
        vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        self.controllers
            .spawn(env!("CARGO_BIN_EXE_ami-refresh-controller"), vars);
    }

    async fn stop_controller(&mut self) {
        self.controllers.stop().await;
    }

    fn controller_log(&self) -> String {
        self.controllers.log()
    }

    /// The AMIRefresher's status as the API server stores it.
    async fn stored_status(&self) -> serde_json::Value {
        control_plane::cluster::stored_status::<AMIRefresher>(&self.client, self.cluster.namespace(), NAME).await
    }

    fn api(&self) -> Api<AMIRefresher> {
        Api::default_namespaced(self.client.clone())
    }

    /// The seed AMIRefresher of the original README, with `edit` applied to its JSON.
    async fn apply_seed(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let text = std::fs::read_to_string(workspace().join("examples/seed/amirefresher-001.yaml")).expect("seed");
        let mut doc: serde_json::Value = serde_norway::from_str(&text).expect("yaml");
        doc["metadata"]["namespace"] = json!(self.cluster.namespace());
        edit(&mut doc);
        let amr: AMIRefresher = serde_json::from_value(doc).expect("typed");
        self.api().create(&PostParams::default(), &amr).await.expect("create");
    }

    /// Sets the retry annotation to `value`, as `kubectl annotate amr NAME ami.refresh.ops/retry=... --overwrite`.
    async fn ask_retry(&self, value: &str) {
        self.api()
            .patch(
                NAME,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"ami.refresh.ops/retry": value}}})),
            )
            .await
            .expect("annotate");
    }

    /// What a crashed controller (`ours`: a launch template version with this controller's mark) or somebody else
    /// (`!ours`: a version without it) leaves behind: a version of `group`'s template with `image`, and an update
    /// onto it started outside the controller. Returns the update ID.
    async fn update_outside_the_controller(&self, group: &str, image: &str, ours: bool) -> String {
        let (lt, version, _) = self.nodegroup_image(group).await;
        let description = if ours {
            refresh_engine::marker::version_description(&version, image)
        } else {
            "hand-made: new image and a bigger disk".to_owned()
        };
        let created = self
            .ec2
            .create_launch_template_version()
            .launch_template_id(&lt)
            .source_version(&version)
            .version_description(description)
            .launch_template_data(RequestLaunchTemplateData::builder().image_id(image).build())
            .send()
            .await
            .expect("version");
        let new_version = created
            .launch_template_version()
            .and_then(|v| v.version_number())
            .expect("n");
        self.eks
            .update_nodegroup_version()
            .cluster_name(CLUSTER)
            .nodegroup_name(group)
            .launch_template(
                EksLaunchTemplate::builder()
                    .id(&lt)
                    .version(new_version.to_string())
                    .build(),
            )
            .send()
            .await
            .expect("update")
            .update()
            .and_then(|u| u.id())
            .expect("id")
            .to_owned()
    }

    async fn patch_spec(&self, spec: serde_json::Value) {
        self.api()
            .patch(NAME, &PatchParams::default(), &Patch::Merge(json!({ "spec": spec })))
            .await
            .expect("patch");
    }

    async fn wait_for(&self, what: &str, done: impl Fn(&AMIRefresher) -> bool) -> AMIRefresher {
        let every = Duration::from_millis(100);
        match control_plane::cluster::wait_for_object(&self.api(), NAME, WAIT, every, done).await {
            Ok(amr) => amr,
            Err(last) => {
                let log = self.controller_log();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                panic!(
                    "{NAME} did not reach {what}; status: {:#?}\nlog tail:\n{tail}",
                    last.and_then(|a| a.status)
                )
            }
        }
    }

    async fn calls(&self) -> Vec<Call> {
        self.aws.calls(&Account(DEFAULT_ACCOUNT.into())).await.expect("calls")
    }

    async fn count(&self, action: &str) -> usize {
        self.calls().await.iter().filter(|c| c.action == action).count()
    }

    async fn mutating_calls(&self) -> Vec<String> {
        self.calls()
            .await
            .into_iter()
            .filter(|c| MUTATING.contains(&c.action.as_str()))
            .map(|c| format!("{} {}", c.action, c.path))
            .collect()
    }

    /// The Events with `reason`, once there is at least one (up to 10 s): the controller writes status first and
    /// announces after, so a test that has just seen a status must give the announcement a moment. A further
    /// 300 ms lets a duplicate show up before callers count.
    async fn events(&self, reason: &str) -> Vec<Event> {
        let list = || async {
            Api::<Event>::default_namespaced(self.client.clone())
                .list(&ListParams::default())
                .await
                .expect("events")
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some(reason))
                .collect::<Vec<_>>()
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while list().await.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        list().await
    }
}

/// Manual update progress, the controller and the seed AMIRefresher started; returns once ng-a's update runs.
async fn start_with_ng_a_updating(w: &mut World) {
    w.aws.set_progress(true, Duration::ZERO).await.expect("progress");
    w.start_controller();
    w.apply_seed(|_| {}).await;
    w.wait_for("ng-a updating", |a| in_state(a, "ng-a", NodeGroupState::InProgress))
        .await;
}

/// Whether the AMIRefresher's status has node group `name` in `state`.
fn in_state(amr: &AMIRefresher, name: &str, state: NodeGroupState) -> bool {
    amr.status
        .as_ref()
        .is_some_and(|s| s.node_groups.iter().any(|n| n.name == name && n.state == state))
}

fn phase(amr: &AMIRefresher) -> Option<AMIRefresherPhase> {
    amr.status.as_ref().and_then(|s| s.phase)
}

fn group<'a>(amr: &'a AMIRefresher, name: &str) -> &'a NodeGroupStatus {
    amr.status
        .as_ref()
        .and_then(|s| s.node_groups.iter().find(|n| n.name == name))
        .unwrap_or_else(|| panic!("no status entry for {name}: {:#?}", amr.status))
}

fn condition(amr: &AMIRefresher, type_: &str) -> (String, String) {
    let c = get_condition(&amr.status.as_ref().expect("status").conditions, type_).expect("condition");
    (c.status.clone(), c.reason.clone())
}

fn ready(amr: &AMIRefresher) -> bool {
    phase(amr) == Some(AMIRefresherPhase::Ready)
}

/// The acceptance world: `ingress-dev` (excluded), `ng-current` on the target, `ng-a` and `ng-b` outdated.
async fn seed_world(w: &mut World) -> (String, String) {
    let old = w.managed_ami("v1", 4).await;
    let target = w.managed_ami("v2", 1).await;
    for (name, image) in [
        ("ingress-dev", &old),
        ("ng-a", &old),
        ("ng-b", &old),
        ("ng-current", &target),
    ] {
        w.nodegroup(name, image).await;
    }
    (old, target)
}

#[tokio::test]
async fn the_seed_refresher_rolls_exactly_the_two_outdated_groups_one_after_the_other() {
    let mut w = World::start().await;
    let (old, target) = seed_world(&mut w).await;
    let (lt_a, version_a, _) = w.nodegroup_image("ng-a").await;
    w.start_controller();
    w.apply_seed(|_| {}).await;
    let amr = w.wait_for("Ready", ready).await;

    let status = amr.status.as_ref().expect("status");
    assert_eq!(status.target_ami.as_deref(), Some(target.as_str()));
    assert_eq!(status.progress.as_deref(), Some("3/3"));
    assert_eq!(condition(&amr, "Ready"), ("True".into(), "UpToDate".into()));
    assert_eq!(condition(&amr, "Degraded").0, "False");
    assert!(
        status.node_groups.iter().all(|n| n.name != "ingress-dev"),
        "excluded group listed"
    );
    assert_eq!(group(&amr, "ng-current").state, NodeGroupState::UpToDate);
    for name in ["ng-a", "ng-b"] {
        let g = group(&amr, name);
        assert_eq!(g.state, NodeGroupState::Successful, "{name}");
        assert_eq!(g.current_ami.as_deref(), Some(target.as_str()));
        let (_, _, image) = w.nodegroup_image(name).await;
        assert_eq!(image, target, "{name} runs the target in the emulator");
    }
    // One after the other: the second started only after the first finished.
    let (a, b) = (group(&amr, "ng-a"), group(&amr, "ng-b"));
    assert!(
        a.finished_at.as_ref().expect("finished").0 <= b.started_at.as_ref().expect("started").0,
        "ng-b started before ng-a finished: {a:#?} {b:#?}"
    );

    // Acceptance 2: same launch template, a new version with the new image, and nothing else changed.
    let (lt_after, version_after, image_after) = w.nodegroup_image("ng-a").await;
    assert_eq!(lt_after, lt_a);
    assert_ne!(version_after, version_a);
    assert_eq!(image_after, target);
    assert_eq!(
        group(&amr, "ng-a").launch_template_version.as_deref(),
        Some(version_after.as_str())
    );
    let data = w
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(&lt_a)
        .versions(&version_after)
        .send()
        .await
        .expect("versions");
    let data = data.launch_template_versions()[0].launch_template_data().expect("data");
    assert_eq!(
        data.user_data(),
        Some("IyEvYmluL2Jhc2gKZWNobyBrZWVwIG1l"),
        "other fields kept"
    );

    let calls = w.calls().await;
    let updates: Vec<&Call> = calls.iter().filter(|c| c.action == "UpdateNodegroupVersion").collect();
    assert_eq!(updates.len(), 2, "{updates:#?}");
    assert!(
        updates[0].names_in_path("ng-a") && updates[1].names_in_path("ng-b"),
        "{updates:#?}"
    );
    assert_eq!(w.count("CreateLaunchTemplateVersion").await, 2);
    for untouched in ["ingress-dev", "ng-current"] {
        let touched: Vec<&Call> = calls
            .iter()
            // Reads, and the ownership claim (one TagResource of `ami.refresh.ops/owner` per rolled group).
            .filter(|c| c.names_in_path(untouched) && !matches!(c.action.as_str(), "DescribeNodegroup" | "TagResource"))
            .collect();
        assert!(touched.is_empty(), "{untouched} touched: {touched:#?}");
    }
    // The excluded group is only read (DescribeNodegroup: an update of ours still running on it, after a restart that
    // lost its record, would be tracked and counted against parallelism).
    let excluded: Vec<&Call> = calls
        .iter()
        .filter(|c| c.names_in_path("ingress-dev") && c.action != "DescribeNodegroup")
        .collect();
    assert!(
        excluded.is_empty(),
        "the excluded group is only described: {excluded:#?}"
    );
    let _ = old;
    // Every DescribeImages call is filtered and restricted to trusted owners.
    for c in calls.iter().filter(|c| c.action == "DescribeImages") {
        assert!(c.params.keys().any(|k| k.starts_with("Filter.")), "{c:?}");
        assert!(c.params.keys().any(|k| k.starts_with("Owner.")), "{c:?}");
    }
    let started = w.events("NodeGroupUpdateStarted").await;
    assert_eq!(
        started.len(),
        2,
        "{:#?}",
        started.iter().map(|e| (&e.note, &e.series)).collect::<Vec<_>>()
    );
    assert_eq!(w.events("NodeGroupUpdated").await.len(), 2);
}

#[tokio::test]
async fn a_failed_update_stops_the_rollout_until_a_retry_is_asked_for() {
    let mut w = World::start().await;
    let (_, target) = seed_world(&mut w).await;
    // The next update of ng-a fails.
    w.aws
        .finish_update(&Account(DEFAULT_ACCOUNT.into()), REGION, CLUSTER, "ng-a", "Failed")
        .await
        .expect("script");
    w.start_controller();
    w.apply_seed(|_| {}).await;
    let amr = w
        .wait_for("Degraded", |a| phase(a) == Some(AMIRefresherPhase::Degraded))
        .await;
    assert_eq!(condition(&amr, "Degraded"), ("True".into(), "RolloutFailed".into()));
    assert_eq!(condition(&amr, "Ready"), ("False".into(), "RolloutFailed".into()));
    assert_eq!(group(&amr, "ng-a").state, NodeGroupState::Failed);
    assert!(
        group(&amr, "ng-a")
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("NodeCreationFailure")
    );
    assert_eq!(group(&amr, "ng-b").state, NodeGroupState::Pending);
    // Several resyncs later nothing else was started.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = w.calls().await;
    assert_eq!(w.count("UpdateNodegroupVersion").await, 1);
    assert!(
        !calls
            .iter()
            .any(|c| c.names_in_path("ng-b") && !matches!(c.action.as_str(), "DescribeNodegroup" | "TagResource"))
    );
    assert_eq!(
        w.events("NodeGroupUpdateFailed").await.len(),
        1,
        "one Warning Event per failure"
    );
    let (_, _, b_image) = w.nodegroup_image("ng-b").await;
    assert_ne!(b_image, target, "ng-b untouched");
    let stored = w.stored_status().await;
    assert_eq!(stored["haltedTarget"], json!(target), "{stored}");

    // The failure is cleared (the scripted outcome was used up); a retry continues with ng-a, then ng-b.
    w.ask_retry("1").await;
    let amr = w.wait_for("Ready after retry", ready).await;
    assert_eq!(condition(&amr, "Degraded").0, "False");
    // The halt stopped being true: the stored object no longer has the field (not kept, not null).
    let stored = w.stored_status().await;
    assert!(
        stored.get("haltedTarget").is_none(),
        "status.haltedTarget removed: {stored}"
    );
    assert_eq!(w.count("UpdateNodegroupVersion").await, 3);
    assert_eq!(
        w.count("CreateLaunchTemplateVersion").await,
        2,
        "the retry reuses ng-a's version with the target image"
    );
    assert_eq!(amr.status.as_ref().and_then(|s| s.observed_retry.as_deref()), Some("1"));
}

#[tokio::test]
async fn an_update_that_fails_after_the_target_changed_halts_is_announced_and_survives_pause_edits() {
    let mut w = World::start().await;
    let (_, first_target) = seed_world(&mut w).await;
    // Updates run until the test finishes them.
    start_with_ng_a_updating(&mut w).await;

    // A newer AMI appears while ng-a rolls to the first target: the target changes under the update.
    let newer = w.managed_ami("v3", 0).await;
    w.wait_for("the newer target", |a| {
        a.status.as_ref().and_then(|s| s.target_ami.as_deref()) == Some(newer.as_str())
    })
    .await;
    // Then ng-a's update (still for the first target) fails.
    w.aws
        .finish_update(&Account(DEFAULT_ACCOUNT.into()), REGION, CLUSTER, "ng-a", "Failed")
        .await
        .expect("finish");
    let amr = w
        .wait_for("Degraded", |a| phase(a) == Some(AMIRefresherPhase::Degraded))
        .await;
    assert_eq!(group(&amr, "ng-a").state, NodeGroupState::Failed);
    assert_eq!(group(&amr, "ng-a").target_ami.as_deref(), Some(first_target.as_str()));
    assert_eq!(
        amr.status.as_ref().and_then(|s| s.halted_target.as_deref()),
        Some(newer.as_str())
    );

    // Unrelated spec edits (pause, unpause) do not lift the halt.
    w.patch_spec(json!({"paused": true})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.patch_spec(json!({"paused": false})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let amr = w.api().get(NAME).await.expect("get");
    assert_eq!(phase(&amr), Some(AMIRefresherPhase::Degraded), "{:#?}", amr.status);
    assert_eq!(
        w.count("UpdateNodegroupVersion").await,
        1,
        "the failed group was not restarted for the new target"
    );
    let failed = w.events("NodeGroupUpdateFailed").await;
    assert_eq!(failed.len(), 1, "the failure is announced once");

    // A retry continues, with the new target.
    w.ask_retry("1").await;
    let amr = w
        .wait_for("ng-a restarted for the newer target", |a| {
            a.status.as_ref().is_some_and(|s| {
                s.node_groups.iter().any(|n| {
                    n.name == "ng-a"
                        && n.state == NodeGroupState::InProgress
                        && n.target_ami.as_deref() == Some(newer.as_str())
                })
            })
        })
        .await;
    assert_eq!(amr.status.as_ref().and_then(|s| s.halted_target.as_deref()), None);
    assert_eq!(w.count("UpdateNodegroupVersion").await, 2);
}

#[tokio::test]
async fn an_update_in_flight_is_tracked_to_its_failure_while_no_ami_is_eligible() {
    let mut w = World::start().await;
    let (old, target) = seed_world(&mut w).await;
    start_with_ng_a_updating(&mut w).await;
    // Every managed AMI is deprecated while ng-a rolls onto the target: none is eligible any more.
    w.ec2
        .create_tags()
        .resources(&target)
        .resources(&old)
        .tags(
            aws_sdk_ec2::types::Tag::builder()
                .key("status")
                .value("deprecated")
                .build(),
        )
        .send()
        .await
        .expect("deprecate");
    w.wait_for("NoEligibleAMI", |a| phase(a) == Some(AMIRefresherPhase::NoEligibleAMI))
        .await;
    w.aws
        .finish_update(&Account(DEFAULT_ACCOUNT.into()), REGION, CLUSTER, "ng-a", "Failed")
        .await
        .expect("finish");
    let amr = w
        .wait_for("ng-a failed", |a| in_state(a, "ng-a", NodeGroupState::Failed))
        .await;
    assert_eq!(phase(&amr), Some(AMIRefresherPhase::NoEligibleAMI));
    assert_eq!(
        amr.status.as_ref().and_then(|s| s.halted_target.as_deref()),
        Some(target.as_str()),
        "the failure halts against the last target"
    );
    assert_eq!(w.events("NodeGroupUpdateFailed").await.len(), 1, "and is announced");
    assert_eq!(w.count("UpdateNodegroupVersion").await, 1);
}

#[tokio::test]
async fn amis_built_in_other_namespaces_are_chosen_only_when_trusted() {
    let mut w = World::start().await;
    let old = w.managed_ami("v1", 4).await;
    w.nodegroup("ng-a", &old).await;
    // A newer AMI for the same cluster, built by a PackerBuilder in another namespace.
    let mut tags = managed_tags(ago(1), "active");
    tags.insert("created-by-namespace".into(), "sandbox".into());
    let foreign = w
        .seed_ami(
            "amazon-eks-node-al2023-x86_64-standard-1.30-v9",
            EKS_OWNER,
            ago(1),
            tags,
        )
        .await;
    w.start_controller();
    w.apply_seed(|doc| {
        doc["spec"]["exclude"] = json!([]);
    })
    .await;
    let amr = w
        .wait_for("a target", |a| {
            a.status.as_ref().and_then(|s| s.target_ami.as_ref()).is_some()
        })
        .await;
    assert_eq!(
        amr.status.as_ref().and_then(|s| s.target_ami.as_deref()),
        Some(old.as_str()),
        "the sandbox namespace's AMI is not trusted by default"
    );
    assert_eq!(w.count("UpdateNodegroupVersion").await, 0);

    w.patch_spec(json!({"trustedNamespaces": ["sandbox"]})).await;
    w.wait_for("Ready on the trusted AMI", |a| {
        ready(a) && a.status.as_ref().and_then(|s| s.target_ami.as_deref()) == Some(foreign.as_str())
    })
    .await;
    let (_, _, image) = w.nodegroup_image("ng-a").await;
    assert_eq!(image, foreign);
}

#[tokio::test]
async fn only_ineligible_amis_roll_nothing_and_forged_amis_are_never_chosen() {
    let mut w = World::start().await;
    let old = w.managed_ami("v0", 60).await;
    w.managed_ami("expired", 10).await;
    w.seed_ami(
        "amazon-eks-node-al2023-x86_64-standard-1.30-deprecated",
        EKS_OWNER,
        ago(1),
        managed_tags(ago(1), "deprecated"),
    )
    .await;
    w.seed_ami(
        "amazon-eks-node-al2023-x86_64-standard-1.30-untagged",
        EKS_OWNER,
        ago(1),
        Default::default(),
    )
    .await;
    // A stranger's public AMI with forged tags, a newer date and a create-timestamp far in the future.
    let future = Timestamp::now() + SignedDuration::from_hours(24 * 365);
    let stranger = w
        .seed_ami(
            "amazon-eks-node-al2023-x86_64-standard-1.30-stranger",
            "999988887777",
            ago(0),
            managed_tags(future, "active"),
        )
        .await;
    // A trusted owner's old AMI whose create-timestamp was forged into the future: its CreationDate counts.
    let forged = w
        .seed_ami(
            "amazon-eks-node-al2023-x86_64-standard-1.30-forged",
            EKS_OWNER,
            ago(60 * 24 * 400),
            managed_tags(future, "active"),
        )
        .await;
    let young = w.managed_ami("young", 1).await;
    w.nodegroup("ng-a", &old).await;
    w.start_controller();
    w.apply_seed(|doc| doc["spec"]["soakTime"] = json!("1h")).await;
    let amr = w
        .wait_for("NoEligibleAMI", |a| phase(a) == Some(AMIRefresherPhase::NoEligibleAMI))
        .await;
    assert_eq!(condition(&amr, "Ready"), ("False".into(), "NoEligibleAMI".into()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.mutating_calls().await, Vec::<String>::new());
    assert_eq!(
        w.events("NoEligibleAMI").await.len(),
        1,
        "one Warning Event, not one per resync"
    );
    let calls = w.calls().await;
    assert!(calls.iter().all(|c| c.action != "DescribeNodegroup"), "nothing touched");

    // Without the soak time the young AMI is the newest eligible one: never the stranger's, never the forged one.
    w.api()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([{"op": "remove", "path": "/spec/soakTime"}])).expect("patch"),
            ),
        )
        .await
        .expect("patch");
    let amr = w.wait_for("Ready", ready).await;
    let chosen = amr.status.as_ref().and_then(|s| s.target_ami.clone()).expect("target");
    assert_eq!(chosen, young);
    assert_ne!(chosen, stranger);
    assert_ne!(chosen, forged);
}

#[tokio::test]
async fn dry_run_pause_and_maintenance_windows_hold_the_rollout() {
    let mut w = World::start().await;
    let (_, target) = seed_world(&mut w).await;
    w.start_controller();
    w.apply_seed(|doc| doc["spec"]["dryRun"] = json!(true)).await;
    let amr = w
        .wait_for("Planned", |a| phase(a) == Some(AMIRefresherPhase::Planned))
        .await;
    assert_eq!(condition(&amr, "Ready"), ("False".into(), "DryRun".into()));
    assert_eq!(group(&amr, "ng-a").state, NodeGroupState::Pending);
    assert_eq!(group(&amr, "ng-b").state, NodeGroupState::Pending);
    assert_eq!(group(&amr, "ng-current").state, NodeGroupState::UpToDate);
    let planned = w.events("RolloutPlanned").await;
    assert_eq!(planned.len(), 1);
    let note = planned[0].note.clone().unwrap_or_default();
    assert!(
        note.contains("ng-a") && note.contains("ng-b") && !note.contains("ingress-dev"),
        "{note}"
    );

    w.patch_spec(json!({"dryRun": false, "paused": true})).await;
    let amr = w
        .wait_for("Waiting (paused)", |a| {
            phase(a) == Some(AMIRefresherPhase::Waiting) && condition(a, "Ready").1 == "Paused"
        })
        .await;
    assert_eq!(group(&amr, "ng-a").state, NodeGroupState::Pending);
    assert_eq!(
        w.mutating_calls().await,
        Vec::<String>::new(),
        "paused: no mutating AWS call"
    );

    // A window that opens on the 1st of January only.
    w.patch_spec(json!({"paused": false, "maintenanceWindows": [{"schedule": "0 0 1 1 *", "duration": "1m"}]}))
        .await;
    w.wait_for("Waiting (window)", |a| {
        condition(a, "Ready").1 == "OutsideMaintenanceWindow"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.mutating_calls().await,
        Vec::<String>::new(),
        "held: no mutating AWS call"
    );

    // Open the window: the rollout resumes.
    w.patch_spec(
        json!({"maintenanceWindows": [{"schedule": "* * * * *", "duration": "1h", "timeZone": "Europe/Berlin"}]}),
    )
    .await;
    let amr = w.wait_for("Ready", ready).await;
    assert_eq!(amr.status.as_ref().and_then(|s| s.target_ami.clone()), Some(target));
    assert_eq!(w.count("UpdateNodegroupVersion").await, 2);
}

/// The requeue at the next opening: the controller's clock (debug builds: `OPSY_TEST_CLOCK_START`) is put a few
/// seconds before a window in America/New_York opens, and the resync interval is long, so only the wake-up
/// computed from the window starts the rollout.
#[tokio::test]
async fn a_window_that_opens_seconds_later_starts_the_rollout_when_it_opens() {
    let mut w = World::start().await;
    let (_, target) = seed_world(&mut w).await;
    // The next full minute at least 10 s away; the controller's clock starts 8 s before it.
    let real = Timestamp::now();
    let opening = (real + SignedDuration::from_secs(10 + 59))
        .round(
            jiff::TimestampRound::new()
                .smallest(jiff::Unit::Minute)
                .mode(jiff::RoundMode::Trunc),
        )
        .expect("round");
    let clock_start = opening - SignedDuration::from_secs(8);
    let wall = opening.to_zoned(jiff::tz::TimeZone::get("America/New_York").expect("zone"));
    let schedule = format!("{} {} * * *", wall.minute(), wall.hour());
    w.start_controller_with(&[
        ("OPSY_TEST_CLOCK_START", &clock_start.to_string()),
        ("RESYNC_INTERVAL", "10m"),
    ]);
    let started = std::time::Instant::now();
    w.apply_seed(|doc| {
        doc["spec"]["maintenanceWindows"] =
            json!([{"schedule": schedule, "duration": "1h", "timeZone": "America/New_York"}]);
    })
    .await;
    let waiting = w
        .wait_for("Waiting (window)", |a| {
            a.status.as_ref().is_some_and(|s| {
                get_condition(&s.conditions, "Ready").is_some_and(|c| c.reason == "OutsideMaintenanceWindow")
            })
        })
        .await;
    let message = get_condition(&waiting.status.as_ref().expect("status").conditions, "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains(&opening.to_string()), "{message}");
    assert_eq!(
        w.mutating_calls().await,
        Vec::<String>::new(),
        "before the window: no mutating AWS call"
    );
    let amr = w.wait_for("Ready", ready).await;
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "rolled {:?} after the start, before the window opened",
        started.elapsed()
    );
    assert_eq!(amr.status.as_ref().and_then(|s| s.target_ami.clone()), Some(target));
    assert_eq!(w.count("UpdateNodegroupVersion").await, 2);
}

/// `refreshConfig.maxUnavailable` that a node group does not have yet: UpdateNodegroupConfig first, tracked with
/// DescribeUpdate like any update (EKS applies it asynchronously and refuses a version update meanwhile), issued once,
/// then the version update; a failed config update halts the rollout like a failed version update.
#[tokio::test]
async fn the_update_config_is_applied_once_and_tracked_before_the_version_update() {
    let mut w = World::start().await;
    let (_, target) = seed_world(&mut w).await;
    w.aws.set_progress(true, Duration::ZERO).await.expect("manual progress");
    w.start_controller();
    w.apply_seed(|doc| doc["spec"]["refreshConfig"] = json!({"maxUnavailable": 2}))
        .await;
    let in_flight = |name: &'static str, type_: NodeGroupUpdateType| {
        move |a: &AMIRefresher| {
            a.status.as_ref().is_some_and(|s| {
                s.node_groups
                    .iter()
                    .any(|n| n.name == name && n.state == NodeGroupState::InProgress && n.update_type == Some(type_))
            })
        }
    };
    w.wait_for(
        "ng-a config update",
        in_flight("ng-a", NodeGroupUpdateType::ConfigUpdate),
    )
    .await;
    // Polled for a while: the config update is tracked, not issued again, and the version update waits for it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.count("UpdateNodegroupConfig").await, 1);
    assert_eq!(w.count("UpdateNodegroupVersion").await, 0);
    assert!(w.count("DescribeUpdate").await >= 2, "the config update is polled");
    assert_eq!(w.events("NodeGroupConfigUpdateStarted").await.len(), 1);

    let account = Account(DEFAULT_ACCOUNT.into());
    w.aws
        .finish_update(&account, REGION, CLUSTER, "ng-a", "Successful")
        .await
        .expect("finish config");
    w.wait_for(
        "ng-a version update",
        in_flight("ng-a", NodeGroupUpdateType::VersionUpdate),
    )
    .await;
    let ng_a = w
        .eks
        .describe_nodegroup()
        .cluster_name(CLUSTER)
        .nodegroup_name("ng-a")
        .send()
        .await
        .expect("describe");
    assert_eq!(
        ng_a.nodegroup()
            .and_then(|n| n.update_config())
            .and_then(|u| u.max_unavailable()),
        Some(2)
    );
    w.aws
        .finish_update(&account, REGION, CLUSTER, "ng-a", "Successful")
        .await
        .expect("finish version");

    // ng-b's config update fails: the group is Failed, the rollout halts, no version update is issued for it.
    w.wait_for(
        "ng-b config update",
        in_flight("ng-b", NodeGroupUpdateType::ConfigUpdate),
    )
    .await;
    w.aws
        .finish_update(&account, REGION, CLUSTER, "ng-b", "Failed")
        .await
        .expect("fail config");
    let amr = w
        .wait_for("Degraded", |a| phase(a) == Some(AMIRefresherPhase::Degraded))
        .await;
    let b = group(&amr, "ng-b");
    assert_eq!(b.state, NodeGroupState::Failed);
    assert!(
        b.message
            .as_deref()
            .unwrap_or_default()
            .contains("UpdateNodegroupConfig failed"),
        "{b:?}"
    );
    assert_eq!(group(&amr, "ng-a").state, NodeGroupState::Successful);
    assert_eq!(amr.status.as_ref().and_then(|s| s.target_ami.clone()), Some(target));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(w.count("UpdateNodegroupConfig").await, 2);
    assert_eq!(w.count("UpdateNodegroupVersion").await, 1);
    let failed = w.events("NodeGroupUpdateFailed").await;
    assert_eq!(failed.len(), 1, "{failed:?}");
}

#[tokio::test]
async fn a_restart_mid_update_resumes_the_same_update() {
    let mut w = World::start().await;
    seed_world(&mut w).await;
    w.aws.set_progress(true, Duration::ZERO).await.expect("manual progress");
    w.start_controller();
    w.apply_seed(|_| {}).await;
    let amr = w
        .wait_for("ng-a in progress", |a| {
            a.status
                .as_ref()
                .is_some_and(|s| s.node_groups.iter().any(|n| n.name == "ng-a" && n.update_id.is_some()))
        })
        .await;
    let update = group(&amr, "ng-a").update_id.clone().expect("update id");
    w.stop_controller().await;
    w.start_controller();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.count("UpdateNodegroupVersion").await,
        1,
        "no second update after the restart"
    );
    assert_eq!(w.count("CreateLaunchTemplateVersion").await, 1);
    let account = Account(DEFAULT_ACCOUNT.into());
    w.aws
        .finish_update(&account, REGION, CLUSTER, "ng-a", "Successful")
        .await
        .expect("finish");
    let amr = w
        .wait_for("ng-a successful", |a| {
            a.status.as_ref().is_some_and(|s| {
                s.node_groups
                    .iter()
                    .any(|n| n.name == "ng-a" && n.state == NodeGroupState::Successful)
            })
        })
        .await;
    assert_eq!(
        group(&amr, "ng-a").update_id.as_deref(),
        Some(update.as_str()),
        "the same update was tracked"
    );
    w.wait_for("ng-b in progress", |a| {
        a.status
            .as_ref()
            .is_some_and(|s| s.node_groups.iter().any(|n| n.name == "ng-b" && n.update_id.is_some()))
    })
    .await;
    w.aws
        .finish_update(&account, REGION, CLUSTER, "ng-b", "Successful")
        .await
        .expect("finish");
    w.wait_for("Ready", ready).await;
    assert_eq!(w.count("UpdateNodegroupVersion").await, 2);
    assert_eq!(w.count("CreateLaunchTemplateVersion").await, 2);
}

#[tokio::test]
async fn an_update_started_before_a_lost_status_write_is_adopted_not_repeated() {
    let mut w = World::start().await;
    let (_, target) = seed_world(&mut w).await;
    w.aws.set_progress(true, Duration::ZERO).await.expect("manual progress");
    // What a controller that crashed right after UpdateNodegroupVersion left behind: a running update onto a version
    // it made (its mark), no status.
    let lost = w.update_outside_the_controller("ng-a", &target, true).await;
    w.start_controller();
    w.apply_seed(|_| {}).await;
    let amr = w
        .wait_for("ng-a adopted", |a| {
            a.status
                .as_ref()
                .is_some_and(|s| s.node_groups.iter().any(|n| n.name == "ng-a" && n.update_id.is_some()))
        })
        .await;
    assert_eq!(group(&amr, "ng-a").update_id.as_deref(), Some(lost.as_str()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.count("UpdateNodegroupVersion").await, 1);
    assert_eq!(w.count("CreateLaunchTemplateVersion").await, 1);
}

/// A newer launch template version somebody else made with the target image (and possibly other changes) is never
/// reused: the controller makes its own from the group's current version.
#[tokio::test]
async fn a_version_somebody_else_made_with_the_target_image_is_not_reused() {
    let mut w = World::start().await;
    let (_, target) = seed_world(&mut w).await;
    let (lt, version, _) = w.nodegroup_image("ng-a").await;
    let foreign = w
        .ec2
        .create_launch_template_version()
        .launch_template_id(&lt)
        .source_version(&version)
        .version_description("hand-made: new image and a bigger disk")
        .launch_template_data(RequestLaunchTemplateData::builder().image_id(&target).build())
        .send()
        .await
        .expect("version")
        .launch_template_version()
        .and_then(|v| v.version_number())
        .expect("n")
        .to_string();
    w.start_controller();
    w.apply_seed(|_| {}).await;
    let amr = w.wait_for("Ready", ready).await;
    let a = group(&amr, "ng-a");
    assert_ne!(a.launch_template_version.as_deref(), Some(foreign.as_str()), "{a:?}");
    let (_, now_on, image) = w.nodegroup_image("ng-a").await;
    assert_eq!(
        (now_on.as_str(), image.as_str()),
        (
            a.launch_template_version.as_deref().unwrap_or_default(),
            target.as_str()
        )
    );
    // The foreign one, then one per rolled group.
    assert_eq!(w.count("CreateLaunchTemplateVersion").await, 3);
}

/// Somebody else's update (onto a version this controller did not make) is never adopted nor reported as ours:
/// the group waits with a message while the others roll, and afterwards counts as up to date, not as our success.
#[tokio::test]
async fn an_update_somebody_else_started_is_not_adopted_and_the_group_waits_for_it() {
    let mut w = World::start().await;
    let (_, target) = seed_world(&mut w).await;
    w.aws.set_progress(true, Duration::ZERO).await.expect("manual progress");
    let foreign = w.update_outside_the_controller("ng-a", &target, false).await;
    w.start_controller();
    w.apply_seed(|_| {}).await;
    let amr = w
        .wait_for("ng-b rolling", |a| {
            a.status.as_ref().is_some_and(|s| {
                s.node_groups
                    .iter()
                    .any(|n| n.name == "ng-b" && n.state == NodeGroupState::InProgress)
            })
        })
        .await;
    let a = group(&amr, "ng-a");
    assert_eq!(
        (a.state, a.update_id.as_deref()),
        (NodeGroupState::Pending, None),
        "{a:?}"
    );
    assert!(
        a.message.as_deref().unwrap_or_default().contains("someone else"),
        "{a:?}"
    );
    let account = Account(DEFAULT_ACCOUNT.into());
    w.aws
        .finish_update(&account, REGION, CLUSTER, "ng-a", "Successful")
        .await
        .expect("finish foreign");
    w.aws
        .finish_update(&account, REGION, CLUSTER, "ng-b", "Successful")
        .await
        .expect("finish ng-b");
    let amr = w.wait_for("Ready", ready).await;
    let a = group(&amr, "ng-a");
    assert_eq!(a.state, NodeGroupState::UpToDate, "{a:?}");
    assert_ne!(a.update_id.as_deref(), Some(foreign.as_str()));
    // One update by somebody else, one by the controller (ng-b); ng-a's success is not announced as ours.
    assert_eq!(w.count("UpdateNodegroupVersion").await, 2);
    let updated = w.events("NodeGroupUpdated").await;
    assert!(
        updated
            .iter()
            .all(|e| !e.note.as_deref().unwrap_or_default().contains("ng-a")),
        "{updated:?}"
    );
}

/// An update of ours that failed while its record was lost (crash before the status write, controller down) is
/// found with ListUpdates (which lists ended updates) when the group would be started again: the rollout halts
/// and says so, the update is not issued a second time; a retry then issues it.
#[tokio::test]
async fn an_update_that_failed_while_nobody_tracked_it_halts_instead_of_being_issued_again() {
    let mut w = World::start().await;
    let (_, target) = seed_world(&mut w).await;
    w.aws.set_progress(true, Duration::ZERO).await.expect("manual progress");
    let lost = w.update_outside_the_controller("ng-a", &target, true).await;
    let account = Account(DEFAULT_ACCOUNT.into());
    w.aws
        .finish_update(&account, REGION, CLUSTER, "ng-a", "Failed")
        .await
        .expect("fail");
    w.start_controller();
    w.apply_seed(|_| {}).await;
    let amr = w
        .wait_for("Degraded", |a| phase(a) == Some(AMIRefresherPhase::Degraded))
        .await;
    let a = group(&amr, "ng-a");
    assert_eq!(a.state, NodeGroupState::Failed, "{a:?}");
    assert_eq!(a.update_id.as_deref(), Some(lost.as_str()));
    assert_eq!(group(&amr, "ng-b").state, NodeGroupState::Pending);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.count("UpdateNodegroupVersion").await, 1, "not issued again");
    assert_eq!(w.events("NodeGroupUpdateFailed").await.len(), 1);

    // A retry issues it again (onto the same version), and the old failure does not halt it a second time.
    w.ask_retry("1").await;
    w.wait_for("ng-a retried", |a| {
        a.status.as_ref().is_some_and(|s| {
            s.node_groups.iter().any(|n| {
                n.name == "ng-a"
                    && n.state == NodeGroupState::InProgress
                    && n.update_id.as_deref() != Some(lost.as_str())
            })
        })
    })
    .await;
    assert_eq!(w.count("UpdateNodegroupVersion").await, 2);
    assert_eq!(w.count("CreateLaunchTemplateVersion").await, 1, "the version is reused");
}

#[tokio::test]
async fn more_than_a_hundred_node_groups_and_throttling() {
    let mut w = World::start().await;
    let old = w.managed_ami("v1", 4).await;
    let target = w.managed_ami("v2", 1).await;
    let names: Vec<String> = (0..105).map(|i| format!("ng-{i:03}")).collect();
    for (i, name) in names.iter().enumerate() {
        // Every tenth, the first and the last (on the second ListNodegroups page) are outdated.
        let image = if i % 10 == 0 || i == 104 { &old } else { &target };
        w.nodegroup(name, image).await;
    }
    w.aws
        .inject(&Fault::error("eks", "DescribeNodegroup", 400, "ThrottlingException", 3))
        .await
        .expect("fault");
    w.start_controller();
    w.apply_seed(|doc| doc["spec"]["refreshConfig"] = json!({"parallelism": 2}))
        .await;
    let amr = w.wait_for("Ready", ready).await;
    let status = amr.status.as_ref().expect("status");
    assert_eq!(status.progress.as_deref(), Some("105/105"));
    // From the emulator's own timeline: never more than `parallelism` updates ran at once, and it used both slots.
    let spans = w.aws.timeline().await.expect("timeline");
    assert_eq!(spans.len(), 12, "{spans:#?}");
    assert_eq!(aws_sim::max_concurrent(&spans), 2, "{spans:#?}");
    assert_eq!(status.node_groups.len(), 105);
    assert_eq!(group(&amr, "ng-104").state, NodeGroupState::Successful);
    assert_eq!(group(&amr, "ng-000").state, NodeGroupState::Successful);
    let (_, _, image) = w.nodegroup_image("ng-104").await;
    assert_eq!(image, target);
    assert!(w.count("ListNodegroups").await >= 2, "paginated");
    assert_eq!(w.count("UpdateNodegroupVersion").await, 12);
}

/// AWS refusing with a 5xx (classified transient) is not a failed rollout: the reconcile fails, is retried with
/// a back-off that doubles, and the group is updated once when AWS answers again. Never a `Failed` group, never a
/// halt, never a `RolloutFailed` Event.
#[tokio::test]
async fn an_unavailable_eks_is_retried_with_growing_back_off_and_never_recorded_as_a_failed_rollout() {
    let mut w = World::start().await;
    let old = w.managed_ami("v1", 4).await;
    let target = w.managed_ami("v2", 1).await;
    w.nodegroup("ng-a", &old).await;
    // Two attempts per AWS call and six refusals: three reconciles in a row fail, the fourth gets through.
    w.aws
        .inject(&Fault::error(
            "eks",
            "UpdateNodegroupVersion",
            503,
            "ServiceUnavailableException",
            6,
        ))
        .await
        .expect("fault");
    w.start_controller_with(&[("AWS_MAX_ATTEMPTS", "2")]);
    w.apply_seed(|_| {}).await;
    let seen_failed = std::sync::Mutex::new(Vec::new());
    let amr = w
        .wait_for("Ready", |amr| {
            let status = amr.status.clone().unwrap_or_default();
            if status.node_groups.iter().any(|g| g.state == NodeGroupState::Failed)
                || status.halted_target.is_some()
                || phase(amr) == Some(AMIRefresherPhase::Degraded)
            {
                seen_failed.lock().expect("lock").push(status);
            }
            ready(amr)
        })
        .await;
    assert!(
        seen_failed.lock().expect("lock").is_empty(),
        "a transient error was recorded as a failure: {seen_failed:#?}"
    );
    assert_eq!(group(&amr, "ng-a").state, NodeGroupState::Successful);
    assert_eq!(w.nodegroup_image("ng-a").await.2, target);
    let delays = control_plane::process::retry_delays(&w.controller_log(), "AWSUnavailable");
    assert!(delays.len() >= 3, "three failed reconciles: {delays:?}");
    assert_eq!(
        delays[..3],
        [200, 400, 800].map(Duration::from_millis),
        "growing back-off"
    );
    assert_eq!(w.aws.timeline().await.expect("timeline").len(), 1, "one update ran");
    assert_eq!(
        w.count("CreateLaunchTemplateVersion").await,
        1,
        "the retries reuse the version the first attempt made"
    );
    let failed = Api::<Event>::default_namespaced(w.client.clone())
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("RolloutFailed"))
        .count();
    assert_eq!(failed, 0, "no failed rollout announced");
}

#[tokio::test]
async fn a_self_managed_group_is_rolled_with_an_instance_refresh() {
    let mut w = World::start().await;
    let old = w.managed_ami("v1", 4).await;
    let target = w.managed_ami("v2", 1).await;
    // A cluster with one managed group on target, plus a self-managed ASG on the old image.
    w.nodegroup("ng-current", &target).await;
    let lt = w.template("self-managed", &old).await;
    w.self_managed("workers-self", &lt, "1").await;
    w.start_controller();
    w.apply_seed(|doc| {
        doc["spec"]["autoScalingGroups"] = json!(["workers-self"]);
        doc["spec"]["refreshConfig"] =
            json!({"instanceRefresh": {"minHealthyPercentage": 75, "instanceWarmup": "2m", "autoRollback": true}});
    })
    .await;
    let amr = w.wait_for("Ready", ready).await;
    let g = group(&amr, "workers-self");
    assert_eq!(g.state, NodeGroupState::Successful);
    assert_eq!(g.kind, api_types::ami_refresher::NodeGroupKind::SelfManaged);
    let calls = w.calls().await;
    let starts: Vec<&Call> = calls.iter().filter(|c| c.action == "StartInstanceRefresh").collect();
    assert_eq!(starts.len(), 1, "{starts:#?}");
    let p = &starts[0].params;
    assert_eq!(
        p.get("Preferences.MinHealthyPercentage").map(String::as_str),
        Some("75")
    );
    assert_eq!(p.get("Preferences.InstanceWarmup").map(String::as_str), Some("120"));
    assert_eq!(p.get("Preferences.AutoRollback").map(String::as_str), Some("true"));
    assert_eq!(p.get("Preferences.SkipMatching").map(String::as_str), Some("true"));
    assert_eq!(
        p.get("DesiredConfiguration.LaunchTemplate.LaunchTemplateId")
            .map(String::as_str),
        Some(lt.as_str())
    );
    assert_eq!(
        p.get("DesiredConfiguration.LaunchTemplate.Version").map(String::as_str),
        Some("2")
    );
    let group = w
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("workers-self")
        .send()
        .await
        .expect("asg");
    let version = group.auto_scaling_groups()[0]
        .launch_template()
        .and_then(|l| l.version())
        .expect("version")
        .to_owned();
    assert_eq!(version, "2");
    assert_eq!(w.template_image(&lt, &version).await, target);
    assert!(w.count("DescribeInstanceRefreshes").await >= 2, "tracked by polling");
}

impl World {
    /// A self-managed Auto Scaling group launching from `template` at `version` (`"1"`, `"$Latest"`, ...).
    async fn self_managed(&self, name: &str, template: &str, version: &str) {
        self.asg
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_id(template)
                    .version(version)
                    .build(),
            )
            .min_size(0)
            .max_size(2)
            .desired_capacity(1)
            .availability_zones("us-west-2a")
            .send()
            .await
            .expect("asg");
    }

    fn in_state(name: &'static str, state: NodeGroupState) -> impl Fn(&AMIRefresher) -> bool {
        move |a: &AMIRefresher| {
            a.status
                .as_ref()
                .is_some_and(|s| s.node_groups.iter().any(|n| n.name == name && n.state == state))
        }
    }
}

/// A self-managed group on `$Latest`: the new version moves `$Latest` at once, but only a successful instance refresh
/// moves the instances. A template shared at `$Latest` with a group outside the rollout is refused, and so is the
/// Auto Scaling group of an EKS managed node group; a failed refresh keeps the group outdated and halts.
#[tokio::test]
async fn a_self_managed_group_on_latest_is_up_to_date_only_after_a_successful_refresh() {
    let mut w = World::start().await;
    let old = w.managed_ami("v1", 4).await;
    let target = w.managed_ami("v2", 1).await;
    w.nodegroup("ng-current", &target).await;
    let eks_asg = w
        .eks
        .describe_nodegroup()
        .cluster_name(CLUSTER)
        .nodegroup_name("ng-current")
        .send()
        .await
        .expect("ng")
        .nodegroup()
        .and_then(|n| n.resources())
        .and_then(|r| r.auto_scaling_groups().first())
        .and_then(|g| g.name())
        .expect("asg of the node group")
        .to_owned();
    let lt = w.template("self-managed", &old).await;
    w.self_managed("workers-latest", &lt, "$Latest").await;
    w.self_managed("batch-latest", &lt, "$Latest").await;
    w.aws.set_progress(true, Duration::ZERO).await.expect("manual progress");
    w.start_controller();
    w.apply_seed(|doc| doc["spec"]["autoScalingGroups"] = json!(["workers-latest", eks_asg.clone()]))
        .await;
    let amr = w
        .wait_for(
            "workers-latest skipped",
            World::in_state("workers-latest", NodeGroupState::Skipped),
        )
        .await;
    let message = group(&amr, "workers-latest").message.clone().unwrap_or_default();
    assert!(
        message.contains("batch-latest") && message.contains("$Latest"),
        "{message}"
    );
    let eks = group(&amr, &eks_asg);
    assert_eq!(eks.state, NodeGroupState::Skipped, "{eks:?}");
    assert!(
        eks.message.as_deref().unwrap_or_default().contains("ng-current"),
        "{eks:?}"
    );
    assert_eq!(w.count("CreateLaunchTemplateVersion").await, 0);

    // The other group goes away: the rollout proceeds, and the refresh fails.
    w.asg
        .delete_auto_scaling_group()
        .auto_scaling_group_name("batch-latest")
        .force_delete(true)
        .send()
        .await
        .expect("delete");
    w.wait_for(
        "refreshing",
        World::in_state("workers-latest", NodeGroupState::InProgress),
    )
    .await;
    assert_eq!(w.template_image(&lt, "$Latest").await, target, "$Latest moved at once");
    let account = Account(DEFAULT_ACCOUNT.into());
    w.aws
        .finish_refresh(&account, REGION, "workers-latest", "Failed")
        .await
        .expect("fail");
    w.wait_for("Degraded", |a| phase(a) == Some(AMIRefresherPhase::Degraded))
        .await;
    // Polled again and again: $Latest names the target, but the instances never got it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let amr = w.api().get(NAME).await.expect("get");
    assert_eq!(phase(&amr), Some(AMIRefresherPhase::Degraded));
    let g = group(&amr, "workers-latest");
    assert_eq!(g.state, NodeGroupState::Failed, "{g:?}");
    assert_eq!(g.current_ami.as_deref(), Some(old.as_str()), "{g:?}");
    assert_eq!(w.count("StartInstanceRefresh").await, 1);
}

/// A crash between CreateLaunchTemplateVersion and StartInstanceRefresh on a `$Latest` group: `$Latest` already
/// names the target, yet the group is not up to date; after the restart the refresh is started onto the same
/// version.
#[tokio::test]
async fn a_refresh_never_started_before_a_crash_is_started_after_the_restart() {
    let mut w = World::start().await;
    let old = w.managed_ami("v1", 4).await;
    let target = w.managed_ami("v2", 1).await;
    w.nodegroup("ng-current", &target).await;
    let lt = w.template("self-managed", &old).await;
    w.self_managed("workers-latest", &lt, "$Latest").await;
    w.start_controller_with(&[("OPSY_FAILPOINT", "version-created")]);
    w.apply_seed(|doc| doc["spec"]["autoScalingGroups"] = json!(["workers-latest"]))
        .await;
    let crashed = w.controllers.children.pop().expect("controller");
    let mut crashed = crashed;
    tokio::time::timeout(WAIT, crashed.wait())
        .await
        .expect("the controller reaches the failpoint")
        .expect("exit status");
    assert_eq!(w.count("CreateLaunchTemplateVersion").await, 1);
    assert_eq!(w.count("StartInstanceRefresh").await, 0);
    assert_eq!(w.template_image(&lt, "$Latest").await, target);

    w.start_controller();
    let amr = w.wait_for("Ready", ready).await;
    let g = group(&amr, "workers-latest");
    assert_eq!(g.state, NodeGroupState::Successful, "{g:?}");
    assert_eq!(w.count("CreateLaunchTemplateVersion").await, 1, "the version is reused");
    assert_eq!(w.count("StartInstanceRefresh").await, 1);
}

/// Launch template versions made by the controller are kept up to `LAUNCH_TEMPLATE_VERSIONS_KEPT` per template;
/// older ones go after a successful update, except those something uses (here an Auto Scaling group pinned to one)
/// and the template's default.
#[tokio::test]
async fn old_launch_template_versions_are_deleted_unless_something_uses_them() {
    let mut w = World::start().await;
    let images = [
        w.managed_ami("v1", 50).await,
        w.managed_ami("v2", 40).await,
        w.managed_ami("v3", 30).await,
        w.managed_ami("v4", 20).await,
        w.managed_ami("v5", 10).await,
    ];
    w.nodegroup("ng-a", &images[0]).await;
    let (lt, _, _) = w.nodegroup_image("ng-a").await;
    w.start_controller_with(&[("LAUNCH_TEMPLATE_VERSIONS_KEPT", "2")]);
    w.apply_seed(|doc| {
        let spec = doc["spec"].as_object_mut().expect("spec");
        spec.remove("amiFilters");
        spec.insert("ami".into(), json!(images[1]));
        spec.insert("amiOwners".into(), json!([EKS_OWNER]));
        spec.insert("expiresIn".into(), json!("1d"));
    })
    .await;
    w.wait_for("Ready on v2", ready).await;
    // Something else launches from version 2 (the first one the controller made).
    w.self_managed("pinned", &lt, "2").await;
    for image in &images[2..] {
        w.patch_spec(json!({"ami": image})).await;
        w.wait_for("Ready on the next image", |a| {
            ready(a) && a.status.as_ref().and_then(|s| s.target_ami.as_deref()) == Some(image.as_str())
        })
        .await;
    }
    // Ours: 2, 3, 4, 5. Kept: the newest two (5, 4), 2 (in use by `pinned`) and the default 1; 3 goes.
    let listed = w
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(&lt)
        .send()
        .await
        .expect("versions");
    let mut numbers: Vec<i64> = listed
        .launch_template_versions()
        .iter()
        .filter_map(|v| v.version_number())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, vec![1, 2, 4, 5], "{}", w.controller_log());
    assert!(w.count("DeleteLaunchTemplateVersions").await >= 1);
    let (_, now_on, image) = w.nodegroup_image("ng-a").await;
    assert_eq!((now_on.as_str(), image.as_str()), ("5", images[4].as_str()));
}

/// Bodies received by a local webhook.
type Inbox = std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>;

async fn fake_webhook() -> (String, Inbox) {
    let inbox = Inbox::default();
    let recorded = inbox.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let inbox = recorded.clone();
            async move {
                inbox
                    .lock()
                    .expect("inbox")
                    .push(serde_json::from_slice(&body).unwrap_or_default());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (format!("http://{addr}/hook"), inbox)
}

#[tokio::test]
async fn a_webhook_on_a_private_address_is_refused_by_default_and_never_called() {
    let mut w = World::start().await;
    seed_world(&mut w).await;
    let (url, inbox) = fake_webhook().await;
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(json!({"metadata": {"name": "hook"}, "stringData": {"url": url}})).expect("secret");
    Api::<k8s_openapi::api::core::v1::Secret>::default_namespaced(w.client.clone())
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    // The controller's defaults: https only, no private or loopback hosts.
    w.start_controller_with(&[("WEBHOOK_ALLOW_HTTP", "false"), ("WEBHOOK_ALLOW_PRIVATE", "false")]);
    w.apply_seed(|doc| doc["spec"]["notifier"] = json!({"webhook": {"secret": "hook"}}))
        .await;
    w.wait_for("Ready", ready).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(inbox.lock().expect("inbox").is_empty(), "the webhook was never called");
    let failed = w.events("NotificationFailed").await;
    assert!(!failed.is_empty(), "each refused delivery is a Warning Event");
    for event in &failed {
        let note = event.note.clone().unwrap_or_default();
        assert!(note.contains("webhook") && note.contains("refused"), "{note}");
        assert!(
            !note.contains(&url),
            "the URL (it may carry a token) is never echoed: {note}"
        );
    }
}

#[tokio::test]
async fn an_explicit_ami_is_verified_and_each_transition_is_notified_once() {
    let mut w = World::start().await;
    let (_, target) = seed_world(&mut w).await;
    let (url, inbox) = fake_webhook().await;
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(json!({"metadata": {"name": "hook"}, "stringData": {"url": url}})).expect("secret");
    Api::<k8s_openapi::api::core::v1::Secret>::default_namespaced(w.client.clone())
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    w.start_controller();
    // First an AMI that does not exist: refused, nothing touched.
    w.apply_seed(|doc| {
        let spec = doc["spec"].as_object_mut().expect("spec");
        spec.remove("amiFilters");
        spec.insert("ami".into(), json!("ami-0123456789abcdef0"));
        spec.insert("amiOwners".into(), json!([EKS_OWNER]));
        spec.insert("notifier".into(), json!({"webhook": {"secret": "hook"}}));
    })
    .await;
    let amr = w
        .wait_for("NoEligibleAMI", |a| phase(a) == Some(AMIRefresherPhase::NoEligibleAMI))
        .await;
    let message = get_condition(&amr.status.as_ref().expect("status").conditions, "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(message.contains("does not exist"), "{message}");
    assert_eq!(w.mutating_calls().await, Vec::<String>::new());

    w.patch_spec(json!({ "ami": target })).await;
    let amr = w.wait_for("Ready", ready).await;
    assert_eq!(
        amr.status.as_ref().and_then(|s| s.target_ami_source.as_deref()),
        Some("spec.ami")
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received = inbox.lock().expect("inbox").clone();
    let per_group: Vec<(String, String)> = received
        .iter()
        .filter(|n| n["nodeGroup"].is_string())
        .map(|n| {
            (
                n["nodeGroup"].as_str().unwrap_or_default().to_owned(),
                n["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        per_group,
        vec![
            ("ng-a".to_owned(), "NodeGroupUpdateStarted".to_owned()),
            ("ng-a".to_owned(), "NodeGroupUpdated".to_owned()),
            ("ng-b".to_owned(), "NodeGroupUpdateStarted".to_owned()),
            ("ng-b".to_owned(), "NodeGroupUpdated".to_owned()),
        ],
        "{received:#?}"
    );
}

#[tokio::test]
async fn the_ami_of_a_referenced_packer_builder_is_rolled_and_followed() {
    let mut w = World::start().await;
    let (_, target) = seed_world(&mut w).await;
    let builders: Api<PackerBuilder> = Api::default_namespaced(w.client.clone());
    let text = std::fs::read_to_string(workspace().join("examples/seed/packerbuilder-000.yaml")).expect("seed");
    let pb: PackerBuilder = serde_norway::from_str(&text).expect("pb");
    builders.create(&PostParams::default(), &pb).await.expect("pb");
    let set_ami = |ami: String| {
        let builders = builders.clone();
        async move {
            builders
                .patch_status(
                    "packer-builder-local",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {"lastRunBuiltImageID": ami}})),
                )
                .await
                .expect("status");
        }
    };
    set_ami(target.clone()).await;
    w.start_controller_with(&[("RESYNC_INTERVAL", "10m")]);
    w.apply_seed(|doc| {
        let spec = doc["spec"].as_object_mut().expect("spec");
        spec.remove("amiFilters");
        spec.insert("packerBuilderRef".into(), json!({"name": "packer-builder-local"}));
        // The builder's AMIs come from the image account (in this world, the EKS owner's).
        spec.insert("amiOwners".into(), json!([EKS_OWNER]));
    })
    .await;
    let amr = w.wait_for("Ready", ready).await;
    assert_eq!(
        amr.status.as_ref().and_then(|s| s.target_ami_source.clone()),
        Some(format!(
            "packerBuilderRef {}/packer-builder-local",
            w.cluster.namespace()
        ))
    );
    // The builder produces a newer AMI: the refresher follows at once (watch, not the 10 minute resync).
    let newer = w.managed_ami("v3", 0).await;
    set_ami(newer.clone()).await;
    let amr = w
        .wait_for("Ready on the newer AMI", |a| {
            ready(a) && a.status.as_ref().and_then(|s| s.target_ami.as_deref()) == Some(newer.as_str())
        })
        .await;
    assert_eq!(amr.status.as_ref().and_then(|s| s.progress.as_deref()), Some("3/3"));
    let (_, _, image) = w.nodegroup_image("ng-current").await;
    assert_eq!(image, newer);
}

/// An AMI from an owner that is not trusted (`amiOwners`, else the `owner-id` filter, else this account) is never
/// rolled, whatever names it: `spec.ami`, a PackerBuilder's status or filters. Naming the owner in `amiOwners`
/// makes it usable.
#[tokio::test]
async fn an_ami_from_an_untrusted_owner_is_never_rolled_whatever_names_it() {
    const STRANGER: &str = "999988887777";
    let mut w = World::start().await;
    seed_world(&mut w).await;
    let strangers = w
        .seed_ami(
            "amazon-eks-node-al2023-x86_64-standard-1.30-stranger",
            STRANGER,
            ago(1),
            managed_tags(ago(1), "active"),
        )
        .await;
    w.start_controller();
    w.apply_seed(|doc| {
        let spec = doc["spec"].as_object_mut().expect("spec");
        spec.remove("amiFilters");
        spec.insert("ami".into(), json!(strangers.clone()));
        spec.insert("amiOwners".into(), json!([EKS_OWNER]));
    })
    .await;
    let untrusted = |a: &AMIRefresher| {
        phase(a) == Some(AMIRefresherPhase::NoEligibleAMI)
            && a.status.as_ref().is_some_and(|s| {
                get_condition(&s.conditions, "Ready").is_some_and(|c| c.message.contains("not a trusted owner"))
            })
    };
    w.wait_for("spec.ami refused", untrusted).await;

    // The same AMI through a PackerBuilder's status.
    let builders: Api<PackerBuilder> = Api::default_namespaced(w.client.clone());
    let text = std::fs::read_to_string(workspace().join("examples/seed/packerbuilder-000.yaml")).expect("seed");
    let pb: PackerBuilder = serde_norway::from_str(&text).expect("pb");
    builders.create(&PostParams::default(), &pb).await.expect("pb");
    builders
        .patch_status(
            "packer-builder-local",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastRunBuiltImageID": strangers}})),
        )
        .await
        .expect("status");
    w.api()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ami": null, "packerBuilderRef": {"name": "packer-builder-local"}}})),
        )
        .await
        .expect("patch");
    let amr = w
        .wait_for("packerBuilderRef refused", |a| {
            untrusted(a) && a.metadata.generation == a.status.as_ref().and_then(|s| s.observed_generation)
        })
        .await;
    assert!(amr.spec.packer_builder_ref.is_some());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.mutating_calls().await, Vec::<String>::new(), "nothing rolled");

    // Trusted explicitly: rolled.
    w.patch_spec(json!({"amiOwners": [EKS_OWNER, STRANGER]})).await;
    let amr = w.wait_for("Ready", ready).await;
    assert_eq!(amr.status.as_ref().and_then(|s| s.target_ami.clone()), Some(strangers));
}

/// AMIs shared from an image account carry no visible tags in the cluster account (EC2 shows tags to the owner
/// only). With `amiOwners` naming that account they are found by the filters and judged by EC2's own fields; an
/// AMI of an owner that is not named is never used, however new.
#[tokio::test]
async fn an_ami_shared_from_a_trusted_image_account_is_found_without_tags_and_rolled() {
    const IMAGE_ACCOUNT: &str = "210987654321";
    let mut w = World::start().await;
    let old = w.managed_ami("v1", 60 * 24 * 3).await;
    w.nodegroup("ng-a", &old).await;
    let shared = |suffix: &str, minutes: i64, owner: &'static str| {
        let name = format!("amazon-eks-node-al2023-x86_64-standard-1.30-{suffix}");
        let w = &w;
        async move {
            w.seed_ami(&name, owner, ago(minutes), managed_tags(ago(minutes), "active"))
                .await
        }
    };
    let older = shared("shared-old", 180, IMAGE_ACCOUNT).await;
    let newer = shared("shared-new", 60, IMAGE_ACCOUNT).await;
    let stranger = shared("stranger", 10, "999988887777").await;
    // As in EC2: the image account's tags are invisible here.
    let described = w
        .ec2
        .describe_images()
        .image_ids(&newer)
        .send()
        .await
        .expect("describe");
    assert!(described.images()[0].tags().is_empty(), "{described:?}");

    w.start_controller();
    w.apply_seed(|doc| {
        let spec = doc["spec"].as_object_mut().expect("spec");
        spec.insert(
            "amiFilters".into(),
            json!([{"name": "name", "values": ["amazon-eks-node-al2023-x86_64-standard-1.30*"]}]),
        );
        spec.insert("amiOwners".into(), json!([IMAGE_ACCOUNT]));
        spec.insert("expiresIn".into(), json!("1d"));
    })
    .await;
    let amr = w.wait_for("Ready", ready).await;
    let target = amr.status.as_ref().and_then(|s| s.target_ami.clone()).expect("target");
    assert_eq!(target, newer);
    assert_ne!(target, older);
    assert_ne!(target, stranger);
    let (_, _, image) = w.nodegroup_image("ng-a").await;
    assert_eq!(image, newer);
}

const SERVICE_ACCOUNT_USER: &str = "system:serviceaccount:opsy-system:opsy-ami-refresh-controller";
/// The Lease name the chart gives release `opsy` (its full name).
const CHART_LEASE: &str = "opsy-ami-refresh-controller";

/// Runs the controller as the chart's ServiceAccount with leader election, as in a cluster. On kube-sim the requests
/// are recorded as that user (and judged afterwards by [`chart_allows_every_request`]); on the real server the
/// chart's RBAC (rendered with `sets`) is applied and the controller authenticates with a token of that
/// ServiceAccount, so the real authorizer judges every request as it is made.
async fn start_as_service_account(
    w: &mut World,
    pod: &str,
    metrics: &str,
    sets: &[&str],
    env: &[(&str, &str)],
) -> tempfile::NamedTempFile {
    let system = w.cluster.scoped("opsy-system");
    w.cluster.create_namespace(&w.client, &system).await.expect("ns");
    let kubeconfig = tempfile::NamedTempFile::new().expect("kubeconfig");
    match w.cluster.sim() {
        Some(server) => server
            .write_kubeconfig_as(kubeconfig.path(), SERVICE_ACCOUNT_USER)
            .expect("kubeconfig"),
        None => {
            let yaml = w
                .cluster
                .chart_service_account_kubeconfig(
                    &w.client,
                    &workspace().join("charts/opsy-ami-operator"),
                    sets,
                    &system,
                    "opsy-ami-refresh-controller",
                )
                .await
                .expect("the chart's RBAC applies to the real server");
            std::fs::write(kubeconfig.path(), yaml).expect("kubeconfig");
        }
    }
    let path = kubeconfig.path().to_string_lossy().into_owned();
    let mut all = vec![
        ("KUBECONFIG", path.as_str()),
        ("LEADER_ELECT", "true"),
        ("LEASE_NAME", CHART_LEASE),
        ("POD_NAMESPACE", system.as_str()),
        ("POD_NAME", pod),
        ("METRICS_ADDR", metrics),
        ("LOG_FORMAT", "json"),
    ];
    all.extend_from_slice(env);
    w.start_controller_with(&all);
    kubeconfig
}

/// On kube-sim: the recorded requests of the chart's ServiceAccount against the rules the chart renders with
/// `sets`. On the real server the authorizer already judged each request: none may have been refused.
fn chart_allows_every_request(w: &World, sets: &[&str]) -> Result<Vec<String>, String> {
    let Some(records) = w.cluster.requests() else {
        let log = w.controller_log();
        return match log.lines().find(|l| l.contains("forbidden") || l.contains("Forbidden")) {
            Some(line) => Err(format!("the real server refused a request: {line}")),
            None => Ok(Vec::new()),
        };
    };
    kube_sim::rbac::check_chart(
        &workspace().join("charts/opsy-ami-operator"),
        sets,
        "opsy-system",
        "opsy-ami-refresh-controller",
        SERVICE_ACCOUNT_USER,
        &records,
    )
}

#[tokio::test]
async fn every_request_of_a_rollout_is_allowed_by_the_chart_rbac() {
    let mut w = World::start().await;
    seed_world(&mut w).await;
    let _kubeconfig = start_as_service_account(&mut w, "amr-0", "127.0.0.1:0", &[], &[]).await;
    w.apply_seed(|doc| doc["spec"]["notifier"] = json!({"webhook": {"secret": "missing-hook"}}))
        .await;
    w.wait_for("Ready", ready).await;
    if let Err(denied) = chart_allows_every_request(&w, &[]) {
        panic!("requests the chart does not allow:\n{denied}");
    }
    if w.cluster.sim().is_some() {
        let watched = format!("ami-refresh-controller.watchNamespaces={{{}}}", w.cluster.namespace());
        let sets = ["ami-refresh-controller.rbac.scope=namespace", watched.as_str()];
        // Namespaced RBAC only fits a controller that watches namespaces: cluster-wide lists must be denied.
        if let Err(denied) = chart_allows_every_request(&w, &sets) {
            assert!(
                denied.lines().all(|l| l.contains("ns=\"\"")),
                "namespaced rules deny a namespaced request:\n{denied}"
            );
        }
    }
}

#[tokio::test]
async fn namespaced_rbac_covers_a_controller_that_watches_one_namespace() {
    let mut w = World::start().await;
    seed_world(&mut w).await;
    let namespace = w.cluster.namespace().to_owned();
    let watched = format!("ami-refresh-controller.watchNamespaces={{{namespace}}}");
    let sets = ["ami-refresh-controller.rbac.scope=namespace", watched.as_str()];
    let _kubeconfig = start_as_service_account(
        &mut w,
        "amr-0",
        "127.0.0.1:0",
        &sets,
        &[("WATCH_NAMESPACE", namespace.as_str())],
    )
    .await;
    w.apply_seed(|_| {}).await;
    w.wait_for("Ready", ready).await;
    if let Err(denied) = chart_allows_every_request(&w, &sets) {
        panic!("requests the namespaced chart does not allow:\n{denied}");
    }
}

async fn get_text(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test]
async fn two_replicas_one_leader_hand_over_and_metrics() {
    let mut w = World::start().await;
    seed_world(&mut w).await;
    w.aws.set_progress(true, Duration::ZERO).await.expect("manual progress");
    let (p0, p1) = (free_port(), free_port());
    let _k0 = start_as_service_account(&mut w, "amr-0", &format!("127.0.0.1:{p0}"), &[], &[]).await;
    // Give the first replica the Lease, then start the standby.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _k1 = start_as_service_account(&mut w, "amr-1", &format!("127.0.0.1:{p1}"), &[], &[]).await;
    w.apply_seed(|_| {}).await;
    w.wait_for("ng-a in progress", |a| {
        a.status
            .as_ref()
            .is_some_and(|s| s.node_groups.iter().any(|n| n.name == "ng-a" && n.update_id.is_some()))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Both serve health; only the leader reconciles.
    for port in [p0, p1] {
        assert_eq!(get_text(&format!("http://127.0.0.1:{port}/healthz")).await.0, 200);
        assert_eq!(get_text(&format!("http://127.0.0.1:{port}/readyz")).await.0, 200);
    }
    let (status, leader_metrics) = get_text(&format!("http://127.0.0.1:{p0}/metrics")).await;
    assert_eq!(status, 200);
    for name in [
        "ami_refresh_controller_reconcile_total",
        "ami_refresh_controller_reconcile_duration_seconds_bucket",
        "ami_refresh_controller_rollouts_total",
        "ami_refresh_controller_aws_calls_total",
    ] {
        assert!(leader_metrics.contains(name), "{name} missing:\n{leader_metrics}");
    }
    assert!(
        leader_metrics.contains(
            r#"ami_refresh_controller_aws_calls_total{service="eks",action="UpdateNodegroupVersion",outcome="ok"} 1"#
        ),
        "{leader_metrics}"
    );
    let (_, standby_metrics) = get_text(&format!("http://127.0.0.1:{p1}/metrics")).await;
    assert!(
        !standby_metrics.contains("ami_refresh_controller_reconcile_total{result=\"ok\"}"),
        "standby reconciled:\n{standby_metrics}"
    );
    let lease: k8s_openapi::api::coordination::v1::Lease =
        Api::namespaced(w.client.clone(), &w.cluster.scoped("opsy-system"))
            .get(CHART_LEASE)
            .await
            .expect("lease");
    assert_eq!(lease.spec.and_then(|s| s.holder_identity).as_deref(), Some("amr-0"));

    // Kill the leader (no clean release): the standby takes over within the lease duration and finishes the job.
    let mut leader = w.controllers.children.remove(0);
    leader.kill().await.expect("kill");
    let killed = std::time::Instant::now();
    let account = Account(DEFAULT_ACCOUNT.into());
    w.aws
        .finish_update(&account, REGION, CLUSTER, "ng-a", "Successful")
        .await
        .expect("finish");
    w.wait_for("ng-b in progress", |a| {
        a.status
            .as_ref()
            .is_some_and(|s| s.node_groups.iter().any(|n| n.name == "ng-b" && n.update_id.is_some()))
    })
    .await;
    assert!(
        killed.elapsed() < Duration::from_secs(15 + 10),
        "hand-over took {:?}",
        killed.elapsed()
    );
    let lease: k8s_openapi::api::coordination::v1::Lease =
        Api::namespaced(w.client.clone(), &w.cluster.scoped("opsy-system"))
            .get(CHART_LEASE)
            .await
            .expect("lease");
    assert_eq!(lease.spec.and_then(|s| s.holder_identity).as_deref(), Some("amr-1"));
    w.aws
        .finish_update(&account, REGION, CLUSTER, "ng-b", "Successful")
        .await
        .expect("finish");
    w.wait_for("Ready", ready).await;
    assert_eq!(
        w.count("UpdateNodegroupVersion").await,
        2,
        "never two updates for one group"
    );
}

#[tokio::test]
async fn sigterm_releases_the_lease_and_exits_cleanly() {
    let mut w = World::start().await;
    seed_world(&mut w).await;
    let _kubeconfig = start_as_service_account(&mut w, "amr-0", "127.0.0.1:0", &[], &[]).await;
    w.apply_seed(|_| {}).await;
    w.wait_for("Ready", ready).await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(w.client.clone(), &w.cluster.scoped("opsy-system"));
    let holder = leases
        .get(CHART_LEASE)
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("amr-0"));
    let mut child = w.controllers.children.remove(0);
    let pid = i32::try_from(child.id().expect("pid")).expect("pid");
    let sent = std::time::Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits within 10 s of SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    eprintln!("stopped {:?} after SIGTERM", sent.elapsed());
    let holder = leases
        .get(CHART_LEASE)
        .await
        .expect("lease")
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder, None, "the Lease is released for a standby");
}

#[tokio::test]
async fn healthz_fails_while_a_reconcile_is_stuck_on_a_silent_aws_endpoint() {
    let mut w = World::start().await;
    // An AWS endpoint that accepts connections and never answers: every call waits for the SDK's timeouts.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_url = format!("http://{}", silent.local_addr().expect("addr"));
    let _held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            open.push(connection);
        }
    });
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    w.start_controller_with(&[
        ("AWS_ENDPOINT_URL", silent_url.as_str()),
        ("METRICS_ADDR", addr.as_str()),
        ("LIVENESS_STALL_AFTER", "2s"),
    ]);
    let healthz = format!("http://127.0.0.1:{port}/healthz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while get_text(&healthz).await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "healthz never came up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Idle: live.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(get_text(&healthz).await.0, 200, "an idle controller is live");

    w.apply_seed(|_| {}).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = get_text(&healthz).await;
        if status == 503 {
            assert!(body.contains("a reconcile has been running"), "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "healthz stayed {status} while the reconcile hung"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    w.stop_controller().await;
}

#[tokio::test]
async fn a_settled_refresher_reads_each_numbered_launch_template_version_once() {
    let mut w = World::start().await;
    seed_world(&mut w).await;
    w.start_controller();
    w.apply_seed(|_| {}).await;
    w.wait_for("Ready", ready).await;
    // Settled: resyncs every second still describe the node groups, but a numbered launch template version never
    // changes once created, so none is described again.
    let (versions, nodegroups) = (
        w.count("DescribeLaunchTemplateVersions").await,
        w.count("DescribeNodegroup").await,
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        w.count("DescribeNodegroup").await > nodegroups,
        "the refresher resynced in the window"
    );
    assert_eq!(
        w.count("DescribeLaunchTemplateVersions").await,
        versions,
        "numbered launch template versions are read once"
    );
    w.stop_controller().await;
}

/// An x86_64 AMI never reaches a node group of Graviton (arm64) instances: the group is skipped with a reason that
/// names both architectures, keeps its AMI and gets no update; the other groups roll as usual. The group's instance
/// type comes from its launch template (EKS reports no `instanceTypes` for such a group).
#[tokio::test]
async fn a_node_group_whose_instance_types_cannot_run_the_target_ami_is_skipped_and_never_updated() {
    let mut w = World::start().await;
    let (old, target) = seed_world(&mut w).await;
    w.nodegroup_typed("ng-graviton", &old, aws_sdk_ec2::types::InstanceType::M6gLarge)
        .await;
    w.start_controller();
    w.apply_seed(|_| {}).await;
    let amr = w
        .wait_for("ng-a and ng-b rolled", |a| {
            ["ng-a", "ng-b"].iter().all(|n| {
                a.status.as_ref().is_some_and(|s| {
                    s.node_groups
                        .iter()
                        .any(|g| g.name == *n && g.state == NodeGroupState::Successful)
                })
            })
        })
        .await;
    let graviton = group(&amr, "ng-graviton");
    assert_eq!(graviton.state, NodeGroupState::Skipped, "{graviton:?}");
    let message = graviton.message.clone().unwrap_or_default();
    assert!(
        message.contains("x86_64") && message.contains("m6g.large runs arm64"),
        "{message}"
    );
    let (_, _, image) = w.nodegroup_image("ng-graviton").await;
    assert_eq!(image, old, "the Graviton group keeps its AMI");
    assert_ne!(image, target);
    let touched: Vec<String> = w
        .mutating_calls()
        .await
        .into_iter()
        .filter(|c| c.contains("ng-graviton"))
        .collect();
    assert!(touched.is_empty(), "{touched:?}");
}

/// Two AMIRefreshers for the same cluster would alternate its node groups' AMI forever. The first claims every
/// group it rolls with a tag on the group; a second one (here pinned to the older AMI) is refused with
/// `Ready=False` reason `NodeGroupClaimed` naming the first, gets a Warning Event, and touches no group. When the
/// first is deleted its claims are stale and the second takes the groups over.
#[tokio::test]
async fn a_second_refresher_for_the_same_node_groups_is_refused_naming_the_first_and_touches_nothing() {
    let mut w = World::start().await;
    let (old, target) = seed_world(&mut w).await;
    w.start_controller();
    w.apply_seed(|_| {}).await;
    w.wait_for("Ready", ready).await;
    let updates_before = w.count("UpdateNodegroupVersion").await;
    w.apply_seed(|doc| {
        doc["metadata"]["name"] = json!("second");
        // The seed's expiresIn (5m) would expire the 4-minute-old AMI on a slow machine.
        doc["spec"]["expiresIn"] = json!("30d");
        let spec = doc["spec"].as_object_mut().expect("spec");
        spec.remove("amiFilters");
        spec.insert("ami".into(), json!(old));
        spec.insert("amiOwners".into(), json!([EKS_OWNER]));
    })
    .await;
    let second: Api<AMIRefresher> = w.api();
    let deadline = tokio::time::Instant::now() + WAIT;
    let refused = loop {
        let amr = second.get("second").await.expect("get");
        if let Some(c) = amr
            .status
            .as_ref()
            .and_then(|s| get_condition(&s.conditions, "Ready"))
            .filter(|c| c.reason == "NodeGroupClaimed")
        {
            break (amr.clone(), c.clone());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "second never refused: {:?}",
            amr.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (amr, ready_condition) = refused;
    assert_eq!(ready_condition.status, "False");
    let first = format!("{}/{NAME}", w.cluster.namespace());
    assert!(
        ready_condition.message.contains(&first) && ready_condition.message.contains("ng-a"),
        "{}",
        ready_condition.message
    );
    let claimed = group(&amr, "ng-a");
    assert_eq!(claimed.state, NodeGroupState::Skipped, "{claimed:?}");
    assert!(!w.events("NodeGroupClaimed").await.is_empty(), "one Warning Event");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.count("UpdateNodegroupVersion").await,
        updates_before,
        "the second refresher started nothing"
    );
    for name in ["ng-a", "ng-b", "ng-current"] {
        let (_, _, image) = w.nodegroup_image(name).await;
        assert_eq!(image, target, "{name} stays on the first refresher's target");
    }
    // The first goes away: its claims are stale, the second takes over and rolls to its own AMI.
    w.api().delete(NAME, &Default::default()).await.expect("delete first");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, _, image) = w.nodegroup_image("ng-a").await;
        if image == old {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second never took over ng-a"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `refreshConfig.canarySoak`: after the canary's update succeeded the others wait (Ready reason `CanarySoaking`,
/// phase Waiting) and start no earlier than the soak after the canary finished.
#[tokio::test]
async fn the_other_groups_start_only_after_the_canary_soaked() {
    let mut w = World::start().await;
    seed_world(&mut w).await;
    w.start_controller();
    w.apply_seed(|doc| {
        doc["spec"]["refreshConfig"] = json!({"canary": "ng-a", "canarySoak": "4s", "parallelism": 2});
    })
    .await;
    let soaking = w
        .wait_for("CanarySoaking", |a| {
            a.status
                .as_ref()
                .and_then(|s| get_condition(&s.conditions, "Ready"))
                .is_some_and(|c| c.reason == "CanarySoaking")
        })
        .await;
    assert_eq!(group(&soaking, "ng-a").state, NodeGroupState::Successful);
    assert_eq!(
        group(&soaking, "ng-b").state,
        NodeGroupState::Pending,
        "ng-b waits for the soak"
    );
    let amr = w.wait_for("Ready", ready).await;
    let finished = group(&amr, "ng-a").finished_at.clone().expect("canary finished").0;
    let started = group(&amr, "ng-b").started_at.clone().expect("ng-b started").0;
    let waited = started.duration_since(finished);
    assert!(
        waited >= jiff::SignedDuration::from_secs(4),
        "ng-b started {waited:?} after the canary finished"
    );
}

/// A PackerBuilder that builds in another region and copies its AMI to this one: the refresher rolls onto the copy in
/// its own region, and only once the copy is available.
#[tokio::test]
async fn a_refresher_in_a_distribution_region_rolls_onto_the_copy_in_its_own_region() {
    let mut w = World::start().await;
    let (_, copy) = seed_world(&mut w).await;
    let builders: Api<PackerBuilder> = Api::default_namespaced(w.client.clone());
    let text = std::fs::read_to_string(workspace().join("examples/seed/packerbuilder-000.yaml")).expect("seed");
    let mut pb: PackerBuilder = serde_norway::from_str(&text).expect("pb");
    pb.spec.region = "eu-central-1".into();
    pb.spec.distribution = Some(api_types::packer_builder::DistributionSpec {
        regions: vec![REGION.into()],
        ..Default::default()
    });
    builders.create(&PostParams::default(), &pb).await.expect("pb");
    // The built AMI lives in eu-central-1 (its ID means nothing here); its copy here is still being made.
    let set_copy = |state: &'static str| {
        let builders = builders.clone();
        let copy = copy.clone();
        async move {
            builders
                .patch_status(
                    "packer-builder-local",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": {
                        "lastRunBuiltImageID": "ami-0123456789abcdef0",
                        "distributedImages": [{
                            "region": REGION,
                            "sourceImageID": "ami-0123456789abcdef0",
                            "imageID": copy,
                            "state": state,
                        }],
                    }})),
                )
                .await
                .expect("status");
        }
    };
    set_copy("copying").await;
    w.start_controller_with(&[("RESYNC_INTERVAL", "10m")]);
    w.apply_seed(|doc| {
        let spec = doc["spec"].as_object_mut().expect("spec");
        spec.remove("amiFilters");
        spec.insert("packerBuilderRef".into(), json!({"name": "packer-builder-local"}));
        spec.insert("amiOwners".into(), json!([EKS_OWNER]));
    })
    .await;
    let waiting = w
        .wait_for("NoEligibleAMI", |a| phase(a) == Some(AMIRefresherPhase::NoEligibleAMI))
        .await;
    let (_, reason) = condition(&waiting, "Ready");
    assert_eq!(reason, "NoEligibleAMI");
    let message = get_condition(&waiting.status.clone().expect("status").conditions, "Ready")
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("builds in eu-central-1") && message.contains(REGION),
        "{message}"
    );
    assert_eq!(
        w.calls()
            .await
            .iter()
            .filter(|c| c.action == "UpdateNodegroupVersion")
            .count(),
        0
    );
    set_copy("available").await;
    let amr = w
        .wait_for("Ready on the copy", |a| {
            ready(a) && a.status.as_ref().and_then(|s| s.target_ami.as_deref()) == Some(copy.as_str())
        })
        .await;
    assert_eq!(amr.status.as_ref().and_then(|s| s.progress.as_deref()), Some("3/3"));
    let (_, _, image) = w.nodegroup_image("ng-a").await;
    assert_eq!(image, copy, "the node group runs the copy in its own region");
}
