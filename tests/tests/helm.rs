//! The Helm charts: `helm lint --strict`, rendering of the supported combinations, every rendered object checked
//! with `kubernetes-validate --strict` against Kubernetes 1.30 schemas, pod security and RBAC shape, refusal of bad
//! values by `values.schema.json`, and the drift check of `deploy/`.
//!
//! helm comes from `HELM` (set by `cargo xtask test`, which installs it) or PATH; kubernetes-validate from
//! `KUBERNETES_VALIDATE` (installed in the test venv by `cargo xtask test`).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn helm() -> PathBuf {
    std::env::var_os("HELM").map_or_else(|| PathBuf::from("helm"), PathBuf::from)
}

fn chart(sub: Option<&str>) -> PathBuf {
    let umbrella = root().join("charts/opsy-ami-operator");
    match sub {
        Some(sub) => umbrella.join("charts").join(sub),
        None => umbrella,
    }
}

/// `helm template` output, or the error text.
fn template(chart: &Path, sets: &[&str]) -> Result<String, String> {
    template_json(chart, sets, &[])
}

/// [`template`] with `--set-json` values too.
fn template_json(chart: &Path, sets: &[&str], set_json: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new(helm());
    cmd.args(["template", "opsy"])
        .arg(chart)
        .args(["--namespace", "opsy-system"]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    for set in set_json {
        cmd.args(["--set-json", set]);
    }
    let out = cmd.output().expect("helm runs (cargo xtask test installs it)");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(yaml)
        .filter_map(|d| <Value as serde::Deserialize>::deserialize(d).ok())
        .filter(|v| !v.is_null())
        .collect()
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    k.sort();
    k
}

fn validate(yaml: &str) {
    let file = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(file.path(), yaml).expect("write");
    let tool =
        std::env::var_os("KUBERNETES_VALIDATE").map_or_else(|| PathBuf::from("kubernetes-validate"), PathBuf::from);
    let out = Command::new(tool)
        .args(["--strict", "--quiet", "-k", "1.30.0"])
        .arg(file.path())
        .output()
        .expect("kubernetes-validate runs (cargo xtask test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !text.contains("ERROR"),
        "kubernetes-validate failed:\n{text}"
    );
}

#[test]
fn every_chart_passes_helm_lint_strict() {
    for c in [
        chart(None),
        chart(Some("packer-build-controller")),
        chart(Some("ami-refresh-controller")),
    ] {
        let out = Command::new(helm())
            .args(["lint", "--strict"])
            .arg(&c)
            .output()
            .expect("helm runs");
        assert!(
            out.status.success(),
            "{}: {}{}",
            c.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn supported_combinations_render_and_validate_against_kubernetes_1_30() {
    let cases: [(&str, &[&str], &[&str]); 5] = [
        (
            "both",
            &[],
            &[
                "Deployment/opsy-packer-build-controller",
                "Deployment/opsy-ami-refresh-controller",
                "ClusterRole/opsy-packer-build-controller",
                "ClusterRole/opsy-ami-refresh-controller",
            ],
        ),
        (
            "only packer",
            &["ami-refresh-controller.enabled=false"],
            &["Deployment/opsy-packer-build-controller"],
        ),
        (
            "only refresh",
            &["packer-build-controller.enabled=false"],
            &["Deployment/opsy-ami-refresh-controller"],
        ),
        (
            "namespaced RBAC",
            &[
                "packer-build-controller.rbac.scope=namespace",
                "packer-build-controller.watchNamespaces={team-a,team-b}",
            ],
            &[
                "Role/opsy-packer-build-controller",
                "RoleBinding/opsy-packer-build-controller",
            ],
        ),
        (
            "leader election, 2 replicas, PDB, NetworkPolicy, ServiceMonitor, IRSA",
            &[
                "packer-build-controller.replicaCount=2",
                "packer-build-controller.podDisruptionBudget.enabled=true",
                "packer-build-controller.networkPolicy.enabled=true",
                "packer-build-controller.metrics.serviceMonitor.enabled=true",
                "packer-build-controller.serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/pbc",
            ],
            &[
                "PodDisruptionBudget/opsy-packer-build-controller",
                "NetworkPolicy/opsy-packer-build-controller",
                "ServiceMonitor/opsy-packer-build-controller",
                "Role/opsy-packer-build-controller-leader-election",
            ],
        ),
    ];
    for (name, sets, expected) in cases {
        let yaml = template(&chart(None), sets).unwrap_or_else(|e| panic!("{name}: {e}"));
        let objects = docs(&yaml);
        let present = kinds(&objects);
        for want in expected {
            assert!(
                present.iter().any(|k| k == want),
                "{name}: {want} missing from {present:?}"
            );
        }
        if name == "only packer" {
            assert!(!present.iter().any(|k| k.contains("ami-refresh")), "{present:?}");
        }
        if name == "only refresh" {
            assert!(!present.iter().any(|k| k.contains("packer-build")), "{present:?}");
        }
        if name == "namespaced RBAC" {
            assert!(!present.iter().any(|k| k == "ClusterRole/opsy-packer-build-controller"));
            let namespaces: Vec<&str> = objects
                .iter()
                .filter(|o| o["kind"] == "Role" && o["metadata"]["name"] == "opsy-packer-build-controller")
                .filter_map(|o| o["metadata"]["namespace"].as_str())
                .collect();
            assert_eq!(namespaces, ["team-a", "team-b"]);
            let deployment = objects
                .iter()
                .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "opsy-packer-build-controller")
                .expect("deployment");
            let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
            assert!(
                env.as_array()
                    .expect("env")
                    .iter()
                    .any(|e| e["name"] == "WATCH_NAMESPACE" && e["value"] == "team-a,team-b"),
                "{env}"
            );
        }
        if name.starts_with("leader election") {
            let sa = objects
                .iter()
                .find(|o| o["kind"] == "ServiceAccount" && o["metadata"]["name"] == "opsy-packer-build-controller")
                .expect("sa");
            assert_eq!(
                sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
                "arn:aws:iam::123456789012:role/pbc"
            );
        }
        validate(&yaml);
    }
}

#[test]
fn the_pod_disruption_budget_lets_a_single_replica_be_drained() {
    for (sets, key, value) in [
        (
            vec!["packer-build-controller.podDisruptionBudget.enabled=true"],
            "maxUnavailable",
            1,
        ),
        (
            vec![
                "packer-build-controller.podDisruptionBudget.enabled=true",
                "packer-build-controller.replicaCount=3",
                "packer-build-controller.podDisruptionBudget.minAvailable=2",
            ],
            "minAvailable",
            2,
        ),
    ] {
        let yaml = template(&chart(None), &sets).expect("renders");
        validate(&yaml);
        let objects = docs(&yaml);
        let pdb = objects
            .iter()
            .find(|o| o["kind"] == "PodDisruptionBudget")
            .expect("a PodDisruptionBudget");
        let spec = pdb["spec"].as_object().expect("spec");
        assert_eq!(spec.get(key), Some(&serde_json::json!(value)), "{sets:?}: {spec:?}");
        let other = if key == "minAvailable" {
            "maxUnavailable"
        } else {
            "minAvailable"
        };
        assert!(!spec.contains_key(other), "only one of the two: {spec:?}");
    }
}

#[test]
fn the_network_policy_opens_instance_metadata_and_pod_identity_only_when_asked() {
    let cidrs = |sets: &[&str]| -> Vec<String> {
        let yaml = template(&chart(None), sets).expect("renders");
        validate(&yaml);
        docs(&yaml)
            .iter()
            .filter(|o| o["kind"] == "NetworkPolicy" && o["metadata"]["name"] == "opsy-packer-build-controller")
            .flat_map(|o| o["spec"]["egress"].as_array().cloned().unwrap_or_default())
            .flat_map(|rule| rule["to"].as_array().cloned().unwrap_or_default())
            .filter_map(|peer| peer["ipBlock"]["cidr"].as_str().map(str::to_owned))
            .collect()
    };
    let on = "packer-build-controller.networkPolicy.enabled=true";
    assert!(cidrs(&[on]).is_empty(), "by default no link-local address is reachable");
    assert_eq!(
        cidrs(&[on, "packer-build-controller.networkPolicy.allowInstanceMetadata=true"]),
        ["169.254.169.254/32"]
    );
    assert_eq!(
        cidrs(&[on, "packer-build-controller.networkPolicy.allowPodIdentity=true"]),
        ["169.254.170.23/32", "fd00:ec2::23/128"]
    );
}

#[test]
fn the_lease_is_named_after_the_release_so_two_releases_each_lead() {
    for (sets, want) in [
        (vec![], "opsy-packer-build-controller"),
        (
            vec!["packer-build-controller.leaderElection.leaseName=pbc-shard-a"],
            "pbc-shard-a",
        ),
    ] {
        let yaml = template(&chart(None), &sets).expect("renders");
        let objects = docs(&yaml);
        let deployment = objects
            .iter()
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "opsy-packer-build-controller")
            .expect("deployment");
        let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .expect("env");
        let lease = env.iter().find(|e| e["name"] == "LEASE_NAME").expect("LEASE_NAME");
        assert_eq!(lease["value"], want, "{sets:?}");
        let role = objects
            .iter()
            .find(|o| o["kind"] == "Role" && o["metadata"]["name"] == "opsy-packer-build-controller-leader-election")
            .expect("leader-election Role");
        let names: Vec<&Value> = role["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .filter_map(|r| r["resourceNames"].as_array())
            .flatten()
            .collect();
        assert_eq!(names, [want], "the Role allows exactly the Lease the controller uses");
    }
    // Another release gets another Lease.
    let other = Command::new(helm())
        .args(["template", "shard-b"])
        .arg(chart(None))
        .output()
        .expect("helm");
    assert!(String::from_utf8_lossy(&other.stdout).contains("value: \"shard-b-packer-build-controller\""));
}

#[test]
fn pods_run_non_root_read_only_without_privileges_and_rbac_has_no_wildcards() {
    let yaml = template(&chart(None), &[]).expect("render");
    let objects = docs(&yaml);
    let deployments: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "Deployment").collect();
    assert_eq!(deployments.len(), 2);
    for d in deployments {
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
        for c in pod["containers"].as_array().expect("containers") {
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false);
            assert_eq!(sc["readOnlyRootFilesystem"], true);
            assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
            assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
            assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        }
    }
    for role in objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        for rule in role["rules"].as_array().expect("rules") {
            for field in ["verbs", "resources", "apiGroups"] {
                assert!(
                    !rule[field].as_array().expect(field).iter().any(|v| v == "*"),
                    "wildcard in {}: {rule}",
                    role["metadata"]["name"]
                );
            }
            if rule["resources"]
                .as_array()
                .expect("resources")
                .iter()
                .any(|r| r == "secrets")
            {
                assert_eq!(
                    rule["verbs"],
                    serde_json::json!(["get"]),
                    "Secrets: get only, never list/watch"
                );
            }
        }
    }
}

