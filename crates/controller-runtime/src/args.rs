//! The command-line flags both controller binaries share (each also an environment variable). A binary adds its
//! own flags and embeds these with `#[command(flatten)]`.

/// Log output format, as a flag value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    /// Human-readable text; colours only on a terminal.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of the shared runtime: scope, logging, health/metrics, leader election, concurrency, Slack base URL.
#[derive(clap::Args, Clone, Debug)]
pub struct RuntimeArgs {
    /// Watch only these namespaces (comma-separated; all namespaces when unset). With a list, the controller
    /// needs RBAC in those namespaces only.
    #[arg(long = "namespace", env = "WATCH_NAMESPACE", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Reconcile only objects matching this label selector (sharding).
    #[arg(long, env = "LABEL_SELECTOR")]
    pub label_selector: Option<String>,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormatArg,
    /// Slack Web API base URL (for a proxy or a test double).
    #[arg(long, env = "SLACK_API_URL", default_value = "https://slack.com/api")]
    pub slack_api_url: String,
    /// Pod name: reported on Events and the leader-election identity.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Objects reconciled at the same time (bounds parallel AWS and API calls; 0 = unbounded).
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
    /// Only the holder of the Lease reconciles (on by default; turn off only for a single replica).
    #[arg(long, env = "LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the Lease (the controller's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// How long a standby waits, from the moment it saw the Lease last change, before it takes over.
    #[arg(long, env = "LEADER_ELECT_LEASE_DURATION", default_value = "15s", value_parser = api_types::parse_duration)]
    pub leader_elect_lease_duration: std::time::Duration,
    /// The leader stops reconciling when it could not renew the Lease for this long (shorter than the lease
    /// duration).
    #[arg(long, env = "LEADER_ELECT_RENEW_DEADLINE", default_value = "10s", value_parser = api_types::parse_duration)]
    pub leader_elect_renew_deadline: std::time::Duration,
    /// How often the leader renews and standbys retry (shorter than the renew deadline).
    #[arg(long, env = "LEADER_ELECT_RETRY_PERIOD", default_value = "2s", value_parser = api_types::parse_duration)]
    pub leader_elect_retry_period: std::time::Duration,
    /// `/healthz` fails when a reconcile has run, or the watch has kept failing, for this long.
    #[arg(long, env = "LIVENESS_STALL_AFTER", default_value = "10m", value_parser = api_types::parse_duration)]
    pub liveness_stall_after: std::time::Duration,
    /// Allow `http://` Discord and webhook URLs (default: https only).
    #[arg(long, env = "WEBHOOK_ALLOW_HTTP", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_http: bool,
    /// Allow Discord and webhook URLs on loopback, link-local (instance metadata), private or cluster-internal
    /// hosts (default: refused, since the URLs come from users' Secrets and the request leaves from this pod).
    #[arg(long, env = "WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,
    /// SNS topic ARNs (comma-separated, `*` wildcards) that `spec.notifier.sns` may name; empty: what the
    /// controller's IAM role allows.
    #[arg(long, env = "SNS_TOPIC_ALLOWLIST", value_delimiter = ',')]
    pub sns_topic_allowlist: Vec<String>,
    /// SES sender addresses (comma-separated, `*` wildcards) that `spec.notifier.ses.from` may name; empty: what
    /// the controller's IAM role allows.
    #[arg(long, env = "SES_SENDER_ALLOWLIST", value_delimiter = ',')]
    pub ses_sender_allowlist: Vec<String>,
}

impl RuntimeArgs {
    /// Which webhook URLs the notifier may call.
    pub fn url_policy(&self) -> notifier::UrlPolicy {
        notifier::UrlPolicy {
            allow_http: self.webhook_allow_http,
            allow_private: self.webhook_allow_private,
        }
    }

    /// Which SNS topics and SES senders notifications may use.
    pub fn aws_allowlist(&self) -> notifier::AwsAllowlist {
        notifier::AwsAllowlist {
            sns_topics: self.sns_topic_allowlist.clone(),
            ses_senders: self.ses_sender_allowlist.clone(),
        }
    }

    /// Installs logging in the chosen format.
    pub fn init_logging(&self) {
        crate::init_logging(match self.log_format {
            LogFormatArg::Json => crate::LogFormat::Json,
            LogFormatArg::Text => crate::LogFormat::Text,
        });
    }

    /// The leader-election settings (`None` when turned off); the identity is the pod name, else
    /// `<binary>-<uuid>`. Durations that would let a deposed leader act next to a new one are refused.
    pub fn election(
        &self,
        lease_name: &str,
        binary: &str,
    ) -> Result<Option<crate::leader::LeaderConfig>, crate::leader::ConfigError> {
        if !self.leader_elect {
            return Ok(None);
        }
        let identity = self
            .pod_name
            .clone()
            .unwrap_or_else(|| format!("{binary}-{}", uuid::Uuid::new_v4()));
        let mut config = crate::leader::LeaderConfig::new(&self.lease_namespace, lease_name, identity);
        config.lease_duration = self.leader_elect_lease_duration;
        config.renew_deadline = self.leader_elect_renew_deadline;
        config.retry_period = self.leader_elect_retry_period;
        config.validate()?;
        Ok(Some(config))
    }

    /// The liveness record `/healthz` reports.
    pub fn liveness(&self) -> crate::Liveness {
        crate::Liveness::new(self.liveness_stall_after)
    }

    /// One pair of APIs per watched namespace (each controller then has its own cache), or one pair for the whole
    /// cluster when no namespace is named: the watched kind and the second kind the controller watches with it.
    pub fn scopes<A, B>(&self, client: &kube::Client) -> Vec<(kube::Api<A>, kube::Api<B>)>
    where
        A: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
        B: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
    {
        if self.namespaces.is_empty() {
            return vec![(kube::Api::all(client.clone()), kube::Api::all(client.clone()))];
        }
        self.namespaces
            .iter()
            .map(|ns| {
                (
                    kube::Api::namespaced(client.clone(), ns),
                    kube::Api::namespaced(client.clone(), ns),
                )
            })
            .collect()
    }

    /// The watch of the controller's own kind: every object, or those matching `--label-selector`.
    pub fn watch_config(&self) -> kube::runtime::watcher::Config {
        let config = kube::runtime::watcher::Config::default();
        match &self.label_selector {
            Some(selector) => config.labels(selector),
            None => config,
        }
    }

    /// The Event recorder, reporting as `controller` from this pod.
    pub fn recorder(&self, client: &kube::Client, controller: &str) -> kube::runtime::events::Recorder {
        kube::runtime::events::Recorder::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: controller.to_owned(),
                instance: self.pod_name.clone(),
            },
        )
    }
}
