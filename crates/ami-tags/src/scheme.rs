//! Tag keys and values, the tag sets the operator writes, and reading them back.
//!
//! Compatibility rules with AMIs made by the original Go operator: `created-by-namespace` may be absent;
//! `base-ami` may be absent; `create-timestamp` may be absent or unparsable (then EC2's `CreationDate` is used).
//! `create-timestamp` is written once and never rewritten: adoption only adds tags that are missing.

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;

/// Tag keys.
pub mod keys {
    /// Marks an AMI as made by this operator; value [`super::OPERATOR_SIGNATURE`].
    pub const BROUGHT_TO_YOU_BY: &str = "brought-to-you-by";
    /// EKS cluster the AMI is for.
    pub const CLUSTER_NAME: &str = "cluster-name";
    /// Name of the PackerBuilder that made it.
    pub const CREATED_BY: &str = "created-by";
    /// Namespace of the PackerBuilder that made it (absent on AMIs of the original operator).
    pub const CREATED_BY_NAMESPACE: &str = "created-by-namespace";
    /// Packer repository URL, without credentials.
    pub const PACKER_REPO: &str = "packer-repo";
    /// Packer repository branch.
    pub const PACKER_REPO_BRANCH: &str = "packer-repo-branch";
    /// Build identifier (UUID) of the PackerBuilder run that made it.
    pub const BUILD_ID: &str = "build-id";
    /// Short Job identifier of that run.
    pub const JOB_ID: &str = "job-id";
    /// Base AMI the build started from.
    pub const BASE_AMI: &str = "base-ami";
    /// RFC 3339 UTC time the AMI was first tagged; the start of its lifetime.
    pub const CREATE_TIMESTAMP: &str = "create-timestamp";
    /// `active` or `deprecated`.
    pub const STATUS: &str = "status";
    /// Fingerprint of the build configuration (repository, branch, builder image, commands) the AMI was built with;
    /// absent on AMIs of the original operator and of earlier releases.
    pub const BUILD_CONFIG: &str = "build-config";
    /// On a copy in a distribution region: `<region>/<AMI ID>` of the built AMI it was copied from.
    pub const SOURCE_IMAGE: &str = "source-image";
}

/// Value of the `brought-to-you-by` tag.
pub const OPERATOR_SIGNATURE: &str = "opsy-the-ami-operator";

/// EC2's limit on a tag value, in Unicode characters.
pub const MAX_TAG_VALUE_CHARS: usize = 256;

/// A value that fits in an EC2 tag: unchanged when it fits, else its first characters, `~` and 16 hex digits of
/// its SHA-256, exactly [`MAX_TAG_VALUE_CHARS`] long. Deterministic, so the same long repository URL or branch
/// always gives the same tag (and the same EC2 tag filter), and two long values that share a prefix still differ.
pub fn fit_tag_value(value: &str) -> String {
    if value.chars().count() <= MAX_TAG_VALUE_CHARS {
        return value.to_owned();
    }
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(value.as_bytes()));
    let keep = MAX_TAG_VALUE_CHARS - 1 - 16;
    let prefix: String = value.chars().take(keep).collect();
    format!("{prefix}~{}", &digest[..16])
}

/// A `create-timestamp` further in the future than this is not believed (clock skew allowance).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The `status` tag's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmiStatus {
    /// Usable.
    Active,
    /// Superseded by a newer build; never chosen again.
    Deprecated,
}

impl AmiStatus {
    /// The tag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Deprecated => "deprecated",
        }
    }
}

/// What the decisions need to know about an AMI. Built from EC2 `DescribeImages` by an adapter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    /// AMI ID.
    pub id: String,
    /// AMI name.
    pub name: Option<String>,
    /// EC2 `CreationDate`.
    pub creation_date: Option<Timestamp>,
    /// EC2 image state (`available`, `pending`, ...), when known.
    pub state: Option<String>,
    /// EC2 `Architecture` (`x86_64`, `arm64`, `i386`, `x86_64_mac`, `arm64_mac`), when known.
    pub architecture: Option<String>,
    /// Tags, key to value (EC2 shows them only to the AMI's owner: an AMI shared from another account has none).
    pub tags: BTreeMap<String, String>,
    /// EC2 `DeprecationTime`, when one is set.
    pub deprecation_time: Option<Timestamp>,
    /// EBS snapshots of its block device mappings.
    pub snapshot_ids: Vec<String>,
    /// EC2 `Description`.
    pub description: Option<String>,
}

