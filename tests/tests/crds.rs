//! The committed CRD files are exactly what the Rust types generate, and carry the names users type.

use api_types::crd::rendered_crds;
use integration_tests::{committed_crd, workspace_root};

#[test]
fn committed_crds_match_the_rust_types() {
    let root = workspace_root();
    let mut drift = Vec::new();
    for crd in rendered_crds().expect("render") {
        for dir in [
            root.join("deploy/crds"),
            root.join("charts/opsy-ami-operator/charts")
                .join(crd.subchart)
                .join("files/crds"),
        ] {
            let path = dir.join(&crd.file_name);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            if committed != crd.yaml {
                let diff = similar::TextDiff::from_lines(&committed, &crd.yaml)
                    .unified_diff()
                    .header("committed", "generated")
                    .to_string();
                drift.push(format!("{}:\n{diff}", path.display()));
            }
        }
    }
    assert!(
        drift.is_empty(),
        "CRDs drifted; run `cargo xtask gen-crds` and commit:\n{}",
        drift.join("\n")
    );
}

#[test]
fn crds_have_the_names_users_type() {
    for (kind, plural, short) in [
        ("PackerBuilder", "packerbuilders", "pb"),
        ("AMIRefresher", "amirefreshers", "amr"),
    ] {
        let crd = committed_crd(kind);
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(format!("{plural}.ami.refresh.ops").as_str())
        );
        assert_eq!(crd.spec.group, "ami.refresh.ops");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.short_names.as_deref(), Some(&[short.to_owned()][..]));
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["ami-operator".to_owned()][..])
        );
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        assert!(
            version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
            "{kind} has no status subresource"
        );
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        let expected: &[&str] = if kind == "PackerBuilder" {
            &["Phase", "Base AMI", "Built AMI", "Last Run", "Age"]
        } else {
            &["Phase", "Target AMI", "Node Groups", "Age"]
        };
        assert_eq!(columns, expected);
    }
}

#[test]
fn every_schema_field_has_a_description_for_kubectl_explain() {
    fn walk(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, child) in props {
                let child_path = format!("{path}.{name}");
                if child.get("description").is_none() {
                    missing.push(child_path.clone());
                }
                walk(child, &child_path, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
    }
    let mut missing = Vec::new();
    for kind in ["PackerBuilder", "AMIRefresher"] {
        let crd = committed_crd(kind);
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).expect("schema");
        walk(&schema["openAPIV3Schema"], kind, &mut missing);
    }
    assert!(missing.is_empty(), "fields without a doc comment: {missing:#?}");
}

/// The API server estimates each CEL rule's cost when the CRD is created and refuses rules that could exceed the
/// budget or iterate unbounded lists; check the same before anyone runs `kubectl apply`.
#[test]
fn cel_rules_are_bounded_and_within_cost_budget() {
    for kind in ["PackerBuilder", "AMIRefresher"] {
        let validator = integration_tests::validator_for(kind);
        let findings = crd_schema::analyze_rules(validator.structural_schema());
        assert!(findings.is_empty(), "{kind}: {findings:#?}");
    }
}

