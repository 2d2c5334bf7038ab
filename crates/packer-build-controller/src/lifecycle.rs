//! Pure decisions of the image lifecycle after a build: copying to distribution regions, launch permissions, and
//! which older AMIs retention deregisters. The clock is an argument; the executor is in [`crate::reconcile`].

use std::{collections::BTreeMap, time::Duration};

use ami_tags::{Image, keys};
use api_types::packer_builder::{DistributedImage, LaunchPermissionsSpec};
use jiff::Timestamp;

/// Copy state values of `status.distributedImages[].state`.
pub mod state {
    /// CopyImage was called; the copy is not available yet.
    pub const COPYING: &str = "copying";
    /// The copy is available.
    pub const AVAILABLE: &str = "available";
    /// The last attempt failed; retried with back-off.
    pub const FAILED: &str = "failed";
}

/// The `source-image` tag value of copies of `source` built in `build_region`.
pub fn source_tag(build_region: &str, source: &str) -> String {
    format!("{build_region}/{source}")
}

/// The CopyImage ClientToken of attempt `failures` (0 for the first) to copy `source` of build `build_id` to
/// `region`: the same for every retry and restart of one attempt, so EC2 never makes a second copy; a new attempt after
/// a failed copy gets a new token (EC2 would answer a reused token with the failed copy). At most 64 ASCII characters.
pub fn copy_token(build_id: &str, source: &str, region: &str, failures: i32) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for part in [build_id, source, region, &failures.to_string()] {
        hasher.update(part.len().to_string().as_bytes());
        hasher.update(b":");
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("opsy-{}", &hex[..48])
}

/// What to do about one copy (one source AMI in one distribution region).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyStep {
    /// No copy exists and none is being retried later: call CopyImage with the token of attempt `failures`.
    Copy {
        /// Failed attempts so far (selects the ClientToken).
        failures: i32,
    },
    /// The copy exists and is not available yet: look again shortly.
    Wait {
        /// The copy.
        image_id: String,
    },
    /// The copy is available.
    Available {
        /// The copy.
        image_id: String,
    },
    /// The copy failed in EC2 (state `failed`, `error`, `invalid`): deregister it and record the failure.
    Failed {
        /// The failed copy.
        image_id: String,
        /// EC2's reason, or its state.
        why: String,
    },
    /// An earlier attempt failed; the next one is due at `at`.
    Backoff {
        /// When to try again.
        at: Timestamp,
    },
}

/// Decides the next step of one copy from what EC2 shows in the region (`found`: the copies of this source, tagged
/// `source-image`) and the status entry of the copy (its failures), after `retry_base` doubled per failure.
pub fn copy_step(found: &[&Image], entry: Option<&DistributedImage>, retry_base: Duration, now: Timestamp) -> CopyStep {
    // Several copies can only exist when something else copied too; prefer an available one, then one in progress.
    let rank = |i: &&&Image| match i.state.as_deref() {
        Some("available") | None => 0,
        Some("pending") => 1,
        _ => 2,
    };
    if let Some(image) = found.iter().min_by_key(|i| (rank(i), i.id.clone())) {
        return match image.state.as_deref() {
            Some("available") | None => CopyStep::Available {
                image_id: image.id.clone(),
            },
            Some("pending") => CopyStep::Wait {
                image_id: image.id.clone(),
            },
            Some(other) => CopyStep::Failed {
                image_id: image.id.clone(),
                why: format!("the copy {} ended in state {other}", image.id),
            },
        };
    }
    let failures = entry.map_or(0, |e| e.failures);
    if let Some(failed_at) = entry.and_then(|e| e.failed_at.as_ref()).filter(|_| failures > 0) {
        let at = failed_at
            .0
            .checked_add(crate::decide::retry_backoff(retry_base, failures))
            .unwrap_or(Timestamp::MAX);
        if at > now {
            return CopyStep::Backoff { at };
        }
    }
    CopyStep::Copy { failures }
}

/// One launch permission of an AMI.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    /// An AWS account.
    Account(String),
    /// An AWS Organizations organization.
    Organization(String),
    /// An organizational unit.
    OrganizationalUnit(String),
    /// Everybody (`Group: all`): a public AMI.
    Public,
}

