//! packer-build-controller: watches PackerBuilders and the Jobs they own, and keeps one fresh, verified,
//! tagged AMI per PackerBuilder. See `reconcile` for the steps.

mod aws;
#[cfg(test)]
mod build_tests;
mod capabilities;
mod decide;
mod distribute;
mod error;
#[cfg(test)]
mod fake;
mod lifecycle;
mod notify;
mod reconcile;

use std::{sync::Arc, time::Duration};

use api_types::PackerBuilder;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Client,
    runtime::{Controller, controller::Action, watcher},
};

use crate::{error::Error, reconcile::Context};

#[derive(Parser, Debug)]
#[command(about = "Builds and maintains AMIs for PackerBuilder objects")]
struct Args {
    #[command(flatten)]
    runtime: controller_runtime::RuntimeArgs,
    /// git-sync image for specs that set none.
    #[arg(long, env = "GIT_SYNC_IMAGE", default_value = packer_job::job::DEFAULT_GIT_SYNC_IMAGE)]
    git_sync_image: String,
    /// Name reported on Events (the Deployment's name).
    #[arg(long, env = "CONTROLLER_NAME", default_value = "packer-build-controller")]
    controller_name: String,
    /// How long one base-AMI DescribeImages answer is shared between PackerBuilders (humantime, e.g. `60s`).
    #[arg(long, env = "BASE_AMI_CACHE_TTL", default_value = "60s", value_parser = api_types::parse_duration)]
    base_ami_cache_ttl: Duration,
    /// First retry delay after a failed reconcile (AWS or API errors); doubles per consecutive failure up to
    /// 5 minutes.
    #[arg(long, env = "RETRY_BASE_DELAY", default_value = "5s", value_parser = api_types::parse_duration)]
    retry_base_delay: Duration,
    /// Build pods' `terminationGracePeriodSeconds`: how long Packer has after SIGTERM (deadline, deletion, node
    /// drain) to delete the instance, security group and key pair it created.
    #[arg(long, env = "BUILD_GRACE_PERIOD", default_value = "5m", value_parser = api_types::parse_duration)]
    build_grace_period: Duration,
    /// How long one lookup of a cluster's managed AMIs is shared by its PackerBuilders; this controller's own tag
    /// writes invalidate it at once, so only changes made by others wait for it.
    #[arg(long, env = "MANAGED_AMI_CACHE_TTL", default_value = "60s", value_parser = api_types::parse_duration)]
    managed_ami_cache_ttl: Duration,
    /// First retry delay after a failed build; doubles per further failure up to 10 minutes.
    #[arg(long, env = "BUILD_RETRY_BASE_DELAY", default_value = "30s", value_parser = api_types::parse_duration)]
    build_retry_base_delay: Duration,
    /// Re-check every PackerBuilder at least this often, even when its `timeOuts.controllerTimer` is longer
    /// (unset: the timer alone decides). For clusters that want a global upper bound on staleness.
    #[arg(long, env = "RESYNC_INTERVAL", value_parser = api_types::parse_duration)]
    resync_interval: Option<Duration>,
    /// Defaults of every build Pod, as JSON in the shape of `spec.builder.pod` (resources, nodeSelector,
    /// tolerations, serviceAccountName, annotations, automountServiceAccountToken); a PackerBuilder's own
    /// `builder.pod` fields replace them (annotations are merged).
    #[arg(long, env = "BUILD_POD_DEFAULTS", default_value = "{}", value_parser = parse_pod_defaults)]
    build_pod_defaults: api_types::packer_builder::BuildPodSpec,
    /// Name of the leader-election Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "packer-build-controller")]
    lease_name: String,
}

fn parse_pod_defaults(text: &str) -> Result<api_types::packer_builder::BuildPodSpec, String> {
    serde_json::from_str(text).map_err(|e| format!("BUILD_POD_DEFAULTS is not a builder.pod object: {e}"))
}

// Each binary keeps its own one-line error_policy: controller_runtime::backoff::requeue_object typed by its Error.
fn error_policy(pb: Arc<PackerBuilder>, error: &Error, ctx: Arc<Context>) -> Action {
    controller_runtime::backoff::requeue_object(&ctx.errors, &*pb, error.category(), error)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.runtime.init_logging();
    let client = Client::try_default().await?;
    let sdk = controller_runtime::aws::sdk_config(None).await;
    let recorder = args.runtime.recorder(&client, &args.controller_name);
    let mut context = Context::new(
        client.clone(),
        aws::Aws::new(sdk, args.base_ami_cache_ttl).with_managed_ttl(args.managed_ami_cache_ttl),
        recorder,
        args.runtime.slack_api_url.clone(),
        (args.runtime.url_policy(), args.runtime.aws_allowlist()),
    );
    context.git_sync_image = args.git_sync_image.clone();
    context.retry_base = args.build_retry_base_delay;
    context.resync = args.resync_interval;
    context.build_pod_defaults = args.build_pod_defaults.clone();
    context.liveness = args.runtime.liveness();
    context.errors = controller_runtime::backoff::ErrorBackoff::new(args.retry_base_delay, Duration::from_secs(300));
    context.build_grace_period = args.build_grace_period;
    context.namespaces = args.runtime.namespaces.clone();
    let election = args.runtime.election(&args.lease_name, "packer-build-controller")?;
    // One Controller per watched namespace (each with its own cache), or one for the whole cluster.
    let scopes = args.runtime.scopes::<PackerBuilder, Job>(&client);
    let builder_watch = args.runtime.watch_config();
    let job_watch =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={}", packer_job::job::MANAGED_BY));
    let readiness = controller_runtime::Readiness::default();
    let bound = controller_runtime::serve(
        args.runtime.metrics_addr,
        readiness.clone(),
        context.liveness.clone(),
        context.metrics.clone(),
    )
    .await?;
    tracing::info!(namespaces = ?args.runtime.namespaces, health = %bound, "packer-build-controller starting");
    // Standbys are ready too: they are healthy replicas waiting for the Lease.
    readiness.set(true);
    let context = Arc::new(context);
    let controllers = scopes.into_iter().map(|(builders, jobs)| {
        Controller::new(builders, builder_watch.clone())
            .with_config(kube::runtime::controller::Config::default().concurrency(args.runtime.concurrency))
            .owns(jobs, job_watch.clone())
            .shutdown_on_signal()
            .run(reconcile::reconcile, error_policy, context.clone())
            .for_each(context.liveness.observer())
    });
    let controller = async move {
        futures::future::join_all(controllers).await;
    };
    controller_runtime::run_as_leader(client, election, controller).await;
    // Queued notifications are delivered before the process exits (the Pod's grace period bounds this).
    if !context.notifier.drain(Duration::from_secs(10)).await {
        tracing::warn!("notifications still queued at shutdown were not delivered");
    }
    tracing::info!("packer-build-controller stopped");
    Ok(())
}
