//! JSON Schemas for canopy's documents, generated from the same serde types
//! the loader uses, so the editor's view (yaml-language-server) and canopy's
//! never drift apart. `schemas/` holds the generated files; a test fails when
//! they are stale (`canopy schema --out schemas/` refreshes them).

use schemars::{schema_for, JsonSchema};
use serde_json::{json, Value};

use crate::core::model::{
    ClusterSpec, DefaultsSpec, ObjectMeta, OverrideSpec, TenantSpec, WorkloadSpec, API_VERSION,
};

fn envelope<S: JsonSchema>(kind: &str, spec_required: bool, description: &str) -> Value {
    let meta = serde_json::to_value(schema_for!(ObjectMeta)).expect("schema serializes");
    let mut spec = serde_json::to_value(schema_for!(S)).expect("schema serializes");
    // Hoist the spec's definitions to the top so its $refs resolve.
    let defs = spec
        .as_object_mut()
        .and_then(|o| o.remove("$defs"))
        .unwrap_or_else(|| json!({}));
    if let Some(o) = spec.as_object_mut() {
        o.remove("$schema");
        o.remove("title");
    }
    let mut meta = meta;
    if let Some(o) = meta.as_object_mut() {
        o.remove("$schema");
        o.remove("title");
    }
    let mut required = vec!["apiVersion", "kind", "metadata"];
    if spec_required {
        required.push("spec");
    }
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("https://canopy.dev/schemas/{}.json", kind.to_lowercase()),
        "title": format!("canopy {kind}"),
        "description": description,
        "type": "object",
        "additionalProperties": false,
        "required": required,
        "properties": {
            "apiVersion": {"const": API_VERSION},
            "kind": {"const": kind},
            "metadata": meta,
            "spec": spec,
        },
        "$defs": defs,
    })
}

/// `(file name, schema)` for every kind, plus `canopy.json`, which accepts any
/// of them (for files that mix kinds).
pub fn schemas() -> Vec<(String, Value)> {
    let kinds = [
        (
            "Cluster",
            envelope::<ClusterSpec>(
                "Cluster",
                false,
                "A cluster of the fleet and its place in the tree.",
            ),
        ),
        (
            "Workload",
            envelope::<WorkloadSpec>(
                "Workload",
                false,
                "A workload: manifests in workloads/<name>/, where they go, how replicas divide.",
            ),
        ),
        (
            "Override",
            envelope::<OverrideSpec>(
                "Override",
                true,
                "Per-cluster or per-subtree changes to rendered objects.",
            ),
        ),
        (
            "Defaults",
            envelope::<DefaultsSpec>(
                "Defaults",
                false,
                "Fleet-wide defaults (at most one document), such as the rollout of workloads without their own.",
            ),
        ),
        (
            "Tenant",
            envelope::<TenantSpec>(
                "Tenant",
                true,
                "Who may put what where: the workloads a tenant owns and the clusters, namespaces and kinds they may write to.",
            ),
        ),
    ];
    let mut out: Vec<(String, Value)> = kinds
        .iter()
        .map(|(k, s)| (format!("{}.json", k.to_lowercase()), s.clone()))
        .collect();
    let any = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://canopy.dev/schemas/canopy.json",
        "title": "canopy document",
        "description": "Any canopy.dev/v1alpha1 document, chosen by kind.",
        "oneOf": kinds.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>(),
    });
    out.push(("canopy.json".into(), any));
    out
}

/// A schema as the text written to `schemas/`.
pub fn to_text(v: &Value) -> String {
    serde_json::to_string_pretty(v).expect("schema serializes") + "\n"
}
