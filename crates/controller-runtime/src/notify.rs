//! Delivery of one notification to the channels an object's spec names (`spec.notifier`), shared by both
//! controllers. Secret values are read from the Secrets the spec names at delivery time (a `get`, never a list)
//! and never logged. A failed delivery never fails a reconcile: it becomes a `NotificationFailed` Warning Event on
//! the object and `notifications_total{channel,result}`.

use std::sync::Arc;

use api_types::packer_builder::NotifierSpec;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::{
    Api, Client,
    runtime::events::{Event, EventType, Recorder},
};
use notifier::{DeliveryPolicy, DiscordSink, Notification, SesSink, Sink, SlackSink, SnsSink, WebhookSink};

use crate::Metrics;

/// Delivers notifications to the channels of a spec.
pub struct ChannelNotifier {
    /// Kubernetes client (reads the Secrets the spec names).
    pub client: Client,
    /// Shared HTTP client.
    pub http: reqwest::Client,
    /// Slack Web API base (`https://slack.com/api`).
    pub slack_api: String,
    /// Event recorder for failed deliveries.
    pub recorder: Recorder,
    /// `notifications_total{channel,result}`.
    pub metrics: Arc<Metrics>,
    /// AWS configuration for SNS and SES (the controller's own identity).
    pub sdk: aws_config::SdkConfig,
    /// Which Discord and webhook URLs (from users' Secrets) may be called.
    pub url_policy: notifier::UrlPolicy,
    /// Which SNS topics and SES senders the specs may name.
    pub aws_allowlist: notifier::AwsAllowlist,
}

/// The HTTP client for notifications: never follows a redirect, so an allowed public URL cannot bounce the
/// request to an internal address.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

impl std::fmt::Debug for ChannelNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelNotifier")
            .field("slack_api", &self.slack_api)
            .finish_non_exhaustive()
    }
}

/// Reads one key of a Secret (data, else stringData), trimmed. Errors name the Secret and key, never the value.
pub async fn secret_value(secrets: &Api<Secret>, name: &str, key: &str) -> Result<String, String> {
    let secret = secrets
        .get_opt(name)
        .await
        .map_err(|e| format!("reading Secret {name}: {e}"))?;
    let secret = secret.ok_or_else(|| format!("Secret {name} does not exist"))?;
    let from_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok());
    let from_string = secret.string_data.as_ref().and_then(|d| d.get(key)).cloned();
    from_data
        .or(from_string)
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| format!("Secret {name} has no key {key}"))
}

/// Where one object's notifications go.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The object (Events about failed deliveries are attached to it).
    pub object: &'a ObjectReference,
    /// Its namespace (where the named Secrets live).
    pub namespace: &'a str,
    /// AWS region for SNS and SES.
    pub region: &'a str,
    /// The channels.
    pub spec: Option<&'a NotifierSpec>,
}

impl ChannelNotifier {
    async fn sinks(&self, target: Target<'_>) -> Vec<Result<Sink, (&'static str, String)>> {
        let Some(spec) = target.spec else {
            return Vec::new();
        };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), target.namespace);
        let mut sinks = Vec::new();
        if let Some(slack) = &spec.slack {
            sinks.push(
                secret_value(&secrets, &slack.secret, "token")
                    .await
                    .map(|token| Sink::Slack(SlackSink::new(&self.slack_api, token, slack.channel_ids.clone())))
                    .map_err(|e| ("slack", e)),
            );
        }
        let region = aws_config::Region::new(target.region.to_owned());
        if let Some(sns) = &spec.sns {
            let conf = aws_sdk_sns::config::Builder::from(&self.sdk)
                .region(region.clone())
                .build();
            sinks.push(
                self.aws_allowlist
                    .check_sns_topic(&sns.topic_arn)
                    .map(|()| {
                        Sink::Sns(SnsSink {
                            client: aws_sdk_sns::Client::from_conf(conf),
                            topic_arn: sns.topic_arn.clone(),
                        })
                    })
                    .map_err(|e| ("sns", e)),
            );
        }
        if let Some(ses) = &spec.ses {
            let conf = aws_sdk_sesv2::config::Builder::from(&self.sdk)
                .region(region.clone())
                .build();
            sinks.push(
                self.aws_allowlist
                    .check_ses_sender(&ses.from)
                    .map(|()| {
                        Sink::Ses(SesSink {
                            client: aws_sdk_sesv2::Client::from_conf(conf),
                            from: ses.from.clone(),
                            to: ses.to.clone(),
                        })
                    })
                    .map_err(|e| ("ses", e)),
            );
        }
        if let Some(discord) = &spec.discord {
            sinks.push(
                secret_value(&secrets, &discord.secret, "webhookURL")
                    .await
                    .and_then(|url| notifier::check_url(&url, self.url_policy).map(|()| url))
                    .map(|url| Sink::Discord(DiscordSink::new(url)))
                    .map_err(|e| ("discord", e)),
            );
        }
        if let Some(webhook) = &spec.webhook {
            let key = secret_value(&secrets, &webhook.secret, "signingKey")
                .await
                .ok()
                .map(String::into_bytes);
            sinks.push(
                secret_value(&secrets, &webhook.secret, "url")
                    .await
                    .and_then(|url| notifier::check_url(&url, self.url_policy).map(|()| url))
                    .map(|url| Sink::Webhook(WebhookSink::new(url, key)))
                    .map_err(|e| ("webhook", e)),
            );
        }
        sinks
    }

    async fn warn(&self, object: &ObjectReference, channel: &str, why: String) {
        tracing::warn!(target: "notification", channel, reason = %why, "notification not delivered");
        let event = Event {
            type_: EventType::Warning,
            reason: api_types::conditions::reasons::NOTIFICATION_FAILED.into(),
            note: Some(format!("{channel}: {why}")),
            action: "Notify".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, object).await {
            tracing::warn!(%error, "could not publish an Event");
        }
    }

    /// Delivers the notification to every configured channel now, waiting for each (the [`NotificationQueue`]
    /// worker calls this; controllers queue instead).
    pub async fn send(&self, target: Target<'_>, n: &Notification) {
        for sink in self.sinks(target).await {
            match sink {
                Ok(sink) => match notifier::deliver(&self.http, &sink, n, DeliveryPolicy::default()).await {
                    Ok(()) => self.metrics.notification(sink.channel(), "ok"),
                    Err(error) => {
                        self.metrics.notification(sink.channel(), &error.reason());
                        self.warn(target.object, sink.channel(), error.reason()).await;
                    }
                },
                Err((channel, why)) => {
                    self.metrics.notification(channel, "configuration");
                    self.warn(target.object, channel, why).await;
                }
            }
        }
    }
}

