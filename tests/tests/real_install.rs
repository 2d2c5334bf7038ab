//! `helm install` into a **real** `kube-apiserver` (`testing/control-plane`): the umbrella chart and each subchart
//! alone install, every object `helm template` renders exists afterwards, `helm uninstall` leaves the CRDs, and
//! `kubectl explain` documents both kinds from the installed CRDs. Its own test binary (one test), so its control
//! plane has no CRDs but the chart's.

use std::{path::PathBuf, process::Command};

use integration_tests::workspace_root;
use kube::{
    Api, Client,
    api::{DynamicObject, GroupVersionKind},
    discovery::pinned_kind,
};
use serde_json::Value;

fn tool(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The objects `helm template` renders for `chart` (release `opsy` in `namespace`).
fn rendered(chart: &std::path::Path, namespace: &str) -> Vec<Value> {
    let text = run(Command::new(tool("HELM", "helm"))
        .args(["template", "opsy"])
        .arg(chart)
        .args(["--namespace", namespace]));
    serde_norway::Deserializer::from_str(&text)
        .filter_map(|d| <Value as serde::Deserialize>::deserialize(d).ok())
        .filter(|v| !v.is_null())
        .collect()
}

/// Every rendered object exists on the server.
async fn assert_all_exist(client: &Client, objects: &[Value], namespace: &str, what: &str) {
    let mut missing = Vec::new();
    for object in objects {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let (resource, caps) = pinned_kind(client, &GroupVersionKind::gvk(group, version, kind))
            .await
            .unwrap_or_else(|e| panic!("{kind} is not served: {e}"));
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            let ns = object["metadata"]["namespace"].as_str().unwrap_or(namespace);
            Api::namespaced_with(client.clone(), ns, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        if api.get_opt(name).await.expect("get").is_none() {
            missing.push(format!("{kind}/{name}"));
        }
    }
    assert!(missing.is_empty(), "{what}: not created: {missing:?}");
}

#[tokio::test]
async fn helm_installs_the_charts_into_a_real_server_and_uninstall_keeps_the_crds() {
    let plane = control_plane::shared();
    let client = plane.client().await.expect("client");
    let kubeconfig = tempfile::NamedTempFile::new().expect("kubeconfig");
    std::fs::write(kubeconfig.path(), plane.admin_kubeconfig()).expect("kubeconfig");
    let helm = |args: &[&str]| {
        run(Command::new(tool("HELM", "helm"))
            .args(args)
            .arg("--kubeconfig")
            .arg(kubeconfig.path()))
    };
    let umbrella = workspace_root().join("charts/opsy-ami-operator");
    let subcharts = [
        umbrella.join("charts/packer-build-controller"),
        umbrella.join("charts/ami-refresh-controller"),
    ];
    for chart in std::iter::once(&umbrella).chain(subcharts.iter()) {
        let namespace = plane.namespace(&client, "install").await.expect("namespace");
        let path = chart.to_string_lossy().into_owned();
        helm(&["install", "opsy", &path, "--namespace", &namespace]);
        let objects = rendered(chart, &namespace);
        assert!(objects.len() >= 8, "{path} renders its objects: {}", objects.len());
        assert_all_exist(&client, &objects, &namespace, &path).await;
        if chart == &umbrella {
            assert_explained(kubeconfig.path()).await;
        }
        helm(&["uninstall", "opsy", "--namespace", &namespace]);
        let crds: Vec<&Value> = objects
            .iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .collect();
        assert!(!crds.is_empty(), "{path} installs CRDs by default");
        let kept: Vec<Value> = crds.into_iter().cloned().collect();
        assert_all_exist(&client, &kept, &namespace, "CRDs after helm uninstall").await;
        // Kept CRDs still name the uninstalled release (namespace) as their owner, so helm would refuse to adopt
        // them into the next release; remove them as an operator cleaning up would.
        for crd in &kept {
            let name = crd["metadata"]["name"].as_str().unwrap_or_default();
            run(Command::new(tool("KUBECTL", "kubectl"))
                .arg("--kubeconfig")
                .arg(kubeconfig.path())
                .args(["delete", "crd", name, "--wait=true"]));
        }
    }
}

/// `kubectl explain` answers from the installed CRDs' published OpenAPI.
async fn assert_explained(kubeconfig: &std::path::Path) {
    for (resource, field) in [
        ("packerbuilders.spec.builder", "repoURL"),
        ("amirefreshers.spec.refreshConfig", "parallelism"),
    ] {
        let mut last = String::new();
        // The OpenAPI document follows a new CRD within a few seconds.
        for _ in 0..100 {
            let out = Command::new(tool("KUBECTL", "kubectl"))
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .args(["explain", resource])
                .output()
                .expect("kubectl");
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() && last.contains(field) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        assert!(
            last.contains(field),
            "kubectl explain {resource} names {field}:\n{last}"
        );
        assert!(
            last.contains("DESCRIPTION"),
            "kubectl explain {resource} describes it:\n{last}"
        );
    }
}
