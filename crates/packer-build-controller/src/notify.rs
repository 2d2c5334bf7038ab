//! Notifications of state transitions. One per transition (phase or Ready reason or build changed), never one per
//! reconcile. The real sinks (Slack, SNS, SES, Discord, webhook) come with the notifier crate; until then
//! [`LogNotifier`] records each notification as a structured log line (target `notification`), which is also how
//! tests count them. Nothing secret is ever part of a notification.

use std::{future::Future, pin::Pin};

use api_types::packer_builder::PackerBuilderPhase;

/// One transition of a PackerBuilder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Phase before.
    pub from: Option<PackerBuilderPhase>,
    /// Phase after.
    pub to: Option<PackerBuilderPhase>,
    /// Reason (the Event reason).
    pub reason: String,
    /// Human message.
    pub message: String,
    /// Base AMI of the build, if any.
    pub base_ami: Option<String>,
    /// AMI in use, if any.
    pub built_ami: Option<String>,
    /// `true` for failures and degradations.
    pub warning: bool,
}

/// Where notifications go.
pub trait Notifier: Send + Sync {
    /// Delivers one notification; failures are the notifier's to report, never the reconcile's.
    fn notify<'a>(&'a self, transition: &'a Transition) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// Records notifications in the log.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogNotifier;

impl Notifier for LogNotifier {
    fn notify<'a>(&'a self, t: &'a Transition) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            tracing::info!(
                target: "notification",
                namespace = %t.namespace,
                name = %t.name,
                from = ?t.from,
                to = ?t.to,
                reason = %t.reason,
                base_ami = ?t.base_ami,
                built_ami = ?t.built_ami,
                warning = t.warning,
                "{}",
                t.message
            );
        })
    }
}
