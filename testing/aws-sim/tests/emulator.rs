//! Every API the extension adds, answered through the Rust AWS SDK over HTTP; fault injection; reset; account
//! isolation.

use aws_sdk_autoscaling::types::{DesiredConfiguration, LaunchTemplateSpecification, RefreshPreferences};
use aws_sdk_ec2::{
    error::ProvideErrorMetadata,
    types::{Filter, RequestLaunchTemplateData},
};
use aws_sdk_eks::types::{LaunchTemplateSpecification as EksLaunchTemplate, UpdateStatus};
use aws_sim::{Account, AwsEmulator, Fault, SeedImage};

const REGION: &str = "us-west-2";
const EKS_OWNER: &str = "602401143452";

struct World {
    emulator: AwsEmulator,
    account: Account,
    ec2: aws_sdk_ec2::Client,
    eks: aws_sdk_eks::Client,
    asg: aws_sdk_autoscaling::Client,
    ssm: aws_sdk_ssm::Client,
}

async fn world() -> World {
    let emulator = AwsEmulator::start().await.expect("emulator starts");
    let account = Account::random();
    let sdk = emulator.sdk_config(REGION).await;
    World {
        ec2: emulator.ec2(&sdk, &account),
        eks: emulator.eks(&sdk, &account),
        asg: emulator.autoscaling(&sdk, &account),
        ssm: emulator.ssm(&sdk, &account),
        emulator,
        account,
    }
}

fn eks_image(name: &str, date: &str) -> SeedImage {
    SeedImage {
        name: name.into(),
        owner_id: EKS_OWNER.into(),
        creation_date: date.into(),
        public: true,
        ..SeedImage::default()
    }
}

/// A cluster with one managed node group on a launch template; returns (template id, ASG name).
async fn cluster_with_nodegroup(w: &World, image: &str) -> (String, String) {
    let template = aws_sim::eks::TemplateSeed {
        name: "workers",
        image,
        instance_type: Some(aws_sdk_ec2::types::InstanceType::T3Medium),
        user_data: None,
    };
    let lt_id = aws_sim::eks::launch_template(&w.ec2, &template)
        .await
        .expect("launch template");
    aws_sim::eks::cluster(&w.eks, "opsy-gitops").await.expect("cluster");
    let asg = aws_sim::eks::nodegroup(&w.eks, "opsy-gitops", "workers", &lt_id, None, 1)
        .await
        .expect("nodegroup");
    assert!(!asg.is_empty(), "node group backed by an ASG");
    (lt_id, asg)
}

#[tokio::test]
async fn seeded_public_amis_are_found_with_filters_and_owners_only_in_their_account() {
    let w = world().await;
    let ids = w
        .emulator
        .seed_images(
            &w.account,
            REGION,
            &[
                eks_image(
                    "amazon-eks-node-al2023-x86_64-standard-1.30-v20261001",
                    "2026-10-01T00:00:00Z",
                ),
                eks_image(
                    "amazon-eks-node-al2023-x86_64-standard-1.30-v20261101",
                    "2026-11-01T00:00:00Z",
                ),
                SeedImage {
                    name: "someone-elses".into(),
                    owner_id: "111122223333".into(),
                    creation_date: "2026-11-02T00:00:00Z".into(),
                    public: true,
                    ..SeedImage::default()
                },
            ],
        )
        .await
        .expect("seed");
    assert_eq!(ids.len(), 3);
    let found = w
        .ec2
        .describe_images()
        .owners(EKS_OWNER)
        .filters(
            Filter::builder()
                .name("name")
                .values("amazon-eks-node-al2023-x86_64-standard-1.30*")
                .build(),
        )
        .send()
        .await
        .expect("describe");
    let mut names: Vec<(&str, &str)> = found
        .images()
        .iter()
        .map(|i| (i.name().unwrap_or_default(), i.creation_date().unwrap_or_default()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            (
                "amazon-eks-node-al2023-x86_64-standard-1.30-v20261001",
                "2026-10-01T00:00:00.000Z"
            ),
            (
                "amazon-eks-node-al2023-x86_64-standard-1.30-v20261101",
                "2026-11-01T00:00:00.000Z"
            ),
        ]
    );
    // Another account sees nothing: tests can share one emulator.
    let other = Account::random();
    let sdk = w.emulator.sdk_config(REGION).await;
    let elsewhere = w
        .emulator
        .ec2(&sdk, &other)
        .describe_images()
        .owners(EKS_OWNER)
        .send()
        .await
        .expect("describe");
    assert!(elsewhere.images().is_empty());
}

