//! Pieces shared by both kinds: EC2 filters, validation patterns, and schema helpers.
//!
//! Patterns are written for RE2 (the regex engine of the Kubernetes API server): no look-around, no back-references.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An EC2 AMI ID: `ami-` and 8 or 17 lowercase hex digits.
pub const AMI_ID_PATTERN: &str = r"^ami-([0-9a-f]{8}|[0-9a-f]{17})$";
/// An AWS region name such as `us-west-2`, `eu-central-1` or `us-gov-west-1`.
pub const REGION_PATTERN: &str = r"^[a-z]{2}(-[a-z]+)+-[0-9]+$";
/// An EKS cluster name.
pub const CLUSTER_NAME_PATTERN: &str = r"^[0-9A-Za-z][A-Za-z0-9_-]*$";
/// An EKS node group or Auto Scaling group name.
pub const NODE_GROUP_NAME_PATTERN: &str = r"^[0-9A-Za-z][A-Za-z0-9_.:/-]*$";
/// A Kubernetes object name (DNS-1123 subdomain), used for Secret, ServiceAccount and PackerBuilder references.
pub const K8S_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A Kubernetes container name (DNS-1123 label).
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A twelve-digit AWS account ID.
pub const ACCOUNT_ID_PATTERN: &str = r"^[0-9]{12}$";
/// A namespace name (DNS label) or `*` (every namespace).
pub const TRUSTED_NAMESPACE_PATTERN: &str = r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?)$";
/// An AMI owner for DescribeImages: an account ID or one of the aliases EC2 accepts.
pub const OWNER_PATTERN: &str = r"^([0-9]{12}|self|amazon|aws-marketplace|aws-backup-vault)$";
/// A container image reference (no whitespace).
pub const IMAGE_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$";
/// A relative path inside the Packer repository. `..` segments are refused by a CEL rule.
pub const RELATIVE_PATH_PATTERN: &str = r"^[A-Za-z0-9_.-][A-Za-z0-9_./-]*$";
/// CEL rule refusing `..` segments in a relative path.
pub const NO_PARENT_DIR_RULE: &str = r"!self.matches('(^|/)[.][.](/|$)')";

/// One EC2 `DescribeImages` filter, exactly as the EC2 API takes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AmiFilter {
    /// Filter name, e.g. `name`, `owner-id`, `architecture`, `tag:Team`.
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    /// Accepted values; `*` and `?` are wildcards.
    #[schemars(length(min = 1, max = 200), inner(length(min = 1, max = 1024)))]
    pub values: Vec<String>,
}

/// `skip_serializing_if` helper for flags that default to false.
pub(crate) fn is_false(value: &bool) -> bool {
    !*value
}
