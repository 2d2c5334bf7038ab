//! Standard Kubernetes conditions (`metav1.Condition`) for both kinds: the type and reason vocabulary, and the
//! helpers that set them.
//!
//! Rules kept here so no controller has to remember them: `lastTransitionTime` moves only when `status` flips;
//! `observedGeneration` records the generation the condition was computed from; the clock is an argument.

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Condition, jiff::Timestamp};

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Condition types.
pub mod types {
    /// The object's desired state is in effect (a usable AMI exists; node groups run the target).
    pub const READY: &str = "Ready";
    /// A Packer build Job is running for this PackerBuilder.
    pub const BUILDING: &str = "Building";
    /// A rollout is in progress for this AMIRefresher.
    pub const PROGRESSING: &str = "Progressing";
    /// The controller stopped acting on its own and needs a person (too many failures, a failed rollout).
    pub const DEGRADED: &str = "Degraded";
}

/// Condition reasons (CamelCase, as the API conventions require). They double as Event reasons.
pub mod reasons {
    /// The spec is invalid in a way the schema cannot express; the message says which field.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A managed AMI is active and not expired.
    pub const AMI_AVAILABLE: &str = "AMIAvailable";
    /// An existing managed AMI (possibly made by the original operator) was adopted without a build.
    pub const AMI_ADOPTED: &str = "AMIAdopted";
    /// A build was started.
    pub const BUILD_STARTED: &str = "BuildStarted";
    /// A build finished and its AMI was verified and tagged.
    pub const BUILD_SUCCEEDED: &str = "BuildSucceeded";
    /// A build Job failed.
    pub const BUILD_FAILED: &str = "BuildFailed";
    /// `maxFailedJobs` was reached; no more builds until the spec changes.
    pub const MAX_FAILED_JOBS_REACHED: &str = "MaxFailedJobsReached";
    /// No AMI satisfies the refresher's selection.
    pub const NO_ELIGIBLE_AMI: &str = "NoEligibleAMI";
    /// Every node group runs the target AMI.
    pub const UP_TO_DATE: &str = "UpToDate";
    /// A node group update is in progress.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// A node group update failed; remaining node groups were left alone.
    pub const ROLLOUT_FAILED: &str = "RolloutFailed";
    /// `spec.paused` is set.
    pub const PAUSED: &str = "Paused";
    /// Outside every maintenance window.
    pub const OUTSIDE_MAINTENANCE_WINDOW: &str = "OutsideMaintenanceWindow";
    /// Dry-run: the plan is published and nothing is changed.
    pub const DRY_RUN: &str = "DryRun";
    /// The AMI a build reported is not what a good build leaves: not owned by this account, made before the build
    /// started, or failed/deregistered. Nothing is tagged; it counts as a failed build.
    pub const UNVERIFIED_ARTIFACT: &str = "UnverifiedArtifact";
    /// The canary node group cannot be rolled (not in the cluster, or skipped): nothing else starts.
    pub const CANARY_UNAVAILABLE: &str = "CanaryUnavailable";
    /// Node groups of the cluster are claimed by another AMIRefresher (tag `ami.refresh.ops/owner`): they are left
    /// alone, and the message names the owner.
    pub const NODE_GROUP_CLAIMED: &str = "NodeGroupClaimed";
    /// The canary's update succeeded; the other node groups wait for `refreshConfig.canarySoak`.
    pub const CANARY_SOAKING: &str = "CanarySoaking";
    /// A node group's update config (refreshConfig maxUnavailable, strategy) is being applied before its version
    /// update (Event).
    pub const NODE_GROUP_CONFIG_UPDATE_STARTED: &str = "NodeGroupConfigUpdateStarted";
    /// Copies of the AMI are being made in `distribution.regions` (Ready=False until every copy is available).
    pub const COPY_PENDING: &str = "CopyPending";
    /// A copy to a distribution region failed; it is retried with back-off (Event, Ready reason).
    pub const COPY_FAILED: &str = "CopyFailed";
    /// The AMI is available in its region and every distribution region.
    pub const IMAGES_DISTRIBUTED: &str = "ImagesDistributed";
    /// Retention deregistered an AMI and deleted its snapshots (Event).
    pub const IMAGE_DEREGISTERED: &str = "ImageDeregistered";
    /// Retention keeps an AMI it would deregister because something uses it (Event).
    pub const IMAGE_IN_USE: &str = "ImageInUse";
    /// Retention dry run: the AMIs that would be deregistered (Event).
    pub const RETENTION_DRY_RUN: &str = "RetentionDryRun";
    /// A condition that does not currently apply.
    pub const AS_EXPECTED: &str = "AsExpected";
    /// Event: a node group update (or instance refresh) started.
    pub const NODE_GROUP_UPDATE_STARTED: &str = "NodeGroupUpdateStarted";
    /// Event: a node group runs the target AMI.
    pub const NODE_GROUP_UPDATED: &str = "NodeGroupUpdated";
    /// Event (Warning): a node group update failed or was cancelled; the rollout halts.
    pub const NODE_GROUP_UPDATE_FAILED: &str = "NodeGroupUpdateFailed";
    /// Event: a dry run planned what would roll.
    pub const ROLLOUT_PLANNED: &str = "RolloutPlanned";
    /// Event: every node group runs the target.
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    /// Event: the rollout waits (paused, outside its window, canary).
    pub const ROLLOUT_HELD: &str = "RolloutHeld";
    /// Event (Warning): a notification could not be delivered.
    pub const NOTIFICATION_FAILED: &str = "NotificationFailed";
}

