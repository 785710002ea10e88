//! `replicas.json`: for workloads with calm rescheduling, the replicas
//! each cluster was given by the last apply, which the next division
//! keeps as far as it can. Replaced atomically.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// By workload, by cluster: replicas.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicasRecord {
    #[serde(default)]
    pub workloads: BTreeMap<String, BTreeMap<String, u32>>,
}

impl super::Record for ReplicasRecord {
    const FILE: &'static str = "replicas.json";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Record;

    #[test]
    fn saved_and_loaded_whole() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            ReplicasRecord::load(dir.path()).unwrap(),
            ReplicasRecord::default()
        );
        let mut r = ReplicasRecord::default();
        r.workloads
            .entry("web".into())
            .or_default()
            .insert("eu-west-1".into(), 3);
        r.save(dir.path()).unwrap();
        assert_eq!(ReplicasRecord::load(dir.path()).unwrap(), r);
    }
}
