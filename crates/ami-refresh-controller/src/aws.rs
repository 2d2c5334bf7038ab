//! The AWS edge of the ami-refresh-controller: exactly the calls it makes, on clients built from the standard
//! config chain (which honours `AWS_ENDPOINT_URL`), one set per region. Every list call follows every page.

use std::{collections::HashMap, sync::Mutex};

use ami_tags::Image;
use api_types::{AmiFilter, ami_refresher::NodeGroupKind};
use aws_config::{Region, SdkConfig};
use aws_sdk_autoscaling::types::{DesiredConfiguration, LaunchTemplateSpecification, RefreshPreferences};
use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_sdk_eks::types::{
    LaunchTemplateSpecification as EksLaunchTemplate, NodegroupUpdateConfig, NodegroupUpdateStrategies,
};
use controller_runtime::aws::{AwsError, SdkFailure};
use jiff::Timestamp;

use crate::error::{Error, Result};

fn aws_error<E>(operation: &'static str, e: &SdkFailure<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    Error::Aws(AwsError::from_sdk(operation, e))
}

#[derive(Clone, Debug)]
struct Clients {
    ec2: aws_sdk_ec2::Client,
    eks: aws_sdk_eks::Client,
    autoscaling: aws_sdk_autoscaling::Client,
}

/// (region, launch template ID, version number).
type VersionKey = (String, String, i64);

/// The architectures EC2 reports for an instance type; `None` when EC2 does not know the type.
type Architectures = Option<Vec<String>>;

/// What the controller reads from a numbered launch template version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct VersionData {
    image: Option<String>,
    instance_type: Option<String>,
    description: Option<String>,
}

/// Numbered launch template versions remembered at most (then forgotten all at once; they are re-read on demand).
const VERSION_CACHE_LIMIT: usize = 50_000;

/// AWS clients per region.
#[derive(Debug)]
pub struct Aws {
    sdk: SdkConfig,
    counter: controller_runtime::aws::CallCounter,
    clients: Mutex<HashMap<String, Clients>>,
    /// Image of numbered launch template versions: a version never changes once created, so each is read once.
    versions: Mutex<HashMap<VersionKey, VersionData>>,
    /// Architectures of instance types (`None`: EC2 does not know the type); they never change.
    instance_types: Mutex<HashMap<(String, String), Architectures>>,
}

/// A managed node group as DescribeNodegroup reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodegroupInfo {
    /// `ACTIVE`, `UPDATING`, `CREATING`, ...
    pub status: String,
    /// Launch template ID, when the node group was created with one.
    pub launch_template_id: Option<String>,
    /// Launch template version in use.
    pub launch_template_version: Option<String>,
    /// `updateConfig.maxUnavailable`.
    pub max_unavailable: Option<i32>,
    /// `updateConfig.maxUnavailablePercentage`.
    pub max_unavailable_percentage: Option<i32>,
    /// `updateConfig.updateStrategy` (`DEFAULT`, `MINIMAL`).
    pub update_strategy: Option<String>,
    /// `instanceTypes` (empty when the launch template sets the type).
    pub instance_types: Vec<String>,
    /// `nodegroupArn` (tags are written to it).
    pub arn: Option<String>,
    /// The node group's tags.
    pub tags: std::collections::BTreeMap<String, String>,
}

/// An EKS node group update or an Auto Scaling instance refresh, as far as the controller reads it.
#[derive(Clone, Debug)]
struct UpdateRecord {
    id: String,
    /// `InProgress`, `Successful`, `Failed`, ... (EKS) or the instance refresh status.
    status: String,
    /// An EKS `VersionUpdate` (always true for instance refreshes).
    version_update: bool,
    /// The launch template version it rolls onto (EKS parameter `LaunchTemplateVersion`; the refresh's desired
    /// configuration).
    version: Option<String>,
    started: Option<Timestamp>,
    /// The errors (EKS) or status reason (Auto Scaling).
    message: String,
}

/// One launch template version, as far as clean-up needs it.
#[derive(Clone, Debug)]
pub struct VersionInfo {
    /// Its number.
    pub number: i64,
    /// Its description.
    pub description: Option<String>,
    /// It is the template's default version.
    pub default: bool,
}

