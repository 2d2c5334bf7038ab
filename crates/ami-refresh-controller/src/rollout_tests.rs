//! Reconcile-level tests: the controller's real `reconcile` against the in-memory AWS of [`crate::fake`] (calls
//! recorded, faults injected) and an in-process Kubernetes API server (kube-sim; the real control plane with
//! `OPSY_TEST_CLUSTER=real`). Each step is one reconcile, so a scenario is driven exactly, in milliseconds; the
//! end-to-end suite (`tests/rollout.rs`) proves the same behaviour over the SDK, the emulator and the binary.

use std::{collections::BTreeMap, sync::Arc};

use api_types::{
    AMIRefresher, PackerBuilder,
    ami_refresher::{AMIRefresherPhase, NodeGroupState, NodeGroupStatus},
};
use control_plane::cluster::{ClusterOptions, TestCluster};
use jiff::{SignedDuration, Timestamp};
use kube::{
    Api, Client, CustomResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::events::{Recorder, Reporter},
};
use serde_json::json;

use crate::{
    fake::FakeAws,
    reconcile::{Context, reconcile},
};

const CLUSTER: &str = "opsy";
const NAME: &str = "roll";

// One bed per controller on purpose: each wires its own fake and its own Context; only the struct's shape is alike.
struct Bed {
    _cluster: TestCluster,
    namespace: String,
    client: Client,
    aws: Arc<FakeAws>,
    ctx: Arc<Context>,
}

fn ago(hours: i64) -> Timestamp {
    controller_runtime::clock::now() - SignedDuration::from_hours(hours)
}

