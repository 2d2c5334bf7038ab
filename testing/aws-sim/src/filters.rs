//! DescribeImages filtering as EC2 does it, for the in-memory fakes of the controllers' reconcile-level tests (one
//! implementation for both): filters `name`, `owner-id` and `tag:<key>` with `*` and `?` wildcards (values of one
//! filter are ORed, filters ANDed), and the `Owners` parameter (`self` is the calling account). Any other filter name
//! is refused, never ignored: a fake must not be friendlier than EC2.

use std::collections::BTreeMap;

/// What a filter looks at of one image.
#[derive(Clone, Copy, Debug)]
pub struct Described<'a> {
    /// The AMI name.
    pub name: Option<&'a str>,
    /// The owner account.
    pub owner: &'a str,
    /// Its tags.
    pub tags: &'a BTreeMap<String, String>,
}

/// Whether `image` passes `filters` and `owners` for a caller in `account`; `Err` names a filter this module does
/// not evaluate.
pub fn matches(
    image: Described<'_>,
    filters: &[(String, Vec<String>)],
    owners: &[String],
    account: &str,
) -> Result<bool, String> {
    let owned = owners.is_empty()
        || owners
            .iter()
            .any(|o| o == image.owner || (o == "self" && image.owner == account));
    let mut pass = owned;
    for (name, values) in filters {
        let value = match name.as_str() {
            "name" => image.name.map(str::to_owned),
            "owner-id" => Some(image.owner.to_owned()),
            tag if tag.starts_with("tag:") => image.tags.get(&tag["tag:".len()..]).cloned(),
            other => return Err(format!("filter {other} is not modelled")),
        };
        pass &= value.is_some_and(|v| values.iter().any(|p| wildcard(p, &v)));
    }
    Ok(pass)
}

/// EC2's filter wildcards: `*` any run of characters, `?` one character.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // Classic two-pointer match with backtracking to the last `*`.
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_ec2() {
        assert!(wildcard("amazon-eks-node-*", "amazon-eks-node-1.30-v1"));
        assert!(wildcard("*-v1", "amazon-eks-node-1.30-v1"));
        assert!(wildcard("a*b*c", "aXXbYYc"));
        assert!(!wildcard("a*b*c", "aXXbYY"));
        assert!(wildcard("v?", "v1"));
        assert!(!wildcard("v?", "v10"));
        assert!(wildcard("exact", "exact"));
        assert!(!wildcard("exact", "exactly"));
    }

    #[test]
    fn filters_are_anded_values_ored_and_unknown_filters_refused() {
        let tags: BTreeMap<String, String> = [("cluster-name".to_owned(), "opsy".to_owned())].into();
        let image = Described {
            name: Some("eks-node-1"),
            owner: "111122223333",
            tags: &tags,
        };
        let f = |pairs: &[(&str, &[&str])]| -> Vec<(String, Vec<String>)> {
            pairs
                .iter()
                .map(|(n, vs)| ((*n).to_owned(), vs.iter().map(|v| (*v).to_owned()).collect()))
                .collect()
        };
        let me = "111122223333";
        assert_eq!(
            matches(
                image,
                &f(&[("name", &["x*", "eks-*"]), ("tag:cluster-name", &["opsy"])]),
                &[],
                me
            ),
            Ok(true)
        );
        assert_eq!(
            matches(image, &f(&[("tag:cluster-name", &["other"])]), &[], me),
            Ok(false)
        );
        assert_eq!(matches(image, &f(&[("tag:missing", &["*"])]), &[], me), Ok(false));
        assert_eq!(matches(image, &[], &["self".to_owned()], me), Ok(true));
        assert_eq!(matches(image, &[], &["999988887777".to_owned()], me), Ok(false));
        assert!(matches(image, &f(&[("architecture", &["x86_64"])]), &[], me).is_err());
    }
}
