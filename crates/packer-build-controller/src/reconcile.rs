//! Reconcile of one PackerBuilder: observe (spec, its Job, AWS) -> decide (pure: `ami_tags::decide_build`,
//! [`crate::decide`]) -> apply (start a Job, tag AMIs) -> report (one status patch, one Event per transition).
//!
//! Order matters for safety: the build ID and Job name are written to status *before* the Job is created, and the
//! Job name is derived from the build ID, so a restart between the two re-creates the same Job (AlreadyExists is
//! accepted) instead of a second one. An AMI is tagged `active` only after the Job succeeded and EC2 reports the
//! AMI `available`.

use controller_runtime::failpoint::failpoint;
use std::{sync::Arc, time::Duration};

use ami_tags::{BuildRecord, Identity, Selector, build_tags, deprecation_tags, newest_base_image};
use api_types::{
    PackerBuilder, PackerBuilderStatus,
    conditions::{get_condition, reasons, types},
    packer_builder::PackerBuilderPhase,
};
use jiff::Timestamp;
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Pod, Secret},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, LogParams, PostParams},
    runtime::{
        controller::Action,
        events::{EventType, Recorder},
    },
};
use packer_job::{
    command::{BaseVars, display, render_steps},
    job::{
        DEFAULT_GIT_SYNC_IMAGE, JobParams, LABEL_BUILD_ID, LABEL_BUILDER, build_job, job_id_for, job_name, label_value,
    },
    outcome::artifacts_in_region,
};

use crate::{
    aws::Aws,
    capabilities::PackerAws,
    decide::{Decision, Durations, validate},
    error::{Error, Result},
};

/// How often a running build is looked at besides Job watch events.
const BUILD_POLL: Duration = Duration::from_secs(30);
/// Requeue after a problem only a spec change or the world fixes.
const USER_ERROR_RETRY: Duration = Duration::from_secs(60);
/// Field manager of status writes.
pub const FIELD_MANAGER: &str = "packer-build-controller";

/// Shared state of the controller.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// AWS, by capability (the SDK in production, in memory in the reconcile-level tests).
    pub aws: Arc<dyn PackerAws>,
    /// Event recorder.
    pub recorder: Recorder,
    /// git-sync image when the spec sets none.
    pub git_sync_image: String,
    /// First retry delay after a failed build.
    pub retry_base: Duration,
    /// Reconcile metrics.
    pub metrics: Arc<controller_runtime::Metrics>,
    /// Where notifications of transitions are queued for delivery.
    pub notifier: controller_runtime::notify::NotificationQueue,
    /// Build Pod settings a PackerBuilder's `builder.pod` does not set.
    pub build_pod_defaults: api_types::packer_builder::BuildPodSpec,
    /// Re-check every PackerBuilder at least this often, whatever its `timeOuts.controllerTimer` (`None`: the
    /// timer alone decides).
    pub resync: Option<Duration>,
    /// Back-off after failed reconciles (AWS throttling, API errors); shared implementation with
    /// ami-refresh-controller.
    pub errors: controller_runtime::backoff::ErrorBackoff,
    /// Running reconciles and watch errors, for `/healthz`.
    pub liveness: controller_runtime::Liveness,
    /// `terminationGracePeriodSeconds` of build pods: Packer's time to clean up after SIGTERM.
    pub build_grace_period: Duration,
    /// The namespaces the controller watches (empty: all); where retention looks for AMIRefreshers.
    pub namespaces: Vec<String>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("git_sync_image", &self.git_sync_image)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context with the default git-sync image and retry delay, notifying through `slack_api` for Slack, to
    /// the webhook URLs `url_policy` and the SNS topics and SES senders `aws_allowlist` allow.
    pub fn new(
        client: Client,
        mut aws: Aws,
        recorder: Recorder,
        slack_api: String,
        (url_policy, aws_allowlist): (notifier::UrlPolicy, notifier::AwsAllowlist),
    ) -> Self {
        let metrics = Arc::new(controller_runtime::Metrics::new(
            "packer_build_controller",
            &[
                ("builds", "Packer builds by result: started, succeeded, failed"),
                (
                    "image_lifecycle",
                    "Image lifecycle actions by result: copy_started, copy_failed, deregistered, kept_in_use",
                ),
            ],
        ));
        aws.count_calls(metrics.clone());
        let notifier =
            controller_runtime::notify::NotificationQueue::start(controller_runtime::notify::ChannelNotifier {
                client: client.clone(),
                http: controller_runtime::notify::http_client(),
                slack_api,
                recorder: recorder.clone(),
                metrics: metrics.clone(),
                sdk: aws.sdk().clone(),
                url_policy,
                aws_allowlist,
            });
        Self {
            client,
            aws: Arc::new(aws),
            recorder,
            git_sync_image: DEFAULT_GIT_SYNC_IMAGE.to_owned(),
            retry_base: crate::decide::RETRY_BASE,
            resync: None,
            build_pod_defaults: Default::default(),
            metrics,
            notifier,
            errors: controller_runtime::backoff::ErrorBackoff::new(Duration::from_secs(5), Duration::from_secs(300)),
            liveness: controller_runtime::Liveness::new(Duration::from_secs(600)),
            build_grace_period: Duration::from_secs(300),
            namespaces: Vec::new(),
        }
    }
}

