//! The AWS edge: only the calls the controller makes, on clients built from the standard config chain (which
//! honours `AWS_ENDPOINT_URL`), one per region. Two lookups are shared between PackerBuilders:
//! - base-AMI candidates, per (region, filters, owners), for the base TTL;
//! - the operator's AMIs of a cluster, per (region, cluster), for the managed TTL: one tag-filtered
//!   DescribeImages serves every PackerBuilder of that cluster (each keeps only its own AMIs), and any tag this
//!   controller writes in the region invalidates the region's entries at once, so a decision never works from a
//!   view older than the controller's own last write.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use ami_tags::{Image, Selector};
use api_types::AmiFilter;
use aws_config::{Region, SdkConfig};
use aws_sdk_ec2::{error::ProvideErrorMetadata, types::Filter};
use controller_runtime::aws::{AwsError, AwsErrorKind, SdkFailure};

use crate::error::{Error, Result};

type BaseKey = (String, Vec<(String, Vec<String>)>, Vec<String>);
type BaseEntry = std::sync::Arc<tokio::sync::Mutex<Option<(Instant, Vec<Image>)>>>;
/// (region, cluster).
type ManagedKey = (String, String);
/// The answer, when it was fetched, and the region's write generation it was fetched under.
type ManagedEntry = std::sync::Arc<tokio::sync::Mutex<Option<(Instant, u64, Vec<Image>)>>>;

/// AWS clients and the base-AMI cache.
#[derive(Debug)]
pub struct Aws {
    sdk: SdkConfig,
    base_ttl: Duration,
    ec2: Mutex<HashMap<String, aws_sdk_ec2::Client>>,
    ssm: Mutex<HashMap<String, aws_sdk_ssm::Client>>,
    /// One entry per (region, filters, owners), each with its own lock: PackerBuilders sharing a key wait for one
    /// DescribeImages, PackerBuilders with other keys never wait for it.
    base_cache: Mutex<HashMap<BaseKey, BaseEntry>>,
    managed_ttl: Duration,
    /// One entry per (region, cluster), each with its own lock, like the base cache.
    managed_cache: Mutex<HashMap<ManagedKey, ManagedEntry>>,
    /// Per region: how many tag writes this controller has made; an entry fetched under an older count is stale.
    writes: Mutex<HashMap<String, u64>>,
    counter: Option<controller_runtime::aws::CallCounter>,
}

fn aws_error<E>(operation: &'static str, e: &SdkFailure<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    Error::Aws(AwsError::from_sdk(operation, e))
}

impl Aws {
    /// Clients from an SDK configuration (the standard chain in production).
    pub fn new(sdk: SdkConfig, base_ttl: Duration) -> Self {
        Self {
            sdk,
            base_ttl,
            ec2: Mutex::default(),
            ssm: Mutex::default(),
            base_cache: Mutex::default(),
            managed_ttl: Duration::from_secs(60),
            managed_cache: Mutex::default(),
            writes: Mutex::default(),
            counter: None,
        }
    }

    /// How long one cluster's managed-AMI answer is shared (default 60 s); zero turns the sharing off.
    pub fn with_managed_ttl(mut self, ttl: Duration) -> Self {
        self.managed_ttl = ttl;
        self
    }

    fn write_generation(&self, region: &str) -> u64 {
        self.writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(region)
            .copied()
            .unwrap_or(0)
    }

    /// Makes the cached answers of a region stale, as a write of this process does.
    pub fn forget_cached(&self, region: &str) {
        self.wrote(region);
    }

    fn wrote(&self, region: &str) {
        *self
            .writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(region.to_owned())
            .or_insert(0) += 1;
    }

    /// Counts every call of the clients made from now on into `aws_calls_total`.
    pub fn count_calls(&mut self, metrics: std::sync::Arc<controller_runtime::Metrics>) {
        self.counter = Some(controller_runtime::aws::CallCounter(metrics));
    }

    /// The SDK configuration (for other services' clients, e.g. notifications).
    pub fn sdk(&self) -> &SdkConfig {
        &self.sdk
    }

    fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        let mut clients = self.ec2.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        clients
            .entry(region.to_owned())
            .or_insert_with(|| {
                let mut conf = aws_sdk_ec2::config::Builder::from(&self.sdk).region(Region::new(region.to_owned()));
                if let Some(counter) = &self.counter {
                    conf = conf.interceptor(counter.clone());
                }
                let conf = conf.build();
                aws_sdk_ec2::Client::from_conf(conf)
            })
            .clone()
    }

    fn ssm(&self, region: &str) -> aws_sdk_ssm::Client {
        let mut clients = self.ssm.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        clients
            .entry(region.to_owned())
            .or_insert_with(|| {
                let mut conf = aws_sdk_ssm::config::Builder::from(&self.sdk).region(Region::new(region.to_owned()));
                if let Some(counter) = &self.counter {
                    conf = conf.interceptor(counter.clone());
                }
                let conf = conf.build();
                aws_sdk_ssm::Client::from_conf(conf)
            })
            .clone()
    }

    async fn describe(
        &self,
        region: &str,
        filters: Vec<Filter>,
        owners: &[String],
        ids: &[String],
    ) -> Result<Vec<Image>> {
        Ok(controller_runtime::aws::describe_images(&self.ec2(region), filters, owners, ids).await?)
    }

    /// Candidates for the base AMI: the spec's filters and owners, every page; shared for [`BASE_LOOKUP_TTL`].
    pub async fn base_images(&self, region: &str, filters: &[AmiFilter], owners: &[String]) -> Result<Vec<Image>> {
        let key: BaseKey = (
            region.to_owned(),
            filters.iter().map(|f| (f.name.clone(), f.values.clone())).collect(),
            owners.to_vec(),
        );
        let entry = self
            .base_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        // Held across the call on purpose: N builders with the same key wait for one DescribeImages.
        let mut cached = entry.lock().await;
        if let Some((at, images)) = cached.as_ref()
            && at.elapsed() < self.base_ttl
        {
            return Ok(images.clone());
        }
        let ec2_filters = controller_runtime::aws::ec2_filters(filters, &[]);
        let images = self.describe(region, ec2_filters, owners, &[]).await?;
        *cached = Some((Instant::now(), images.clone()));
        Ok(images)
    }

    /// The value of an SSM parameter (the base AMI ID).
    pub async fn ssm_parameter(&self, region: &str, name: &str) -> Result<String> {
        let out = self.ssm(region).get_parameter().name(name).send().await.map_err(|e| {
            match aws_error("GetParameter", &e) {
                Error::Aws(e) if e.kind == AwsErrorKind::NotFound => {
                    Error::NoBaseAmi(format!("SSM parameter {name} does not exist in {region}"))
                }
                other => other,
            }
        })?;
        out.parameter()
            .and_then(|p| p.value())
            .map(str::to_owned)
            .ok_or_else(|| Error::NoBaseAmi(format!("SSM parameter {name} has no value")))
    }

    /// Makes the SSM parameter `name` name `ami` (data type `aws:ec2:image`), unless it already does; returns whether
    /// it wrote. Idempotent, so a retry or a restart writes at most once per AMI (each write is one history entry).
    pub async fn publish_parameter(&self, region: &str, name: &str, ami: &str) -> Result<bool> {
        let client = self.ssm(region);
        let current = match client.get_parameter().name(name).send().await {
            Ok(out) => out.parameter().and_then(|p| p.value()).map(str::to_owned),
            Err(e) => match aws_error("GetParameter", &e) {
                Error::Aws(e) if e.kind == AwsErrorKind::NotFound => None,
                other => return Err(other),
            },
        };
        if current.as_deref() == Some(ami) {
            return Ok(false);
        }
        client
            .put_parameter()
            .name(name)
            .value(ami)
            .r#type(aws_sdk_ssm::types::ParameterType::String)
            .data_type("aws:ec2:image")
            .overwrite(true)
            .description("newest active AMI, written by opsy-ami-operator")
            .send()
            .await
            .map_err(|e| aws_error("PutParameter", &e))?;
        Ok(true)
    }

    /// AMIs of this account that `selector` matches, taken from the shared answer for `cluster` (every AMI this
    /// operator made for the cluster, filtered by EC2 on its tags, so the region is never listed).
    pub async fn managed_images(&self, region: &str, cluster: &str, selector: &Selector) -> Result<Vec<Image>> {
        let all = self.cluster_images(region, cluster).await?;
        Ok(all.into_iter().filter(|image| selector.matches(image)).collect())
    }

    async fn cluster_images(&self, region: &str, cluster: &str) -> Result<Vec<Image>> {
        let entry = self
            .managed_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((region.to_owned(), cluster.to_owned()))
            .or_default()
            .clone();
        // Held across the call on purpose: the PackerBuilders of one cluster wait for one DescribeImages.
        let mut cached = entry.lock().await;
        let generation = self.write_generation(region);
        if let Some((at, seen, images)) = cached.as_ref()
            && *seen == generation
            && at.elapsed() < self.managed_ttl
        {
            return Ok(images.clone());
        }
        let filters = controller_runtime::aws::ec2_filters(&[], &Selector::for_cluster(cluster).ec2_tag_filters());
        let images = self.describe(region, filters, &["self".to_owned()], &[]).await?;
        // Stamped with the generation read before the call: a write during the call makes it stale at once.
        *cached = Some((Instant::now(), generation, images.clone()));
        Ok(images)
    }

    /// One AMI of this account by ID, or `None` when EC2 does not know it or another account owns it.
    pub async fn own_image(&self, region: &str, id: &str) -> Result<Option<Image>> {
        match self
            .describe(region, Vec::new(), &["self".to_owned()], &[id.to_owned()])
            .await
        {
            Ok(images) => Ok(images.into_iter().find(|i| i.id == id)),
            Err(Error::Aws(e)) if controller_runtime::aws::is_unknown_image(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// This account's AMIs in `region` tagged `build-id=<build_id>` (what a template that declares `build_id` tags),
    /// oldest ID first: how a build whose Job and pod are gone is recovered.
    pub async fn images_of_build(&self, region: &str, build_id: &str) -> Result<Vec<Image>> {
        let filter = Filter::builder()
            .name(format!("tag:{}", ami_tags::keys::BUILD_ID))
            .values(build_id)
            .build();
        let mut images = self.describe(region, vec![filter], &["self".to_owned()], &[]).await?;
        images.sort_by(|a, b| a.creation_date.cmp(&b.creation_date).then_with(|| a.id.cmp(&b.id)));
        Ok(images)
    }

    /// Adds or overwrites tags.
    /// Sets EC2's own deprecation time of an AMI this account owns (EnableImageDeprecation), so DescribeImages, the
    /// console and other tools see it.
    /// The shared answer stays valid: only the AMI's deprecation time changes, and it is updated in place (a full
    /// invalidation would make every PackerBuilder of the cluster describe the images again).
    pub async fn deprecate_at(&self, region: &str, id: &str, at: jiff::Timestamp) -> Result<()> {
        self.ec2(region)
            .enable_image_deprecation()
            .image_id(id)
            .deprecate_at(aws_sdk_ec2::primitives::DateTime::from_secs(at.as_second()))
            .send()
            .await
            .map_err(|e| aws_error("EnableImageDeprecation", &e))?;
        let entries: Vec<ManagedEntry> = self
            .managed_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|((r, _), _)| r == region)
            .map(|(_, entry)| entry.clone())
            .collect();
        for entry in entries {
            if let Some((_, _, images)) = entry.lock().await.as_mut() {
                for image in images.iter_mut().filter(|i| i.id == id) {
                    image.deprecation_time = Some(at);
                }
            }
        }
        Ok(())
    }

    pub async fn tag(&self, region: &str, ids: &[String], tags: &BTreeMap<String, String>) -> Result<()> {
        if ids.is_empty() || tags.is_empty() {
            return Ok(());
        }
        // Before the call: even a write that fails half-way may have changed what DescribeImages answers.
        self.wrote(region);
        let tags = tags
            .iter()
            .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
            .collect();
        self.ec2(region)
            .create_tags()
            .set_resources(Some(ids.to_vec()))
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| aws_error("CreateTags", &e))?;
        Ok(())
    }
}