#[test]
fn bad_values_are_refused_by_the_values_schema() {
    for (set, expect) in [
        ("packer-build-controller.replicaCount=-1", "replicaCount"),
        ("ami-refresh-controller.rbac.scope=everything", "scope"),
        ("packer-build-controller.logFormat=xml", "logFormat"),
        ("packer-build-controller.imagePullPolicy=Always", "imagePullPolicy"),
        ("ami-refresh-controller.settings.pollInterval=soon", "pollInterval"),
        (
            "packer-build-controller.watchNamespaces={Not_A_Namespace}",
            "watchNamespaces",
        ),
        ("opsy=1", "opsy"),
        ("packer-build-controller.image.digest=latest", "digest"),
        (
            "packer-build-controller.leaderElection.renewDeadline=soon",
            "renewDeadline",
        ),
        (
            "ami-refresh-controller.livenessStallAfter=forever",
            "livenessStallAfter",
        ),
        ("packer-build-controller.extraArgs={verbose}", "extraArgs"),
        (
            "packer-build-controller.metrics.serviceMonitor.scrapeTimeout=10x",
            "scrapeTimeout",
        ),
        ("packer-build-controller.crds.install=maybe", "install"),
        ("packer-build-controller.strategy.type=Sometimes", "type"),
        ("packer-build-controller.livenessProbe.periodSeconds=0", "periodSeconds"),
    ] {
        let err = template(&chart(None), &[set]).expect_err(set);
        assert!(err.contains(expect), "{set}: {err}");
    }
    // The subcharts refuse bad values when installed on their own too.
    let err = template(&chart(Some("ami-refresh-controller")), &["replicaCount=abc"]).expect_err("type");
    assert!(err.contains("replicaCount"), "{err}");
}

