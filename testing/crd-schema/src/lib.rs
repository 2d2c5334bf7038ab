//! Checks a custom resource against a CustomResourceDefinition's `openAPIV3Schema` the way the Kubernetes API
//! server does on create/update, so examples, fixtures and the in-memory test API server can refuse what a real
//! cluster would refuse:
//!
//! 1. structural defaults are applied ([`apply_defaults`]);
//! 2. unknown fields are reported (as `kubectl apply --validate=strict` does) or pruned ([`prune_unknown`]);
//! 3. the OpenAPI v3 schema is evaluated (types, enums, patterns, lengths, ranges, required);
//! 4. every `x-kubernetes-validations` CEL rule is evaluated (through `kube-cel`).
//!
//! It is a checker for tests and tooling, not an admission webhook: no I/O, no network.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Map, Value};

/// One refusal, naming the field like the API server does (`spec.builder.commands[0].onError`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the offending field; empty for the object itself.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a checker could not be built from a CRD.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The CRD has no version of that name, or the version has no schema.
    #[error("CRD {crd} has no openAPIV3Schema for version {version}")]
    NoSchema {
        /// CRD name.
        crd: String,
        /// Requested version.
        version: String,
    },
    /// The schema is not a valid JSON Schema once translated.
    #[error("CRD schema is not valid JSON Schema: {0}")]
    Invalid(String),
    /// A CEL rule does not compile.
    #[error("CEL rule does not compile: {0}")]
    Cel(String),
}

/// A compiled checker for one version of one CRD.
pub struct CrdValidator {
    structural: Value,
    json_schema: jsonschema::Validator,
    cel: kube_cel::CompiledSchema,
}

impl std::fmt::Debug for CrdValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrdValidator").finish_non_exhaustive()
    }
}

impl CrdValidator {
    /// Builds a checker for `version` of `crd`.
    pub fn new(crd: &CustomResourceDefinition, version: &str) -> Result<Self, SchemaError> {
        let no_schema = || SchemaError::NoSchema {
            crd: crd.metadata.name.clone().unwrap_or_default(),
            version: version.to_owned(),
        };
        let schema = crd
            .spec
            .versions
            .iter()
            .find(|v| v.name == version)
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .ok_or_else(no_schema)?;
        let structural = serde_json::to_value(schema).map_err(|e| SchemaError::Invalid(e.to_string()))?;
        Self::from_structural_schema(structural)
    }

    /// Builds a checker from a raw `openAPIV3Schema` value.
    pub fn from_structural_schema(structural: Value) -> Result<Self, SchemaError> {
        let translated = to_json_schema(&structural, true);
        let json_schema = jsonschema::draft4::new(&translated).map_err(|e| SchemaError::Invalid(e.to_string()))?;
        let cel = kube_cel::compile_schema(&structural);
        if let Some(first) = cel.compilation_errors().first() {
            return Err(SchemaError::Cel(first.to_string()));
        }
        Ok(Self {
            structural,
            json_schema,
            cel,
        })
    }

    /// The schema as the CRD carries it.
    pub fn structural_schema(&self) -> &Value {
        &self.structural
    }