/// What CopyImage needs besides the regions.
#[derive(Clone, Debug)]
pub struct CopyRequest<'a> {
    /// The built AMI.
    pub source_id: &'a str,
    /// Its region.
    pub source_region: &'a str,
    /// Name of the copy (the source's).
    pub name: &'a str,
    /// Description of the copy (the source's).
    pub description: Option<&'a str>,
    /// Encrypt the copy's snapshots.
    pub encrypted: bool,
    /// KMS key for them.
    pub kms_key_id: Option<&'a str>,
    /// Idempotency token.
    pub client_token: &'a str,
    /// Tags of the copy and its snapshots, set by CopyImage itself (so a copy is never untagged, even if the
    /// controller stops right after the call).
    pub tags: &'a BTreeMap<String, String>,
}

fn tag_specification(
    resource: aws_sdk_ec2::types::ResourceType,
    tags: &BTreeMap<String, String>,
) -> aws_sdk_ec2::types::TagSpecification {
    aws_sdk_ec2::types::TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

impl Aws {
    /// Copies an AMI into `region` (CopyImage); returns the copy's ID. EC2 answers a repeated token with the same copy.
    pub async fn copy_image(&self, region: &str, request: &CopyRequest<'_>) -> Result<String> {
        self.wrote(region);
        let out = self
            .ec2(region)
            .copy_image()
            .source_image_id(request.source_id)
            .source_region(request.source_region)
            .name(request.name)
            .set_description(request.description.map(str::to_owned))
            .set_encrypted(request.encrypted.then_some(true))
            .set_kms_key_id(request.kms_key_id.map(str::to_owned))
            .client_token(request.client_token)
            .tag_specifications(tag_specification(aws_sdk_ec2::types::ResourceType::Image, request.tags))
            .tag_specifications(tag_specification(
                aws_sdk_ec2::types::ResourceType::Snapshot,
                request.tags,
            ))
            .send()
            .await
            .map_err(|e| aws_error("CopyImage", &e))?;
        out.image_id()
            .map(str::to_owned)
            .ok_or_else(|| Error::Aws(AwsError::malformed("CopyImage", "no ImageId in the answer")))
    }

    /// The launch permissions of an AMI this account owns.
    pub async fn launch_permissions(&self, region: &str, id: &str) -> Result<Vec<crate::lifecycle::Permission>> {
        use crate::lifecycle::Permission;
        let out = self
            .ec2(region)
            .describe_image_attribute()
            .image_id(id)
            .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
            .send()
            .await
            .map_err(|e| aws_error("DescribeImageAttribute", &e))?;
        Ok(out
            .launch_permissions()
            .iter()
            .filter_map(|p| {
                if let Some(account) = p.user_id() {
                    Some(Permission::Account(account.to_owned()))
                } else if let Some(org) = p.organization_arn() {
                    Some(Permission::Organization(org.to_owned()))
                } else if let Some(ou) = p.organizational_unit_arn() {
                    Some(Permission::OrganizationalUnit(ou.to_owned()))
                } else if p.group().is_some() {
                    Some(Permission::Public)
                } else {
                    None
                }
            })
            .collect())
    }

    /// Adds and removes launch permissions of an AMI (one ModifyImageAttribute).
    pub async fn modify_launch_permissions(
        &self,
        region: &str,
        id: &str,
        add: &[crate::lifecycle::Permission],
        remove: &[crate::lifecycle::Permission],
    ) -> Result<()> {
        use crate::lifecycle::Permission;
        use aws_sdk_ec2::types::{LaunchPermission, LaunchPermissionModifications, PermissionGroup};
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let convert = |p: &Permission| match p {
            Permission::Account(a) => LaunchPermission::builder().user_id(a).build(),
            Permission::Organization(o) => LaunchPermission::builder().organization_arn(o).build(),
            Permission::OrganizationalUnit(u) => LaunchPermission::builder().organizational_unit_arn(u).build(),
            Permission::Public => LaunchPermission::builder().group(PermissionGroup::All).build(),
        };
        let modifications = LaunchPermissionModifications::builder()
            .set_add(Some(add.iter().map(convert).collect()).filter(|v: &Vec<_>| !v.is_empty()))
            .set_remove(Some(remove.iter().map(convert).collect()).filter(|v: &Vec<_>| !v.is_empty()))
            .build();
        self.ec2(region)
            .modify_image_attribute()
            .image_id(id)
            .launch_permission(modifications)
            .send()
            .await
            .map_err(|e| aws_error("ModifyImageAttribute", &e))?;
        Ok(())
    }

    /// The accounts a snapshot's createVolumePermission names.
    pub async fn snapshot_accounts(&self, region: &str, snapshot: &str) -> Result<Vec<String>> {
        let out = self
            .ec2(region)
            .describe_snapshot_attribute()
            .snapshot_id(snapshot)
            .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
            .send()
            .await
            .map_err(|e| aws_error("DescribeSnapshotAttribute", &e))?;
        Ok(out
            .create_volume_permissions()
            .iter()
            .filter_map(|p| p.user_id().map(str::to_owned))
            .collect())
    }

    /// Adds and removes accounts of a snapshot's createVolumePermission.
    pub async fn modify_snapshot_accounts(
        &self,
        region: &str,
        snapshot: &str,
        add: &[String],
        remove: &[String],
    ) -> Result<()> {
        use aws_sdk_ec2::types::OperationType;
        for (operation, accounts) in [(OperationType::Add, add), (OperationType::Remove, remove)] {
            if accounts.is_empty() {
                continue;
            }
            self.ec2(region)
                .modify_snapshot_attribute()
                .snapshot_id(snapshot)
                .attribute(aws_sdk_ec2::types::SnapshotAttributeName::CreateVolumePermission)
                .operation_type(operation)
                .set_user_ids(Some(accounts.to_vec()))
                .send()
                .await
                .map_err(|e| aws_error("ModifySnapshotAttribute", &e))?;
        }
        Ok(())
    }

    /// Deregisters an AMI; one that is already gone counts as done.
    pub async fn deregister(&self, region: &str, id: &str) -> Result<()> {
        self.wrote(region);
        match self.ec2(region).deregister_image().image_id(id).send().await {
            Ok(_) => Ok(()),
            Err(e) => match aws_error("DeregisterImage", &e) {
                Error::Aws(e) if e.kind == AwsErrorKind::NotFound || e.has_code(&["InvalidAMIID.Unavailable"]) => {
                    Ok(())
                }
                other => Err(other),
            },
        }
    }

    /// Deletes a snapshot; one that is already gone counts as done.
    pub async fn delete_snapshot(&self, region: &str, id: &str) -> Result<()> {
        match self.ec2(region).delete_snapshot().snapshot_id(id).send().await {
            Ok(_) => Ok(()),
            Err(e) => match aws_error("DeleteSnapshot", &e) {
                Error::Aws(e) if e.kind == AwsErrorKind::NotFound => Ok(()),
                other => Err(other),
            },
        }
    }

    fn autoscaling(&self, region: &str) -> aws_sdk_autoscaling::Client {
        let mut conf = aws_sdk_autoscaling::config::Builder::from(&self.sdk).region(Region::new(region.to_owned()));
        if let Some(counter) = &self.counter {
            conf = conf.interceptor(counter.clone());
        }
        aws_sdk_autoscaling::Client::from_conf(conf.build())
    }

    fn eks(&self, region: &str) -> aws_sdk_eks::Client {
        let mut conf = aws_sdk_eks::config::Builder::from(&self.sdk).region(Region::new(region.to_owned()));
        if let Some(counter) = &self.counter {
            conf = conf.interceptor(counter.clone());
        }
        aws_sdk_eks::Client::from_conf(conf.build())
    }

    /// Which of `images` something in `region` uses: instances (pending, running, stopping, stopped) launched from
    /// them, and launch template versions used by any Auto Scaling group or EKS node group of any cluster.
    pub async fn usage(&self, region: &str, images: &[String]) -> Result<crate::lifecycle::Usage> {
        let mut usage = crate::lifecycle::Usage::default();
        if images.is_empty() {
            return Ok(usage);
        }
        let ec2 = self.ec2(region);
        let mut pages = ec2
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("image-id")
                    .set_values(Some(images.to_vec()))
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(
                        ["pending", "running", "stopping", "stopped"]
                            .map(str::to_owned)
                            .to_vec(),
                    ))
                    .build(),
            )
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws_error("DescribeInstances", &e))?;
            for instance in page.reservations().iter().flat_map(|r| r.instances()) {
                if let (Some(image), Some(id)) = (instance.image_id(), instance.instance_id()) {
                    usage.add(image, format!("instance {id}"));
                }
            }
        }
        // (template ID or name, version) -> who uses it.
        let mut users = controller_runtime::aws::asg_template_users(&self.autoscaling(region)).await?;
        users.extend(controller_runtime::aws::nodegroup_template_users(&self.eks(region)).await?);
        let mut templates: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for user in users {
            if let Some(template) = user.template_id.or(user.template_name) {
                templates.entry((template, user.version)).or_default().push(user.user);
            }
        }
        for ((template, version), users) in templates {
            let request = ec2.describe_launch_template_versions().versions(&version);
            let request = if template.starts_with("lt-") {
                request.launch_template_id(&template)
            } else {
                request.launch_template_name(&template)
            };
            let out = match request.send().await {
                Ok(out) => out,
                Err(e) => match aws_error("DescribeLaunchTemplateVersions", &e) {
                    // A template deleted since the group was listed uses nothing.
                    Error::Aws(e) if e.kind == AwsErrorKind::NotFound => continue,
                    other => return Err(other),
                },
            };
            for v in out.launch_template_versions() {
                if let Some(image) = v.launch_template_data().and_then(|d| d.image_id())
                    && images.iter().any(|i| i == image)
                {
                    for user in &users {
                        usage.add(
                            image,
                            format!(
                                "launch template {template} version {} ({user})",
                                v.version_number().unwrap_or_default()
                            ),
                        );
                    }
                }
            }
        }
        Ok(usage)
    }
}