/// What a step decided to say about the object.
struct Outcome {
    requeue: Duration,
    event: Option<(EventType, &'static str, String)>,
}

fn condition(
    status: &mut PackerBuilderStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: String,
    generation: i64,
    now: Timestamp,
) {
    api_types::conditions::set_bool(&mut status.conditions, type_, value, reason, message, generation, now);
}

/// Reconciles one PackerBuilder and records the reconcile's metrics.
pub async fn reconcile(pb: Arc<PackerBuilder>, ctx: Arc<Context>) -> Result<Action> {
    let _running = ctx.liveness.reconcile_started();
    let started = std::time::Instant::now();
    let (namespace, name) = (pb.namespace().unwrap_or_default(), pb.name_any());
    let result = reconcile_inner(pb, ctx.clone()).await;
    ctx.metrics.observe(
        started.elapsed().as_secs_f64(),
        result.as_ref().err().map(Error::category),
    );
    if result.is_ok() {
        ctx.errors.succeeded(&namespace, &name);
    }
    result
}

async fn reconcile_inner(cached: Arc<PackerBuilder>, ctx: Arc<Context>) -> Result<Action> {
    // Decide on the stored object, not the watch cache: the cache can lag behind this controller's own last status
    // write, and acting on it would repeat a build collection or an announcement. One GET per reconcile.
    let api: Api<PackerBuilder> = Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    let Some(pb) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let pb = &pb;
    let now = controller_runtime::clock::now();
    let generation = pb.metadata.generation.unwrap_or(1);
    let old = pb.status.clone().unwrap_or_default();
    let mut status = old.clone();
    if old.observed_generation.is_some_and(|g| g != generation) {
        // The spec changed: a new chance after maxFailedJobs, and a fresh decision.
        status.failed_job_count = 0;
    }
    status.observed_generation = Some(generation);

    let outcome = match step(pb, &ctx, &mut status, now).await {
        Ok(outcome) => {
            match outcome.event.as_ref().map(|(_, reason, _)| *reason) {
                Some(reasons::BUILD_STARTED) => ctx.metrics.count("builds", "started"),
                Some(reasons::BUILD_SUCCEEDED) => ctx.metrics.count("builds", "succeeded"),
                Some(reasons::BUILD_FAILED | reasons::UNVERIFIED_ARTIFACT) => ctx.metrics.count("builds", "failed"),
                _ => {}
            }
            outcome
        }
        Err(error) if error.is_user_facing() => {
            let message = show_error(&mut status, &error, PackerBuilderPhase::Invalid, generation, now);
            Outcome {
                requeue: USER_ERROR_RETRY,
                event: Some((EventType::Warning, error.category(), message)),
            }
        }
        Err(error) => {
            // The controller's own calls failed (AWS denied or throttled, the API server). Back-off handles the
            // retry; once it persists (or can only be fixed by someone, like access denied), users see it in
            // status and one Warning Event, named by the error's category.
            let failures = ctx
                .errors
                .count(&pb.namespace().unwrap_or_default(), &pb.name_any())
                .saturating_add(1);
            if persistent(&error, failures) {
                let message = show_error(&mut status, &error, PackerBuilderPhase::Degraded, generation, now);
                let hint = Some((EventType::Warning, error.category(), message));
                if let Err(write) = report(pb, &ctx, &old, &status, hint).await {
                    tracing::warn!(%write, "could not record the error in status");
                }
            }
            return Err(error);
        }
    };
    report(pb, &ctx, &old, &status, outcome.event).await?;
    Ok(Action::requeue(
        ctx.resync.map_or(outcome.requeue, |r| r.min(outcome.requeue)),
    ))
}

/// Shows a reconcile error in status: `phase`, `Ready=False` with the error's category as reason and its text
/// as message, and for a degraded controller `Degraded=True` likewise. Returns the message.
fn show_error(
    status: &mut PackerBuilderStatus,
    error: &Error,
    phase: PackerBuilderPhase,
    generation: i64,
    now: Timestamp,
) -> String {
    let message = error.to_string();
    status.phase = Some(phase);
    condition(
        status,
        types::READY,
        false,
        error.category(),
        message.clone(),
        generation,
        now,
    );
    if phase == PackerBuilderPhase::Degraded {
        condition(
            status,
            types::DEGRADED,
            true,
            error.category(),
            message.clone(),
            generation,
            now,
        );
    }
    message
}

/// Consecutive failures after which a transient error is shown in status.
const PERSISTENT_AFTER: u32 = 3;

/// Whether a failed reconcile's error belongs in status: at once when no retry can fix it (access denied, an
/// invalid request), otherwise once it failed [`PERSISTENT_AFTER`] times in a row.
fn persistent(error: &Error, consecutive_failures: u32) -> bool {
    match error {
        Error::Aws(e) if !e.kind.is_retriable() => true,
        _ => consecutive_failures >= PERSISTENT_AFTER,
    }
}

/// What the current state announces: Event type, reason and message, from the condition that explains the phase.
fn announcement(status: &PackerBuilderStatus) -> Option<(EventType, String, String)> {
    let condition = |t: &str| get_condition(&status.conditions, t);
    let (type_, c) = match status.phase? {
        PackerBuilderPhase::Building => (EventType::Normal, condition(types::BUILDING)?),
        PackerBuilderPhase::Ready => (EventType::Normal, condition(types::READY)?),
        PackerBuilderPhase::Distributing => {
            let c = condition(types::READY)?;
            let type_ = if c.reason == reasons::COPY_FAILED {
                EventType::Warning
            } else {
                EventType::Normal
            };
            (type_, c)
        }
        PackerBuilderPhase::Failed | PackerBuilderPhase::Invalid => (EventType::Warning, condition(types::READY)?),
        PackerBuilderPhase::Degraded => (EventType::Warning, condition(types::DEGRADED)?),
        PackerBuilderPhase::Pending => return None,
    };
    Some((type_, c.reason.clone(), c.message.clone()))
}

/// The last announced transition as status records it (`lastNotifiedTransition`): `<phase>/<reason>/<build ID>`.
/// Parsed and written only here.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AnnouncedKey {
    phase: Option<PackerBuilderPhase>,
    reason: String,
    build: String,
}

impl AnnouncedKey {
    fn parse(key: &str) -> Self {
        let mut parts = key.splitn(3, '/');
        let phase = parts
            .next()
            .and_then(|p| serde_json::from_value(serde_json::Value::String(p.to_owned())).ok());
        Self {
            phase,
            reason: parts.next().unwrap_or_default().to_owned(),
            build: parts.next().unwrap_or_default().to_owned(),
        }
    }

    fn render(&self) -> String {
        let phase = self.phase.map(|p| format!("{p:?}")).unwrap_or_default();
        format!("{phase}/{}/{}", self.reason, self.build)
    }
}

/// One transition to announce (Event and notification), with the key status records once it is announced.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Announcement {
    type_: EventType,
    transition: crate::notify::Transition,
    key: AnnouncedKey,
}

