//! The rollout plan: one pure function from (target AMI, node groups as observed, previous status, gates, clock)
//! to the status of every node group and the node groups to start now.
//!
//! Safety properties kept here, each a unit test:
//! - a node group already on the target is never started;
//! - a node group with an update in flight (recorded, or found running in AWS) is tracked, never started again,
//!   and stays in status (counting against parallelism) even when it is no longer observed (deleted, excluded);
//! - at most `parallelism` node groups are in flight; a named canary rolls first and alone;
//! - after a failure nothing new starts until the target changes or a retry is asked for (`halted`, see
//!   [`halt_holds`]); a failed update stays `Failed` in status while halted, whatever AMI it was rolling to, so a
//!   target that changed during the update never turns the failure into a fresh start;
//! - `paused`, dry-run and a closed maintenance window start nothing; updates already in flight are still tracked.

use api_types::ami_refresher::{
    AMIRefresherPhase, AMIRefresherStatus, NodeGroupKind, NodeGroupState, NodeGroupStatus, NodeGroupUpdateType,
};
use jiff::Timestamp;

use crate::window::WindowState;

/// One node group as observed in AWS this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Node group (or Auto Scaling group) name.
    pub name: String,
    /// Managed node group or self-managed Auto Scaling group.
    pub kind: NodeGroupKind,
    /// Image in its launch template version.
    pub current_ami: Option<String>,
    /// Its launch template.
    pub launch_template_id: Option<String>,
    /// Its launch template version.
    pub launch_template_version: Option<String>,
    /// Why it cannot be rolled by this operator (no custom launch template, no image in the template...).
    pub skip: Option<String>,
    /// An update or instance refresh is running in AWS.
    pub busy: bool,
    /// The ID of a running update found in AWS (adopted after a restart that lost the status write).
    pub running_update: Option<String>,
}

/// Everything the plan depends on.
#[derive(Clone, Copy, Debug)]
pub struct PlanInputs<'a> {
    /// The AMI to roll onto.
    pub target: &'a str,
    /// Node groups in rollout order (managed in listing order, then self-managed in spec order).
    pub observed: &'a [Observed],
    /// Status entries of the previous reconcile (with tracking results of this reconcile merged in).
    pub previous: &'a [NodeGroupStatus],
    /// Canary node group, rolled first and alone.
    pub canary: Option<&'a str>,
    /// Wait this long after the canary's update succeeded before starting the others.
    pub canary_soak: Option<std::time::Duration>,
    /// Node groups in flight at once (at least 1).
    pub parallelism: usize,
    /// `spec.paused`.
    pub paused: bool,
    /// `spec.dryRun`.
    pub dry_run: bool,
    /// Maintenance windows at `now`.
    pub window: WindowState,
    /// A node group failed for this target and no retry was asked for since.
    pub halted: bool,
    /// The clock.
    pub now: Timestamp,
}

/// Why pending node groups do not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// A rollout failed for this target.
    Failed,
    /// Dry-run.
    DryRun,
    /// `spec.paused`.
    Paused,
    /// Outside every maintenance window.
    OutsideWindow {
        /// When the next window opens.
        opens_at: Option<Timestamp>,
    },
    /// Waiting for node groups in flight (parallelism or the canary).
    InFlight,
    /// The named canary cannot be rolled (not in the cluster, or skipped): the rollout never goes on without it.
    CanaryUnavailable,
    /// Node groups are busy in AWS with an update this operator did not start.
    Busy,
    /// The canary's update succeeded; the others wait for `canarySoak` to pass.
    CanarySoak {
        /// When they may start.
        until: Timestamp,
    },
}

/// The outcome of [`plan`].
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Status of every node group, in rollout order (the canary first).
    pub node_groups: Vec<NodeGroupStatus>,
    /// Node groups to start now, in order.
    pub start: Vec<String>,
    /// Why node groups that need the target wait, if any do.
    pub hold: Option<Hold>,
    /// Coarse phase.
    pub phase: AMIRefresherPhase,
    /// Node groups on the target.
    pub done: usize,
    /// Node groups considered (not skipped).
    pub total: usize,
}

impl Plan {
    /// Node groups being updated now (including those just started).
    pub fn in_flight(&self) -> usize {
        self.node_groups
            .iter()
            .filter(|n| n.state == NodeGroupState::InProgress)
            .count()
            + self.start.len()
    }

