//! The build Job.
//!
//! Layout: an `emptyDir` workspace; init containers `git-sync` (one-time, depth 1), `packer-init` and
//! `packer-validate`; the main container `packer-build`. Every Packer step runs `packer` directly with its argv,
//! except the build, which runs [`BUILD_SCRIPT`]: a constant script that receives the argv as positional
//! parameters (`"$@"`), streams Packer's output and writes the artifact to the termination message, so the built
//! AMI survives a controller restart. Pods run non-root, without privilege escalation, with a read-only root
//! filesystem and the RuntimeDefault seccomp profile.

use api_types::packer_builder::BuilderSpec;
use k8s_openapi::{api::batch::v1::Job, apimachinery::pkg::apis::meta::v1::OwnerReference};
use serde_json::{Value, json};

use crate::command::{Step, name};

/// git-sync image used when `gitSync.image` is not set.
pub const DEFAULT_GIT_SYNC_IMAGE: &str = "registry.k8s.io/git-sync/git-sync:v4.2.3";
/// Label naming the PackerBuilder a Job builds for.
pub const LABEL_BUILDER: &str = "ami.refresh.ops/packer-builder";
/// Label carrying the build ID.
pub const LABEL_BUILD_ID: &str = "ami.refresh.ops/build-id";
/// `app.kubernetes.io/managed-by` value on every Job this controller makes.
pub const MANAGED_BY: &str = "packer-build-controller";
/// Where the workspace volume is mounted; git-sync links the checkout at `<WORKSPACE>/repo`.
pub const WORKSPACE: &str = "/workspace";

/// The wrapper of `packer build`, the build container's PID 1. Constant: user values arrive only as positional
/// parameters. A shell as PID 1 ignores SIGTERM and never passes it on, so the kubelet's SIGTERM (deadline, Job or
/// PackerBuilder deleted, node drain) would reach nobody and Packer would be SIGKILLed with its instance, security
/// group and key pair left behind. So Packer runs in the background, SIGTERM and SIGINT are forwarded to it as
/// SIGTERM (Packer's own signal for "cancel and clean up"), and the wrapper waits for it to finish cleaning up
/// (within the pod's `terminationGracePeriodSeconds`). The output passes through `tee` for the logs; the last
/// artifact line becomes the termination message. Needs `/bin/sh`, `mkfifo`, `tee`, `grep`, `tail`, `cut`, `kill`.
pub const BUILD_SCRIPT: &str = r#"set -u
rm -f /tmp/packer-build.fifo
mkfifo /tmp/packer-build.fifo
tee /tmp/packer-build.out < /tmp/packer-build.fifo &
tee_pid=$!
packer "$@" > /tmp/packer-build.fifo 2>&1 &
packer_pid=$!
trap 'kill -TERM "$packer_pid" 2>/dev/null' TERM INT
while :; do
  wait "$packer_pid"
  rc=$?
  kill -0 "$packer_pid" 2>/dev/null || break
done
wait "$tee_pid"
grep ',artifact,[0-9][0-9]*,id,' /tmp/packer-build.out | tail -n 50 | cut -d, -f6- > /dev/termination-log
exit "$rc"
"#;

/// Everything the Job is made of.
#[derive(Clone, Debug)]
pub struct JobParams<'a> {
    /// PackerBuilder name.
    pub builder_name: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Owner reference to the PackerBuilder (controller=true).
    pub owner: OwnerReference,
    /// Build ID.
    pub build_id: &'a str,
    /// Short job ID (part of the name).
    pub job_id: &'a str,
    /// Rendered steps.
    pub steps: &'a [Step],
    /// The spec's builder section.
    pub builder: &'a BuilderSpec,
    /// git-sync image.
    pub git_sync_image: &'a str,
    /// git-sync container name.
    pub git_sync_name: &'a str,
    /// Secret with `username`/`token` for the repository.
    pub git_secret: Option<&'a str>,
    /// `ttlSecondsAfterFinished`.
    pub ttl_seconds: i32,
    /// `activeDeadlineSeconds`.
    pub deadline_seconds: i64,
    /// The pod's `terminationGracePeriodSeconds`: how long Packer has after SIGTERM to delete what it created.
    pub grace_seconds: i64,
    /// The effective `builder.pod` (the spec's over the controller's defaults).
    pub pod: &'a api_types::packer_builder::BuildPodSpec,
}

