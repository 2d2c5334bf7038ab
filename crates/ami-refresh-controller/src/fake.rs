//! An in-memory AWS for the reconcile-level tests: EKS managed node groups on launch templates, AMIs, updates that
//! run until the test ends them, a log of the calls made, and faults injected per operation.
//!
//! What it assumes of AWS (each checked against the API reference; a test that needs more must model it here, never
//! make the fake friendlier than AWS):
//! - UpdateNodegroupVersion and UpdateNodegroupConfig on a node group with an update in progress are refused with
//!   `ResourceInUseException`; the node group runs the new version only once its update ends `Successful`.
//! - DescribeNodegroup / DescribeUpdate of an unknown node group or update: `ResourceNotFoundException`.
//! - DescribeLaunchTemplateVersions of an unknown template: `InvalidLaunchTemplateId.NotFound` (answered as `None`
//!   by the production adapter, so here too); `$Latest` is the highest number, `$Default` version 1.
//! - DescribeImages filters as [`aws_sim::filters`] evaluates them (`name`, `owner-id`, `tag:<key>`; any other
//!   filter is refused with `InvalidParameterValue`, never ignored); owners `self` means this account.
//! - Self-managed Auto Scaling groups and instance refreshes are not modelled: no group exists.

use std::{collections::BTreeMap, sync::Mutex};

use ami_tags::Image;
use api_types::{AmiFilter, ami_refresher::NodeGroupKind};
use controller_runtime::aws::AwsError;
use futures::future::BoxFuture;
use jiff::Timestamp;

use crate::{
    aws::{AsgInfo, NodegroupInfo, Progress, RefreshPrefs, UpdateConfig, VersionInfo},
    capabilities::{ImageCatalog, InstanceRefreshes, LaunchTemplates, NodeGroups, Resolved, Running},
    error::{Error, Result},
};

/// This fake's account.
pub const ACCOUNT: &str = "111122223333";

/// One launch template version.
#[derive(Clone, Debug)]
pub struct Version {
    /// Its number.
    pub number: i64,
    /// Its AMI.
    pub image: String,
    /// Its description.
    pub description: Option<String>,
    /// Its instance type.
    pub instance_type: Option<String>,
}

/// One managed node group.
#[derive(Clone, Debug)]
pub struct Nodegroup {
    /// Its launch template.
    pub template_id: String,
    /// The version it runs.
    pub version: String,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

/// One node group update.
#[derive(Clone, Debug)]
pub struct Update {
    /// Its ID.
    pub id: String,
    /// (cluster, node group).
    pub group: (String, String),
    /// The version it rolls onto (`None`: a config update).
    pub version: Option<String>,
    /// `InProgress`, `Successful`, `Failed`, `Cancelled`.
    pub status: String,
    /// When it started.
    pub started: Timestamp,
    /// What AWS says about a failure.
    pub message: String,
}

#[derive(Debug, Default)]
struct World {
    images: Vec<(Image, String)>,
    nodegroups: BTreeMap<(String, String), Nodegroup>,
    templates: BTreeMap<String, Vec<Version>>,
    updates: Vec<Update>,
    next: u32,
}

/// The in-memory AWS.
#[derive(Debug, Default)]
pub struct FakeAws {
    world: Mutex<World>,
    script: aws_sim::script::Script<AwsError>,
}

fn not_found(operation: &'static str, code: &str, what: &str) -> Error {
    Error::Aws(AwsError::from_code(operation, code, 404, &format!("{what} not found")))
}

impl FakeAws {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    // The call log and faults live in `aws_sim::script::Script`, shared by both fakes; the wrappers here only turn
    // its errors into this controller's own `Error` (each controller has its own error enum).
    /// Records the call and answers the next fault injected for it, if any.
    fn enter(&self, operation: &'static str) -> Result<()> {
        self.script.enter(operation).map_err(Error::Aws)
    }

    /// The next `times` calls of `operation` fail with `code` and HTTP `status`, classified as production does.
    pub fn fail(&self, operation: &'static str, code: &str, status: u16, times: usize) {
        let fault = AwsError::from_code(operation, code, status, "injected by the test");
        self.script.fail(operation, fault, times);
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<&'static str> {
        self.script.calls()
    }

