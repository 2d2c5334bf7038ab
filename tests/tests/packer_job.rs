//! The whole test cluster together: a Job run by kube-sim's executor clones the sample Packer project from a git
//! repository (git-sync emulated) and runs the real `packer build` against the AWS emulator; the AMI it makes is
//! visible through the Rust AWS SDK and the Job ends `Complete`.

use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use aws_sim::{Account, AwsEmulator, SeedImage};
use futures::TryStreamExt;
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, Client, Config, ResourceExt,
    api::{ListParams, LogParams, PostParams},
    runtime::{WatchStreamExt, watcher},
};
use kube_sim::{ApiServer, ServerOptions, executor::ExecutorOptions};
use serde_json::json;

const REGION: &str = "us-west-2";
/// Packer sends no account header, so it works in moto's default account.
const DEFAULT_ACCOUNT: &str = "123456789012";

#[tokio::test(flavor = "multi_thread")]
async fn a_job_clones_the_sample_packer_project_and_really_builds_an_ami_in_the_emulator() {
    let aws = AwsEmulator::start().await.expect("emulator");
    let account = Account(DEFAULT_ACCOUNT.into());
    let base = aws
        .seed_images(
            &account,
            REGION,
            &[SeedImage {
                name: "amazon-eks-node-al2023-x86_64-standard-1.30-v20261101".into(),
                owner_id: "602401143452".into(),
                creation_date: "2026-11-01T00:00:00Z".into(),
                public: true,
                ..SeedImage::default()
            }],
        )
        .await
        .expect("seed")
        .remove(0);

    let env = aws.packer_job_env(REGION);
    let server = ApiServer::start(ServerOptions {
        executor: Some(ExecutorOptions {
            extra_env: env,
            ..ExecutorOptions::default()
        }),
        ..ServerOptions::default()
    })
    .await
    .expect("api server");
    let client = Client::try_from(Config::new(server.url().parse().expect("url"))).expect("client");

    let repo = tempfile::tempdir().expect("tmp");
    aws_sim::sample_packer_repo(repo.path(), "eks-node").expect("sample repo");
    // Values reach Packer as positional arguments of a constant script, never spliced into it.
    let script = r#"packer init . && packer validate -var "ami_id=$1" -var "region=$2" -var "ec2_endpoint=$3" . && packer build -machine-readable -color=false -var "ami_id=$1" -var "region=$2" -var "ec2_endpoint=$3" ."#;
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "packer-build"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "git", "emptyDir": {}}],
            "initContainers": [{
                "name": "git-sync", "image": "registry.k8s.io/git-sync/git-sync:v4.2.3",
                "args": [format!("--repo=file://{}", repo.path().display()), "--ref=main", "--depth=1", "--one-time",
                         "--root=/git", "--link=repo"],
                "volumeMounts": [{"name": "git", "mountPath": "/git"}]
            }],
            "containers": [{
                "name": "packer", "image": "hashicorp/packer:1.6.6",
                "command": ["sh", "-c", script, "packer-build", base, REGION, aws.endpoint()],
                "workingDir": "/git/repo/eks-node",
                "env": [{"name": "PKR_VAR_build_id", "value": "test-build-7"}],
                "volumeMounts": [{"name": "git", "mountPath": "/git"}]
            }]
        }}}
    }))
    .expect("job");
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    jobs.create(&PostParams::default(), &job).await.expect("create job");

    let done = async {
        let mut stream = Box::pin(watcher::watcher(jobs.clone(), watcher::Config::default()).applied_objects());
        while let Some(job) = stream.try_next().await.expect("watch") {
            let conditions = job
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            if let Some(c) = conditions
                .iter()
                .find(|c| c.status == "True" && (c.type_ == "Complete" || c.type_ == "Failed"))
            {
                return c.type_.clone();
            }
        }
        panic!("watch ended");
    };
    let outcome = tokio::time::timeout(Duration::from_secs(300), done)
        .await
        .expect("packer finished in time");

    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod = pods
        .list(&ListParams::default().labels("job-name=packer-build"))
        .await
        .expect("pods")
        .items
        .remove(0);
    let logs = pods
        .logs(
            &pod.name_any(),
            &LogParams {
                container: Some("packer".into()),
                ..LogParams::default()
            },
        )
        .await
        .expect("logs");
    assert_eq!(outcome, "Complete", "packer failed:\n{logs}");
    let artifact = logs
        .lines()
        .find_map(|l| l.split_once(",artifact,0,id,").map(|(_, id)| id.to_owned()))
        .unwrap_or_else(|| panic!("no artifact line in:\n{logs}"));
    let (artifact_region, ami) = artifact.split_once(':').expect("REGION:AMI");
    assert_eq!(artifact_region, REGION);

    let sdk = aws.sdk_config(REGION).await;
    let images = aws
        .ec2(&sdk, &account)
        .describe_images()
        .owners("self")
        .filters(Filter::builder().name("name").values("opsy-eks-node-*").build())
        .send()
        .await
        .expect("describe");
    let built: Vec<&str> = images.images().iter().filter_map(|i| i.image_id()).collect();
    assert_eq!(built, [ami], "the AMI Packer reported exists in the emulator");
    assert_eq!(images.images()[0].state().map(|s| s.as_str()), Some("available"));
    let build_id = images.images()[0]
        .tags()
        .iter()
        .find(|t| t.key() == Some("build-id"))
        .and_then(|t| t.value());
    assert_eq!(
        build_id,
        Some("test-build-7"),
        "the sample template tags the AMI with PKR_VAR_build_id, which the controller checks"
    );
    let run_instances = aws.count(&account, "RunInstances").await.expect("calls");
    assert!(
        run_instances >= 1,
        "packer launched its build instance through the emulator"
    );
}