    /// Applies defaults, then checks the object: schema, unknown fields and CEL rules. Returns every refusal.
    pub fn validate(&self, object: &Value) -> Result<(), Vec<FieldError>> {
        let defaulted = apply_defaults(&self.structural, object);
        let mut errors: Vec<FieldError> = self
            .json_schema
            .iter_errors(&defaulted)
            .flat_map(|e| {
                let path = pointer_to_path(&e.instance_path().to_string());
                // Unknown fields are refused one by one at their own path, as the API server does under
                // fieldValidation=Strict (what kubectl sends): `.spec.x: field not declared in schema`.
                if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } = e.kind() {
                    return unexpected
                        .iter()
                        .map(|field| FieldError {
                            path: if path.is_empty() {
                                field.clone()
                            } else {
                                format!("{path}.{field}")
                            },
                            message: "field not declared in schema".to_owned(),
                        })
                        .collect::<Vec<_>>();
                }
                vec![FieldError {
                    message: schema_message(&e, &path),
                    path,
                }]
            })
            .collect();
        // CEL rules only run on a schema-valid object in the API server; do the same so messages stay focused.
        if errors.is_empty()
            && let Err(cel_errors) = kube_cel::validate_compiled(&self.cel, &defaulted, None)
        {
            errors.extend(cel_errors.iter().map(|e| FieldError {
                path: e.field_path.trim_start_matches('.').to_owned(),
                message: e.message.clone(),
            }));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

/// Fills in `default` values from the schema wherever a field is absent, recursively, including defaults of
/// fields inside a default that was just applied (the API server's structural defaulting; `kube_cel`'s own
/// `apply_defaults` stops at the first level, which is why this one exists).
pub fn apply_defaults(schema: &Value, value: &Value) -> Value {
    let mut out = value.clone();
    default_in_place(schema, &mut out);
    out
}

fn default_in_place(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = schema.get("properties") {
                for (name, prop_schema) in props {
                    if !map.contains_key(name)
                        && let Some(default) = prop_schema.get("default")
                    {
                        map.insert(name.clone(), default.clone());
                    }
                    if let Some(child) = map.get_mut(name) {
                        default_in_place(prop_schema, child);
                    }
                }
            }
            if let Some(additional @ Value::Object(_)) = schema.get("additionalProperties") {
                for child in map.values_mut() {
                    default_in_place(additional, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    default_in_place(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

/// Static analysis of every CEL rule in the schema as the API server does when the CRD is created: the estimated
/// cost within the per-rule budget, and bounds (`maxItems`, `maxLength`) on what the rule iterates. (`kube_cel`'s
/// scope check is not used: it reports comprehension variables such as `x` in `self.all(x, ...)` as unknown.) Returns one line per finding, naming the schema path and the rule.
pub fn analyze_rules(schema: &Value) -> Vec<String> {
    let mut findings = Vec::new();
    analyze_at(schema, "", &mut findings);
    findings
}

fn analyze_at(schema: &Value, path: &str, findings: &mut Vec<String>) {
    if let Some(rules) = schema.get("x-kubernetes-validations").and_then(Value::as_array) {
        let compiled = kube_cel::compile_schema(schema);
        for rule in rules.iter().filter_map(|r| r.get("rule").and_then(Value::as_str)) {
            for warning in kube_cel::estimate_rule_cost(rule, &compiled) {
                findings.push(format!("{path}: {}: {}", warning.rule, warning.message));
            }
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            analyze_at(child, &join(path, name), findings);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child @ Value::Object(_)) = schema.get(key) {
            analyze_at(child, &format!("{path}[]"), findings);
        }
    }
}

/// Removes fields the schema does not know (the API server's pruning), except under
/// `x-kubernetes-preserve-unknown-fields` and at the root's `apiVersion`, `kind` and `metadata`. Returns the
/// dotted paths of what was removed.
pub fn prune_unknown(schema: &Value, value: &mut Value) -> Vec<String> {
    let mut pruned = Vec::new();
    prune_at(schema, value, "", true, &mut pruned);
    pruned
}

fn prune_at(schema: &Value, value: &mut Value, path: &str, root: bool, pruned: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_path = join(path, &key);
                if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let child_schema = props.and_then(|p| p.get(&key)).or(additional);
                match (child_schema, map.get_mut(&key)) {
                    (Some(child_schema), Some(child)) => prune_at(child_schema, child, &child_path, false, pruned),
                    _ => {
                        map.remove(&key);
                        pruned.push(child_path);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_at(item_schema, item, &format!("{path}[{i}]"), false, pruned);
                }
            }
        }
        _ => {}
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Translates a structural OpenAPI v3 schema into draft-4 JSON Schema: `nullable` becomes a `null` type,
/// Kubernetes extensions are dropped, and objects refuse unknown properties (strict field validation).
fn to_json_schema(schema: &Value, root: bool) -> Value {
    let Value::Object(map) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        match key.as_str() {
            "nullable" | "description" | "default" | "example" | "externalDocs" => {}
            k if k.starts_with("x-kubernetes-") => {}
            "properties" => {
                let props = value
                    .as_object()
                    .map(|p| {
                        p.iter()
                            .map(|(k, v)| (k.clone(), to_json_schema(v, false)))
                            .collect::<Map<_, _>>()
                    })
                    .unwrap_or_default();
                out.insert(key.clone(), Value::Object(props));
            }
            "items" | "additionalProperties" | "not" => {
                out.insert(key.clone(), to_json_schema(value, false));
            }
            "allOf" | "anyOf" | "oneOf" => {
                let list = value
                    .as_array()
                    .map(|l| l.iter().map(|v| to_json_schema(v, false)).collect())
                    .unwrap_or_default();
                out.insert(key.clone(), Value::Array(list));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    if map.get("nullable") == Some(&Value::Bool(true))
        && let Some(Value::String(t)) = map.get("type")
    {
        out.insert(
            "type".into(),
            Value::Array(vec![Value::String(t.clone()), Value::String("null".into())]),
        );
    }
    let preserves = map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if map.contains_key("properties") && !map.contains_key("additionalProperties") && !preserves {
        if root {
            // The root schema of a CRD does not describe apiVersion, kind and metadata; the API server does.
            if let Some(Value::Object(props)) = out.get_mut("properties") {
                for builtin in ["apiVersion", "kind", "metadata"] {
                    props.entry(builtin).or_insert_with(|| Value::Object(Map::new()));
                }
            }
        }
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    Value::Object(out)
}

/// `/spec/builder/commands/0/onError` -> `spec.builder.commands[0].onError`.
fn pointer_to_path(pointer: &str) -> String {
    let mut path = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str(&format!("[{segment}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(&segment);
        }
    }
    path
}

/// The API server's wording (kube-openapi's validation errors, as `kubectl apply` prints them), so a fixture's
/// expected message holds for both this validator and the real server (`tests/tests/real_cluster.rs` checks).
fn schema_message(error: &jsonschema::ValidationError<'_>, path: &str) -> String {
    use jsonschema::error::ValidationErrorKind as Kind;
    let number = |v: &Value| v.to_string();
    let rule = match error.kind() {
        Kind::Pattern { pattern } => format!("should match '{pattern}'"),
        Kind::MinLength { limit } => format!("should be at least {limit} chars long"),
        Kind::MaxLength { limit } => format!("may not be longer than {limit}"),
        Kind::Minimum { limit } => format!("should be greater than or equal to {}", number(limit)),
        Kind::Maximum { limit } => format!("should be less than or equal to {}", number(limit)),
        Kind::MinItems { limit } => format!("should have at least {limit} items"),
        Kind::MaxItems { limit } => format!("should have at most {limit} items"),
        _ => return error.to_string(),
    };
    // `Invalid value: "nightly": spec.x in body should match '…'`
    format!("Invalid value: {}: {path} in body {rule}", error.instance())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["region"],
                    "properties": {
                        "region": {"type": "string", "pattern": "^[a-z]{2}-[a-z]+-[0-9]$"},
                        "timer": {"type": "string", "default": "5m"},
                        "opts": {
                            "type": "object",
                            "nullable": true,
                            "default": {},
                            "properties": {"n": {"type": "integer", "default": 3, "minimum": 1}}
                        },
                        "list": {"type": "array", "items": {"type": "object", "properties": {"a": {"type": "string"}}}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                    },
                    "x-kubernetes-validations": [
                        {"rule": "self.timer != 'never'", "message": "timer must not be never", "fieldPath": ".timer"}
                    ]
                }
            }
        })
    }

    #[test]
    fn defaults_are_applied_recursively() {
        let obj = apply_defaults(&schema(), &json!({"spec": {"region": "us-west-2"}}));
        assert_eq!(obj["spec"]["timer"], "5m");
        assert_eq!(obj["spec"]["opts"]["n"], 3);
    }

    #[test]
    fn valid_object_passes() {
        let v = CrdValidator::from_structural_schema(schema()).expect("compiles");
        let obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"}, "spec": {"region": "us-west-2", "opts": null, "free": {"anything": 1}}});
        assert_eq!(v.validate(&obj), Ok(()));
    }

    #[test]
    fn pattern_and_required_errors_name_the_field() {
        let v = CrdValidator::from_structural_schema(schema()).expect("compiles");
        let errs = v
            .validate(&json!({"spec": {"region": "Oregon"}}))
            .expect_err("bad region");
        assert_eq!(errs[0].path, "spec.region");
        let errs = v.validate(&json!({"spec": {}})).expect_err("missing region");
        assert!(errs.iter().any(|e| e.message.contains("region")), "{errs:?}");
    }

    #[test]
    fn unknown_fields_are_refused_and_named() {
        let v = CrdValidator::from_structural_schema(schema()).expect("compiles");
        let errs = v
            .validate(&json!({"spec": {"region": "us-west-2", "list": [{"a": "x", "b": "y"}]}}))
            .expect_err("unknown");
        assert_eq!(errs[0].path, "spec.list[0].b");
        assert_eq!(errs[0].message, "field not declared in schema", "{errs:?}");
    }

    #[test]
    fn cel_rules_run_and_name_the_field() {
        let v = CrdValidator::from_structural_schema(schema()).expect("compiles");
        let errs = v
            .validate(&json!({"spec": {"region": "us-west-2", "timer": "never"}}))
            .expect_err("cel");
        assert_eq!(
            errs,
            vec![FieldError {
                path: "spec.timer".into(),
                message: "timer must not be never".into()
            }]
        );
    }

    #[test]
    fn prune_removes_unknown_and_keeps_preserved() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"}, "extra": 1,
            "spec": {"region": "us-west-2", "bogus": true, "list": [{"a": "1", "z": 2}], "free": {"kept": 1}}});
        let pruned = prune_unknown(&schema(), &mut obj);
        assert_eq!(
            pruned,
            vec!["extra".to_owned(), "spec.bogus".to_owned(), "spec.list[0].z".to_owned()]
        );
        assert_eq!(obj["spec"]["free"]["kept"], 1);
        assert_eq!(obj["metadata"]["name"], "a");
    }

    #[test]
    fn broken_cel_rule_is_reported_at_construction() {
        let bad = json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.(("}]});
        assert!(matches!(
            CrdValidator::from_structural_schema(bad),
            Err(SchemaError::Cel(_))
        ));
    }

    #[test]
    fn unbounded_list_in_a_rule_is_reported() {
        let schema = json!({"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "string"},
            "x-kubernetes-validations": [{"rule": "self.all(x, self.exists(y, y == x))"}]}}});
        let findings = analyze_rules(&schema);
        assert!(!findings.is_empty());
        assert!(findings[0].starts_with("xs: "), "{findings:?}");
    }

    #[test]
    fn pointer_paths_become_dotted() {
        assert_eq!(
            pointer_to_path("/spec/builder/commands/0/onError"),
            "spec.builder.commands[0].onError"
        );
        assert_eq!(pointer_to_path(""), "");
    }
}
