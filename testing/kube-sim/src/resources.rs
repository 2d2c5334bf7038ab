//! The resource types the server knows: built-in kinds this project uses, plus every kind registered by a
//! CustomResourceDefinition. Also the discovery documents built from them.

use std::{collections::BTreeMap, sync::Arc};

use crd_schema::CrdValidator;
use serde_json::{Value, json};

/// One served resource type.
#[derive(Clone, Debug)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: String,
    /// Served version.
    pub version: String,
    /// Kind, e.g. `Pod`.
    pub kind: String,
    /// Plural resource name, e.g. `pods`.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Whether `/status` is a subresource (status writes ignore the rest and vice versa).
    pub status_subresource: bool,
    /// Short names for kubectl.
    pub short_names: Vec<String>,
    /// Categories for kubectl.
    pub categories: Vec<String>,
    /// Schema checker for custom resources.
    pub validator: Option<Arc<CrdValidator>>,
    /// `additionalPrinterColumns` of a custom resource version (Table output for `kubectl get`).
    pub printer_columns: Vec<Value>,
}

impl ResourceType {
    /// `apiVersion` as written in objects.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The key objects of this type are stored under (version-independent).
    pub fn key(&self) -> ResourceKey {
        ResourceKey {
            group: self.group.clone(),
            plural: self.plural.clone(),
        }
    }

    fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool, status: bool) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            namespaced,
            status_subresource: status,
            short_names: Vec::new(),
            categories: Vec::new(),
            validator: None,
            printer_columns: Vec::new(),
        }
    }

    fn with_short(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| (*s).to_owned()).collect();
        self
    }
}

/// Storage identity of a resource type.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    /// API group.
    pub group: String,
    /// Plural name.
    pub plural: String,
}

/// All served types, by (group, version, plural).
#[derive(Clone, Debug, Default)]
pub struct Registry {
    types: BTreeMap<(String, String, String), ResourceType>,
}

impl Registry {
    /// The built-in kinds used by this project and by kubectl.
    pub fn with_builtins() -> Self {
        let mut registry = Self::default();
        for t in [
            ResourceType::builtin("", "v1", "Namespace", "namespaces", false, true).with_short(&["ns"]),
            ResourceType::builtin("", "v1", "Pod", "pods", true, true).with_short(&["po"]),
            ResourceType::builtin("", "v1", "Secret", "secrets", true, false),
            ResourceType::builtin("", "v1", "ConfigMap", "configmaps", true, false).with_short(&["cm"]),
            ResourceType::builtin("", "v1", "Event", "events", true, false).with_short(&["ev"]),
            ResourceType::builtin("", "v1", "ServiceAccount", "serviceaccounts", true, false).with_short(&["sa"]),
            ResourceType::builtin("", "v1", "Service", "services", true, true).with_short(&["svc"]),
            ResourceType::builtin("batch", "v1", "Job", "jobs", true, true),
            ResourceType::builtin("coordination.k8s.io", "v1", "Lease", "leases", true, false),
            ResourceType::builtin("events.k8s.io", "v1", "Event", "events", true, false).with_short(&["ev"]),
            ResourceType::builtin(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
                true,
            )
            .with_short(&["crd", "crds"]),
        ] {
            registry.insert(t);
        }
        registry
    }

    /// Adds or replaces a type.
    pub fn insert(&mut self, t: ResourceType) {
        self.types
            .insert((t.group.clone(), t.version.clone(), t.plural.clone()), t);
    }

    /// Removes every version of a group/plural.
    pub fn remove(&mut self, key: &ResourceKey) {
        self.types.retain(|(g, _, p), _| !(g == &key.group && p == &key.plural));
    }

