//! Pure decisions of the controller beyond the AMI rules in `ami-tags`: is the spec usable, and may a build start
//! now (failure count, back-off, debug on retry). The clock is an argument.

use std::time::Duration;

use api_types::PackerBuilderSpec;
use jiff::Timestamp;

/// The spec's durations, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durations {
    /// Managed AMI lifetime.
    pub expires_in: Duration,
    /// Periodic re-check.
    pub controller_timer: Duration,
    /// Job `activeDeadlineSeconds`.
    pub build_timeout: Duration,
    /// Job `ttlSecondsAfterFinished`.
    pub job_ttl: Duration,
    /// `retention.maxAge`, when set.
    pub retention_max_age: Option<Duration>,
}

/// Checks what the schema cannot: durations parse, are positive and respect their lower bounds (the CRD's CEL
/// rules check the same bounds for the forms CEL can read). The message names the field.
pub fn validate(spec: &PackerBuilderSpec) -> Result<Durations, String> {
    use api_types::duration::bounds;
    let t = &spec.time_outs;
    let parse = |field: &str, d: &api_types::HumanDuration, min: &'static str| {
        d.parse_at_least(min).map_err(|e| format!("spec.timeOuts.{field}: {e}"))
    };
    Ok(Durations {
        expires_in: parse("expiresIn", &t.expires_in, bounds::PB_EXPIRES_IN)?,
        controller_timer: parse("controllerTimer", &t.controller_timer, bounds::PB_CONTROLLER_TIMER)?,
        build_timeout: parse("buildTimeout", &t.build_timeout, bounds::PB_BUILD_TIMEOUT)?,
        job_ttl: parse("jobTtl", &t.job_ttl, bounds::PB_JOB_TTL)?,
        retention_max_age: spec
            .retention
            .as_ref()
            .and_then(|r| r.max_age.as_ref())
            .map(|d| {
                d.parse_at_least(bounds::PB_RETENTION_MAX_AGE)
                    .map_err(|e| format!("spec.retention.maxAge: {e}"))
            })
            .transpose()?,
    })
}

/// The owners a base-AMI lookup is restricted to. The spec's `baseAmi.owners` when given; none when an `owner-id` or
/// `owner-alias` filter already restricts it; otherwise the build account and Amazon (`self`, `amazon`), so a
/// name-only filter never picks up a stranger's public AMI with a matching name.
pub fn base_owners(filters: &[api_types::AmiFilter], owners: &[String]) -> Vec<String> {
    if !owners.is_empty() {
        return owners.to_vec();
    }
    if filters
        .iter()
        .any(|f| matches!(f.name.as_str(), "owner-id" | "owner-alias"))
    {
        return Vec::new();
    }
    vec!["self".to_owned(), "amazon".to_owned()]
}

