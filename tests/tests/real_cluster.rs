//! The project's objects against a **real** `kube-apiserver` (`testing/control-plane`, built from Go modules by
//! `cargo xtask test`): the committed CRDs install and are served, every example and seed object is accepted, every
//! invalid fixture is refused with the message it expects, and the real server and `crd-schema` (the validator
//! kube-sim uses) agree on every one of them. A Job runs through the real Job controller and the local kubelet.

use std::time::Duration;

use integration_tests::{committed_crd, fixture_header, validator_for, workspace_root, yaml_documents, yaml_files};
use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, Client,
    api::{DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams, ValidationDirective},
    discovery::pinned_kind,
};
use serde_json::{Value, json};

/// The committed CRDs, applied (or kept) and Established.
async fn install_crds(client: &Client) {
    let crds = [committed_crd("PackerBuilder"), committed_crd("AMIRefresher")];
    control_plane::apply_crds(client, &crds)
        .await
        .expect("the real server takes the committed CRDs");
}

/// A server-side dry-run apply of `doc` in `namespace`: `Ok` when the real server accepts it, else its message.
async fn dry_run_create(client: &Client, namespace: &str, doc: &Value) -> Result<(), String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, doc["kind"].as_str().unwrap_or_default());
    // Discovery can lag a freshly established CRD by a moment.
    let mut resolved = None;
    for _ in 0..50 {
        if let Ok(found) = pinned_kind(client, &gvk).await {
            resolved = Some(found);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (resource, capabilities) = resolved.unwrap_or_else(|| panic!("the server does not serve {gvk:?}"));
    let api: Api<DynamicObject> = if capabilities.scope == kube::discovery::Scope::Namespaced {
        Api::namespaced_with(client.clone(), namespace, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    };
    let mut doc = doc.clone();
    if capabilities.scope == kube::discovery::Scope::Namespaced {
        doc["metadata"]["namespace"] = json!(namespace);
    }
    let name = doc["metadata"]["name"].as_str().unwrap_or_default().to_owned();
    // What `kubectl apply --server-side` sends: unknown fields are refused (fieldValidation=Strict), not pruned.
    let params = PatchParams {
        dry_run: true,
        field_manager: Some("opsy-tests".into()),
        field_validation: Some(ValidationDirective::Strict),
        ..PatchParams::default()
    };
    match api.patch(&name, &params, &Patch::Apply(&doc)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(status.message),
        Err(error) => panic!("request failed: {error}"),
    }
}

async fn setup() -> (Client, String) {
    let plane = control_plane::shared();
    let client = plane.client().await.expect("admin client");
    install_crds(&client).await;
    let namespace = plane.namespace(&client, "fixtures").await.expect("namespace");
    (client, namespace)
}

#[tokio::test]
async fn the_real_server_refuses_every_invalid_fixture_with_the_expected_message_and_crd_schema_agrees() {
    let (client, namespace) = setup().await;
    let files = yaml_files(&workspace_root().join("tests/fixtures/invalid"));
    assert!(files.len() >= 30, "the invalid fixture set, found {}", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let text = std::fs::read_to_string(file).expect("fixture");
        let (Some(path), Some(message)) = (
            fixture_header(&text, "expect-error"),
            fixture_header(&text, "expect-message"),
        ) else {
            failures.push(format!("{name}: missing expect-error/expect-message header"));
            continue;
        };
        let doc = yaml_documents(file).pop().expect("one document");
        let ours = validator_for(doc["kind"].as_str().expect("kind")).validate(&doc);
        match dry_run_create(&client, &namespace, &doc).await {
            Ok(()) => failures.push(format!("{name}: the real server ACCEPTED it (crd-schema: {ours:?})")),
            Err(server) => {
                if !server.contains(path) || !server.contains(message) {
                    failures.push(format!(
                        "{name}: the real server's message does not name {path} with …{message}…: {server}"
                    ));
                }
                if ours.is_ok() {
                    failures.push(format!(
                        "{name}: crd-schema accepts what the real server refuses: {server}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn the_real_server_accepts_every_example_and_seed_object_and_crd_schema_agrees() {
    let (client, namespace) = setup().await;
    let mut checked = 0;
    let mut failures = Vec::new();
    for file in yaml_files(&workspace_root().join("examples")) {
        for doc in yaml_documents(&file) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            let origin = format!("{} ({kind})", file.display());
            if let Err(server) = dry_run_create(&client, &namespace, &doc).await {
                failures.push(format!("{origin}: refused by the real server: {server}"));
            }
            if matches!(kind.as_str(), "PackerBuilder" | "AMIRefresher")
                && let Err(errors) = validator_for(&kind).validate(&doc)
            {
                failures.push(format!("{origin}: refused by crd-schema only: {errors:?}"));
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "expected the seed and feature examples, checked {checked}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_job_runs_through_the_real_job_controller_and_the_local_kubelet() {
    let plane = control_plane::shared();
    let client = plane.client().await.expect("admin client");
    let namespace = plane.namespace(&client, "job").await.expect("namespace");
    let kubelet = kube_sim::kubelet::Kubelet::start(
        client.clone(),
        kube_sim::kubelet::KubeletOptions::for_namespace(&namespace),
    )
    .await
    .expect("kubelet");
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "containers": [{"name": "main", "image": "busybox",
                "command": ["sh", "-c", "echo ami-0123456789abcdef0 > /dev/termination-log; echo done"]}],
        }}},
    }))
    .expect("job");
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("the real server accepts the Job");
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &namespace);
    let complete = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let current = jobs.get("hello").await.expect("job");
            let done = current
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Complete" && c.status == "True"));
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let listed = pods.list(&Default::default()).await.expect("pods");
    assert!(complete.is_ok(), "the Job did not complete; pods: {:#?}", listed.items);
    let pod = listed.items.first().expect("the Job controller created a Pod");
    let message = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone());
    assert_eq!(message.as_deref(), Some("ami-0123456789abcdef0\n"));
    // The fallback for `kubectl logs` (the kubelet's HTTPS API is not served): the kubelet keeps the output.
    let name = pod.metadata.name.clone().unwrap_or_default();
    assert_eq!(kubelet.logs(&namespace, &name, "main"), "done\n");
}

/// Objects on which kube-sim must agree with the real server: built-in validation the controllers run into (label
/// syntax and length, a Job's name becoming a label value). Each case: (what, object, refused?).
fn builtin_cases() -> Vec<(&'static str, Value, bool)> {
    let job = |name: &str, label: &str| {
        json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/instance": label}},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}}})
    };
    let long = "x".repeat(64);
    vec![
        ("a valid Job", job("build-1", "ok"), false),
        (
            "a Job name of 64 characters (it becomes a label value)",
            job(&long, "ok"),
            true,
        ),
        ("a label value of 64 characters", job("build-2", &long), true),
        ("a label value with a space", job("build-3", "not ok"), true),
        ("a label value ending in a dash", job("build-4", "trailing-"), true),
        (
            "a ConfigMap with a bad label key",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cm", "labels": {"bad key": "v"}}}),
            true,
        ),
    ]
}

#[tokio::test]
async fn kube_sim_refuses_what_the_real_server_refuses_for_built_in_objects() {
    let (client, namespace) = setup().await;
    let sim = kube_sim::ApiServer::start(kube_sim::ServerOptions::default())
        .await
        .expect("kube-sim");
    let sim_client = Client::try_from(kube::Config::new(sim.url().parse().expect("url"))).expect("client");
    let mut disagreements = Vec::new();
    for (what, doc, refused) in builtin_cases() {
        let real = dry_run_create(&client, &namespace, &doc).await;
        let ours = dry_run_create(&sim_client, "default", &doc).await;
        if real.is_err() != refused {
            disagreements.push(format!(
                "{what}: the real server answered {real:?}, the case expects refused={refused}"
            ));
        }
        if real.is_err() != ours.is_err() {
            disagreements.push(format!("{what}: real server {real:?}, kube-sim {ours:?}"));
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

/// The chart's optional `imagePolicy` (a ValidatingAdmissionPolicy), rendered by `helm template` and bound to this
/// test's namespace on the real server: a PackerBuilder whose builder or git-sync image is outside the allowlist is
/// refused at apply with the policy's message naming the field; one inside it is accepted. kube-sim has no
/// admission policies, so this runs against the real server only.
#[tokio::test]
async fn the_charts_image_policy_refuses_builder_and_git_sync_images_outside_the_allowlist() {
    let (client, namespace) = setup().await;
    let chart = workspace_root().join("charts/opsy-ami-operator/charts/packer-build-controller");
    let selector = json!({"matchLabels": {"kubernetes.io/metadata.name": namespace}}).to_string();
    let out = std::process::Command::new(std::env::var_os("HELM").unwrap_or_else(|| "helm".into()))
        .args(["template", &namespace])
        .arg(&chart)
        .args([
            "--show-only",
            "templates/imagepolicy.yaml",
            "--set",
            "imagePolicy.enabled=true",
        ])
        .args([
            "--set-json",
            r#"imagePolicy.allowedBuilderImages=["hashicorp/packer:1.11."]"#,
        ])
        .args([
            "--set-json",
            r#"imagePolicy.allowedGitSyncImages=["registry.k8s.io/git-sync/"]"#,
        ])
        .args(["--set-json", &format!("imagePolicy.namespaceSelector={selector}")])
        .output()
        .expect("helm");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let objects: Vec<Value> = serde_norway::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout))
        .filter_map(|d| <Value as serde::Deserialize>::deserialize(d).ok())
        .filter(|v| !v.is_null())
        .collect();
    assert_eq!(objects.len(), 2, "a policy and its binding");
    let mut applied = Vec::new();
    for object in &objects {
        let (group, version) = object["apiVersion"]
            .as_str()
            .and_then(|v| v.split_once('/'))
            .expect("apiVersion");
        let gvk = GroupVersionKind::gvk(group, version, object["kind"].as_str().expect("kind"));
        let (resource, _) = pinned_kind(&client, &gvk).await.expect("admission policies are served");
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        let name = object["metadata"]["name"].as_str().expect("name");
        api.patch(name, &PatchParams::apply("opsy-tests"), &Patch::Apply(object))
            .await
            .expect("the real server takes the chart's policy");
        applied.push((api, name.to_owned()));
    }
    let builder = |image: &str, git_sync: Option<&str>| {
        let mut doc = json!({"apiVersion": "ami.refresh.ops/v1alpha1", "kind": "PackerBuilder",
            "metadata": {"name": "images"},
            "spec": {"clusterName": "c", "region": "us-west-2",
                "builder": {"repoURL": "https://example.com/p.git", "image": image}}});
        if let Some(image) = git_sync {
            doc["spec"]["gitSync"] = json!({"image": image});
        }
        doc
    };
    // The API server loads policies asynchronously: wait until the first refusal.
    let mut refused = Ok(());
    for _ in 0..100 {
        refused = dry_run_create(&client, &namespace, &builder("evil.example.com/miner:1", None)).await;
        if refused.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let message = refused.expect_err("a builder image outside the allowlist is refused");
    assert!(
        message.contains("spec.builder.image evil.example.com/miner:1 is not allowed")
            && message.contains("hashicorp/packer:1.11."),
        "{message}"
    );
    let message = dry_run_create(
        &client,
        &namespace,
        &builder("hashicorp/packer:1.11.2", Some("ghcr.io/x/git:1")),
    )
    .await
    .expect_err("a git-sync image outside the allowlist is refused");
    assert!(
        message.contains("spec.gitSync.image ghcr.io/x/git:1 is not allowed"),
        "{message}"
    );
    let allowed = builder(
        "hashicorp/packer:1.11.2",
        Some("registry.k8s.io/git-sync/git-sync:v4.2.3"),
    );
    assert_eq!(dry_run_create(&client, &namespace, &allowed).await, Ok(()));
    for (api, name) in applied.into_iter().rev() {
        api.delete(&name, &Default::default()).await.expect("delete");
    }
}