impl Bed {
    async fn start() -> Self {
        let cluster = TestCluster::start(ClusterOptions::default()).await.expect("api server");
        let client = cluster.client().await.expect("client");
        cluster
            .install_crds(&client, &[AMIRefresher::crd(), PackerBuilder::crd()])
            .await
            .expect("CRDs");
        let namespace = cluster.namespace().to_owned();
        cluster.create_namespace(&client, &namespace).await.expect("namespace");
        let aws = Arc::new(FakeAws::default());
        let metrics = Arc::new(controller_runtime::Metrics::new(
            "ami_refresh_controller",
            &[("rollouts", "rollouts"), ("config_updates", "config updates")],
        ));
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "ami-refresh-controller".into(),
                instance: None,
            },
        );
        let notifier =
            controller_runtime::notify::NotificationQueue::start(controller_runtime::notify::ChannelNotifier {
                client: client.clone(),
                http: controller_runtime::notify::http_client(),
                slack_api: "http://127.0.0.1:9".into(),
                recorder: recorder.clone(),
                metrics: metrics.clone(),
                sdk: aws_config::SdkConfig::builder().build(),
                url_policy: Default::default(),
                aws_allowlist: Default::default(),
            });
        let ctx = Context::new(client.clone(), aws.clone(), recorder, metrics, notifier);
        Self {
            _cluster: cluster,
            namespace,
            client,
            aws,
            ctx: Arc::new(ctx),
        }
    }

    fn api(&self) -> Api<AMIRefresher> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// An AMI this operator built for the cluster, `hours` old.
    fn ami(&self, id: &str, hours: i64) -> String {
        let created = ago(hours);
        let stamp = created.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let tags: BTreeMap<String, String> = [
            ("brought-to-you-by", "opsy-the-ami-operator"),
            ("cluster-name", CLUSTER),
            ("created-by", "node-ami"),
            ("created-by-namespace", self.namespace.as_str()),
            ("create-timestamp", stamp.as_str()),
            ("status", "active"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        self.aws.add_image(ami_tags::Image {
            id: id.into(),
            name: Some(format!("eks-node-{id}")),
            creation_date: Some(created),
            state: Some("available".into()),
            architecture: Some("x86_64".into()),
            tags,
            ..ami_tags::Image::default()
        });
        id.to_owned()
    }

    async fn apply(&self) {
        self.apply_with(|_| {}).await;
    }

    /// The AMIRefresher with `edit` applied to its spec.
    async fn apply_with(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let mut doc = json!({
            "apiVersion": "ami.refresh.ops/v1alpha1",
            "kind": "AMIRefresher",
            "metadata": {"name": NAME, "namespace": self.namespace},
            "spec": {
                "region": "us-west-2",
                "clusterName": CLUSTER,
                "amiFilters": [{"name": "name", "values": ["eks-node-*"]}],
                "amiOwners": ["self"],
                "expiresIn": "1w",
            }
        });
        edit(&mut doc["spec"]);
        let amr: AMIRefresher = serde_json::from_value(doc).expect("typed");
        self.api().create(&PostParams::default(), &amr).await.expect("create");
    }

    /// The calls that change what a node group runs.
    fn mutating(&self) -> Vec<&'static str> {
        self.aws
            .calls()
            .into_iter()
            .filter(|c| {
                matches!(
                    *c,
                    "CreateLaunchTemplateVersion" | "UpdateNodegroupVersion" | "UpdateNodegroupConfig"
                )
            })
            .collect()
    }

    /// One reconcile, as the controller runs it (a fresh GET, then one step).
    async fn step(&self) -> crate::error::Result<kube::runtime::controller::Action> {
        let amr = self.api().get(NAME).await.expect("get");
        reconcile(Arc::new(amr), self.ctx.clone()).await
    }

    async fn status(&self) -> api_types::AMIRefresherStatus {
        self.api().get(NAME).await.expect("get").status.unwrap_or_default()
    }

    async fn stored(&self) -> serde_json::Value {
        control_plane::cluster::stored_status::<AMIRefresher>(&self.client, &self.namespace, NAME).await
    }

    /// (reason, related object name) of every Event on the AMIRefresher, sorted (Events carry whole seconds, so
    /// their order within a fast test is not known).
    async fn events(&self) -> Vec<(String, String)> {
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut out: Vec<(String, String)> = events
            .list(&Default::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .map(|e| {
                let related = e.related.and_then(|r| r.name).unwrap_or_default();
                (e.reason.unwrap_or_default(), related)
            })
            .collect();
        out.sort();
        out
    }

    fn update_of(&self, group: &str) -> String {
        self.aws
            .updates()
            .into_iter()
            .rev()
            .find(|u| u.group.1 == group)
            .map(|u| u.id)
            .unwrap_or_else(|| panic!("no update of {group}"))
    }
}

fn group<'a>(status: &'a api_types::AMIRefresherStatus, name: &str) -> &'a NodeGroupStatus {
    status
        .node_groups
        .iter()
        .find(|g| g.name == name)
        .unwrap_or_else(|| panic!("no entry for {name}: {status:#?}"))
}