impl Image {
    /// A tag's value.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    /// The `status` tag, when it holds a known value.
    pub fn status(&self) -> Option<AmiStatus> {
        match self.tag(keys::STATUS)? {
            "active" => Some(AmiStatus::Active),
            "deprecated" => Some(AmiStatus::Deprecated),
            _ => None,
        }
    }

    /// True unless EC2 reported a state other than `available`.
    pub fn is_available(&self) -> bool {
        self.state.as_deref().is_none_or(|s| s == "available")
    }
}

/// Who made an AMI: the identity tags of one PackerBuilder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `cluster-name`.
    pub cluster_name: String,
    /// `created-by`: the PackerBuilder's name.
    pub created_by: String,
    /// `created-by-namespace`: the PackerBuilder's namespace.
    pub namespace: String,
    /// `packer-repo`, already stripped of credentials.
    pub packer_repo: String,
    /// `packer-repo-branch`.
    pub packer_repo_branch: String,
}

impl Identity {
    /// Builds an identity; the repository URL is stripped of credentials here, so it can never reach a tag. Every
    /// value is made to fit an EC2 tag ([`fit_tag_value`]) here, once, so the tags written and the tags looked for
    /// are the same strings.
    pub fn new(
        cluster_name: impl Into<String>,
        created_by: impl Into<String>,
        namespace: impl Into<String>,
        repo_url: &str,
        branch: impl Into<String>,
    ) -> Self {
        Self {
            cluster_name: fit_tag_value(&cluster_name.into()),
            created_by: fit_tag_value(&created_by.into()),
            namespace: fit_tag_value(&namespace.into()),
            packer_repo: fit_tag_value(&sanitize_repo_url(repo_url)),
            packer_repo_branch: fit_tag_value(&branch.into()),
        }
    }

