//! The `PackerBuilder` custom resource: what to build with Packer, from which base AMI, how often.
//!
//! Field names and shapes of the original operator (seed documents 000/001) are kept so existing YAML applies
//! unchanged; additions are optional. Doc comments here become `kubectl explain` text.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::{
    api::resource::Quantity,
    apis::meta::v1::{Condition, Time},
};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{
    common::{
        ACCOUNT_ID_PATTERN, AmiFilter, CLUSTER_NAME_PATTERN, DNS_LABEL_PATTERN, IMAGE_PATTERN, K8S_NAME_PATTERN,
        OWNER_PATTERN, REGION_PATTERN, RELATIVE_PATH_PATTERN, is_false,
    },
    duration::{HumanDuration, at_least_rule, bounds},
};

/// Desired state of a PackerBuilder: keep one fresh, company-built AMI for a cluster.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "ami.refresh.ops",
    version = "v1alpha1",
    kind = "PackerBuilder",
    namespaced,
    status = "PackerBuilderStatus",
    shortname = "pb",
    category = "ami-operator",
    derive = "PartialEq",
    doc = "Builds and maintains an AMI with HashiCorp Packer, run as a Kubernetes Job.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Base AMI", type_ = "string", json_path = ".status.lastRunBaseImageID"),
    printcolumn(name = "Built AMI", type_ = "string", json_path = ".status.lastRunBuiltImageID"),
    printcolumn(name = "Last Run", type_ = "date", json_path = ".status.lastRun"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new(
    "!(has(self.amiFilters) && size(self.amiFilters) > 0 && has(self.baseAmi) && has(self.baseAmi.ssmParameter))"
).message("set either amiFilters or baseAmi.ssmParameter to find the base AMI, not both").field_path(".baseAmi.ssmParameter"))]
#[x_kube(validation = Rule::new("!has(self.distribution) || !has(self.distribution.regions) || !self.distribution.regions.exists(r, r == self.region)")
    .message("distribution.regions must not name spec.region: the AMI is built there").field_path(".distribution.regions"))]
#[serde(rename_all = "camelCase")]
pub struct PackerBuilderSpec {
    /// EC2 DescribeImages filters that find the base AMI (the newest match wins). Optional: without them (and
    /// without `baseAmi.ssmParameter`) the Packer project is self-contained and no `ami_id`/`region` variables
    /// are passed to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub ami_filters: Vec<AmiFilter>,

    /// Other ways to find the base AMI, and the owners to restrict the search to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_ami: Option<BaseAmiSpec>,

    /// Name of the EKS cluster the AMI is for. Written to the AMI's `cluster-name` tag.
    #[schemars(length(min = 1, max = 100), regex(pattern = CLUSTER_NAME_PATTERN))]
    pub cluster_name: String,

    /// AWS region the AMI is built in, e.g. `us-west-2`.
    #[schemars(length(min = 1, max = 32), regex(pattern = REGION_PATTERN))]
    pub region: String,

    /// How long a built AMI is used and how often the controller re-checks.
    #[serde(default)]
    pub time_outs: TimeOuts,

    /// Where to announce state transitions (build started, succeeded, failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifier: Option<NotifierSpec>,

    /// The git-sync init container that fetches the Packer project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_sync: Option<GitSyncSpec>,

    /// The Packer project and how to run it.
    pub builder: BuilderSpec,

    /// Failed build Jobs tolerated before the controller stops building and sets `Degraded=True`. The count
    /// resets when the spec changes.
    #[serde(default = "default_max_failed_jobs")]
    #[schemars(range(min = 1, max = 100))]
    pub max_failed_jobs: i32,

    /// Copies of the built AMI in other regions, and who may launch it. Without it the AMI lives in `region` only
    /// and is not shared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<DistributionSpec>,

    /// Which older AMIs of this PackerBuilder are deregistered (with their snapshots), in every region. Without it
    /// older AMIs are tagged `status=deprecated` and kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSpec>,

    /// Where the newest active AMI is published once it is verified and tagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishSpec>,
}