/// The short job ID derived from a build ID: deterministic, so a retried create targets the same Job.
pub fn job_id_for(build_id: &str) -> String {
    build_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(5)
        .collect::<String>()
        .to_lowercase()
}

/// A Kubernetes label value (at most 63 characters) for a name: the name itself when it fits, else its first
/// characters, `-` and 16 hex digits of its SHA-256, so two long names never share a label and the same name
/// always gives the same value (the API server refuses a longer label, and with it the whole Job).
pub fn label_value(name: &str) -> String {
    const MAX: usize = 63;
    if name.len() <= MAX {
        return name.to_owned();
    }
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    let prefix: String = name.chars().take(MAX - 17).collect();
    format!("{}-{}", prefix.trim_end_matches(['-', '.', '_']), &digest[..16])
}

/// `sizeLimit` of each of the build Pod's two `emptyDir` volumes (the checkout and Packer's working files; the
/// image is built in AWS, not here).
pub const SCRATCH_SIZE_LIMIT: &str = "10Gi";

/// `<builder>-<job id>`, kept within the 63 characters a Job name may have.
pub fn job_name(builder_name: &str, job_id: &str) -> String {
    let max = 63 - job_id.len() - 1;
    let prefix: String = builder_name.chars().take(max).collect();
    format!("{}-{job_id}", prefix.trim_end_matches(['-', '.']))
}

