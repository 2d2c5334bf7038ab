//! What the packer-build-controller needs from AWS, named by capability: finding images (base AMIs, this builder's
//! AMIs), changing them (tags, EC2 deprecation, deregistration), distributing them (copies, launch permissions),
//! SSM parameters, and who uses an image. [`crate::aws::Aws`] implements them over the SDK (with its shared
//! lookups); the reconcile-level tests implement them in memory (`crate::fake`), recording calls and injecting
//! faults.

use std::collections::BTreeMap;

use ami_tags::{Image, Selector};
use api_types::AmiFilter;
use futures::future::BoxFuture;

use crate::{
    aws::{Aws, CopyRequest},
    error::Result,
    lifecycle::{Permission, Usage},
};

/// Finding images.
pub trait ImageFinder: Send + Sync {
    /// Candidates for the base AMI (the spec's filters and owners).
    fn base_images<'a>(
        &'a self,
        region: &'a str,
        filters: &'a [AmiFilter],
        owners: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Image>>>;
    /// This account's AMIs of `cluster` that `selector` matches.
    fn managed_images<'a>(
        &'a self,
        region: &'a str,
        cluster: &'a str,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<Vec<Image>>>;
    /// One AMI of this account by ID (`None`: unknown or another account's).
    fn own_image<'a>(&'a self, region: &'a str, id: &'a str) -> BoxFuture<'a, Result<Option<Image>>>;
    /// This account's AMIs tagged `build-id=<build_id>`, oldest first.
    fn images_of_build<'a>(&'a self, region: &'a str, build_id: &'a str) -> BoxFuture<'a, Result<Vec<Image>>>;
    /// Forgets shared answers for `region` (after a change the next decision must see).
    fn forget_cached(&self, region: &str);
}

/// Changing images this account owns.
pub trait ImageChanges: Send + Sync {
    /// Adds or overwrites tags on images (and nothing else).
    fn tag<'a>(
        &'a self,
        region: &'a str,
        ids: &'a [String],
        tags: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<()>>;
    /// Sets EC2's deprecation time.
    fn deprecate_at<'a>(&'a self, region: &'a str, id: &'a str, at: jiff::Timestamp) -> BoxFuture<'a, Result<()>>;
    /// Deregisters an AMI (already gone is fine).
    fn deregister<'a>(&'a self, region: &'a str, id: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Deletes a snapshot (already gone is fine).
    fn delete_snapshot<'a>(&'a self, region: &'a str, id: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// Copying and sharing images.
pub trait ImageDistribution: Send + Sync {
    /// Starts a copy into `region`; returns the copy's ID.
    fn copy_image<'a>(&'a self, region: &'a str, request: &'a CopyRequest<'a>) -> BoxFuture<'a, Result<String>>;
    /// An AMI's launch permissions.
    fn launch_permissions<'a>(&'a self, region: &'a str, id: &'a str) -> BoxFuture<'a, Result<Vec<Permission>>>;
    /// Adds and removes launch permissions.
    fn modify_launch_permissions<'a>(
        &'a self,
        region: &'a str,
        id: &'a str,
        add: &'a [Permission],
        remove: &'a [Permission],
    ) -> BoxFuture<'a, Result<()>>;
    /// The accounts a snapshot is shared with.
    fn snapshot_accounts<'a>(&'a self, region: &'a str, snapshot: &'a str) -> BoxFuture<'a, Result<Vec<String>>>;
    /// Adds and removes accounts a snapshot is shared with.
    fn modify_snapshot_accounts<'a>(
        &'a self,
        region: &'a str,
        snapshot: &'a str,
        add: &'a [String],
        remove: &'a [String],
    ) -> BoxFuture<'a, Result<()>>;
}

/// SSM parameters (the base AMI source, `publish.ssmParameter`).
pub trait Parameters: Send + Sync {
    /// A parameter's value.
    fn ssm_parameter<'a>(&'a self, region: &'a str, name: &'a str) -> BoxFuture<'a, Result<String>>;
    /// Writes `ami` (data type `aws:ec2:image`) unless the parameter already names it; whether it wrote.
    fn publish_parameter<'a>(&'a self, region: &'a str, name: &'a str, ami: &'a str) -> BoxFuture<'a, Result<bool>>;
}

