//! An in-memory AWS for the reconcile-level tests: AMIs per region with tags, EC2 deprecation times, launch and
//! snapshot permissions, copies, SSM parameters, a log of the calls made, and faults injected per operation.
//!
//! What it assumes of AWS (checked against the API reference; a test that needs more must model it here, never make
//! the fake friendlier than AWS):
//! - DescribeImages filters as [`aws_sim::filters`] evaluates them; other filter names are refused.
//! - CreateTags on an AMI EC2 does not know: `InvalidAMIID.NotFound`.
//! - CopyImage answers a repeated ClientToken with the same copy; a copy is `pending` until the test completes it.
//! - DeregisterImage / DeleteSnapshot of something already gone succeed (the production adapter treats
//!   `InvalidAMIID.Unavailable` / `InvalidSnapshot.NotFound` so).
//! - GetParameter of an unknown parameter: `ParameterNotFound` (the production adapter turns it into `NoBaseAmi`).
//! - Who uses an image (instances, launch templates) is not modelled: nothing uses any image.

use std::{collections::BTreeMap, sync::Mutex};

use ami_tags::{Image, Selector};
use api_types::AmiFilter;
use controller_runtime::aws::AwsError;
use futures::future::BoxFuture;

use crate::{
    aws::CopyRequest,
    capabilities::{ImageChanges, ImageDistribution, ImageFinder, ImageUsers, Parameters},
    error::{Error, Result},
    lifecycle::{Permission, Usage},
};

/// This fake's account.
pub const ACCOUNT: &str = "111122223333";

/// One AMI.
#[derive(Clone, Debug)]
struct Entry {
    region: String,
    image: Image,
    owner: String,
    launch: Vec<Permission>,
    token: Option<String>,
}

#[derive(Debug, Default)]
struct World {
    images: Vec<Entry>,
    parameters: BTreeMap<(String, String), String>,
    snapshot_accounts: BTreeMap<String, Vec<String>>,
    next: u32,
}

/// The in-memory AWS.
#[derive(Debug, Default)]
pub struct FakeAws {
    world: Mutex<World>,
    script: aws_sim::script::Script<AwsError>,
}

fn ready<'a, T: Send + 'a>(value: Result<T>) -> BoxFuture<'a, Result<T>> {
    Box::pin(std::future::ready(value))
}

impl FakeAws {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    // The call log and faults live in `aws_sim::script::Script`, shared by both fakes; the wrappers here only turn
    // its errors into this controller's own `Error` (each controller has its own error enum).
    fn enter(&self, operation: &'static str) -> Result<()> {
        self.script.enter(operation).map_err(Error::Aws)
    }

    /// The next `times` calls of `operation` fail with `code` and HTTP `status`, classified as production does.
    pub fn fail(&self, operation: &'static str, code: &str, status: u16, times: usize) {
        let fault = AwsError::from_code(operation, code, status, "injected by the test");
        self.script.fail(operation, fault, times);
    }

    /// How many times `operation` was called.
    pub fn count(&self, operation: &str) -> usize {
        self.script.count(operation)
    }

    /// An AMI in `region` owned by `owner`.
    pub fn add_image(&self, region: &str, owner: &str, image: Image) {
        self.world().images.push(Entry {
            region: region.to_owned(),
            image,
            owner: owner.to_owned(),
            launch: Vec::new(),
            token: None,
        });
    }

    /// Ends every pending copy `available`, as EC2 does when CopyImage finishes.
    pub fn complete_copies(&self) {
        for entry in self.world().images.iter_mut().filter(|e| e.token.is_some()) {
            entry.image.state = Some("available".into());
        }
    }

    /// The AMIs of this account in `region`.
    pub fn own_images_in(&self, region: &str) -> Vec<Image> {
        self.world()
            .images
            .iter()
            .filter(|e| e.region == region && e.owner == ACCOUNT)
            .map(|e| e.image.clone())
            .collect()
    }

    /// An AMI as EC2 describes it now (`None`: not in `region`).
    pub fn image(&self, region: &str, id: &str) -> Option<Image> {
        self.world()
            .images
            .iter()
            .find(|e| e.region == region && e.image.id == id)
            .map(|e| e.image.clone())
    }