    /// `done/total` for `kubectl get`.
    pub fn progress(&self) -> String {
        format!("{}/{}", self.done, self.total)
    }
}

/// What the previous status says about a halt.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HaltRecord {
    /// The target in effect when the failure halted the rollout (`status.haltedTarget`).
    pub target: Option<String>,
    /// The retry annotation value already acted on (`status.observedRetry`).
    pub observed_retry: Option<String>,
}

impl HaltRecord {
    /// Reads the halt from a status. A status written by the first release has `failedGeneration` instead of
    /// `haltedTarget`: its halt is carried over when it was recorded at the current generation.
    pub fn from_status(status: &AMIRefresherStatus, generation: i64) -> Self {
        let legacy = status
            .failed_generation
            .filter(|g| *g == generation)
            .and_then(|_| status.target_ami.clone());
        Self {
            target: status.halted_target.clone().or(legacy),
            observed_retry: status.observed_retry.clone(),
        }
    }
}

/// Whether an earlier halt still holds: only a new target AMI or a new value of the retry annotation lifts it.
/// Pausing, unpausing or any other spec edit does not.
pub fn halt_holds(record: &HaltRecord, target: &str, retry: Option<&str>) -> bool {
    record.target.as_deref() == Some(target) && record.observed_retry.as_deref() == retry
}

fn entry(o: &Observed, target: &str, state: NodeGroupState) -> NodeGroupStatus {
    NodeGroupStatus {
        current_ami: o.current_ami.clone(),
        target_ami: Some(target.to_owned()),
        launch_template_id: o.launch_template_id.clone(),
        launch_template_version: o.launch_template_version.clone(),
        ..NodeGroupStatus::new(o.name.clone(), o.kind, state)
    }
}

/// Whether a status entry records that the update config was applied for its target and the version update has not
/// started yet.
pub fn config_applied(entry: &NodeGroupStatus) -> bool {
    entry.state == NodeGroupState::Pending
        && entry.update_type == Some(NodeGroupUpdateType::ConfigUpdate)
        && entry.update_id.is_some()
}

fn on_target(state: NodeGroupState) -> bool {
    matches!(state, NodeGroupState::UpToDate | NodeGroupState::Successful)
}

/// When the canary's soak ends, if it is soaking now: its update (by this operator: a recorded finish time) succeeded
/// less than `soak` ago. A canary that was already on the target needs no soak.
fn soaking_until(
    node_groups: &[NodeGroupStatus],
    canary: Option<&str>,
    soak: Option<std::time::Duration>,
    now: Timestamp,
) -> Option<Timestamp> {
    let c = node_groups
        .iter()
        .find(|n| Some(n.name.as_str()) == canary && n.state == NodeGroupState::Successful)?;
    let until = c.finished_at.as_ref()?.0.checked_add(soak?).ok()?;
    (now < until).then_some(until)
}

/// Computes the plan. See the module documentation for the properties it keeps.
pub fn plan(inputs: PlanInputs<'_>) -> Plan {
    let PlanInputs {
        target,
        observed,
        previous,
        canary,
        halted,
        now,
        ..
    } = inputs;
    let mut order: Vec<&Observed> = observed.iter().collect();
    if let Some(canary) = canary
        && let Some(i) = order.iter().position(|o| o.name == canary)
    {
        let first = order.remove(i);
        order.insert(0, first);
    }
    let mut node_groups: Vec<NodeGroupStatus> = order
        .iter()
        .map(|o| group_entry(o, previous, target, halted, now))
        .collect();
    // A group that would start but is busy with an update nobody tracks (only the last branch of `group_entry`
    // makes an entry `Pending`).
    let busy_untracked = order
        .iter()
        .zip(&node_groups)
        .any(|(o, e)| o.busy && e.state == NodeGroupState::Pending);
    // Groups no longer observed (deleted, excluded, dropped from autoScalingGroups) keep their update in status
    // while it is in flight (it still counts against parallelism) and their failure while the rollout is halted,
    // so an outcome is never dropped with the group.
    node_groups.extend(
        previous
            .iter()
            .filter(|p| !order.iter().any(|o| o.name == p.name && o.kind == p.kind))
            .filter(|p| {
                (p.state == NodeGroupState::InProgress && p.update_id.is_some())
                    || (halted && matches!(p.state, NodeGroupState::Failed | NodeGroupState::Cancelled))
            })
            .cloned(),
    );
    let (start, hold) = starts(&inputs, &node_groups, busy_untracked);
    let phase = phase_of(&inputs, &node_groups, &start, hold.as_ref());
    let total = node_groups
        .iter()
        .filter(|n| n.state != NodeGroupState::Skipped)
        .count();
    let done = node_groups.iter().filter(|n| on_target(n.state)).count();
    Plan {
        node_groups,
        start,
        hold,
        phase,
        done,
        total,
    }
}

