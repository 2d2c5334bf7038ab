//! HTTP front end: routing of Kubernetes REST paths onto the store, list and watch, discovery, pod logs, and
//! the request record.

use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{Query, State},
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    Shared,
    error::ApiError,
    patch::PatchType,
    resources::ResourceType,
    selectors::{FieldSelector, LabelSelector},
    store::{DeleteOptions, Propagation, WriteOptions},
};

/// One request served, in RBAC terms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// API group ("" for core).
    pub group: String,
    /// Plural resource name.
    pub resource: String,
    /// Namespace ("" for cluster-scoped or all namespaces).
    pub namespace: String,
    /// Subresource, e.g. `status` or `log` ("" for none).
    pub subresource: String,
    /// Object name ("" for collections).
    pub name: String,
    /// Who asked: the bearer token of the request ("" without one). Kubeconfigs from
    /// [`crate::ApiServer::write_kubeconfig_as`] carry a user name as token, so tests can tell clients apart.
    pub user: String,
}

/// A parsed resource path.
#[derive(Debug)]
struct Target {
    t: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    match route(&shared, &method, &uri, &headers, &query, body).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    }
}

fn error_response(error: &ApiError) -> Response {
    let code = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &error.to_status())
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

fn ok(value: &Value) -> Response {
    json_response(StatusCode::OK, value)
}

async fn route(
    shared: &Arc<Shared>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let path = uri.path().trim_end_matches('/');
    match path {
        "/healthz" | "/readyz" | "/livez" => return Ok((StatusCode::OK, "ok").into_response()),
        "/version" => {
            return Ok(ok(
                &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-kube-sim",
                "gitCommit": "kube-sim", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "n/a", "compiler": "rustc", "platform": "linux/amd64"}),
            ));
        }
        "/api" => return Ok(ok(&shared.lock().registry.core_versions())),
        "/apis" => return Ok(ok(&shared.lock().registry.group_list())),
        "/sim/requests" => return Ok(ok(&serde_json::to_value(shared.requests()).unwrap_or_default())),
        "/openapi/v3" => return Ok(ok(&shared.lock().registry.openapi_v3_root())),
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/openapi/v3/") {
        let segments: Vec<&str> = rest.split('/').collect();
        let found = match segments.as_slice() {
            ["api", version] => shared.lock().registry.openapi_v3_group_version("", version),
            ["apis", group, version] => shared.lock().registry.openapi_v3_group_version(group, version),
            _ => None,
        };
        return found.map(|doc| ok(&doc)).ok_or_else(|| ApiError::no_route(path));
    }
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        ["apis", group] => {
            let list = shared.lock().registry.group_list();
            let found = list["groups"]
                .as_array()
                .and_then(|g| g.iter().find(|g| g["name"] == *group))
                .cloned();
            return found.map(|g| ok(&g)).ok_or_else(|| ApiError::no_route(path));
        }
        _ => return Err(ApiError::no_route(path)),
    };
    if rest.is_empty() {
        let store = shared.lock();
        if !store.registry.group_version_exists(group, version) {
            return Err(ApiError::no_route(path));
        }
        return Ok(ok(&store.registry.resource_list(group, version)));
    }
    let target = {
        let store = shared.lock();
        let lookup = |plural: &str| store.registry.get(group, version, plural).cloned();
        match rest {
            ["namespaces", ns, plural, more @ ..]
                if lookup(plural).is_some_and(|t| t.namespaced) && more.len() <= 2 =>
            {
                Target {
                    t: lookup(plural).ok_or_else(|| ApiError::no_route(path))?,
                    namespace: Some((*ns).to_owned()),
                    name: more.first().map(|s| (*s).to_owned()),
                    subresource: more.get(1).map(|s| (*s).to_owned()),
                }
            }
            [plural, more @ ..] if more.len() <= 2 => Target {
                t: lookup(plural).ok_or_else(|| ApiError::no_route(path))?,
                namespace: None,
                name: more.first().map(|s| (*s).to_owned()),
                subresource: more.get(1).map(|s| (*s).to_owned()),
            },
            _ => return Err(ApiError::no_route(path)),
        }
    };
    if target.t.namespaced && target.name.is_some() && target.namespace.is_none() {
        return Err(ApiError::no_route(path));
    }
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match (method.as_str(), target.name.is_some(), watch) {
        ("GET", _, true) => "watch",
        ("GET", true, false) => "get",
        ("GET", false, false) => "list",
        ("POST", false, _) => "create",
        ("PUT", true, _) => "update",
        ("PATCH", true, _) => "patch",
        ("DELETE", true, _) => "delete",
        ("DELETE", false, _) => "deletecollection",
        _ => {
            return Err(ApiError::method_not_allowed(format!(
                "{method} is not supported on {path}"
            )));
        }
    };
    shared.record(RequestRecord {
        verb: verb.to_owned(),
        group: group.to_owned(),
        resource: target.t.plural.clone(),
        namespace: target.namespace.clone().unwrap_or_default(),
        subresource: target.subresource.clone().unwrap_or_default(),
        name: target.name.clone().unwrap_or_default(),
        user: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_owned(),
    });
    serve(shared, verb, &target, headers, query, &body).await
}

