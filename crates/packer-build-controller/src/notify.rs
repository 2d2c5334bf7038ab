//! Notifications of state transitions: one per transition (phase, Ready reason or build changed), never one per
//! reconcile. Every transition is recorded as a structured log line (target `notification`); when the spec names
//! channels, [`SinkNotifier`] delivers to them with the `notifier` crate (Slack, Discord, generic webhook). A
//! failed delivery never fails the reconcile: it becomes a Warning Event. Secret values are read from the
//! Secrets the spec names at delivery time and never logged.

use std::{future::Future, pin::Pin};

use api_types::{PackerBuilder, packer_builder::PackerBuilderPhase};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Client, Resource, ResourceExt,
    runtime::events::{Event, EventType, Recorder},
};
use notifier::{DeliveryPolicy, DiscordSink, Notification, SesSink, Severity, Sink, SlackSink, SnsSink, WebhookSink};

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
pub struct SinkNotifier {
    /// Kubernetes client (reads the Secrets the spec names).
    pub client: Client,
    /// Shared HTTP client.
    pub http: reqwest::Client,
    /// Slack Web API base (`https://slack.com/api`).
    pub slack_api: String,
    /// Event recorder for failed deliveries.
    pub recorder: Recorder,
    /// `notifications_total{channel,result}`.
    pub metrics: std::sync::Arc<controller_runtime::Metrics>,
    /// AWS configuration for SNS and SES (the controller's own identity).
    pub sdk: aws_config::SdkConfig,
}

impl std::fmt::Debug for SinkNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkNotifier")
            .field("slack_api", &self.slack_api)
            .finish_non_exhaustive()
    }
}

async fn secret_value(secrets: &Api<Secret>, name: &str, key: &str) -> Result<String, String> {
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

impl SinkNotifier {
    async fn sinks(&self, pb: &PackerBuilder) -> Vec<Result<Sink, (&'static str, String)>> {
        let Some(spec) = &pb.spec.notifier else {
            return Vec::new();
        };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &pb.namespace().unwrap_or_default());
        let mut sinks = Vec::new();
        if let Some(slack) = &spec.slack {
            sinks.push(
                secret_value(&secrets, &slack.secret, "token")
                    .await
                    .map(|token| Sink::Slack(SlackSink::new(&self.slack_api, token, slack.channel_ids.clone())))
                    .map_err(|e| ("slack", e)),
            );
        }
        let region = aws_config::Region::new(pb.spec.region.clone());
        if let Some(sns) = &spec.sns {
            let conf = aws_sdk_sns::config::Builder::from(&self.sdk)
                .region(region.clone())
                .build();
            sinks.push(Ok(Sink::Sns(SnsSink {
                client: aws_sdk_sns::Client::from_conf(conf),
                topic_arn: sns.topic_arn.clone(),
            })));
        }
        if let Some(ses) = &spec.ses {
            let conf = aws_sdk_sesv2::config::Builder::from(&self.sdk)
                .region(region.clone())
                .build();
            sinks.push(Ok(Sink::Ses(SesSink {
                client: aws_sdk_sesv2::Client::from_conf(conf),
                from: ses.from.clone(),
                to: ses.to.clone(),
            })));
        }
        if let Some(discord) = &spec.discord {
            sinks.push(
                secret_value(&secrets, &discord.secret, "webhookURL")
                    .await
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
                    .map(|url| Sink::Webhook(WebhookSink::new(url, key)))
                    .map_err(|e| ("webhook", e)),
            );
        }
        sinks
    }

    async fn warn(&self, pb: &PackerBuilder, channel: &str, why: String) {
        tracing::warn!(target: "notification", channel, reason = %why, "notification not delivered");
        let event = Event {
            type_: EventType::Warning,
            reason: "NotificationFailed".into(),
            note: Some(format!("{channel}: {why}")),
            action: "Notify".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &pb.object_ref(&())).await {
            tracing::warn!(%error, "could not publish an Event");
        }
    }
}

impl Notifier for SinkNotifier {
    fn notify<'a>(&'a self, pb: &'a PackerBuilder, t: &'a Transition) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let n = model(pb, t);
            tracing::info!(
                target: "notification",
                namespace = %n.namespace,
                name = %n.name,
                from = ?n.from,
                to = %n.to,
                reason = %n.reason,
                base_ami = ?n.base_ami,
                built_ami = ?n.ami,
                "{}",
                n.message
            );
            for sink in self.sinks(pb).await {
                match sink {
                    Ok(sink) => match notifier::deliver(&self.http, &sink, &n, DeliveryPolicy::default()).await {
                        Ok(()) => self.metrics.notification(sink.channel(), "ok"),
                        Err(error) => {
                            self.metrics.notification(sink.channel(), &error.reason());
                            self.warn(pb, sink.channel(), error.reason()).await;
                        }
                    },
                    Err((channel, why)) => {
                        self.metrics.notification(channel, "configuration");
                        self.warn(pb, channel, why).await;
                    }
                }
            }
        })
    }
}