    /// How many times `operation` was called.
    pub fn count(&self, operation: &str) -> usize {
        self.script.count(operation)
    }

    /// An AMI of this account.
    pub fn add_image(&self, image: Image) {
        self.world().images.push((image, ACCOUNT.to_owned()));
    }

    /// A node group of `cluster` on a new launch template whose version 1 carries `image`.
    pub fn add_nodegroup(&self, cluster: &str, name: &str, image: &str) {
        let mut world = self.world();
        world.next += 1;
        let template_id = format!("lt-{:017x}", world.next);
        world.templates.insert(
            template_id.clone(),
            vec![Version {
                number: 1,
                image: image.to_owned(),
                description: None,
                instance_type: Some("t3.medium".into()),
            }],
        );
        world.nodegroups.insert(
            (cluster.to_owned(), name.to_owned()),
            Nodegroup {
                template_id,
                version: "1".into(),
                tags: BTreeMap::new(),
            },
        );
    }

    /// The updates so far.
    pub fn updates(&self) -> Vec<Update> {
        self.world().updates.clone()
    }

    /// Ends an update `Successful` (the node group then runs its version), `Failed` or `Cancelled`.
    pub fn finish(&self, id: &str, status: &str, message: &str) {
        let mut world = self.world();
        let Some(update) = world.updates.iter_mut().find(|u| u.id == id) else {
            panic!("no update {id}");
        };
        update.status = status.to_owned();
        update.message = message.to_owned();
        let (group, version) = (update.group.clone(), update.version.clone());
        if let (Some(version), "Successful") = (version, status)
            && let Some(ng) = world.nodegroups.get_mut(&group)
        {
            ng.version = version;
        }
    }

    /// The AMI a node group runs (its version's image).
    pub fn running_image(&self, cluster: &str, name: &str) -> String {
        let world = self.world();
        let ng = &world.nodegroups[&(cluster.to_owned(), name.to_owned())];
        world.templates[&ng.template_id]
            .iter()
            .find(|v| v.number.to_string() == ng.version)
            .map(|v| v.image.clone())
            .unwrap_or_default()
    }

    fn start_update(
        &self,
        operation: &'static str,
        cluster: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<String> {
        self.enter(operation)?;
        let mut world = self.world();
        let group = (cluster.to_owned(), name.to_owned());
        if !world.nodegroups.contains_key(&group) {
            return Err(not_found(operation, "ResourceNotFoundException", name));
        }
        if world
            .updates
            .iter()
            .any(|u| u.group == group && u.status == "InProgress")
        {
            return Err(Error::Aws(AwsError::from_code(
                operation,
                "ResourceInUseException",
                409,
                &format!("node group {name} has an update in progress"),
            )));
        }
        world.next += 1;
        let id = format!("update-{}", world.next);
        world.updates.push(Update {
            id: id.clone(),
            group,
            version: version.map(str::to_owned),
            status: "InProgress".into(),
            started: controller_runtime::clock::now(),
            message: String::new(),
        });
        Ok(id)
    }

    fn version(world: &World, template_id: &str, version: &str) -> Option<Version> {
        let versions = world.templates.get(template_id)?;
        match version {
            "$Latest" => versions.iter().max_by_key(|v| v.number).cloned(),
            "$Default" => versions.iter().find(|v| v.number == 1).cloned(),
            n => versions.iter().find(|v| v.number.to_string() == n).cloned(),
        }
    }
}

fn ready<'a, T: Send + 'a>(value: Result<T>) -> BoxFuture<'a, Result<T>> {
    Box::pin(std::future::ready(value))
}

impl ImageCatalog for FakeAws {
    fn images<'a>(
        &'a self,
        _region: &'a str,
        filters: &'a [AmiFilter],
        tag_filters: &'a [(String, String)],
        owners: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Image>>> {
        let answer = self.enter("DescribeImages").and_then(|()| {
            let mut checks: Vec<(String, Vec<String>)> =
                filters.iter().map(|f| (f.name.clone(), f.values.clone())).collect();
            checks.extend(tag_filters.iter().map(|(k, v)| (k.clone(), vec![v.clone()])));
            let world = self.world();
            let mut out = Vec::new();
            for (image, owner) in &world.images {
                let described = aws_sim::filters::Described {
                    name: image.name.as_deref(),
                    owner,
                    tags: &image.tags,
                };
                match aws_sim::filters::matches(described, &checks, owners, ACCOUNT) {
                    Ok(true) => out.push(image.clone()),
                    Ok(false) => {}
                    Err(why) => {
                        return Err(Error::Aws(AwsError::from_code(
                            "DescribeImages",
                            "InvalidParameterValue",
                            400,
                            &format!("{why} by the fake"),
                        )));
                    }
                }
            }
            Ok(out)
        });
        ready(answer)
    }