/// Who uses images (instances, launch templates of Auto Scaling groups and node groups).
pub trait ImageUsers: Send + Sync {
    /// Users of each of `images`.
    fn usage<'a>(&'a self, region: &'a str, images: &'a [String]) -> BoxFuture<'a, Result<Usage>>;
}

/// Everything the controller uses.
pub trait PackerAws:
    ImageFinder + ImageChanges + ImageDistribution + Parameters + ImageUsers + std::fmt::Debug
{
}

impl<T: ImageFinder + ImageChanges + ImageDistribution + Parameters + ImageUsers + std::fmt::Debug> PackerAws for T {}

impl ImageFinder for Aws {
    fn base_images<'a>(
        &'a self,
        region: &'a str,
        filters: &'a [AmiFilter],
        owners: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Image>>> {
        Box::pin(Aws::base_images(self, region, filters, owners))
    }
    fn managed_images<'a>(
        &'a self,
        region: &'a str,
        cluster: &'a str,
        selector: &'a Selector,
    ) -> BoxFuture<'a, Result<Vec<Image>>> {
        Box::pin(Aws::managed_images(self, region, cluster, selector))
    }
    fn own_image<'a>(&'a self, region: &'a str, id: &'a str) -> BoxFuture<'a, Result<Option<Image>>> {
        Box::pin(Aws::own_image(self, region, id))
    }
    fn images_of_build<'a>(&'a self, region: &'a str, build_id: &'a str) -> BoxFuture<'a, Result<Vec<Image>>> {
        Box::pin(Aws::images_of_build(self, region, build_id))
    }
    fn forget_cached(&self, region: &str) {
        Aws::forget_cached(self, region);
    }
}

impl ImageChanges for Aws {
    fn tag<'a>(
        &'a self,
        region: &'a str,
        ids: &'a [String],
        tags: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(Aws::tag(self, region, ids, tags))
    }
    fn deprecate_at<'a>(&'a self, region: &'a str, id: &'a str, at: jiff::Timestamp) -> BoxFuture<'a, Result<()>> {
        Box::pin(Aws::deprecate_at(self, region, id, at))
    }
    fn deregister<'a>(&'a self, region: &'a str, id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(Aws::deregister(self, region, id))
    }
    fn delete_snapshot<'a>(&'a self, region: &'a str, id: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(Aws::delete_snapshot(self, region, id))
    }
}

impl ImageDistribution for Aws {
    fn copy_image<'a>(&'a self, region: &'a str, request: &'a CopyRequest<'a>) -> BoxFuture<'a, Result<String>> {
        Box::pin(Aws::copy_image(self, region, request))
    }
    fn launch_permissions<'a>(&'a self, region: &'a str, id: &'a str) -> BoxFuture<'a, Result<Vec<Permission>>> {
        Box::pin(Aws::launch_permissions(self, region, id))
    }
    fn modify_launch_permissions<'a>(
        &'a self,
        region: &'a str,
        id: &'a str,
        add: &'a [Permission],
        remove: &'a [Permission],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(Aws::modify_launch_permissions(self, region, id, add, remove))
    }
    fn snapshot_accounts<'a>(&'a self, region: &'a str, snapshot: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(Aws::snapshot_accounts(self, region, snapshot))
    }
    fn modify_snapshot_accounts<'a>(
        &'a self,
        region: &'a str,
        snapshot: &'a str,
        add: &'a [String],
        remove: &'a [String],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(Aws::modify_snapshot_accounts(self, region, snapshot, add, remove))
    }
}

impl Parameters for Aws {
    fn ssm_parameter<'a>(&'a self, region: &'a str, name: &'a str) -> BoxFuture<'a, Result<String>> {
        Box::pin(Aws::ssm_parameter(self, region, name))
    }
    fn publish_parameter<'a>(&'a self, region: &'a str, name: &'a str, ami: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(Aws::publish_parameter(self, region, name, ami))
    }
}

impl ImageUsers for Aws {
    fn usage<'a>(&'a self, region: &'a str, images: &'a [String]) -> BoxFuture<'a, Result<Usage>> {
        Box::pin(Aws::usage(self, region, images))
    }
}
