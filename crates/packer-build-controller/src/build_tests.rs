//! Reconcile-level tests: the controller's real `reconcile` against the in-memory AWS of [`crate::fake`] (calls
//! recorded, faults injected) and kube-sim in process, without its Job executor: a Job stays as the controller made
//! it until the test finishes it (Job condition, and the build Pod's termination message with the artifact, as
//! Packer's wrapper writes it). Each step is one reconcile, in milliseconds; the end-to-end suite
//! (`tests/lifecycle.rs`) proves the same over the SDK, the emulator, real Packer and the binary.

use std::sync::Arc;

use api_types::{PackerBuilder, PackerBuilderStatus, conditions::get_condition, packer_builder::PackerBuilderPhase};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, Client, CustomResourceExt, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::events::{Recorder, Reporter},
};
use serde_json::json;

use crate::{
    fake::{ACCOUNT, FakeAws},
    reconcile::{Context, reconcile},
};

const NS: &str = "default";
const NAME: &str = "packer-builder-local";
const REGION: &str = "us-west-2";
const EKS_OWNER: &str = "602401143452";
/// The AMI the simulated build makes (an ID of EC2's shape: Packer's artifact parser accepts no other).
const BUILT: &str = "ami-0123456789abcdef0";

// One bed per controller on purpose: each wires its own fake and its own Context; only the struct's shape is alike.
struct Bed {
    _server: kube_sim::ApiServer,
    client: Client,
    aws: Arc<FakeAws>,
    ctx: Arc<Context>,
}

fn ago(hours: i64) -> Timestamp {
    controller_runtime::clock::now() - SignedDuration::from_hours(hours)
}

impl Bed {
    async fn start() -> Self {
        // kube-sim without its executor, always (also under OPSY_TEST_CLUSTER=real): no Job controller may run the
        // Jobs; the test ends them.
        let server = kube_sim::ApiServer::start(kube_sim::ServerOptions::default())
            .await
            .expect("api server");
        let client = Client::try_from(kube::Config::new(server.url().parse().expect("url"))).expect("client");
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
            Api::all(client.clone());
        crds.create(&PostParams::default(), &PackerBuilder::crd())
            .await
            .expect("CRD");
        let aws = Arc::new(FakeAws::default());
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "packer-build-controller".into(),
                instance: None,
            },
        );
        let sdk = aws_config::SdkConfig::builder().build();
        let mut ctx = Context::new(
            client.clone(),
            crate::aws::Aws::new(sdk, std::time::Duration::from_secs(60)),
            recorder,
            "http://127.0.0.1:9".into(),
            Default::default(),
        );
        ctx.aws = aws.clone();
        Self {
            _server: server,
            client,
            aws,
            ctx: Arc::new(ctx),
        }
    }

    fn api(&self) -> Api<PackerBuilder> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// A public EKS base AMI matching the seed's filters.
    fn base(&self, version: &str, hours: i64) -> String {
        let id = format!("ami-0000000000000{version:0>4}");
        self.aws.add_image(
            REGION,
            EKS_OWNER,
            ami_tags::Image {
                id: id.clone(),
                name: Some(format!("amazon-eks-node-al2023-x86_64-standard-1.30-v{version}")),
                creation_date: Some(ago(hours)),
                state: Some("available".into()),
                ..ami_tags::Image::default()
            },
        );
        id
    }

    /// The seed PackerBuilder of the original README, without the Secrets it names (none exist here).
    async fn apply(&self) {
        self.apply_with(|_| {}).await;
    }

    /// [`Bed::apply`] with `edit` applied to the spec.
    async fn apply_with(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed/packerbuilder-000.yaml"),
        )
        .expect("seed");
        let mut doc: serde_json::Value = serde_norway::from_str(&text).expect("yaml");
        doc["metadata"]["namespace"] = json!(NS);
        let spec = doc["spec"].as_object_mut().expect("spec");
        spec.remove("notifier");
        spec["gitSync"].as_object_mut().expect("gitSync").remove("secret");
        spec["builder"].as_object_mut().expect("builder").remove("secret");
        edit(&mut doc["spec"]);
        let pb: PackerBuilder = serde_json::from_value(doc).expect("typed");
        self.api().create(&PostParams::default(), &pb).await.expect("create");
    }

    async fn step(&self) -> crate::error::Result<kube::runtime::controller::Action> {
        let pb = self.api().get(NAME).await.expect("get");
        reconcile(Arc::new(pb), self.ctx.clone()).await
    }

    async fn status(&self) -> PackerBuilderStatus {
        self.api().get(NAME).await.expect("get").status.unwrap_or_default()
    }

    /// The reasons of the Events on the PackerBuilder, sorted.
    async fn event_reasons(&self) -> Vec<String> {
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), NS);
        let mut out: Vec<String> = events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        out.sort();
        out
    }

    async fn jobs(&self) -> Vec<Job> {
        Api::<Job>::namespaced(self.client.clone(), NS)
            .list(&ListParams::default())
            .await
            .expect("jobs")
            .items
    }

    /// What Packer leaves when a build succeeds: the AMI in EC2 (this account, made now), the build Pod's
    /// termination message naming it, and the Job `Complete`.
    async fn build_succeeds(&self, ami: &str) {
        let job = self.status().await.job_name.expect("a build Job in status");
        self.aws.add_image(
            REGION,
            ACCOUNT,
            ami_tags::Image {
                id: ami.into(),
                name: Some(format!("opsy-{ami}")),
                creation_date: Some(controller_runtime::clock::now()),
                state: Some("available".into()),
                ..ami_tags::Image::default()
            },
        );
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), NS);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("{job}-pod"), "labels": {"job-name": job}},
            "spec": {"containers": [{"name": "packer-build", "image": "hashicorp/packer"}]},
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &pod).await.expect("pod");
        let terminated = json!({"status": {"phase": "Succeeded", "containerStatuses": [{
            "name": "packer-build", "image": "hashicorp/packer", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "message": format!("{REGION}:{ami}")}}
        }]}});
        pods.patch_status(
            &format!("{job}-pod"),
            &PatchParams::default(),
            &Patch::Merge(terminated),
        )
        .await
        .expect("pod status");
        self.job_ends(&job, "Complete", "").await;
    }

    async fn job_ends(&self, job: &str, condition: &str, message: &str) {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), NS);
        let status = json!({"status": {"conditions": [{"type": condition, "status": "True", "message": message}]}});
        jobs.patch_status(job, &PatchParams::default(), &Patch::Merge(status))
            .await
            .expect("job status");
    }
}