/// The launch template an Auto Scaling group launches from: its own, or its mixed-instances policy's.
/// An EKS update's errors as one line.
fn update_errors(update: &aws_sdk_eks::types::Update) -> String {
    update
        .errors()
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e.error_code().map(|c| c.as_str()).unwrap_or("Error"),
                e.error_message().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// How a node group's update config should look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpdateConfig {
    /// `maxUnavailable`.
    pub max_unavailable: Option<i32>,
    /// `maxUnavailablePercentage`.
    pub max_unavailable_percentage: Option<i32>,
    /// `DEFAULT` or `MINIMAL`.
    pub strategy: Option<&'static str>,
}

impl UpdateConfig {
    /// Whether the node group already has this config (unset fields are not compared).
    pub fn satisfied_by(&self, ng: &NodegroupInfo) -> bool {
        self.max_unavailable.is_none_or(|v| ng.max_unavailable == Some(v))
            && self
                .max_unavailable_percentage
                .is_none_or(|v| ng.max_unavailable_percentage == Some(v))
            && self.strategy.is_none_or(|v| ng.update_strategy.as_deref() == Some(v))
    }
}

/// A self-managed Auto Scaling group's launch template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsgInfo {
    /// Launch template ID (`None` for launch configurations).
    pub launch_template_id: Option<String>,
    /// Version as the group names it (`3`, `$Latest`, `$Default`).
    pub launch_template_version: Option<String>,
    /// Instance types of a mixed instances policy's overrides (empty: the launch template's type).
    pub override_types: Vec<String>,
    /// The group's tags.
    pub tags: std::collections::BTreeMap<String, String>,
}

/// The end state (or not) of an update or instance refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Still running.
    Running,
    /// Finished successfully.
    Successful,
    /// Failed, with the reason AWS gave.
    Failed(String),
    /// Cancelled (or rolled back), with the reason.
    Cancelled(String),
}

/// Instance refresh preferences from the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefreshPrefs {
    /// `MinHealthyPercentage`.
    pub min_healthy_percentage: i32,
    /// `InstanceWarmup` in seconds.
    pub instance_warmup: Option<i32>,
    /// `SkipMatching`.
    pub skip_matching: bool,
    /// `AutoRollback`.
    pub auto_rollback: bool,
}

const ACTIVE_REFRESH: [&str; 5] = ["Pending", "InProgress", "Cancelling", "RollbackInProgress", "Baking"];

impl Aws {
    /// Clients from an SDK configuration (the standard chain in production).
    pub fn new(sdk: SdkConfig, metrics: std::sync::Arc<controller_runtime::Metrics>) -> Self {
        Self {
            sdk,
            counter: controller_runtime::aws::CallCounter(metrics),
            clients: Mutex::default(),
            versions: Mutex::default(),
            instance_types: Mutex::default(),
        }
    }

    fn clients(&self, region: &str) -> Clients {
        let mut clients = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        clients
            .entry(region.to_owned())
            .or_insert_with(|| {
                let region = Region::new(region.to_owned());
                Clients {
                    ec2: aws_sdk_ec2::Client::from_conf(
                        aws_sdk_ec2::config::Builder::from(&self.sdk)
                            .region(region.clone())
                            .interceptor(self.counter.clone())
                            .build(),
                    ),
                    eks: aws_sdk_eks::Client::from_conf(
                        aws_sdk_eks::config::Builder::from(&self.sdk)
                            .region(region.clone())
                            .interceptor(self.counter.clone())
                            .build(),
                    ),
                    autoscaling: aws_sdk_autoscaling::Client::from_conf(
                        aws_sdk_autoscaling::config::Builder::from(&self.sdk)
                            .region(region)
                            .interceptor(self.counter.clone())
                            .build(),
                    ),
                }
            })
            .clone()
    }

    /// Images matching the filters (plus tag filters) from the given owners, every page.
    pub async fn images(
        &self,
        region: &str,
        filters: &[AmiFilter],
        tag_filters: &[(String, String)],
        owners: &[String],
    ) -> Result<Vec<Image>> {
        let filters = controller_runtime::aws::ec2_filters(filters, tag_filters);
        Ok(controller_runtime::aws::describe_images(&self.clients(region).ec2, filters, owners, &[]).await?)
    }

