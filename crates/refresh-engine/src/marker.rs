//! The mark this controller leaves on the launch template versions it creates, so it can tell its own versions,
//! and the updates that roll onto them, from anybody else's. Pure.
//!
//! A version is created from the group's current (source) version with only `ImageId` changed, and described as
//! `opsy-ami-operator: image=<ami> source=<version>`. From that mark follow three rules:
//! - **reuse** only a version this controller made from the same source with the same image (never a newer version
//!   someone else made, which may carry other changes);
//! - **adopt** a running update or instance refresh only when it rolls onto a version this controller made
//!   (an update whose status write was lost); anything else is somebody else's and the group waits;
//! - **clean up** only versions this controller made, keeping the newest few and every version in use.

/// How every description this controller writes begins.
pub const PREFIX: &str = "opsy-ami-operator:";

/// The description of a version made from `source` with `image`.
pub fn version_description(source: &str, image: &str) -> String {
    format!("{PREFIX} image={image} source={source}")
}

/// What a marked description says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionMark {
    /// The image the version was made with.
    pub image: String,
    /// The version it was made from.
    pub source: String,
}

/// Reads a description this controller wrote; `None` for anything else (including the first release's
/// `opsy-ami-operator: image <ami>`, which did not record the source).
pub fn parse(description: &str) -> Option<VersionMark> {
    let rest = description.strip_prefix(PREFIX)?;
    let mut image = None;
    let mut source = None;
    for field in rest.split_whitespace() {
        match field.split_once('=') {
            Some(("image", v)) if !v.is_empty() => image = Some(v.to_owned()),
            Some(("source", v)) if !v.is_empty() => source = Some(v.to_owned()),
            _ => return None,
        }
    }
    Some(VersionMark {
        image: image?,
        source: source?,
    })
}

/// Whether a version (its description and the image its data sets) may be reused to roll from `source` onto
/// `image`: made by this controller from that source for that image, and its data still says that image.
pub fn reusable(description: Option<&str>, data_image: Option<&str>, source: &str, image: &str) -> bool {
    description
        .and_then(parse)
        .is_some_and(|m| m.source == source && m.image == image && data_image == Some(image))
}

/// Whether an update that rolls onto a version with this description was started by this controller.
pub fn ours(description: Option<&str>) -> bool {
    description.and_then(parse).is_some()
}

/// For an Auto Scaling group on `$Latest` or `$Default`: the version its instances were really launched from, when
/// that is not the version the symbol resolves to. Creating a version moves `$Latest` at once, but the instances
/// change only when an instance refresh onto it succeeds; so when the resolved version is one this controller made
/// (its `description`) and no refresh onto it succeeded (`refreshed`), the group is still on the version it was made
/// from (a refresh failed, or was never started before a crash). `None`: the resolved version is the group's state.
pub fn launched_from(description: Option<&str>, refreshed: bool) -> Option<String> {
    if refreshed {
        return None;
    }
    description.and_then(parse).map(|m| m.source)
}

/// Which versions made by this controller to delete: all but the newest `keep` of `marked`, never one in `in_use`
/// (the template's default and latest, versions groups use, versions of updates in flight). Sorted.
pub fn versions_to_delete(marked: &[i64], keep: usize, in_use: &[i64]) -> Vec<i64> {
    let mut marked = marked.to_vec();
    marked.sort_unstable_by(|a, b| b.cmp(a));
    marked.dedup();
    let mut out: Vec<i64> = marked.into_iter().skip(keep).filter(|v| !in_use.contains(v)).collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_description_round_trips_and_foreign_ones_are_not_ours() {
        let d = version_description("7", "ami-0123");
        assert_eq!(
            parse(&d),
            Some(VersionMark {
                image: "ami-0123".into(),
                source: "7".into()
            })
        );
        assert!(ours(Some(&d)));
        for foreign in [
            "",
            "bump instance type",
            "opsy-ami-operator: image ami-0123",
            "opsy-ami-operator: image=ami-0123",
            "opsy-ami-operator: image=ami-0123 source=7 extra=1",
            "opsy-ami-operator: image= source=7",
            "prefix opsy-ami-operator: image=ami-0123 source=7",
        ] {
            assert_eq!(parse(foreign), None, "{foreign:?}");
            assert!(!ours(Some(foreign)), "{foreign:?}");
        }
        assert!(!ours(None));
    }

    #[test]
    fn only_our_version_from_the_same_source_with_the_same_image_is_reused() {
        let d = version_description("7", "ami-new");
        assert!(reusable(Some(&d), Some("ami-new"), "7", "ami-new"));
        assert!(!reusable(Some(&d), Some("ami-new"), "8", "ami-new"), "another source");
        assert!(!reusable(Some(&d), Some("ami-new"), "7", "ami-other"), "another image");
        assert!(
            !reusable(Some(&d), Some("ami-other"), "7", "ami-new"),
            "the data does not match its mark"
        );
        // Somebody else's newer version with the target image (maybe with other changes too): never reused.
        assert!(!reusable(Some("bump instance type"), Some("ami-new"), "7", "ami-new"));
        assert!(!reusable(None, Some("ami-new"), "7", "ami-new"));
    }

    #[test]
    fn a_symbolic_version_we_moved_counts_only_after_a_successful_refresh() {
        let ours = version_description("3", "ami-new");
        assert_eq!(
            launched_from(Some(&ours), false),
            Some("3".into()),
            "refresh failed or never started"
        );
        assert_eq!(
            launched_from(Some(&ours), true),
            None,
            "refreshed: the instances run it"
        );
        assert_eq!(
            launched_from(Some("somebody's change"), false),
            None,
            "not ours: taken as it is"
        );
        assert_eq!(launched_from(None, false), None);
    }

    #[test]
    fn cleanup_keeps_the_newest_and_everything_in_use() {
        assert_eq!(versions_to_delete(&[2, 3, 5, 8, 9], 2, &[]), vec![2, 3, 5]);
        assert_eq!(versions_to_delete(&[9, 2, 8, 3, 5], 2, &[3]), vec![2, 5], "3 is in use");
        assert_eq!(
            versions_to_delete(&[2, 3], 5, &[]),
            Vec::<i64>::new(),
            "fewer than kept"
        );
        assert_eq!(
            versions_to_delete(&[2, 3, 4], 0, &[2, 3, 4]),
            Vec::<i64>::new(),
            "all in use"
        );
        assert_eq!(versions_to_delete(&[4, 4, 3], 1, &[]), vec![3], "duplicates count once");
    }
}