/// What to announce after this reconcile (pure), in order: the start of a build an earlier process recorded but
/// never announced (killed between the status write and the Event), then the current state when it differs from the
/// last announced one. `hint` supplies the message when the state's condition has none.
fn announcements(
    old: &PackerBuilderStatus,
    status: &PackerBuilderStatus,
    hint: Option<(EventType, &'static str, String)>,
) -> Vec<Announcement> {
    let last = old.last_notified_transition.as_deref().map(AnnouncedKey::parse);
    let mut out = Vec::new();
    if let Some(build) = old.build_id.as_deref()
        && status.build_id.as_deref() == Some(build)
        && status.phase != Some(PackerBuilderPhase::Building)
        && last.as_ref().is_none_or(|k| k.build != build)
    {
        out.push(Announcement {
            type_: EventType::Normal,
            transition: crate::notify::Transition {
                from: None,
                to: Some(PackerBuilderPhase::Building),
                reason: reasons::BUILD_STARTED.to_owned(),
                message: format!("build {build} started (announced late: the controller restarted during the build)"),
                warning: false,
            },
            key: AnnouncedKey {
                phase: Some(PackerBuilderPhase::Building),
                reason: reasons::BUILD_STARTED.to_owned(),
                build: build.to_owned(),
            },
        });
    }
    let Some((type_, reason, message)) = announcement(status) else {
        return out;
    };
    let key = AnnouncedKey {
        phase: status.phase,
        reason: reason.clone(),
        build: status.build_id.clone().unwrap_or_default(),
    };
    let previous = out.last().map(|a| &a.key).or(last.as_ref());
    if previous == Some(&key) {
        return out;
    }
    let message = if message.is_empty() {
        hint.map(|(_, _, m)| m).unwrap_or_default()
    } else {
        message
    };
    out.push(Announcement {
        type_,
        transition: crate::notify::Transition {
            from: last.and_then(|k| k.phase),
            to: status.phase,
            reason,
            message,
            warning: matches!(type_, EventType::Warning),
        },
        key,
    });
    out
}

/// Records the last transition [`announcements`] names in status (so a restart neither repeats nor skips one),
/// writes the status, then announces each (Event, then notification): the shared reporting path of both
/// controllers, `controller_runtime::report`.
async fn report(
    pb: &PackerBuilder,
    ctx: &Context,
    old: &PackerBuilderStatus,
    status: &PackerBuilderStatus,
    hint: Option<(EventType, &'static str, String)>,
) -> Result<()> {
    let mut status = status.clone();
    let planned = announcements(old, &status, hint);
    if let Some(last) = planned.last() {
        status.last_notified_transition = Some(last.key.render());
    }
    let mut announced = pb.clone();
    announced.status = Some(status.clone());
    let out = planned
        .into_iter()
        .map(|a| controller_runtime::report::Announcement {
            type_: a.type_,
            reason: a.transition.reason.clone(),
            note: a.transition.message.clone(),
            action: "Reconcile",
            related: None,
            notification: Some(crate::notify::model(&announced, &a.transition)),
        })
        .collect();
    let api: Api<PackerBuilder> = Api::namespaced(ctx.client.clone(), &pb.namespace().unwrap_or_default());
    let (object, namespace) = (pb.object_ref(&()), pb.namespace().unwrap_or_default());
    let target = controller_runtime::notify::Target {
        object: &object,
        namespace: &namespace,
        region: &pb.spec.region,
        spec: pb.spec.notifier.as_ref(),
    };
    controller_runtime::report::report(
        (&api, &pb.name_any()),
        (old, &status),
        (&ctx.recorder, &ctx.notifier),
        target,
        out,
    )
    .await?;
    Ok(())
}

async fn step(pb: &PackerBuilder, ctx: &Context, status: &mut PackerBuilderStatus, now: Timestamp) -> Result<Outcome> {
    let durations = validate(&pb.spec).map_err(Error::InvalidSpec)?;
    let ns = pb.namespace().unwrap_or_default();
    check_secrets(pb, ctx, &ns).await?;
    if matches!(status.job_status.as_deref(), Some("pending" | "running"))
        && let Some(name) = status.job_name.clone()
    {
        return follow_job(pb, ctx, status, &ns, &name, &durations, now).await;
    }
    observe_and_act(pb, ctx, status, &ns, &durations, now).await
}

/// Every Secret the spec names must exist; only their existence is read here, never their values.
async fn check_secrets(pb: &PackerBuilder, ctx: &Context, ns: &str) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let named = [
        pb.spec.builder.secret.as_ref(),
        pb.spec.git_sync.as_ref().and_then(|g| g.secret.as_ref()),
    ];
    for name in named.into_iter().flatten() {
        if secrets.get_metadata_opt(name).await?.is_none() {
            return Err(Error::SecretNotFound(name.clone()));
        }
    }
    Ok(())
}

/// The identity tags of `pb`'s AMIs.
pub(crate) fn identity(pb: &PackerBuilder) -> Identity {
    Identity::new(
        &pb.spec.cluster_name,
        pb.name_any(),
        pb.namespace().unwrap_or_default(),
        &pb.spec.builder.repo_url,
        &pb.spec.builder.branch,
    )
}

/// The current base AMI: from the SSM parameter, or the newest image matching the filters; `None` for a
/// self-contained Packer project.
async fn current_base(pb: &PackerBuilder, ctx: &Context) -> Result<Option<String>> {
    let spec = &pb.spec;
    if let Some(parameter) = spec.base_ami.as_ref().and_then(|b| b.ssm_parameter.as_ref()) {
        let value = ctx.aws.ssm_parameter(&spec.region, parameter).await?;
        if !crate::decide::is_ami_id(&value) {
            // Never echo the value: a mistyped parameter name may point at a SecureString or other data.
            return Err(Error::InvalidBaseAmi(format!(
                "SSM parameter {parameter} does not hold an AMI ID (ami- and 8 or 17 hex digits)"
            )));
        }
        return Ok(Some(value));
    }
    if spec.ami_filters.is_empty() {
        return Ok(None);
    }
    let given = spec.base_ami.as_ref().map(|b| b.owners.clone()).unwrap_or_default();
    let owners = crate::decide::base_owners(&spec.ami_filters, &given);
    let images = ctx.aws.base_images(&spec.region, &spec.ami_filters, &owners).await?;
    newest_base_image(&images)
        .map(|i| Some(i.id.clone()))
        .ok_or_else(|| Error::NoBaseAmi(format!("no available image in {} matches spec.amiFilters", spec.region)))
}

/// No build is running: observe the base AMI and this PackerBuilder's AMIs, let the pure
/// [`crate::decide::decide`] choose, and carry out its decision.
async fn observe_and_act(
    pb: &PackerBuilder,
    ctx: &Context,
    status: &mut PackerBuilderStatus,
    ns: &str,
    durations: &Durations,
    now: Timestamp,
) -> Result<Outcome> {
    let generation = pb.metadata.generation.unwrap_or(1);
    let spec = &pb.spec;
    let base = current_base(pb, ctx).await?;
    let identity = identity(pb);
    let mut managed = ctx
        .aws
        .managed_images(&spec.region, &spec.cluster_name, &Selector::for_builder(&identity))
        .await?;
    // The shared answer may predate a build recorded since (by another controller process, whose writes this
    // process's cache does not see): an AMI the status names but the answer lacks means the answer is older than
    // the status. Ask EC2 again before deciding, never build from it.
    if let Some(built) = status.last_run_built_image_id.as_deref()
        && !managed.iter().any(|i| i.id == built)
    {
        ctx.aws.forget_cached(&spec.region);
        managed = ctx
            .aws
            .managed_images(&spec.region, &spec.cluster_name, &Selector::for_builder(&identity))
            .await?;
    }
    let last_failure = get_condition(&status.conditions, types::BUILDING)
        .filter(|_| status.failed_job_count > 0)
        .map(|c| c.last_transition_time.0);
    let build_config = packer_job::command::build_config_hash(&spec.builder);
    let decision = crate::decide::decide(
        crate::decide::Observed {
            images: &managed,
            identity: &identity,
            current_base: base.as_deref(),
            build_config: &build_config,
            failed_job_count: status.failed_job_count,
            max_failed_jobs: spec.max_failed_jobs,
            last_failure,
            retry_base: ctx.retry_base,
        },
        durations,
        now,
    );
    match decision {
        Decision::Keep {
            image,
            add_tags,
            base_unknown,
            recheck,
        } => {
            let kept = Kept {
                image,
                add_tags,
                base_unknown,
                recheck,
            };
            keep(pb, ctx, status, &managed, kept, &identity, durations, now).await
        }
        Decision::Degraded { why: message } => Ok(degraded(status, message, durations, generation, now)),
        Decision::Wait(delay) => Ok(Outcome {
            requeue: delay,
            event: None,
        }),
        Decision::Build { why, debug } => {
            if let Some(job) = live_job(pb, ctx, ns).await? {
                return Ok(follow_found_job(status, &job));
            }
            start_build(pb, ctx, status, ns, durations, base, &why, debug, now).await
        }
    }
}

/// The AMI a check keeps, and what the decision said about it.
struct Kept<'a> {
    image: &'a ami_tags::Image,
    /// Tags it lacks (adoption); empty when fully tagged.
    add_tags: std::collections::BTreeMap<String, String>,
    base_unknown: bool,
    recheck: Duration,
}

/// Keeps the active AMI: completes its tags (adoption), EC2 deprecation at its expiry and SSM publishing, runs its
/// lifecycle (copies, sharing, retention), then records what follows ([`kept_status`]).
#[allow(clippy::too_many_arguments)]
async fn keep(
    pb: &PackerBuilder,
    ctx: &Context,
    status: &mut PackerBuilderStatus,
    managed: &[ami_tags::Image],
    kept: Kept<'_>,
    identity: &Identity,
    durations: &Durations,
    now: Timestamp,
) -> Result<Outcome> {
    let (spec, image) = (&pb.spec, kept.image);
    ctx.aws
        .tag(&spec.region, std::slice::from_ref(&image.id), &kept.add_tags)
        .await?;
    // AMIs kept from before this release (or adopted) get EC2's deprecation time at their expiry too.
    if let Some((created, _)) = ami_tags::created_at(image, now) {
        deprecate_in_ec2_at_expiry(ctx, &spec.region, image, created, durations, now).await?;
    }
    publish(ctx, pb, &image.id).await?;
    // Every AMI of the build the status records, when the kept one is among them; else the kept one alone.
    let active: Vec<ami_tags::Image> = if status.last_run_built_image_ids.contains(&image.id) {
        managed
            .iter()
            .filter(|i| status.last_run_built_image_ids.contains(&i.id))
            .cloned()
            .collect()
    } else {
        vec![image.clone()]
    };
    let stored = pb.status.clone().unwrap_or_default();
    let pass = crate::distribute::Pass {
        ctx,
        pb,
        identity,
        durations,
        now,
    };
    let lifecycle = crate::distribute::converge(&pass, &stored, status, &active).await?;
    let facts = KeptFacts {
        image: &image.id,
        adopted: !kept.add_tags.is_empty(),
        base_unknown: kept.base_unknown,
        recheck: lifecycle.requeue.map_or(kept.recheck, |r| r.min(kept.recheck)),
    };
    Ok(kept_status(
        status,
        &facts,
        &lifecycle,
        pb.metadata.generation.unwrap_or(1),
        now,
    ))
}

