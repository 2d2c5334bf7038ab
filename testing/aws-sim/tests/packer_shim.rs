//! The test shim in front of Packer (`packer-shim/packer`): it runs the Packer `cargo xtask` chose
//! (`PACKER_REAL`), never another `packer` on PATH; for Packer 1.6 it answers `init` and hides `required_plugins`
//! blocks (from a copy; the project is untouched); a newer Packer runs unchanged. Fake Packers record what they
//! were asked; the last test runs the real one on the sample project.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

const SHIM_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packer-shim");

/// A fake `packer` reporting `version`, recording every other call (arguments, then the *.pkr.hcl it sees).
fn fake_packer(dir: &Path, name: &str, version: &str) -> PathBuf {
    let path = dir.join(name);
    let log = dir.join(format!("{name}.log"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nif [ \"$1\" = version ]; then echo '{version}'; exit 0; fi\n\
             echo \"args: $*\" >> '{log}'\ncat ./*.pkr.hcl >> '{log}'\n",
            log = log.display()
        ),
    )
    .expect("write fake");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// A `packer` that must never run: first on PATH after the shim.
fn decoy(dir: &Path) -> PathBuf {
    let bin = dir.join("decoy");
    std::fs::create_dir_all(&bin).expect("dir");
    let path = bin.join("packer");
    std::fs::write(&path, "#!/bin/sh\necho decoy packer ran >&2\nexit 99\n").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    bin
}

const PROJECT: &str = r#"packer {
  required_plugins {
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}

source "amazon-ebs" "node" {
  region = var.region
}
"#;

fn shim(project: &Path, real: &Path, decoy_bin: &Path, args: &[&str]) -> std::process::Output {
    Command::new(Path::new(SHIM_DIR).join("packer"))
        .args(args)
        .current_dir(project)
        .env("PACKER_REAL", real)
        .env("PATH", format!("{SHIM_DIR}:{}:/usr/bin:/bin", decoy_bin.display()))
        .output()
        .expect("shim runs")
}

#[test]
fn packer_1_6_gets_init_answered_and_the_required_plugins_block_hidden_from_a_copy() {
    let dir = tempfile::tempdir().expect("tmp");
    let real = fake_packer(dir.path(), "packer-1.6", "Packer v1.6.6");
    let decoy_bin = decoy(dir.path());
    let project = dir.path().join("project");
    std::fs::create_dir_all(&project).expect("dir");
    std::fs::write(project.join("main.pkr.hcl"), PROJECT).expect("project");

    let init = shim(&project, &real, &decoy_bin, &["init", "."]);
    assert!(init.status.success(), "{init:?}");
    assert!(
        !dir.path().join("packer-1.6.log").exists(),
        "init must not reach Packer 1.6"
    );

    let validate = shim(
        &project,
        &real,
        &decoy_bin,
        &["validate", "-var", "region=us-east-1", "."],
    );
    assert!(validate.status.success(), "{validate:?}");
    let log = std::fs::read_to_string(dir.path().join("packer-1.6.log")).expect("the real packer ran");
    assert!(log.contains("args: validate -var region=us-east-1 ."), "{log}");
    assert!(!log.contains("required_plugins"), "{log}");
    assert!(
        log.contains(r#"source "amazon-ebs" "node""#),
        "the rest of the project is kept: {log}"
    );
    assert!(log.contains("packer {\n}"), "only the block is removed: {log}");
    assert_eq!(
        std::fs::read_to_string(project.join("main.pkr.hcl")).expect("project"),
        PROJECT,
        "the project itself is untouched"
    );
}

#[test]
fn a_current_packer_runs_unchanged_and_the_decoy_on_path_never_runs() {
    let dir = tempfile::tempdir().expect("tmp");
    let real = fake_packer(dir.path(), "packer-new", "Packer v1.11.2");
    let decoy_bin = decoy(dir.path());
    let project = dir.path().join("project");
    std::fs::create_dir_all(&project).expect("dir");
    std::fs::write(project.join("main.pkr.hcl"), PROJECT).expect("project");

    for args in [&["init", "."][..], &["build", "."]] {
        let out = shim(&project, &real, &decoy_bin, args);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let log = std::fs::read_to_string(dir.path().join("packer-new.log")).expect("log");
    assert!(log.contains("args: init ."), "{log}");
    assert!(log.contains("args: build ."), "{log}");
    assert!(
        log.contains("required_plugins"),
        "a current Packer sees the project as written: {log}"
    );
}

#[test]
fn the_sample_project_validates_with_the_packer_the_set_up_installed() {
    let real = std::env::var_os("OPSY_PACKER").map_or_else(|| PathBuf::from("/usr/bin/packer"), PathBuf::from);
    let dir = tempfile::tempdir().expect("tmp");
    aws_sim::sample_packer_repo(dir.path(), "eks-node").expect("sample repo");
    let project = dir.path().join("eks-node");
    assert!(
        project.join("versions.pkr.hcl").is_file(),
        "the required_plugins block is part of the sample"
    );
    let decoy_bin = decoy(dir.path());
    let out = shim(
        &project,
        &real,
        &decoy_bin,
        &[
            "validate",
            "-var",
            "ami_id=ami-0123456789abcdef0",
            "-var",
            "region=us-east-1",
            ".",
        ],
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