#[test]
fn deploy_manifests_are_rendered_from_the_charts() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args(["run", "--quiet", "--package", "xtask", "--", "gen-deploy", "--check"])
        .output()
        .expect("xtask runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for chart in ["packer-build-controller", "ami-refresh-controller"] {
        let text =
            std::fs::read_to_string(root().join("deploy").join(chart).join(format!("{chart}.yaml"))).expect("deploy");
        validate(&text);
    }
}

fn deployment<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("Deployment {name}"))
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

#[test]
fn operator_values_land_where_operators_expect_them() {
    let p = "packer-build-controller";
    let sets = [
        format!("{p}.revisionHistoryLimit=3"),
        format!("{p}.strategy.type=Recreate"),
        format!("{p}.commonLabels.team=platform"),
        format!("{p}.deploymentAnnotations.owner=sre"),
        format!("{p}.image.digest=sha256:{}", "a".repeat(64)),
        format!("{p}.serviceAccount.automountServiceAccountToken=true"),
        format!("{p}.livenessProbe.failureThreshold=7"),
        format!("{p}.readinessProbe.timeoutSeconds=9"),
        format!("{p}.metrics.service.annotations.scrape=yes"),
        format!("{p}.metrics.serviceMonitor.enabled=true"),
        format!("{p}.metrics.serviceMonitor.namespace=monitoring"),
        format!("{p}.metrics.serviceMonitor.interval=15s"),
        format!("{p}.metrics.serviceMonitor.scrapeTimeout=5s"),
        format!("{p}.leaderElection.leaseDuration=30s"),
        format!("{p}.leaderElection.renewDeadline=20s"),
        format!("{p}.leaderElection.retryPeriod=4s"),
        format!("{p}.livenessStallAfter=20m"),
        format!("{p}.notifications.allowHttpWebhooks=true"),
        format!(
            "{p}.notifications.snsTopicAllowlist={{arn:aws:sns:*:123456789012:ami-*,arn:aws:sns:*:123456789012:ops}}"
        ),
        "global.imageRegistry=mirror.example.com:5000".to_owned(),
    ];
    let set_json = [
        format!(r#"{p}.extraArgs=["--concurrency=4"]"#),
        format!(r#"{p}.extraVolumes=[{{"name":"ca","configMap":{{"name":"corp-ca"}}}}]"#),
        format!(r#"{p}.extraVolumeMounts=[{{"name":"ca","mountPath":"/etc/corp-ca","readOnly":true}}]"#),
        format!(
            r#"{p}.podSecurityContext={{"runAsNonRoot":true,"runAsUser":1001,"seccompProfile":{{"type":"RuntimeDefault"}}}}"#
        ),
        format!(
            r#"{p}.securityContext={{"allowPrivilegeEscalation":false,"readOnlyRootFilesystem":true,"capabilities":{{"drop":["ALL"]}},"runAsUser":1002}}"#
        ),
        format!(
            r#"{p}.topologySpreadConstraints=[{{"maxSkew":2,"topologyKey":"kubernetes.io/hostname","whenUnsatisfiable":"DoNotSchedule","labelSelector":{{"matchLabels":{{"app":"x"}}}}}}]"#
        ),
        format!(r#"{p}.metrics.serviceMonitor.relabelings=[{{"targetLabel":"cluster","replacement":"prod"}}]"#),
        format!(
            r#"{p}.metrics.serviceMonitor.metricRelabelings=[{{"action":"drop","regex":"go_.*","sourceLabels":["__name__"]}}]"#
        ),
    ];
    let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
    let set_json: Vec<&str> = set_json.iter().map(String::as_str).collect();
    let yaml = template_json(&chart(None), &sets, &set_json).expect("renders");
    validate(&yaml);
    let objects = docs(&yaml);
    let d = deployment(&objects, "opsy-packer-build-controller");
    assert_eq!(d["spec"]["revisionHistoryLimit"], 3);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    assert_eq!(d["metadata"]["labels"]["team"], "platform");
    assert_eq!(d["metadata"]["annotations"]["owner"], "sre");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(d["spec"]["template"]["metadata"]["labels"]["team"], "platform");
    assert_eq!(pod["securityContext"]["runAsUser"], 1001);
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "corp-ca");
    assert_eq!(pod["topologySpreadConstraints"][0]["maxSkew"], 2);
    let c = &pod["containers"][0];
    assert_eq!(
        c["image"],
        format!(
            "mirror.example.com:5000/opsy-ami-operator/packer-build-controller@sha256:{}",
            "a".repeat(64)
        )
    );
    assert_eq!(c["args"], serde_json::json!(["--concurrency=4"]));
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/etc/corp-ca");
    assert_eq!(c["securityContext"]["runAsUser"], 1002);
    assert_eq!(c["livenessProbe"]["failureThreshold"], 7);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["timeoutSeconds"], 9);
    for (name, value) in [
        ("LEADER_ELECT_LEASE_DURATION", "30s"),
        ("LEADER_ELECT_RENEW_DEADLINE", "20s"),
        ("LEADER_ELECT_RETRY_PERIOD", "4s"),
        ("LIVENESS_STALL_AFTER", "20m"),
        ("WEBHOOK_ALLOW_HTTP", "true"),
        ("WEBHOOK_ALLOW_PRIVATE", "false"),
        (
            "SNS_TOPIC_ALLOWLIST",
            "arn:aws:sns:*:123456789012:ami-*,arn:aws:sns:*:123456789012:ops",
        ),
    ] {
        assert_eq!(env_value(c, name), Some(value), "{name}");
    }
    let sa = objects
        .iter()
        .find(|o| o["kind"] == "ServiceAccount" && o["metadata"]["name"] == "opsy-packer-build-controller")
        .expect("sa");
    assert_eq!(sa["automountServiceAccountToken"], true);
    assert_eq!(sa["metadata"]["labels"]["team"], "platform");
    let svc = objects
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "opsy-packer-build-controller-metrics")
        .expect("service");
    assert_eq!(svc["metadata"]["annotations"]["scrape"], "yes");
    let sm = objects
        .iter()
        .find(|o| o["kind"] == "ServiceMonitor")
        .expect("servicemonitor");
    assert_eq!(sm["metadata"]["namespace"], "monitoring");
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"],
        serde_json::json!(["opsy-system"])
    );
    let endpoint = &sm["spec"]["endpoints"][0];
    assert_eq!(endpoint["interval"], "15s");
    assert_eq!(endpoint["scrapeTimeout"], "5s");
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "cluster");
    assert_eq!(endpoint["metricRelabelings"][0]["action"], "drop");
    // The other controller keeps its defaults, but takes the global registry.
    let other = &deployment(&objects, "opsy-ami-refresh-controller")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        other["image"],
        "mirror.example.com:5000/opsy-ami-operator/ami-refresh-controller:0.1.0"
    );
}