/// Publishing of the newest active AMI.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishSpec {
    /// An SSM parameter (in `region`) that always names the newest active AMI of this PackerBuilder, written with
    /// data type `aws:ec2:image` so launch templates (`resolve:ssm:`), Terraform and Karpenter can read it; its
    /// history records each rollover. A full name such as `/opsy/ami/prod/latest` (not under `/aws` or `/ssm`,
    /// which AWS reserves).
    #[x_kube(validation = Rule::new(r"!self.matches('^/([Aa][Ww][Ss]|[Ss][Ss][Mm])')")
        .message("names under /aws and /ssm are reserved by AWS"))]
    #[schemars(
        length(min = 2, max = 1011),
        regex(pattern = r"^/[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+){0,14}$")
    )]
    pub ssm_parameter: String,
}

fn default_max_failed_jobs() -> i32 {
    3
}

/// Alternative base-AMI sources and the owner restriction for `amiFilters`.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseAmiSpec {
    /// An SSM parameter whose value is the base AMI ID, e.g.
    /// `/aws/service/eks/optimized-ami/1.30/amazon-linux-2023/x86_64/standard/recommended/image_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^(arn:aws[a-z-]*:ssm:[a-z0-9-]+:[0-9]{12}:parameter)?/?[A-Za-z0-9_.\-/]+$")
    )]
    pub ssm_parameter: Option<String>,

    /// AMI owners passed to DescribeImages with `amiFilters` (account IDs or `self`, `amazon`,
    /// `aws-marketplace`). When empty and no `owner-id` / `owner-alias` filter is set, the lookup is restricted to
    /// the build account and Amazon (`self`, `amazon`), so a name filter never matches a stranger's public AMI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20), inner(regex(pattern = OWNER_PATTERN)))]
    pub owners: Vec<String>,
}

/// Lifetimes and periods. Durations take humantime forms plus `d` and `w`: `"48h"`, `"5m"`, `"30d"`, `"2w"`.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeOuts {
    /// How long a managed AMI stays eligible after its `create-timestamp`; an expired AMI is rebuilt.
    #[serde(default = "default_expires_in")]
    #[x_kube(validation = Rule::new(at_least_rule(bounds::PB_EXPIRES_IN)).message(format!("must be at least {}", bounds::PB_EXPIRES_IN).as_str()))]
    pub expires_in: HumanDuration,
    /// How often the controller re-checks the base AMI and expiry when nothing else happens.
    #[serde(default = "default_controller_timer")]
    #[x_kube(validation = Rule::new(at_least_rule(bounds::PB_CONTROLLER_TIMER)).message(format!("must be at least {}", bounds::PB_CONTROLLER_TIMER).as_str()))]
    pub controller_timer: HumanDuration,
    /// Longest a build Job may run before Kubernetes stops it (`activeDeadlineSeconds`).
    #[serde(default = "default_build_timeout")]
    #[x_kube(validation = Rule::new(at_least_rule(bounds::PB_BUILD_TIMEOUT)).message(format!("must be at least {}", bounds::PB_BUILD_TIMEOUT).as_str()))]
    pub build_timeout: HumanDuration,
    /// How long a finished build Job and its logs are kept (`ttlSecondsAfterFinished`).
    #[serde(default = "default_job_ttl")]
    #[x_kube(validation = Rule::new(at_least_rule(bounds::PB_JOB_TTL)).message(format!("must be at least {}", bounds::PB_JOB_TTL).as_str()))]
    pub job_ttl: HumanDuration,
}

fn default_expires_in() -> HumanDuration {
    HumanDuration::new("30d")
}
fn default_controller_timer() -> HumanDuration {
    HumanDuration::new("1h")
}
fn default_build_timeout() -> HumanDuration {
    HumanDuration::new("2h")
}
fn default_job_ttl() -> HumanDuration {
    HumanDuration::new("24h")
}

impl Default for TimeOuts {
    fn default() -> Self {
        Self {
            expires_in: default_expires_in(),
            controller_timer: default_controller_timer(),
            build_timeout: default_build_timeout(),
            job_ttl: default_job_ttl(),
        }
    }
}

/// Notification channels. Each is optional; every configured channel receives every transition.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifierSpec {
    /// Slack via the Web API (`chat.postMessage`), one message per channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<SlackSpec>,
    /// Amazon SNS topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns: Option<SnsSpec>,
    /// Amazon SES e-mail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ses: Option<SesSpec>,
    /// Discord webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discord: Option<DiscordSpec>,
    /// Generic JSON webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
}

