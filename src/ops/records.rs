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

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::error::OpsError;
use crate::backend::{BackendError, ClusterBackend, TypeRef};
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

fn configmap_ref(name: &str) -> (TypeRef, ObjectKey) {
    (
        TypeRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
        },
        ObjectKey {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: NAMESPACE.into(),
            name: name.into(),
        },
    )
}

/// A ConfigMap of canopy's records in `canopy-system`, as read: its data
/// and its version.
pub struct RecordMap {
    pub data: BTreeMap<String, String>,
    pub version: String,
}

/// Reads the records ConfigMap `name`; `None` when there is none yet. The
/// fleet's records here and a relay agent's ([`crate::agent::records`])
/// are both kept this way.
pub fn read_map(
    backend: &dyn ClusterBackend,
    name: &str,
) -> Result<Option<RecordMap>, BackendError> {
    let (t, k) = configmap_ref(name);
    Ok(backend.get(&t, &k)?.map(|cm| RecordMap {
        data: cm
            .get("data")
            .and_then(Value::as_object)
            .map(|d| {
                d.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
        version: cm
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    }))
}

/// Writes the records ConfigMap `name` with `data`, over `version`
/// (`None`: creates it). The version written, or `None` when another
/// writer came first.
pub fn write_map(
    backend: &dyn ClusterBackend,
    name: &str,
    data: &BTreeMap<String, String>,
    version: Option<&str>,
) -> Result<Option<String>, BackendError> {
    let mut cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/managed-by": "canopy"},
        },
        "data": data,
    });
    if let Some(v) = version {
        cm["metadata"]["resourceVersion"] = json!(v);
    }
    Ok(backend.put(&cm)?.map(|written| {
        written
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }))
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
    let Some(map) = read_map(backend, &name(fleet))? else {
        return Ok(None);
    };
    fn part<T: serde::de::DeserializeOwned + Default>(
        map: &RecordMap,
        fleet: &str,
        k: &str,
    ) -> Result<T, OpsError> {
        match map.data.get(k) {
            None => Ok(T::default()),
            Some(text) => serde_json::from_str(text).map_err(|e| {
                OpsError::Records(format!(
                    "ConfigMap {NAMESPACE}/{} key {k} is corrupt: {e}; canopy left it untouched (delete the key to start this record afresh)",
                    name(fleet)
                ))
            }),
        }
    }
    Ok(Some(Held {
        health: part(&map, fleet, "health.json")?,
        rollouts: part(&map, fleet, "rollouts.json")?,
        version: map.version,
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
    if version.is_none() {
        // The namespace, for a root that has had nothing written yet.
        let ns = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": "canopy"}}});
        backend.put(&ns)?;
    }
    let (h, r) = text(health, rollouts);
    let data = BTreeMap::from([
        ("health.json".to_string(), h),
        ("rollouts.json".to_string(), r),
    ]);
    write_map(backend, &name(fleet), &data, version)?.ok_or_else(|| {
        OpsError::Records(format!(
            "ConfigMap {NAMESPACE}/{} was changed by another canopy run since this one read it, so this run's health and rollout records were not written there (the state folder has them); run again",
            name(fleet)
        ))
    })
}

/// Pretty JSON of a record, as the state folder writes it.
fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).expect("records serialize")
}
