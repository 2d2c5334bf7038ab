//! ami-refresh-controller: watches AMIRefreshers (and the PackerBuilders they reference) and rolls EKS node
//! groups onto the chosen AMI, tracked, resumable and one node group at a time. See `reconcile` for the steps.

mod aws;
mod capabilities;
mod error;
#[cfg(test)]
mod fake;
mod reconcile;
#[cfg(test)]
mod rollout_tests;

use std::{sync::Arc, time::Duration};

use api_types::{AMIRefresher, PackerBuilder};
use clap::Parser;
use futures::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};

use crate::{error::Error, reconcile::Context};

#[derive(Parser, Debug)]
#[command(about = "Rolls EKS node groups onto the AMI chosen by AMIRefresher objects")]
struct Args {
    #[command(flatten)]
    runtime: controller_runtime::RuntimeArgs,
    /// Name reported on Events (the Deployment's name).
    #[arg(long, env = "CONTROLLER_NAME", default_value = "ami-refresh-controller")]
    controller_name: String,
    /// First poll delay of a node-group update in flight; grows with the update's age up to 8x.
    #[arg(long, env = "POLL_INTERVAL", default_value = "30s", value_parser = api_types::parse_duration)]
    poll_interval: Duration,
    /// How often a settled AMIRefresher is checked again (new AMIs, drift, windows).
    #[arg(long, env = "RESYNC_INTERVAL", default_value = "5m", value_parser = api_types::parse_duration)]
    resync_interval: Duration,
    /// First retry delay after a failed reconcile; doubles per consecutive failure up to 5 minutes.
    #[arg(long, env = "RETRY_BASE_DELAY", default_value = "5s", value_parser = api_types::parse_duration)]
    retry_base_delay: Duration,
    /// Attempts per AWS call (the SDK's standard retry mode with exponential back-off, throttling included).
    #[arg(long, env = "AWS_MAX_ATTEMPTS", default_value_t = 5)]
    aws_max_attempts: u32,
    /// Watch PackerBuilders so a new AMI of a referenced builder is rolled at once (needs list/watch on them).
    #[arg(long, env = "WATCH_PACKER_BUILDERS", default_value_t = true, action = clap::ArgAction::Set)]
    watch_packer_builders: bool,
    /// Launch template versions made by this controller kept per template: after a successful update, older ones
    /// that no node group or Auto Scaling group uses are deleted. 0 keeps them all.
    #[arg(long, env = "LAUNCH_TEMPLATE_VERSIONS_KEPT", default_value_t = 10)]
    launch_template_versions_kept: usize,
    /// Name of the leader-election Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "ami-refresh-controller")]
    lease_name: String,
}

// Each binary keeps its own one-line error_policy: controller_runtime::backoff::requeue_object typed by its Error.
fn error_policy(amr: Arc<AMIRefresher>, error: &Error, ctx: Arc<Context>) -> Action {
    controller_runtime::backoff::requeue_object(&ctx.errors, &*amr, error.category(), error)
}