#[tokio::test]
async fn image_deprecation_is_set_rounded_shown_and_cleared_by_the_owner_only() {
    let w = world().await;
    let own = w
        .emulator
        .seed_images(
            &w.account,
            REGION,
            &[SeedImage {
                name: "own".into(),
                owner_id: w.account.0.clone(),
                ..SeedImage::default()
            }],
        )
        .await
        .expect("seed")
        .remove(0);
    let foreign = w
        .emulator
        .seed_images(
            &w.account,
            REGION,
            &[SeedImage {
                name: "foreign".into(),
                owner_id: "210987654321".into(),
                ..SeedImage::default()
            }],
        )
        .await
        .expect("seed")
        .remove(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let in_two_hours = i64::try_from(now).expect("secs") + 2 * 3600 + 40;
    let at = aws_sdk_ec2::primitives::DateTime::from_secs(in_two_hours);
    w.ec2
        .enable_image_deprecation()
        .image_id(&own)
        .deprecate_at(at)
        .send()
        .await
        .expect("deprecate");
    let shown = w
        .ec2
        .describe_images()
        .image_ids(&own)
        .send()
        .await
        .expect("describe")
        .images()[0]
        .deprecation_time()
        .map(str::to_owned)
        .expect("DeprecationTime");
    let shown = aws_sdk_ec2::primitives::DateTime::from_str(&shown, aws_sdk_ec2::primitives::DateTimeFormat::DateTime)
        .expect("timestamp")
        .secs();
    assert_eq!(shown % 60, 0, "rounded to a minute: {shown}");
    assert!((shown - in_two_hours).abs() <= 30, "{shown} vs {in_two_hours}");
    for (what, image, when) in [
        (
            "in the past",
            &own,
            aws_sdk_ec2::primitives::DateTime::from_secs(1_600_000_000),
        ),
        ("not the owner", &foreign, at),
    ] {
        let refused = w
            .ec2
            .enable_image_deprecation()
            .image_id(image)
            .deprecate_at(when)
            .send()
            .await;
        assert!(refused.is_err(), "{what}: {refused:?}");
    }
    w.ec2
        .disable_image_deprecation()
        .image_id(&own)
        .send()
        .await
        .expect("disable");
    let cleared = w.ec2.describe_images().image_ids(&own).send().await.expect("describe");
    assert_eq!(cleared.images()[0].deprecation_time(), None);
}

#[tokio::test]
async fn deleted_launch_template_versions_are_gone_numbers_are_not_reused_and_the_default_stays() {
    let w = world().await;
    let (lt_id, _) = cluster_with_nodegroup(&w, "ami-0aaaaaaaaaaaaaaaa").await;
    for _ in 0..3 {
        w.ec2
            .create_launch_template_version()
            .launch_template_id(&lt_id)
            .source_version("1")
            .launch_template_data(
                RequestLaunchTemplateData::builder()
                    .image_id("ami-0bbbbbbbbbbbbbbbb")
                    .build(),
            )
            .send()
            .await
            .expect("version");
    }
    let out = w
        .ec2
        .delete_launch_template_versions()
        .launch_template_id(&lt_id)
        .versions("2")
        .versions("1")
        .versions("9")
        .send()
        .await
        .expect("delete");
    let deleted: Vec<i64> = out
        .successfully_deleted_launch_template_versions()
        .iter()
        .filter_map(|v| v.version_number())
        .collect();
    assert_eq!(deleted, vec![2]);
    let refused: Vec<(i64, String)> = out
        .unsuccessfully_deleted_launch_template_versions()
        .iter()
        .map(|v| {
            (
                v.version_number().unwrap_or_default(),
                v.response_error()
                    .and_then(|e| e.code())
                    .map(|c| c.as_str().to_owned())
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        vec![
            (1, "unexpectedError".to_owned()),
            (9, "launchTemplateVersionDoesNotExist".to_owned())
        ],
        "the default version cannot be deleted; an unknown one is reported"
    );
    let listed: Vec<i64> = w
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(&lt_id)
        .send()
        .await
        .expect("list")
        .launch_template_versions()
        .iter()
        .filter_map(|v| v.version_number())
        .collect();
    assert_eq!(listed, vec![1, 3, 4]);
    let gone = w
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(&lt_id)
        .versions("2")
        .send()
        .await;
    assert!(gone.is_err(), "a deleted version cannot be described: {gone:?}");
    let next = w
        .ec2
        .create_launch_template_version()
        .launch_template_id(&lt_id)
        .source_version("1")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id("ami-0cccccccccccccccc")
                .build(),
        )
        .send()
        .await
        .expect("version")
        .launch_template_version()
        .and_then(|v| v.version_number());
    assert_eq!(next, Some(5), "numbers are never reused");
}

#[tokio::test]
async fn launch_template_version_from_source_version_keeps_other_fields() {
    let w = world().await;
    let (lt_id, _) = cluster_with_nodegroup(&w, "ami-0aaaaaaaaaaaaaaaa").await;
    let v2 = w
        .ec2
        .create_launch_template_version()
        .launch_template_id(&lt_id)
        .source_version("1")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id("ami-0bbbbbbbbbbbbbbbb")
                .build(),
        )
        .send()
        .await
        .expect("version");
    let version = v2.launch_template_version().expect("version");
    assert_eq!(version.version_number(), Some(2));
    let data = version.launch_template_data().expect("data");
    assert_eq!(data.image_id(), Some("ami-0bbbbbbbbbbbbbbbb"));
    assert_eq!(
        data.instance_type().map(|t| t.as_str()),
        Some("t3.medium"),
        "source version fields must be kept"
    );
}

#[tokio::test]
async fn update_nodegroup_config_is_asynchronous_found_only_under_its_node_group_and_blocks_a_version_update() {
    let w = world().await;
    let (lt_id, _) = cluster_with_nodegroup(&w, "ami-0aaaaaaaaaaaaaaaa").await;
    let update = w
        .eks
        .update_nodegroup_config()
        .cluster_name("opsy-gitops")
        .nodegroup_name("workers")
        .update_config(
            aws_sdk_eks::types::NodegroupUpdateConfig::builder()
                .max_unavailable(3)
                .build(),
        )
        .send()
        .await
        .expect("config")
        .update
        .expect("update body");
    assert_eq!(update.status(), Some(&UpdateStatus::InProgress));
    assert_eq!(update.r#type().map(|t| t.as_str()), Some("ConfigUpdate"));
    let id = update.id().expect("id").to_owned();
    let max_unavailable = || async {
        w.eks
            .describe_nodegroup()
            .cluster_name("opsy-gitops")
            .nodegroup_name("workers")
            .send()
            .await
            .expect("ng")
            .nodegroup()
            .and_then(|n| n.update_config())
            .and_then(|u| u.max_unavailable())
    };
    assert_ne!(
        max_unavailable().await,
        Some(3),
        "not applied before the update succeeds"
    );
    // A version update while the config update runs is refused, as EKS does.
    let busy = w
        .eks
        .update_nodegroup_version()
        .cluster_name("opsy-gitops")
        .nodegroup_name("workers")
        .launch_template(EksLaunchTemplate::builder().id(&lt_id).version("1").build())
        .send()
        .await
        .expect_err("busy");
    assert_eq!(
        busy.as_service_error()
            .and_then(|e| aws_sdk_eks::error::ProvideErrorMetadata::code(e)),
        Some("ResourceInUseException")
    );
    // A node group update is found only with its node group's name.
    for wrong in [None, Some("other")] {
        let missing = w
            .eks
            .describe_update()
            .name("opsy-gitops")
            .update_id(&id)
            .set_nodegroup_name(wrong.map(str::to_owned))
            .send()
            .await
            .expect_err("not found without the node group");
        assert_eq!(
            missing
                .as_service_error()
                .and_then(|e| aws_sdk_eks::error::ProvideErrorMetadata::code(e)),
            Some("ResourceNotFoundException"),
            "{wrong:?}"
        );
    }
    // Reads change nothing: it ends with time (the default 0.5 s), not with the number of DescribeUpdate calls.
    let mut statuses = Vec::new();
    for wait in [0, 0, 0, 900] {
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        let described = w
            .eks
            .describe_update()
            .name("opsy-gitops")
            .update_id(&id)
            .nodegroup_name("workers")
            .send()
            .await
            .expect("describe");
        statuses.push(described.update().and_then(|u| u.status()).cloned().expect("status"));
    }
    assert_eq!(
        statuses,
        [
            UpdateStatus::InProgress,
            UpdateStatus::InProgress,
            UpdateStatus::InProgress,
            UpdateStatus::Successful
        ]
    );
    assert_eq!(max_unavailable().await, Some(3));
}

#[tokio::test]
async fn update_nodegroup_version_is_tracked_by_describe_update_and_moves_the_node_group_and_its_asg() {
    let w = world().await;
    let (lt_id, asg) = cluster_with_nodegroup(&w, "ami-0aaaaaaaaaaaaaaaa").await;
    w.ec2
        .create_launch_template_version()
        .launch_template_id(&lt_id)
        .source_version("1")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id("ami-0bbbbbbbbbbbbbbbb")
                .build(),
        )
        .send()
        .await
        .expect("v2");
    let update = w
        .eks
        .update_nodegroup_version()
        .cluster_name("opsy-gitops")
        .nodegroup_name("workers")
        .launch_template(EksLaunchTemplate::builder().id(&lt_id).version("2").build())
        .send()
        .await
        .expect("update")
        .update
        .expect("update body");
    assert_eq!(update.status(), Some(&UpdateStatus::InProgress));
    let id = update.id().expect("id").to_owned();

    // A second update while one runs is refused, as EKS does.
    let busy = w
        .eks
        .update_nodegroup_version()
        .cluster_name("opsy-gitops")
        .nodegroup_name("workers")
        .launch_template(EksLaunchTemplate::builder().id(&lt_id).version("2").build())
        .send()
        .await
        .expect_err("busy");
    assert_eq!(
        busy.as_service_error()
            .and_then(|e| aws_sdk_eks::error::ProvideErrorMetadata::code(e)),
        Some("ResourceInUseException")
    );

    let mut statuses = Vec::new();
    for wait in [0, 900, 0] {
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        let described = w
            .eks
            .describe_update()
            .name("opsy-gitops")
            .update_id(&id)
            .nodegroup_name("workers")
            .send()
            .await
            .expect("describe");
        statuses.push(described.update().and_then(|u| u.status()).cloned().expect("status"));
    }
    assert_eq!(
        statuses,
        [
            UpdateStatus::InProgress,
            UpdateStatus::Successful,
            UpdateStatus::Successful
        ]
    );
    let listed = w
        .eks
        .list_updates()
        .name("opsy-gitops")
        .nodegroup_name("workers")
        .send()
        .await
        .expect("list");
    assert_eq!(listed.update_ids(), std::slice::from_ref(&id));

    let ng = w
        .eks
        .describe_nodegroup()
        .cluster_name("opsy-gitops")
        .nodegroup_name("workers")
        .send()
        .await
        .expect("ng");
    let lt = ng.nodegroup().and_then(|n| n.launch_template()).expect("lt");
    assert_eq!((lt.id(), lt.version()), (Some(lt_id.as_str()), Some("2")));
    let groups = w
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&asg)
        .send()
        .await
        .expect("asg");
    let group_lt = groups.auto_scaling_groups()[0].launch_template().expect("asg lt");
    assert_eq!(group_lt.version(), Some("2"));
}

