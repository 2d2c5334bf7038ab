//! Pure decisions over tagged AMIs: eligibility at time T, the winner among candidates, the newest base AMI, and
//! whether a PackerBuilder must build.
//!
//! Orderings are total (timestamp, then AMI ID) so two AMIs made in the same second never make a decision flap.

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;

use crate::scheme::{AmiStatus, Identity, Image, Selector, adoption_tags, created_at, keys};

/// What makes a managed AMI usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EligibilityPolicy {
    /// Lifetime after `create-timestamp`.
    pub expires_in: Duration,
    /// Minimum age before use (soak time); zero for none.
    pub min_age: Duration,
}

impl EligibilityPolicy {
    /// A policy with a lifetime and no soak time.
    pub fn expiring_after(expires_in: Duration) -> Self {
        Self {
            expires_in,
            min_age: Duration::ZERO,
        }
    }
}

/// Why an AMI is not eligible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ineligible {
    /// It lacks the identity tags.
    NotManaged,
    /// It was built by a PackerBuilder in a namespace the selector does not trust.
    UntrustedNamespace {
        /// Its `created-by-namespace` tag.
        namespace: String,
    },
    /// EC2 reports it in a state other than `available`.
    NotAvailable,
    /// Its `status` tag is `deprecated`, absent or unknown.
    NotActive,
    /// No usable `create-timestamp` and no `CreationDate`.
    NoTimestamp,
    /// Its lifetime ended.
    Expired {
        /// When it expired.
        expired_at: Timestamp,
    },
    /// It is younger than the soak time.
    TooYoung {
        /// When it becomes old enough.
        usable_from: Timestamp,
    },
}

/// Checks one AMI against a selector and policy at `now`; `Ok` carries the AMI's creation time.
pub fn evaluate(
    image: &Image,
    selector: &Selector,
    policy: &EligibilityPolicy,
    now: Timestamp,
) -> Result<Timestamp, Ineligible> {
    if !selector.matches(image) {
        if !selector.trusts_namespace_of(image) {
            return Err(Ineligible::UntrustedNamespace {
                namespace: image.tag(keys::CREATED_BY_NAMESPACE).unwrap_or_default().to_owned(),
            });
        }
        return Err(Ineligible::NotManaged);
    }
    if !image.is_available() {
        return Err(Ineligible::NotAvailable);
    }
    if image.status() != Some(AmiStatus::Active) {
        return Err(Ineligible::NotActive);
    }
    let (created, _) = created_at(image, now).ok_or(Ineligible::NoTimestamp)?;
    within_lifetime(created, policy, now)
}

/// `Ok(created)` when an AMI created then is past its soak time and not expired at `now`.
fn within_lifetime(created: Timestamp, policy: &EligibilityPolicy, now: Timestamp) -> Result<Timestamp, Ineligible> {
    let expired_at = add(created, policy.expires_in);
    if now >= expired_at {
        return Err(Ineligible::Expired { expired_at });
    }
    let usable_from = add(created, policy.min_age);
    if now < usable_from {
        return Err(Ineligible::TooYoung { usable_from });
    }
    Ok(created)
}

/// The newest eligible AMI (by creation time, then ID), with its creation time.
pub fn newest_eligible<'a>(
    images: &'a [Image],
    selector: &Selector,
    policy: &EligibilityPolicy,
    now: Timestamp,
) -> Option<(&'a Image, Timestamp)> {
    images
        .iter()
        .filter_map(|image| {
            evaluate(image, selector, policy, now)
                .ok()
                .map(|created| (image, created))
        })
        .max_by(|(a, ta), (b, tb)| ta.cmp(tb).then_with(|| a.id.cmp(&b.id)))
}

/// Checks an AMI shared from a trusted image account. EC2 shows no tags to the accounts an AMI is shared with, so
/// only EC2's own fields decide: `available`, no `DeprecationTime` at or before `now`, `CreationDate` within
/// `expires_in` and older than `min_age`. `Ok` carries the creation date.
pub fn evaluate_shared(image: &Image, policy: &EligibilityPolicy, now: Timestamp) -> Result<Timestamp, Ineligible> {
    if !image.is_available() {
        return Err(Ineligible::NotAvailable);
    }
    if image.deprecation_time.is_some_and(|t| t <= now) {
        return Err(Ineligible::NotActive);
    }
    let created = image.creation_date.ok_or(Ineligible::NoTimestamp)?;
    within_lifetime(created, policy, now)
}