/// What [`kept_status`] needs to know about the kept AMI.
struct KeptFacts<'a> {
    image: &'a str,
    adopted: bool,
    base_unknown: bool,
    recheck: Duration,
}

/// The status after a check that keeps an AMI (pure): `Distributing` while copies are missing (`CopyPending`, or
/// `CopyFailed` with the AWS message), else `Ready`: unchanged when the same AMI was already Ready (a periodic re-check
/// writes and announces nothing), otherwise with the reason that says how the AMI came to be (`AMIAdopted`,
/// `AMIAvailable`, `ImagesDistributed`).
fn kept_status(
    status: &mut PackerBuilderStatus,
    facts: &KeptFacts<'_>,
    lifecycle: &crate::distribute::Lifecycle,
    generation: i64,
    now: Timestamp,
) -> Outcome {
    let (image, recheck) = (facts.image, facts.recheck);
    if !lifecycle.incomplete.is_empty() {
        distributing(status, image, lifecycle, generation, now);
        return Outcome {
            requeue: recheck,
            event: None,
        };
    }
    status.phase = Some(PackerBuilderPhase::Ready);
    status.failed_job_count = 0;
    condition(
        status,
        types::DEGRADED,
        false,
        reasons::AS_EXPECTED,
        String::new(),
        generation,
        now,
    );
    // A build that made several AMIs keeps them all; any of them is the same AMI set.
    let ours = status.last_run_built_image_id.as_deref() == Some(image)
        || status.last_run_built_image_ids.iter().any(|i| i == image);
    if !facts.adopted && ours && api_types::conditions::is_condition_true(&status.conditions, types::READY) {
        return Outcome {
            requeue: recheck,
            event: None,
        };
    }
    let (ready_reason, message) = ready_because(status, facts);
    status.last_run_built_image_id = Some(image.to_owned());
    if !status.last_run_built_image_ids.iter().any(|i| i == image) {
        status.last_run_built_image_ids.clear();
    }
    condition(
        status,
        types::READY,
        true,
        ready_reason,
        message.clone(),
        generation,
        now,
    );
    condition(
        status,
        types::BUILDING,
        false,
        reasons::AS_EXPECTED,
        String::new(),
        generation,
        now,
    );
    Outcome {
        requeue: recheck,
        event: Some((EventType::Normal, ready_reason, message)),
    }
}

/// `Distributing` and `Ready=False` while copies are missing: `CopyFailed` with the AWS message, else `CopyPending`.
fn distributing(
    status: &mut PackerBuilderStatus,
    image: &str,
    lifecycle: &crate::distribute::Lifecycle,
    generation: i64,
    now: Timestamp,
) {
    status.phase = Some(PackerBuilderPhase::Distributing);
    status.last_run_built_image_id = Some(image.to_owned());
    let (reason, message) = match &lifecycle.failure {
        Some(failure) => (
            reasons::COPY_FAILED,
            format!("AMI {image} is active; {failure} (retried with back-off)"),
        ),
        None => (
            reasons::COPY_PENDING,
            format!("AMI {image} is active; copying to {}", lifecycle.incomplete.join(", ")),
        ),
    };
    condition(status, types::READY, false, reason, message, generation, now);
}

/// The Ready reason and message of a kept AMI: how it came to be (adopted, built, built and copied).
fn ready_because(status: &PackerBuilderStatus, facts: &KeptFacts<'_>) -> (&'static str, String) {
    let image = facts.image;
    let message = if facts.base_unknown {
        format!("AMI {image} is active and not expired (its base AMI is not recorded)")
    } else {
        format!("AMI {image} is active and not expired")
    };
    let mut regions: Vec<&str> = status.distributed_images.iter().map(|e| e.region.as_str()).collect();
    regions.dedup();
    if facts.adopted {
        (reasons::AMI_ADOPTED, message)
    } else if regions.is_empty() {
        (reasons::AMI_AVAILABLE, message)
    } else {
        (
            reasons::IMAGES_DISTRIBUTED,
            format!("{message}; its copies are available in {}", regions.join(", ")),
        )
    }
}

/// The status once `maxFailedJobs` is reached (pure): `Degraded`, no more builds until the spec changes.
fn degraded(
    status: &mut PackerBuilderStatus,
    message: String,
    durations: &Durations,
    generation: i64,
    now: Timestamp,
) -> Outcome {
    status.phase = Some(PackerBuilderPhase::Degraded);
    let reason = reasons::MAX_FAILED_JOBS_REACHED;
    condition(status, types::DEGRADED, true, reason, message.clone(), generation, now);
    condition(status, types::READY, false, reason, message.clone(), generation, now);
    Outcome {
        requeue: durations.controller_timer,
        event: Some((EventType::Warning, reason, message)),
    }
}

/// A build Job of this PackerBuilder (by label and owner) that has not finished, if any: never start a second
/// build next to it.
async fn live_job(pb: &PackerBuilder, ctx: &Context, ns: &str) -> Result<Option<Job>> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!("{LABEL_BUILDER}={}", label_value(&pb.name_any()));
    let uid = pb.uid();
    let list = jobs.list(&ListParams::default().labels(&selector)).await?;
    Ok(list.items.into_iter().find(|job| {
        let owned = job
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| Some(&o.uid) == uid.as_ref());
        owned && job_finished(job).is_none() && job.metadata.deletion_timestamp.is_none()
    }))
}

/// Records a running build Job that status does not name (its status write was lost, or another controller
/// process started it) and follows it instead of starting another.
fn follow_found_job(status: &mut PackerBuilderStatus, job: &Job) -> Outcome {
    let name = job.name_any();
    let build_id = job.labels().get(LABEL_BUILD_ID).cloned().unwrap_or_default();
    tracing::info!(job = %name, build = %build_id, "a build Job of this PackerBuilder is running; following it");
    status.job_id = Some(job_id_for(&build_id));
    status.build_id = Some(build_id);
    // Unknown for a Job this process did not start: its AMI gets no build-config tag (kept until it expires)
    // rather than the fingerprint of an earlier build.
    status.build_config_hash = None;
    status.job_name = Some(name.clone());
    status.job_status = Some("running".to_owned());
    status.last_run_status = Some("running".to_owned());
    status.last_run_message = Some(format!("following build Job {name}, found running"));
    status.phase = Some(PackerBuilderPhase::Building);
    Outcome {
        requeue: BUILD_POLL,
        event: None,
    }
}