/// Whether an SSM parameter's value is an AMI ID (`ami-` and 8 or 17 hex digits), as EC2 writes them.
pub fn is_ami_id(value: &str) -> bool {
    let Some(hex) = value.strip_prefix("ami-") else {
        return false;
    };
    matches!(hex.len(), 8 | 17) && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What the AMI a build reported is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Artifact {
    /// Available, owned by this account, made during this build: tag it.
    Verified,
    /// Still being registered: look again shortly.
    Pending,
    /// Not what this build made (or a failed image): a failed build, and nothing is tagged.
    Unverified(String),
}

/// Checks the AMI a build reported before anything is tagged: `image` is the DescribeImages answer restricted to
/// this account (`None`: unknown, or owned by another account); it must be `available` (`pending` waits; any
/// other state fails) and created no earlier than the build started (less [`ami_tags::MAX_CLOCK_SKEW`]), so a
/// build pod cannot make the controller tag an older AMI of the account as the new one. An AMI that carries a
/// `build-id` tag (the sample template tags it from `PKR_VAR_build_id`, which every build container gets) must
/// carry this build's ID; templates that do not tag it are checked by owner, state and time only.
pub fn check_artifact(
    ami: &str,
    image: Option<&ami_tags::Image>,
    build_started: Option<Timestamp>,
    build_id: Option<&str>,
) -> Artifact {
    let Some(image) = image else {
        return Artifact::Unverified(format!("the build reported {ami}, but this account owns no such AMI"));
    };
    match image.state.as_deref() {
        None | Some("available") => {}
        Some("pending") => return Artifact::Pending,
        Some(other) => return Artifact::Unverified(format!("the build reported {ami}, which is {other}")),
    }
    if let (Some(started), Some(created)) = (build_started, image.creation_date) {
        let earliest = started.checked_sub(ami_tags::MAX_CLOCK_SKEW).unwrap_or(started);
        if created < earliest {
            return Artifact::Unverified(format!(
                "the build reported {ami}, created at {created}, before this build started at {started}"
            ));
        }
    }
    if let (Some(want), Some(have)) = (build_id, image.tag(ami_tags::keys::BUILD_ID))
        && !have.is_empty()
        && have != want
    {
        return Artifact::Unverified(format!(
            "the build reported {ami}, which carries build-id {have}, not this build's {want}"
        ));
    }
    Artifact::Verified
}

/// First retry delay after a failed build; doubles per further failure.
pub const RETRY_BASE: Duration = Duration::from_secs(30);
/// Longest delay between retries.
pub const RETRY_MAX: Duration = Duration::from_secs(600);

/// Delay before the build after `failed` consecutive failures: `base`, doubled per further failure, capped at
/// [`RETRY_MAX`].
pub fn retry_backoff(base: Duration, failed: i32) -> Duration {
    if failed <= 0 {
        return Duration::ZERO;
    }
    let exponent = u32::try_from(failed - 1).unwrap_or(0).min(10);
    base.saturating_mul(1 << exponent).min(RETRY_MAX)
}

/// May a build start?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Yes; `debug` turns on `PACKER_LOG=1` because the previous build failed.
    Go {
        /// Retry with verbose logs.
        debug: bool,
    },
    /// Not yet: back-off after a failure.
    Wait(Duration),
    /// No: `maxFailedJobs` reached; only a spec change resets it.
    Degraded,
}

/// The build gate: `failed` failures so far (since the last spec change), the last one at `last_failure`;
/// `base` is the first retry delay.
pub fn build_gate(
    base: Duration,
    failed: i32,
    max_failed: i32,
    last_failure: Option<Timestamp>,
    now: Timestamp,
) -> Gate {
    if failed >= max_failed {
        return Gate::Degraded;
    }
    if failed > 0
        && let Some(at) = last_failure
    {
        let ready_at = at.checked_add(retry_backoff(base, failed)).unwrap_or(Timestamp::MAX);
        if now < ready_at {
            return Gate::Wait(Duration::try_from(now.duration_until(ready_at)).unwrap_or(RETRY_BASE));
        }
    }
    Gate::Go { debug: failed > 0 }
}

/// Everything [`decide`] looks at: the world as observed (managed AMIs, the current base AMI), the status's failure
/// memory, the parsed spec and the clock.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// Managed AMIs found by the identity tag filters (may include other tenants' AMIs; [`decide`] filters).
    pub images: &'a [ami_tags::Image],
    /// This PackerBuilder's identity.
    pub identity: &'a ami_tags::Identity,
    /// The current base AMI; `None` for a self-contained project.
    pub current_base: Option<&'a str>,
    /// The spec's build-configuration fingerprint (`packer_job::command::build_config_hash`).
    pub build_config: &'a str,
    /// `status.failedJobCount`.
    pub failed_job_count: i32,
    /// `spec.maxFailedJobs`.
    pub max_failed_jobs: i32,
    /// When the last build failed (the Building condition's transition time), if the count is not zero.
    pub last_failure: Option<Timestamp>,
    /// First retry delay after a failed build.
    pub retry_base: Duration,
}

