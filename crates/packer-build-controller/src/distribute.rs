//! The image lifecycle after a build, carried out on every check of an active AMI: copies in
//! `distribution.regions`, launch permissions, EC2 deprecation and SSM publishing in every region, and retention.
//! Decisions are the pure functions of [`crate::lifecycle`]; this module observes and executes.
//!
//! Restart safety: a copy is made by CopyImage with a ClientToken derived from build, source, region and attempt, and
//! carries its tags from the call itself (TagSpecifications), so a copy made just before a crash is found by its
//! `source-image` tag and never made twice. Snapshots of an AMI about to be deregistered are written to
//! `status.retention.pendingSnapshots` first, so a crash between DeregisterImage and DeleteSnapshot is finished on the
//! next pass. Launch permissions are converged (read, then add and remove the difference), so a lost call is redone.

use std::{collections::BTreeMap, time::Duration};

use ami_tags::{Identity, Image, Selector, deprecation_tags, keys};
use api_types::{
    AMIRefresher, PackerBuilder, PackerBuilderStatus,
    conditions::reasons,
    packer_builder::{DistributedImage, RetainedImage, RetentionStatus},
};
use controller_runtime::failpoint::failpoint;
use jiff::Timestamp;
use kube::{Api, Resource, ResourceExt, api::ListParams, runtime::events::EventType};

use crate::{
    aws::CopyRequest,
    decide::Durations,
    error::{Error, Result},
    lifecycle::{self, CopyStep, RetentionPolicy, state},
    reconcile::Context,
};

/// How often a copy in progress is looked at.
const COPY_POLL: Duration = Duration::from_secs(15);

/// What the lifecycle pass found.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// Copies not available yet, as `region (state)` for the message; empty when distribution is complete.
    pub incomplete: Vec<String>,
    /// The last copy failure seen (AWS message), when one is waiting for its retry.
    pub failure: Option<String>,
    /// Look again after this long (copies in progress, a retry due).
    pub requeue: Option<Duration>,
}

impl Lifecycle {
    fn wake(&mut self, after: Duration) {
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }
}

/// What every step of one lifecycle pass needs.
pub struct Pass<'a> {
    /// Controller state.
    pub ctx: &'a Context,
    /// The PackerBuilder.
    pub pb: &'a PackerBuilder,
    /// Its identity tags.
    pub identity: &'a Identity,
    /// Its parsed durations.
    pub durations: &'a Durations,
    /// The clock.
    pub now: Timestamp,
}

/// Runs the lifecycle of the active AMIs `active` (in `spec.region`, with their tags): shares them, makes and
/// finishes their copies, retires and publishes per region, then applies retention. `old` is the status stored in
/// the API server, `status` the one being built.
pub async fn converge(
    pass: &Pass<'_>,
    old: &PackerBuilderStatus,
    status: &mut PackerBuilderStatus,
    active: &[Image],
) -> Result<Lifecycle> {
    let (ctx, spec) = (pass.ctx, &pass.pb.spec);
    let mut out = Lifecycle::default();
    for image in active {
        share(ctx, pass.pb, &spec.region, image).await?;
    }
    // Active AMI IDs per region, for retention.
    let mut protected: BTreeMap<String, Vec<String>> =
        BTreeMap::from([(spec.region.clone(), active.iter().map(|i| i.id.clone()).collect())]);
    let mut entries = Vec::new();
    let regions = spec
        .distribution
        .as_ref()
        .map(|d| d.regions.clone())
        .unwrap_or_default();
    for region in &regions {
        let previous: Vec<DistributedImage> = status
            .distributed_images
            .iter()
            .filter(|e| &e.region == region)
            .cloned()
            .collect();
        let (region_entries, copies) = distribute_region(pass, region, active, &previous, &mut out).await?;
        entries.extend(region_entries);
        protected.insert(region.clone(), copies);
    }
    status.distributed_images = entries;
    if let Some(retention) = &spec.retention {
        retain(pass, old, status, &protected, retention).await?;
    } else {
        status.retention = None;
    }
    Ok(out)
}