#[allow(clippy::too_many_arguments)]
async fn start_build(
    pb: &PackerBuilder,
    ctx: &Context,
    status: &mut PackerBuilderStatus,
    ns: &str,
    durations: &Durations,
    base: Option<String>,
    why: &str,
    debug: bool,
    now: Timestamp,
) -> Result<Outcome> {
    let generation = pb.metadata.generation.unwrap_or(1);
    let spec = &pb.spec;
    let build_id = uuid::Uuid::new_v4().to_string();
    let job_id = job_id_for(&build_id);
    let name = job_name(&pb.name_any(), &job_id);
    let base_vars = base.as_ref().map(|ami| BaseVars {
        ami_id: ami.clone(),
        region: spec.region.clone(),
    });
    let steps = render_steps(&spec.builder, base_vars.as_ref(), debug);
    let message = format!(
        "building because {why}{}",
        if debug { " (retry with PACKER_LOG=1)" } else { "" }
    );
    status.build_id = Some(build_id.clone());
    status.build_config_hash = Some(packer_job::command::build_config_hash(&spec.builder));
    status.job_id = Some(job_id.clone());
    status.job_name = Some(name.clone());
    // `pending` until the Job exists: a restart in between creates it instead of calling the build lost.
    status.job_status = Some("pending".to_owned());
    status.last_run = Some(api_types::conditions::Time(now));
    status.last_run_base_image_id = base;
    status.last_run_status = Some("running".to_owned());
    status.last_run_message = Some(message.clone());
    status.command = Some(display(&steps));
    status.phase = Some(PackerBuilderPhase::Building);
    condition(
        status,
        types::BUILDING,
        true,
        reasons::BUILD_STARTED,
        message.clone(),
        generation,
        now,
    );

    // Persist the build identity first: a restart after this point re-creates the same Job name. Fields the new
    // build does not have (a base AMI of an earlier build) are removed, so a restart never reads them back.
    let api: Api<PackerBuilder> = Api::namespaced(ctx.client.clone(), ns);
    // Conditional on the version this decision was made on: of two controller processes that both decided to
    // build (two leaders for a moment, a misconfigured second install), only one records a build; the other gets
    // 409 Conflict, retries, and then follows the recorded build.
    let stored = pb.status.clone().unwrap_or_default();
    let version = pb.resource_version();
    controller_runtime::write_status_at(&api, &pb.name_any(), version.as_deref(), &stored, status).await?;
    failpoint("build-recorded");
    create_job(pb, ctx, status, ns, durations, debug).await?;
    failpoint("job-created");
    status.job_status = Some("running".to_owned());
    Ok(Outcome {
        requeue: BUILD_POLL,
        event: Some((
            EventType::Normal,
            reasons::BUILD_STARTED,
            format!("Job {name}: {message}"),
        )),
    })
}

/// Creates the Job of the build recorded in `status` (build ID, job ID, base AMI). Idempotent: the name comes from
/// the build ID, so re-creating after a restart targets the same Job and AlreadyExists means it is there.
async fn create_job(
    pb: &PackerBuilder,
    ctx: &Context,
    status: &PackerBuilderStatus,
    ns: &str,
    durations: &Durations,
    debug: bool,
) -> Result<()> {
    let spec = &pb.spec;
    let build_id = status.build_id.clone().unwrap_or_default();
    let job_id = job_id_for(&build_id);
    let base_vars = status.last_run_base_image_id.as_ref().map(|ami| BaseVars {
        ami_id: ami.clone(),
        region: spec.region.clone(),
    });
    let steps = render_steps(&spec.builder, base_vars.as_ref(), debug);
    let git_sync = spec.git_sync.clone().unwrap_or_default();
    let owner = pb
        .controller_owner_ref(&())
        .ok_or_else(|| Error::InvalidSpec("the PackerBuilder has no uid".into()))?;
    let pod = spec
        .builder
        .pod
        .clone()
        .unwrap_or_default()
        .over(&ctx.build_pod_defaults);
    let job = build_job(&JobParams {
        builder_name: &pb.name_any(),
        namespace: ns,
        owner,
        build_id: &build_id,
        job_id: &job_id,
        steps: &steps,
        builder: &spec.builder,
        git_sync_image: git_sync.image.as_deref().unwrap_or(&ctx.git_sync_image),
        git_sync_name: git_sync.name.as_deref().unwrap_or("git-sync"),
        git_secret: git_sync.secret.as_deref(),
        ttl_seconds: i32::try_from(durations.job_ttl.as_secs()).unwrap_or(i32::MAX),
        deadline_seconds: i64::try_from(durations.build_timeout.as_secs()).unwrap_or(i64::MAX),
        grace_seconds: i64::try_from(ctx.build_grace_period.as_secs()).unwrap_or(i64::MAX),
        pod: &pod,
    })?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match jobs.create(&params, &job).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::info!(job = %job_name(&pb.name_any(), &job_id), "build Job already exists; following it");
            Ok(())
        }
        // Invalid (422), Forbidden (403: quota, admission policy) or a bad request: the same Job would be refused
        // again, so it becomes a condition and an Event instead of a silent retry loop.
        Err(kube::Error::Api(e)) if matches!(e.code, 400 | 403 | 422) => Err(Error::JobRejected(e.message)),
        Err(e) => Err(e.into()),
    }
}

fn job_finished(job: &Job) -> Option<Result<(), String>> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    for c in conditions.iter().filter(|c| c.status == "True") {
        match c.type_.as_str() {
            "Complete" => return Some(Ok(())),
            "Failed" => {
                return Some(Err(c
                    .message
                    .clone()
                    .or_else(|| c.reason.clone())
                    .unwrap_or_else(|| "Job failed".into())));
            }
            _ => {}
        }
    }
    None
}

async fn follow_job(
    pb: &PackerBuilder,
    ctx: &Context,
    status: &mut PackerBuilderStatus,
    ns: &str,
    name: &str,
    durations: &Durations,
    now: Timestamp,
) -> Result<Outcome> {
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let result = match jobs.get_opt(name).await? {
        None if status.job_status.as_deref() == Some("pending") => {
            // The build was written to status but the controller stopped before its Job was created: create it
            // now (same name, so never twice).
            tracing::info!(job = %name, "creating the build Job recorded in status");
            create_job(pb, ctx, status, ns, durations, status.failed_job_count > 0).await?;
            status.job_status = Some("running".to_owned());
            return Ok(Outcome {
                requeue: BUILD_POLL,
                event: None,
            });
        }
        // The Job and its pod are gone (deleted, or collected by `jobTtl` while the controller was down): the build
        // may still have succeeded. Its AMIs carry this build's `build-id` tag when the template sets it.
        None => match recover_by_build_id(pb, ctx, status, durations, now).await {
            Ok(Some(outcome)) => Ok(outcome),
            Ok(None) => Err((
                reasons::BUILD_FAILED,
                format!(
                    "build Job {name} disappeared before its result was read, and no AMI of this account in {} is \
                     tagged build-id={}",
                    pb.spec.region,
                    status.build_id.as_deref().unwrap_or_default()
                ),
            )),
            Err(Collect::BadArtifact(message)) => Err((reasons::BUILD_FAILED, message)),
            Err(Collect::Unverified(message)) => Err((reasons::UNVERIFIED_ARTIFACT, message)),
            Err(Collect::Retry(error)) => return Err(error),
        },
        Some(job) => match job_finished(&job) {
            None => {
                status.phase = Some(PackerBuilderPhase::Building);
                return Ok(Outcome {
                    requeue: BUILD_POLL,
                    event: None,
                });
            }
            Some(Ok(())) => match collect_success(pb, ctx, status, ns, name, durations, now).await {
                Ok(outcome) => Ok(outcome),
                Err(Collect::BadArtifact(message)) => Err((reasons::BUILD_FAILED, message)),
                Err(Collect::Unverified(message)) => Err((reasons::UNVERIFIED_ARTIFACT, message)),
                // The build is good; a call failed after it (throttled CreateTags, a 5xx, the API server). Retry
                // with back-off: never a failed build, never counted toward maxFailedJobs.
                Err(Collect::Retry(error)) => return Err(error),
            },
            Some(Err(message)) => Err((reasons::BUILD_FAILED, format!("build Job {name} failed: {message}"))),
        },
    };
    match result {
        Ok(outcome) => Ok(outcome),
        Err((reason, message)) => Ok(record_failure(
            pb,
            ctx.retry_base,
            status,
            durations,
            reason,
            message,
            now,
        )),
    }
}

