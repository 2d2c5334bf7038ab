//! The AMI tag scheme of opsy-ami-operator (compatible with AMIs tagged by the original Go operator) and the pure
//! decisions made from tags: is this AMI managed by us, is it eligible at time T, which one wins, and does a new
//! base AMI or expiry require a rebuild.
//!
//! Nothing here performs I/O or reads the clock: images come in as plain [`Image`] values (an adapter maps EC2's
//! `DescribeImages` output onto them) and `now` is always an argument.

pub mod decide;
pub mod scheme;

pub use decide::{
    BuildDecision, BuildReason, EligibilityPolicy, Ineligible, RebuildInputs, decide_build, evaluate, evaluate_shared,
    newest_base_image, newest_eligible,
};
pub use scheme::{
    AmiStatus, BuildRecord, Identity, Image, MAX_CLOCK_SKEW, MAX_TAG_VALUE_CHARS, OPERATOR_SIGNATURE, Selector,
    TimestampSource, adoption_tags, build_tags, created_at, deprecation_tags, first_tagged_at, fit_tag_value, keys,
    sanitize_repo_url, superseded,
};
