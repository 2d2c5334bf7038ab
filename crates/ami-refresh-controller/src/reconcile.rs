//! One reconcile of an AMIRefresher:
//!
//! 1. a fresh GET of the object (the watch cache can lag behind this controller's own last status write);
//! 2. the target AMI: `spec.ami` (verified), the newest eligible managed AMI from `amiFilters` (+ identity tags,
//!    trusted owners only), or the AMI of the referenced PackerBuilder (verified);
//! 3. the node groups as AWS reports them (every page of ListNodegroups minus `exclude`, their launch template
//!    version and its image; the self-managed Auto Scaling groups of the spec);
//! 4. updates in flight are polled once (DescribeUpdate / DescribeInstanceRefreshes), never waited on;
//! 5. the pure plan ([`refresh_engine::plan`]) says which node groups start now;
//! 6. each start: update config if asked, a launch-template version with only the image changed (reused if one
//!    exists), then UpdateNodegroupVersion or StartInstanceRefresh; the update ID goes into status at once;
//! 7. one status patch when something changed, then one Event (and notification) per node-group transition.
//!
//! Nothing is finalized on deletion: deleting an AMIRefresher stops further actions and rolls nothing back.

use std::{sync::Arc, time::Duration};

use ami_tags::{
    EligibilityPolicy, Ineligible, OPERATOR_SIGNATURE, Selector, evaluate, evaluate_shared, keys, newest_eligible,
};
use api_types::{
    AMIRefresher, AMIRefresherStatus, PackerBuilder,
    ami_refresher::{
        AMIRefresherPhase, NodeGroupKind, NodeGroupState, NodeGroupStatus, NodeGroupUpdateType, RETRY_ANNOTATION,
        UpdateStrategy,
    },
    conditions::{Time, reasons, types},
};
use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::{
        controller::Action,
        events::{EventType, Recorder},
    },
};
use refresh_engine::{Observed, PlanInputs, Schedule, WindowState, plan, window_state};

use crate::{
    aws::{NodegroupInfo, Progress, RefreshPrefs, UpdateConfig},
    capabilities::RolloutAws,
    error::{Error, Result},
};

/// Shared state of the controller.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// AWS, by capability (the SDK in production, in memory in the reconcile-level tests).
    pub aws: Arc<dyn RolloutAws>,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<controller_runtime::Metrics>,
    /// Notification delivery.
    pub notifier: controller_runtime::notify::NotificationQueue,
    /// First poll delay of an update in flight; grows with the update's age up to 8x.
    pub poll: Duration,
    /// Re-check interval of a settled AMIRefresher (new AMIs, drift).
    pub resync: Duration,
    /// DescribeNodegroup calls in flight at once per AMIRefresher.
    pub concurrency: usize,
    /// Back-off after failed reconciles (shared implementation with packer-build-controller).
    pub errors: controller_runtime::backoff::ErrorBackoff,
    /// Running reconciles and watch errors, for `/healthz`.
    pub liveness: controller_runtime::Liveness,
    /// Launch template versions made by this controller kept per template (0: all).
    pub versions_kept: usize,
}

impl Context {
    /// A context with default timings.
    pub fn new(
        client: Client,
        aws: Arc<dyn RolloutAws>,
        recorder: Recorder,
        metrics: Arc<controller_runtime::Metrics>,
        notifier: controller_runtime::notify::NotificationQueue,
    ) -> Self {
        Self {
            client,
            aws,
            recorder,
            metrics,
            notifier,
            poll: Duration::from_secs(30),
            resync: Duration::from_secs(300),
            concurrency: 8,
            errors: controller_runtime::backoff::ErrorBackoff::new(Duration::from_secs(5), MAX_ERROR_BACKOFF),
            liveness: controller_runtime::Liveness::new(Duration::from_secs(600)),
            versions_kept: 10,
        }
    }

    /// Sets the first retry delay after a failed reconcile (doubling up to 5 minutes).
    pub fn with_retry_base(mut self, base: Duration) -> Self {
        self.errors = controller_runtime::backoff::ErrorBackoff::new(base, MAX_ERROR_BACKOFF);
        self
    }

    fn succeeded(&self, amr: &AMIRefresher) {
        self.errors
            .succeeded(&amr.namespace().unwrap_or_default(), &amr.name_any());
    }
}

/// Longest wait after consecutive failed reconciles.
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(300);

/// Reconciles one AMIRefresher and records the reconcile's metrics.
pub async fn reconcile(amr: Arc<AMIRefresher>, ctx: Arc<Context>) -> Result<Action> {
    let _running = ctx.liveness.reconcile_started();
    let started = std::time::Instant::now();
    let result = reconcile_inner(&amr, &ctx).await;
    ctx.metrics.observe(
        started.elapsed().as_secs_f64(),
        result.as_ref().err().map(Error::category),
    );
    if result.is_ok() {
        ctx.succeeded(&amr);
    }
    result
}

/// How the target was chosen, or why none could be.
enum Choice {
    Chosen {
        ami: String,
        source: String,
        /// The AMI's EC2 architecture, when known.
        architecture: Option<String>,
    },
    NoEligible(String),
}

/// The spec, parsed once: durations, windows, refresh preferences and update config. Every step after [`validate`]
/// uses only this, so a value the controller cannot use is an `InvalidSpec` before anything is looked up or
/// touched, never a transient error in the middle of a rollout.
struct ValidSpec {
    windows: Vec<Schedule>,
    canary_soak: Option<Duration>,
    policy: EligibilityPolicy,
    prefs: RefreshPrefs,
    update_config: UpdateConfig,
}

fn validate(amr: &AMIRefresher) -> Result<ValidSpec> {
    let canary_soak = match amr.spec.refresh_config.as_ref().and_then(|r| r.canary_soak.as_ref()) {
        Some(d) => Some(
            d.parse()
                .map_err(|e| Error::InvalidSpec(format!("spec.refreshConfig.canarySoak: {e}")))?,
        ),
        None => None,
    };
    Ok(ValidSpec {
        canary_soak,
        windows: windows(amr)?,
        policy: policy(amr)?,
        prefs: refresh_prefs(amr)?,
        update_config: update_config(amr),
    })
}

fn policy(amr: &AMIRefresher) -> Result<EligibilityPolicy> {
    let expires_in = amr
        .spec
        .expires_in
        .parse_at_least(api_types::duration::bounds::AMR_EXPIRES_IN)
        .map_err(|e| Error::InvalidSpec(format!("spec.expiresIn: {e}")))?;
    let min_age = match &amr.spec.soak_time {
        Some(d) => d
            .parse()
            .map_err(|e| Error::InvalidSpec(format!("spec.soakTime: {e}")))?,
        None => Duration::ZERO,
    };
    Ok(EligibilityPolicy { expires_in, min_age })
}

fn why_not(id: &str, why: &Ineligible) -> String {
    match why {
        Ineligible::NotManaged => format!("{id} is not a managed AMI of this cluster"),
        Ineligible::UntrustedNamespace { namespace } => format!(
            "{id} was built in namespace {namespace}, which is neither this AMIRefresher's namespace nor in \
             spec.trustedNamespaces"
        ),
        Ineligible::NotAvailable => format!("{id} is not available"),
        Ineligible::NotActive => format!("{id} is deprecated"),
        Ineligible::NoTimestamp => format!("{id} has no creation time"),
        Ineligible::Expired { expired_at } => format!("{id} expired at {expired_at}"),
        Ineligible::TooYoung { usable_from } => format!("{id} is soaking until {usable_from}"),
    }
}