/// The AMIs a succeeded Job reported in `region`: the build container's termination message, else its log.
async fn reported_amis(ctx: &Context, ns: &str, job: &str, region: &str) -> Result<Vec<String>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await?;
    for pod in &list.items {
        let terminated = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == "packer-build"))
            .and_then(|c| c.state.as_ref()?.terminated.as_ref());
        let amis = terminated
            .and_then(|t| t.message.as_deref())
            .map(|m| artifacts_in_region(m, region))
            .unwrap_or_default();
        if !amis.is_empty() {
            return Ok(amis);
        }
        let params = LogParams {
            container: Some("packer-build".into()),
            ..LogParams::default()
        };
        if let Ok(log) = pods.logs(&pod.name_any(), &params).await {
            let amis = artifacts_in_region(&log, region);
            if !amis.is_empty() {
                return Ok(amis);
            }
        }
    }
    Ok(Vec::new())
}

/// Why collecting a succeeded build did not finish.
enum Collect {
    /// The artifact is not what a good build leaves behind: a failed build.
    BadArtifact(String),
    /// The reported AMI is not what this build made (another account's, older than the build, failed): a failed
    /// build with reason `UnverifiedArtifact`, and nothing is tagged.
    Unverified(String),
    /// A call failed after a good build (AWS, API server): retry, it is not the build's fault.
    Retry(Error),
}

impl From<Error> for Collect {
    fn from(error: Error) -> Self {
        Self::Retry(error)
    }
}

async fn collect_success(
    pb: &PackerBuilder,
    ctx: &Context,
    status: &mut PackerBuilderStatus,
    ns: &str,
    job: &str,
    durations: &Durations,
    now: Timestamp,
) -> Result<Outcome, Collect> {
    let amis = reported_amis(ctx, ns, job, &pb.spec.region).await?;
    if amis.is_empty() {
        return Err(Collect::BadArtifact(format!(
            "build Job {job} succeeded but reported no AMI in {}",
            pb.spec.region
        )));
    }
    finish_build(pb, ctx, status, amis, durations, now).await
}

/// The build's AMIs found by their `build-id` tag when its Job is gone; `None` when there are none (or the
/// status records no build ID).
async fn recover_by_build_id(
    pb: &PackerBuilder,
    ctx: &Context,
    status: &mut PackerBuilderStatus,
    durations: &Durations,
    now: Timestamp,
) -> Result<Option<Outcome>, Collect> {
    let Some(build_id) = status.build_id.clone().filter(|b| !b.is_empty()) else {
        return Ok(None);
    };
    let found = ctx.aws.images_of_build(&pb.spec.region, &build_id).await?;
    if found.is_empty() {
        return Ok(None);
    }
    let amis: Vec<String> = found.into_iter().map(|i| i.id).collect();
    tracing::info!(%build_id, ?amis, "build Job is gone; recovered its AMIs by their build-id tag");
    finish_build(pb, ctx, status, amis, durations, now).await.map(Some)
}

/// Writes `spec.publish.ssmParameter` when it does not name `ami` yet (the newest active AMI).
async fn publish(ctx: &Context, pb: &PackerBuilder, ami: &str) -> Result<(), Error> {
    if let Some(publish) = &pb.spec.publish
        && ctx
            .aws
            .publish_parameter(&pb.spec.region, &publish.ssm_parameter, ami)
            .await?
    {
        tracing::info!(parameter = %publish.ssm_parameter, %ami, "published the newest AMI");
    }
    Ok(())
}

/// Sets EC2's own deprecation time of an active AMI to its expiry (`expiresIn` after its creation), unless EC2 already
/// has that time or an earlier one.
async fn deprecate_in_ec2_at_expiry(
    ctx: &Context,
    region: &str,
    image: &ami_tags::Image,
    created: Timestamp,
    durations: &Durations,
    now: Timestamp,
) -> Result<(), Error> {
    let expires_at = created.checked_add(durations.expires_in).unwrap_or(Timestamp::MAX);
    let at = crate::decide::ec2_deprecation_time(expires_at, now);
    if crate::decide::needs_ec2_deprecation(image.deprecation_time, at) {
        ctx.aws.deprecate_at(region, &image.id, at).await?;
    }
    Ok(())
}

/// Verifies a finished build's AMIs, tags them as this build's, retires the builder's older AMIs and records the
/// success.
async fn finish_build(
    pb: &PackerBuilder,
    ctx: &Context,
    status: &mut PackerBuilderStatus,
    amis: Vec<String>,
    durations: &Durations,
    now: Timestamp,
) -> Result<Outcome, Collect> {
    let spec = &pb.spec;
    let generation = pb.metadata.generation.unwrap_or(1);
    let build_started = status.last_run.as_ref().map(|t| t.0);
    // Every AMI is verified before any is tagged: one stranger's AMI fails the whole build.
    let mut images = Vec::with_capacity(amis.len());
    for ami in &amis {
        let found = ctx.aws.own_image(&spec.region, ami).await?;
        match crate::decide::check_artifact(ami, found.as_ref(), build_started, status.build_id.as_deref()) {
            crate::decide::Artifact::Verified => images.push(found.unwrap_or_default()),
            crate::decide::Artifact::Pending => {
                // Still being registered: look again shortly, the Job's result is safe in its termination message.
                return Ok(Outcome {
                    requeue: Duration::from_secs(15),
                    event: None,
                });
            }
            crate::decide::Artifact::Unverified(why) => return Err(Collect::Unverified(why)),
        }
    }
    failpoint("build-verified");
    let identity = identity(pb);
    let build_id = status.build_id.clone().unwrap_or_default();
    for image in &images {
        let record = BuildRecord {
            // A second collection of the same build (after a failed call below, or a restart) keeps the first time.
            created_at: ami_tags::first_tagged_at(image, &build_id).unwrap_or(now),
            build_id: build_id.clone(),
            job_id: status.job_id.clone().unwrap_or_default(),
            base_ami: status.last_run_base_image_id.clone(),
            // Recorded when the build started: a spec edit during the build must not relabel this AMI.
            build_config: status.build_config_hash.clone(),
        };
        ctx.aws
            .tag(
                &spec.region,
                std::slice::from_ref(&image.id),
                &build_tags(&identity, &record),
            )
            .await?;
        deprecate_in_ec2_at_expiry(ctx, &spec.region, image, record.created_at, durations, now).await?;
    }
    // EC2 filters by the identity tags it can match exactly; `superseded` applies the full identity (namespace
    // included), so a same-named PackerBuilder in another namespace never loses its AMI.
    let candidates = ctx
        .aws
        .managed_images(&spec.region, &spec.cluster_name, &Selector::for_builder(&identity))
        .await?;
    let older: Vec<String> = ami_tags::superseded(&candidates, &identity, &amis)
        .into_iter()
        .map(str::to_owned)
        .collect();
    ctx.aws.tag(&spec.region, &older, &deprecation_tags()).await?;
    publish(ctx, pb, &amis[0]).await?;
    // Deprecated in EC2 too, from the next minute (EC2 refuses a time in the past), unless it already is earlier.
    let at = crate::decide::ec2_deprecation_time(now, now);
    for id in &older {
        let current = candidates.iter().find(|c| &c.id == id).and_then(|c| c.deprecation_time);
        if crate::decide::needs_ec2_deprecation(current, at) {
            ctx.aws.deprecate_at(&spec.region, id, at).await?;
        }
    }
    failpoint("build-tagged");
    let regions = spec
        .distribution
        .as_ref()
        .map(|d| d.regions.clone())
        .unwrap_or_default();
    Ok(built_status(status, &amis, &regions, durations, generation, now))
}