/// The newest available base AMI by EC2 `CreationDate`, then ID. Images without a date are ignored.
pub fn newest_base_image(images: &[Image]) -> Option<&Image> {
    images
        .iter()
        .filter(|image| image.is_available())
        .filter_map(|image| image.creation_date.map(|date| (image, date)))
        .max_by(|(a, da), (b, db)| da.cmp(db).then_with(|| a.id.cmp(&b.id)))
        .map(|(image, _)| image)
}

/// Everything [`decide_build`] looks at.
#[derive(Clone, Copy, Debug)]
pub struct RebuildInputs<'a> {
    /// Candidate managed AMIs (typically DescribeImages filtered by the identity tags).
    pub images: &'a [Image],
    /// The PackerBuilder's identity.
    pub identity: &'a Identity,
    /// Lifetime of a managed AMI.
    pub expires_in: Duration,
    /// The current base AMI; `None` for a self-contained Packer project.
    pub current_base: Option<&'a str>,
    /// The current build-configuration fingerprint (`build-config`); `None` to ignore configuration changes.
    pub build_config: Option<&'a str>,
    /// The clock.
    pub now: Timestamp,
}

/// Why a build is needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildReason {
    /// No active managed AMI of this PackerBuilder exists.
    NoManagedAmi,
    /// The newest managed AMI's lifetime ended.
    Expired {
        /// That AMI.
        ami_id: String,
        /// When it expired.
        expired_at: Timestamp,
    },
    /// The newest managed AMI was built with another configuration (repository, branch, builder image, commands).
    ConfigChanged {
        /// That AMI.
        ami_id: String,
    },
    /// The newest managed AMI was built from another base AMI than the current one.
    BaseChanged {
        /// That AMI.
        ami_id: String,
        /// Its `base-ami` tag.
        built_from: String,
        /// The base AMI found now.
        current_base: String,
    },
}

/// What a PackerBuilder should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildDecision<'a> {
    /// Keep (or adopt) this AMI; no build.
    Keep {
        /// The AMI in use.
        image: &'a Image,
        /// Tags to add because it lacks them (adoption); empty when it is fully tagged.
        add_tags: BTreeMap<String, String>,
        /// Whether the `base-ami` tag was absent, so a base change could not be detected.
        base_unknown: bool,
        /// When it expires (`create-timestamp` + `expiresIn`): the latest moment to decide again.
        expires_at: Timestamp,
    },
    /// Start a build.
    Build(BuildReason),
}

/// Decides whether to build. Rules, in order:
/// 1. no active, available, timestamped managed AMI -> build (`NoManagedAmi`);
/// 2. the newest such AMI is expired -> build (`Expired`);
/// 3. the newest AMI's `build-config` tag differs from the current configuration -> build (`ConfigChanged`);
/// 4. a base AMI is known and the newest AMI's `base-ami` tag names another one -> build (`BaseChanged`);
/// 5. otherwise keep it, adding any missing tags. An AMI without a `base-ami` tag (possible on AMIs of the
///    original operator) is kept: a rebuild costs money and expiry replaces it in due course.
pub fn decide_build<'a>(inputs: RebuildInputs<'a>) -> BuildDecision<'a> {
    let selector = Selector::for_builder(inputs.identity);
    let newest = inputs
        .images
        .iter()
        .filter(|image| selector.matches(image) && image.is_available() && image.status() == Some(AmiStatus::Active))
        .filter_map(|image| created_at(image, inputs.now).map(|(created, _)| (image, created)))
        .max_by(|(a, ta), (b, tb)| ta.cmp(tb).then_with(|| a.id.cmp(&b.id)));
    let Some((image, created)) = newest else {
        return BuildDecision::Build(BuildReason::NoManagedAmi);
    };
    let expired_at = add(created, inputs.expires_in);
    if inputs.now >= expired_at {
        return BuildDecision::Build(BuildReason::Expired {
            ami_id: image.id.clone(),
            expired_at,
        });
    }
    // An AMI without the tag (original operator, earlier releases) is kept: a rebuild costs money and expiry
    // replaces it in due course.
    if let (Some(current), Some(built_with)) = (inputs.build_config, image.tag(keys::BUILD_CONFIG))
        && current != built_with
    {
        return BuildDecision::Build(BuildReason::ConfigChanged {
            ami_id: image.id.clone(),
        });
    }
    let built_from = image.tag(keys::BASE_AMI);
    if let (Some(current), Some(built_from)) = (inputs.current_base, built_from)
        && current != built_from
    {
        return BuildDecision::Build(BuildReason::BaseChanged {
            ami_id: image.id.clone(),
            built_from: built_from.to_owned(),
            current_base: current.to_owned(),
        });
    }
    BuildDecision::Keep {
        image,
        add_tags: adoption_tags(image, inputs.identity),
        base_unknown: inputs.current_base.is_some() && built_from.is_none(),
        expires_at: expired_at,
    }
}