    /// The identity tags, as written on new AMIs.
    pub fn tags(&self) -> BTreeMap<String, String> {
        [
            (keys::BROUGHT_TO_YOU_BY, OPERATOR_SIGNATURE),
            (keys::CLUSTER_NAME, &self.cluster_name),
            (keys::CREATED_BY, &self.created_by),
            (keys::CREATED_BY_NAMESPACE, &self.namespace),
            (keys::PACKER_REPO, &self.packer_repo),
            (keys::PACKER_REPO_BRANCH, &self.packer_repo_branch),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

/// Which AMIs count as "ours" for a decision: required tag values, plus a namespace that must match when the
/// AMI carries `created-by-namespace` (AMIs of the original operator do not, and are accepted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    required: BTreeMap<String, String>,
    /// `None`: any namespace. Otherwise an AMI that carries `created-by-namespace` must name one of these.
    namespaces: Option<Vec<String>>,
}

impl Selector {
    /// AMIs of exactly this PackerBuilder.
    pub fn for_builder(identity: &Identity) -> Self {
        let mut required = identity.tags();
        required.remove(keys::CREATED_BY_NAMESPACE);
        Self {
            required,
            namespaces: Some(vec![identity.namespace.clone()]),
        }
    }

    /// Any AMI this operator made for a cluster (what an AMIRefresher with filters looks for).
    pub fn for_cluster(cluster_name: &str) -> Self {
        let required = [
            (keys::BROUGHT_TO_YOU_BY, OPERATOR_SIGNATURE),
            (keys::CLUSTER_NAME, cluster_name),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        Self {
            required,
            namespaces: None,
        }
    }

    /// AMIs this operator made for a cluster in one of `namespaces` (an AMIRefresher's own namespace and its
    /// `trustedNamespaces`; `*` trusts every namespace). AMIs without `created-by-namespace` (made by the
    /// original Go operator) are accepted.
    pub fn for_cluster_in(cluster_name: &str, namespaces: &[String]) -> Self {
        let mut selector = Self::for_cluster(cluster_name);
        if !namespaces.iter().any(|n| n == "*") {
            selector.namespaces = Some(namespaces.to_vec());
        }
        selector
    }

    /// Whether the AMI's `created-by-namespace` (if any) is one this selector trusts.
    pub fn trusts_namespace_of(&self, image: &Image) -> bool {
        match (&self.namespaces, image.tag(keys::CREATED_BY_NAMESPACE)) {
            (Some(trusted), Some(have)) => trusted.iter().any(|n| n == have),
            _ => true,
        }
    }

    /// Any AMI this operator (or the original Go operator) made, whoever it was made for: what an explicit AMI
    /// or a PackerBuilder's AMI is checked against before it is rolled out.
    pub fn any_managed() -> Self {
        Self {
            required: [(keys::BROUGHT_TO_YOU_BY.to_owned(), OPERATOR_SIGNATURE.to_owned())].into(),
            namespaces: None,
        }
    }

    /// The `tag:<key>` filters EC2 can apply server-side for this selector, so DescribeImages never lists the
    /// whole region.
    pub fn ec2_tag_filters(&self) -> Vec<(String, String)> {
        self.required
            .iter()
            .filter(|(k, _)| k.as_str() != keys::PACKER_REPO)
            .map(|(k, v)| (format!("tag:{k}"), v.clone()))
            .collect()
    }

    /// Whether the image carries the identity tags.
    pub fn matches(&self, image: &Image) -> bool {
        let tags_match = self.required.iter().all(|(key, want)| match image.tag(key) {
            Some(have) if key == keys::PACKER_REPO => fit_tag_value(&sanitize_repo_url(have)) == *want,
            Some(have) => have == want,
            None => false,
        });
        tags_match && self.trusts_namespace_of(image)
    }
}

/// Facts of one successful build, turned into build tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildRecord {
    /// `build-id`.
    pub build_id: String,
    /// `job-id`.
    pub job_id: String,
    /// `base-ami`; `None` for a self-contained Packer project.
    pub base_ami: Option<String>,
    /// `create-timestamp`: when the AMI is first tagged.
    pub created_at: Timestamp,
    /// `build-config`: the fingerprint recorded when the build started, if any.
    pub build_config: Option<String>,
}

/// The full tag set of a freshly built AMI: identity, build tags and `status=active`.
pub fn build_tags(identity: &Identity, record: &BuildRecord) -> BTreeMap<String, String> {
    let mut tags = identity.tags();
    tags.insert(keys::BUILD_ID.to_owned(), record.build_id.clone());
    tags.insert(keys::JOB_ID.to_owned(), record.job_id.clone());
    if let Some(base) = &record.base_ami {
        tags.insert(keys::BASE_AMI.to_owned(), base.clone());
    }
    tags.insert(keys::CREATE_TIMESTAMP.to_owned(), format_timestamp(record.created_at));
    if let Some(config) = &record.build_config {
        tags.insert(keys::BUILD_CONFIG.to_owned(), config.clone());
    }
    tags.insert(keys::STATUS.to_owned(), AmiStatus::Active.as_str().to_owned());
    tags
}

/// When an AMI was first tagged by the build `build_id`: its `create-timestamp`, if its `build-id` tag names that
/// build. Collecting the same build a second time (a retry after an AWS error, a restart) reuses it, so the AMI's
/// lifetime never starts again.
pub fn first_tagged_at(image: &Image, build_id: &str) -> Option<Timestamp> {
    if image.tag(keys::BUILD_ID) != Some(build_id) {
        return None;
    }
    image.tag(keys::CREATE_TIMESTAMP)?.trim().parse().ok()
}

/// The AMIs a new build of `identity` retires: the other `active` AMIs of exactly this PackerBuilder (cluster,
/// name, namespace, repository, branch; AMIs of the original operator carry no namespace and count as ours).
/// Never an AMI of another PackerBuilder, even one with the same name in another namespace.
/// `new_amis` are every AMI of the new build (a template may make several, e.g. one per architecture).
pub fn superseded<'a>(images: &'a [Image], identity: &Identity, new_amis: &[String]) -> Vec<&'a str> {
    let selector = Selector::for_builder(identity);
    images
        .iter()
        .filter(|i| !new_amis.contains(&i.id) && i.status() == Some(AmiStatus::Active) && selector.matches(i))
        .map(|i| i.id.as_str())
        .collect()
}