    fn find(&self, region: &str, filters: &[(String, Vec<String>)], owners: &[String]) -> Result<Vec<Image>> {
        let world = self.world();
        let mut out = Vec::new();
        for entry in world.images.iter().filter(|e| e.region == region) {
            let described = aws_sim::filters::Described {
                name: entry.image.name.as_deref(),
                owner: &entry.owner,
                tags: &entry.image.tags,
            };
            match aws_sim::filters::matches(described, filters, owners, ACCOUNT) {
                Ok(true) => out.push(entry.image.clone()),
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
    }

    fn with_own_image<T>(
        &self,
        operation: &'static str,
        region: &str,
        id: &str,
        change: impl FnOnce(&mut Entry) -> T,
    ) -> Result<T> {
        self.enter(operation)?;
        let mut world = self.world();
        let entry = world
            .images
            .iter_mut()
            .find(|e| e.region == region && e.image.id == id && e.owner == ACCOUNT)
            .ok_or_else(|| {
                Error::Aws(AwsError::from_code(
                    operation,
                    "InvalidAMIID.NotFound",
                    400,
                    &format!("The image id '[{id}]' does not exist"),
                ))
            })?;
        Ok(change(entry))
    }
}

impl ImageFinder for FakeAws {
    fn base_images<'a>(
        &'a self,
        region: &'a str,
        filters: &'a [AmiFilter],
        owners: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Image>>> {
        let filters: Vec<(String, Vec<String>)> = filters.iter().map(|f| (f.name.clone(), f.values.clone())).collect();
        ready(
            self.enter("DescribeImages")
                .and_then(|()| self.find(region, &filters, owners)),
        )
    }

    fn managed_images<'a>(
        &'a self,
        region: &'a str,
        cluster: &'a str,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<Vec<Image>>> {
        let filters: Vec<(String, Vec<String>)> = Selector::for_cluster(cluster)
            .ec2_tag_filters()
            .into_iter()
            .map(|(name, value)| (name, vec![value]))
            .collect();
        let answer = self.enter("DescribeImages").and_then(|()| {
            Ok(self
                .find(region, &filters, &["self".to_owned()])?
                .into_iter()
                .filter(|i| selector.matches(i))
                .collect())
        });
        ready(answer)
    }

    fn own_image<'a>(&'a self, region: &'a str, id: &'a str) -> BoxFuture<'a, Result<Option<Image>>> {
        let answer = self.enter("DescribeImages").map(|()| {
            self.world()
                .images
                .iter()
                .find(|e| e.region == region && e.image.id == id && e.owner == ACCOUNT)
                .map(|e| e.image.clone())
        });
        ready(answer)
    }

    fn images_of_build<'a>(&'a self, region: &'a str, build_id: &'a str) -> BoxFuture<'a, Result<Vec<Image>>> {
        let filters = [(format!("tag:{}", ami_tags::keys::BUILD_ID), vec![build_id.to_owned()])];
        let answer = self.enter("DescribeImages").and_then(|()| {
            let mut images = self.find(region, &filters, &["self".to_owned()])?;
            images.sort_by(|a, b| a.creation_date.cmp(&b.creation_date).then_with(|| a.id.cmp(&b.id)));
            Ok(images)
        });
        ready(answer)
    }

    fn forget_cached(&self, _region: &str) {}
}

impl ImageChanges for FakeAws {
    fn tag<'a>(
        &'a self,
        region: &'a str,
        ids: &'a [String],
        tags: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<()>> {
        let answer = self.enter("CreateTags").and_then(|()| {
            let mut world = self.world();
            if let Some(missing) = ids
                .iter()
                .find(|id| !world.images.iter().any(|e| e.region == region && &e.image.id == *id))
            {
                return Err(Error::Aws(AwsError::from_code(
                    "CreateTags",
                    "InvalidAMIID.NotFound",
                    400,
                    &format!("The image id '[{missing}]' does not exist"),
                )));
            }
            for entry in world
                .images
                .iter_mut()
                .filter(|e| e.region == region && ids.contains(&e.image.id))
            {
                entry.image.tags.extend(tags.clone());
            }
            Ok(())
        });
        ready(answer)
    }

    fn deprecate_at<'a>(&'a self, region: &'a str, id: &'a str, at: jiff::Timestamp) -> BoxFuture<'a, Result<()>> {
        ready(self.with_own_image("EnableImageDeprecation", region, id, |e| {
            e.image.deprecation_time = Some(at);
        }))
    }

    fn deregister<'a>(&'a self, region: &'a str, id: &'a str) -> BoxFuture<'a, Result<()>> {
        let answer = self.enter("DeregisterImage").map(|()| {
            self.world()
                .images
                .retain(|e| !(e.region == region && e.image.id == id));
        });
        ready(answer)
    }

    fn delete_snapshot<'a>(&'a self, _region: &'a str, _id: &'a str) -> BoxFuture<'a, Result<()>> {
        ready(self.enter("DeleteSnapshot"))
    }
}