/// The AMI owners DescribeImages is restricted to: `amiOwners`, else the `owner-id` filter's values, else this
/// account. Never "anyone": a public AMI from a stranger with forged tags must not be found.
pub fn trusted_owners(amr: &AMIRefresher) -> Vec<String> {
    if !amr.spec.ami_owners.is_empty() {
        return amr.spec.ami_owners.clone();
    }
    let from_filter: Vec<String> = amr
        .spec
        .ami_filters
        .iter()
        .filter(|f| f.name == "owner-id")
        .flat_map(|f| f.values.clone())
        .collect();
    if from_filter.is_empty() {
        vec!["self".to_owned()]
    } else {
        from_filter
    }
}

/// Checks one named AMI: it exists, is available, and when it carries the operator's tags it must be eligible.
/// Checks an AMI named by `spec.ami` or a PackerBuilder: `Ok(architecture)` when it may be rolled out, else why
/// not.
async fn verify(
    ctx: &Context,
    amr: &AMIRefresher,
    policy: &EligibilityPolicy,
    id: &str,
    now: Timestamp,
) -> Result<std::result::Result<Option<String>, String>> {
    // Only from a trusted owner, whatever named the AMI (spec.ami, a PackerBuilder's status, filters).
    let owners = trusted_owners(amr);
    let Some(image) = ctx.aws.image(&amr.spec.region, id, &owners).await? else {
        return Ok(Err(match ctx.aws.image_owner(&amr.spec.region, id).await? {
            Some(owner) => format!(
                "{id} is owned by account {owner}, which is not a trusted owner ({}); name it in spec.amiOwners",
                owners.join(",")
            ),
            None => format!(
                "{id} does not exist in {} or is not visible to this account",
                amr.spec.region
            ),
        }));
    };
    if !image.is_available() {
        return Ok(Err(format!(
            "{id} is {}",
            image.state.as_deref().unwrap_or("not available")
        )));
    }
    if image.tag(keys::BROUGHT_TO_YOU_BY) == Some(OPERATOR_SIGNATURE)
        && let Err(why) = evaluate(&image, &Selector::any_managed(), policy, now)
    {
        return Ok(Err(why_not(id, &why)));
    }
    // Deprecated in EC2 (also what an AMI shared from an image account, whose tags are invisible here, can say).
    if image.deprecation_time.is_some_and(|t| t <= now) {
        return Ok(Err(why_not(id, &Ineligible::NotActive)));
    }
    Ok(Ok(image.architecture))
}

async fn choose_target(
    ctx: &Context,
    amr: &AMIRefresher,
    policy: &EligibilityPolicy,
    now: Timestamp,
) -> Result<Choice> {
    let spec = &amr.spec;
    if let Some(ami) = &spec.ami {
        return verified(ctx, amr, policy, ami.clone(), "spec.ami".into(), now).await;
    }
    if let Some(reference) = &spec.packer_builder_ref {
        return built_by(ctx, amr, policy, &reference.name, now).await;
    }
    let mut namespaces = vec![amr.namespace().unwrap_or_default()];
    namespaces.extend(spec.trusted_namespaces.iter().cloned());
    let selector = Selector::for_cluster_in(&spec.cluster_name, &namespaces);
    let owners = trusted_owners(amr);
    let images = ctx
        .aws
        .images(&spec.region, &spec.ami_filters, &selector.ec2_tag_filters(), &owners)
        .await?;
    // AMIs shared from an image account named in `amiOwners`: EC2 shows their tags only to that account, so they are
    // found by the filters alone and judged by EC2's own fields (ami_tags::evaluate_shared).
    let image_accounts: Vec<String> = spec.ami_owners.iter().filter(|o| *o != "self").cloned().collect();
    let shared: Vec<ami_tags::Image> = if image_accounts.is_empty() {
        Vec::new()
    } else {
        ctx.aws
            .images(&spec.region, &spec.ami_filters, &[], &image_accounts)
            .await?
            .into_iter()
            .filter(|i| i.tags.is_empty())
            .collect()
    };
    let found = Found {
        tagged: images,
        shared,
        selector: &selector,
        cluster: &spec.cluster_name,
        owners: &owners,
    };
    Ok(found.newest(policy, now))
}

/// `ami` if it passes the eligibility policy (EC2's own view of it), with where it came from.
async fn verified(
    ctx: &Context,
    amr: &AMIRefresher,
    policy: &EligibilityPolicy,
    ami: String,
    source: String,
    now: Timestamp,
) -> Result<Choice> {
    Ok(match verify(ctx, amr, policy, &ami, now).await? {
        Err(why) => Choice::NoEligible(why),
        Ok(architecture) => Choice::Chosen {
            ami,
            source,
            architecture,
        },
    })
}

/// The AMI the referenced PackerBuilder (same namespace) last built, or its available copy in this region.
async fn built_by(
    ctx: &Context,
    amr: &AMIRefresher,
    policy: &EligibilityPolicy,
    name: &str,
    now: Timestamp,
) -> Result<Choice> {
    let ns = amr.namespace().unwrap_or_default();
    let region = &amr.spec.region;
    let builders: Api<PackerBuilder> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(pb) = builders.get_opt(name).await? else {
        return Ok(Choice::NoEligible(format!("PackerBuilder {ns}/{name} does not exist")));
    };
    let built_in = pb.spec.region.clone();
    let Some(status) = pb.status.filter(|s| s.last_run_built_image_id.is_some()) else {
        return Ok(Choice::NoEligible(format!(
            "PackerBuilder {ns}/{name} has not produced an AMI yet"
        )));
    };
    let Some(ami) = refresh_engine::target::built_image_in(&status, &built_in, region) else {
        return Ok(Choice::NoEligible(format!(
            "PackerBuilder {ns}/{name} builds in {built_in} and has no available copy in {region} (add it to its \
             spec.distribution.regions)"
        )));
    };
    verified(ctx, amr, policy, ami, format!("packerBuilderRef {ns}/{name}"), now).await
}

/// The candidates `amiFilters` found: the operator's tagged AMIs of the cluster and untagged AMIs shared from a
/// trusted image account.
struct Found<'a> {
    tagged: Vec<ami_tags::Image>,
    shared: Vec<ami_tags::Image>,
    selector: &'a Selector,
    cluster: &'a str,
    owners: &'a [String],
}

impl Found<'_> {
    /// Pure: the newest eligible candidate (ties broken by ID), or why none is (the first five reasons).
    fn newest(self, policy: &EligibilityPolicy, now: Timestamp) -> Choice {
        let newest_shared = self
            .shared
            .iter()
            .filter_map(|i| evaluate_shared(i, policy, now).ok().map(|created| (i, created)))
            .max_by(|(a, ta), (b, tb)| ta.cmp(tb).then_with(|| a.id.cmp(&b.id)));
        let candidates = self.tagged.len() + self.shared.len();
        let newest = match (newest_eligible(&self.tagged, self.selector, policy, now), newest_shared) {
            (Some(tagged), Some(shared)) => Some(if shared.1 > tagged.1 { shared } else { tagged }),
            (tagged, shared) => tagged.or(shared),
        };
        if let Some((image, _)) = newest {
            return Choice::Chosen {
                ami: image.id.clone(),
                source: format!("amiFilters: newest eligible of {candidates} candidate(s)"),
                architecture: image.architecture.clone(),
            };
        }
        if candidates == 0 {
            return Choice::NoEligible(format!(
                "no AMI of cluster {} matches amiFilters from owners {}",
                self.cluster,
                self.owners.join(",")
            ));
        }
        let reasons: Vec<String> = self
            .tagged
            .iter()
            .filter(|i| !i.tags.is_empty())
            .filter_map(|i| {
                evaluate(i, self.selector, policy, now)
                    .err()
                    .map(|w| why_not(&i.id, &w))
            })
            .chain(
                self.shared
                    .iter()
                    .filter_map(|i| evaluate_shared(i, policy, now).err().map(|w| why_not(&i.id, &w))),
            )
            .take(5)
            .collect();
        Choice::NoEligible(format!(
            "none of {candidates} candidate AMI(s) is eligible: {}",
            reasons.join("; ")
        ))
    }
}