/// What a PackerBuilder does next, when no build is running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Keep (or adopt, adding the missing tags) this AMI; no build.
    Keep {
        /// The AMI in use.
        image: &'a ami_tags::Image,
        /// Tags it lacks (adoption); empty when fully tagged.
        add_tags: std::collections::BTreeMap<String, String>,
        /// Its `base-ami` tag is missing, so a base change cannot be seen.
        base_unknown: bool,
        /// Decide again after this: the next `controllerTimer`, or the AMI's expiry when that comes first.
        recheck: Duration,
    },
    /// Start a build now.
    Build {
        /// Why, for status and the Event.
        why: String,
        /// Run Packer with `PACKER_LOG=1` (the previous build failed).
        debug: bool,
    },
    /// A build is needed but waits for the back-off after a failure.
    Wait(Duration),
    /// A build is needed but `maxFailedJobs` failed builds stop it until the spec changes.
    Degraded {
        /// Why, for status and the Event.
        why: String,
    },
}

/// When to decide again about a kept AMI: after `controller_timer`, or one second after the AMI expires when that
/// comes first, so an expired AMI is replaced at its expiry and not up to a whole timer period later.
pub fn recheck_after(expires_at: Timestamp, controller_timer: Duration, now: Timestamp) -> Duration {
    let until_expiry = expires_at.duration_since(now).try_into().unwrap_or(Duration::ZERO);
    controller_timer.min(until_expiry + Duration::from_secs(1))
}

/// When EC2 should say an AMI is deprecated, for a wish of `wanted`: on a whole minute (EC2 rounds seconds to the
/// nearest minute; rounding up here makes a repeated call ask for exactly what EC2 recorded), and never in the past
/// (EC2 refuses that: at the earliest the minute after `now`).
pub fn ec2_deprecation_time(wanted: Timestamp, now: Timestamp) -> Timestamp {
    let ceil = |t: Timestamp| {
        let s = t.as_second();
        let up = if s % 60 == 0 && t.subsec_nanosecond() == 0 {
            s
        } else {
            (s.div_euclid(60) + 1) * 60
        };
        Timestamp::from_second(up).unwrap_or(t)
    };
    let earliest = ceil(now.checked_add(jiff::SignedDuration::from_secs(1)).unwrap_or(now));
    ceil(wanted).max(earliest)
}

/// Whether an AMI whose EC2 deprecation time is `current` needs EnableImageDeprecation for `wanted`: when it has
/// none, or a later one. An earlier deprecation (by hand, or already passed) is never pushed later.
pub fn needs_ec2_deprecation(current: Option<Timestamp>, wanted: Timestamp) -> bool {
    current.is_none_or(|c| c > wanted)
}

/// Decides what to do when no build is running: keep/adopt the newest eligible AMI of exactly this PackerBuilder,
/// or build because none exists, it expired or its base AMI changed, unless failed builds say wait or stop.
pub fn decide<'a>(observed: Observed<'a>, durations: &Durations, now: Timestamp) -> Decision<'a> {
    let reason = match ami_tags::decide_build(ami_tags::RebuildInputs {
        images: observed.images,
        identity: observed.identity,
        expires_in: durations.expires_in,
        current_base: observed.current_base,
        build_config: Some(observed.build_config),
        now,
    }) {
        ami_tags::BuildDecision::Keep {
            image,
            add_tags,
            base_unknown,
            expires_at,
        } => {
            return Decision::Keep {
                image,
                add_tags,
                base_unknown,
                recheck: recheck_after(expires_at, durations.controller_timer, now),
            };
        }
        ami_tags::BuildDecision::Build(reason) => reason,
    };
    let why = match reason {
        ami_tags::BuildReason::NoManagedAmi => "no active managed AMI exists".to_owned(),
        ami_tags::BuildReason::Expired { ami_id, expired_at } => {
            format!("managed AMI {ami_id} expired at {expired_at}")
        }
        ami_tags::BuildReason::ConfigChanged { ami_id } => format!(
            "managed AMI {ami_id} was built with another build configuration (repository, branch, builder image or \
             commands changed)"
        ),
        ami_tags::BuildReason::BaseChanged {
            ami_id,
            built_from,
            current_base,
        } => format!("managed AMI {ami_id} was built from {built_from}; the base AMI is now {current_base}"),
    };
    match build_gate(
        observed.retry_base,
        observed.failed_job_count,
        observed.max_failed_jobs,
        observed.last_failure,
        now,
    ) {
        Gate::Go { debug } => Decision::Build { why, debug },
        Gate::Wait(delay) => Decision::Wait(delay),
        Gate::Degraded => Decision::Degraded {
            why: format!(
                "{} failed builds (maxFailedJobs {}); not building until the spec changes. Needed because {why}",
                observed.failed_job_count, observed.max_failed_jobs
            ),
        },
    }
}

