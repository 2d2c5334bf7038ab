//! The `AMIRefresher` custom resource: which AMI a cluster's node groups should run, and how to roll them onto it.
//!
//! Field names and shapes of the original operator (seed document 001) are kept so existing YAML applies
//! unchanged; additions are optional. Doc comments here become `kubectl explain` text.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    common::{
        AMI_ID_PATTERN, AmiFilter, CLUSTER_NAME_PATTERN, K8S_NAME_PATTERN, NODE_GROUP_NAME_PATTERN, OWNER_PATTERN,
        REGION_PATTERN, TRUSTED_NAMESPACE_PATTERN, is_false,
    },
    duration::{HumanDuration, at_least_rule, bounds},
    packer_builder::NotifierSpec,
};

/// Desired state of an AMIRefresher: keep a cluster's node groups on the chosen AMI.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "ami.refresh.ops",
    version = "v1alpha1",
    kind = "AMIRefresher",
    plural = "amirefreshers",
    namespaced,
    status = "AMIRefresherStatus",
    shortname = "amr",
    category = "ami-operator",
    derive = "PartialEq",
    doc = "Rolls an EKS cluster's node groups onto a chosen AMI, one node group at a time.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Target AMI", type_ = "string", json_path = ".status.targetAMI"),
    printcolumn(
        name = "Node Groups",
        type_ = "string",
        description = "node groups on the target / node groups considered",
        json_path = ".status.progress"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new(
    "(has(self.ami) ? 1 : 0) + (has(self.amiFilters) && size(self.amiFilters) > 0 ? 1 : 0) + (has(self.packerBuilderRef) ? 1 : 0) == 1"
).message("set exactly one AMI source: ami, amiFilters or packerBuilderRef"))]
#[x_kube(validation = Rule::new(
    "!has(self.refreshConfig) || !has(self.refreshConfig.canary) || !has(self.exclude) || !(self.refreshConfig.canary in self.exclude)"
).message("the canary node group must not be excluded").field_path(".refreshConfig.canary"))]
#[serde(rename_all = "camelCase")]
pub struct AMIRefresherSpec {
    /// AWS region of the cluster, e.g. `us-west-2`.
    #[schemars(length(min = 1, max = 32), regex(pattern = REGION_PATTERN))]
    pub region: String,

    /// An explicit AMI ID to roll out. It is still verified: it must exist and, if it carries the operator's
    /// tags, be active and not expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = AMI_ID_PATTERN))]
    pub ami: Option<String>,

    /// EC2 DescribeImages filters that, together with the operator's identity tags, select managed AMIs; the
    /// newest eligible one (`status=active`, not expired, older than `soakTime`) is rolled out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub ami_filters: Vec<AmiFilter>,

    /// The AMI owners trusted (account IDs or `self`): DescribeImages with `amiFilters` is restricted to them, and an
    /// AMI named by `ami` or a PackerBuilder's status is used only when one of them owns it. AMIs shared from an
    /// account named here show no tags (EC2 shows tags to the owner only): `amiFilters` find them by the filters
    /// alone and EC2's state, DeprecationTime and CreationDate decide. Default: the values of an `owner-id` filter,
    /// else `self`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(regex(pattern = OWNER_PATTERN)))]
    pub ami_owners: Vec<String>,

    /// Namespaces, besides this AMIRefresher's own, whose PackerBuilders' AMIs `amiFilters` may choose; `"*"`
    /// trusts every namespace. An AMI records the namespace of the PackerBuilder that built it
    /// (`created-by-namespace`); AMIs without that tag (built by the original Go operator) are accepted. `ami` and
    /// `packerBuilderRef` name their AMI explicitly and are not restricted by this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 63), regex(pattern = TRUSTED_NAMESPACE_PATTERN)))]
    pub trusted_namespaces: Vec<String>,

    /// Use the AMI currently built by this PackerBuilder (same namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packer_builder_ref: Option<PackerBuilderRef>,

    /// Name of the EKS cluster whose node groups are refreshed.
    #[schemars(length(min = 1, max = 100), regex(pattern = CLUSTER_NAME_PATTERN))]
    pub cluster_name: String,

    /// How long a managed AMI stays eligible after its `create-timestamp` (humantime plus `d`, `w`: `"48h"`,
    /// `"30d"`). Defaults to `30d`.
    #[serde(default = "default_expires_in")]
    #[x_kube(validation = Rule::new(at_least_rule(bounds::AMR_EXPIRES_IN)).message(format!("must be at least {}", bounds::AMR_EXPIRES_IN).as_str()))]
    pub expires_in: HumanDuration,

    /// Node groups never touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 255), regex(pattern = NODE_GROUP_NAME_PATTERN)))]
    pub exclude: Vec<String>,

    /// Self-managed Auto Scaling groups of the cluster to roll with an instance refresh. Each must use a launch
    /// template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 255), regex(pattern = NODE_GROUP_NAME_PATTERN)))]
    pub auto_scaling_groups: Vec<String>,