#[test]
fn defaults_keep_the_service_account_token_off_and_spread_only_several_replicas() {
    let one = docs(&template(&chart(None), &[]).expect("renders"));
    let sa = one
        .iter()
        .find(|o| o["kind"] == "ServiceAccount" && o["metadata"]["name"] == "opsy-packer-build-controller")
        .expect("sa");
    assert_eq!(sa["automountServiceAccountToken"], false);
    let pod = &deployment(&one, "opsy-packer-build-controller")["spec"]["template"]["spec"];
    assert_eq!(
        pod["automountServiceAccountToken"], true,
        "the controller itself needs its token"
    );
    assert!(
        pod["affinity"].is_null() && pod["topologySpreadConstraints"].is_null(),
        "{pod}"
    );
    assert_eq!(
        pod["containers"][0]["image"],
        "ghcr.io/opsy-ami-operator/packer-build-controller:0.1.0"
    );

    let yaml = template(&chart(None), &["packer-build-controller.replicaCount=2"]).expect("renders");
    validate(&yaml);
    let two = docs(&yaml);
    let pod = &deployment(&two, "opsy-packer-build-controller")["spec"]["template"]["spec"];
    let anti = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        anti["podAffinityTerm"]["labelSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "packer-build-controller"
    );
    let spread = &pod["topologySpreadConstraints"][0];
    assert_eq!(spread["topologyKey"], "topology.kubernetes.io/zone");
    assert_eq!(
        spread["whenUnsatisfiable"], "ScheduleAnyway",
        "soft: a one-zone cluster still schedules"
    );
}