/// A node group as observed, with what starting it needs.
struct Group {
    observed: Observed,
    nodegroup: Option<NodegroupInfo>,
    /// The instance types its nodes run (empty: unknown, e.g. attribute-based instance selection).
    instance_types: Vec<String>,
    /// The claim tag on the group, if any ([`refresh_engine::claim`]).
    claim: Option<String>,
}

fn tracked(previous: &[NodeGroupStatus], name: &str, kind: NodeGroupKind) -> bool {
    previous
        .iter()
        .any(|p| p.name == name && p.kind == kind && p.state == NodeGroupState::InProgress && p.update_id.is_some())
}

fn blank(name: &str, kind: NodeGroupKind) -> Observed {
    Observed {
        name: name.to_owned(),
        kind,
        current_ami: None,
        launch_template_id: None,
        launch_template_version: None,
        skip: None,
        busy: false,
        running_update: None,
    }
}

async fn observe_managed(
    ctx: &Context,
    amr: &AMIRefresher,
    previous: &[NodeGroupStatus],
    name: String,
) -> Result<Option<Group>> {
    let (region, cluster) = (&amr.spec.region, &amr.spec.cluster_name);
    let ng = match ctx.aws.describe_nodegroup(region, cluster, &name).await {
        Ok(ng) => ng,
        // Listed, then deleted before it could be described: it is gone (an update it had is still tracked).
        Err(Error::Aws(e)) if e.kind == controller_runtime::aws::AwsErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut o = blank(&name, NodeGroupKind::Managed);
    let mut lt_type = None;
    o.launch_template_id = ng.launch_template_id.clone();
    o.launch_template_version = ng.launch_template_version.clone();
    match (&ng.launch_template_id, &ng.launch_template_version) {
        (Some(id), Some(version)) => match ctx.aws.template_version(region, id, version).await? {
            None => o.skip = Some(format!("launch template {id} version {version} does not exist")),
            Some((_, None)) => {
                o.skip = Some(format!(
                    "launch template {id} version {version} sets no image (EKS chooses the AMI)"
                ))
            }
            Some((number, Some(image))) => {
                o.current_ami = Some(image);
                lt_type = ctx.aws.template_instance_type(region, id, &number);
            }
        },
        _ => {
            o.skip = Some(
                "no custom launch template: EKS chooses this node group's AMI (use a release version update)".into(),
            )
        }
    }
    match ng.status.as_str() {
        "CREATING" | "DELETING" | "CREATE_FAILED" | "DELETE_FAILED" => {
            o.skip = Some(format!("node group is {}", ng.status));
        }
        "UPDATING" => {
            o.busy = true;
            if o.skip.is_none()
                && !tracked(previous, &name, NodeGroupKind::Managed)
                && let Some((id, version)) = ctx.aws.running_version_update(region, cluster, &name).await?
                && rolls_onto_ours(ctx, region, o.launch_template_id.as_deref(), version.as_deref()).await?
            {
                o.running_update = Some(id);
            }
        }
        _ => {}
    }
    // The node group's own list, else the launch template's type, else what EKS uses by default.
    let instance_types = if !ng.instance_types.is_empty() {
        ng.instance_types.clone()
    } else {
        vec![lt_type.unwrap_or_else(|| refresh_engine::fit::EKS_DEFAULT_INSTANCE_TYPE.to_owned())]
    };
    Ok(Some(Group {
        observed: o,
        claim: ng.tags.get(refresh_engine::claim::CLAIM_TAG).cloned(),
        nodegroup: Some(ng),
        instance_types,
    }))
}

/// The tag EKS puts on the Auto Scaling group of a managed node group.
const EKS_NODEGROUP_TAG: &str = "eks:nodegroup-name";

/// A self-managed group on `$Latest`/`$Default`: the version and image its instances really run
/// ([`refresh_engine::marker::launched_from`]: a version this controller made counts only once a refresh onto it
/// succeeded), and, on `$Latest`, a skip when the template is shared with an Auto Scaling group outside this rollout
/// (the new version would reach it at its next scale-out, unrolled and unwatched). The controller never changes a
/// template's default version, so `$Default` groups sharing a template are not affected by it.
#[allow(clippy::too_many_arguments)]
async fn symbolic_state(
    ctx: &Context,
    amr: &AMIRefresher,
    name: &str,
    template: &str,
    version: &str,
    number: String,
    image: Option<String>,
    o: &mut Observed,
) -> Result<Option<(String, Option<String>)>> {
    let region = &amr.spec.region;
    if version.eq_ignore_ascii_case("$Latest") {
        let rollout: Vec<&String> = amr
            .spec
            .auto_scaling_groups
            .iter()
            .filter(|n| !amr.spec.exclude.contains(n))
            .collect();
        let outside: Vec<String> = ctx
            .aws
            .asgs_on_latest(region, template)
            .await?
            .into_iter()
            .filter(|n| !rollout.contains(&n))
            .collect();
        if !outside.is_empty() {
            o.skip = Some(format!(
                "launch template {template} at $Latest is shared with Auto Scaling group(s) outside this rollout \
                 ({}): a new version would reach them at their next scale-out; pin a version or list them",
                outside.join(", ")
            ));
        }
    }
    let description = ctx.aws.version_description(region, template, &number).await?;
    let refreshed = match refresh_engine::marker::parse(description.as_deref().unwrap_or_default()) {
        Some(_) => ctx.aws.refreshed_onto(region, name, &number).await?,
        None => false,
    };
    match refresh_engine::marker::launched_from(description.as_deref(), refreshed) {
        Some(source) => ctx.aws.template_version(region, template, &source).await,
        None => Ok(Some((number, image))),
    }
}

/// Deletes versions of `template` this controller made beyond the newest `versions_kept`
/// ([`refresh_engine::marker::versions_to_delete`]), never one in use: the default and latest versions, a version an
/// Auto Scaling group or an EKS node group of any cluster in the region uses, or one an update in status rolls onto.
/// Failures are logged and retried after the next successful update; they never fail the rollout.
async fn clean_up_versions(ctx: &Context, amr: &AMIRefresher, template: &str, entries: &[NodeGroupStatus]) {
    if ctx.versions_kept == 0 {
        return;
    }
    let region = &amr.spec.region;
    let result = async {
        let versions = ctx.aws.template_versions(region, template).await?;
        let marked: Vec<i64> = versions
            .iter()
            .filter(|v| refresh_engine::marker::ours(v.description.as_deref()))
            .map(|v| v.number)
            .collect();
        let mut in_use: Vec<i64> = versions
            .iter()
            .filter(|v| v.default)
            .map(|v| v.number)
            .chain(versions.iter().map(|v| v.number).max())
            .chain(
                entries
                    .iter()
                    .filter(|e| e.launch_template_id.as_deref() == Some(template))
                    .filter_map(|e| e.launch_template_version.as_deref()?.parse().ok()),
            )
            .collect();
        // Only look around the region when something could go.
        if refresh_engine::marker::versions_to_delete(&marked, ctx.versions_kept, &in_use).is_empty() {
            return Ok(0);
        }
        in_use.extend(ctx.aws.template_versions_in_use(region, template).await?);
        let doomed = refresh_engine::marker::versions_to_delete(&marked, ctx.versions_kept, &in_use);
        if doomed.is_empty() {
            return Ok(0);
        }
        ctx.aws.delete_versions(region, template, &doomed).await
    }
    .await;
    match result {
        Ok(0) => {}
        Ok(deleted) => {
            tracing::info!(%template, deleted, kept = ctx.versions_kept, "old launch template versions deleted")
        }
        Err(error) => tracing::warn!(%template, %error, "could not clean up old launch template versions"),
    }
}

/// Whether an update found running (not in status) rolls onto a launch template version this controller made
/// ([`refresh_engine::marker`]): then it is ours, started before a restart lost the status write, and adopted.
/// Anything else is somebody else's: the group waits until it ends.
async fn rolls_onto_ours(ctx: &Context, region: &str, template: Option<&str>, version: Option<&str>) -> Result<bool> {
    let (Some(template), Some(version)) = (template, version) else {
        return Ok(false);
    };
    let description = ctx.aws.version_description(region, template, version).await?;
    Ok(refresh_engine::marker::ours(description.as_deref()))
}

async fn observe_asg(ctx: &Context, amr: &AMIRefresher, previous: &[NodeGroupStatus], name: &str) -> Result<Group> {
    let region = &amr.spec.region;
    let mut o = blank(name, NodeGroupKind::SelfManaged);
    let mut instance_types = Vec::new();
    let mut claim = None;
    match ctx.aws.describe_asg(region, name).await? {
        None => o.skip = Some("Auto Scaling group does not exist".into()),
        Some(asg) if asg.tags.contains_key(EKS_NODEGROUP_TAG) => {
            o.skip = Some(format!(
                "belongs to the EKS managed node group {}: it is rolled through its node group, not as a \
                 self-managed Auto Scaling group",
                asg.tags[EKS_NODEGROUP_TAG]
            ));
        }
        Some(asg) => {
            claim = asg.tags.get(refresh_engine::claim::CLAIM_TAG).cloned();
            match (asg.launch_template_id, asg.launch_template_version) {
                (Some(id), version) => {
                    let version = version.unwrap_or_else(|| "$Default".into());
                    o.launch_template_id = Some(id.clone());
                    let resolved = match ctx.aws.template_version(region, &id, &version).await? {
                        Some((number, image)) if version.starts_with('$') => {
                            symbolic_state(ctx, amr, name, &id, &version, number, image, &mut o).await?
                        }
                        other => other,
                    };
                    match resolved {
                        None => o.skip = Some(format!("launch template {id} version {version} does not exist")),
                        Some((number, image)) => {
                            instance_types = if asg.override_types.is_empty() {
                                ctx.aws
                                    .template_instance_type(region, &id, &number)
                                    .into_iter()
                                    .collect()
                            } else {
                                asg.override_types.clone()
                            };
                            o.launch_template_version = Some(number);
                            o.current_ami = image;
                            if o.current_ami.is_none() {
                                o.skip = Some(format!("launch template {id} version {version} sets no image"));
                            }
                        }
                    }
                    if let Some((active, version)) = ctx.aws.active_refresh(region, name).await? {
                        o.busy = true;
                        if !tracked(previous, name, NodeGroupKind::SelfManaged)
                            && rolls_onto_ours(ctx, region, Some(id.as_str()), version.as_deref()).await?
                        {
                            o.running_update = Some(active);
                        }
                    }
                }
                (None, _) => o.skip = Some("uses a launch configuration, not a launch template".into()),
            }
        }
    }
    Ok(Group {
        observed: o,
        nodegroup: None,
        instance_types,
        claim,
    })
}

/// One owner per node group ([`refresh_engine::claim`]): claims every group this AMIRefresher may roll that nobody
/// claims (not in dry-run), takes over a claim whose AMIRefresher no longer exists, and skips groups another
/// existing AMIRefresher claims. Returns those conflicts as `group (namespace/name)`.
async fn claim_groups(ctx: &Context, amr: &AMIRefresher, groups: &mut [Group]) -> Result<Vec<String>> {
    use refresh_engine::claim::{CLAIM_TAG, Claim, claim_of, claim_value};
    let me = claim_value(&amr.namespace().unwrap_or_default(), &amr.name_any());
    let region = &amr.spec.region;
    let mut conflicts = Vec::new();
    for g in groups.iter_mut().filter(|g| g.observed.skip.is_none()) {
        let take = match claim_of(g.claim.as_deref(), &me) {
            Claim::Ours => false,
            Claim::Free => true,
            Claim::Other { namespace, name } => {
                let owner: Api<AMIRefresher> = Api::namespaced(ctx.client.clone(), &namespace);
                let exists = match owner.get_opt(&name).await {
                    Ok(found) => found.is_some(),
                    // Not allowed to look (namespaced RBAC): assume it exists rather than take its groups.
                    Err(kube::Error::Api(e)) if e.code == 403 => true,
                    Err(e) => return Err(e.into()),
                };
                if exists {
                    g.observed.skip = Some(format!(
                        "claimed by AMIRefresher {namespace}/{name} (tag {CLAIM_TAG} on the group); only one \
                         AMIRefresher may roll a node group"
                    ));
                    conflicts.push(format!("{} ({namespace}/{name})", g.observed.name));
                    false
                } else {
                    tracing::info!(group = %g.observed.name, stale = %format!("{namespace}/{name}"), "taking over a claim of a deleted AMIRefresher");
                    true
                }
            }
        };
        if take && !amr.spec.dry_run {
            match (&g.nodegroup, g.observed.kind) {
                (Some(ng), NodeGroupKind::Managed) => {
                    if let Some(arn) = &ng.arn {
                        ctx.aws.tag_nodegroup(region, arn, CLAIM_TAG, &me).await?;
                    }
                }
                _ => ctx.aws.tag_asg(region, &g.observed.name, CLAIM_TAG, &me).await?,
            }
            g.claim = Some(me.clone());
        }
    }
    Ok(conflicts)
}

/// Skips every idle group whose instance types cannot run the target AMI ([`refresh_engine::fit`]): it is never
/// updated, and its status says why. A group with an update in flight is left to its tracking.
async fn skip_misfits(
    ctx: &Context,
    region: &str,
    target: &str,
    architecture: Option<&str>,
    groups: &mut [Group],
) -> Result<()> {
    if architecture.is_none() {
        return Ok(());
    }
    let types: Vec<String> = groups
        .iter()
        .filter(|g| g.observed.skip.is_none() && !g.observed.busy && g.observed.current_ami.as_deref() != Some(target))
        .flat_map(|g| g.instance_types.iter().cloned())
        .collect();
    if types.is_empty() {
        return Ok(());
    }
    let archs = ctx.aws.instance_architectures(region, &types).await?;
    // A group already on the target runs it: nothing to check.
    let idle =
        |g: &Group| g.observed.skip.is_none() && !g.observed.busy && g.observed.current_ami.as_deref() != Some(target);
    for g in groups.iter_mut().filter(|g| idle(g)) {
        if let Err(why) = refresh_engine::fit::check(target, architecture, &g.instance_types, &archs) {
            g.observed.skip = Some(why);
        }
    }
    Ok(())
}

async fn observe(ctx: &Context, amr: &AMIRefresher, previous: &[NodeGroupStatus]) -> Result<Vec<Group>> {
    let spec = &amr.spec;
    let names = ctx.aws.list_nodegroups(&spec.region, &spec.cluster_name).await?;
    let (excluded, included): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| spec.exclude.contains(n));
    let managed: Vec<Option<Group>> = futures::stream::iter(included)
        .map(|name| observe_managed(ctx, amr, previous, name))
        .buffered(ctx.concurrency.max(1))
        .try_collect()
        .await?;
    let mut groups: Vec<Group> = managed.into_iter().flatten().collect();
    // An excluded group is left alone, except for an update of ours running on it that status does not know (a
    // restart lost the write, then the group was excluded): it still counts against parallelism and is tracked to
    // its end.
    for name in excluded {
        if tracked(previous, &name, NodeGroupKind::Managed) {
            continue;
        }
        if let Some(mut g) = observe_managed(ctx, amr, previous, name).await?
            && g.observed.running_update.is_some()
        {
            g.observed.skip = Some("excluded (spec.exclude)".into());
            groups.push(g);
        }
    }
    for name in spec.auto_scaling_groups.iter().filter(|n| !spec.exclude.contains(n)) {
        groups.push(observe_asg(ctx, amr, previous, name).await?);
    }
    Ok(groups)
}

