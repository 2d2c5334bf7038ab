//! What the status says about a rollout step: phase, progress and the three conditions, from the plan after this
//! reconcile's starts were applied. Pure; the reconcile only copies the result into status.
//!
//! Properties kept here, each a unit test: a halt (a failure seen, not lifted) is `Degraded` whatever else holds;
//! `Progressing` is true exactly while an update is in flight; every `Waiting` says why (paused, window, canary)
//! and a dry run lists what would roll.

use api_types::{
    ami_refresher::{AMIRefresherPhase, NodeGroupState, RETRY_ANNOTATION},
    conditions::reasons,
};

use crate::plan::{Hold, Plan};

/// One condition's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionText {
    /// `True` or `False`.
    pub status: bool,
    /// CamelCase reason (a constant of `api_types::conditions::reasons`).
    pub reason: &'static str,
    /// Human message.
    pub message: String,
}

impl ConditionText {
    fn new(status: bool, reason: &'static str, message: String) -> Self {
        Self {
            status,
            reason,
            message,
        }
    }
}

/// The status of one rollout step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Coarse phase.
    pub phase: AMIRefresherPhase,
    /// `done/total`.
    pub progress: String,
    /// The rollout is halted by a failure (`status.haltedTarget` is set).
    pub halted: bool,
    /// Node groups being updated.
    pub in_flight: usize,
    /// Node groups that still need the target.
    pub pending: usize,
    /// `Ready`.
    pub ready: ConditionText,
    /// `Progressing`.
    pub progressing: ConditionText,
    /// `Degraded`.
    pub degraded: ConditionText,
}

/// Inputs besides the plan.
#[derive(Clone, Copy, Debug)]
pub struct StepFacts<'a> {
    /// The target AMI.
    pub target: &'a str,
    /// A failure halts the rollout (an earlier halt holds, or an update failed in this step).
    pub halting: bool,
    /// `refreshConfig.canary`.
    pub canary: Option<&'a str>,
}

/// Summarizes a rollout step. See the module documentation for the properties it keeps.
pub fn summarize(plan: &Plan, facts: StepFacts<'_>) -> Summary {
    let StepFacts {
        target,
        halting,
        canary,
    } = facts;
    let count = |pred: &dyn Fn(NodeGroupState) -> bool| plan.node_groups.iter().filter(|n| pred(n.state)).count();
    let in_flight = count(&|s| s == NodeGroupState::InProgress);
    let pending = count(&|s| s == NodeGroupState::Pending);
    let done = count(&|s| matches!(s, NodeGroupState::UpToDate | NodeGroupState::Successful));
    let failed = plan
        .node_groups
        .iter()
        .find(|n| matches!(n.state, NodeGroupState::Failed | NodeGroupState::Cancelled));
    let halted = halting && failed.is_some();
    let phase = if halted {
        AMIRefresherPhase::Degraded
    } else if in_flight > 0 {
        AMIRefresherPhase::Progressing
    } else {
        plan.phase
    };
    let ready = match phase {
        AMIRefresherPhase::Ready => {
            ConditionText::new(true, reasons::UP_TO_DATE, format!("{done} node group(s) run {target}"))
        }
        AMIRefresherPhase::Degraded => ConditionText::new(
            false,
            reasons::ROLLOUT_FAILED,
            failed
                .map(|f| format!("{}: {}", f.name, f.message.as_deref().unwrap_or("failed")))
                .unwrap_or_default(),
        ),
        AMIRefresherPhase::Planned => would_roll(plan, target),
        AMIRefresherPhase::Waiting => waiting(plan, canary, pending),
        _ => ConditionText::new(
            false,
            reasons::ROLLING_OUT,
            format!("{done}/{} node group(s) on {target}, {in_flight} updating", plan.total),
        ),
    };
    let progressing = if in_flight > 0 {
        ConditionText::new(
            true,
            reasons::ROLLING_OUT,
            format!("{in_flight} node group(s) updating"),
        )
    } else {
        ConditionText::new(false, reasons::AS_EXPECTED, String::new())
    };
    let degraded = if halted {
        ConditionText::new(
            true,
            reasons::ROLLOUT_FAILED,
            format!(
                "rollout stopped: set the {RETRY_ANNOTATION} annotation to a new value to retry (a new target AMI also \
                 continues; other spec changes do not)"
            ),
        )
    } else {
        ConditionText::new(false, reasons::AS_EXPECTED, String::new())
    };
    Summary {
        phase,
        progress: format!("{done}/{}", plan.total),
        halted,
        in_flight,
        pending,
        ready,
        progressing,
        degraded,
    }
}