/// Helm's `fromYaml | toYaml` writes `maximum: 50.0` as `50`: the same number to the API server.
fn numbers_as_floats(value: Value) -> Value {
    match value {
        Value::Number(n) => serde_json::json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_floats).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, numbers_as_floats(v))).collect()),
        other => other,
    }
}

#[test]
fn the_crds_are_templates_kept_on_uninstall_and_can_be_left_out() {
    let committed = |file: &str| -> Value {
        let text = std::fs::read_to_string(root().join("deploy/crds").join(file)).expect("crd");
        docs(&text).remove(0)
    };
    let crds = |sets: &[&str]| -> Vec<Value> {
        docs(&template(&chart(None), sets).expect("renders"))
            .into_iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .collect()
    };
    let rendered = crds(&[]);
    assert_eq!(rendered.len(), 2);
    for crd in &rendered {
        let name = crd["metadata"]["name"].as_str().expect("name");
        assert_eq!(
            crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
            "{name}"
        );
        // Apart from the chart's labels and annotation, exactly the generated CRD.
        let mut stripped = crd.clone();
        let meta = stripped["metadata"].as_object_mut().expect("metadata");
        meta.remove("labels");
        meta.remove("annotations");
        assert_eq!(
            numbers_as_floats(stripped),
            numbers_as_floats(committed(&format!("{name}.yaml"))),
            "{name}"
        );
    }
    assert!(
        crds(&["packer-build-controller.crds.keep=false"])
            .iter()
            .any(|c| c["metadata"]["annotations"].is_null())
    );
    let only_refresh = crds(&["packer-build-controller.crds.install=false"]);
    assert_eq!(only_refresh.len(), 1);
    assert_eq!(only_refresh[0]["metadata"]["name"], "amirefreshers.ami.refresh.ops");
}

#[test]
fn each_subchart_names_its_helpers_after_itself_so_they_cannot_collide() {
    for sub in ["packer-build-controller", "ami-refresh-controller"] {
        let dir = chart(Some(sub)).join("templates");
        for entry in std::fs::read_dir(&dir).expect("templates") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("read");
            for (i, _) in text.match_indices("define \"") {
                let name = text[i + 8..].split('"').next().unwrap_or_default();
                assert!(
                    name.starts_with(&format!("{sub}.")),
                    "{}: helper {name:?} is not prefixed with {sub}.",
                    path.display()
                );
            }
        }
    }
}