/// Builds the Job.
pub fn build_job(p: &JobParams<'_>) -> Result<Job, serde_json::Error> {
    let job_name = job_name(p.builder_name, p.job_id);
    let labels = json!({
        LABEL_BUILDER: label_value(p.builder_name),
        LABEL_BUILD_ID: p.build_id,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/component": "packer-build",
    });
    let container_security = json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
    });
    let mounts = json!([{"name": "workspace", "mountPath": WORKSPACE}, {"name": "tmp", "mountPath": "/tmp"}]);
    let env_from: Vec<Value> = p
        .builder
        .secret
        .iter()
        .map(|s| json!({"secretRef": {"name": s}}))
        .collect();
    let packer_container = |step: &Step, container_name: String| -> Value {
        let mut env = vec![
            json!({"name": "HOME", "value": "/tmp"}),
            json!({"name": "CHECKPOINT_DISABLE", "value": "1"}),
            // Templates may tag the AMI with it (`variable "build_id"`); an undeclared PKR_VAR_ is ignored.
            json!({"name": "PKR_VAR_build_id", "value": p.build_id}),
        ];
        if step.debug {
            env.push(json!({"name": "PACKER_LOG", "value": "1"}));
        }
        let workdir = if step.working_dir == "." {
            format!("{WORKSPACE}/repo")
        } else {
            format!("{WORKSPACE}/repo/{}", step.working_dir.trim_end_matches('/'))
        };
        let mut c = json!({
            "name": container_name,
            "image": p.builder.image,
            "workingDir": workdir,
            "env": env,
            "envFrom": env_from,
            "volumeMounts": mounts,
            "securityContext": container_security,
            "terminationMessagePolicy": "File",
        });
        if let Some(resources) = &p.pod.resources {
            c["resources"] = json!({"requests": resources.requests, "limits": resources.limits});
        }
        if step.sub_command == api_types::packer_builder::PackerSubCommand::Build {
            c["command"] = json!(["/bin/sh", "-c", BUILD_SCRIPT, "packer-build"]);
            c["args"] = json!(step.args);
        } else {
            c["command"] = json!(["packer"]);
            c["args"] = json!(step.args);
        }
        c
    };
    let mut git_env = Vec::new();
    if let Some(secret) = p.git_secret {
        git_env.push(
            json!({"name": "GITSYNC_USERNAME", "valueFrom": {"secretKeyRef": {"name": secret, "key": "username"}}}),
        );
        git_env
            .push(json!({"name": "GITSYNC_PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}}));
    }
    let mut init = vec![json!({
        "name": p.git_sync_name,
        "image": p.git_sync_image,
        "args": [
            format!("--repo={}", p.builder.repo_url),
            format!("--ref={}", p.builder.branch),
            "--depth=1",
            "--one-time",
            format!("--root={WORKSPACE}"),
            "--link=repo",
        ],
        "env": git_env,
        "volumeMounts": mounts,
        "securityContext": container_security,
    })];
    let mut main = Vec::new();
    for step in p.steps {
        let container = packer_container(step, format!("packer-{}", name(step.sub_command)));
        if step.sub_command == api_types::packer_builder::PackerSubCommand::Build {
            main.push(container);
        } else {
            init.push(container);
        }
    }
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        // Scratch space is bounded: a runaway build is evicted instead of filling the node's disk.
        "volumes": [{"name": "workspace", "emptyDir": {"sizeLimit": SCRATCH_SIZE_LIMIT}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": SCRATCH_SIZE_LIMIT}}],
        "initContainers": init,
        "containers": main,
        "terminationGracePeriodSeconds": p.grace_seconds,
        // A build talks to AWS and git, never to the Kubernetes API: no ServiceAccount token is mounted unless
        // `builder.pod` asks. IRSA and EKS Pod Identity inject their own projected AWS token whatever this says.
        "automountServiceAccountToken": p.pod.automount_service_account_token.unwrap_or(false),
    });
    if let Some(sa) = p
        .builder
        .job_service_account_name
        .as_ref()
        .or(p.pod.service_account_name.as_ref())
    {
        pod_spec["serviceAccountName"] = json!(sa);
    }
    if let Some(selector) = &p.pod.node_selector {
        pod_spec["nodeSelector"] = json!(selector);
    }
    if let Some(tolerations) = &p.pod.tolerations {
        pod_spec["tolerations"] = json!(tolerations);
    }
    let mut template_metadata = json!({"labels": labels});
    if let Some(annotations) = &p.pod.annotations {
        template_metadata["annotations"] = json!(annotations);
    }
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name,
            "namespace": p.namespace,
            "labels": labels,
            "ownerReferences": [p.owner],
        },
        "spec": {
            "backoffLimit": 0,
            // A pod evicted or preempted (node drain, spot reclaim) is not a failed build: the Job starts another
            // pod instead of failing and counting toward maxFailedJobs.
            "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]},
            "activeDeadlineSeconds": p.deadline_seconds,
            "ttlSecondsAfterFinished": p.ttl_seconds,
            "template": {"metadata": template_metadata, "spec": pod_spec},
        }
    }))
}

#[cfg(test)]
mod wrapper_tests {
    //! The build wrapper run by a real `/bin/sh` with a fake `packer`: exit codes and the artifact pass through,
    //! and SIGTERM to the wrapper (the container's PID 1) reaches Packer, which gets to clean up.

    use std::{
        path::{Path, PathBuf},
        process::{Command, Stdio},
        time::{Duration, Instant},
    };

    use super::BUILD_SCRIPT;

    struct Sandbox(PathBuf);

