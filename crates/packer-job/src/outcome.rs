//! Reading a build's outcome: the AMI from Packer's machine-readable artifact line.

/// Separator Packer writes for a comma inside a machine-readable field.
const PACKER_COMMA: &str = "%!(PACKER_COMMA)";

/// The `(region, ami)` pairs of every artifact in `text`, in order, without repeats. `text` is either the whole
/// machine-readable log (its `<build>,artifact,<n>,id,<value>` lines: a template with several sources or
/// post-processors reports several) or the artifact values alone, one per line, as the build container writes
/// them to its termination message. A value is `us-west-2:ami-1`, or several comma-separated (`ami_regions`).
pub fn parse_artifacts(text: &str) -> Vec<(String, String)> {
    let from_log: Vec<&str> = text.lines().filter_map(artifact_value).collect();
    let values = if from_log.is_empty() {
        text.lines().collect()
    } else {
        from_log
    };
    let mut found: Vec<(String, String)> = Vec::new();
    for value in values {
        for pair in value.replace(PACKER_COMMA, ",").split(',') {
            let Some((region, ami)) = pair.trim().split_once(':') else {
                continue;
            };
            let valid =
                ami.starts_with("ami-") && ami[4..].chars().all(|c| c.is_ascii_hexdigit()) && !region.is_empty();
            let pair = (region.to_owned(), ami.to_owned());
            if valid && !found.contains(&pair) {
                found.push(pair);
            }
        }
    }
    found
}

/// The value of a machine-readable `...,artifact,<n>,id,<value>` line.
fn artifact_value(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once(",artifact,")?;
    let (index, value) = rest.split_once(",id,")?;
    index.chars().all(|c| c.is_ascii_digit()).then_some(value)
}

/// Every AMI the artifacts name in `region`, in the order Packer reported them.
pub fn artifacts_in_region(text: &str, region: &str) -> Vec<String> {
    parse_artifacts(text)
        .into_iter()
        .filter(|(r, _)| r == region)
        .map(|(_, ami)| ami)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_is_read_from_machine_readable_logs() {
        let log = "1795241459,,ui,say,==> Builds finished.\n1795241459,amazon-ebs.node,artifact,0,builder-id,mitchellh.amazonebs\n1795241459,amazon-ebs.node,artifact,0,id,us-west-2:ami-51a8104dc2ec348f5\n";
        assert_eq!(
            parse_artifacts(log),
            [("us-west-2".to_owned(), "ami-51a8104dc2ec348f5".to_owned())]
        );
    }

    #[test]
    fn termination_message_with_several_regions() {
        let message = "us-west-2:ami-0aaaaaaaaaaaaaaaa%!(PACKER_COMMA)us-east-1:ami-0bbbbbbbbbbbbbbbb\n";
        assert_eq!(artifacts_in_region(message, "us-east-1"), ["ami-0bbbbbbbbbbbbbbbb"]);
        assert!(artifacts_in_region(message, "eu-west-1").is_empty());
    }

    #[test]
    fn every_artifact_of_a_template_with_several_sources_is_read_from_the_log_and_the_message() {
        let log = "1,amazon-ebs.amd64,artifact,0,id,us-west-2:ami-0aaaaaaaaaaaaaaaa\n\
                   1,amazon-ebs.amd64,artifact,0,end\n\
                   2,amazon-ebs.arm64,artifact,0,id,us-west-2:ami-0bbbbbbbbbbbbbbbb\n\
                   2,amazon-ebs.arm64,artifact,1,id,us-west-2:ami-0bbbbbbbbbbbbbbbb\n";
        let both = ["ami-0aaaaaaaaaaaaaaaa", "ami-0bbbbbbbbbbbbbbbb"];
        assert_eq!(artifacts_in_region(log, "us-west-2"), both, "in order, no repeats");
        // What the build wrapper writes to the termination message: one value per line.
        let message = "us-west-2:ami-0aaaaaaaaaaaaaaaa\nus-west-2:ami-0bbbbbbbbbbbbbbbb\n";
        assert_eq!(artifacts_in_region(message, "us-west-2"), both);
    }

    #[test]
    fn garbage_yields_nothing() {
        assert!(parse_artifacts("").is_empty());
        assert!(parse_artifacts("Build 'x' errored: boom").is_empty());
        assert!(parse_artifacts("us-west-2:not-an-ami").is_empty());
    }
}