/// One queued delivery: everything [`ChannelNotifier::deliver`] needs, owned.
#[derive(Debug)]
struct Delivery {
    object: ObjectReference,
    namespace: String,
    region: String,
    spec: Option<NotifierSpec>,
    notification: Notification,
}

/// Deliveries waiting in all workers' queues together; beyond this, new ones are dropped (logged, counted as
/// `queue_full`).
pub const QUEUE_CAPACITY: usize = 1024;
/// Delivery workers. One object's notifications always go to the same worker, so they arrive in order; different
/// objects' are delivered in parallel.
pub const DELIVERY_CONCURRENCY: usize = 8;

/// Notifications delivered outside the reconcile: [`NotificationQueue::deliver`] logs the notification and queues
/// it without waiting; [`DELIVERY_CONCURRENCY`] worker tasks deliver them, each with the notifier's retries and
/// timeouts, one object's notifications in order. A slow or dead Slack, webhook or SNS endpoint therefore never
/// holds a reconcile. The queues are bounded ([`QUEUE_CAPACITY`] in all): when full, a notification is dropped,
/// logged and counted (`notifications_total{channel="queue",result="queue_full"}`). Queued notifications live in
/// memory: a process that is killed loses them; a clean shutdown drains them ([`NotificationQueue::drain`]).
#[derive(Clone, Debug)]
pub struct NotificationQueue {
    workers: Vec<tokio::sync::mpsc::Sender<Delivery>>,
    metrics: Arc<Metrics>,
    idle: Arc<tokio::sync::Notify>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl NotificationQueue {
    /// Starts the workers (needs a Tokio runtime).
    pub fn start(notifier: ChannelNotifier) -> Self {
        Self::with_capacity(notifier, QUEUE_CAPACITY)
    }

    /// [`NotificationQueue::start`] with another bound for all queues together.
    pub fn with_capacity(notifier: ChannelNotifier, capacity: usize) -> Self {
        let metrics = notifier.metrics.clone();
        let idle = Arc::new(tokio::sync::Notify::new());
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let notifier = Arc::new(notifier);
        let per_worker = (capacity / DELIVERY_CONCURRENCY).max(1);
        let workers = (0..DELIVERY_CONCURRENCY)
            .map(|_| {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<Delivery>(per_worker);
                let (notifier, idle, pending) = (notifier.clone(), idle.clone(), pending.clone());
                tokio::spawn(async move {
                    while let Some(d) = rx.recv().await {
                        let target = Target {
                            object: &d.object,
                            namespace: &d.namespace,
                            region: &d.region,
                            spec: d.spec.as_ref(),
                        };
                        notifier.send(target, &d.notification).await;
                        if pending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
                            idle.notify_waiters();
                        }
                    }
                });
                tx
            })
            .collect();
        Self {
            workers,
            metrics,
            idle,
            pending,
        }
    }

    /// Logs the notification (target `notification`) and queues its delivery to the channels of `target`;
    /// returns at once.
    pub fn deliver(&self, target: Target<'_>, n: &Notification) {
        log_notification(n);
        if target.spec.is_none() {
            return;
        }
        let delivery = Delivery {
            object: target.object.clone(),
            namespace: target.namespace.to_owned(),
            region: target.region.to_owned(),
            spec: target.spec.cloned(),
            notification: n.clone(),
        };
        // The same object always lands on the same worker: its notifications arrive in order.
        let shard = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (&delivery.object.namespace, &delivery.object.name, &delivery.object.kind).hash(&mut hasher);
            usize::try_from(hasher.finish() % self.workers.len() as u64).unwrap_or(0)
        };
        self.pending.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Err(error) = self.workers[shard].try_send(delivery) {
            self.pending.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            let reason = match error {
                tokio::sync::mpsc::error::TrySendError::Full(_) => "queue_full",
                tokio::sync::mpsc::error::TrySendError::Closed(_) => "queue_closed",
            };
            tracing::warn!(target: "notification", reason, name = %n.name, "notification dropped, not delivered");
            self.metrics.notification("queue", reason);
        }
    }

    /// Deliveries queued or running.
    pub fn pending(&self) -> usize {
        self.pending.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until every queued delivery finished, or `timeout` passed; returns whether the queue is empty.
    pub async fn drain(&self, timeout: std::time::Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.pending() == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

fn log_notification(n: &Notification) {
    tracing::info!(
        target: "notification",
        kind = %n.kind,
        namespace = %n.namespace,
        name = %n.name,
        from = ?n.from,
        to = %n.to,
        reason = %n.reason,
        base_ami = ?n.base_ami,
        ami = ?n.ami,
        node_group = ?n.node_group,
        "{}",
        n.message
    );
}