/// One distribution region: the copy of each active AMI (made, waited for, finished or retried), then, once all are
/// available, the region's older AMIs retired and the SSM parameter written. Returns the status entries and the
/// available copies.
async fn distribute_region(
    pass: &Pass<'_>,
    region: &str,
    active: &[Image],
    previous: &[DistributedImage],
    out: &mut Lifecycle,
) -> Result<(Vec<DistributedImage>, Vec<String>)> {
    let (ctx, spec) = (pass.ctx, &pass.pb.spec);
    let selector = Selector::for_builder(pass.identity);
    let mut in_region = ctx.aws.managed_images(region, &spec.cluster_name, &selector).await?;
    // A copy status names that the shared answer lacks means the answer predates it: ask EC2 again.
    let known = |images: &[Image]| {
        previous
            .iter()
            .filter(|e| e.state != state::FAILED)
            .filter_map(|e| e.image_id.as_ref())
            .all(|id| images.iter().any(|i| &i.id == id))
    };
    if !known(&in_region) {
        ctx.aws.forget_cached(region);
        in_region = ctx.aws.managed_images(region, &spec.cluster_name, &selector).await?;
    }
    let mut entries = Vec::new();
    let mut copies = Vec::new();
    for source in active {
        let tag = lifecycle::source_tag(&spec.region, &source.id);
        let found: Vec<&Image> = in_region
            .iter()
            .filter(|i| i.tag(keys::SOURCE_IMAGE) == Some(tag.as_str()))
            .collect();
        let before = previous.iter().find(|e| e.source_image_id == source.id);
        let mut entry = before.cloned().unwrap_or_else(|| DistributedImage {
            region: region.to_owned(),
            source_image_id: source.id.clone(),
            ..DistributedImage::default()
        });
        let step = lifecycle::copy_step(&found, before, ctx.retry_base, pass.now);
        if let Some(copy) = copy_once(pass, region, source, &tag, &found, step, &mut entry, out).await? {
            copies.push(copy);
        }
        if entry.state != state::AVAILABLE {
            out.incomplete.push(format!("{region} ({})", entry.state));
        }
        entries.push(entry);
    }
    // Once this build's copies are available in the region, the region's older active copies are retired.
    if copies.len() == active.len() {
        retire(ctx, region, &in_region, pass.identity, &copies, pass.now).await?;
        if let (Some(publish), Some(first)) = (&spec.publish, copies.first())
            && ctx.aws.publish_parameter(region, &publish.ssm_parameter, first).await?
        {
            tracing::info!(parameter = %publish.ssm_parameter, %region, ami = %first, "published the newest AMI");
        }
    }
    Ok((entries, copies))
}

/// Carries out one copy step, updating its status entry; returns the copy when it is available.
#[allow(clippy::too_many_arguments)]
async fn copy_once(
    pass: &Pass<'_>,
    region: &str,
    source: &Image,
    tag: &str,
    found: &[&Image],
    step: CopyStep,
    entry: &mut DistributedImage,
    out: &mut Lifecycle,
) -> Result<Option<String>> {
    let ctx = pass.ctx;
    let distribution = pass.pb.spec.distribution.clone().unwrap_or_default();
    match step {
        CopyStep::Copy { failures } => {
            let mut tags = source.tags.clone();
            tags.insert(keys::SOURCE_IMAGE.to_owned(), tag.to_owned());
            let build_id = source.tag(keys::BUILD_ID).unwrap_or_default();
            let token = lifecycle::copy_token(build_id, &source.id, region, failures);
            let name = source.name.clone().unwrap_or_else(|| source.id.clone());
            let request = CopyRequest {
                source_id: &source.id,
                source_region: &pass.pb.spec.region,
                name: &name,
                description: source.description.as_deref(),
                encrypted: distribution.encrypted,
                kms_key_id: distribution.kms_key_ids.get(region).map(String::as_str),
                client_token: &token,
                tags: &tags,
            };
            match ctx.aws.copy_image(region, &request).await {
                Ok(id) => {
                    ctx.metrics.count("image_lifecycle", "copy_started");
                    tracing::info!(source = %source.id, %region, copy = %id, "copying the AMI");
                    failpoint("copy-started");
                    entry.image_id = Some(id);
                    entry.state = state::COPYING.to_owned();
                    out.wake(COPY_POLL);
                }
                // Throttling and 5xx are the reconcile's back-off to retry, not a failed copy.
                Err(Error::Aws(e)) if !e.kind.is_retriable() => {
                    let message = format!("copy of {} to {region}: {e}", source.id);
                    tracing::warn!(%message, "copy failed; retried with back-off");
                    record_copy_failure(entry, &message, pass.now, out, ctx, failures);
                }
                Err(other) => return Err(other),
            }
        }
        CopyStep::Wait { image_id } => {
            // The next look must ask EC2, not the shared answer that showed it pending.
            ctx.aws.forget_cached(region);
            entry.image_id = Some(image_id);
            entry.state = state::COPYING.to_owned();
            out.wake(COPY_POLL);
        }
        CopyStep::Failed { image_id, why } => {
            ctx.aws.deregister(region, &image_id).await?;
            let message = format!("copy of {} to {region}: {why}", source.id);
            let failures = entry.failures;
            record_copy_failure(entry, &message, pass.now, out, ctx, failures);
        }
        CopyStep::Backoff { at } => {
            out.failure = entry.message.clone();
            let wait = Duration::try_from(at.duration_since(pass.now)).unwrap_or(Duration::ZERO);
            out.wake(wait.max(Duration::from_secs(1)));
        }
        CopyStep::Available { image_id } => {
            let copy = found
                .iter()
                .find(|i| i.id == image_id)
                .copied()
                .cloned()
                .unwrap_or_default();
            finish_copy(pass, region, source, &copy, tag).await?;
            entry.image_id = Some(image_id.clone());
            entry.state = state::AVAILABLE.to_owned();
            entry.message = None;
            return Ok(Some(image_id));
        }
    }
    Ok(None)
}

