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
use kube::{
    Api, Resource, ResourceExt,
    api::ListParams,
    runtime::events::{Event, EventType},
};

use crate::{
    aws::CopyRequest,
    decide::Durations,
    error::{Error, Result},
    lifecycle::{self, CopyStep, RetentionPolicy, Usage, state},
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

/// Runs the lifecycle of the active AMIs `active` (in `spec.region`, with their tags) of `pb`.
pub async fn converge(
    ctx: &Context,
    pb: &PackerBuilder,
    old: &PackerBuilderStatus,
    status: &mut PackerBuilderStatus,
    active: &[Image],
    identity: &Identity,
    durations: &Durations,
    now: Timestamp,
) -> Result<Lifecycle> {
    let spec = &pb.spec;
    let mut out = Lifecycle::default();
    let distribution = spec.distribution.clone().unwrap_or_default();
    for image in active {
        share(ctx, pb, &spec.region, image).await?;
    }
    // Active AMI IDs per region, for retention.
    let mut protected: BTreeMap<String, Vec<String>> =
        BTreeMap::from([(spec.region.clone(), active.iter().map(|i| i.id.clone()).collect())]);
    let mut entries = Vec::new();
    for region in &distribution.regions {
        let in_region = ctx
            .aws
            .managed_images(region, &spec.cluster_name, &Selector::for_builder(identity))
            .await?;
        let mut copies = Vec::new();
        for source in active {
            let tag = lifecycle::source_tag(&spec.region, &source.id);
            let found: Vec<&Image> = in_region
                .iter()
                .filter(|i| i.tag(keys::SOURCE_IMAGE) == Some(tag.as_str()))
                .collect();
            let previous = status
                .distributed_images
                .iter()
                .find(|e| &e.region == region && e.source_image_id == source.id)
                .cloned();
            let mut entry = previous.clone().unwrap_or_else(|| DistributedImage {
                region: region.clone(),
                source_image_id: source.id.clone(),
                ..DistributedImage::default()
            });
            if found.is_empty()
                && previous.as_ref().and_then(|e| e.image_id.as_ref()).is_some()
                && previous.as_ref().is_some_and(|e| e.state != state::FAILED)
            {
                // The copy named in status is not in the (shared, possibly older) answer: ask EC2 before copying again.
                ctx.aws.forget_cached(region);
            }
            match lifecycle::copy_step(&found, previous.as_ref(), ctx.retry_base, now) {
                CopyStep::Copy { failures } => {
                    let mut tags = source.tags.clone();
                    tags.insert(keys::SOURCE_IMAGE.to_owned(), tag.clone());
                    let build_id = source.tag(keys::BUILD_ID).unwrap_or_default();
                    let token = lifecycle::copy_token(build_id, &source.id, region, failures);
                    let name = source.name.clone().unwrap_or_else(|| source.id.clone());
                    let request = CopyRequest {
                        source_id: &source.id,
                        source_region: &spec.region,
                        name: &name,
                        description: source.description.as_deref(),
                        encrypted: distribution.encrypted,
                        kms_key_id: distribution.kms_key_ids.get(region).map(String::as_str),
                        client_token: &token,
                        tags: &tags,
                    };
                    match ctx.aws.copy_image(region, &request).await {
                        Ok(id) => {
                            tracing::info!(source = %source.id, %region, copy = %id, "copying the AMI");
                            failpoint("copy-started");
                            entry.image_id = Some(id);
                            entry.state = state::COPYING.to_owned();
                            out.wake(COPY_POLL);
                        }
                        Err(Error::Aws(e)) => {
                            let message = format!("copy of {} to {region}: {e}", source.id);
                            tracing::warn!(%message, "copy failed; retried with back-off");
                            record_copy_failure(&mut entry, &message, now, &mut out, ctx, failures);
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
                    record_copy_failure(&mut entry, &message, now, &mut out, ctx, failures);
                }
                CopyStep::Backoff { at } => {
                    out.failure = entry.message.clone();
                    let wait = Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO);
                    out.wake(wait.max(Duration::from_secs(1)));
                }
                CopyStep::Available { image_id } => {
                    let copy = found
                        .iter()
                        .find(|i| i.id == image_id)
                        .copied()
                        .cloned()
                        .unwrap_or_default();
                    finish_copy(ctx, pb, region, source, &copy, &tag, durations, now).await?;
                    entry.image_id = Some(image_id.clone());
                    entry.state = state::AVAILABLE.to_owned();
                    entry.message = None;
                    copies.push(image_id);
                }
            }
            if entry.state != state::AVAILABLE {
                out.incomplete.push(format!("{region} ({})", entry.state));
            }
            entries.push(entry);
        }
        // Once this build's copies are available in the region, the region's older active copies are retired.
        if copies.len() == active.len() {
            retire(ctx, region, &in_region, identity, &copies, now).await?;
            if let (Some(publish), Some(first)) = (&spec.publish, copies.first()) {
                if ctx.aws.publish_parameter(region, &publish.ssm_parameter, first).await? {
                    tracing::info!(parameter = %publish.ssm_parameter, %region, ami = %first, "published the newest AMI");
                }
            }
        }
        protected.insert(region.clone(), copies);
    }
    status.distributed_images = entries;
    if let Some(retention) = &spec.retention {
        retain(ctx, pb, old, status, &protected, retention, durations, now).await?;
    } else {
        status.retention = None;
    }
    Ok(out)
}

fn record_copy_failure(
    entry: &mut DistributedImage,
    message: &str,
    now: Timestamp,
    out: &mut Lifecycle,
    ctx: &Context,
    failures_before: i32,
) {
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
#[allow(clippy::too_many_arguments)]
async fn finish_copy(
    ctx: &Context,
    pb: &PackerBuilder,
    region: &str,
    source: &Image,
    copy: &Image,
    source_tag: &str,
    durations: &Durations,
    now: Timestamp,
) -> Result<()> {
    let mut wanted = source.tags.clone();
    wanted.insert(keys::SOURCE_IMAGE.to_owned(), source_tag.to_owned());
    let missing: BTreeMap<String, String> = wanted
        .into_iter()
        .filter(|(k, v)| copy.tags.get(k) != Some(v))
        .collect();
    ctx.aws.tag(region, std::slice::from_ref(&copy.id), &missing).await?;
    if let Some((created, _)) = ami_tags::created_at(source, now) {
        let expires_at = created.checked_add(durations.expires_in).unwrap_or(Timestamp::MAX);
        let at = crate::decide::ec2_deprecation_time(expires_at, now);
        if crate::decide::needs_ec2_deprecation(copy.deprecation_time, at) {
            ctx.aws.deprecate_at(region, &copy.id, at).await?;
        }
    }
    share(ctx, pb, region, copy).await
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

/// AMIs named by AMIRefreshers (target and current AMIs of their node groups) in `region`. A cluster without the
/// AMIRefresher kind has none.
async fn refresher_usage(ctx: &Context, region: &str, usage: &mut Usage) -> Result<()> {
    let scopes: Vec<Api<AMIRefresher>> = if ctx.namespaces.is_empty() {
        vec![Api::all(ctx.client.clone())]
    } else {
        ctx.namespaces
            .iter()
            .map(|ns| Api::namespaced(ctx.client.clone(), ns))
            .collect()
    };
    for api in scopes {
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(e.into()),
        };
        for amr in list.items.iter().filter(|a| a.spec.region == region) {
            let who = format!(
                "AMIRefresher {}/{}",
                amr.namespace().unwrap_or_default(),
                amr.name_any()
            );
            let Some(status) = &amr.status else { continue };
            for ami in status.target_ami.iter().chain(
                status
                    .node_groups
                    .iter()
                    .flat_map(|n| n.current_ami.iter().chain(n.target_ami.iter())),
            ) {
                usage.add(ami, who.clone());
            }
        }
    }
    Ok(())
}

/// Deregisters what `retention` lets go in every region (never what is active or in use), deleting snapshots through
/// the `pendingSnapshots` journal.
#[allow(clippy::too_many_arguments)]
async fn retain(
    ctx: &Context,
    pb: &PackerBuilder,
    old: &PackerBuilderStatus,
    status: &mut PackerBuilderStatus,
    protected: &BTreeMap<String, Vec<String>>,
    retention: &api_types::packer_builder::RetentionSpec,
    durations: &Durations,
    now: Timestamp,
) -> Result<()> {
    let spec = &pb.spec;
    let identity = crate::reconcile::identity(pb);
    let policy = RetentionPolicy {
        keep: retention.keep.and_then(|k| usize::try_from(k).ok()),
        max_age: durations.retention_max_age,
    };
    let previous = status.retention.clone().unwrap_or_default();
    let mut next = RetentionStatus::default();
    // Snapshots of AMIs deregistered by a pass that stopped half-way.
    for pending in &previous.pending_snapshots {
        if ctx.aws.own_image(&pending.region, &pending.image_id).await?.is_some() {
            continue; // not deregistered after all: judged again below
        }
        for snapshot in &pending.snapshot_ids {
            ctx.aws.delete_snapshot(&pending.region, snapshot).await?;
        }
        tracing::info!(ami = %pending.image_id, region = %pending.region, snapshots = ?pending.snapshot_ids, "deleted the snapshots of a deregistered AMI");
    }
    let mut refreshers: Option<Usage> = None;
    for (region, active) in protected {
        let images = ctx
            .aws
            .managed_images(region, &spec.cluster_name, &Selector::for_builder(&identity))
            .await?;
        let mut keep: Vec<String> = active.clone();
        // Anything status names stays too (an AMI a moment ago active, a copy in progress).
        keep.extend(status.last_run_built_image_id.iter().cloned());
        keep.extend(status.last_run_built_image_ids.iter().cloned());
        keep.extend(status.distributed_images.iter().filter_map(|e| e.image_id.clone()));
        let candidates = lifecycle::retention_candidates(&images, &keep, policy, now);
        if candidates.is_empty() {
            continue;
        }
        let ids: Vec<String> = candidates.iter().map(|i| i.id.clone()).collect();
        let mut usage = ctx.aws.usage(region, &ids).await?;
        if refreshers.is_none() {
            let mut found = Usage::default();
            refresher_usage(ctx, region, &mut found).await?;
            refreshers = Some(found);
        }
        for (ami, users) in refreshers.as_ref().map(|u| u.users.clone()).unwrap_or_default() {
            for user in users {
                usage.add(&ami, user);
            }
        }
        for image in candidates {
            let mut entry = RetainedImage {
                region: region.clone(),
                image_id: image.id.clone(),
                snapshot_ids: image.snapshot_ids.clone(),
                used_by: None,
            };
            if let Some(users) = lifecycle::in_use_reason(&usage, &image.id) {
                entry.used_by = Some(users.clone());
                entry.snapshot_ids.clear();
                if !previous
                    .in_use
                    .iter()
                    .any(|p| p.image_id == image.id && p.used_by == entry.used_by)
                {
                    announce(
                        ctx,
                        pb,
                        EventType::Normal,
                        reasons::IMAGE_IN_USE,
                        &format!("{region}/{}", image.id),
                        format!(
                            "kept AMI {} in {region}: retention would deregister it, but it is used by {users}",
                            image.id
                        ),
                    )
                    .await;
                }
                next.in_use.push(entry);
            } else if retention.dry_run {
                next.candidates.push(entry);
            } else {
                deregister(ctx, pb, old, entry, retention.delete_snapshots).await?;
            }
        }
    }
    if retention.dry_run && !next.candidates.is_empty() && next.candidates != previous.candidates {
        let list: Vec<String> = next
            .candidates
            .iter()
            .map(|c| format!("{} ({})", c.image_id, c.region))
            .collect();
        announce(
            ctx,
            pb,
            EventType::Normal,
            reasons::RETENTION_DRY_RUN,
            "dry run",
            format!("dry run: retention would deregister {}", list.join(", ")),
        )
        .await;
    }
    status.retention = Some(next).filter(|r| r != &RetentionStatus::default());
    Ok(())
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
    tracing::info!(ami = %entry.image_id, region = %entry.region, snapshots = ?deleted, "retention deregistered an AMI");
    announce(
        ctx,
        pb,
        EventType::Normal,
        reasons::IMAGE_DEREGISTERED,
        &format!("{}/{}", entry.region, entry.image_id),
        format!("deregistered AMI {} in {} ({snapshots})", entry.image_id, entry.region),
    )
    .await;
    Ok(())
}

/// Publishes an Event about `subject` (an AMI, `<region>/<id>`). The subject is part of the Event's action: kube's
/// Recorder folds Events with the same type, reason and action into one series and keeps the first note, so
/// without it a second deregistered AMI would only bump the count of the first one's Event.
async fn announce(ctx: &Context, pb: &PackerBuilder, type_: EventType, reason: &str, subject: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: format!("Retention {subject}"),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &pb.object_ref(&())).await {
        tracing::warn!(%error, "could not publish an Event");
    }
}