/// `ts + d`, saturating at the end of representable time (so a huge `expiresIn` means "never").
fn add(ts: Timestamp, d: Duration) -> Timestamp {
    ts.checked_add(d).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheme::{BuildRecord, build_tags};

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_shared_ami_is_judged_by_ec2_fields_only() {
        let now = ts("2026-12-01T12:00:00Z");
        let policy = EligibilityPolicy {
            expires_in: 24 * HOUR,
            min_age: HOUR,
        };
        let shared = |created: &str| Image {
            id: "ami-shared".into(),
            state: Some("available".into()),
            creation_date: Some(ts(created)),
            ..Image::default()
        };
        assert_eq!(
            evaluate_shared(&shared("2026-12-01T06:00:00Z"), &policy, now),
            Ok(ts("2026-12-01T06:00:00Z")),
            "no tags needed"
        );
        assert!(matches!(
            evaluate_shared(&shared("2026-11-29T06:00:00Z"), &policy, now),
            Err(Ineligible::Expired { .. })
        ));
        assert!(matches!(
            evaluate_shared(&shared("2026-12-01T11:30:00Z"), &policy, now),
            Err(Ineligible::TooYoung { .. })
        ));
        let mut deprecated = shared("2026-12-01T06:00:00Z");
        deprecated.deprecation_time = Some(ts("2026-12-01T11:00:00Z"));
        assert_eq!(evaluate_shared(&deprecated, &policy, now), Err(Ineligible::NotActive));
        deprecated.deprecation_time = Some(ts("2026-12-02T00:00:00Z"));
        assert!(
            evaluate_shared(&deprecated, &policy, now).is_ok(),
            "deprecation in the future"
        );
        let mut pending = shared("2026-12-01T06:00:00Z");
        pending.state = Some("pending".into());
        assert_eq!(evaluate_shared(&pending, &policy, now), Err(Ineligible::NotAvailable));
        let mut undated = shared("2026-12-01T06:00:00Z");
        undated.creation_date = None;
        assert_eq!(evaluate_shared(&undated, &policy, now), Err(Ineligible::NoTimestamp));
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamp")
    }

    fn identity() -> Identity {
        Identity::new(
            "opsy-gitops",
            "packer-builder-local",
            "default",
            "https://github.com/ibeify/eks-node-group-ami-refresh",
            "main",
        )
    }

    fn managed(id: &str, created: &str, base: Option<&str>) -> Image {
        let record = BuildRecord {
            build_id: format!("build-{id}"),
            job_id: "j".into(),
            base_ami: base.map(str::to_owned),
            created_at: ts(created),
            build_config: None,
        };
        Image {
            architecture: None,
            id: id.into(),
            name: Some(format!("built-{id}")),
            creation_date: Some(ts(created)),
            state: Some("available".into()),
            tags: build_tags(&identity(), &record),
            ..Image::default()
        }
    }

    fn inputs<'a>(images: &'a [Image], identity: &'a Identity, base: Option<&'a str>, now: &str) -> RebuildInputs<'a> {
        RebuildInputs {
            images,
            identity,
            expires_in: 48 * HOUR,
            current_base: base,
            build_config: None,
            now: ts(now),
        }
    }

    #[test]
    fn a_changed_build_configuration_rebuilds_but_an_untagged_ami_is_kept() {
        let id = identity();
        let mut tagged = managed("ami-1", "2026-11-20T00:00:00Z", Some("ami-base"));
        tagged.tags.insert(keys::BUILD_CONFIG.into(), "aaaa".into());
        let images = [tagged];
        let mut i = inputs(&images, &id, Some("ami-base"), "2026-11-20T12:00:00Z");
        i.build_config = Some("aaaa");
        assert!(matches!(decide_build(i), BuildDecision::Keep { .. }));
        i.build_config = Some("bbbb");
        assert_eq!(
            decide_build(i),
            BuildDecision::Build(BuildReason::ConfigChanged { ami_id: "ami-1".into() })
        );
        let untagged = [managed("ami-2", "2026-11-20T00:00:00Z", Some("ami-base"))];
        let mut i = inputs(&untagged, &id, Some("ami-base"), "2026-11-20T12:00:00Z");
        i.build_config = Some("bbbb");
        assert!(
            matches!(decide_build(i), BuildDecision::Keep { .. }),
            "no tag: kept until it expires"
        );
    }

    #[test]
    fn no_managed_ami_means_build() {
        let id = identity();
        assert_eq!(
            decide_build(inputs(&[], &id, Some("ami-base1"), "2026-11-21T00:00:00Z")),
            BuildDecision::Build(BuildReason::NoManagedAmi)
        );
    }

    #[test]
    fn only_foreign_or_deprecated_amis_means_build() {
        let id = identity();
        let mut deprecated = managed("ami-1", "2026-11-20T00:00:00Z", Some("ami-base1"));
        deprecated.tags.insert(keys::STATUS.into(), "deprecated".into());
        let mut foreign = managed("ami-2", "2026-11-20T00:00:00Z", Some("ami-base1"));
        foreign.tags.insert(keys::CREATED_BY.into(), "someone-else".into());
        let images = [deprecated, foreign];
        assert_eq!(
            decide_build(inputs(&images, &id, Some("ami-base1"), "2026-11-21T00:00:00Z")),
            BuildDecision::Build(BuildReason::NoManagedAmi)
        );
    }

    #[test]
    fn fresh_ami_from_current_base_is_kept() {
        let id = identity();
        let images = [managed("ami-1", "2026-11-20T00:00:00Z", Some("ami-base1"))];
        match decide_build(inputs(&images, &id, Some("ami-base1"), "2026-11-21T00:00:00Z")) {
            BuildDecision::Keep {
                image,
                add_tags,
                base_unknown,
                expires_at,
            } => {
                assert_eq!(image.id, "ami-1");
                assert!(add_tags.is_empty(), "{add_tags:?}");
                assert!(!base_unknown);
                assert_eq!(
                    expires_at,
                    ts("2026-11-22T00:00:00Z"),
                    "create-timestamp + expiresIn (48h)"
                );
            }
            other => panic!("expected Keep, got {other:?}"),
        }
    }

    #[test]
    fn new_base_ami_triggers_rebuild() {
        let id = identity();
        let images = [managed("ami-1", "2026-11-20T00:00:00Z", Some("ami-base1"))];
        assert_eq!(
            decide_build(inputs(&images, &id, Some("ami-base2"), "2026-11-21T00:00:00Z")),
            BuildDecision::Build(BuildReason::BaseChanged {
                ami_id: "ami-1".into(),
                built_from: "ami-base1".into(),
                current_base: "ami-base2".into(),
            })
        );
    }

    #[test]
    fn expired_newest_ami_triggers_rebuild() {
        let id = identity();
        let images = [managed("ami-1", "2026-11-18T00:00:00Z", Some("ami-base1"))];
        assert_eq!(
            decide_build(inputs(&images, &id, Some("ami-base1"), "2026-11-21T00:00:00Z")),
            BuildDecision::Build(BuildReason::Expired {
                ami_id: "ami-1".into(),
                expired_at: ts("2026-11-20T00:00:00Z")
            })
        );
    }

    #[test]
    fn expiry_is_exclusive_at_the_boundary() {
        let id = identity();
        let images = [managed("ami-1", "2026-11-19T00:00:00Z", None)];
        assert!(matches!(
            decide_build(inputs(&images, &id, None, "2026-11-20T23:59:59Z")),
            BuildDecision::Keep { .. }
        ));
        assert!(matches!(
            decide_build(inputs(&images, &id, None, "2026-11-21T00:00:00Z")),
            BuildDecision::Build(BuildReason::Expired { .. })
        ));
    }

    #[test]
    fn newest_managed_ami_is_the_one_judged() {
        let id = identity();
        let images = [
            managed("ami-old", "2026-11-19T00:00:00Z", Some("ami-base0")),
            managed("ami-new", "2026-11-20T12:00:00Z", Some("ami-base1")),
        ];
        match decide_build(inputs(&images, &id, Some("ami-base1"), "2026-11-21T00:00:00Z")) {
            BuildDecision::Keep { image, .. } => assert_eq!(image.id, "ami-new"),
            other => panic!("expected Keep, got {other:?}"),
        }
    }

    #[test]
    fn self_contained_project_ignores_base() {
        let id = identity();
        let images = [managed("ami-1", "2026-11-20T00:00:00Z", Some("ami-base1"))];
        assert!(matches!(
            decide_build(inputs(&images, &id, None, "2026-11-21T00:00:00Z")),
            BuildDecision::Keep {
                base_unknown: false,
                ..
            }
        ));
    }

    #[test]
    fn go_operator_ami_without_base_tag_is_adopted_and_keeps_its_timestamp() {
        let id = identity();
        let mut image = managed("ami-go", "2026-11-20T00:00:00Z", None);
        image.tags.remove(keys::CREATED_BY_NAMESPACE);
        let images = [image];
        match decide_build(inputs(&images, &id, Some("ami-base9"), "2026-11-21T00:00:00Z")) {
            BuildDecision::Keep {
                image,
                add_tags,
                base_unknown,
                ..
            } => {
                assert_eq!(image.id, "ami-go");
                assert!(base_unknown);
                assert!(!add_tags.contains_key(keys::CREATE_TIMESTAMP));
                assert_eq!(
                    add_tags.get(keys::CREATED_BY_NAMESPACE).map(String::as_str),
                    Some("default")
                );
            }
            other => panic!("expected Keep, got {other:?}"),
        }
    }

    #[test]
    fn go_operator_ami_with_unparsable_timestamp_ages_from_creation_date() {
        let id = identity();
        let mut image = managed("ami-go", "2026-11-10T00:00:00Z", Some("ami-base1"));
        image.tags.insert(keys::CREATE_TIMESTAMP.into(), "not a time".into());
        let images = [image];
        assert!(matches!(
            decide_build(inputs(&images, &id, Some("ami-base1"), "2026-11-21T00:00:00Z")),
            BuildDecision::Build(BuildReason::Expired { .. })
        ));
    }

    #[test]
    fn forged_future_timestamp_does_not_keep_an_old_ami_alive() {
        let id = identity();
        let mut image = managed("ami-1", "2026-11-01T00:00:00Z", Some("ami-base1"));
        image
            .tags
            .insert(keys::CREATE_TIMESTAMP.into(), "2099-01-01T00:00:00Z".into());
        let images = [image];
        assert!(matches!(
            decide_build(inputs(&images, &id, Some("ami-base1"), "2026-11-21T00:00:00Z")),
            BuildDecision::Build(BuildReason::Expired { .. })
        ));
    }

    #[test]
    fn pending_ami_is_not_kept() {
        let id = identity();
        let mut image = managed("ami-1", "2026-11-20T00:00:00Z", Some("ami-base1"));
        image.state = Some("pending".into());
        let images = [image];
        assert_eq!(
            decide_build(inputs(&images, &id, Some("ami-base1"), "2026-11-21T00:00:00Z")),
            BuildDecision::Build(BuildReason::NoManagedAmi)
        );
    }

    #[test]
    fn same_second_tie_is_broken_by_id_whatever_the_input_order() {
        let selector = Selector::for_cluster("opsy-gitops");
        let policy = EligibilityPolicy::expiring_after(48 * HOUR);
        let a = managed("ami-0aaa", "2026-11-20T00:00:00Z", None);
        let b = managed("ami-0bbb", "2026-11-20T00:00:00Z", None);
        let now = ts("2026-11-21T00:00:00Z");
        let forward = [a.clone(), b.clone()];
        let backward = [b, a];
        assert_eq!(
            newest_eligible(&forward, &selector, &policy, now).map(|(i, _)| i.id.as_str()),
            Some("ami-0bbb")
        );
        assert_eq!(
            newest_eligible(&backward, &selector, &policy, now).map(|(i, _)| i.id.as_str()),
            Some("ami-0bbb")
        );
    }

    #[test]
    fn evaluate_names_each_reason() {
        let selector = Selector::for_cluster("opsy-gitops");
        let policy = EligibilityPolicy {
            expires_in: 48 * HOUR,
            min_age: 6 * HOUR,
        };
        let now = ts("2026-11-21T00:00:00Z");

        let ok = managed("ami-ok", "2026-11-20T00:00:00Z", None);
        assert_eq!(evaluate(&ok, &selector, &policy, now), Ok(ts("2026-11-20T00:00:00Z")));

        let mut untagged = ok.clone();
        untagged.tags.clear();
        assert_eq!(
            evaluate(&untagged, &selector, &policy, now),
            Err(Ineligible::NotManaged)
        );

        let mut deprecated = ok.clone();
        deprecated.tags.insert(keys::STATUS.into(), "deprecated".into());
        assert_eq!(
            evaluate(&deprecated, &selector, &policy, now),
            Err(Ineligible::NotActive)
        );

        let expired = managed("ami-exp", "2026-11-18T00:00:00Z", None);
        assert_eq!(
            evaluate(&expired, &selector, &policy, now),
            Err(Ineligible::Expired {
                expired_at: ts("2026-11-20T00:00:00Z")
            })
        );

        let young = managed("ami-young", "2026-11-20T20:00:00Z", None);
        assert_eq!(
            evaluate(&young, &selector, &policy, now),
            Err(Ineligible::TooYoung {
                usable_from: ts("2026-11-21T02:00:00Z")
            })
        );

        let mut no_time = ok.clone();
        no_time.tags.remove(keys::CREATE_TIMESTAMP);
        no_time.creation_date = None;
        assert_eq!(
            evaluate(&no_time, &selector, &policy, now),
            Err(Ineligible::NoTimestamp)
        );

        let mut failed = ok;
        failed.state = Some("failed".into());
        assert_eq!(
            evaluate(&failed, &selector, &policy, now),
            Err(Ineligible::NotAvailable)
        );
    }

    #[test]
    fn newest_eligible_skips_newer_ineligible_amis() {
        let selector = Selector::for_cluster("opsy-gitops");
        let policy = EligibilityPolicy::expiring_after(48 * HOUR);
        let now = ts("2026-11-21T00:00:00Z");
        let good = managed("ami-good", "2026-11-20T00:00:00Z", None);
        let mut newer_deprecated = managed("ami-dep", "2026-11-20T12:00:00Z", None);
        newer_deprecated.tags.insert(keys::STATUS.into(), "deprecated".into());
        // A third-party public AMI: newer, forged future timestamp, but none of our identity tags.
        let third_party = Image {
            id: "ami-evil".into(),
            creation_date: Some(ts("2026-11-20T23:00:00Z")),
            state: Some("available".into()),
            tags: BTreeMap::from([
                (keys::STATUS.to_owned(), "active".to_owned()),
                (keys::CREATE_TIMESTAMP.to_owned(), "2099-01-01T00:00:00Z".to_owned()),
            ]),
            ..Image::default()
        };
        let images = [good, newer_deprecated, third_party];
        assert_eq!(
            newest_eligible(&images, &selector, &policy, now).map(|(i, _)| i.id.as_str()),
            Some("ami-good")
        );
    }

    #[test]
    fn newest_base_is_by_creation_date_and_skips_unavailable() {
        let mk = |id: &str, date: &str, state: &str| Image {
            id: id.into(),
            creation_date: Some(ts(date)),
            state: Some(state.into()),
            ..Image::default()
        };
        let images = [
            mk("ami-a", "2026-10-01T00:00:00Z", "available"),
            mk("ami-b", "2026-11-01T00:00:00Z", "available"),
            mk("ami-c", "2026-11-15T00:00:00Z", "pending"),
            Image {
                id: "ami-nodate".into(),
                ..Image::default()
            },
        ];
        assert_eq!(newest_base_image(&images).map(|i| i.id.as_str()), Some("ami-b"));
        assert_eq!(newest_base_image(&[]), None);
    }

    #[test]
    fn huge_lifetime_saturates_instead_of_overflowing() {
        let selector = Selector::for_cluster("opsy-gitops");
        let policy = EligibilityPolicy::expiring_after(Duration::from_secs(u64::MAX / 2));
        let image = managed("ami-1", "2026-11-20T00:00:00Z", None);
        assert!(evaluate(&image, &selector, &policy, ts("2026-11-21T00:00:00Z")).is_ok());
    }
}
