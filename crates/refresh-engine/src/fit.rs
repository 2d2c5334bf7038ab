//! Does the target AMI fit a node group? An `arm64` AMI on `x86_64` instances (or the reverse) never boots: the
//! update or instance refresh would fail only after replacing the first nodes. The check compares the AMI's EC2
//! `Architecture` with the architectures EC2 reports for each of the group's instance types
//! (`DescribeInstanceTypes`, `ProcessorInfo.SupportedArchitectures`). Pure.

use std::collections::BTreeMap;

/// The instance type EKS uses for a managed node group when neither the node group nor its launch template names
/// one (per the EKS `CreateNodegroup` API reference).
pub const EKS_DEFAULT_INSTANCE_TYPE: &str = "t3.medium";

/// Why the AMI does not fit, or `Ok` when every instance type can run it. `ami_architecture` unknown, or a group
/// whose instance types are unknown (attribute-based instance selection), is not refused: there is nothing to
/// compare. An instance type EC2 does not know in the region is refused.
pub fn check(
    ami: &str,
    ami_architecture: Option<&str>,
    instance_types: &[String],
    architectures: &BTreeMap<String, Vec<String>>,
) -> Result<(), String> {
    let Some(arch) = ami_architecture else {
        return Ok(());
    };
    for instance_type in instance_types {
        match architectures.get(instance_type) {
            None => {
                return Err(format!(
                    "instance type {instance_type} is not known to EC2 in this region"
                ));
            }
            Some(supported) if !supported.iter().any(|a| a == arch) => {
                return Err(format!(
                    "AMI {ami} is {arch} but instance type {instance_type} runs {}; the AMI cannot boot on this group",
                    supported.join("/")
                ));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> BTreeMap<String, Vec<String>> {
        [
            ("t3.medium", vec!["x86_64"]),
            ("m6g.large", vec!["arm64"]),
            ("c7g.xlarge", vec!["arm64"]),
            ("t2.micro", vec!["i386", "x86_64"]),
        ]
        .into_iter()
        .map(|(t, a)| (t.to_owned(), a.into_iter().map(str::to_owned).collect()))
        .collect()
    }

    fn types(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn an_arm64_ami_does_not_fit_an_x86_64_group_and_the_reason_names_both() {
        let err = check("ami-1", Some("arm64"), &types(&["t3.medium"]), &table()).expect_err("mismatch");
        assert!(
            err.contains("arm64") && err.contains("t3.medium") && err.contains("x86_64"),
            "{err}"
        );
        let err = check("ami-1", Some("x86_64"), &types(&["m6g.large"]), &table()).expect_err("mismatch");
        assert!(err.contains("m6g.large runs arm64"), "{err}");
    }

    #[test]
    fn every_instance_type_of_a_mixed_group_must_fit() {
        assert!(check("ami-1", Some("arm64"), &types(&["m6g.large", "c7g.xlarge"]), &table()).is_ok());
        assert!(check("ami-1", Some("arm64"), &types(&["m6g.large", "t3.medium"]), &table()).is_err());
        assert!(check("ami-1", Some("x86_64"), &types(&["t2.micro", "t3.medium"]), &table()).is_ok());
    }

    #[test]
    fn unknown_architecture_or_no_instance_types_is_not_refused_but_an_unknown_type_is() {
        assert!(check("ami-1", None, &types(&["m6g.large"]), &table()).is_ok());
        assert!(check("ami-1", Some("arm64"), &[], &table()).is_ok());
        let err = check("ami-1", Some("x86_64"), &types(&["z9.huge"]), &table()).expect_err("unknown");
        assert!(err.contains("z9.huge"), "{err}");
    }
}