/// Slack settings.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlackSpec {
    /// Channel IDs (e.g. `C0123456789`), one per entry; each receives its own message.
    #[serde(rename = "channelIDs")]
    #[schemars(
        length(min = 1, max = 50),
        inner(length(min = 1, max = 80), regex(pattern = r"^[^\s,]+$"))
    )]
    pub channel_ids: Vec<String>,
    /// Name of a Secret in the same namespace with the bot token under key `token`.
    #[schemars(length(min = 1, max = 253), regex(pattern = K8S_NAME_PATTERN))]
    pub secret: String,
}

/// SNS settings. Credentials come from the controller's own AWS identity.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnsSpec {
    /// ARN of the topic to publish to.
    #[schemars(regex(pattern = r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?$"))]
    pub topic_arn: String,
}

/// SES settings. Credentials come from the controller's own AWS identity.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SesSpec {
    /// Verified sender address.
    #[schemars(length(min = 3, max = 320), regex(pattern = r"^[^@\s]+@[^@\s]+$"))]
    pub from: String,
    /// Recipient addresses.
    #[schemars(
        length(min = 1, max = 50),
        inner(length(min = 3, max = 320), regex(pattern = r"^[^@\s]+@[^@\s]+$"))
    )]
    pub to: Vec<String>,
}

/// Discord settings.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscordSpec {
    /// Name of a Secret in the same namespace with the webhook URL under key `webhookURL`.
    #[schemars(length(min = 1, max = 253), regex(pattern = K8S_NAME_PATTERN))]
    pub secret: String,
}

/// Generic webhook settings.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// Name of a Secret in the same namespace with the URL under key `url` and, optionally, an HMAC-SHA256 key
    /// under `signingKey`.
    #[schemars(length(min = 1, max = 253), regex(pattern = K8S_NAME_PATTERN))]
    pub secret: String,
}

/// The git-sync init container.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitSyncSpec {
    /// git-sync image. Defaults to the controller's pinned git-sync image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub image: Option<String>,
    /// Name of the init container. Defaults to `git-sync`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub name: Option<String>,
    /// Name of a Secret in the same namespace with keys `username` and `token` for a private repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = K8S_NAME_PATTERN))]
    pub secret: Option<String>,
}

/// The Packer project and the Job that runs it.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.jobServiceAccountName) || !has(self.pod) || !has(self.pod.serviceAccountName)")
    .message("set jobServiceAccountName or pod.serviceAccountName, not both").field_path(".pod.serviceAccountName"))]
#[x_kube(validation = Rule::new(r"!self.repoURL.matches('^([A-Za-z+]*[Ss][Ss][Hh][A-Za-z+]*://|[^/:@]+@[^/:]+:)')")
    .message("SSH repositories are not supported yet (the build Pod gets no SSH key or known_hosts); use the https URL with a token in gitSync.secret").field_path(".repoURL"))]
#[x_kube(validation = Rule::new(r"!self.repoURL.matches('^[A-Za-z][A-Za-z0-9+.-]*://[^/@]*:[^/@]*@') && !self.repoURL.matches('^[Hh][Tt][Tt][Pp][Ss]?://[^/@]*@')")
    .message("repoURL must not embed credentials (user:password@ or token@); put them in the gitSync.secret Secret").field_path(".repoURL"))]
