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
            reason: "NotificationFailed".into(),
            note: Some(format!("{channel}: {why}")),
            action: "Notify".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, object).await {
            tracing::warn!(%error, "could not publish an Event");
        }
    }

    /// Logs the notification (target `notification`) and delivers it to every configured channel.
    pub async fn deliver(&self, target: Target<'_>, n: &Notification) {
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
