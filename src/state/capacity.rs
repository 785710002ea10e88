//! `capacity.json`: the live capacity of the clusters that ask for it
//! (`liveCapacity`), as the last run that read them found it, so that
//! `render`, `explain` and `tree` divide as that run did, and a cluster
//! that cannot be read keeps its last known value. Replaced atomically.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::StateError;
use crate::core::model::LiveCapacity;

const FILE: &str = "capacity.json";

/// Live capacities by cluster name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CapacityRecord {
    #[serde(default)]
    pub clusters: BTreeMap<String, LiveCapacity>,
}

impl CapacityRecord {
    /// Reads `capacity.json` from the state folder (none yet: nothing read).
    pub fn load(dir: &Path) -> Result<CapacityRecord, StateError> {
        super::load(dir, FILE)
    }

    /// Replaces `capacity.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        super::save(dir, FILE, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{Capacity, Quantity};

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
