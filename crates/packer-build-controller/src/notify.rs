//! Notifications of state transitions: one per transition (phase, Ready reason or build changed), never one per
//! reconcile. Each is announced through `controller_runtime::report` (Event, then the notification queued on
//! `controller_runtime::notify::NotificationQueue`: outside the reconcile, bounded, with retries, logged with target
//! `notification`) with the `notifier` crate (Slack, SNS, SES, Discord, generic webhook). A failed delivery never
//! fails the reconcile: it becomes a Warning Event. Secret values are read from the Secrets the spec names at
//! delivery time and never logged.

use api_types::{PackerBuilder, packer_builder::PackerBuilderPhase};
use kube::ResourceExt;
use notifier::{Notification, Severity};

/// One transition of a PackerBuilder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Phase before.
    pub from: Option<PackerBuilderPhase>,
    /// Phase after.
    pub to: Option<PackerBuilderPhase>,
    /// Reason (the Event reason).
    pub reason: String,
    /// Human message.
    pub message: String,
    /// `true` for failures and degradations.
    pub warning: bool,
}

/// The notification of a transition (severity from the phase it reaches).
pub fn model(pb: &PackerBuilder, t: &Transition) -> Notification {
    let status = pb.status.clone().unwrap_or_default();
    let severity = match (t.warning, t.to) {
        (true, Some(PackerBuilderPhase::Degraded)) => Severity::Failure,
        (true, _) => Severity::Warning,
        (false, Some(PackerBuilderPhase::Ready)) => Severity::Success,
        _ => Severity::Info,
    };
    Notification {
        kind: "PackerBuilder".into(),
        namespace: pb.namespace().unwrap_or_default(),
        name: pb.name_any(),
        from: t.from.map(|p| format!("{p:?}")),
        to: t.to.map_or_else(|| "Unknown".to_owned(), |p| format!("{p:?}")),
        reason: t.reason.clone(),
        message: t.message.clone(),
        severity,
        base_ami: status.last_run_base_image_id,
        ami: status.last_run_built_image_id,
        node_group: None,
    }
}