/// Whether the PackerBuilder kind is served: installed alone (without its CRD), a PackerBuilder watch would only
/// fail, so it is skipped and `packerBuilderRef` is resolved at resync only.
async fn packer_builders_served(client: &Client, namespaces: &[String]) -> bool {
    let probe: Api<PackerBuilder> = match namespaces.first() {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match probe.list(&kube::api::ListParams::default().limit(1)).await {
        Err(kube::Error::Api(e)) if e.code == 404 => {
            tracing::warn!("the PackerBuilder CRD is not installed: packerBuilderRef is resolved at resync only");
            false
        }
        _ => true,
    }
}

/// The AMIRefreshers that reference `pb` (same namespace), from the controller's cache: a PackerBuilder that changes
/// (a new AMI) wakes them.
fn referencing(
    store: &kube::runtime::reflector::Store<AMIRefresher>,
    pb: &PackerBuilder,
) -> Vec<ObjectRef<AMIRefresher>> {
    let (ns, name) = (pb.namespace(), pb.name_any());
    store
        .state()
        .into_iter()
        .filter(|amr| amr.namespace() == ns && amr.spec.packer_builder_ref.as_ref().is_some_and(|r| r.name == name))
        .map(|amr| ObjectRef::from_obj(&*amr))
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    args.runtime.init_logging();
    let client = Client::try_default().await?;
    let metrics = Arc::new(controller_runtime::Metrics::new(
        "ami_refresh_controller",
        &[
            (
                "rollouts",
                "Node-group rollouts by result: started, succeeded, failed, cancelled",
            ),
            (
                "config_updates",
                "Node-group update config changes (UpdateNodegroupConfig) by result: started, succeeded, failed, cancelled",
            ),
        ],
    ));
    let sdk = controller_runtime::aws::sdk_config(Some(args.aws_max_attempts)).await;
    let recorder = args.runtime.recorder(&client, &args.controller_name);
    let notifier = controller_runtime::notify::NotificationQueue::start(controller_runtime::notify::ChannelNotifier {
        client: client.clone(),
        http: controller_runtime::notify::http_client(),
        slack_api: args.runtime.slack_api_url.clone(),
        recorder: recorder.clone(),
        metrics: metrics.clone(),
        sdk: sdk.clone(),
        url_policy: args.runtime.url_policy(),
        aws_allowlist: args.runtime.aws_allowlist(),
    });
    let mut context = Context::new(
        client.clone(),
        Arc::new(aws::Aws::new(sdk, metrics.clone())),
        recorder,
        metrics.clone(),
        notifier,
    )
    .with_retry_base(args.retry_base_delay);
    context.liveness = args.runtime.liveness();
    let election = args.runtime.election(&args.lease_name, "ami-refresh-controller")?;
    context.poll = args.poll_interval;
    context.resync = args.resync_interval;
    context.versions_kept = args.launch_template_versions_kept;
    let context = Arc::new(context);

    let readiness = controller_runtime::Readiness::default();
    let bound = controller_runtime::serve(
        args.runtime.metrics_addr,
        readiness.clone(),
        context.liveness.clone(),
        metrics,
    )
    .await?;
    tracing::info!(namespaces = ?args.runtime.namespaces, health = %bound, "ami-refresh-controller starting");
    // Standbys are ready too: they are healthy replicas waiting for the Lease.
    readiness.set(true);

    let scopes = args.runtime.scopes::<AMIRefresher, PackerBuilder>(&client);
    let refresher_watch = args.runtime.watch_config();
    let concurrency = args.runtime.concurrency;
    let watch_builders = args.watch_packer_builders && packer_builders_served(&client, &args.runtime.namespaces).await;
    let controllers = scopes.into_iter().map(|(refreshers, builders)| {
        let mut controller = Controller::new(refreshers, refresher_watch.clone())
            .with_config(kube::runtime::controller::Config::default().concurrency(concurrency));
        if watch_builders {
            let store = controller.store();
            // A PackerBuilder that changes (a new AMI) wakes the AMIRefreshers that reference it.
            controller = controller.watches(builders, watcher::Config::default(), move |pb: PackerBuilder| {
                referencing(&store, &pb)
            });
        }
        controller
            .shutdown_on_signal()
            .run(reconcile::reconcile, error_policy, context.clone())
            .for_each(context.liveness.observer())
    });
    controller_runtime::run_as_leader(client, election, async move {
        futures::future::join_all(controllers).await;
    })
    .await;
    // Queued notifications are delivered before the process exits (the Pod's grace period bounds this).
    if !context.notifier.drain(Duration::from_secs(10)).await {
        tracing::warn!("notifications still queued at shutdown were not delivered");
    }
    tracing::info!("ami-refresh-controller stopped");
    Ok(())
}