/// The API server evaluates `pattern` and CEL `matches()` with RE2: no look-around, no back-references. The
/// `regex` crate has the same restrictions, so every expression must compile with it.
#[test]
fn every_pattern_is_re2_compatible() {
    fn walk(schema: &serde_json::Value, found: &mut Vec<String>) {
        match schema {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("pattern", serde_json::Value::String(p)) => found.push(p.clone()),
                        ("rule", serde_json::Value::String(rule)) => {
                            for part in rule.split("matches('").skip(1) {
                                found.push(part.split("')").next().unwrap_or_default().to_owned());
                            }
                        }
                        _ => walk(value, found),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    let mut patterns = Vec::new();
    for kind in ["PackerBuilder", "AMIRefresher"] {
        walk(
            integration_tests::validator_for(kind).structural_schema(),
            &mut patterns,
        );
    }
    assert!(patterns.len() > 20, "found only {} patterns", patterns.len());
    for p in patterns {
        assert!(regex::Regex::new(&p).is_ok(), "not RE2-compatible: {p}");
    }
}

/// Every duration lower bound is enforced twice from one text: by the CRD's CEL rule at `kubectl apply` and by
/// the controller's parser. Walk edge values of every bounded field through both and require the same verdict,
/// except the one documented gap: a tiny fraction of a day/week/month/year is not CEL `duration()` syntax, so only
/// the controller refuses it.
#[test]
fn duration_lower_bounds_agree_between_the_schema_and_the_controllers_parser() {
    use api_types::{HumanDuration, duration::bounds};
    use serde_json::json;
    let pb = |field: &str, value: &str| {
        json!({"apiVersion": "ami.refresh.ops/v1alpha1", "kind": "PackerBuilder", "metadata": {"name": "b"},
            "spec": {"clusterName": "c", "region": "us-west-2", "timeOuts": {field: value},
                "builder": {"repoURL": "https://example.com/p.git", "image": "hashicorp/packer:1.11.2"}}})
    };
    let amr = |field: &str, value: &str| {
        let mut doc = json!({"apiVersion": "ami.refresh.ops/v1alpha1", "kind": "AMIRefresher", "metadata": {"name": "r"},
            "spec": {"clusterName": "c", "region": "us-west-2", "ami": "ami-0123456789abcdef0"}});
        if field == "window" {
            doc["spec"]["maintenanceWindows"] = json!([{"schedule": "0 2 * * *", "duration": value}]);
        } else {
            doc["spec"][field] = json!(value);
        }
        doc
    };
    type Doc = Box<dyn Fn(&str) -> serde_json::Value>;
    let cases: Vec<(&str, &str, &'static str, Doc)> = vec![
        (
            "PackerBuilder",
            "timeOuts.expiresIn",
            bounds::PB_EXPIRES_IN,
            Box::new(move |v| pb("expiresIn", v)),
        ),
        (
            "PackerBuilder",
            "timeOuts.controllerTimer",
            bounds::PB_CONTROLLER_TIMER,
            Box::new(move |v| pb("controllerTimer", v)),
        ),
        (
            "PackerBuilder",
            "timeOuts.buildTimeout",
            bounds::PB_BUILD_TIMEOUT,
            Box::new(move |v| pb("buildTimeout", v)),
        ),
        (
            "PackerBuilder",
            "timeOuts.jobTtl",
            bounds::PB_JOB_TTL,
            Box::new(move |v| pb("jobTtl", v)),
        ),
        (
            "AMIRefresher",
            "expiresIn",
            bounds::AMR_EXPIRES_IN,
            Box::new(move |v| amr("expiresIn", v)),
        ),
        (
            "AMIRefresher",
            "maintenanceWindows[0].duration",
            bounds::AMR_WINDOW,
            Box::new(move |v| amr("window", v)),
        ),
    ];
    let values = [
        "1s",
        "29s",
        "30s",
        "30 seconds",
        "29 secs",
        "59s",
        "1m",
        "0.5m",
        "1 min",
        "4m59s",
        "5m",
        "5 minutes",
        "4 minutes 59 seconds",
        "59m",
        "59m 59s",
        "1h",
        "1 hour",
        "0.5h",
        "3599999ms",
        "3600000ms",
        "48h",
        "1d",
        "2w",
        "1M",
        "1y",
        "90m",
    ];
    let mut checked = 0;
    for (kind, field, min, doc) in &cases {
        let validator = integration_tests::validator_for(kind);
        for value in values {
            let parser = HumanDuration::new(value).parse_at_least(min);
            let schema = validator.validate(&doc(value));
            assert_eq!(
                schema.is_ok(),
                parser.is_ok(),
                "{kind} {field}={value:?} (min {min}): schema {schema:?}, parser {parser:?}"
            );
            if let Err(errors) = schema {
                let text = format!("{errors:?}");
                assert!(text.contains(&format!("must be at least {min}")), "{text}");
                assert!(text.contains(field), "the error names the field: {text}");
            }
            checked += 1;
        }
        // The documented gap: 0.0001d is 8.64 s, refused by the controller only.
        assert!(validator.validate(&doc("0.0001d")).is_ok());
        assert!(HumanDuration::new("0.0001d").parse_at_least(min).is_err());
    }
    assert_eq!(checked, cases.len() * values.len());
}

/// Every duration field without a lower bound: the schema (pattern and CEL) accepts exactly what the controllers'
/// parser accepts, so no value passes `kubectl apply` to fail in the controller. Zero in any spelling is refused
/// by both (an instance warm-up, a soak or a canary soak of zero is no setting; leave the field out).
#[test]
fn unbounded_duration_fields_accept_exactly_what_the_controllers_parse() {
    use api_types::HumanDuration;
    use serde_json::json;
    let amr = |path: &str, value: &str| {
        let mut doc = json!({"apiVersion": "ami.refresh.ops/v1alpha1", "kind": "AMIRefresher", "metadata": {"name": "r"},
            "spec": {"clusterName": "c", "region": "us-west-2", "ami": "ami-0123456789abcdef0"}});
        match path {
            "soakTime" => doc["spec"]["soakTime"] = json!(value),
            "refreshConfig.canarySoak" => {
                doc["spec"]["refreshConfig"] = json!({"canary": "ng-a", "canarySoak": value});
            }
            _ => doc["spec"]["refreshConfig"] = json!({"instanceRefresh": {"instanceWarmup": value}}),
        }
        doc
    };
    let validator = integration_tests::validator_for("AMIRefresher");
    let values = [
        "0s",
        "0",
        "0m",
        "0h",
        "0.0s",
        "00s",
        "0ms",
        "0 seconds",
        "0d",
        "1s",
        "1ms",
        "1ns",
        "300s",
        "5m",
        "1h",
        "1 hour",
        "2d",
        "1w",
        "90 minutes",
        "-1s",
        "1x",
        "",
        " ",
    ];
    let mut mismatches = Vec::new();
    for path in [
        "soakTime",
        "refreshConfig.canarySoak",
        "refreshConfig.instanceRefresh.instanceWarmup",
    ] {
        for value in values {
            let schema = validator.validate(&amr(path, value)).is_ok();
            let parser = HumanDuration::new(value).parse().is_ok();
            if schema != parser {
                mismatches.push(format!(
                    "{path}={value:?}: schema accepts {schema}, parser accepts {parser}"
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}