async fn serve(
    shared: &Arc<Shared>,
    verb: &str,
    target: &Target,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Result<Response, ApiError> {
    let t = &target.t;
    let ns = target.namespace.clone().unwrap_or_default();
    let name = target.name.clone().unwrap_or_default();
    let sub = target.subresource.as_deref();
    match sub {
        None | Some("status") => {}
        Some("log") if t.kind == "Pod" && verb == "get" => return pod_log(shared, &ns, &name, query).await,
        Some(other) => return Err(ApiError::no_route(&format!("{}/{other}", t.plural))),
    }
    if sub == Some("status") && !t.status_subresource {
        return Err(ApiError::no_route(&format!("{}/status", t.plural)));
    }
    let status_only = sub == Some("status");
    // Bodies are JSON (or YAML); of protobuf only the Namespace `kubectl create namespace` sends is understood.
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let decoded;
    let body = if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        let namespace = crate::protobuf::decode(body).ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
        decoded = serde_json::to_vec(&namespace).unwrap_or_default();
        decoded.as_slice()
    } else {
        body
    };
    let write = WriteOptions {
        dry_run: query.get("dryRun").is_some_and(|d| d == "All"),
        strict_fields: query.get("fieldValidation").is_some_and(|v| v == "Strict"),
    };
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))?;
    let fields = FieldSelector::parse(query.get("fieldSelector").map_or("", String::as_str))?;
    let table = wants_table(headers).then(|| query.get("includeObject").cloned().unwrap_or_default());
    match verb {
        "get" => {
            let store = shared.lock();
            let object = store.get(t, &ns, &name)?;
            match &table {
                Some(include) => Ok(ok(&to_table(
                    t,
                    &[object],
                    &store.resource_version().to_string(),
                    include,
                ))),
                None => Ok(ok(&object)),
            }
        }
        "list" if table.is_some() => {
            let store = shared.lock();
            let items = store.list(t, target.namespace.as_deref(), &labels, &fields);
            let include = table.unwrap_or_default();
            Ok(ok(&to_table(
                t,
                &items,
                &store.resource_version().to_string(),
                &include,
            )))
        }
        "list" => {
            let store = shared.lock();
            let items = store.list(t, target.namespace.as_deref(), &labels, &fields);
            Ok(ok(&json!({
                "kind": format!("{}List", t.kind),
                "apiVersion": t.api_version(),
                "metadata": {"resourceVersion": store.resource_version().to_string()},
                "items": items,
            })))
        }
        "watch" => watch(shared, target, query, labels, fields, table),
        "create" => {
            let obj = parse_body(body)?;
            let created = shared.lock().create(t, &ns, obj, &write)?;
            mirror_event(shared, t, &created, &write);
            Ok(json_response(StatusCode::CREATED, &created))
        }
        "update" => {
            let obj = parse_body(body)?;
            let updated = shared.lock().update(t, &ns, &name, obj, status_only, &write)?;
            mirror_event(shared, t, &updated, &write);
            Ok(ok(&updated))
        }
        "patch" => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let patch_type = PatchType::from_content_type(content_type)?;
            if patch_type == PatchType::Apply && query.get("fieldManager").is_none_or(String::is_empty) {
                return Err(ApiError::bad_request("PATCH with apply requires a fieldManager"));
            }
            let mut store = shared.lock();
            let existing = match store.get(t, &ns, &name) {
                Ok(existing) => existing,
                Err(e) if e.code == 404 && patch_type == PatchType::Apply && !status_only => {
                    let obj: Value = serde_norway::from_slice(body)
                        .map_err(|e| ApiError::bad_request(format!("invalid apply configuration: {e}")))?;
                    let created = store.create(t, &ns, obj, &write)?;
                    return Ok(json_response(StatusCode::CREATED, &created));
                }
                Err(e) => return Err(e),
            };
            let patched = crate::patch::apply(&existing, patch_type, body, t.validator.is_none())?;
            let updated = store.update(t, &ns, &name, patched, status_only, &write)?;
            drop(store);
            mirror_event(shared, t, &updated, &write);
            Ok(ok(&updated))
        }
        "delete" => {
            let opts = delete_options(body, query)?;
            Ok(ok(&shared.lock().delete(t, &ns, &name, &opts)?))
        }
        "deletecollection" => {
            let opts = delete_options(body, query)?;
            let mut store = shared.lock();
            let victims = store.list(t, target.namespace.as_deref(), &labels, &fields);
            let mut deleted = Vec::new();
            for victim in victims {
                let vns = victim["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
                let vname = victim["metadata"]["name"].as_str().unwrap_or_default().to_owned();
                deleted.push(store.delete(t, &vns, &vname, &opts)?);
            }
            Ok(ok(
                &json!({"kind": format!("{}List", t.kind), "apiVersion": t.api_version(),
                "metadata": {"resourceVersion": store.resource_version().to_string()}, "items": deleted}),
            ))
        }
        _ => Err(ApiError::method_not_allowed(verb.to_owned())),
    }
}