/// Polls one update in flight and folds the answer into its status entry.
async fn track(ctx: &Context, amr: &AMIRefresher, entry: &mut NodeGroupStatus, now: Timestamp) -> Result<()> {
    let Some(id) = entry.update_id.clone() else {
        return Ok(());
    };
    let (region, cluster) = (&amr.spec.region, &amr.spec.cluster_name);
    let described = match entry.kind {
        NodeGroupKind::Managed => ctx.aws.describe_update(region, cluster, &entry.name, &id).await,
        NodeGroupKind::SelfManaged => ctx.aws.describe_refresh(region, &entry.name, &id).await,
    };
    let progress = match described {
        Ok(progress) => progress,
        // The group (or its cluster) was deleted during the update: the update ends here, as cancelled, instead of
        // failing every reconcile on the same not-found error.
        Err(Error::Aws(e)) if e.kind == controller_runtime::aws::AwsErrorKind::NotFound => {
            Progress::Cancelled(format!("the node group or its update no longer exists ({})", e.message))
        }
        Err(e) => return Err(e),
    };
    let result = match &progress {
        Progress::Running => return Ok(()),
        Progress::Successful => "succeeded",
        Progress::Failed(_) => "failed",
        Progress::Cancelled(_) => "cancelled",
    };
    let config = entry.update_type == Some(NodeGroupUpdateType::ConfigUpdate);
    ctx.metrics
        .count(if config { "config_updates" } else { "rollouts" }, result);
    let (state, message) = match progress {
        Progress::Running => return Ok(()),
        // The update config is in place: the group goes back to Pending with the config update recorded
        // (`refresh_engine::plan::config_applied`), and its version update starts next.
        Progress::Successful if config => (
            NodeGroupState::Pending,
            format!("update config applied (update {id}); the version update follows"),
        ),
        Progress::Successful => {
            entry.current_ami = entry.target_ami.clone();
            (NodeGroupState::Successful, "update finished".to_owned())
        }
        Progress::Failed(why) if config => (NodeGroupState::Failed, format!("UpdateNodegroupConfig failed: {why}")),
        Progress::Failed(why) => (NodeGroupState::Failed, why),
        Progress::Cancelled(why) => (NodeGroupState::Cancelled, why),
    };
    entry.state = state;
    entry.message = Some(message);
    entry.finished_at = Some(Time(now));
    Ok(())
}