fn ready_reason(status: &PackerBuilderStatus) -> Option<String> {
    get_condition(&status.conditions, "Ready").map(|c| c.reason.clone())
}

#[tokio::test]
async fn a_build_starts_once_and_its_verified_ami_is_tagged_and_kept_without_another_build() {
    let bed = Bed::start().await;
    let base = bed.base("1", 240);
    bed.apply().await;

    bed.step().await.expect("reconcile");
    let status = bed.status().await;
    assert_eq!(status.phase, Some(PackerBuilderPhase::Building), "{status:#?}");
    assert_eq!(status.last_run_base_image_id.as_deref(), Some(base.as_str()));
    bed.step().await.expect("reconcile");
    assert_eq!(
        bed.jobs().await.len(),
        1,
        "a running build is followed, not started again"
    );

    bed.build_succeeds(BUILT).await;
    bed.step().await.expect("reconcile");
    let status = bed.status().await;
    assert_eq!(status.phase, Some(PackerBuilderPhase::Ready), "{status:#?}");
    assert_eq!(ready_reason(&status).as_deref(), Some("BuildSucceeded"));
    assert_eq!(status.last_run_built_image_id.as_deref(), Some(BUILT));
    let tags = bed.aws.image(REGION, BUILT).expect("ami").tags;
    assert_eq!(tags.get("status").map(String::as_str), Some("active"));
    assert_eq!(tags.get("base-ami"), Some(&base));
    assert_eq!(tags.get("build-id"), status.build_id.as_ref());

    // The world did not change: the next checks keep the AMI.
    bed.step().await.expect("reconcile");
    bed.step().await.expect("reconcile");
    assert_eq!(bed.jobs().await.len(), 1, "no second build");
    assert_eq!(bed.status().await.phase, Some(PackerBuilderPhase::Ready));
    // Each transition announced once, after its status write; re-checks announce nothing.
    assert_eq!(bed.event_reasons().await, ["BuildStarted", "BuildSucceeded"]);
    assert_eq!(
        bed.status()
            .await
            .last_notified_transition
            .as_deref()
            .map(|k| k.starts_with("Ready/BuildSucceeded/")),
        Some(true)
    );
}

/// Throttled (`RequestLimitExceeded`) and transient (`Unavailable`, 5xx) refusals of the tagging after a good build
/// fail the reconcile, so it is retried with the controller's back-off; the build is never counted as failed and
/// never run again.
#[tokio::test]
async fn throttled_or_unavailable_tagging_after_a_good_build_is_retried_and_never_a_failed_build() {
    for (code, status_code, category) in [
        ("RequestLimitExceeded", 400, "AWSThrottled"),
        ("Unavailable", 503, "AWSUnavailable"),
    ] {
        let bed = Bed::start().await;
        bed.base("1", 240);
        bed.apply().await;
        bed.step().await.expect("reconcile");
        bed.build_succeeds(BUILT).await;
        bed.aws.fail("CreateTags", code, status_code, 2);

        for attempt in 1..=2 {
            let error = bed.step().await.expect_err("the refusal fails the reconcile");
            assert_eq!(error.category(), category, "{code}, attempt {attempt}: {error}");
            let status = bed.status().await;
            assert_eq!(status.failed_job_count, 0, "{code}: not a failed build");
            assert_ne!(status.phase, Some(PackerBuilderPhase::Failed), "{code}: {status:#?}");
            assert_ne!(status.last_run_status.as_deref(), Some("failed"), "{code}");
        }
        bed.step().await.expect("AWS answers again");
        let status = bed.status().await;
        assert_eq!(status.phase, Some(PackerBuilderPhase::Ready), "{code}: {status:#?}");
        assert_eq!(status.failed_job_count, 0, "{code}");
        assert_eq!(bed.jobs().await.len(), 1, "{code}: the build is not run again");
        assert!(bed.aws.count("CreateTags") >= 3, "{code}: two refused, then tagged");
    }
}

