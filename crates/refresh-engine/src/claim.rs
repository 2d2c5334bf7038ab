//! One owner per node group. Two AMIRefreshers (any namespaces, any Helm releases, even two installations of the
//! controller) must never roll the same node group: they would alternate its AMI forever. The first to see a group
//! claims it with a tag on the group itself (the EKS node group, or the Auto Scaling group), which every
//! installation sees; a later one finds the claim and leaves the group alone. A claim whose AMIRefresher no longer
//! exists is stale and taken over. Pure.

/// The tag that names the AMIRefresher owning a node group or Auto Scaling group: `<namespace>/<name>`.
pub const CLAIM_TAG: &str = "ami.refresh.ops/owner";

/// The claim value of the AMIRefresher `namespace/name`.
pub fn claim_value(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// What a group's claim tag says about the AMIRefresher `me` (a [`claim_value`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Claimed by `me`.
    Ours,
    /// No claim (or an empty one): `me` may claim it.
    Free,
    /// Claimed by another AMIRefresher, `namespace/name`.
    Other {
        /// The other AMIRefresher's namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// Reads a group's claim tag.
pub fn claim_of(tag: Option<&str>, me: &str) -> Claim {
    match tag.map(str::trim).filter(|t| !t.is_empty()) {
        None => Claim::Free,
        Some(t) if t == me => Claim::Ours,
        Some(t) => {
            let (namespace, name) = t.split_once('/').unwrap_or(("", t));
            Claim::Other {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_ours_free_or_another_refreshers_with_its_name() {
        let me = claim_value("team-a", "prod");
        assert_eq!(claim_of(Some("team-a/prod"), &me), Claim::Ours);
        assert_eq!(claim_of(None, &me), Claim::Free);
        assert_eq!(claim_of(Some("  "), &me), Claim::Free);
        assert_eq!(
            claim_of(Some("team-b/prod"), &me),
            Claim::Other {
                namespace: "team-b".into(),
                name: "prod".into()
            },
            "same name, other namespace: not ours"
        );
    }
}
