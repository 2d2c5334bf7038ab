//! What the rollout needs from AWS, named by capability: an image catalog, EKS managed node groups, launch
//! templates, and Auto Scaling groups with their instance refreshes. [`crate::aws::Aws`] implements them over the
//! SDK; the reconcile-level tests implement them in memory (`crate::fake`), recording calls and injecting faults,
//! so every rollout decision can be driven in milliseconds and the end-to-end tests prove the SDK wiring.
//!
//! Every method returns the typed [`crate::error::Error`] whose AWS variant carries
//! [`controller_runtime::aws::AwsError`] (classified in one place).

use std::collections::BTreeMap;

use ami_tags::Image;
use api_types::{AmiFilter, ami_refresher::NodeGroupKind};
use futures::future::BoxFuture;
use jiff::Timestamp;

use crate::{
    aws::{AsgInfo, Aws, NodegroupInfo, Progress, RefreshPrefs, UpdateConfig, VersionInfo},
    error::Result,
};

/// An update or instance refresh running on a group: its ID and the launch template version it rolls onto.
pub type Running = Option<(String, Option<String>)>;

/// A launch template version resolved to its number and image.
pub type Resolved = Option<(String, Option<String>)>;

/// AMIs as EC2 describes them, and what instance types can run them.
pub trait ImageCatalog: Send + Sync {
    /// Images matching the filters (plus `tag:` filters) from the given owners, every page.
    fn images<'a>(
        &'a self,
        region: &'a str,
        filters: &'a [AmiFilter],
        tag_filters: &'a [(String, String)],
        owners: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Image>>>;
    /// One image by ID; `None` when EC2 does not know it (or it is not visible to this account).
    fn image<'a>(&'a self, region: &'a str, id: &'a str, owners: &'a [String]) -> BoxFuture<'a, Result<Option<Image>>>;
    /// The owner account of an AMI visible to this account (`None`: no such AMI).
    fn image_owner<'a>(&'a self, region: &'a str, id: &'a str) -> BoxFuture<'a, Result<Option<String>>>;
    /// The architectures of each instance type EC2 knows (unknown types are left out).
    fn instance_architectures<'a>(
        &'a self,
        region: &'a str,
        types: &'a [String],
    ) -> BoxFuture<'a, Result<BTreeMap<String, Vec<String>>>>;
}

/// EKS managed node groups and their updates.
pub trait NodeGroups: Send + Sync {
    /// Every node group of a cluster.
    fn list_nodegroups<'a>(&'a self, region: &'a str, cluster: &'a str) -> BoxFuture<'a, Result<Vec<String>>>;
    /// One node group as DescribeNodegroup reports it.
    fn describe_nodegroup<'a>(
        &'a self,
        region: &'a str,
        cluster: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<NodegroupInfo>>;
    /// Starts an update config change; returns the update ID.
    fn update_nodegroup_config<'a>(
        &'a self,
        region: &'a str,
        cluster: &'a str,
        name: &'a str,
        config: UpdateConfig,
    ) -> BoxFuture<'a, Result<String>>;
    /// Starts a version update onto a launch template version; returns the update ID.
    fn update_nodegroup_version<'a>(
        &'a self,
        region: &'a str,
        cluster: &'a str,
        name: &'a str,
        template_id: &'a str,
        version: &'a str,
        force: bool,
    ) -> BoxFuture<'a, Result<String>>;
    /// Where a node group update stands.
    fn describe_update<'a>(
        &'a self,
        region: &'a str,
        cluster: &'a str,
        name: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Progress>>;
    /// A version update running on the node group: its ID and the launch template version it rolls onto.
    fn running_version_update<'a>(
        &'a self,
        region: &'a str,
        cluster: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Running>>;
    /// The newest update (managed) or instance refresh (self-managed) onto `version` that ended failed or cancelled
    /// after `since`: (ID, what AWS said).
    fn ended_failure_onto<'a>(
        &'a self,
        kind: NodeGroupKind,
        region: &'a str,
        cluster: &'a str,
        name: &'a str,
        version: &'a str,
        since: Option<Timestamp>,
    ) -> BoxFuture<'a, Result<Option<(String, String)>>>;
    /// Writes one tag on a node group (by ARN).
    fn tag_nodegroup<'a>(
        &'a self,
        region: &'a str,
        arn: &'a str,
        key: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<()>>;
}