    /// How node groups are rolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_config: Option<RefreshConfig>,

    /// Windows in which a node group may start rolling. Empty means any time. A rollout already started is
    /// tracked to its end even when the window closes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub maintenance_windows: Vec<MaintenanceWindow>,

    /// Minimum age of a managed AMI (since its `create-timestamp`) before it is rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak_time: Option<HumanDuration>,

    /// Hold everything: no node group starts rolling while set. Rollouts already started are still tracked.
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,

    /// Only compute and publish the plan (in status and an Event); change nothing in AWS.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,

    /// Where node-group transitions (started, succeeded, failed) are announced besides Events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifier: Option<NotifierSpec>,
}

/// Annotation that asks for a retry after a failed rollout: set it to a new value (e.g. a timestamp) and the
/// controller continues with the failed node group. Its last acted-on value is `status.observedRetry`.
pub const RETRY_ANNOTATION: &str = "ami.refresh.ops/retry";

fn default_expires_in() -> HumanDuration {
    HumanDuration::new("30d")
}

/// A reference to a PackerBuilder in the same namespace.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackerBuilderRef {
    /// Name of the PackerBuilder.
    #[schemars(length(min = 1, max = 253), regex(pattern = K8S_NAME_PATTERN))]
    pub name: String,
}

/// Rollout settings.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.maxUnavailable) && has(self.maxUnavailablePercentage))")
    .message("set maxUnavailable or maxUnavailablePercentage, not both").field_path(".maxUnavailablePercentage"))]
#[x_kube(validation = Rule::new("!has(self.canarySoak) || has(self.canary)")
    .message("canarySoak needs a canary").field_path(".canarySoak"))]
pub struct RefreshConfig {
    /// EKS managed node group update strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<UpdateStrategy>,
    /// Nodes of a managed node group that may be unavailable at once during its update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_unavailable: Option<i32>,
    /// Percentage of a managed node group's nodes that may be unavailable at once during its update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub max_unavailable_percentage: Option<i32>,
    /// Force the update even when pods cannot be drained because of a PodDisruptionBudget.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
    /// Node groups rolled at the same time. Defaults to 1.
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 1, max = 50))]
    pub parallelism: i32,
    /// A node group rolled first, alone; the others start only after it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255), regex(pattern = NODE_GROUP_NAME_PATTERN))]
    pub canary: Option<String>,
    /// How long to wait after the canary's update succeeded before the other node groups start (e.g. `"1h"`, to
    /// let a bad AMI show itself on the canary's nodes). Needs `canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_soak: Option<HumanDuration>,
    /// Instance refresh settings for self-managed Auto Scaling groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_refresh: Option<InstanceRefreshConfig>,
}

fn default_parallelism() -> i32 {
    1
}

/// EKS managed node group update strategy (`updateConfig.updateStrategy`).
#[derive(JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpdateStrategy {
    /// Scale up, drain and replace nodes, respecting `maxUnavailable` (EKS `DEFAULT`).
    Default,
    /// Replace nodes without scaling up first (EKS `MINIMAL`).
    Minimal,
}

/// Auto Scaling `StartInstanceRefresh` preferences.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRefreshConfig {
    /// Percentage of capacity that must stay healthy during the refresh. Defaults to 90.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub min_healthy_percentage: Option<i32>,
    /// Time a new instance needs before it counts as healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_warmup: Option<HumanDuration>,
    /// Skip instances that already run the target launch template version.
    #[serde(default = "default_true")]
    pub skip_matching: bool,
    /// Roll back automatically when the refresh fails.
    #[serde(default, skip_serializing_if = "is_false")]
    pub auto_rollback: bool,
}

fn default_true() -> bool {
    true
}

/// A recurring window in which node groups may start rolling.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// When the window opens, as a five-field cron expression (minute hour day-of-month month day-of-week),
    /// e.g. `0 2 * * 1-5` for 02:00 on weekdays.
    #[schemars(length(min = 9, max = 128), regex(pattern = r"^\s*(\S+\s+){4}\S+\s*$"))]
    pub schedule: String,
    /// How long the window stays open.
    #[x_kube(validation = Rule::new(at_least_rule(bounds::AMR_WINDOW)).message(format!("must be at least {}", bounds::AMR_WINDOW).as_str()))]
    pub duration: HumanDuration,
    /// IANA time zone of `schedule`, e.g. `Europe/Berlin`. Defaults to `UTC`.
    #[serde(default = "default_time_zone")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z][A-Za-z0-9_+/-]*$"))]
    pub time_zone: String,
}

fn default_time_zone() -> String {
    "UTC".to_owned()
}