/// The status after a verified and tagged build (pure): `Ready` with `BuildSucceeded`, or `Distributing` with
/// `CopyPending` when the AMI still has to be copied to `regions` (the next check makes the copies).
fn built_status(
    status: &mut PackerBuilderStatus,
    amis: &[String],
    regions: &[String],
    durations: &Durations,
    generation: i64,
    now: Timestamp,
) -> Outcome {
    let ami = amis[0].clone();
    status.last_run_built_image_ids = if amis.len() > 1 { amis.to_vec() } else { Vec::new() };
    let message = if amis.len() > 1 {
        format!("built and verified AMIs {}", amis.join(", "))
    } else {
        format!("built and verified AMI {ami}")
    };
    status.job_status = Some("completed".to_owned());
    status.last_run_status = Some("succeeded".to_owned());
    status.last_run_built_image_id = Some(ami);
    status.last_run_message = Some(message.clone());
    status.failed_job_count = 0;
    status.phase = Some(PackerBuilderPhase::Ready);
    let succeeded = reasons::BUILD_SUCCEEDED;
    condition(status, types::READY, true, succeeded, message.clone(), generation, now);
    condition(
        status,
        types::BUILDING,
        false,
        succeeded,
        message.clone(),
        generation,
        now,
    );
    condition(
        status,
        types::DEGRADED,
        false,
        reasons::AS_EXPECTED,
        String::new(),
        generation,
        now,
    );
    let event = Some((EventType::Normal, succeeded, message.clone()));
    if !regions.is_empty() {
        // Copies come next, from the check of the active AMI (restart-safe there): Ready once they are available.
        status.phase = Some(PackerBuilderPhase::Distributing);
        let pending = format!("{message}; copying to {}", regions.join(", "));
        condition(
            status,
            types::READY,
            false,
            reasons::COPY_PENDING,
            pending,
            generation,
            now,
        );
        return Outcome {
            requeue: Duration::from_secs(1),
            event,
        };
    }
    Outcome {
        // The new AMI expires `expiresIn` from now: decide again then at the latest.
        requeue: crate::decide::recheck_after(
            now.checked_add(durations.expires_in).unwrap_or(Timestamp::MAX),
            durations.controller_timer,
            now,
        ),
        event,
    }
}

fn record_failure(
    pb: &PackerBuilder,
    retry_base: Duration,
    status: &mut PackerBuilderStatus,
    durations: &Durations,
    reason: &'static str,
    message: String,
    now: Timestamp,
) -> Outcome {
    let generation = pb.metadata.generation.unwrap_or(1);
    status.failed_job_count += 1;
    status.job_status = Some("failed".to_owned());
    status.last_run_status = Some("failed".to_owned());
    status.last_run_message = Some(message.clone());
    condition(status, types::BUILDING, false, reason, message.clone(), generation, now);
    let degraded = status.failed_job_count >= pb.spec.max_failed_jobs;
    if degraded {
        let text = format!(
            "{message}; {} failed builds reached maxFailedJobs",
            status.failed_job_count
        );
        status.phase = Some(PackerBuilderPhase::Degraded);
        condition(
            status,
            types::DEGRADED,
            true,
            reasons::MAX_FAILED_JOBS_REACHED,
            text.clone(),
            generation,
            now,
        );
        condition(
            status,
            types::READY,
            false,
            reasons::MAX_FAILED_JOBS_REACHED,
            text.clone(),
            generation,
            now,
        );
        return Outcome {
            requeue: durations.controller_timer,
            event: Some((EventType::Warning, reasons::MAX_FAILED_JOBS_REACHED, text)),
        };
    }
    status.phase = Some(PackerBuilderPhase::Failed);
    condition(status, types::READY, false, reason, message.clone(), generation, now);
    Outcome {
        requeue: crate::decide::retry_backoff(retry_base, status.failed_job_count),
        event: Some((EventType::Warning, reason, message)),
    }
}

#[cfg(test)]
mod tests {
    use controller_runtime::aws::{AwsError, AwsErrorKind};

    use super::*;

    fn aws(kind: AwsErrorKind) -> Error {
        Error::Aws(AwsError {
            operation: "DescribeImages",
            code: Some("Code".into()),
            message: "message".into(),
            kind,
        })
    }

    fn now() -> Timestamp {
        "2026-12-01T12:00:00Z".parse().expect("timestamp")
    }

