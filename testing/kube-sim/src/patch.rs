//! The four patch types: JSON merge (RFC 7386), JSON patch (RFC 6902), strategic merge (built-in kinds only;
//! lists of the fields this project uses are merged by key), and server-side apply (approximated: see
//! [`apply_patch`]).

use serde_json::{Map, Value};

use crate::error::ApiError;

/// The patch type, from the request's `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`
    Merge,
    /// `application/json-patch+json`
    Json,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply)
    Apply,
}

impl PatchType {
    /// Maps a content type.
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

/// Applies a patch body to `target`.
pub fn apply(target: &Value, patch_type: PatchType, body: &[u8], builtin: bool) -> Result<Value, ApiError> {
    let mut out = target.clone();
    match patch_type {
        PatchType::Merge => {
            let patch: Value = parse_json(body)?;
            json_patch::merge(&mut out, &patch);
        }
        PatchType::Json => {
            let patch: json_patch::Patch =
                serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut out, &patch)
                .map_err(|e| ApiError::invalid("", "", vec![(String::new(), format!("JSON patch failed: {e}"))]))?;
        }
        PatchType::Strategic => {
            if !builtin {
                return Err(ApiError::unsupported_media_type(
                    "application/strategic-merge-patch+json is not supported for custom resources",
                ));
            }
            let patch: Value = parse_json(body)?;
            strategic_merge(&mut out, &patch);
        }
        PatchType::Apply => {
            let patch: Value = serde_norway::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid apply configuration: {e}")))?;
            apply_patch(&mut out, &patch, builtin);
        }
    }
    Ok(out)
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Server-side apply, approximated: the applied configuration is merged into the live object (maps merged,
/// lists replaced, or merged by key for built-in kinds). Field ownership is not tracked, so fields a manager
/// stops applying are not removed. Enough for controllers that apply status with a fixed field manager.
pub fn apply_patch(target: &mut Value, applied: &Value, builtin: bool) {
    if builtin {
        strategic_merge(target, applied);
    } else {
        merge_keep_nulls_out(target, applied);
    }
}

fn merge_keep_nulls_out(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else if v.is_object() && t.get(k).is_some_and(Value::is_object) {
                    if let Some(child) = t.get_mut(k) {
                        merge_keep_nulls_out(child, v);
                    }
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// The merge key of a list field in the built-in kinds, per the Kubernetes API's `patchMergeKey`.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "containerStatuses"
        | "initContainerStatuses" => "name",
        "volumeMounts" => "mountPath",
        "ports" => "containerPort",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        _ => return None,
    })
}

/// Strategic merge patch over JSON: maps merge, `null` deletes, lists with a known merge key merge by key
/// (`$patch: delete` removes an element), `finalizers` merge as a set, `$deleteFromPrimitiveList/<field>`
/// removes values from a primitive list; other lists are replaced.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = p.clone();
        replaced.remove("$patch");
        *t = replaced;
        return;
    }
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(remove)) = (t.get_mut(field), v) {
                list.retain(|item| !remove.contains(item));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Array(items) => match (merge_key(k), t.get_mut(k)) {
                (Some(key), Some(Value::Array(existing))) => merge_list_by_key(existing, items, key),
                (None, Some(Value::Array(existing))) if k == "finalizers" => {
                    for item in items {
                        if !existing.contains(item) {
                            existing.push(item.clone());
                        }
                    }
                }
                _ => {
                    let cleaned: Vec<Value> = items.iter().filter(|i| i.get("$patch").is_none()).cloned().collect();
                    t.insert(k.clone(), Value::Array(cleaned));
                }
            },
            Value::Object(_) => strategic_merge(t.entry(k.clone()).or_insert(Value::Null), v),
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

fn merge_list_by_key(existing: &mut Vec<Value>, items: &[Value], key: &str) {
    for item in items {
        let id = item.get(key);
        let position = id.and_then(|id| existing.iter().position(|e| e.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (position, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (Some(i), false) => strategic_merge(&mut existing[i], item),
            (None, false) => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, item);
                existing.push(fresh);
            }
            (None, true) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_and_env_by_name() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "x", "env": [{"name": "K", "value": "1"}, {"name": "L", "value": "2"}]},
            {"name": "b", "image": "y"}
        ]}});
        let patch = json!({"spec": {"containers": [
            {"name": "a", "env": [{"name": "K", "value": "9"}, {"name": "M", "value": "3"}, {"name": "L", "$patch": "delete"}]},
            {"name": "c", "image": "z"}
        ]}});
        strategic_merge(&mut pod, &patch);
        assert_eq!(pod["spec"]["containers"][0]["image"], "x");
        assert_eq!(
            pod["spec"]["containers"][0]["env"],
            json!([{"name": "K", "value": "9"}, {"name": "M", "value": "3"}])
        );
        assert_eq!(pod["spec"]["containers"][1]["name"], "b");
        assert_eq!(pod["spec"]["containers"][2]["name"], "c");
    }

    #[test]
    fn strategic_merge_volumes_by_name_and_other_lists_replaced() {
        let mut spec = json!({"volumes": [{"name": "v1", "emptyDir": {}}], "args": ["a", "b"]});
        strategic_merge(
            &mut spec,
            &json!({"volumes": [{"name": "v2", "emptyDir": {}}], "args": ["c"]}),
        );
        assert_eq!(spec["volumes"].as_array().map(Vec::len), Some(2));
        assert_eq!(spec["args"], json!(["c"]));
    }

    #[test]
    fn finalizers_merge_as_a_set_and_can_be_removed() {
        let mut obj = json!({"metadata": {"finalizers": ["a"]}});
        strategic_merge(&mut obj, &json!({"metadata": {"finalizers": ["a", "b"]}}));
        assert_eq!(obj["metadata"]["finalizers"], json!(["a", "b"]));
        strategic_merge(
            &mut obj,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(obj["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn merge_and_json_patches() {
        let obj = json!({"spec": {"a": 1, "b": [1, 2]}});
        let merged = apply(&obj, PatchType::Merge, br#"{"spec":{"a":null,"b":[3]}}"#, false).expect("merge");
        assert_eq!(merged, json!({"spec": {"b": [3]}}));
        let patched = apply(
            &obj,
            PatchType::Json,
            br#"[{"op":"add","path":"/spec/b/-","value":9}]"#,
            false,
        )
        .expect("json");
        assert_eq!(patched["spec"]["b"], json!([1, 2, 9]));
        assert!(
            apply(
                &obj,
                PatchType::Json,
                br#"[{"op":"test","path":"/spec/a","value":2}]"#,
                false
            )
            .is_err()
        );
    }

    #[test]
    fn strategic_merge_is_refused_for_custom_resources() {
        let err = apply(&json!({}), PatchType::Strategic, b"{}", false).expect_err("refused");
        assert_eq!(err.code, 415);
    }

    #[test]
    fn apply_accepts_yaml_and_json() {
        let obj = json!({"status": {"phase": "Old", "x": 1}});
        let out = apply(&obj, PatchType::Apply, b"status:\n  phase: New\n", false).expect("yaml");
        assert_eq!(out, json!({"status": {"phase": "New", "x": 1}}));
        let out = apply(&obj, PatchType::Apply, br#"{"status":{"phase":"J"}}"#, false).expect("json");
        assert_eq!(out["status"]["phase"], "J");
    }
}