#[tokio::test]
async fn a_scripted_failure_fails_the_update_with_errors() {
    let w = world().await;
    let (lt_id, _) = cluster_with_nodegroup(&w, "ami-0aaaaaaaaaaaaaaaa").await;
    w.emulator
        .set_progress(true, std::time::Duration::ZERO)
        .await
        .expect("manual");
    let update = w
        .eks
        .update_nodegroup_version()
        .cluster_name("opsy-gitops")
        .nodegroup_name("workers")
        .launch_template(EksLaunchTemplate::builder().id(&lt_id).version("1").build())
        .send()
        .await
        .expect("update")
        .update
        .expect("update");
    let id = update.id().expect("id");
    let still = w
        .eks
        .describe_update()
        .name("opsy-gitops")
        .nodegroup_name("workers")
        .update_id(id)
        .send()
        .await
        .expect("describe");
    assert_eq!(
        still.update().and_then(|u| u.status()),
        Some(&UpdateStatus::InProgress),
        "manual mode waits for the test"
    );
    w.emulator
        .finish_update(&w.account, REGION, "opsy-gitops", "workers", "Failed")
        .await
        .expect("fail it");
    let failed = w
        .eks
        .describe_update()
        .name("opsy-gitops")
        .nodegroup_name("workers")
        .update_id(id)
        .send()
        .await
        .expect("describe");
    let failed = failed.update().expect("update");
    assert_eq!(failed.status(), Some(&UpdateStatus::Failed));
    assert_eq!(
        failed.errors().first().and_then(|e| e.error_code()).map(|c| c.as_str()),
        Some("NodeCreationFailure")
    );
}