enum Started {
    /// The update runs: its ID and the launch template version.
    Update { id: String, version: String },
    /// The update config is applied first (UpdateNodegroupConfig): its update ID, tracked like a version update;
    /// the version update starts once it succeeded.
    Config { id: String },
    /// An update of ours onto the same version already ended in failure (while the controller was down, or its
    /// record was lost): it is reported and halts, never issued again.
    FailedBefore {
        id: String,
        version: String,
        message: String,
    },
}

fn update_config(amr: &AMIRefresher) -> UpdateConfig {
    let rc = amr.spec.refresh_config.clone().unwrap_or_default();
    UpdateConfig {
        max_unavailable: rc.max_unavailable,
        max_unavailable_percentage: rc.max_unavailable_percentage,
        strategy: rc.strategy.map(|s| match s {
            UpdateStrategy::Default => "DEFAULT",
            UpdateStrategy::Minimal => "MINIMAL",
        }),
    }
}

fn refresh_prefs(amr: &AMIRefresher) -> Result<RefreshPrefs> {
    let ir = amr
        .spec
        .refresh_config
        .as_ref()
        .and_then(|r| r.instance_refresh.clone())
        .unwrap_or_default();
    let warmup = match &ir.instance_warmup {
        Some(d) => Some(
            i32::try_from(
                d.parse()
                    .map_err(|e| Error::InvalidSpec(format!("spec.refreshConfig.instanceRefresh.instanceWarmup: {e}")))?
                    .as_secs(),
            )
            .unwrap_or(i32::MAX),
        ),
        None => None,
    };
    Ok(RefreshPrefs {
        min_healthy_percentage: ir.min_healthy_percentage.unwrap_or(90),
        instance_warmup: warmup,
        skip_matching: ir.skip_matching,
        auto_rollback: ir.auto_rollback,
    })
}

/// Starts one node group: its update config first when the spec asks for a value the group does not have (once
/// per target: `config_done` says it was applied already), else the version update or instance refresh.
async fn start(
    ctx: &Context,
    amr: &AMIRefresher,
    valid: &ValidSpec,
    group: &Group,
    target: &str,
    config_done: bool,
    since: Option<Timestamp>,
) -> Result<Started> {
    let (region, cluster) = (&amr.spec.region, &amr.spec.cluster_name);
    let o = &group.observed;
    let (Some(template), Some(current)) = (&o.launch_template_id, &o.launch_template_version) else {
        return Err(Error::InvalidSpec(format!("{} has no launch template", o.name)));
    };
    if let Some(ng) = &group.nodegroup {
        let wanted = valid.update_config;
        if !config_done && wanted != UpdateConfig::default() && !wanted.satisfied_by(ng) {
            let id = ctx
                .aws
                .update_nodegroup_config(region, cluster, &o.name, wanted)
                .await?;
            return Ok(Started::Config { id });
        }
    }
    let version = match ctx.aws.version_with_image(region, template, current, target).await? {
        Some(existing) => {
            // Made by an earlier attempt: did an update onto it fail while nobody watched?
            if let Some((id, message)) = ctx
                .aws
                .ended_failure_onto(o.kind, region, cluster, &o.name, &existing, since)
                .await?
            {
                return Ok(Started::FailedBefore {
                    id,
                    version: existing,
                    message,
                });
            }
            existing
        }
        None => {
            let created = ctx.aws.create_version(region, template, current, target).await?;
            controller_runtime::failpoint::failpoint("version-created");
            created
        }
    };
    let id = match o.kind {
        NodeGroupKind::Managed => {
            let force = amr.spec.refresh_config.as_ref().is_some_and(|r| r.force);
            ctx.aws
                .update_nodegroup_version(region, cluster, &o.name, template, &version, force)
                .await?
        }
        NodeGroupKind::SelfManaged => {
            ctx.aws
                .start_refresh(region, &o.name, template, &version, valid.prefs)
                .await?
        }
    };
    Ok(Started::Update { id, version })
}

fn condition(
    status: &mut AMIRefresherStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: String,
    gen_: i64,
    now: Timestamp,
) {
    api_types::conditions::set_bool(&mut status.conditions, type_, value, reason, message, gen_, now);
}

