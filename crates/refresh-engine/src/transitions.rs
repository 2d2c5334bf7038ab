//! Which status changes of an AMIRefresher are announced (Event and notification), decided from the status before
//! and after a step: pure, so "what is the user told when X" is answered here and in its tests.

use api_types::{
    AMIRefresherStatus,
    ami_refresher::{AMIRefresherPhase, NodeGroupState, NodeGroupUpdateType},
    conditions::{reasons, types},
};

/// A status change to announce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// A failure or a refusal (a Warning Event).
    pub warning: bool,
    /// The Event reason (one of `api_types::conditions::reasons`).
    pub reason: &'static str,
    /// What happened, for people.
    pub message: String,
    /// The node group it is about (`None`: the whole rollout).
    pub node_group: Option<String>,
    /// The state or phase before.
    pub from: Option<String>,
    /// The state or phase after.
    pub to: String,
}

/// What changed from `old` to `new` that users are told about, once each: a node group's update started (config or
/// version), succeeded or failed; the rollout's phase or Ready reason changed to a state worth announcing (planned,
/// complete, held, no eligible AMI, invalid, claimed by another AMIRefresher). The same status twice announces
/// nothing.
pub fn transitions(old: &AMIRefresherStatus, new: &AMIRefresherStatus) -> Vec<Transition> {
    let mut out = Vec::new();
    for n in &new.node_groups {
        let before = old.node_groups.iter().find(|p| p.name == n.name && p.kind == n.kind);
        let same_update = before.is_some_and(|b| b.update_id == n.update_id && b.state == n.state);
        if same_update {
            continue;
        }
        let target = n.target_ami.clone().unwrap_or_default();
        let (warning, reason, message) = match n.state {
            NodeGroupState::InProgress if n.update_type == Some(NodeGroupUpdateType::ConfigUpdate) => (
                false,
                reasons::NODE_GROUP_CONFIG_UPDATE_STARTED,
                format!(
                    "{} applying the update config of refreshConfig before rolling to {target} (update {})",
                    n.name,
                    n.update_id.as_deref().unwrap_or_default()
                ),
            ),
            NodeGroupState::InProgress => (
                false,
                reasons::NODE_GROUP_UPDATE_STARTED,
                format!(
                    "{} rolling from {} to {target} (update {})",
                    n.name,
                    n.current_ami.as_deref().unwrap_or("unknown"),
                    n.update_id.as_deref().unwrap_or_default()
                ),
            ),
            NodeGroupState::Successful => (
                false,
                reasons::NODE_GROUP_UPDATED,
                format!("{} now runs {target}", n.name),
            ),
            NodeGroupState::Failed | NodeGroupState::Cancelled => (
                true,
                reasons::NODE_GROUP_UPDATE_FAILED,
                format!(
                    "{} did not reach {target}: {}; remaining node groups are left alone",
                    n.name,
                    n.message.as_deref().unwrap_or("failed")
                ),
            ),
            _ => continue,
        };
        out.push(Transition {
            warning,
            reason,
            message,
            node_group: Some(n.name.clone()),
            from: before.map(|b| format!("{:?}", b.state)),
            to: format!("{:?}", n.state),
        });
    }
    let ready_reason = |s: &AMIRefresherStatus| {
        api_types::conditions::get_condition(&s.conditions, types::READY).map(|c| (c.reason.clone(), c.message.clone()))
    };
    if old.phase != new.phase || ready_reason(old).map(|r| r.0) != ready_reason(new).map(|r| r.0) {
        let message = ready_reason(new).map(|r| r.1).unwrap_or_default();
        let phase = |p: Option<AMIRefresherPhase>| p.map(|p| format!("{p:?}"));
        let claimed = ready_reason(new).is_some_and(|r| r.0 == reasons::NODE_GROUP_CLAIMED);
        let (warning, reason) = match new.phase {
            _ if claimed => (true, reasons::NODE_GROUP_CLAIMED),
            Some(AMIRefresherPhase::NoEligibleAMI) => (true, reasons::NO_ELIGIBLE_AMI),
            Some(AMIRefresherPhase::Invalid) => (true, reasons::INVALID_SPEC),
            Some(AMIRefresherPhase::Planned) => (false, reasons::ROLLOUT_PLANNED),
            Some(AMIRefresherPhase::Ready) if old.phase.is_some() => (false, reasons::ROLLOUT_COMPLETE),
            Some(AMIRefresherPhase::Waiting) => (false, reasons::ROLLOUT_HELD),
            _ => return out,
        };
        out.push(Transition {
            warning,
            reason,
            message,
            node_group: None,
            from: phase(old.phase),
            to: phase(new.phase).unwrap_or_default(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use api_types::{
        ami_refresher::{NodeGroupKind, NodeGroupStatus},
        conditions::{ConditionStatus, ConditionUpdate, set_condition},
    };

    use super::*;

    fn group(name: &str, state: NodeGroupState, update: Option<&str>) -> NodeGroupStatus {
        NodeGroupStatus {
            update_id: update.map(str::to_owned),
            target_ami: Some("ami-new".into()),
            current_ami: Some("ami-old".into()),
            message: Some("NodeCreationFailure".into()),
            ..NodeGroupStatus::new(name, NodeGroupKind::Managed, state)
        }
    }

    fn status(phase: AMIRefresherPhase, ready_reason: &str, groups: Vec<NodeGroupStatus>) -> AMIRefresherStatus {
        let mut s = AMIRefresherStatus {
            phase: Some(phase),
            node_groups: groups,
            ..AMIRefresherStatus::default()
        };
        let update = ConditionUpdate {
            type_: types::READY,
            status: ConditionStatus::from(phase == AMIRefresherPhase::Ready),
            reason: ready_reason,
            message: "why".into(),
        };
        set_condition(
            &mut s.conditions,
            update,
            Some(1),
            "2026-12-01T00:00:00Z".parse().expect("ts"),
        );
        s
    }

    fn reasons_of(t: &[Transition]) -> Vec<(&'static str, Option<&str>, bool)> {
        t.iter()
            .map(|t| (t.reason, t.node_group.as_deref(), t.warning))
            .collect()
    }

    #[test]
    fn an_update_start_success_and_failure_are_each_announced_once_per_group() {
        let pending = status(
            AMIRefresherPhase::Progressing,
            reasons::ROLLING_OUT,
            vec![group("a", NodeGroupState::Pending, None)],
        );
        let started = status(
            AMIRefresherPhase::Progressing,
            reasons::ROLLING_OUT,
            vec![group("a", NodeGroupState::InProgress, Some("u1"))],
        );
        assert_eq!(
            reasons_of(&transitions(&pending, &started)),
            [(reasons::NODE_GROUP_UPDATE_STARTED, Some("a"), false)]
        );
        assert!(
            transitions(&started, &started).is_empty(),
            "the same status twice announces nothing"
        );
        let done = status(
            AMIRefresherPhase::Progressing,
            reasons::ROLLING_OUT,
            vec![group("a", NodeGroupState::Successful, Some("u1"))],
        );
        assert_eq!(
            reasons_of(&transitions(&started, &done)),
            [(reasons::NODE_GROUP_UPDATED, Some("a"), false)]
        );
        let failed = status(
            AMIRefresherPhase::Degraded,
            reasons::ROLLOUT_FAILED,
            vec![group("a", NodeGroupState::Failed, Some("u1"))],
        );
        let t = transitions(&started, &failed);
        assert_eq!(reasons_of(&t), [(reasons::NODE_GROUP_UPDATE_FAILED, Some("a"), true)]);
        assert!(t[0].message.contains("NodeCreationFailure"), "{t:?}");
    }

    #[test]
    fn a_second_update_of_the_same_group_is_announced_again() {
        let first = status(
            AMIRefresherPhase::Progressing,
            reasons::ROLLING_OUT,
            vec![group("a", NodeGroupState::InProgress, Some("u1"))],
        );
        let second = status(
            AMIRefresherPhase::Progressing,
            reasons::ROLLING_OUT,
            vec![group("a", NodeGroupState::InProgress, Some("u2"))],
        );
        assert_eq!(
            reasons_of(&transitions(&first, &second)),
            [(reasons::NODE_GROUP_UPDATE_STARTED, Some("a"), false)]
        );
    }

    #[test]
    fn rollout_phases_worth_telling_are_announced_and_a_first_ready_is_not() {
        let empty = AMIRefresherStatus::default();
        let ready = status(AMIRefresherPhase::Ready, reasons::UP_TO_DATE, Vec::new());
        assert!(
            transitions(&empty, &ready).is_empty(),
            "already up to date when first seen: nothing happened"
        );
        let rolling = status(AMIRefresherPhase::Progressing, reasons::ROLLING_OUT, Vec::new());
        assert_eq!(
            reasons_of(&transitions(&rolling, &ready)),
            [(reasons::ROLLOUT_COMPLETE, None, false)]
        );
        for (phase, reason, expected, warning) in [
            (
                AMIRefresherPhase::Planned,
                reasons::DRY_RUN,
                reasons::ROLLOUT_PLANNED,
                false,
            ),
            (
                AMIRefresherPhase::Waiting,
                reasons::PAUSED,
                reasons::ROLLOUT_HELD,
                false,
            ),
            (
                AMIRefresherPhase::NoEligibleAMI,
                reasons::NO_ELIGIBLE_AMI,
                reasons::NO_ELIGIBLE_AMI,
                true,
            ),
            (
                AMIRefresherPhase::Invalid,
                reasons::INVALID_SPEC,
                reasons::INVALID_SPEC,
                true,
            ),
            (
                AMIRefresherPhase::Waiting,
                reasons::NODE_GROUP_CLAIMED,
                reasons::NODE_GROUP_CLAIMED,
                true,
            ),
        ] {
            let t = transitions(&rolling, &status(phase, reason, Vec::new()));
            assert_eq!(reasons_of(&t), [(expected, None, warning)], "{phase:?}");
            assert_eq!(t[0].from.as_deref(), Some("Progressing"));
        }
    }
}
