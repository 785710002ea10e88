//! Run state in the fleet's own root cluster: where the roots are
//! Kubernetes clusters, the failover health and rollout records are kept in
//! the first such root too (a ConfigMap in `canopy-system`), so a CI runner
//! that starts with an empty state folder continues a rollout where the
//! last one stopped and keeps counting how long a cluster has been down.
//!
//! The cluster's copy is read once per session, before the first placing,
//! and wins over the state folder's; it is written after every run that
//! wrote, beside the folder's, over the version read: a run that finds it
//! changed by another runner since reports that and does not overwrite it.
//! The local backend keeps its folder alone.

use serde_json::{json, Value};

use super::error::OpsError;
use crate::backend::{ClusterBackend, TypeRef};
use crate::core::chunks::NAMESPACE;
use crate::core::failover::Health;
use crate::core::model::ObjectKey;
use crate::core::validate::Checked;
use crate::state::rollouts::Rollouts;

/// The ConfigMap's name for fleet `fleet`.
pub fn name(fleet: &str) -> String {
    format!("canopy-records-{fleet}")
}

/// The root cluster that keeps the records: the first root, in tree
/// order, that is a Kubernetes cluster.
pub fn home(checked: &Checked) -> Option<usize> {
    checked
        .topo
        .roots()
        .iter()
        .copied()
        .find(|&r| checked.cluster(r).spec.connection.is_some())
}

fn configmap() -> TypeRef {
    TypeRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
    }
}

fn key(fleet: &str) -> ObjectKey {
    ObjectKey {
        group: String::new(),
        kind: "ConfigMap".into(),
        namespace: NAMESPACE.into(),
        name: name(fleet),
    }
}

/// What the cluster holds.
pub struct Held {
    pub health: Health,
    pub rollouts: Rollouts,
    /// The version read, for the write over it.
    pub version: String,
}

/// The records as they are written: a run that changed neither writes
/// nothing.
pub fn text(health: &Health, rollouts: &Rollouts) -> (String, String) {
    (pretty(health), pretty(rollouts))
}

/// Reads the records from the home cluster; `None` when it holds none yet.
pub fn load(backend: &dyn ClusterBackend, fleet: &str) -> Result<Option<Held>, OpsError> {
    let Some(cm) = backend.get(&configmap(), &key(fleet))? else {
        return Ok(None);
    };
    let field = |k: &str| cm.pointer(&format!("/data/{}", k.replace('/', "~1")));
    let parse = |k: &str| -> Result<Value, OpsError> {
        match field(k).and_then(Value::as_str) {
            None => Ok(Value::Null),
            Some(text) => serde_json::from_str(text).map_err(|e| {
                OpsError::Records(format!(
                    "ConfigMap {NAMESPACE}/{} key {k} is corrupt: {e}; canopy left it untouched (delete the key to start this record afresh)",
                    name(fleet)
                ))
            }),
        }
    };
    let (h, r) = (parse("health.json")?, parse("rollouts.json")?);
    let corrupt = |k: &str, e: serde_json::Error| {
        OpsError::Records(format!(
            "ConfigMap {NAMESPACE}/{} key {k} is corrupt: {e}",
            name(fleet)
        ))
    };
    Ok(Some(Held {
        health: if h.is_null() {
            Health::default()
        } else {
            serde_json::from_value(h).map_err(|e| corrupt("health.json", e))?
        },
        rollouts: if r.is_null() {
            Rollouts::default()
        } else {
            serde_json::from_value(r).map_err(|e| corrupt("rollouts.json", e))?
        },
        version: cm
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    }))
}

/// Writes the records over `version` (`None`: creates them). The version
/// written, for the next write.
pub fn save(
    backend: &dyn ClusterBackend,
    fleet: &str,
    health: &Health,
    rollouts: &Rollouts,
    version: Option<&str>,
) -> Result<String, OpsError> {
    let mut cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name(fleet),
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "canopy"},
        },
        "data": {
            "health.json": text(health, rollouts).0,
            "rollouts.json": text(health, rollouts).1,
        },
    });
    if let Some(v) = version {
        cm["metadata"]["resourceVersion"] = json!(v);
    } else {
        // The namespace, for a root that has had nothing written yet.
        let ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": "canopy"}}});
        backend.put(&ns)?;
    }
    match backend.put(&cm)? {
        Some(written) => Ok(written
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()),
        None => Err(OpsError::Records(format!(
            "ConfigMap {NAMESPACE}/{} was changed by another canopy run since this one read it, so this run's health and rollout records were not written there (the state folder has them); run again",
            name(fleet)
        ))),
    }
}

/// Pretty JSON of a record, as the state folder writes it.
fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).expect("records serialize")
}
