//! Notifications of state transitions.
//!
//! - [`Notification`]: the message model (object, from -> to, AMIs, a short message, a severity). It carries no
//!   links and no secrets; rendering per channel ([`render`]) is pure.
//! - [`Sink`]s: Slack (`chat.postMessage`, once per channel, Block Kit with a severity colour), Discord (webhook
//!   embed) and a generic JSON webhook (optionally HMAC-SHA256 signed). Secret values (tokens, URLs, keys) live only
//!   inside the sink and are never logged or put into errors.
//! - [`check_url`]: which webhook URLs (from users' Secrets) the controller may call: https to public hosts unless
//!   widened by controller flags.
//! - [`deliver`]: bounded retries with back-off and a per-attempt timeout; honours HTTP 429 `Retry-After`.

pub mod render;
pub mod sinks;
pub mod url_policy;

use serde::Serialize;

pub use sinks::{
    DeliveryPolicy, DiscordSink, SIGNATURE_HEADER, SesSink, Sink, SlackSink, SnsSink, WebhookSink, deliver, signature,
};
pub use url_policy::{AwsAllowlist, UrlPolicy, check_url};

/// How a transition should look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something started.
    Info,
    /// Something finished well.
    Success,
    /// Something needs attention.
    Warning,
    /// Something failed.
    Failure,
}

impl Severity {
    /// Colour as `#rrggbb`.
    pub fn hex_colour(self) -> &'static str {
        match self {
            Self::Info => "#439FE0",
            Self::Success => "#2EB67D",
            Self::Warning => "#ECB22E",
            Self::Failure => "#E01E5A",
        }
    }

    /// Colour as the integer Discord wants.
    pub fn int_colour(self) -> u32 {
        u32::from_str_radix(self.hex_colour().trim_start_matches('#'), 16).unwrap_or(0)
    }
}

/// One state transition of a custom resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// `PackerBuilder` or `AMIRefresher`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Phase before.
    pub from: Option<String>,
    /// Phase after.
    pub to: String,
    /// Reason (the Event reason).
    pub reason: String,
    /// Short human message.
    pub message: String,
    /// Severity.
    pub severity: Severity,
    /// Base AMI (PackerBuilder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_ami: Option<String>,
    /// Built AMI (PackerBuilder) or target AMI (AMIRefresher).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ami: Option<String>,
    /// Node group (AMIRefresher).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_group: Option<String>,
}

/// Why a delivery failed. Never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The service answered with an error it names (e.g. Slack's `invalid_auth`).
    #[error("{channel} refused the message: {reason}")]
    Refused {
        /// Channel kind.
        channel: &'static str,
        /// The service's error name.
        reason: String,
    },
    /// HTTP status not in 2xx after the retries.
    #[error("{channel} answered HTTP {status}")]
    Status {
        /// Channel kind.
        channel: &'static str,
        /// HTTP status.
        status: u16,
    },
    /// The request did not complete (connection, timeout).
    #[error("{channel} could not be reached: {kind}")]
    Transport {
        /// Channel kind.
        channel: &'static str,
        /// What kind of failure (no URL, which may hold a secret).
        kind: String,
    },
}

impl DeliveryError {
    /// Short category: the Event reason suffix and the metric label.
    pub fn reason(&self) -> String {
        match self {
            Self::Refused { reason, .. } => reason.clone(),
            Self::Status { status, .. } => format!("http_{status}"),
            Self::Transport { .. } => "unreachable".to_owned(),
        }
    }
}