    fn image<'a>(
        &'a self,
        _region: &'a str,
        id: &'a str,
        owners: &'a [String],
    ) -> BoxFuture<'a, Result<Option<Image>>> {
        let answer = self.enter("DescribeImages").map(|()| {
            self.world()
                .images
                .iter()
                .find(|(i, owner)| {
                    i.id == id
                        && (owners.is_empty() || owners.iter().any(|o| o == owner || (o == "self" && owner == ACCOUNT)))
                })
                .map(|(i, _)| i.clone())
        });
        ready(answer)
    }

    fn image_owner<'a>(&'a self, _region: &'a str, id: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        let answer = self.enter("DescribeImages").map(|()| {
            self.world()
                .images
                .iter()
                .find(|(i, _)| i.id == id)
                .map(|(_, owner)| owner.clone())
        });
        ready(answer)
    }

    fn instance_architectures<'a>(
        &'a self,
        _region: &'a str,
        types: &'a [String],
    ) -> BoxFuture<'a, Result<BTreeMap<String, Vec<String>>>> {
        let answer = self.enter("DescribeInstanceTypes").map(|()| {
            types
                .iter()
                .filter(|t| t.starts_with("t3.") || t.starts_with("m5."))
                .map(|t| (t.clone(), vec!["x86_64".to_owned()]))
                .collect()
        });
        ready(answer)
    }
}

