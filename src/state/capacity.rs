//! `capacity.json`: the live capacity of the clusters that ask for it
//! (`liveCapacity`), as the last run that read them found it, so that
//! `render`, `explain` and `tree` divide as that run did, and a cluster
//! that cannot be read keeps its last known value. Replaced atomically.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::core::model::LiveCapacity;

/// Live capacities by cluster name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacityRecord {
    #[serde(default)]
    pub clusters: BTreeMap<String, LiveCapacity>,
}

impl super::Record for CapacityRecord {
    const FILE: &'static str = "capacity.json";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{Capacity, Quantity};
    use crate::state::Record;

    #[test]
    fn saved_and_loaded_whole() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            CapacityRecord::load(dir.path()).unwrap(),
            CapacityRecord::default()
        );
        let mut r = CapacityRecord::default();
        r.clusters.insert(
            "eu".into(),
            LiveCapacity {
                capacity: Capacity {
                    cpu: Some(Quantity::Number(6.5)),
                    memory: None,
                    pods: Some(Quantity::Number(218.0)),
                },
                read_at: 1_790_000_000,
            },
        );
        r.save(dir.path()).unwrap();
        assert_eq!(CapacityRecord::load(dir.path()).unwrap(), r);
    }
}
