//! A relay agent's records in its own cluster: when the relay is a
//! Kubernetes cluster, the agent keeps its health records (how long each
//! of its clusters has been down) and the index of its last good handoff in
//! the ConfigMap `canopy-agent-records` in `canopy-system`, beside its
//! handoff. An agent in a pod has only an `emptyDir` state folder; with
//! these it restarts with its failover timers and its last good handoff,
//! whose chunks stay in the cluster until it takes a newer one.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::backend::{BackendError, ClusterBackend};
use crate::core::failover::Health;
use crate::ops::records;

/// The ConfigMap's name.
pub const NAME: &str = "canopy-agent-records";

/// What the ConfigMap holds, as written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Kept {
    pub health: Option<Health>,
    /// The index of the last good handoff.
    pub index: Option<Value>,
    /// The version read or written, for the next write over it.
    pub version: Option<String>,
}

/// Reads the records; a part that does not parse is left out (and
/// rewritten by the next save).
pub fn load(home: &dyn ClusterBackend) -> Result<Kept, BackendError> {
    let Some(map) = records::read_map(home, NAME)? else {
        return Ok(Kept::default());
    };
    let part = |key: &str| {
        map.data
            .get(key)
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
    };
    Ok(Kept {
        health: part("health.json").and_then(|v| serde_json::from_value(v).ok()),
        index: part("handoff-index.json"),
        version: Some(map.version.clone()),
    })
}

/// Writes the records over `version`; the version written, or `None` when
/// another writer came first.
pub fn save(
    home: &dyn ClusterBackend,
    health: &Health,
    index: Option<&Value>,
    version: Option<&str>,
) -> Result<Option<String>, BackendError> {
    let mut data = BTreeMap::from([(
        "health.json".to_string(),
        serde_json::to_string(health).expect("records serialize"),
    )]);
    if let Some(i) = index {
        // Only what names the handoff: its spec.
        let spec = json!({"spec": i.get("spec").cloned().unwrap_or(Value::Null)});
        data.insert("handoff-index.json".into(), spec.to_string());
    }
    records::write_map(home, NAME, &data, version)
}
