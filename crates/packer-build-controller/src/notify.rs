//! Notifications of state transitions: one per transition (phase, Ready reason or build changed), never one per
//! reconcile. Every transition is recorded as a structured log line (target `notification`); when the spec names
//! channels, [`SinkNotifier`] queues their delivery (`controller_runtime::notify::NotificationQueue`: outside the
//! reconcile, bounded, with retries) with the `notifier` crate (Slack, SNS, SES, Discord, generic webhook). A
//! failed delivery never fails the reconcile: it becomes a Warning Event. Secret values are read from the
//! Secrets the spec names at delivery time and never logged.

use std::{future::Future, pin::Pin};

use api_types::{PackerBuilder, packer_builder::PackerBuilderPhase};
use kube::{Resource, ResourceExt};
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

/// Where notifications go.
pub trait Notifier: Send + Sync {
    /// Announces one transition; delivery problems are the notifier's to report, never the reconcile's.
    fn notify<'a>(
        &'a self,
        pb: &'a PackerBuilder,
        transition: &'a Transition,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

    /// Waits for queued deliveries (a clean shutdown), at most `timeout`; whether all finished.
    fn drain(&self, timeout: std::time::Duration) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        let _ = timeout;
        Box::pin(async { true })
    }
}

fn model(pb: &PackerBuilder, t: &Transition) -> Notification {
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

/// Logs every transition and delivers it to the channels of the spec.
#[derive(Debug)]
pub struct SinkNotifier(pub controller_runtime::notify::NotificationQueue);

impl Notifier for SinkNotifier {
    fn notify<'a>(&'a self, pb: &'a PackerBuilder, t: &'a Transition) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let object = pb.object_ref(&());
            let namespace = pb.namespace().unwrap_or_default();
            let target = controller_runtime::notify::Target {
                object: &object,
                namespace: &namespace,
                region: &pb.spec.region,
                spec: pb.spec.notifier.as_ref(),
            };
            self.0.deliver(target, &model(pb, t));
        })
    }

    fn drain(&self, timeout: std::time::Duration) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(self.0.drain(timeout))
    }
}