#[cfg(test)]
mod ec2_deprecation_tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("ts")
    }

    #[test]
    fn the_deprecation_time_is_a_future_whole_minute_and_never_pushed_later() {
        let now = ts("2026-12-01T12:00:20Z");
        assert_eq!(
            ec2_deprecation_time(ts("2026-12-03T12:00:20Z"), now),
            ts("2026-12-03T12:01:00Z"),
            "rounded up"
        );
        assert_eq!(
            ec2_deprecation_time(ts("2026-12-03T12:00:00Z"), now),
            ts("2026-12-03T12:00:00Z")
        );
        assert_eq!(
            ec2_deprecation_time(now, now),
            ts("2026-12-01T12:01:00Z"),
            "now: the next minute"
        );
        assert_eq!(
            ec2_deprecation_time(ts("2026-11-01T00:00:00Z"), now),
            ts("2026-12-01T12:01:00Z"),
            "never in the past"
        );
        let at_minute = ts("2026-12-01T12:00:00Z");
        assert_eq!(ec2_deprecation_time(at_minute, at_minute), ts("2026-12-01T12:01:00Z"));
        let wanted = ts("2026-12-03T12:01:00Z");
        assert!(needs_ec2_deprecation(None, wanted));
        assert!(
            needs_ec2_deprecation(Some(ts("2026-12-04T00:00:00Z")), wanted),
            "later: brought forward"
        );
        assert!(!needs_ec2_deprecation(Some(wanted), wanted), "a retry asks nothing");
        assert!(
            !needs_ec2_deprecation(Some(ts("2026-12-02T00:00:00Z")), wanted),
            "earlier: kept"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    mod decision {
        use super::*;

        const HOUR: Duration = Duration::from_secs(3600);

        fn now() -> Timestamp {
            "2026-11-30T12:00:00Z".parse().expect("ts")
        }

        fn durations() -> Durations {
            Durations {
                expires_in: 48 * HOUR,
                controller_timer: Duration::from_secs(300),
                build_timeout: 2 * HOUR,
                job_ttl: HOUR,
                retention_max_age: None,
            }
        }

        fn identity() -> ami_tags::Identity {
            ami_tags::Identity::new("prod", "node-ami", "team-a", "https://git.example/p.git", "main")
        }

        fn ami(id: &str, identity: &ami_tags::Identity, created: &str, base: &str) -> ami_tags::Image {
            let record = ami_tags::BuildRecord {
                build_id: format!("b-{id}"),
                job_id: "j".into(),
                base_ami: Some(base.into()),
                created_at: created.parse().expect("ts"),
                build_config: None,
            };
            ami_tags::Image {
                id: id.into(),
                state: Some("available".into()),
                creation_date: Some(created.parse().expect("ts")),
                tags: ami_tags::build_tags(identity, &record),
                ..ami_tags::Image::default()
            }
        }

        fn observed<'a>(images: &'a [ami_tags::Image], identity: &'a ami_tags::Identity) -> Observed<'a> {
            Observed {
                images,
                identity,
                current_base: Some("ami-base-1"),
                build_config: "cfg-1",
                failed_job_count: 0,
                max_failed_jobs: 3,
                last_failure: None,
                retry_base: Duration::from_secs(30),
            }
        }

        #[test]
        fn a_kept_ami_is_rechecked_at_its_expiry_when_that_comes_before_the_next_timer() {
            let id = identity();
            // Created 2026-11-29T00:00Z with expiresIn 48h: expires 2026-12-01T00:00Z.
            let images = [ami("ami-1", &id, "2026-11-29T00:00:00Z", "ami-base-1")];
            let timer = durations().controller_timer;
            let early: Timestamp = "2026-11-30T00:00:00Z".parse().expect("ts");
            let d = decide(observed(&images, &id), &durations(), early);
            assert!(matches!(d, Decision::Keep { recheck, .. } if recheck == timer), "{d:?}");
            let close: Timestamp = "2026-11-30T23:59:50Z".parse().expect("ts");
            let d = decide(observed(&images, &id), &durations(), close);
            assert!(
                matches!(d, Decision::Keep { recheck, .. } if recheck == Duration::from_secs(11)),
                "10 s to expiry plus one: {d:?}"
            );
        }

        #[test]
        fn a_fresh_ami_of_this_builder_on_the_current_base_is_kept() {
            let id = identity();
            let images = [ami("ami-1", &id, "2026-11-30T00:00:00Z", "ami-base-1")];
            let d = decide(observed(&images, &id), &durations(), now());
            assert!(
                matches!(d, Decision::Keep { image, .. } if image.id == "ami-1"),
                "{d:?}"
            );
        }

        #[test]
        fn an_ami_of_the_original_operator_is_adopted_with_the_tags_it_lacks() {
            let id = identity();
            // What the Go operator tagged: no namespace, no build ID, no base AMI.
            let mut original = ami("ami-go", &id, "2026-11-30T00:00:00Z", "ami-base-1");
            for key in [
                ami_tags::keys::CREATED_BY_NAMESPACE,
                ami_tags::keys::BUILD_ID,
                ami_tags::keys::BASE_AMI,
            ] {
                original.tags.remove(key);
            }
            let images = [original];
            let d = decide(observed(&images, &id), &durations(), now());
            let Decision::Keep {
                image,
                add_tags,
                base_unknown,
                ..
            } = d
            else {
                panic!("expected the AMI to be adopted: {d:?}");
            };
            assert_eq!(image.id, "ami-go");
            assert_eq!(
                add_tags.get(ami_tags::keys::CREATED_BY_NAMESPACE).map(String::as_str),
                Some("team-a"),
                "{add_tags:?}"
            );
            assert!(
                base_unknown,
                "its base is not recorded, so a base change cannot be seen"
            );
        }

        #[test]
        fn another_namespaces_ami_is_not_ours_so_a_build_is_needed() {
            let id = identity();
            let other = ami_tags::Identity::new("prod", "node-ami", "team-b", "https://git.example/p.git", "main");
            let images = [ami("ami-b", &other, "2026-11-30T00:00:00Z", "ami-base-1")];
            let d = decide(observed(&images, &id), &durations(), now());
            assert_eq!(
                d,
                Decision::Build {
                    why: "no active managed AMI exists".into(),
                    debug: false
                }
            );
        }

        #[test]
        fn a_new_base_ami_builds_with_the_reason() {
            let id = identity();
            let images = [ami("ami-1", &id, "2026-11-30T00:00:00Z", "ami-base-0")];
            let d = decide(observed(&images, &id), &durations(), now());
            assert!(
                matches!(&d, Decision::Build { why, debug: false } if why.contains("the base AMI is now ami-base-1")),
                "{d:?}"
            );
        }

        #[test]
        fn a_changed_build_configuration_builds_with_the_reason() {
            let id = identity();
            let mut image = ami("ami-1", &id, "2026-11-30T00:00:00Z", "ami-base-1");
            image.tags.insert("build-config".into(), "cfg-0".into());
            let images = [image];
            let d = decide(observed(&images, &id), &durations(), now());
            assert!(
                matches!(&d, Decision::Build { why, .. } if why.contains("another build configuration")),
                "{d:?}"
            );
        }

        #[test]
        fn after_a_failure_the_build_waits_for_the_backoff_then_goes_with_debug() {
            let id = identity();
            let mut o = observed(&[], &id);
            o.failed_job_count = 1;
            o.last_failure = Some("2026-11-30T11:59:50Z".parse().expect("ts"));
            assert_eq!(decide(o, &durations(), now()), Decision::Wait(Duration::from_secs(20)));
            o.last_failure = Some("2026-11-30T11:00:00Z".parse().expect("ts"));
            assert!(matches!(
                decide(o, &durations(), now()),
                Decision::Build { debug: true, .. }
            ));
        }

        #[test]
        fn max_failed_jobs_stops_building_and_says_why() {
            let id = identity();
            let mut o = observed(&[], &id);
            o.failed_job_count = 3;
            let d = decide(o, &durations(), now());
            assert!(
                matches!(&d, Decision::Degraded { why } if why.contains("maxFailedJobs 3") && why.contains("no active managed AMI")),
                "{d:?}"
            );
        }
    }

    fn filter(name: &str, value: &str) -> api_types::AmiFilter {
        api_types::AmiFilter {
            name: name.into(),
            values: vec![value.into()],
        }
    }

    fn image(state: &str, created: &str) -> ami_tags::Image {
        ami_tags::Image {
            id: "ami-0123456789abcdef0".into(),
            state: Some(state.into()),
            creation_date: Some(created.parse().expect("ts")),
            ..ami_tags::Image::default()
        }
    }

    #[test]
    fn an_ami_tagged_with_another_builds_id_is_not_this_builds_artifact() {
        let started: Timestamp = "2026-11-30T10:00:00Z".parse().expect("ts");
        let ami = "ami-0123456789abcdef0";
        let mut made = image("available", "2026-11-30T10:20:00Z");
        assert_eq!(
            check_artifact(ami, Some(&made), Some(started), Some("b-1")),
            Artifact::Verified,
            "untagged"
        );
        made.tags.insert("build-id".into(), "b-1".into());
        assert_eq!(
            check_artifact(ami, Some(&made), Some(started), Some("b-1")),
            Artifact::Verified
        );
        made.tags.insert("build-id".into(), "b-0".into());
        assert!(matches!(
            check_artifact(ami, Some(&made), Some(started), Some("b-1")),
            Artifact::Unverified(why) if why.contains("b-0") && why.contains("b-1")
        ));
    }

    #[test]
    fn only_an_available_ami_of_this_account_made_during_the_build_is_verified() {
        let started: Timestamp = "2026-11-30T10:00:00Z".parse().expect("ts");
        let ami = "ami-0123456789abcdef0";
        let made = image("available", "2026-11-30T10:20:00Z");
        assert_eq!(
            check_artifact(ami, Some(&made), Some(started), None),
            Artifact::Verified
        );
        assert_eq!(
            check_artifact(
                ami,
                Some(&image("pending", "2026-11-30T10:20:00Z")),
                Some(started),
                None
            ),
            Artifact::Pending
        );
        for bad in [
            check_artifact(ami, None, Some(started), None),
            check_artifact(ami, Some(&image("failed", "2026-11-30T10:20:00Z")), Some(started), None),
            check_artifact(
                ami,
                Some(&image("deregistered", "2026-11-30T10:20:00Z")),
                Some(started),
                None,
            ),
            check_artifact(
                ami,
                Some(&image("available", "2026-11-01T00:00:00Z")),
                Some(started),
                None,
            ),
        ] {
            assert!(matches!(bad, Artifact::Unverified(_)), "{bad:?}");
        }
        // Within the clock-skew allowance.
        let skewed = image("available", "2026-11-30T09:58:00Z");
        assert_eq!(
            check_artifact(ami, Some(&skewed), Some(started), None),
            Artifact::Verified
        );
    }

    #[test]
    fn a_name_only_base_filter_is_restricted_to_this_account_and_amazon() {
        let name = [filter("name", "amazon-eks-node-*")];
        assert_eq!(base_owners(&name, &[]), ["self", "amazon"]);
    }

    #[test]
    fn explicit_owners_or_an_owner_filter_are_used_as_given() {
        let name = [filter("name", "x*")];
        assert_eq!(base_owners(&name, &["602401143452".into()]), ["602401143452"]);
        let with_owner = [filter("name", "x*"), filter("owner-id", "602401143452")];
        assert!(base_owners(&with_owner, &[]).is_empty());
        let with_alias = [filter("owner-alias", "amazon")];
        assert!(base_owners(&with_alias, &[]).is_empty());
    }

    #[test]
    fn only_ami_ids_are_accepted_from_an_ssm_parameter() {
        assert!(is_ami_id("ami-0123456789abcdef0"));
        assert!(is_ami_id("ami-12345678"));
        for bad in [
            "",
            "ami-",
            "ami-XYZ",
            "ami-0123456789ABCDEF0",
            "resolve:ssm:/x",
            "ami-123",
            "snap-12345678",
        ] {
            assert!(!is_ami_id(bad), "{bad}");
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("ts")
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(retry_backoff(RETRY_BASE, 0), Duration::ZERO);
        assert_eq!(retry_backoff(RETRY_BASE, 1), Duration::from_secs(30));
        assert_eq!(retry_backoff(RETRY_BASE, 2), Duration::from_secs(60));
        assert_eq!(retry_backoff(RETRY_BASE, 3), Duration::from_secs(120));
        assert_eq!(retry_backoff(RETRY_BASE, 50), RETRY_MAX);
    }

    #[test]
    fn first_build_goes_without_debug() {
        assert_eq!(
            build_gate(RETRY_BASE, 0, 3, None, ts("2026-01-01T00:00:00Z")),
            Gate::Go { debug: false }
        );
    }

    #[test]
    fn retry_waits_for_the_backoff_then_goes_with_debug() {
        let failed_at = ts("2026-01-01T00:00:00Z");
        assert_eq!(
            build_gate(RETRY_BASE, 1, 3, Some(failed_at), ts("2026-01-01T00:00:10Z")),
            Gate::Wait(Duration::from_secs(20))
        );
        assert_eq!(
            build_gate(RETRY_BASE, 1, 3, Some(failed_at), ts("2026-01-01T00:00:30Z")),
            Gate::Go { debug: true }
        );
        assert_eq!(
            build_gate(RETRY_BASE, 2, 3, Some(failed_at), ts("2026-01-01T00:00:59Z")),
            Gate::Wait(Duration::from_secs(1))
        );
    }

    #[test]
    fn max_failed_jobs_stops_building() {
        assert_eq!(
            build_gate(RETRY_BASE, 3, 3, None, ts("2026-01-01T00:00:00Z")),
            Gate::Degraded
        );
        assert_eq!(
            build_gate(RETRY_BASE, 5, 3, None, ts("2026-01-01T00:00:00Z")),
            Gate::Degraded
        );
    }

    #[test]
    fn invalid_durations_name_the_field_and_zero_is_refused() {
        let mut spec: PackerBuilderSpec = serde_json::from_value(serde_json::json!({
            "clusterName": "c", "region": "us-west-2",
            "builder": {"repoURL": "https://example.com/r.git", "image": "hashicorp/packer:1.11.2"},
            "timeOuts": {"expiresIn": "48h", "controllerTimer": "0s"}
        }))
        .expect("spec");
        let err = validate(&spec).expect_err("zero timer");
        assert!(err.starts_with("spec.timeOuts.controllerTimer"), "{err}");
        spec.time_outs.controller_timer = api_types::HumanDuration::new("5m");
        let d = validate(&spec).expect("valid");
        assert_eq!(d.controller_timer, Duration::from_secs(300));
        assert_eq!(d.expires_in, Duration::from_secs(48 * 3600));
    }

    #[test]
    fn durations_below_their_lower_bound_are_refused_with_the_field_and_the_bound() {
        let mut spec: PackerBuilderSpec = serde_json::from_value(serde_json::json!({
            "clusterName": "c", "region": "us-west-2",
            "builder": {"repoURL": "https://example.com/r.git", "image": "hashicorp/packer:1.11.2"},
            "timeOuts": {"expiresIn": "0.01d", "controllerTimer": "10s"}
        }))
        .expect("spec");
        let err = validate(&spec).expect_err("14.4 min expiry");
        assert!(
            err.starts_with("spec.timeOuts.expiresIn") && err.contains("minimum of 1h"),
            "{err}"
        );
        spec.time_outs.expires_in = api_types::HumanDuration::new("1h");
        let err = validate(&spec).expect_err("10 s timer");
        assert!(
            err.starts_with("spec.timeOuts.controllerTimer") && err.contains("minimum of 30s"),
            "{err}"
        );
        spec.time_outs.controller_timer = api_types::HumanDuration::new("30s");
        assert!(validate(&spec).is_ok());
    }
}