/// `Ready` of a dry run: which groups would roll, from what.
fn would_roll(plan: &Plan, target: &str) -> ConditionText {
    let would_roll: Vec<String> = plan
        .node_groups
        .iter()
        .filter(|n| n.state == NodeGroupState::Pending)
        .map(|n| {
            format!(
                "{} ({} -> {target})",
                n.name,
                n.current_ami.as_deref().unwrap_or("unknown")
            )
        })
        .collect();
    ConditionText::new(
        false,
        reasons::DRY_RUN,
        format!("would roll: {}", would_roll.join(", ")),
    )
}

/// `Ready` while the rollout waits: for the canary, its soak, the maintenance window, or `spec.paused`.
fn waiting(plan: &Plan, canary: Option<&str>, pending: usize) -> ConditionText {
    match plan.hold {
        Some(Hold::CanaryUnavailable) => {
            let canary = canary.unwrap_or_default();
            let message = match plan.node_groups.iter().find(|n| n.name == canary) {
                Some(n) => format!(
                    "canary {canary} cannot be rolled ({}); {pending} node group(s) wait",
                    n.message.as_deref().unwrap_or("skipped")
                ),
                None => format!(
                    "canary {canary} is not a node group of the cluster (or is excluded); {pending} node group(s) wait"
                ),
            };
            ConditionText::new(false, reasons::CANARY_UNAVAILABLE, message)
        }
        Some(Hold::CanarySoak { until }) => ConditionText::new(
            false,
            reasons::CANARY_SOAKING,
            format!(
                "canary {} succeeded; {pending} node group(s) start at {until} (refreshConfig.canarySoak)",
                canary.unwrap_or_default()
            ),
        ),
        Some(Hold::OutsideWindow { opens_at }) => ConditionText::new(
            false,
            reasons::OUTSIDE_MAINTENANCE_WINDOW,
            match opens_at {
                Some(t) => format!("{pending} node group(s) wait for the window opening at {t}"),
                None => format!("{pending} node group(s) wait; no maintenance window opens again"),
            },
        ),
        _ => ConditionText::new(
            false,
            reasons::PAUSED,
            format!("{pending} node group(s) wait: spec.paused is set"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use api_types::ami_refresher::{NodeGroupKind, NodeGroupStatus};

    use super::*;

    const TARGET: &str = "ami-0000000000000000b";

    fn group(name: &str, state: NodeGroupState) -> NodeGroupStatus {
        NodeGroupStatus {
            current_ami: Some("ami-0000000000000000a".into()),
            target_ami: Some(TARGET.into()),
            ..NodeGroupStatus::new(name, NodeGroupKind::Managed, state)
        }
    }

    fn plan_of(groups: Vec<NodeGroupStatus>, phase: AMIRefresherPhase, hold: Option<Hold>) -> Plan {
        let total = groups.iter().filter(|n| n.state != NodeGroupState::Skipped).count();
        let done = groups
            .iter()
            .filter(|n| matches!(n.state, NodeGroupState::UpToDate | NodeGroupState::Successful))
            .count();
        Plan {
            node_groups: groups,
            start: Vec::new(),
            hold,
            phase,
            done,
            total,
        }
    }

    fn facts() -> StepFacts<'static> {
        StepFacts {
            target: TARGET,
            halting: false,
            canary: None,
        }
    }

    #[test]
    fn all_on_target_is_ready_and_nothing_progresses() {
        let p = plan_of(
            vec![
                group("a", NodeGroupState::UpToDate),
                group("b", NodeGroupState::Successful),
            ],
            AMIRefresherPhase::Ready,
            None,
        );
        let s = summarize(&p, facts());
        assert_eq!((s.phase, s.progress.as_str()), (AMIRefresherPhase::Ready, "2/2"));
        assert_eq!((s.ready.status, s.ready.reason), (true, reasons::UP_TO_DATE));
        assert!(!s.progressing.status && !s.degraded.status);
    }

    #[test]
    fn a_failure_while_halting_is_degraded_whatever_else_holds_and_names_the_group_and_the_way_out() {
        let mut failed = group("a", NodeGroupState::Failed);
        failed.message = Some("NodeCreationFailure: boom".into());
        let p = plan_of(
            vec![failed, group("b", NodeGroupState::Pending)],
            AMIRefresherPhase::Waiting,
            Some(Hold::Paused),
        );
        let s = summarize(
            &p,
            StepFacts {
                halting: true,
                ..facts()
            },
        );
        assert!(s.halted);
        assert_eq!(s.phase, AMIRefresherPhase::Degraded);
        assert_eq!(s.ready.reason, reasons::ROLLOUT_FAILED);
        assert!(
            s.ready.message.contains("a: NodeCreationFailure"),
            "{}",
            s.ready.message
        );
        assert!(s.degraded.status && s.degraded.message.contains(RETRY_ANNOTATION));
        // A failure without a halt (lifted by a retry) is not Degraded.
        let s = summarize(&p, facts());
        assert!(!s.halted && !s.degraded.status);
    }

    #[test]
    fn progressing_is_true_exactly_while_an_update_is_in_flight() {
        let p = plan_of(
            vec![
                group("a", NodeGroupState::InProgress),
                group("b", NodeGroupState::Pending),
            ],
            AMIRefresherPhase::Progressing,
            Some(Hold::InFlight),
        );
        let s = summarize(&p, facts());
        assert_eq!((s.in_flight, s.pending), (1, 1));
        assert!(s.progressing.status);
        assert_eq!(s.ready.reason, reasons::ROLLING_OUT);
        assert_eq!(s.ready.message, format!("0/2 node group(s) on {TARGET}, 1 updating"));
    }

    #[test]
    fn every_wait_says_why_and_a_dry_run_lists_what_would_roll() {
        let pending = || vec![group("a", NodeGroupState::Pending)];
        let reason = |hold| summarize(&plan_of(pending(), AMIRefresherPhase::Waiting, hold), facts()).ready;
        assert_eq!(reason(Some(Hold::Paused)).reason, reasons::PAUSED);
        let window = reason(Some(Hold::OutsideWindow {
            opens_at: Some("2026-12-01T02:00:00Z".parse().expect("ts")),
        }));
        assert_eq!(window.reason, reasons::OUTSIDE_MAINTENANCE_WINDOW);
        assert!(window.message.contains("2026-12-01T02:00:00Z"), "{}", window.message);
        let canary = summarize(
            &plan_of(pending(), AMIRefresherPhase::Waiting, Some(Hold::CanaryUnavailable)),
            StepFacts {
                canary: Some("canry"),
                ..facts()
            },
        )
        .ready;
        assert_eq!(canary.reason, reasons::CANARY_UNAVAILABLE);
        assert!(
            canary.message.contains("canry is not a node group"),
            "{}",
            canary.message
        );
        let dry = summarize(
            &plan_of(pending(), AMIRefresherPhase::Planned, Some(Hold::DryRun)),
            facts(),
        )
        .ready;
        assert_eq!(dry.reason, reasons::DRY_RUN);
        assert_eq!(
            dry.message,
            format!("would roll: a (ami-0000000000000000a -> {TARGET})")
        );
    }
}
