//! RBAC conformance for tests: which recorded requests the Roles and ClusterRoles of a set of manifests (e.g. a
//! rendered Helm chart) grant to one ServiceAccount, and which rules no request used.
//!
//! The server does not enforce RBAC; this is the same decision the real authorizer makes for the requests a
//! controller actually made, so a chart that forgets a verb fails a test instead of a production rollout.

use serde_json::Value;

use crate::RequestRecord;

/// One rule, where it applies, and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// `None` for a ClusterRole bound cluster-wide; the namespace for a Role (or a ClusterRole in a RoleBinding).
    pub namespace: Option<String>,
    /// apiGroups.
    pub groups: Vec<String>,
    /// resources (`jobs`, `pods/log`).
    pub resources: Vec<String>,
    /// verbs.
    pub verbs: Vec<String>,
    /// resourceNames (empty: any).
    pub names: Vec<String>,
    /// `Kind/name` of the role, for messages.
    pub source: String,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn binds(binding: &Value, account: &str, account_ns: &str) -> bool {
    binding["subjects"].as_array().is_some_and(|subjects| {
        subjects.iter().any(|s| {
            s["kind"] == "ServiceAccount" && s["name"] == account && s["namespace"].as_str().unwrap_or("") == account_ns
        })
    })
}

/// Every rule granted to the ServiceAccount `account` in `account_ns` by the Roles, ClusterRoles and bindings in
/// `objects`.
pub fn grants(objects: &[Value], account: &str, account_ns: &str) -> Vec<Grant> {
    let role = |kind: &str, name: &str, ns: Option<&str>| {
        objects.iter().find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && (ns.is_none() || o["metadata"]["namespace"] == ns.unwrap_or(""))
        })
    };
    let mut out = Vec::new();
    for binding in objects
        .iter()
        .filter(|o| (o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding") && binds(o, account, account_ns))
    {
        let ref_kind = binding["roleRef"]["kind"].as_str().unwrap_or("");
        let ref_name = binding["roleRef"]["name"].as_str().unwrap_or("");
        let scope = (binding["kind"] == "RoleBinding")
            .then(|| binding["metadata"]["namespace"].as_str().unwrap_or("").to_owned());
        let found = match ref_kind {
            "Role" => role("Role", ref_name, scope.as_deref()),
            _ => role("ClusterRole", ref_name, None),
        };
        let Some(found) = found else { continue };
        for rule in found["rules"].as_array().into_iter().flatten() {
            out.push(Grant {
                namespace: scope.clone(),
                groups: strings(&rule["apiGroups"]),
                resources: strings(&rule["resources"]),
                verbs: strings(&rule["verbs"]),
                names: strings(&rule["resourceNames"]),
                source: format!("{ref_kind}/{ref_name}"),
            });
        }
    }
    out
}

impl Grant {
    /// Whether this rule allows the request.
    pub fn allows(&self, r: &RequestRecord) -> bool {
        let resource = if r.subresource.is_empty() {
            r.resource.clone()
        } else {
            format!("{}/{}", r.resource, r.subresource)
        };
        let namespace_ok = match &self.namespace {
            None => true,
            Some(ns) => *ns == r.namespace,
        };
        namespace_ok
            && self.groups.contains(&r.group)
            && self.resources.contains(&resource)
            && self.verbs.contains(&r.verb)
            && (self.names.is_empty() || self.names.contains(&r.name))
    }
}

/// `(denied requests, rules no request used)` for the requests of one user.
pub fn conformance<'a>(grants: &'a [Grant], requests: &'a [RequestRecord]) -> (Vec<&'a RequestRecord>, Vec<String>) {
    let denied = requests
        .iter()
        .filter(|r| !grants.iter().any(|g| g.allows(r)))
        .collect();
    let mut unused = Vec::new();
    for g in grants {
        for group in &g.groups {
            for resource in &g.resources {
                for verb in &g.verbs {
                    let single = Grant {
                        groups: vec![group.clone()],
                        resources: vec![resource.clone()],
                        verbs: vec![verb.clone()],
                        ..g.clone()
                    };
                    if !requests.iter().any(|r| single.allows(r)) {
                        unused.push(format!("{}: {verb} {group}/{resource}", g.source));
                    }
                }
            }
        }
    }
    (denied, unused)
}

