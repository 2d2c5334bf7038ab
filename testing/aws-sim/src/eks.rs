//! One way to seed an EKS world in the emulator, used by both controllers' end-to-end tests, the emulator's own
//! tests, the demo and the bench: a cluster, a launch template carrying an AMI, and a managed node group on that
//! template (backed by an Auto Scaling group, as EKS does).

use aws_sdk_ec2::types::{InstanceType, RequestLaunchTemplateData};
use aws_sdk_eks::types::{LaunchTemplateSpecification, NodegroupScalingConfig, VpcConfigRequest};

/// A seeding call the emulator refused: which step and the SDK's description.
#[derive(Debug, thiserror::Error)]
#[error("seeding the EKS world failed at {step}: {message}")]
pub struct SeedError {
    /// What was being made.
    pub step: &'static str,
    /// The SDK's description of the failure.
    pub message: String,
}

fn failed<E: std::error::Error + 'static>(step: &'static str) -> impl FnOnce(E) -> SeedError {
    move |e| SeedError {
        step,
        message: aws_sdk_ec2::error::DisplayErrorContext(e).to_string(),
    }
}

/// An EKS cluster named `name` (role and VPC are placeholders the emulator accepts).
pub async fn cluster(eks: &aws_sdk_eks::Client, name: &str) -> Result<(), SeedError> {
    eks.create_cluster()
        .name(name)
        .role_arn("arn:aws:iam::123456789012:role/eks")
        .resources_vpc_config(VpcConfigRequest::builder().build())
        .send()
        .await
        .map_err(failed("CreateCluster"))?;
    Ok(())
}

/// What a launch template's first version carries.
#[derive(Clone, Debug, Default)]
pub struct TemplateSeed<'a> {
    /// The template's name.
    pub name: &'a str,
    /// The AMI.
    pub image: &'a str,
    /// The instance type, when the template names one.
    pub instance_type: Option<InstanceType>,
    /// Base64 user data, when the template has some.
    pub user_data: Option<&'a str>,
}

/// A launch template; returns its ID.
pub async fn launch_template(ec2: &aws_sdk_ec2::Client, seed: &TemplateSeed<'_>) -> Result<String, SeedError> {
    let data = RequestLaunchTemplateData::builder()
        .image_id(seed.image)
        .set_instance_type(seed.instance_type.clone())
        .set_user_data(seed.user_data.map(str::to_owned))
        .build();
    let made = ec2
        .create_launch_template()
        .launch_template_name(seed.name)
        .launch_template_data(data)
        .send()
        .await
        .map_err(failed("CreateLaunchTemplate"))?;
    made.launch_template()
        .and_then(|t| t.launch_template_id())
        .map(str::to_owned)
        .ok_or(SeedError {
            step: "CreateLaunchTemplate",
            message: "no launch template ID in the answer".into(),
        })
}

/// A managed node group of `cluster` on launch template `template_id` (its default version unless `version`),
/// `desired` nodes (min 1, max `desired + 1`); returns the name of the Auto Scaling group behind it.
pub async fn nodegroup(
    eks: &aws_sdk_eks::Client,
    cluster: &str,
    name: &str,
    template_id: &str,
    version: Option<&str>,
    desired: i32,
) -> Result<String, SeedError> {
    let made = eks
        .create_nodegroup()
        .cluster_name(cluster)
        .nodegroup_name(name)
        .node_role("arn:aws:iam::123456789012:role/node")
        .subnets("subnet-0123456789abcdef0")
        .launch_template(
            LaunchTemplateSpecification::builder()
                .id(template_id)
                .set_version(version.map(str::to_owned))
                .build(),
        )
        .scaling_config(
            NodegroupScalingConfig::builder()
                .min_size(1)
                .max_size(desired + 1)
                .desired_size(desired)
                .build(),
        )
        .send()
        .await
        .map_err(failed("CreateNodegroup"))?;
    Ok(made
        .nodegroup()
        .and_then(|n| n.resources())
        .and_then(|r| r.auto_scaling_groups().first())
        .and_then(|g| g.name())
        .unwrap_or_default()
        .to_owned())
}

/// A managed node group (one node) on its own new launch template; returns the template ID.
pub async fn nodegroup_with_template(
    ec2: &aws_sdk_ec2::Client,
    eks: &aws_sdk_eks::Client,
    cluster: &str,
    name: &str,
    template: TemplateSeed<'_>,
) -> Result<String, SeedError> {
    let id = launch_template(ec2, &template).await?;
    self::nodegroup(eks, cluster, name, &id, None, 1).await?;
    Ok(id)
}