impl NodeGroups for FakeAws {
    fn list_nodegroups<'a>(&'a self, _region: &'a str, cluster: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        let answer = self.enter("ListNodegroups").map(|()| {
            self.world()
                .nodegroups
                .keys()
                .filter(|(c, _)| c == cluster)
                .map(|(_, n)| n.clone())
                .collect()
        });
        ready(answer)
    }

    fn describe_nodegroup<'a>(
        &'a self,
        _region: &'a str,
        cluster: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<NodegroupInfo>> {
        let answer = self.enter("DescribeNodegroup").and_then(|()| {
            let world = self.world();
            let group = (cluster.to_owned(), name.to_owned());
            let ng = world
                .nodegroups
                .get(&group)
                .ok_or_else(|| not_found("DescribeNodegroup", "ResourceNotFoundException", name))?;
            let updating = world
                .updates
                .iter()
                .any(|u| u.group == group && u.status == "InProgress");
            Ok(NodegroupInfo {
                status: if updating { "UPDATING" } else { "ACTIVE" }.into(),
                launch_template_id: Some(ng.template_id.clone()),
                launch_template_version: Some(ng.version.clone()),
                max_unavailable: Some(1),
                max_unavailable_percentage: None,
                update_strategy: Some("DEFAULT".into()),
                instance_types: Vec::new(),
                arn: Some(format!("arn:aws:eks:us-west-2:{ACCOUNT}:nodegroup/{cluster}/{name}/x")),
                tags: ng.tags.clone(),
            })
        });
        ready(answer)
    }

    fn update_nodegroup_config<'a>(
        &'a self,
        _region: &'a str,
        cluster: &'a str,
        name: &'a str,
        _config: UpdateConfig,
    ) -> BoxFuture<'a, Result<String>> {
        ready(self.start_update("UpdateNodegroupConfig", cluster, name, None))
    }

    fn update_nodegroup_version<'a>(
        &'a self,
        _region: &'a str,
        cluster: &'a str,
        name: &'a str,
        _template_id: &'a str,
        version: &'a str,
        _force: bool,
    ) -> BoxFuture<'a, Result<String>> {
        ready(self.start_update("UpdateNodegroupVersion", cluster, name, Some(version)))
    }

    fn describe_update<'a>(
        &'a self,
        _region: &'a str,
        _cluster: &'a str,
        _name: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Progress>> {
        let answer = self.enter("DescribeUpdate").and_then(|()| {
            let world = self.world();
            let update = world
                .updates
                .iter()
                .find(|u| u.id == id)
                .ok_or_else(|| not_found("DescribeUpdate", "ResourceNotFoundException", id))?;
            Ok(match update.status.as_str() {
                "Successful" => Progress::Successful,
                "Failed" => Progress::Failed(update.message.clone()),
                "Cancelled" => Progress::Cancelled("update cancelled".into()),
                _ => Progress::Running,
            })
        });
        ready(answer)
    }

    fn running_version_update<'a>(
        &'a self,
        _region: &'a str,
        cluster: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Running>> {
        let answer = self.enter("ListUpdates").map(|()| {
            self.world()
                .updates
                .iter()
                .find(|u| u.group.0 == cluster && u.group.1 == name && u.status == "InProgress" && u.version.is_some())
                .map(|u| (u.id.clone(), u.version.clone()))
        });
        ready(answer)
    }

    fn ended_failure_onto<'a>(
        &'a self,
        _kind: NodeGroupKind,
        _region: &'a str,
        cluster: &'a str,
        name: &'a str,
        version: &'a str,
        since: Option<Timestamp>,
    ) -> BoxFuture<'a, Result<Option<(String, String)>>> {
        let answer = self.enter("ListUpdates").map(|()| {
            self.world()
                .updates
                .iter()
                .rev()
                .filter(|u| u.group.0 == cluster && u.group.1 == name && u.version.as_deref() == Some(version))
                .filter(|u| since.is_none_or(|s| u.started > s))
                .find(|u| matches!(u.status.as_str(), "Failed" | "Cancelled"))
                .map(|u| (u.id.clone(), u.message.clone()))
        });
        ready(answer)
    }

    fn tag_nodegroup<'a>(
        &'a self,
        _region: &'a str,
        arn: &'a str,
        key: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        let answer = self.enter("TagResource").map(|()| {
            let mut world = self.world();
            if let Some(ng) = world
                .nodegroups
                .iter_mut()
                .find(|((c, n), _)| arn.contains(&format!("nodegroup/{c}/{n}/")))
                .map(|(_, ng)| ng)
            {
                ng.tags.insert(key.to_owned(), value.to_owned());
            }
        });
        ready(answer)
    }
}

impl LaunchTemplates for FakeAws {
    fn template_version<'a>(
        &'a self,
        _region: &'a str,
        template_id: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Resolved>> {
        let answer = self.enter("DescribeLaunchTemplateVersions").map(|()| {
            Self::version(&self.world(), template_id, version).map(|v| (v.number.to_string(), Some(v.image)))
        });
        ready(answer)
    }

