//! The demo end to end, non-interactively: exit code and summary. It runs the controller binaries of this very
//! test build (same profile and features, so the suite compiles the AWS SDK once and never waits for a nested
//! cargo), the in-memory API server, the AWS emulator and real Packer.

use std::{path::Path, process::Command};

#[test]
fn the_demo_completes_the_loop_and_prints_the_summary() {
    let testbed = Path::new(env!("CARGO_BIN_EXE_testbed"));
    // `cargo test --workspace` builds every binary an integration test needs into this directory, the two
    // controllers included (their own tests run them).
    let bin_dir = testbed.parent().expect("binary directory");
    for controller in ["packer-build-controller", "ami-refresh-controller"] {
        assert!(
            bin_dir.join(controller).is_file(),
            "{controller} is not built in {}: run the whole workspace's tests (cargo xtask test)",
            bin_dir.display()
        );
    }
    let out = Command::new(testbed)
        .args(["demo", "--timeout", "4m", "--bin-dir"])
        .arg(bin_dir)
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    let summary = stdout
        .split("\nSummary\n")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    let built = summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("built AMI:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no built AMI in:\n{summary}"));
    assert!(built.starts_with("ami-"), "{summary}");
    assert!(
        summary.contains("status=active") && summary.contains("brought-to-you-by=opsy-the-ami-operator"),
        "{summary}"
    );
    for group in ["workers-a", "workers-b"] {
        let line = summary
            .lines()
            .find(|l| l.trim_start().starts_with(group))
            .expect(group);
        assert!(
            line.contains(&format!("-> {built}")) && line.contains("Successful"),
            "{line}"
        );
    }
    let excluded = summary
        .lines()
        .find(|l| l.trim_start().starts_with("ingress-dev"))
        .expect("ingress-dev");
    assert!(
        excluded.contains("skipped (spec.exclude)") && !excluded.contains(built),
        "{excluded}"
    );
    assert!(stdout.contains("The loop completed"), "{stdout}");
}