    impl Drop for Sandbox {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn sandbox(name: &str, fake_packer: &str) -> Sandbox {
        let dir = std::env::temp_dir().join(format!("opsy-wrapper-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).expect("dir");
        let packer = dir.join("bin/packer");
        std::fs::write(&packer, format!("#!/bin/sh\n{fake_packer}\n")).expect("fake packer");
        let status = Command::new("chmod").arg("755").arg(&packer).status().expect("chmod");
        assert!(status.success());
        Sandbox(dir)
    }

    fn start(dir: &Path) -> std::process::Child {
        let script = BUILD_SCRIPT.replace("/tmp/", &format!("{}/", dir.display())).replace(
            "/dev/termination-log",
            &dir.join("termination-log").display().to_string(),
        );
        Command::new("/bin/sh")
            .args(["-c", &script, "packer-build", "build", "-machine-readable", "."])
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    dir.join("bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("MARK", dir.join("cleaned-up"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh runs")
    }

    fn wait(child: &mut std::process::Child, within: Duration) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < within {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        None
    }

    #[test]
    fn the_exit_code_and_every_artifact_pass_through() {
        let sb = sandbox(
            "exit",
            "echo '1,amazon-ebs,artifact,0,id,us-east-1:ami-0aaaaaaaaaaaaaaaa'\n\
             echo '2,amazon-ebs,artifact,0,id,us-east-1:ami-0bbbbbbbbbbbbbbbb'\nexit 3",
        );
        let mut child = start(&sb.0);
        assert_eq!(wait(&mut child, Duration::from_secs(10)), Some(3));
        assert_eq!(
            std::fs::read_to_string(sb.0.join("termination-log")).expect("termination log"),
            "us-east-1:ami-0aaaaaaaaaaaaaaaa\nus-east-1:ami-0bbbbbbbbbbbbbbbb\n",
            "a template with two sources reports two AMIs"
        );
        let out = std::fs::read_to_string(sb.0.join("packer-build.out")).expect("output kept");
        assert!(out.contains("ami-0aaaaaaaaaaaaaaaa"), "{out}");
    }

    #[test]
    fn sigterm_to_the_wrapper_reaches_packer_which_cleans_up_and_reports_its_artifact() {
        let sb = sandbox(
            "term",
            "trap 'echo cleaned > \"$MARK\"; echo 1,amazon-ebs,artifact,0,id,us-east-1:ami-0ccccccccccccccccc; exit 0' TERM\n\
             echo 1,,ui,say,started\nwhile :; do sleep 0.1; done",
        );
        let mut child = start(&sb.0);
        let out = sb.0.join("packer-build.out");
        let started = Instant::now();
        while !std::fs::read_to_string(&out).is_ok_and(|o| o.contains("started")) {
            assert!(started.elapsed() < Duration::from_secs(10), "packer never started");
            std::thread::sleep(Duration::from_millis(50));
        }
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        assert_eq!(
            wait(&mut child, Duration::from_secs(10)),
            Some(0),
            "the wrapper waits for Packer's cleanup and exits with its code"
        );
        assert!(sb.0.join("cleaned-up").exists(), "Packer never received SIGTERM");
        assert_eq!(
            std::fs::read_to_string(sb.0.join("termination-log")).expect("termination log"),
            "us-east-1:ami-0ccccccccccccccccc\n"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::render_steps;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn builder() -> BuilderSpec {
        serde_json::from_value(json!({
            "repoURL": "https://github.com/example/packer.git", "branch": "main", "image": "hashicorp/packer:1.11.2",
            "dir": "packer/generic-fips", "secret": "aws-creds", "jobServiceAccountName": "eks-ami-builder",
            "commands": [{"subCommand": "build", "args": ["; touch pwned"], "debug": true}]
        }))
        .expect("builder")
    }

    fn job() -> Job {
        job_named("packer-builder-local")
    }

    #[test]
    fn packer_gets_a_grace_period_and_a_disrupted_pod_is_not_a_failed_build() {
        let spec = job().spec.expect("spec");
        assert_eq!(
            spec.template
                .spec
                .as_ref()
                .expect("pod")
                .termination_grace_period_seconds,
            Some(300)
        );
        let rules = spec.pod_failure_policy.expect("podFailurePolicy").rules;
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].action, "Ignore");
        let on = rules[0].on_pod_conditions.as_ref().expect("onPodConditions");
        assert_eq!(on[0].type_, "DisruptionTarget");
    }

    fn job_named(builder_name: &str) -> Job {
        job_with(builder_name, &api_types::packer_builder::BuildPodSpec::default())
    }

    fn job_with(builder_name: &str, pod: &api_types::packer_builder::BuildPodSpec) -> Job {
        let b = builder();
        let steps = render_steps(&b, None, false);
        build_job(&JobParams {
            builder_name,
            namespace: "default",
            owner: OwnerReference {
                api_version: "ami.refresh.ops/v1alpha1".into(),
                kind: "PackerBuilder".into(),
                name: "packer-builder-local".into(),
                uid: "uid-1".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
            build_id: "3cb1b7aa-0000",
            job_id: "3cb1b",
            steps: &steps,
            builder: &b,
            git_sync_image: DEFAULT_GIT_SYNC_IMAGE,
            git_sync_name: "git-sync",
            git_secret: Some("git-sync"),
            ttl_seconds: 3600,
            deadline_seconds: 7200,
            grace_seconds: 300,
            pod,
        })
        .expect("job")
    }

    #[test]
    fn the_effective_build_pod_settings_reach_the_pod_and_every_packer_container() {
        use api_types::packer_builder::{BuildPodSpec, BuildResources};
        let defaults: BuildPodSpec = serde_json::from_value(json!({
            "nodeSelector": {"pool": "builds"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "builds", "effect": "NoSchedule"}],
            "annotations": {"owner": "platform", "karpenter.sh/do-not-disrupt": "false"},
            "resources": {"requests": {"cpu": "250m"}},
        }))
        .expect("defaults");
        let spec = BuildPodSpec {
            resources: Some(BuildResources {
                requests: [("cpu".to_owned(), Quantity("2".into()))].into(),
                limits: [("memory".to_owned(), Quantity("4Gi".into()))].into(),
            }),
            annotations: Some([("karpenter.sh/do-not-disrupt".to_owned(), "true".to_owned())].into()),
            automount_service_account_token: Some(true),
            ..BuildPodSpec::default()
        };
        let job = job_with("packer-builder-local", &spec.over(&defaults));
        let template = job.spec.expect("spec").template;
        let annotations = template.metadata.expect("metadata").annotations.expect("annotations");
        assert_eq!(annotations["karpenter.sh/do-not-disrupt"], "true", "the spec wins");
        assert_eq!(annotations["owner"], "platform", "defaults are merged in");
        let pod = template.spec.expect("pod spec");
        assert_eq!(
            pod.node_selector.expect("selector")["pool"],
            "builds",
            "the default applies"
        );
        assert_eq!(
            pod.tolerations.expect("tolerations")[0].key.as_deref(),
            Some("dedicated")
        );
        assert_eq!(pod.automount_service_account_token, Some(true), "asked for");
        let packer: Vec<_> = pod
            .init_containers
            .iter()
            .flatten()
            .chain(&pod.containers)
            .filter(|c| c.name.starts_with("packer-"))
            .collect();
        assert_eq!(packer.len(), 3);
        for c in packer {
            let r = c.resources.as_ref().expect("resources");
            assert_eq!(
                r.requests.as_ref().expect("requests")["cpu"],
                Quantity("2".into()),
                "the spec's, whole"
            );
            assert_eq!(r.limits.as_ref().expect("limits")["memory"], Quantity("4Gi".into()));
        }
        let git = &pod.init_containers.as_ref().expect("init")[0];
        assert!(git.resources.is_none(), "git-sync keeps its own footprint");
    }

    #[test]
    fn job_name_is_deterministic_and_fits_63_characters() {
        assert_eq!(job_id_for("3CB1B7AA-0000-1111"), "3cb1b");
        assert_eq!(job_name("packer-builder-local", "3cb1b"), "packer-builder-local-3cb1b");
        let long = "a".repeat(100);
        assert_eq!(job_name(&long, "3cb1b").len(), 63);
    }

    #[test]
    fn a_long_builder_name_becomes_a_valid_distinct_label_value() {
        assert_eq!(label_value("packer-builder-local"), "packer-builder-local");
        let a = format!("{}-a", "x".repeat(100));
        let b = format!("{}-b", "x".repeat(100));
        let label = label_value(&a);
        assert!(label.len() <= 63, "{label}");
        assert_eq!(label, label_value(&a), "deterministic");
        assert_ne!(label, label_value(&b), "distinct");
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        assert!(label.chars().all(ok));
        assert!(label.starts_with(|c: char| c.is_ascii_alphanumeric()));
        assert!(label.ends_with(|c: char| c.is_ascii_alphanumeric()));
        let long_job = job_named(&a);
        let labels = long_job.metadata.labels.expect("labels");
        assert_eq!(labels[LABEL_BUILDER], label);
    }

    #[test]
    fn job_runs_git_sync_then_init_validate_and_build_in_order() {
        let job = job();
        let spec = job.spec.expect("spec").template.spec.expect("pod spec");
        let init: Vec<String> = spec
            .init_containers
            .expect("init")
            .iter()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(init, ["git-sync", "packer-init", "packer-validate"]);
        assert_eq!(spec.containers[0].name, "packer-build");
        assert_eq!(spec.service_account_name.as_deref(), Some("eks-ami-builder"));
        assert_eq!(
            spec.automount_service_account_token,
            Some(false),
            "no API token in the build pod"
        );
        let limits: Vec<String> = spec
            .volumes
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.empty_dir.and_then(|e| e.size_limit).map(|q| q.0).unwrap_or_default())
            .collect();
        assert_eq!(
            limits,
            [SCRATCH_SIZE_LIMIT, SCRATCH_SIZE_LIMIT],
            "bounded scratch volumes"
        );
        assert_eq!(
            spec.containers[0].working_dir.as_deref(),
            Some("/workspace/repo/packer/generic-fips")
        );
    }