#[tokio::test]
async fn groups_roll_one_at_a_time_onto_the_newest_ami_and_the_rollout_ends_ready() {
    let bed = Bed::start().await;
    let old = bed.ami("ami-old", 48);
    let new = bed.ami("ami-new", 2);
    bed.aws.add_nodegroup(CLUSTER, "ng-a", &old);
    bed.aws.add_nodegroup(CLUSTER, "ng-b", &old);
    bed.apply().await;

    bed.step().await.expect("reconcile");
    let status = bed.status().await;
    assert_eq!(status.target_ami.as_deref(), Some(new.as_str()));
    assert_eq!(status.phase, Some(AMIRefresherPhase::Progressing));
    assert_eq!(group(&status, "ng-a").state, NodeGroupState::InProgress);
    assert_eq!(group(&status, "ng-b").state, NodeGroupState::Pending);
    // A step while the update runs starts nothing more.
    bed.step().await.expect("reconcile");
    assert_eq!(bed.aws.count("UpdateNodegroupVersion"), 1);

    bed.aws.finish(&bed.update_of("ng-a"), "Successful", "");
    bed.step().await.expect("reconcile");
    let status = bed.status().await;
    assert_eq!(group(&status, "ng-a").state, NodeGroupState::Successful);
    assert_eq!(group(&status, "ng-b").state, NodeGroupState::InProgress);

    bed.aws.finish(&bed.update_of("ng-b"), "Successful", "");
    bed.step().await.expect("reconcile");
    let status = bed.status().await;
    assert_eq!(status.phase, Some(AMIRefresherPhase::Ready), "{status:#?}");
    assert_eq!(status.progress.as_deref(), Some("2/2"));
    for name in ["ng-a", "ng-b"] {
        assert_eq!(bed.aws.running_image(CLUSTER, name), new, "{name}");
    }
    // Each transition announced once, naming its node group; a step that changed nothing announced nothing.
    let pair = |r: &str, g: &str| (r.to_owned(), g.to_owned());
    assert_eq!(
        bed.events().await,
        [
            pair("NodeGroupUpdateStarted", "ng-a"),
            pair("NodeGroupUpdateStarted", "ng-b"),
            pair("NodeGroupUpdated", "ng-a"),
            pair("NodeGroupUpdated", "ng-b"),
            pair("RolloutComplete", ""),
        ]
    );
    let mutating: Vec<&str> = bed
        .aws
        .calls()
        .into_iter()
        .filter(|c| matches!(*c, "CreateLaunchTemplateVersion" | "UpdateNodegroupVersion"))
        .collect();
    assert_eq!(
        mutating,
        [
            "CreateLaunchTemplateVersion",
            "UpdateNodegroupVersion",
            "CreateLaunchTemplateVersion",
            "UpdateNodegroupVersion"
        ],
        "a version with the image, then the update, per group"
    );
}

/// Throttled (`ThrottlingException`) and transient (`ServerException`, 5xx) refusals fail the reconcile, so the
/// controller retries it with its growing back-off; neither is ever written as a failed group or a halt.
#[tokio::test]
async fn throttled_or_unavailable_aws_is_retried_and_never_recorded_as_a_failed_rollout() {
    for (code, status_code, category) in [
        ("ThrottlingException", 400, "AWSThrottled"),
        ("ServerException", 500, "AWSUnavailable"),
    ] {
        let bed = Bed::start().await;
        let old = bed.ami("ami-old", 48);
        bed.ami("ami-new", 2);
        bed.aws.add_nodegroup(CLUSTER, "ng-a", &old);
        bed.apply().await;
        bed.aws.fail("UpdateNodegroupVersion", code, status_code, 2);

        for attempt in 1..=2 {
            let error = bed.step().await.expect_err("the refusal fails the reconcile");
            assert_eq!(error.category(), category, "{code}, attempt {attempt}: {error}");
            let status = bed.status().await;
            assert_ne!(
                group(&status, "ng-a").state,
                NodeGroupState::Failed,
                "{code}: {status:#?}"
            );
            assert_eq!(status.halted_target, None, "{code}");
            assert_ne!(status.phase, Some(AMIRefresherPhase::Degraded), "{code}");
        }
        bed.step().await.expect("AWS answers again");
        let status = bed.status().await;
        assert_eq!(group(&status, "ng-a").state, NodeGroupState::InProgress, "{code}");
        assert_eq!(
            bed.aws.count("UpdateNodegroupVersion"),
            3,
            "{code}: two refused, one started"
        );
        assert_eq!(
            bed.aws.count("CreateLaunchTemplateVersion"),
            1,
            "{code}: the retries reuse the version made by the first attempt"
        );
    }
}

