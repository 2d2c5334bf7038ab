//! Property test of the rollout plan over random sequences of events: target changes, exclusions, deletions,
//! failures, foreign updates and restarts (a lost status write). A small model of AWS (each node group's image and
//! running update) is driven by the plan's decisions the way the controller drives AWS, and after every step:
//!
//! - never more than `parallelism` of our updates run in AWS at once;
//! - an excluded group, or one busy with somebody else's update, is never started (an update of ours found running
//!   on an excluded group after a lost status write is tracked, and counts against parallelism);
//! - a group with an update running is never started again;
//! - a failure halts: nothing starts for the target in effect until the target changes or a retry is asked for, and
//!   each failure is announced (reaches the `Failed` state in status) exactly once.

use std::collections::BTreeMap;

use api_types::ami_refresher::{AMIRefresherStatus, NodeGroupKind, NodeGroupState};
use jiff::Timestamp;
use proptest::prelude::*;
use refresh_engine::{
    Observed, PlanInputs, WindowState, plan,
    plan::{HaltRecord, halt_holds},
};

const GROUPS: usize = 5;

#[derive(Clone, Debug)]
enum Event {
    /// A new target AMI (numbered).
    Retarget(u8),
    /// Exclude or include group `i`.
    ToggleExclude(usize),
    /// Group `i` is deleted (its running update ends as cancelled) or re-created on the old image.
    ToggleDeleted(usize),
    /// Our running update of group `i` ends: success or failure.
    Finish(usize, bool),
    /// Somebody else starts an update on group `i` (if idle), or theirs ends.
    Foreign(usize),
    /// The controller restarts and the last status write was lost.
    LoseStatus,
    /// The retry annotation gets a new value.
    Retry,
    /// Nothing happens (another reconcile).
    Tick,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        1 => (1u8..4).prop_map(Event::Retarget),
        1 => (0..GROUPS).prop_map(Event::ToggleExclude),
        1 => (0..GROUPS).prop_map(Event::ToggleDeleted),
        4 => ((0..GROUPS), any::<bool>()).prop_map(|(i, ok)| Event::Finish(i, ok)),
        1 => (0..GROUPS).prop_map(Event::Foreign),
        1 => Just(Event::LoseStatus),
        1 => Just(Event::Retry),
        3 => Just(Event::Tick),
    ]
}

#[derive(Clone, Debug, Default)]
struct Group {
    image: String,
    deleted: bool,
    excluded: bool,
    /// (update id, ours, image it rolls onto)
    running: Option<(String, bool, String)>,
    /// Failed updates of ours not yet seen by the controller: (id).
    failed_unseen: Vec<String>,
}

struct World {
    groups: Vec<Group>,
    target: String,
    status: AMIRefresherStatus,
    retry: Option<String>,
    parallelism: usize,
    next_id: u32,
    /// Update IDs whose failure reached status (announced).
    announced: BTreeMap<String, usize>,
    /// Update IDs started by the last reconcile.
    last_started: Vec<String>,
}

fn name(i: usize) -> String {
    format!("ng-{i}")
}

impl World {
    fn new(parallelism: usize) -> Self {
        Self {
            groups: (0..GROUPS)
                .map(|_| Group {
                    image: "ami-old".into(),
                    ..Group::default()
                })
                .collect(),
            target: "ami-t0".into(),
            status: AMIRefresherStatus::default(),
            retry: None,
            parallelism,
            next_id: 0,
            announced: BTreeMap::new(),
            last_started: Vec::new(),
        }
    }

    fn apply(&mut self, e: &Event) {
        match *e {
            Event::Retarget(n) => self.target = format!("ami-t{n}"),
            Event::ToggleExclude(i) => self.groups[i].excluded ^= true,
            Event::ToggleDeleted(i) => {
                let g = &mut self.groups[i];
                if g.deleted {
                    *g = Group {
                        image: "ami-old".into(),
                        excluded: g.excluded,
                        ..Group::default()
                    };
                } else {
                    g.deleted = true;
                    g.running = None;
                }
            }
            Event::Finish(i, ok) => {
                let g = &mut self.groups[i];
                if let Some((id, ours, image)) = g.running.take()
                    && ours
                {
                    if ok {
                        g.image = image;
                    } else {
                        g.failed_unseen.push(id);
                    }
                }
            }
            Event::Foreign(i) => {
                let g = &mut self.groups[i];
                match &g.running {
                    None if !g.deleted => g.running = Some(("foreign".into(), false, "ami-foreign".into())),
                    Some((_, false, image)) => {
                        g.image = image.clone();
                        g.running = None;
                    }
                    _ => {}
                }
            }
            Event::LoseStatus => {
                // A crash between the last starts and their status write: the updates started in the last
                // reconcile run in AWS, status does not know them.
                for entry in &mut self.status.node_groups {
                    if entry.state == NodeGroupState::InProgress
                        && entry
                            .update_id
                            .as_ref()
                            .is_some_and(|id| self.last_started.contains(id))
                    {
                        entry.state = NodeGroupState::Pending;
                        entry.update_id = None;
                    }
                }
            }
            Event::Retry => {
                self.retry = Some(format!("{}", self.retry.as_deref().unwrap_or("0").len() + 1));
            }
            Event::Tick => {}
        }
    }