/// The status entry of one observed group.
fn group_entry(
    o: &Observed,
    previous: &[NodeGroupStatus],
    target: &str,
    halted: bool,
    now: Timestamp,
) -> NodeGroupStatus {
    let same = |p: &&NodeGroupStatus| p.name == o.name && p.kind == o.kind;
    let prev = previous
        .iter()
        .filter(same)
        .find(|p| p.target_ami.as_deref() == Some(target));
    // In flight, for this target or an earlier one: tracked with the recorded update ID until it ends, whatever the
    // image currently says; never a second update on top of it.
    let flying = previous
        .iter()
        .filter(same)
        .find(|p| p.state == NodeGroupState::InProgress && p.update_id.is_some());
    if let Some(p) = flying {
        let mut e = p.clone();
        e.current_ami = o.current_ami.clone();
        return e;
    }
    if let Some(update) = &o.running_update {
        // Started by us before a restart lost the status write: adopt it instead of starting another, even when
        // the group is skipped now (excluded, ineligible): it runs, so it is tracked to its end.
        let mut e = entry(o, target, NodeGroupState::InProgress);
        e.update_id = Some(update.clone());
        e.message = Some("update found running in AWS; tracking it".into());
        e.started_at = Some(api_types::conditions::Time(now));
        return e;
    }
    if let Some(reason) = &o.skip {
        let mut e = entry(o, target, NodeGroupState::Skipped);
        e.message = Some(reason.clone());
        return e;
    }
    if o.current_ami.as_deref() == Some(target) {
        return match prev {
            Some(p) if p.state == NodeGroupState::Successful => {
                let mut e = p.clone();
                e.current_ami = o.current_ami.clone();
                e
            }
            _ => entry(o, target, NodeGroupState::UpToDate),
        };
    }
    // While halted, a failure is kept whatever AMI it was rolling to: a target that changed during the update must
    // not turn the failed group into a fresh `Pending` that starts at once.
    if halted
        && let Some(p) = previous
            .iter()
            .filter(same)
            .find(|p| matches!(p.state, NodeGroupState::Failed | NodeGroupState::Cancelled))
    {
        let mut e = p.clone();
        e.current_ami = o.current_ami.clone();
        return e;
    }
    let mut e = entry(o, target, NodeGroupState::Pending);
    // The update config was applied for this target (a finished ConfigUpdate): remember it, so the version update
    // follows and the config is never issued again, even if AWS reports it differently.
    if let Some(p) = prev.filter(|p| config_applied(p)) {
        e.update_id.clone_from(&p.update_id);
        e.update_type = p.update_type;
        e.message.clone_from(&p.message);
        e.finished_at.clone_from(&p.finished_at);
    }
    if o.busy {
        e.message = Some("the node group is being updated by someone else; waiting".into());
    }
    e
}

