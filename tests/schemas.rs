//! The JSON Schemas in `schemas/` are current, and every document of
//! `fleet-example/` validates against them.

mod common;
use common::*;

use serde_json::Value;

fn schema(file: &str) -> Value {
    let text =
        std::fs::read_to_string(repo_root().join("schemas").join(file)).expect("schema file");
    serde_json::from_str(&text).expect("schema is JSON")
}

#[test]
fn committed_schemas_match_the_code() {
    for (file, v) in canopy::core::schema::schemas() {
        let committed = std::fs::read_to_string(repo_root().join("schemas").join(&file))
            .unwrap_or_else(|_| {
                panic!("schemas/{file} is missing: run `canopy schema --out schemas/`")
            });
        assert_eq!(
            committed,
            canopy::core::schema::to_text(&v),
            "schemas/{file} is stale: run `cargo run -- schema --out schemas/`"
        );
    }
}

/// Every canopy document under fleet-example, as (file, kind, value).
fn fleet_example_docs() -> Vec<(String, String, Value)> {
    let root = repo_root().join("fleet-example");
    let mut out = Vec::new();
    for entry in walkdir::WalkDir::new(&root).sort_by_file_name() {
        let entry = entry.unwrap();
        let p = entry.path();
        if p.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(p).unwrap();
        if !canopy::core::load::declares_canopy_api(&text) {
            continue;
        }
        for doc in canopy::core::yaml::parse_stream(&text, false).unwrap() {
            let kind = doc.value["kind"].as_str().unwrap().to_string();
            out.push((
                p.strip_prefix(&root).unwrap().display().to_string(),
                kind,
                doc.value,
            ));
        }
    }
    out
}

#[test]
fn every_fleet_example_document_validates() {
    let docs = fleet_example_docs();
    assert!(docs.len() >= 12 + 4 + 3, "found {} documents", docs.len());
    let any = jsonschema::validator_for(&schema("canopy.json")).expect("canopy.json compiles");
    for (file, kind, doc) in &docs {
        let per_kind = jsonschema::validator_for(&schema(&format!("{}.json", kind.to_lowercase())))
            .expect("compiles");
        let errors: Vec<String> = per_kind
            .iter_errors(doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{file} ({kind}) fails its schema: {errors:#?}"
        );
        assert!(any.is_valid(doc), "{file} ({kind}) fails canopy.json");
    }
}

#[test]
fn schemas_reject_what_canopy_rejects() {
    let cluster = jsonschema::validator_for(&schema("cluster.json")).unwrap();
    let bad_field: Value = serde_json::json!({"apiVersion": "canopy.dev/v1alpha1", "kind": "Cluster",
        "metadata": {"name": "a"}, "spec": {"parnet": "b"}});
    assert!(!cluster.is_valid(&bad_field), "unknown field must fail");
    let wrong_kind: Value = serde_json::json!({"apiVersion": "canopy.dev/v1alpha1", "kind": "Workload", "metadata": {"name": "a"}});
    assert!(!cluster.is_valid(&wrong_kind));
    let workload = jsonschema::validator_for(&schema("workload.json")).unwrap();
    let bad_op: Value = serde_json::json!({"apiVersion": "canopy.dev/v1alpha1", "kind": "Workload", "metadata": {"name": "a"},
        "spec": {"placement": {"clusters": {"selector": {"matchExpressions": [{"key": "k", "operator": "Equals"}]}}}}});
    assert!(
        !workload.is_valid(&bad_op),
        "invalid selector operator must fail"
    );
    let ovr = jsonschema::validator_for(&schema("override.json")).unwrap();
    let two_kinds: Value = serde_json::json!({"apiVersion": "canopy.dev/v1alpha1", "kind": "Override", "metadata": {"name": "a"},
        "spec": {"patches": [{"mergePatch": {}, "image": {"tag": "x"}}]}});
    assert!(
        !ovr.is_valid(&two_kinds),
        "a patch item has exactly one key"
    );
}