fn record_copy_failure(
    entry: &mut DistributedImage,
    message: &str,
    now: Timestamp,
    out: &mut Lifecycle,
    ctx: &Context,
    failures_before: i32,
) {
    ctx.metrics.count("image_lifecycle", "copy_failed");
    entry.state = state::FAILED.to_owned();
    entry.image_id = None;
    entry.message = Some(message.to_owned());
    entry.failures = failures_before + 1;
    entry.failed_at = Some(api_types::conditions::Time(now));
    out.failure = Some(message.to_owned());
    out.wake(crate::decide::retry_backoff(ctx.retry_base, entry.failures));
}

/// An available copy: tags as the source's (its status may have changed since the copy), EC2 deprecation at its
/// expiry, launch permissions.
async fn finish_copy(pass: &Pass<'_>, region: &str, source: &Image, copy: &Image, source_tag: &str) -> Result<()> {
    let ctx = pass.ctx;
    let mut wanted = source.tags.clone();
    wanted.insert(keys::SOURCE_IMAGE.to_owned(), source_tag.to_owned());
    let missing: BTreeMap<String, String> = wanted
        .into_iter()
        .filter(|(k, v)| copy.tags.get(k) != Some(v))
        .collect();
    ctx.aws.tag(region, std::slice::from_ref(&copy.id), &missing).await?;
    if let Some((created, _)) = ami_tags::created_at(source, pass.now) {
        let expires_at = created.checked_add(pass.durations.expires_in).unwrap_or(Timestamp::MAX);
        let at = crate::decide::ec2_deprecation_time(expires_at, pass.now);
        if crate::decide::needs_ec2_deprecation(copy.deprecation_time, at) {
            ctx.aws.deprecate_at(region, &copy.id, at).await?;
        }
    }
    share(ctx, pass.pb, region, copy).await
}

/// Tags the other active AMIs of this PackerBuilder in `region` deprecated and sets EC2's deprecation time.
async fn retire(
    ctx: &Context,
    region: &str,
    images: &[Image],
    identity: &Identity,
    current: &[String],
    now: Timestamp,
) -> Result<()> {
    let older: Vec<String> = ami_tags::superseded(images, identity, current)
        .into_iter()
        .map(str::to_owned)
        .collect();
    ctx.aws.tag(region, &older, &deprecation_tags()).await?;
    let at = crate::decide::ec2_deprecation_time(now, now);
    for id in &older {
        let current = images.iter().find(|i| &i.id == id).and_then(|i| i.deprecation_time);
        if crate::decide::needs_ec2_deprecation(current, at) {
            ctx.aws.deprecate_at(region, id, at).await?;
        }
    }
    Ok(())
}

/// Gives `image` exactly the launch permissions of the spec (and its snapshots the accounts, when asked). Nothing is
/// changed when the spec names no launch permissions.
async fn share(ctx: &Context, pb: &PackerBuilder, region: &str, image: &Image) -> Result<()> {
    let Some(wanted) = pb
        .spec
        .distribution
        .as_ref()
        .and_then(|d| d.launch_permissions.as_ref())
    else {
        return Ok(());
    };
    let current = ctx.aws.launch_permissions(region, &image.id).await?;
    let (add, remove) = lifecycle::permission_change(&current, wanted);
    if !add.is_empty() || !remove.is_empty() {
        tracing::info!(ami = %image.id, %region, ?add, ?remove, "changing launch permissions");
        ctx.aws
            .modify_launch_permissions(region, &image.id, &add, &remove)
            .await?;
    }
    let accounts: &[String] = if wanted.share_snapshots {
        &wanted.account_ids
    } else {
        &[]
    };
    for snapshot in &image.snapshot_ids {
        let current = ctx.aws.snapshot_accounts(region, snapshot).await?;
        let (add, remove) = lifecycle::account_change(&current, accounts);
        ctx.aws
            .modify_snapshot_accounts(region, snapshot, &add, &remove)
            .await?;
    }
    Ok(())
}

