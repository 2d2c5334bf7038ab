//! The object store: every object as JSON, one global resourceVersion counter, and an ordered event log that
//! watches replay from. All operations are synchronous under one lock; watchers get events through a broadcast
//! channel and the log.
//!
//! Semantics kept from the real API server: uid, resourceVersion, generation (bumped only when something other
//! than metadata and status changes), creationTimestamp, generateName, status subresource separation, optimistic
//! concurrency (409 on a stale resourceVersion), no-op writes that change nothing, finalizers and
//! deletionTimestamp, background/orphan garbage collection through ownerReferences, CRD registration with
//! defaulting, pruning and validation of custom resources.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use jiff::Timestamp;
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use crate::{
    error::ApiError,
    resources::{Registry, ResourceKey, ResourceType, types_from_crd},
    selectors::{FieldSelector, LabelSelector},
};

/// Type of a watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed (including deletionTimestamp being set).
    Modified,
    /// Gone.
    Deleted,
}

impl EventType {
    /// Wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Clone, Debug)]
pub struct Event {
    /// resourceVersion of the change.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// Which resource type.
    pub key: ResourceKey,
    /// Namespace ("" for cluster-scoped).
    pub namespace: String,
    /// The object after the change (before, for deletes, with the delete's resourceVersion).
    pub object: Value,
}

/// Options of a write.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
    /// `fieldValidation=Strict`: refuse unknown fields instead of pruning them.
    pub strict_fields: bool,
}

/// How dependents are treated when their owner is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Propagation {
    /// Delete dependents after the owner (also used for `Foreground`, which is not modelled separately).
    #[default]
    Background,
    /// Remove the ownerReference and keep the dependents.
    Orphan,
}

/// Options of a delete.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// Dependents policy.
    pub propagation: Propagation,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