/// In a real API server `events.k8s.io/v1` and core `v1` Events are one stored object seen through two versions,
/// so `kubectl get events` and `kubectl describe` (core v1) show what controllers record with events.k8s.io. Here
/// the two are separate stores; an events.k8s.io Event written through the API is mirrored into a core Event of
/// the same name with the fields converted as the API server converts them.
fn mirror_event(shared: &Arc<Shared>, t: &ResourceType, event: &Value, write: &WriteOptions) {
    if t.group != "events.k8s.io" || t.plural != "events" || write.dry_run {
        return;
    }
    let mut store = shared.lock();
    let Some(core) = store.registry.get("", "v1", "events").cloned() else {
        return;
    };
    let ns = event["metadata"]["namespace"].as_str().unwrap_or_default().to_owned();
    let name = event["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    let mut mirrored = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": name, "namespace": ns,
                     "labels": event["metadata"]["labels"], "annotations": event["metadata"]["annotations"]},
        "involvedObject": event["regarding"],
        "related": event["related"],
        "reason": event["reason"],
        "message": event["note"],
        "type": event["type"],
        "action": event["action"],
        "eventTime": event["eventTime"],
        "series": event["series"],
        "reportingComponent": event["reportingController"],
        "reportingInstance": event["reportingInstance"],
        "source": event["deprecatedSource"],
        "firstTimestamp": event["deprecatedFirstTimestamp"],
        "lastTimestamp": event["deprecatedLastTimestamp"],
        "count": event["deprecatedCount"],
    });
    if let Some(fields) = mirrored.as_object_mut() {
        fields.retain(|_, v| !v.is_null());
    }
    if let Some(meta) = mirrored["metadata"].as_object_mut() {
        meta.retain(|_, v| !v.is_null());
    }
    let options = WriteOptions::default();
    let result = match store.get(&core, &ns, &name) {
        Ok(existing) => {
            mirrored["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"].clone();
            store.update(&core, &ns, &name, mirrored, false, &options)
        }
        Err(_) => store.create(&core, &ns, mirrored, &options),
    };
    if let Err(error) = result {
        tracing::debug!(?error, "mirroring an events.k8s.io Event as a core Event failed");
    }
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    serde_json::from_slice(body)
        .or_else(|_| serde_norway::from_slice(body))
        .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

fn delete_options(body: &[u8], query: &HashMap<String, String>) -> Result<DeleteOptions, ApiError> {
    let opts: Value = if body.is_empty() { json!({}) } else { parse_body(body)? };
    let policy = opts["propagationPolicy"]
        .as_str()
        .or(query.get("propagationPolicy").map(String::as_str));
    Ok(DeleteOptions {
        propagation: if policy == Some("Orphan") || opts["orphanDependents"] == true {
            Propagation::Orphan
        } else {
            Propagation::Background
        },
        uid: opts["preconditions"]["uid"].as_str().map(str::to_owned),
        resource_version: opts["preconditions"]["resourceVersion"].as_str().map(str::to_owned),
        dry_run: opts["dryRun"].as_array().is_some_and(|d| d.iter().any(|v| v == "All"))
            || query.get("dryRun").is_some_and(|d| d == "All"),
    })
}