pub struct BuilderSpec {
    /// Git repository holding the Packer project (`https://`, `http://` or `file://`). Credentials belong in
    /// `gitSync.secret`, never in the URL. SSH repositories (`ssh://`, `git@host:path`) are refused: the build Pod
    /// gets no SSH key or known_hosts yet; use the https URL with a token in `gitSync.secret`.
    #[serde(rename = "repoURL")]
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^([A-Za-z][A-Za-z0-9+.-]*://[^\s]+|[A-Za-z0-9_.-]+@[A-Za-z0-9.-]+:[^\s]+)$")
    )]
    pub repo_url: String,
    /// Branch (or tag) to check out.
    #[serde(default = "default_branch")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._/-]*$"))]
    pub branch: String,
    /// Container image with `packer` on PATH, e.g. one built from this repository's `images/packer/Dockerfile`
    /// (Packer with the Amazon plugin baked in) or `hashicorp/packer`. The build Job runs it as user 65532 with
    /// a read-only root filesystem, `HOME=/tmp` (a writable emptyDir) and the repository under `/workspace`; the
    /// build step also needs `/bin/sh`, `mkfifo`, `tee`, `grep`, `tail`, `cut` and `rm`. `packer init` downloads plugins
    /// from GitHub unless they are already in the image's `PACKER_PLUGIN_PATH`.
    #[schemars(length(min = 1, max = 512), regex(pattern = IMAGE_PATTERN))]
    pub image: String,
    /// Directory of the Packer project inside the repository; the default working directory of every command.
    #[serde(default = "default_dir")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = RELATIVE_PATH_PATTERN))]
    #[x_kube(validation = Rule::new(r"!self.matches('(^|/)[.][.](/|$)')").message("dir must stay inside the repository (no '..')"))]
    pub dir: String,
    /// Name of a Secret in the same namespace whose keys become environment variables of the Packer container
    /// (e.g. `AWS_ACCESS_KEY_ID`). Not needed with IRSA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = K8S_NAME_PATTERN))]
    pub secret: Option<String>,
    /// ServiceAccount the build Job runs as (e.g. one with an IRSA role for Packer). The original operator's
    /// spelling of `pod.serviceAccountName`; set one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = K8S_NAME_PATTERN))]
    pub job_service_account_name: Option<String>,
    /// Scheduling, resources and identity of the build Pod. Each field set here replaces the controller's default
    /// for it (`--build-pod-defaults`); `annotations` are merged, these winning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<BuildPodSpec>,
    /// Packer commands. They always run in the order `init`, `validate`, `build`; missing ones are added with
    /// default settings. Empty means `packer init . && packer validate . && packer build -color=false .`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d.subCommand == c.subCommand))")
        .message("each subCommand may appear at most once"))]
    pub commands: Vec<PackerCommand>,
}

/// The build Pod's scheduling, resources and identity (`spec.builder.pod`, and the controller's
/// `--build-pod-defaults` in the same shape).
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildPodSpec {
    /// CPU, memory and ephemeral-storage requests and limits of every Packer container (git-sync keeps its own
    /// small footprint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<BuildResources>,
    /// Node labels the build Pod must run on, e.g. a dedicated build node pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20))]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the build Pod tolerates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20))]
    pub tolerations: Option<Vec<k8s_openapi::api::core::v1::Toleration>>,
    /// ServiceAccount the build Pod runs as (e.g. one with an IRSA role for Packer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = K8S_NAME_PATTERN))]
    pub service_account_name: Option<String>,
    /// Extra annotations of the build Pod (e.g. `karpenter.sh/do-not-disrupt: "true"`). The controller's own
    /// labels are never replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20))]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Mount the ServiceAccount's Kubernetes API token into the build Pod. Off unless set: a build talks to AWS
    /// and git, never to the Kubernetes API (IRSA and EKS Pod Identity inject their AWS token either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
}

/// Requests and limits of the Packer containers, as in a Pod (`cpu`, `memory`, `ephemeral-storage`).
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildResources {
    /// Minimum resources, e.g. `cpu: 500m`, `memory: 1Gi`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map")]
    #[x_kube(validation = Rule::new(QUANTITY_MAP_RULE).message(QUANTITY_MAP_MESSAGE))]
    pub requests: BTreeMap<String, Quantity>,
    /// Maximum resources, e.g. `memory: 4Gi`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "quantity_map")]
    #[x_kube(validation = Rule::new(QUANTITY_MAP_RULE).message(QUANTITY_MAP_MESSAGE))]
    pub limits: BTreeMap<String, Quantity>,
}

const QUANTITY_MAP_RULE: &str =
    "self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'] && isQuantity(string(self[k])))";
const QUANTITY_MAP_MESSAGE: &str =
    "keys are cpu, memory or ephemeral-storage and values quantities such as 500m, 2 or 4Gi";

/// A map of resource name to quantity (integer or string, as in a Pod).
fn quantity_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 3,
        "additionalProperties": {"x-kubernetes-int-or-string": true},
    })
}

impl BuildPodSpec {
    /// `self` over `defaults`, field by field; annotations merged with `self`'s winning.
    pub fn over(&self, defaults: &BuildPodSpec) -> BuildPodSpec {
        let annotations = match (&defaults.annotations, &self.annotations) {
            (None, None) => None,
            (d, s) => {
                let mut merged = d.clone().unwrap_or_default();
                merged.extend(s.clone().unwrap_or_default());
                Some(merged)
            }
        };
        BuildPodSpec {
            resources: self.resources.clone().or_else(|| defaults.resources.clone()),
            node_selector: self.node_selector.clone().or_else(|| defaults.node_selector.clone()),
            tolerations: self.tolerations.clone().or_else(|| defaults.tolerations.clone()),
            service_account_name: self
                .service_account_name
                .clone()
                .or_else(|| defaults.service_account_name.clone()),
            annotations,
            automount_service_account_token: self
                .automount_service_account_token
                .or(defaults.automount_service_account_token),
        }
    }
}