    /// Looks a type up.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.types
            .get(&(group.to_owned(), version.to_owned(), plural.to_owned()))
    }

    /// Any served version of a group/plural (objects are stored version-independently).
    pub fn by_key(&self, key: &ResourceKey) -> Option<&ResourceType> {
        self.types
            .values()
            .find(|t| t.group == key.group && t.plural == key.plural)
    }

    /// Finds the type of an object by `apiVersion` and `kind`.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceType> {
        self.types
            .values()
            .find(|t| t.api_version() == api_version && t.kind == kind)
    }

    /// Whether any version of the group is served.
    pub fn group_version_exists(&self, group: &str, version: &str) -> bool {
        self.types.keys().any(|(g, v, _)| g == group && v == version)
    }

    /// `/openapi/v3`: one entry per served group/version, as the API server lists them.
    pub fn openapi_v3_root(&self) -> Value {
        let mut paths = serde_json::Map::new();
        for (g, v, _) in self.types.keys() {
            let key = if g.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{g}/{v}")
            };
            paths.insert(key.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{key}")}));
        }
        json!({ "paths": paths })
    }

    /// `/openapi/v3/<api/v1 | apis/group/version>`: the operations of that group/version without schemas. Each
    /// resource's PATCH operation names its kind and the `fieldValidation` query parameter, which is what
    /// `kubectl apply` (validation on, its default) looks for before it relies on the server's own validation
    /// (`fieldValidation=Strict`) instead of downloading schemas. `None` for a group/version not served.
    pub fn openapi_v3_group_version(&self, group: &str, version: &str) -> Option<Value> {
        let mut paths = serde_json::Map::new();
        for t in self.types.values().filter(|t| t.group == group && t.version == version) {
            let prefix = if group.is_empty() {
                format!("/api/{version}")
            } else {
                format!("/apis/{group}/{version}")
            };
            let path = if t.namespaced {
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
            } else {
                format!("{prefix}/{}/{{name}}", t.plural)
            };
            let gvk = json!({"group": group, "version": version, "kind": t.kind});
            let parameters: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force"]
                .iter()
                .map(|name| json!({"name": name, "in": "query", "schema": {"type": "string"}}))
                .collect();
            let operation = |action: &str| {
                json!({"operationId": format!("{action}{}", t.kind), "x-kubernetes-action": action,
                       "x-kubernetes-group-version-kind": gvk, "parameters": parameters,
                       "responses": {"200": {"description": "OK"}}})
            };
            paths.insert(
                path,
                json!({"get": operation("get"), "put": operation("put"), "patch": operation("patch"),
                       "delete": operation("delete")}),
            );
        }
        if paths.is_empty() {
            return None;
        }
        Some(
            json!({"openapi": "3.0.0", "info": {"title": "Kubernetes (kube-sim)", "version": "v1.33.0-kube-sim"},
                    "paths": paths, "components": {"schemas": {}}}),
        )
    }

    /// `/api` body.
    pub fn core_versions(&self) -> Value {
        json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
        ]})
    }

    /// `/apis` body.
    pub fn group_list(&self) -> Value {
        let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (g, v, _) in self.types.keys() {
            if !g.is_empty() {
                let versions = groups.entry(g).or_default();
                if !versions.contains(&v.as_str()) {
                    versions.push(v);
                }
            }
        }
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(name, versions)| {
                let versions: Vec<Value> = versions
                    .iter()
                    .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
                    .collect();
                json!({"name": name, "versions": versions, "preferredVersion": versions[0]})
            })
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `/api/v1` or `/apis/{group}/{version}` body.
    pub fn resource_list(&self, group: &str, version: &str) -> Value {
        let mut resources = Vec::new();
        for t in self.types.values().filter(|t| t.group == group && t.version == version) {
            resources.push(json!({
                "name": t.plural,
                "singularName": t.singular,
                "namespaced": t.namespaced,
                "kind": t.kind,
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                "shortNames": t.short_names,
                "categories": t.categories,
            }));
            if t.status_subresource {
                resources.push(
                    json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced,
                    "kind": t.kind, "verbs": ["get", "patch", "update"]}),
                );
            }
            if t.kind == "Pod" {
                resources.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
            }
        }
        let group_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
    }
}

/// Builds the served types of a CustomResourceDefinition object (one per served version).
pub fn types_from_crd(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().ok_or("spec.group is required")?;
    let names = &spec["names"];
    let plural = names["plural"].as_str().ok_or("spec.names.plural is required")?;
    let kind = names["kind"].as_str().ok_or("spec.names.kind is required")?;
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for version in spec["versions"].as_array().ok_or("spec.versions is required")? {
        if version["served"] == Value::Bool(false) {
            continue;
        }
        let name = version["name"].as_str().ok_or("spec.versions[].name is required")?;
        let validator = match version.pointer("/schema/openAPIV3Schema") {
            Some(schema) => Some(Arc::new(
                CrdValidator::from_structural_schema(schema.clone()).map_err(|e| format!("version {name}: {e}"))?,
            )),
            None => None,
        };
        out.push(ResourceType {
            group: group.into(),
            version: name.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: names["singular"]
                .as_str()
                .map_or_else(|| kind.to_lowercase(), str::to_owned),
            namespaced,
            status_subresource: version.pointer("/subresources/status").is_some(),
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            validator,
            printer_columns: version["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        });
    }
    Ok(out)
}