impl ImageDistribution for FakeAws {
    fn copy_image<'a>(&'a self, region: &'a str, request: &'a CopyRequest<'a>) -> BoxFuture<'a, Result<String>> {
        let answer = self.enter("CopyImage").and_then(|()| {
            let mut world = self.world();
            if let Some(same) = world
                .images
                .iter()
                .find(|e| e.region == region && e.token.as_deref() == Some(request.client_token))
            {
                return Ok(same.image.id.clone());
            }
            let source = world
                .images
                .iter()
                .find(|e| e.region == request.source_region && e.image.id == request.source_id)
                .map(|e| e.image.clone())
                .ok_or_else(|| {
                    Error::Aws(AwsError::from_code(
                        "CopyImage",
                        "InvalidAMIID.NotFound",
                        400,
                        request.source_id,
                    ))
                })?;
            world.next += 1;
            let id = format!("ami-{:017x}", world.next);
            world.images.push(Entry {
                region: region.to_owned(),
                image: Image {
                    id: id.clone(),
                    name: Some(request.name.to_owned()),
                    description: request.description.map(str::to_owned),
                    state: Some("pending".into()),
                    tags: request.tags.clone(),
                    creation_date: Some(controller_runtime::clock::now()),
                    ..source
                },
                owner: ACCOUNT.to_owned(),
                launch: Vec::new(),
                token: Some(request.client_token.to_owned()),
            });
            Ok(id)
        });
        ready(answer)
    }

    fn launch_permissions<'a>(&'a self, region: &'a str, id: &'a str) -> BoxFuture<'a, Result<Vec<Permission>>> {
        ready(self.with_own_image("DescribeImageAttribute", region, id, |e| e.launch.clone()))
    }

    fn modify_launch_permissions<'a>(
        &'a self,
        region: &'a str,
        id: &'a str,
        add: &'a [Permission],
        remove: &'a [Permission],
    ) -> BoxFuture<'a, Result<()>> {
        ready(self.with_own_image("ModifyImageAttribute", region, id, |e| {
            e.launch.retain(|p| !remove.contains(p));
            e.launch.extend(
                add.iter()
                    .filter(|p| !e.launch.contains(p))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
        }))
    }

    fn snapshot_accounts<'a>(&'a self, _region: &'a str, snapshot: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        let answer = self.enter("DescribeSnapshotAttribute").map(|()| {
            self.world()
                .snapshot_accounts
                .get(snapshot)
                .cloned()
                .unwrap_or_default()
        });
        ready(answer)
    }

    fn modify_snapshot_accounts<'a>(
        &'a self,
        _region: &'a str,
        snapshot: &'a str,
        add: &'a [String],
        remove: &'a [String],
    ) -> BoxFuture<'a, Result<()>> {
        let answer = self.enter("ModifySnapshotAttribute").map(|()| {
            let mut world = self.world();
            let accounts = world.snapshot_accounts.entry(snapshot.to_owned()).or_default();
            accounts.retain(|a| !remove.contains(a));
            accounts.extend(add.iter().cloned());
        });
        ready(answer)
    }
}

impl Parameters for FakeAws {
    fn ssm_parameter<'a>(&'a self, region: &'a str, name: &'a str) -> BoxFuture<'a, Result<String>> {
        let answer = self.enter("GetParameter").and_then(|()| {
            self.world()
                .parameters
                .get(&(region.to_owned(), name.to_owned()))
                .cloned()
                .ok_or_else(|| Error::NoBaseAmi(format!("SSM parameter {name} does not exist in {region}")))
        });
        ready(answer)
    }

    fn publish_parameter<'a>(&'a self, region: &'a str, name: &'a str, ami: &'a str) -> BoxFuture<'a, Result<bool>> {
        let answer = self.enter("GetParameter").and_then(|()| {
            let key = (region.to_owned(), name.to_owned());
            if self.world().parameters.get(&key).map(String::as_str) == Some(ami) {
                return Ok(false);
            }
            self.enter("PutParameter")?;
            self.world().parameters.insert(key, ami.to_owned());
            Ok(true)
        });
        ready(answer)
    }
}

impl ImageUsers for FakeAws {
    fn usage<'a>(&'a self, _region: &'a str, _images: &'a [String]) -> BoxFuture<'a, Result<Usage>> {
        ready(self.enter("DescribeInstances").map(|()| Usage::default()))
    }
}