/// AMIs named by AMIRefreshers (target and current AMIs of their node groups), per region: `(region, AMI, who)`. A
/// cluster without the AMIRefresher kind has none.
async fn refresher_usage(ctx: &Context) -> Result<Vec<(String, String, String)>> {
    let scopes: Vec<Api<AMIRefresher>> = if ctx.namespaces.is_empty() {
        vec![Api::all(ctx.client.clone())]
    } else {
        ctx.namespaces
            .iter()
            .map(|ns| Api::namespaced(ctx.client.clone(), ns))
            .collect()
    };
    let mut used = Vec::new();
    for api in scopes {
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(e.into()),
        };
        for amr in &list.items {
            let who = format!(
                "AMIRefresher {}/{}",
                amr.namespace().unwrap_or_default(),
                amr.name_any()
            );
            let Some(status) = &amr.status else { continue };
            let named = status.target_ami.iter().chain(
                status
                    .node_groups
                    .iter()
                    .flat_map(|n| n.current_ami.iter().chain(n.target_ami.iter())),
            );
            for ami in named {
                used.push((amr.spec.region.clone(), ami.clone(), who.clone()));
            }
        }
    }
    Ok(used)
}

/// Deregisters what `retention` lets go in every region (never what is active or in use), deleting snapshots through
/// the `pendingSnapshots` journal.
async fn retain(
    pass: &Pass<'_>,
    old: &PackerBuilderStatus,
    status: &mut PackerBuilderStatus,
    protected: &BTreeMap<String, Vec<String>>,
    retention: &api_types::packer_builder::RetentionSpec,
) -> Result<()> {
    let ctx = pass.ctx;
    let previous = status.retention.clone().unwrap_or_default();
    replay_pending(ctx, &previous.pending_snapshots).await?;
    let mut next = RetentionStatus::default();
    // Anything status names stays too (an AMI a moment ago active, a copy in progress).
    let mut named: Vec<String> = status.last_run_built_image_id.iter().cloned().collect();
    named.extend(status.last_run_built_image_ids.iter().cloned());
    named.extend(status.distributed_images.iter().filter_map(|e| e.image_id.clone()));
    let mut refreshers: Option<Vec<(String, String, String)>> = None;
    for (region, active) in protected {
        let mut keep = active.clone();
        keep.extend(named.iter().cloned());
        let images = ctx
            .aws
            .managed_images(
                region,
                &pass.pb.spec.cluster_name,
                &Selector::for_builder(pass.identity),
            )
            .await?;
        let policy = RetentionPolicy {
            keep: retention.keep.and_then(|k| usize::try_from(k).ok()),
            max_age: pass.durations.retention_max_age,
        };
        let candidates = lifecycle::retention_candidates(&images, &keep, policy, pass.now);
        if candidates.is_empty() {
            continue;
        }
        let ids: Vec<String> = candidates.iter().map(|i| i.id.clone()).collect();
        let mut usage = ctx.aws.usage(region, &ids).await?;
        if refreshers.is_none() {
            refreshers = Some(refresher_usage(ctx).await?);
        }
        for (_, ami, who) in refreshers.iter().flatten().filter(|(r, _, _)| r == region) {
            usage.add(ami, who.clone());
        }
        for image in candidates {
            let entry = RetainedImage {
                region: region.clone(),
                image_id: image.id.clone(),
                snapshot_ids: image.snapshot_ids.clone(),
                used_by: lifecycle::in_use_reason(&usage, &image.id),
            };
            if entry.used_by.is_some() {
                keep_in_use(pass, &previous, entry, &mut next).await;
            } else if retention.dry_run {
                next.candidates.push(entry);
            } else {
                deregister(ctx, pass.pb, old, entry, retention.delete_snapshots).await?;
            }
        }
    }
    // Dry run: one Event per AMI newly listed.
    for entry in next.candidates.iter().filter(|c| !previous.candidates.contains(c)) {
        let note = format!(
            "dry run: retention would deregister AMI {} in {} (snapshots {})",
            entry.image_id,
            entry.region,
            entry.snapshot_ids.join(", ")
        );
        announce(
            ctx,
            pass.pb,
            EventType::Normal,
            reasons::RETENTION_DRY_RUN,
            &entry.image_id,
            note,
        )
        .await;
    }
    status.retention = Some(next).filter(|r| r != &RetentionStatus::default());
    Ok(())
}

