//! Custom resources of opsy-ami-operator (group `ami.refresh.ops`, version `v1alpha1`) and the small vocabulary
//! both controllers share: durations and conditions.
//!
//! This crate is types only: no Kubernetes client, no AWS, no clock reads. The CRD YAML shipped in the charts and
//! in `deploy/` is generated from these types by `cargo xtask gen-crds` (see [`crd`]).

// kube's `printcolumn(name = .., type_ = ..)` repeats keys across columns by design; clippy mistakes that for a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

pub mod ami_refresher;
pub mod common;
pub mod conditions;
pub mod crd;
pub mod duration;
pub mod packer_builder;

pub use ami_refresher::{AMIRefresher, AMIRefresherSpec, AMIRefresherStatus};
pub use common::AmiFilter;
pub use duration::{DurationError, HumanDuration, parse_duration};
pub use packer_builder::{PackerBuilder, PackerBuilderSpec, PackerBuilderStatus};

/// The API group of both kinds.
pub const GROUP: &str = "ami.refresh.ops";
/// The API version of both kinds.
pub const VERSION: &str = "v1alpha1";
