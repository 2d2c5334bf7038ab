//! packer-build-controller: watches PackerBuilders and the Jobs they own, and keeps one fresh, verified,
//! tagged AMI per PackerBuilder. See `reconcile` for the steps.

mod aws;
mod decide;
mod error;
mod notify;
mod reconcile;

use std::{sync::Arc, time::Duration};

use api_types::PackerBuilder;
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, Client,
    runtime::{Controller, controller::Action, events::Reporter, watcher},
};

use crate::{error::Error, reconcile::Context};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Parser, Debug)]
#[command(about = "Builds and maintains AMIs for PackerBuilder objects")]
struct Args {
    /// Watch only these namespaces (comma-separated; all namespaces when unset). With a list, the controller
    /// needs RBAC in those namespaces only.
    #[arg(long = "namespace", env = "WATCH_NAMESPACE", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Reconcile only PackerBuilders matching this label selector (sharding).
    #[arg(long, env = "LABEL_SELECTOR")]
    label_selector: Option<String>,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
    /// git-sync image for specs that set none.
    #[arg(long, env = "GIT_SYNC_IMAGE", default_value = packer_job::job::DEFAULT_GIT_SYNC_IMAGE)]
    git_sync_image: String,
    /// Name reported on Events (the Deployment's name).
    #[arg(long, env = "CONTROLLER_NAME", default_value = "packer-build-controller")]
    controller_name: String,
    /// How long one base-AMI DescribeImages answer is shared between PackerBuilders (humantime, e.g. `60s`).
    #[arg(long, env = "BASE_AMI_CACHE_TTL", default_value = "60s", value_parser = api_types::parse_duration)]
    base_ami_cache_ttl: Duration,
    /// First retry delay after a failed build; doubles per further failure up to 10 minutes.
    #[arg(long, env = "BUILD_RETRY_BASE_DELAY", default_value = "30s", value_parser = api_types::parse_duration)]
    build_retry_base_delay: Duration,
    /// Slack Web API base URL (for a proxy or a test double).
    #[arg(long, env = "SLACK_API_URL", default_value = "https://slack.com/api")]
    slack_api_url: String,
    /// Pod name: reported on Events and the leader-election identity.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// PackerBuilders reconciled at the same time (bounds parallel AWS and API calls; 0 = unbounded).
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// Only the holder of the Lease reconciles (on by default; turn off only for a single replica).
    #[arg(long, env = "LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "packer-build-controller")]
    lease_name: String,
    /// Namespace of the Lease (the controller's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
}

fn error_policy(_pb: Arc<PackerBuilder>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(category = error.category(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    controller_runtime::init_logging(match args.log_format {
        LogFormat::Json => controller_runtime::LogFormat::Json,
        LogFormat::Text => controller_runtime::LogFormat::Text,
    });
    let client = Client::try_default().await?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        Reporter {
            controller: args.controller_name.clone(),
            instance: args.pod_name.clone(),
        },
    );
    let mut context = Context::new(
        client.clone(),
        aws::Aws::new(sdk, args.base_ami_cache_ttl),
        recorder,
        args.slack_api_url.clone(),
    );
    context.git_sync_image = args.git_sync_image.clone();
    context.retry_base = args.build_retry_base_delay;
    // One Controller per watched namespace (each with its own cache), or one for the whole cluster.
    let scopes: Vec<(Api<PackerBuilder>, Api<Job>)> = if args.namespaces.is_empty() {
        vec![(Api::all(client.clone()), Api::all(client.clone()))]
    } else {
        args.namespaces
            .iter()
            .map(|ns| (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)))
            .collect()
    };
    let mut builder_watch = watcher::Config::default();
    if let Some(selector) = &args.label_selector {
        builder_watch = builder_watch.labels(selector);
    }
    let job_watch =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={}", packer_job::job::MANAGED_BY));
    let readiness = controller_runtime::Readiness::default();
    let bound = controller_runtime::serve(args.metrics_addr, readiness.clone(), context.metrics.clone()).await?;
    tracing::info!(namespaces = ?args.namespaces, health = %bound, "packer-build-controller starting");
    // Standbys are ready too: they are healthy replicas waiting for the Lease.
    readiness.set(true);
    let context = Arc::new(context);
    let controllers = scopes.into_iter().map(|(builders, jobs)| {
        Controller::new(builders, builder_watch.clone())
            .with_config(kube::runtime::controller::Config::default().concurrency(args.concurrency))
            .owns(jobs, job_watch.clone())
            .shutdown_on_signal()
            .run(reconcile::reconcile, error_policy, context.clone())
            .for_each(|result| async move {
                if let Err(error) = result {
                    tracing::debug!(%error, "reconcile error");
                }
            })
    });
    let controller = async move {
        futures::future::join_all(controllers).await;
    };
    let election = args.leader_elect.then(|| {
        let identity = args
            .pod_name
            .clone()
            .unwrap_or_else(|| format!("packer-build-controller-{}", uuid::Uuid::new_v4()));
        controller_runtime::leader::LeaderConfig::new(&args.lease_namespace, &args.lease_name, identity)
    });
    controller_runtime::run_as_leader(client, election, controller).await;
    tracing::info!("packer-build-controller stopped");
    Ok(())
}