/// Which pending groups start now, and what holds the others.
fn starts(
    inputs: &PlanInputs<'_>,
    node_groups: &[NodeGroupStatus],
    busy_untracked: bool,
) -> (Vec<String>, Option<Hold>) {
    let canary = inputs.canary;
    let in_flight = node_groups
        .iter()
        .filter(|n| n.state == NodeGroupState::InProgress)
        .count();
    let pending: Vec<&NodeGroupStatus> = node_groups
        .iter()
        .filter(|n| n.state == NodeGroupState::Pending)
        .collect();
    if pending.is_empty() {
        return (Vec::new(), None);
    }
    let failed = node_groups
        .iter()
        .any(|n| matches!(n.state, NodeGroupState::Failed | NodeGroupState::Cancelled));
    let gate = if inputs.halted && failed {
        Some(Hold::Failed)
    } else if inputs.dry_run {
        Some(Hold::DryRun)
    } else if inputs.paused {
        Some(Hold::Paused)
    } else if let WindowState::Closed { opens_at } = inputs.window {
        Some(Hold::OutsideWindow { opens_at })
    } else {
        None
    };
    // A canary that cannot roll (a typo, a group without a custom launch template) must hold the rollout: going
    // on without it would roll every group unprobed.
    let canary_unavailable = canary.is_some_and(|c| {
        node_groups
            .iter()
            .find(|n| n.name == c)
            .is_none_or(|n| n.state == NodeGroupState::Skipped)
    });
    if let Some(gate) = gate {
        return (Vec::new(), Some(gate));
    }
    if canary_unavailable {
        return (Vec::new(), Some(Hold::CanaryUnavailable));
    }
    if let Some(until) = soaking_until(node_groups, canary, inputs.canary_soak, inputs.now) {
        return (Vec::new(), Some(Hold::CanarySoak { until }));
    }
    let canary_pending = canary.and_then(|c| node_groups.iter().find(|n| n.name == c && !on_target(n.state)));
    let capacity = match canary_pending {
        // The canary goes alone; the others wait until it succeeded.
        Some(c) if c.state == NodeGroupState::Pending && in_flight == 0 => 1,
        Some(_) => 0,
        None => inputs.parallelism.max(1).saturating_sub(in_flight),
    };
    let start: Vec<String> = pending
        .iter()
        // A group busy with somebody else's update waits.
        .filter(|n| {
            !inputs
                .observed
                .iter()
                .any(|o| o.busy && o.name == n.name && o.kind == n.kind)
        })
        .take(capacity)
        .map(|n| n.name.clone())
        .collect();
    let waiting = if start.is_empty() && busy_untracked && in_flight == 0 {
        Hold::Busy
    } else {
        Hold::InFlight
    };
    let hold = (start.len() < pending.len()).then_some(waiting);
    (start, hold)
}