/// Tags that retire an AMI superseded by a newer build.
pub fn deprecation_tags() -> BTreeMap<String, String> {
    BTreeMap::from([(keys::STATUS.to_owned(), AmiStatus::Deprecated.as_str().to_owned())])
}

/// Tags to add when adopting an existing AMI: only the ones it lacks. An existing `create-timestamp` (even an
/// unparsable one) is never rewritten; a missing one is filled from EC2's `CreationDate`, not from "now", so
/// adoption never extends an AMI's life.
pub fn adoption_tags(image: &Image, identity: &Identity) -> BTreeMap<String, String> {
    let mut add = BTreeMap::new();
    if image.tag(keys::CREATED_BY_NAMESPACE).is_none() {
        add.insert(keys::CREATED_BY_NAMESPACE.to_owned(), identity.namespace.clone());
    }
    if image.tag(keys::CREATE_TIMESTAMP).is_none()
        && let Some(created) = image.creation_date
    {
        add.insert(keys::CREATE_TIMESTAMP.to_owned(), format_timestamp(created));
    }
    add
}

/// Where an AMI's age was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampSource {
    /// The `create-timestamp` tag.
    Tag,
    /// EC2's `CreationDate` (tag absent, unparsable, or implausibly in the future).
    CreationDate,
}

/// When an AMI's lifetime started: its `create-timestamp` tag, else EC2's `CreationDate`. A tag more than
/// [`MAX_CLOCK_SKEW`] in the future is not believed (it would keep an AMI "fresh" forever and make it win every
/// selection), so `CreationDate` is used instead.
pub fn created_at(image: &Image, now: Timestamp) -> Option<(Timestamp, TimestampSource)> {
    let believable_until = now.checked_add(MAX_CLOCK_SKEW).unwrap_or(now);
    let from_tag = image
        .tag(keys::CREATE_TIMESTAMP)
        .and_then(|raw| raw.trim().parse::<Timestamp>().ok())
        .filter(|ts| *ts <= believable_until);
    match from_tag {
        Some(ts) => Some((ts, TimestampSource::Tag)),
        None => image.creation_date.map(|ts| (ts, TimestampSource::CreationDate)),
    }
}