/// Launch templates and their versions.
pub trait LaunchTemplates: Send + Sync {
    /// A version (`3`, `$Latest`, `$Default`) resolved to its number and image; `None` when it does not exist.
    fn template_version<'a>(
        &'a self,
        region: &'a str,
        template_id: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Resolved>>;
    /// A version's description.
    fn version_description<'a>(
        &'a self,
        region: &'a str,
        template_id: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>>>;
    /// The instance type a version sets, for a version [`LaunchTemplates::template_version`] has read.
    fn template_instance_type(&self, region: &str, template_id: &str, number: &str) -> Option<String>;
    /// A version this controller made from `current` with only the image set to `image`.
    fn version_with_image<'a>(
        &'a self,
        region: &'a str,
        template_id: &'a str,
        current: &'a str,
        image: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>>>;
    /// A new version from `source` with only the image changed; returns its number.
    fn create_version<'a>(
        &'a self,
        region: &'a str,
        template_id: &'a str,
        source: &'a str,
        image: &'a str,
    ) -> BoxFuture<'a, Result<String>>;
    /// Every version of a template.
    fn template_versions<'a>(
        &'a self,
        region: &'a str,
        template_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<VersionInfo>>>;
    /// Numbered versions of the template that an Auto Scaling group or node group launches from.
    fn template_versions_in_use<'a>(&'a self, region: &'a str, template_id: &'a str)
    -> BoxFuture<'a, Result<Vec<i64>>>;
    /// Deletes versions; returns how many were deleted.
    fn delete_versions<'a>(
        &'a self,
        region: &'a str,
        template_id: &'a str,
        versions: &'a [i64],
    ) -> BoxFuture<'a, Result<usize>>;
    /// Auto Scaling groups that launch from the template at `$Latest`.
    fn asgs_on_latest<'a>(&'a self, region: &'a str, template_id: &'a str) -> BoxFuture<'a, Result<Vec<String>>>;
}

/// Self-managed Auto Scaling groups and their instance refreshes.
pub trait InstanceRefreshes: Send + Sync {
    /// A group's launch template; `None` when the group does not exist.
    fn describe_asg<'a>(&'a self, region: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<AsgInfo>>>;
    /// Whether a refresh of `asg` onto `version` succeeded.
    fn refreshed_onto<'a>(&'a self, region: &'a str, asg: &'a str, version: &'a str) -> BoxFuture<'a, Result<bool>>;
    /// Writes one tag on a group.
    fn tag_asg<'a>(&'a self, region: &'a str, name: &'a str, key: &'a str, value: &'a str)
    -> BoxFuture<'a, Result<()>>;
    /// Starts an instance refresh onto a version; returns its ID.
    fn start_refresh<'a>(
        &'a self,
        region: &'a str,
        asg: &'a str,
        template_id: &'a str,
        version: &'a str,
        prefs: RefreshPrefs,
    ) -> BoxFuture<'a, Result<String>>;
    /// Where an instance refresh stands.
    fn describe_refresh<'a>(&'a self, region: &'a str, asg: &'a str, id: &'a str) -> BoxFuture<'a, Result<Progress>>;
    /// The refresh running on a group, if any: its ID and the version of its desired configuration.
    fn active_refresh<'a>(&'a self, region: &'a str, asg: &'a str) -> BoxFuture<'a, Result<Running>>;
}

/// Everything the rollout uses.
pub trait RolloutAws: ImageCatalog + NodeGroups + LaunchTemplates + InstanceRefreshes + std::fmt::Debug {}

impl<T: ImageCatalog + NodeGroups + LaunchTemplates + InstanceRefreshes + std::fmt::Debug> RolloutAws for T {}

impl ImageCatalog for Aws {
    fn images<'a>(
        &'a self,
        region: &'a str,
        filters: &'a [AmiFilter],
        tag_filters: &'a [(String, String)],
        owners: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Image>>> {
        Box::pin(Aws::images(self, region, filters, tag_filters, owners))
    }
    fn image<'a>(&'a self, region: &'a str, id: &'a str, owners: &'a [String]) -> BoxFuture<'a, Result<Option<Image>>> {
        Box::pin(Aws::image(self, region, id, owners))
    }
    fn image_owner<'a>(&'a self, region: &'a str, id: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(Aws::image_owner(self, region, id))
    }
    fn instance_architectures<'a>(
        &'a self,
        region: &'a str,
        types: &'a [String],
    ) -> BoxFuture<'a, Result<BTreeMap<String, Vec<String>>>> {
        Box::pin(Aws::instance_architectures(self, region, types))
    }
}