fn windows(amr: &AMIRefresher) -> Result<Vec<Schedule>> {
    amr.spec
        .maintenance_windows
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let duration = w
                .duration
                .parse_at_least(api_types::duration::bounds::AMR_WINDOW)
                .map_err(|e| Error::InvalidSpec(format!("spec.maintenanceWindows[{i}].duration: {e}")))?;
            Schedule::parse(&w.schedule, duration, &w.time_zone)
                .map_err(|e| Error::InvalidSpec(format!("maintenanceWindows: {e}")))
        })
        .collect()
}

/// The Event and notification of one transition (pure). The node group is the Event's related object: kube's
/// Recorder folds Events by (reason, regarding, related), so without it the second node group's Event would be
/// folded into the first one's series.
fn announcement(
    amr: &AMIRefresher,
    status: &AMIRefresherStatus,
    a: refresh_engine::transitions::Transition,
) -> controller_runtime::report::Announcement {
    let related = a.node_group.as_ref().map(|name| {
        let kind = match status.node_groups.iter().find(|n| &n.name == name).map(|n| n.kind) {
            Some(NodeGroupKind::SelfManaged) => "AutoScalingGroup",
            _ => "Nodegroup",
        };
        controller_runtime::report::related("eks.amazonaws.com/v1", kind, name)
    });
    let type_ = if a.warning {
        EventType::Warning
    } else {
        EventType::Normal
    };
    let severity = match (a.warning, a.to.as_str()) {
        (true, "Failed" | "Cancelled") => notifier::Severity::Failure,
        (true, _) => notifier::Severity::Warning,
        (_, "Successful" | "Ready") => notifier::Severity::Success,
        _ => notifier::Severity::Info,
    };
    let notification = notifier::Notification {
        kind: "AMIRefresher".into(),
        namespace: amr.namespace().unwrap_or_default(),
        name: amr.name_any(),
        from: a.from,
        to: a.to,
        reason: a.reason.to_owned(),
        message: a.message.clone(),
        severity,
        base_ami: None,
        ami: status.target_ami.clone(),
        node_group: a.node_group,
    };
    controller_runtime::report::Announcement {
        type_,
        reason: a.reason.to_owned(),
        note: a.message,
        action: "Rollout",
        related,
        notification: Some(notification),
    }
}

/// Writes the status when it changed (a merge patch that also clears removed fields), then announces each
/// transition once. Announcements follow the write: a conflict or crash before it repeats nothing.
async fn report(
    ctx: &Context,
    amr: &AMIRefresher,
    old: &AMIRefresherStatus,
    status: &AMIRefresherStatus,
) -> Result<()> {
    let api: Api<AMIRefresher> = Api::namespaced(ctx.client.clone(), &amr.namespace().unwrap_or_default());
    let (object, namespace) = (amr.object_ref(&()), amr.namespace().unwrap_or_default());
    let target = controller_runtime::notify::Target {
        object: &object,
        namespace: &namespace,
        region: &amr.spec.region,
        spec: amr.spec.notifier.as_ref(),
    };
    let announcements = refresh_engine::transitions::transitions(old, status)
        .into_iter()
        .map(|a| announcement(amr, status, a))
        .collect();
    controller_runtime::report::report(
        (&api, &amr.name_any()),
        (old, status),
        (&ctx.recorder, &ctx.notifier),
        target,
        announcements,
    )
    .await?;
    Ok(())
}

fn poll_delay(ctx: &Context, status: &AMIRefresherStatus, now: Timestamp) -> Duration {
    let oldest = status
        .node_groups
        .iter()
        .filter(|n| n.state == NodeGroupState::InProgress)
        .filter_map(|n| n.started_at.as_ref())
        .map(|t| now.duration_since(t.0).unsigned_abs())
        .max()
        .unwrap_or_default();
    // Back off as the update ages: node group updates take minutes to hours.
    (oldest / 10).clamp(ctx.poll, ctx.poll.saturating_mul(8))
}

/// What starting the planned node groups did.
struct StartResult {
    /// AWS refused a start for good: the group is `Failed` and the rollout halts.
    failed: bool,
    /// A retriable error stopped the starts; status is written first, then the reconcile retries with back-off.
    transient: Option<Error>,
}

/// The target and the times a start depends on.
#[derive(Clone, Copy)]
struct When<'a> {
    target: &'a str,
    /// Failures of updates that ended before this (the last retry) are not a reason to halt again.
    since: Option<Timestamp>,
    now: Timestamp,
}

/// Starts the node groups the plan names, in order, recording each in its status entry; stops at the first
/// failure.
async fn start_groups(
    ctx: &Context,
    amr: &AMIRefresher,
    valid: &ValidSpec,
    groups: &[Group],
    p: &mut refresh_engine::Plan,
    at: When<'_>,
) -> StartResult {
    let When { target, since, now } = at;
    let mut result = StartResult {
        failed: false,
        transient: None,
    };
    for name in p.start.clone() {
        let Some(group) = groups.iter().find(|g| g.observed.name == name) else {
            continue;
        };
        let Some(entry) = p.node_groups.iter_mut().find(|n| n.name == name) else {
            continue;
        };
        let config_done = refresh_engine::plan::config_applied(entry);
        match start(ctx, amr, valid, group, target, config_done, since).await {
            Ok(Started::Update { id, version }) => {
                ctx.metrics.count("rollouts", "started");
                tracing::info!(node_group = %name, update = %id, version = %version, target = %target, "update started");
                entry.state = NodeGroupState::InProgress;
                entry.update_id = Some(id);
                entry.update_type =
                    (group.observed.kind == NodeGroupKind::Managed).then_some(NodeGroupUpdateType::VersionUpdate);
                entry.launch_template_version = Some(version);
                entry.started_at = Some(Time(now));
                entry.finished_at = None;
                entry.message = Some("update started".into());
            }
            Ok(Started::FailedBefore { id, version, message }) => {
                tracing::warn!(node_group = %name, update = %id, version = %version, "an earlier update onto this version failed; halting");
                entry.state = NodeGroupState::Failed;
                entry.update_id = Some(id.clone());
                entry.update_type =
                    (group.observed.kind == NodeGroupKind::Managed).then_some(NodeGroupUpdateType::VersionUpdate);
                entry.launch_template_version = Some(version);
                entry.finished_at = Some(Time(now));
                entry.message = Some(format!(
                    "update {id} onto the same launch template version ended while the controller was not tracking it: {}",
                    if message.is_empty() { "failed" } else { message.as_str() }
                ));
                result.failed = true;
                break;
            }
            Ok(Started::Config { id }) => {
                ctx.metrics.count("config_updates", "started");
                tracing::info!(node_group = %name, update = %id, "update config started");
                entry.state = NodeGroupState::InProgress;
                entry.update_id = Some(id);
                entry.update_type = Some(NodeGroupUpdateType::ConfigUpdate);
                entry.started_at = Some(Time(now));
                entry.finished_at = None;
                entry.message =
                    Some("applying the update config (maxUnavailable, strategy) before the version update".into());
            }
            Err(e) if e.is_permanent_aws() => {
                entry.state = NodeGroupState::Failed;
                entry.message = Some(e.to_string());
                entry.finished_at = Some(Time(now));
                result.failed = true;
                break;
            }
            Err(e) => {
                // Keep what already started in this pass: write status first, then retry with back-off.
                result.transient = Some(e);
                break;
            }
        }
    }
    result
}