#[tokio::test]
async fn instance_refresh_validates_the_desired_template_and_skips_a_group_that_already_matches() {
    let w = world().await;
    let (lt_id, asg) = cluster_with_nodegroup(&w, "ami-0aaaaaaaaaaaaaaaa").await;
    let onto = |version: &str| {
        DesiredConfiguration::builder()
            .launch_template(
                LaunchTemplateSpecification::builder()
                    .launch_template_id(&lt_id)
                    .version(version)
                    .build(),
            )
            .build()
    };
    // A version that does not exist: refused, as Auto Scaling validates the desired configuration.
    let missing = w
        .asg
        .start_instance_refresh()
        .auto_scaling_group_name(&asg)
        .desired_configuration(onto("7"))
        .send()
        .await
        .expect_err("no version 7");
    assert_eq!(
        missing
            .as_service_error()
            .and_then(|e| aws_sdk_autoscaling::error::ProvideErrorMetadata::code(e)),
        Some("ValidationError")
    );
    // SkipMatching onto the version the group already uses: nothing to replace, it ends at once.
    let id = w
        .asg
        .start_instance_refresh()
        .auto_scaling_group_name(&asg)
        .desired_configuration(onto("1"))
        .preferences(RefreshPreferences::builder().skip_matching(true).build())
        .send()
        .await
        .expect("start")
        .instance_refresh_id
        .expect("id");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let out = w
        .asg
        .describe_instance_refreshes()
        .auto_scaling_group_name(&asg)
        .send()
        .await
        .expect("describe");
    let refresh = &out.instance_refreshes()[0];
    assert_eq!(refresh.instance_refresh_id(), Some(id.as_str()));
    assert_eq!(refresh.status().map(|s| s.as_str()), Some("Successful"));
    assert_eq!(refresh.instances_to_update(), Some(0));
}