impl NodeGroups for Aws {
    fn list_nodegroups<'a>(&'a self, region: &'a str, cluster: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(Aws::list_nodegroups(self, region, cluster))
    }
    fn describe_nodegroup<'a>(
        &'a self,
        region: &'a str,
        cluster: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<NodegroupInfo>> {
        Box::pin(Aws::describe_nodegroup(self, region, cluster, name))
    }
    fn update_nodegroup_config<'a>(
        &'a self,
        region: &'a str,
        cluster: &'a str,
        name: &'a str,
        config: UpdateConfig,
    ) -> BoxFuture<'a, Result<String>> {
        Box::pin(Aws::update_nodegroup_config(self, region, cluster, name, config))
    }
    fn update_nodegroup_version<'a>(
        &'a self,
        region: &'a str,
        cluster: &'a str,
        name: &'a str,
        template_id: &'a str,
        version: &'a str,
        force: bool,
    ) -> BoxFuture<'a, Result<String>> {
        Box::pin(Aws::update_nodegroup_version(
            self,
            region,
            cluster,
            name,
            template_id,
            version,
            force,
        ))
    }
    fn describe_update<'a>(
        &'a self,
        region: &'a str,
        cluster: &'a str,
        name: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Progress>> {
        Box::pin(Aws::describe_update(self, region, cluster, name, id))
    }
    fn running_version_update<'a>(
        &'a self,
        region: &'a str,
        cluster: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Running>> {
        Box::pin(Aws::running_version_update(self, region, cluster, name))
    }
    fn ended_failure_onto<'a>(
        &'a self,
        kind: NodeGroupKind,
        region: &'a str,
        cluster: &'a str,
        name: &'a str,
        version: &'a str,
        since: Option<Timestamp>,
    ) -> BoxFuture<'a, Result<Option<(String, String)>>> {
        Box::pin(Aws::ended_failure_onto(
            self, kind, region, cluster, name, version, since,
        ))
    }
    fn tag_nodegroup<'a>(
        &'a self,
        region: &'a str,
        arn: &'a str,
        key: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(Aws::tag_nodegroup(self, region, arn, key, value))
    }
}

impl LaunchTemplates for Aws {
    fn template_version<'a>(
        &'a self,
        region: &'a str,
        template_id: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Resolved>> {
        Box::pin(Aws::template_version(self, region, template_id, version))
    }
    fn version_description<'a>(
        &'a self,
        region: &'a str,
        template_id: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(Aws::version_description(self, region, template_id, version))
    }
    fn template_instance_type(&self, region: &str, template_id: &str, number: &str) -> Option<String> {
        Aws::template_instance_type(self, region, template_id, number)
    }
    fn version_with_image<'a>(
        &'a self,
        region: &'a str,
        template_id: &'a str,
        current: &'a str,
        image: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(Aws::version_with_image(self, region, template_id, current, image))
    }
    fn create_version<'a>(
        &'a self,
        region: &'a str,
        template_id: &'a str,
        source: &'a str,
        image: &'a str,
    ) -> BoxFuture<'a, Result<String>> {
        Box::pin(Aws::create_version(self, region, template_id, source, image))
    }
    fn template_versions<'a>(
        &'a self,
        region: &'a str,
        template_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<VersionInfo>>> {
        Box::pin(Aws::template_versions(self, region, template_id))
    }
    fn template_versions_in_use<'a>(
        &'a self,
        region: &'a str,
        template_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<i64>>> {
        Box::pin(Aws::template_versions_in_use(self, region, template_id))
    }
    fn delete_versions<'a>(
        &'a self,
        region: &'a str,
        template_id: &'a str,
        versions: &'a [i64],
    ) -> BoxFuture<'a, Result<usize>> {
        Box::pin(Aws::delete_versions(self, region, template_id, versions))
    }
    fn asgs_on_latest<'a>(&'a self, region: &'a str, template_id: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(Aws::asgs_on_latest(self, region, template_id))
    }
}

impl InstanceRefreshes for Aws {
    fn describe_asg<'a>(&'a self, region: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<AsgInfo>>> {
        Box::pin(Aws::describe_asg(self, region, name))
    }
    fn refreshed_onto<'a>(&'a self, region: &'a str, asg: &'a str, version: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(Aws::refreshed_onto(self, region, asg, version))
    }
    fn tag_asg<'a>(
        &'a self,
        region: &'a str,
        name: &'a str,
        key: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(Aws::tag_asg(self, region, name, key, value))
    }
    fn start_refresh<'a>(
        &'a self,
        region: &'a str,
        asg: &'a str,
        template_id: &'a str,
        version: &'a str,
        prefs: RefreshPrefs,
    ) -> BoxFuture<'a, Result<String>> {
        Box::pin(Aws::start_refresh(self, region, asg, template_id, version, prefs))
    }
    fn describe_refresh<'a>(&'a self, region: &'a str, asg: &'a str, id: &'a str) -> BoxFuture<'a, Result<Progress>> {
        Box::pin(Aws::describe_refresh(self, region, asg, id))
    }
    fn active_refresh<'a>(&'a self, region: &'a str, asg: &'a str) -> BoxFuture<'a, Result<Running>> {
        Box::pin(Aws::active_refresh(self, region, asg))
    }
}