/// Tracks every update in flight (DescribeUpdate / DescribeInstanceRefreshes) and cleans up the launch template versions
/// of templates whose update just succeeded. Returns the tracked entries and whether one of them just failed.
async fn poll_in_flight(
    ctx: &Context,
    amr: &AMIRefresher,
    old: &AMIRefresherStatus,
    now: Timestamp,
) -> Result<(Vec<NodeGroupStatus>, bool)> {
    let mut previous = old.node_groups.clone();
    let mut newly_failed = false;
    for entry in previous
        .iter_mut()
        .filter(|e| e.state == NodeGroupState::InProgress && e.update_id.is_some())
    {
        track(ctx, amr, entry, now).await?;
        if matches!(entry.state, NodeGroupState::Failed | NodeGroupState::Cancelled) {
            newly_failed = true;
        }
    }
    // A successful update makes older versions of its template candidates for clean-up.
    let succeeded: std::collections::BTreeSet<String> = previous
        .iter()
        .filter(|e| e.state == NodeGroupState::Successful && e.finished_at.as_ref().is_some_and(|t| t.0 == now))
        .filter_map(|e| e.launch_template_id.clone())
        .collect();
    for template in &succeeded {
        clean_up_versions(ctx, amr, template, &previous).await;
    }
    Ok((previous, newly_failed))
}

/// The status when no rollout step can follow (pure): `phase` (Invalid, NoEligibleAMI) with `Ready=False` saying why,
/// and `Progressing=False` unless an update is still in flight.
fn not_rolling(
    status: &mut AMIRefresherStatus,
    phase: AMIRefresherPhase,
    reason: &str,
    message: String,
    generation: i64,
    now: Timestamp,
) {
    status.phase = Some(phase);
    condition(status, types::READY, false, reason, message, generation, now);
    let in_flight = status.node_groups.iter().any(|n| n.state == NodeGroupState::InProgress);
    if phase == AMIRefresherPhase::NoEligibleAMI && !in_flight {
        condition(
            status,
            types::PROGRESSING,
            false,
            reason,
            String::new(),
            generation,
            now,
        );
    }
}

/// Writes a rollout step's summary into the status (pure): target, phase, progress, the three conditions, and the
/// node groups left alone because another AMIRefresher claims them.
fn apply_summary(
    status: &mut AMIRefresherStatus,
    summary: &refresh_engine::summary::Summary,
    (target, source): (&str, String),
    conflicts: &[String],
    generation: i64,
    now: Timestamp,
) {
    status.halted_target = summary.halted.then(|| target.to_owned());
    status.target_ami = Some(target.to_owned());
    status.target_ami_source = Some(source);
    status.phase = Some(summary.phase);
    status.progress = Some(summary.progress.clone());
    for (type_, c) in [
        (types::READY, &summary.ready),
        (types::PROGRESSING, &summary.progressing),
        (types::DEGRADED, &summary.degraded),
    ] {
        condition(status, type_, c.status, c.reason, c.message.clone(), generation, now);
    }
    if !conflicts.is_empty() {
        let message = format!("left alone, claimed by another AMIRefresher: {}", conflicts.join(", "));
        condition(
            status,
            types::READY,
            false,
            reasons::NODE_GROUP_CLAIMED,
            message,
            generation,
            now,
        );
    }
}

/// When to look again: soon while updates run, at the end of a canary soak or the opening of a window when groups
/// wait for them, else at the resync.
fn next_look(
    ctx: &Context,
    status: &AMIRefresherStatus,
    summary: &refresh_engine::summary::Summary,
    hold: Option<&refresh_engine::Hold>,
    window: &WindowState,
    now: Timestamp,
) -> Duration {
    if summary.in_flight > 0 {
        poll_delay(ctx, status, now)
    } else if let Some(refresh_engine::Hold::CanarySoak { until }) = hold {
        until.duration_since(now).unsigned_abs().min(ctx.resync) + Duration::from_secs(1)
    } else if let WindowState::Closed { opens_at: Some(t) } = window
        && summary.pending > 0
    {
        t.duration_since(now).unsigned_abs().min(ctx.resync) + Duration::from_secs(1)
    } else {
        ctx.resync
    }
}

/// What one reconcile starts from: the object as the API server has it now, its status before this step, and
/// what polling the tracked updates found.
struct Step<'a> {
    amr: &'a AMIRefresher,
    old: AMIRefresherStatus,
    /// `old` with this step's changes so far.
    status: AMIRefresherStatus,
    /// The tracked entries after polling the updates in flight.
    previous: Vec<NodeGroupStatus>,
    /// Whether a tracked update ended failed in this step.
    newly_failed: bool,
    generation: i64,
    now: Timestamp,
}

/// The AMI a step rolls onto.
struct Chosen {
    ami: String,
    source: String,
    architecture: Option<String>,
}

async fn reconcile_inner(cached: &AMIRefresher, ctx: &Context) -> Result<Action> {
    let api: Api<AMIRefresher> = Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    let Some(amr) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if amr.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let now = controller_runtime::clock::now();
    let generation = amr.metadata.generation.unwrap_or(1);
    let old = amr.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = Some(generation);

    // Poll updates in flight first, whatever the spec or the target now say: an update that ends is reported (and
    // a failure halts) even while the spec is invalid or no AMI is eligible; the observation below then already
    // sees what a finished update changed.
    let (previous, newly_failed) = poll_in_flight(ctx, &amr, &old, now).await?;
    let step = Step {
        amr: &amr,
        old,
        status,
        previous,
        newly_failed,
        generation,
        now,
    };
    let valid = match validate(&amr) {
        Ok(valid) => valid,
        Err(e) => return hold(ctx, step, AMIRefresherPhase::Invalid, e.category(), e.to_string()).await,
    };
    match choose_target(ctx, &amr, &valid.policy, now).await {
        Ok(Choice::Chosen {
            ami,
            source,
            architecture,
        }) => {
            let chosen = Chosen {
                ami,
                source,
                architecture,
            };
            roll(ctx, step, &valid, chosen).await
        }
        Ok(Choice::NoEligible(why)) => {
            hold(
                ctx,
                step,
                AMIRefresherPhase::NoEligibleAMI,
                reasons::NO_ELIGIBLE_AMI,
                why,
            )
            .await
        }
        Err(e @ Error::InvalidSpec(_)) => {
            hold(ctx, step, AMIRefresherPhase::Invalid, e.category(), e.to_string()).await
        }
        Err(e) => Err(e),
    }
}

/// A step with no rollout (invalid spec, no eligible AMI): the tracked entries are kept, a halt against the last
/// target is recorded when one of them failed, and the phase says why nothing rolls.
async fn hold(
    ctx: &Context,
    mut step: Step<'_>,
    phase: AMIRefresherPhase,
    reason: &str,
    why: String,
) -> Result<Action> {
    step.status.node_groups = step.previous;
    if step.newly_failed {
        step.status.halted_target = step.old.target_ami.clone();
    }
    not_rolling(&mut step.status, phase, reason, why, step.generation, step.now);
    report(ctx, step.amr, &step.old, &step.status).await?;
    Ok(Action::requeue(ctx.resync))
}