/// The three values a condition status can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// `"True"`
    True,
    /// `"False"`
    False,
    /// `"Unknown"`
    Unknown,
}

impl ConditionStatus {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

/// What a controller wants a condition to say; [`set_condition`] turns it into a `Condition`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate<'a> {
    /// The condition type, e.g. [`types::READY`].
    pub type_: &'a str,
    /// The new status.
    pub status: ConditionStatus,
    /// CamelCase reason, e.g. [`reasons::INVALID_SPEC`].
    pub reason: &'a str,
    /// Human-readable message. Must never contain a secret value.
    pub message: String,
}

/// Finds a condition by type.
pub fn get_condition<'c>(conditions: &'c [Condition], type_: &str) -> Option<&'c Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition exists and its status is `"True"`.
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    get_condition(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True.as_str())
}

/// A True/False condition observed at `generation`, through [`set_condition`]: the one condition helper of both
/// controllers. Returns whether anything changed.
pub fn set_bool(
    conditions: &mut Vec<Condition>,
    type_: &str,
    value: bool,
    reason: &str,
    message: String,
    generation: i64,
    now: Timestamp,
) -> bool {
    let update = ConditionUpdate {
        type_,
        status: ConditionStatus::from(value),
        reason,
        message,
    };
    set_condition(conditions, update, Some(generation), now)
}

/// Sets (inserts or updates) a condition. `lastTransitionTime` becomes `now` only when the condition is new or its
/// status flips; reason, message and `observedGeneration` are always refreshed. Returns whether anything changed,
/// so callers can skip a status patch that would change nothing.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    update: ConditionUpdate<'_>,
    observed_generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let status = update.status.as_str();
    match conditions.iter_mut().find(|c| c.type_ == update.type_) {
        Some(existing) => {
            let flipped = existing.status != status;
            let changed = flipped
                || existing.reason != update.reason
                || existing.message != update.message
                || existing.observed_generation != observed_generation;
            if flipped {
                existing.status = status.to_owned();
                existing.last_transition_time = Time(now);
            }
            existing.reason = update.reason.to_owned();
            existing.message = update.message;
            existing.observed_generation = observed_generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: update.type_.to_owned(),
                status: status.to_owned(),
                reason: update.reason.to_owned(),
                message: update.message,
                observed_generation,
                last_transition_time: Time(now),
            });
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid timestamp")
    }

    fn ready(status: ConditionStatus, reason: &'static str, message: &str) -> ConditionUpdate<'static> {
        ConditionUpdate {
            type_: types::READY,
            status,
            reason,
            message: message.to_owned(),
        }
    }

    #[test]
    fn new_condition_gets_now_as_transition_time() {
        let mut conds = Vec::new();
        assert!(set_condition(
            &mut conds,
            ready(ConditionStatus::False, reasons::INVALID_SPEC, "bad"),
            Some(1),
            at(100)
        ));
        let c = get_condition(&conds, types::READY).expect("set");
        assert_eq!(c.status, "False");
        assert_eq!(c.last_transition_time, Time(at(100)));
        assert_eq!(c.observed_generation, Some(1));
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            ready(ConditionStatus::False, reasons::BUILD_STARTED, "a"),
            Some(1),
            at(100),
        );
        // Same status, new reason and message: content changes, time stays.
        assert!(set_condition(
            &mut conds,
            ready(ConditionStatus::False, reasons::BUILD_FAILED, "b"),
            Some(2),
            at(200)
        ));
        let c = get_condition(&conds, types::READY).expect("set");
        assert_eq!(c.last_transition_time, Time(at(100)));
        assert_eq!(c.reason, reasons::BUILD_FAILED);
        assert_eq!(c.message, "b");
        assert_eq!(c.observed_generation, Some(2));
        // Flip: time moves.
        assert!(set_condition(
            &mut conds,
            ready(ConditionStatus::True, reasons::AMI_AVAILABLE, "ok"),
            Some(2),
            at(300)
        ));
        assert_eq!(
            get_condition(&conds, types::READY).expect("set").last_transition_time,
            Time(at(300))
        );
        assert!(is_condition_true(&conds, types::READY));
    }

    #[test]
    fn identical_update_reports_no_change() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            ready(ConditionStatus::True, reasons::AMI_AVAILABLE, "ok"),
            Some(3),
            at(100),
        );
        let before = conds.clone();
        assert!(!set_condition(
            &mut conds,
            ready(ConditionStatus::True, reasons::AMI_AVAILABLE, "ok"),
            Some(3),
            at(999)
        ));
        assert_eq!(conds, before);
    }

    #[test]
    fn conditions_of_other_types_are_untouched() {
        let mut conds = Vec::new();
        set_condition(
            &mut conds,
            ready(ConditionStatus::True, reasons::AMI_AVAILABLE, "ok"),
            Some(1),
            at(100),
        );
        let degraded = ConditionUpdate {
            type_: types::DEGRADED,
            status: ConditionStatus::False,
            reason: reasons::AS_EXPECTED,
            message: String::new(),
        };
        set_condition(&mut conds, degraded, Some(1), at(200));
        assert_eq!(conds.len(), 2);
        assert!(is_condition_true(&conds, types::READY));
        assert!(!is_condition_true(&conds, types::DEGRADED));
        assert!(!is_condition_true(&conds, types::BUILDING));
    }
}
