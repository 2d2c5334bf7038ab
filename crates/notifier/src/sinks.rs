//! Delivery to Slack, Discord and generic webhooks.
//!
//! Secrets (bot token, webhook URLs, signing key) stay inside the sink: `Debug` redacts them and errors never
//! include a URL or a response body.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use serde_json::Value;

use crate::{DeliveryError, Notification, render};

/// Header carrying the HMAC-SHA256 of a webhook body: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Opsy-Signature-256";

/// Retry policy of one delivery.
#[derive(Clone, Copy, Debug)]
pub struct DeliveryPolicy {
    /// Attempts per message (first try included).
    pub attempts: u32,
    /// Delay before the second attempt; doubles after.
    pub backoff: Duration,
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Longest `Retry-After` honoured.
    pub max_retry_after: Duration,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

/// Slack Web API `chat.postMessage`, one call per channel.
#[derive(Clone)]
pub struct SlackSink {
    /// API base, `https://slack.com/api` in production.
    pub api_base: String,
    token: String,
    /// Channel IDs.
    pub channels: Vec<String>,
}

impl SlackSink {
    /// A sink posting with a bot token.
    pub fn new(api_base: impl Into<String>, token: impl Into<String>, channels: Vec<String>) -> Self {
        Self {
            api_base: api_base.into(),
            token: token.into(),
            channels,
        }
    }
}

impl std::fmt::Debug for SlackSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackSink")
            .field("channels", &self.channels)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A Discord webhook.
#[derive(Clone)]
pub struct DiscordSink {
    url: String,
}

impl DiscordSink {
    /// A sink posting to a webhook URL (a secret).
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into() }
    }
}

impl std::fmt::Debug for DiscordSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DiscordSink { url: <redacted> }")
    }
}

/// A generic JSON webhook, optionally signed.
#[derive(Clone)]
pub struct WebhookSink {
    url: String,
    signing_key: Option<Vec<u8>>,
}

impl WebhookSink {
    /// A sink posting the JSON model to `url`, signed with `signing_key` when given.
    pub fn new(url: impl Into<String>, signing_key: Option<Vec<u8>>) -> Self {
        Self {
            url: url.into(),
            signing_key,
        }
    }
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("signed", &self.signing_key.is_some())
            .finish_non_exhaustive()
    }
}

/// Amazon SNS `Publish` to a topic (credentials from the controller's own AWS identity).
#[derive(Clone, Debug)]
pub struct SnsSink {
    /// SNS client for the topic's region.
    pub client: aws_sdk_sns::Client,
    /// Topic ARN.
    pub topic_arn: String,
}

/// Amazon SES v2 `SendEmail` (credentials from the controller's own AWS identity).
#[derive(Clone, Debug)]
pub struct SesSink {
    /// SES v2 client.
    pub client: aws_sdk_sesv2::Client,
    /// Verified sender.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
}

/// Any sink.
#[derive(Clone, Debug)]
pub enum Sink {
    /// Slack.
    Slack(SlackSink),
    /// Discord.
    Discord(DiscordSink),
    /// Generic webhook.
    Webhook(WebhookSink),
    /// Amazon SNS.
    Sns(SnsSink),
    /// Amazon SES.
    Ses(SesSink),
}

impl Sink {
    /// The channel kind, for metrics and Events.
    pub fn channel(&self) -> &'static str {
        match self {
            Self::Slack(_) => "slack",
            Self::Discord(_) => "discord",
            Self::Webhook(_) => "webhook",
            Self::Sns(_) => "sns",
            Self::Ses(_) => "ses",
        }
    }
}