    /// One image by ID; `None` when EC2 does not know it (or it is not visible to this account).
    pub async fn image(&self, region: &str, id: &str, owners: &[String]) -> Result<Option<Image>> {
        let ids = [id.to_owned()];
        match controller_runtime::aws::describe_images(&self.clients(region).ec2, Vec::new(), owners, &ids).await {
            Ok(images) => Ok(images.into_iter().find(|i| i.id == id)),
            Err(e) if controller_runtime::aws::is_unknown_image(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The owner account of an AMI visible to this account, whoever owns it (`None`: no such AMI).
    pub async fn image_owner(&self, region: &str, id: &str) -> Result<Option<String>> {
        let out = self.clients(region).ec2.describe_images().image_ids(id).send().await;
        match out {
            Ok(out) => Ok(out
                .images()
                .iter()
                .find(|i| i.image_id() == Some(id))
                .and_then(|i| i.owner_id())
                .map(str::to_owned)),
            Err(e) => {
                let e = AwsError::from_sdk("DescribeImages", &e);
                if controller_runtime::aws::is_unknown_image(&e) {
                    Ok(None)
                } else {
                    Err(e.into())
                }
            }
        }
    }

    /// Every node group of a cluster, every page.
    pub async fn list_nodegroups(&self, region: &str, cluster: &str) -> Result<Vec<String>> {
        let mut pages = self
            .clients(region)
            .eks
            .list_nodegroups()
            .cluster_name(cluster)
            .into_paginator()
            .send();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws_error("ListNodegroups", &e))?;
            names.extend(page.nodegroups().iter().cloned());
        }
        Ok(names)
    }

    /// One managed node group.
    pub async fn describe_nodegroup(&self, region: &str, cluster: &str, name: &str) -> Result<NodegroupInfo> {
        let out = self
            .clients(region)
            .eks
            .describe_nodegroup()
            .cluster_name(cluster)
            .nodegroup_name(name)
            .send()
            .await
            .map_err(|e| aws_error("DescribeNodegroup", &e))?;
        let ng = out
            .nodegroup()
            .ok_or_else(|| Error::Aws(AwsError::malformed("DescribeNodegroup", &format!("node group {name}"))))?;
        let lt = ng.launch_template();
        let update = ng.update_config();
        Ok(NodegroupInfo {
            status: ng.status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            launch_template_id: lt.and_then(|l| l.id()).map(str::to_owned),
            launch_template_version: lt.and_then(|l| l.version()).map(str::to_owned),
            max_unavailable: update.and_then(|u| u.max_unavailable()),
            max_unavailable_percentage: update.and_then(|u| u.max_unavailable_percentage()),
            update_strategy: update.and_then(|u| u.update_strategy()).map(|s| s.as_str().to_owned()),
            instance_types: ng.instance_types().to_vec(),
            arn: ng.nodegroup_arn().map(str::to_owned),
            tags: ng
                .tags()
                .map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        })
    }

    /// A launch template version (`3`, `$Latest`, `$Default`) resolved to its number and image. Numbered versions
    /// are immutable in EC2, so each is described once and then answered from memory; `$Latest` and `$Default`
    /// move and are always described.
    pub async fn template_version(
        &self,
        region: &str,
        template_id: &str,
        version: &str,
    ) -> Result<Option<(String, Option<String>)>> {
        let number = version.parse::<i64>().ok();
        if let Some(n) = number {
            let key = (region.to_owned(), template_id.to_owned(), n);
            if let Some(data) = self.lock_versions().get(&key) {
                return Ok(Some((n.to_string(), data.image.clone())));
            }
        }
        let out = self
            .clients(region)
            .ec2
            .describe_launch_template_versions()
            .launch_template_id(template_id)
            .versions(version)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) if e.code().is_some_and(|c| c.starts_with("InvalidLaunchTemplate")) => return Ok(None),
            Err(e) => return Err(aws_error("DescribeLaunchTemplateVersions", &e)),
        };
        let Some(found) = out.launch_template_versions().first() else {
            return Ok(None);
        };
        let image = found
            .launch_template_data()
            .and_then(|d| d.image_id())
            .map(str::to_owned);
        let instance_type = found
            .launch_template_data()
            .and_then(|d| d.instance_type())
            .map(|t| t.as_str().to_owned());
        let description = found.version_description().map(str::to_owned);
        let Some(n) = found.version_number() else {
            return Ok(Some((0.to_string(), image)));
        };
        let mut versions = self.lock_versions();
        if versions.len() >= VERSION_CACHE_LIMIT {
            versions.clear();
        }
        versions.insert(
            (region.to_owned(), template_id.to_owned(), n),
            VersionData {
                image: image.clone(),
                instance_type,
                description,
            },
        );
        Ok(Some((n.to_string(), image)))
    }

    /// A launch template version's description (`None` when it has none or does not exist); numbered versions are
    /// read once.
    pub async fn version_description(&self, region: &str, template_id: &str, version: &str) -> Result<Option<String>> {
        let Some((number, _)) = self.template_version(region, template_id, version).await? else {
            return Ok(None);
        };
        let Ok(n) = number.parse::<i64>() else {
            return Ok(None);
        };
        Ok(self
            .lock_versions()
            .get(&(region.to_owned(), template_id.to_owned(), n))
            .and_then(|d| d.description.clone()))
    }

    /// The instance type a launch template version sets, for a version [`Aws::template_version`] has read.
    pub fn template_instance_type(&self, region: &str, template_id: &str, number: &str) -> Option<String> {
        let n = number.parse::<i64>().ok()?;
        self.lock_versions()
            .get(&(region.to_owned(), template_id.to_owned(), n))
            .and_then(|d| d.instance_type.clone())
    }

    /// The architectures EC2 reports for each instance type (`DescribeInstanceTypes`,
    /// `ProcessorInfo.SupportedArchitectures`); a type EC2 does not know is left out. Answers are kept for the
    /// process's life: an instance type's architecture never changes.
    pub async fn instance_architectures(
        &self,
        region: &str,
        types: &[String],
    ) -> Result<std::collections::BTreeMap<String, Vec<String>>> {
        let key = |t: &str| (region.to_owned(), t.to_owned());
        let missing: Vec<String> = {
            let known = self
                .instance_types
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut missing: Vec<String> = types.iter().filter(|t| !known.contains_key(&key(t))).cloned().collect();
            missing.sort();
            missing.dedup();
            missing
        };
        // One call per type: EC2 refuses the whole call when one of several types is unknown.
        for instance_type in missing {
            let out = self
                .clients(region)
                .ec2
                .describe_instance_types()
                .instance_types(aws_sdk_ec2::types::InstanceType::from(instance_type.as_str()))
                .send()
                .await;
            let archs = match out {
                Ok(out) => out.instance_types().first().map(|t| {
                    t.processor_info()
                        .map(|p| {
                            p.supported_architectures()
                                .iter()
                                .map(|a| a.as_str().to_owned())
                                .collect()
                        })
                        .unwrap_or_default()
                }),
                Err(e) if e.code().is_some_and(|c| c.starts_with("InvalidInstanceType")) => None,
                Err(e) => return Err(aws_error("DescribeInstanceTypes", &e)),
            };
            self.instance_types
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(key(&instance_type), archs);
        }
        let known = self
            .instance_types
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(types
            .iter()
            .filter_map(|t| Some((t.clone(), known.get(&key(t))?.clone()?)))
            .collect())
    }

    fn lock_versions(&self) -> std::sync::MutexGuard<'_, HashMap<VersionKey, VersionData>> {
        self.versions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A version this controller made before from `current` with only the image set to `image`
    /// ([`refresh_engine::marker::reusable`]), so a repeated attempt reuses it instead of piling up versions; a
    /// version somebody else made, even with the same image, is never reused.
    pub async fn version_with_image(
        &self,
        region: &str,
        template_id: &str,
        current: &str,
        image: &str,
    ) -> Result<Option<String>> {
        let Ok(current) = current.parse::<i64>() else {
            return Ok(None);
        };
        let mut pages = self
            .clients(region)
            .ec2
            .describe_launch_template_versions()
            .launch_template_id(template_id)
            .min_version((current + 1).to_string())
            .max_results(200)
            .into_paginator()
            .send();
        let mut best: Option<i64> = None;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws_error("DescribeLaunchTemplateVersions", &e))?;
            for v in page.launch_template_versions() {
                let carries = refresh_engine::marker::reusable(
                    v.version_description(),
                    v.launch_template_data().and_then(|d| d.image_id()),
                    &current.to_string(),
                    image,
                );
                if let Some(n) = v.version_number().filter(|n| *n > current && carries) {
                    best = Some(best.map_or(n, |b| b.max(n)));
                }
            }
        }
        Ok(best.map(|n| n.to_string()))
    }

    /// A new launch template version from `source` with only the image changed; returns its number.
    pub async fn create_version(&self, region: &str, template_id: &str, source: &str, image: &str) -> Result<String> {
        let out = self
            .clients(region)
            .ec2
            .create_launch_template_version()
            .launch_template_id(template_id)
            .source_version(source)
            .version_description(refresh_engine::marker::version_description(source, image))
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                    .image_id(image)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| aws_error("CreateLaunchTemplateVersion", &e))?;
        out.launch_template_version()
            .and_then(|v| v.version_number())
            .map(|n| n.to_string())
            .ok_or_else(|| Error::Aws(AwsError::malformed("CreateLaunchTemplateVersion", "version number")))
    }

    /// Starts applying the update config (`maxUnavailable` or percentage, strategy) to a node group; returns the
    /// update ID (EKS applies it asynchronously: track it with DescribeUpdate like a version update).
    pub async fn update_nodegroup_config(
        &self,
        region: &str,
        cluster: &str,
        name: &str,
        config: UpdateConfig,
    ) -> Result<String> {
        let update = NodegroupUpdateConfig::builder()
            .set_max_unavailable(config.max_unavailable)
            .set_max_unavailable_percentage(config.max_unavailable_percentage)
            .set_update_strategy(config.strategy.map(NodegroupUpdateStrategies::from))
            .build();
        let out = self
            .clients(region)
            .eks
            .update_nodegroup_config()
            .cluster_name(cluster)
            .nodegroup_name(name)
            .update_config(update)
            .send()
            .await
            .map_err(|e| aws_error("UpdateNodegroupConfig", &e))?;
        out.update()
            .and_then(|u| u.id())
            .map(str::to_owned)
            .ok_or_else(|| Error::Aws(AwsError::malformed("UpdateNodegroupConfig", "update ID")))
    }

    /// Starts a node group update to a launch template version; returns the update ID.
    pub async fn update_nodegroup_version(
        &self,
        region: &str,
        cluster: &str,
        name: &str,
        template_id: &str,
        version: &str,
        force: bool,
    ) -> Result<String> {
        let out = self
            .clients(region)
            .eks
            .update_nodegroup_version()
            .cluster_name(cluster)
            .nodegroup_name(name)
            .launch_template(EksLaunchTemplate::builder().id(template_id).version(version).build())
            .force(force)
            .send()
            .await
            .map_err(|e| aws_error("UpdateNodegroupVersion", &e))?;
        out.update()
            .and_then(|u| u.id())
            .map(str::to_owned)
            .ok_or_else(|| Error::Aws(AwsError::malformed("UpdateNodegroupVersion", "update ID")))
    }

    /// Where a node group update stands.
    pub async fn describe_update(&self, region: &str, cluster: &str, name: &str, id: &str) -> Result<Progress> {
        let out = self
            .clients(region)
            .eks
            .describe_update()
            .name(cluster)
            .nodegroup_name(name)
            .update_id(id)
            .send()
            .await
            .map_err(|e| aws_error("DescribeUpdate", &e))?;
        let update = out.update();
        let errors = update.map(update_errors).unwrap_or_default();
        Ok(match update.and_then(|u| u.status()).map(|s| s.as_str()) {
            Some("Successful") => Progress::Successful,
            Some("Failed") => Progress::Failed(if errors.is_empty() {
                "update failed".into()
            } else {
                errors
            }),
            Some("Cancelled") => Progress::Cancelled("update cancelled".into()),
            _ => Progress::Running,
        })
    }

    /// The node group's updates, running and ended (ListUpdates lists both), newest first.
    async fn nodegroup_updates(&self, region: &str, cluster: &str, name: &str) -> Result<Vec<UpdateRecord>> {
        let eks = self.clients(region).eks;
        let mut pages = eks
            .list_updates()
            .name(cluster)
            .nodegroup_name(name)
            .into_paginator()
            .send();
        let mut ids = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws_error("ListUpdates", &e))?;
            ids.extend(page.update_ids().iter().cloned());
        }
        let mut out = Vec::new();
        for id in ids {
            let described = eks
                .describe_update()
                .name(cluster)
                .nodegroup_name(name)
                .update_id(&id)
                .send()
                .await
                .map_err(|e| aws_error("DescribeUpdate", &e))?;
            let Some(u) = described.update() else { continue };
            out.push(UpdateRecord {
                id,
                status: u.status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                version_update: u.r#type().map(|t| t.as_str()) == Some("VersionUpdate"),
                version: u
                    .params()
                    .iter()
                    .find(|p| p.r#type().map(|t| t.as_str()) == Some("LaunchTemplateVersion"))
                    .and_then(|p| p.value())
                    .map(str::to_owned),
                started: u.created_at().and_then(|t| Timestamp::from_second(t.secs()).ok()),
                message: update_errors(u),
            });
        }
        // ListUpdates documents no order.
        out.sort_by_key(|u| std::cmp::Reverse(u.started));
        Ok(out)
    }

    /// A version update running on a node group: its ID and the launch template version it rolls onto (so the
    /// caller can tell ours from somebody else's). Found after a restart that lost the status write.
    pub async fn running_version_update(
        &self,
        region: &str,
        cluster: &str,
        name: &str,
    ) -> Result<Option<(String, Option<String>)>> {
        Ok(self
            .nodegroup_updates(region, cluster, name)
            .await?
            .into_iter()
            .find(|u| u.status == "InProgress" && u.version_update)
            .map(|u| (u.id, u.version)))
    }

    /// The newest update or instance refresh onto launch template `version` that ended `Failed` or `Cancelled`
    /// (rolled back) after `since`: (ID, what AWS said). Used before re-issuing an update onto a version made
    /// earlier, so an update that failed while the controller was down halts instead of being issued again.
    pub async fn ended_failure_onto(
        &self,
        kind: NodeGroupKind,
        region: &str,
        cluster: &str,
        name: &str,
        version: &str,
        since: Option<Timestamp>,
    ) -> Result<Option<(String, String)>> {
        let records = match kind {
            NodeGroupKind::Managed => self.nodegroup_updates(region, cluster, name).await?,
            NodeGroupKind::SelfManaged => self.refreshes(region, name, None).await?,
        };
        Ok(records
            .into_iter()
            .filter(|r| r.version.as_deref() == Some(version))
            .filter(|r| since.is_none_or(|since| r.started.is_some_and(|t| t > since)))
            .find(|r| {
                matches!(
                    r.status.as_str(),
                    "Failed" | "Cancelled" | "RollbackSuccessful" | "RollbackFailed"
                )
            })
            .map(|r| (r.id, r.message)))
    }

    /// A self-managed Auto Scaling group's launch template; `None` when the group does not exist.
    pub async fn describe_asg(&self, region: &str, name: &str) -> Result<Option<AsgInfo>> {
        let out = self
            .clients(region)
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .map_err(|e| aws_error("DescribeAutoScalingGroups", &e))?;
        Ok(out.auto_scaling_groups().first().map(|g| {
            let lt = controller_runtime::aws::asg_template(g);
            let override_types = g
                .mixed_instances_policy()
                .and_then(|m| m.launch_template())
                .map(|t| {
                    t.overrides()
                        .iter()
                        .filter_map(|o| o.instance_type())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            AsgInfo {
                launch_template_id: lt.and_then(|l| l.launch_template_id()).map(str::to_owned),
                launch_template_version: lt.and_then(|l| l.version()).map(str::to_owned),
                override_types,
                tags: g
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
                    .collect(),
            }
        }))
    }

    /// Every version of a launch template, every page.
    pub async fn template_versions(&self, region: &str, template_id: &str) -> Result<Vec<VersionInfo>> {
        let mut pages = self
            .clients(region)
            .ec2
            .describe_launch_template_versions()
            .launch_template_id(template_id)
            .max_results(200)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| aws_error("DescribeLaunchTemplateVersions", &e))?;
            out.extend(page.launch_template_versions().iter().filter_map(|v| {
                Some(VersionInfo {
                    number: v.version_number()?,
                    description: v.version_description().map(str::to_owned),
                    default: v.default_version().unwrap_or(false),
                })
            }));
        }
        Ok(out)
    }

    /// Numbered versions of `template_id` that something in the region launches from: Auto Scaling groups (their
    /// launch template or mixed-instances policy) and the EKS managed node groups of every cluster.
    pub async fn template_versions_in_use(&self, region: &str, template_id: &str) -> Result<Vec<i64>> {
        let clients = self.clients(region);
        let mut users = controller_runtime::aws::asg_template_users(&clients.autoscaling).await?;
        users.extend(controller_runtime::aws::nodegroup_template_users(&clients.eks).await?);
        Ok(users
            .into_iter()
            .filter(|u| u.template_id.as_deref() == Some(template_id))
            .filter_map(|u| u.version.parse().ok())
            .collect())
    }

    /// Deletes launch template versions (200 per call); returns how many were deleted.
    pub async fn delete_versions(&self, region: &str, template_id: &str, versions: &[i64]) -> Result<usize> {
        let mut deleted = 0;
        for chunk in versions.chunks(200) {
            let out = self
                .clients(region)
                .ec2
                .delete_launch_template_versions()
                .launch_template_id(template_id)
                .set_versions(Some(chunk.iter().map(ToString::to_string).collect()))
                .send()
                .await
                .map_err(|e| aws_error("DeleteLaunchTemplateVersions", &e))?;
            deleted += out.successfully_deleted_launch_template_versions().len();
            for failed in out.unsuccessfully_deleted_launch_template_versions() {
                tracing::warn!(
                    template = %template_id,
                    version = failed.version_number().unwrap_or_default(),
                    error = failed.response_error().and_then(|e| e.message()).unwrap_or_default(),
                    "a launch template version was not deleted"
                );
            }
        }
        Ok(deleted)
    }

    /// Auto Scaling groups of the region that launch from `template_id` at `$Latest` (a new version reaches them at
    /// their next scale-out).
    pub async fn asgs_on_latest(&self, region: &str, template_id: &str) -> Result<Vec<String>> {
        Ok(self
            .asgs_using(region, template_id)
            .await?
            .into_iter()
            .filter(|(_, version)| version.eq_ignore_ascii_case("$Latest"))
            .map(|(name, _)| name)
            .collect())
    }

    /// Every Auto Scaling group of the region that launches from `template_id` (its launch template or
    /// mixed-instances policy), with the version it names (`3`, `$Latest`, `$Default`).
    async fn asgs_using(&self, region: &str, template_id: &str) -> Result<Vec<(String, String)>> {
        let users = controller_runtime::aws::asg_template_users(&self.clients(region).autoscaling).await?;
        Ok(users
            .into_iter()
            .filter(|u| u.template_id.as_deref() == Some(template_id))
            .filter_map(|u| Some((u.asg?, u.version)))
            .collect())
    }

    /// Whether an instance refresh of `asg` onto launch template `version` succeeded (its instances run it).
    pub async fn refreshed_onto(&self, region: &str, asg: &str, version: &str) -> Result<bool> {
        Ok(self
            .refreshes(region, asg, None)
            .await?
            .iter()
            .any(|r| r.status == "Successful" && r.version.as_deref() == Some(version)))
    }

    /// Writes one tag on a managed node group (TagResource on its ARN).
    pub async fn tag_nodegroup(&self, region: &str, arn: &str, key: &str, value: &str) -> Result<()> {
        self.clients(region)
            .eks
            .tag_resource()
            .resource_arn(arn)
            .tags(key, value)
            .send()
            .await
            .map_err(|e| aws_error("TagResource", &e))?;
        Ok(())
    }

    /// Writes one tag on an Auto Scaling group (not propagated to its instances).
    pub async fn tag_asg(&self, region: &str, name: &str, key: &str, value: &str) -> Result<()> {
        let tag = aws_sdk_autoscaling::types::Tag::builder()
            .resource_id(name)
            .resource_type("auto-scaling-group")
            .key(key)
            .value(value)
            .propagate_at_launch(false)
            .build();
        self.clients(region)
            .autoscaling
            .create_or_update_tags()
            .tags(tag)
            .send()
            .await
            .map_err(|e| aws_error("CreateOrUpdateTags", &e))?;
        Ok(())
    }

    /// Starts an instance refresh onto a launch template version; returns its ID.
    pub async fn start_refresh(
        &self,
        region: &str,
        asg: &str,
        template_id: &str,
        version: &str,
        prefs: RefreshPrefs,
    ) -> Result<String> {
        let out = self
            .clients(region)
            .autoscaling
            .start_instance_refresh()
            .auto_scaling_group_name(asg)
            .desired_configuration(
                DesiredConfiguration::builder()
                    .launch_template(
                        LaunchTemplateSpecification::builder()
                            .launch_template_id(template_id)
                            .version(version)
                            .build(),
                    )
                    .build(),
            )
            .preferences(
                RefreshPreferences::builder()
                    .min_healthy_percentage(prefs.min_healthy_percentage)
                    .set_instance_warmup(prefs.instance_warmup)
                    .skip_matching(prefs.skip_matching)
                    .auto_rollback(prefs.auto_rollback)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| aws_error("StartInstanceRefresh", &e))?;
        out.instance_refresh_id()
            .map(str::to_owned)
            .ok_or_else(|| Error::Aws(AwsError::malformed("StartInstanceRefresh", "refresh ID")))
    }

    /// Instance refreshes of a group, newest first.
    async fn refreshes(&self, region: &str, asg: &str, id: Option<&str>) -> Result<Vec<UpdateRecord>> {
        let out = self
            .clients(region)
            .autoscaling
            .describe_instance_refreshes()
            .auto_scaling_group_name(asg)
            .set_instance_refresh_ids(id.map(|i| vec![i.to_owned()]))
            .send()
            .await
            .map_err(|e| aws_error("DescribeInstanceRefreshes", &e))?;
        Ok(out
            .instance_refreshes()
            .iter()
            .map(|r| UpdateRecord {
                id: r.instance_refresh_id().unwrap_or_default().to_owned(),
                status: r.status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
                version_update: true,
                version: r
                    .desired_configuration()
                    .and_then(|d| d.launch_template())
                    .and_then(|t| t.version())
                    .map(str::to_owned),
                started: r.start_time().and_then(|t| Timestamp::from_second(t.secs()).ok()),
                message: r.status_reason().unwrap_or_default().to_owned(),
            })
            .collect())
    }

    /// Where an instance refresh stands.
    pub async fn describe_refresh(&self, region: &str, asg: &str, id: &str) -> Result<Progress> {
        let refreshes = self.refreshes(region, asg, Some(id)).await?;
        let Some(UpdateRecord {
            status,
            message: reason,
            ..
        }) = refreshes.into_iter().find(|r| r.id == id)
        else {
            return Ok(Progress::Failed(format!(
                "instance refresh {id} is not known to Auto Scaling"
            )));
        };
        Ok(match status.as_str() {
            "Successful" => Progress::Successful,
            "Failed" => Progress::Failed(reason),
            "Cancelled" | "RollbackSuccessful" | "RollbackFailed" => Progress::Cancelled(format!("{status}: {reason}")),
            _ => Progress::Running,
        })
    }

    /// An instance refresh running on a group, if any: its ID and the launch template version of its desired
    /// configuration (none when it has no desired configuration: not ours).
    pub async fn active_refresh(&self, region: &str, asg: &str) -> Result<Option<(String, Option<String>)>> {
        Ok(self
            .refreshes(region, asg, None)
            .await?
            .into_iter()
            .find(|r| ACTIVE_REFRESH.contains(&r.status.as_str()))
            .map(|r| (r.id, r.version)))
    }
}