/// Launch permissions to add and remove so an AMI has exactly the ones the spec names. The spec cannot make an AMI
/// public, on purpose: a public permission found on the AMI is removed.
pub fn permission_change(
    current: &[Permission],
    desired: &LaunchPermissionsSpec,
) -> (Vec<Permission>, Vec<Permission>) {
    let mut wanted: Vec<Permission> = desired
        .account_ids
        .iter()
        .cloned()
        .map(Permission::Account)
        .chain(desired.organization_arns.iter().cloned().map(Permission::Organization))
        .chain(
            desired
                .organizational_unit_arns
                .iter()
                .cloned()
                .map(Permission::OrganizationalUnit),
        )
        .collect();
    wanted.sort();
    wanted.dedup();
    let add = wanted.iter().filter(|p| !current.contains(p)).cloned().collect();
    let mut remove: Vec<Permission> = current.iter().filter(|p| !wanted.contains(p)).cloned().collect();
    remove.sort();
    remove.dedup();
    (add, remove)
}

/// Accounts to add to and remove from a snapshot's createVolumePermission: `desired` exactly.
pub fn account_change(current: &[String], desired: &[String]) -> (Vec<String>, Vec<String>) {
    let add = desired.iter().filter(|a| !current.contains(a)).cloned().collect();
    let remove = current.iter().filter(|a| !desired.contains(a)).cloned().collect();
    (add, remove)
}

/// What retention keeps: the newest `keep` builds and/or the builds younger than `max_age`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Builds to keep, newest first.
    pub keep: Option<usize>,
    /// Keep builds younger than this.
    pub max_age: Option<Duration>,
}

/// The AMIs of one PackerBuilder in one region that retention would deregister, oldest first. AMIs are grouped into
/// builds by their `build-id` tag (a template with several sources makes several AMIs per build); a build is kept
/// when it holds a `protected` AMI (the active ones), ranks among the newest `keep`, or is younger than `max_age`
/// (when both are set, either keeps it). AMIs still being made (`pending`) are never candidates, nor are AMIs without a
/// `created-by-namespace` tag (made by the original operator and never adopted): a same-named PackerBuilder in another
/// namespace counts them as its own too, so neither may delete them; they are left out of the count as well. Which
/// candidates are in use is decided afterwards ([`in_use_reason`]).
pub fn retention_candidates<'a>(
    images: &'a [Image],
    protected: &[String],
    policy: RetentionPolicy,
    now: Timestamp,
) -> Vec<&'a Image> {
    let mut builds: BTreeMap<String, Vec<&Image>> = BTreeMap::new();
    let judged = images
        .iter()
        .filter(|i| i.state.as_deref() != Some("pending") && i.tag(keys::CREATED_BY_NAMESPACE).is_some());
    for image in judged {
        let key = image
            .tag(keys::BUILD_ID)
            .map_or_else(|| image.id.clone(), str::to_owned);
        builds.entry(key).or_default().push(image);
    }
    let created = |group: &[&Image]| {
        group
            .iter()
            .filter_map(|i| ami_tags::created_at(i, now).map(|(t, _)| t))
            .max()
            .unwrap_or(Timestamp::MIN)
    };
    let mut ordered: Vec<(Timestamp, String, Vec<&Image>)> = builds
        .into_iter()
        .map(|(key, group)| (created(&group), key, group))
        .collect();
    // Newest first; ties by build key so the order never depends on EC2's answer order.
    ordered.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    let mut out: Vec<&Image> = Vec::new();
    for (rank, (created, _, group)) in ordered.iter().enumerate() {
        let is_protected = group.iter().any(|i| protected.contains(&i.id));
        let kept_by_count = policy.keep.is_some_and(|keep| rank < keep);
        let kept_by_age = policy
            .max_age
            .is_some_and(|max| created.checked_add(max).is_ok_and(|until| until > now));
        if !(is_protected || kept_by_count || kept_by_age) {
            out.extend(group.iter().copied());
        }
    }
    out.sort_by(|a, b| {
        let ta = ami_tags::created_at(a, now).map(|(t, _)| t);
        let tb = ami_tags::created_at(b, now).map(|(t, _)| t);
        ta.cmp(&tb).then_with(|| a.id.cmp(&b.id))
    });
    out
}

/// What uses AMIs in a region, as observed: AMI ID to a description of each user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// AMI ID -> users, e.g. `launch template lt-1 version 3 (Auto Scaling group web)`.
    pub users: BTreeMap<String, Vec<String>>,
}

impl Usage {
    /// Records that `user` uses `image`.
    pub fn add(&mut self, image: &str, user: String) {
        let users = self.users.entry(image.to_owned()).or_default();
        if !users.contains(&user) {
            users.push(user);
        }
    }
}