/// Renders a Helm chart (`helm template`, from `HELM` or PATH) and checks the requests of `user` against the
/// rules it grants the ServiceAccount `account` in `namespace`. `Ok` lists the rules no request used; `Err` lists
/// the denied requests.
pub fn check_chart(
    chart: &std::path::Path,
    sets: &[&str],
    namespace: &str,
    account: &str,
    user: &str,
    records: &[RequestRecord],
) -> Result<Vec<String>, String> {
    let helm = std::env::var_os("HELM").unwrap_or_else(|| "helm".into());
    let mut cmd = std::process::Command::new(helm);
    cmd.args(["template", "opsy"])
        .arg(chart)
        .args(["--namespace", namespace]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().map_err(|e| format!("helm: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let objects: Vec<Value> = serde_norway::Deserializer::from_str(&text)
        .filter_map(|d| <Value as serde::Deserialize>::deserialize(d).ok())
        .filter(|v| !v.is_null())
        .collect();
    let granted = grants(&objects, account, namespace);
    let mine: Vec<RequestRecord> = records.iter().filter(|r| r.user == user).cloned().collect();
    if mine.is_empty() {
        return Err(format!("no request was recorded for {user}"));
    }
    let (denied, unused) = conformance(&granted, &mine);
    if denied.is_empty() {
        Ok(unused)
    } else {
        Err(denied
            .iter()
            .map(|r| {
                format!(
                    "{} {}/{}{} ns={:?} name={:?}",
                    r.verb,
                    r.group,
                    r.resource,
                    if r.subresource.is_empty() {
                        String::new()
                    } else {
                        format!("/{}", r.subresource)
                    },
                    r.namespace,
                    r.name
                )
            })
            .collect::<Vec<_>>()
            .join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> RequestRecord {
        RequestRecord {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: ns.into(),
            subresource: sub.into(),
            name: name.into(),
            user: "sa".into(),
        }
    }

    #[test]
    fn roles_bind_by_namespace_and_cluster_roles_everywhere() {
        let objects = vec![
            json!({"kind": "ClusterRole", "metadata": {"name": "c"}, "rules": [
                {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "create"]},
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "c"}, "roleRef": {"kind": "ClusterRole", "name": "c"},
                   "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "sys"}]}),
            json!({"kind": "Role", "metadata": {"name": "l", "namespace": "sys"}, "rules": [
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"], "resourceNames": ["x"]}]}),
            json!({"kind": "RoleBinding", "metadata": {"name": "l", "namespace": "sys"}, "roleRef": {"kind": "Role", "name": "l"},
                   "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "sys"}]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "other"}, "roleRef": {"kind": "ClusterRole", "name": "c"},
                   "subjects": [{"kind": "ServiceAccount", "name": "someone-else", "namespace": "sys"}]}),
        ];
        let g = grants(&objects, "sa", "sys");
        assert_eq!(g.len(), 3);
        let requests = vec![
            request("get", "batch", "jobs", "", "team", "j"),
            request("get", "", "pods", "log", "team", "p"),
            request("get", "coordination.k8s.io", "leases", "", "sys", "x"),
            request("get", "coordination.k8s.io", "leases", "", "sys", "y"),
            request("get", "coordination.k8s.io", "leases", "", "team", "x"),
            request("list", "", "secrets", "", "team", ""),
        ];
        let (denied, unused) = conformance(&g, &requests);
        let denied: Vec<String> = denied
            .iter()
            .map(|r| format!("{} {} {}/{}", r.verb, r.resource, r.namespace, r.name))
            .collect();
        assert_eq!(denied, ["get leases sys/y", "get leases team/x", "list secrets team/"]);
        assert_eq!(unused, ["ClusterRole/c: create batch/jobs"]);
    }
}