/// The phase that follows from the entries, what starts and what holds.
fn phase_of(
    inputs: &PlanInputs<'_>,
    node_groups: &[NodeGroupStatus],
    start: &[String],
    hold: Option<&Hold>,
) -> AMIRefresherPhase {
    let failed = node_groups
        .iter()
        .any(|n| matches!(n.state, NodeGroupState::Failed | NodeGroupState::Cancelled));
    let in_flight = node_groups.iter().any(|n| n.state == NodeGroupState::InProgress);
    let pending = node_groups.iter().any(|n| n.state == NodeGroupState::Pending);
    if inputs.halted && failed {
        AMIRefresherPhase::Degraded
    } else if in_flight || !start.is_empty() {
        AMIRefresherPhase::Progressing
    } else if !pending {
        AMIRefresherPhase::Ready
    } else if inputs.dry_run {
        AMIRefresherPhase::Planned
    } else if matches!(
        hold,
        Some(Hold::Paused | Hold::OutsideWindow { .. } | Hold::CanaryUnavailable | Hold::CanarySoak { .. })
    ) {
        AMIRefresherPhase::Waiting
    } else {
        AMIRefresherPhase::Progressing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: &str = "ami-0000000000000000b";
    const OLD: &str = "ami-0000000000000000a";

    fn now() -> Timestamp {
        "2026-11-21T10:00:00Z".parse().expect("ts")
    }

    fn ng(name: &str, ami: &str) -> Observed {
        Observed {
            name: name.into(),
            kind: NodeGroupKind::Managed,
            current_ami: Some(ami.into()),
            launch_template_id: Some("lt-1".into()),
            launch_template_version: Some("1".into()),
            skip: None,
            busy: false,
            running_update: None,
        }
    }

    fn inputs<'a>(observed: &'a [Observed], previous: &'a [NodeGroupStatus]) -> PlanInputs<'a> {
        PlanInputs {
            target: TARGET,
            observed,
            previous,
            canary: None,
            canary_soak: None,
            parallelism: 1,
            paused: false,
            dry_run: false,
            window: WindowState::Always,
            halted: false,
            now: now(),
        }
    }

    fn in_progress(name: &str, id: &str) -> NodeGroupStatus {
        let mut e = entry(&ng(name, OLD), TARGET, NodeGroupState::InProgress);
        e.update_id = Some(id.into());
        e
    }

    fn states(p: &Plan) -> Vec<(&str, NodeGroupState)> {
        p.node_groups.iter().map(|n| (n.name.as_str(), n.state)).collect()
    }

    #[test]
    fn an_update_of_ours_found_running_on_a_skipped_group_is_tracked_and_counts() {
        // A restart lost the record, then the group was excluded: its update still runs, so it is tracked and holds
        // the only slot.
        let mut excluded = ng("a", OLD);
        excluded.skip = Some("excluded".into());
        excluded.busy = true;
        excluded.running_update = Some("u-1".into());
        let observed = [excluded, ng("b", OLD)];
        let p = plan(inputs(&observed, &[]));
        assert_eq!(
            states(&p),
            vec![("a", NodeGroupState::InProgress), ("b", NodeGroupState::Pending)]
        );
        assert_eq!(p.node_groups[0].update_id.as_deref(), Some("u-1"));
        assert!(p.start.is_empty(), "parallelism 1 is taken by the adopted update");
    }

    #[test]
    fn an_applied_update_config_is_remembered_for_its_target_only() {
        let observed = [ng("a", OLD)];
        // The config update is in flight: tracked like any update, counted against parallelism, nothing starts.
        let mut config = in_progress("a", "cfg-1");
        config.update_type = Some(NodeGroupUpdateType::ConfigUpdate);
        let p = plan(inputs(&observed, std::slice::from_ref(&config)));
        assert_eq!(states(&p), vec![("a", NodeGroupState::InProgress)]);
        assert!(p.start.is_empty());
        assert_eq!(p.in_flight(), 1);
        // It succeeded (tracking turned it back to Pending): the group starts and the entry says the config is done.
        config.state = NodeGroupState::Pending;
        let p = plan(inputs(&observed, std::slice::from_ref(&config)));
        assert_eq!(p.start, vec!["a"]);
        assert!(config_applied(&p.node_groups[0]), "{:?}", p.node_groups[0]);
        assert_eq!(p.node_groups[0].update_id.as_deref(), Some("cfg-1"));
        // For another target the memory does not carry over: that target's start checks the config again.
        let mut other = inputs(&observed, std::slice::from_ref(&config));
        other.target = "ami-other";
        let p = plan(other);
        assert!(!config_applied(&p.node_groups[0]));
        // A finished version update is not a config memory.
        let mut version = config.clone();
        version.update_type = Some(NodeGroupUpdateType::VersionUpdate);
        assert!(!config_applied(&version));
    }

    #[test]
    fn only_outdated_groups_start_one_at_a_time_in_order() {
        let observed = [ng("a", OLD), ng("b", TARGET), ng("c", OLD)];
        let p = plan(inputs(&observed, &[]));
        assert_eq!(p.start, vec!["a"]);
        assert_eq!(
            states(&p),
            vec![
                ("a", NodeGroupState::Pending),
                ("b", NodeGroupState::UpToDate),
                ("c", NodeGroupState::Pending)
            ]
        );
        assert_eq!((p.done, p.total, p.phase), (1, 3, AMIRefresherPhase::Progressing));
        assert_eq!(p.hold, Some(Hold::InFlight));
    }

    #[test]
    fn a_tracked_update_is_never_started_again_and_blocks_the_next_group() {
        let observed = [ng("a", OLD), ng("c", OLD)];
        let previous = [in_progress("a", "u-1")];
        let p = plan(inputs(&observed, &previous));
        assert!(p.start.is_empty(), "{:?}", p.start);
        assert_eq!(p.node_groups[0].update_id.as_deref(), Some("u-1"));
        assert_eq!(p.phase, AMIRefresherPhase::Progressing);
    }

    #[test]
    fn parallelism_bounds_groups_in_flight() {
        let observed = [ng("a", OLD), ng("b", OLD), ng("c", OLD), ng("d", OLD)];
        let previous = [in_progress("a", "u-1")];
        let mut i = inputs(&observed, &previous);
        i.parallelism = 3;
        let p = plan(i);
        assert_eq!(p.start, vec!["b", "c"]);
        assert_eq!(p.in_flight(), 3);
    }

    #[test]
    fn the_canary_goes_first_and_alone() {
        let observed = [ng("a", OLD), ng("b", OLD), ng("canary", OLD)];
        let mut i = inputs(&observed, &[]);
        i.canary = Some("canary");
        i.parallelism = 5;
        let p = plan(i);
        assert_eq!(p.start, vec!["canary"]);
        assert_eq!(p.node_groups[0].name, "canary");
        // While it runs, nothing else starts; once it succeeded, the rest go (up to parallelism).
        let running = [in_progress("canary", "u-1")];
        let mut i = inputs(&observed, &running);
        i.canary = Some("canary");
        i.parallelism = 5;
        assert!(plan(i).start.is_empty());
        let observed = [ng("a", OLD), ng("b", OLD), ng("canary", TARGET)];
        let mut i = inputs(&observed, &[]);
        i.canary = Some("canary");
        i.parallelism = 5;
        assert_eq!(plan(i).start, vec!["a", "b"]);
    }

    #[test]
    fn after_the_canary_succeeded_the_others_wait_for_canary_soak_then_start() {
        let observed = [ng("a", OLD), ng("b", OLD), ng("canary", TARGET)];
        let mut done = entry(&ng("canary", TARGET), TARGET, NodeGroupState::Successful);
        done.update_id = Some("u-1".into());
        let finished = now().checked_sub(std::time::Duration::from_secs(10)).expect("time");
        done.finished_at = Some(api_types::conditions::Time(finished));
        let previous = [done];
        let soak = std::time::Duration::from_secs(60);
        let mut i = inputs(&observed, &previous);
        i.canary = Some("canary");
        i.canary_soak = Some(soak);
        i.parallelism = 5;
        let p = plan(i);
        assert!(p.start.is_empty(), "{:?}", p.start);
        let until = finished.checked_add(soak).expect("time");
        assert_eq!(p.hold, Some(Hold::CanarySoak { until }));
        assert_eq!(p.phase, AMIRefresherPhase::Waiting);
        // Once the soak passed, the rest go.
        i.now = until;
        assert_eq!(plan(i).start, vec!["a", "b"]);
        // Without a soak, at once; and a canary that was already on the target (no update of ours) needs none.
        i.now = now();
        i.canary_soak = None;
        assert_eq!(plan(i).start, vec!["a", "b"]);
        let mut i = inputs(&observed, &[]);
        i.canary = Some("canary");
        i.canary_soak = Some(soak);
        i.parallelism = 5;
        assert_eq!(plan(i).start, vec!["a", "b"]);
    }

    #[test]
    fn a_group_that_disappears_keeps_its_update_in_flight_and_its_failure() {
        // `a` is no longer listed (deleted or excluded) while its update runs: still tracked, still in flight.
        let observed = [ng("b", OLD)];
        let previous = [in_progress("a", "u-1")];
        let p = plan(inputs(&observed, &previous));
        assert!(p.start.is_empty(), "parallelism 1 is still taken by a's update");
        assert_eq!(
            p.node_groups.iter().find(|n| n.name == "a").map(|n| n.state),
            Some(NodeGroupState::InProgress)
        );
        // Its update ended cancelled (the group was deleted) and the rollout halts: the entry stays.
        let mut cancelled = in_progress("a", "u-1");
        cancelled.state = NodeGroupState::Cancelled;
        let previous = [cancelled];
        let mut i = inputs(&observed, &previous);
        i.halted = true;
        let p = plan(i);
        assert_eq!(p.phase, AMIRefresherPhase::Degraded);
        assert!(p.start.is_empty());
        // Once the halt is lifted, a group that is gone is forgotten.
        let p = plan(inputs(&observed, &previous));
        assert!(p.node_groups.iter().all(|n| n.name != "a"));
        assert_eq!(p.start, vec!["b"]);
    }

    #[test]
    fn a_canary_that_cannot_roll_holds_the_rollout_instead_of_being_skipped() {
        // Not in the cluster (a typo in refreshConfig.canary): nothing starts.
        let observed = [ng("a", OLD), ng("b", OLD)];
        let mut i = inputs(&observed, &[]);
        i.canary = Some("canary");
        i.parallelism = 5;
        let p = plan(i);
        assert!(p.start.is_empty(), "{:?}", p.start);
        assert_eq!(p.hold, Some(Hold::CanaryUnavailable));
        assert_eq!(p.phase, AMIRefresherPhase::Waiting);
        // Skipped (no custom launch template): nothing starts either.
        let mut skipped = ng("canary", OLD);
        skipped.skip = Some("no custom launch template".into());
        let observed = [ng("a", OLD), skipped];
        let mut i = inputs(&observed, &[]);
        i.canary = Some("canary");
        let p = plan(i);
        assert!(p.start.is_empty());
        assert_eq!(p.hold, Some(Hold::CanaryUnavailable));
        // Without a canary the same groups roll.
        assert_eq!(plan(inputs(&observed, &[])).start, vec!["a"]);
    }

    #[test]
    fn a_failure_halts_everything_until_retried() {
        let observed = [ng("a", OLD), ng("b", OLD)];
        let mut failed = in_progress("a", "u-1");
        failed.state = NodeGroupState::Failed;
        let previous = [failed];
        let mut i = inputs(&observed, &previous);
        i.halted = true;
        let p = plan(i);
        assert!(p.start.is_empty());
        assert_eq!(p.phase, AMIRefresherPhase::Degraded);
        assert_eq!(p.hold, Some(Hold::Failed));
        assert_eq!(p.node_groups[0].state, NodeGroupState::Failed);
        assert_eq!(p.node_groups[1].state, NodeGroupState::Pending);
        // Retried: the failed group is pending again and goes first.
        let p = plan(inputs(&observed, &previous));
        assert_eq!(p.start, vec!["a"]);
    }

    #[test]
    fn gates_hold_new_starts_but_not_tracking() {
        let observed = [ng("a", OLD), ng("b", OLD)];
        let previous = [in_progress("a", "u-1")];
        for (paused, dry_run, window, hold, phase) in [
            (
                true,
                false,
                WindowState::Always,
                Hold::Paused,
                AMIRefresherPhase::Waiting,
            ),
            (
                false,
                true,
                WindowState::Always,
                Hold::DryRun,
                AMIRefresherPhase::Planned,
            ),
            (
                false,
                false,
                WindowState::Closed { opens_at: None },
                Hold::OutsideWindow { opens_at: None },
                AMIRefresherPhase::Waiting,
            ),
        ] {
            let mut i = inputs(&observed, &[]);
            (i.paused, i.dry_run, i.window) = (paused, dry_run, window);
            let p = plan(i);
            assert!(p.start.is_empty());
            assert_eq!((p.hold, p.phase), (Some(hold), phase));
            let mut i = inputs(&observed, &previous);
            (i.paused, i.dry_run, i.window) = (paused, dry_run, window);
            let p = plan(i);
            assert_eq!(p.node_groups[0].state, NodeGroupState::InProgress, "still tracked");
            assert_eq!(p.phase, AMIRefresherPhase::Progressing);
        }
    }

    #[test]
    fn a_running_update_found_in_aws_is_adopted_not_restarted() {
        let mut a = ng("a", OLD);
        a.busy = true;
        a.running_update = Some("u-lost".into());
        let observed = [a, ng("b", OLD)];
        let p = plan(inputs(&observed, &[]));
        assert!(p.start.is_empty());
        assert_eq!(p.node_groups[0].update_id.as_deref(), Some("u-lost"));
        assert_eq!(p.node_groups[0].state, NodeGroupState::InProgress);
    }

    #[test]
    fn busy_untracked_and_skipped_groups_are_not_started() {
        let mut a = ng("a", OLD);
        a.busy = true;
        let mut s = ng("s", OLD);
        s.skip = Some("no custom launch template".into());
        let observed = [a, s];
        let p = plan(inputs(&observed, &[]));
        assert!(p.start.is_empty());
        assert_eq!(p.hold, Some(Hold::Busy));
        assert_eq!(p.node_groups[1].state, NodeGroupState::Skipped);
        assert_eq!(p.total, 1);
    }

    #[test]
    fn all_on_target_is_ready_and_success_is_remembered() {
        let observed = [ng("a", TARGET), ng("b", TARGET)];
        let mut ok = in_progress("a", "u-1");
        ok.state = NodeGroupState::Successful;
        let previous = [ok];
        let p = plan(inputs(&observed, &previous));
        assert_eq!(p.phase, AMIRefresherPhase::Ready);
        assert_eq!(p.progress(), "2/2");
        assert_eq!(p.node_groups[0].state, NodeGroupState::Successful);
        assert_eq!(p.node_groups[0].update_id.as_deref(), Some("u-1"));
        assert_eq!(p.node_groups[1].state, NodeGroupState::UpToDate);
        assert_eq!(p.hold, None);
    }

    #[test]
    fn an_update_for_an_earlier_target_is_tracked_to_its_end_before_the_new_one() {
        let observed = [ng("a", OLD), ng("b", OLD)];
        let mut earlier = in_progress("a", "u-old");
        earlier.target_ami = Some("ami-0000000000000000c".into());
        let previous = [earlier];
        let p = plan(inputs(&observed, &previous));
        assert!(p.start.is_empty(), "parallelism 1 is taken by the earlier update");
        assert_eq!(p.node_groups[0].update_id.as_deref(), Some("u-old"));
        assert_eq!(p.node_groups[0].target_ami.as_deref(), Some("ami-0000000000000000c"));
    }

    #[test]
    fn a_new_target_after_the_halt_forgets_the_old_outcome() {
        let observed = [ng("a", OLD)];
        let mut failed = in_progress("a", "u-1");
        failed.state = NodeGroupState::Failed;
        failed.target_ami = Some("ami-0000000000000000c".into());
        let previous = [failed];
        // The halt was recorded while ami-...c was the target; the target is now TARGET.
        let record = HaltRecord {
            target: Some("ami-0000000000000000c".into()),
            observed_retry: None,
        };
        let mut i = inputs(&observed, &previous);
        i.halted = halt_holds(&record, TARGET, None);
        let p = plan(i);
        assert_eq!(p.start, vec!["a"], "a target chosen after the halt lifts it");
    }

    #[test]
    fn an_update_that_fails_after_the_target_changed_still_halts_and_stays_failed() {
        // The update of `a` was rolling to ami-...c; the target became TARGET while it ran; then it failed. The
        // halt is recorded now, with TARGET as the target in effect.
        let observed = [ng("a", OLD), ng("b", OLD)];
        let mut failed = in_progress("a", "u-1");
        failed.state = NodeGroupState::Failed;
        failed.target_ami = Some("ami-0000000000000000c".into());
        let previous = [failed];
        let mut i = inputs(&observed, &previous);
        i.halted = true;
        let p = plan(i);
        assert!(p.start.is_empty(), "nothing restarts: {:?}", p.start);
        assert_eq!(p.node_groups[0].state, NodeGroupState::Failed);
        assert_eq!(p.node_groups[0].update_id.as_deref(), Some("u-1"));
        assert_eq!(p.phase, AMIRefresherPhase::Degraded);
        assert_eq!(p.hold, Some(Hold::Failed));
        // And on the next reconcile the recorded halt (target TARGET) still holds.
        let record = HaltRecord {
            target: Some(TARGET.into()),
            observed_retry: None,
        };
        assert!(halt_holds(&record, TARGET, None));
    }

    #[test]
    fn only_a_new_target_or_a_new_retry_value_lifts_a_halt() {
        let record = HaltRecord {
            target: Some(TARGET.into()),
            observed_retry: Some("1".into()),
        };
        assert!(halt_holds(&record, TARGET, Some("1")), "same target, same retry value");
        assert!(!halt_holds(&record, TARGET, Some("2")), "a new retry value");
        assert!(
            !halt_holds(&record, TARGET, None),
            "the annotation removed counts as a new value"
        );
        assert!(!halt_holds(&record, OLD, Some("1")), "another target");
        assert!(!halt_holds(&HaltRecord::default(), TARGET, None), "nothing halted");
    }

    #[test]
    fn a_halt_survives_unrelated_spec_edits_and_an_upgrade_from_the_first_release() {
        let mut status = AMIRefresherStatus {
            target_ami: Some(TARGET.into()),
            halted_target: Some(TARGET.into()),
            ..AMIRefresherStatus::default()
        };
        // Pausing and unpausing bumps the generation; the halt does not depend on it.
        assert!(halt_holds(&HaltRecord::from_status(&status, 7), TARGET, None));
        // A status of the first release: failedGeneration at the current generation carries the halt over.
        status.halted_target = None;
        status.failed_generation = Some(3);
        assert!(halt_holds(&HaltRecord::from_status(&status, 3), TARGET, None));
        assert!(!halt_holds(&HaltRecord::from_status(&status, 4), TARGET, None));
    }
}