fn default_branch() -> String {
    "main".to_owned()
}
fn default_dir() -> String {
    ".".to_owned()
}

/// One Packer sub-command and its options. Every value is passed to Packer as its own argument, never through a
/// shell.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.onError) || self.subCommand == 'build'")
    .message("onError applies to the build subCommand only").field_path(".onError"))]
pub struct PackerCommand {
    /// The Packer sub-command.
    pub sub_command: PackerSubCommand,
    /// Extra arguments, each one argv entry (e.g. `-force`). `-debug` is refused: it waits for a keypress inside
    /// a Job; use `debug: true`. `-on-error` is refused: use `onError`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(length(min = 1, max = 4096)))]
    #[x_kube(validation = Rule::new("!self.exists(a, a == '-debug' || a == '--debug' || a.startsWith('-debug=') || a.startsWith('--debug=') || a.startsWith('-on-error') || a.startsWith('--on-error'))")
        .message("args must not contain -debug (it waits for a keypress; use debug: true) or -on-error (use onError)"))]
    pub args: Vec<String>,
    /// Packer variables, passed as `-var name=value` in name order.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 200))]
    #[x_kube(validation = Rule::new("self.all(k, k.matches('^[A-Za-z_][A-Za-z0-9_-]*$') && size(k) <= 128)")
        .message("variable names must be Packer identifiers ([A-Za-z_][A-Za-z0-9_-]*)"))]
    pub variables: BTreeMap<String, String>,
    /// A variables file relative to the working directory, passed as `-var-file=<file>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = RELATIVE_PATH_PATTERN))]
    #[x_kube(validation = Rule::new(r"!self.matches('(^|/)[.][.](/|$)')").message("variablesFile must stay inside the repository (no '..')"))]
    pub variables_file: Option<String>,
    /// Working directory relative to the repository root. Defaults to `builder.dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), regex(pattern = RELATIVE_PATH_PATTERN))]
    #[x_kube(validation = Rule::new(r"!self.matches('(^|/)[.][.](/|$)')").message("workingDir must stay inside the repository (no '..')"))]
    pub working_dir: Option<String>,
    /// Coloured output. Off by default (`-color=false`) so logs stay readable.
    #[serde(default, skip_serializing_if = "is_false")]
    pub color: bool,
    /// Verbose Packer logs (`PACKER_LOG=1`). Never `packer -debug`, which would wait for a keypress.
    #[serde(default, skip_serializing_if = "is_false")]
    pub debug: bool,
    /// What Packer does when the build fails (`-on-error=`). `ask` is not offered: nobody can answer inside a Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<OnError>,
}

/// Packer sub-commands the controller runs.
#[derive(JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackerSubCommand {
    /// `packer init`: install the plugins the template requires.
    Init,
    /// `packer validate`: check the template.
    Validate,
    /// `packer build`: build the AMI.
    Build,
}

/// What Packer does when the build fails (`-on-error=`). Packer's `ask` is not offered: nobody can answer a
/// prompt inside a Job.
#[derive(JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Clean up the temporary resources (Packer's default).
    Cleanup,
    /// Leave everything as it is for debugging.
    Abort,
    /// Run the cleanup provisioner, then clean up.
    RunCleanupProvisioner,
}

impl OnError {
    /// The value Packer expects after `-on-error=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cleanup => "cleanup",
            Self::Abort => "abort",
            Self::RunCleanupProvisioner => "run-cleanup-provisioner",
        }
    }
}

/// Copies and shares of the built AMI.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.kmsKeyIds) || self.kmsKeyIds.all(r, has(self.regions) && r in self.regions)")
    .message("every kmsKeyIds entry must name a region of distribution.regions").field_path(".kmsKeyIds"))]
#[x_kube(validation = Rule::new("!has(self.kmsKeyIds) || size(self.kmsKeyIds) == 0 || (has(self.encrypted) && self.encrypted)")
    .message("kmsKeyIds needs encrypted: true").field_path(".kmsKeyIds"))]
