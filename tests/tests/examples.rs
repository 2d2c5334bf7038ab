//! Every example under `examples/` (the seed objects byte-for-byte, plus one per feature) deserialises into the Rust
//! types and is accepted by the committed CRD schema, OpenAPI and CEL alike, both as written and as the Rust types
//! write it back.

use api_types::{AMIRefresher, PackerBuilder, PackerBuilderStatus};
use integration_tests::{validator_for, workspace_root, yaml_documents, yaml_files};
use serde_json::Value;

fn check(kind: &str, doc: &Value, origin: &str) {
    let validator = validator_for(kind);
    if let Err(errors) = validator.validate(doc) {
        panic!("{origin}: refused by the {kind} schema: {errors:#?}");
    }
    let reserialised = match kind {
        "PackerBuilder" => serde_json::to_value(
            serde_json::from_value::<PackerBuilder>(doc.clone()).unwrap_or_else(|e| panic!("{origin}: {e}")),
        ),
        "AMIRefresher" => serde_json::to_value(
            serde_json::from_value::<AMIRefresher>(doc.clone()).unwrap_or_else(|e| panic!("{origin}: {e}")),
        ),
        other => panic!("{origin}: unexpected kind {other}"),
    }
    .expect("serialise");
    if let Err(errors) = validator.validate(&reserialised) {
        panic!("{origin}: the Rust types write back an object the schema refuses: {errors:#?}");
    }
}

#[test]
fn every_example_deserialises_and_validates() {
    let files = yaml_files(&workspace_root().join("examples"));
    let mut checked = 0;
    for file in &files {
        for doc in yaml_documents(file) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
            if doc["apiVersion"] != "ami.refresh.ops/v1alpha1" {
                continue;
            }
            check(&kind, &doc, &file.display().to_string());
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "expected the seed and feature examples, checked only {checked}"
    );
}

#[test]
fn seed_examples_are_present() {
    let seed = workspace_root().join("examples/seed");
    for name in [
        "packerbuilder-000.yaml",
        "packerbuilder-001.yaml",
        "amirefresher-001.yaml",
    ] {
        assert!(seed.join(name).is_file(), "missing seed example {name}");
    }
}

#[test]
fn seed_status_block_deserialises_and_validates() {
    let root = workspace_root();
    let status = yaml_documents(&root.join("tests/fixtures/valid/packerbuilder-status-000.yaml"))
        .pop()
        .expect("status document");
    let mut object = yaml_documents(&root.join("examples/seed/packerbuilder-000.yaml"))
        .pop()
        .expect("seed object");
    object["status"] = status["status"].clone();
    let typed: PackerBuilderStatus = serde_json::from_value(status["status"].clone()).expect("seed status parses");
    assert_eq!(typed.job_name.as_deref(), Some("packer-builder-remote-3cb1b"));
    assert_eq!(typed.last_run_built_image_id.as_deref(), Some("ami-0d2587d8e405f376c"));
    assert_eq!(typed.failed_job_count, 0);
    assert_eq!(typed.conditions.len(), 1);
    check("PackerBuilder", &object, "seed 000 status");
}

#[test]
fn seed_durations_parse_to_what_the_seed_means() {
    let doc = yaml_documents(&workspace_root().join("examples/seed/packerbuilder-000.yaml"))
        .pop()
        .expect("seed object");
    let pb: PackerBuilder = serde_json::from_value(doc).expect("seed parses");
    assert_eq!(
        pb.spec.time_outs.expires_in.parse(),
        Ok(std::time::Duration::from_secs(48 * 3600))
    );
    assert_eq!(
        pb.spec.time_outs.controller_timer.parse(),
        Ok(std::time::Duration::from_secs(300))
    );
    assert_eq!(pb.spec.max_failed_jobs, 3);
    assert_eq!(pb.spec.builder.commands[0].args, vec!["-force".to_owned()]);
}