/// A step towards `chosen`: observe the node groups, plan (pure), start what the plan names, summarise (pure),
/// write status and announce.
async fn roll(ctx: &Context, mut step: Step<'_>, valid: &ValidSpec, chosen: Chosen) -> Result<Action> {
    let (amr, now, generation) = (step.amr, step.now, step.generation);
    let target = chosen.ami;
    let retry = amr.annotations().get(RETRY_ANNOTATION).cloned();
    let mut groups = observe(ctx, amr, &step.previous).await?;
    let conflicts = claim_groups(ctx, amr, &mut groups).await?;
    skip_misfits(
        ctx,
        &amr.spec.region,
        &target,
        chosen.architecture.as_deref(),
        &mut groups,
    )
    .await?;
    let halt = refresh_engine::plan::halt_holds(
        &refresh_engine::plan::HaltRecord::from_status(&step.old, generation),
        &target,
        retry.as_deref(),
    );
    let status = &mut step.status;
    if retry.is_some() && retry != step.old.observed_retry {
        status.retried_at = Some(Time(now));
    }
    status.observed_retry = retry;
    status.failed_generation = None;
    let observed: Vec<Observed> = groups.iter().map(|g| g.observed.clone()).collect();
    let rc = amr.spec.refresh_config.clone().unwrap_or_default();
    let window = window_state(&valid.windows, now);
    let mut p = plan(PlanInputs {
        target: &target,
        observed: &observed,
        previous: &step.previous,
        canary: rc.canary.as_deref(),
        canary_soak: valid.canary_soak,
        parallelism: usize::try_from(rc.parallelism).unwrap_or(1),
        paused: amr.spec.paused,
        dry_run: amr.spec.dry_run,
        window,
        halted: halt || step.newly_failed,
        now,
    });
    let at = When {
        target: &target,
        since: status.retried_at.as_ref().map(|t| t.0),
        now,
    };
    let started = start_groups(ctx, amr, valid, &groups, &mut p, at).await;
    let summary = refresh_engine::summary::summarize(
        &p,
        refresh_engine::summary::StepFacts {
            target: &target,
            halting: halt || step.newly_failed || started.failed,
            canary: rc.canary.as_deref(),
        },
    );
    apply_summary(status, &summary, (&target, chosen.source), &conflicts, generation, now);
    status.node_groups = p.node_groups.clone();
    report(ctx, amr, &step.old, status).await?;
    if let Some(e) = started.transient {
        return Err(e);
    }
    Ok(Action::requeue(next_look(
        ctx,
        status,
        &summary,
        p.hold.as_ref(),
        &window,
        now,
    )))
}

#[cfg(test)]
mod tests {
    use api_types::{ami_refresher::NodeGroupKind, conditions::get_condition};

    use super::*;

    fn now() -> Timestamp {
        "2026-12-01T12:00:00Z".parse().expect("timestamp")
    }

    fn group(state: NodeGroupState) -> NodeGroupStatus {
        NodeGroupStatus::new("ng-a", NodeGroupKind::Managed, state)
    }

    fn shared(id: &str, created: &str) -> ami_tags::Image {
        ami_tags::Image {
            id: id.into(),
            creation_date: Some(created.parse().expect("timestamp")),
            state: Some("available".into()),
            architecture: Some("x86_64".into()),
            ..ami_tags::Image::default()
        }
    }

    fn found<'a>(
        tagged: Vec<ami_tags::Image>,
        shared: Vec<ami_tags::Image>,
        selector: &'a Selector,
        owners: &'a [String],
    ) -> Found<'a> {
        Found {
            tagged,
            shared,
            selector,
            cluster: "opsy",
            owners,
        }
    }

    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

    #[test]
    fn the_newest_eligible_shared_ami_wins_and_an_expired_one_never_does() {
        let selector = Selector::for_cluster("opsy");
        let owners = ["111122223333".to_owned()];
        let candidates = vec![
            shared("ami-old", "2026-11-28T00:00:00Z"),
            shared("ami-new", "2026-11-30T00:00:00Z"),
            shared("ami-expired-newest", "2026-12-01T11:00:00Z"),
        ];
        let mut candidates = candidates;
        candidates[2].deprecation_time = Some("2026-12-01T11:30:00Z".parse().expect("timestamp"));
        let choice =
            found(Vec::new(), candidates, &selector, &owners).newest(&EligibilityPolicy::expiring_after(WEEK), now());
        let Choice::Chosen {
            ami,
            source,
            architecture,
        } = choice
        else {
            panic!("expected a chosen AMI");
        };
        assert_eq!(ami, "ami-new");
        assert_eq!(source, "amiFilters: newest eligible of 3 candidate(s)");
        assert_eq!(architecture.as_deref(), Some("x86_64"));
    }

    #[test]
    fn nothing_found_names_the_cluster_and_owners() {
        let selector = Selector::for_cluster("opsy");
        let owners = ["self".to_owned(), "111122223333".to_owned()];
        let choice =
            found(Vec::new(), Vec::new(), &selector, &owners).newest(&EligibilityPolicy::expiring_after(WEEK), now());
        let Choice::NoEligible(why) = choice else {
            panic!("expected no eligible AMI");
        };
        assert_eq!(
            why,
            "no AMI of cluster opsy matches amiFilters from owners self,111122223333"
        );
    }

    #[test]
    fn only_ineligible_candidates_are_each_explained() {
        let selector = Selector::for_cluster("opsy");
        let owners = ["self".to_owned()];
        // Tagged, but not by this operator for this cluster: a forgery is never chosen, however new.
        let mut forged = shared("ami-forged", "2026-12-01T00:00:00Z");
        forged.tags.insert("cluster-name".into(), "opsy".into());
        let too_old = shared("ami-too-old", "2026-10-01T00:00:00Z");
        let choice = found(vec![forged], vec![too_old], &selector, &owners)
            .newest(&EligibilityPolicy::expiring_after(WEEK), now());
        let Choice::NoEligible(why) = choice else {
            panic!("expected no eligible AMI");
        };
        assert!(why.starts_with("none of 2 candidate AMI(s) is eligible: "), "{why}");
        assert!(why.contains("ami-forged") && why.contains("ami-too-old"), "{why}");
    }

    #[test]
    fn no_eligible_ami_stops_progressing_unless_an_update_is_still_in_flight() {
        let mut idle = AMIRefresherStatus::default();
        not_rolling(
            &mut idle,
            AMIRefresherPhase::NoEligibleAMI,
            reasons::NO_ELIGIBLE_AMI,
            "none".into(),
            1,
            now(),
        );
        assert_eq!(idle.phase, Some(AMIRefresherPhase::NoEligibleAMI));
        let ready = get_condition(&idle.conditions, types::READY).expect("ready");
        assert_eq!((ready.status.as_str(), ready.message.as_str()), ("False", "none"));
        assert_eq!(
            get_condition(&idle.conditions, types::PROGRESSING).map(|c| c.status.as_str()),
            Some("False")
        );

        let mut busy = AMIRefresherStatus {
            node_groups: vec![group(NodeGroupState::InProgress)],
            ..AMIRefresherStatus::default()
        };
        not_rolling(
            &mut busy,
            AMIRefresherPhase::NoEligibleAMI,
            reasons::NO_ELIGIBLE_AMI,
            "none".into(),
            1,
            now(),
        );
        assert!(
            get_condition(&busy.conditions, types::PROGRESSING).is_none(),
            "an update in flight is still progressing"
        );
    }

    #[test]
    fn an_invalid_spec_says_why_in_ready_only() {
        let mut status = AMIRefresherStatus::default();
        not_rolling(
            &mut status,
            AMIRefresherPhase::Invalid,
            "InvalidSpec",
            "spec.expiresIn: bad".into(),
            3,
            now(),
        );
        assert_eq!(status.phase, Some(AMIRefresherPhase::Invalid));
        let ready = get_condition(&status.conditions, types::READY).expect("ready");
        assert_eq!(
            (ready.reason.as_str(), ready.observed_generation),
            ("InvalidSpec", Some(3))
        );
        assert!(get_condition(&status.conditions, types::PROGRESSING).is_none());
    }
}