    fn version_description<'a>(
        &'a self,
        _region: &'a str,
        template_id: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        let answer = self
            .enter("DescribeLaunchTemplateVersions")
            .map(|()| Self::version(&self.world(), template_id, version).and_then(|v| v.description));
        ready(answer)
    }

    fn template_instance_type(&self, _region: &str, template_id: &str, number: &str) -> Option<String> {
        Self::version(&self.world(), template_id, number).and_then(|v| v.instance_type)
    }

    fn version_with_image<'a>(
        &'a self,
        _region: &'a str,
        template_id: &'a str,
        current: &'a str,
        image: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>>> {
        let answer = self.enter("DescribeLaunchTemplateVersions").map(|()| {
            let current_number = current.parse::<i64>().ok()?;
            self.world()
                .templates
                .get(template_id)?
                .iter()
                .filter(|v| v.number > current_number)
                .filter(|v| refresh_engine::marker::reusable(v.description.as_deref(), Some(&v.image), current, image))
                .map(|v| v.number)
                .max()
                .map(|n| n.to_string())
        });
        ready(answer)
    }

    fn create_version<'a>(
        &'a self,
        _region: &'a str,
        template_id: &'a str,
        source: &'a str,
        image: &'a str,
    ) -> BoxFuture<'a, Result<String>> {
        let answer = self.enter("CreateLaunchTemplateVersion").and_then(|()| {
            let mut world = self.world();
            let from = Self::version(&world, template_id, source).ok_or_else(|| {
                not_found(
                    "CreateLaunchTemplateVersion",
                    "InvalidLaunchTemplateId.NotFound",
                    template_id,
                )
            })?;
            let versions = world.templates.get_mut(template_id).expect("template");
            let number = versions.iter().map(|v| v.number).max().unwrap_or(0) + 1;
            versions.push(Version {
                number,
                image: image.to_owned(),
                description: Some(refresh_engine::marker::version_description(source, image)),
                instance_type: from.instance_type,
            });
            Ok(number.to_string())
        });
        ready(answer)
    }

    fn template_versions<'a>(
        &'a self,
        _region: &'a str,
        template_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<VersionInfo>>> {
        let answer = self.enter("DescribeLaunchTemplateVersions").map(|()| {
            self.world()
                .templates
                .get(template_id)
                .map(|vs| {
                    vs.iter()
                        .map(|v| VersionInfo {
                            number: v.number,
                            description: v.description.clone(),
                            default: v.number == 1,
                        })
                        .collect()
                })
                .unwrap_or_default()
        });
        ready(answer)
    }

    fn template_versions_in_use<'a>(
        &'a self,
        _region: &'a str,
        template_id: &'a str,
    ) -> BoxFuture<'a, Result<Vec<i64>>> {
        let answer = self.enter("DescribeNodegroup").map(|()| {
            self.world()
                .nodegroups
                .values()
                .filter(|ng| ng.template_id == template_id)
                .filter_map(|ng| ng.version.parse().ok())
                .collect()
        });
        ready(answer)
    }

    fn delete_versions<'a>(
        &'a self,
        _region: &'a str,
        template_id: &'a str,
        versions: &'a [i64],
    ) -> BoxFuture<'a, Result<usize>> {
        let answer = self.enter("DeleteLaunchTemplateVersions").map(|()| {
            let mut world = self.world();
            let Some(all) = world.templates.get_mut(template_id) else {
                return 0;
            };
            let before = all.len();
            all.retain(|v| v.number == 1 || !versions.contains(&v.number));
            before - all.len()
        });
        ready(answer)
    }

    fn asgs_on_latest<'a>(&'a self, _region: &'a str, _template_id: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        ready(self.enter("DescribeAutoScalingGroups").map(|()| Vec::new()))
    }
}

impl InstanceRefreshes for FakeAws {
    fn describe_asg<'a>(&'a self, _region: &'a str, _name: &'a str) -> BoxFuture<'a, Result<Option<AsgInfo>>> {
        ready(self.enter("DescribeAutoScalingGroups").map(|()| None))
    }

    fn refreshed_onto<'a>(&'a self, _region: &'a str, _asg: &'a str, _version: &'a str) -> BoxFuture<'a, Result<bool>> {
        ready(self.enter("DescribeInstanceRefreshes").map(|()| false))
    }

    fn tag_asg<'a>(
        &'a self,
        _region: &'a str,
        name: &'a str,
        _key: &'a str,
        _value: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        ready(
            self.enter("CreateOrUpdateTags")
                .and_then(|()| Err(not_found("CreateOrUpdateTags", "ValidationError", name))),
        )
    }

    fn start_refresh<'a>(
        &'a self,
        _region: &'a str,
        asg: &'a str,
        _template_id: &'a str,
        _version: &'a str,
        _prefs: RefreshPrefs,
    ) -> BoxFuture<'a, Result<String>> {
        ready(
            self.enter("StartInstanceRefresh")
                .and_then(|()| Err(not_found("StartInstanceRefresh", "ValidationError", asg))),
        )
    }

    fn describe_refresh<'a>(&'a self, _region: &'a str, _asg: &'a str, id: &'a str) -> BoxFuture<'a, Result<Progress>> {
        ready(
            self.enter("DescribeInstanceRefreshes")
                .map(|()| Progress::Failed(format!("instance refresh {id} is not known to Auto Scaling"))),
        )
    }

    fn active_refresh<'a>(&'a self, _region: &'a str, _asg: &'a str) -> BoxFuture<'a, Result<Running>> {
        ready(self.enter("DescribeInstanceRefreshes").map(|()| None))
    }
}