pub struct DistributionSpec {
    /// Regions the AMI is copied to after it is verified and tagged (CopyImage, same name, description and tags),
    /// each once. Not `spec.region`. The PackerBuilder is `Ready` only when every copy is `available`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 30), inner(length(max = 32), regex(pattern = REGION_PATTERN)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub regions: Vec<String>,
    /// Encrypt the copies' snapshots (CopyImage `Encrypted`), with the region's key from `kmsKeyIds` or EBS's
    /// default key.
    #[serde(default, skip_serializing_if = "is_false")]
    pub encrypted: bool,
    /// KMS key (ID, alias or ARN) per copy region for `encrypted` copies, e.g. `eu-west-1: alias/ami`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "kms_key_map")]
    pub kms_key_ids: BTreeMap<String, String>,
    /// Who may launch the AMI and its copies. When set, the active AMI in every region gets exactly these launch
    /// permissions (missing ones are added, others removed); when absent, launch permissions are left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_permissions: Option<LaunchPermissionsSpec>,
}

/// Region -> KMS key: at most one key per distribution region (the CEL rule above checks the keys).
fn kms_key_map(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "maxProperties": 30,
        "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 2048},
    })
}

/// Launch permissions of the active AMI (ModifyImageAttribute) and, optionally, its snapshots.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchPermissionsSpec {
    /// AWS account IDs that may launch the AMI.
    #[serde(default, rename = "accountIDs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100), inner(regex(pattern = ACCOUNT_ID_PATTERN)))]
    pub account_ids: Vec<String>,
    /// AWS Organizations ARNs whose accounts may launch the AMI, e.g. `arn:aws:organizations::123456789012:organization/o-abc123`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 20),
        inner(regex(pattern = r"^arn:aws[a-z-]*:organizations::[0-9]{12}:organization/o-[a-z0-9]{10,32}$"))
    )]
    pub organization_arns: Vec<String>,
    /// Organizational-unit ARNs whose accounts may launch the AMI, e.g.
    /// `arn:aws:organizations::123456789012:ou/o-abc123/ou-ab12-cdef3456`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 20),
        inner(regex(
            pattern = r"^arn:aws[a-z-]*:organizations::[0-9]{12}:ou/o-[a-z0-9]{10,32}/ou-[a-z0-9]{4,32}-[a-z0-9]{8,32}$"
        ))
    )]
    pub organizational_unit_arns: Vec<String>,
    /// Also give `accountIDs` createVolumePermission on the AMI's snapshots (needed to copy a shared AMI). When
    /// false, the snapshots' account permissions are removed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub share_snapshots: bool,
}

/// Retention of older managed AMIs of this PackerBuilder, per region. The active AMI is never deregistered, nor
/// any AMI in use: the target or current AMI of an AMIRefresher, the image of a launch template version an Auto
/// Scaling group or EKS node group uses, or the image of a pending, running, stopping or stopped instance. AMIs of the
/// original operator without a `created-by-namespace` tag are never deregistered.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.keep) || has(self.maxAge)")
    .message("set keep, maxAge or both"))]
pub struct RetentionSpec {
    /// Builds to keep per region, newest first, the active one included (AMIs built together count once).
    /// With `maxAge` too, an AMI is kept when either keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep: Option<i32>,
    /// AMIs younger than this (from their `create-timestamp`) are kept, e.g. `90d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(at_least_rule(bounds::PB_RETENTION_MAX_AGE)).message(format!("must be at least {}", bounds::PB_RETENTION_MAX_AGE).as_str()))]
    pub max_age: Option<HumanDuration>,
    /// Delete the EBS snapshots of deregistered AMIs (default true).
    #[serde(default = "default_true")]
    pub delete_snapshots: bool,
    /// Deregister nothing: list what would go in `status.retention.candidates` and one Event.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
}

fn default_true() -> bool {
    true
}