/// Deletes the snapshots of AMIs a pass deregistered before it stopped half-way (an AMI still registered is judged
/// again instead).
async fn replay_pending(ctx: &Context, pending: &[RetainedImage]) -> Result<()> {
    for entry in pending {
        if ctx.aws.own_image(&entry.region, &entry.image_id).await?.is_some() {
            continue;
        }
        for snapshot in &entry.snapshot_ids {
            ctx.aws.delete_snapshot(&entry.region, snapshot).await?;
        }
        tracing::info!(ami = %entry.image_id, region = %entry.region, snapshots = ?entry.snapshot_ids, "deleted the snapshots of a deregistered AMI");
    }
    Ok(())
}

/// Records an AMI retention keeps because it is in use; announced once per AMI and set of users.
async fn keep_in_use(
    pass: &Pass<'_>,
    previous: &RetentionStatus,
    mut entry: RetainedImage,
    next: &mut RetentionStatus,
) {
    entry.snapshot_ids.clear();
    let known = previous
        .in_use
        .iter()
        .any(|p| p.image_id == entry.image_id && p.region == entry.region && p.used_by == entry.used_by);
    if !known {
        pass.ctx.metrics.count("image_lifecycle", "kept_in_use");
        let note = format!(
            "kept AMI {} in {}: retention would deregister it, but it is used by {}",
            entry.image_id,
            entry.region,
            entry.used_by.as_deref().unwrap_or_default()
        );
        announce(
            pass.ctx,
            pass.pb,
            EventType::Normal,
            reasons::IMAGE_IN_USE,
            &entry.image_id,
            note,
        )
        .await;
    }
    next.in_use.push(entry);
}

/// Deregisters one AMI and deletes its snapshots, journalled in status so a crash in between is finished later.
async fn deregister(
    ctx: &Context,
    pb: &PackerBuilder,
    old: &PackerBuilderStatus,
    entry: RetainedImage,
    delete_snapshots: bool,
) -> Result<()> {
    let api: Api<PackerBuilder> = Api::namespaced(ctx.client.clone(), &pb.namespace().unwrap_or_default());
    // The journal is written on top of what the API server holds (`old`) and taken back afterwards, so the
    // reconcile's own status write (computed from `old`) stays right.
    let mut journal = old.clone();
    if delete_snapshots && !entry.snapshot_ids.is_empty() {
        journal
            .retention
            .get_or_insert_with(RetentionStatus::default)
            .pending_snapshots
            .push(entry.clone());
        controller_runtime::write_status(&api, &pb.name_any(), old, &journal).await?;
    }
    ctx.aws.deregister(&entry.region, &entry.image_id).await?;
    failpoint("image-deregistered");
    let mut deleted = Vec::new();
    if delete_snapshots {
        for snapshot in &entry.snapshot_ids {
            ctx.aws.delete_snapshot(&entry.region, snapshot).await?;
            deleted.push(snapshot.clone());
        }
        controller_runtime::write_status(&api, &pb.name_any(), &journal, old).await?;
    }
    let snapshots = if deleted.is_empty() {
        "no snapshots deleted".to_owned()
    } else {
        format!("deleted snapshots {}", deleted.join(", "))
    };
    ctx.metrics.count("image_lifecycle", "deregistered");
    tracing::info!(ami = %entry.image_id, region = %entry.region, snapshots = ?deleted, "retention deregistered an AMI");
    announce(
        ctx,
        pb,
        EventType::Normal,
        reasons::IMAGE_DEREGISTERED,
        &entry.image_id,
        format!("deregistered AMI {} in {} ({snapshots})", entry.image_id, entry.region),
    )
    .await;
    Ok(())
}

/// Publishes an Event about the AMI `image` (in `region`). The AMI is the Event's related object, as the rollout's
/// node groups are: kube's Recorder folds Events with the same type, reason, action and related object into one
/// series and keeps the first note, so without it a second deregistered AMI would only bump the first one's count.
async fn announce(ctx: &Context, pb: &PackerBuilder, type_: EventType, reason: &str, image: &str, note: String) {
    let (object, namespace) = (pb.object_ref(&()), pb.namespace().unwrap_or_default());
    let target = controller_runtime::notify::Target {
        object: &object,
        namespace: &namespace,
        region: &pb.spec.region,
        spec: None,
    };
    let announcement = controller_runtime::report::Announcement {
        type_,
        reason: reason.to_owned(),
        note,
        action: "Retention",
        related: Some(controller_runtime::report::related(
            "ec2.amazonaws.com/v1",
            "Image",
            image,
        )),
        notification: None,
    };
    controller_runtime::report::announce(&ctx.recorder, &ctx.notifier, target, vec![announcement]).await;
}