/// Observed state of an AMIRefresher.
#[derive(JsonSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AMIRefresherStatus {
    /// The AMI node groups are being rolled onto.
    #[serde(default, rename = "targetAMI", skip_serializing_if = "Option::is_none")]
    pub target_ami: Option<String>,
    /// How the target was chosen, e.g. `spec.ami`, `amiFilters`, `packerBuilderRef default/my-builder`.
    #[serde(default, rename = "targetAMISource", skip_serializing_if = "Option::is_none")]
    pub target_ami_source: Option<String>,
    /// Summary for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AMIRefresherPhase>,
    /// `<node groups on the target>/<node groups considered>`, e.g. `2/3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// One entry per node group considered, in rollout order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_groups: Vec<NodeGroupStatus>,
    /// Standard conditions: `Ready`, `Progressing`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The value of the `ami.refresh.ops/retry` annotation the controller last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_retry: Option<String>,
    /// When the controller first saw the current value of the retry annotation: updates that failed before it are
    /// not found again as a reason to halt (see `updateID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried_at: Option<crate::conditions::Time>,
    /// Set while a rollout is halted by a failed or cancelled node-group update: the target AMI in effect when the
    /// failure was seen (whatever AMI the failed update was rolling to). The halt holds until the target becomes
    /// another AMI or the `ami.refresh.ops/retry` annotation gets a new value; other spec edits (pause, windows)
    /// do not lift it.
    #[serde(default, rename = "haltedTarget", skip_serializing_if = "Option::is_none")]
    pub halted_target: Option<String>,
    /// Written by the first release instead of `haltedTarget`; an upgrade carries its halt over and clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_generation: Option<i64>,
}

/// Coarse state of an AMIRefresher, for `kubectl get`. Conditions carry the detail.
#[derive(JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AMIRefresherPhase {
    /// Not reconciled yet, or deciding.
    Pending,
    /// Node groups are being rolled.
    Progressing,
    /// Every considered node group runs the target AMI.
    Ready,
    /// Held by `paused` or a closed maintenance window.
    Waiting,
    /// Dry-run: the plan is published in `nodeGroups`.
    Planned,
    /// A rollout failed; remaining node groups were left alone.
    Degraded,
    /// No AMI satisfies the selection.
    NoEligibleAMI,
    /// The spec cannot be acted on; see the Ready condition.
    Invalid,
}

/// Rollout state of one node group.
#[derive(JsonSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeGroupStatus {
    /// Node group (or Auto Scaling group) name.
    pub name: String,
    /// `Managed` (EKS managed node group) or `SelfManaged` (Auto Scaling group).
    pub kind: NodeGroupKind,
    /// AMI the node group ran when last observed.
    #[serde(default, rename = "currentAMI", skip_serializing_if = "Option::is_none")]
    pub current_ami: Option<String>,
    /// AMI the node group is being moved to.
    #[serde(default, rename = "targetAMI", skip_serializing_if = "Option::is_none")]
    pub target_ami: Option<String>,
    /// Launch template of the node group.
    #[serde(default, rename = "launchTemplateID", skip_serializing_if = "Option::is_none")]
    pub launch_template_id: Option<String>,
    /// Launch template version carrying the target AMI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_template_version: Option<String>,
    /// EKS update ID or Auto Scaling instance refresh ID being tracked.
    #[serde(default, rename = "updateID", skip_serializing_if = "Option::is_none")]
    pub update_id: Option<String>,
    /// What `updateID` is for a managed node group: `ConfigUpdate` (the update config of `refreshConfig`, applied
    /// before the version update; a `Pending` group keeps it once it succeeded, so it is not issued again for this
    /// target) or `VersionUpdate`. Unset for instance refreshes and for updates recorded by earlier releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_type: Option<NodeGroupUpdateType>,
    /// Where this node group stands.
    pub state: NodeGroupState,
    /// Why, in words (e.g. why it was skipped or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When its update started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When its update ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}

impl NodeGroupStatus {
    /// A node group's entry in `state`, with nothing else known yet.
    pub fn new(name: impl Into<String>, kind: NodeGroupKind, state: NodeGroupState) -> Self {
        Self {
            name: name.into(),
            kind,
            current_ami: None,
            target_ami: None,
            launch_template_id: None,
            launch_template_version: None,
            update_id: None,
            update_type: None,
            state,
            message: None,
            started_at: None,
            finished_at: None,
        }
    }
}

/// The kind of EKS update being tracked, named as EKS names it (`Update.type`).
#[derive(JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeGroupUpdateType {
    /// `UpdateNodegroupConfig` (maxUnavailable, strategy).
    ConfigUpdate,
    /// `UpdateNodegroupVersion` (the launch template version with the target AMI).
    VersionUpdate,
}

/// Kind of node group.
#[derive(JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeGroupKind {
    /// EKS managed node group, updated with `UpdateNodegroupVersion`.
    Managed,
    /// Self-managed Auto Scaling group, updated with `StartInstanceRefresh`.
    SelfManaged,
}

/// Rollout state of one node group.
#[derive(JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeGroupState {
    /// Already on the target AMI.
    UpToDate,
    /// Needs the target; not started yet.
    Pending,
    /// Update running.
    InProgress,
    /// Update finished successfully.
    Successful,
    /// Update failed.
    Failed,
    /// Update was cancelled.
    Cancelled,
    /// Not touched; `message` says why (excluded, no custom launch template...).
    Skipped,
}