    #[test]
    fn user_values_are_argv_entries_and_the_only_script_is_constant() {
        let job = job();
        let spec = job.spec.expect("spec").template.spec.expect("pod spec");
        let build = &spec.containers[0];
        assert_eq!(
            build.command.as_deref(),
            Some(
                &[
                    "/bin/sh".to_owned(),
                    "-c".to_owned(),
                    BUILD_SCRIPT.to_owned(),
                    "packer-build".to_owned()
                ][..]
            )
        );
        assert!(build.args.as_ref().expect("args").contains(&"; touch pwned".to_owned()));
        for c in spec.init_containers.iter().flatten() {
            assert_ne!(
                c.command.as_deref().and_then(|c| c.first()).map(String::as_str),
                Some("/bin/sh"),
                "{} uses a shell",
                c.name
            );
        }
        let debug_env = build
            .env
            .iter()
            .flatten()
            .any(|e| e.name == "PACKER_LOG" && e.value.as_deref() == Some("1"));
        assert!(debug_env, "debug: true is PACKER_LOG=1");
    }

    #[test]
    fn pod_is_non_root_without_privilege_escalation_and_secrets_come_as_env() {
        let job = job();
        let job_spec = job.spec.clone().expect("spec");
        assert_eq!(job_spec.backoff_limit, Some(0));
        assert_eq!(job_spec.ttl_seconds_after_finished, Some(3600));
        assert_eq!(job_spec.active_deadline_seconds, Some(7200));
        let spec = job_spec.template.spec.expect("pod spec");
        let psc = spec.security_context.expect("pod security");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.map(|s| s.type_), Some("RuntimeDefault".to_owned()));
        for c in spec.init_containers.iter().flatten().chain(spec.containers.iter()) {
            let sc = c.security_context.clone().expect("container security");
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        }
        let env_from = spec.containers[0].env_from.clone().expect("envFrom");
        assert_eq!(
            env_from[0].secret_ref.as_ref().map(|s| s.name.as_str()),
            Some("aws-creds")
        );
        let git = &spec.init_containers.expect("init")[0];
        assert!(git.env.iter().flatten().any(|e| e.name == "GITSYNC_PASSWORD"));
        let refs = job.metadata.owner_references.expect("owner");
        assert_eq!(
            (refs[0].kind.as_str(), refs[0].controller),
            ("PackerBuilder", Some(true))
        );
    }
}