/// Observed state of a PackerBuilder.
#[derive(JsonSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PackerBuilderStatus {
    /// Fingerprint of the build configuration (repository, branch, builder image, commands) of the current or
    /// last build, recorded when it started and written to its AMI as the `build-config` tag; a spec change that
    /// alters it builds a new AMI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_config_hash: Option<String>,
    /// Identifier of the current or most recent build (a UUID), written to the AMI's `build-id` tag.
    #[serde(default, rename = "buildID", skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    /// The Packer command of the most recent build, shell-quoted for reading (it is never run through a shell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Standard conditions: `Ready`, `Building`, `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Failed build Jobs since the spec last changed.
    #[serde(default)]
    pub failed_job_count: i32,
    /// Short identifier of the most recent Job; part of its name and the AMI's `job-id` tag.
    #[serde(default, rename = "jobID", skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Name of the most recent build Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// State of the most recent build Job: `pending` (recorded, Job being created), `running`, `completed` or
    /// `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_status: Option<String>,
    /// When the most recent build started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<Time>,
    /// Base AMI of the most recent build.
    #[serde(default, rename = "lastRunBaseImageID", skip_serializing_if = "Option::is_none")]
    pub last_run_base_image_id: Option<String>,
    /// AMI produced (or adopted) by the most recent run: the AMI in use.
    #[serde(default, rename = "lastRunBuiltImageID", skip_serializing_if = "Option::is_none")]
    pub last_run_built_image_id: Option<String>,
    /// Every AMI the most recent successful build made in `region`, in the order Packer reported them, when there
    /// was more than one (a template with several sources, e.g. one per architecture); `lastRunBuiltImageID` is
    /// the first. All are verified, tagged as this build's and retired together by the next build.
    #[serde(default, rename = "lastRunBuiltImageIDs", skip_serializing_if = "Vec::is_empty")]
    pub last_run_built_image_ids: Vec<String>,
    /// Human-readable summary of the most recent run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_message: Option<String>,
    /// Outcome of the most recent run: `running`, `succeeded` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_status: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PackerBuilderPhase>,
    /// The last transition announced with an Event and notifications (`<phase>/<reason>/<buildID>`), written with
    /// the status that reaches it and before its Event, so a controller restart never repeats one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notified_transition: Option<String>,
    /// The copies of the active AMI(s), one entry per `distribution.regions` region and built AMI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distributed_images: Vec<DistributedImage>,
    /// What `retention` keeps because it is in use, would deregister (dry run), or still has to clean up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionStatus>,
}

/// One copy of a built AMI in a distribution region.
#[derive(JsonSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DistributedImage {
    /// The region of the copy.
    pub region: String,
    /// The built AMI (in `spec.region`) this is a copy of.
    #[serde(rename = "sourceImageID")]
    pub source_image_id: String,
    /// The copy's AMI ID, once CopyImage answered.
    #[serde(default, rename = "imageID", skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// `copying`, `available` or `failed` (retried with back-off; `message` says why).
    pub state: String,
    /// Why the last attempt failed (the AWS error or the image's state reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Failed attempts so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: i32,
    /// When the last copy attempt failed (the back-off counts from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<Time>,
}

fn is_zero(value: &i32) -> bool {
    *value == 0
}

/// What retention found on its last pass.
#[derive(JsonSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionStatus {
    /// AMIs retention would deregister but keeps because something uses them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_use: Vec<RetainedImage>,
    /// With `dryRun`: the AMIs that would be deregistered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<RetainedImage>,
    /// Snapshots of deregistered AMIs still to delete (written before the deregistration, so a restart finishes it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_snapshots: Vec<RetainedImage>,
}

/// An AMI (or snapshot) retention acted on or kept.
#[derive(JsonSchema, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetainedImage {
    /// Region of the AMI.
    pub region: String,
    /// The AMI.
    #[serde(rename = "imageID")]
    pub image_id: String,
    /// Its snapshots (for `pendingSnapshots`: those still to delete).
    #[serde(default, rename = "snapshotIDs", skip_serializing_if = "Vec::is_empty")]
    pub snapshot_ids: Vec<String>,
    /// Who uses it (for `inUse`), e.g. `launch template lt-0123 version 4 (Auto Scaling group web)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by: Option<String>,
}

/// Coarse state of a PackerBuilder, for `kubectl get`. Conditions carry the detail.
#[derive(JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PackerBuilderPhase {
    /// Not reconciled yet, or deciding.
    Pending,
    /// A build Job is running.
    Building,
    /// A usable managed AMI exists (and every copy in `distribution.regions` is available).
    Ready,
    /// The AMI is built; its copies in `distribution.regions` are not all available yet.
    Distributing,
    /// The last build failed; a retry is scheduled.
    Failed,
    /// `maxFailedJobs` reached: no more builds until the spec changes.
    Degraded,
    /// The spec cannot be acted on; see the Ready condition.
    Invalid,
}