#[tokio::test]
async fn instance_refresh_start_describe_cancel_and_rollback() {
    let w = world().await;
    let (lt_id, asg) = cluster_with_nodegroup(&w, "ami-0aaaaaaaaaaaaaaaa").await;
    let desired = DesiredConfiguration::builder()
        .launch_template(
            LaunchTemplateSpecification::builder()
                .launch_template_id(&lt_id)
                .version("1")
                .build(),
        )
        .build();
    // Without SkipMatching: the group's own version is refreshed (every instance replaced) and takes its time.
    let prefs = RefreshPreferences::builder()
        .min_healthy_percentage(90)
        .skip_matching(false)
        .auto_rollback(false)
        .build();
    let id = w
        .asg
        .start_instance_refresh()
        .auto_scaling_group_name(&asg)
        .desired_configuration(desired.clone())
        .preferences(prefs.clone())
        .send()
        .await
        .expect("start")
        .instance_refresh_id
        .expect("id");
    let twice = w
        .asg
        .start_instance_refresh()
        .auto_scaling_group_name(&asg)
        .send()
        .await
        .expect_err("one at a time");
    assert_eq!(
        twice
            .as_service_error()
            .and_then(|e| aws_sdk_autoscaling::error::ProvideErrorMetadata::code(e)),
        Some("InstanceRefreshInProgress")
    );
    // Pending first, then InProgress, then (after the default 0.5 s) Successful.
    let mut seen = Vec::new();
    for wait in [0, 250, 600] {
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        let out = w
            .asg
            .describe_instance_refreshes()
            .auto_scaling_group_name(&asg)
            .send()
            .await
            .expect("describe");
        let refresh = &out.instance_refreshes()[0];
        assert_eq!(refresh.instance_refresh_id(), Some(id.as_str()));
        seen.push(refresh.status().map(|s| s.as_str().to_owned()).unwrap_or_default());
    }
    assert_eq!(seen, ["Pending", "InProgress", "Successful"]);

    // Cancel and rollback act on the running refresh.
    w.emulator
        .set_progress(true, std::time::Duration::ZERO)
        .await
        .expect("manual");
    w.asg
        .start_instance_refresh()
        .auto_scaling_group_name(&asg)
        .desired_configuration(desired.clone())
        .send()
        .await
        .expect("start");
    w.asg
        .cancel_instance_refresh()
        .auto_scaling_group_name(&asg)
        .send()
        .await
        .expect("cancel");
    w.asg
        .start_instance_refresh()
        .auto_scaling_group_name(&asg)
        .desired_configuration(desired)
        .send()
        .await
        .expect("start");
    w.asg
        .rollback_instance_refresh()
        .auto_scaling_group_name(&asg)
        .send()
        .await
        .expect("rollback");
    let out = w
        .asg
        .describe_instance_refreshes()
        .auto_scaling_group_name(&asg)
        .send()
        .await
        .expect("describe");
    let statuses: Vec<&str> = out
        .instance_refreshes()
        .iter()
        .filter_map(|r| r.status())
        .map(|s| s.as_str())
        .collect();
    assert_eq!(statuses, ["RollbackSuccessful", "Cancelled", "Successful"]);
    let none = w
        .asg
        .cancel_instance_refresh()
        .auto_scaling_group_name(&asg)
        .send()
        .await
        .expect_err("nothing running");
    assert_eq!(
        none.as_service_error()
            .and_then(|e| aws_sdk_autoscaling::error::ProvideErrorMetadata::code(e)),
        Some("ActiveInstanceRefreshNotFound")
    );
}