fn watch(
    shared: &Arc<Shared>,
    target: &Target,
    query: &HashMap<String, String>,
    labels: LabelSelector,
    fields: FieldSelector,
    table: Option<String>,
) -> Result<Response, ApiError> {
    let t = target.t.clone();
    let key = t.key();
    let namespace = target.namespace.clone();
    let name_filter = target.name.clone();
    let bookmarks = query.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let send_initial = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let requested_rv = query.get("resourceVersion").cloned().unwrap_or_default();
    let matches = move |obj: &Value| {
        labels.matches(obj)
            && fields.matches(obj)
            && name_filter
                .as_deref()
                .is_none_or(|n| obj["metadata"]["name"].as_str() == Some(n))
    };

    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let (initial, mut live, start_rv, gone) = {
        let store = shared.lock();
        let live = store.subscribe();
        let current = store.resource_version();
        if requested_rv.is_empty() || requested_rv == "0" || send_initial {
            let objects = store.list(
                &t,
                namespace.as_deref(),
                &LabelSelector::default(),
                &FieldSelector::default(),
            );
            let initial: Vec<Value> = objects
                .into_iter()
                .filter(|o| matches(o))
                .map(|o| json!({"type": "ADDED", "object": o}))
                .collect();
            (initial, live, current, None)
        } else {
            let from = requested_rv
                .parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {requested_rv:?}")))?;
            match store.events_since(&key, namespace.as_deref(), from) {
                Ok(events) => {
                    let backlog = events
                        .iter()
                        .filter(|e| matches(&e.object))
                        .map(|e| event_json(&e.kind, &e.object, &t, table.as_deref()))
                        .collect();
                    (backlog, live, current, None)
                }
                Err(gone) => (Vec::new(), live, current, Some(gone)),
            }
        }
    };
    let kind = t.kind.clone();
    let api_version = t.api_version();
    tokio::spawn(async move {
        let send = |v: Value| {
            let tx = tx.clone();
            async move { tx.send(Bytes::from(format!("{v}\n"))).await.is_ok() }
        };
        if let Some(gone) = gone {
            let _ = send(json!({"type": "ERROR", "object": gone.to_status()})).await;
            return;
        }
        for event in initial {
            if !send(event).await {
                return;
            }
        }
        let bookmark = |rv: u64| {
            json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version,
                "metadata": {"resourceVersion": rv.to_string()}}})
        };
        if send_initial && bookmarks {
            let mut b = bookmark(start_rv);
            b["object"]["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            if !send(b).await {
                return;
            }
        }
        let mut processed = start_rv;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = &mut deadline => return,
                _ = tick.tick(), if bookmarks => {
                    if !send(bookmark(processed)).await { return; }
                }
                received = live.recv() => match received {
                    Ok(event) => {
                        if event.rv <= processed {
                            continue;
                        }
                        processed = event.rv;
                        let in_scope = event.key == key && namespace.as_deref().is_none_or(|ns| event.namespace == ns);
                        if in_scope && matches(&event.object) && !send(event_json(&event.kind, &event.object, &t, table.as_deref())).await {
                            return;
                        }
                    }
                    // Lagged or closed: end the stream; the client resumes from its last resourceVersion.
                    Err(_) => return,
                },
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

fn event_json(kind: &crate::store::EventType, object: &Value, t: &ResourceType, table: Option<&str>) -> Value {
    let mut object = object.clone();
    object["apiVersion"] = json!(t.api_version());
    object["kind"] = json!(t.kind);
    if let Some(include) = table {
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        object = to_table(t, &[object], &rv, include);
    }
    json!({"type": kind.as_str(), "object": object})
}

/// Kubernetes' `duration.HumanDuration` of the time since `at` (`45s`, `3m20s`, `5h10m`, `3d4h`, `2y10d`).
fn human_age(at: jiff::Timestamp) -> String {
    let seconds = jiff::Timestamp::now().duration_since(at).as_secs();
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    let either = |big: i64, unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    match () {
        () if s < 120 => format!("{s}s"),
        () if m < 10 => either(m, "m", s % 60, "s"),
        () if m < 180 => format!("{m}m"),
        () if h < 8 => either(h, "h", m % 60, "m"),
        () if h < 48 => format!("{h}h"),
        () if h < 24 * 8 => either(d, "d", h % 24, "h"),
        () if h < 24 * 365 * 2 => format!("{d}d"),
        () if h < 24 * 365 * 8 => either(d / 365, "y", d % 365, "d"),
        () => format!("{}y", d / 365),
    }
}

