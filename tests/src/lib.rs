//! Helpers shared by the workspace-level tests: where the repository is, reading YAML documents, and schema
//! checkers built from the committed CRD files (not from the Rust types, so the files users apply are what is
//! tested).

use std::path::{Path, PathBuf};

use crd_schema::CrdValidator;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;
use serde_json::Value;

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace root")
        .to_path_buf()
}

/// Every YAML document in a file, as JSON values (empty documents skipped).
pub fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("parse {}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

/// Every `*.yaml` file under `dir`, recursively, sorted.
pub fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("list {}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The committed CRD for a kind, read from `deploy/crds/`.
pub fn committed_crd(kind: &str) -> CustomResourceDefinition {
    let file = match kind {
        "PackerBuilder" => "packerbuilders.ami.refresh.ops.yaml",
        "AMIRefresher" => "amirefreshers.ami.refresh.ops.yaml",
        other => panic!("not a kind of this project: {other}"),
    };
    let path = workspace_root().join("deploy/crds").join(file);
    let doc = yaml_documents(&path).into_iter().next().expect("one CRD per file");
    serde_json::from_value(doc).unwrap_or_else(|e| panic!("{} is not a CRD: {e}", path.display()))
}

/// A schema checker for a kind, built from its committed CRD.
pub fn validator_for(kind: &str) -> CrdValidator {
    CrdValidator::new(&committed_crd(kind), api_types::VERSION).expect("committed CRD compiles")
}

/// A `# key: value` line of a fixture's leading comment block (`expect-error`, `expect-message`).
pub fn fixture_header<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().take_while(|l| l.starts_with('#')).find_map(|l| {
        l.strip_prefix('#')?
            .trim()
            .strip_prefix(key)?
            .strip_prefix(':')
            .map(str::trim)
    })
}