#[tokio::test]
async fn seeded_public_ssm_parameter_is_readable() {
    let w = world().await;
    let name = "/aws/service/eks/optimized-ami/1.30/amazon-linux-2023/x86_64/standard/recommended/image_id";
    w.emulator
        .seed_ssm(&w.account, REGION, &[(name, "ami-0ccccccccccccccc0")])
        .await
        .expect("seed");
    let out = w.ssm.get_parameter().name(name).send().await.expect("get");
    assert_eq!(out.parameter().and_then(|p| p.value()), Some("ami-0ccccccccccccccc0"));
}

#[tokio::test]
async fn a_fault_rule_fails_the_sdk_call_with_the_configured_code_then_stops() {
    let w = world().await;
    w.emulator
        .inject(&Fault::error("ec2", "DescribeImages", 503, "RequestLimitExceeded", 1))
        .await
        .expect("fault");
    let err = w
        .ec2
        .describe_images()
        .owners("self")
        .send()
        .await
        .expect_err("injected");
    assert_eq!(err.code(), Some("RequestLimitExceeded"));
    w.ec2
        .describe_images()
        .owners("self")
        .send()
        .await
        .expect("the rule was used up");
    let calls = w.emulator.count(&w.account, "DescribeImages").await.expect("calls");
    assert_eq!(calls, 2);

    // With the SDK's standard retries a single throttle is absorbed.
    w.emulator
        .inject(&Fault::error("ec2", "DescribeImages", 503, "RequestLimitExceeded", 1))
        .await
        .expect("fault");
    let sdk = w
        .emulator
        .sdk_config_with_retries(REGION, aws_config::retry::RetryConfig::standard().with_max_attempts(3))
        .await;
    w.emulator
        .ec2(&sdk, &w.account)
        .describe_images()
        .owners("self")
        .send()
        .await
        .expect("retried");
}

#[tokio::test]
async fn reset_clears_seeded_state_and_the_call_log() {
    let w = world().await;
    w.ec2
        .describe_images()
        .owners("self")
        .send()
        .await
        .expect("a call before the reset");
    w.emulator
        .seed_images(&w.account, REGION, &[eks_image("a", "2026-01-01T00:00:00Z")])
        .await
        .expect("seed");
    w.emulator.reset().await.expect("reset");
    let after = w
        .ec2
        .describe_images()
        .owners(EKS_OWNER)
        .send()
        .await
        .expect("describe");
    assert!(after.images().is_empty());
    assert!(
        w.emulator
            .calls(&w.account)
            .await
            .expect("calls")
            .iter()
            .all(|c| c.action != "CreateLaunchTemplate")
    );
}