/// RFC 3339 UTC, whole seconds, e.g. `2024-09-01T18:05:40Z` (the format the original operator wrote).
fn format_timestamp(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Strips credentials, query and fragment from a repository URL so it can be written to a tag or a log.
/// `https://user:token@host/org/repo.git?x=y` becomes `https://host/org/repo.git`; scp-like `git@host:org/repo`
/// is kept (its user is not a secret).
pub fn sanitize_repo_url(url: &str) -> String {
    let url = url.trim();
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{scheme}{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(id: &str, identity: &Identity) -> Image {
        let record = BuildRecord {
            build_id: format!("b-{id}"),
            job_id: "j".into(),
            base_ami: None,
            created_at: ts("2026-01-01T00:00:00Z"),
            build_config: None,
        };
        Image {
            id: id.into(),
            state: Some("available".into()),
            tags: build_tags(identity, &record),
            ..Image::default()
        }
    }

    #[test]
    fn a_build_supersedes_only_its_own_builders_amis_never_a_same_named_builder_in_another_namespace() {
        let team_a = Identity::new("prod", "node-ami", "team-a", "https://git.example/p.git", "main");
        let team_b = Identity::new("prod", "node-ami", "team-b", "https://git.example/p.git", "main");
        let images = vec![
            active("ami-a-old", &team_a),
            active("ami-a-new", &team_a),
            active("ami-b", &team_b),
        ];
        assert_eq!(superseded(&images, &team_a, &["ami-a-new".to_owned()]), ["ami-a-old"]);
        assert_eq!(superseded(&images, &team_b, &["ami-b".to_owned()]), Vec::<&str>::new());
    }

    #[test]
    fn a_build_supersedes_active_amis_of_the_original_operator_and_skips_deprecated_ones() {
        let id = identity();
        let mut legacy = active("ami-legacy", &id);
        legacy.tags.remove(keys::CREATED_BY_NAMESPACE);
        let mut old = active("ami-old", &id);
        old.tags.insert(keys::STATUS.into(), "deprecated".into());
        let other_branch = active(
            "ami-branch",
            &Identity::new(
                "opsy-gitops",
                "packer-builder-local",
                "default",
                "https://github.com/ibeify/eks-node-group-ami-refresh",
                "dev",
            ),
        );
        let images = vec![legacy, old, other_branch, active("ami-new", &id)];
        assert_eq!(superseded(&images, &id, &["ami-new".to_owned()]), ["ami-legacy"]);
    }

    #[test]
    fn a_cluster_selector_trusts_only_the_listed_namespaces_and_legacy_amis() {
        let mine = active(
            "ami-mine",
            &Identity::new("prod", "pb", "platform", "https://g/p.git", "main"),
        );
        let other = active(
            "ami-other",
            &Identity::new("prod", "pb", "sandbox", "https://g/p.git", "main"),
        );
        let mut legacy = active(
            "ami-legacy",
            &Identity::new("prod", "pb", "x", "https://g/p.git", "main"),
        );
        legacy.tags.remove(keys::CREATED_BY_NAMESPACE);
        let own = Selector::for_cluster_in("prod", &["platform".into()]);
        assert!(own.matches(&mine));
        assert!(
            !own.matches(&other),
            "another namespace publishing for the same cluster is not trusted"
        );
        assert!(own.matches(&legacy));
        let wider = Selector::for_cluster_in("prod", &["platform".into(), "sandbox".into()]);
        assert!(wider.matches(&other));
        assert!(Selector::for_cluster_in("prod", &["platform".into(), "*".into()]).matches(&other));
    }

    #[test]
    fn long_tag_values_are_shortened_to_ec2s_limit_deterministically_and_stay_distinct() {
        let long_a = format!("https://git.example/{}/a.git", "x".repeat(300));
        let long_b = format!("https://git.example/{}/b.git", "x".repeat(300));
        let a = fit_tag_value(&long_a);
        assert_eq!(a.chars().count(), MAX_TAG_VALUE_CHARS);
        assert_eq!(a, fit_tag_value(&long_a));
        assert_ne!(a, fit_tag_value(&long_b));
        assert_eq!(fit_tag_value("main"), "main");
        let id = Identity::new("c", "n", "ns", &long_a, "main");
        assert!(id.tags().values().all(|v| v.chars().count() <= MAX_TAG_VALUE_CHARS));
        assert!(Selector::for_builder(&id).matches(&active("ami-1", &id)));
    }

    #[test]
    fn collecting_a_build_again_keeps_the_first_create_timestamp() {
        let id = identity();
        let image = active("ami-1", &id);
        assert_eq!(first_tagged_at(&image, "b-ami-1"), Some(ts("2026-01-01T00:00:00Z")));
        assert_eq!(first_tagged_at(&image, "another-build"), None);
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

    /// Tags exactly as the original Go operator wrote them: no namespace.
    fn go_operator_tags() -> BTreeMap<String, String> {
        [
            ("brought-to-you-by", "opsy-the-ami-operator"),
            ("cluster-name", "opsy-gitops"),
            ("created-by", "packer-builder-local"),
            ("packer-repo", "https://github.com/ibeify/eks-node-group-ami-refresh"),
            ("packer-repo-branch", "main"),
            ("build-id", "728d7a64-ca85-42c9-9acd-60c681d4efe3"),
            ("job-id", "3cb1b"),
            ("create-timestamp", "2024-09-01T18:30:48Z"),
            ("status", "active"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn build_tags_carry_every_key_of_the_scheme() {
        let record = BuildRecord {
            build_id: "b-1".into(),
            job_id: "j1".into(),
            base_ami: Some("ami-0123456789abcdef0".into()),
            created_at: ts("2026-11-21T10:00:00.123Z"),
            build_config: None,
        };
        let tags = build_tags(&identity(), &record);
        for key in [
            keys::BROUGHT_TO_YOU_BY,
            keys::CLUSTER_NAME,
            keys::CREATED_BY,
            keys::CREATED_BY_NAMESPACE,
            keys::PACKER_REPO,
            keys::PACKER_REPO_BRANCH,
            keys::BUILD_ID,
            keys::JOB_ID,
            keys::BASE_AMI,
            keys::CREATE_TIMESTAMP,
            keys::STATUS,
        ] {
            assert!(tags.contains_key(key), "missing {key}");
        }
        assert_eq!(tags[keys::BROUGHT_TO_YOU_BY], "opsy-the-ami-operator");
        assert_eq!(tags[keys::CREATE_TIMESTAMP], "2026-11-21T10:00:00Z");
        assert_eq!(tags[keys::STATUS], "active");
    }

    #[test]
    fn self_contained_build_has_no_base_ami_tag() {
        let record = BuildRecord {
            build_id: "b".into(),
            job_id: "j".into(),
            base_ami: None,
            created_at: ts("2026-01-01T00:00:00Z"),
            build_config: None,
        };
        assert!(!build_tags(&identity(), &record).contains_key(keys::BASE_AMI));
    }

    #[test]
    fn credentials_never_reach_the_repo_tag() {
        let id = Identity::new(
            "c",
            "n",
            "ns",
            "https://bot:s3cr3t-token@github.com/org/repo.git?access_token=x#frag",
            "main",
        );
        assert_eq!(id.packer_repo, "https://github.com/org/repo.git");
        assert!(!id.tags().values().any(|v| v.contains("s3cr3t")));
    }

    #[test]
    fn sanitize_keeps_plain_and_scp_urls() {
        assert_eq!(
            sanitize_repo_url("https://github.com/org/repo"),
            "https://github.com/org/repo"
        );
        assert_eq!(
            sanitize_repo_url("git@github.com:org/repo.git"),
            "git@github.com:org/repo.git"
        );
        assert_eq!(
            sanitize_repo_url("ssh://git@host:22/org/repo"),
            "ssh://host:22/org/repo"
        );
        assert_eq!(sanitize_repo_url("file:///srv/git/packer"), "file:///srv/git/packer");
    }

    #[test]
    fn go_operator_ami_matches_its_builder_without_namespace_tag() {
        let image = Image {
            id: "ami-1".into(),
            tags: go_operator_tags(),
            ..Image::default()
        };
        assert!(Selector::for_builder(&identity()).matches(&image));
    }

    #[test]
    fn ami_from_another_namespace_does_not_match() {
        let mut tags = go_operator_tags();
        tags.insert(keys::CREATED_BY_NAMESPACE.into(), "team-b".into());
        let image = Image {
            id: "ami-1".into(),
            tags,
            ..Image::default()
        };
        assert!(!Selector::for_builder(&identity()).matches(&image));
    }

    #[test]
    fn each_identity_tag_is_required() {
        for key in [
            keys::BROUGHT_TO_YOU_BY,
            keys::CLUSTER_NAME,
            keys::CREATED_BY,
            keys::PACKER_REPO,
            keys::PACKER_REPO_BRANCH,
        ] {
            let mut tags = go_operator_tags();
            tags.remove(key);
            let image = Image {
                id: "ami-1".into(),
                tags,
                ..Image::default()
            };
            assert!(
                !Selector::for_builder(&identity()).matches(&image),
                "matched without {key}"
            );
            let mut tags = go_operator_tags();
            tags.insert(key.to_owned(), "something-else".into());
            let image = Image {
                id: "ami-1".into(),
                tags,
                ..Image::default()
            };
            assert!(
                !Selector::for_builder(&identity()).matches(&image),
                "matched with a different {key}"
            );
        }
    }

    #[test]
    fn repo_tag_written_with_credentials_by_the_original_still_matches() {
        let mut tags = go_operator_tags();
        tags.insert(
            keys::PACKER_REPO.into(),
            "https://u:p@github.com/ibeify/eks-node-group-ami-refresh".into(),
        );
        let image = Image {
            id: "ami-1".into(),
            tags,
            ..Image::default()
        };
        assert!(Selector::for_builder(&identity()).matches(&image));
    }

    #[test]
    fn cluster_selector_needs_signature_and_cluster_only() {
        let image = Image {
            id: "ami-1".into(),
            tags: go_operator_tags(),
            ..Image::default()
        };
        assert!(Selector::for_cluster("opsy-gitops").matches(&image));
        assert!(!Selector::for_cluster("other").matches(&image));
        let filters = Selector::for_cluster("opsy-gitops").ec2_tag_filters();
        assert!(filters.contains(&("tag:brought-to-you-by".into(), "opsy-the-ami-operator".into())));
        assert!(filters.contains(&("tag:cluster-name".into(), "opsy-gitops".into())));
    }

    #[test]
    fn created_at_prefers_tag_then_creation_date() {
        let now = ts("2026-11-21T00:00:00Z");
        let mut image = Image {
            id: "ami-1".into(),
            creation_date: Some(ts("2024-09-01T18:00:00Z")),
            tags: go_operator_tags(),
            ..Image::default()
        };
        assert_eq!(
            created_at(&image, now),
            Some((ts("2024-09-01T18:30:48Z"), TimestampSource::Tag))
        );
        image.tags.insert(keys::CREATE_TIMESTAMP.into(), "yesterday-ish".into());
        assert_eq!(
            created_at(&image, now),
            Some((ts("2024-09-01T18:00:00Z"), TimestampSource::CreationDate))
        );
        image.tags.remove(keys::CREATE_TIMESTAMP);
        assert_eq!(
            created_at(&image, now),
            Some((ts("2024-09-01T18:00:00Z"), TimestampSource::CreationDate))
        );
        image.creation_date = None;
        assert_eq!(created_at(&image, now), None);
    }

    #[test]
    fn future_create_timestamp_is_not_believed() {
        let now = ts("2026-11-21T00:00:00Z");
        let mut image = Image {
            id: "ami-1".into(),
            creation_date: Some(ts("2026-01-01T00:00:00Z")),
            tags: go_operator_tags(),
            ..Image::default()
        };
        image
            .tags
            .insert(keys::CREATE_TIMESTAMP.into(), "2099-01-01T00:00:00Z".into());
        assert_eq!(
            created_at(&image, now),
            Some((ts("2026-01-01T00:00:00Z"), TimestampSource::CreationDate))
        );
        // Within the skew allowance the tag is still used.
        image
            .tags
            .insert(keys::CREATE_TIMESTAMP.into(), "2026-11-21T00:04:00Z".into());
        assert_eq!(created_at(&image, now).map(|(_, s)| s), Some(TimestampSource::Tag));
    }

    #[test]
    fn adoption_never_rewrites_create_timestamp() {
        let image = Image {
            id: "ami-1".into(),
            creation_date: Some(ts("2024-09-01T18:00:00Z")),
            tags: go_operator_tags(),
            ..Image::default()
        };
        let add = adoption_tags(&image, &identity());
        assert!(!add.contains_key(keys::CREATE_TIMESTAMP));
        assert_eq!(add.get(keys::CREATED_BY_NAMESPACE).map(String::as_str), Some("default"));
    }

    #[test]
    fn adoption_fills_missing_timestamp_from_creation_date_not_now() {
        let mut tags = go_operator_tags();
        tags.remove(keys::CREATE_TIMESTAMP);
        let image = Image {
            id: "ami-1".into(),
            creation_date: Some(ts("2024-09-01T18:00:00Z")),
            tags,
            ..Image::default()
        };
        let add = adoption_tags(&image, &identity());
        assert_eq!(
            add.get(keys::CREATE_TIMESTAMP).map(String::as_str),
            Some("2024-09-01T18:00:00Z")
        );
    }

    #[test]
    fn status_tag_is_read_strictly() {
        let mut image = Image {
            id: "ami-1".into(),
            tags: go_operator_tags(),
            ..Image::default()
        };
        assert_eq!(image.status(), Some(AmiStatus::Active));
        image.tags.insert(keys::STATUS.into(), "deprecated".into());
        assert_eq!(image.status(), Some(AmiStatus::Deprecated));
        image.tags.insert(keys::STATUS.into(), "Active ".into());
        assert_eq!(image.status(), None);
        assert_eq!(
            deprecation_tags().get(keys::STATUS).map(String::as_str),
            Some("deprecated")
        );
    }
}