#[tokio::test]
async fn an_update_refused_as_invalid_fails_the_group_and_halts_the_rollout() {
    let bed = Bed::start().await;
    let old = bed.ami("ami-old", 48);
    let new = bed.ami("ami-new", 2);
    bed.aws.add_nodegroup(CLUSTER, "ng-a", &old);
    bed.aws.add_nodegroup(CLUSTER, "ng-b", &old);
    bed.apply().await;
    bed.aws
        .fail("UpdateNodegroupVersion", "InvalidParameterException", 400, 1);

    bed.step().await.expect("a refused request is a result, not a retry");
    let status = bed.status().await;
    assert_eq!(group(&status, "ng-a").state, NodeGroupState::Failed, "{status:#?}");
    assert_eq!(status.phase, Some(AMIRefresherPhase::Degraded));
    assert_eq!(status.halted_target.as_deref(), Some(new.as_str()));
    bed.step().await.expect("reconcile");
    assert_eq!(
        bed.aws.count("UpdateNodegroupVersion"),
        1,
        "halted: ng-b is not started and ng-a not retried"
    );
}

/// The failure of an update whose target changed while it ran halts the rollout (it is not lost), and a retry
/// removes `haltedTarget` from the object the API server stores.
#[tokio::test]
async fn a_failure_after_the_target_changed_halts_and_a_retry_removes_the_halt() {
    let bed = Bed::start().await;
    let old = bed.ami("ami-old", 48);
    bed.ami("ami-new", 2);
    bed.aws.add_nodegroup(CLUSTER, "ng-a", &old);
    bed.apply().await;
    bed.step().await.expect("reconcile");
    let first = bed.update_of("ng-a");

    let newer = bed.ami("ami-newer", 1);
    bed.step().await.expect("reconcile");
    let status = bed.status().await;
    assert_eq!(status.target_ami.as_deref(), Some(newer.as_str()));
    assert_eq!(
        group(&status, "ng-a").update_id.as_deref(),
        Some(first.as_str()),
        "still tracked"
    );

    bed.aws
        .finish(&first, "Failed", "NodeCreationFailure: instances failed to join");
    bed.step().await.expect("reconcile");
    let status = bed.status().await;
    assert_eq!(status.phase, Some(AMIRefresherPhase::Degraded), "{status:#?}");
    assert_eq!(group(&status, "ng-a").state, NodeGroupState::Failed);
    assert!(bed.stored().await.get("haltedTarget").is_some());
    bed.step().await.expect("reconcile");
    assert_eq!(
        bed.aws.count("UpdateNodegroupVersion"),
        1,
        "halted: nothing issued again"
    );

    bed.api()
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"ami.refresh.ops/retry": "1"}}})),
        )
        .await
        .expect("annotate");
    bed.step().await.expect("reconcile");
    let stored = bed.stored().await;
    assert!(
        stored.get("haltedTarget").is_none(),
        "removed from the stored object: {stored}"
    );
    let status = bed.status().await;
    assert_eq!(group(&status, "ng-a").state, NodeGroupState::InProgress);
    assert_eq!(bed.aws.count("UpdateNodegroupVersion"), 2);
    assert_eq!(
        bed.aws.running_image(CLUSTER, "ng-a"),
        old,
        "the failed update changed nothing"
    );
}

#[tokio::test]
async fn a_dry_run_or_paused_refresher_plans_and_changes_nothing() {
    for (field, phase, reason) in [
        ("dryRun", AMIRefresherPhase::Planned, "DryRun"),
        ("paused", AMIRefresherPhase::Waiting, "Paused"),
    ] {
        let bed = Bed::start().await;
        let old = bed.ami("ami-old", 48);
        bed.ami("ami-new", 2);
        bed.aws.add_nodegroup(CLUSTER, "ng-a", &old);
        bed.apply_with(|spec| spec[field] = json!(true)).await;
        for _ in 0..3 {
            bed.step().await.expect("reconcile");
        }
        let status = bed.status().await;
        assert_eq!(status.phase, Some(phase), "{field}: {status:#?}");
        let ready = api_types::conditions::get_condition(&status.conditions, "Ready").expect("Ready");
        assert_eq!(ready.reason, reason, "{field}");
        assert_eq!(group(&status, "ng-a").state, NodeGroupState::Pending, "{field}");
        assert!(bed.mutating().is_empty(), "{field}: {:?}", bed.mutating());
        assert_eq!(bed.aws.running_image(CLUSTER, "ng-a"), old, "{field}");
    }
}