/// Whether the client asked for `meta.k8s.io/v1` Table output (what `kubectl get` sends first in `Accept`).
fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|accept| accept.split(',').next())
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

/// Objects as a `meta.k8s.io/v1` Table, as the API server renders them for `kubectl get`: a Name column, then a
/// custom resource's `additionalPrinterColumns` (simple `.a.b` JSONPaths), or `Created At` for types without
/// them; each row carries the object's metadata (`includeObject=Metadata`, the default), the whole object
/// (`Object`) or nothing (`None`).
fn to_table(t: &ResourceType, objects: &[Value], resource_version: &str, include: &str) -> Value {
    let mut columns = vec![
        json!({"name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace."}),
    ];
    let printer: Vec<Value> = if t.printer_columns.is_empty() {
        vec![
            json!({"name": "Created At", "type": "date", "jsonPath": ".metadata.creationTimestamp",
            "description": "CreationTimestamp is a timestamp representing the server time when this object was created."}),
        ]
    } else {
        t.printer_columns.clone()
    };
    for column in &printer {
        columns.push(json!({
            "name": column["name"], "type": column["type"], "format": column["format"].as_str().unwrap_or_default(),
            "description": column["description"].as_str().unwrap_or_default(),
            "priority": column["priority"].as_i64().unwrap_or(0),
        }));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![object["metadata"]["name"].clone()];
            for column in &printer {
                let path = column["jsonPath"].as_str().unwrap_or_default();
                let cell = path
                    .trim_start_matches('.')
                    .split('.')
                    .filter(|s| !s.is_empty())
                    .try_fold(object, |v, segment| v.get(segment))
                    .cloned()
                    .unwrap_or(Value::Null);
                // Custom resources' date columns are rendered as an age, as the API server's CRD table
                // convertor does; the default `Created At` column stays a timestamp.
                let cell = match cell.as_str() {
                    Some(stamp) if column["type"] == "date" && !t.printer_columns.is_empty() => stamp
                        .parse::<jiff::Timestamp>()
                        .map_or(cell.clone(), |at| json!(human_age(at))),
                    _ => cell,
                };
                cells.push(cell);
            }
            let mut row = json!({ "cells": cells });
            match include {
                "None" => {}
                "Object" => row["object"] = object.clone(),
                _ => {
                    row["object"] = json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                        "metadata": object["metadata"]});
                }
            }
            row
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
           "columnDefinitions": columns, "rows": rows})
}

async fn pod_log(
    shared: &Arc<Shared>,
    ns: &str,
    pod: &str,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let pods = shared
        .lock()
        .registry
        .get("", "v1", "pods")
        .cloned()
        .ok_or_else(|| ApiError::no_route("pods"))?;
    let pod_obj = shared.lock().get(&pods, ns, pod)?;
    let container = match query.get("container") {
        Some(c) => c.clone(),
        None => {
            let containers = pod_obj["spec"]["containers"].as_array().cloned().unwrap_or_default();
            if containers.len() != 1 {
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod}, choose one of: {:?}",
                    containers.iter().filter_map(|c| c["name"].as_str()).collect::<Vec<_>>()
                )));
            }
            containers[0]["name"].as_str().unwrap_or_default().to_owned()
        }
    };
    let tail = query.get("tailLines").and_then(|t| t.parse::<usize>().ok());
    let follow = query.get("follow").is_some_and(|f| f == "true");
    let key = crate::logs::LogKey {
        namespace: ns.to_owned(),
        pod: pod.to_owned(),
        container,
    };
    let snapshot = shared.logs.snapshot(&key, tail);
    if !follow {
        return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], snapshot.0).into_response());
    }
    let logs = shared.logs.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        let (first, mut offset) = snapshot;
        if !first.is_empty() && tx.send(Bytes::from(first)).await.is_err() {
            return;
        }
        loop {
            let (chunk, next, finished) = logs.read_from(&key, offset).await;
            offset = next;
            if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
            if finished {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}