    /// What the controller observes: excluded and deleted groups are not listed; a foreign update makes a group busy;
    /// an update of ours not in status is found running and adopted.
    fn observed(&self) -> Vec<Observed> {
        let tracked = |n: &str| {
            self.status
                .node_groups
                .iter()
                .any(|e| e.name == n && e.state == NodeGroupState::InProgress && e.update_id.is_some())
        };
        self.groups
            .iter()
            .enumerate()
            .filter(|(_, g)| !g.deleted)
            .filter_map(|(i, g)| {
                let adopt = match &g.running {
                    Some((id, true, _)) if !tracked(&name(i)) => Some(id.clone()),
                    _ => None,
                };
                // Excluded groups are listed only when an untracked update of ours runs on them.
                if g.excluded && adopt.is_none() {
                    return None;
                }
                Some(Observed {
                    name: name(i),
                    kind: NodeGroupKind::Managed,
                    current_ami: Some(g.image.clone()),
                    launch_template_id: Some(format!("lt-{i}")),
                    launch_template_version: Some("1".into()),
                    skip: g.excluded.then(|| "excluded".to_owned()),
                    busy: g.running.is_some(),
                    running_update: adopt,
                })
            })
            .collect()
    }

    /// One reconcile: track, plan, start; then the invariants.
    fn reconcile(&mut self, now: Timestamp) -> Result<(), TestCaseError> {
        let old = self.status.clone();
        // Tracking: updates in status that ended in AWS.
        let mut previous = old.node_groups.clone();
        let mut newly_failed = false;
        for entry in previous
            .iter_mut()
            .filter(|e| e.state == NodeGroupState::InProgress && e.update_id.is_some())
        {
            let i: usize = entry.name[3..].parse().expect("index");
            let g = &mut self.groups[i];
            let id = entry.update_id.clone().unwrap_or_default();
            if g.deleted {
                entry.state = NodeGroupState::Cancelled;
                newly_failed = true;
            } else if g.running.as_ref().is_some_and(|(r, _, _)| *r == id) {
                // still running
            } else if let Some(pos) = g.failed_unseen.iter().position(|f| *f == id) {
                g.failed_unseen.remove(pos);
                entry.state = NodeGroupState::Failed;
                newly_failed = true;
            } else {
                entry.state = NodeGroupState::Successful;
                entry.current_ami = entry.target_ami.clone();
            }
        }
        let halt = halt_holds(&HaltRecord::from_status(&old, 1), &self.target, self.retry.as_deref());
        let observed = self.observed();
        let p = plan(PlanInputs {
            target: &self.target,
            observed: &observed,
            previous: &previous,
            canary: None,
            canary_soak: None,
            parallelism: self.parallelism,
            paused: false,
            dry_run: false,
            window: WindowState::Always,
            halted: halt || newly_failed,
            now,
        });
        let halting = halt || newly_failed;
        let failed_in_status = p
            .node_groups
            .iter()
            .any(|n| matches!(n.state, NodeGroupState::Failed | NodeGroupState::Cancelled));
        if halting && failed_in_status {
            prop_assert!(p.start.is_empty(), "started {:?} while halted", p.start);
        }
        let mut node_groups = p.node_groups.clone();
        self.last_started.clear();
        for started in &p.start {
            let i: usize = started[3..].parse().expect("index");
            let g = &mut self.groups[i];
            prop_assert!(!g.excluded && !g.deleted, "{started} started while excluded or deleted");
            prop_assert!(
                g.running.is_none(),
                "{started} started while an update runs: {:?}",
                g.running
            );
            self.next_id += 1;
            let id = format!("u{}", self.next_id);
            g.running = Some((id.clone(), true, self.target.clone()));
            self.last_started.push(id.clone());
            let entry = node_groups.iter_mut().find(|n| &n.name == started).expect("entry");
            entry.state = NodeGroupState::InProgress;
            entry.update_id = Some(id);
        }
        let ours_running = self
            .groups
            .iter()
            .filter(|g| g.running.as_ref().is_some_and(|(_, ours, _)| *ours))
            .count();
        prop_assert!(
            ours_running <= self.parallelism,
            "{ours_running} of our updates run at once, parallelism {}",
            self.parallelism
        );
        // Announcements: a transition into Failed/Cancelled for an update ID is announced once.
        for n in &node_groups {
            if matches!(n.state, NodeGroupState::Failed | NodeGroupState::Cancelled) {
                let before = old
                    .node_groups
                    .iter()
                    .find(|b| b.name == n.name && b.update_id == n.update_id)
                    .is_some_and(|b| b.state == n.state);
                if !before && let Some(id) = &n.update_id {
                    *self.announced.entry(id.clone()).or_default() += 1;
                }
            }
        }
        prop_assert!(
            self.announced.values().all(|c| *c == 1),
            "a failure announced more than once: {:?}",
            self.announced
        );
        self.status = AMIRefresherStatus {
            node_groups,
            halted_target: (halting && failed_in_status).then(|| self.target.clone()),
            observed_retry: self.retry.clone(),
            target_ami: Some(self.target.clone()),
            ..AMIRefresherStatus::default()
        };
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn the_rollout_keeps_its_invariants_whatever_happens(
        parallelism in 1usize..4,
        events in proptest::collection::vec(event(), 1..60),
    ) {
        let mut w = World::new(parallelism);
        let now: Timestamp = "2026-12-01T00:00:00Z".parse().expect("now");
        w.reconcile(now)?;
        for e in &events {
            w.apply(e);
            w.reconcile(now)?;
        }
    }
}