/// A controller that started an update and was killed before writing status (its launch template version carries
/// this controller's mark): the next one finds the update running, tracks it, and issues nothing again.
#[tokio::test]
async fn an_update_started_before_a_lost_status_write_is_adopted_not_repeated() {
    use crate::capabilities::{LaunchTemplates as _, NodeGroups as _};
    let bed = Bed::start().await;
    let old = bed.ami("ami-old", 48);
    let new = bed.ami("ami-new", 2);
    bed.aws.add_nodegroup(CLUSTER, "ng-a", &old);
    let info = bed
        .aws
        .describe_nodegroup("us-west-2", CLUSTER, "ng-a")
        .await
        .expect("ng");
    let template = info.launch_template_id.expect("template");
    let version = bed
        .aws
        .create_version("us-west-2", &template, "1", &new)
        .await
        .expect("version");
    let update = bed
        .aws
        .update_nodegroup_version("us-west-2", CLUSTER, "ng-a", &template, &version, false)
        .await
        .expect("update");
    bed.apply().await;

    bed.step().await.expect("reconcile");
    bed.step().await.expect("reconcile");
    let status = bed.status().await;
    let entry = group(&status, "ng-a");
    assert_eq!(entry.state, NodeGroupState::InProgress, "{status:#?}");
    assert_eq!(
        entry.update_id.as_deref(),
        Some(update.as_str()),
        "the running update is tracked"
    );
    assert_eq!(bed.aws.count("UpdateNodegroupVersion"), 1, "not issued again");
    assert_eq!(bed.aws.count("CreateLaunchTemplateVersion"), 1, "no second version");

    bed.aws.finish(&update, "Successful", "");
    bed.step().await.expect("reconcile");
    let status = bed.status().await;
    assert_eq!(status.phase, Some(AMIRefresherPhase::Ready), "{status:#?}");
    assert_eq!(bed.aws.running_image(CLUSTER, "ng-a"), new);
}

/// The canary goes alone; the others start only after it succeeded. A failed canary halts the rollout with the
/// others untouched.
#[tokio::test]
async fn the_canary_rolls_alone_and_its_failure_leaves_the_other_groups_untouched() {
    let bed = Bed::start().await;
    let old = bed.ami("ami-old", 48);
    bed.ami("ami-new", 2);
    for name in ["ng-a", "ng-b", "ng-c"] {
        bed.aws.add_nodegroup(CLUSTER, name, &old);
    }
    bed.apply_with(|spec| spec["refreshConfig"] = json!({"canary": "ng-c", "parallelism": 3}))
        .await;
    bed.step().await.expect("reconcile");
    let status = bed.status().await;
    assert_eq!(
        group(&status, "ng-c").state,
        NodeGroupState::InProgress,
        "the canary first: {status:#?}"
    );
    for name in ["ng-a", "ng-b"] {
        assert_eq!(
            group(&status, name).state,
            NodeGroupState::Pending,
            "{name} waits for the canary"
        );
    }
    bed.step().await.expect("reconcile");
    assert_eq!(
        bed.aws.count("UpdateNodegroupVersion"),
        1,
        "alone, whatever the parallelism"
    );

    bed.aws.finish(
        &bed.update_of("ng-c"),
        "Failed",
        "NodeCreationFailure: canary nodes never joined",
    );
    bed.step().await.expect("reconcile");
    bed.step().await.expect("reconcile");
    let status = bed.status().await;
    assert_eq!(status.phase, Some(AMIRefresherPhase::Degraded), "{status:#?}");
    assert_eq!(bed.aws.count("UpdateNodegroupVersion"), 1, "nobody else started");
    for name in ["ng-a", "ng-b"] {
        assert_eq!(bed.aws.running_image(CLUSTER, name), old, "{name} untouched");
    }
}