/// The whole state.
#[derive(Debug)]
pub struct Store {
    /// Served types.
    pub registry: Registry,
    objects: HashMap<ResourceKey, BTreeMap<(String, String), Value>>,
    rv: u64,
    log: VecDeque<Arc<Event>>,
    log_capacity: usize,
    compacted_through: u64,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Store {
    /// An empty store with the built-in types and the `default`, `kube-system` and `kube-public` namespaces.
    pub fn new(log_capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(16_384);
        let mut store = Self {
            registry: Registry::with_builtins(),
            objects: HashMap::new(),
            rv: 0,
            log: VecDeque::new(),
            log_capacity: log_capacity.max(1),
            compacted_through: 0,
            tx,
        };
        let ns_type = store
            .registry
            .get("", "v1", "namespaces")
            .cloned()
            .expect("namespaces is built in");
        for ns in ["default", "kube-system", "kube-public"] {
            store
                .create(
                    &ns_type,
                    "",
                    json!({"metadata": {"name": ns}}),
                    &WriteOptions::default(),
                )
                .expect("fresh store accepts namespaces");
        }
        store
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// A receiver of every future event.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Drops the whole event log, so any watch from an older resourceVersion gets 410 Gone (what etcd compaction
    /// does to a real API server).
    pub fn compact(&mut self) {
        self.log.clear();
        self.compacted_through = self.rv;
    }

    /// Test hook: makes every resourceVersion known so far unusable for watching (even the current one), as if the
    /// server had restarted with a compacted history. Clients must re-list; watches work again after the next
    /// write.
    pub fn expire_watch_positions(&mut self) {
        self.log.clear();
        self.compacted_through = self.rv + 1;
    }

    /// Events after `rv` for one type (and namespace, when given); `Err` when `rv` was compacted away.
    pub fn events_since(
        &self,
        key: &ResourceKey,
        namespace: Option<&str>,
        rv: u64,
    ) -> Result<Vec<Arc<Event>>, ApiError> {
        if rv < self.compacted_through {
            return Err(ApiError::gone(rv, self.compacted_through + 1));
        }
        Ok(self
            .log
            .iter()
            .filter(|e| e.rv > rv && &e.key == key && namespace.is_none_or(|ns| e.namespace == ns))
            .cloned()
            .collect())
    }

    /// Gets one object.
    pub fn get(&self, t: &ResourceType, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&t.key())
            .and_then(|m| m.get(&(namespace.to_owned(), name.to_owned())))
            .map(|o| as_version(o, t))
            .ok_or_else(|| ApiError::not_found(&qualified(t), name))
    }

    /// Lists objects (all namespaces when `namespace` is `None`), filtered by selectors.
    pub fn list(
        &self,
        t: &ResourceType,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Value> {
        self.objects
            .get(&t.key())
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|((ns, _), _)| namespace.is_none_or(|want| ns == want))
            .map(|(_, o)| o)
            .filter(|o| labels.matches(o) && fields.matches(o))
            .map(|o| as_version(o, t))
            .collect()
    }

    /// Creates an object.
    pub fn create(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let mut obj = body;
        if !obj.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        check_type_meta(&obj, t)?;
        let ns = self.check_namespace(t, namespace, &obj)?;
        let name = match obj["metadata"]["name"].as_str().filter(|n| !n.is_empty()) {
            Some(name) => name.to_owned(),
            None => match obj["metadata"]["generateName"].as_str() {
                Some(prefix) => self.generate_name(t, &ns, prefix),
                None => {
                    return Err(ApiError::invalid(
                        &t.kind,
                        "",
                        vec![("metadata.name".into(), "name or generateName is required".into())],
                    ));
                }
            },
        };
        if self
            .objects
            .get(&t.key())
            .is_some_and(|m| m.contains_key(&(ns.clone(), name.clone())))
        {
            return Err(ApiError::already_exists(&qualified(t), &name));
        }
        if t.status_subresource
            && let Some(map) = obj.as_object_mut()
        {
            map.remove("status");
        }
        obj = self.admit_custom_resource(t, &name, obj, opts)?;
        validate_labels(t, &name, &obj)?;
        let now = now_string();
        {
            let meta = metadata_mut(&mut obj);
            meta.insert("name".into(), json!(name));
            if t.namespaced {
                meta.insert("namespace".into(), json!(ns));
            }
            meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            meta.insert("creationTimestamp".into(), json!(now));
            meta.insert("generation".into(), json!(1));
            meta.remove("deletionTimestamp");
            meta.remove("deletionGracePeriodSeconds");
            meta.remove("managedFields");
        }
        obj["apiVersion"] = json!(t.api_version());
        obj["kind"] = json!(t.kind);
        self.on_create_hooks(t, &mut obj)?;
        if opts.dry_run {
            return Ok(obj);
        }
        let stored = self.commit(t, &ns, &name, obj, EventType::Added);
        Ok(as_version(&stored, t))
    }

    /// Replaces an object (PUT), or only its status with `status_only`.
    pub fn update(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        name: &str,
        body: Value,
        status_only: bool,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let existing = self.get(t, namespace, name)?;
        if let Some(rv) = body["metadata"]["resourceVersion"].as_str().filter(|rv| !rv.is_empty())
            && Some(rv) != existing["metadata"]["resourceVersion"].as_str()
        {
            return Err(ApiError::conflict(
                &qualified(t),
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        if body["metadata"]["name"].as_str().is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name in the URL",
            ));
        }
        check_type_meta(&body, t)?;
        let mut next = if status_only {
            let mut next = existing.clone();
            match body.get("status") {
                Some(status) => next["status"] = status.clone(),
                None => {
                    if let Some(map) = next.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
            next
        } else {
            let mut next = body;
            if t.status_subresource {
                match existing.get("status") {
                    Some(status) => next["status"] = status.clone(),
                    None => {
                        if let Some(map) = next.as_object_mut() {
                            map.remove("status");
                        }
                    }
                }
            }
            // System-owned metadata never comes from the client.
            let keep = [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ];
            let old_meta = existing["metadata"].as_object().cloned().unwrap_or_default();
            let meta = metadata_mut(&mut next);
            for key in keep {
                match old_meta.get(key) {
                    Some(v) => meta.insert(key.into(), v.clone()),
                    None => meta.remove(key),
                };
            }
            meta.remove("managedFields");
            next
        };
        next["apiVersion"] = json!(t.api_version());
        next["kind"] = json!(t.kind);
        if !status_only && spec_of(&next) != spec_of(&existing) {
            next = self.admit_custom_resource(t, name, next, opts)?;
            let generation = existing["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            next["metadata"]["generation"] = json!(generation);
        } else if status_only && t.validator.is_some() {
            next = self.admit_custom_resource(t, name, next, opts)?;
        }
        next["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"].clone();
        if next == existing {
            return Ok(existing);
        }
        if !status_only {
            validate_labels(t, name, &next)?;
        }
        if t.kind == "CustomResourceDefinition" && !status_only {
            self.register_crd(&next)?;
        }
        if opts.dry_run {
            return Ok(next);
        }
        let finalizers_empty = next["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty);
        if next["metadata"].get("deletionTimestamp").is_some() && finalizers_empty {
            return Ok(self.remove(t, namespace, name, Propagation::Background));
        }
        let stored = self.commit(t, namespace, name, next, EventType::Modified);
        Ok(as_version(&stored, t))
    }

    /// Deletes an object: at once without finalizers, else marks it with a deletionTimestamp.
    pub fn delete(
        &mut self,
        t: &ResourceType,
        namespace: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let existing = self.get(t, namespace, name)?;
        if let Some(uid) = &opts.uid
            && existing["metadata"]["uid"].as_str() != Some(uid.as_str())
        {
            return Err(ApiError::conflict(
                &qualified(t),
                name,
                "Precondition failed: UID in precondition does not match",
            ));
        }
        if let Some(rv) = &opts.resource_version
            && existing["metadata"]["resourceVersion"].as_str() != Some(rv.as_str())
        {
            return Err(ApiError::conflict(
                &qualified(t),
                name,
                "Precondition failed: resourceVersion does not match",
            ));
        }
        if opts.dry_run {
            return Ok(existing);
        }
        let has_finalizers = existing["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if existing["metadata"].get("deletionTimestamp").is_some() {
                return Ok(existing);
            }
            let mut next = existing;
            next["metadata"]["deletionTimestamp"] = json!(now_string());
            next["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let stored = self.commit(t, namespace, name, next, EventType::Modified);
            return Ok(as_version(&stored, t));
        }
        Ok(self.remove(t, namespace, name, opts.propagation))
    }

    /// Removes an object for good, then collects its dependents.
    fn remove(&mut self, t: &ResourceType, namespace: &str, name: &str, propagation: Propagation) -> Value {
        let Some(mut obj) = self
            .objects
            .get_mut(&t.key())
            .and_then(|m| m.remove(&(namespace.to_owned(), name.to_owned())))
        else {
            return Value::Null;
        };
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(Event {
            rv: self.rv,
            kind: EventType::Deleted,
            key: t.key(),
            namespace: namespace.to_owned(),
            object: obj.clone(),
        });
        let uid = obj["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
        match t.kind.as_str() {
            "Namespace" => self.purge_namespace(name),
            "CustomResourceDefinition" => self.unregister_crd(&obj),
            _ => {}
        }
        self.collect_dependents(&uid, propagation);
        as_version(&obj, t)
    }

    /// Background GC: dependents whose only owner is gone are deleted; others lose the reference.
    fn collect_dependents(&mut self, owner_uid: &str, propagation: Propagation) {
        if owner_uid.is_empty() {
            return;
        }
        let mut touched = Vec::new();
        for (key, objects) in &self.objects {
            for ((ns, name), obj) in objects {
                let refs = obj["metadata"]["ownerReferences"].as_array();
                if refs.is_some_and(|r| r.iter().any(|o| o["uid"] == owner_uid)) {
                    touched.push((key.clone(), ns.clone(), name.clone()));
                }
            }
        }
        for (key, ns, name) in touched {
            let Some(t) = self.type_for_key(&key) else { continue };
            let Ok(mut obj) = self.get(&t, &ns, &name) else {
                continue;
            };
            let remaining: Vec<Value> = obj["metadata"]["ownerReferences"]
                .as_array()
                .map(|r| r.iter().filter(|o| o["uid"] != owner_uid).cloned().collect())
                .unwrap_or_default();
            if remaining.is_empty() && propagation == Propagation::Background {
                let _ = self.delete(&t, &ns, &name, &DeleteOptions::default());
            } else {
                obj["metadata"]["ownerReferences"] = json!(remaining);
                let _ = self.update(&t, &ns, &name, obj, false, &WriteOptions::default());
            }
        }
    }

    fn purge_namespace(&mut self, namespace: &str) {
        let keys: Vec<ResourceKey> = self.objects.keys().cloned().collect();
        for key in keys {
            let names: Vec<String> = self.objects[&key]
                .keys()
                .filter(|(ns, _)| ns == namespace)
                .map(|(_, n)| n.clone())
                .collect();
            if let Some(t) = self.type_for_key(&key) {
                for name in names {
                    self.remove(&t, namespace, &name, Propagation::Background);
                }
            }
        }
    }

    fn type_for_key(&self, key: &ResourceKey) -> Option<ResourceType> {
        self.registry.by_key(key).cloned()
    }

    fn commit(&mut self, t: &ResourceType, namespace: &str, name: &str, mut obj: Value, kind: EventType) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects
            .entry(t.key())
            .or_default()
            .insert((namespace.to_owned(), name.to_owned()), obj.clone());
        self.record(Event {
            rv: self.rv,
            kind,
            key: t.key(),
            namespace: namespace.to_owned(),
            object: obj.clone(),
        });
        obj
    }

    fn record(&mut self, event: Event) {
        let event = Arc::new(event);
        self.log.push_back(event.clone());
        while self.log.len() > self.log_capacity {
            if let Some(dropped) = self.log.pop_front() {
                self.compacted_through = dropped.rv;
            }
        }
        let _ = self.tx.send(event);
    }

    fn check_namespace(&self, t: &ResourceType, namespace: &str, obj: &Value) -> Result<String, ApiError> {
        if !t.namespaced {
            return Ok(String::new());
        }
        let body_ns = obj["metadata"]["namespace"].as_str().unwrap_or_default();
        let ns = if namespace.is_empty() { body_ns } else { namespace };
        if ns.is_empty() {
            return Err(ApiError::bad_request(
                "a namespace is required for a namespaced resource",
            ));
        }
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let exists = self
            .objects
            .get(&ResourceKey {
                group: String::new(),
                plural: "namespaces".into(),
            })
            .is_some_and(|m| m.contains_key(&(String::new(), ns.to_owned())));
        if !exists {
            return Err(ApiError::not_found("namespaces", ns));
        }
        Ok(ns.to_owned())
    }

    fn generate_name(&self, t: &ResourceType, namespace: &str, prefix: &str) -> String {
        loop {
            let suffix: String = uuid::Uuid::new_v4().simple().to_string().chars().take(5).collect();
            let name = format!("{prefix}{suffix}");
            if !self
                .objects
                .get(&t.key())
                .is_some_and(|m| m.contains_key(&(namespace.to_owned(), name.clone())))
            {
                return name;
            }
        }
    }

    /// Defaulting, pruning (or strict refusal) and validation of a custom resource against its CRD schema.
    fn admit_custom_resource(
        &self,
        t: &ResourceType,
        name: &str,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let Some(validator) = &t.validator else { return Ok(obj) };
        let schema = validator.structural_schema();
        let mut obj = crd_schema::apply_defaults(schema, &obj);
        let pruned = crd_schema::prune_unknown(schema, &mut obj);
        if opts.strict_fields && !pruned.is_empty() {
            let causes = pruned
                .into_iter()
                .map(|p| (p, "field not declared in schema".to_owned()))
                .collect();
            return Err(ApiError::invalid(&t.kind, name, causes));
        }
        validator.validate(&obj).map_err(|errors| {
            ApiError::invalid(&t.kind, name, errors.into_iter().map(|e| (e.path, e.message)).collect())
        })?;
        Ok(obj)
    }

    fn on_create_hooks(&mut self, t: &ResourceType, obj: &mut Value) -> Result<(), ApiError> {
        match (t.group.as_str(), t.kind.as_str()) {
            ("", "Namespace") => obj["status"] = json!({"phase": "Active"}),
            ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                self.register_crd(obj)?;
                let now = now_string();
                obj["status"] = json!({
                    "acceptedNames": obj["spec"]["names"].clone(),
                    "storedVersions": obj["spec"]["versions"].as_array().map(|v| v.iter().filter(|v| v["storage"] == true).map(|v| v["name"].clone()).collect::<Vec<_>>()).unwrap_or_default(),
                    "conditions": [
                        {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                        {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
                    ],
                });
            }
            _ => {}
        }
        Ok(())
    }

    fn register_crd(&mut self, crd: &Value) -> Result<(), ApiError> {
        let name = crd["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let types = types_from_crd(crd)
            .map_err(|e| ApiError::invalid("CustomResourceDefinition", &name, vec![("spec".into(), e)]))?;
        if let Some(first) = types.first() {
            self.registry.remove(&first.key());
        }
        for t in types {
            self.registry.insert(t);
        }
        Ok(())
    }

    fn unregister_crd(&mut self, crd: &Value) {
        let key = ResourceKey {
            group: crd["spec"]["group"].as_str().unwrap_or_default().to_owned(),
            plural: crd["spec"]["names"]["plural"].as_str().unwrap_or_default().to_owned(),
        };
        if let Some(objects) = self.objects.remove(&key) {
            for ((ns, _), mut obj) in objects {
                self.rv += 1;
                obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
                self.record(Event {
                    rv: self.rv,
                    kind: EventType::Deleted,
                    key: key.clone(),
                    namespace: ns,
                    object: obj,
                });
            }
        }
        self.registry.remove(&key);
    }
}

/// Everything but metadata and status: what `generation` tracks.
fn spec_of(obj: &Value) -> Value {
    let mut copy = obj.clone();
    if let Some(map) = copy.as_object_mut() {
        for key in ["metadata", "status", "apiVersion", "kind"] {
            map.remove(key);
        }
    }
    copy
}

fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

/// Label keys and values as the real API server validates them (apimachinery `ValidateLabels`): a value is at
/// most 63 characters of `[A-Za-z0-9_.-]` starting and ending alphanumeric (or empty); a key is an optional DNS
/// subdomain prefix (at most 253) and `/`, then a name of at most 63 such characters. Checked on
/// `metadata.labels` and on a pod template's labels (Jobs, Deployments), where a too-long value refuses the whole
/// object.
fn validate_labels(t: &ResourceType, name: &str, obj: &Value) -> Result<(), ApiError> {
    const VALUE_RULE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' \
        or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', \
        regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
    fn is_label_name(v: &str) -> bool {
        let bytes = v.as_bytes();
        bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    }
    fn is_dns_subdomain(v: &str) -> bool {
        !v.is_empty()
            && v.len() <= 253
            && v.split('.').all(|part| {
                let b = part.as_bytes();
                b.first().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && b.last().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                    && b.iter()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            })
    }
    let mut causes = Vec::new();
    let mut check = |path: &str, labels: &Value| {
        for (key, value) in labels.as_object().into_iter().flatten() {
            let (prefix, key_name) = key.rsplit_once('/').map_or((None, key.as_str()), |(p, n)| (Some(p), n));
            if key_name.len() > 63 || !is_label_name(key_name) || prefix.is_some_and(|p| !is_dns_subdomain(p)) {
                causes.push((
                    path.to_owned(),
                    format!("{key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, with at most 63 characters"),
                ));
            }
            let value = value.as_str().unwrap_or_default();
            if value.len() > 63 {
                causes.push((
                    path.to_owned(),
                    format!("{value:?}: must be no more than 63 characters"),
                ));
            } else if !value.is_empty() && !is_label_name(value) {
                causes.push((path.to_owned(), format!("{value:?}: {VALUE_RULE}")));
            }
        }
    };
    check("metadata.labels", &obj["metadata"]["labels"]);
    check(
        "spec.template.metadata.labels",
        &obj["spec"]["template"]["metadata"]["labels"],
    );
    // The Job controller's defaulting labels the Pod template with the Job's name (`job-name`,
    // `batch.kubernetes.io/job-name`), so the real server refuses a Job whose name is not a valid label value
    // (found by tests/tests/real_cluster.rs against kube-apiserver v1.33).
    if t.group == "batch" && t.kind == "Job" && name.len() > 63 {
        causes.push((
            "spec.template.labels".to_owned(),
            format!("Invalid value: {name:?}: must be no more than 63 characters"),
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&t.kind, name, causes))
    }
}

fn check_type_meta(obj: &Value, t: &ResourceType) -> Result<(), ApiError> {
    if let Some(kind) = obj["kind"].as_str()
        && kind != t.kind
    {
        return Err(ApiError::bad_request(format!(
            "the body kind {kind} does not match the resource {}",
            t.plural
        )));
    }
    if let Some(api_version) = obj["apiVersion"].as_str()
        && api_version.split('/').next() != t.api_version().split('/').next()
        && !t.group.is_empty()
    {
        return Err(ApiError::bad_request(format!(
            "the body apiVersion {api_version} does not match {}",
            t.api_version()
        )));
    }
    Ok(())
}

/// `pods`, `jobs.batch`, `packerbuilders.ami.refresh.ops` as error messages name them.
fn qualified(t: &ResourceType) -> String {
    if t.group.is_empty() {
        t.plural.clone()
    } else {
        format!("{}.{}", t.plural, t.group)
    }
}

fn as_version(obj: &Value, t: &ResourceType) -> Value {
    let mut out = obj.clone();
    out["apiVersion"] = json!(t.api_version());
    out["kind"] = json!(t.kind);
    out
}

/// RFC 3339, whole seconds, UTC: the API server's timestamp format.
pub fn now_string() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}