/// `sha256=<hex>` of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delivers one notification to one sink (every Slack channel), with retries. Returns the first failure.
pub async fn deliver(
    http: &reqwest::Client,
    sink: &Sink,
    n: &Notification,
    policy: DeliveryPolicy,
) -> Result<(), DeliveryError> {
    match sink {
        Sink::Slack(slack) => {
            let mut first_error = None;
            let url = format!("{}/chat.postMessage", slack.api_base.trim_end_matches('/'));
            for channel in &slack.channels {
                let body = serde_json::to_vec(&render::slack(n, channel)).unwrap_or_default();
                let auth = format!("Bearer {}", slack.token);
                let result = post(http, &url, &body, &[("authorization", auth.as_str())], policy, "slack")
                    .await
                    .and_then(|reply| {
                        let parsed: Value = serde_json::from_slice(&reply).unwrap_or(Value::Null);
                        if parsed["ok"] == Value::Bool(true) {
                            Ok(())
                        } else {
                            let reason = parsed["error"].as_str().unwrap_or("unknown_error").to_owned();
                            Err(DeliveryError::Refused {
                                channel: "slack",
                                reason,
                            })
                        }
                    });
                if let Err(e) = result
                    && first_error.is_none()
                {
                    first_error = Some(e);
                }
            }
            first_error.map_or(Ok(()), Err)
        }
        Sink::Discord(discord) => {
            let body = serde_json::to_vec(&render::discord(n)).unwrap_or_default();
            post(http, &discord.url, &body, &[], policy, "discord")
                .await
                .map(|_| ())
        }
        Sink::Sns(sns) => {
            // SNS subjects are at most 100 characters; the title is cut on a character boundary.
            let subject: String = render::title(n).chars().take(100).collect();
            sns.client
                .publish()
                .topic_arn(&sns.topic_arn)
                .subject(subject)
                .message(render::text(n))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_refusal("sns", &e))
        }
        Sink::Ses(ses) => {
            use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
            let content = |text: String| Content::builder().data(text).charset("UTF-8").build();
            let (Ok(subject), Ok(text), Ok(html)) = (
                content(render::title(n)),
                content(render::text(n)),
                content(render::html(n)),
            ) else {
                return Err(DeliveryError::Refused {
                    channel: "ses",
                    reason: "invalid_content".into(),
                });
            };
            let message = Message::builder()
                .subject(subject)
                .body(Body::builder().text(text).html(html).build())
                .build();
            ses.client
                .send_email()
                .from_email_address(&ses.from)
                .destination(Destination::builder().set_to_addresses(Some(ses.to.clone())).build())
                .content(EmailContent::builder().simple(message).build())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_refusal("ses", &e))
        }
        Sink::Webhook(webhook) => {
            let body = serde_json::to_vec(&render::webhook(n)).unwrap_or_default();
            let signed = webhook.signing_key.as_ref().map(|k| signature(k, &body));
            let headers: Vec<(&str, &str)> = signed.iter().map(|s| (SIGNATURE_HEADER, s.as_str())).collect();
            post(http, &webhook.url, &body, &headers, policy, "webhook")
                .await
                .map(|_| ())
        }
    }
}

/// An AWS SDK error as a refusal named by its error code (the SDK already retried what is retryable).
fn aws_refusal<E: aws_sdk_sns::error::ProvideErrorMetadata>(channel: &'static str, e: &E) -> DeliveryError {
    DeliveryError::Refused {
        channel,
        reason: e.code().unwrap_or("aws_error").to_owned(),
    }
}

/// POSTs JSON with retries on transport errors, 5xx and 429 (honouring `Retry-After`). Returns the body of a 2xx.
async fn post(
    http: &reqwest::Client,
    url: &str,
    body: &[u8],
    headers: &[(&str, &str)],
    policy: DeliveryPolicy,
    channel: &'static str,
) -> Result<Vec<u8>, DeliveryError> {
    let mut delay = policy.backoff;
    let mut last = DeliveryError::Transport {
        channel,
        kind: "not attempted".into(),
    };
    for attempt in 1..=policy.attempts.max(1) {
        let mut request = http
            .post(url)
            .timeout(policy.timeout)
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut wait = delay;
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return Ok(response.bytes().await.map(|b| b.to_vec()).unwrap_or_default());
                }
                last = DeliveryError::Status {
                    channel,
                    status: status.as_u16(),
                };
                if status.as_u16() == 429 {
                    if let Some(after) = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                    {
                        wait = Duration::from_secs(after).min(policy.max_retry_after);
                    }
                } else if !status.is_server_error() {
                    return Err(last);
                }
            }
            Err(error) => {
                // Never the error's Display: it contains the URL, which can be a secret.
                let kind = if error.is_timeout() {
                    "timeout"
                } else if error.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                last = DeliveryError::Transport {
                    channel,
                    kind: kind.into(),
                };
            }
        }
        if attempt < policy.attempts {
            tokio::time::sleep(wait).await;
            delay = delay.saturating_mul(2);
        }
    }
    Err(last)
}
