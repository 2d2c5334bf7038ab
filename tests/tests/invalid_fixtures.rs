//! Every object under `tests/fixtures/invalid/` is refused by the committed CRD schema, with an error that names
//! the field given in the fixture's `# expect-error:` header and contains its `# expect-message:` text.

use integration_tests::{fixture_header, validator_for, workspace_root, yaml_documents, yaml_files};

#[test]
fn every_invalid_fixture_is_rejected_naming_its_field() {
    let files = yaml_files(&workspace_root().join("tests/fixtures/invalid"));
    assert!(
        files.len() >= 30,
        "expected the invalid fixture set, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read fixture");
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let (Some(path), Some(message)) = (
            fixture_header(&text, "expect-error"),
            fixture_header(&text, "expect-message"),
        ) else {
            failures.push(format!("{name}: missing expect-error/expect-message header"));
            continue;
        };
        let doc = yaml_documents(file).pop().expect("one document");
        let kind = doc["kind"].as_str().expect("kind");
        match validator_for(kind).validate(&doc) {
            Ok(()) => failures.push(format!("{name}: accepted, expected a refusal at {path}")),
            Err(errors) => {
                if !errors.iter().any(|e| e.path == path && e.message.contains(message)) {
                    failures.push(format!("{name}: expected {path}: …{message}…, got {errors:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
