//! Which AMI of a PackerBuilder an AMIRefresher in a given region rolls onto.

use api_types::PackerBuilderStatus;

/// The PackerBuilder's AMI in `region`: the built AMI when `region` is the one it builds in (`built_in`), else the
/// available copy of the built AMI there (`status.distributedImages`); `None` when there is none (not built yet, not
/// distributed to that region, or the copy is not available yet).
pub fn built_image_in(status: &PackerBuilderStatus, built_in: &str, region: &str) -> Option<String> {
    let built = status.last_run_built_image_id.clone()?;
    if region == built_in {
        return Some(built);
    }
    status
        .distributed_images
        .iter()
        .find(|e| e.region == region && e.source_image_id == built && e.state == "available")
        .and_then(|e| e.image_id.clone())
}

#[cfg(test)]
mod tests {
    use api_types::packer_builder::DistributedImage;

    use super::*;

    fn status() -> PackerBuilderStatus {
        PackerBuilderStatus {
            last_run_built_image_id: Some("ami-built".into()),
            distributed_images: vec![
                DistributedImage {
                    region: "eu-west-1".into(),
                    source_image_id: "ami-built".into(),
                    image_id: Some("ami-copy-eu".into()),
                    state: "available".into(),
                    ..DistributedImage::default()
                },
                DistributedImage {
                    region: "us-east-1".into(),
                    source_image_id: "ami-built".into(),
                    image_id: Some("ami-copy-us".into()),
                    state: "copying".into(),
                    ..DistributedImage::default()
                },
                DistributedImage {
                    region: "ap-south-1".into(),
                    source_image_id: "ami-older".into(),
                    image_id: Some("ami-old-copy".into()),
                    state: "available".into(),
                    ..DistributedImage::default()
                },
            ],
            ..PackerBuilderStatus::default()
        }
    }

    #[test]
    fn the_build_region_gets_the_built_ami_and_a_copy_region_its_available_copy() {
        assert_eq!(
            built_image_in(&status(), "us-west-2", "us-west-2").as_deref(),
            Some("ami-built")
        );
        assert_eq!(
            built_image_in(&status(), "us-west-2", "eu-west-1").as_deref(),
            Some("ami-copy-eu")
        );
    }

    #[test]
    fn a_copy_in_progress_a_copy_of_an_older_build_or_no_copy_is_no_target() {
        assert_eq!(built_image_in(&status(), "us-west-2", "us-east-1"), None);
        assert_eq!(built_image_in(&status(), "us-west-2", "ap-south-1"), None);
        assert_eq!(built_image_in(&status(), "us-west-2", "sa-east-1"), None);
        assert_eq!(
            built_image_in(&PackerBuilderStatus::default(), "us-west-2", "us-west-2"),
            None
        );
    }
}