    fn facts(image: &str, adopted: bool) -> KeptFacts<'_> {
        KeptFacts {
            image,
            adopted,
            base_unknown: false,
            recheck: Duration::from_secs(3600),
        }
    }

    fn lifecycle(incomplete: &[&str], failure: Option<&str>) -> crate::distribute::Lifecycle {
        crate::distribute::Lifecycle {
            incomplete: incomplete.iter().map(|s| (*s).to_owned()).collect(),
            failure: failure.map(str::to_owned),
            requeue: None,
        }
    }

    fn ready(status: &PackerBuilderStatus) -> (String, String, String) {
        let c = get_condition(&status.conditions, types::READY).expect("ready");
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    fn building(build: &str) -> PackerBuilderStatus {
        let mut status = PackerBuilderStatus {
            phase: Some(PackerBuilderPhase::Building),
            build_id: Some(build.into()),
            ..PackerBuilderStatus::default()
        };
        condition(
            &mut status,
            types::BUILDING,
            true,
            reasons::BUILD_STARTED,
            format!("build {build}"),
            1,
            now(),
        );
        status
    }

    fn built(build: &str) -> PackerBuilderStatus {
        let mut status = building(build);
        kept_status(&mut status, &facts("ami-1", false), &lifecycle(&[], None), 1, now());
        status
    }

    #[test]
    fn a_new_state_is_announced_once_with_the_phase_it_came_from() {
        let mut old = building("b1");
        old.last_notified_transition = Some(format!("Building/{}/b1", reasons::BUILD_STARTED));
        let new = built("b1");
        let out = announcements(&old, &new, None);
        assert_eq!(out.len(), 1, "{out:?}");
        let t = &out[0].transition;
        assert_eq!(
            (t.from, t.to),
            (Some(PackerBuilderPhase::Building), Some(PackerBuilderPhase::Ready))
        );
        assert_eq!(t.reason, reasons::AMI_AVAILABLE);
        assert_eq!(out[0].key.render(), format!("Ready/{}/b1", reasons::AMI_AVAILABLE));
        // Once recorded, the same state announces nothing again.
        let mut recorded = new.clone();
        recorded.last_notified_transition = Some(out[0].key.render());
        assert!(announcements(&recorded, &recorded, None).is_empty());
    }

    #[test]
    fn a_build_recorded_but_never_announced_is_announced_late_before_its_end() {
        // The last process recorded build b2 and was killed before announcing it; b1 was the last announced.
        let mut old = building("b2");
        old.last_notified_transition = Some(format!("Ready/{}/b1", reasons::AMI_AVAILABLE));
        let out = announcements(&old, &built("b2"), None);
        let reasons: Vec<&str> = out.iter().map(|a| a.transition.reason.as_str()).collect();
        assert_eq!(reasons, [reasons::BUILD_STARTED, reasons::AMI_AVAILABLE]);
        assert!(out[0].transition.message.contains("announced late"));
        assert_eq!(out[1].key.build, "b2");
    }

    #[test]
    fn a_state_without_a_message_takes_the_hint_and_a_pending_one_announces_nothing() {
        let mut old = PackerBuilderStatus::default();
        let mut status = PackerBuilderStatus {
            phase: Some(PackerBuilderPhase::Failed),
            ..PackerBuilderStatus::default()
        };
        condition(
            &mut status,
            types::READY,
            false,
            reasons::BUILD_FAILED,
            String::new(),
            1,
            now(),
        );
        let hint = Some((EventType::Warning, reasons::BUILD_FAILED, "packer exited 1".to_owned()));
        let out = announcements(&old, &status, hint);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].transition.message, "packer exited 1");
        assert!(out[0].transition.warning);
        old.phase = Some(PackerBuilderPhase::Pending);
        assert!(announcements(&old, &old, None).is_empty());
    }

    #[test]
    fn the_announced_key_round_trips_and_tolerates_an_unknown_phase() {
        let key = AnnouncedKey::parse("Distributing/CopyFailed/b-1/x");
        assert_eq!(key.phase, Some(PackerBuilderPhase::Distributing));
        assert_eq!((key.reason.as_str(), key.build.as_str()), ("CopyFailed", "b-1/x"));
        assert_eq!(key.render(), "Distributing/CopyFailed/b-1/x");
        assert_eq!(AnnouncedKey::parse("Gone/X/b").phase, None);
    }

    #[test]
    fn a_recheck_of_the_same_ready_ami_writes_nothing_and_announces_nothing() {
        let mut status = PackerBuilderStatus::default();
        let first = kept_status(&mut status, &facts("ami-1", false), &lifecycle(&[], None), 1, now());
        assert_eq!(first.event.as_ref().map(|e| e.1), Some(reasons::AMI_AVAILABLE));
        let before = status.clone();
        let again = kept_status(&mut status, &facts("ami-1", false), &lifecycle(&[], None), 1, now());
        assert!(again.event.is_none());
        assert_eq!(status, before, "nothing to write");
    }

    #[test]
    fn copies_in_progress_or_failed_keep_it_distributing_and_not_ready() {
        let mut status = PackerBuilderStatus::default();
        let out = kept_status(
            &mut status,
            &facts("ami-1", false),
            &lifecycle(&["eu-west-1 (copying)"], None),
            1,
            now(),
        );
        assert!(out.event.is_none(), "announced from the phase, not here");
        assert_eq!(status.phase, Some(PackerBuilderPhase::Distributing));
        let (value, reason, message) = ready(&status);
        assert_eq!((value.as_str(), reason.as_str()), ("False", reasons::COPY_PENDING));
        assert!(message.contains("eu-west-1 (copying)"), "{message}");
        kept_status(
            &mut status,
            &facts("ami-1", false),
            &lifecycle(
                &["eu-west-1 (failed)"],
                Some("copy of ami-1 to eu-west-1: KMS key not usable"),
            ),
            1,
            now(),
        );
        let (value, reason, message) = ready(&status);
        assert_eq!((value.as_str(), reason.as_str()), ("False", reasons::COPY_FAILED));
        assert!(message.contains("KMS key not usable"), "{message}");
    }

    #[test]
    fn complete_distribution_is_ready_naming_the_copy_regions() {
        let mut status = PackerBuilderStatus {
            distributed_images: ["eu-west-1", "us-east-1"]
                .map(|r| api_types::packer_builder::DistributedImage {
                    region: r.into(),
                    state: "available".into(),
                    ..Default::default()
                })
                .to_vec(),
            ..PackerBuilderStatus::default()
        };
        let out = kept_status(&mut status, &facts("ami-1", false), &lifecycle(&[], None), 1, now());
        assert_eq!(status.phase, Some(PackerBuilderPhase::Ready));
        let (value, reason, message) = ready(&status);
        assert_eq!((value.as_str(), reason.as_str()), ("True", reasons::IMAGES_DISTRIBUTED));
        assert!(message.ends_with("available in eu-west-1, us-east-1"), "{message}");
        assert_eq!(out.event.map(|e| e.1), Some(reasons::IMAGES_DISTRIBUTED));
    }

    #[test]
    fn an_adopted_ami_is_announced_even_when_already_ready() {
        let mut status = PackerBuilderStatus::default();
        kept_status(&mut status, &facts("ami-1", false), &lifecycle(&[], None), 1, now());
        let out = kept_status(&mut status, &facts("ami-1", true), &lifecycle(&[], None), 1, now());
        assert_eq!(out.event.map(|e| e.1), Some(reasons::AMI_ADOPTED));
        assert_eq!(ready(&status).1, reasons::AMI_ADOPTED);
    }

    fn durations() -> Durations {
        crate::decide::validate(
            &serde_json::from_value(serde_json::json!({
                "clusterName": "c", "region": "us-west-2",
                "builder": {"repoURL": "https://git.example/p.git", "image": "packer"}
            }))
            .expect("spec"),
        )
        .expect("durations")
    }

    #[test]
    fn a_build_is_ready_at_once_without_copies_and_distributing_with_them() {
        let amis = ["ami-1".to_owned(), "ami-2".to_owned()];
        let mut status = PackerBuilderStatus::default();
        let out = built_status(&mut status, &amis, &[], &durations(), 1, now());
        assert_eq!(status.phase, Some(PackerBuilderPhase::Ready));
        assert_eq!(ready(&status).1, reasons::BUILD_SUCCEEDED);
        assert_eq!(status.last_run_built_image_id.as_deref(), Some("ami-1"));
        assert_eq!(
            status.last_run_built_image_ids, amis,
            "every AMI of a multi-source build"
        );
        assert_eq!(out.event.as_ref().map(|e| e.1), Some(reasons::BUILD_SUCCEEDED));

        let mut status = PackerBuilderStatus::default();
        let out = built_status(&mut status, &amis[..1], &["eu-west-1".into()], &durations(), 1, now());
        assert_eq!(status.phase, Some(PackerBuilderPhase::Distributing));
        let (value, reason, message) = ready(&status);
        assert_eq!((value.as_str(), reason.as_str()), ("False", reasons::COPY_PENDING));
        assert!(message.ends_with("copying to eu-west-1"), "{message}");
        assert!(status.last_run_built_image_ids.is_empty());
        assert_eq!(out.requeue, Duration::from_secs(1), "the copies start at once");
        assert_eq!(
            out.event.map(|e| e.1),
            Some(reasons::BUILD_SUCCEEDED),
            "counted as a succeeded build"
        );
    }

    #[test]
    fn max_failed_jobs_degrades_with_a_warning_until_the_timer() {
        let mut status = PackerBuilderStatus::default();
        let durations = durations();
        let out = degraded(&mut status, "3 failed builds".into(), &durations, 1, now());
        assert_eq!(status.phase, Some(PackerBuilderPhase::Degraded));
        assert_eq!(ready(&status).1, reasons::MAX_FAILED_JOBS_REACHED);
        assert!(matches!(
            out.event,
            Some((EventType::Warning, reasons::MAX_FAILED_JOBS_REACHED, _))
        ));
        assert_eq!(out.requeue, durations.controller_timer);
    }

    #[test]
    fn errors_no_retry_can_fix_are_shown_at_once_others_once_they_persist() {
        for kind in [AwsErrorKind::Denied, AwsErrorKind::Invalid, AwsErrorKind::Other] {
            assert!(persistent(&aws(kind), 1), "{kind:?}");
        }
        for kind in [AwsErrorKind::Throttled, AwsErrorKind::Transient, AwsErrorKind::Conflict] {
            assert!(!persistent(&aws(kind), PERSISTENT_AFTER - 1), "{kind:?}");
            assert!(persistent(&aws(kind), PERSISTENT_AFTER), "{kind:?}");
        }
        let api = Error::InvalidSpec("x".into());
        assert!(!persistent(&api, 1));
        assert!(persistent(&api, PERSISTENT_AFTER));
    }
}
