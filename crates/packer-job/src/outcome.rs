//! Reading a build's outcome: the AMI from Packer's machine-readable artifact line.

/// Separator Packer writes for a comma inside a machine-readable field.
const PACKER_COMMA: &str = "%!(PACKER_COMMA)";

/// The `(region, ami)` pairs of the last `artifact,0,id,...` line in `text`. `text` may be the whole
/// machine-readable log or just the artifact value (`us-west-2:ami-1` or several, comma-separated), as the build
/// container writes it to its termination message.
pub fn parse_artifacts(text: &str) -> Vec<(String, String)> {
    let value = text
        .lines()
        .rev()
        .find_map(|line| line.split_once(",artifact,0,id,").map(|(_, v)| v))
        .unwrap_or(text)
        .trim();
    value
        .replace(PACKER_COMMA, ",")
        .split(',')
        .filter_map(|pair| {
            let (region, ami) = pair.trim().split_once(':')?;
            let valid =
                ami.starts_with("ami-") && ami[4..].chars().all(|c| c.is_ascii_hexdigit()) && !region.is_empty();
            valid.then(|| (region.to_owned(), ami.to_owned()))
        })
        .collect()
}

/// The AMI built in `region`, if the artifact names one.
pub fn artifact_in_region(text: &str, region: &str) -> Option<String> {
    parse_artifacts(text)
        .into_iter()
        .find(|(r, _)| r == region)
        .map(|(_, ami)| ami)
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
        assert_eq!(
            artifact_in_region(message, "us-east-1").as_deref(),
            Some("ami-0bbbbbbbbbbbbbbbb")
        );
        assert_eq!(artifact_in_region(message, "eu-west-1"), None);
    }

    #[test]
    fn garbage_yields_nothing() {
        assert!(parse_artifacts("").is_empty());
        assert!(parse_artifacts("Build 'x' errored: boom").is_empty());
        assert!(parse_artifacts("us-west-2:not-an-ami").is_empty());
    }
}
