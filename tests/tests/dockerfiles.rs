//! The Dockerfiles parse (with `dockerfile-parse`, installed in the test venv by `cargo xtask test`; no Docker
//! daemon runs here for `docker build --check`) and follow the project's rules: a `# syntax=` line (the cache
//! mounts need BuildKit), bases chosen by `ARG` so a release pipeline pins them by digest and never `latest`, a
//! numeric non-root `USER` in the final stage, OCI labels, no `ADD`, apt without recommends and without its lists,
//! downloads checked against published checksums.

use std::{path::PathBuf, process::Command};

use integration_tests::workspace_root;
use serde_json::Value;

const PARSER: &str = r#"
import json, sys
from dockerfile_parse import DockerfileParser
p = DockerfileParser(path=sys.argv[1])
print(json.dumps({"structure": p.structure, "first_line": p.content.splitlines()[0]}))
"#;

struct Instruction {
    kind: String,
    value: String,
}

fn parse(path: &PathBuf) -> (String, Vec<Instruction>) {
    let python = std::env::var_os("OPSY_AWS_EMULATOR_PYTHON")
        .map_or_else(|| workspace_root().join("target/tools/venv/bin/python"), PathBuf::from);
    let out = Command::new(python)
        .args(["-c", PARSER])
        .arg(path)
        .output()
        .expect("the test venv's python runs (cargo xtask test installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let parsed: Value = serde_json::from_slice(&out.stdout).expect("json");
    let instructions = parsed["structure"]
        .as_array()
        .expect("structure")
        .iter()
        .map(|i| Instruction {
            kind: i["instruction"].as_str().unwrap_or_default().to_owned(),
            value: i["value"].as_str().unwrap_or_default().to_owned(),
        })
        .filter(|i| i.kind != "COMMENT")
        .collect();
    (
        parsed["first_line"].as_str().unwrap_or_default().to_owned(),
        instructions,
    )
}

fn check(relative: &str) -> Vec<String> {
    let path = workspace_root().join(relative);
    let (first_line, instructions) = parse(&path);
    let mut problems = Vec::new();
    if !first_line.starts_with("# syntax=docker/dockerfile:1") {
        problems.push(format!("first line is not a # syntax= line: {first_line}"));
    }
    let mut args = std::collections::BTreeMap::new();
    let mut stages = Vec::new();
    let mut final_stage = Vec::new();
    for i in &instructions {
        match i.kind.as_str() {
            "ARG" => {
                if let Some((name, default)) = i.value.split_once('=') {
                    args.insert(name.trim().to_owned(), default.trim().to_owned());
                }
            }
            "FROM" => {
                let words: Vec<&str> = i
                    .value
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--platform"))
                    .collect();
                let image = words.first().copied().unwrap_or_default();
                let resolved = image
                    .strip_prefix("${")
                    .and_then(|v| v.strip_suffix('}'))
                    .map(|name| args.get(name).cloned().unwrap_or_default());
                match resolved {
                    Some(default) if default.contains(':') && !default.ends_with(":latest") => {}
                    Some(default) => problems.push(format!("base {image} defaults to {default:?}: name a tag")),
                    None if stages.iter().any(|s| s == image) => {}
                    None => problems.push(format!("FROM {image}: choose bases with an ARG so they can be pinned")),
                }
                if let Some(alias) = words
                    .iter()
                    .position(|w| w.eq_ignore_ascii_case("AS"))
                    .and_then(|n| words.get(n + 1))
                {
                    stages.push((*alias).to_owned());
                }
                final_stage.clear();
            }
            "ADD" => problems.push(format!("ADD {}: use COPY (and checked downloads)", i.value)),
            "RUN" if i.value.contains("apt-get install") => {
                if !i.value.contains("--no-install-recommends") {
                    problems.push("apt-get install without --no-install-recommends".to_owned());
                }
                if !i.value.contains("rm -rf /var/lib/apt/lists/*") {
                    problems.push("apt lists left in the layer".to_owned());
                }
            }
            "RUN" if i.value.contains("curl ") && !i.value.contains("sha256sum -c") => {
                problems.push("a download without a checksum check".to_owned());
            }
            _ => {}
        }
        final_stage.push(i);
    }
    let user = final_stage
        .iter()
        .rev()
        .find(|i| i.kind == "USER")
        .map(|i| i.value.clone());
    match user.as_deref() {
        Some(u) if u.split(':').all(|id| id.parse::<u32>().is_ok_and(|n| n != 0)) => {}
        other => problems.push(format!("final stage USER must be a numeric non-root id, got {other:?}")),
    }
    if !final_stage
        .iter()
        .any(|i| i.kind == "LABEL" && i.value.contains("org.opencontainers.image.source"))
    {
        problems.push("final stage has no OCI labels".to_owned());
    }
    problems
}

#[test]
fn the_dockerfiles_parse_and_follow_the_rules() {
    for file in ["Dockerfile", "images/packer/Dockerfile"] {
        let problems = check(file);
        assert!(problems.is_empty(), "{file}:\n{}", problems.join("\n"));
    }
}

#[test]
fn the_packer_image_bakes_the_amazon_plugin_and_runs_as_the_job_user() {
    let (_, instructions) = parse(&workspace_root().join("images/packer/Dockerfile"));
    let text: Vec<String> = instructions.iter().map(|i| format!("{} {}", i.kind, i.value)).collect();
    let has = |needle: &str| text.iter().any(|t| t.contains(needle));
    assert!(has("packer plugins install github.com/hashicorp/amazon"), "{text:#?}");
    assert!(has("PACKER_PLUGIN_PATH=/opt/packer/plugins"), "{text:#?}");
    assert!(has("USER 65532:65532"), "the Job runs as 65532");
    assert!(has("HOME=/tmp"), "the Job's writable emptyDir is /tmp");
    for tool in ["git", "openssh-client"] {
        assert!(has(tool), "{tool} missing");
    }
}

#[test]
fn the_rules_catch_what_they_claim_to() {
    let dir = tempfile::tempdir().expect("tmp");
    let bad = dir.path().join("Dockerfile");
    std::fs::write(
        &bad,
        "FROM debian:latest\nADD https://example.com/x /x\nRUN apt-get update && apt-get install -y curl\nUSER root\n",
    )
    .expect("write");
    let relative = bad.to_string_lossy().into_owned();
    let problems = check(&relative);
    for expect in [
        "# syntax=",
        "choose bases with an ARG",
        "ADD",
        "--no-install-recommends",
        "apt lists",
        "USER",
        "OCI",
    ] {
        assert!(
            problems.iter().any(|p| p.contains(expect)),
            "{expect} not reported: {problems:#?}"
        );
    }
}