/// Why `image` must stay: the first users found (all of them named when few), or `None` when nothing uses it.
pub fn in_use_reason(usage: &Usage, image: &str) -> Option<String> {
    let users = usage.users.get(image)?;
    let shown: Vec<&str> = users.iter().take(3).map(String::as_str).collect();
    let more = users.len().saturating_sub(shown.len());
    Some(if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn image(id: &str, build: &str, created: &str) -> Image {
        Image {
            id: id.into(),
            state: Some("available".into()),
            tags: BTreeMap::from([
                (keys::BUILD_ID.to_owned(), build.to_owned()),
                (keys::CREATE_TIMESTAMP.to_owned(), created.to_owned()),
                (keys::CREATED_BY_NAMESPACE.to_owned(), "team-a".to_owned()),
            ]),
            ..Image::default()
        }
    }

    fn ids(images: &[&Image]) -> Vec<String> {
        images.iter().map(|i| i.id.clone()).collect()
    }

    fn four_builds() -> Vec<Image> {
        vec![
            image("ami-1", "b1", "2026-11-01T00:00:00Z"),
            image("ami-2", "b2", "2026-11-08T00:00:00Z"),
            image("ami-3", "b3", "2026-11-15T00:00:00Z"),
            image("ami-4", "b4", "2026-11-22T00:00:00Z"),
        ]
    }

    const NOW: &str = "2026-11-30T00:00:00Z";
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn keep_two_of_four_builds_deregisters_the_two_oldest_oldest_first() {
        let images = four_builds();
        let policy = RetentionPolicy {
            keep: Some(2),
            max_age: None,
        };
        let out = retention_candidates(&images, &["ami-4".into()], policy, ts(NOW));
        assert_eq!(ids(&out), ["ami-1", "ami-2"]);
    }

    #[test]
    fn the_active_ami_is_never_a_candidate_even_when_it_is_the_oldest() {
        let images = four_builds();
        let policy = RetentionPolicy {
            keep: Some(1),
            max_age: None,
        };
        let out = retention_candidates(&images, &["ami-1".into()], policy, ts(NOW));
        assert_eq!(ids(&out), ["ami-2", "ami-3"]);
    }

    #[test]
    fn max_age_alone_keeps_young_builds_and_the_active_one() {
        let images = four_builds();
        let policy = RetentionPolicy {
            keep: None,
            max_age: Some(10 * DAY),
        };
        // ami-4 (8 days) is young; ami-3 (15 days) is old; ami-2 is active.
        let out = retention_candidates(&images, &["ami-2".into()], policy, ts(NOW));
        assert_eq!(ids(&out), ["ami-1", "ami-3"]);
    }

    #[test]
    fn with_keep_and_max_age_either_keeps_a_build() {
        let images = four_builds();
        let policy = RetentionPolicy {
            keep: Some(1),
            max_age: Some(20 * DAY),
        };
        // keep 1 keeps ami-4; maxAge 20d keeps ami-3 (15 days) and ami-4.
        let out = retention_candidates(&images, &["ami-4".into()], policy, ts(NOW));
        assert_eq!(ids(&out), ["ami-1", "ami-2"]);
    }

    #[test]
    fn amis_of_one_build_are_kept_or_deregistered_together() {
        let mut images = four_builds();
        images.push(image("ami-1b", "b1", "2026-11-01T00:00:00Z"));
        images.push(image("ami-3b", "b3", "2026-11-15T00:00:00Z"));
        let policy = RetentionPolicy {
            keep: Some(2),
            max_age: None,
        };
        let out = retention_candidates(&images, &["ami-4".into()], policy, ts(NOW));
        assert_eq!(ids(&out), ["ami-1", "ami-1b", "ami-2"]);
    }

    #[test]
    fn a_pending_ami_is_never_a_candidate() {
        let mut images = four_builds();
        images[0].state = Some("pending".into());
        let policy = RetentionPolicy {
            keep: Some(1),
            max_age: None,
        };
        let out = retention_candidates(&images, &["ami-4".into()], policy, ts(NOW));
        assert_eq!(ids(&out), ["ami-2", "ami-3"]);
    }

    #[test]
    fn an_ami_of_the_original_operator_without_a_namespace_is_never_a_candidate_nor_counted() {
        let mut images = four_builds();
        images[0].tags.remove(keys::CREATED_BY_NAMESPACE);
        let policy = RetentionPolicy {
            keep: Some(1),
            max_age: None,
        };
        let out = retention_candidates(&images, &["ami-4".into()], policy, ts(NOW));
        assert_eq!(ids(&out), ["ami-2", "ami-3"]);
    }

    #[test]
    fn fewer_builds_than_keep_deregisters_nothing() {
        let images = four_builds();
        let policy = RetentionPolicy {
            keep: Some(10),
            max_age: None,
        };
        assert!(retention_candidates(&images, &[], policy, ts(NOW)).is_empty());
    }

    #[test]
    fn a_copy_token_is_stable_per_attempt_and_new_per_attempt_and_region() {
        let a = copy_token("build-1", "ami-1", "eu-west-1", 0);
        assert_eq!(a, copy_token("build-1", "ami-1", "eu-west-1", 0));
        assert_ne!(a, copy_token("build-1", "ami-1", "eu-west-1", 1));
        assert_ne!(a, copy_token("build-1", "ami-1", "us-east-1", 0));
        assert_ne!(a, copy_token("build-2", "ami-1", "eu-west-1", 0));
        assert!(a.len() <= 64 && a.is_ascii());
    }

    fn copy(id: &str, state: &str) -> Image {
        Image {
            id: id.into(),
            state: Some(state.into()),
            ..Image::default()
        }
    }

    #[test]
    fn copy_step_covers_every_state() {
        let now = ts(NOW);
        let base = Duration::from_secs(30);
        assert_eq!(copy_step(&[], None, base, now), CopyStep::Copy { failures: 0 });
        let pending = copy("ami-c", "pending");
        assert_eq!(
            copy_step(&[&pending], None, base, now),
            CopyStep::Wait {
                image_id: "ami-c".into()
            }
        );
        let available = copy("ami-d", "available");
        assert_eq!(
            copy_step(&[&pending, &available], None, base, now),
            CopyStep::Available {
                image_id: "ami-d".into()
            },
            "an available copy wins over one in progress"
        );
        let failed = copy("ami-e", "failed");
        assert!(matches!(
            copy_step(&[&failed], None, base, now),
            CopyStep::Failed { .. }
        ));
        let entry = DistributedImage {
            failures: 2,
            failed_at: Some(api_types::conditions::Time(ts("2026-11-29T23:59:30Z"))),
            ..DistributedImage::default()
        };
        // Two failures: 60 s back-off from 23:59:30, so due at 00:00:30.
        assert_eq!(
            copy_step(&[], Some(&entry), base, now),
            CopyStep::Backoff {
                at: ts("2026-11-30T00:00:30Z")
            }
        );
        assert_eq!(
            copy_step(&[], Some(&entry), base, ts("2026-11-30T00:00:31Z")),
            CopyStep::Copy { failures: 2 }
        );
    }

    #[test]
    fn permissions_become_exactly_the_spec_and_public_is_removed() {
        let current = vec![
            Permission::Account("111111111111".into()),
            Permission::Account("222222222222".into()),
            Permission::Public,
        ];
        let desired = LaunchPermissionsSpec {
            account_ids: vec!["222222222222".into(), "333333333333".into()],
            organization_arns: vec!["arn:aws:organizations::123456789012:organization/o-abcdefghij".into()],
            ..LaunchPermissionsSpec::default()
        };
        let (add, remove) = permission_change(&current, &desired);
        assert_eq!(
            add,
            [
                Permission::Account("333333333333".into()),
                Permission::Organization("arn:aws:organizations::123456789012:organization/o-abcdefghij".into()),
            ]
        );
        assert_eq!(remove, [Permission::Account("111111111111".into()), Permission::Public]);
        let after: Vec<Permission> = vec![
            Permission::Account("222222222222".into()),
            Permission::Account("333333333333".into()),
            Permission::Organization("arn:aws:organizations::123456789012:organization/o-abcdefghij".into()),
        ];
        assert_eq!(
            permission_change(&after, &desired),
            (vec![], vec![]),
            "converged: nothing to do"
        );
    }

    #[test]
    fn snapshot_accounts_become_exactly_the_spec() {
        let (add, remove) = account_change(&["1".into(), "2".into()], &["2".into(), "3".into()]);
        assert_eq!((add, remove), (vec!["3".to_owned()], vec!["1".to_owned()]));
    }

    #[test]
    fn in_use_names_at_most_three_users() {
        let mut usage = Usage::default();
        for n in 0..5 {
            usage.add("ami-1", format!("instance i-{n}"));
        }
        usage.add("ami-1", "instance i-0".into());
        assert_eq!(
            in_use_reason(&usage, "ami-1").as_deref(),
            Some("instance i-0, instance i-1, instance i-2 and 2 more")
        );
        assert_eq!(in_use_reason(&usage, "ami-2"), None);
    }
}