#[tokio::test]
async fn a_failed_build_is_counted_and_the_next_waits_for_the_back_off() {
    let bed = Bed::start().await;
    bed.base("1", 240);
    bed.apply().await;
    bed.step().await.expect("reconcile");
    let job = bed.status().await.job_name.expect("job");
    bed.job_ends(&job, "Failed", "BackoffLimitExceeded").await;

    bed.step().await.expect("a failed build is a result, not an error");
    let status = bed.status().await;
    assert_eq!(status.failed_job_count, 1);
    assert_eq!(status.phase, Some(PackerBuilderPhase::Failed), "{status:#?}");
    assert_eq!(ready_reason(&status).as_deref(), Some("BuildFailed"));
    // Within the back-off (30 s by default) no build starts.
    bed.step().await.expect("reconcile");
    let names: Vec<String> = bed.jobs().await.iter().map(ResourceExt::name_any).collect();
    assert_eq!(names, [job], "no retry before the back-off");
}

/// A copy in progress keeps the PackerBuilder `Distributing` (`CopyPending`); once EC2 says it is available the
/// builder is Ready (`ImagesDistributed`) and the copy carries the source's tags plus `source-image`. A throttled
/// CopyImage is retried with back-off, never a failed copy; a refused one (invalid) is `CopyFailed` with AWS's words.
#[tokio::test]
async fn a_copy_is_pending_until_ec2_finishes_it_and_throttling_is_never_a_failed_copy() {
    let bed = Bed::start().await;
    bed.base("1", 240);
    bed.apply_with(|spec| spec["distribution"] = json!({"regions": ["us-east-1"]}))
        .await;
    bed.step().await.expect("reconcile");
    bed.build_succeeds(BUILT).await;
    bed.aws.fail("CopyImage", "RequestLimitExceeded", 400, 1);
    // The build's step records it and says copies are due; the copies start at the next step.
    bed.step().await.expect("reconcile");
    let status = bed.status().await;
    assert_eq!(status.phase, Some(PackerBuilderPhase::Distributing), "{status:#?}");
    assert_eq!(bed.aws.count("CopyImage"), 0);

    let error = bed.step().await.expect_err("a throttled copy fails the reconcile");
    assert_eq!(error.category(), "AWSThrottled", "{error}");
    let status = bed.status().await;
    assert!(
        status
            .distributed_images
            .iter()
            .all(|d| d.state != "failed" && d.failures == 0),
        "not a failed copy: {status:#?}"
    );
    assert_ne!(ready_reason(&status).as_deref(), Some("CopyFailed"));

    bed.step().await.expect("reconcile");
    let status = bed.status().await;
    assert_eq!(status.phase, Some(PackerBuilderPhase::Distributing), "{status:#?}");
    assert_eq!(ready_reason(&status).as_deref(), Some("CopyPending"));
    bed.step().await.expect("reconcile");
    assert_eq!(
        bed.aws.count("CopyImage"),
        2,
        "one refused, one accepted; a pending copy is not copied again"
    );

    bed.aws.complete_copies();
    bed.step().await.expect("reconcile");
    let status = bed.status().await;
    assert_eq!(status.phase, Some(PackerBuilderPhase::Ready), "{status:#?}");
    assert_eq!(ready_reason(&status).as_deref(), Some("ImagesDistributed"));
    let copies = bed.aws.own_images_in("us-east-1");
    assert_eq!(copies.len(), 1, "{copies:#?}");
    let copy = &copies[0];
    assert_eq!(
        copy.tags.get("source-image").map(String::as_str),
        Some(format!("{REGION}/{BUILT}").as_str())
    );
    assert_eq!(copy.tags.get("build-id"), status.build_id.as_ref());
}

#[tokio::test]
async fn a_copy_aws_refuses_as_invalid_is_copy_failed_with_the_aws_message() {
    let bed = Bed::start().await;
    bed.base("1", 240);
    bed.apply_with(|spec| spec["distribution"] = json!({"regions": ["us-east-1"]}))
        .await;
    bed.step().await.expect("reconcile");
    bed.build_succeeds(BUILT).await;
    bed.aws.fail("CopyImage", "InvalidParameterValue", 400, 1);
    bed.step().await.expect("the build's step (copies start at the next)");

    bed.step()
        .await
        .expect("a refused copy is a result, not a retry of the reconcile");
    let status = bed.status().await;
    assert_eq!(bed.aws.count("CopyImage"), 1);
    assert_eq!(ready_reason(&status).as_deref(), Some("CopyFailed"), "{status:#?}");
    let entry = status
        .distributed_images
        .iter()
        .find(|d| d.region == "us-east-1")
        .expect("an entry for the copy region");
    assert_eq!(entry.failures, 1);
    assert!(
        entry
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("InvalidParameterValue"),
        "{entry:?}"
    );
    assert_eq!(status.failed_job_count, 0, "the build itself is good");
}