#[tokio::test]
async fn the_emulator_exits_when_its_owner_goes_away() {
    let emulator = AwsEmulator::start().await.expect("emulator");
    let endpoint = emulator.endpoint().to_owned();
    let health = format!("{endpoint}/_ext/health");
    assert!(reqwest::get(&health).await.expect("up").status().is_success());
    drop(emulator);
    let mut down = false;
    for _ in 0..50 {
        if reqwest::get(&health).await.is_err() {
            down = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(down, "the emulator still serves after its owner dropped it");
}

/// The emulator's fast per-resource tag lookup answers tag-filtered DescribeImages exactly as moto's own scan does:
/// same images, same order, same tags, for exact, wildcard, key-only, value-only and non-matching filters.
#[tokio::test]
async fn fast_tag_lookup_answers_describe_images_exactly_as_moto() {
    let w = world().await;
    let images: Vec<SeedImage> = (0..30)
        .map(|i| SeedImage {
            name: format!("tagged-{i}"),
            owner_id: w.account.0.clone(),
            creation_date: format!("2026-01-{:02}T00:00:00Z", i % 28 + 1),
            tags: [
                ("cluster".to_owned(), format!("c-{}", i % 3)),
                ("team".to_owned(), if i % 2 == 0 { "a" } else { "b" }.to_owned()),
                (format!("only-{}", i % 5), "x".to_owned()),
            ]
            .into(),
            public: false,
            state: None,
        })
        .collect();
    w.emulator.seed_images(&w.account, REGION, &images).await.expect("seed");
    let queries: Vec<Vec<Filter>> = vec![
        vec![Filter::builder().name("tag:cluster").values("c-1").build()],
        vec![
            Filter::builder().name("tag:cluster").values("c-2").build(),
            Filter::builder().name("tag:team").values("a").build(),
        ],
        vec![Filter::builder().name("tag:cluster").values("c-*").build()],
        vec![Filter::builder().name("tag-key").values("only-3").build()],
        vec![Filter::builder().name("tag-value").values("b").build()],
        vec![Filter::builder().name("tag:cluster").values("nope").build()],
    ];
    let answer = |filters: Vec<Filter>| {
        let ec2 = w.ec2.clone();
        async move {
            let out = ec2
                .describe_images()
                .owners("self")
                .set_filters(Some(filters))
                .send()
                .await
                .expect("describe");
            out.images()
                .iter()
                .map(|i| {
                    let mut tags: Vec<(String, String)> = i
                        .tags()
                        .iter()
                        .map(|t| {
                            (
                                t.key().unwrap_or_default().to_owned(),
                                t.value().unwrap_or_default().to_owned(),
                            )
                        })
                        .collect();
                    tags.sort();
                    (i.image_id().unwrap_or_default().to_owned(), tags)
                })
                .collect::<Vec<_>>()
        }
    };
    let mut fast = Vec::new();
    for q in &queries {
        fast.push(answer(q.clone()).await);
    }
    w.emulator.set_fast_tags(false).await.expect("moto's lookup");
    for (q, fast) in queries.iter().zip(&fast) {
        let moto = answer(q.clone()).await;
        assert_eq!(*fast, moto, "filters {q:?}");
    }
    assert_eq!(fast[0].len(), 10, "the filters select something (c-1: 10 of 30)");
    assert_eq!(fast[1].len(), 5, "c-2 and team a");
    assert!(fast[5].is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_image_is_pending_then_available_idempotent_per_token_tagged_and_encrypted() {
    use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
    let w = world().await;
    w.emulator
        .set_copy_duration(std::time::Duration::from_millis(1500))
        .await
        .expect("copy duration");
    let source = w
        .emulator
        .seed_images(
            &w.account,
            REGION,
            &[SeedImage {
                name: "built".into(),
                owner_id: w.account.0.clone(),
                public: false,
                ..SeedImage::default()
            }],
        )
        .await
        .expect("seed")
        .remove(0);
    let sdk = w.emulator.sdk_config("eu-west-1").await;
    let dst = w.emulator.ec2(&sdk, &w.account);
    let spec = |resource| {
        TagSpecification::builder()
            .resource_type(resource)
            .tags(
                Tag::builder()
                    .key("source-image")
                    .value(format!("{REGION}/{source}"))
                    .build(),
            )
            .build()
    };
    let copy = || {
        dst.copy_image()
            .source_image_id(&source)
            .source_region(REGION)
            .name("built")
            .encrypted(true)
            .kms_key_id("alias/ami")
            .client_token("token-1")
            .tag_specifications(spec(ResourceType::Image))
            .tag_specifications(spec(ResourceType::Snapshot))
    };
    let first = copy().send().await.expect("copy").image_id.expect("id");
    let again = copy().send().await.expect("copy again").image_id.expect("id");
    assert_eq!(first, again, "a repeated ClientToken answers the first copy");
    let describe = || async {
        dst.describe_images()
            .image_ids(&first)
            .send()
            .await
            .expect("describe")
            .images
            .unwrap_or_default()
            .remove(0)
    };
    let image = describe().await;
    assert_eq!(image.state().map(|s| s.as_str()), Some("pending"));
    let tags: Vec<_> = image.tags().iter().map(|t| (t.key(), t.value())).collect();
    let wanted = format!("{REGION}/{source}");
    assert_eq!(
        tags,
        [(Some("source-image"), Some(wanted.as_str()))],
        "tagged at creation"
    );
    let ebs = image.block_device_mappings()[0].ebs().expect("ebs").clone();
    assert_eq!((ebs.encrypted(), ebs.kms_key_id()), (Some(true), Some("alias/ami")));
    tokio::time::sleep(std::time::Duration::from_millis(1800)).await;
    assert_eq!(describe().await.state().map(|s| s.as_str()), Some("available"));
    let other_token = dst
        .copy_image()
        .source_image_id(&source)
        .source_region(REGION)
        .name("built")
        .client_token("token-2")
        .send()
        .await
        .expect("copy")
        .image_id
        .expect("id");
    assert_ne!(other_token, first, "another token makes another copy");
    w.emulator.fail_next_copies(1).await.expect("fail next");
    let failing = dst
        .copy_image()
        .source_image_id(&source)
        .source_region(REGION)
        .name("built")
        .client_token("token-3")
        .send()
        .await
        .expect("copy")
        .image_id
        .expect("id");
    tokio::time::sleep(std::time::Duration::from_millis(1800)).await;
    let state = |id: String| {
        let dst = dst.clone();
        async move {
            dst.describe_images()
                .image_ids(id)
                .send()
                .await
                .expect("describe")
                .images()[0]
                .state()
                .map(|s| s.as_str().to_owned())
        }
    };
    assert_eq!(state(failing).await.as_deref(), Some("failed"), "asked to fail");
    assert_eq!(
        state(other_token).await.as_deref(),
        Some("available"),
        "only the next copy fails"
    );
    let refused = dst
        .copy_image()
        .source_image_id(&source)
        .source_region(REGION)
        .name("built")
        .kms_key_id("alias/ami")
        .send()
        .await
        .expect_err("KmsKeyId without Encrypted");
    assert_eq!(refused.code(), Some("InvalidParameterCombination"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ami_shared_with_an_account_is_visible_to_it_without_tags_and_to_nobody_else() {
    use aws_sdk_ec2::types::{LaunchPermission, LaunchPermissionModifications};
    let w = world().await;
    let ami = w
        .emulator
        .seed_images(
            &w.account,
            REGION,
            &[SeedImage {
                name: "shared".into(),
                owner_id: w.account.0.clone(),
                public: false,
                tags: [("team".to_owned(), "a".to_owned())].into(),
                ..SeedImage::default()
            }],
        )
        .await
        .expect("seed")
        .remove(0);
    let sdk = w.emulator.sdk_config(REGION).await;
    let (friend, stranger) = (Account::random(), Account::random());
    let as_friend = w.emulator.ec2(&sdk, &friend);
    let found = |client: aws_sdk_ec2::Client, owner: String| async move {
        client
            .describe_images()
            .owners(owner)
            .send()
            .await
            .expect("describe")
            .images
            .unwrap_or_default()
    };
    assert!(
        found(as_friend.clone(), w.account.0.clone()).await.is_empty(),
        "not shared yet"
    );
    w.ec2
        .modify_image_attribute()
        .image_id(&ami)
        .launch_permission(
            LaunchPermissionModifications::builder()
                .add(LaunchPermission::builder().user_id(&friend.0).build())
                .add(
                    LaunchPermission::builder()
                        .organizational_unit_arn("arn:aws:organizations::123456789012:ou/o-abcdefghij/ou-ab12-cdef3456")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("share");
    let seen = found(as_friend.clone(), w.account.0.clone()).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].image_id(), Some(ami.as_str()));
    assert!(seen[0].tags().is_empty(), "tags stay the owner's");
    let by_id = as_friend.describe_images().image_ids(&ami).send().await.expect("by id");
    assert_eq!(by_id.images().len(), 1);
    assert!(
        found(w.emulator.ec2(&sdk, &stranger), w.account.0.clone())
            .await
            .is_empty()
    );
    let permissions = w
        .ec2
        .describe_image_attribute()
        .image_id(&ami)
        .attribute(aws_sdk_ec2::types::ImageAttributeName::LaunchPermission)
        .send()
        .await
        .expect("attribute");
    assert_eq!(
        permissions.launch_permissions().len(),
        2,
        "the OU permission is stored and described"
    );
}
