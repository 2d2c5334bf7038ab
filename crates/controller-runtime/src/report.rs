//! The one reporting path of both controllers: the status is written first (a merge patch that also removes fields
//! that stopped being true, [`crate::write_status`]), then each transition is announced once: an Event on the object
//! and, for state transitions, a notification (queued, delivered outside the reconcile).
//!
//! Why this order: a status write that fails announces nothing, and the next reconcile computes the same transitions
//! again; a transition is never announced for a state the API server does not hold. The price is the window between
//! the write and the announcement: a process killed there does not announce that transition (the PackerBuilder's
//! build start is the exception: it is re-announced late, see its controller).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

use crate::notify::{NotificationQueue, Target};

/// One transition to announce.
#[derive(Clone, Debug)]
pub struct Announcement {
    /// Normal or Warning.
    pub type_: EventType,
    /// The Event reason (one of `api_types::conditions::reasons`).
    pub reason: String,
    /// What happened, for people.
    pub note: String,
    /// The Event's action (`Reconcile`, `Rollout`, `Retention`).
    pub action: &'static str,
    /// Another object the Event is about (a node group, an AMI). kube's Recorder folds Events with the same type,
    /// reason, action and related object into one series and keeps the first note, so an Event per object must
    /// name its object here.
    pub related: Option<ObjectReference>,
    /// The notification of the same transition (`None`: an Event only).
    pub notification: Option<notifier::Notification>,
}

/// An object Kubernetes does not serve, named as an Event's related object (`kind` in `api_version`).
pub fn related(api_version: &str, kind: &str, name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.to_owned()),
        kind: Some(kind.to_owned()),
        name: Some(name.to_owned()),
        ..ObjectReference::default()
    }
}

/// Publishes each announcement's Event on `target.object` (a failed publish is logged, never fails the reconcile),
/// then queues its notification for `target`'s channels.
pub async fn announce(
    recorder: &Recorder,
    queue: &NotificationQueue,
    target: Target<'_>,
    announcements: Vec<Announcement>,
) {
    for a in announcements {
        let event = Event {
            type_: a.type_,
            reason: a.reason,
            note: Some(a.note),
            action: a.action.to_owned(),
            secondary: a.related,
        };
        if let Err(error) = recorder.publish(&event, target.object).await {
            tracing::warn!(%error, "could not publish an Event");
        }
        if let Some(notification) = &a.notification {
            queue.deliver(target, notification);
        }
    }
}

/// Writes the status when it changed, then announces. Returns whether the status changed.
pub async fn report<K, S>(
    (api, name): (&kube::Api<K>, &str),
    (old, new): (&S, &S),
    (recorder, queue): (&Recorder, &NotificationQueue),
    target: Target<'_>,
    announcements: Vec<Announcement>,
) -> kube::Result<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize + PartialEq,
{
    let changed = crate::write_status(api, name, old, new).await?;
    announce(recorder, queue, target, announcements).await;
    Ok(changed)
}
